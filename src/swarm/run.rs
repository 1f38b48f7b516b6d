//! Carries a Swarm plan out under the cluster lock: create or update the service by digest, wait
//! for Swarm's verdict (`UpdateStatus.State`, never an exit code), check every running task's
//! image, then the public check; on its failure `service rollback` and verify the previous
//! version is served.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::lock::SwarmLock;
use super::plan::{SwarmAction, SwarmPlan, plan, render};
use crate::engine::{Engine, ServiceState, ServiceTemplate};
use crate::exit::{Exit, Failure};
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::rollout::TargetImage;
use crate::rollout::execute::AfterSwitch;
use crate::rollout::execute::{Evidence, Step};
use crate::rollout::{ContainerRef, Outcome, Prepared, Report, StepName};
use crate::spec::SwarmSpec;

const POLL: Duration = Duration::from_millis(500);

/// What one run records, step by step.
struct Run {
    report: Report,
    t0: Instant,
}

impl Run {
    fn new(service: &str, image: &str, revision: &Revision) -> Run {
        Run {
            report: Report {
                service: service.to_string(),
                outcome: Outcome::Deployed,
                message: String::new(),
                image: image.to_string(),
                revision: revision.clone(),
                previous: None,
                container: None,
                port: None,
                steps: Vec::new(),
                evidence: Evidence::default(),
                start_to_healthy_ms: None,
                started_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or_default(),
                wall_ms: 0,
            },
            t0: Instant::now(),
        }
    }

    fn step(&mut self, name: StepName, since: Instant, ok: bool, detail: impl Into<String>) {
        self.report.steps.push(Step {
            name,
            start_ms: since.duration_since(self.t0).as_millis() as u64,
            duration_ms: since.elapsed().as_millis() as u64,
            ok,
            detail: detail.into(),
        });
    }

    fn end(mut self, outcome: Outcome, message: impl Into<String>) -> Report {
        self.report.outcome = outcome;
        self.report.message = message.into();
        self.report.wall_ms = self.t0.elapsed().as_millis() as u64;
        self.report
    }
}

