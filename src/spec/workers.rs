//! Workers: processes of the same image beside the web process, without a proxy route
//! (`[workers.NAME]`). They never publish ports; a deploy gates them before the web switch.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Limits, MAX_WAIT, check_volume, humantime_serde, parse_bytes, valid_env_name};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// What the worker runs, as argv (the image's entrypoint applies).
    pub command: Vec<String>,
    #[serde(default)]
    pub health: WorkerHealth,
    /// The worker's own limits (the service's do not apply).
    #[serde(default)]
    pub limits: Limits,
    /// Env names besides the service's own.
    #[serde(default)]
    pub env: Vec<String>,
    /// The worker's own volumes, in `docker run -v` form.
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// A worker is healthy when (with `docker`) the image's HEALTHCHECK says so and it is still
/// running `min_uptime` after its start.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerHealth {
    #[serde(default)]
    pub docker: bool,
    #[serde(default = "default_min_uptime", with = "humantime_serde")]
    #[schemars(schema_with = "super::schema::duration")]
    pub min_uptime: Duration,
    #[serde(default = "default_worker_deadline", with = "humantime_serde")]
    #[schemars(schema_with = "super::schema::duration")]
    pub deadline: Duration,
}

impl Default for WorkerHealth {
    fn default() -> Self {
        WorkerHealth {
            docker: false,
            min_uptime: default_min_uptime(),
            deadline: default_worker_deadline(),
        }
    }
}

fn default_min_uptime() -> Duration {
    Duration::from_secs(5)
}

fn default_worker_deadline() -> Duration {
    Duration::from_secs(60)
}

/// Every problem of worker `name`, each with its key path.
pub fn worker_problems(name: &str, w: &Worker, p: &mut Vec<String>) {
    let at = format!("workers.{name}");
    let name_ok = (1..=20).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        p.push(format!(
            "{at}: the name must be 1-20 chars of a-z, 0-9 and '-'"
        ));
    }
    if w.command.first().is_none_or(|c| c.trim().is_empty()) {
        p.push(format!(
            "{at}.command: give the argv as a list, e.g. [\"bin/worker\"]"
        ));
    }
    for (i, env) in w.env.iter().enumerate() {
        if !valid_env_name(env) {
            p.push(format!("{at}.env[{i}]: `{env}` is not a variable name"));
        }
    }
    for (i, v) in w.volumes.iter().enumerate() {
        if let Err(why) = check_volume(v) {
            p.push(format!("{at}.volumes[{i}]: `{}` {why}", v.escape_debug()));
        }
    }
    if let Some(m) = &w.limits.memory
        && parse_bytes(m).is_none()
    {
        p.push(format!("{at}.limits.memory: `{m}` is not a size like 256m"));
    }
    for (key, d) in [
        ("min_uptime", w.health.min_uptime),
        ("deadline", w.health.deadline),
    ] {
        if d.is_zero() || d > MAX_WAIT {
            p.push(format!("{at}.health.{key}: must be above 0 and at most 1h"));
        }
    }
    if w.health.min_uptime >= w.health.deadline {
        p.push(format!(
            "{at}.health: min_uptime must be shorter than the deadline"
        ));
    }
}
