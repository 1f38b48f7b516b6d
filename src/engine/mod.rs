//! The one module that speaks the Docker Engine API (through bollard). Everything else uses the
//! plain types defined here.

mod build;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::TryStreamExt;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

mod containers;
mod services;
mod session;
mod watch;
pub use build::{BuildEvent, Builder, ImageBuild, ImageInfo, StepUpdate};
pub use containers::*;
pub use services::*;
pub use watch::{ProbeSession, ProbeSibling};

pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Label put on every container slipway creates.
pub const LABEL_MANAGED: &str = "dev.slipway.managed";
pub const LABEL_ROLE: &str = "dev.slipway.role";
/// The role label of a watchdog's probe sibling. Not `probe`: a rollout removes the helpers of
/// dead runs, and a running sibling belongs to a live watchdog (one that never ran is removed).
pub const ROLE_WATCH_PROBE: &str = "watch-probe";

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("cannot use Docker host `{host}`")]
    BadHost {
        host: String,
        #[source]
        source: BollardError,
    },
    #[error("the Docker engine at {host} did not answer")]
    Unreachable {
        host: String,
        #[source]
        source: BollardError,
    },
    #[error("{op}")]
    Api {
        op: String,
        #[source]
        source: BollardError,
    },
    #[error("{what} did not finish within {}s", .after.as_secs_f32())]
    Deadline { what: String, after: Duration },
    #[error("interrupted while {what}")]
    Interrupted { what: String },
    #[error("a container named {name} already exists")]
    NameTaken { name: String },
    /// The builder refused the Dockerfile or a step failed: the input's fault, not the engine's.
    #[error("the build failed: {message}")]
    BuildFailed { message: String },
    /// The engine cannot build with BuildKit (turned off, or not implemented).
    #[error("the engine cannot build with BuildKit: {message}")]
    NoBuildKit { message: String },
    #[error("pushing {image} failed: {message}")]
    PushFailed { image: String, message: String },
    #[error("{} does not exist on the host", .paths.join(", "))]
    MountSourceMissing { paths: Vec<String> },
    /// The engine answered, but could not pull the image (the registry is unreachable from the
    /// host, refuses, or does not hold that digest).
    #[error("the Docker engine could not pull {image} from {registry}")]
    PullFailed {
        image: String,
        registry: String,
        #[source]
        source: BollardError,
    },
}

impl EngineError {
    /// The error with its causes, for one-line reports: `inspecting container x: error trying to
    /// connect: No such file or directory`.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let more = e.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = e.source();
        }
        text
    }

    /// The engine answered 404 (e.g. a create from an image it does not hold).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            EngineError::Api {
                source: BollardError::DockerResponseServerError {
                    status_code: 404,
                    ..
                },
                ..
            }
        )
    }

    /// The one classifier of bollard's errors: the engine did not answer (its socket, the
    /// connection, a timeout) is `Unreachable`; anything else (the engine answered with an
    /// error, or with something unreadable) is an `Api` error of `op`.
    fn classify(host: &str, op: &str, source: BollardError) -> EngineError {
        if is_unreachable(&source) {
            EngineError::Unreachable {
                host: host.to_string(),
                source,
            }
        } else {
            EngineError::Api {
                op: op.to_string(),
                source,
            }
        }
    }

    /// What to do about it, where the error itself says what was wrong with which input.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::PullFailed {
                image, registry, ..
            } => Some(format!(
                "the host's Docker engine must reach {registry} and find {image} there: check that registry (its address, the host's network and DNS, credentials: `docker login {registry}` on the host), or `docker pull {image}` on the host, or set --reload-image (the action's reload-image input) to an image pinned by digest that the host holds"
            )),
            _ => None,
        }
    }

    fn api(op: impl Into<String>) -> impl FnOnce(BollardError) -> EngineError {
        let op = op.into();
        move |source| EngineError::Api { op, source }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineVersion {
    /// Which engine answers on the socket.
    pub kind: EngineKind,
    pub version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
}

/// The engine behind the Docker-compatible API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Docker,
    /// Podman's Docker-compatible service (`podman system service`): see the operator guide,
    /// "Podman", for what differs.
    Podman,
}

impl EngineKind {
    /// From the components `/version` lists: Podman names itself "Podman Engine".
    pub fn of_components<'a>(names: impl IntoIterator<Item = &'a str>) -> EngineKind {
        let podman = names
            .into_iter()
            .any(|n| n.to_ascii_lowercase().starts_with("podman"));
        if podman {
            EngineKind::Podman
        } else {
            EngineKind::Docker
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker => "Docker",
            EngineKind::Podman => "Podman",
        }
    }
}

