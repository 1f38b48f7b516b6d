//! The command line: flags are data. Every flag can also be set from a `SLIPWAY_*` variable.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::exit::{
    BUILD_EXIT_CODES_HELP, EXIT_CODES_HELP, LINT_EXIT_CODES_HELP, WATCH_EXIT_CODES_HELP,
};
use crate::image::lint::Rule;

/// The privileged sibling's image when none is given: pinned by digest, kept current by Renovate
/// (see renovate.json; bumps of this image are never automerged).
pub const DEFAULT_RELOAD_IMAGE: &str = "docker.io/library/alpine:3.20.3@sha256:beefdbd8a1da6d2915566fde36db9db0b524eb737fc57cd1367effd16dc0d06d";
pub const DEFAULT_RELOAD_COMMAND: &str = "systemctl reload caddy";

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "The deploy step for a CI job: build and push a pinned image, roll it out behind Caddy with zero downtime, smoke-test it.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Docker engine to use [default: $DOCKER_HOST, else unix:///var/run/docker.sock]
    #[arg(long, env = "SLIPWAY_DOCKER_HOST", global = true)]
    pub docker_host: Option<String>,
    /// Log lines on stderr as text or as JSON objects
    #[arg(long, env = "SLIPWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More detail on stderr (-v: debug, -vv: trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl Cli {
    /// Parses the command line as `Cli::parse` does (a bad one exits 2 with clap's message), and
    /// keeps where each of a deploy's values came from (`DeployArgs::sources`).
    pub fn parse_with_sources() -> Cli {
        Self::try_parse_with_sources(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    pub fn try_parse_with_sources<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.clone().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        if let (Command::Deploy(args) | Command::Plan(args), Some((name, sub))) =
            (&mut cli.command, matches.subcommand())
            && let Some(def) = command.find_subcommand(name)
        {
            args.sources = ArgSources::of(def, sub);
        }
        Ok(cli)
    }
}

/// Where a flag's value came from, when it did not come from clap's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Given {
    /// On the command line, as this flag (`--repository`).
    CommandLine(String),
    /// From this variable (`SLIPWAY_REPOSITORY`).
    Env(String),
}

/// By argument id (the field's name): where each value given on the command line or in the
/// environment came from. An id that is missing had no value, or clap's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgSources(BTreeMap<String, Given>);

impl ArgSources {
    fn of(def: &clap::Command, matches: &ArgMatches) -> ArgSources {
        let mut sources = ArgSources::default();
        for arg in def.get_arguments() {
            let id = arg.get_id().as_str();
            let given = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => arg
                    .get_long()
                    .map(|long| Given::CommandLine(format!("--{long}"))),
                Some(ValueSource::EnvVariable) => arg
                    .get_env()
                    .map(|var| Given::Env(var.to_string_lossy().into_owned())),
                _ => None,
            };
            if let Some(given) = given {
                sources.set(id, given);
            }
        }
        sources
    }

    pub fn set(&mut self, id: &str, given: Given) {
        self.0.insert(id.to_string(), given);
    }

    /// Where the value of argument `id` came from; `None` for clap's default, or no value.
    pub fn get(&self, id: &str) -> Option<&Given> {
        self.0.get(id)
    }

    /// The flag, when argument `id` was given on the command line.
    pub fn on_command_line(&self, id: &str) -> Option<&str> {
        match self.0.get(id) {
            Some(Given::CommandLine(flag)) => Some(flag),
            _ => None,
        }
    }
}

