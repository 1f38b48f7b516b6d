//! The command line: flags are data. Every flag can also be set from a `SLIPWAY_*` variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::{BUILD_EXIT_CODES_HELP, EXIT_CODES_HELP, LINT_EXIT_CODES_HELP};
use crate::lint::Rule;

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
}

/// What is built, and how it is linted: shared by `build` and `lint`.
#[derive(Debug, Args)]
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
    #[arg(
        long,
        env = "SLIPWAY_ALLOW",
        value_enum,
        value_delimiter = ',',
        value_name = "RULE"
    )]
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
    pub image: ImageArgs,
    /// Repository within the registry, e.g. team/app
    #[arg(long, env = "SLIPWAY_REPOSITORY", value_name = "NAME")]
    pub repository: String,
    /// Git SHA to tag and label the image with [default: $GITHUB_SHA, else `git rev-parse HEAD`
    /// in the context]
    #[arg(long, env = "SLIPWAY_REVISION", value_name = "SHA")]
    pub revision: Option<String>,
    /// Also pass the revision to the build as this build arg (e.g. VERSION)
    #[arg(long, env = "SLIPWAY_REVISION_ARG", value_name = "NAME")]
    pub revision_arg: Option<String>,
    /// Extra tag to push besides the revision (repeatable, or comma-separated)
    #[arg(
        long = "tag",
        env = "SLIPWAY_TAGS",
        value_delimiter = ',',
        value_name = "TAG"
    )]
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
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Output format on stdout
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
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
    /// Output format on stdout
    #[arg(long, env = "SLIPWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
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
    /// Image of the privileged sibling that enters the host; must be pinned: NAME@sha256:<64 hex>
    #[arg(long, env = "SLIPWAY_RELOAD_IMAGE", default_value = DEFAULT_RELOAD_IMAGE)]
    pub reload_image: String,
    /// Command run on the host (inside `nsenter -t PID -m -u -n -p -i --`) to reload Caddy
    #[arg(long, env = "SLIPWAY_RELOAD_COMMAND", default_value = DEFAULT_RELOAD_COMMAND)]
    pub reload_command: String,
    /// PID whose namespaces the sibling enters (1: the host's init)
    #[arg(long, env = "SLIPWAY_HOST_PID", default_value_t = 1)]
    pub host_pid: u32,
    /// Deadline for each sibling container
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

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 2m or 1h30m: {e}"))
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
        crate::reference::PinnedImage::parse(DEFAULT_RELOAD_IMAGE).unwrap();
    }

    #[test]
    fn durations_parse_or_explain() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
    }
}