/// A short-lived container run to completion: created, started, waited on with a deadline, its
/// output collected, and always removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneShot {
    /// Prefix of the container name; a unique suffix is added.
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub privileged: bool,
    pub pid_host: bool,
    /// Host directories bind-mounted as (source, target); a source that does not exist is an
    /// error (`EngineError::MountSourceMissing`), never created.
    pub mounts: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    /// `none` when not given; `container:ID` joins another container's network.
    pub network: Option<String>,
    pub deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneShotExit {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
    /// What `version_once` saw first (one `/version` call per process for the checks).
    seen: std::sync::Arc<tokio::sync::OnceCell<EngineVersion>>,
}

impl Engine {
    /// Connects lazily: nothing is sent until the first call.
    pub fn connect(host: &str) -> Result<Engine, EngineError> {
        let docker = Docker::connect_with_host(host)
            .map_err(|source| EngineError::BadHost {
                host: host.to_string(),
                source,
            })?
            .with_timeout(Duration::from_secs(300))
            .with_request_modifier(url_safe_registry_auth);
        Ok(Engine {
            docker,
            host: host.to_string(),
            seen: Default::default(),
        })
    }

    /// A failed call of `op`, classified (see [`EngineError::classify`]).
    fn classify(&self, op: &str, source: BollardError) -> EngineError {
        EngineError::classify(&self.host, op, source)
    }

