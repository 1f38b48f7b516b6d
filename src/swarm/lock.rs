//! The cluster-wide deploy lock: a service named `slipway-lock-<name>` with no replicas, created
//! on the manager. Swarm's store refuses a second service of the same name (409), so exactly one
//! deploy holds it, whichever node or job asks. A heartbeat moves its expiry label forward; a lock
//! whose heartbeat stopped longer than the TTL ago is taken over.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::task::JoinHandle;

use crate::engine::{Engine, EngineError};
use crate::host::lock::Owner;

const LABEL_LOCK: &str = "dev.slipway.lock";
const LABEL_OWNER: &str = "dev.slipway.lock-owner";
const LABEL_EXPIRES: &str = "dev.slipway.lock-expires-ms";

#[derive(Debug, thiserror::Error)]
pub enum SwarmLockError {
    #[error("another deploy of {service} holds the cluster lock (service {lock}, held by {owner})")]
    Held {
        service: String,
        lock: String,
        owner: String,
    },
    #[error("taking the cluster lock {lock} failed: {source}")]
    Engine {
        lock: String,
        #[source]
        source: EngineError,
    },
}

pub struct SwarmLock {
    name: String,
    heartbeat: JoinHandle<()>,
}

pub fn lock_name(service: &str) -> String {
    format!("slipway-lock-{service}")
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

fn labels(service: &str, owner: &Owner, ttl: Duration) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_LOCK.to_string(), service.to_string()),
        (
            LABEL_OWNER.to_string(),
            format!("{} (host {}, pid {})", owner.run, owner.host, owner.pid),
        ),
        (
            LABEL_EXPIRES.to_string(),
            (now_ms() + ttl.as_millis()).to_string(),
        ),
        (crate::engine::LABEL_MANAGED.to_string(), "true".to_string()),
    ])
}

impl SwarmLock {
    /// Takes the lock or says who holds it; `image` is any pinned image (no task ever runs).
    pub async fn acquire(
        engine: &Engine,
        service: &str,
        image: &str,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<SwarmLock, SwarmLockError> {
        let name = lock_name(service);
        let err = |source| SwarmLockError::Engine {
            lock: name.clone(),
            source,
        };
        for _ in 0..2 {
            let body = json!({
                "Name": name,
                "Labels": labels(service, owner, ttl),
                "TaskTemplate": {"ContainerSpec": {"Image": image}},
                "Mode": {"Replicated": {"Replicas": 0}},
            });
            if engine
                .create_service_unless_taken(body)
                .await
                .map_err(err)?
            {
                let heartbeat = tokio::spawn(beat(
                    engine.clone(),
                    name.clone(),
                    labels(service, owner, ttl),
                    ttl,
                ));
                return Ok(SwarmLock { name, heartbeat });
            }
            let Some(held) = engine.inspect_service(&name).await.map_err(err)? else {
                continue;
            };
            let expires: u128 = held
                .labels
                .get(LABEL_EXPIRES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u128::MAX);
            if expires > now_ms() {
                return Err(SwarmLockError::Held {
                    service: service.to_string(),
                    lock: name.clone(),
                    owner: held.labels.get(LABEL_OWNER).cloned().unwrap_or_default(),
                });
            }
            tracing::warn!("the cluster lock {name} expired; taking it over");
            engine.remove_service(&name).await.map_err(err)?;
        }
        Err(SwarmLockError::Held {
            service: service.to_string(),
            lock: name,
            owner: "a run that keeps re-taking it".into(),
        })
    }

    pub async fn release(self, engine: &Engine) {
        self.heartbeat.abort();
        if let Err(e) = engine.remove_service(&self.name).await {
            tracing::warn!(
                "releasing the cluster lock {} failed: {}",
                self.name,
                e.with_causes()
            );
        }
    }
}

async fn beat(engine: Engine, name: String, mut labels: BTreeMap<String, String>, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        labels.insert(
            LABEL_EXPIRES.to_string(),
            (now_ms() + ttl.as_millis()).to_string(),
        );
        if let Err(e) = engine.relabel_service(&name, &labels).await {
            tracing::warn!("the cluster lock's heartbeat failed: {}", e.with_causes());
        }
    }
}
