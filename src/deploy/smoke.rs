//! The public smoke test: GET the public URL(s) as a user would (DNS or `--resolve`, TLS verified
//! with the system roots or `--cacert`, a new connection per attempt) until they serve the
//! expected version or the deadline passes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::probe::{Expect, Observed};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolve {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

/// `host:port:addr`, as curl's `--resolve`.
pub fn parse_resolve(s: &str) -> Result<Resolve, String> {
    let mut parts = s.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "`{s}` is not HOST:PORT:ADDRESS (e.g. app.example.com:443:127.0.0.1)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{s}`: `{port}` is not a port"))?;
    let ip: std::net::IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{s}`: `{addr}` is not an IP address"))?;
    Ok(Resolve {
        host: host.to_string(),
        port,
        addr: SocketAddr::new(ip, port),
    })
}

/// `Name: value`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `Name: value`"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("`{s}` has no valid header name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Smoke {
    pub urls: Vec<String>,
    pub expect: Expect,
    pub headers: Vec<(String, String)>,
    pub resolve: Vec<Resolve>,
    pub cacert: Option<PathBuf>,
    pub interval: Duration,
    /// Retries until this long after the first attempt.
    pub deadline: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Error)]
pub enum SmokeError {
    #[error("cannot read --cacert {path}")]
    CaCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--cacert {path} holds no usable PEM certificate: {reason}")]
    BadCaCert { path: PathBuf, reason: String },
    #[error("{url} did not serve what was expected within {}:\n{table}", humantime::format_duration(*.after))]
    Mismatch {
        url: String,
        after: Duration,
        table: String,
        seen: Box<Observed>,
    },
    #[error("interrupted during the smoke test")]
    Interrupted,
}

/// Expected and served side by side, then the response's status and first body lines.
pub fn side_by_side(expect: &Expect, seen: &Observed) -> String {
    let mut rows: Vec<(String, String, String)> = vec![(
        "status".into(),
        expect.status.to_string(),
        seen.status
            .map_or("(no response)".into(), |s| s.to_string()),
    )];
    if let Some((path, want)) = &expect.json {
        let got = crate::probe::json_field(&seen.body, path).unwrap_or_else(|| "(absent)".into());
        rows.push((path.clone(), want.clone(), got));
    }
    if let Some((pattern, want)) = &expect.body_regex {
        let got = crate::probe::regex_capture(pattern, &seen.body)
            .ok()
            .flatten()
            .unwrap_or_else(|| "(no match)".into());
        rows.push((format!("/{pattern}/"), want.clone(), got));
    }
    if let Some((name, want)) = &expect.header {
        rows.push((
            format!("header {name}"),
            want.clone(),
            seen.header(name).unwrap_or("(absent)").to_string(),
        ));
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(8);
    let mut out = format!("  {:w0$}  {:w1$}  served\n", "", "expected");
    for (what, want, got) in rows {
        let mark = if want == got { " " } else { "≠" };
        out.push_str(&format!("  {what:w0$}  {want:w1$}  {got} {mark}\n"));
    }
    if let Some(err) = &seen.error {
        out.push_str(&format!("  error: {err}\n"));
    }
    let body: Vec<&str> = seen.body.lines().take(5).collect();
    if !body.is_empty() {
        out.push_str("  body (first lines):\n");
        for l in body {
            out.push_str(&format!(
                "    {}\n",
                l.chars().take(160).collect::<String>()
            ));
        }
    }
    out
}

impl Smoke {
    fn client(&self) -> Result<reqwest::Client, SmokeError> {
        let certs = self.cacert_certs()?;
        let builder = || self.builder(certs.clone());
        crate::image::registry::tls_client(builder).map_err(|e| SmokeError::BadCaCert {
            path: self.cacert.clone().unwrap_or_default(),
            reason: e.to_string(),
        })
    }

    fn builder(&self, cacert: Option<Vec<reqwest::Certificate>>) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none());
        for r in &self.resolve {
            b = b.resolve(&r.host, r.addr);
        }
        match cacert {
            Some(certs) => b.tls_certs_only(certs),
            None => b,
        }
    }

    /// The certificates of --cacert, checked; `None` without it.
    fn cacert_certs(&self) -> Result<Option<Vec<reqwest::Certificate>>, SmokeError> {
        if let Some(path) = &self.cacert {
            let pem = std::fs::read(path).map_err(|source| SmokeError::CaCert {
                path: path.clone(),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SmokeError::BadCaCert {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(SmokeError::BadCaCert {
                    path: path.clone(),
                    reason: "no certificate found".into(),
                });
            }
            return Ok(Some(certs));
        }
        Ok(None)
    }

    /// One GET on a new connection.
    pub async fn fetch(&self, url: &str) -> Result<Observed, SmokeError> {
        let client = self.client()?;
        let mut req = client.get(url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        Ok(match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_ascii_lowercase(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                match resp.text().await {
                    Ok(body) => Observed {
                        status: Some(status),
                        headers,
                        body,
                        error: None,
                    },
                    Err(e) => Observed {
                        status: Some(status),
                        headers,
                        body: String::new(),
                        error: Some(crate::doctor::chain(&e)),
                    },
                }
            }
            Err(e) => Observed {
                error: Some(crate::doctor::chain(&e)),
                ..Default::default()
            },
        })
    }

    /// Every URL passes (retrying each until the deadline).
    pub async fn pass(&self, cancel: &CancellationToken) -> Result<Vec<Observed>, SmokeError> {
        let began = Instant::now();
        let mut seen_all = Vec::new();
        for url in &self.urls {
            loop {
                let seen = self.fetch(url).await?;
                match self.expect.judge(&seen) {
                    Ok(()) => {
                        tracing::info!("smoke: {url} -> {} as expected", seen.status.unwrap_or(0));
                        seen_all.push(seen);
                        break;
                    }
                    Err(why) => {
                        if began.elapsed() + self.interval >= self.deadline {
                            return Err(SmokeError::Mismatch {
                                url: url.clone(),
                                after: self.deadline,
                                table: side_by_side(&self.expect, &seen),
                                seen: Box::new(seen),
                            });
                        }
                        tracing::debug!("smoke: {url}: {why}; retrying");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = cancel.cancelled() => return Err(SmokeError::Interrupted),
                }
            }
        }
        Ok(seen_all)
    }

    /// Keeps checking every URL for `window` (once per interval); the first failure ends it.
    pub async fn hold(
        &self,
        window: Duration,
        cancel: &CancellationToken,
    ) -> Result<u32, SmokeError> {
        let until = Instant::now() + window;
        let mut rounds = 0;
        while Instant::now() < until {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = cancel.cancelled() => return Err(SmokeError::Interrupted),
            }
            for url in &self.urls {
                let seen = self.fetch(url).await?;
                if self.expect.judge(&seen).is_err() {
                    return Err(SmokeError::Mismatch {
                        url: url.clone(),
                        after: window,
                        table: side_by_side(&self.expect, &seen),
                        seen: Box::new(seen),
                    });
                }
            }
            rounds += 1;
        }
        Ok(rounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_and_headers_parse_like_curl() {
        let r = parse_resolve("app.example.com:443:127.0.0.1").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("app.example.com", 443));
        assert_eq!(r.addr, "127.0.0.1:443".parse().unwrap());
        assert_eq!(
            parse_resolve("h:1:[::1]").unwrap().addr,
            "[::1]:1".parse().unwrap()
        );
        assert!(parse_resolve("app:443").is_err());
        assert!(parse_resolve("app:https:1.2.3.4").is_err());
        assert_eq!(
            parse_header("X-Token: a:b").unwrap(),
            ("X-Token".to_string(), "a:b".to_string())
        );
        assert!(parse_header("nocolon").is_err());
    }

    #[test]
    fn a_mismatch_is_shown_side_by_side_with_the_body() {
        let expect = Expect {
            status: 200,
            json: Some((".version".into(), "v2".into())),
            body_contains: None,
            body_regex: None,
            header: None,
        };
        let seen = Observed {
            status: Some(200),
            body: "{\"status\":\"ok\",\"version\":\"v1\"}".into(),
            ..Default::default()
        };
        let table = side_by_side(&expect, &seen);
        assert!(table.contains("expected  served"), "{table}");
        assert!(table.contains(".version  v2        v1 ≠"), "{table}");
        assert!(table.contains("status    200       200"), "{table}");
        assert!(
            table.contains("body (first lines):\n    {\"status\""),
            "{table}"
        );
    }
}
