//! The health gate: the image's Docker HEALTHCHECK (through engine events) and/or an HTTP probe
//! run by the host agent inside the new container's network namespace, so it works from a job
//! container that cannot reach the host's 127.0.0.1.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError, HealthWait, OneShotExit};
use crate::host::agent::HostAgent;
use crate::probe::{self, Expect};
use crate::spec::ServiceSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gate {
    /// Wait for the image's HEALTHCHECK to say healthy.
    pub docker: bool,
    pub http: Option<HttpGate>,
    pub deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpGate {
    pub url: String,
    pub host: Option<String>,
    pub expect: Expect,
    pub successes: u32,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Gate {
    pub fn from_spec(spec: &ServiceSpec, revision: &str) -> Gate {
        Gate {
            docker: spec.health.docker,
            http: spec.health.http.as_ref().map(|h| HttpGate {
                url: format!(
                    "http://127.0.0.1:{}{}",
                    h.port.unwrap_or(spec.container_port),
                    h.path
                ),
                host: h.host.clone(),
                expect: Expect {
                    status: h.status,
                    json: h.json_field.as_ref().map(|f| {
                        (
                            f.clone(),
                            h.json_value.clone().unwrap_or_else(|| revision.to_string()),
                        )
                    }),
                    body_contains: h.body_contains.clone(),
                    body_regex: None,
                    header: None,
                },
                successes: h.successes,
                interval: h.interval,
                timeout: h.timeout,
            }),
            deadline: spec.health.deadline,
        }
    }
}

impl HttpGate {
    /// The probe command, run inside the container's network namespace (by the host agent
    /// through nsenter during a rollout, in the watchdog's probe sibling afterwards).
    pub fn argv(&self) -> Vec<String> {
        probe::wget_argv(&self.url, self.host.as_deref(), self.timeout.as_secs())
    }

    /// How long one attempt may take, the exec around it included.
    pub fn attempt_deadline(&self) -> Duration {
        self.timeout + Duration::from_secs(2)
    }

    /// One attempt's verdict: `Ok` when the response meets every expectation, else why not.
    pub fn judge(&self, attempt: Result<OneShotExit, EngineError>) -> Result<(), String> {
        match attempt {
            Ok(out) => self
                .expect
                .judge(&probe::parse_wget(out.code, &out.stdout, &out.stderr)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Why the gate did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateFailure {
    Failed(String),
    Interrupted,
}

/// One gate to pass: the gate, the container it watches, and when that container was started
/// (the deadline counts from then).
#[derive(Debug, Clone, Copy)]
pub struct GateRun<'a> {
    pub gate: &'a Gate,
    pub id: &'a str,
    pub started: Instant,
}

/// Runs the gate against the run's container: the Docker health wait and the HTTP probe run
/// side by side from the container's start, and the gate passes the moment both hold (the
/// probe's last `successes` attempts in a row passed and Docker says healthy).
pub async fn pass(
    engine: &Engine,
    agent: &HostAgent,
    run: GateRun<'_>,
    cancel: &CancellationToken,
) -> Result<(), GateFailure> {
    let GateRun { gate, id, started } = run;
    let Some(deadline) = started.checked_add(gate.deadline) else {
        return Err(GateFailure::Failed(
            "the health deadline is out of range".into(),
        ));
    };
    let (healthy_tx, healthy_rx) = watch::channel(!gate.docker);
    let docker = async {
        if gate.docker {
            docker_healthy(engine, id, gate.deadline, deadline, cancel).await?;
            let _ = healthy_tx.send(true);
        }
        Ok(())
    };
    let http = async {
        match &gate.http {
            Some(http) => {
                let probe = Probe {
                    engine,
                    agent,
                    http,
                    budget: gate.deadline,
                    id,
                    deadline,
                };
                probe.until_passed(healthy_rx, cancel).await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(docker, http).map(|_| ())
}

/// Waits for the image's HEALTHCHECK to say healthy.
async fn docker_healthy(
    engine: &Engine,
    id: &str,
    budget: Duration,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), GateFailure> {
    let left = deadline.saturating_duration_since(Instant::now());
    match engine.wait_health(id, left, cancel).await {
        Ok(HealthWait::Healthy) => Ok(()),
        Ok(HealthWait::Unhealthy) => Err(GateFailure::Failed(
            "the container's HEALTHCHECK reports unhealthy".into(),
        )),
        Ok(HealthWait::Exited { code }) => Err(GateFailure::Failed(format!(
            "the container exited with code {code} before it became healthy"
        ))),
        Ok(HealthWait::Deadline) => Err(GateFailure::Failed(format!(
            "not healthy within the deadline of {}",
            humantime::format_duration(budget)
        ))),
        Ok(HealthWait::Interrupted) => Err(GateFailure::Interrupted),
        Err(e) => Err(GateFailure::Failed(format!(
            "the Docker engine failed while the gate watched the new container ({}); was dockerd restarted?",
            e.with_causes()
        ))),
    }
}

/// The HTTP probe of one gate run, from the agent inside the container's network namespace.
struct Probe<'a> {
    engine: &'a Engine,
    agent: &'a HostAgent,
    http: &'a HttpGate,
    budget: Duration,
    id: &'a str,
    deadline: Instant,
}

impl Probe<'_> {
    /// Probes every `interval` until the streak is long enough while `healthy` (the Docker half
    /// of the gate) holds; a streak that is already long enough passes the moment it turns true.
    async fn until_passed(
        &self,
        mut healthy: watch::Receiver<bool>,
        cancel: &CancellationToken,
    ) -> Result<(), GateFailure> {
        let http = self.http;
        let mut streak = 0;
        let mut last = String::from("no attempt finished");
        loop {
            match self.attempt(&last).await? {
                Ok(()) => streak += 1,
                Err(why) => {
                    streak = 0;
                    last = why;
                }
            }
            let long_enough = streak >= http.successes;
            if long_enough && *healthy.borrow() {
                return Ok(());
            }
            if Instant::now() + http.interval >= self.deadline {
                return Err(GateFailure::Failed(format!(
                    "GET {} did not pass {} time(s) in a row within {}; last: {last}",
                    http.url,
                    http.successes,
                    humantime::format_duration(self.budget)
                )));
            }
            let sleep = tokio::time::sleep(http.interval);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    changed = healthy.changed(), if long_enough => {
                        if changed.is_ok() && *healthy.borrow() {
                            return Ok(());
                        }
                    }
                    _ = cancel.cancelled() => return Err(GateFailure::Interrupted),
                }
            }
        }
    }

    /// One attempt: `Err` when the container is gone or stopped, else the probe's verdict.
    async fn attempt(&self, last: &str) -> Result<Result<(), String>, GateFailure> {
        let info = match self.engine.inspect_container(self.id).await {
            Ok(Some(info)) => info,
            Ok(None) => return Err(GateFailure::Failed("the container disappeared".into())),
            Err(e) => {
                return Err(GateFailure::Failed(format!(
                    "the Docker engine failed while the gate watched the new container ({}); was dockerd restarted?",
                    e.with_causes()
                )));
            }
        };
        if !info.running {
            return Err(GateFailure::Failed(format!(
                "the container exited with code {} (last probe: {last})",
                info.exit_code
            )));
        }
        let attempt = self
            .agent
            .exec_in_netns(
                self.engine,
                info.pid,
                &self.http.argv(),
                self.http.attempt_deadline(),
            )
            .await;
        Ok(self.http.judge(attempt))
    }
}
