//! `slipway deploy`: the whole CI step. Inputs are checked before the engine is touched; the
//! image is built and proven (or given); the rollout runs with the public smoke test and its
//! watch window as the post-switch check, so a wrong version served puts the previous release
//! back. Every path ends with outputs, a summary and (with --report) a JSON report.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ci::Ci;
use crate::cli::{DeployArgs, GlobalArgs, SmokeArgs, SmokeCmd};
use crate::exit::{Exit, Failure};
use crate::image::lint;
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::output;
use crate::probe::Expect;
use crate::rollout::execute::AfterSwitch;
use crate::rollout::{self, ContainerRef, Outcome, Plan, Report, StepName};
use crate::rollout::Choice;
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
    output::print(cmd.format, &passed, |passed| {
        passed
            .iter()
            .map(|p| format!("ok  {} serves {}\n", p.url, p.version))
            .collect()
    })?;
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

/// What `slipway plan` shows: one value, printed as text (`render_deploy_plan`) or as JSON.
#[derive(Debug, Serialize)]
struct DeployPlan {
    /// Where the image comes from, tagged `image_source`: given, or built by this deploy.
    #[serde(flatten)]
    image: DeployImage,
    revision: String,
    #[serde(serialize_with = "stand_in_shown")]
    rollout: Plan,
    reload_image: String,
    lock: String,
    smoke: Smoke,
    watch: String,
    on_failure: Vec<String>,
}

/// Where the deployed image comes from.
#[derive(Debug, Serialize)]
#[serde(tag = "image_source", rename_all = "kebab-case")]
enum DeployImage {
    /// `--image`: built elsewhere, pinned by digest.
    Given {
        #[serde(serialize_with = "as_text")]
        image: PinnedImage,
    },
    /// Linted, built, pushed and proven by this deploy: the digest is known after the push.
    Built {
        /// `REGISTRY/REPOSITORY`.
        repository: String,
        build: BuildSteps,
    },
}

/// What the deploy's build step will do.
#[derive(Debug, Serialize)]
struct BuildSteps {
    context: PathBuf,
    dockerfile: PathBuf,
    /// Every reference pushed, `REGISTRY/REPOSITORY:TAG`.
    tags: Vec<String>,
}

/// How a plan names an image that this deploy builds.
const BUILT: &str = "<built by this deploy>";

/// The digest the rollout planner is given for an image this deploy builds: the planner needs
/// a pinned target. It never reaches the plan's output (see `stand_in_shown`).
const PENDING_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

impl DeployImage {
    /// How the plan names the image: its pinned reference, or `REPOSITORY@<built by this deploy>`.
    fn reference(&self) -> String {
        match self {
            DeployImage::Given { image } => image.to_string(),
            DeployImage::Built { repository, .. } => format!("{repository}@{BUILT}"),
        }
    }

    /// The target the rollout planner is given.
    fn rollout_target(&self) -> PinnedImage {
        match self {
            DeployImage::Given { image } => image.clone(),
            DeployImage::Built { repository, .. } => {
                PinnedImage::parse(&format!("{repository}@{PENDING_DIGEST}"))
                    .expect("a repository checked by the build's request, with a sha256 digest")
            }
        }
    }
}

fn as_text<S: serde::Serializer>(image: &PinnedImage, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&image.to_string())
}

