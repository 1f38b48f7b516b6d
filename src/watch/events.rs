//! What the watchdog reports: one JSON object a line on stdout (data only), and the same said
//! for humans on stderr through tracing.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        services: Vec<String>,
        once: bool,
        failures: u32,
    },
    /// A service on this host that is not watched, and why.
    Unwatched {
        service: String,
        reason: String,
    },
    /// A spec file that could not be (re)read; the previous version of it stays in force.
    SpecInvalid {
        path: String,
        error: String,
    },
    /// The container now serving a service, picked up by its labels (a new release, a
    /// replacement, or the first look).
    Watching {
        service: String,
        container: String,
        id: String,
        revision: String,
        digest: String,
    },
    ProbeFailed {
        service: String,
        container: String,
        /// Consecutive failures so far, and how many make it stuck.
        streak: u32,
        failures: u32,
        reason: String,
    },
    Recovered {
        service: String,
        container: String,
        after: u32,
    },
    Replacing {
        service: String,
        container: String,
        revision: String,
        failures: u32,
    },
    Replaced {
        service: String,
        old: String,
        new: String,
        revision: String,
        port: Option<u16>,
        /// From the start of the first failed probe to Caddy routing to the replacement.
        first_failure_to_serving_ms: u64,
        /// The replacement itself: lock, start, gate, switch, drain, removal.
        replace_ms: u64,
        /// From the replacement's start to its health gate passing.
        start_to_healthy_ms: Option<u64>,
    },
    /// Workers of the serving release that stopped (or reported unhealthy) were replaced.
    WorkersReplaced {
        service: String,
        old: Vec<String>,
        new: Vec<String>,
        revision: String,
    },
    ReplaceFailed {
        service: String,
        container: String,
        outcome: String,
        message: String,
        /// The replacement's last health-check outputs and log tail, when it got that far.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        health_log: Vec<String>,
        #[serde(skip_serializing_if = "String::is_empty")]
        log_tail: String,
    },
    /// A replacement is due but comes too soon after the last one.
    Backoff {
        service: String,
        container: String,
        retry_in_ms: u64,
        replacements: usize,
    },
    /// Too many replacements in the window: the watchdog stops replacing this service.
    Capped {
        service: String,
        container: String,
        replacements: usize,
        window_secs: u64,
        message: String,
    },
    /// A deploy (or another watchdog) holds the service's lock: nothing is probed or replaced
    /// until it is released.
    LockHeld {
        service: String,
        container: Option<String>,
        owner: String,
        since: String,
    },
    /// Under the lock, the failing container turned out not to be the one serving any more.
    NotServing {
        service: String,
        container: String,
        serving: Option<String>,
    },
    EngineLost {
        error: String,
    },
    EngineBack {
        down_ms: u64,
    },
    /// `--once`: what became of each service.
    Checked {
        service: String,
        result: String,
    },
    Stopped {},
}

impl Event {
    fn human(&self) -> (tracing::Level, String) {
        (self.level(), self.text())
    }

    /// How loud the human line is: an error needs someone, a warning may.
    fn level(&self) -> tracing::Level {
        use tracing::Level;
        match self {
            Event::SpecInvalid { .. }
            | Event::ReplaceFailed { .. }
            | Event::Capped { .. }
            | Event::EngineLost { .. } => Level::ERROR,
            Event::ProbeFailed { .. }
            | Event::Replacing { .. }
            | Event::Backoff { .. }
            | Event::LockHeld { .. } => Level::WARN,
            Event::Started { .. }
            | Event::Unwatched { .. }
            | Event::Watching { .. }
            | Event::Recovered { .. }
            | Event::Replaced { .. }
            | Event::WorkersReplaced { .. }
            | Event::NotServing { .. }
            | Event::EngineBack { .. }
            | Event::Checked { .. }
            | Event::Stopped {} => Level::INFO,
        }
    }

