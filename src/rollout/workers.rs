//! Planning a release's workers: one new container per `[workers.NAME]` of the target image
//! (or, for a rollback, the retained one), gated before the web switch; the old ones stopped
//! after the drain and kept like the web release.

use super::containers::{app_container, env_for, label, released};
use super::{Facts, NewContainer, Target, WorkerGate, WorkerRollout, container_ref};
use super::{LABEL_DIGEST, LABEL_PORT, LABEL_SLOT};
use crate::engine::ContainerInfo;
use crate::image::revision::Revision;
use crate::spec::{ServiceSpec, Worker};

pub const LABEL_WORKER: &str = "dev.slipway.worker";

/// The workers of a new release (none for a watchdog's replacement of the web container).
pub fn plan_workers(
    spec: &ServiceSpec,
    target: &Target,
    revision: &Revision,
    facts: &Facts,
    active_digest: Option<&str>,
) -> Vec<WorkerRollout> {
    if target.replace.is_some() {
        return Vec::new();
    }
    spec.workers
        .iter()
        .map(|(name, w)| plan_one(spec, target, revision, facts, active_digest, name, w))
        .collect()
}

fn plan_one(
    spec: &ServiceSpec,
    target: &Target,
    revision: &Revision,
    facts: &Facts,
    active_digest: Option<&str>,
    name: &str,
    w: &Worker,
) -> WorkerRollout {
    let mine: Vec<&ContainerInfo> = facts
        .workers
        .iter()
        .filter(|c| label(c, LABEL_WORKER) == name)
        .collect();
    let serving = |c: &&&ContainerInfo| Some(label(c, LABEL_DIGEST).as_str()) == active_digest;
    let (retire, remove): (Vec<&&ContainerInfo>, Vec<_>) =
        mine.iter().filter(|c| c.running).partition(serving);
    let retained = mine
        .iter()
        .filter(|c| !c.running && Some(label(c, LABEL_DIGEST).as_str()) == target.image.digest())
        .max_by_key(|c| released(c))
        .filter(|_| target.reuse_retained);
    let new = match retained {
        Some(c) => NewContainer::Restart(container_ref(c)),
        None => NewContainer::Create(Box::new(worker_container(
            spec, target, revision, facts, name, w,
        ))),
    };
    let mut stopped: Vec<&&ContainerInfo> = mine
        .iter()
        .filter(|c| !c.running && c.name != new.name())
        .collect();
    stopped.sort_by_key(|c| std::cmp::Reverse(released(c)));
    let keep = spec.retain.saturating_sub(retire.len().min(1));
    WorkerRollout {
        name: name.to_string(),
        new,
        gate: WorkerGate {
            docker: w.health.docker,
            min_uptime: w.health.min_uptime,
            deadline: w.health.deadline,
        },
        remove: remove.into_iter().map(|c| container_ref(c)).collect(),
        retire: retire.into_iter().map(|c| container_ref(c)).collect(),
        prune: stopped
            .iter()
            .skip(keep)
            .map(|c| container_ref(c))
            .collect(),
    }
}

/// The app's container, made a worker: its argv, env names, volumes and limits; no port.
fn worker_container(
    spec: &ServiceSpec,
    target: &Target,
    revision: &Revision,
    facts: &Facts,
    name: &str,
    w: &Worker,
) -> crate::engine::AppContainer {
    let mut c = app_container(spec, target, revision, facts, 0, spec.slots[0]);
    c.name = format!("{}-{name}-{}", spec.name, facts.now_unix_ms);
    c.cmd = w.command.clone();
    c.publish = false;
    c.healthcheck = w.health.docker;
    let names: Vec<String> = spec.env.iter().chain(&w.env).cloned().collect();
    c.env = env_for(&names, facts);
    c.volumes = w.volumes.clone();
    c.resources = w.limits.resources();
    c.labels.remove(LABEL_SLOT);
    c.labels.remove(LABEL_PORT);
    c.labels.insert(LABEL_WORKER.into(), name.into());
    c.labels
        .insert(crate::engine::LABEL_ROLE.into(), "worker".into());
    c
}

/// Every worker of the spec already runs `digest`.
pub fn workers_current(spec: &ServiceSpec, facts: &Facts, digest: &str) -> bool {
    spec.workers.keys().all(|name| {
        facts.workers.iter().any(|c| {
            c.running && label(c, LABEL_WORKER) == *name && label(c, LABEL_DIGEST) == digest
        })
    })
}
