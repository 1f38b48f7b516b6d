//! A rollout as data: what to roll out, the plan with every decision the planner made, and the
//! containers it names. Plain values, serialised as `slipway plan --format json` shows them.

use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::engine::{AppContainer, ContainerInfo};
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;

/// How a plan names an image that the deploy builds after planning.
pub const BUILT: &str = "<built by this deploy>";

/// The image a rollout runs: pinned by digest, or built by the deploy after this plan was made
/// (a dry run plans before the digest exists; such a plan is shown, never executed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetImage {
    Pinned(PinnedImage),
    Unbuilt {
        /// `REGISTRY/REPOSITORY`.
        repository: String,
    },
}

impl TargetImage {
    pub fn pinned(&self) -> Option<&PinnedImage> {
        match self {
            TargetImage::Pinned(image) => Some(image),
            TargetImage::Unbuilt { .. } => None,
        }
    }

    /// The `sha256:` digest; `None` until the deploy has built the image.
    pub fn digest(&self) -> Option<&str> {
        self.pinned().map(PinnedImage::digest)
    }

    /// The digest as a plan shows it: the digest, or `<built by this deploy>`.
    pub fn digest_shown(&self) -> &str {
        self.digest().unwrap_or(BUILT)
    }
}

impl From<PinnedImage> for TargetImage {
    fn from(image: PinnedImage) -> Self {
        TargetImage::Pinned(image)
    }
}

impl std::fmt::Display for TargetImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetImage::Pinned(image) => write!(f, "{image}"),
            TargetImage::Unbuilt { repository } => write!(f, "{repository}@{BUILT}"),
        }
    }
}

impl Serialize for TargetImage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What to roll out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub image: TargetImage,
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
    /// Which of the two slots it holds (`None`: a worker or a container outside the slots).
    pub slot: Option<usize>,
    /// The 127.0.0.1 host port it publishes, if any.
    pub port: Option<u16>,
    /// The image's `sha256:` manifest digest.
    pub digest: String,
    /// The revision label it was deployed with.
    pub revision: String,
    /// `REPO@sha256:…`, as the container was created from.
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    /// The engine lacks the image: a plan shown without the lock (`slipway plan`) says it will be
    /// pulled; under the lock it is pulled before planning (`read::with_image`), so an executed
    /// plan never has this set.
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
    /// The new release's workers, started and gated before the web switch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerRollout>,
    /// The spec's release command, run once before any new container starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    pub new: NewContainer,
    pub slot: usize,
    pub port: u16,
    pub gate: Gate,
    /// Why the gate differs from the spec's, when the image decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_note: Option<String>,
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

/// A one-shot container of the new image that runs the release command (migrations).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    pub argv: Vec<String>,
    pub deadline: Duration,
    /// Made like the app's container: image, env names, network, volumes, user, limits.
    pub container: AppContainer,
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
    /// The proxy whose file it is.
    pub proxy: crate::host::proxy::ProxyKind,
    pub file: String,
    pub path: String,
    /// The new content; `None` in a plan for an image not built yet (it names the digest).
    pub content: Option<String>,
    /// What is there now: restored on failure. `None` in a plan made without reading it.
    pub previous: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRollout {
    pub name: String,
    pub new: NewContainer,
    pub gate: WorkerGate,
    /// Running workers of this name that are not the serving release's: removed first.
    pub remove: Vec<ContainerRef>,
    /// The serving release's workers: stopped after the drain and kept for rollback.
    pub retire: Vec<ContainerRef>,
    /// Stopped workers of this name beyond `retain`.
    pub prune: Vec<ContainerRef>,
}

/// Healthy: (with `docker`) the image's HEALTHCHECK says so, and still running `min_uptime`
/// after the start, within `deadline`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerGate {
    pub docker: bool,
    pub min_uptime: Duration,
    pub deadline: Duration,
}