fn swarm_of(p: &Prepared) -> Result<&SwarmSpec, Failure> {
    p.spec.swarm.as_ref().ok_or_else(|| {
        Failure::usage(anyhow::anyhow!("the spec has no [swarm] table"))
            .with_hint("add [swarm] with replicas and network")
    })
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Failure {
    Failure::new(Exit::Unavailable, e)
}

/// Read-only: the plan `slipway plan` prints.
pub async fn plan_for(
    p: &Prepared,
    image: &TargetImage,
    revision: &Revision,
) -> Result<SwarmPlan, Failure> {
    let sw = swarm_of(p)?;
    let current = p
        .engine
        .inspect_service(&p.spec.name)
        .await
        .map_err(unavailable)?;
    Ok(plan(
        &p.spec,
        sw,
        image,
        revision,
        &p.values,
        current.as_ref(),
    ))
}

/// `slipway deploy` (and `rollout`) on a swarm: under the cluster lock.
pub async fn deploy(
    p: &Prepared,
    lock_ttl: Duration,
    image: &PinnedImage,
    revision: &Revision,
    hook: &impl AfterSwitch,
    cancel: &CancellationToken,
) -> Result<Report, Failure> {
    let lock = take_lock(p, &image.to_string(), lock_ttl).await?;
    let result = deploy_locked(p, image, revision, hook, cancel).await;
    lock.release(&p.engine).await;
    result
}

async fn take_lock(p: &Prepared, image: &str, ttl: Duration) -> Result<SwarmLock, Failure> {
    SwarmLock::acquire(&p.engine, &p.spec.name, image, &p.owner, ttl)
        .await
        .map_err(|e| {
            unavailable(e).with_hint(
                "wait for the other deploy to finish; a lock whose heartbeat stopped expires after --lock-ttl",
            )
        })
}

async fn deploy_locked(
    p: &Prepared,
    image: &PinnedImage,
    revision: &Revision,
    hook: &impl AfterSwitch,
    cancel: &CancellationToken,
) -> Result<Report, Failure> {
    let sw = swarm_of(p)?;
    let mut run = Run::new(&p.spec.name, &image.to_string(), revision);
    let t = Instant::now();
    let current = p
        .engine
        .inspect_service(&p.spec.name)
        .await
        .map_err(unavailable)?;
    let target = TargetImage::from(image.clone());
    let mut plan = plan(&p.spec, sw, &target, revision, &p.values, current.as_ref());
    tracing::info!("{}", render(&plan).trim_end());
    run.report.previous = current.as_ref().map(previous_ref);
    run.step(StepName::Plan, t, true, plan.changes.join("; "));
    if plan.action == SwarmAction::Unchanged {
        return Ok(run.end(
            Outcome::Unchanged,
            format!("{} already runs {image}; nothing changed", p.spec.name),
        ));
    }
    check_health_gate(p, image).await?;
    let t = Instant::now();
    secrets(p, &mut plan.template).await.map_err(unavailable)?;
    let before = current.as_ref().and_then(|c| c.update_started.clone());
    let applied = match &current {
        None => p.engine.create_service(&plan.template).await.map(|_| ()),
        Some(c) => p.engine.update_service(&plan.template, c.version).await,
    };
    if let Err(e) = applied {
        run.step(StepName::Create, t, false, e.with_causes());
        return Ok(run.end(
            Outcome::Unavailable,
            format!("the manager refused the service: {}", e.with_causes()),
        ));
    }
    run.step(
        StepName::Create,
        t,
        true,
        render(&plan).trim_end().to_string(),
    );
    let verdict = wait_verdict(&p.engine, &plan, before, cancel).await;
    Ok(finish(p, run, &plan, verdict, hook, cancel).await)
}

/// Without `[health.http]`, each task is gated by the image's HEALTHCHECK: refuse an image
/// without one before anything changes.
async fn check_health_gate(p: &Prepared, image: &PinnedImage) -> Result<(), Failure> {
    if p.spec.health.http.is_some() {
        return Ok(());
    }
    let reference = image.to_string();
    p.engine
        .ensure_image(&reference)
        .await
        .map_err(unavailable)?;
    let info = p
        .engine
        .inspect_image(&reference)
        .await
        .map_err(unavailable)?;
    if info.is_some_and(|i| i.has_healthcheck) {
        return Ok(());
    }
    Err(Failure::usage(anyhow::anyhow!(
        "{image} has no HEALTHCHECK and the spec has no [health.http]: Swarm would have no health gate"
    ))
    .with_hint("add [health.http] to the spec (it becomes the task's health check), or a HEALTHCHECK to the image"))
}

fn previous_ref(c: &ServiceState) -> ContainerRef {
    let revision = c
        .labels
        .get(crate::rollout::LABEL_REVISION)
        .cloned()
        .unwrap_or_default();
    ContainerRef {
        id: c.id.clone(),
        name: format!(
            "service {}",
            c.labels
                .get(crate::rollout::LABEL_SERVICE)
                .cloned()
                .unwrap_or_default()
        ),
        slot: None,
        port: None,
        digest: c
            .image
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default(),
        revision,
        image: c.image.clone(),
    }
}

/// Creates the Swarm secrets the template names (values stay out of every log).
async fn secrets(p: &Prepared, t: &mut ServiceTemplate) -> Result<(), crate::engine::EngineError> {
    let labels = std::collections::BTreeMap::from([(
        crate::rollout::LABEL_SERVICE.to_string(),
        p.spec.name.clone(),
    )]);
    for s in &mut t.secrets {
        let value = p
            .values
            .iter()
            .find(|(n, _)| *n == s.target)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        s.secret_id = p
            .engine
            .ensure_secret(&s.secret_name, value, &labels)
            .await?;
    }
    Ok(())
}

/// Swarm's verdict on the update (or the creation).
#[derive(Debug)]
pub enum Verdict {
    /// Every desired task runs the new image.
    Done(String),
    /// Swarm rolled the update back by itself (a task failed its health gate).
    SwarmRolledBack(String),
    /// Stuck, paused or failed; `String` says what was seen.
    Failed(String),
    Interrupted,
}

async fn wait_verdict(
    engine: &Engine,
    plan: &SwarmPlan,
    before: Option<String>,
    cancel: &CancellationToken,
) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(plan.deadline_secs);
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if cancel.is_cancelled() {
            return Verdict::Interrupted;
        }
        match verdict_once(engine, plan, &before).await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e.with_causes(),
        }
        tokio::time::sleep(POLL).await;
    }
    Verdict::Failed(format!(
        "no verdict from Swarm within {}s (last: {last})",
        plan.deadline_secs
    ))
}

