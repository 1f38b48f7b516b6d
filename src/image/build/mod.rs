//! `slipway build`, and the build half of `deploy`: lint, build the image from a streamed
//! context, push every tag, then prove over the registry's own HTTP API that it holds exactly
//! what was built. The result is the image pinned by digest, `REGISTRY/REPO@sha256:...`.
//!
//! Nothing is built unless the lint passes and the registry answers and accepts the
//! credentials; a tag only appears in the registry when a push completes, so a failure before
//! or during the push leaves no tag behind.

pub mod context;
pub mod dockerignore;
pub mod from_args;
pub mod progress;
pub mod request;
pub mod verify;

use std::time::Instant;

use serde::Serialize;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::engine::{Builder, Engine, EngineError, ImageBuild};
use crate::exit::Exit;
use crate::image::lint::{self, LintError, Report};
use crate::image::reference::PinnedImage;
use crate::image::registry::{Registry, RegistryError};
use context::{Context, ContextError, ContextStats};
use progress::{BuildLog, PushLog};
pub use request::{
    BuildRequest, created_now, key_values, resolve_revision, resolve_source, valid_repository,
};
use verify::VerifyError;

/// What `build_and_push` made: the pinned image and how it came about.
#[derive(Debug, Clone, Serialize)]
pub struct PushedImage {
    /// `REGISTRY/REPO@sha256:...`
    #[serde(serialize_with = "as_text")]
    pub image: PinnedImage,
    pub digest: String,
    /// `REGISTRY/REPO`
    pub repository: String,
    pub revision: String,
    /// Every tag pushed, the revision first; all name `digest`.
    pub tags: Vec<String>,
    /// The image ID (its config's digest), the same in the engine and the registry.
    pub image_id: String,
    pub context: ContextStats,
    pub steps: usize,
    pub cached_steps: usize,
    /// Lint rules waived with `--allow` that would have fired.
    pub waived: Vec<lint::Rule>,
}

fn as_text<S: serde::Serializer>(image: &PinnedImage, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(image.as_str())
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("{what}")]
    Invalid { what: String, hint: String },
    #[error("no revision to tag the image with: {reason} (in {})", context.display())]
    NoRevision {
        context: std::path::PathBuf,
        reason: String,
    },
    #[error("the lint found {} problem(s); nothing was built:\n{}", report.findings.len(), report.render_text().trim_end())]
    Lint { report: Report },
    #[error(transparent)]
    LintFailed(#[from] LintError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("registry {registry} is not usable; nothing was built")]
    Preflight {
        registry: String,
        #[source]
        source: RegistryError,
    },
    #[error("{}", step_failure(.step, .message, .output))]
    Step {
        step: Option<String>,
        message: String,
        output: Vec<String>,
    },
    /// The engine could not fetch the frontend image a `# syntax=` line names.
    #[error(
        "the engine could not fetch the Dockerfile frontend {image} that the `# syntax=` line names: {message}"
    )]
    Frontend { image: String, message: String },
    #[error("the engine cannot build with BuildKit: {message}")]
    NoBuildKit { message: String },
    #[error(transparent)]
    Engine(EngineError),
    #[error("{}", push_failure(.registry, .tag, .cause, .source))]
    Push {
        registry: String,
        tag: String,
        /// Whether `tag` is the revision tag (pushed first).
        revision: bool,
        cause: PushCause,
        #[source]
        source: Box<EngineError>,
    },
    #[error("cannot read back what registry {registry} holds")]
    ReadBack {
        registry: String,
        #[source]
        source: RegistryError,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("interrupted while {what}")]
    Interrupted { what: String },
}

