//! The health gate: the image's Docker HEALTHCHECK (through engine events) and/or an HTTP probe
//! run by the host agent inside the new container's network namespace, so it works from a job
//! container that cannot reach the host's 127.0.0.1.

use std::time::Duration;

use serde::Serialize;
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

/// Runs the gate against the run's container.
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
    if gate.docker {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine.wait_health(id, left, cancel).await {
            Ok(HealthWait::Healthy) => {}
            Ok(HealthWait::Unhealthy) => {
                return Err(GateFailure::Failed(
                    "the container's HEALTHCHECK reports unhealthy".into(),
                ));
            }
            Ok(HealthWait::Exited { code }) => {
                return Err(GateFailure::Failed(format!(
                    "the container exited with code {code} before it became healthy"
                )));
            }
            Ok(HealthWait::Deadline) => {
                return Err(GateFailure::Failed(format!(
                    "not healthy within the deadline of {}",
                    humantime::format_duration(gate.deadline)
                )));
            }
            Ok(HealthWait::Interrupted) => return Err(GateFailure::Interrupted),
            Err(e) => {
                return Err(GateFailure::Failed(format!(
                    "the Docker engine failed while the gate watched the new container ({}); was dockerd restarted?",
                    e.with_causes()
                )));
            }
        }
    }
    if let Some(http) = &gate.http {
        http_probe(engine, http, gate.deadline, id, agent, deadline, cancel).await?;
    }
    Ok(())
}

async fn http_probe(
    engine: &Engine,
    http: &HttpGate,
    budget: Duration,
    id: &str,
    agent: &HostAgent,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), GateFailure> {
    let argv = http.argv();
    let mut streak = 0;
    let mut last = String::from("no attempt finished");
    loop {
        let info = match engine.inspect_container(id).await {
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
        let attempt = agent
            .exec_in_netns(engine, info.pid, &argv, http.attempt_deadline())
            .await;
        let verdict = http.judge(attempt);
        match verdict {
            Ok(()) => {
                streak += 1;
                if streak >= http.successes {
                    return Ok(());
                }
            }
            Err(why) => {
                streak = 0;
                last = why;
            }
        }
        if Instant::now() + http.interval >= deadline {
            return Err(GateFailure::Failed(format!(
                "GET {} did not pass {} time(s) in a row within {}; last: {last}",
                http.url,
                http.successes,
                humantime::format_duration(budget)
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(http.interval) => {}
            _ = cancel.cancelled() => return Err(GateFailure::Interrupted),
        }
    }
}
