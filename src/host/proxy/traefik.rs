//! The Traefik room (file provider): `<service>.yml` in the watched directory, with one router
//! (the spec's rule, entry points and TLS resolver) and one service (the active slot's loopback
//! URL), rendered from checked values only. Traefik applies the file on its own; the switch is
//! done when its API shows the new upstream and the router enabled.

use std::time::Duration;

use tokio::time::Instant;

use super::{ConfigValueError, UpstreamValues, check_values, refuse};
use crate::engine::Engine;
use crate::host::agent::{Fetched, HostAgent};
use crate::spec::Traefik;

/// Without `api_url` nothing can confirm the switch: wait longer than Traefik's default
/// `providersThrottleDuration` (2 s) and say so.
pub const UNCONFIRMED_WAIT: Duration = Duration::from_millis(2500);
const POLL: Duration = Duration::from_millis(50);

/// The dynamic configuration file for a service.
pub fn render(t: &Traefik, v: &UpstreamValues<'_>) -> Result<String, ConfigValueError> {
    check_values(v)?;
    check_rule(&t.rule).map_err(|why| refuse("traefik.rule", &t.rule, &why))?;
    for e in &t.entrypoints {
        check_name(e).map_err(|why| refuse("traefik.entrypoints", e, &why))?;
    }
    if t.entrypoints.is_empty() {
        return Err(refuse(
            "traefik.entrypoints",
            "[]",
            "name at least one entry point",
        ));
    }
    let mut s = format!(
        "# managed by slipway: service={} digest={} revision={}\nhttp:\n  routers:\n    {}:\n      rule: '{}'\n      entryPoints:\n",
        v.service, v.digest, v.revision, v.service, t.rule
    );
    for e in &t.entrypoints {
        s.push_str(&format!("        - {e}\n"));
    }
    s.push_str(&format!("      service: {}\n", v.service));
    if let Some(r) = &t.cert_resolver {
        check_name(r).map_err(|why| refuse("traefik.cert_resolver", r, &why))?;
        s.push_str(&format!("      tls:\n        certResolver: {r}\n"));
    }
    s.push_str(&format!(
        "  services:\n    {}:\n      loadBalancer:\n        servers:\n          - url: 'http://127.0.0.1:{}'\n",
        v.service, v.port
    ));
    Ok(s)
}

/// The 127.0.0.1 port the file's service points at.
pub fn routed_port(content: &str) -> Option<u16> {
    content.lines().find_map(|l| {
        l.trim()
            .strip_prefix("- url: 'http://127.0.0.1:")?
            .strip_suffix('\'')?
            .parse()
            .ok()
    })
}

/// A router rule goes inside a single-quoted YAML scalar: printable ASCII without `'`.
pub fn check_rule(rule: &str) -> Result<(), String> {
    if rule.trim().is_empty() {
        return Err("is empty: give the router rule, e.g. Host(`example.com`)".into());
    }
    if rule.len() > 2000 {
        return Err("is longer than 2000 characters".into());
    }
    if let Some(c) = rule
        .chars()
        .find(|c| !(' '..='~').contains(c) || *c == '\'')
    {
        return Err(format!(
            "may not hold `{}`: a rule is printable ASCII without single quotes (use backticks, e.g. Host(`example.com`))",
            c.escape_debug()
        ));
    }
    Ok(())
}

/// An entry point or resolver name: letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err("is not a name of letters, digits, '-' and '_'".into())
    }
}

/// `http(s)://HOST[:PORT][/PATH]` without credentials, query or spaces.
pub fn check_api_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let host = rest.split('/').next().unwrap_or_default();
    let chars_ok = rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '/' | '_' | '[' | ']'));
    if host.is_empty() || !chars_ok {
        return Err("must be http(s)://HOST[:PORT][/PATH] (no credentials, query or spaces), e.g. http://127.0.0.1:8080".into());
    }
    Ok(())
}

/// What Traefik's API shows for the service right now.
enum Seen {
    Serves,
    NotYet(String),
    Rejected(String),
}