fn step_failure(step: &Option<String>, message: &str, output: &[String]) -> String {
    // The classic builder repeats the whole command: the step line already shows it.
    static REPEATED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?s)^The command '.*' returned a non-zero code: (\d+)$")
            .expect("a valid regex")
    });
    // BuildKit's words for the same.
    static EXECUTOR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?s)^executor failed running \[.*\]: exit code: (\d+)$")
            .expect("a valid regex")
    });
    let shorter;
    let message = match REPEATED
        .captures(message)
        .or_else(|| EXECUTOR.captures(message))
    {
        Some(caps) => {
            shorter = format!("the command exited with code {}", &caps[1]);
            shorter.as_str()
        }
        None => message,
    };
    // BuildKit wraps the frontend's own words in its layers' names.
    let message = [
        "failed to solve with frontend dockerfile.v0: ",
        "failed to create LLB definition: ",
    ]
    .iter()
    .fold(message, |m, wrapper| m.strip_prefix(wrapper).unwrap_or(m));
    let mut text = match step {
        Some(step) => format!("the build failed at {step}\n  {message}"),
        None => format!("the build failed: {message}"),
    };
    if !output.is_empty() {
        text.push_str("\noutput of that step (last lines):");
        for line in output {
            text.push_str("\n  | ");
            text.push_str(line);
        }
    }
    text
}

impl BuildError {
    /// Input problems are 2 (nothing was changed); an engine or registry that fails us, or a
    /// registry that does not hold what was built, is 4.
    pub fn exit(&self) -> Exit {
        match self {
            BuildError::Invalid { .. }
            | BuildError::NoRevision { .. }
            | BuildError::Lint { .. }
            | BuildError::LintFailed(_)
            | BuildError::Context(_)
            | BuildError::Step { .. } => Exit::Usage,
            BuildError::Interrupted { .. } => Exit::Interrupted,
            BuildError::Preflight { .. }
            | BuildError::Frontend { .. }
            | BuildError::NoBuildKit { .. }
            | BuildError::Engine(_)
            | BuildError::Push { .. }
            | BuildError::ReadBack { .. }
            | BuildError::Verify(_) => Exit::Unavailable,
        }
    }

    pub fn hint(&self) -> Option<String> {
        Some(match self {
            BuildError::Invalid { hint, .. } => hint.clone(),
            BuildError::NoRevision { .. } => {
                "pass --revision SHA, or set GITHUB_SHA, or build from a git checkout".into()
            }
            BuildError::Lint { .. } => {
                "fix each finding as it says, or waive a rule on purpose with --allow RULE".into()
            }
            BuildError::LintFailed(e) => e.hint(),
            BuildError::Context(e) => e.hint().into(),
            BuildError::Preflight { source, .. } | BuildError::ReadBack { source, .. } => {
                source.hint()
            }
            BuildError::Step { message, .. } if message.contains("requires BuildKit") => {
                "this Dockerfile needs BuildKit (RUN --mount): drop --builder classic (SLIPWAY_BUILDER) to build with BuildKit".into()
            }
            BuildError::Step { step: Some(_), .. } => {
                "the step's output says what went wrong; `docker build` on the same context reproduces it".into()
            }
            BuildError::Frontend { image, .. } => format!(
                "drop the `# syntax=` line to build with the engine's built-in Dockerfile frontend (it handles RUN --mount cache, bind and from=), or make {image} available to the engine (a registry it reaches, or `docker load` it there)"
            ),
            BuildError::NoBuildKit { .. } => {
                "pass --builder classic (or set SLIPWAY_BUILDER=classic) for the classic builder, which refuses RUN --mount; or turn BuildKit on in the engine (dockerd's daemon.json: \"features\": {\"buildkit\": true})".into()
            }
            BuildError::Step { step: None, .. } => {
                "the builder refused the Dockerfile before any step ran: fix the line it names".into()
            }
            BuildError::Engine(_) => {
                "is dockerd running, and is this the right socket? Set --docker-host or DOCKER_HOST".into()
            }
            BuildError::Push {
                registry,
                tag,
                revision,
                cause,
                ..
            } => push_hint(registry, tag, *revision, cause),
            BuildError::Verify(e) => e.hint().into(),
            BuildError::Interrupted { .. } => return None,
        })
    }

    fn from_engine(e: EngineError) -> BuildError {
        match e {
            EngineError::Interrupted { what } => BuildError::Interrupted { what },
            e => BuildError::Engine(e),
        }
    }
}

