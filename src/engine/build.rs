//! Images: build (BuildKit with a session on the same socket, or the classic builder; the
//! context streamed as the request body either way), tag, push, inspect.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::LazyLock;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::BuildInfoAux;
use bollard::query_parameters::{
    BuildImageOptions, BuildImageOptionsBuilder, BuilderVersion, PushImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use regex::Regex;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError};
use crate::image::credentials::Credentials;

/// Which of the engine's builders runs the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// BuildKit (`version=2` plus a session): cache and bind mounts, parallel stages.
    #[default]
    #[value(name = "buildkit")]
    BuildKit,
    /// The classic builder, for engines without BuildKit; refuses `RUN --mount`.
    Classic,
}

/// What the engine reports while it builds, in plain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A piece of the classic builder's text output.
    Text(String),
    /// A BuildKit step started, finished, came from the cache or failed.
    Step(StepUpdate),
    /// Output a BuildKit step printed (`step` is the step's id).
    StepOutput { step: String, text: String },
}

/// One BuildKit step (a vertex of the build graph) as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpdate {
    pub id: String,
    /// `[builder 2/5] RUN ...`, `[internal] load build context`, ...
    pub name: String,
    pub cached: bool,
    pub started: Option<std::time::Duration>,
    pub completed: Option<std::time::Duration>,
    /// Non-empty when the step failed.
    pub error: String,
}

/// What to build. Maps one to one onto the engine's `POST /build` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
    pub builder: Builder,
    /// The Dockerfile's path inside the context tar.
    pub dockerfile: String,
    pub target: Option<String>,
    pub build_args: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    /// The full reference to tag the result with, `REGISTRY/REPO:TAG`.
    pub tag: String,
}

/// An image in the engine's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:...`: the digest of the image's config.
    pub id: String,
    /// `REPO@sha256:...` for each registry it was pushed to or pulled from.
    pub repo_digests: Vec<String>,
    /// The image declares a HEALTHCHECK (one that is not `NONE`).
    pub has_healthcheck: bool,
    pub labels: BTreeMap<String, String>,
}

/// `TAG: digest: sha256:... size: N`, the push's last status line.
static PUSHED_DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\S+): digest: (sha256:[0-9a-f]{64}) size: \d+$").expect("a valid regex")
});

impl Engine {
    /// Builds from `context` (a tar stream) with `spec.builder`, calling `on_event` with what
    /// the builder reports as it arrives. Returns the image ID.
    pub async fn build_image(
        &self,
        spec: &ImageBuild,
        context: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        on_event: &mut (dyn FnMut(BuildEvent) + Send),
        cancel: &CancellationToken,
    ) -> Result<String, EngineError> {
        let session = session_id();
        let stream = self.docker.build_image(
            build_options(spec, &session),
            None,
            Some(bollard::body_try_stream(context)),
        );
        let mut built: Option<String> = None;
        drive(
            stream,
            &mut built,
            cancel,
            "building",
            |built, info: bollard::models::BuildInfo| {
                on_build_info(info, built, on_event);
                Ok(())
            },
            |source| self.build_error(spec.builder, source),
            |built| built.is_some(),
        )
        .await?;
        let Some(built) = built else {
            return Err(EngineError::BuildFailed {
                message: "the engine ended the build without an image ID".into(),
            });
        };
        self.check_built(&spec.tag, &built).await
    }

    /// The image the tag now names is the one this build made.
    async fn check_built(&self, tag: &str, built: &str) -> Result<String, EngineError> {
        let info = self
            .inspect_image(tag)
            .await?
            .ok_or_else(|| EngineError::BuildFailed {
                message: format!("the build reported {built}, but {tag} does not exist"),
            })?;
        let short = built.trim_start_matches("sha256:");
        if !info.id.trim_start_matches("sha256:").starts_with(short) {
            return Err(EngineError::BuildFailed {
                message: format!("the build reported {built}, but {tag} is {}", info.id),
            });
        }
        Ok(info.id)
    }