async fn verdict_once(
    engine: &Engine,
    plan: &SwarmPlan,
    before: &Option<String>,
) -> Result<Option<Verdict>, crate::engine::EngineError> {
    let Some(s) = engine.inspect_service(&plan.service).await? else {
        return Ok(Some(Verdict::Failed("the service disappeared".into())));
    };
    let fresh = s.update_started.is_some() && s.update_started != *before;
    let message = s.update_message.clone().unwrap_or_default();
    match (plan.action.clone(), s.update_state.as_deref()) {
        (SwarmAction::Update { .. }, _) if !fresh => Ok(None),
        (SwarmAction::Update { .. }, Some("completed")) => {
            tasks_on(engine, plan, &plan.template.image).await
        }
        (SwarmAction::Update { .. }, Some("rollback_completed")) => {
            Ok(Some(Verdict::SwarmRolledBack(message)))
        }
        (SwarmAction::Update { .. }, Some("paused" | "rollback_paused")) => Ok(Some(
            Verdict::Failed(format!("Swarm paused the update: {message}")),
        )),
        (SwarmAction::Create, _) => tasks_on(engine, plan, &plan.template.image).await,
        _ => Ok(None),
    }
}

/// `Done` when exactly the desired tasks run `image`, every one of them, and no replaced task
/// still runs; else keep waiting.
async fn tasks_on(
    engine: &Engine,
    plan: &SwarmPlan,
    image: &str,
) -> Result<Option<Verdict>, crate::engine::EngineError> {
    let tasks = engine.service_tasks(&plan.service).await?;
    let desired: Vec<_> = tasks
        .iter()
        .filter(|t| t.desired_state == "running")
        .collect();
    let running = desired.iter().filter(|t| t.state == "running").count() as u64;
    let all_on_image = desired.iter().all(|t| t.image == image);
    // A replaced task still running (its stop grace) still answers on a host-mode port.
    let old_still_running = tasks
        .iter()
        .any(|t| t.desired_state != "running" && t.state == "running");
    if running == plan.template.replicas
        && desired.len() as u64 == running
        && all_on_image
        && !old_still_running
    {
        let nodes: std::collections::BTreeSet<_> = desired.iter().map(|t| &t.node_id).collect();
        return Ok(Some(Verdict::Done(format!(
            "{running} task(s) running {image} on {} node(s)",
            nodes.len()
        ))));
    }
    let failed = tasks
        .iter()
        .filter(|t| t.state == "failed" || t.state == "rejected")
        .count();
    if plan.action == SwarmAction::Create && failed as u64 >= 2 * plan.template.replicas {
        let why = tasks
            .iter()
            .find(|t| !t.error.is_empty())
            .map(|t| t.error.clone())
            .unwrap_or_default();
        return Ok(Some(Verdict::Failed(format!(
            "{failed} task(s) failed: {why}"
        ))));
    }
    Ok(None)
}

async fn finish(
    p: &Prepared,
    mut run: Run,
    plan: &SwarmPlan,
    verdict: Verdict,
    hook: &impl AfterSwitch,
    cancel: &CancellationToken,
) -> Report {
    let t = Instant::now();
    match verdict {
        Verdict::Done(detail) => {
            run.report.start_to_healthy_ms = Some(run.t0.elapsed().as_millis() as u64);
            run.step(StepName::Health, t, true, detail);
        }
        Verdict::SwarmRolledBack(why) => {
            run.step(
                StepName::Health,
                t,
                false,
                format!("Swarm rolled back: {why}"),
            );
            let cause =
                format!("a new task failed its health gate; Swarm rolled the update back ({why})");
            return restored(run, hook, cause).await;
        }
        Verdict::Interrupted => {
            return undo(
                p,
                run,
                plan,
                hook,
                "interrupted (SIGINT/SIGTERM)".into(),
                Outcome::Interrupted,
            )
            .await;
        }
        Verdict::Failed(why) => {
            run.step(StepName::Health, t, false, why.clone());
            return undo(p, run, plan, hook, why, Outcome::RolledBack).await;
        }
    }
    let t = Instant::now();
    match hook.check(cancel).await {
        Ok(detail) => {
            run.step(StepName::Smoke, t, true, detail);
            let msg = format!(
                "deployed {} to {} task(s) of {}",
                plan.template.image, plan.template.replicas, plan.service
            );
            run.end(Outcome::Deployed, msg)
        }
        Err(why) => {
            run.step(StepName::Smoke, t, false, why.clone());
            undo(
                p,
                run,
                plan,
                hook,
                format!("the public check failed: {why}"),
                Outcome::RolledBack,
            )
            .await
        }
    }
}

