//! Watching a release's workers: one that stopped, keeps restarting or reports unhealthy is
//! replaced by a fresh container of the serving digest, gated, under the deploy lock; the stuck
//! one is removed only after its replacement passes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::events::Event;
use super::watcher::{Replacement, Shared};
use crate::engine::ContainerInfo;
use crate::exit::Exit;
use crate::host::agent::HostAgent;
use crate::host::lock::LockError;
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::rollout::workers::{LABEL_WORKER, plan_workers};
use crate::rollout::{self, LABEL_DIGEST, LABEL_IMAGE, LABEL_REVISION, LABEL_RUN, Target, label};
use crate::spec::ServiceSpec;

/// Replaces the serving release's stuck workers; `None` when all are well (or nothing serves).
pub async fn check(
    spec: &ServiceSpec,
    sh: &Shared,
    cancel: &CancellationToken,
) -> Option<Replacement> {
    if spec.workers.is_empty() {
        return None;
    }
    let facts = rollout::gather_facts(&sh.engine, &spec.name, None)
        .await
        .ok()?;
    let active = rollout::active(&facts)?.clone();
    let digest = label(&active, LABEL_DIGEST);
    let stuck: Vec<String> = spec
        .workers
        .keys()
        .filter(|name| !facts.workers.iter().any(|c| well(c, name, &digest)))
        .cloned()
        .collect();
    if stuck.is_empty() {
        return None;
    }
    Some(replace(spec, sh, &active, &stuck, cancel).await)
}

/// A running worker `name` of the serving digest that does not report trouble.
fn well(c: &ContainerInfo, name: &str, digest: &str) -> bool {
    c.running
        && c.status != "restarting"
        && c.health.as_deref() != Some("unhealthy")
        && label(c, LABEL_WORKER) == name
        && label(c, LABEL_DIGEST) == digest
}

async fn replace(
    spec: &ServiceSpec,
    sh: &Shared,
    active: &ContainerInfo,
    stuck: &[String],
    cancel: &CancellationToken,
) -> Replacement {
    let request =
        rollout::locked::lock_request(spec, &sh.host, &sh.owner, sh.lock_ttl, Duration::ZERO);
    let body = async |agent: &HostAgent| locked(spec, sh, agent, active, stuck, cancel).await;
    match rollout::locked::with_lock(&sh.engine, &request, cancel, body).await {
        Ok(done) => done,
        Err(LockError::Held { .. }) => Replacement::LockHeld,
        Err(LockError::Interrupted { .. }) => Replacement::Interrupted,
        Err(e) => {
            let message = format!("could not take the deploy lock: {e}");
            failed(sh, spec, stuck, "unavailable", message);
            Replacement::Failed(Exit::Unavailable)
        }
    }
}

async fn locked(
    spec: &ServiceSpec,
    sh: &Shared,
    agent: &HostAgent,
    active: &ContainerInfo,
    stuck: &[String],
    cancel: &CancellationToken,
) -> Replacement {
    let target = match target_of(active) {
        Ok(t) => t,
        Err(why) => {
            failed(sh, spec, stuck, "usage-error", why);
            return Replacement::Failed(Exit::Usage);
        }
    };
    let (workers, exited) = match fresh_plan(spec, sh, active, &target).await {
        Ok(planned) => planned,
        Err(why) => {
            failed(sh, spec, stuck, "unavailable", why);
            return Replacement::Failed(Exit::Unavailable);
        }
    };
    let workers: Vec<_> = workers
        .into_iter()
        .filter(|w| stuck.contains(&w.name))
        .collect();
    let exited: Vec<&ContainerInfo> = exited
        .iter()
        .filter(|c| stuck.contains(&label(c, LABEL_WORKER)))
        .collect();
    let old: Vec<String> = workers
        .iter()
        .flat_map(|w| w.retire.iter().map(|c| c.name.clone()))
        .chain(exited.iter().map(|c| c.name.clone()))
        .collect();
    // Workers have no route: nothing here writes or applies the proxy's file.
    let no_switch = crate::host::proxy::Driver::Reload {
        kind: Default::default(),
        test: None,
        reload: Vec::new(),
    };
    let live = rollout::Live {
        engine: &sh.engine,
        agent,
        driver: &no_switch,
    };
    match rollout::worker_gate::replace(&live, cancel, &workers).await {
        Ok(new) => {
            for c in exited {
                let _ = sh.engine.remove_container(&c.id).await;
            }
            let revision = label(active, LABEL_REVISION);
            let service = spec.name.clone();
            sh.events.emit(Event::WorkersReplaced {
                service,
                old,
                new,
                revision,
            });
            Replacement::Replaced
        }
        Err(why) => {
            failed(sh, spec, stuck, "rolled-back", why);
            Replacement::Failed(Exit::RolledBack)
        }
    }
}

/// The serving release as a target: its pinned image and revision.
fn target_of(active: &ContainerInfo) -> Result<Target, String> {
    let image = PinnedImage::parse(&label(active, LABEL_IMAGE))
        .map_err(|e| format!("{}'s image label is not pinned: {e}", active.name))?;
    let revision = Revision::parse(
        &label(active, LABEL_REVISION),
        "the serving container's label",
    )
    .unwrap_or_else(|_| Revision::of_digest(image.digest()));
    Ok(Target {
        image: image.into(),
        revision: Some(revision),
        reuse_retained: false,
        replace: None,
    })
}

/// Fresh facts under the lock (env values from the serving container, else the watchdog's
/// environment), then the workers as a new release would plan them, and the serving release's
/// workers that are not running.
async fn fresh_plan(
    spec: &ServiceSpec,
    sh: &Shared,
    active: &ContainerInfo,
    target: &Target,
) -> Result<(Vec<rollout::WorkerRollout>, Vec<ContainerInfo>), String> {
    let mut facts = rollout::gather_facts(&sh.engine, &spec.name, target.image.pinned())
        .await
        .map_err(|e| e.to_string())?;
    let names = spec.all_env_names();
    let mut env = sh
        .engine
        .env_of(&active.id, &names)
        .await
        .map_err(|e| e.to_string())?;
    for name in &names {
        if !env.iter().any(|(k, _)| k == name)
            && let Ok(v) = std::env::var(name)
        {
            env.push((name.clone(), v));
        }
    }
    facts.env = env;
    facts.run_url = label(active, LABEL_RUN);
    facts.now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let revision = target.revision.clone().expect("target_of sets it");
    let digest = target.image.digest_shown().to_string();
    let exited = facts
        .workers
        .iter()
        .filter(|c| !c.running && label(c, LABEL_DIGEST) == digest)
        .cloned()
        .collect();
    Ok((
        plan_workers(spec, target, &revision, &facts, Some(&digest)),
        exited,
    ))
}

fn failed(sh: &Shared, spec: &ServiceSpec, stuck: &[String], outcome: &str, message: String) {
    sh.events.emit(Event::ReplaceFailed {
        service: spec.name.clone(),
        container: format!("worker(s) {}", stuck.join(", ")),
        outcome: outcome.into(),
        message,
        health_log: Vec::new(),
        log_tail: String::new(),
    });
}
