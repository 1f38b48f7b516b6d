//! `slipway lint`: the policy a Dockerfile and its `.dockerignore` must meet before slipway
//! builds them. Each finding names the file and line, a rule id and the fix; `--allow RULE`
//! waives a rule on purpose. Secret values are never repeated in a finding.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use thiserror::Error;

use crate::image::build::dockerignore::{DockerIgnore, DockerIgnoreError};
use crate::image::dockerfile::{self, Instruction, Stage, Stages};
use crate::image::reference::{PinnedImage, ReferenceError};

/// The rules, by the id used in findings and with `--allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A FROM not pinned by digest (ARG-substituted bases resolved from the build args)
    UnpinnedBase,
    /// A FROM using the `latest` tag, by name or by giving no tag
    LatestTag,
    /// The final stage runs as root (no USER, or USER root/0)
    RootUser,
    /// CMD or ENTRYPOINT in shell form: SIGTERM never reaches the app
    ShellForm,
    /// No HEALTHCHECK in the final stage and no HTTP health probe configured
    NoHealthcheck,
    /// An ENV or ARG holding a secret-looking value
    SecretValue,
    /// A .dockerignore that does not exclude .env, .git and .venv
    Dockerignore,
}

impl Rule {
    pub fn id(self) -> &'static str {
        match self {
            Rule::UnpinnedBase => "unpinned-base",
            Rule::LatestTag => "latest-tag",
            Rule::RootUser => "root-user",
            Rule::ShellForm => "shell-form",
            Rule::NoHealthcheck => "no-healthcheck",
            Rule::SecretValue => "secret-value",
            Rule::Dockerignore => "dockerignore",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    /// `None` for a finding about a whole file (or a missing one).
    pub line: Option<usize>,
    pub rule: Rule,
    pub message: String,
    pub fix: String,
}

impl Finding {
    /// `file:line  RULE-ID  message  fix: ...`
    pub fn render(&self) -> String {
        let place = match self.line {
            Some(line) => format!("{}:{line}", self.file),
            None => self.file.clone(),
        };
        format!(
            "{place}  {}  {}  fix: {}",
            self.rule.id(),
            self.message,
            self.fix
        )
    }
}

/// What the lint is told besides the files.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    pub build_args: Vec<(String, String)>,
    pub target: Option<String>,
    pub allow: Vec<Rule>,
    /// The deploy checks an HTTP health endpoint, so a HEALTHCHECK is not required.
    pub health_probe: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Findings of rules waived with `--allow`.
    pub waived: Vec<Finding>,
}

impl Report {
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&finding.render());
            out.push('\n');
        }
        out
    }
}

