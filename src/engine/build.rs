//! Images: build (classic builder, context streamed as the request body), tag, push, inspect.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::LazyLock;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use regex::Regex;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError};
use crate::image::credentials::Credentials;

/// What to build. Maps one to one onto the engine's `POST /build` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
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
    /// Builds with the classic builder from `context` (a tar stream), calling `on_output` with
    /// each piece of the builder's output as it arrives. Returns the image ID.
    pub async fn build_image(
        &self,
        spec: &ImageBuild,
        context: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        on_output: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> Result<String, EngineError> {
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
        let stream = self.docker.build_image(
            options.build(),
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
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    on_output(text);
                    if let Some(id) = text.trim().strip_prefix("Successfully built ") {
                        built.get_or_insert_with(|| id.to_string());
                    }
                }
                if let Some(id) = info.aux.and_then(|aux| aux.id) {
                    *built = Some(id);
                }
                Ok(())
            },
            |source| match source {
                BollardError::DockerStreamError { error } => {
                    EngineError::BuildFailed { message: error }
                }
                BollardError::DockerResponseServerError { message, .. } => {
                    EngineError::BuildFailed { message }
                }
                source => self.classify("building", source),
            },
            |built| built.is_some(),
        )
        .await?;
        let Some(built) = built else {
            return Err(EngineError::BuildFailed {
                message: "the engine ended the build without an image ID".into(),
            });
        };
        // The image the tag now names is the one this build made.
        let info =
            self.inspect_image(&spec.tag)
                .await?
                .ok_or_else(|| EngineError::BuildFailed {
                    message: format!(
                        "the build reported {built}, but {} does not exist",
                        spec.tag
                    ),
                })?;
        let short = built.trim_start_matches("sha256:");
        if !info.id.trim_start_matches("sha256:").starts_with(short) {
            return Err(EngineError::BuildFailed {
                message: format!(
                    "the build reported {built}, but {} is {}",
                    spec.tag, info.id
                ),
            });
        }
        Ok(info.id)
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
