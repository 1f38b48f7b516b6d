//! The host agent: the privileged `--pid=host` sibling that also is the deploy lock (see
//! lock.rs). Host steps run in it through one attached shell session (an exec per step only when
//! the session cannot start): read and write the snippet (with its applied record), reload the
//! proxy through nsenter, probe inside a container's network namespace.

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError, OneShotExit, ProbeSession};
use crate::host::HostAccess;

/// Where the agent sees the host's snippet directory.
pub const SNIPPET_MOUNT: &str = "/slipway/snippets";
const MOUNT: &str = SNIPPET_MOUNT;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("the reload command failed (exit {code}): {output}")]
    Reload { code: i64, output: String },
    #[error("writing the snippet {file} on the host failed (exit {code}): {output}")]
    Write {
        file: String,
        code: i64,
        output: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Host steps run in a running privileged `--pid=host` sibling with the snippet directory
/// mounted (the lock holder's container).
pub struct HostAgent {
    pub id: String,
    host: HostAccess,
    /// The shell session every step goes through; opened at the first step, and again after
    /// one that failed.
    session: tokio::sync::Mutex<Option<ProbeSession>>,
}

fn sh(script: &str, args: &[&str]) -> Vec<String> {
    ["sh", "-c", script, "sh"]
        .into_iter()
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

impl HostAgent {
    pub fn attach(id: &str, host: &HostAccess) -> HostAgent {
        HostAgent {
            id: id.to_string(),
            host: host.clone(),
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs `argv` in the agent through its session, within `deadline`. When no session can be
    /// opened, one exec. A step that fails leaves no session behind: the next opens a new one.
    async fn run(
        &self,
        engine: &Engine,
        argv: &[String],
        deadline: std::time::Duration,
    ) -> Result<OneShotExit, EngineError> {
        let mut slot = self.session.lock().await;
        if slot.is_none() {
            match engine.exec_session(&self.id).await {
                Ok(session) => *slot = Some(session),
                Err(e) => {
                    tracing::debug!("no session in the host agent ({e}); one exec instead");
                    return engine.exec(&self.id, argv, deadline).await;
                }
            }
        }
        let session = slot.as_mut().expect("opened above");
        let result = session.command(argv, deadline).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// Runs `argv` inside the network namespace of host process `pid` (a container's).
    pub async fn exec_in_netns(
        &self,
        engine: &Engine,
        pid: i64,
        argv: &[String],
        deadline: std::time::Duration,
    ) -> Result<OneShotExit, EngineError> {
        let mut cmd: Vec<String> = ["nsenter", "-t", &pid.to_string(), "-n", "--"]
            .map(String::from)
            .to_vec();
        cmd.extend(argv.iter().cloned());
        self.run(engine, &cmd, deadline).await
    }

    /// The snippet file and the content last confirmed applied by a reload (`.<file>.applied`),
    /// each `None` when absent. One step through the session.
    pub async fn read(&self, engine: &Engine, file: &str) -> Result<FileState, AgentError> {
        let script = format!(
            "f={MOUNT}/$1; a={MOUNT}/.$1.applied; \
             if [ -e \"$f\" ]; then printf F; cat \"$f\" || exit 4; fi; printf '\\000'; \
             if [ -e \"$a\" ]; then printf A; cat \"$a\" || exit 4; fi"
        );
        let out = self
            .run(engine, &sh(&script, &[file]), self.host.deadline)
            .await?;
        if out.code != 0 {
            return Err(AgentError::Write {
                file: file.into(),
                code: out.code,
                output: out.stderr.trim().into(),
            });
        }
        Ok(FileState::parse(&out.stdout))
    }

    /// Replaces the proxy's file atomically (temp file + rename); `None` writes the proxy's
    /// `placeholder` (nothing routed). First records what is applied now, if nothing has yet, so
    /// a run killed before the reload leaves proof of what the proxy still serves.
    pub async fn write(
        &self,
        engine: &Engine,
        file: &str,
        content: Option<&str>,
        placeholder: &str,
    ) -> Result<(), AgentError> {
        let script = format!(
            "f={MOUNT}/$1; a={MOUNT}/.$1.applied; t={MOUNT}/.$1.slipway-tmp; \
             if [ ! -e \"$a\" ]; then \
               if [ -e \"$f\" ]; then cp \"$f\" \"$a.tmp\"; else printf '%s' \"$3\" > \"$a.tmp\"; fi \
               && mv -f \"$a.tmp\" \"$a\" || exit 5; \
             fi; \
             printf '%s' \"$2\" > \"$t\" && mv -f \"$t\" \"$f\""
        );
        // Not removed: a Caddyfile that imports this file by name needs it to exist.
        let text = content.unwrap_or(placeholder);
        let out = self
            .run(
                engine,
                &sh(&script, &[file, text, placeholder]),
                self.host.deadline,
            )
            .await?;
        written(file, out)
    }

    /// After a reload succeeded: the snippet file is what Caddy serves.
    pub async fn mark_applied(&self, engine: &Engine, file: &str) -> Result<(), AgentError> {
        let script = format!(
            "f={MOUNT}/$1; a={MOUNT}/.$1.applied; cp -f \"$f\" \"$a.tmp\" && mv -f \"$a.tmp\" \"$a\""
        );
        let out = self
            .run(engine, &sh(&script, &[file]), self.host.deadline)
            .await?;
        written(file, out)
    }

    /// The deadline of each step run on the host.
    pub fn deadline(&self) -> std::time::Duration {
        self.host.deadline
    }

    /// Runs `command` on the host (nsenter into PID `host.pid`), whatever it exits with.
    pub async fn on_host(
        &self,
        engine: &Engine,
        command: &[String],
    ) -> Result<OneShotExit, EngineError> {
        self.run(engine, &self.host.nsenter_argv(command), self.host.deadline)
            .await
    }

    /// GET `url` from the host's network (a proxy's API on the host's loopback).
    pub async fn fetch_on_host(&self, engine: &Engine, url: &str) -> Fetched {
        let argv: Vec<String> = ["nsenter", "-t", &self.host.pid.to_string(), "-n", "--"]
            .into_iter()
            .chain(["timeout", "5", "wget", "-q", "-O-", url])
            .map(String::from)
            .collect();
        match self.run(engine, &argv, self.host.deadline).await {
            Ok(out) if out.code == 0 => Fetched::Body(out.stdout),
            Ok(out) if out.stderr.contains(" 404") => Fetched::NotFound,
            Ok(out) => Fetched::Failed(format!(
                "GET {url} failed (exit {}): {}",
                out.code,
                out.stderr.trim()
            )),
            Err(e) => Fetched::Failed(e.to_string()),
        }
    }

    /// Runs the reload command on the host (nsenter into PID `host.pid`).
    pub async fn reload(
        &self,
        engine: &Engine,
        command: &[String],
    ) -> Result<OneShotExit, AgentError> {
        let out = self
            .run(engine, &self.host.nsenter_argv(command), self.host.deadline)
            .await?;
        if out.code != 0
            && let Some(unit) = systemctl_reload_unit(command)
        {
            // journald writes the unit's stderr a moment after systemctl has returned.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let journal = self.host.nsenter_argv(&journal_argv(unit));
            let lines = self.run(engine, &journal, self.host.deadline).await;
            return reloaded(with_journal(out, unit, lines.ok()));
        }
        reloaded(out)
    }
}

/// The unit of a `systemctl reload UNIT` command: systemctl prints only "Job for UNIT failed",
/// the reason (Caddy's own message) is in the unit's journal.
fn systemctl_reload_unit(command: &[String]) -> Option<&str> {
    match command {
        [program, verb, unit] if program.rsplit('/').next() == Some("systemctl") => {
            verb.starts_with("reload").then_some(unit.as_str())
        }
        _ => None,
    }
}

/// The unit's journal of the last seconds (the failed reload's own lines).
fn journal_argv(unit: &str) -> Vec<String> {
    let argv = [
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "--since=-5s",
        "-n",
        "12",
    ];
    argv.into_iter()
        .chain(["-u", unit])
        .map(String::from)
        .collect()
}

/// The failed reload's output, followed by the unit's last journal lines when they were read.
fn with_journal(mut out: OneShotExit, unit: &str, journal: Option<OneShotExit>) -> OneShotExit {
    if let Some(j) = journal.filter(|j| j.code == 0 && !j.stdout.trim().is_empty()) {
        // Caddy's info-level JSON lines say nothing about why; its errors are plain text.
        let lines: Vec<&str> = j
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains(r#""level":"info""#))
            .collect();
        out.stderr = format!(
            "{}\n`journalctl -u {unit}`: {}",
            out.stderr.trim_end(),
            lines.join(" | ")
        );
    }
    out
}

/// A GET from the host's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Body(String),
    NotFound,
    Failed(String),
}

/// The proxy's file and the content last applied by a reload, as read from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileState {
    pub file: Option<String>,
    pub applied: Option<String>,
}

impl FileState {
    fn parse(out: &str) -> FileState {
        let (file, applied) = out.split_once('\0').unwrap_or((out, ""));
        FileState {
            file: file.strip_prefix('F').map(String::from),
            applied: applied.strip_prefix('A').map(String::from),
        }
    }
}

fn written(file: &str, out: OneShotExit) -> Result<(), AgentError> {
    if out.code != 0 {
        return Err(AgentError::Write {
            file: file.into(),
            code: out.code,
            output: out.stderr.trim().into(),
        });
    }
    Ok(())
}

/// `slipway reload`: one short-lived privileged sibling runs the reload command.
pub async fn reload_once(
    engine: &Engine,
    host: &HostAccess,
    command: &[String],
    cancel: &CancellationToken,
) -> Result<OneShotExit, AgentError> {
    engine.ensure_image(&host.image.to_string()).await?;
    let out = engine
        .run_oneshot(&host.nsenter("reload", command), cancel)
        .await?;
    reloaded(out)
}

/// A reload's exit: anything but 0 is the reload failing, with what the host printed.
fn reloaded(out: OneShotExit) -> Result<OneShotExit, AgentError> {
    if out.code != 0 {
        return Err(AgentError::Reload {
            code: out.code,
            output: format!("{}{}", out.stdout, out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_systemctl_reload_shows_the_units_journal() {
        let argv = |c: &str| c.split(' ').map(String::from).collect::<Vec<_>>();
        let reload = argv("systemctl reload caddy");
        assert_eq!(systemctl_reload_unit(&reload), Some("caddy"));
        let reload = argv("/bin/systemctl reload-or-restart caddy");
        assert_eq!(systemctl_reload_unit(&reload), Some("caddy"));
        assert_eq!(
            systemctl_reload_unit(&argv("systemctl restart caddy")),
            None
        );
        assert_eq!(
            systemctl_reload_unit(&argv("caddy reload --config /c")),
            None
        );
        let exit = |code, stdout: &str, stderr: &str| OneShotExit {
            code,
            stdout: stdout.into(),
            stderr: stderr.into(),
            elapsed: std::time::Duration::ZERO,
        };
        let failed = exit(1, "", "Job for caddy.service failed.\n");
        let journal = exit(
            0,
            "{\"level\":\"info\",\"msg\":\"loading\"}\nError: unrecognized directive: bogus\nReload failed\n",
            "",
        );
        let shown = with_journal(failed.clone(), "caddy", Some(journal));
        assert_eq!(
            shown.stderr,
            "Job for caddy.service failed.\n`journalctl -u caddy`: Error: unrecognized directive: bogus | Reload failed"
        );
        assert_eq!(with_journal(failed.clone(), "caddy", None), failed);
    }

    #[test]
    fn the_agent_output_splits_into_file_and_applied() {
        let both = FileState::parse("Freverse_proxy 127.0.0.1:1\n\0Areverse_proxy 127.0.0.1:2\n");
        assert_eq!(both.file.as_deref(), Some("reverse_proxy 127.0.0.1:1\n"));
        assert_eq!(both.applied.as_deref(), Some("reverse_proxy 127.0.0.1:2\n"));
        assert_eq!(FileState::parse("\0"), FileState::default());
        let empty_file = FileState::parse("F\0");
        assert_eq!(
            (empty_file.file.as_deref(), empty_file.applied),
            (Some(""), None)
        );
    }
}
