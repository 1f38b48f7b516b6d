//! What `slipway watch` asks of the engine: running containers by label in one call, a
//! container's environment, and the probe sibling: a small unprivileged container that joins an
//! app container's network namespace and runs the HTTP probe each time a line arrives on its
//! stdin, answering on stdout and stderr through the attach stream. So the watchdog probes
//! inside the container's network without the privileged host agent (which only exists while
//! the deploy lock is held), and without a `docker exec` per probe (a runc exec costs the engine
//! ~50 ms of CPU; this costs a fork of wget in the sibling).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::AttachContainerOptions;
use futures_util::{Stream, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{
    Engine, EngineError, LABEL_MANAGED, LABEL_ROLE, OneShotExit, ROLE_WATCH_PROBE, push_output,
    within,
};

/// A probe sibling: joins `target`'s network namespace and runs `argv` once per line on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSibling {
    pub name: String,
    /// Needs `sh`, `timeout` and `wget` (busybox or alpine: the pinned reload image).
    pub image: String,
    /// The app container whose network namespace it joins.
    pub target: String,
    /// The probe, run as is (no shell parses it: it is quoted into the loop).
    pub argv: Vec<String>,
    pub labels: Vec<(String, String)>,
}

impl ProbeSibling {
    /// Ends each answer on stdout and on stderr: `\n<marker> <exit code>\n`.
    pub fn marker(&self) -> String {
        format!("@@slipway-probe-end-{}@@", self.name)
    }

    /// The loop: one probe per line read; stdin's end (the watchdog went away) ends it.
    pub fn script(&self) -> String {
        let argv = shlex::try_join(self.argv.iter().map(String::as_str))
            .expect("probe arguments hold no NUL byte");
        let marker = self.marker();
        format!(
            "while read -r _; do {argv} </dev/null; rc=$?; printf '\\n%s %s\\n' '{marker}' \"$rc\"; printf '\\n%s %s\\n' '{marker}' \"$rc\" >&2; done"
        )
    }
}

/// `docker run -i --rm --network container:TARGET --cap-drop ALL --read-only --user 65534:65534
/// --security-opt no-new-privileges --memory 16m --pids-limit 16 IMAGE sh -c LOOP`, stdin closed
/// when the watchdog's attach ends, so it exits and removes itself even if the watchdog is killed.
pub fn probe_body(spec: &ProbeSibling) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_ROLE.into(), ROLE_WATCH_PROBE.into());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(vec!["sh".into(), "-c".into(), spec.script()]),
        user: Some("65534:65534".into()),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{}", spec.target)),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            memory: Some(16 << 20),
            pids_limit: Some(16),
            auto_remove: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An attached session: a line in, one command's exit code, stdout and stderr out. The probe
/// sibling's (a line runs the probe), or a shell exec'd in the host agent (`Engine::exec_session`:
/// a line is the command).
pub struct ProbeSession {
    pub id: String,
    pub(super) marker: String,
    /// Only ever used through `&mut self` (`get_mut`, no locking): the mutex only makes the
    /// session `Sync`, which the streams are not.
    pub(super) io: Mutex<Io>,
}

pub(super) type Io = (
    Pin<Box<dyn AsyncWrite + Send>>,
    Pin<Box<dyn Stream<Item = Result<LogOutput, BollardError>> + Send>>,
);

/// What came before `\n<marker> <code>\n` in `buf`, and the code; `None` until it arrived.
pub fn split_answer(buf: &str, marker: &str) -> Option<(String, i64)> {
    let at = buf.find(&format!("\n{marker} "))?;
    let rest = &buf[at + marker.len() + 2..];
    let code = rest.split_once('\n')?.0.trim().parse().ok()?;
    Some((buf[..at].to_string(), code))
}

impl ProbeSession {
    /// Runs the probe once, within `deadline`. Any error leaves the session unusable.
    pub async fn probe(&mut self, deadline: Duration) -> Result<OneShotExit, EngineError> {
        self.send(b"\n", deadline).await
    }

