//! Switching the host's Caddy: the service's upstream snippet, written atomically in the one
//! host directory the Caddyfile imports, and the reload, both exec'd in the host agent (the
//! privileged sibling that also is the deploy lock; see lock.rs).

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError, OneShotExit};
use crate::host::HostAccess;
use crate::revision::Revision;

/// Where the agent sees the host's snippet directory.
pub const SNIPPET_MOUNT: &str = "/slipway/snippets";
const MOUNT: &str = SNIPPET_MOUNT;

/// The `reverse_proxy` subdirectives a spec may add, each as one line without a block.
pub const UPSTREAM_DIRECTIVES: &[&str] = &[
    "lb_policy",
    "lb_retries",
    "lb_try_duration",
    "lb_try_interval",
    "health_uri",
    "health_port",
    "health_interval",
    "health_passes",
    "health_fails",
    "health_timeout",
    "health_status",
    "health_body",
    "fail_duration",
    "max_fails",
    "unhealthy_status",
    "unhealthy_latency",
    "unhealthy_request_count",
    "flush_interval",
    "request_buffers",
    "response_buffers",
    "stream_timeout",
    "stream_close_delay",
    "trusted_proxies",
    "header_up",
    "header_down",
    "method",
    "verbose_logs",
];

/// A value slipway refused to write into the proxy config.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("refusing to write {what} into the proxy config: {why}")]
pub struct ConfigValueError {
    pub what: String,
    pub why: String,
}

/// Checks one `upstream_options` line: a listed subdirective and arguments that cannot open,
/// close or end a block (no braces but whole `{placeholder}`s, no quotes, no line breaks).
pub fn check_upstream_option(line: &str) -> Result<(), String> {
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let directive = words.next().unwrap_or_default();
    if !UPSTREAM_DIRECTIVES.contains(&directive) {
        return Err(format!(
            "`{}` is not one of the single-line reverse_proxy subdirectives slipway writes ({})",
            directive.escape_debug(),
            UPSTREAM_DIRECTIVES.join(", ")
        ));
    }
    for word in words {
        if !safe_argument(word) {
            return Err(format!(
                "`{}` may not be written: arguments are printable ASCII without quotes, `\\`, `#`, `;`, `<`, `>` or braces (only whole placeholders like {{host}})",
                word.escape_debug()
            ));
        }
    }
    Ok(())
}

fn safe_argument(word: &str) -> bool {
    let plain = |c: char| {
        c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '`' | '\\' | '#' | ';' | '<' | '>')
    };
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        if !before.chars().all(|c| plain(c) && c != '}') {
            return false;
        }
        let Some(close) = after.find('}') else {
            return false;
        };
        let name = &after[1..close];
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return false;
        }
        rest = &after[close + 1..];
    }
    rest.chars().all(|c| plain(c) && c != '}')
}

/// What the snippet says about itself, each value checked again where it is written.
pub struct SnippetValues<'a> {
    pub service: &'a str,
    pub port: u16,
    pub digest: &'a str,
    pub revision: &'a Revision,
    pub options: &'a [String],
}