impl GlobalArgs {
    pub fn docker_host(&self) -> String {
        self.docker_host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| crate::engine::DEFAULT_DOCKER_HOST.to_string())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this host can be deployed to: engine, registry, privileged sibling, reload command
    #[command(after_help = EXIT_CODES_HELP)]
    Doctor(DoctorArgs),
    /// Lint, build and push the image, then prove the registry holds exactly what was built.
    /// Prints the pinned reference REGISTRY/REPOSITORY@sha256:... on stdout
    #[command(after_help = BUILD_EXIT_CODES_HELP)]
    Build(BuildArgs),
    /// Check a Dockerfile and its .dockerignore against slipway's policy (also run before every
    /// build). Prints one finding a line: FILE:LINE  RULE  MESSAGE  fix: ...
    #[command(after_help = LINT_EXIT_CODES_HELP)]
    Lint(LintArgs),
    /// Roll IMAGE@sha256:... out with zero downtime: start it in the free slot, gate it on
    /// health, switch Caddy to it, drain and stop the old one; roll back on any failure
    #[command(after_help = EXIT_CODES_HELP)]
    Rollout(RolloutArgs),
    /// Return to the last good release (the newest retained one) through the same gate and switch
    #[command(after_help = EXIT_CODES_HELP)]
    Rollback(RollbackArgs),
    /// Reload the host's Caddy through the digest-pinned privileged nsenter sibling
    #[command(after_help = EXIT_CODES_HELP)]
    Reload(ReloadArgs),
    /// Show or release a service's deploy lock
    #[command(after_help = EXIT_CODES_HELP)]
    Lock(LockArgs),
    /// GET the public URL(s) until they serve the expected version; show expected and served
    /// side by side when they do not
    #[command(after_help = EXIT_CODES_HELP)]
    Smoke(SmokeCmd),
    /// The whole job: build, push and prove the image (or take --image), roll it out behind
    /// Caddy, smoke-test the public URL and watch it, and put the previous release back on any
    /// failure. `--dry-run` (or `slipway plan`) prints the plan and changes nothing
    #[command(after_help = EXIT_CODES_HELP)]
    Deploy(Box<DeployArgs>),
    /// `deploy --dry-run`: only read-only calls, then the plan (old and new digest, containers,
    /// slots, env names, volumes, limits, lock, reload, smoke checks, what happens on failure)
    #[command(after_help = EXIT_CODES_HELP)]
    Plan(Box<DeployArgs>),
    /// The health watchdog: probe each service's serving container over HTTP (the rollout gate's
    /// options, through an unprivileged sibling in its network namespace); after N failures in a
    /// row, replace it with a fresh container of the same digest under the deploy lock, through
    /// the same gate and Caddy switch. One JSON event a line on stdout. Runs until SIGTERM, or
    /// one round with --once
    #[command(after_help = WATCH_EXIT_CODES_HELP)]
    Watch(WatchArgs),
    /// Print the JSON Schema of the service spec, generated from the types slipway reads it
    /// with, for an editor to complete and check a spec
    Schema,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// A service spec (TOML) to watch; repeat it for several services
    #[arg(long = "config", env = "SLIPWAY_CONFIG", value_name = "PATH")]
    pub configs: Vec<PathBuf>,
    /// A directory of service specs: every *.toml in it, read again every few seconds so a spec
    /// added later is picked up
    #[arg(long, env = "SLIPWAY_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// One round, then exit: up to --failures probes per service, and a replacement where all
    /// of them failed
    #[arg(long, env = "SLIPWAY_WATCH_ONCE")]
    pub once: bool,
    /// Consecutive failed probes that make a container stuck
    #[arg(long, env = "SLIPWAY_WATCH_FAILURES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub failures: u32,
    /// Time between probes [default: each spec's health.http.interval]
    #[arg(long, env = "SLIPWAY_WATCH_INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Wait after a replacement before the next one of the same service; doubles with each
    /// replacement within --window
    #[arg(long, env = "SLIPWAY_WATCH_BACKOFF", value_parser = parse_duration, default_value = "30s")]
    pub backoff: Duration,
    /// Ceiling of that wait
    #[arg(long, env = "SLIPWAY_WATCH_MAX_BACKOFF", value_parser = parse_duration, default_value = "10m")]
    pub max_backoff: Duration,
    /// Replacements of one service allowed within --window; past it the watchdog stops
    /// replacing it and reports `capped` (0: report only, never replace)
    #[arg(long, env = "SLIPWAY_WATCH_CAP", default_value_t = 3)]
    pub cap: u32,
    /// The window of --cap
    #[arg(long, env = "SLIPWAY_WATCH_WINDOW", value_parser = parse_duration, default_value = "1h")]
    pub window: Duration,
    #[command(flatten)]
    pub sibling: SiblingArgs,
    /// The deploy lock taken for a replacement expires this long after its heartbeat stops
    #[arg(long, env = "SLIPWAY_LOCK_TTL", value_parser = parse_duration, default_value = "30s")]
    pub lock_ttl: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct SmokeArgs {
    /// Public URL to check; repeat for several (SLIPWAY_URL: comma-separated)
    #[arg(long = "url", env = "SLIPWAY_URL", value_delimiter = ',', value_name = "URL")]
    pub urls: Vec<String>,
    /// The version the URL must serve [default: GITHUB_SHA, else the deployed revision]
    #[arg(long, env = "SLIPWAY_EXPECT_VERSION")]
    pub expect_version: Option<String>,
    /// JSON field of the response that must equal the version (ignored with --expect-body-regex)
    #[arg(long, env = "SLIPWAY_EXPECT_JSON_FIELD", default_value = ".version")]
    pub expect_json_field: String,
    /// Regex over the body whose first group (or whole match) must equal the version
    #[arg(long, env = "SLIPWAY_EXPECT_BODY_REGEX")]
    pub expect_body_regex: Option<String>,
    /// Expected HTTP status
    #[arg(long, env = "SLIPWAY_EXPECT_STATUS", default_value_t = 200)]
    pub expect_status: u16,
    /// A response header that must be present with this value: 'Name: value'
    #[arg(long, env = "SLIPWAY_EXPECT_HEADER", value_name = "NAME: VALUE")]
    pub expect_header: Option<String>,
    /// Request header 'Name: value' (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Pin HOST:PORT to ADDRESS, as curl does (repeatable; SLIPWAY_RESOLVE: comma-separated)
    #[arg(long, env = "SLIPWAY_RESOLVE", value_delimiter = ',', value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// Trust only this CA bundle (PEM) for HTTPS instead of the system roots
    #[arg(long, env = "SLIPWAY_CACERT", value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// Pause between attempts
    #[arg(long, env = "SLIPWAY_SMOKE_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub smoke_interval: Duration,
    /// Give up retrying after this long
    #[arg(long, env = "SLIPWAY_SMOKE_DEADLINE", value_parser = parse_duration, default_value = "30s")]
    pub smoke_deadline: Duration,
    /// Per-attempt timeout
    #[arg(long, env = "SLIPWAY_SMOKE_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub smoke_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SmokeCmd {
    #[command(flatten)]
    pub smoke: SmokeArgs,
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// Deploy this already-built image (REGISTRY/REPO@sha256:...) instead of building one
    #[arg(long, env = "SLIPWAY_IMAGE")]
    pub image: Option<String>,
    /// After the first passing smoke test, keep checking for this long before the old
    /// release is stopped; a failure inside the window rolls back
    #[arg(long, env = "SLIPWAY_WATCH", value_parser = parse_duration, default_value = "5s")]
    pub watch: Duration,
    /// Write a JSON report of every step (start, duration, outcome) to FILE
    #[arg(long, env = "SLIPWAY_REPORT", value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub build: BuildOptions,
    #[command(flatten)]
    pub smoke: SmokeArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Where each value came from; filled by `Cli::parse_with_sources`.
    #[arg(skip)]
    pub sources: ArgSources,
}

#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The service spec (TOML)
    #[arg(long, env = "SLIPWAY_CONFIG", value_name = "PATH")]
    pub config: std::path::PathBuf,
    /// Override a spec key: KEY.PATH=VALUE, e.g. limits.memory=256m (repeatable; in SLIPWAY_SET
    /// one a line)
    #[arg(long = "set", env = "SLIPWAY_SET", value_name = "KEY=VALUE", value_delimiter = '\n')]
    pub set: Vec<String>,
    #[command(flatten)]
    pub sibling: SiblingArgs,
    /// Overrides the spec's caddy.reload_command
    #[arg(long, env = "SLIPWAY_RELOAD_COMMAND")]
    pub reload_command: Option<String>,
    /// How long to wait for another run's deploy lock before giving up (exit 4)
    #[arg(long, env = "SLIPWAY_LOCK_WAIT", value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
    /// A lock whose holder stops its heartbeat for this long expires and may be taken over
    #[arg(long, env = "SLIPWAY_LOCK_TTL", value_parser = parse_duration, default_value = "30s")]
    pub lock_ttl: Duration,
    /// Accept limits above the spec's [quota]
    #[arg(long, env = "SLIPWAY_APPROVE_OVER_QUOTA")]
    pub approve_over_quota: bool,
    /// Gather facts and print the plan; change nothing
    #[arg(long, env = "SLIPWAY_DRY_RUN")]
    pub dry_run: bool,
    /// Output format on stdout (the report, or the plan with --dry-run)
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The image to run, pinned: REGISTRY/REPO@sha256:<64 hex>
    #[arg(env = "SLIPWAY_IMAGE")]
    pub image: String,
    /// The git SHA it was built from [default: the image's org.opencontainers.image.revision]
    #[arg(long, env = "SLIPWAY_REVISION")]
    pub revision: Option<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(subcommand)]
    pub action: LockAction,
}

