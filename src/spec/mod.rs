//! The service spec: what a service is on a host (slots, port, env names, limits, health probe),
//! read from TOML and validated all at once. Pure: no I/O beyond `load`, no clock.

mod one_file;
mod proxy;
mod schema;
mod swarm;
mod workers;
pub use one_file::{BuildSpec, SmokeSpec};
pub use proxy::{Nginx, Traefik};
pub use schema::json_schema;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use swarm::SwarmSpec;
pub use workers::{Worker, WorkerHealth};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Names containers, snippets and the lock: `[a-z0-9][a-z0-9-]*`.
    pub name: String,
    /// The two 127.0.0.1 host ports the service alternates between (not with `[swarm]`).
    #[serde(default)]
    pub slots: [u16; 2],
    /// The port the app listens on inside its container.
    pub container_port: u16,
    /// Names of variables passed from the job's environment; values never reach a file.
    #[serde(default)]
    pub env: Vec<String>,
    /// Named volumes and bind mounts, in `docker run -v` form (SOURCE:TARGET[:ro]).
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default = "default_restart")]
    pub restart: String,
    #[serde(default)]
    pub logging: Logging,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Docker network to attach to (default: the engine's bridge).
    pub network: Option<String>,
    /// `UID:GID` to run as (default: the image's USER).
    pub user: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default = "default_grace", with = "humantime_serde")]
    #[schemars(schema_with = "schema::duration")]
    pub stop_grace_period: Duration,
    /// How long the old container keeps running after the switch, for in-flight requests.
    #[serde(default = "default_drain", with = "humantime_serde")]
    #[schemars(schema_with = "schema::duration")]
    pub drain: Duration,
    /// Stopped previous releases kept for `slipway rollback`.
    #[serde(default = "default_retain")]
    pub retain: usize,
    pub health: Health,
    /// Run once per deploy in a one-shot container of the new image (argv), after the image is
    /// proven and before any new container starts; a non-zero exit stops the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<String>>")]
    pub release_command: Option<ReleaseCommand>,
    /// How long the release command may run before it is killed.
    #[serde(default = "default_release_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "schema::duration")]
    pub release_timeout: Duration,
    /// Processes of the same image without a proxy route, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workers: BTreeMap<String, Worker>,
    /// The proxy: exactly one of `[caddy]`, `[traefik]`, `[nginx]` (see `proxy()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caddy: Option<Caddy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traefik: Option<Traefik>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<Nginx>,
    /// Run as a Docker Swarm service (in place of `slots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmSpec>,
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Where a deploy pushes the image it builds: HOST[:PORT] (`--registry` overrides it).
    pub registry: Option<String>,
    /// The repository within the registry, e.g. "team/web" (`--repository` overrides it).
    pub repository: Option<String>,
    /// What a deploy builds; each key has a flag that overrides it.
    #[serde(default)]
    pub build: BuildSpec,
    /// The public smoke test; each key has a flag that overrides it.
    #[serde(default)]
    pub smoke: SmokeSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// e.g. "256m", "1g"
    pub memory: Option<String>,
    /// e.g. 0.5
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
}

impl Limits {
    /// The figures the engine takes.
    pub fn resources(&self) -> Resources {
        Resources {
            memory_bytes: self.memory.as_deref().and_then(parse_bytes),
            nano_cpus: self.cpus.map(|c| (c * 1e9) as i64),
            pids: self.pids,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default = "default_log_size")]
    pub max_size: String,
    #[serde(default = "default_log_files")]
    pub max_file: u32,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            max_size: default_log_size(),
            max_file: default_log_files(),
        }
    }
}

/// The ceiling a host allows one service; a spec above it needs `--approve-over-quota`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub memory: Option<String>,
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Wait for the image's Docker HEALTHCHECK to report healthy.
    #[serde(default = "yes")]
    pub docker: bool,
    pub http: Option<HttpProbe>,
    /// Everything must pass within this time of the container's start.
    #[serde(default = "default_health_deadline", with = "humantime_serde")]
    #[schemars(schema_with = "schema::duration")]
    pub deadline: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Default: the container port.
    pub port: Option<u16>,
    /// Host header, for apps with a host allow-list.
    pub host: Option<String>,
    #[serde(default = "default_status")]
    pub status: u16,
    /// `.field.sub` of a JSON body that must equal `json_value` (default: the revision).
    pub json_field: Option<String>,
    pub json_value: Option<String>,
    /// A substring the body must contain.
    pub body_contains: Option<String>,
    #[serde(default = "default_successes")]
    pub successes: u32,
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Duration,
    #[serde(default = "default_try_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Caddy {
    /// Host directory the Caddyfile imports; slipway writes `<name>.caddy` there and nothing else.
    pub snippet_dir: PathBuf,
    /// Run on the host through the privileged nsenter sibling.
    #[serde(default = "default_reload_command")]
    pub reload_command: String,
    /// Extra lines inside the snippet's `reverse_proxy` block, e.g. "lb_try_duration 5s".
    #[serde(default)]
    pub upstream_options: Vec<String>,
}

