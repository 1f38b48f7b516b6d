//! The deploy's effective settings, each with where it came from: the one place where the spec
//! file, `SLIPWAY_*` variables and flags meet. A value on the command line wins, then one from a
//! `SLIPWAY_*` variable, then the spec's, then slipway's default. Build args merge by name
//! under the same rule. Pure: clap has read the environment already.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use serde::ser::SerializeMap as _;
use thiserror::Error;

use crate::cli::{ArgSources, DeployArgs, Given};
use crate::exit::Failure;
use crate::spec::ServiceSpec;

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The command line, as this flag.
    Flag(String),
    /// This `SLIPWAY_*` variable.
    Env(String),
    Spec,
    Default,
}

impl Origin {
    fn of(given: &Given) -> Origin {
        match given {
            Given::CommandLine(flag) => Origin::Flag(flag.clone()),
            Given::Env(var) => Origin::Env(var.clone()),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(name) | Origin::Env(name) => write!(f, "from {name}"),
            Origin::Spec => f.write_str("from the spec"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// As data: the flag (`--registry`), the variable (`SLIPWAY_REGISTRY`), `spec` or `default`.
impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Origin::Flag(name) | Origin::Env(name) => s.serialize_str(name),
            Origin::Spec => s.serialize_str("spec"),
            Origin::Default => s.serialize_str("default"),
        }
    }
}

/// One effective value, named by its key in the spec. Build args show their names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Setting {
    #[serde(skip)]
    pub(crate) key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<String>,
    pub(crate) from: Origin,
}

/// The settings as one JSON object by key: `{"registry": {"value": …, "from": "spec"}, …}`.
pub(crate) fn as_map<S: serde::Serializer>(settings: &[Setting], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(settings.len()))?;
    for setting in settings {
        map.serialize_entry(&setting.key, setting)?;
    }
    map.end()
}

/// `--image` and a build flag on the same command line.
#[derive(Debug, Error)]
#[error(
    "--image cannot be used with {} on the command line: --image deploys an image built elsewhere, {} for building one",
    .flags.join(", "),
    if .flags.len() == 1 { "that flag is" } else { "those flags are" }
)]
pub(crate) struct Conflict {
    pub(crate) flags: Vec<String>,
}

impl Conflict {
    /// A usage error (exit 2), with what to do.
    pub(crate) fn failure(self) -> Failure {
        Failure::usage(self).with_hint("drop one side; the same values from SLIPWAY_* variables or the spec are no conflict: with --image they are not used")
    }
}

/// The flags after precedence, and where each value came from.
#[derive(Debug)]
pub(crate) struct Effective {
    pub(crate) args: DeployArgs,
    pub(crate) settings: Vec<Setting>,
}

/// Arguments only a build uses (ids, as in `ArgSources`).
const BUILD_ONLY: [&str; 10] = [
    "registry",
    "repository",
    "context",
    "file",
    "target",
    "build_args",
    "revision_arg",
    "tags",
    "labels",
    "source",
];

/// The deploy's effective values from the spec and the flags (with their sources). An image on
/// the command line, or from SLIPWAY_IMAGE when no build flag is on the command line, means no
/// build; both `--image` and a build flag on the command line contradict each other.
pub(crate) fn effective(spec: &ServiceSpec, given: &DeployArgs) -> Result<Effective, Conflict> {
    let sources = &given.sources;
    let build_flags = build_flags_on_command_line(given)?;
    let image_on_command_line = sources.on_command_line("image").is_some();
    let mut args = given.clone();
    let mut r = Resolver {
        sources,
        settings: Vec::new(),
    };
    args.image = if image_on_command_line || build_flags.is_empty() {
        r.pick("image", given.image.as_ref(), None)
    } else {
        None
    };
    if args.image.is_none() {
        r.build(spec, &mut args);
    }
    let (flags, file) = (&given.smoke, &spec.smoke);
    let urls = (!flags.urls.is_empty()).then_some(&flags.urls);
    let file_urls = (!file.url.is_empty()).then_some(&file.url);
    args.smoke.urls = r.pick("smoke.url", urls, file_urls).unwrap_or_default();
    args.smoke.expect_json_field = r
        .pick(
            "smoke.expect_json_field",
            Some(&flags.expect_json_field),
            file.expect_json_field.as_ref(),
        )
        .unwrap_or_default();
    args.smoke.expect_version = r.pick(
        "smoke.expect_version",
        flags.expect_version.as_ref(),
        file.expect_version.as_ref(),
    );
    Ok(Effective {
        args,
        settings: r.settings,
    })
}

/// The build flags on the command line; with `--image` there too, the conflict. Needs no spec,
/// so it is checked before anything else.
pub(crate) fn build_flags_on_command_line(given: &DeployArgs) -> Result<Vec<String>, Conflict> {
    let sources = &given.sources;
    let flags: Vec<String> = BUILD_ONLY
        .iter()
        .filter_map(|id| sources.on_command_line(id).map(String::from))
        .collect();
    if sources.on_command_line("image").is_some() && !flags.is_empty() {
        return Err(Conflict { flags });
    }
    Ok(flags)
}

