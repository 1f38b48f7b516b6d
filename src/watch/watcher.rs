//! One service under watch: find the container that serves it (by labels, so a new release is
//! picked up as soon as it runs), probe it through its probe sibling with the rollout gate's
//! HTTP options, count consecutive failures, and replace it under the deploy lock when it is
//! stuck: the same digest, through the normal plan and executor.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{Event, Events};
use super::policy::{Decision, Policy};
use crate::engine::{
    ContainerInfo, Engine, EngineError, LABEL_MANAGED, ProbeSession, ProbeSibling, unique_suffix,
};
use crate::exit::Exit;
use crate::host::HostAccess;
use crate::host::agent::HostAgent;
use crate::host::lock::{LABEL_OWNER, LockError, Owner};
use crate::image::reference::PinnedImage;
use crate::rollout::execute::{Context, Evidence, NoCheck};
use crate::rollout::label;
use crate::rollout::{self, Facts, Gate, HttpGate, Outcome, Replace, Report, Target};
use crate::spec::ServiceSpec;

/// On a probe sibling: the container whose network it joined.
pub const LABEL_PROBE_TARGET: &str = "dev.slipway.probe.target";

/// What every service's watcher shares.
pub struct Shared {
    pub engine: Engine,
    pub host: HostAccess,
    pub owner: Owner,
    /// Consecutive failed probes that make a container stuck.
    pub failures: u32,
    /// Overrides each spec's `health.http.interval`.
    pub interval: Option<Duration>,
    pub policy: Policy,
    pub lock_ttl: Duration,
    pub events: Events,
    /// Poked when an engine call fails, so the supervisor checks the engine at once.
    pub trouble: Notify,
}

