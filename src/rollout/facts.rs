//! Facts: what the engine says about a service, read without changing anything.

use super::LABEL_SERVICE;
use crate::engine::{
    ContainerInfo, Engine, EngineError, ImageInfo, LABEL_MANAGED, LABEL_ROLE, ROLE_WATCH_PROBE,
};
use crate::image::reference::PinnedImage;

/// Everything the planner may know, gathered before any change.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The service's app containers, running or not.
    pub containers: Vec<ContainerInfo>,
    /// The service's worker containers, running or not.
    pub workers: Vec<ContainerInfo>,
    /// Helper containers (agents, probes) of this service left by a run that died.
    pub leftovers: Vec<ContainerInfo>,
    /// The target image, when the engine already has it.
    pub image: Option<ImageInfo>,
    /// The snippet Caddy imports and what the last reload applied; `None` when not read.
    pub snippet: Option<SnippetState>,
    /// Env values by name, from the job's environment.
    pub env: Vec<(String, String)>,
    pub now_unix_ms: u64,
    pub run_url: String,
}

/// The proxy's file as read from the host, and whose file it is (what the routed port is read
/// with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnippetState {
    pub file: Option<String>,
    pub applied: Option<String>,
    pub proxy: crate::host::proxy::ProxyKind,
}

impl SnippetState {
    pub fn of(read: crate::host::agent::FileState, proxy: crate::host::proxy::ProxyKind) -> Self {
        SnippetState {
            file: read.file,
            applied: read.applied,
            proxy,
        }
    }
}

/// What the engine says about `service` and `image`, for any caller; the env values and the run
/// URL are the caller's (the watchdog's are those of the container it replaces). The containers
/// and the image are read side by side.
pub async fn gather_facts(
    engine: &Engine,
    service: &str,
    image: Option<&PinnedImage>,
) -> Result<Facts, EngineError> {
    let image_ref = image.map(PinnedImage::to_string);
    let inspect_image = async {
        match &image_ref {
            Some(i) => engine.inspect_image(i).await,
            None => Ok(None),
        }
    };
    let labels = [(LABEL_MANAGED, "true"), (LABEL_SERVICE, service)];
    // The lock's container is no fact of the plan (and is being started beside this).
    let lock = crate::host::lock::lock_name(service);
    let containers = engine.containers_with_labels_but(&labels, &lock);
    let (all, image) = tokio::try_join!(containers, inspect_image)?;
    let role = |c: &ContainerInfo, r: &str| c.labels.get(LABEL_ROLE).map(String::as_str) == Some(r);
    let (containers, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| role(c, "app"));
    let (workers, helpers): (Vec<_>, Vec<_>) = others.into_iter().partition(|c| role(c, "worker"));
    let leftovers = helpers.into_iter().filter(left_behind).collect();
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    Ok(Facts {
        containers,
        workers,
        leftovers,
        image,
        now_unix_ms,
        ..Facts::default()
    })
}

/// A helper of a run that died: an agent, probe or release container; a watchdog's probe
/// sibling that does not run (its watchdog was killed between creating and starting it); or a
/// released lock (renamed) that the engine failed to remove (neither running nor `removing`).
fn left_behind(c: &ContainerInfo) -> bool {
    match c.labels.get(LABEL_ROLE).map(String::as_str) {
        Some("agent" | "probe" | "release") => true,
        Some(ROLE_WATCH_PROBE) => !c.running,
        Some("lock") => !c.running && c.status != "removing",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_role(role: &str, running: bool) -> ContainerInfo {
        let mut c = ContainerInfo {
            running,
            ..ContainerInfo::default()
        };
        c.labels.insert(LABEL_ROLE.into(), role.into());
        c
    }

    #[test]
    fn a_watch_probe_that_never_ran_is_left_behind_a_running_one_is_not() {
        assert!(left_behind(&with_role(ROLE_WATCH_PROBE, false)));
        assert!(!left_behind(&with_role(ROLE_WATCH_PROBE, true)));
        assert!(left_behind(&with_role("agent", true)));
        assert!(!left_behind(&with_role("app", false)));
    }

    #[test]
    fn a_released_lock_is_left_behind_only_once_the_engine_has_stopped_removing_it() {
        let mut lock = with_role("lock", false);
        lock.status = "dead".into();
        assert!(left_behind(&lock));
        lock.status = "removing".into();
        assert!(!left_behind(&lock));
        assert!(!left_behind(&with_role("lock", true)));
    }
}
