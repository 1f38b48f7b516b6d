//! A worker's gate, and replacing the workers of the serving release (what `slipway watch` does
//! when one stops): a fresh container of the same digest, gated, then the stuck one removed.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::gate::{Gate, GateFailure, GateRun};
use super::{NewContainer, WorkerGate, WorkerRollout};

/// Healthy when (with `docker`) its HEALTHCHECK says so and the same start still runs
/// `min_uptime` after it (a restart policy may bring a crashed worker back).
pub async fn gate(
    b: &impl Backend,
    cancel: &CancellationToken,
    g: &WorkerGate,
    id: &str,
    started: Instant,
) -> Result<(), GateFailure> {
    if g.docker {
        let gate = Gate {
            docker: true,
            http: None,
            deadline: g.deadline,
        };
        let run = GateRun {
            gate: &gate,
            id,
            started,
        };
        b.gate(run, cancel).await?;
    }
    let first = running_since(b, id).await?;
    tokio::select! {
        _ = tokio::time::sleep_until(started + g.min_uptime) => {}
        _ = cancel.cancelled() => return Err(GateFailure::Interrupted),
    }
    if running_since(b, id).await? != first {
        let why = format!(
            "it restarted within {}",
            humantime::format_duration(g.min_uptime)
        );
        return Err(GateFailure::Failed(why));
    }
    Ok(())
}

/// When the worker's current run started; a failure when it is not running.
async fn running_since(b: &impl Backend, id: &str) -> Result<String, GateFailure> {
    match b.inspect(id).await {
        Ok(Some(c)) if c.running && c.status != "restarting" => Ok(c.started_at),
        Ok(Some(c)) => Err(GateFailure::Failed(format!(
            "it exited with code {}",
            c.exit_code
        ))),
        Ok(None) => Err(GateFailure::Failed("the container is gone".into())),
        Err(e) => Err(GateFailure::Failed(e)),
    }
}

/// Starts a fresh container for each of `workers`, gates it, then removes the ones it replaces
/// (`retire`). A replacement that fails its gate is removed and the old one left as it is.
/// The new containers' names, or why not.
pub async fn replace(
    b: &impl Backend,
    cancel: &CancellationToken,
    workers: &[WorkerRollout],
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for w in workers {
        let NewContainer::Create(spec) = &w.new else {
            return Err(format!(
                "worker {} would restart a retained container",
                w.name
            ));
        };
        let id = b.create(spec).await?;
        let t = Instant::now();
        let gated = match b.start(&id).await {
            Ok(()) => gate(b, cancel, &w.gate, &id, t).await,
            Err(e) => Err(GateFailure::Failed(e)),
        };
        if let Err(e) = gated {
            let _ = b.remove(&id).await;
            return Err(match e {
                GateFailure::Failed(why) => format!("{} failed its gate: {why}", spec.name),
                GateFailure::Interrupted => "interrupted".into(),
            });
        }
        for old in &w.retire {
            b.remove(&old.id).await?;
        }
        names.push(spec.name.clone());
    }
    Ok(names)
}