/// No table: only for a `[swarm]` dnsrr service (see `caddy_problems`).
impl Default for Caddy {
    fn default() -> Self {
        Caddy {
            snippet_dir: PathBuf::new(),
            reload_command: default_reload_command(),
            upstream_options: Vec::new(),
        }
    }
}

/// The release command as written: argv (run), or a shell string (refused with its fix).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ReleaseCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl ReleaseCommand {
    /// The argv, when it is one.
    pub fn argv(&self) -> Option<&[String]> {
        match self {
            ReleaseCommand::Argv(a) => Some(a),
            ReleaseCommand::Shell(_) => None,
        }
    }
}

fn default_release_timeout() -> Duration {
    Duration::from_secs(300)
}

fn yes() -> bool {
    true
}
fn default_restart() -> String {
    "unless-stopped".into()
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_drain() -> Duration {
    Duration::from_secs(2)
}
fn default_retain() -> usize {
    2
}
fn default_log_size() -> String {
    "10m".into()
}
fn default_log_files() -> u32 {
    3
}
fn default_health_deadline() -> Duration {
    Duration::from_secs(60)
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_status() -> u16 {
    200
}
fn default_successes() -> u32 {
    2
}
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_try_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_reload_command() -> String {
    crate::cli::DEFAULT_RELOAD_COMMAND.into()
}

/// serde glue for durations written as "10s", "1m30s", "500ms".
pub(crate) mod humantime_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 10s or 1m ({e})"))
        })
    }
}

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("cannot read the service spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid service spec: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} has {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl SpecError {
    pub fn hint(&self) -> &'static str {
        match self {
            SpecError::Read { .. } => "pass the spec with --config PATH (or SLIPWAY_CONFIG)",
            SpecError::Parse { .. } | SpecError::Invalid { .. } => {
                "fix each listed key; docs/operator-guide.md shows a complete spec"
            }
        }
    }
}

/// Resource figures the engine takes, after parsing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resources {
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
}

