//! The locked sequence, written once for `deploy`, `rollout`, `rollback` and `watch`: take the
//! service's lock (whose container is the host agent), read fresh facts through it, let the
//! caller plan and execute, and release the lock on every path.

use tokio_util::sync::CancellationToken;

use super::inputs::{Choice, Prepared, proxy_driver};
use super::read::{fresh_facts, gather, resolve_target, with_image};
use super::render::render_plan;
use super::{Facts, Plan, Report, Target};
use crate::cli::ServiceArgs;
use crate::engine::Engine;
use crate::exit::{Exit, Failure};
use crate::host::HostAccess;
use crate::host::agent::HostAgent;
use crate::host::lock::{self, Lock, LockError, LockRequest, Owner};
use crate::host::proxy::Driver;
use crate::rollout;
use crate::spec::ServiceSpec;

/// The lock of `spec`'s service, its agent mounting the proxy's directory.
pub fn lock_request<'a>(
    spec: &'a ServiceSpec,
    host: &'a HostAccess,
    owner: &'a Owner,
    ttl: std::time::Duration,
    wait: std::time::Duration,
) -> LockRequest<'a> {
    let proxy = spec.proxy();
    LockRequest {
        service: &spec.name,
        host,
        snippet_dir: proxy.map(|p| p.dir()),
        dir_key: proxy.map_or("proxy", |p| p.dir_key()),
        owner,
        ttl,
        wait,
    }
}

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

/// Read-only: facts, then the plan. What `--dry-run` prints.
pub async fn plan_only(p: &Prepared, choice: &Choice) -> Result<Plan, Failure> {
    let facts = gather(p, None).await?;
    let target = resolve_target(choice, &facts)?;
    plan_target(p, &target).await
}

/// Read-only: the plan for a target already resolved (a deploy's image not built yet).
pub async fn plan_target(p: &Prepared, target: &Target) -> Result<Plan, Failure> {
    let facts = gather(p, target.image.pinned()).await?;
    Ok(rollout::plan(&p.spec, target, &facts, &p.reload_text))
}

/// Takes the lock (whose container is the host agent), plans from fresh facts, executes, and
/// releases the lock on every path. While the lock's agent starts, the new container may start
/// too (`early.rs`, ADR 0010).
pub async fn execute_locked(
    p: &Prepared,
    args: &ServiceArgs,
    choice: &Choice,
    hook: &impl rollout::execute::AfterSwitch,
    cancel: &CancellationToken,
) -> Result<Report, Failure> {
    healthchecks_usable(p).await?;
    let driver = match &p.driver {
        Some(driver) => driver.clone(),
        None => proxy_driver(&p.spec, None)?,
    };
    let request = lock_request(&p.spec, &p.host, &p.owner, args.lock_ttl, args.lock_wait);
    let created = Lock::create(&p.engine, &request, cancel)
        .await
        .map_err(lock_failure)?;
    tracing::debug!("the lock of {} is taken", p.spec.name);
    let first = async {
        let mut first = super::early::first_plan(p, choice).await;
        if let Some(first) = &mut first {
            first.start_early(p).await;
        }
        first
    };
    let (started, first) = tokio::join!(created.start(&p.engine), first);
    let lock = match started {
        Ok(lock) => lock,
        Err(e) => {
            if let Some(first) = &first {
                first.abandon(p).await;
            }
            return Err(lock_failure(e));
        }
    };
    tracing::debug!("the lock's agent runs");
    let agent = HostAgent::attach(&lock.id, &p.host);
    let result = plan_and_execute(p, &agent, driver, choice, first, hook, cancel).await;
    lock.release(&p.engine).await;
    tracing::debug!("the lock is released");
    result
}

fn lock_failure(e: LockError) -> Failure {
    let exit = match e {
        lock::LockError::Interrupted { .. } => Exit::Interrupted,
        _ => Exit::Unavailable,
    };
    let hint = e.hint();
    Failure::new(exit, e).with_hint(hint)
}

/// With the lock held and its agent running: the plan (confirming an early start), executed.
async fn plan_and_execute(
    p: &Prepared,
    agent: &HostAgent,
    driver: Driver,
    choice: &Choice,
    first: Option<super::early::First>,
    hook: &impl rollout::execute::AfterSwitch,
    cancel: &CancellationToken,
) -> Result<Report, Failure> {
    let (plan, adopted) = match first {
        Some(first) => first.confirm(p, agent).await?,
        None => (plan_locked(p, agent, choice).await?, None),
    };
    let ctx = rollout::execute::Context {
        engine: &p.engine,
        agent,
        driver,
        cancel,
    };
    Ok(rollout::execute::execute_adopting(&ctx, &plan, hook, adopted).await)
}

/// A gate that waits for image HEALTHCHECKs on an engine that never runs them (Podman without
/// systemd) could never pass: refused before anything changes (exit 4).
async fn healthchecks_usable(p: &Prepared) -> Result<(), Failure> {
    let workers = p.spec.workers.values().any(|w| w.health.docker);
    if !p.spec.health.docker && !workers {
        return Ok(());
    }
    // An engine that does not answer is reported by the lock step, with its own advice.
    let Ok(v) = p.engine.version_once().await else {
        return Ok(());
    };
    if p.engine.runs_healthchecks(v.kind).await.unwrap_or(true) {
        return Ok(());
    }
    Err(Failure::new(
        Exit::Unavailable,
        anyhow::anyhow!(
            "{} {} on this socket runs without systemd, so image HEALTHCHECKs never run and the health.docker gate could never pass; nothing was changed",
            v.kind.name(),
            v.version
        ),
    )
    .with_hint("gate on [health.http] with health.docker = false (and workers.NAME.health.docker = false), or run Podman's service on a systemd host (docs/operator-guide.md, Podman)"))
}

/// Under the lock: facts read again, the snippet through the agent, then the plan.
async fn plan_locked(p: &Prepared, agent: &HostAgent, choice: &Choice) -> Result<Plan, Failure> {
    // Only a rollback's target comes from the facts.
    let target = match choice {
        Choice::LastGood => resolve_target(choice, &gather(p, None).await?)?,
        _ => resolve_target(choice, &Facts::default())?,
    };
    let facts = fresh_facts(
        &p.engine,
        agent,
        &p.spec,
        target.image.pinned(),
        p.values.clone(),
        p.owner.run.clone(),
    )
    .await
    .map_err(|e| {
        let key = p.spec.proxy().map_or("the proxy table", |x| x.dir_key());
        Failure::new(Exit::Unavailable, e).with_hint(format!("check {key} in the spec"))
    })?;
    let facts = with_image(&p.engine, target.image.pinned(), facts).await?;
    let plan = rollout::plan(&p.spec, &target, &facts, &p.reload_text);
    tracing::info!("{}", render_plan(&plan).lines().next().unwrap_or_default());
    Ok(plan)
}