    /// A failed build: the input's fault (`BuildFailed`), an engine without BuildKit
    /// (`NoBuildKit`), or the engine itself.
    fn build_error(&self, builder: Builder, source: BollardError) -> EngineError {
        let message = match source {
            BollardError::DockerStreamError { error } => error,
            BollardError::DockerResponseServerError { message, .. } => message,
            source => return self.classify("building", source),
        };
        if builder == Builder::BuildKit && lacks_buildkit(&message) {
            return EngineError::NoBuildKit { message };
        }
        EngineError::BuildFailed { message }
    }

    /// `docker tag SOURCE REPO:TAG`.
    pub async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(EngineError::api(format!(
                "tagging {source} as {repo}:{tag}"
            )))
    }

    /// Pushes `repo:tag` (`repo` includes the registry) with `credentials`, calling `on_status`
    /// with each status line. Returns the manifest digest from the push's own report, when the
    /// engine sent one.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        credentials: Option<&Credentials>,
        on_status: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> Result<Option<String>, EngineError> {
        let image = format!("{repo}:{tag}");
        let server = crate::image::credentials::registry_host(repo).to_string();
        let auth = match credentials {
            Some(c) => DockerCredentials {
                username: Some(c.username.clone()),
                password: Some(c.password.expose_secret().to_string()),
                serveraddress: Some(server),
                ..Default::default()
            },
            None => DockerCredentials::default(),
        };
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let stream = self.docker.push_image(repo, Some(options), Some(auth));
        let mut digest: Option<String> = None;
        drive(
            stream,
            &mut digest,
            cancel,
            "pushing",
            |digest, info: bollard::models::PushImageInfo| {
                if let Some(status) = info.status.as_deref() {
                    on_status(status);
                    if let Some(caps) = PUSHED_DIGEST.captures(status.trim())
                        && &caps[1] == tag
                    {
                        *digest = Some(caps[2].to_string());
                    }
                }
                Ok(())
            },
            |source| match source {
                BollardError::DockerStreamError { error } => EngineError::PushFailed {
                    image: image.clone(),
                    message: error,
                },
                BollardError::DockerResponseServerError { message, .. } => {
                    EngineError::PushFailed {
                        image: image.clone(),
                        message,
                    }
                }
                source => self.classify(&format!("pushing {image}"), source),
            },
            |digest| digest.is_some(),
        )
        .await?;
        Ok(digest)
    }

    /// The image `reference` names, or `None` when the engine has no such image.
    pub async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => {
                let config = i.config.unwrap_or_default();
                let has_healthcheck = config.healthcheck.as_ref().is_some_and(|h| {
                    h.test
                        .as_ref()
                        .is_some_and(|t| !t.is_empty() && t[0] != "NONE")
                });
                Ok(Some(ImageInfo {
                    id: i.id.unwrap_or_default(),
                    repo_digests: i.repo_digests.unwrap_or_default(),
                    has_healthcheck,
                    labels: config.labels.unwrap_or_default().into_iter().collect(),
                }))
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(self.classify(&format!("inspecting image {reference}"), source)),
        }
    }
}

fn build_options(spec: &ImageBuild, session: &str) -> BuildImageOptions {
    let build_args: HashMap<String, String> = spec.build_args.iter().cloned().collect();
    let labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(&spec.dockerfile)
        .t(&spec.tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&build_args)
        .labels(&labels);
    if let Some(target) = &spec.target {
        options = options.target(target);
    }
    if spec.builder == Builder::BuildKit {
        // bollard opens the session (`/session` on the same socket) for the build's lifetime.
        options = options
            .version(BuilderVersion::BuilderBuildKit)
            .session(session);
    }
    options.build()
}

/// A session ID unique to this build.
fn session_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("slipway-{}-{nanos:x}", std::process::id())
}

/// One item of the build stream: the classic builder's text, BuildKit's status, the image ID.
fn on_build_info(
    info: bollard::models::BuildInfo,
    built: &mut Option<String>,
    on_event: &mut (dyn FnMut(BuildEvent) + Send),
) {
    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
        on_event(BuildEvent::Text(text.to_string()));
        if let Some(id) = text.trim().strip_prefix("Successfully built ") {
            built.get_or_insert_with(|| id.to_string());
        }
    }
    match info.aux {
        Some(BuildInfoAux::Default(image)) => {
            if let Some(id) = image.id {
                *built = Some(id);
            }
        }
        Some(BuildInfoAux::BuildKit(status)) => {
            for vertex in status.vertexes {
                on_event(BuildEvent::Step(StepUpdate {
                    id: vertex.digest,
                    name: vertex.name,
                    cached: vertex.cached,
                    started: vertex.started.map(|t| since_epoch(t.seconds, t.nanos)),
                    completed: vertex.completed.map(|t| since_epoch(t.seconds, t.nanos)),
                    error: vertex.error,
                }));
            }
            for log in status.logs {
                on_event(BuildEvent::StepOutput {
                    step: log.vertex,
                    text: String::from_utf8_lossy(&log.msg).into_owned(),
                });
            }
        }
        None => {}
    }
}

