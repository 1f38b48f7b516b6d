//! The `[swarm]` table: the service runs as a Docker Swarm service instead of in the two slots
//! of one host. These key names are the contract.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// Tasks the service runs.
    pub replicas: u64,
    /// The overlay network the tasks join (it must exist; the proxy joins it too for dnsrr).
    pub network: String,
    /// `dnsrr` (a proxy resolves `tasks.<name>`) or `vip` (needs IPVS on every node).
    #[serde(default = "default_endpoint_mode")]
    pub endpoint_mode: String,
    /// A host-mode published port on every node that runs a task (replicas < nodes).
    pub publish_port: Option<u16>,
    /// Placement constraints, e.g. "node.role==worker".
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Tasks replaced at a time.
    #[serde(default = "default_parallelism")]
    pub update_parallelism: u64,
    /// Pause between batches.
    #[serde(default, with = "super::humantime_serde")]
    #[schemars(schema_with = "super::schema::duration")]
    pub update_delay: Duration,
    /// How long Swarm watches each new task before the update counts as done.
    #[serde(default = "default_monitor", with = "super::humantime_serde")]
    #[schemars(schema_with = "super::schema::duration")]
    pub monitor: Duration,
}

fn default_endpoint_mode() -> String {
    "dnsrr".into()
}
fn default_parallelism() -> u64 {
    1
}
fn default_monitor() -> Duration {
    Duration::from_secs(5)
}

impl SwarmSpec {
    /// The proxy finds the tasks itself (`tasks.<name>` on the overlay, or every node's
    /// host-mode port with health checks): slipway switches nothing, so no proxy table is needed.
    pub fn proxy_discovers_tasks(&self) -> bool {
        self.endpoint_mode == "dnsrr"
    }
}

/// Every problem of the `[swarm]` table, each with its key path.
pub(super) fn problems(s: &SwarmSpec, p: &mut Vec<String>) {
    if s.replicas == 0 {
        p.push("swarm.replicas: must be at least 1".into());
    }
    if super::check_network(&s.network).is_err() || s.network.is_empty() {
        p.push(format!(
            "swarm.network: `{}` is not a network name (an overlay network, e.g. \"apps\")",
            s.network.escape_debug()
        ));
    }
    if !matches!(s.endpoint_mode.as_str(), "dnsrr" | "vip") {
        p.push(format!(
            "swarm.endpoint_mode: `{}` must be \"dnsrr\" or \"vip\"",
            s.endpoint_mode.escape_debug()
        ));
    }
    if s.publish_port == Some(0) {
        p.push("swarm.publish_port: must be 1-65535".into());
    }
    for (i, c) in s.constraints.iter().enumerate() {
        if !["==", "!="].iter().any(|op| c.contains(op)) {
            p.push(format!(
                "swarm.constraints[{i}]: `{}` is not a constraint like node.role==worker",
                c.escape_debug()
            ));
        }
    }
    if s.update_parallelism == 0 {
        p.push(
            "swarm.update_parallelism: must be at least 1 (0 would replace every task at once)"
                .into(),
        );
    }
    if s.monitor.is_zero() {
        p.push("swarm.monitor: must be above 0, long enough to see the health gate".into());
    }
}