/// A probe sibling is named `slipway-probe-<service>-<pid>-<nanos>`: one per watchdog process,
/// so a `--once` run and the long-running watchdog can probe the same service at once.
pub fn sibling_prefix(service: &str) -> String {
    format!("slipway-probe-{service}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A unix time as RFC 3339, as the engine writes times.
fn since(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy,
    Failed {
        streak: u32,
    },
    /// No running container of the service: nothing to probe (a stopped service is its restart
    /// policy's business, or a human's).
    NoActive,
    /// The probe could not run (the engine failed, or the sibling had to be made again): no
    /// verdict, so it counts neither way.
    Inconclusive(String),
    /// The service's deploy lock is held: a deploy runs, nothing is probed or replaced.
    Locked {
        owner: String,
    },
}

/// What a replacement attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    Replaced,
    /// The replacement failed and was undone (`exit` says how: rolled back, rollback failed,
    /// engine unavailable, ...).
    Failed(Exit),
    Backoff,
    Capped,
    LockHeld,
    /// Under the lock, another container turned out to be serving: nothing to replace.
    NotServing,
    Interrupted,
}

#[derive(Debug, Default)]
struct Said {
    backoff: bool,
    capped: bool,
    lock_held: bool,
    /// Under the lock it turned out not to be the container Caddy routes to.
    not_serving: bool,
}

struct Current {
    info: ContainerInfo,
    http: HttpGate,
    sibling: Option<ProbeSession>,
    streak: u32,
    first_failure: Option<Instant>,
    said: Said,
}

pub struct Watcher {
    pub spec: ServiceSpec,
    driver: crate::host::proxy::Driver,
    current: Option<Current>,
    /// A `lock_held` event was emitted for the lock seen now.
    said_locked: bool,
    /// Replacements that failed (unix ms): they left no container to carry them in a label.
    failed: Vec<u64>,
}

impl Watcher {
    /// `spec` must have `[health.http]` (see `specs::unwatchable`).
    pub fn new(spec: ServiceSpec) -> Watcher {
        let driver = spec
            .proxy()
            .and_then(|p| p.driver(&spec.name, None).ok())
            .expect("a valid spec on one host names a proxy whose commands split");
        Watcher {
            spec,
            driver,
            current: None,
            said_locked: false,
            failed: Vec::new(),
        }
    }

    pub fn interval(&self, sh: &Shared) -> Duration {
        sh.interval.unwrap_or_else(|| {
            self.spec
                .health
                .http
                .as_ref()
                .map_or(Duration::from_secs(1), |h| h.interval)
        })
    }

    fn gate(&self, info: &ContainerInfo, sh: &Shared) -> HttpGate {
        let mut http = Gate::from_spec(&self.spec, &label(info, rollout::LABEL_REVISION))
            .http
            .expect("watched specs have [health.http]");
        http.interval = self.interval(sh);
        http
    }

    /// Finds the serving container and probes it once.
    pub async fn probe(&mut self, sh: &Shared) -> Probe {
        // One list call: the service's running app containers, and its deploy lock if held.
        let listed = match sh
            .engine
            .list_running(&[
                (LABEL_MANAGED, "true"),
                (rollout::LABEL_SERVICE, &self.spec.name),
            ])
            .await
        {
            Ok(l) => l,
            Err(e) => return inconclusive(sh, e.to_string()),
        };
        // A deploy (or another watchdog's replacement) is running: its own gate watches the
        // service, and the container it starts does not answer yet. Not probed meanwhile.
        // A released lock (renamed, being removed) is not a deploy.
        let lock_name = crate::host::lock::lock_name(&self.spec.name);
        let held = listed
            .iter()
            .find(|c| c.role() == Some("lock") && c.name == lock_name);
        if let Some(lock) = held {
            let owner = lock.labels.get(LABEL_OWNER).cloned().unwrap_or_default();
            return self.lock_held(sh, owner, lock.created_unix);
        }
        if std::mem::take(&mut self.said_locked) {
            tracing::info!("{}: the deploy lock is free again; probing", self.spec.name);
        }
        let apps = listed.iter().filter(|c| c.role() == Some("app"));
        let running = match inspect_running(sh, apps.map(|c| c.id.as_str())).await {
            Ok(running) => running,
            Err(e) => return inconclusive(sh, e.to_string()),
        };
        // Without the lock the snippet cannot be read: the newest running container is the one
        // serving between deploys. Before a replacement this is checked again under the lock.
        let facts = Facts {
            containers: running,
            ..Facts::default()
        };
        let Some(active) = rollout::active(&facts).cloned() else {
            self.forget_current(sh).await;
            return Probe::NoActive;
        };
        self.follow(sh, active).await;
        let cur = self.current.as_mut().expect("followed above");
        cur.probe(sh, &self.spec.name).await
    }

    /// The deploy lock is held: said once while it stays held.
    fn lock_held(&mut self, sh: &Shared, owner: String, created_unix: i64) -> Probe {
        if !self.said_locked {
            self.said_locked = true;
            sh.events.emit(Event::LockHeld {
                service: self.spec.name.clone(),
                container: self.current.as_ref().map(|c| c.info.name.clone()),
                owner: owner.clone(),
                since: since(created_unix),
            });
        }
        Probe::Locked { owner }
    }

    /// No container of the service runs: the one watched is forgotten.
    async fn forget_current(&mut self, sh: &Shared) {
        self.remove_sibling(sh).await;
        if let Some(gone) = self.current.take() {
            tracing::info!(
                "{}: {} no longer runs; nothing to probe",
                self.spec.name,
                gone.info.name
            );
        }
    }

    /// Watches `active` from now on, unless it is already watched (the same container, not
    /// restarted since).
    async fn follow(&mut self, sh: &Shared, active: ContainerInfo) {
        let same = self
            .current
            .as_ref()
            .is_some_and(|c| c.info.id == active.id && c.info.started_at == active.started_at);
        if same {
            return;
        }
        if self.current.as_ref().is_some_and(|c| c.sibling.is_some()) {
            self.remove_sibling(sh).await;
        }
        sh.events.emit(Event::Watching {
            service: self.spec.name.clone(),
            container: active.name.clone(),
            id: active.id.clone(),
            revision: label(&active, rollout::LABEL_REVISION),
            digest: label(&active, rollout::LABEL_DIGEST),
        });
        self.current = Some(Current {
            http: self.gate(&active, sh),
            info: active,
            sibling: None,
            streak: 0,
            first_failure: None,
            said: Said::default(),
        });
    }

    /// Removes this service's probe sibling (on a new target, and when the watchdog stops). It
    /// would go by itself once its stdin closes; this makes it immediate.
    pub async fn remove_sibling(&mut self, sh: &Shared) {
        let Some(session) = self.current.as_mut().and_then(|c| c.sibling.take()) else {
            return;
        };
        let id = session.id.clone();
        drop(session);
        if let Err(e) = sh.engine.remove_container(&id).await {
            tracing::debug!("{}: removing the probe sibling: {e}", self.spec.name);
        }
    }

    /// Replaces the stuck container, unless crash-loop protection or a held lock says not now.
    pub async fn replace(&mut self, sh: &Shared, cancel: &CancellationToken) -> Replacement {
        let Some(cur) = self.current.as_mut() else {
            return Replacement::NotServing;
        };
        // Said once; the next deploy reconciles it (a new container is watched afresh).
        if cur.said.not_serving {
            return Replacement::NotServing;
        }
        let now = now_ms();
        self.failed = sh.policy.recent(&self.failed, now);
        let mut history = Replace::history_of(&cur.info);
        history.extend(&self.failed);
        let history = sh.policy.recent(&history, now);
        if let Some(held) = cur.held_back(sh, &self.spec.name, &history, now) {
            return held;
        }
        let spec = self.spec.clone();
        let request =
            rollout::locked::lock_request(&spec, &sh.host, &sh.owner, sh.lock_ttl, Duration::ZERO);
        let body = async |agent: &HostAgent| self.locked(sh, agent, history, now, cancel).await;
        match rollout::locked::with_lock(&sh.engine, &request, cancel, body).await {
            Ok(replacement) => replacement,
            Err(e) => self.lock_not_taken(sh, e),
        }
    }

    /// The lock could not be taken: held by someone else (said once), interrupted, or the
    /// engine failed.
    fn lock_not_taken(&mut self, sh: &Shared, e: LockError) -> Replacement {
        let service = &self.spec.name;
        let cur = self.current.as_mut().expect("replace checked it");
        match e {
            LockError::Held { owner, since, .. } => {
                if !cur.said.lock_held {
                    cur.said.lock_held = true;
                    sh.events.emit(Event::LockHeld {
                        service: service.clone(),
                        container: Some(cur.info.name.clone()),
                        owner,
                        since,
                    });
                }
                Replacement::LockHeld
            }
            LockError::Interrupted { .. } => Replacement::Interrupted,
            e => {
                sh.trouble.notify_one();
                let message = format!("could not take the deploy lock: {e}");
                say_replace_failed(sh, service, &cur.info, "unavailable", message, None);
                Replacement::Failed(Exit::Unavailable)
            }
        }
    }

    /// With the lock held: says so, then replaces the stuck container through a plan.
    async fn locked(
        &mut self,
        sh: &Shared,
        agent: &HostAgent,
        history: Vec<u64>,
        now: u64,
        cancel: &CancellationToken,
    ) -> Replacement {
        let cur = self.current.as_mut().expect("replace checked it");
        cur.said.lock_held = false;
        sh.events.emit(Event::Replacing {
            service: self.spec.name.clone(),
            container: cur.info.name.clone(),
            revision: label(&cur.info, rollout::LABEL_REVISION),
            failures: cur.streak,
        });
        let stuck = cur.info.clone();
        let (image, facts) = match self.prepare(sh, agent, &stuck).await {
            Ok(prepared) => prepared,
            Err((exit, message)) => {
                say_replace_failed(sh, &self.spec.name, &stuck, "unavailable", message, None);
                return Replacement::Failed(exit);
            }
        };
        if !self.still_serves(sh, &stuck, &facts) {
            return Replacement::NotServing;
        }
        // The probe sibling shares the stuck container's network namespace, which is going.
        self.remove_sibling(sh).await;
        let target = replacement_target(&stuck, image, history);
        let plan = rollout::plan(&self.spec, &target, &facts, &self.driver.text());
        let ctx = Context {
            engine: &sh.engine,
            agent,
            driver: self.driver.clone(),
            cancel,
        };
        let began = Instant::now();
        let report = rollout::execute(&ctx, &plan, &NoCheck).await;
        self.conclude(sh, &stuck, report, began, now)
    }

    /// What the replacement needs, read under the lock: the stuck container's image and env,
    /// and fresh facts.
    async fn prepare(
        &self,
        sh: &Shared,
        agent: &HostAgent,
        stuck: &ContainerInfo,
    ) -> Result<(PinnedImage, Facts), (Exit, String)> {
        let image = PinnedImage::parse(&label(stuck, rollout::LABEL_IMAGE)).map_err(|e| {
            (
                Exit::Usage,
                format!(
                    "its {} label is not a pinned image: {e}",
                    rollout::LABEL_IMAGE
                ),
            )
        })?;
        let env = self.env_for(sh, stuck).await?;
        let run_url = Some(label(stuck, rollout::LABEL_RUN))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| sh.owner.run.clone());
        let facts =
            rollout::read::fresh_facts(&sh.engine, agent, &self.spec, Some(&image), env, run_url)
                .await
                .map_err(|e| (Exit::Unavailable, e.to_string()))?;
        Ok((image, facts))
    }

    /// The snippet says what serves; it must still be the container that failed. If not, that
    /// is said, once.
    fn still_serves(&mut self, sh: &Shared, stuck: &ContainerInfo, facts: &Facts) -> bool {
        let serving = rollout::active(facts);
        if serving.map(|s| &s.id) == Some(&stuck.id) {
            return true;
        }
        sh.events.emit(Event::NotServing {
            service: self.spec.name.clone(),
            container: stuck.name.clone(),
            serving: serving.map(|s| s.name.clone()),
        });
        if let Some(cur) = self.current.as_mut() {
            cur.said.not_serving = true;
        }
        false
    }

    /// Says what the replacement came to; a failed one counts for crash-loop protection.
    fn conclude(
        &mut self,
        sh: &Shared,
        stuck: &ContainerInfo,
        report: Report,
        began: Instant,
        now: u64,
    ) -> Replacement {
        let service = &self.spec.name;
        match report.outcome {
            Outcome::Deployed => {
                let first_failure = self.current.as_ref().and_then(|c| c.first_failure);
                say_replaced(sh, service, stuck, &report, began, first_failure);
                self.current = None;
                Replacement::Replaced
            }
            Outcome::Interrupted => {
                say_replace_failed(sh, service, stuck, "interrupted", report.message, None);
                Replacement::Interrupted
            }
            other => {
                self.failed.push(now);
                let outcome = other.as_str();
                let evidence = Some(report.evidence);
                say_replace_failed(sh, service, stuck, outcome, report.message, evidence);
                Replacement::Failed(other.exit())
            }
        }
    }

    /// The values of the spec's env names for the replacement: those of the stuck container
    /// (what it was deployed with), else the watchdog's own environment. Never printed.
    async fn env_for(
        &self,
        sh: &Shared,
        stuck: &ContainerInfo,
    ) -> Result<Vec<(String, String)>, (Exit, String)> {
        let mut values = sh
            .engine
            .env_of(&stuck.id, &self.spec.env)
            .await
            .map_err(|e| (Exit::Unavailable, e.to_string()))?;
        let mut missing = Vec::new();
        for name in &self.spec.env {
            if values.iter().any(|(k, _)| k == name) {
                continue;
            }
            match std::env::var(name) {
                Ok(v) => values.push((name.clone(), v)),
                Err(_) => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err((
                Exit::Usage,
                format!(
                    "the spec passes {} but {} has no such variable and the watchdog's environment has none either; set it for `slipway watch` or deploy again",
                    missing.join(", "),
                    stuck.name
                ),
            ));
        }
        // In the spec's order, as a rollout passes them.
        values.sort_by_key(|(k, _)| self.spec.env.iter().position(|n| n == k));
        Ok(values)
    }
}

impl Current {
    /// Probes through the probe sibling (started first if need be) and counts the verdict.
    async fn probe(&mut self, sh: &Shared, service: &str) -> Probe {
        if self.sibling.is_none() {
            match start_sibling(sh, service, &self.info, &self.http).await {
                Ok(session) => self.sibling = Some(session),
                Err(e) => return inconclusive(sh, format!("the probe sibling: {e}")),
            }
        }
        let session = self.sibling.as_mut().expect("set above");
        let started = Instant::now();
        let attempt = session.probe(self.http.attempt_deadline()).await;
        if let Err(e) = &attempt {
            // The sibling or its stream went away (removed, engine restarted, stuck): it is made
            // again next time.
            let id = session.id.clone();
            self.sibling = None;
            let _ = sh.engine.remove_container(&id).await;
            return inconclusive(sh, e.to_string());
        }
        match self.http.judge(attempt) {
            Ok(()) => self.answered(sh, service, started),
            Err(reason) => self.failed(sh, service, started, reason),
        }
    }

    fn answered(&mut self, sh: &Shared, service: &str, started: Instant) -> Probe {
        tracing::debug!(
            "{service}: {} answers ({} ms)",
            self.info.name,
            started.elapsed().as_millis()
        );
        if self.streak > 0 {
            sh.events.emit(Event::Recovered {
                service: service.into(),
                container: self.info.name.clone(),
                after: self.streak,
            });
        }
        self.streak = 0;
        self.first_failure = None;
        self.said = Said::default();
        Probe::Healthy
    }

    fn failed(&mut self, sh: &Shared, service: &str, started: Instant, reason: String) -> Probe {
        self.streak += 1;
        self.first_failure.get_or_insert(started);
        sh.events.emit(Event::ProbeFailed {
            service: service.into(),
            container: self.info.name.clone(),
            streak: self.streak,
            failures: sh.failures,
            reason,
        });
        Probe::Failed {
            streak: self.streak,
        }
    }

    /// Crash-loop protection: `Some` when the replacement must wait (backoff) or not happen
    /// (capped), each said once.
    fn held_back(
        &mut self,
        sh: &Shared,
        service: &str,
        history: &[u64],
        now: u64,
    ) -> Option<Replacement> {
        match sh.policy.decide(history, now) {
            Decision::Replace => None,
            Decision::Capped { recent } => {
                if !self.said.capped {
                    self.said.capped = true;
                    sh.events.emit(Event::Capped {
                        service: service.into(),
                        container: self.info.name.clone(),
                        replacements: recent,
                        window_secs: sh.policy.window.as_secs(),
                        message: capped_message(&sh.policy, service, &self.info.name, recent),
                    });
                }
                Some(Replacement::Capped)
            }
            Decision::Backoff { wait, recent } => {
                if !self.said.backoff {
                    self.said.backoff = true;
                    sh.events.emit(Event::Backoff {
                        service: service.into(),
                        container: self.info.name.clone(),
                        retry_in_ms: wait.as_millis() as u64,
                        replacements: recent,
                    });
                }
                Some(Replacement::Backoff)
            }
        }
    }
}

fn capped_message(policy: &Policy, service: &str, container: &str, recent: usize) -> String {
    if policy.cap == 0 {
        format!(
            "{container} stopped answering; not replacing it: --cap 0 only reports. Look at `docker logs {container}`, then deploy a fix or run `slipway rollback`"
        )
    } else {
        format!(
            "{container} stopped answering, and {service} was replaced {recent} time(s) within {}: not replacing it again (crash-loop protection). Look at `docker logs {container}`, then deploy a fix or run `slipway rollback`; replacements resume once the earlier ones age out of the window",
            humantime::format_duration(policy.window)
        )
    }
}

/// No verdict this time; the supervisor is poked to check the engine.
fn inconclusive(sh: &Shared, why: String) -> Probe {
    sh.trouble.notify_one();
    Probe::Inconclusive(why)
}

/// Those of the containers `ids` that still run, inspected.
async fn inspect_running(
    sh: &Shared,
    ids: impl Iterator<Item = &str>,
) -> Result<Vec<ContainerInfo>, EngineError> {
    let mut running = Vec::new();
    for id in ids {
        match sh.engine.inspect_container(id).await? {
            Some(info) if info.running => running.push(info),
            _ => {}
        }
    }
    Ok(running)
}

/// The same image and revision as the stuck container, in a free slot.
fn replacement_target(stuck: &ContainerInfo, image: PinnedImage, history: Vec<u64>) -> Target {
    Target {
        image: image.into(),
        revision: crate::image::revision::Revision::parse(
            &label(stuck, rollout::LABEL_REVISION),
            "the stuck container's dev.slipway.revision label",
        )
        .ok(),
        reuse_retained: false,
        replace: Some(Replace { history }),
    }
}

fn say_replaced(
    sh: &Shared,
    service: &str,
    stuck: &ContainerInfo,
    report: &Report,
    began: Instant,
    first_failure: Option<Instant>,
) {
    let first_failure = first_failure.unwrap_or(began);
    let serving_at = report
        .steps
        .iter()
        .find(|s| s.name == rollout::StepName::Switch && s.ok)
        .map_or_else(Instant::now, |s| {
            began + Duration::from_millis(s.start_ms + s.duration_ms)
        });
    sh.events.emit(Event::Replaced {
        service: service.into(),
        old: stuck.name.clone(),
        new: report.container.clone().unwrap_or_default(),
        revision: report.revision.to_string(),
        port: report.port,
        first_failure_to_serving_ms: serving_at
            .saturating_duration_since(first_failure)
            .as_millis() as u64,
        replace_ms: report.wall_ms,
        start_to_healthy_ms: report.start_to_healthy_ms,
    });
}

/// `evidence`: the replacement's health log and log tail, when it got as far as starting.
fn say_replace_failed(
    sh: &Shared,
    service: &str,
    stuck: &ContainerInfo,
    outcome: &str,
    message: String,
    evidence: Option<Evidence>,
) {
    let evidence = evidence.unwrap_or_default();
    sh.events.emit(Event::ReplaceFailed {
        service: service.into(),
        container: stuck.name.clone(),
        outcome: outcome.into(),
        message,
        health_log: evidence.health_log,
        log_tail: evidence.log_tail,
    });
}

/// A probe sibling for `target`, attached: it runs this service's probe once per request.
async fn start_sibling(
    sh: &Shared,
    service: &str,
    target: &ContainerInfo,
    http: &HttpGate,
) -> Result<ProbeSession, EngineError> {
    let spec = ProbeSibling {
        name: format!("{}-{}", sibling_prefix(service), unique_suffix()),
        image: sh.host.image.to_string(),
        target: target.id.clone(),
        argv: http.argv(),
        labels: vec![
            (rollout::LABEL_SERVICE.into(), service.into()),
            (LABEL_PROBE_TARGET.into(), target.id.clone()),
        ],
    };
    sh.engine.ensure_image(&spec.image).await?;
    let session = sh.engine.start_probe_session(&spec).await?;
    tracing::debug!(
        "{service}: probe sibling {} joins the network of {}",
        spec.name,
        target.name
    );
    Ok(session)
}