    pub async fn version(&self) -> Result<EngineVersion, EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|source| EngineError::Unreachable {
                host: self.host.clone(),
                source,
            })?;
        let components = v.components.unwrap_or_default();
        Ok(EngineVersion {
            kind: EngineKind::of_components(components.iter().map(|c| c.name.as_str())),
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            os: v.os.unwrap_or_default(),
            arch: v.arch.unwrap_or_default(),
        })
    }

    /// The engine's version as first seen by this process: the checks before a rollout ask once.
    /// (`version` asks every time: it is also the liveness check.)
    pub async fn version_once(&self) -> Result<EngineVersion, EngineError> {
        self.seen.get_or_try_init(|| self.version()).await.cloned()
    }

    /// Whether this engine runs images' HEALTHCHECKs: Docker always; Podman only under systemd
    /// (its health checks are systemd timers), seen as the systemd cgroup driver.
    pub async fn runs_healthchecks(&self, kind: EngineKind) -> Result<bool, EngineError> {
        if kind == EngineKind::Docker {
            return Ok(true);
        }
        let info = self
            .docker
            .info()
            .await
            .map_err(|source| EngineError::Api {
                op: "reading the engine's info".into(),
                source,
            })?;
        Ok(matches!(
            info.cgroup_driver,
            Some(bollard::models::SystemInfoCgroupDriverEnum::SYSTEMD)
        ))
    }

    /// Makes sure `image` (a pinned reference) is in the local store, pulling it by digest if not.
    pub async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(source) => {
                return Err(EngineError::Api {
                    op: format!("inspecting image {image}"),
                    source,
                });
            }
        }
        tracing::info!(%image, "pulling by digest");
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        self.docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|source| {
                if is_unreachable(&source) {
                    self.classify(&format!("pulling {image}"), source)
                } else {
                    EngineError::PullFailed {
                        image: image.to_string(),
                        registry: registry_of(image).to_string(),
                        source,
                    }
                }
            })
    }

    /// Runs `spec` to completion. The container is removed on every path: success, failure,
    /// deadline and cancellation.
    pub async fn run_oneshot(
        &self,
        spec: &OneShot,
        cancel: &CancellationToken,
    ) -> Result<OneShotExit, EngineError> {
        let name = format!("{}-{}", spec.name, unique_suffix());
        let started = Instant::now();
        let id = self.create_sibling(&name, spec, "oneshot").await?;
        let result = self.start_and_wait(&id, spec, cancel).await;
        let removed = self.remove_container(&id).await;
        let mut exit = result?;
        removed?;
        exit.elapsed = started.elapsed();
        Ok(exit)
    }

    /// Creates (does not start) a helper container named exactly `name` (see `create_named`).
    pub async fn create_sibling(
        &self,
        name: &str,
        spec: &OneShot,
        role: &str,
    ) -> Result<String, EngineError> {
        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_ROLE.into(), role.into());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            labels: Some(labels),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                privileged: Some(spec.privileged),
                pid_mode: spec.pid_host.then(|| "host".to_string()),
                mounts: (!spec.mounts.is_empty()).then(|| existing_binds(&spec.mounts)),
                network_mode: Some(spec.network.clone().unwrap_or_else(|| "none".into())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let refused = |source| {
            if missing_mount(&source) {
                EngineError::MountSourceMissing {
                    paths: spec.mounts.iter().map(|(s, _)| s.clone()).collect(),
                }
            } else {
                EngineError::Api {
                    op: format!("creating container {name} from {}", spec.image),
                    source,
                }
            }
        };
        self.create_named(name, body, refused).await
    }

    /// Creates (does not start) a container named exactly `name`. A name already in use is
    /// `EngineError::NameTaken`, which is what makes a fixed name a lock; any other refusal is
    /// `refused`'s error.
    async fn create_named(
        &self,
        name: &str,
        body: ContainerCreateBody,
        refused: impl FnOnce(BollardError) -> EngineError,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(e) if answered(&e, &[409]) => Err(EngineError::NameTaken {
                name: name.to_string(),
            }),
            Err(source) => Err(refused(source)),
        }
    }

    async fn start_and_wait(
        &self,
        id: &str,
        spec: &OneShot,
        cancel: &CancellationToken,
    ) -> Result<OneShotExit, EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(EngineError::api(format!("starting {}", spec.name)))?;
        let code = tokio::select! {
            code = self.wait_exit(id, &spec.name) => code?,
            _ = tokio::time::sleep(spec.deadline) => {
                return Err(EngineError::Deadline { what: format!("`{}` in {}", spec.cmd.join(" "), spec.image), after: spec.deadline });
            }
            _ = cancel.cancelled() => {
                return Err(EngineError::Interrupted { what: format!("running {}", spec.name) });
            }
        };
        let (stdout, stderr) = self.output(id).await?;
        Ok(OneShotExit {
            code,
            stdout,
            stderr,
            elapsed: Duration::ZERO,
        })
    }

    /// Waits until container `id` (called `what`) is not running; its exit code.
    pub async fn wait_exit(&self, id: &str, what: &str) -> Result<i64, EngineError> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match self
            .docker
            .wait_container(id, Some(options))
            .try_next()
            .await
        {
            Ok(Some(r)) => Ok(r.status_code),
            Ok(None) => Ok(-1),
            // bollard reports a non-zero exit as an error; it is a normal result here.
            Err(BollardError::DockerContainerWaitError { code, .. }) => Ok(code),
            Err(source) => Err(EngineError::Api {
                op: format!("waiting for {what}"),
                source,
            }),
        }
    }

    /// The stdout and stderr a container has written so far.
    pub async fn output(&self, id: &str) -> Result<(String, String), EngineError> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let chunks: Vec<LogOutput> = self
            .docker
            .logs(id, Some(options))
            .try_collect()
            .await
            .map_err(EngineError::api(format!("reading the output of {id}")))?;
        let (mut out, mut err) = (String::new(), String::new());
        for chunk in chunks {
            push_output(chunk, &mut out, &mut err);
        }
        Ok((out, err))
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let removed = self.docker.remove_container(id, Some(options)).await;
        // 404: already gone.
        unless_already(removed, &[404], format!("removing container {id}"))
    }
}

/// The engine answered the call with one of these status codes.
fn answered(e: &BollardError, codes: &[u16]) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

/// A change the engine may find already made: `Ok` also when it answers with one of `already`
/// (e.g. 304: already so, 404: already gone); anything else is an `Api` error of `op`.
fn unless_already(
    result: Result<(), BollardError>,
    already: &[u16],
    op: impl Into<String>,
) -> Result<(), EngineError> {
    match result {
        Err(source) if !answered(&source, already) => Err(EngineError::Api {
            op: op.into(),
            source,
        }),
        _ => Ok(()),
    }
}

/// Appends a piece of a container's output to `out` or `err`, by the stream it came on.
fn push_output(chunk: LogOutput, out: &mut String, err: &mut String) {
    match chunk {
        LogOutput::StdErr { message } => err.push_str(&String::from_utf8_lossy(&message)),
        other => out.push_str(&String::from_utf8_lossy(&other.into_bytes())),
    }
}