/// A build whose input was checked: names valid, lint passed, context readable. Nothing has
/// been asked of the engine or the registry yet.
pub struct PreparedBuild {
    request: BuildRequest,
    context: Context,
    waived: Vec<lint::Rule>,
    /// The frontend image of the Dockerfile's `# syntax=` line.
    syntax: Option<String>,
}

impl PreparedBuild {
    pub fn request(&self) -> &BuildRequest {
        &self.request
    }
}

/// Checks everything that needs neither engine nor registry. Fails with exit code 2 problems.
pub fn prepare(request: &BuildRequest) -> Result<PreparedBuild, BuildError> {
    request.validate()?;
    let report = lint::lint(
        &request.context,
        &request.dockerfile,
        &request.lint_options(),
    )?;
    for finding in &report.waived {
        tracing::warn!("waived with --allow: {}", finding.render());
    }
    if !report.findings.is_empty() {
        return Err(BuildError::Lint { report });
    }
    warn_secret_build_args(&request.build_args);
    let context = Context::new(&request.context, &request.dockerfile)?;
    let syntax = std::fs::read_to_string(&request.dockerfile)
        .ok()
        .and_then(|text| crate::image::dockerfile::syntax_directive(&text));
    Ok(PreparedBuild {
        request: request.clone(),
        context,
        waived: report.waived.iter().map(|f| f.rule).collect(),
        syntax,
    })
}

impl PreparedBuild {
    /// Builds, pushes every tag and verifies the registry's copy.
    pub async fn build_and_push(
        self,
        engine: &Engine,
        registry: &Registry,
        cancel: &CancellationToken,
    ) -> Result<PushedImage, BuildError> {
        let PreparedBuild {
            request,
            context,
            waived,
            syntax,
        } = self;
        // Nothing is built unless the registry answers and takes the credentials.
        let ping = registry
            .ping()
            .await
            .map_err(|source| BuildError::Preflight {
                registry: registry.name().to_string(),
                source,
            })?;
        tracing::info!(
            "registry {} answers{}",
            registry.name(),
            ping.authenticated_as
                .map(|u| format!(", credentials for `{u}` accepted"))
                .unwrap_or_default()
        );

        let repository = format!("{}/{}", registry.name(), request.repository);
        let tags = request.tags();
        let spec = ImageBuild {
            builder: request.builder,
            dockerfile: context.dockerfile().to_string(),
            tag: format!("{repository}:{}", request.revision),
            target: request.target.clone(),
            build_args: request.build_args.clone(),
            labels: request.all_labels(),
        };
        let (image_id, stats, log) = build(engine, &spec, context, cancel)
            .await
            .map_err(|e| frontend_error(e, syntax))?;
        for tag in &tags[1..] {
            engine
                .tag_image(&image_id, &repository, tag)
                .await
                .map_err(BuildError::from_engine)?;
        }

        let digest = push_all(engine, registry, &repository, &tags, cancel).await?;
        prove(
            registry,
            &request.repository,
            &tags,
            &digest,
            &image_id,
            &request.revision,
        )
        .await?;

        let image = PinnedImage::parse(&format!("{repository}@{digest}")).map_err(|e| {
            BuildError::Invalid {
                what: e.to_string(),
                hint: e.hint().into(),
            }
        })?;
        tracing::info!("pushed and verified {image}");
        Ok(PushedImage {
            image,
            digest,
            repository,
            revision: request.revision.clone(),
            tags,
            image_id,
            context: stats,
            steps: log.steps,
            cached_steps: log.cached,
            waived,
        })
    }
}