/// The one renderer of proxy config: the file Caddy imports for a service, one upstream (with the
/// spec's checked `reverse_proxy` options) and a comment saying what it is. Every value is
/// checked here, whatever checked it before; anything else is refused, never escaped into place.
pub fn render_snippet(v: &SnippetValues<'_>) -> Result<String, ConfigValueError> {
    let refuse = |what: &str, value: &str, why: &str| ConfigValueError {
        what: format!("{what} `{}`", value.escape_debug()),
        why: why.to_string(),
    };
    let name_ok = !v.service.is_empty()
        && v.service
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(refuse(
            "the service name",
            v.service,
            "not a-z, 0-9 and '-'",
        ));
    }
    if !crate::reference::is_sha256_digest(v.digest) {
        return Err(refuse("the digest", v.digest, "not sha256:<64 hex>"));
    }
    if !crate::revision::is_token(v.revision.as_str()) {
        return Err(refuse(
            "the revision",
            v.revision.as_str(),
            "not a short token",
        ));
    }
    for o in v.options {
        check_upstream_option(o).map_err(|why| refuse("caddy.upstream_options", o, &why))?;
    }
    let mut s = format!(
        "# managed by slipway: service={} digest={} revision={}\nreverse_proxy 127.0.0.1:{}",
        v.service, v.digest, v.revision, v.port
    );
    if v.options.is_empty() {
        s.push('\n');
    } else {
        s.push_str(" {\n");
        for o in v.options {
            s.push_str(&format!("\t{o}\n"));
        }
        s.push_str("}\n");
    }
    Ok(s)
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

    /// The snippet file and the content last confirmed applied by a reload (`.<file>.applied`),
    /// each `None` when absent. One exec.
    pub async fn read(&self, engine: &Engine, file: &str) -> Result<SnippetState, CaddyError> {
        let script = format!(
            "f={MOUNT}/$1; a={MOUNT}/.$1.applied; \
             if [ -e \"$f\" ]; then printf F; cat \"$f\" || exit 4; fi; printf '\\000'; \
             if [ -e \"$a\" ]; then printf A; cat \"$a\" || exit 4; fi"
        );
        let out = engine
            .exec(&self.id, &sh(&script, &[file]), self.host.deadline)
            .await?;
        if out.code != 0 {
            return Err(CaddyError::Write {
                file: file.into(),
                code: out.code,
                output: out.stderr.trim().into(),
            });
        }
        Ok(SnippetState::parse(&out.stdout))
    }

    /// Replaces the snippet atomically (temp file + rename); `None` writes a comment-only
    /// placeholder (nothing routed). First records what is applied now, if nothing has yet, so a
    /// run killed before the reload leaves proof of what Caddy still serves.
    pub async fn write(
        &self,
        engine: &Engine,
        file: &str,
        content: Option<&str>,
    ) -> Result<(), CaddyError> {
        let script = format!(
            "f={MOUNT}/$1; a={MOUNT}/.$1.applied; t={MOUNT}/.$1.slipway-tmp; \
             if [ ! -e \"$a\" ]; then \
               if [ -e \"$f\" ]; then cp \"$f\" \"$a.tmp\"; else printf '{PLACEHOLDER}' > \"$a.tmp\"; fi \
               && mv -f \"$a.tmp\" \"$a\" || exit 5; \
             fi; \
             printf '%s' \"$2\" > \"$t\" && mv -f \"$t\" \"$f\""
        );
        // Not removed: a Caddyfile that imports this file by name needs it to exist.
        let text = content.unwrap_or(PLACEHOLDER_TEXT);
        let out = engine
            .exec(&self.id, &sh(&script, &[file, text]), self.host.deadline)
            .await?;
        written(file, out)
    }

    /// After a reload succeeded: the snippet file is what Caddy serves.
    pub async fn mark_applied(&self, engine: &Engine, file: &str) -> Result<(), CaddyError> {
        let script = format!(
            "f={MOUNT}/$1; a={MOUNT}/.$1.applied; cp -f \"$f\" \"$a.tmp\" && mv -f \"$a.tmp\" \"$a\""
        );
        let out = engine
            .exec(&self.id, &sh(&script, &[file]), self.host.deadline)
            .await?;
        written(file, out)
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

/// What a snippet holds when no release serves.
const PLACEHOLDER_TEXT: &str = "# slipway: no release serves here\n";
/// The same, as a printf format inside the agent's script.
const PLACEHOLDER: &str = "# slipway: no release serves here\\n";

/// The snippet file and the content last applied by a reload, as read from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnippetState {
    pub file: Option<String>,
    pub applied: Option<String>,
}

