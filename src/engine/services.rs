//! Docker Swarm calls: services, their tasks, secrets, nodes. The service body is built from the
//! project's own `ServiceTemplate` by a pure function, so it is unit-testable without a daemon.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{SecretSpec, ServiceSpec};
use bollard::query_parameters::{
    InspectServiceOptionsBuilder, ListNodesOptionsBuilder, ListSecretsOptionsBuilder,
    ListTasksOptionsBuilder, UpdateServiceOptionsBuilder,
};
use serde_json::{Value, json};

use super::{Engine, EngineError};

/// On a service: the image the update replaced (what `service rollback` returns to).
pub const LABEL_PREVIOUS_IMAGE: &str = "dev.slipway.previous-image";

/// What slipway asks Swarm to run: one replicated service of a pinned image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceTemplate {
    pub name: String,
    /// Always `REPO@sha256:...`.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Plain values; secrets never go here.
    #[serde(skip)]
    pub env: Vec<(String, String)>,
    pub secrets: Vec<SecretMount>,
    pub replicas: u64,
    pub network: String,
    /// `dnsrr` or `vip`.
    pub endpoint_mode: String,
    /// Host-mode published port: (published, target).
    pub publish: Option<(u16, u16)>,
    pub constraints: Vec<String>,
    pub update: UpdatePolicy,
    /// `None`: the image's own HEALTHCHECK.
    pub health: Option<HealthTemplate>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
    pub user: Option<String>,
    pub read_only: bool,
    pub stop_grace: Duration,
    /// `SOURCE:TARGET[:ro]`, named volumes or binds.
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SecretMount {
    pub secret_id: String,
    pub secret_name: String,
    /// File name under /run/secrets.
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct UpdatePolicy {
    pub parallelism: u64,
    pub delay: Duration,
    pub monitor: Duration,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthTemplate {
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// A service as the manager reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceState {
    pub id: String,
    pub version: u64,
    pub image: String,
    pub previous_image: Option<String>,
    pub replicas: u64,
    pub labels: HashMap<String, String>,
    /// `UpdateStatus.State`: `updating`, `completed`, `rollback_completed`, `paused`, ...
    pub update_state: Option<String>,
    pub update_message: Option<String>,
    /// `UpdateStatus.StartedAt`, to tell this update's end from an earlier one's.
    pub update_started: Option<String>,
}

/// One task of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub id: String,
    pub node_id: String,
    pub image: String,
    pub state: String,
    pub desired_state: String,
    pub message: String,
    pub error: String,
}

/// One swarm node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub hostname: String,
    pub state: String,
    pub manager: bool,
}

fn nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// The service body the engine takes (pure).
pub fn service_body(t: &ServiceTemplate) -> Value {
    let mut container = json!({
        "Image": t.image,
        "Labels": t.labels,
        "Env": t.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "ReadOnly": t.read_only,
        "StopGracePeriod": nanos(t.stop_grace),
        "Init": true,
        "Secrets": t.secrets.iter().map(|s| json!({
            "SecretID": s.secret_id, "SecretName": s.secret_name,
            "File": {"Name": s.target, "UID": "0", "GID": "0", "Mode": 0o444}
        })).collect::<Vec<_>>(),
        "Mounts": t.volumes.iter().map(|v| mount(v)).collect::<Vec<_>>(),
    });
    if let Some(user) = &t.user {
        container["User"] = json!(user);
    }
    if let Some(h) = &t.health {
        container["HealthCheck"] = json!({
            "Test": h.test, "Interval": nanos(h.interval), "Timeout": nanos(h.timeout),
            "Retries": h.retries, "StartPeriod": nanos(h.start_period),
        });
    }
    let update = json!({
        "Parallelism": t.update.parallelism, "Delay": nanos(t.update.delay),
        "Monitor": nanos(t.update.monitor), "Order": "start-first",
        "MaxFailureRatio": 0.0,
    });
    let mut update_cfg = update.clone();
    update_cfg["FailureAction"] = json!("rollback");
    let mut rollback_cfg = update;
    rollback_cfg["FailureAction"] = json!("pause");
    json!({
        "Name": t.name,
        "Labels": t.labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": limits(t)},
            "RestartPolicy": {"Condition": "any", "Delay": nanos(Duration::from_secs(1))},
            "Placement": {"Constraints": t.constraints},
            "Networks": [{"Target": t.network}],
        },
        "Mode": {"Replicated": {"Replicas": t.replicas}},
        "UpdateConfig": update_cfg,
        "RollbackConfig": rollback_cfg,
        "EndpointSpec": endpoint(t),
    })
}

