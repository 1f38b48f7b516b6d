//! What to build, and the facts gathered for it before anything runs: the revision (the git
//! SHA), the source URL, the creation time, and the checks on names and tags.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::BuildError;
use crate::engine::Builder;
use crate::image::lint::{LintOptions, Rule};

pub const LABEL_SOURCE: &str = "org.opencontainers.image.source";
pub const LABEL_CREATED: &str = "org.opencontainers.image.created";
pub use super::verify::LABEL_REVISION;

/// Everything `build_and_push` needs besides the engine and the registry.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub context: PathBuf,
    /// The Dockerfile as given (relative to the working directory, or absolute).
    pub dockerfile: PathBuf,
    pub target: Option<String>,
    pub build_args: Vec<(String, String)>,
    /// Extra labels; the OCI labels below are set after them and win.
    pub labels: Vec<(String, String)>,
    /// The repository within the registry, e.g. `team/app`.
    pub repository: String,
    /// The git SHA: the first tag and the `org.opencontainers.image.revision` label.
    pub revision: String,
    pub extra_tags: Vec<String>,
    /// `org.opencontainers.image.source`, when known.
    pub source: Option<String>,
    /// `org.opencontainers.image.created`, RFC 3339.
    pub created: String,
    pub allow: Vec<Rule>,
    pub health_probe: bool,
    pub builder: Builder,
}

static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("a valid regex")
});
/// A repository name the registry takes, e.g. `team/app`.
pub fn valid_repository(name: &str) -> bool {
    REPOSITORY.is_match(name)
}

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("a valid regex"));
static SHA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9a-f]{7,64}$").expect("a valid regex"));

impl BuildRequest {
    /// Every tag pushed: the revision first, then the extra ones.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![self.revision.clone()];
        for tag in &self.extra_tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        tags
    }

    /// The labels given to the build: the extra ones, then the OCI ones.
    pub fn all_labels(&self) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = self
            .labels
            .iter()
            .filter(|(k, _)| ![LABEL_REVISION, LABEL_SOURCE, LABEL_CREATED].contains(&k.as_str()))
            .cloned()
            .collect();
        labels.push((LABEL_REVISION.into(), self.revision.clone()));
        labels.push((LABEL_CREATED.into(), self.created.clone()));
        if let Some(source) = &self.source {
            labels.push((LABEL_SOURCE.into(), source.clone()));
        }
        labels
    }

    pub fn lint_options(&self) -> LintOptions {
        LintOptions {
            build_args: self.build_args.clone(),
            target: self.target.clone(),
            allow: self.allow.clone(),
            health_probe: self.health_probe,
        }
    }

    /// Names and tags the registry would refuse, refused before anything runs.
    pub fn validate(&self) -> Result<(), BuildError> {
        let invalid = |what: String, hint: &str| BuildError::Invalid {
            what,
            hint: hint.to_string(),
        };
        if !REPOSITORY.is_match(&self.repository) {
            return Err(invalid(
                format!("`{}` is not a valid repository name", self.repository),
                "lower-case path components of letters and digits, separated by `.`, `_`, `__` or `-`, joined by `/`: e.g. team/app",
            ));
        }
        if !SHA.is_match(&self.revision) {
            return Err(invalid(
                format!("the revision `{}` is not a git SHA", self.revision),
                "give the commit's SHA in lower-case hex (7 to 64 digits), e.g. --revision $(git rev-parse HEAD)",
            ));
        }
        if let Some(bad) = self.extra_tags.iter().find(|t| !TAG.is_match(t)) {
            return Err(invalid(
                format!("`{bad}` is not a valid tag"),
                "up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            ));
        }
        Ok(())
    }
}

/// Where the revision came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub sha: String,
    pub from: &'static str,
}

/// The revision: given, else `GITHUB_SHA`, else `git rev-parse HEAD` in the context.
pub async fn resolve_revision(given: Option<&str>, context: &Path) -> Result<Revision, BuildError> {
    if let Some(sha) = given.filter(|s| !s.is_empty()) {
        return Ok(Revision {
            sha: sha.to_string(),
            from: "--revision",
        });
    }
    if let Ok(sha) = std::env::var("GITHUB_SHA")
        && !sha.is_empty()
    {
        return Ok(Revision {
            sha,
            from: "GITHUB_SHA",
        });
    }
    match git(context, &["rev-parse", "HEAD"]).await {
        Ok(sha) => Ok(Revision {
            sha,
            from: "git rev-parse HEAD",
        }),
        Err(reason) => Err(BuildError::NoRevision {
            context: context.to_path_buf(),
            reason,
        }),
    }
}

/// The source repository's URL: given, else `GITHUB_SERVER_URL/GITHUB_REPOSITORY`, else the
/// context's `origin` remote with any credentials in it removed.
pub async fn resolve_source(given: Option<&str>, context: &Path) -> Option<String> {
    if let Some(source) = given.filter(|s| !s.is_empty()) {
        return Some(without_credentials(source));
    }
    if let (Ok(server), Ok(repo)) = (
        std::env::var("GITHUB_SERVER_URL"),
        std::env::var("GITHUB_REPOSITORY"),
    ) && !server.is_empty()
        && !repo.is_empty()
    {
        return Some(format!("{}/{repo}", server.trim_end_matches('/')));
    }
    git(context, &["remote", "get-url", "origin"])
        .await
        .ok()
        .map(|url| without_credentials(&url))
}

