//! The Caddy room: the renderer of what slipway writes into Caddy's config (a service's
//! upstream snippet), the checks on every value it writes, and reading a snippet back.

use thiserror::Error;

use crate::image::revision::Revision;

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

/// Caddy's renderer (behind the seam's `Proxy::render`): the file Caddy imports for a service, one upstream (with the
/// spec's checked `reverse_proxy` options) and a comment saying what it is. Every value is
/// checked here, whatever checked it before; anything else is refused, never escaped into place.
pub fn render_snippet(v: &SnippetValues<'_>) -> Result<String, ConfigValueError> {
    super::check_values(&super::UpstreamValues {
        service: v.service,
        port: v.port,
        digest: v.digest,
        revision: v.revision,
    })?;
    let refuse = super::refuse;
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