impl ServiceSpec {
    pub fn load(path: &Path, overrides: &[String]) -> Result<ServiceSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_with(path, &text, overrides)
    }

    #[cfg(test)]
    pub fn parse(path: &Path, text: &str) -> Result<ServiceSpec, SpecError> {
        Self::parse_with(path, text, &[])
    }

    /// Parses `text`, then applies `KEY.PATH=VALUE` overrides (from `--set` / SLIPWAY_SET) before
    /// anything is validated, so an override's mistake is reported with its path too.
    pub fn parse_with(
        path: &Path,
        text: &str,
        overrides: &[String],
    ) -> Result<ServiceSpec, SpecError> {
        let parse_err = |message: String| SpecError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut doc: toml::Table = toml::from_str(text)
            .map_err(|e: toml::de::Error| parse_err(e.to_string().trim().replace('\n', " ")))?;
        for o in overrides {
            apply_override(&mut doc, o).map_err(|m| parse_err(format!("--set {o}: {m}")))?;
        }
        let spec: ServiceSpec = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string().trim().replace('\n', " ")))?;
        let problems = spec.problems();
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(SpecError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Every problem, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        self.identity_problems(&mut p);
        self.container_problems(&mut p);
        self.health_problems(&mut p);
        self.proxy_problems(&mut p);
        self.caddy_problems(&mut p);
        self.release_problems(&mut p);
        for (name, w) in &self.workers {
            workers::worker_problems(name, w, &mut p);
        }
        self.quota_problems(&mut p);
        one_file::problems(self, &mut p);
        p
    }

    /// The service's name, slots, port and env names.
    fn identity_problems(&self, p: &mut Vec<String>) {
        if !valid_name(&self.name) {
            p.push(format!(
                "name: `{}` must be 1-40 chars of a-z, 0-9 and '-', starting with a letter or digit",
                self.name
            ));
        }
        if let Some(sw) = &self.swarm {
            if self.slots != [0, 0] {
                p.push("slots: a [swarm] service has no slots; remove one of them".into());
            }
            swarm::problems(sw, p);
        } else if self.slots == [0, 0] {
            p.push("slots: required (two free 127.0.0.1 ports), or a [swarm] table".into());
        } else if self.slots[0] == self.slots[1] {
            p.push(format!(
                "slots: the two ports must differ (both are {})",
                self.slots[0]
            ));
        }
        for (i, port) in self.slots.iter().enumerate() {
            if *port < 1024 && self.swarm.is_none() && self.slots != [0, 0] {
                p.push(format!(
                    "slots[{i}]: {port} is a privileged port; use 1024-65535"
                ));
            }
        }
        if self.container_port == 0 {
            p.push("container_port: must be 1-65535".into());
        }
        for (i, name) in self.env.iter().enumerate() {
            if !valid_env_name(name) {
                p.push(format!(
                    "env[{i}]: `{name}` is not a variable name (give names only; values come from the job's environment)"
                ));
            }
        }
    }

    /// How the container runs: volumes, network, limits, restart, logs, labels, user, retain.
    fn container_problems(&self, p: &mut Vec<String>) {
        for (i, v) in self.volumes.iter().enumerate() {
            if let Err(why) = check_volume(v) {
                p.push(format!("volumes[{i}]: `{}` {why}", v.escape_debug()));
            }
        }
        if let Some(n) = &self.network
            && let Err(why) = check_network(n)
        {
            p.push(format!("network: `{}` {why}", n.escape_debug()));
        }
        if let Some(m) = &self.limits.memory
            && parse_bytes(m).is_none()
        {
            p.push(format!(
                "limits.memory: `{m}` is not a size like 256m or 1g"
            ));
        }
        if let Some(c) = self.limits.cpus
            && !valid_cpus(c)
        {
            p.push(format!(
                "limits.cpus: {c} must be a number above 0 and at most 1024"
            ));
        }
        if let Some(n) = self.limits.pids
            && n < 1
        {
            p.push(format!("limits.pids: {n} must be at least 1"));
        }
        if !["no", "always", "unless-stopped", "on-failure"].contains(&self.restart.as_str()) {
            p.push(format!(
                "restart: `{}` must be no, always, unless-stopped or on-failure",
                self.restart
            ));
        }
        if parse_bytes(&self.logging.max_size).is_none() {
            p.push(format!(
                "logging.max_size: `{}` is not a size like 10m",
                self.logging.max_size
            ));
        }
        if self.logging.max_file == 0 {
            p.push("logging.max_file: must be at least 1".into());
        }
        for key in self.labels.keys() {
            if key.starts_with("dev.slipway.") {
                p.push(format!(
                    "labels.{key}: the dev.slipway. prefix is slipway's own"
                ));
            }
        }
        if let Some(u) = &self.user
            && !u
                .split(':')
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        {
            p.push(format!(
                "user: `{u}` must be numeric UID or UID:GID (names depend on the image)"
            ));
        }
        if self.retain == 0 {
            p.push(
                "retain: keep at least 1 previous release, or rollback has nothing to return to"
                    .into(),
            );
        }
    }

    /// The gate and every duration.
    fn health_problems(&self, p: &mut Vec<String>) {
        if !self.health.docker && self.health.http.is_none() {
            p.push("health: set docker = true or add [health.http]; a release must be proven healthy before it serves".into());
        }
        for (key, d, max) in self.durations() {
            if d.is_zero() && !matches!(key, "drain" | "stop_grace_period") {
                p.push(format!("{key}: must be above 0"));
            } else if d > max {
                p.push(format!(
                    "{key}: {} is longer than slipway allows ({} at most)",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ));
            }
        }
        if let Some(h) = &self.health.http {
            if !h.path.starts_with('/') || !h.path.chars().all(|c| c.is_ascii_graphic()) {
                p.push(format!(
                    "health.http.path: `{}` must start with / and be printable ASCII without spaces",
                    h.path.escape_debug()
                ));
            }
            if let Some(host) = &h.host
                && !valid_host_header(host)
            {
                p.push(format!(
                    "health.http.host: `{}` must be a host name or address, optionally with :port",
                    host.escape_debug()
                ));
            }
            if h.successes == 0 {
                p.push("health.http.successes: must be at least 1".into());
            }
            if h.json_value.is_some() && h.json_field.is_none() {
                p.push("health.http.json_value: set json_field too".into());
            }
        }
    }

    /// What reaches the proxy and the host: the snippet directory, options, reload command.
    fn caddy_problems(&self, p: &mut Vec<String>) {
        let Some(caddy) = &self.caddy else {
            return;
        };
        if let Err(why) = check_snippet_dir(&caddy.snippet_dir) {
            p.push(format!(
                "caddy.snippet_dir: `{}` {why}",
                caddy.snippet_dir.display()
            ));
        }
        for (i, o) in caddy.upstream_options.iter().enumerate() {
            if let Err(why) = crate::host::proxy::caddy::check_upstream_option(o) {
                p.push(format!("caddy.upstream_options[{i}]: {why}"));
            }
        }
        if let Err(e) = crate::host::split_command(&caddy.reload_command) {
            p.push(format!("caddy.reload_command: {e}"));
        }
    }

    /// Limits against the host's quota.
    fn quota_problems(&self, p: &mut Vec<String>) {
        if let Some(q) = &self.quota {
            if let Some(c) = q.cpus
                && !valid_cpus(c)
            {
                p.push(format!(
                    "quota.cpus: {c} must be a number above 0 and at most 1024"
                ));
            }
            if let Some(m) = &q.memory
                && parse_bytes(m).is_none()
            {
                p.push(format!("quota.memory: `{m}` is not a size"));
            }
            if q.memory.is_some() && self.limits.memory.is_none() {
                p.push(
                    "limits.memory: the host has a memory quota, so set a limit within it".into(),
                );
            }
            if q.cpus.is_some() && self.limits.cpus.is_none() {
                p.push("limits.cpus: the host has a CPU quota, so set a limit within it".into());
            }
        }
    }

    /// The release command: argv, not empty, no empty program.
    fn release_problems(&self, p: &mut Vec<String>) {
        match &self.release_command {
            Some(ReleaseCommand::Shell(s)) => p.push(format!(
                "release_command: `{}` is a shell string; give the argv as a list, e.g. [\"bin/migrate\", \"--yes\"] (or [\"sh\", \"-c\", \"...\"] to run a shell on purpose)",
                s.escape_debug()
            )),
            Some(ReleaseCommand::Argv(a)) if a.first().is_none_or(|c| c.trim().is_empty()) => {
                p.push("release_command: name the program to run as the first item".into());
            }
            _ => {}
        }
    }

    /// Every duration of the spec with its key and the longest it may be.
    fn durations(&self) -> Vec<(&'static str, Duration, Duration)> {
        let mut d = vec![
            ("stop_grace_period", self.stop_grace_period, MAX_WAIT),
            ("drain", self.drain, MAX_WAIT),
            ("health.deadline", self.health.deadline, MAX_WAIT),
            ("release_timeout", self.release_timeout, MAX_WAIT),
        ];
        if let Some(h) = &self.health.http {
            d.push(("health.http.interval", h.interval, MAX_PROBE));
            d.push(("health.http.timeout", h.timeout, MAX_PROBE));
        }
        d
    }

    /// The env names a deploy needs values for: the service's and every worker's.
    pub fn all_env_names(&self) -> Vec<String> {
        let mut names = self.env.clone();
        for w in self.workers.values() {
            names.extend(w.env.iter().cloned());
        }
        names.sort();
        names.dedup();
        names
    }

    pub fn resources(&self) -> Resources {
        self.limits.resources()
    }

    /// Limits above the quota, as messages; empty when within it.
    pub fn over_quota(&self) -> Vec<String> {
        let Some(q) = &self.quota else {
            return Vec::new();
        };
        let mut over = Vec::new();
        if let (Some(limit), Some(cap)) = (self.limits.memory.as_deref(), q.memory.as_deref())
            && let (Some(l), Some(c)) = (parse_bytes(limit), parse_bytes(cap))
            && l > c
        {
            over.push(format!("limits.memory {limit} is above the quota of {cap}"));
        }
        if let (Some(l), Some(c)) = (self.limits.cpus, q.cpus)
            && l > c
        {
            over.push(format!("limits.cpus {l} is above the quota of {c}"));
        }
        over
    }

    /// The file slipway owns in the proxy's config (empty without a proxy table).
    pub fn snippet_path(&self) -> PathBuf {
        self.proxy().map(|p| p.path(&self.name)).unwrap_or_default()
    }
}

