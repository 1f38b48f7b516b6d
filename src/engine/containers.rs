//! App containers and long-lived helpers: create from a plain spec, inspect, list by label,
//! stop, signal, exec, and wait for health through engine events.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HealthConfig,
    HealthStatusEnum, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    EventsOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::{
    Engine, EngineError, LABEL_MANAGED, LABEL_ROLE, OneShotExit, push_output, unless_already,
    within,
};
use crate::spec::Resources;

/// Everything the engine needs to create one app container. Plain data: built by the planner,
/// mapped to the API body by `create_body`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AppContainer {
    pub name: String,
    pub image: String,
    /// Names and values; only names are ever printed (see `Serialize`).
    #[serde(serialize_with = "names_only")]
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// The command, when not the image's (a worker's argv).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// Publish `container_port` on 127.0.0.1:`host_port` (the web process); workers publish
    /// nothing.
    pub publish: bool,
    /// Keep the image's HEALTHCHECK; off for a worker that does not gate on it (the image's
    /// check describes the web process).
    pub healthcheck: bool,
    pub host_port: u16,
    pub container_port: u16,
    /// `docker run -v` form (SOURCE:TARGET[:ro]).
    pub volumes: Vec<String>,
    #[serde(flatten)]
    pub resources: Resources,
    /// The restart policy's name, e.g. `unless-stopped`.
    pub restart: String,
    /// json-file log rotation: size of one file and how many are kept.
    pub log_max_size: String,
    pub log_max_file: u32,
    pub network: Option<String>,
    pub user: Option<String>,
    pub read_only: bool,
    pub stop_grace_secs: u64,
}

/// How a one-shot release container ended: its exit code (`None`: killed at the deadline) and
/// what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseExit {
    pub code: Option<i64>,
    pub output: String,
    pub elapsed: Duration,
}

fn names_only<S: serde::Serializer>(env: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(env.iter().map(|(name, _)| name))
}

/// What `inspect` tells about a container, in slipway's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// The image's config digest (`sha256:...`), as the engine runs it.
    pub image_id: String,
    pub running: bool,
    pub paused: bool,
    /// `created`, `running`, `exited`, ...
    pub status: String,
    pub health: Option<String>,
    pub exit_code: i64,
    pub pid: i64,
    pub created: String,
    pub started_at: String,
    pub finished_at: String,
    pub labels: BTreeMap<String, String>,
    /// The last health-check outputs, oldest first.
    pub health_log: Vec<String>,
}

/// Why a health wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthWait {
    Healthy,
    Unhealthy,
    Exited { code: i64 },
    Deadline,
    Interrupted,
}

pub fn create_body(spec: &AppContainer) -> ContainerCreateBody {
    let port_key = format!("{}/tcp", spec.container_port);
    let restart = match spec.restart.as_str() {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::NO,
    };
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels
        .entry(LABEL_ROLE.into())
        .or_insert_with(|| "app".into());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        user: spec.user.clone(),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        healthcheck: (!spec.healthcheck).then(|| HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        }),
        exposed_ports: spec.publish.then(|| vec![port_key.clone()]),
        stop_timeout: Some(spec.stop_grace_secs as i64),
        host_config: Some(HostConfig {
            port_bindings: spec.publish.then(|| {
                HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(spec.host_port.to_string()),
                    }]),
                )])
            }),
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            memory: spec.resources.memory_bytes,
            nano_cpus: spec.resources.nano_cpus,
            pids_limit: spec.resources.pids,
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), spec.log_max_size.clone()),
                    ("max-file".to_string(), spec.log_max_file.to_string()),
                ])),
            }),
            network_mode: spec.network.clone(),
            readonly_rootfs: Some(spec.read_only),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn info_from(r: ContainerInspectResponse) -> ContainerInfo {
    let state = r.state.unwrap_or_default();
    let health = state.health.clone();
    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r.name.unwrap_or_default().trim_start_matches('/').into(),
        image_id: r.image.unwrap_or_default(),
        running: state.running.unwrap_or(false),
        paused: state.paused.unwrap_or(false),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        health: health
            .as_ref()
            .and_then(|h| h.status)
            .map(|s| s.to_string()),
        exit_code: state.exit_code.unwrap_or_default(),
        pid: state.pid.unwrap_or_default(),
        // bollard's `time` feature (BuildKit needs it) parses the date: written back as RFC 3339.
        created: r
            .created
            .map(|t| humantime::format_rfc3339_nanos(std::time::SystemTime::from(t)).to_string())
            .unwrap_or_default(),
        started_at: state.started_at.unwrap_or_default(),
        finished_at: state.finished_at.unwrap_or_default(),
        labels: r
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        health_log: health
            .and_then(|h| h.log)
            .unwrap_or_default()
            .into_iter()
            .map(|l| {
                format!(
                    "exit {}: {}",
                    l.exit_code.unwrap_or(-1),
                    l.output.unwrap_or_default().trim()
                )
            })
            .collect(),
    }
}