fn limits(t: &ServiceTemplate) -> Value {
    let mut l = json!({});
    if let Some(m) = t.memory_bytes {
        l["MemoryBytes"] = json!(m);
    }
    if let Some(c) = t.nano_cpus {
        l["NanoCPUs"] = json!(c);
    }
    if let Some(p) = t.pids {
        l["Pids"] = json!(p);
    }
    l
}

fn endpoint(t: &ServiceTemplate) -> Value {
    let ports: Vec<Value> = t
        .publish
        .iter()
        .map(|(published, target)| {
            json!({"Protocol": "tcp", "TargetPort": target, "PublishedPort": published, "PublishMode": "host"})
        })
        .collect();
    json!({"Mode": t.endpoint_mode, "Ports": ports})
}

fn mount(v: &str) -> Value {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target) = (parts[0], parts.get(1).copied().unwrap_or_default());
    let kind = if source.starts_with('/') {
        "bind"
    } else {
        "volume"
    };
    json!({"Type": kind, "Source": source, "Target": target, "ReadOnly": parts.get(2) == Some(&"ro")})
}

fn spec_from(body: Value, op: &str) -> Result<ServiceSpec, EngineError> {
    serde_json::from_value(body).map_err(|e| EngineError::Api {
        op: op.to_string(),
        source: BollardError::JsonDataError {
            message: e.to_string(),
            column: 0,
        },
    })
}

