//! What the spec may say about the deploy itself, so `slipway deploy --config FILE` needs nothing
//! else: the top-level `registry` and `repository`, `[build]` and `[smoke]`. Flags and `SLIPWAY_*`
//! variables override each of them (`crate::deploy::settings`). Nothing here is a secret.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ServiceSpec, valid_env_name, valid_host_header};

/// What a deploy builds. Paths are relative to the working directory, as the flags' are.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Build context directory (default ".").
    pub context: Option<PathBuf>,
    /// The Dockerfile (default CONTEXT/Dockerfile).
    pub file: Option<PathBuf>,
    /// The stage to build and lint as the final one (default: the last stage).
    pub target: Option<String>,
    /// Build args, NAME = "value". Never a secret: pass those with `--build-arg NAME`.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Also pass the revision to the build as this build arg, e.g. "VERSION".
    pub revision_arg: Option<String>,
}

/// The public smoke test after the switch.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeSpec {
    /// The public URLs that must serve the new version.
    #[serde(default)]
    pub url: Vec<String>,
    /// The JSON field of the response that must equal the version (default ".version"; "" checks
    /// the status only).
    pub expect_json_field: Option<String>,
    /// The version the URLs must serve (default: GITHUB_SHA, else the deployed revision).
    pub expect_version: Option<String>,
}

/// Every problem of `registry`, `repository`, `[build]` and `[smoke]`, each with its key path.
pub(super) fn problems(spec: &ServiceSpec, p: &mut Vec<String>) {
    if let Some(r) = &spec.registry
        && (r.contains('/') || !valid_host_header(r))
    {
        p.push(format!(
            "registry: `{}` must be HOST[:PORT] without a scheme or path, e.g. registry.example.com or 127.0.0.1:5000",
            r.escape_debug()
        ));
    }
    if let Some(r) = &spec.repository
        && !crate::image::build::valid_repository(r)
    {
        p.push(format!(
            "repository: `{}` is not a repository name: lower-case path components of letters and digits, separated by `.`, `_`, `__` or `-`, joined by `/`, e.g. team/web",
            r.escape_debug()
        ));
    }
    build_problems(&spec.build, p);
    smoke_problems(&spec.smoke, p);
}

fn build_problems(b: &BuildSpec, p: &mut Vec<String>) {
    for (key, path) in [("context", &b.context), ("file", &b.file)] {
        if path.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            p.push(format!("build.{key}: must not be empty"));
        }
    }
    if let Some(t) = &b.target
        && (t.is_empty() || t.contains(char::is_whitespace))
    {
        p.push("build.target: must be a stage name".into());
    }
    for name in b.args.keys() {
        if !valid_env_name(name) {
            p.push(format!("build.args.{name}: not a build arg name"));
        } else if crate::image::lint::looks_secret_name(name) {
            p.push(format!(
                "build.args.{name}: looks like a secret, and the spec is not the place for one: pass it with --build-arg {name} (its value from ${name})"
            ));
        }
    }
    if let Some(name) = &b.revision_arg
        && !valid_env_name(name)
    {
        p.push(format!(
            "build.revision_arg: `{name}` is not a build arg name"
        ));
    }
}

fn smoke_problems(s: &SmokeSpec, p: &mut Vec<String>) {
    for (i, url) in s.url.iter().enumerate() {
        let http = reqwest::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !http {
            p.push(format!(
                "smoke.url[{i}]: `{}` is not an http(s) URL",
                url.escape_debug()
            ));
        }
    }
    if s.expect_json_field
        .as_ref()
        .is_some_and(|f| f.contains(char::is_whitespace))
    {
        p.push("smoke.expect_json_field: a .field.sub path has no spaces".into());
    }
    if s.expect_version
        .as_ref()
        .is_some_and(|v| v.trim().is_empty())
    {
        p.push(
            "smoke.expect_version: must not be empty (leave it out to expect the revision)".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::SpecError;

    #[test]
    fn every_problem_of_the_deploy_keys_is_listed_with_its_key_path() {
        let text = r#"
name = "web"
slots = [18001, 18002]
container_port = 8080
registry = "https://registry.example.com/v2"
repository = "Team/Web"
[build]
context = ""
target = "two words"
revision_arg = "1VERSION"
[build.args]
DB_PASSWORD = "hunter2"
"BAD-NAME" = "x"
BASE_IMAGE = "registry.example.com/base@sha256:ab"
[smoke]
url = ["https://web.example.com/health", "ftp://web.example.com", "not a url"]
expect_json_field = ". version"
expect_version = " "
[health]
[caddy]
snippet_dir = "/etc/caddy/slipway"
"#;
        let err = ServiceSpec::parse(Path::new("s.toml"), text).unwrap_err();
        let SpecError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "registry",
                "repository",
                "build.context",
                "build.target",
                "build.args.BAD-NAME",
                "build.args.DB_PASSWORD",
                "build.revision_arg",
                "smoke.url[1]",
                "smoke.url[2]",
                "smoke.expect_json_field",
                "smoke.expect_version",
            ],
            "{err}"
        );
    }

    #[test]
    fn a_whole_deploy_in_one_file_reads() {
        let text = r#"
name = "web"
slots = [18001, 18002]
container_port = 8080
registry = "127.0.0.1:5000"
repository = "team/web"
[build]
context = "."
file = "Dockerfile"
target = "runtime"
revision_arg = "VERSION"
args = { BASE_IMAGE = "127.0.0.1:5000/base@sha256:ab" }
[smoke]
url = ["https://web.example.com/health"]
expect_json_field = ".version"
[health]
[caddy]
snippet_dir = "/etc/caddy/slipway"
"#;
        let spec = ServiceSpec::parse(Path::new("s.toml"), text).unwrap();
        assert_eq!(spec.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(
            spec.build.args["BASE_IMAGE"],
            "127.0.0.1:5000/base@sha256:ab"
        );
        assert_eq!(spec.smoke.url, ["https://web.example.com/health"]);
        let err = ServiceSpec::parse(
            Path::new("s.toml"),
            &text.replace("[smoke]\n", "[smoke]\nurls = []\n"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `urls`"), "{err}");
    }
}
