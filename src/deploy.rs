//! `slipway deploy`: the whole CI step. Inputs are checked before the engine is touched; the
//! image is built and proven (or given); the rollout runs with the public smoke test and its
//! watch window as the post-switch check, so a wrong version served puts the previous release
//! back. Every path ends with outputs, a summary and (with --report) a JSON report.

use crate::revision::Revision;
use crate::rollout::StepName;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ci::Ci;
use crate::cli::{DeployArgs, GlobalArgs, SmokeArgs, SmokeCmd};
use crate::exit::{Exit, Failure};
use crate::probe::Expect;
use crate::reference::PinnedImage;
use crate::rollout::execute::AfterSwitch;
use crate::rollout::{self, ContainerRef, Outcome, Plan, Report};
use crate::service::{self, Choice};
use crate::smoke::{self, Smoke, SmokeError};

/// The smoke test from flags, expecting `version`.
pub fn smoke_from_args(args: &SmokeArgs, version: &str) -> Result<Smoke, Failure> {
    let usage = |what: String, hint: &str| Failure::usage(anyhow::anyhow!(what)).with_hint(hint);
    if args.urls.is_empty() {
        return Err(usage(
            "no public URL to check".into(),
            "pass --url https://app.example.com/health (or SLIPWAY_URL)",
        ));
    }
    for url in &args.urls {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            usage(
                format!("--url `{url}` is not a URL: {e}"),
                "e.g. --url https://app.example.com/health",
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(usage(
                format!("--url `{url}` is not http(s)"),
                "e.g. --url https://app.example.com/health",
            ));
        }
    }
    let resolve = args
        .resolve
        .iter()
        .map(|r| smoke::parse_resolve(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            usage(
                format!("--resolve: {e}"),
                "--resolve app.example.com:443:127.0.0.1",
            )
        })?;
    let headers = args
        .headers
        .iter()
        .map(|h| smoke::parse_header(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(format!("--header: {e}"), "--header 'X-Smoke: 1'"))?;
    let header = args
        .expect_header
        .as_deref()
        .map(smoke::parse_header)
        .transpose()
        .map_err(|e| {
            usage(
                format!("--expect-header: {e}"),
                "--expect-header 'X-Version: abc123'",
            )
        })?;
    let (json, body_regex) = match &args.expect_body_regex {
        Some(re) => {
            crate::probe::regex_capture(re, "").map_err(|e| {
                usage(
                    format!("--expect-body-regex: {e}"),
                    "e.g. --expect-body-regex 'version: (\\S+)'",
                )
            })?;
            (None, Some((re.clone(), version.to_string())))
        }
        None if args.expect_json_field.is_empty() => (None, None),
        None => (
            Some((args.expect_json_field.clone(), version.to_string())),
            None,
        ),
    };
    Ok(Smoke {
        urls: args.urls.clone(),
        expect: Expect {
            status: args.expect_status,
            json,
            body_contains: None,
            body_regex,
            header,
        },
        headers,
        resolve,
        cacert: args.cacert.clone(),
        interval: args.smoke_interval,
        deadline: args.smoke_deadline,
        timeout: args.smoke_timeout,
    })
}

fn smoke_failure(e: SmokeError) -> Failure {
    match e {
        SmokeError::Interrupted => Failure::new(Exit::Interrupted, e),
        SmokeError::Mismatch { .. } => Failure::new(Exit::RolledBack, e).with_hint(
            "the URL serves something else: check DNS/--resolve, the Caddy site, and the version the app reports",
        ),
        e => Failure::usage(e),
    }
}

/// `slipway smoke`: exit 0 when every URL serves the version, 1 when not.
pub async fn smoke_command(cmd: &SmokeCmd, cancel: &CancellationToken) -> Result<Exit, Failure> {
    let version = cmd
        .smoke
        .expect_version
        .clone()
        .or_else(|| std::env::var("GITHUB_SHA").ok().filter(|v| !v.is_empty()))
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!("no version to expect"))
                .with_hint("pass --expect-version (it defaults to GITHUB_SHA in CI)")
        })?;
    let smoke = smoke_from_args(&cmd.smoke, &version)?;
    let seen = smoke.pass(cancel).await.map_err(smoke_failure)?;
    #[derive(Serialize)]
    struct Passed<'a> {
        url: &'a str,
        status: Option<u16>,
        version: &'a str,
    }
    let passed: Vec<Passed> = smoke
        .urls
        .iter()
        .zip(&seen)
        .map(|(url, s)| Passed {
            url,
            status: s.status,
            version: &version,
        })
        .collect();
    let text = passed
        .iter()
        .map(|p| format!("ok  {} serves {}\n", p.url, p.version))
        .collect();
    service::print(cmd.format, &passed, text)?;
    Ok(Exit::Success)
}

