//! One rollout per service per host: a container created under a fixed name (the engine makes
//! creation atomic). It runs a loop that exits when no heartbeat (SIGHUP) arrived for the TTL, so
//! a lock whose owner was killed expires by itself and can be taken over. The same container is
//! the holder's host agent: privileged, host PID namespace, the snippet directory mounted, so
//! every host step is an exec into it rather than a new container.

use std::time::Duration;

use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::{ContainerInfo, Engine, EngineError, OneShot};
use crate::host::HostAccess;
use crate::host::agent::SNIPPET_MOUNT;

pub const LABEL_OWNER: &str = "dev.slipway.lock.owner";
pub const LABEL_OWNER_HOST: &str = "dev.slipway.lock.host";
pub const LABEL_OWNER_PID: &str = "dev.slipway.lock.pid";
pub const LABEL_TTL: &str = "dev.slipway.lock.ttl";

/// Who asks for the lock: the CI run URL when there is one, the host and the process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    pub run: String,
    pub host: String,
    pub pid: u32,
}

impl Owner {
    pub fn current(env: &std::collections::BTreeMap<String, String>) -> Owner {
        let run = match (
            env.get("GITHUB_SERVER_URL"),
            env.get("GITHUB_REPOSITORY"),
            env.get("GITHUB_RUN_ID"),
        ) {
            (Some(s), Some(r), Some(id)) => format!("{s}/{r}/actions/runs/{id}"),
            _ => "local".into(),
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Owner {
            run,
            host,
            pid: std::process::id(),
        }
    }
}

#[derive(Debug, Error)]
pub enum LockError {
    #[error("the deploy lock for `{service}` is held by {owner} (since {since})")]
    Held {
        service: String,
        owner: String,
        since: String,
    },
    #[error("interrupted while waiting for the deploy lock of `{service}`")]
    Interrupted { service: String },
    #[error("{key} {path} does not exist on the host; nothing was changed")]
    SnippetDirMissing { key: &'static str, path: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl LockError {
    pub fn hint(&self) -> String {
        match self {
            LockError::Held { service, .. } => format!(
                "wait for that run, pass --lock-wait 5m, or if it is gone: `slipway lock release --config ...` (it also expires by itself once its heartbeat stops; see `slipway lock status` for {service})"
            ),
            LockError::SnippetDirMissing { key, path } => format!(
                "Day 0 creates it (docs/operator-guide.md, Day 0 step 3, and the section of your proxy): as root on the host `install -d -m 0755 {path}`, a placeholder file per service, and the proxy's include of it; or fix {key} in the spec"
            ),
            LockError::Engine(e) => e.hint().unwrap_or_else(|| {
                "check that the Docker engine answers (`slipway doctor`)".into()
            }),
            LockError::Interrupted { .. } => {
                "check that the Docker engine answers (`slipway doctor`)".into()
            }
        }
    }
}

pub fn lock_name(service: &str) -> String {
    format!("slipway-lock-{service}")
}

/// What the engine says about a service's lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum LockState {
    Free,
    Held {
        owner: String,
        host: String,
        pid: String,
        since: String,
        ttl_secs: String,
    },
    /// Released by its holder; the engine is removing it (free in a moment).
    Releasing {
        owner: String,
        since: String,
    },
    /// The holder's heartbeat stopped: anyone may take it over.
    Expired {
        owner: String,
        at: String,
    },
}

/// Seconds since an engine timestamp (RFC 3339), if it parses.
fn age_secs(timestamp: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(timestamp.trim_end_matches('Z')).ok()?;
    std::time::SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs())
}

fn state_of(info: &ContainerInfo) -> LockState {
    let label = |k: &str| info.labels.get(k).cloned().unwrap_or_default();
    let ttl: u64 = label(LABEL_TTL).parse().unwrap_or(30);
    // Being removed: its holder released it (or a run takes it over); free once it is gone.
    if info.status == "removing" {
        return LockState::Releasing {
            owner: label(LABEL_OWNER),
            since: info.started_at.clone(),
        };
    }
    // Created but not started yet: its holder is between the two calls, unless that was
    // longer ago than the TTL (the holder died there).
    let starting = info.status == "created" && age_secs(&info.created).is_none_or(|a| a < ttl);
    if info.running || starting {
        LockState::Held {
            owner: label(LABEL_OWNER),
            host: label(LABEL_OWNER_HOST),
            pid: label(LABEL_OWNER_PID),
            since: info.started_at.clone(),
            ttl_secs: label(LABEL_TTL),
        }
    } else {
        LockState::Expired {
            owner: label(LABEL_OWNER),
            at: info.finished_at.clone(),
        }
    }
}

