//! Switching the host's Caddy: the service's upstream snippet, written atomically in the one
//! host directory the Caddyfile imports, and the reload, both exec'd in the host agent (the
//! privileged sibling that also is the deploy lock; see lock.rs).

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError, OneShotExit};
use crate::host::HostAccess;

/// Where the agent sees the host's snippet directory.
pub const SNIPPET_MOUNT: &str = "/slipway/snippets";
const MOUNT: &str = SNIPPET_MOUNT;

/// The file Caddy imports for `service`: one upstream (with the spec's extra `reverse_proxy`
/// options), and a comment saying what it is.
pub fn render_snippet(
    service: &str,
    port: u16,
    digest: &str,
    revision: &str,
    options: &[String],
) -> String {
    let mut s = format!(
        "# managed by slipway: service={service} digest={digest} revision={revision}\nreverse_proxy 127.0.0.1:{port}"
    );
    if options.is_empty() {
        s.push('\n');
    } else {
        s.push_str(" {\n");
        for o in options {
            s.push_str(&format!("\t{o}\n"));
        }
        s.push_str("}\n");
    }
    s
}

/// The 127.0.0.1 port a snippet routes to.
pub fn snippet_port(content: &str) -> Option<u16> {
    content.lines().find_map(|l| {
        l.trim()
            .strip_prefix("reverse_proxy 127.0.0.1:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[derive(Debug, Error)]
pub enum CaddyError {
    #[error("the Caddy reload failed (exit {code}): {output}")]
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

/// Host steps exec'd in a running privileged `--pid=host` sibling with the snippet directory
/// mounted (the lock holder's container).
pub struct HostAgent {
    pub id: String,
    host: HostAccess,
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
        }
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
        engine.exec(&self.id, &cmd, deadline).await
    }

    /// The snippet's content, or `None` when the file does not exist.
    pub async fn read(&self, engine: &Engine, file: &str) -> Result<Option<String>, CaddyError> {
        let out = engine
            .exec(
                &self.id,
                &sh(
                    &format!("f={MOUNT}/$1; [ -e \"$f\" ] || exit 3; cat \"$f\""),
                    &[file],
                ),
                self.host.deadline,
            )
            .await?;
        match out.code {
            0 => Ok(Some(out.stdout)),
            3 => Ok(None),
            code => Err(CaddyError::Write {
                file: file.into(),
                code,
                output: out.stderr,
            }),
        }
    }

    /// Replaces the snippet atomically (temp file + rename); `None` writes a comment-only
    /// placeholder (nothing routed).
    pub async fn write(
        &self,
        engine: &Engine,
        file: &str,
        content: Option<&str>,
    ) -> Result<(), CaddyError> {
        let argv = match content {
            Some(c) => sh(
                &format!(
                    "t={MOUNT}/.$1.slipway-tmp; printf '%s' \"$2\" > \"$t\" && mv -f \"$t\" {MOUNT}/$1"
                ),
                &[file, c],
            ),
            // Not removed: a Caddyfile that imports this file by name needs it to exist.
            None => sh(
                &format!(
                    "t={MOUNT}/.$1.slipway-tmp; printf '# slipway: no release serves here\\n' > \"$t\" && mv -f \"$t\" {MOUNT}/$1"
                ),
                &[file],
            ),
        };
        let out = engine.exec(&self.id, &argv, self.host.deadline).await?;
        if out.code != 0 {
            return Err(CaddyError::Write {
                file: file.into(),
                code: out.code,
                output: out.stderr.trim().into(),
            });
        }
        Ok(())
    }

    /// Runs the reload command on the host (nsenter into PID `host.pid`).
    pub async fn reload(
        &self,
        engine: &Engine,
        command: &[String],
    ) -> Result<OneShotExit, CaddyError> {
        let out = engine
            .exec(
                &self.id,
                &self.host.nsenter_argv(command),
                self.host.deadline,
            )
            .await?;
        reloaded(out)
    }
}

/// `slipway reload`: one short-lived privileged sibling runs the reload command.
pub async fn reload_once(
    engine: &Engine,
    host: &HostAccess,
    command: &[String],
    cancel: &CancellationToken,
) -> Result<OneShotExit, CaddyError> {
    engine.ensure_image(&host.image.to_string()).await?;
    let out = engine
        .run_oneshot(&host.nsenter("reload", command), cancel)
        .await?;
    reloaded(out)
}

/// A reload's exit: anything but 0 is the reload failing, with what the host printed.
fn reloaded(out: OneShotExit) -> Result<OneShotExit, CaddyError> {
    if out.code != 0 {
        return Err(CaddyError::Reload {
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
    fn the_snippet_routes_to_the_slot_and_says_what_it_serves() {
        let s = render_snippet("web", 18002, "sha256:ab", "v2", &[]);
        assert_eq!(
            s,
            "# managed by slipway: service=web digest=sha256:ab revision=v2\nreverse_proxy 127.0.0.1:18002\n"
        );
        assert_eq!(snippet_port(&s), Some(18002));
        assert_eq!(snippet_port("respond 503"), None);
        let s = render_snippet(
            "web",
            18001,
            "sha256:ab",
            "v2",
            &["lb_try_duration 5s".into()],
        );
        assert!(
            s.ends_with("reverse_proxy 127.0.0.1:18001 {\n\tlb_try_duration 5s\n}\n"),
            "{s}"
        );
        assert_eq!(snippet_port(&s), Some(18001));
    }
}