/// The rollout's plan as data; planned for an image this deploy builds, every value that
/// carries the stand-in digest says `<built by this deploy>` instead.
fn stand_in_shown<S: serde::Serializer>(plan: &Plan, s: S) -> Result<S::Ok, S::Error> {
    if plan.target.image.digest() != PENDING_DIGEST {
        return plan.serialize(s);
    }
    fn show(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) if text.contains(PENDING_DIGEST) => {
                *text = text.replace(PENDING_DIGEST, BUILT);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(show),
            serde_json::Value::Object(map) => map.values_mut().for_each(show),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(plan).map_err(serde::ser::Error::custom)?;
    show(&mut value);
    value.serialize(s)
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

/// Values of the spec's env masked in CI logs: under a secret-looking name (the lint's rule,
/// `lint::looks_secret_name`), or anything long whatever its name.
fn looks_secret(name: &str, value: &str) -> bool {
    lint::looks_secret_name(name) && value.len() >= 4 || value.len() >= 16
}

/// Where the image comes from.
enum Source {
    Given(PinnedImage),
    Build(
        Box<(
            crate::image::build::PreparedBuild,
            crate::image::registry::Registry,
        )>,
    ),
}

pub async fn deploy(
    global: &GlobalArgs,
    args: &DeployArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    // The steps before the rollout (the build), reported on every path, a failed one included.
    let mut before: Vec<PreStep> = Vec::new();
    let result = deploy_inner(global, args, cancel, &mut before).await;
    if let Err(f) = &result
        && !args.service.dry_run
    {
        record_early_failure(&Ci::from_env(), args, f, &before);
    }
    result
}

/// A deploy that ended before the rollout report existed still tells CI how it ended, and
/// which steps ran (a failed build among them).
fn record_early_failure(ci: &Ci, args: &DeployArgs, f: &Failure, before: &[PreStep]) {
    let outcome = match f.exit {
        Exit::Usage => "usage-error",
        Exit::Unavailable => "unavailable",
        Exit::Interrupted => "interrupted",
        Exit::RolledBack => "rolled-back",
        Exit::RollbackFailed => "rollback-failed",
        Exit::Success => "deployed",
        Exit::HeldBack => "held-back",
    };
    let message = f.error.to_string();
    let _ = ci.outputs(&[
        ("outcome", outcome.to_string()),
        ("url", args.smoke.urls.first().cloned().unwrap_or_default()),
    ]);
    let mut summary = format!(
        "### ❌ slipway deploy: {outcome}\n\n{message}\n\nNothing was changed on the host.\n\n"
    );
    if !before.is_empty() {
        summary.push_str(&steps_markdown(&step_rows(before, None)));
        summary.push('\n');
    }
    let _ = ci.summary(&summary);
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "outcome": outcome,
            "message": message,
            "steps": step_rows(before, None),
        });
        let _ = std::fs::write(path, format!("{json:#}\n"));
    }
}

async fn deploy_inner(
    global: &GlobalArgs,
    args: &DeployArgs,
    cancel: &CancellationToken,
    before: &mut Vec<PreStep>,
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
    let (image, revision) = match source {
        Source::Given(image) => (image, given_revision),
        Source::Build(b) => build_step(&ci, &p, *b, cancel, before).await?,
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
    let report = rollout::execute_locked(&p, &args.service, &choice, &hook, cancel).await;
    ci.end_group();
    let report = report?;
    finish(&ci, args, &p.spec.name, &report, started, before)
}

/// Builds, pushes and proves the image; the step, failed or not, goes into `before`.
async fn build_step(
    ci: &Ci,
    p: &rollout::Prepared,
    (prepared, registry): (
        crate::image::build::PreparedBuild,
        crate::image::registry::Registry,
    ),
    cancel: &CancellationToken,
    before: &mut Vec<PreStep>,
) -> Result<(PinnedImage, Option<Revision>), Failure> {
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
            pushed.image, pushed.steps, pushed.cached_steps, pushed.context.bytes, pushed.digest
        ),
    ));
    let revision = rollout::revision_arg(&pushed.revision, "the build's revision")?;
    Ok((pushed.image, Some(revision)))
}

/// Everything checked before anything changes; usage errors exit 2 here.
async fn check_inputs(
    global: &GlobalArgs,
    args: &DeployArgs,
    ci: &Ci,
) -> Result<(rollout::Prepared, Source), Failure> {
    let p = rollout::prepare(global, &args.service)?;
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
    rollout::reachable(&p.engine).await?;
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
        .map(|(text, source)| rollout::revision_arg(&text, source))
        .transpose()
}