pub async fn status(engine: &Engine, service: &str) -> Result<LockState, EngineError> {
    Ok(match engine.inspect_container(&lock_name(service)).await? {
        None => LockState::Free,
        Some(info) => state_of(&info),
    })
}

/// Removes the lock whoever holds it (an operator's decision).
pub async fn force_release(engine: &Engine, service: &str) -> Result<bool, EngineError> {
    let existed = engine
        .inspect_container(&lock_name(service))
        .await?
        .is_some();
    engine.remove_container(&lock_name(service)).await?;
    Ok(existed)
}

/// How long a lock being removed (released by its holder, the engine finishing) is waited for,
/// whatever `--lock-wait` says: the engine's removal takes well under a second.
const RELEASE_GRACE: Duration = Duration::from_secs(10);

/// A held lock. Dropping it without `release` leaves the heartbeat stopped, so it expires.
pub struct Lock {
    pub id: String,
    /// The lock's container name; renamed `NAME-released-ID` on release.
    name: String,
    heartbeat: JoinHandle<()>,
}

#[derive(Debug, Clone)]
pub struct LockRequest<'a> {
    pub service: &'a str,
    pub host: &'a HostAccess,
    /// The proxy's directory on the host, mounted for the agent (`None`: no proxy file).
    pub snippet_dir: Option<&'a std::path::Path>,
    /// The spec key that names `snippet_dir`, for messages.
    pub dir_key: &'static str,
    pub owner: &'a Owner,
    pub ttl: Duration,
    pub wait: Duration,
}

/// A lock whose container is created but not started yet: already held (nobody else can
/// create it, and `lock status` shows it held), but its agent does not run yet.
pub struct Created {
    pub id: String,
    name: String,
    ttl: u64,
}

impl Created {
    /// Starts the container (the host agent) and its heartbeat. On failure it is removed.
    pub async fn start(self, engine: &Engine) -> Result<Lock, LockError> {
        if let Err(e) = engine.start(&self.id).await {
            let _ = engine.remove_container(&self.id).await;
            return Err(e.into());
        }
        let every = Duration::from_secs(self.ttl) / 3;
        let heartbeat = tokio::spawn(beat(engine.clone(), self.id.clone(), every));
        Ok(Lock {
            id: self.id,
            name: self.name,
            heartbeat,
        })
    }

    /// Gives the lock up without starting it.
    pub async fn abandon(self, engine: &Engine) {
        let _ = engine.remove_container(&self.id).await;
    }
}

impl Lock {
    pub async fn acquire(
        engine: &Engine,
        req: &LockRequest<'_>,
        cancel: &CancellationToken,
    ) -> Result<Lock, LockError> {
        Lock::create(engine, req, cancel).await?.start(engine).await
    }