/// Streams the context and builds; the progress goes to the log line by line.
async fn build(
    engine: &Engine,
    spec: &ImageBuild,
    context: Context,
    cancel: &CancellationToken,
) -> Result<(String, ContextStats, BuildLog), BuildError> {
    let started = Instant::now();
    tracing::info!(
        "building {} from {} with {}",
        spec.tag,
        spec.dockerfile,
        match spec.builder {
            Builder::BuildKit => "BuildKit",
            Builder::Classic => "the classic builder",
        }
    );
    let stream = context.stream();
    let mut log = BuildLog::default();
    let mut on_event = |event| {
        for line in log.event(event) {
            tracing::info!("{line}");
        }
    };
    let built = engine
        .build_image(spec, stream.body, &mut on_event, cancel)
        .await;
    for line in log.finish() {
        tracing::info!("{line}");
    }
    // A context that could not be read explains a failed build better than the engine can.
    let sent = match stream.done.await {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(ContextError::Closed)) => Err(None),
        Ok(Err(e)) => Err(Some(e)),
        Err(join) => Err(Some(ContextError::Read {
            path: spec.dockerfile.clone().into(),
            source: std::io::Error::other(join.to_string()),
        })),
    };
    match (built, sent) {
        (_, Err(Some(e))) => Err(e.into()),
        (Err(EngineError::BuildFailed { message }), _) => Err(BuildError::Step {
            step: log.step().map(String::from),
            message,
            output: log.step_output(),
        }),
        (Err(EngineError::NoBuildKit { message }), _) => Err(BuildError::NoBuildKit { message }),
        (Err(e), _) => Err(BuildError::from_engine(e)),
        (Ok(_), Err(None)) => Err(BuildError::Context(ContextError::Closed)),
        (Ok(id), Ok(stats)) => {
            tracing::info!(
                "build context: {} entries, {} bytes sent, {} left out by .dockerignore",
                stats.entries,
                stats.bytes,
                stats.excluded
            );
            tracing::info!(
                "built {id} in {:.1}s ({} of {} steps from cache)",
                started.elapsed().as_secs_f32(),
                log.cached,
                log.steps
            );
            Ok((id, stats, log))
        }
    }
}

/// A build that failed fetching the `# syntax=` frontend (BuildKit's gateway frontend, or the
/// step that resolves its image) is the frontend's failure, not a step's.
fn frontend_error(e: BuildError, syntax: Option<String>) -> BuildError {
    match (e, syntax) {
        (BuildError::Step { step, message, .. }, Some(image))
            if message.contains("frontend gateway")
                || step
                    .as_deref()
                    .is_some_and(|s| s.starts_with("resolve image config for")) =>
        {
            BuildError::Frontend { image, message }
        }
        (e, _) => e,
    }
}

/// Pushes every tag, the revision first; all must come out as the same digest.
async fn push_all(
    engine: &Engine,
    registry: &Registry,
    repository: &str,
    tags: &[String],
    cancel: &CancellationToken,
) -> Result<String, BuildError> {
    let digest = push(engine, registry, repository, &tags[0], true, cancel).await?;
    for tag in &tags[1..] {
        let other = push(engine, registry, repository, tag, false, cancel).await?;
        if other != digest {
            return Err(VerifyError::Mismatch {
                what: "the pushed digests".into(),
                expected_from: format!("the push of {}", tags[0]),
                expected: digest,
                actual_from: format!("the push of {tag}"),
                actual: other,
            }
            .into());
        }
    }
    Ok(digest)
}

/// Pushes one tag (`revision`: the revision tag, pushed first); the digest from the push's
/// status line, else from the engine's RepoDigests.
async fn push(
    engine: &Engine,
    registry: &Registry,
    repository: &str,
    tag: &str,
    revision: bool,
    cancel: &CancellationToken,
) -> Result<String, BuildError> {
    let failed = |source: EngineError| push_error(registry, tag, revision, source);
    let mut log = PushLog::default();
    let mut on_status = |status: &str| {
        if let Some(line) = log.status(status) {
            tracing::info!("{line}");
        }
    };
    let pushed = engine
        .push_image(
            repository,
            tag,
            registry.credentials(),
            &mut on_status,
            cancel,
        )
        .await
        .map_err(failed)?;
    tracing::info!(
        "pushed {repository}:{tag}: {} layer(s) uploaded, {} already in the registry",
        log.uploaded,
        log.existing
    );
    if let Some(digest) = pushed {
        return Ok(digest);
    }
    let reference = format!("{repository}:{tag}");
    let info = engine
        .inspect_image(&reference)
        .await
        .map_err(BuildError::from_engine)?;
    let prefix = format!("{repository}@");
    info.and_then(|i| {
        i.repo_digests
            .into_iter()
            .find_map(|d| d.strip_prefix(&prefix).map(String::from))
    })
    .ok_or_else(|| {
        failed(EngineError::PushFailed {
            image: reference,
            message: "neither the push nor the engine's RepoDigests name a digest".into(),
        })
    })
}