struct Resolver<'a> {
    sources: &'a ArgSources,
    settings: Vec<Setting>,
}

impl Resolver<'_> {
    /// The flag's value when it was given (command line or variable), else the spec's, else
    /// the flag's default; recorded under `key`, whose last part is the flag's clap id (`--url`'s is `urls`).
    fn pick<T: Shown + Clone>(
        &mut self,
        key: &str,
        flag: Option<&T>,
        file: Option<&T>,
    ) -> Option<T> {
        let id = match key {
            "smoke.url" => "urls",
            _ => key.rsplit('.').next().unwrap_or(key),
        };
        let (value, from) = match (self.sources.get(id), flag, file) {
            (Some(given), Some(value), _) => (value, Origin::of(given)),
            (_, _, Some(value)) => (value, Origin::Spec),
            (_, Some(value), None) => (value, Origin::Default),
            (_, None, None) => return None,
        };
        self.settings.push(Setting {
            key: key.to_string(),
            value: Some(value.shown()),
            from,
        });
        Some(value.clone())
    }

    /// Registry, repository and `[build]` into the build's flags.
    fn build(&mut self, spec: &ServiceSpec, args: &mut DeployArgs) {
        let (file, b) = (&spec.build, &mut args.build);
        let registry = b.registry.registry.as_ref();
        b.registry.registry = self.pick("registry", registry, spec.registry.as_ref());
        let repository = b.repository.as_ref();
        b.repository = self.pick("repository", repository, spec.repository.as_ref());
        let image = &mut b.image;
        let context = self.pick("build.context", Some(&image.context), file.context.as_ref());
        image.context = context.unwrap_or_default();
        image.file = self.pick("build.file", image.file.as_ref(), file.file.as_ref());
        image.target = self.pick("build.target", image.target.as_ref(), file.target.as_ref());
        image.build_args = self.build_args(&file.args, &image.build_args);
        let revision_arg = b.revision_arg.as_ref();
        b.revision_arg = self.pick(
            "build.revision_arg",
            revision_arg,
            file.revision_arg.as_ref(),
        );
    }

    /// The spec's args, less those the flags name, then the flags' (`NAME=VALUE` or `NAME`).
    fn build_args(&mut self, file: &BTreeMap<String, String>, flags: &[String]) -> Vec<String> {
        let name = |item: &String| {
            item.split_once('=')
                .map_or(item.as_str(), |(n, _)| n)
                .to_string()
        };
        let named: BTreeSet<String> = flags.iter().map(name).collect();
        let from_flags = self
            .sources
            .get("build_args")
            .map_or(Origin::Default, Origin::of);
        let mut merged = Vec::new();
        for (key, value) in file.iter().filter(|(k, _)| !named.contains(*k)) {
            merged.push(format!("{key}={value}"));
            self.arg_setting(key, Origin::Spec);
        }
        for item in flags {
            merged.push(item.clone());
            self.arg_setting(&name(item), from_flags.clone());
        }
        merged
    }

    fn arg_setting(&mut self, name: &str, from: Origin) {
        self.settings.push(Setting {
            key: format!("build.args.{name}"),
            value: None,
            from,
        });
    }
}

/// How a value is shown in the plan.
trait Shown {
    fn shown(&self) -> String;
}

