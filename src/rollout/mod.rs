//! A rollout as data: facts gathered read-only, a pure `plan(spec, target, facts)`, and one
//! executor (`execute.rs`) that carries the plan out and undoes it on failure.

mod facts;
mod gate;
pub mod locked;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub mod execute;
pub use execute::{Outcome, Report, StepName, execute};
pub use facts::gather_facts;
pub use gate::{Gate, HttpGate};

use crate::caddy;
use crate::engine::{AppContainer, ContainerInfo, ImageInfo};
use crate::reference::PinnedImage;
use crate::revision::Revision;
use crate::spec::ServiceSpec;

pub const LABEL_SERVICE: &str = "dev.slipway.service";
pub const LABEL_SLOT: &str = "dev.slipway.slot";
pub const LABEL_PORT: &str = "dev.slipway.port";
pub const LABEL_DIGEST: &str = "dev.slipway.digest";
pub const LABEL_IMAGE: &str = "dev.slipway.image";
pub const LABEL_REVISION: &str = "dev.slipway.revision";
pub const LABEL_RELEASED: &str = "dev.slipway.released";
pub const LABEL_RUN: &str = "dev.slipway.run-url";
/// On a container `slipway watch` started in place of a stuck one: when this release was replaced
/// on this host (unix ms, comma-separated, oldest first), the new replacement included.
pub const LABEL_REPLACEMENTS: &str = "dev.slipway.replacements";
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";

/// What to roll out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    #[serde(serialize_with = "as_text")]
    pub image: PinnedImage,
    /// The git SHA it was built from; read from the image's OCI label when not given.
    pub revision: Option<Revision>,
    /// Restart a retained container of this digest in the free slot instead of creating one
    /// (what `slipway rollback` does).
    pub reuse_retained: bool,
    /// Replace the serving container even though it runs this very digest: it stopped answering
    /// (`slipway watch`). A fresh container goes into the free slot through the same gate and
    /// switch, and the stuck one is removed afterwards, not kept for rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace: Option<Replace>,
}

/// What a replacement carries forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replace {
    /// Earlier replacements of this release on this host (unix ms, oldest first), as far back as
    /// the watchdog still counts them; the plan adds this one and stores all of them in the new
    /// container's `dev.slipway.replacements` label, so crash-loop protection survives a restart
    /// of the watchdog and works across `slipway watch --once` runs.
    pub history: Vec<u64>,
}