/// The longest wait a spec may ask for (grace, drain, health deadline).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The longest probe interval or per-try timeout.
pub const MAX_PROBE: Duration = Duration::from_secs(300);

fn valid_cpus(c: f64) -> bool {
    c.is_finite() && c > 0.0 && c <= 1024.0
}

/// Host paths an app container may never mount: the host's root, the kernel's views of it, and
/// any engine's API socket (which is root on the host).
const FORBIDDEN_SOURCES: &[&str] = &["/", "/proc", "/sys", "/dev", "/boot", "/etc", "/root"];

pub(crate) fn check_volume(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.split(':').collect();
    let ok = matches!(parts.len(), 2 | 3)
        && !parts[0].is_empty()
        && parts[1].starts_with('/')
        && parts.get(2).is_none_or(|m| ["ro", "rw"].contains(m));
    if !ok {
        return Err("must be SOURCE:/TARGET[:ro|rw]".into());
    }
    let source = parts[0];
    if !source.starts_with('/') {
        return Ok(()); // a named volume
    }
    if Path::new(source)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err("has `..` in its source: give the host path as it is".into());
    }
    let trimmed = source.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if FORBIDDEN_SOURCES.contains(&trimmed) {
        return Err(format!(
            "mounts the host's {trimmed} into the app; slipway refuses (mount the one directory the app needs)"
        ));
    }
    if trimmed.ends_with(".sock")
        && ["docker", "podman", "containerd"]
            .iter()
            .any(|e| trimmed.contains(e))
    {
        return Err("mounts a container engine's socket into the app, which is root on the host; slipway refuses".into());
    }
    Ok(())
}

