//! What `slipway watch` asks of the engine: running containers by label in one call, a
//! container's environment, and the probe sibling: a small unprivileged
//! container that joins an app container's network namespace and sleeps, so the watchdog can
//! exec its HTTP probe there without the privileged host agent (which only exists while the
//! deploy lock is held).

use std::collections::{BTreeMap, HashMap};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};

use super::{Engine, EngineError, LABEL_MANAGED, LABEL_ROLE};

/// The role label of a probe sibling. Not `probe`: a rollout removes `agent`/`probe` helpers it
/// finds as leftovers of a dead run, and a watchdog's sibling is neither dead nor the rollout's.
pub const ROLE_WATCH_PROBE: &str = "watch-probe";

/// A probe sibling: joins `target`'s network namespace, runs a sleep loop, holds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSibling {
    /// Fixed per service, so there is at most one, whoever made it.
    pub name: String,
    /// Needs `sh`, `sleep`, `timeout` and `wget` (busybox or alpine: the pinned reload image).
    pub image: String,
    /// The app container whose network namespace it joins.
    pub target: String,
    pub labels: Vec<(String, String)>,
}

/// `docker run --network container:TARGET --cap-drop ALL --read-only --user 65534:65534
/// --security-opt no-new-privileges --memory 16m --pids-limit 16 IMAGE sh -c 'while :; do sleep
/// 3600; done'`.
pub fn probe_body(spec: &ProbeSibling) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_ROLE.into(), ROLE_WATCH_PROBE.into());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(
            ["sh", "-c", "while :; do sleep 3600; done"]
                .map(String::from)
                .to_vec(),
        ),
        user: Some("65534:65534".into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{}", spec.target)),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            memory: Some(16 << 20),
            pids_limit: Some(16),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container as a list call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub created_unix: i64,
}

impl Listed {
    pub fn role(&self) -> Option<&str> {
        self.labels.get(LABEL_ROLE).map(String::as_str)
    }
}

impl EngineError {
    /// The container asked about is gone (404) or not running (409).
    pub fn container_gone(&self) -> bool {
        matches!(
            self,
            EngineError::Api {
                source: BollardError::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                },
                ..
            }
        )
    }
}

impl Engine {
    /// Running (or paused) containers carrying all of `labels`, from one list call: no inspect.
    pub async fn list_running(&self, labels: &[(&str, &str)]) -> Result<Vec<Listed>, EngineError> {
        let filters = HashMap::from([
            (
                "label",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>(),
            ),
            ("status", vec!["running".into(), "paused".into()]),
        ]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| self.unreachable_or("listing containers", source))?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                Some(Listed {
                    id: s.id?,
                    labels: s.labels.unwrap_or_default().into_iter().collect(),
                    created_unix: s.created.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The values of `names` in a container's environment (those it has). Values are secrets:
    /// callers pass them on to a new container and never print them.
    pub async fn env_of(
        &self,
        id: &str,
        names: &[String],
    ) -> Result<Vec<(String, String)>, EngineError> {
        let config = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(EngineError::api(format!("inspecting container {id}")))?
            .config
            .unwrap_or_default();
        let env: BTreeMap<String, String> = config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        Ok(names
            .iter()
            .filter_map(|n| env.get(n).map(|v| (n.clone(), v.clone())))
            .collect())
    }

    /// Creates and starts a probe sibling named exactly `spec.name`; `NameTaken` when one exists.
    pub async fn start_probe_sibling(&self, spec: &ProbeSibling) -> Result<String, EngineError> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let id = match self
            .docker
            .create_container(Some(options), probe_body(spec))
            .await
        {
            Ok(c) => c.id,
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                return Err(EngineError::NameTaken {
                    name: spec.name.clone(),
                });
            }
            Err(source) => {
                return Err(EngineError::Api {
                    op: format!(
                        "creating the probe sibling {} in the network of {}",
                        spec.name, spec.target
                    ),
                    source,
                });
            }
        };
        if let Err(e) = self.start(&id).await {
            let _ = self.remove_container(&id).await;
            return Err(e);
        }
        Ok(id)
    }

    /// An error that means the engine itself is gone is `Unreachable`; others stay API errors.
    fn unreachable_or(&self, op: &str, source: BollardError) -> EngineError {
        if matches!(source, BollardError::DockerResponseServerError { .. }) {
            EngineError::Api {
                op: op.into(),
                source,
            }
        } else {
            EngineError::Unreachable {
                host: self.host.clone(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sibling_joins_the_network_and_holds_no_privilege() {
        let body = probe_body(&ProbeSibling {
            name: "slipway-probe-web".into(),
            image: "r/busybox@sha256:00".into(),
            target: "abc".into(),
            labels: vec![("dev.slipway.service".into(), "web".into())],
        });
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:abc"));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.pid_mode, None, "not in the host's PID namespace");
        assert!(host.binds.is_none(), "mounts nothing");
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_ROLE], ROLE_WATCH_PROBE);
        assert_eq!(labels[LABEL_MANAGED], "true");
    }
}
