//! The locked sequence, written once for `deploy`, `rollout`, `rollback` and `watch`: take the
//! service's lock (whose container is the host agent), read fresh facts through it, let the
//! caller plan and execute, and release the lock on every path.

use tokio_util::sync::CancellationToken;

use super::Facts;
use crate::engine::{Engine, EngineError};
use crate::host::agent::{AgentError, HostAgent};
use crate::host::lock::{Lock, LockError, LockRequest};
use crate::image::reference::PinnedImage;

/// Runs `body` with the lock held and the agent attached; the lock is released afterwards,
/// whatever `body` returned.
pub async fn with_lock<T>(
    engine: &Engine,
    req: &LockRequest<'_>,
    cancel: &CancellationToken,
    body: impl AsyncFnOnce(&HostAgent) -> T,
) -> Result<T, LockError> {
    let lock = Lock::acquire(engine, req, cancel).await?;
    let agent = HostAgent::attach(&lock.id, req.host);
    let result = body(&agent).await;
    lock.release(engine).await;
    Ok(result)
}

/// Why fresh facts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("reading the snippet on the host failed: {0}")]
    Snippet(#[from] AgentError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What the engine and the host say now, read under the lock: the snippet and its applied
/// record, the service's containers, the image if present.
pub async fn fresh_facts(
    engine: &Engine,
    agent: &HostAgent,
    service: &str,
    image: Option<&PinnedImage>,
    env: Vec<(String, String)>,
    run_url: String,
) -> Result<Facts, FactsError> {
    let snippet = agent.read(engine, &format!("{service}.caddy")).await?;
    let mut facts = super::gather_facts(engine, service, image, env, run_url).await?;
    facts.snippet = Some(snippet);
    Ok(facts)
}