/// `run`, unless it takes longer than `deadline`: then a `Deadline` error naming `what`.
async fn within<T>(
    deadline: Duration,
    what: impl FnOnce() -> String,
    run: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::time::timeout(deadline, run)
        .await
        .map_err(|_| EngineError::Deadline {
            what: what(),
            after: deadline,
        })?
}

/// bollard 0.21.1 encodes X-Registry-Auth with the standard base64 alphabet; the daemon decodes
/// the URL-safe one, so passwords with `+/=>?~` broke. Re-encode the header.
fn url_safe_registry_auth(mut req: bollard::BollardRequest) -> bollard::BollardRequest {
    let header = "X-Registry-Auth";
    let fixed = req
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .map(|json| base64::engine::general_purpose::URL_SAFE.encode(json))
        .and_then(|v| http::HeaderValue::from_str(&v).ok());
    if let Some(value) = fixed {
        req.headers_mut().insert(header, value);
    }
    req
}

pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}-{nanos:09}", std::process::id())
}

/// Bind mounts the engine must not create: a missing source fails the create.
fn existing_binds(mounts: &[(String, String)]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|(source, target)| Mount {
            typ: Some(MountType::BIND),
            source: Some(source.clone()),
            target: Some(target.clone()),
            bind_options: Some(MountBindOptions {
                create_mountpoint: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// The request never got an answer from the engine: no socket, a refused or broken
/// connection, a timeout.
/// The registry a reference names, as the engine reads it: the first path component when it
/// looks like a host (a dot, a port or `localhost`), else Docker Hub.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

fn is_unreachable(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_)
    )
}

fn missing_mount(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { message, .. }
        if message.contains("bind source path does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_pull_names_the_image_and_its_registry() {
        assert_eq!(
            registry_of("127.0.0.1:5000/r/nsenter@sha256:ab"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of("ghcr.io/o/r:1@sha256:ab"), "ghcr.io");
        assert_eq!(registry_of("localhost/r@sha256:ab"), "localhost");
        assert_eq!(
            registry_of("docker.io/library/alpine@sha256:ab"),
            "docker.io"
        );
        assert_eq!(registry_of("alpine@sha256:ab"), "docker.io");
        assert_eq!(registry_of("library/alpine@sha256:ab"), "docker.io");
        let e = EngineError::PullFailed {
            image: "ghcr.io/o/r@sha256:ab".into(),
            registry: "ghcr.io".into(),
            source: BollardError::RequestTimeoutError,
        };
        assert_eq!(
            e.to_string(),
            "the Docker engine could not pull ghcr.io/o/r@sha256:ab from ghcr.io"
        );
        let hint = e.hint().unwrap();
        assert!(hint.contains("ghcr.io/o/r@sha256:ab") && hint.contains("reach ghcr.io"));
        assert!(!hint.contains("check that the Docker engine answers"));
    }

    #[test]
    fn the_engine_is_named_by_its_components() {
        // As dockerd 20.10 and Podman 4.3's compatible service list them.
        let docker = ["Engine", "containerd", "runc", "docker-init"];
        assert_eq!(EngineKind::of_components(docker), EngineKind::Docker);
        let podman = ["Podman Engine", "Conmon", "OCI Runtime (crun)"];
        assert_eq!(EngineKind::of_components(podman), EngineKind::Podman);
        assert_eq!(EngineKind::of_components([]), EngineKind::Docker);
    }

    #[test]
    fn no_answer_is_unreachable_and_an_answer_is_an_api_error() {
        let unreachable = [
            BollardError::RequestTimeoutError,
            BollardError::IOError {
                err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
            BollardError::SocketNotFoundError("/var/run/docker.sock".into()),
        ];
        for e in unreachable {
            let what = e.to_string();
            assert!(
                matches!(
                    EngineError::classify("unix:///x.sock", "listing containers", e),
                    EngineError::Unreachable { ref host, .. } if host == "unix:///x.sock"
                ),
                "{what}"
            );
        }
        let answered = [
            BollardError::DockerResponseServerError {
                status_code: 500,
                message: "boom".into(),
            },
            BollardError::DockerStreamError {
                error: "the stream said no".into(),
            },
        ];
        for e in answered {
            let what = e.to_string();
            assert!(
                matches!(
                    EngineError::classify("unix:///x.sock", "listing containers", e),
                    EngineError::Api { ref op, .. } if op == "listing containers"
                ),
                "{what}"
            );
        }
    }
}