/// The post-switch check: the public URL serves the new version, and keeps doing so for the
/// watch window.
struct PublicCheck {
    smoke: Smoke,
    window: Duration,
    args: SmokeArgs,
}

impl AfterSwitch for PublicCheck {
    async fn check(&self, cancel: &CancellationToken) -> Result<String, String> {
        self.smoke.pass(cancel).await.map_err(|e| e.to_string())?;
        let rounds = self
            .smoke
            .hold(self.window, cancel)
            .await
            .map_err(|e| format!("inside the watch window: {e}"))?;
        Ok(format!(
            "{} serve(s) the new version; still so after {} ({rounds} more checks)",
            self.smoke.urls.join(", "),
            humantime::format_duration(self.window)
        ))
    }

    async fn check_restored(&self, previous: Option<&ContainerRef>) -> Result<String, String> {
        let Some(previous) = previous else {
            return Ok("there was no previous release to serve".into());
        };
        let smoke =
            smoke_from_args(&self.args, &previous.revision).map_err(|e| e.error.to_string())?;
        smoke
            .pass(&CancellationToken::new())
            .await
            .map(|_| format!("the public URL serves {} again", previous.revision))
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Serialize)]
struct DeployPlan<'a> {
    build: Option<String>,
    image: String,
    revision: &'a str,
    rollout: &'a Plan,
    reload_image: String,
    lock: String,
    smoke: &'a Smoke,
    watch: String,
    on_failure: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DeployReport<'a> {
    outcome: Outcome,
    message: &'a str,
    service: &'a str,
    image: &'a str,
    digest: String,
    previous_digest: String,
    revision: &'a str,
    url: String,
    started_unix_ms: u128,
    wall_ms: u64,
    steps: Vec<StepAt<'a>>,
    evidence: &'a rollout::execute::Evidence,
}

#[derive(Debug, Serialize)]
struct StepAt<'a> {
    name: &'a str,
    start_unix_ms: u128,
    duration_ms: u64,
    ok: bool,
    detail: &'a str,
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Values of the spec's env that look like secrets, and anything long, are masked in CI logs.
fn looks_secret(name: &str, value: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "TOKEN",
        "SECRET",
        "KEY",
        "CREDENTIAL",
        "DSN",
        "DATABASE_URL",
        "AUTH",
    ]
    .iter()
    .any(|w| upper.contains(w))
        && value.len() >= 4
        || value.len() >= 16
}

/// A digest that stands for "whatever the build produces" in a dry run's plan.
const PENDING_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Where the image comes from.
enum Source {
    Given(PinnedImage),
    Build(Box<(crate::build::PreparedBuild, crate::registry::Registry)>),
}

pub async fn deploy(
    global: &GlobalArgs,
    args: &DeployArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let result = deploy_inner(global, args, cancel).await;
    if let Err(f) = &result
        && !args.service.dry_run
    {
        record_early_failure(args, f);
    }
    result
}

/// A deploy that ended before the rollout report existed still tells CI how it ended.
fn record_early_failure(args: &DeployArgs, f: &Failure) {
    let outcome = match f.exit {
        Exit::Usage => "usage-error",
        Exit::Unavailable => "unavailable",
        Exit::Interrupted => "interrupted",
        Exit::RolledBack => "rolled-back",
        Exit::RollbackFailed => "rollback-failed",
        Exit::Success => "deployed",
        Exit::HeldBack => "held-back",
    };
    let ci = Ci::from_env();
    let message = f.error.to_string();
    let _ = ci.outputs(&[
        ("outcome", outcome.to_string()),
        ("url", args.smoke.urls.first().cloned().unwrap_or_default()),
    ]);
    let _ = ci.summary(&format!(
        "### ❌ slipway deploy: {outcome}\n\n{message}\n\nNothing was changed on the host.\n\n"
    ));
    if let Some(path) = &args.report {
        let json = serde_json::json!({ "outcome": outcome, "message": message, "steps": [] });
        let _ = std::fs::write(path, format!("{json:#}\n"));
    }
}