/// A protobuf timestamp (seconds, nanos) as the time since the epoch.
fn since_epoch(seconds: i64, nanos: i32) -> std::time::Duration {
    std::time::Duration::new(
        u64::try_from(seconds).unwrap_or_default(),
        u32::try_from(nanos).unwrap_or_default(),
    )
}

/// The engine's words for "this engine cannot build with BuildKit" (BuildKit turned off in
/// dockerd, an engine that does not implement it, no session endpoint).
fn lacks_buildkit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("buildkit") && (m.contains("not supported") || m.contains("not enabled")))
        || m.contains("session not supported")
        || m.contains("page not found")
}

/// Runs an engine stream to its end: each item to `on_item`; cancellation; and bollard
/// 0.21.1's spurious "bytes remaining on stream" error at the very end, ignored once
/// `finished` says the result has arrived (the fix is upstream but unreleased).
async fn drive<T, State>(
    stream: impl Stream<Item = Result<T, BollardError>>,
    state: &mut State,
    cancel: &CancellationToken,
    what: &str,
    mut on_item: impl FnMut(&mut State, T) -> Result<(), EngineError>,
    map_err: impl Fn(BollardError) -> EngineError,
    finished: impl Fn(&State) -> bool,
) -> Result<(), EngineError> {
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            next = stream.try_next() => next,
            _ = cancel.cancelled() => {
                return Err(EngineError::Interrupted { what: what.to_string() });
            }
        };
        match next {
            Ok(Some(item)) => on_item(state, item)?,
            Ok(None) => return Ok(()),
            Err(e) if is_spurious_end(&e) && finished(state) => {
                tracing::debug!("ignoring bollard's spurious end-of-stream error after success");
                return Ok(());
            }
            Err(e) => return Err(map_err(e)),
        }
    }
}

fn is_spurious_end(e: &BollardError) -> bool {
    matches!(e, BollardError::IOError { err } if err.to_string().contains("bytes remaining on stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_digest_line_is_recognised() {
        let line = "abc123: digest: sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b size: 739";
        let caps = PUSHED_DIGEST.captures(line).unwrap();
        assert_eq!(&caps[1], "abc123");
        assert!(caps[2].starts_with("sha256:932b"));
        assert!(PUSHED_DIGEST.captures("Pushed").is_none());
        assert!(
            PUSHED_DIGEST
                .captures("x: digest: sha256:1234 size: 1")
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_spurious_end_error_is_ignored_only_after_success() {
        let spurious = || BollardError::IOError {
            err: io::Error::other("bytes remaining on stream"),
        };
        let cancel = CancellationToken::new();
        let run = |items: Vec<Result<u32, BollardError>>| {
            let cancel = cancel.clone();
            async move {
                let mut seen: Option<u32> = None;
                let result = drive(
                    futures_util::stream::iter(items),
                    &mut seen,
                    &cancel,
                    "testing",
                    |seen, n| {
                        *seen = Some(n);
                        Ok(())
                    },
                    |e| EngineError::BuildFailed {
                        message: e.to_string(),
                    },
                    |seen| seen.is_some(),
                )
                .await;
                (result, seen)
            }
        };
        let (result, seen) = run(vec![Ok(7), Err(spurious())]).await;
        assert!(result.is_ok());
        assert_eq!(seen, Some(7));
        let (result, _) = run(vec![Err(spurious())]).await;
        assert!(result.is_err(), "before any result it is a real failure");
        let (result, _) = run(vec![
            Ok(1),
            Err(BollardError::DockerStreamError {
                error: "boom".into(),
            }),
        ])
        .await;
        assert!(result.unwrap_err().to_string().contains("boom"));
    }
}