impl SnippetState {
    fn parse(out: &str) -> SnippetState {
        let (file, applied) = out.split_once('\0').unwrap_or((out, ""));
        SnippetState {
            file: file.strip_prefix('F').map(String::from),
            applied: applied.strip_prefix('A').map(String::from),
        }
    }
}

fn written(file: &str, out: OneShotExit) -> Result<(), CaddyError> {
    if out.code != 0 {
        return Err(CaddyError::Write {
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

    const DIGEST: &str = "sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b";

    fn render(
        service: &str,
        digest: &str,
        revision: &str,
        options: &[&str],
    ) -> Result<String, ConfigValueError> {
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        render_snippet(&SnippetValues {
            service,
            port: 18002,
            digest,
            revision: &Revision::parse(revision, "t").unwrap(),
            options: &options,
        })
    }

    #[test]
    fn the_snippet_routes_to_the_slot_and_says_what_it_serves() {
        let s = render("web", DIGEST, "v2", &[]).unwrap();
        assert_eq!(
            s,
            format!(
                "# managed by slipway: service=web digest={DIGEST} revision=v2\nreverse_proxy 127.0.0.1:18002\n"
            )
        );
        assert_eq!(snippet_port(&s), Some(18002));
        assert_eq!(snippet_port("respond 503"), None);
        let s = render(
            "web",
            DIGEST,
            "v2",
            &["lb_try_duration 5s", "header_up X-Real-IP {remote_host}"],
        )
        .unwrap();
        assert!(
            s.ends_with("reverse_proxy 127.0.0.1:18002 {\n\tlb_try_duration 5s\n\theader_up X-Real-IP {remote_host}\n}\n"),
            "{s}"
        );
        assert_eq!(snippet_port(&s), Some(18002));
    }

    #[test]
    fn the_agent_output_splits_into_file_and_applied() {
        let both =
            SnippetState::parse("Freverse_proxy 127.0.0.1:1\n\0Areverse_proxy 127.0.0.1:2\n");
        assert_eq!(both.file.as_deref(), Some("reverse_proxy 127.0.0.1:1\n"));
        assert_eq!(both.applied.as_deref(), Some("reverse_proxy 127.0.0.1:2\n"));
        assert_eq!(SnippetState::parse("\0"), SnippetState::default());
        let empty_file = SnippetState::parse("F\0");
        assert_eq!(
            (empty_file.file.as_deref(), empty_file.applied),
            (Some(""), None)
        );
    }

    #[test]
    fn hostile_values_never_reach_the_snippet() {
        for (service, digest) in [
            ("web\n:80 {", DIGEST),
            ("web", "sha256:x\n}"),
            ("Web", DIGEST),
            ("", DIGEST),
        ] {
            assert!(
                render(service, digest, "v1", &[]).is_err(),
                "{service:?} {digest:?}"
            );
        }
        for option in [
            "lb_try_duration 5s }",
            "lb_try_duration 5s\n}\n:9999 {\n\tfile_server\n",
            "}",
            "{",
            "import /etc/passwd",
            "transport http {",
            "header_up X \"a b\"",
            "header_up X {a} }",
            "header_up X {}",
            "header_up X {a b}",
            "header_up X a#b",
            "header_up X <<EOF",
            "header_up X a\rb",
            "",
            "handle_path /leak/*",
        ] {
            let err = render("web", DIGEST, "v1", &[option]).unwrap_err();
            assert!(err.to_string().contains("caddy.upstream_options"), "{err}");
        }
    }

    #[test]
    fn a_rendered_snippet_is_one_block_whatever_it_was_given() {
        // Every line slipway writes is the comment, the upstream, an option line or the close.
        let s = render(
            "web",
            DIGEST,
            "1.0+b:x",
            &["lb_policy first", "header_down -Server"],
        )
        .unwrap();
        let opens = s.matches('{').count();
        let closes = s.matches('}').count();
        assert_eq!((opens, closes), (1, 1), "{s}");
        assert_eq!(s.lines().count(), 5, "{s}");
    }
}