/// Puts the previous state back: `service rollback` after an update, removal after a creation.
async fn undo(
    p: &Prepared,
    mut run: Run,
    plan: &SwarmPlan,
    hook: &impl AfterSwitch,
    cause: String,
    outcome: Outcome,
) -> Report {
    let t = Instant::now();
    let result = match &plan.action {
        SwarmAction::Create => p
            .engine
            .remove_service(&plan.service)
            .await
            .map(|_| "removed the new service".to_string())
            .map_err(|e| e.with_causes()),
        _ => rollback_and_wait(&p.engine, &plan.service).await,
    };
    match result {
        Ok(detail) => run.step(StepName::Rollback, t, true, detail),
        Err(e) => {
            run.step(StepName::Rollback, t, false, e.clone());
            let msg = format!(
                "{cause}; and the rollback failed: {e}. Check `docker service ps {}` on the manager and roll back by hand (`docker service rollback {}`)",
                plan.service, plan.service
            );
            return run.end(Outcome::RollbackFailed, msg);
        }
    }
    let mut report = restored(run, hook, cause).await;
    if outcome == Outcome::Interrupted && report.outcome == Outcome::RolledBack {
        report.outcome = Outcome::Interrupted;
    }
    report
}

/// `service rollback`, then wait for `rollback_completed`.
pub async fn rollback_and_wait(engine: &Engine, service: &str) -> Result<String, String> {
    let before = engine
        .inspect_service(service)
        .await
        .map_err(|e| e.with_causes())?
        .and_then(|s| s.update_started);
    engine
        .rollback_service(service)
        .await
        .map_err(|e| e.with_causes())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let Some(s) = engine
            .inspect_service(service)
            .await
            .map_err(|e| e.with_causes())?
        else {
            return Err("the service disappeared".into());
        };
        let fresh = s.update_started.is_some() && s.update_started != before;
        match s.update_state.as_deref() {
            Some("rollback_completed") if fresh => {
                return Ok(format!("Swarm rolled {service} back to {}", s.image));
            }
            Some("rollback_paused") if fresh => {
                return Err(format!(
                    "the rollback paused: {}",
                    s.update_message.unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    Err("the rollback did not complete within 300s".into())
}

/// After a rollback: is the previous version served again?
async fn restored(mut run: Run, hook: &impl AfterSwitch, cause: String) -> Report {
    let t = Instant::now();
    let previous = run.report.previous.clone();
    match hook.check_restored(previous.as_ref()).await {
        Ok(detail) => {
            run.step(StepName::VerifyRestored, t, true, detail);
            let msg = match &previous {
                Some(p) => format!(
                    "deployed and rolled back; the previous release is serving ({}, revision {}). Cause: {cause}",
                    p.image, p.revision
                ),
                None => format!(
                    "rolled back; there was no previous release, so nothing serves. Cause: {cause}"
                ),
            };
            run.end(Outcome::RolledBack, msg)
        }
        Err(why) => {
            run.step(StepName::VerifyRestored, t, false, why.clone());
            run.end(Outcome::RollbackFailed, format!("{cause}; after the rollback the public check still fails: {why}. Check the service's tasks and the proxy"))
        }
    }
}

/// `slipway rollback` on a swarm: the manager's previous spec comes back.
pub async fn rollback(p: &Prepared, lock_ttl: Duration) -> Result<Report, Failure> {
    let Some(current) = p
        .engine
        .inspect_service(&p.spec.name)
        .await
        .map_err(unavailable)?
    else {
        return Err(Failure::usage(anyhow::anyhow!(
            "there is no service {} on this swarm to roll back",
            p.spec.name
        ))
        .with_hint("deploy it first"));
    };
    let Some(previous) = current.previous_image.clone() else {
        return Err(Failure::usage(anyhow::anyhow!(
            "service {} has no previous version to roll back to",
            p.spec.name
        ))
        .with_hint("roll out a pinned image instead"));
    };
    let revision = Revision::parse(
        current
            .labels
            .get(crate::rollout::LABEL_REVISION)
            .map_or("unknown", |s| s),
        "the service's revision label",
    )
    .map_err(Failure::usage)?;
    let lock = take_lock(p, &current.image, lock_ttl).await?;
    let mut run = Run::new(&p.spec.name, &previous, &revision);
    run.report.previous = Some(previous_ref(&current));
    let t = Instant::now();
    let result = rollback_and_wait(&p.engine, &p.spec.name).await;
    lock.release(&p.engine).await;
    Ok(match result {
        Ok(detail) => {
            run.step(StepName::Rollback, t, true, detail.clone());
            run.end(Outcome::Deployed, detail)
        }
        Err(e) => {
            run.step(StepName::Rollback, t, false, e.clone());
            run.end(Outcome::RollbackFailed, format!("the rollback failed: {e}"))
        }
    })
}
