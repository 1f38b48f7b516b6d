//! A registry's HTTP API (distribution v2), spoken with reqwest: used to check that a registry
//! answers and accepts the credentials, and to read manifests independently of the engine.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use thiserror::Error;

use crate::credentials::{Credentials, registry_host};

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("registry {registry} is unreachable at {url}")]
    Unreachable {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry {registry} requires credentials and none were found")]
    CredentialsNeeded { registry: String },
    #[error(
        "registry {registry} refused the credentials from {source_of_credentials} (HTTP {status})"
    )]
    CredentialsRefused {
        registry: String,
        source_of_credentials: String,
        status: u16,
    },
    #[error("registry {registry} answered {url} with HTTP {status}: {body}")]
    Unexpected {
        registry: String,
        url: String,
        status: u16,
        body: String,
    },
}

impl RegistryError {
    pub fn hint(&self) -> String {
        match self {
            RegistryError::Unreachable { .. } => {
                "check the address and that the registry runs; a registry on 127.0.0.0/8 or localhost is spoken to over plain HTTP, any other over HTTPS unless --insecure-registry".into()
            }
            RegistryError::CredentialsNeeded { registry } => format!(
                "pass --registry-user USER --registry-password-env VAR, or `docker login {registry}` so DOCKER_CONFIG/config.json holds them"
            ),
            RegistryError::CredentialsRefused { .. } => {
                "check the user and password (or token) and that they may pull and push this repository".into()
            }
            RegistryError::Unexpected { .. } => "is this address a Docker registry (distribution v2 API)?".into(),
        }
    }
}

/// How a registry answered `GET /v2/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ping {
    pub url: String,
    /// `None` when the registry allowed anonymous access.
    pub authenticated_as: Option<String>,
}

pub struct Registry {
    http: reqwest::Client,
    name: String,
    base: String,
    credentials: Option<Credentials>,
}

impl Registry {
    /// `name` is `host[:port]`. Loopback registries are plain HTTP, as dockerd treats them.
    pub fn new(name: &str, insecure: bool, credentials: Option<Credentials>) -> Registry {
        let host = registry_host(name).to_string();
        let scheme = if insecure || is_loopback(&host) {
            "http"
        } else {
            "https"
        };
        let http = http_client(Duration::from_secs(30));
        Registry {
            http,
            base: format!("{scheme}://{host}"),
            name: host,
            credentials,
        }
    }

    /// `GET /v2/`, following the registry's Basic or Bearer challenge with the credentials.
    pub async fn ping(&self) -> Result<Ping, RegistryError> {
        let url = format!("{}/v2/", self.base);
        let response = self.send(&url, None).await?;
        match response.status() {
            s if s.is_success() => Ok(Ping {
                url,
                authenticated_as: None,
            }),
            StatusCode::UNAUTHORIZED => {
                let Some(creds) = &self.credentials else {
                    return Err(RegistryError::CredentialsNeeded {
                        registry: self.name.clone(),
                    });
                };
                let auth = self.authorize(response.headers(), creds, None).await?;
                let retry = self.send(&url, Some(&auth)).await?;
                if retry.status().is_success() {
                    Ok(Ping {
                        url,
                        authenticated_as: Some(creds.username.clone()),
                    })
                } else {
                    Err(self.refused(creds, retry.status()))
                }
            }
            status => Err(self.unexpected(&url, status, response).await),
        }
    }

    async fn send(
        &self,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.http.get(url);
        if let Some(auth) = authorization {
            request = request.header(AUTHORIZATION, auth);
        }
        request
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                registry: self.name.clone(),
                url: url.to_string(),
                source,
            })
    }

    /// Answers a `WWW-Authenticate` challenge: the `Authorization` header value to send.
    async fn authorize(
        &self,
        challenge: &HeaderMap,
        creds: &Credentials,
        scope: Option<&str>,
    ) -> Result<String, RegistryError> {
        let challenge = challenge
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Basic");
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(format!("Basic {}", creds.basic()));
        };
        let params = parse_challenge(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut query: Vec<(String, String)> = params
            .into_iter()
            .filter(|(k, _)| k == "service" || k == "scope")
            .collect();
        if let Some(scope) = scope {
            query.retain(|(k, _)| k != "scope");
            query.push(("scope".into(), scope.into()));
        }
        let response = self
            .http
            .get(&realm)
            .query(&query)
            .header(AUTHORIZATION, format!("Basic {}", creds.basic()))
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                registry: self.name.clone(),
                url: realm.clone(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(self.refused(creds, response.status()));
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        Ok(format!("Bearer {token}"))
    }

    fn refused(&self, creds: &Credentials, status: StatusCode) -> RegistryError {
        RegistryError::CredentialsRefused {
            registry: self.name.clone(),
            source_of_credentials: creds.source.clone(),
            status: status.as_u16(),
        }
    }

    async fn unexpected(
        &self,
        url: &str,
        status: StatusCode,
        response: reqwest::Response,
    ) -> RegistryError {
        let body = response.text().await.unwrap_or_default();
        RegistryError::Unexpected {
            registry: self.name.clone(),
            url: url.to_string(),
            status: status.as_u16(),
            body: first_line(&body, 200),
        }
    }
}

/// reqwest is built without a default crypto provider: ring keeps the static build simple.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("a TLS client with the ring crypto provider")
}

fn is_loopback(host: &str) -> bool {
    let bare = host
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(']') || h.starts_with('['))
        .map_or(host, |(h, _)| h);
    bare == "localhost" || bare.starts_with("127.") || bare == "[::1]" || bare == "::1"
}

/// `realm="https://auth",service="reg",scope="a:b:pull"` -> pairs.
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            quoted.split_once('"').unwrap_or((quoted, ""))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.push((key, value.to_string()));
        rest = tail.trim_start_matches(',').trim();
    }
    out
}

pub fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example.com", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!is_loopback(host), "{host}");
        }
        assert!(
            Registry::new("127.0.0.1:5000", false, None)
                .base
                .starts_with("http://")
        );
        assert!(
            Registry::new("ghcr.io", false, None)
                .base
                .starts_with("https://")
        );
        assert!(
            Registry::new("ghcr.io", true, None)
                .base
                .starts_with("http://")
        );
    }

    #[test]
    fn parses_bearer_challenges() {
        let got = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            got,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
    }
}