#[derive(Debug, Error)]
pub enum LintError {
    #[error("cannot read the Dockerfile {}", path.display())]
    DockerfileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no FROM instruction", path.display())]
    NoStage { path: PathBuf },
    #[error("--target `{target}` is not a stage of {} (stages: {stages})", path.display())]
    UnknownTarget {
        target: String,
        path: PathBuf,
        stages: String,
    },
    #[error(transparent)]
    DockerIgnore(#[from] DockerIgnoreError),
}

impl LintError {
    pub fn hint(&self) -> String {
        match self {
            LintError::DockerfileUnreadable { .. } => {
                "give the Dockerfile with --file (relative to the working directory), or put one at CONTEXT/Dockerfile".into()
            }
            LintError::NoStage { .. } => "a Dockerfile starts its first stage with FROM".into(),
            LintError::UnknownTarget { .. } => "name a stage given with `FROM ... AS NAME`".into(),
            LintError::DockerIgnore(e) => e.hint().into(),
        }
    }
}

/// Lints `dockerfile` (a path as the user gave it) and `context/.dockerignore`.
pub fn lint(context: &Path, dockerfile: &Path, options: &LintOptions) -> Result<Report, LintError> {
    let text =
        std::fs::read_to_string(dockerfile).map_err(|source| LintError::DockerfileUnreadable {
            path: dockerfile.to_path_buf(),
            source,
        })?;
    let ignore_path = context.join(".dockerignore");
    let ignore = if ignore_path.exists() {
        Some(DockerIgnore::read(context)?)
    } else {
        None
    };
    let findings = check(
        &dockerfile.display().to_string(),
        &text,
        &ignore_path.display().to_string(),
        ignore.as_ref(),
        options,
    )?;
    let (waived, findings) = findings
        .into_iter()
        .partition(|f| options.allow.contains(&f.rule));
    Ok(Report { findings, waived })
}

/// Every finding, waived or not, for a Dockerfile's text and the context's `.dockerignore`.
pub fn check(
    dockerfile_name: &str,
    text: &str,
    dockerignore_name: &str,
    dockerignore: Option<&DockerIgnore>,
    options: &LintOptions,
) -> Result<Vec<Finding>, LintError> {
    let stages = Stages::new(&dockerfile::parse(text), &options.build_args);
    if stages.stages.is_empty() {
        return Err(LintError::NoStage {
            path: dockerfile_name.into(),
        });
    }
    let final_stage = stages
        .final_stage(options.target.as_deref())
        .ok_or_else(|| LintError::UnknownTarget {
            target: options.target.clone().unwrap_or_default(),
            path: dockerfile_name.into(),
            stages: stages
                .stages
                .iter()
                .filter_map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let at = |line: Option<usize>, rule: Rule, message: String, fix: String| Finding {
        file: dockerfile_name.to_string(),
        line,
        rule,
        message,
        fix,
    };
    let mut findings = Vec::new();
    for stage in &stages.stages {
        base_findings(stage, &mut findings, &at);
    }
    source_findings(&stages, &mut findings, &at);
    user_finding(&stages, final_stage, &mut findings, &at);
    for keyword in ["ENTRYPOINT", "CMD"] {
        if let Some(ins) = stages.effective(final_stage, keyword)
            && ins.exec_form().is_none()
        {
            findings.push(at(
                Some(ins.line),
                Rule::ShellForm,
                format!(
                    "`{keyword} {}` is in shell form: /bin/sh becomes PID 1 and SIGTERM never reaches the app, so every stop waits out the timeout and is killed",
                    ins.args
                ),
                exec_form_fix(ins),
            ));
        }
    }
    if !options.health_probe {
        let healthcheck = stages.effective(final_stage, "HEALTHCHECK");
        let disabled = healthcheck.is_some_and(|h| h.args.trim().eq_ignore_ascii_case("none"));
        if healthcheck.is_none() || disabled {
            findings.push(at(
                Some(healthcheck.map_or(final_stage.from.line, |h| h.line)),
                Rule::NoHealthcheck,
                "the final stage has no HEALTHCHECK and no HTTP health probe is configured: nothing tells a broken release from a healthy one".into(),
                "add `HEALTHCHECK --interval=5s --timeout=3s CMD [\"/app/healthcheck\"]`, or configure the deploy's HTTP health probe".into(),
            ));
        }
    }
    let args_and_env = stages.global_args.iter().chain(
        stages
            .stages
            .iter()
            .flat_map(|s| &s.instructions)
            .filter(|i| i.keyword == "ARG" || i.keyword == "ENV"),
    );
    for ins in args_and_env {
        for (name, value) in dockerfile::assignments(ins) {
            if value.as_deref().is_some_and(|v| holds_secret(&name, v)) {
                findings.push(at(
                    Some(ins.line),
                    Rule::SecretValue,
                    format!(
                        "`{} {name}` holds a secret-looking value: it is stored in the image, readable by anyone who can pull it",
                        ins.keyword
                    ),
                    "remove the value; give secrets at run time (the container's environment) or, during the build, through a BuildKit secret mount (`RUN --mount=type=secret`)".into(),
                ));
            }
        }
    }
    findings.extend(dockerignore_finding(dockerignore_name, dockerignore));
    Ok(findings)
}

type At<'a> = dyn Fn(Option<usize>, Rule, String, String) -> Finding + 'a;

fn base_findings(stage: &Stage, findings: &mut Vec<Finding>, at: &At<'_>) {
    if stage.parent.is_some() || stage.base.eq_ignore_ascii_case("scratch") {
        return;
    }
    let line = Some(stage.from.line);
    let resolved = match &stage.resolved {
        Ok(resolved) if resolved.eq_ignore_ascii_case("scratch") => return,
        Ok(resolved) => resolved,
        Err(missing) => {
            findings.push(at(
                line,
                Rule::UnpinnedBase,
                format!(
                    "`FROM {}` cannot be resolved: {} has no value (no build arg and no ARG default)",
                    stage.base,
                    missing.join(", ")
                ),
                format!(
                    "pass --build-arg {}=IMAGE@sha256:<digest>, or give the ARG a pinned default",
                    missing[0]
                ),
            ));
            return;
        }
    };
    let via = if *resolved != stage.base {
        format!(" (`{}`)", stage.base)
    } else {
        String::new()
    };
    let pulled = Pulled {
        shown: format!("`FROM {resolved}`{via}"),
        what: "the base",
        line,
        alternative: "",
    };
    image_findings(&pulled, resolved, findings, at);
}

/// An image the build pulls, for the messages about it.
struct Pulled {
    /// How the Dockerfile names it, e.g. `` `FROM alpine` ``.
    shown: String,
    /// What it is to the build, e.g. "the base".
    what: &'static str,
    line: Option<usize>,
    /// Another way out, appended to the fix.
    alternative: &'static str,
}

/// `unpinned-base` and `latest-tag` for an image the build pulls: a `FROM` base, a
/// `COPY --from` image or a `RUN --mount=from=` image.
fn image_findings(pulled: &Pulled, reference: &str, findings: &mut Vec<Finding>, at: &At<'_>) {
    let shown = &pulled.shown;
    let parsed = PinnedImage::parse(reference);
    if let Err(ReferenceError::Malformed { problem, .. }) = &parsed {
        findings.push(at(
            pulled.line,
            Rule::UnpinnedBase,
            format!("{shown} is not a valid image reference: {problem}"),
            format!("{}, and pin it by digest", problem.hint()),
        ));
    } else if parsed.is_err() {
        findings.push(at(
            pulled.line,
            Rule::UnpinnedBase,
            format!(
                "{shown} is not pinned by digest: {} can change under the same name",
                pulled.what
            ),
            format!(
                "pin it: {}@sha256:<digest> (`skopeo inspect docker://{reference}` prints the digest){}",
                reference.split('@').next().unwrap_or(reference),
                pulled.alternative
            ),
        ));
    }
    let (name, tag, digest) = split_reference(reference);
    if tag == Some("latest") || (tag.is_none() && !digest) {
        let how = if tag.is_some() {
            "names the `latest` tag"
        } else {
            "gives no tag, so it means `latest`"
        };
        findings.push(at(
            pulled.line,
            Rule::LatestTag,
            format!("{shown} {how}: which release that is changes over time"),
            format!("name a version and pin it: {name}:<version>@sha256:<digest>"),
        ));
    }
}

/// Images pulled by `COPY --from=IMAGE` and `RUN --mount=...,from=IMAGE`: each must be pinned
/// like a base. As the classic builder reads `COPY --from` (what slipway builds with): the name
/// of an earlier stage (any case), else a stage index (a number as Go's `ParseInt` reads it),
/// else an image. `RUN --mount` is BuildKit's: the name of any stage of the file, else an image
/// (a number included). Variables are not expanded in either, so they cannot be checked.
fn source_findings(stages: &Stages, findings: &mut Vec<Finding>, at: &At<'_>) {
    for (index, stage) in stages.stages.iter().enumerate() {
        for ins in &stage.instructions {
            let copy = ins.keyword == "COPY";
            let (sources, stage_names) = match ins.keyword.as_str() {
                "COPY" => (ins.flag_values("from"), &stages.stages[..index]),
                "RUN" => (ins.mount_sources(), &stages.stages[..]),
                _ => continue,
            };
            for from in &sources {
                let from = from.as_str();
                if from.is_empty()
                    || from.eq_ignore_ascii_case("scratch")
                    || is_stage_name(stage_names, from)
                    || (copy && from.parse::<i64>().is_ok())
                {
                    continue;
                }
                let shown = if copy {
                    format!("`COPY --from={from}`")
                } else {
                    format!("`RUN --mount=from={from}`")
                };
                if from.contains('$') {
                    findings.push(at(
                        Some(ins.line),
                        Rule::UnpinnedBase,
                        format!(
                            "{shown} uses a variable, which the builder does not expand there: the image cannot be checked"
                        ),
                        "pull the image in a stage of its own, `FROM IMAGE@sha256:<digest> AS NAME` (a FROM may use an ARG), and use that stage's NAME".into(),
                    ));
                    continue;
                }
                let stage = if copy { "an earlier stage" } else { "a stage" };
                let pulled = Pulled {
                    shown: format!("{shown} (not the name of {stage}, so an image)"),
                    what: "the image it takes files from",
                    line: Some(ins.line),
                    alternative: ", or name a stage of this Dockerfile",
                };
                image_findings(&pulled, from, findings, at);
            }
        }
    }
}

fn is_stage_name(stages: &[Stage], name: &str) -> bool {
    stages.iter().any(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

fn user_finding(stages: &Stages, final_stage: &Stage, findings: &mut Vec<Finding>, at: &At<'_>) {
    let fix = "add `USER 10001:10001` (a non-root uid) after the steps that need root".to_string();
    match stages.effective(final_stage, "USER") {
        None => findings.push(at(
            Some(final_stage.from.line),
            Rule::RootUser,
            "the final stage sets no USER, so the app runs as root".into(),
            fix,
        )),
        Some(user) => {
            if runs_as_root(&user.args) {
                findings.push(at(
                    Some(user.line),
                    Rule::RootUser,
                    format!("`USER {}` runs the app as root", user.args),
                    fix,
                ));
            }
        }
    }
}

/// Whether `USER user[:group]` means uid 0. As runc (and moby's `user` package) reads it: a
/// user that Go's `strconv.Atoi` takes as a number (an optional `+` or `-`, then decimal digits,
/// leading zeros allowed) is a uid, whatever `/etc/passwd` says, so `00`, `+0` and `-0` are
/// root; otherwise it is a name, and `root` is uid 0. An empty user (`USER :1001`) keeps the
/// default user, root. The group does not matter: `USER 1001:0` is not root.
fn runs_as_root(args: &str) -> bool {
    let user = args.trim().split(':').next().unwrap_or("").trim();
    let digits = user.strip_prefix(['+', '-']).unwrap_or(user);
    let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    user.is_empty() || user == "root" || (numeric && digits.bytes().all(|b| b == b'0'))
}

/// The exec form of a shell-form instruction, when it is a plain command.
fn exec_form_fix(ins: &Instruction) -> String {
    let plain = !ins.args.contains(['&', '|', ';', '$', '>', '<', '`', '(']);
    match shlex::split(&ins.args) {
        Some(words) if plain && !words.is_empty() => format!(
            "use the exec form: {} {}",
            ins.keyword,
            serde_json::to_string(&words).unwrap_or_default()
        ),
        _ => format!(
            "use the exec form, {} [\"/app/start\"], and move the shell logic into that script, ending in `exec` so the app becomes PID 1",
            ins.keyword
        ),
    }
}

fn dockerignore_finding(name: &str, ignore: Option<&DockerIgnore>) -> Option<Finding> {
    const REQUIRED: [&str; 3] = [".env", ".git", ".venv"];
    let (message, missing) = match ignore {
        None => (
            "there is no .dockerignore: .env, .git and .venv would be sent to the engine and could land in the image".to_string(),
            REQUIRED.to_vec(),
        ),
        Some(ignore) => {
            let missing: Vec<&str> = REQUIRED
                .into_iter()
                .filter(|p| !ignore.is_excluded(p))
                .collect();
            if missing.is_empty() {
                return None;
            }
            (
                format!(
                    "does not exclude {}: secrets and history would be sent to the engine and could land in the image",
                    missing.join(", ")
                ),
                missing,
            )
        }
    };
    Some(Finding {
        file: name.to_string(),
        line: None,
        rule: Rule::Dockerignore,
        message,
        fix: format!("add these lines to .dockerignore: {}", missing.join(" ")),
    })
}

/// `registry/name:tag@digest` -> (name without tag or digest, tag, has a digest).
fn split_reference(reference: &str) -> (&str, Option<&str>, bool) {
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, _)) => (rest, true),
        None => (reference, false),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            (&rest[..colon], Some(&rest[colon + 1..]), digest)
        }
        None => (rest, None, digest),
    }
}

/// The words that make a name look secret: the one list behind both the lint's `secret-value`
/// rule and the deploy's `::add-mask::` of env values. A word matches a whole part of the name
/// (parts are split at anything not a letter or digit, case ignored); `DATABASE_URL` matches
/// the two parts in a row. `KEY` is left out here: see [`looks_secret_name`].
pub const SECRET_NAME_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PASSPHRASE",
    "SECRET",
    "SECRETS",
    "TOKEN",
    "APIKEY",
    "PRIVATEKEY",
    "CREDENTIAL",
    "CREDENTIALS",
    "AUTH",
    "DSN",
    "DATABASE_URL",
];