async fn revision_label(p: &rollout::Prepared, image: &PinnedImage) -> Result<String, Failure> {
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
            rollout::revision_arg(&label, "the image's org.opencontainers.image.revision label")
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
    p: &rollout::Prepared,
    source: &Source,
    revision: Option<Revision>,
) -> Result<Exit, Failure> {
    let (image, revision) = match source {
        Source::Given(image) => (
            DeployImage::Given {
                image: image.clone(),
            },
            revision,
        ),
        Source::Build(b) => {
            let (prepared, registry) = &**b;
            let req = prepared.request();
            let repository = format!("{}/{}", registry.name(), req.repository);
            let tags = req
                .tags()
                .iter()
                .map(|t| format!("{repository}:{t}"))
                .collect();
            let build = BuildSteps {
                context: req.context.clone(),
                dockerfile: req.dockerfile.clone(),
                tags,
            };
            let revision = rollout::revision_arg(&req.revision, "the build's revision")?;
            (DeployImage::Built { repository, build }, Some(revision))
        }
    };
    let choice = Choice::Image {
        image: image.rollout_target().to_string(),
        revision,
    };
    let plan = rollout::plan_only(p, &choice).await?;
    let version = args
        .smoke
        .expect_version
        .clone()
        .unwrap_or_else(|| plan.revision.to_string());
    let smoke = smoke_from_args(&args.smoke, &version)?;
    let dp = DeployPlan {
        image,
        revision: plan.revision.to_string(),
        rollout: plan,
        reload_image: p.host.image.to_string(),
        lock: format!(
            "slipway-lock-{} (wait {}, expires {} after its last heartbeat)",
            p.spec.name,
            humantime::format_duration(args.service.lock_wait),
            humantime::format_duration(args.service.lock_ttl)
        ),
        smoke,
        watch: humantime::format_duration(args.watch).to_string(),
        on_failure: vec![
            "before the switch (unhealthy, wrong digest, exited, reload rejected): remove the new container; the old one never stopped serving".into(),
            "after the switch (smoke test or watch window fails): restore the previous snippet, reload Caddy, check the previous version is served again, remove the new container".into(),
            "if that restore fails: exit 3 with the state of the host and what to run".into(),
        ],
    };
    output::print(args.service.format, &dp, render_deploy_plan)?;
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

/// Every step, those before the rollout first, as the report and the summary show them.
fn step_rows<'a>(before: &'a [PreStep], report: Option<&'a Report>) -> Vec<StepAt<'a>> {
    let pre = before.iter().map(|s| StepAt {
        name: s.name.as_str(),
        start_unix_ms: unix_ms(s.at),
        duration_ms: s.duration_ms,
        ok: s.ok,
        detail: &s.detail,
    });
    let rollout = report.into_iter().flat_map(|r| {
        r.steps.iter().map(|s| StepAt {
            name: s.name.as_str(),
            start_unix_ms: r.started_unix_ms + s.start_ms as u128,
            duration_ms: s.duration_ms,
            ok: s.ok,
            detail: &s.detail,
        })
    });
    pre.chain(rollout).collect()
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
    let outcome = output::outcome_text(report.outcome);
    let io = |e: std::io::Error| Failure::new(Exit::Unavailable, e);
    ci.outputs(&[
        ("image", report.image.clone()),
        ("digest", digest.clone()),
        ("previous-digest", previous_digest.clone()),
        ("url", url.clone()),
        ("outcome", outcome.to_string()),
    ])
    .map_err(io)?;
    let steps = step_rows(before, Some(report));
    ci.summary(&summary_markdown(service, report, outcome, &url, &steps))
        .map_err(io)?;
    let deploy_report = DeployReport {
        outcome: report.outcome,
        message: &report.message,
        service,
        image: &report.image,
        digest,
        previous_digest,
        revision: report.revision.as_str(),
        url,
        started_unix_ms: unix_ms(started),
        wall_ms: SystemTime::now()
            .duration_since(started)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        steps,
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
    output::print(args.service.format, &deploy_report, |_| {
        rollout::render_report(report)
    })?;
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
    steps: &[StepAt],
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
    s.push('\n');
    s.push_str(&steps_markdown(steps));
    s.push('\n');
    s
}

/// The steps as a Markdown table.
fn steps_markdown(steps: &[StepAt]) -> String {
    let mut s = String::from("| step | ok | ms | detail |\n|---|---|---|---|\n");
    for st in steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            st.name,
            if st.ok { "✓" } else { "✗" },
            st.duration_ms,
            st.detail.replace('|', "\\|").replace('\n', " ")
        );
    }
    s
}