#[derive(Debug, Subcommand)]
pub enum LockAction {
    /// Who holds the lock, since when, and whether it expired
    Status(LockTarget),
    /// Remove the lock whoever holds it (when its run is known to be gone)
    Release(LockTarget),
}

#[derive(Debug, Args)]
pub struct LockTarget {
    /// The service spec (TOML); its name names the lock
    #[arg(long, env = "SLIPWAY_CONFIG", value_name = "PATH")]
    pub config: std::path::PathBuf,
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// What is built, and how it is linted: shared by `build` and `lint`.
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// Build context directory
    #[arg(long, env = "SLIPWAY_CONTEXT", default_value = ".", value_name = "DIR")]
    pub context: PathBuf,
    /// Dockerfile, relative to the working directory [default: CONTEXT/Dockerfile]
    #[arg(long, short = 'f', env = "SLIPWAY_DOCKERFILE", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Stage to build and lint as the final one [default: the last stage]
    #[arg(long, env = "SLIPWAY_TARGET", value_name = "STAGE")]
    pub target: Option<String>,
    /// Build arg NAME=VALUE, or NAME to take the value from $NAME (repeatable; in
    /// SLIPWAY_BUILD_ARGS one a line). Also resolves ARG-substituted FROM lines for the lint
    #[arg(
        long = "build-arg",
        env = "SLIPWAY_BUILD_ARGS",
        value_name = "NAME[=VALUE]",
        value_delimiter = '\n'
    )]
    pub build_args: Vec<String>,
    /// Waive a lint rule on purpose (repeatable, or comma-separated)
    #[arg(long, env = "SLIPWAY_ALLOW", value_enum, value_delimiter = ',', value_name = "RULE")]
    pub allow: Vec<Rule>,
    /// The deploy checks an HTTP health endpoint, so the image need not have a HEALTHCHECK
    #[arg(long, env = "SLIPWAY_HEALTH_PROBE_CONFIGURED")]
    pub health_probe_configured: bool,
}