/// Why a push failed, as far as the engine's message tells: the engine relays the registry's
/// answer only as text (`received unexpected HTTP status: 500 Internal Server Error`,
/// `denied: requested access to the resource is denied`, `dial tcp ...: connection refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushCause {
    /// The registry itself failed: an HTTP 5xx (with its status when the message names one), or
    /// a full disk. Not a matter of credentials.
    RegistryFailed { status: Option<u16> },
    /// The registry refused the credentials: HTTP 401/403, `denied:`, `unauthorized:`.
    Refused,
    /// The engine did not reach the registry (refused connection, DNS, timeout, TLS).
    Unreachable,
    /// Anything else.
    Other,
}

/// Classifies the engine's push error text. A 5xx wins over everything else in the message.
pub fn classify_push_error(message: &str) -> PushCause {
    let status = http_status_in(message);
    if let Some(status) = status.filter(|s| (500..600).contains(s)) {
        return PushCause::RegistryFailed {
            status: Some(status),
        };
    }
    if matches!(status, Some(401 | 403)) {
        return PushCause::Refused;
    }
    let lower = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&["no space left on device", "insufficient storage"]) {
        return PushCause::RegistryFailed { status };
    }
    if has(&[
        "denied:",
        "unauthorized:",
        "authentication required",
        "requested access to the resource is denied",
        "insufficient_scope",
        "access denied",
        "permission_denied",
    ]) {
        return PushCause::Refused;
    }
    if has(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "no route to host",
        "network is unreachable",
        "connection reset by peer",
        "tls handshake timeout",
        "server gave http response to https client",
        "x509:",
        "certificate signed by unknown authority",
        "context deadline exceeded",
    ]) {
        return PushCause::Unreachable;
    }
    PushCause::Other
}

/// The HTTP status a message names: after `HTTP`, `status` or `status code`
/// (`received unexpected HTTP status: 500 ...`), or followed by its reason phrase
/// (`... request to URL: 503 Service Unavailable`). Ports and addresses are not statuses.
fn http_status_in(message: &str) -> Option<u16> {
    static AFTER_WORD: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\b(?:HTTP(?: status)?|status(?: code)?)\s*[:=]?\s*([1-5]\d\d)\b")
            .expect("a valid regex")
    });
    static WITH_REASON: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\b([1-5]\d\d) ([A-Za-z]+)").expect("a valid regex")
    });
    if let Some(caps) = AFTER_WORD.captures(message) {
        return caps[1].parse().ok();
    }
    WITH_REASON.captures_iter(message).find_map(|caps| {
        let status: u16 = caps[1].parse().ok()?;
        let reason = http::StatusCode::from_u16(status)
            .ok()?
            .canonical_reason()?;
        let first_word = reason.split([' ', '-']).next()?;
        first_word.eq_ignore_ascii_case(&caps[2]).then_some(status)
    })
}

/// The push's error, classified, with the credentials kept out of the engine's text.
fn push_error(registry: &Registry, tag: &str, revision: bool, source: EngineError) -> BuildError {
    match source {
        EngineError::Interrupted { what } => BuildError::Interrupted { what },
        EngineError::PushFailed { image, message } => {
            let message = registry.redact(&message);
            BuildError::Push {
                registry: registry.name().to_string(),
                tag: tag.to_string(),
                revision,
                cause: classify_push_error(&message),
                source: Box::new(EngineError::PushFailed { image, message }),
            }
        }
        // The engine itself (its socket, its API) failed, not the registry.
        e => BuildError::from_engine(e),
    }
}