impl Replace {
    /// The history a container carries in its label (empty when it has none).
    pub fn history_of(info: &ContainerInfo) -> Vec<u64> {
        info.labels
            .get(LABEL_REPLACEMENTS)
            .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

fn as_text<S: serde::Serializer>(image: &PinnedImage, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&image.to_string())
}

/// Everything the planner may know, gathered before any change.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The service's app containers, running or not.
    pub containers: Vec<ContainerInfo>,
    /// Helper containers (agents, probes) of this service left by a run that died.
    pub leftovers: Vec<ContainerInfo>,
    /// The target image, when the engine already has it.
    pub image: Option<ImageInfo>,
    /// The snippet Caddy imports and what the last reload applied; `None` when not read.
    pub snippet: Option<caddy::SnippetState>,
    /// Env values by name, from the job's environment.
    pub env: Vec<(String, String)>,
    pub now_unix_ms: u64,
    pub run_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub service: String,
    pub target: Target,
    pub revision: Revision,
    pub active: Option<ContainerRef>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// The requested digest already serves.
    AlreadyServing {
        container: ContainerRef,
    },
    Rollout(Box<Rollout>),
    /// The host breaks its contract (the snippet is missing while releases run): changing
    /// anything could take down what serves; nothing is changed (exit 4).
    HostContract {
        reason: String,
        hint: String,
    },
    /// The inputs cannot be carried out safely (a hostile revision label, a value the proxy
    /// config cannot hold); nothing is changed.
    Refuse {
        reason: String,
        hint: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRef {
    pub id: String,
    pub name: String,
    pub slot: Option<usize>,
    pub port: Option<u16>,
    pub digest: String,
    pub revision: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    /// Pull the image by digest first (the engine does not have it).
    pub pull: bool,
    /// A run died between writing the snippet and the reload: the file names another upstream
    /// than Caddy serves. Write this (what the last reload applied) back and reload first, then
    /// drain before anything is removed.
    pub recover: Option<String>,
    /// Running containers that are not serving and are newer than what serves: a run that died.
    pub remove_abandoned: Vec<ContainerRef>,
    /// Older releases still running though not serving: stopped and kept.
    pub stop_stale: Vec<ContainerRef>,
    pub leftovers: Vec<String>,
    pub new: NewContainer,
    pub slot: usize,
    pub port: u16,
    pub gate: Gate,
    pub snippet: SnippetChange,
    pub reload_command: String,
    pub drain: Duration,
    /// Stopped (SIGTERM, then SIGKILL after the grace period) and kept for rollback.
    pub retire: Option<ContainerRef>,
    /// Remove `retire` instead of keeping it: it is a stuck container being replaced.
    pub remove_retired: bool,
    pub stop_grace: Duration,
    /// Old stopped releases beyond `retain`, removed at the end.
    pub prune: Vec<ContainerRef>,
    pub on_failure: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NewContainer {
    Create(Box<AppContainer>),
    /// A retained container of the target digest, already in the free slot.
    Restart(ContainerRef),
}

impl NewContainer {
    pub fn name(&self) -> &str {
        match self {
            NewContainer::Create(c) => &c.name,
            NewContainer::Restart(r) => &r.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnippetChange {
    pub file: String,
    pub path: String,
    pub content: String,
    /// What is there now: restored on failure. `None` in a plan made without reading it.
    pub previous: Option<Option<String>>,
}

fn label(info: &ContainerInfo, key: &str) -> String {
    info.labels.get(key).cloned().unwrap_or_default()
}

fn released(info: &ContainerInfo) -> u64 {
    label(info, LABEL_RELEASED).parse().unwrap_or(0)
}

pub fn container_ref(info: &ContainerInfo) -> ContainerRef {
    ContainerRef {
        id: info.id.clone(),
        name: info.name.clone(),
        slot: label(info, LABEL_SLOT).parse().ok(),
        port: label(info, LABEL_PORT).parse().ok(),
        digest: label(info, LABEL_DIGEST),
        revision: label(info, LABEL_REVISION),
    }
}

/// What Caddy serves, as far as the host shows it: the content the last reload applied, else
/// the file. `None` when not read; `Some(None)` when there is no snippet.
pub fn routed(facts: &Facts) -> Option<Option<&str>> {
    let s = facts.snippet.as_ref()?;
    Some(s.applied.as_deref().or(s.file.as_deref()))
}

/// The applied content to put back when the file says something else (a run died before its
/// reload, or before it recorded it).
fn pending(facts: &Facts) -> Option<String> {
    let s = facts.snippet.as_ref()?;
    let applied = s.applied.as_ref()?;
    (s.file.as_ref() != Some(applied)).then(|| applied.clone())
}

/// The container that serves now: the running one the snippet routes to; without the snippet,
/// the newest running one.
pub fn active(facts: &Facts) -> Option<&ContainerInfo> {
    let running = facts.containers.iter().filter(|c| c.running);
    match routed(facts) {
        Some(snippet) => {
            let port = snippet.and_then(caddy::snippet_port)?;
            running
                .into_iter()
                .find(|c| label(c, LABEL_PORT) == port.to_string())
        }
        None => running.max_by_key(|c| released(c)),
    }
}

/// The last good release before the one serving: the newest retained (stopped) container with
/// another digest.
pub fn rollback_target(facts: &Facts) -> Option<&ContainerInfo> {
    let current = active(facts).map(|a| label(a, LABEL_DIGEST));
    facts
        .containers
        .iter()
        .filter(|c| !c.running && Some(label(c, LABEL_DIGEST)) != current)
        .filter(|c| PinnedImage::parse(&label(c, LABEL_IMAGE)).is_ok())
        .max_by_key(|c| released(c))
}

/// The pure planner: no I/O, no clock, no environment.
pub fn plan(spec: &ServiceSpec, target: &Target, facts: &Facts, reload_command: &str) -> Plan {
    let digest = target.image.digest().to_string();
    let stop = |revision: Revision, action: Action| Plan {
        service: spec.name.clone(),
        target: target.clone(),
        revision,
        active: active(facts).map(container_ref),
        action,
    };
    let refuse = |revision, reason, hint| stop(revision, Action::Refuse { reason, hint });
    let revision = match revision_of(target, facts) {
        Ok(r) => r,
        Err(e) => return refuse(Revision::of_digest(&digest), e.to_string(), e.hint()),
    };
    if let Some((reason, hint)) = host_contract(spec, facts) {
        return stop(revision, Action::HostContract { reason, hint });
    }
    let active = active(facts);
    let active_ref = active.map(container_ref);
    if let Some(a) = active
        && target.replace.is_none()
        && label(a, LABEL_DIGEST) == digest
        && a.health.as_deref() != Some("unhealthy")
        && !a.paused
    {
        return Plan {
            service: spec.name.clone(),
            target: target.clone(),
            revision,
            active: active_ref.clone(),
            action: Action::AlreadyServing {
                container: container_ref(a),
            },
        };
    }
    let slot = match active.and_then(|a| label(a, LABEL_SLOT).parse::<usize>().ok()) {
        Some(0) => 1,
        _ => 0,
    };
    let port = spec.slots[slot];
    let active_released = active.map(released).unwrap_or(0);
    let others: Vec<&ContainerInfo> = facts
        .containers
        .iter()
        .filter(|c| c.running && Some(&c.id) != active.map(|a| &a.id))
        .collect();
    let (stop_stale, remove_abandoned): (Vec<_>, Vec<_>) = others
        .into_iter()
        .partition(|c| active.is_some() && released(c) < active_released);
    let reuse = target
        .reuse_retained
        .then(|| {
            facts
                .containers
                .iter()
                .filter(|c| {
                    !c.running
                        && label(c, LABEL_DIGEST) == digest
                        && label(c, LABEL_SLOT) == slot.to_string()
                })
                .max_by_key(|c| released(c))
        })
        .flatten();
    let new = match reuse {
        Some(c) => NewContainer::Restart(container_ref(c)),
        None => NewContainer::Create(Box::new(app_container(
            spec, target, &revision, facts, slot, port,
        ))),
    };
    // Keep `retain` stopped releases, counting the one retired now (unless it is removed).
    let mut stopped: Vec<&ContainerInfo> = facts
        .containers
        .iter()
        .filter(|c| !c.running && Some(c.name.as_str()) != Some(new.name()))
        .chain(stop_stale.iter().copied())
        .collect();
    stopped.sort_by_key(|c| std::cmp::Reverse(released(c)));
    let keep = spec
        .retain
        .saturating_sub(usize::from(active.is_some() && target.replace.is_none()));
    let prune = stopped
        .iter()
        .skip(keep)
        .map(|c| container_ref(c))
        .collect();
    let file = format!("{}.caddy", spec.name);
    let content = match caddy::render_snippet(&caddy::SnippetValues {
        service: &spec.name,
        port,
        digest: &digest,
        revision: &revision,
        options: &spec.caddy.upstream_options,
    }) {
        Ok(c) => c,
        Err(e) => {
            let hint =
                "fix the value in the spec; docs/operator-guide.md lists what may be written"
                    .into();
            return refuse(revision, e.to_string(), hint);
        }
    };
    let snippet = SnippetChange {
        path: spec.snippet_path().display().to_string(),
        content,
        previous: facts
            .snippet
            .as_ref()
            .map(|_| routed(facts).flatten().map(String::from)),
        file,
    };
    let serving = active_ref.as_ref().map_or(
        "nothing was serving before; the service stays down".to_string(),
        |a| format!("{} keeps serving", a.name),
    );
    let on_failure = vec![
        format!("before the switch: remove {} ({serving})", new.name()),
        format!(
            "after the switch: restore the previous {}, reload Caddy, check it, remove {}",
            snippet.file,
            new.name()
        ),
        "if that restore fails: exit 3 with the state of the host and the commands to run".into(),
    ];
    Plan {
        service: spec.name.clone(),
        target: target.clone(),
        revision: revision.clone(),
        active: active_ref.clone(),
        action: Action::Rollout(Box::new(Rollout {
            pull: facts.image.is_none(),
            recover: pending(facts),
            remove_abandoned: remove_abandoned.into_iter().map(container_ref).collect(),
            stop_stale: stop_stale.into_iter().map(container_ref).collect(),
            leftovers: facts.leftovers.iter().map(|c| c.name.clone()).collect(),
            new,
            slot,
            port,
            gate: Gate::from_spec(spec, revision.as_str()),
            snippet,
            reload_command: reload_command.to_string(),
            drain: spec.drain,
            retire: active_ref,
            remove_retired: target.replace.is_some(),
            stop_grace: spec.stop_grace_period,
            prune,
            on_failure,
        })),
    }
}

/// A missing snippet while releases run: the proxy may route to any of them, so none may be
/// touched. A plan that changes nothing, exit 4.
fn host_contract(spec: &ServiceSpec, facts: &Facts) -> Option<(String, String)> {
    let snippet = facts.snippet.as_ref()?;
    let running: Vec<&str> = facts
        .containers
        .iter()
        .filter(|c| c.running)
        .map(|c| c.name.as_str())
        .collect();
    if snippet.file.is_some() || running.is_empty() {
        return None;
    }
    let path = spec.snippet_path().display().to_string();
    let reason = format!(
        "{path} does not exist on the host, but {} of {} still run{}: Caddy may route to any of them, so slipway changes nothing",
        running.join(", "),
        spec.name,
        if running.len() == 1 { "s" } else { "" }
    );
    let hint = format!(
        "restore the snippet (Day 0, docs/operator-guide.md step 3): write `reverse_proxy 127.0.0.1:<the serving slot's port>` to {path} as root on the host, reload Caddy, remove the stale record beside it (.{}.caddy.applied), then deploy again",
        spec.name
    );
    Some((reason, hint))
}

/// The revision: given (checked where it entered), else the image's label, checked here: an
/// image label is written by whoever built the image, not by the host's operator.
pub fn revision_of(
    target: &Target,
    facts: &Facts,
) -> Result<Revision, crate::revision::RevisionError> {
    if let Some(r) = &target.revision {
        return Ok(r.clone());
    }
    match facts
        .image
        .as_ref()
        .and_then(|i| i.labels.get(REVISION_LABEL))
    {
        Some(label) => {
            Revision::parse(label, "the image's org.opencontainers.image.revision label")
        }
        None => Ok(Revision::of_digest(target.image.digest())),
    }
}

fn app_container(
    spec: &ServiceSpec,
    target: &Target,
    revision: &Revision,
    facts: &Facts,
    slot: usize,
    port: u16,
) -> AppContainer {
    let digest = target.image.digest();
    let mut labels: BTreeMap<String, String> = spec.labels.clone();
    for (k, v) in [
        (LABEL_SERVICE, spec.name.clone()),
        (LABEL_SLOT, slot.to_string()),
        (LABEL_PORT, port.to_string()),
        (LABEL_DIGEST, digest.to_string()),
        (LABEL_IMAGE, target.image.to_string()),
        (LABEL_REVISION, revision.to_string()),
        (LABEL_RELEASED, facts.now_unix_ms.to_string()),
        (LABEL_RUN, facts.run_url.clone()),
    ] {
        labels.insert(k.to_string(), v);
    }
    if let Some(r) = &target.replace {
        let history: Vec<String> = r
            .history
            .iter()
            .chain([&facts.now_unix_ms])
            .map(u64::to_string)
            .collect();
        labels.insert(LABEL_REPLACEMENTS.to_string(), history.join(","));
    }
    let res = spec.resources();
    AppContainer {
        name: format!("{}-{}-{}", spec.name, ["a", "b"][slot], facts.now_unix_ms),
        image: target.image.to_string(),
        env: facts.env.clone(),
        labels,
        host_port: port,
        container_port: spec.container_port,
        volumes: spec.volumes.clone(),
        memory_bytes: res.memory_bytes,
        nano_cpus: res.nano_cpus,
        pids: res.pids,
        restart: spec.restart.clone(),
        log_max_size: spec.logging.max_size.clone(),
        log_max_file: spec.logging.max_file,
        network: spec.network.clone(),
        user: spec.user.clone(),
        read_only: spec.read_only,
        stop_grace_secs: spec.stop_grace_period.as_secs(),
    }
}

#[cfg(test)]
mod tests;