impl ImageArgs {
    pub fn dockerfile(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| self.context.join("Dockerfile"))
    }
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub options: BuildOptions,
    /// Output format on stdout
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// What to build and where to push it: shared by `build` and `deploy`.
#[derive(Debug, Clone, Args)]
pub struct BuildOptions {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Repository within the registry, e.g. team/app
    #[arg(long, env = "SLIPWAY_REPOSITORY", value_name = "NAME")]
    pub repository: Option<String>,
    /// Git SHA to tag and label the image with [default: $GITHUB_SHA, else `git rev-parse HEAD`
    /// in the context]
    #[arg(long, env = "SLIPWAY_REVISION", value_name = "SHA")]
    pub revision: Option<String>,
    /// Also pass the revision to the build as this build arg (e.g. VERSION)
    #[arg(long, env = "SLIPWAY_REVISION_ARG", value_name = "NAME")]
    pub revision_arg: Option<String>,
    /// Extra tag to push besides the revision (repeatable, or comma-separated)
    #[arg(long = "tag", env = "SLIPWAY_TAGS", value_delimiter = ',', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Extra label NAME=VALUE (repeatable; in SLIPWAY_LABELS one a line). The OCI labels
    /// org.opencontainers.image.revision, .source and .created are always set
    #[arg(
        long = "label",
        env = "SLIPWAY_LABELS",
        value_name = "NAME=VALUE",
        value_delimiter = '\n'
    )]
    pub labels: Vec<String>,
    /// org.opencontainers.image.source [default: $GITHUB_SERVER_URL/$GITHUB_REPOSITORY, else
    /// the context's git remote `origin`, credentials removed]
    #[arg(long, env = "SLIPWAY_SOURCE", value_name = "URL")]
    pub source: Option<String>,
    /// The engine's builder: buildkit (cache and bind mounts), or classic for an engine
    /// without BuildKit
    #[arg(long, env = "SLIPWAY_BUILDER", value_enum, default_value_t = crate::engine::Builder::BuildKit)]
    pub builder: crate::engine::Builder,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Output format on stdout
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub reload: ReloadArgs,
    /// Check a Docker Swarm instead of one host: the engine is a manager, every node is Ready,
    /// and this overlay network exists (the host's sibling and reload checks are skipped)
    #[arg(long, env = "SLIPWAY_SWARM_NETWORK", value_name = "NETWORK")]
    pub swarm_network: Option<String>,
    /// Output format on stdout
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry, as HOST[:PORT]
    #[arg(long, env = "SLIPWAY_REGISTRY")]
    pub registry: Option<String>,
    /// Registry user; the password comes from the variable named by --registry-password-env
    #[arg(long, env = "SLIPWAY_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// NAME of the environment variable that holds the registry password (never the value itself)
    #[arg(long, env = "SLIPWAY_REGISTRY_PASSWORD_ENV", value_name = "NAME")]
    pub registry_password_env: Option<String>,
    /// Speak plain HTTP to a registry outside 127.0.0.0/8 and localhost
    #[arg(long, env = "SLIPWAY_INSECURE_REGISTRY")]
    pub insecure_registry: bool,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub sibling: SiblingArgs,
    /// Command run on the host (inside `nsenter -t PID -m -u -n -p -i --`) to reload the proxy
    /// [default: the spec's with --config, else systemctl reload caddy]
    #[arg(long, env = "SLIPWAY_RELOAD_COMMAND")]
    pub reload_command: Option<String>,
    /// A service spec: its proxy is the one reloaded and checked (its test and reload commands,
    /// none for Traefik; doctor also checks its directory on the host)
    #[arg(long, env = "SLIPWAY_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
}

