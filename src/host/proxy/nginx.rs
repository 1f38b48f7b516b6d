//! The nginx room: the upstream file slipway owns (included inside an `upstream` block of the
//! host's nginx config), rendered from checked values only. nginx takes it in through
//! `test_command` (default `nginx -t`) and then `reload_command`, both on the host.

use super::{ConfigValueError, UpstreamValues, check_values};

/// The upstream file when no release serves: one server marked down, so the `upstream` block
/// stays valid (nginx refuses an empty one) and answers 502.
pub const PLACEHOLDER: &str = "# slipway: no release serves here\nserver 127.0.0.1:9 down;\n";

/// `# managed by slipway ...` and one `server 127.0.0.1:PORT;` line.
pub fn render(v: &UpstreamValues<'_>) -> Result<String, ConfigValueError> {
    check_values(v)?;
    Ok(format!(
        "# managed by slipway: service={} digest={} revision={}\nserver 127.0.0.1:{};\n",
        v.service, v.digest, v.revision, v.port
    ))
}

/// The 127.0.0.1 port the file routes to (a server marked `down` routes nowhere).
pub fn routed_port(content: &str) -> Option<u16> {
    content.lines().find_map(|l| {
        let directive = l
            .trim()
            .strip_prefix("server 127.0.0.1:")?
            .split(';')
            .next()?;
        let mut words = directive.split_whitespace();
        let port = words.next()?.parse().ok()?;
        (!words.any(|w| w == "down")).then_some(port)
    })
}

/// nginx.upstream_file: an absolute file name slipway may own (not hidden, no temp suffix).
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('.') {
        return Err("must name a file (not hidden), e.g. /etc/nginx/slipway/web.upstream".into());
    }
    if name.ends_with(".applied") || name.ends_with(".slipway-tmp") {
        return Err(
            "may not end in .applied or .slipway-tmp (slipway's own files beside it)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::revision::Revision;

    const DIGEST: &str = "sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b";

    #[test]
    fn the_upstream_file_is_one_server_line() {
        let r = Revision::parse("v2", "t").unwrap();
        let v = UpstreamValues {
            service: "web",
            port: 18002,
            digest: DIGEST,
            revision: &r,
        };
        let s = render(&v).unwrap();
        assert_eq!(
            s,
            format!(
                "# managed by slipway: service=web digest={DIGEST} revision=v2\nserver 127.0.0.1:18002;\n"
            )
        );
        assert_eq!(routed_port(&s), Some(18002));
        assert_eq!(routed_port(PLACEHOLDER), None);
        for (service, digest) in [("web;\n}", DIGEST), ("web", "sha256:x;}")] {
            let v = UpstreamValues {
                service,
                port: 1,
                digest,
                revision: &r,
            };
            assert!(render(&v).is_err(), "{service:?} {digest:?}");
        }
        assert!(check_file_name(".hidden").is_err());
        assert!(check_file_name("web.upstream").is_ok());
    }
}