/// A name such as `DB_PASSWORD`, `API_KEY`, `NPM_TOKEN`, `CLIENT_SECRET` or `DATABASE_URL`:
/// one of [`SECRET_NAME_WORDS`], or `KEY` without `PUBLIC`, `PUB` or `ID`.
pub fn looks_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let parts: Vec<&str> = upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    let has = |word: &str| {
        let words: Vec<&str> = word.split('_').collect();
        parts.windows(words.len()).any(|w| w == words.as_slice())
    };
    SECRET_NAME_WORDS.iter().any(|w| has(w))
        || (has("KEY") && !["PUBLIC", "PUB", "ID"].iter().any(|w| has(w)))
}

static SECRET_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"AKIA[0-9A-Z]{16}",
        r"|\bgh[opsur]_[A-Za-z0-9]{30,}",
        r"|\bgithub_pat_[A-Za-z0-9_]{20,}",
        r"|\bglpat-[A-Za-z0-9_-]{20,}",
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}",
        r"|\bsk_live_[A-Za-z0-9]{16,}",
        r"|-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"|[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@",
    ))
    .expect("a valid regex")
});

static ONLY_REFERENCES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-+][^}]*)?\}|\$[A-Za-z_][A-Za-z0-9_]*)*$")
        .expect("a valid regex")
});