async fn deploy_inner(
    global: &GlobalArgs,
    args: &DeployArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let ci = Ci::from_env();
    let started = SystemTime::now();
    ci.group("slipway: check inputs");
    let checked = check_inputs(global, args, &ci).await;
    ci.end_group();
    let (p, source) = checked?;

    let given_revision = given_revision(args)?;
    if args.service.dry_run {
        return dry_run(args, &p, &source, given_revision).await;
    }

    // The image: built, pushed and proven, or given.
    let mut before: Vec<PreStep> = Vec::new();
    let (image, revision) = match source {
        Source::Given(image) => (image, given_revision),
        Source::Build(b) => {
            let (prepared, registry) = *b;
            ci.group("slipway: build, push, prove");
            let t = SystemTime::now();
            let pushed = prepared.build_and_push(&p.engine, &registry, cancel).await;
            ci.end_group();
            let pushed = match pushed {
                Ok(pushed) => pushed,
                Err(e) => {
                    before.push(PreStep::new(StepName::Build, t, false, e.to_string()));
                    return Err(crate::commands::build_failure(e));
                }
            };
            before.push(PreStep::new(
                StepName::Build,
                t,
                true,
                format!(
                    "{} ({} steps, {} cached, {} bytes of context); the registry holds {}",
                    pushed.image,
                    pushed.steps,
                    pushed.cached_steps,
                    pushed.context.bytes,
                    pushed.digest
                ),
            ));
            let revision = service::revision_arg(&pushed.revision, "the build's revision")?;
            (pushed.image, Some(revision))
        }
    };
    let choice = Choice::Image {
        image: image.to_string(),
        revision: revision.clone(),
    };

    // The expected version: given, the revision, or the image's own revision label.
    let expected = match args
        .smoke
        .expect_version
        .clone()
        .or(revision.as_ref().map(ToString::to_string))
    {
        Some(v) => v,
        None => revision_label(&p, &image).await?,
    };
    tracing::info!("deploying {image}; the public URL must serve {expected}");

    ci.group("slipway: rollout and smoke test");
    let hook = PublicCheck {
        smoke: smoke_from_args(&args.smoke, &expected)?,
        window: args.watch,
        args: args.smoke.clone(),
    };
    let report = service::execute_locked(&p, &args.service, &choice, &hook, cancel).await;
    ci.end_group();
    let report = report?;
    finish(&ci, args, &p.spec.name, &report, started, &before)
}

/// Everything checked before anything changes; usage errors exit 2 here.
async fn check_inputs(
    global: &GlobalArgs,
    args: &DeployArgs,
    ci: &Ci,
) -> Result<(service::Prepared, Source), Failure> {
    let p = service::prepare(global, &args.service)?;
    for (name, value) in &p.values {
        if looks_secret(name, value) {
            ci.mask(value);
        }
    }
    if let Some(name) = &args.build.registry.registry_password_env
        && let Ok(value) = std::env::var(name)
    {
        ci.mask(&value);
    }
    // Checked now so a bad flag fails before anything runs; the version comes later.
    smoke_from_args(&args.smoke, "-")?;
    if let Some(path) = &args.report
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--report {}: the directory {} does not exist",
            path.display(),
            dir.display()
        ))
        .with_hint("create it first, or write the report elsewhere"));
    }
    let source = match &args.image {
        Some(image) => Source::Given(PinnedImage::parse(image).map_err(|e| {
            let hint = e.hint();
            Failure::usage(anyhow::Error::new(e).context("--image must be pinned")).with_hint(hint)
        })?),
        None => Source::Build(Box::new(
            crate::commands::prepare_build(&args.build, Some(p.spec.health.http.is_some())).await?,
        )),
    };
    service::reachable(&p.engine).await?;
    Ok((p, source))
}

/// The revision given for the job: --revision (SLIPWAY_REVISION), else GITHUB_SHA; checked.
fn given_revision(args: &DeployArgs) -> Result<Option<Revision>, Failure> {
    let flag = args
        .build
        .revision
        .as_deref()
        .map(|r| (r.to_string(), "--revision (SLIPWAY_REVISION)"));
    let env = || {
        std::env::var("GITHUB_SHA")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|r| (r, "GITHUB_SHA"))
    };
    flag.or_else(env)
        .map(|(text, source)| service::revision_arg(&text, source))
        .transpose()
}