fn push_failure(registry: &str, tag: &str, cause: &PushCause, source: &EngineError) -> String {
    let PushCause::RegistryFailed { status } = cause else {
        return "the push did not complete; no tag was changed by it".into();
    };
    let said = match source {
        EngineError::PushFailed { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let said = crate::image::registry::first_line(&said, 300);
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    format!("registry {registry} failed{status} while {tag} was pushed: {said}")
}

fn push_hint(registry: &str, tag: &str, revision: bool, cause: &PushCause) -> String {
    let unchanged = if revision {
        format!("nothing was pushed under the revision tag {tag}")
    } else {
        format!("the push of {tag} did not complete, so that tag was not changed")
    };
    match cause {
        PushCause::RegistryFailed { status } => {
            let status = status.map_or("HTTP 5xx".to_string(), |s| format!("HTTP {s}"));
            format!(
                "the registry failed ({status}): check its logs and free disk space; {unchanged}"
            )
        }
        PushCause::Unreachable => format!(
            "the engine did not reach registry {registry}: check that it runs at this address and that dockerd can reach it (and trusts its TLS certificate, or lists it under insecure-registries)"
        ),
        PushCause::Refused | PushCause::Other => {
            "check that the credentials may push to this repository and that the engine reaches the registry".into()
        }
    }
}

/// Reads the manifest of every tag and the image config back from the registry and checks
/// them against what was built and pushed.
async fn prove(
    registry: &Registry,
    repository: &str,
    tags: &[String],
    digest: &str,
    image_id: &str,
    revision: &str,
) -> Result<(), BuildError> {
    let read_back = |source| BuildError::ReadBack {
        registry: registry.name().to_string(),
        source,
    };
    let manifest = registry
        .manifest(repository, &tags[0])
        .await
        .map_err(read_back)?;
    let parsed = verify::check_manifest(digest, &manifest)?;
    let config = registry
        .config_blob(repository, parsed.config().digest().as_ref())
        .await
        .map_err(read_back)?;
    verify::check_config(&parsed, &config, image_id, revision)?;
    for tag in &tags[1..] {
        let other = registry
            .manifest(repository, tag)
            .await
            .map_err(read_back)?;
        verify::check_manifest(digest, &other)?;
    }
    tracing::info!(
        "verified: the registry's manifest for {} hashes to {digest}, its config is image {image_id} with revision {revision}",
        tags.join(", ")
    );
    Ok(())
}

/// Build args are kept in the image's history: a secret-looking one gets a warning.
fn warn_secret_build_args(build_args: &[(String, String)]) {
    for (name, _) in build_args {
        if lint::looks_secret_name(name) {
            tracing::warn!(
                "build arg {name} looks like a secret: build args are stored in the image's history, readable by anyone who can pull it. Give it at run time as an environment variable instead, or during the build through a BuildKit secret mount (RUN --mount=type=secret)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_shows_the_step_and_its_output() {
        let err = BuildError::Step {
            step: Some("Step 5/9 : RUN make".into()),
            message: "The command '/bin/sh -c make' returned a non-zero code: 2".into(),
            output: vec!["cc: error: x.c: No such file".into()],
        };
        assert_eq!(
            err.to_string(),
            "the build failed at Step 5/9 : RUN make\n  the command exited with code 2\noutput of that step (last lines):\n  | cc: error: x.c: No such file"
        );
        assert_eq!(err.exit(), Exit::Usage);
    }

    #[test]
    fn a_failing_buildkit_step_and_an_offline_frontend() {
        let step = |message: &str, step: &str| BuildError::Step {
            step: Some(step.into()),
            message: message.into(),
            output: vec!["on stderr".into()],
        };
        let err = step(
            "executor failed running [/bin/sh -c echo x; exit 3]: exit code: 3",
            "[stage-0 2/2] RUN echo x; exit 3",
        );
        assert_eq!(
            err.to_string(),
            "the build failed at [stage-0 2/2] RUN echo x; exit 3\n  the command exited with code 3\noutput of that step (last lines):\n  | on stderr"
        );
        let offline = step(
            "failed to solve with frontend dockerfile.v0: failed to solve with frontend gateway.v0: failed to do request: Head \"https://registry-1.docker.io/v2/docker/dockerfile/manifests/1\": dial tcp: lookup registry-1.docker.io: network is unreachable",
            "resolve image config for docker.io/docker/dockerfile:1",
        );
        let err = frontend_error(offline, Some("docker/dockerfile:1".into()));
        assert_eq!(err.exit(), Exit::Unavailable);
        assert!(err.to_string().starts_with("the engine could not fetch the Dockerfile frontend docker/dockerfile:1 that the `# syntax=` line names: failed to solve"), "{err}");
        assert!(err.hint().unwrap().starts_with("drop the `# syntax=` line"));
        let other = frontend_error(err_step(), Some("docker/dockerfile:1".into()));
        assert_eq!(other.exit(), Exit::Usage, "{other}");
    }

    fn err_step() -> BuildError {
        BuildError::Step {
            step: Some("[1/2] RUN make".into()),
            message: "executor failed running [/bin/sh -c make]: exit code: 2".into(),
            output: vec![],
        }
    }

    #[test]
    fn a_full_registry_disk_is_the_registry_failing() {
        for (message, status) in [
            (
                "received unexpected HTTP status: 500 Internal Server Error",
                Some(500),
            ),
            (
                "failed commit on ref \"layer-sha256:ab\": unexpected status from PUT request to http://127.0.0.1:5000/v2/app/blobs/uploads/x?digest=sha256%3Aab: 500 Internal Server Error",
                Some(500),
            ),
            ("filesystem: no space left on device", None),
            (
                "blob upload unknown: write /var/lib/registry/x: no space left on device",
                None,
            ),
            ("HTTP 507 from the registry", Some(507)),
        ] {
            assert_eq!(
                classify_push_error(message),
                PushCause::RegistryFailed { status },
                "{message}"
            );
        }
    }

    #[test]
    fn bad_gateway_and_unavailable_are_the_registry_failing() {
        for (message, status) in [
            ("received unexpected HTTP status: 502 Bad Gateway", 502),
            (
                "received unexpected HTTP status: 503 Service Unavailable",
                503,
            ),
            ("unexpected status: 503 Service Unavailable", 503),
            (
                "unexpected status from HEAD request to https://registry.example/v2/app/manifests/abc: 504 Gateway Time-out",
                504,
            ),
            // A 5xx wins over words that would otherwise read as a refusal.
            (
                "unauthorized: received unexpected HTTP status: 502 Bad Gateway",
                502,
            ),
        ] {
            assert_eq!(
                classify_push_error(message),
                PushCause::RegistryFailed {
                    status: Some(status)
                },
                "{message}"
            );
        }
    }

    #[test]
    fn denied_and_unauthorized_are_refused_credentials() {
        for message in [
            "denied: requested access to the resource is denied",
            "unauthorized: authentication required",
            "unauthorized: incorrect username or password",
            "failed to authorize: failed to fetch oauth token: unexpected status from POST request to https://auth.example/token: 401 Unauthorized",
            "unexpected status from PUT request to https://registry.example/v2/app/manifests/abc: 403 Forbidden",
            "push access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed",
        ] {
            assert_eq!(
                classify_push_error(message),
                PushCause::Refused,
                "{message}"
            );
        }
    }

    #[test]
    fn a_refused_connection_is_unreachable() {
        for message in [
            "Get \"https://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
            "Head \"https://registry.example:443/v2/app/blobs/sha256:ab\": dial tcp: lookup registry.example on 10.0.0.2:53: no such host",
            "Get \"https://10.1.2.3:5000/v2/\": http: server gave HTTP response to HTTPS client",
        ] {
            assert_eq!(
                classify_push_error(message),
                PushCause::Unreachable,
                "{message}"
            );
        }
        assert_eq!(
            classify_push_error("An image does not exist locally with the tag: r/app"),
            PushCause::Other
        );
        // Addresses, ports and sizes are not HTTP statuses.
        assert_eq!(
            http_status_in("dial tcp 127.0.0.1:500: connect: connection refused"),
            None
        );
        assert_eq!(http_status_in("abc: digest: sha256:12 size: 500"), None);
    }

    fn registry_with_password(password: &str) -> Registry {
        Registry::new(
            "registry.example:5000",
            false,
            Some(crate::image::credentials::Credentials {
                username: "ci".into(),
                password: secrecy::SecretString::from(password.to_string()),
                source: "--registry-user and $PW".into(),
            }),
        )
    }

    fn pushing(message: &str) -> EngineError {
        EngineError::PushFailed {
            image: "registry.example:5000/app:abc123".into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_registry_5xx_during_the_push_names_the_registry_and_never_the_credentials() {
        let registry = registry_with_password("hunter2-secret");
        let err = push_error(
            &registry,
            "abc123",
            true,
            pushing("received unexpected HTTP status: 500 Internal Server Error"),
        );
        assert_eq!(err.exit(), Exit::Unavailable);
        assert_eq!(
            err.to_string(),
            "registry registry.example:5000 failed (HTTP 500) while abc123 was pushed: received unexpected HTTP status: 500 Internal Server Error"
        );
        let hint = err.hint().unwrap();
        assert_eq!(
            hint,
            "the registry failed (HTTP 500): check its logs and free disk space; nothing was pushed under the revision tag abc123"
        );
        assert!(!hint.contains("credentials"), "{hint}");

        let err = push_error(
            &registry,
            "latest",
            false,
            pushing("blob upload: filesystem: no space left on device"),
        );
        assert_eq!(
            err.to_string(),
            "registry registry.example:5000 failed while latest was pushed: blob upload: filesystem: no space left on device"
        );
        let hint = err.hint().unwrap();
        assert!(
            hint.starts_with("the registry failed (HTTP 5xx): check its logs and free disk space"),
            "{hint}"
        );
        assert!(!hint.contains("credentials"), "{hint}");
    }

    #[test]
    fn refused_pushes_keep_the_credentials_hint_and_exit_4() {
        let registry = registry_with_password("hunter2-secret");
        for message in [
            "denied: requested access to the resource is denied",
            "unauthorized: authentication required",
        ] {
            let err = push_error(&registry, "abc123", true, pushing(message));
            assert_eq!(err.exit(), Exit::Unavailable);
            assert_eq!(
                err.to_string(),
                "the push did not complete; no tag was changed by it"
            );
            assert!(
                err.hint()
                    .unwrap()
                    .contains("check that the credentials may push to this repository"),
                "{message}"
            );
        }
        let err = push_error(
            &registry,
            "abc123",
            true,
            pushing("dial tcp 10.0.0.5:5000: connect: connection refused"),
        );
        assert_eq!(err.exit(), Exit::Unavailable);
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("did not reach registry registry.example:5000"),
            "{hint}"
        );
        assert!(!hint.contains("credentials"), "{hint}");
    }

    #[test]
    fn the_password_never_shows_in_a_push_error() {
        let registry = registry_with_password("hunter2-secret");
        let err = push_error(
            &registry,
            "abc123",
            true,
            pushing(
                "received unexpected HTTP status: 500 Internal Server Error: bad auth hunter2-secret",
            ),
        );
        let shown = format!(
            "{}\n{}\n{err:?}",
            crate::doctor::chain(&err),
            err.hint().unwrap()
        );
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn registry_and_engine_failures_are_unavailable() {
        let preflight = BuildError::Preflight {
            registry: "r".into(),
            source: RegistryError::CredentialsNeeded {
                registry: "r".into(),
            },
        };
        assert_eq!(preflight.exit(), Exit::Unavailable);
        assert!(preflight.hint().unwrap().contains("--registry-user"));
        let verify = BuildError::Verify(VerifyError::BadConfig { reason: "x".into() });
        assert_eq!(verify.exit(), Exit::Unavailable);
    }
}