fn render_deploy_plan(dp: &DeployPlan) -> String {
    let mut s = String::new();
    if let DeployImage::Built { build, .. } = &dp.image {
        let _ = writeln!(
            s,
            "build: lint and build {} ({}), push {}, prove the registry's digest",
            build.context.display(),
            build.dockerfile.display(),
            build.tags.join(", ")
        );
    }
    s.push_str(&rollout::render_plan_as(&dp.rollout, &dp.image.reference()));
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

    /// The lint's `secret-value` rule and the deploy's `::add-mask::` judge a name the same way:
    /// a short literal value (not a known token format, not a `$REFERENCE`) under each name.
    #[test]
    fn the_lint_and_the_mask_agree_on_every_name() {
        let value = "hunter2-x";
        for name in [
            "DB_PASSWORD",
            "npm_token",
            "CLIENT_SECRET",
            "API_KEY",
            "apikey",
            "AWS_SECRET_ACCESS_KEY",
            "SSH_PRIVATE_KEY",
            "PASS",
            "SENTRY_DSN",
            "DATABASE_URL",
            "APP_DATABASE_URL",
            "BASIC_AUTH",
            "GITHUB_CREDENTIALS",
            "VERSION",
            "BASE_IMAGE",
            "KEYBOARD",
            "MONKEY",
            "PUBLIC_KEY",
            "GPG_KEY_ID",
            "PWD",
            "PASSENGER",
            "AUTHOR",
            "DATABASE",
            "URL",
            "APP_HEALTH",
        ] {
            assert_eq!(
                looks_secret(name, value),
                lint::holds_secret(name, value),
                "{name}"
            );
            assert_eq!(
                looks_secret(name, value),
                lint::looks_secret_name(name),
                "{name}"
            );
        }
        assert!(looks_secret("SENTRY_DSN", value) && looks_secret("DATABASE_URL", value));
        assert!(!looks_secret("KEYBOARD", value) && !looks_secret("PUBLIC_KEY", value));
    }

    #[test]
    fn a_failed_build_is_a_step_of_the_report_and_the_summary() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.json");
        let cli = crate::cli::Cli::try_parse_from([
            "slipway",
            "deploy",
            "--config",
            "s.toml",
            "--url",
            "https://web.example.com/health",
            "--report",
            report.to_str().unwrap(),
        ])
        .unwrap();
        let crate::cli::Command::Deploy(args) = cli.command else {
            panic!("not a deploy")
        };
        let ci = Ci {
            actions: false,
            output: Some(dir.path().join("output")),
            summary: Some(dir.path().join("summary.md")),
        };
        let before = [PreStep::new(
            StepName::Build,
            SystemTime::now(),
            false,
            "the build failed: RUN exit 1".into(),
        )];
        let failure = Failure::usage(anyhow::anyhow!("the build failed: RUN exit 1"));
        record_early_failure(&ci, &args, &failure, &before);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(json["outcome"], "usage-error", "{json:#}");
        assert_eq!(json["steps"][0]["name"], "build", "{json:#}");
        assert_eq!(json["steps"][0]["ok"], false, "{json:#}");
        assert_eq!(json["steps"][0]["detail"], "the build failed: RUN exit 1");
        let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            summary.contains("| build | ✗ | ")
                && summary.contains("the build failed: RUN exit 1 |"),
            "{summary}"
        );
        let output = std::fs::read_to_string(dir.path().join("output")).unwrap();
        assert!(output.contains("outcome=usage-error\n"), "{output}");
    }

    fn built_plan() -> DeployPlan {
        let spec = crate::spec::ServiceSpec::parse(
            std::path::Path::new("s.toml"),
            "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\n\
             [health.http]\njson_field = \".version\"\n\
             [caddy]\nsnippet_dir = \"/etc/caddy/slipway\"\n",
        )
        .unwrap();
        let image = DeployImage::Built {
            repository: "127.0.0.1:5000/team/web".into(),
            build: BuildSteps {
                context: "app".into(),
                dockerfile: "app/Dockerfile".into(),
                tags: vec!["127.0.0.1:5000/team/web:c0ffee1".into()],
            },
        };
        let target = rollout::Target {
            image: image.rollout_target(),
            revision: Some(Revision::parse("c0ffee1", "test").unwrap()),
            reuse_retained: false,
            replace: None,
        };
        let facts = rollout::Facts::default();
        let plan = rollout::plan(&spec, &target, &facts, "systemctl reload caddy");
        DeployPlan {
            image,
            revision: plan.revision.to_string(),
            rollout: plan,
            reload_image: "r/nsenter@sha256:ab".into(),
            lock: "slipway-lock-web".into(),
            smoke: Smoke {
                urls: vec!["https://web.example.com/health".into()],
                expect: Expect {
                    status: 200,
                    json: Some((".version".into(), "c0ffee1".into())),
                    body_contains: None,
                    body_regex: None,
                    header: None,
                },
                headers: Vec::new(),
                resolve: Vec::new(),
                cacert: None,
                interval: Duration::from_secs(1),
                deadline: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
            },
            watch: "5s".into(),
            on_failure: Vec::new(),
        }
    }

    #[test]
    fn a_plan_for_an_image_this_deploy_builds_says_so_and_never_shows_the_stand_in_digest() {
        let dp = built_plan();
        let text = render_deploy_plan(&dp);
        let json = serde_json::to_value(&dp).unwrap();
        let json_text = json.to_string();
        for out in [&text, &json_text] {
            assert!(!out.contains("0000000000"), "{out}");
            assert!(!out.contains(PENDING_DIGEST), "{out}");
            assert!(
                out.contains("127.0.0.1:5000/team/web@<built by this deploy>"),
                "{out}"
            );
        }
        assert!(text.starts_with("build: lint and build app (app/Dockerfile), push 127.0.0.1:5000/team/web:c0ffee1, prove the registry's digest\nplan for web: 127.0.0.1:5000/team/web@<built by this deploy> (revision c0ffee1)\n"), "{text}");
        assert_eq!(json["image_source"], "built", "{json:#}");
        assert_eq!(json["repository"], "127.0.0.1:5000/team/web");
        assert_eq!(json["build"]["tags"][0], "127.0.0.1:5000/team/web:c0ffee1");
        assert_eq!(
            json["rollout"]["target"]["image"],
            "127.0.0.1:5000/team/web@<built by this deploy>"
        );
        assert_eq!(json["rollout"]["action"]["kind"], "rollout");
        assert!(json.get("image").is_none(), "{json:#}");
    }

    #[test]
    fn a_plan_for_a_given_image_names_it() {
        let given = PinnedImage::parse(&format!(
            "127.0.0.1:5000/team/web@sha256:{}",
            "ab".repeat(32)
        ))
        .unwrap();
        let mut dp = built_plan();
        dp.image = DeployImage::Given {
            image: given.clone(),
        };
        let json = serde_json::to_value(&dp).unwrap();
        assert_eq!(json["image_source"], "given");
        assert_eq!(json["image"], given.to_string());
        assert!(json.get("build").is_none(), "{json:#}");
        let text = render_deploy_plan(&dp);
        assert!(
            text.starts_with(&format!("plan for web: {given} (revision c0ffee1)\n")),
            "{text}"
        );
    }
}