async fn revision_label(p: &service::Prepared, image: &PinnedImage) -> Result<String, Failure> {
    p.engine
        .ensure_image(&image.to_string())
        .await
        .map_err(|e| Failure::new(Exit::Unavailable, e))?;
    p.engine
        .inspect_image(&image.to_string())
        .await
        .map_err(|e| Failure::new(Exit::Unavailable, e))?
        .and_then(|i| i.labels.get(rollout::REVISION_LABEL).cloned())
        .map(|label| {
            service::revision_arg(&label, "the image's org.opencontainers.image.revision label")
                .map(|r| r.to_string())
        })
        .transpose()?
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{image} has no org.opencontainers.image.revision label, so there is no version to expect"
            ))
            .with_hint("pass --expect-version (or --revision); in CI it defaults to GITHUB_SHA")
        })
}

async fn dry_run(
    args: &DeployArgs,
    p: &service::Prepared,
    source: &Source,
    revision: Option<Revision>,
) -> Result<Exit, Failure> {
    let (image, revision, build) = match source {
        Source::Given(image) => (image.clone(), revision, None),
        Source::Build(b) => {
            let req = b.0.request();
            let repo = format!("{}/{}", b.1.name(), req.repository);
            let image = PinnedImage::parse(&format!("{repo}@{PENDING_DIGEST}"))
                .expect("a placeholder digest is well formed");
            let tags: Vec<String> = req.tags().iter().map(|t| format!("{repo}:{t}")).collect();
            (
                image,
                Some(service::revision_arg(
                    &req.revision,
                    "the build's revision",
                )?),
                Some(format!(
                    "lint and build {} ({}), push {}, prove the registry's digest",
                    req.context.display(),
                    req.dockerfile.display(),
                    tags.join(", ")
                )),
            )
        }
    };
    let choice = Choice::Image {
        image: image.to_string(),
        revision,
    };
    let plan = service::plan_only(p, &choice).await?;
    let version = args
        .smoke
        .expect_version
        .clone()
        .unwrap_or_else(|| plan.revision.to_string());
    let smoke = smoke_from_args(&args.smoke, &version)?;
    let dp = DeployPlan {
        build,
        image: if image.digest() == PENDING_DIGEST {
            format!("{} (digest known after the build)", image.to_string().replace(&format!("@{PENDING_DIGEST}"), ""))
        } else {
            image.to_string()
        },
        revision: plan.revision.as_str(),
        rollout: &plan,
        reload_image: p.host.image.to_string(),
        lock: format!(
            "slipway-lock-{} (wait {}, expires {} after its last heartbeat)",
            p.spec.name,
            humantime::format_duration(args.service.lock_wait),
            humantime::format_duration(args.service.lock_ttl)
        ),
        smoke: &smoke,
        watch: humantime::format_duration(args.watch).to_string(),
        on_failure: vec![
            "before the switch (unhealthy, wrong digest, exited, reload rejected): remove the new container; the old one never stopped serving".into(),
            "after the switch (smoke test or watch window fails): restore the previous snippet, reload Caddy, check the previous version is served again, remove the new container".into(),
            "if that restore fails: exit 3 with the state of the host and what to run".into(),
        ],
    };
    let text =
        render_deploy_plan(&dp).replace(&format!("@{PENDING_DIGEST}"), "@<built by this deploy>");
    service::print(args.service.format, &dp, text)?;
    Ok(Exit::Success)
}

/// A step before the rollout (the build), for the report.
struct PreStep {
    name: StepName,
    at: SystemTime,
    duration_ms: u64,
    ok: bool,
    detail: String,
}

impl PreStep {
    fn new(name: StepName, at: SystemTime, ok: bool, detail: String) -> PreStep {
        PreStep {
            name,
            at,
            duration_ms: at.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0),
            ok,
            detail,
        }
    }
}