impl Shown for String {
    fn shown(&self) -> String {
        self.clone()
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> String {
        self.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cli::{Cli, Command};

    const SPEC: &str = r#"
name = "web"
slots = [18001, 18002]
container_port = 8080
registry = "127.0.0.1:5000"
repository = "team/web"
[build]
context = "app"
revision_arg = "VERSION"
[build.args]
BASE_IMAGE = "127.0.0.1:5000/base@sha256:ab"
MODE = "production"
[smoke]
url = ["https://web.example.com/health"]
expect_json_field = ".build.version"
[health]
[caddy]
snippet_dir = "/etc/caddy/slipway"
"#;

    fn spec() -> ServiceSpec {
        ServiceSpec::parse(Path::new("s.toml"), SPEC).unwrap()
    }

    /// `deploy ARGS`, with the named arguments marked as coming from their variables.
    fn deploy(args: &[&str], from_env: &[(&str, &str)]) -> DeployArgs {
        let argv = ["slipway", "deploy", "--config", "s.toml"]
            .iter()
            .chain(args);
        let cli = Cli::try_parse_with_sources(argv).unwrap();
        let Command::Deploy(mut deploy) = cli.command else {
            panic!("not a deploy")
        };
        for (id, var) in from_env {
            deploy.sources.set(id, Given::Env(var.to_string()));
        }
        *deploy
    }

    fn shown(e: &Effective) -> Vec<String> {
        e.settings
            .iter()
            .map(|s| match &s.value {
                Some(v) => format!("{}: {v} ({})", s.key, s.from),
                None => format!("{} ({})", s.key, s.from),
            })
            .collect()
    }

    #[test]
    fn with_only_the_spec_every_value_comes_from_it() {
        let e = effective(&spec(), &deploy(&[], &[])).unwrap();
        assert_eq!(
            e.args.build.registry.registry.as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(e.args.build.repository.as_deref(), Some("team/web"));
        assert_eq!(e.args.build.image.context, PathBuf::from("app"));
        assert_eq!(e.args.build.revision_arg.as_deref(), Some("VERSION"));
        assert_eq!(
            e.args.build.image.build_args,
            [
                "BASE_IMAGE=127.0.0.1:5000/base@sha256:ab",
                "MODE=production"
            ]
        );
        assert_eq!(e.args.smoke.urls, ["https://web.example.com/health"]);
        assert_eq!(e.args.smoke.expect_json_field, ".build.version");
        assert_eq!(
            shown(&e),
            [
                "registry: 127.0.0.1:5000 (from the spec)",
                "repository: team/web (from the spec)",
                "build.context: app (from the spec)",
                "build.args.BASE_IMAGE (from the spec)",
                "build.args.MODE (from the spec)",
                "build.revision_arg: VERSION (from the spec)",
                "smoke.url: https://web.example.com/health (from the spec)",
                "smoke.expect_json_field: .build.version (from the spec)",
            ]
        );
    }

    #[test]
    fn flags_and_variables_beat_the_spec_and_build_args_merge_by_name() {
        let args = deploy(
            &[
                "--registry",
                "registry.example.com",
                "--build-arg",
                "MODE=staging",
                "--url",
                "https://staging.example.com/health",
            ],
            &[("registry", "SLIPWAY_REGISTRY")],
        );
        let e = effective(&spec(), &args).unwrap();
        assert_eq!(
            e.args.build.registry.registry.as_deref(),
            Some("registry.example.com")
        );
        assert_eq!(
            e.args.build.image.build_args,
            ["BASE_IMAGE=127.0.0.1:5000/base@sha256:ab", "MODE=staging"]
        );
        assert_eq!(e.args.smoke.urls, ["https://staging.example.com/health"]);
        let shown = shown(&e);
        for line in [
            "registry: registry.example.com (from SLIPWAY_REGISTRY)",
            "build.args.MODE (from --build-arg)",
            "smoke.url: https://staging.example.com/health (from --url)",
        ] {
            assert!(shown.contains(&line.to_string()), "{line}: {shown:#?}");
        }
    }

    #[test]
    fn defaults_apply_when_neither_the_flags_nor_the_spec_say() {
        let bare = ServiceSpec::parse(
            Path::new("s.toml"),
            "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\n[health]\n[caddy]\nsnippet_dir = \"/etc/caddy/slipway\"\n",
        )
        .unwrap();
        let e = effective(&bare, &deploy(&[], &[])).unwrap();
        assert_eq!(e.args.build.image.context, PathBuf::from("."));
        assert_eq!(e.args.smoke.expect_json_field, ".version");
        assert_eq!(
            shown(&e),
            [
                "build.context: . (default)",
                "smoke.expect_json_field: .version (default)"
            ]
        );
    }

    #[test]
    fn an_image_on_the_command_line_with_build_flags_there_is_a_conflict_naming_both() {
        let image = format!("127.0.0.1:5000/team/web@sha256:{}", "ab".repeat(32));
        let err = effective(
            &spec(),
            &deploy(
                &["--image", &image, "--repository", "team/x", "--tag", "v1"],
                &[],
            ),
        )
        .unwrap_err();
        assert_eq!(err.flags, ["--repository", "--tag"]);
        let message = err.to_string();
        assert!(
            message
                .starts_with("--image cannot be used with --repository, --tag on the command line"),
            "{message}"
        );
    }

    #[test]
    fn build_values_from_variables_are_no_conflict_and_an_image_means_no_build() {
        let image = format!("127.0.0.1:5000/team/web@sha256:{}", "ab".repeat(32));
        let args = deploy(
            &["--image", &image, "--repository", "team/x"],
            &[("repository", "SLIPWAY_REPOSITORY")],
        );
        let e = effective(&spec(), &args).unwrap();
        assert_eq!(e.args.image.as_deref(), Some(image.as_str()));
        assert_eq!(shown(&e)[0], format!("image: {image} (from --image)"));
        assert!(
            !shown(&e)
                .iter()
                .any(|s| s.starts_with("registry") || s.starts_with("build."))
        );
        // SLIPWAY_IMAGE gives way to a build asked for on the command line.
        let args = deploy(
            &["--image", &image, "--repository", "team/x"],
            &[("image", "SLIPWAY_IMAGE")],
        );
        let e = effective(&spec(), &args).unwrap();
        assert_eq!(e.args.image, None);
        assert_eq!(e.args.build.repository.as_deref(), Some("team/x"));
    }
}