/// `https://user:token@host/x` -> `https://host/x`: a label is public.
fn without_credentials(url: &str) -> String {
    static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^@/]*@").expect("a valid regex")
    });
    USERINFO.replace(url, "$1").into_owned()
}

/// Now (or `SOURCE_DATE_EPOCH`, for reproducible builds) in RFC 3339.
pub fn created_now() -> String {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    humantime::format_rfc3339_seconds(epoch.unwrap_or_else(std::time::SystemTime::now)).to_string()
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `KEY=VALUE` items; a bare `KEY` takes its value from the environment variable of that name
/// (so a value need not be written on a command line).
pub fn key_values(items: &[String], what: &str) -> Result<Vec<(String, String)>, BuildError> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some(("", _)) => Err(BuildError::Invalid {
                what: format!("the {what} `{item}` has no name"),
                hint: "write it as NAME=VALUE, or NAME to take the value from $NAME".into(),
            }),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => std::env::var(item)
                .map(|v| (item.clone(), v))
                .map_err(|_| BuildError::Invalid {
                    what: format!(
                        "the {what} `{item}` has no value and the environment variable {item} is not set"
                    ),
                    hint: format!("write it as {item}=VALUE, or set {item}"),
                }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn request() -> BuildRequest {
        BuildRequest {
            context: ".".into(),
            dockerfile: "Dockerfile".into(),
            target: None,
            build_args: vec![],
            labels: vec![
                ("team".into(), "web".into()),
                (LABEL_REVISION.into(), "spoofed".into()),
            ],
            repository: "team/app".into(),
            revision: "0123abc".into(),
            extra_tags: vec!["latest-main".into(), "0123abc".into()],
            source: Some("https://git.example/team/app".into()),
            created: "2026-01-01T00:00:00Z".into(),
            allow: vec![],
            health_probe: false,
            builder: Builder::BuildKit,
        }
    }

    #[test]
    fn tags_and_labels() {
        let r = request();
        assert_eq!(r.tags(), ["0123abc", "latest-main"]);
        let labels = r.all_labels();
        assert_eq!(
            labels,
            [
                ("team".to_string(), "web".to_string()),
                (LABEL_REVISION.into(), "0123abc".into()),
                (LABEL_CREATED.into(), "2026-01-01T00:00:00Z".into()),
                (LABEL_SOURCE.into(), "https://git.example/team/app".into()),
            ]
        );
        r.validate().unwrap();
    }

    #[test]
    fn names_the_registry_would_refuse_are_refused_first() {
        for (field, value) in [
            ("repository", "Team/App"),
            ("repository", "team//app"),
            ("repository", "-app"),
            ("revision", "main"),
            ("revision", "0123ABC"),
            ("revision", "abc"),
            ("tag", ".hidden"),
            ("tag", "a/b"),
        ] {
            let mut r = request();
            match field {
                "repository" => r.repository = value.into(),
                "revision" => r.revision = value.into(),
                _ => r.extra_tags = vec![value.into()],
            }
            let err = r.validate().unwrap_err();
            assert!(err.to_string().contains(value), "{field} {value}: {err}");
        }
    }

    #[test]
    fn credentials_never_reach_the_source_label() {
        assert_eq!(
            without_credentials("https://x-access-token:ghs_abc@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            without_credentials("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
    }

    #[tokio::test]
    async fn the_revision_comes_from_git_when_not_given() {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q"]);
        run(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ]);
        let given = resolve_revision(Some("abcdef0"), dir.path()).await.unwrap();
        assert_eq!(given.from, "--revision");
        if std::env::var_os("GITHUB_SHA").is_none() {
            let found = resolve_revision(None, dir.path()).await.unwrap();
            assert_eq!(found.from, "git rev-parse HEAD");
            assert_eq!(found.sha.len(), 40);
            let none = tempfile::tempdir().unwrap();
            let err = resolve_revision(None, none.path()).await.unwrap_err();
            assert!(err.to_string().contains("no revision"), "{err}");
        }
    }

    #[test]
    fn key_values_from_flags_or_the_environment() {
        let got = key_values(
            &["A=1".into(), "B=x=y".into(), "C=".into(), "PATH".into()],
            "build arg",
        )
        .unwrap();
        assert_eq!(got[0], ("A".into(), "1".into()));
        assert_eq!(got[1], ("B".into(), "x=y".into()));
        assert_eq!(got[2], ("C".into(), String::new()));
        assert_eq!(got[3].0, "PATH");
        let err = key_values(&["SLIPWAY_SURELY_UNSET_VAR".into()], "build arg").unwrap_err();
        assert!(err.to_string().contains("is not set"), "{err}");
        assert!(key_values(&["=v".into()], "label").is_err());
    }

    #[test]
    fn created_honours_source_date_epoch_format() {
        let now = created_now();
        assert!(now.ends_with('Z') && now.len() == 20, "{now}");
    }
}