/// Outputs, summary, report file, the human result; the exit code.
fn finish(
    ci: &Ci,
    args: &DeployArgs,
    service: &str,
    report: &Report,
    started: SystemTime,
    before: &[PreStep],
) -> Result<Exit, Failure> {
    let digest = report
        .image
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let previous_digest = report
        .previous
        .as_ref()
        .map(|p| p.digest.clone())
        .unwrap_or_default();
    let url = args.smoke.urls.first().cloned().unwrap_or_default();
    let outcome = serde_json::to_value(report.outcome)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let io = |e: std::io::Error| Failure::new(Exit::Unavailable, e);
    ci.outputs(&[
        ("image", report.image.clone()),
        ("digest", digest.clone()),
        ("previous-digest", previous_digest.clone()),
        ("url", url.clone()),
        ("outcome", outcome.clone()),
    ])
    .map_err(io)?;
    ci.summary(&summary_markdown(service, report, &outcome, &url, before))
        .map_err(io)?;
    let t0 = unix_ms(started);
    let deploy_report = DeployReport {
        outcome: report.outcome,
        message: &report.message,
        service,
        image: &report.image,
        digest,
        previous_digest,
        revision: report.revision.as_str(),
        url,
        started_unix_ms: t0,
        wall_ms: SystemTime::now()
            .duration_since(started)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        steps: before
            .iter()
            .map(|s| StepAt {
                name: s.name.as_str(),
                start_unix_ms: unix_ms(s.at),
                duration_ms: s.duration_ms,
                ok: s.ok,
                detail: &s.detail,
            })
            .chain(report.steps.iter().map(|s| StepAt {
                name: s.name.as_str(),
                start_unix_ms: report.started_unix_ms + s.start_ms as u128,
                duration_ms: s.duration_ms,
                ok: s.ok,
                detail: &s.detail,
            }))
            .collect(),
        evidence: &report.evidence,
    };
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&deploy_report).expect("plain data serializes");
        // The deploy has happened by now: a report that cannot be written does not change
        // how it ended.
        if let Err(e) = std::fs::write(path, json + "\n") {
            tracing::error!("could not write the report {}: {e}", path.display());
        }
    }
    service::print(
        args.service.format,
        &deploy_report,
        service::render_report(report),
    )?;
    let exit = report.outcome.exit();
    if exit != Exit::Success {
        eprintln!("error: {}", report.message);
    }
    Ok(exit)
}

fn summary_markdown(
    service: &str,
    r: &Report,
    outcome: &str,
    url: &str,
    before: &[PreStep],
) -> String {
    let icon = match r.outcome {
        Outcome::Deployed | Outcome::Unchanged => "✅",
        Outcome::RolledBack => "↩️",
        _ => "❌",
    };
    let mut s = format!(
        "### {icon} slipway deploy `{service}`: {outcome}\n\n{}\n\n",
        r.message
    );
    s.push_str("| | |\n|---|---|\n");
    let _ = writeln!(s, "| image | `{}` |", r.image);
    let _ = writeln!(s, "| revision | `{}` |", r.revision);
    let _ = writeln!(
        s,
        "| previous | {} |",
        r.previous.as_ref().map_or("none".into(), |p| format!(
            "`{}` ({})",
            p.digest, p.revision
        ))
    );
    let _ = writeln!(s, "| url | {url} |");
    s.push_str("\n| step | ok | ms | detail |\n|---|---|---|---|\n");
    for st in before {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            st.name,
            if st.ok { "✓" } else { "✗" },
            st.duration_ms,
            st.detail.replace('|', "\\|")
        );
    }
    for st in &r.steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            st.name,
            if st.ok { "✓" } else { "✗" },
            st.duration_ms,
            st.detail.replace('|', "\\|").replace('\n', " ")
        );
    }
    s.push('\n');
    s
}

fn render_deploy_plan(dp: &DeployPlan) -> String {
    let mut s = String::new();
    if let Some(build) = &dp.build {
        let _ = writeln!(s, "build: {build}");
    }
    s.push_str(&service::render_plan(dp.rollout));
    let _ = writeln!(s, "  reload image: {}", dp.reload_image);
    let _ = writeln!(s, "  lock: {}", dp.lock);
    for url in &dp.smoke.urls {
        let mut what = vec![format!("status {}", dp.smoke.expect.status)];
        if let Some((f, v)) = &dp.smoke.expect.json {
            what.push(format!("{f} == {v}"));
        }
        if let Some((re, v)) = &dp.smoke.expect.body_regex {
            what.push(format!("/{re}/ == {v}"));
        }
        if let Some((h, v)) = &dp.smoke.expect.header {
            what.push(format!("header {h} == {v}"));
        }
        let _ = writeln!(
            s,
            "  smoke: GET {url} -> {} (retry every {} for {}), then watch {}",
            what.join(", "),
            humantime::format_duration(dp.smoke.interval),
            humantime::format_duration(dp.smoke.deadline),
            dp.watch
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name_or_length() {
        assert!(looks_secret("DB_PASSWORD", "hunter2"));
        assert!(looks_secret("API_TOKEN", "abcd"));
        assert!(!looks_secret("APP_HEALTH", "ok"));
        assert!(!looks_secret("API_KEY", "x"));
        assert!(looks_secret("ANYTHING", "a-long-value-0123456789"));
    }
}
