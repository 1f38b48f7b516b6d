//! The containers a plan names: references to the running ones, and the new app container a
//! release creates (the web process; workers are made from it).

use std::collections::BTreeMap;

use super::*;
use crate::engine::{AppContainer, ContainerInfo};
use crate::image::revision::Revision;
use crate::spec::ServiceSpec;

/// A label's value, empty when the container has none.
pub fn label(info: &ContainerInfo, key: &str) -> String {
    info.labels.get(key).cloned().unwrap_or_default()
}

pub(crate) fn released(info: &ContainerInfo) -> u64 {
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
        image: label(info, LABEL_IMAGE),
    }
}

/// The values of `names` from the facts' env.
pub(crate) fn env_for(names: &[String], facts: &Facts) -> Vec<(String, String)> {
    facts
        .env
        .iter()
        .filter(|(k, _)| names.contains(k))
        .cloned()
        .collect()
}

pub(crate) fn app_container(
    spec: &ServiceSpec,
    target: &Target,
    revision: &Revision,
    facts: &Facts,
    slot: usize,
    port: u16,
) -> AppContainer {
    let digest = target.image.digest_shown();
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
    AppContainer {
        cmd: Vec::new(),
        publish: true,
        healthcheck: true,
        name: format!("{}-{}-{}", spec.name, ["a", "b"][slot], facts.now_unix_ms),
        image: target.image.to_string(),
        env: env_for(&spec.env, facts),
        labels,
        host_port: port,
        container_port: spec.container_port,
        volumes: spec.volumes.clone(),
        resources: spec.resources(),
        restart: spec.restart.clone(),
        log_max_size: spec.logging.max_size.clone(),
        log_max_file: spec.logging.max_file,
        network: spec.network.clone(),
        user: spec.user.clone(),
        read_only: spec.read_only,
        stop_grace_secs: spec.stop_grace_period.as_secs(),
    }
}