fn check_network(n: &str) -> Result<(), String> {
    if n == "host" {
        return Err("shares the host's network: the app would bind the slot ports itself and bypass the switch; use a bridge or user-defined network".into());
    }
    if n == "none" || n.starts_with("container:") {
        return Err(
            "leaves the app unreachable on its slot port; use a bridge or user-defined network"
                .into(),
        );
    }
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err("is not a Docker network name".into());
    }
    Ok(())
}

pub(crate) fn check_snippet_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err("must be an absolute path on the host".into());
    }
    if dir.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) || dir.to_string_lossy().contains("/./")
    {
        return Err(
            "must not contain `..` or `.`: give the directory the Caddyfile imports as it is"
                .into(),
        );
    }
    if dir == Path::new("/") {
        return Err("is the host's root; give the directory the Caddyfile imports".into());
    }
    if !dir
        .to_str()
        .is_some_and(|s| s.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

fn valid_host_header(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') || n.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    name_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

pub(crate) fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a.b.c=VALUE`: VALUE is read as TOML (`512`, `true`, `["A","B"]`, `"text"`), else taken as
/// a plain string (`256m`, `10s`).
fn apply_override(doc: &mut toml::Table, item: &str) -> Result<(), String> {
    let (key, raw) = item
        .split_once('=')
        .ok_or("write it as KEY=VALUE, e.g. limits.memory=256m")?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` is not a dotted key"));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = parts.split_last().expect("at least one part");
    let mut table = doc;
    for p in parents {
        table = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// "256m" → bytes. Suffixes b, k, m, g (powers of 1024), as `docker run --memory` takes them.
pub fn parse_bytes(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t.as_str(), ""),
    };
    let n: i64 = digits.parse().ok()?;
    let mult = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|b| *b > 0)
}