fn not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// When a container being ended counts as ended: at its `kill` event (the engine carries on
/// alone), or at `kill` then `die` (its process is gone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ends {
    AtKill,
    AtDie,
}

impl Engine {
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        match self.docker.inspect_container(id, None).await {
            Ok(r) => Ok(Some(info_from(r))),
            Err(e) if not_found(&e) => Ok(None),
            Err(source) => Err(EngineError::Api {
                op: format!("inspecting container {id}"),
                source,
            }),
        }
    }

    /// Every container (running or not) carrying all of `labels`, inspected side by side (in the
    /// list's order; one removed meanwhile is left out), but for the one named `skip`: not
    /// inspected, since an inspect waits while the engine starts or stops that container.
    pub async fn containers_with_labels_but(
        &self,
        labels: &[(&str, &str)],
        skip: &str,
    ) -> Result<Vec<ContainerInfo>, EngineError> {
        let summaries = self
            .list_labelled(labels, &[])
            .await
            .map_err(EngineError::api("listing containers"))?;
        let skipped = |s: &ContainerSummary| {
            s.names
                .iter()
                .flatten()
                .any(|n| n.trim_start_matches('/') == skip)
        };
        let inspected = summaries
            .into_iter()
            .filter(|s| !skipped(s))
            .filter_map(|s| s.id)
            .map(|id| async move { self.inspect_container(&id).await });
        let found = futures_util::future::try_join_all(inspected).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// One list call: the containers carrying all of `labels`, in any state unless `states`
    /// names the ones wanted.
    pub(super) async fn list_labelled(
        &self,
        labels: &[(&str, &str)],
        states: &[&str],
    ) -> Result<Vec<ContainerSummary>, BollardError> {
        let mut filters = HashMap::from([(
            "label",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )]);
        if !states.is_empty() {
            filters.insert("status", states.iter().map(|s| s.to_string()).collect());
        }
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker.list_containers(Some(options)).await
    }

    pub async fn create_app(&self, spec: &AppContainer) -> Result<String, EngineError> {
        let op = format!("creating container {} from {}", spec.name, spec.image);
        self.create_named(&spec.name, create_body(spec), EngineError::api(op))
            .await
    }

    /// Runs `argv` once in a container made like `app` (image, env, network, volumes, user,
    /// limits) that publishes nothing and never restarts; removed afterwards, whatever happened.
    pub async fn run_release(
        &self,
        app: &AppContainer,
        argv: &[String],
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<ReleaseExit, EngineError> {
        let started = Instant::now();
        let id = self.create_release(app, argv).await?;
        let ran = self.release_outcome(&id, &app.name, deadline, cancel).await;
        let output = self
            .output(&id)
            .await
            .map(|(out, err)| format!("{out}{err}"))
            .unwrap_or_default();
        let _ = self.remove_container(&id).await;
        Ok(ReleaseExit {
            code: ran?,
            output,
            elapsed: started.elapsed(),
        })
    }

    async fn create_release(
        &self,
        app: &AppContainer,
        argv: &[String],
    ) -> Result<String, EngineError> {
        let mut one_shot = app.clone();
        one_shot.cmd = argv.to_vec();
        one_shot.publish = false;
        one_shot.restart = "no".into();
        one_shot.labels.insert(LABEL_ROLE.into(), "release".into());
        self.create_app(&one_shot).await
    }

    /// Starts the release container and waits: its exit code, or `None` when the deadline
    /// passed (it is killed).
    async fn release_outcome(
        &self,
        id: &str,
        name: &str,
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<Option<i64>, EngineError> {
        self.start(id).await?;
        tokio::select! {
            code = self.wait_exit(id, name) => code.map(Some),
            _ = tokio::time::sleep(deadline) => {
                let _ = self.signal(id, "SIGKILL").await;
                Ok(None)
            }
            _ = cancel.cancelled() => {
                let _ = self.signal(id, "SIGKILL").await;
                Err(EngineError::Interrupted { what: format!("running the release command in {name}") })
            }
        }
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        let started = self.docker.start_container(id, None).await;
        // 304: already running.
        unless_already(started, &[304], format!("starting container {id}"))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let options = StopContainerOptionsBuilder::default()
            .t(grace.as_secs().min(i32::MAX as u64) as i32)
            .build();
        let stopped = self.docker.stop_container(id, Some(options)).await;
        // 304: already stopped; 404: gone.
        unless_already(stopped, &[304, 404], format!("stopping container {id}"))
    }

    /// Stops the container like `stop`, but returns once its process has exited: the engine's
    /// teardown after that (network, ports, mounts; Docker holds the container's lock through
    /// it) goes on in the stop call, left running. Exited means a `kill` event, then `die`: the
    /// engine took a stop or kill (it ends the restart policy) and the process is gone. Without
    /// those events (an engine that does not send them) it is the stop call's return.
    pub async fn stop_until_exited(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let engine = self.clone();
        let owned = id.to_string();
        let stop = async move { engine.stop(&owned, grace).await };
        self.until_ended(id, "stopping", Ends::AtDie, stop).await
    }

    /// Frees the container's name at once (renamed to `new_name`), then removes it (forced),
    /// returning at its `kill` event: moby finishes a removal without the caller (its remove
    /// handler takes no request context). A rename refused, or Podman: the removal is waited for.
    pub async fn free_name_and_remove(&self, id: &str, new_name: &str) -> Result<(), EngineError> {
        if let Err(e) = self.rename(id, new_name).await {
            tracing::debug!("{e}; the removal is waited for");
            return self.remove_container(id).await;
        }
        let engine = self.clone();
        let owned = id.to_string();
        let remove = async move { engine.remove_container(&owned).await };
        self.until_ended(id, "removing", Ends::AtKill, remove).await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.docker
            .rename_container(id, options)
            .await
            .map_err(EngineError::api(format!(
                "renaming container {id} to {name}"
            )))
    }

    /// Runs `call` (which ends the container) on its own task and returns when it returns, or
    /// (Docker only) as soon as the container's events say it has ended as `ends` says.
    async fn until_ended(
        &self,
        id: &str,
        doing: &str,
        ends: Ends,
        call: impl Future<Output = Result<(), EngineError>> + Send + 'static,
    ) -> Result<(), EngineError> {
        // Read from moby's handlers; Podman's follow the request's context, so it is waited for.
        if !matches!(self.version_once().await, Ok(v) if v.kind == super::EngineKind::Docker) {
            return call.await;
        }
        let mut events = self.kill_and_die(id);
        let mut call = tokio::spawn(call);
        let (mut killed, mut watching) = (false, true);
        loop {
            tokio::select! {
                done = &mut call => return done.unwrap_or_else(|_| Err(EngineError::Interrupted {
                    what: format!("{doing} container {id}"),
                })),
                event = events.next(), if watching => match event.map(|e| e.map(|e| e.action)) {
                    Some(Ok(Some(a))) if a == "kill" && ends == Ends::AtKill => return Ok(()),
                    Some(Ok(Some(a))) if a == "kill" => killed = true,
                    Some(Ok(Some(a))) if a == "die" && killed => return Ok(()),
                    Some(Ok(_)) => {}
                    _ => watching = false,
                },
            }
        }
    }

    /// The container's `kill` and `die` events from now on (`since` now: none is missed while
    /// the subscription is being made).
    fn kill_and_die(
        &self,
        id: &str,
    ) -> impl futures_util::Stream<Item = Result<bollard::models::EventMessage, BollardError>> + use<>
    {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .unwrap_or_default();
        let filters = HashMap::from([
            ("container", vec![id.to_string()]),
            ("type", vec!["container".to_string()]),
            ("event", vec!["kill".to_string(), "die".to_string()]),
        ]);
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        self.docker.events(Some(options)).boxed()
    }

    pub async fn signal(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.docker
            .kill_container(id, Some(options))
            .await
            .map_err(EngineError::api(format!("sending {signal} to {id}")))
    }

    /// Runs `cmd` inside a running container; its exit code and output, within `deadline`.
    pub async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        deadline: Duration,
    ) -> Result<OneShotExit, EngineError> {
        let started = Instant::now();
        let what = || format!("`{}` in {id}", cmd.join(" "));
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(EngineError::api(format!("preparing {}", what())))?;
        let run = async {
            let (mut out, mut err) = (String::new(), String::new());
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(EngineError::api(format!("running {}", what())))?
            {
                while let Some(chunk) = output
                    .try_next()
                    .await
                    .map_err(EngineError::api(format!("reading {}", what())))?
                {
                    push_output(chunk, &mut out, &mut err);
                }
            }
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(EngineError::api(format!("inspecting {}", what())))?;
            Ok::<_, EngineError>(OneShotExit {
                code: inspect.exit_code.unwrap_or(-1),
                stdout: out,
                stderr: err,
                elapsed: started.elapsed(),
            })
        };
        within(deadline, &what, run).await
    }

    /// Waits until the container's HEALTHCHECK reports healthy or unhealthy, it exits, or the
    /// deadline passes; driven by engine events, with one inspect to catch what happened before
    /// the subscription.
    pub async fn wait_health(
        &self,
        id: &str,
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<HealthWait, EngineError> {
        let filters = HashMap::from([
            ("container", vec![id.to_string()]),
            ("type", vec!["container".to_string()]),
        ]);
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(1))
            .unwrap_or_default()
            .to_string();
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let mut events = self.docker.events(Some(options)).boxed();
        let verdict = |info: &ContainerInfo| -> Option<HealthWait> {
            if !info.running {
                return Some(HealthWait::Exited {
                    code: info.exit_code,
                });
            }
            match info.health.as_deref() {
                Some(s) if s == HealthStatusEnum::HEALTHY.to_string() => Some(HealthWait::Healthy),
                Some(s) if s == HealthStatusEnum::UNHEALTHY.to_string() => {
                    Some(HealthWait::Unhealthy)
                }
                _ => None,
            }
        };
        let gone = || EngineError::Api {
            op: format!("watching container {id}"),
            source: BollardError::DockerResponseServerError {
                status_code: 404,
                message: "container disappeared".into(),
            },
        };
        let info = self.inspect_container(id).await?.ok_or_else(gone)?;
        if let Some(v) = verdict(&info) {
            return Ok(v);
        }
        let timer = tokio::time::sleep(deadline);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = &mut timer => return Ok(HealthWait::Deadline),
                _ = cancel.cancelled() => return Ok(HealthWait::Interrupted),
                event = events.next() => {
                    let action = match event {
                        Some(Ok(e)) => e.action.unwrap_or_default(),
                        Some(Err(source)) => return Err(EngineError::Api { op: format!("watching events of {id}"), source }),
                        None => return Err(gone()),
                    };
                    if action.starts_with("health_status") || action == "die" || action == "destroy" {
                        let info = self.inspect_container(id).await?.ok_or_else(gone)?;
                        if let Some(v) = verdict(&info) {
                            return Ok(v);
                        }
                    }
                }
            }
        }
    }

    /// The last `lines` lines a container wrote (stdout and stderr interleaved).
    pub async fn log_tail(&self, id: &str, lines: usize) -> String {
        match self.output(id).await {
            Ok((out, err)) => {
                let all: Vec<&str> = out.lines().chain(err.lines()).collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(logs unavailable: {e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppContainer {
        AppContainer {
            cmd: Vec::new(),
            publish: true,
            healthcheck: true,
            name: "web-a".into(),
            image: "r/web@sha256:00".into(),
            env: vec![("TOKEN".into(), "hunter2".into())],
            labels: BTreeMap::from([("dev.slipway.service".into(), "web".into())]),
            host_port: 18001,
            container_port: 8080,
            volumes: vec!["data:/data".into()],
            resources: Resources {
                memory_bytes: Some(256 << 20),
                nano_cpus: Some(500_000_000),
                pids: Some(128),
            },
            restart: "unless-stopped".into(),
            log_max_size: "10m".into(),
            log_max_file: 3,
            network: None,
            user: Some("10001:10001".into()),
            read_only: true,
            stop_grace_secs: 10,
        }
    }

    #[test]
    fn the_port_is_published_on_loopback_only_with_limits_and_log_rotation() {
        let body = create_body(&spec());
        let host = body.host_config.unwrap();
        let binding = &host.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("18001"));
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.pids_limit, Some(128));
        assert_eq!(host.readonly_rootfs, Some(true));
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-file"], "3");
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels["dev.slipway.service"], "web");
    }

    #[test]
    fn a_serialized_spec_names_env_but_never_holds_values() {
        let json = serde_json::to_string(&spec()).unwrap();
        assert!(json.contains("\"env\":[\"TOKEN\"]"), "{json}");
        assert!(!json.contains("hunter2"));
    }
}