    /// Writes `input`, then reads until the answer's marker arrived on stdout and stderr; within
    /// `deadline`. Any error leaves the session unusable.
    pub(super) async fn send(
        &mut self,
        line: &[u8],
        deadline: Duration,
    ) -> Result<OneShotExit, EngineError> {
        let started = tokio::time::Instant::now();
        let id = self.id.clone();
        let what = || format!("the probe in {id}");
        let marker = self.marker.clone();
        let (input, output) = self.io.get_mut().unwrap_or_else(|e| e.into_inner());
        let run = async {
            input
                .write_all(line)
                .await
                .and(input.flush().await)
                .map_err(|e| EngineError::Api {
                    op: format!("starting {}", what()),
                    source: BollardError::IOError { err: e },
                })?;
            let (mut out, mut err) = (String::new(), String::new());
            let (mut stdout, mut stderr) = (None, None);
            while stdout.is_none() || stderr.is_none() {
                let chunk = output
                    .try_next()
                    .await
                    .map_err(EngineError::api(format!("reading {}", what())))?
                    .ok_or_else(|| EngineError::Api {
                        op: format!("reading {}", what()),
                        source: BollardError::DockerResponseServerError {
                            status_code: 404,
                            message: "the probe sibling's output ended".into(),
                        },
                    })?;
                push_output(chunk, &mut out, &mut err);
                stdout = stdout.or_else(|| split_answer(&out, &marker));
                stderr = stderr.or_else(|| split_answer(&err, &marker));
            }
            let (body, code) = stdout.expect("loop ended");
            let (headers, _) = stderr.expect("loop ended");
            Ok(OneShotExit {
                code,
                stdout: body,
                stderr: headers,
                elapsed: started.elapsed(),
            })
        };
        within(deadline, &what, run).await
    }
}

/// A container as a list call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created_unix: i64,
}

impl Listed {
    pub fn role(&self) -> Option<&str> {
        self.labels.get(LABEL_ROLE).map(String::as_str)
    }
}

impl Engine {
    /// Running (or paused) containers carrying all of `labels`, from one list call: no inspect.
    pub async fn list_running(&self, labels: &[(&str, &str)]) -> Result<Vec<Listed>, EngineError> {
        let summaries = self
            .list_labelled(labels, &["running", "paused"])
            .await
            .map_err(|source| self.classify("listing containers", source))?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let name = s
                    .names
                    .as_ref()?
                    .first()?
                    .trim_start_matches('/')
                    .to_string();
                Some(Listed {
                    id: s.id?,
                    name,
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

    /// Creates the probe sibling, attaches to it, starts it.
    pub async fn start_probe_session(
        &self,
        spec: &ProbeSibling,
    ) -> Result<ProbeSession, EngineError> {
        let op = format!(
            "creating the probe sibling {} in the network of {}",
            spec.name, spec.target
        );
        let id = self
            .create_named(&spec.name, probe_body(spec), EngineError::api(op))
            .await?;
        let attached = self
            .docker
            .attach_container(
                &id,
                Some(AttachContainerOptions {
                    stream: true,
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(EngineError::api(format!("attaching to {}", spec.name)));
        let attached = match attached {
            Ok(a) => a,
            Err(e) => {
                let _ = self.remove_container(&id).await;
                return Err(e);
            }
        };
        if let Err(e) = self.start(&id).await {
            let _ = self.remove_container(&id).await;
            return Err(e);
        }
        Ok(ProbeSession {
            id,
            marker: spec.marker(),
            io: Mutex::new((attached.input, attached.output)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sibling() -> ProbeSibling {
        ProbeSibling {
            name: "slipway-probe-web-1".into(),
            image: "r/busybox@sha256:00".into(),
            target: "abc".into(),
            argv: vec![
                "timeout".into(),
                "2".into(),
                "wget".into(),
                "--header".into(),
                "Host: it's.example".into(),
                "http://127.0.0.1:8080/health".into(),
            ],
            labels: vec![("dev.slipway.service".into(), "web".into())],
        }
    }

    #[test]
    fn the_probe_sibling_joins_the_network_and_holds_no_privilege() {
        let body = probe_body(&sibling());
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:abc"));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.pid_mode, None, "not in the host's PID namespace");
        assert!(host.binds.is_none(), "mounts nothing");
        assert_eq!(host.auto_remove, Some(true));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(
            body.stdin_once,
            Some(true),
            "it ends with the watchdog's attach"
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_ROLE], ROLE_WATCH_PROBE);
        assert_eq!(labels[LABEL_MANAGED], "true");
    }

    #[test]
    fn the_loop_quotes_the_probe_and_marks_each_answer() {
        let s = sibling();
        let script = s.script();
        // A shell reads back exactly the probe's argv.
        let probe = script
            .strip_prefix("while read -r _; do ")
            .and_then(|r| r.split_once(" </dev/null; rc=$?;"))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("{script}"));
        assert_eq!(shlex::split(probe).unwrap(), s.argv, "{script}");
        let marker = s.marker();
        assert_eq!(split_answer("{\"v\":1}", &marker), None, "not yet");
        assert_eq!(
            split_answer(&format!("{{\"v\":1}}\n{marker} 0"), &marker),
            None,
            "the code is not complete before its newline"
        );
        assert_eq!(
            split_answer(&format!("{{\"v\":1}}\n{marker} 143\n"), &marker),
            Some(("{\"v\":1}".to_string(), 143))
        );
        assert_eq!(
            split_answer(&format!("\n{marker} 1\n"), &marker),
            Some((String::new(), 1))
        );
    }
}