    /// Takes the lock by creating its container (atomic on the name); waits up to `req.wait`
    /// while another run holds it; takes over one whose heartbeat stopped.
    pub async fn create(
        engine: &Engine,
        req: &LockRequest<'_>,
        cancel: &CancellationToken,
    ) -> Result<Created, LockError> {
        let name = lock_name(req.service);
        let ttl = req.ttl.as_secs().max(3);
        let spec = OneShot {
            name: name.clone(),
            image: req.host.image.to_string(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "last=$(date +%s); trap 'last=$(date +%s)' HUP; trap 'exit 0' TERM; \
                     while [ $(( $(date +%s) - last )) -lt {ttl} ]; do sleep 1; done"
                ),
            ],
            privileged: true,
            pid_host: true,
            mounts: req
                .snippet_dir
                .map(|d| (d.display().to_string(), SNIPPET_MOUNT.to_string()))
                .into_iter()
                .collect(),
            labels: vec![
                ("dev.slipway.service".into(), req.service.into()),
                (LABEL_OWNER.into(), req.owner.run.clone()),
                (LABEL_OWNER_HOST.into(), req.owner.host.clone()),
                (LABEL_OWNER_PID.into(), req.owner.pid.to_string()),
                (LABEL_TTL.into(), ttl.to_string()),
            ],
            network: None,
            deadline: req.ttl,
        };
        let give_up = tokio::time::Instant::now() + req.wait;
        let released_by = tokio::time::Instant::now() + RELEASE_GRACE;
        let (mut announced, mut pulled) = (false, false);
        loop {
            match engine.create_sibling(&name, &spec, "lock").await {
                Ok(id) => return Ok(Created { id, name, ttl }),
                Err(EngineError::NameTaken { .. }) => {}
                // The image is pulled only when the engine lacks it (one call less when not).
                Err(e) if e.is_not_found() && !pulled => {
                    engine.ensure_image(&spec.image).await?;
                    pulled = true;
                    continue;
                }
                Err(EngineError::MountSourceMissing { .. }) => {
                    return Err(LockError::SnippetDirMissing {
                        key: req.dir_key,
                        path: req
                            .snippet_dir
                            .map(|d| d.display().to_string())
                            .unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
            let Some(info) = engine.inspect_container(&name).await? else {
                continue;
            };
            match state_of(&info) {
                LockState::Releasing { .. } if tokio::time::Instant::now() < released_by => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                LockState::Expired { owner, at } => {
                    tracing::warn!(
                        "taking over the expired deploy lock of {} (held by {owner}, heartbeat stopped at {at})",
                        req.service
                    );
                    engine.remove_container(&info.id).await?;
                    continue;
                }
                // Still being removed after RELEASE_GRACE: waited for like a held lock.
                LockState::Held { owner, since, .. } | LockState::Releasing { owner, since } => {
                    if tokio::time::Instant::now() >= give_up {
                        return Err(LockError::Held {
                            service: req.service.into(),
                            owner,
                            since,
                        });
                    }
                    if !announced {
                        tracing::info!(
                            "waiting up to {}s for the deploy lock of {} (held by {owner})",
                            req.wait.as_secs(),
                            req.service
                        );
                        announced = true;
                    }
                }
                LockState::Free => continue,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = cancel.cancelled() => return Err(LockError::Interrupted { service: req.service.into() }),
            }
        }
    }

    pub async fn release(self, engine: &Engine) {
        self.heartbeat.abort();
        // Its name is free at once; the engine removes the container after (ADR 0010).
        let short = self.id.get(..12).unwrap_or(&self.id);
        let released = format!("{}-released-{short}", self.name);
        if let Err(e) = engine.free_name_and_remove(&self.id, &released).await {
            tracing::warn!(
                "could not release the deploy lock ({e}); it expires by itself once its heartbeat stops"
            );
        }
    }
}

async fn beat(engine: Engine, id: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = engine.signal(&id, "SIGHUP").await {
            tracing::warn!("deploy lock heartbeat failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timestamps_give_an_age() {
        assert!(age_secs("2020-01-02T03:04:05.123456789Z").unwrap() > 3600);
        assert!(age_secs("not a time").is_none());
    }

    #[test]
    fn a_lock_created_but_not_yet_started_is_held_not_expired() {
        let mut info = ContainerInfo {
            id: "x".into(),
            name: "slipway-lock-web".into(),
            image_id: String::new(),
            running: false,
            paused: false,
            status: "created".into(),
            health: None,
            exit_code: 0,
            pid: 0,
            created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            started_at: String::new(),
            finished_at: String::new(),
            labels: [(LABEL_TTL.to_string(), "30".to_string())].into(),
            health_log: Vec::new(),
        };
        assert!(matches!(state_of(&info), LockState::Held { .. }));
        info.created = "2020-01-02T03:04:05Z".into();
        assert!(matches!(state_of(&info), LockState::Expired { .. }));
        info.status = "exited".into();
        info.created = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        assert!(matches!(state_of(&info), LockState::Expired { .. }));
        info.status = "removing".into();
        assert!(matches!(state_of(&info), LockState::Releasing { .. }));
    }
}