/// Waits until Traefik serves `port` for `service` (`None`: the service is gone), through its
/// API on the host's network, within the host deadline.
pub async fn confirm(
    engine: &Engine,
    agent: &HostAgent,
    api_url: Option<&str>,
    service: &str,
    port: Option<u16>,
) -> Result<String, String> {
    let Some(api) = api_url.map(|a| a.trim_end_matches('/')) else {
        tokio::time::sleep(UNCONFIRMED_WAIT).await;
        return Ok(format!(
            "not confirmed (no traefik.api_url); waited {} ms",
            UNCONFIRMED_WAIT.as_millis()
        ));
    };
    let what = port.map_or("no route".to_string(), |p| format!("127.0.0.1:{p}"));
    let started = Instant::now();
    let deadline = agent.deadline();
    loop {
        let why = match seen(engine, agent, api, service, port).await {
            Seen::Serves => {
                let ms = started.elapsed().as_millis();
                return Ok(format!("Traefik serves {what} ({ms} ms after the write)"));
            }
            Seen::Rejected(message) => {
                return Err(format!(
                    "Traefik did not enable the router `{service}@file`: {message}"
                ));
            }
            Seen::NotYet(why) => why,
        };
        if started.elapsed() >= deadline {
            return Err(format!(
                "Traefik did not serve {what} within {} s: {why}",
                deadline.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn seen(
    engine: &Engine,
    agent: &HostAgent,
    api: &str,
    service: &str,
    port: Option<u16>,
) -> Seen {
    let url = |kind: &str| format!("{api}/api/http/{kind}/{service}@file");
    let service_seen = agent.fetch_on_host(engine, &url("services")).await;
    let Some(port) = port else {
        return match service_seen {
            Fetched::NotFound => Seen::Serves,
            Fetched::Body(_) => Seen::NotYet("the service is still defined".into()),
            Fetched::Failed(e) => Seen::NotYet(e),
        };
    };
    let want = format!("http://127.0.0.1:{port}");
    match service_seen {
        Fetched::Body(b) if server_urls(&b).contains(&want) => {}
        Fetched::Body(b) => return Seen::NotYet(format!("it serves {:?}", server_urls(&b))),
        Fetched::NotFound => return Seen::NotYet(format!("no service {service}@file yet")),
        Fetched::Failed(e) => return Seen::NotYet(e),
    }
    match agent.fetch_on_host(engine, &url("routers")).await {
        Fetched::Body(b) => router_state(&b),
        Fetched::NotFound => Seen::NotYet(format!("no router {service}@file yet")),
        Fetched::Failed(e) => Seen::NotYet(e),
    }
}

fn server_urls(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["loadBalancer"]["servers"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["url"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn router_state(body: &str) -> Seen {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let errors: Vec<&str> = v["error"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    if !errors.is_empty() {
        return Seen::Rejected(errors.join("; "));
    }
    match v["status"].as_str() {
        Some("enabled") => Seen::Serves,
        other => Seen::NotYet(format!("the router's status is {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::revision::Revision;

    const DIGEST: &str = "sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b";

    fn table(rule: &str, entrypoints: &[&str], resolver: Option<&str>) -> Traefik {
        Traefik {
            dynamic_dir: "/etc/traefik/dynamic".into(),
            rule: rule.into(),
            entrypoints: entrypoints.iter().map(|e| e.to_string()).collect(),
            api_url: None,
            cert_resolver: resolver.map(String::from),
        }
    }

    fn render_with(t: &Traefik) -> Result<String, ConfigValueError> {
        let r = Revision::parse("v2", "t").unwrap();
        render(
            t,
            &UpstreamValues {
                service: "web",
                port: 18002,
                digest: DIGEST,
                revision: &r,
            },
        )
    }

    #[test]
    fn the_file_has_one_router_and_one_service() {
        let s = render_with(&table(
            "Host(`app.test`)",
            &["web", "websecure"],
            Some("le"),
        ))
        .unwrap();
        assert_eq!(
            s,
            format!(
                "# managed by slipway: service=web digest={DIGEST} revision=v2\nhttp:\n  routers:\n    web:\n      rule: 'Host(`app.test`)'\n      entryPoints:\n        - web\n        - websecure\n      service: web\n      tls:\n        certResolver: le\n  services:\n    web:\n      loadBalancer:\n        servers:\n          - url: 'http://127.0.0.1:18002'\n"
            )
        );
        assert_eq!(routed_port(&s), Some(18002));
        assert_eq!(routed_port(super::super::PLACEHOLDER), None);
    }

    #[test]
    fn hostile_values_never_reach_the_file() {
        for (rule, eps, resolver, key) in [
            ("Host(`a`)'\n  x: y", &["web"][..], None, "traefik.rule"),
            ("Host(`a`)\nservices:", &["web"][..], None, "traefik.rule"),
            ("", &["web"][..], None, "traefik.rule"),
            ("Host(`a`)", &["web\n- x"][..], None, "traefik.entrypoints"),
            ("Host(`a`)", &[][..], None, "traefik.entrypoints"),
            (
                "Host(`a`)",
                &["web"][..],
                Some("le: {x}"),
                "traefik.cert_resolver",
            ),
        ] {
            let err = render_with(&table(rule, eps, resolver)).unwrap_err();
            assert!(err.to_string().contains(key), "{rule:?}: {err}");
        }
        assert!(check_api_url("http://127.0.0.1:8080").is_ok());
        for bad in [
            "127.0.0.1:8080",
            "http://u:p@h",
            "http://h/?a=b",
            "http://h x",
            "http://",
        ] {
            assert!(check_api_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_api_says_served_waiting_or_rejected() {
        let body =
            r#"{"loadBalancer":{"servers":[{"url":"http://127.0.0.1:18002"}]},"status":"enabled"}"#;
        assert_eq!(server_urls(body), ["http://127.0.0.1:18002"]);
        assert!(matches!(
            router_state(r#"{"status":"enabled"}"#),
            Seen::Serves
        ));
        let rejected = router_state(r#"{"status":"disabled","error":["bad rule"]}"#);
        assert!(matches!(rejected, Seen::Rejected(m) if m == "bad rule"));
        assert!(matches!(router_state("{}"), Seen::NotYet(_)));
    }
}