/// A literal value under a secret-looking name, or a value that looks like a known kind of
/// credential whatever its name (a token format, a private key, a URL with a password).
pub fn holds_secret(name: &str, value: &str) -> bool {
    SECRET_VALUE.is_match(value)
        || (looks_secret_name(name) && !value.trim().is_empty() && !ONLY_REFERENCES.is_match(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: &str = "127.0.0.1:5000/base@sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b";

    fn rules(dockerfile: &str, ignore: Option<&str>, options: &LintOptions) -> Vec<Rule> {
        let ignore = ignore.map(|t| DockerIgnore::parse(t).unwrap());
        let mut got: Vec<Rule> = check(
            "Dockerfile",
            dockerfile,
            ".dockerignore",
            ignore.as_ref(),
            options,
        )
        .unwrap()
        .into_iter()
        .map(|f| f.rule)
        .collect();
        got.sort();
        got.dedup();
        got
    }

    const IGNORE: &str = ".env\n.git\n.venv\n";

    fn clean_dockerfile(base: &str) -> String {
        format!("FROM {base}\nUSER 10001\nHEALTHCHECK CMD [\"/hc\"]\nCMD [\"/serve\"]\n")
    }

    #[test]
    fn a_clean_dockerfile_has_no_findings() {
        assert_eq!(
            rules(
                &clean_dockerfile(PINNED),
                Some(IGNORE),
                &LintOptions::default()
            ),
            []
        );
    }

    /// BuildKit syntax: mount flags, `COPY --link`, `--chmod` and heredocs are read as the
    /// builder reads them, and every rule still applies around them.
    #[test]
    fn buildkit_syntax_is_read_and_every_rule_still_applies() {
        let buildkit = format!(
            "FROM {PINNED} AS build\nRUN --mount=type=cache,target=/root/.cache/uv \\\n    --mount=type=bind,source=uv.lock,target=uv.lock <<EOF\nFROM alpine\nUSER root\nCMD serve\nEOF\nCOPY --link --chmod=0755 <<-EOT /app/run\n\tENV TOKEN=ghp_0123456789abcdef0123456789abcdef0123\n\tEOT\nFROM {PINNED}\nCOPY --link --from=build --chmod=0755 /app /app\nUSER 10001\nHEALTHCHECK CMD [\"/hc\"]\nCMD [\"/serve\"]\n"
        );
        // The heredocs' lines are a script and a file, not instructions.
        assert_eq!(rules(&buildkit, Some(IGNORE), &LintOptions::default()), []);
        let broken = buildkit
            .replace("USER 10001\n", "")
            .replace("CMD [\"/serve\"]", "CMD /serve")
            .replace(
                "HEALTHCHECK CMD [\"/hc\"]\n",
                "ENV API_TOKEN=ghp_0123456789abcdef0123456789abcdef0123\n",
            )
            .replacen(&format!("FROM {PINNED}\nCOPY"), "FROM alpine\nCOPY", 1);
        assert_eq!(
            rules(&broken, None, &LintOptions::default()),
            [
                Rule::UnpinnedBase,
                Rule::LatestTag,
                Rule::RootUser,
                Rule::ShellForm,
                Rule::NoHealthcheck,
                Rule::SecretValue,
                Rule::Dockerignore,
            ]
        );
    }

    #[test]
    fn arg_substituted_bases_are_resolved_from_the_build_args() {
        let text = format!("ARG BASE={PINNED}\n{}", clean_dockerfile("$BASE"));
        let none = LintOptions::default();
        assert_eq!(rules(&text, Some(IGNORE), &none), []);
        let unpinned = LintOptions {
            build_args: vec![("BASE".into(), "alpine:3.20".into())],
            ..Default::default()
        };
        assert_eq!(rules(&text, Some(IGNORE), &unpinned), [Rule::UnpinnedBase]);
        let no_default = clean_dockerfile("${BASE}").replace("FROM", "ARG BASE\nFROM");
        assert_eq!(
            rules(&no_default, Some(IGNORE), &none),
            [Rule::UnpinnedBase]
        );
        let pinned = LintOptions {
            build_args: vec![("BASE".into(), PINNED.into())],
            ..Default::default()
        };
        assert_eq!(rules(&no_default, Some(IGNORE), &pinned), []);
    }

    #[test]
    fn latest_by_name_or_by_omission() {
        let opts = LintOptions::default();
        let text = clean_dockerfile("alpine");
        assert_eq!(
            rules(&text, Some(IGNORE), &opts),
            [Rule::UnpinnedBase, Rule::LatestTag]
        );
        let text = clean_dockerfile(&format!(
            "alpine:latest@{}",
            PINNED.split('@').nth(1).unwrap()
        ));
        assert_eq!(rules(&text, Some(IGNORE), &opts), [Rule::LatestTag]);
        let text = clean_dockerfile("127.0.0.1:5000/app");
        assert!(rules(&text, Some(IGNORE), &opts).contains(&Rule::LatestTag));
        assert_eq!(
            split_reference("127.0.0.1:5000/app:1.2@sha256:ab"),
            ("127.0.0.1:5000/app", Some("1.2"), true)
        );
    }

    #[test]
    fn an_invalid_reference_is_named_as_such() {
        let digest = PINNED.split('@').nth(1).unwrap();
        let text = clean_dockerfile(&format!("Team/base@{digest}"));
        let findings = check(
            "Dockerfile",
            &text,
            ".dockerignore",
            Some(&DockerIgnore::parse(IGNORE).unwrap()),
            &LintOptions::default(),
        )
        .unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].rule, Rule::UnpinnedBase);
        assert!(
            findings[0]
                .message
                .contains("is not a valid image reference: the repository component `Team` has uppercase letters"),
            "{}",
            findings[0].message
        );
        assert!(findings[0].fix.contains("lowercase"), "{}", findings[0].fix);
    }

    #[test]
    fn stage_references_and_scratch_are_not_bases() {
        let text = format!(
            "FROM {PINNED} AS build\nRUN make\nFROM scratch AS out\nCOPY --from=build /a /a\nFROM build\nUSER 1000\nHEALTHCHECK CMD [\"/hc\"]\nCMD [\"/a\"]\n"
        );
        assert_eq!(rules(&text, Some(IGNORE), &LintOptions::default()), []);
    }

    #[test]
    fn the_final_stage_is_the_target() {
        let text = format!(
            "FROM {PINNED} AS build\nRUN make\nFROM {PINNED}\nUSER 1000\nHEALTHCHECK CMD [\"/hc\"]\nCMD [\"/a\"]\n"
        );
        let target = LintOptions {
            target: Some("build".into()),
            ..Default::default()
        };
        assert_eq!(
            rules(&text, Some(IGNORE), &target),
            [Rule::RootUser, Rule::NoHealthcheck]
        );
        let unknown = LintOptions {
            target: Some("nope".into()),
            ..Default::default()
        };
        let err = check("Dockerfile", &text, ".dockerignore", None, &unknown).unwrap_err();
        assert!(err.to_string().contains("stages: build"), "{err}");
    }

    #[test]
    fn root_user_and_user_inherited_from_a_stage() {
        let opts = LintOptions::default();
        let root = clean_dockerfile(PINNED).replace("USER 10001", "USER root:root");
        assert_eq!(rules(&root, Some(IGNORE), &opts), [Rule::RootUser]);
        let zero = clean_dockerfile(PINNED).replace("USER 10001", "USER 0");
        assert_eq!(rules(&zero, Some(IGNORE), &opts), [Rule::RootUser]);
        let inherited = format!(
            "FROM {PINNED} AS base\nUSER app\nFROM base\nHEALTHCHECK CMD [\"/hc\"]\nCMD [\"/a\"]\n"
        );
        assert_eq!(rules(&inherited, Some(IGNORE), &opts), []);
    }

    /// runc takes a user that `strconv.Atoi` reads as a number as a uid: `00`, `+0` and `-0`
    /// are uid 0. An empty user keeps the default, root. A root group alone is not root.
    #[test]
    fn numeric_zero_and_empty_users_are_root() {
        let opts = LintOptions::default();
        for user in [
            "0",
            "00",
            "+0",
            "-0",
            "0000:1001",
            "0:0",
            "root:1001",
            "root",
            ":1001",
            " 0 ",
        ] {
            let text = clean_dockerfile(PINNED).replace("USER 10001", &format!("USER {user}"));
            assert_eq!(
                rules(&text, Some(IGNORE), &opts),
                [Rule::RootUser],
                "USER {user}"
            );
        }
        for user in [
            "1001",
            "app",
            "10:0",
            "01",
            "+1",
            "0app",
            "root0",
            "ROOT",
            "1001:root",
            "10001:10001",
        ] {
            let text = clean_dockerfile(PINNED).replace("USER 10001", &format!("USER {user}"));
            assert_eq!(rules(&text, Some(IGNORE), &opts), [], "USER {user}");
        }
        let finding = check(
            "Dockerfile",
            &clean_dockerfile(PINNED).replace("USER 10001", "USER +0"),
            ".dockerignore",
            Some(&DockerIgnore::parse(IGNORE).unwrap()),
            &opts,
        )
        .unwrap();
        assert_eq!(finding[0].line, Some(2));
        assert!(
            finding[0]
                .message
                .contains("`USER +0` runs the app as root")
        );
    }

    /// `COPY --from` and `RUN --mount=from=` pull an image unless they name a stage: it is
    /// pinned like a base.
    #[test]
    fn images_copied_or_mounted_from_must_be_pinned() {
        let opts = LintOptions::default();
        let with = |line: &str| {
            format!(
                "FROM {PINNED} AS builder\nRUN make\nFROM {PINNED}\n{line}\nUSER 10001\nHEALTHCHECK CMD [\"/hc\"]\nCMD [\"/a\"]\n"
            )
        };
        let findings = |line: &str| {
            check(
                "Dockerfile",
                &with(line),
                ".dockerignore",
                Some(&DockerIgnore::parse(IGNORE).unwrap()),
                &opts,
            )
            .unwrap()
        };
        // Stages (by name in any case, or by index), scratch and pinned images are fine.
        for fine in [
            "COPY --from=builder /out /app",
            "COPY --from=BUILDER /out /app",
            "COPY --from=0 /out /app",
            "COPY --from=+1 /out /app",
            "COPY --from=scratch /out /app",
            "COPY --chown=1:1 --from=builder /out /app",
            "COPY --from=\"builder\" /out /app",
            "COPY /out /app",
            "COPY -- --from=alpine:3.20 /app",
            &format!("COPY --from={PINNED} /out /app"),
            "RUN --mount=type=cache,from=builder,target=/x make",
            "RUN --mount=type=cache,target=/root/.cache make",
            &format!("RUN --mount=type=bind,from={PINNED},target=/x make"),
        ] {
            assert_eq!(findings(fine), [], "{fine}");
        }
        let unpinned = findings("COPY --from=alpine:3.20 /bin/busybox /bin/");
        assert_eq!(unpinned.len(), 1, "{unpinned:?}");
        assert_eq!(
            unpinned[0].render(),
            "Dockerfile:4  unpinned-base  `COPY --from=alpine:3.20` (not the name of an earlier stage, so an image) is not pinned by digest: the image it takes files from can change under the same name  fix: pin it: alpine:3.20@sha256:<digest> (`skopeo inspect docker://alpine:3.20` prints the digest), or name a stage of this Dockerfile"
        );
        let rules_of = |line: &str| {
            let mut got: Vec<Rule> = findings(line).into_iter().map(|f| f.rule).collect();
            got.dedup();
            got
        };
        for (line, want) in [
            (
                "COPY --from=alpine /bin/busybox /bin/",
                &[Rule::UnpinnedBase, Rule::LatestTag][..],
            ),
            (
                "COPY --from=ghcr.io/org/tool:latest /tool /tool",
                &[Rule::UnpinnedBase, Rule::LatestTag],
            ),
            (
                "COPY --link --from=docker.io/library/alpine:3.20 / /",
                &[Rule::UnpinnedBase],
            ),
            ("COPY --from=$TOOL /tool /tool", &[Rule::UnpinnedBase]),
            (
                "RUN --mount=type=bind,from=alpine:3.20,target=/x make",
                &[Rule::UnpinnedBase],
            ),
            (
                "RUN --mount=type=cache,target=/c --mount=\"from=node:20,target=/n\" make",
                &[Rule::UnpinnedBase],
            ),
            // BuildKit takes a number in a mount's from= as an image name, not a stage index.
            (
                "RUN --mount=from=0,target=/x make",
                &[Rule::UnpinnedBase, Rule::LatestTag],
            ),
        ] {
            assert_eq!(rules_of(line), want, "{line}");
        }
        // The classic builder knows only the stages before this one: a later one is an image.
        let later = format!(
            "FROM {PINNED}\nCOPY --from=tools:1 /t /t\nUSER 10001\nHEALTHCHECK CMD [\"/hc\"]\nCMD [\"/a\"]\nFROM {PINNED} AS tools\n"
        );
        let opts_first = LintOptions {
            target: None,
            ..Default::default()
        };
        let got = check("Dockerfile", &later, ".dockerignore", None, &opts_first).unwrap();
        assert!(
            got.iter()
                .any(|f| f.rule == Rule::UnpinnedBase && f.line == Some(2)),
            "{got:?}"
        );
        let variable = findings("COPY --from=${TOOL} /tool /tool");
        assert!(
            variable[0].message.contains("uses a variable"),
            "{variable:?}"
        );
    }

    #[test]
    fn shell_form_with_its_fix() {
        let text = clean_dockerfile(PINNED).replace("CMD [\"/serve\"]", "CMD npm start --port 80");
        let findings = check(
            "Dockerfile",
            &text,
            ".dockerignore",
            Some(&DockerIgnore::parse(IGNORE).unwrap()),
            &LintOptions::default(),
        )
        .unwrap();
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rule, Rule::ShellForm);
        assert_eq!(findings[0].line, Some(4));
        assert_eq!(
            findings[0].fix,
            r#"use the exec form: CMD ["npm","start","--port","80"]"#
        );
        let piped = clean_dockerfile(PINNED).replace("CMD [\"/serve\"]", "ENTRYPOINT ./a && ./b");
        let findings = check(
            "Dockerfile",
            &piped,
            ".dockerignore",
            Some(&DockerIgnore::parse(IGNORE).unwrap()),
            &LintOptions::default(),
        )
        .unwrap();
        assert!(
            findings[0].fix.contains("ENTRYPOINT [\"/app/start\"]"),
            "{findings:?}"
        );
    }

    #[test]
    fn a_configured_probe_replaces_the_healthcheck() {
        let text = clean_dockerfile(PINNED).replace("HEALTHCHECK CMD [\"/hc\"]\n", "");
        assert_eq!(
            rules(&text, Some(IGNORE), &LintOptions::default()),
            [Rule::NoHealthcheck]
        );
        let probe = LintOptions {
            health_probe: true,
            ..Default::default()
        };
        assert_eq!(rules(&text, Some(IGNORE), &probe), []);
        let none = clean_dockerfile(PINNED).replace("CMD [\"/hc\"]", "NONE");
        assert_eq!(
            rules(&none, Some(IGNORE), &LintOptions::default()),
            [Rule::NoHealthcheck]
        );
    }

    #[test]
    fn secrets_are_found_but_never_repeated() {
        let opts = LintOptions::default();
        for line in [
            "ENV DB_PASSWORD=hunter2-value",
            "ARG NPM_TOKEN=hunter2-value",
            "ENV API_KEY hunter2-value",
            "ENV DATABASE_URL=postgres://app:hunter2-value@db/app",
            "ARG GH=ghp_hunter2valuehunter2valuehunter2value12",
        ] {
            let text =
                clean_dockerfile(PINNED).replace("USER 10001\n", &format!("{line}\nUSER 10001\n"));
            let findings = check(
                "Dockerfile",
                &text,
                ".dockerignore",
                Some(&DockerIgnore::parse(IGNORE).unwrap()),
                &opts,
            )
            .unwrap();
            assert_eq!(findings.len(), 1, "{line}: {findings:?}");
            assert_eq!(findings[0].rule, Rule::SecretValue);
            assert!(
                !findings[0].render().contains("hunter2"),
                "{}",
                findings[0].render()
            );
        }
        for line in [
            "ARG NPM_TOKEN",
            "ENV DB_PASSWORD=$DB_PASSWORD",
            "ENV DB_PASSWORD=${DB_PASSWORD:-}",
            "ENV PUBLIC_KEY_ID=abc",
            "ENV KEYBOARD=us PORT=8080",
            "ENV URL=https://example.com/path",
        ] {
            let text =
                clean_dockerfile(PINNED).replace("USER 10001\n", &format!("{line}\nUSER 10001\n"));
            assert_eq!(rules(&text, Some(IGNORE), &opts), [], "{line}");
        }
    }

    #[test]
    fn secret_looking_names() {
        for name in [
            "DB_PASSWORD",
            "npm_token",
            "CLIENT_SECRET",
            "API_KEY",
            "apikey",
            "AWS_SECRET_ACCESS_KEY",
            "SSH_PRIVATE_KEY",
            "PASS",
        ] {
            assert!(looks_secret_name(name), "{name}");
        }
        for name in [
            "VERSION",
            "BASE_IMAGE",
            "KEYBOARD",
            "PUBLIC_KEY",
            "GPG_KEY_ID",
            "PWD",
            "PASSENGER",
        ] {
            assert!(!looks_secret_name(name), "{name}");
        }
    }

    #[test]
    fn dockerignore_must_exclude_env_git_venv() {
        let opts = LintOptions::default();
        let text = clean_dockerfile(PINNED);
        assert_eq!(rules(&text, None, &opts), [Rule::Dockerignore]);
        assert_eq!(
            rules(&text, Some(".env\n.git\n"), &opts),
            [Rule::Dockerignore]
        );
        assert_eq!(rules(&text, Some(".*\n"), &opts), []);
        assert_eq!(rules(&text, Some("*\n!src\n"), &opts), []);
        assert_eq!(
            rules(&text, Some(".*\n!.git\n"), &opts),
            [Rule::Dockerignore]
        );
        let finding = check(
            "Dockerfile",
            &text,
            "ctx/.dockerignore",
            Some(&DockerIgnore::parse(".env\n").unwrap()),
            &opts,
        )
        .unwrap();
        assert_eq!(
            finding[0].render(),
            "ctx/.dockerignore  dockerignore  does not exclude .git, .venv: secrets and history would be sent to the engine and could land in the image  fix: add these lines to .dockerignore: .git .venv"
        );
    }

    /// tests/fixtures/lint/<rule-id>/ makes exactly that rule fire; `clean/` makes none fire.
    #[test]
    fn each_fixture_fires_its_rule_and_only_it() {
        use clap::ValueEnum;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint");
        let mut seen = Vec::new();
        for rule in Rule::value_variants() {
            let dir = root.join(rule.id());
            let report = lint(&dir, &dir.join("Dockerfile"), &LintOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let got: Vec<Rule> = report.findings.iter().map(|f| f.rule).collect();
            assert!(
                !got.is_empty() && got.iter().all(|r| r == rule),
                "{}: {}",
                rule.id(),
                report.render_text()
            );
            // Waived on purpose, nothing remains.
            let allowed = LintOptions {
                allow: vec![*rule],
                ..Default::default()
            };
            let waived = lint(&dir, &dir.join("Dockerfile"), &allowed).unwrap();
            assert!(waived.findings.is_empty() && waived.waived.len() == got.len());
            seen.push(rule.id());
        }
        let clean = root.join("clean");
        let report = lint(&clean, &clean.join("Dockerfile"), &LintOptions::default()).unwrap();
        assert!(report.findings.is_empty(), "{}", report.render_text());
        assert_eq!(seen.len(), 7);
    }

    #[test]
    fn the_fixture_app_is_clean_given_its_pinned_base() {
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/app");
        let given = LintOptions {
            build_args: vec![("BASE_IMAGE".into(), PINNED.into())],
            ..Default::default()
        };
        let report = lint(&app, &app.join("Dockerfile"), &given).unwrap();
        assert!(report.findings.is_empty(), "{}", report.render_text());
        // Without the build arg, its base cannot be resolved: that is a finding, not a guess.
        let report = lint(&app, &app.join("Dockerfile"), &LintOptions::default()).unwrap();
        let rendered = report.render_text();
        assert_eq!(report.findings.len(), 3, "{rendered}");
        assert!(rendered.contains("Dockerfile:11  unpinned-base  `FROM ${BASE_IMAGE}` cannot be resolved: BASE_IMAGE has no value"), "{rendered}");
    }
}