impl ReloadArgs {
    /// The reload command given, or Caddy's default.
    pub fn command(&self) -> &str {
        self.reload_command
            .as_deref()
            .unwrap_or(DEFAULT_RELOAD_COMMAND)
    }
}

/// The privileged sibling that enters the host: shared by every command that reaches it.
#[derive(Debug, Clone, Args)]
pub struct SiblingArgs {
    /// Image of the privileged sibling that enters the host (it also runs the lock, the host
    /// agent and the HTTP probe); must be pinned: NAME@sha256:<64 hex>
    #[arg(long, env = "SLIPWAY_RELOAD_IMAGE", default_value = DEFAULT_RELOAD_IMAGE)]
    pub reload_image: String,
    /// PID whose namespaces the sibling enters (1: the host's init)
    #[arg(long, env = "SLIPWAY_HOST_PID", default_value_t = 1)]
    pub host_pid: u32,
    /// Deadline for each step run on the host (snippet write, reload)
    #[arg(long, env = "SLIPWAY_RELOAD_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub reload_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The longest duration any flag takes.
pub const MAX_FLAG_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 2m or 1h30m: {e}"))?;
    if d > MAX_FLAG_DURATION {
        return Err(format!("`{s}` is longer than slipway allows (7d at most)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_reload_image_is_pinned() {
        crate::image::reference::PinnedImage::parse(DEFAULT_RELOAD_IMAGE).unwrap();
    }

    #[test]
    fn durations_parse_or_explain() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
        assert!(parse_duration("7d").is_ok());
        for huge in ["8d", "400000000000y", "18446744073709551615s"] {
            assert!(parse_duration(huge).is_err(), "{huge}");
        }
    }
}