/// The values of the spec's env names, from `env` (the job's environment). Every missing name is
/// reported at once.
pub fn resolve_env(
    names: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !env.contains_key(*n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(names.iter().map(|n| (n.clone(), env[n].clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "web"
slots = [18001, 18002]
container_port = 8080
[health]
[caddy]
snippet_dir = "/etc/caddy/slipway"
"#;

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec = ServiceSpec::parse(Path::new("s.toml"), MINIMAL).unwrap();
        assert_eq!(spec.drain, Duration::from_secs(2));
        assert_eq!(spec.stop_grace_period, Duration::from_secs(10));
        assert_eq!(spec.restart, "unless-stopped");
        assert!(spec.health.docker);
        assert_eq!(
            spec.caddy.as_ref().unwrap().reload_command,
            "systemctl reload caddy"
        );
        assert_eq!(
            spec.snippet_path(),
            PathBuf::from("/etc/caddy/slipway/web.caddy")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let text = r#"
name = "Web App"
slots = [80, 80]
container_port = 8080
env = ["GOOD", "bad-name"]
volumes = ["data"]
restart = "sometimes"
labels = { "dev.slipway.slot" = "x" }
user = "app"
[limits]
memory = "lots"
[health]
docker = false
[caddy]
snippet_dir = "relative/dir"
"#;
        let err = ServiceSpec::parse(Path::new("s.toml"), text).unwrap_err();
        let SpecError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let joined = problems.join("\n");
        for path in [
            "name:",
            "slots:",
            "slots[0]:",
            "slots[1]:",
            "env[1]:",
            "volumes[0]:",
            "restart:",
            "labels.dev.slipway.slot:",
            "user:",
            "limits.memory:",
            "health:",
            "caddy.snippet_dir:",
        ] {
            assert!(joined.contains(path), "no `{path}` in:\n{joined}");
        }
        assert!(err.to_string().contains("12 problem(s)"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_parse_errors() {
        let err =
            ServiceSpec::parse(Path::new("s.toml"), &format!("{MINIMAL}\nslotz = 1")).unwrap_err();
        assert!(err.to_string().contains("slotz"), "{err}");
        let text = MINIMAL.replace("[health]", "[health]\ndeadline = \"soon\"");
        let err = ServiceSpec::parse(Path::new("s.toml"), &text).unwrap_err();
        assert!(
            err.to_string().contains("`soon` is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn quota_caps_memory_and_cpu() {
        let text = MINIMAL.replace(
            "[health]",
            "[limits]\nmemory = \"2g\"\ncpus = 4.0\n[quota]\nmemory = \"1g\"\ncpus = 2.0\n[health]",
        );
        let spec = ServiceSpec::parse(Path::new("s.toml"), &text).unwrap();
        let over = spec.over_quota();
        assert_eq!(over.len(), 2, "{over:?}");
        assert!(over[0].contains("2g is above the quota of 1g"));
        let within = text.replace(
            "memory = \"2g\"\ncpus = 4.0",
            "memory = \"512m\"\ncpus = 1.0",
        );
        assert!(
            ServiceSpec::parse(Path::new("s.toml"), &within)
                .unwrap()
                .over_quota()
                .is_empty()
        );
    }

    #[test]
    fn overrides_apply_before_validation_and_keep_their_paths() {
        let sets = [
            "limits.memory=256m".to_string(),
            "drain=500ms".to_string(),
            "env=[\"A\", \"B\"]".to_string(),
            "read_only=true".to_string(),
        ];
        let spec = ServiceSpec::parse_with(Path::new("s.toml"), MINIMAL, &sets).unwrap();
        assert_eq!(spec.limits.memory.as_deref(), Some("256m"));
        assert_eq!(spec.drain, Duration::from_millis(500));
        assert_eq!(spec.env, ["A", "B"]);
        assert!(spec.read_only);
        let err = ServiceSpec::parse_with(Path::new("s.toml"), MINIMAL, &["slots=[1, 1]".into()])
            .unwrap_err();
        assert!(err.to_string().contains("slots:"), "{err}");
        let err =
            ServiceSpec::parse_with(Path::new("s.toml"), MINIMAL, &["nokey".into()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("--set nokey: write it as KEY=VALUE"),
            "{err}"
        );
    }

    #[test]
    fn the_committed_deploy_specs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let spec = ServiceSpec::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                assert!(spec.over_quota().is_empty(), "{}", path.display());
                seen += 1;
            }
        }
        assert_eq!(seen, 2, "deploy/staging.toml and deploy/production.toml");
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("256m"), Some(256 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("512kb"), Some(512 << 10));
        assert_eq!(parse_bytes("10"), Some(10));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("0m"), None);
    }

    #[test]
    fn env_values_come_from_the_environment_and_all_missing_names_are_listed() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(
            resolve_env(&["A".into()], &env).unwrap(),
            vec![("A".to_string(), "1".to_string())]
        );
        assert_eq!(
            resolve_env(&["A".into(), "B".into(), "C".into()], &env).unwrap_err(),
            vec!["B".to_string(), "C".to_string()]
        );
    }

    fn problems_of(extra_top: &str, extra_health: &str, extra_caddy: &str) -> String {
        let dir = if extra_caddy.contains("snippet_dir") {
            ""
        } else {
            "snippet_dir = \"/etc/caddy/slipway\""
        };
        let text = format!(
            "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\n{extra_top}\n[health]\n{extra_health}\n[caddy]\n{dir}\n{extra_caddy}\n"
        );
        match ServiceSpec::parse(Path::new("s.toml"), &text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn durations_are_bounded() {
        let e = problems_of("", "deadline = \"400000000000y\"", "");
        assert!(
            e.contains("health.deadline:") && e.contains("1h at most"),
            "{e}"
        );
        let e = problems_of("drain = \"2h\"\nstop_grace_period = \"61m\"", "", "");
        assert!(
            e.contains("drain:") && e.contains("stop_grace_period:"),
            "{e}"
        );
        let e = problems_of("", "[health.http]\ninterval = \"6m\"\ntimeout = \"0s\"", "");
        assert!(
            e.contains("health.http.interval:")
                && e.contains("health.http.timeout: must be above 0"),
            "{e}"
        );
        assert_eq!(
            problems_of(
                "drain = \"0s\"\nstop_grace_period = \"0s\"",
                "deadline = \"1h\"",
                ""
            ),
            ""
        );
    }

    #[test]
    fn values_that_reach_the_host_are_refused() {
        for (top, health, caddy, key) in [
            (
                "",
                "",
                "snippet_dir = \"/etc/caddy/../../root\"",
                "caddy.snippet_dir:",
            ),
            ("", "", "snippet_dir = \"/\"", "caddy.snippet_dir:"),
            (
                "",
                "",
                "snippet_dir = \"/etc/caddy/./x\"",
                "caddy.snippet_dir:",
            ),
            (
                "",
                "[health.http]\nhost = \"a.example\\r\\nX-Evil: 1\"",
                "",
                "health.http.host:",
            ),
            (
                "",
                "[health.http]\npath = \"/health\\r\\nX: y\"",
                "",
                "health.http.path:",
            ),
            ("volumes = [\"/:/host\"]", "", "", "volumes[0]:"),
            (
                "volumes = [\"/var/run/docker.sock:/var/run/docker.sock\"]",
                "",
                "",
                "volumes[0]:",
            ),
            (
                "volumes = [\"/run/podman/podman.sock:/s\"]",
                "",
                "",
                "volumes[0]:",
            ),
            ("volumes = [\"/srv/../:/x\"]", "", "", "volumes[0]:"),
            ("network = \"host\"", "", "", "network:"),
            ("network = \"container:db\"", "", "", "network:"),
            ("[limits]\ncpus = nan", "", "", "limits.cpus:"),
            (
                "[limits]\ncpus = 1.0\n[quota]\ncpus = nan",
                "",
                "",
                "quota.cpus:",
            ),
            (
                "",
                "",
                "upstream_options = [\"lb_try_duration 5s }\"]",
                "caddy.upstream_options[0]:",
            ),
            (
                "",
                "",
                "upstream_options = [\"lb_try_duration 5s\\n}\\n:80 {\"]",
                "caddy.upstream_options[0]:",
            ),
            (
                "",
                "",
                "upstream_options = [\"import /etc/passwd\"]",
                "caddy.upstream_options[0]:",
            ),
        ] {
            let e = problems_of(top, health, caddy);
            assert!(e.contains(key), "{top} {health} {caddy}: {e}");
        }
        for (top, health, caddy) in [
            (
                "volumes = [\"data:/data\", \"/srv/app/uploads:/uploads:ro\", \"/etc/ssl/certs:/etc/ssl/certs:ro\"]",
                "",
                "",
            ),
            (
                "network = \"apps_net\"",
                "[health.http]\nhost = \"web.example.com:8443\"",
                "",
            ),
            (
                "",
                "[health.http]\nhost = \"[::1]:8080\"",
                "upstream_options = [\"lb_try_duration 5s\", \"header_up X-Real-IP {remote_host}\"]",
            ),
        ] {
            assert_eq!(
                problems_of(top, health, caddy),
                "",
                "{top} {health} {caddy}"
            );
        }
    }
}