fn text<T: serde::Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn image_of(spec: Option<&ServiceSpec>) -> String {
    spec.and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

impl Engine {
    /// The service named `name`, or `None` when there is none.
    pub async fn inspect_service(&self, name: &str) -> Result<Option<ServiceState>, EngineError> {
        let options = InspectServiceOptionsBuilder::default().build();
        let s = match self.docker.inspect_service(name, Some(options)).await {
            Ok(s) => s,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(self.classify(&format!("inspecting service {name}"), e)),
        };
        let replicas = s
            .spec
            .as_ref()
            .and_then(|s| s.mode.as_ref())
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .unwrap_or_default() as u64;
        Ok(Some(ServiceState {
            id: s.id.clone().unwrap_or_default(),
            version: s.version.as_ref().and_then(|v| v.index).unwrap_or_default(),
            image: image_of(s.spec.as_ref()),
            previous_image: s
                .spec
                .as_ref()
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(LABEL_PREVIOUS_IMAGE).cloned()),
            replicas,
            labels: s
                .spec
                .as_ref()
                .and_then(|s| s.labels.clone())
                .unwrap_or_default(),
            update_state: s.update_status.as_ref().map(|u| text(&u.state)),
            update_message: s.update_status.as_ref().and_then(|u| u.message.clone()),
            update_started: s
                .update_status
                .as_ref()
                .and_then(|u| u.started_at.as_ref())
                .map(|t| format!("{t:?}")),
        }))
    }

    pub async fn create_service(&self, t: &ServiceTemplate) -> Result<String, EngineError> {
        let op = format!("creating service {}", t.name);
        let spec = spec_from(service_body(t), &op)?;
        let r = self
            .docker
            .create_service(spec, None)
            .await
            .map_err(|e| self.classify(&op, e))?;
        Ok(r.id.unwrap_or_default())
    }

    /// Replaces the service's spec (at `version`, so a concurrent change fails).
    pub async fn update_service(
        &self,
        t: &ServiceTemplate,
        version: u64,
    ) -> Result<(), EngineError> {
        let op = format!("updating service {}", t.name);
        let spec = spec_from(service_body(t), &op)?;
        self.put_spec(&t.name, &op, spec, version, None).await
    }

    /// `docker service rollback`: the manager puts the previous spec back.
    pub async fn rollback_service(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("rolling back service {name}");
        let (spec, version) = self.current_spec(name, &op).await?;
        self.put_spec(name, &op, spec, version, Some("previous"))
            .await
    }

    /// Changes only the service's labels (the lock's heartbeat).
    pub async fn relabel_service(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let op = format!("relabelling service {name}");
        let (mut spec, version) = self.current_spec(name, &op).await?;
        spec.labels = Some(labels.clone().into_iter().collect());
        self.put_spec(name, &op, spec, version, None).await
    }

    /// The service's spec as the manager holds it, with the version an update must name.
    async fn current_spec(&self, name: &str, op: &str) -> Result<(ServiceSpec, u64), EngineError> {
        let s = self
            .docker
            .inspect_service(name, None)
            .await
            .map_err(|e| self.classify(op, e))?;
        let version = s.version.and_then(|v| v.index).unwrap_or_default();
        Ok((s.spec.unwrap_or_default(), version))
    }

    /// `POST /services/NAME/update` at `version`; `rollback` asks the manager for the previous spec.
    async fn put_spec(
        &self,
        name: &str,
        op: &str,
        spec: ServiceSpec,
        version: u64,
        rollback: Option<&str>,
    ) -> Result<(), EngineError> {
        let mut options = UpdateServiceOptionsBuilder::default().version(version as i32);
        if let Some(r) = rollback {
            options = options.rollback(r);
        }
        self.docker
            .update_service(name, spec, options.build(), None)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(op, e))
    }

    /// Creates a service from a raw body; `Ok(false)` when the name is taken (409).
    pub async fn create_service_unless_taken(&self, body: Value) -> Result<bool, EngineError> {
        let op = "creating the lock service";
        let spec = spec_from(body, op)?;
        match self.docker.create_service(spec, None).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(false),
            Err(e) => Err(self.classify(op, e)),
        }
    }

    pub async fn remove_service(&self, name: &str) -> Result<(), EngineError> {
        match self.docker.delete_service(name).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.classify(&format!("removing service {name}"), e)),
        }
    }

    /// The service's tasks (every state), newest first as the manager lists them.
    pub async fn service_tasks(&self, name: &str) -> Result<Vec<TaskState>, EngineError> {
        let filters = HashMap::from([("service".to_string(), vec![name.to_string()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = self
            .docker
            .list_tasks(Some(options))
            .await
            .map_err(|e| self.classify(&format!("listing the tasks of {name}"), e))?;
        Ok(tasks
            .into_iter()
            .map(|t| TaskState {
                id: t.id.unwrap_or_default(),
                node_id: t.node_id.unwrap_or_default(),
                image: t
                    .spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default(),
                state: text(&t.status.as_ref().and_then(|s| s.state)),
                desired_state: text(&t.desired_state),
                message: t
                    .status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_default(),
                error: t.status.and_then(|s| s.err).unwrap_or_default(),
            })
            .collect())
    }

    /// A secret named `name` with `value`, created unless one of that name exists; its id.
    /// The value goes to the manager only; it is never logged.
    pub async fn ensure_secret(
        &self,
        name: &str,
        value: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let op = format!("creating secret {name}");
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let options = ListSecretsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_secrets(Some(options))
            .await
            .map_err(|e| self.classify(&op, e))?;
        if let Some(id) = found
            .into_iter()
            .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
            .and_then(|s| s.id)
        {
            return Ok(id);
        }
        use base64::Engine as _;
        let spec = SecretSpec {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            ..Default::default()
        };
        let r = self
            .docker
            .create_secret(spec)
            .await
            .map_err(|e| self.classify(&op, e))?;
        Ok(r.id)
    }

    /// The network's driver and scope (`overlay`, `swarm` for an overlay), or `None`.
    pub async fn network_driver(
        &self,
        name: &str,
    ) -> Result<Option<(String, String)>, EngineError> {
        match self.docker.inspect_network(name, None).await {
            Ok(n) => Ok(Some((
                n.driver.unwrap_or_default(),
                n.scope.unwrap_or_default(),
            ))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.classify(&format!("inspecting network {name}"), e)),
        }
    }

    /// The swarm's nodes; an engine that is not a manager answers with an error.
    pub async fn swarm_nodes(&self) -> Result<Vec<NodeState>, EngineError> {
        let options = ListNodesOptionsBuilder::default().build();
        let nodes = self.docker.list_nodes(Some(options)).await.map_err(|e| {
            self.classify("listing the swarm's nodes (is this engine a manager?)", e)
        })?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeState {
                hostname: n
                    .description
                    .as_ref()
                    .and_then(|d| d.hostname.clone())
                    .unwrap_or_default(),
                state: text(&n.status.as_ref().and_then(|s| s.state)),
                manager: n.manager_status.is_some(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> ServiceTemplate {
        ServiceTemplate {
            name: "web".into(),
            image: format!("r/web@sha256:{}", "ab".repeat(32)),
            labels: BTreeMap::from([("dev.slipway.service".into(), "web".into())]),
            env: vec![("MODE".into(), "prod".into())],
            secrets: vec![SecretMount {
                secret_id: "id1".into(),
                secret_name: "web-DB_PASSWORD-0123".into(),
                target: "DB_PASSWORD".into(),
            }],
            replicas: 3,
            network: "overlay".into(),
            endpoint_mode: "dnsrr".into(),
            publish: None,
            constraints: vec!["node.role==worker".into()],
            update: UpdatePolicy {
                parallelism: 1,
                delay: Duration::ZERO,
                monitor: Duration::from_secs(5),
            },
            health: None,
            memory_bytes: Some(1 << 28),
            nano_cpus: None,
            pids: None,
            user: None,
            read_only: true,
            stop_grace: Duration::from_secs(10),
            volumes: vec!["data:/data:ro".into()],
        }
    }

    #[test]
    fn the_body_is_start_first_with_rollback_and_reads_back_as_a_service_spec() {
        let body = service_body(&template());
        assert_eq!(body["UpdateConfig"]["Order"], "start-first");
        assert_eq!(body["UpdateConfig"]["FailureAction"], "rollback");
        assert_eq!(body["UpdateConfig"]["Monitor"], 5_000_000_000i64);
        assert_eq!(body["EndpointSpec"]["Mode"], "dnsrr");
        assert_eq!(body["Mode"]["Replicated"]["Replicas"], 3);
        let c = &body["TaskTemplate"]["ContainerSpec"];
        assert_eq!(c["Env"][0], "MODE=prod");
        assert_eq!(c["Secrets"][0]["File"]["Name"], "DB_PASSWORD");
        assert_eq!(c["Mounts"][0]["Type"], "volume");
        assert_eq!(c["Mounts"][0]["ReadOnly"], true);
        assert!(c.get("HealthCheck").is_none(), "the image's own check");
        let spec = spec_from(body, "test").unwrap();
        assert_eq!(image_of(Some(&spec)), template().image);
    }

    #[test]
    fn a_host_port_is_published_in_host_mode() {
        let mut t = template();
        t.publish = Some((18090, 8080));
        t.health = Some(HealthTemplate {
            test: vec!["CMD".into(), "/bin/true".into()],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            retries: 2,
            start_period: Duration::ZERO,
        });
        let body = service_body(&t);
        assert_eq!(body["EndpointSpec"]["Ports"][0]["PublishMode"], "host");
        assert_eq!(body["EndpointSpec"]["Ports"][0]["PublishedPort"], 18090);
        let h = &body["TaskTemplate"]["ContainerSpec"]["HealthCheck"];
        assert_eq!(h["Retries"], 2);
    }
}