    /// The line for humans.
    fn text(&self) -> String {
        match self {
            Event::Started {
                services,
                once,
                failures,
            } => started_text(services, *once, *failures),
            Event::Unwatched { service, reason } => format!("{service}: not watched: {reason}"),
            Event::SpecInvalid { path, error } => {
                format!("{path}: {error} (the previous version stays in force)")
            }
            Event::Watching {
                service,
                container,
                revision,
                ..
            } => format!("{service}: watching {container} (revision {revision})"),
            Event::ProbeFailed {
                service,
                container,
                streak,
                failures,
                reason,
            } => format!("{service}: probe {streak}/{failures} of {container} failed: {reason}"),
            Event::Recovered {
                service,
                container,
                after,
            } => format!("{service}: {container} answers again after {after} failed probe(s)"),
            Event::Replacing {
                service,
                container,
                failures,
                ..
            } => format!("{service}: {container} failed {failures} probes in a row: replacing it"),
            Event::Replaced {
                service,
                old,
                new,
                first_failure_to_serving_ms: ms,
                ..
            } => format!(
                "{service}: {new} serves in place of {old} (removed), {ms} ms after the first failed probe"
            ),
            Event::WorkersReplaced {
                service, old, new, ..
            } => format!(
                "{service}: worker(s) {} serve in place of {} (removed)",
                new.join(", "),
                if old.is_empty() {
                    "none running".to_string()
                } else {
                    old.join(", ")
                }
            ),
            Event::ReplaceFailed {
                service,
                container,
                message,
                ..
            } => format!("{service}: replacing {container} failed: {message}"),
            Event::Backoff {
                service,
                container,
                retry_in_ms,
                replacements,
            } => backoff_text(service, container, *retry_in_ms, *replacements),
            Event::Capped {
                service, message, ..
            } => format!("{service}: CAPPED: {message}"),
            Event::LockHeld {
                service,
                owner,
                since,
                ..
            } => format!(
                "{service}: the deploy lock is held by {owner} (since {since}): not probing or replacing it until the lock is released"
            ),
            Event::NotServing {
                service,
                container,
                serving,
            } => not_serving_text(service, container, serving.as_deref()),
            Event::EngineLost { error } => {
                format!("the Docker engine is unreachable ({error}); reconnecting with backoff")
            }
            Event::EngineBack { down_ms } => {
                format!("the Docker engine answers again after {down_ms} ms")
            }
            Event::Checked { service, result } => format!("{service}: {result}"),
            Event::Stopped {} => "stopped".into(),
        }
    }
}

fn started_text(services: &[String], once: bool, failures: u32) -> String {
    let services = if services.is_empty() {
        "no service yet".to_string()
    } else {
        services.join(", ")
    };
    let how_long = if once { "one round" } else { "until stopped" };
    format!(
        "watching {services} ({how_long}; a container is stuck after {failures} failed probes in a row)"
    )
}

fn backoff_text(service: &str, container: &str, retry_in_ms: u64, replacements: usize) -> String {
    format!(
        "{service}: {container} is stuck, but it was replaced {replacements} time(s) recently: next replacement in {} s at the earliest",
        retry_in_ms.div_ceil(1000)
    )
}

fn not_serving_text(service: &str, container: &str, serving: Option<&str>) -> String {
    let serving = serving.map_or("nothing routed".to_string(), |s| format!("{s} does"));
    format!("{service}: {container} no longer serves ({serving}); nothing to replace")
}

#[derive(Serialize)]
struct Line<'a> {
    ts_ms: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// Where events go: stdout in the binary, a buffer in tests. One write per line, so lines from
/// concurrent services never interleave.
pub struct Events {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Events {
    pub fn stdout() -> Events {
        Events::to(Box::new(std::io::stdout()))
    }

    pub fn to(out: Box<dyn Write + Send>) -> Events {
        Events {
            out: Mutex::new(out),
        }
    }

    pub fn emit(&self, event: Event) {
        let (level, text) = event.human();
        match level {
            tracing::Level::ERROR => tracing::error!("{text}"),
            tracing::Level::WARN => tracing::warn!("{text}"),
            _ => tracing::info!("{text}"),
        }
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let mut line = serde_json::to_string(&Line {
            ts_ms,
            event: &event,
        })
        .expect("an event serializes");
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // stdout closed (a pipe whose reader left): nothing better to do than go on watching.
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_event_is_one_json_line_named_by_its_kind() {
        let buf = Buf::default();
        let events = Events::to(Box::new(buf.clone()));
        events.emit(Event::ProbeFailed {
            service: "web".into(),
            container: "web-a-1".into(),
            streak: 2,
            failures: 3,
            reason: "no response: timed out".into(),
        });
        events.emit(Event::Stopped {});
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["event"], "probe_failed");
        assert_eq!(lines[0]["streak"], 2);
        assert_eq!(lines[0]["reason"], "no response: timed out");
        assert!(lines[0]["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(lines[1]["event"], "stopped");
    }
}
