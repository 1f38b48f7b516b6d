//! A registry's HTTP API (distribution v2), spoken with reqwest: used to check that a registry
//! answers and accepts the credentials, and to read manifests independently of the engine.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
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
    #[error("registry {registry} sent more than {limit} bytes for {url}")]
    TooLarge {
        registry: String,
        url: String,
        limit: usize,
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
            RegistryError::Unexpected { status: 404, .. } => {
                "the registry does not hold it: check the repository name and that the push went to this registry".into()
            }
            RegistryError::Unexpected { .. } => "is this address a Docker registry (distribution v2 API)?".into(),
            RegistryError::TooLarge { .. } => {
                "a manifest or image config is small: is this address a Docker registry?".into()
            }
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

/// The media types of a single image's manifest and of an index, OCI and Docker v2.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";
const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;
const CONFIG_LIMIT: usize = 16 * 1024 * 1024;

/// A manifest exactly as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub url: String,
    /// The bytes as served: the digest is computed over these, never a re-serialisation.
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// The registry's `Docker-Content-Digest` header.
    pub digest_header: Option<String>,
}

pub struct Registry {
    http: reqwest::Client,
    name: String,
    base: String,
    credentials: Option<Credentials>,
    /// `Authorization` values that worked, by scope.
    authorized: Mutex<HashMap<String, String>>,
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
            authorized: Mutex::new(HashMap::new()),
        }
    }

    /// `host[:port]`, as the engine names the registry in references.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// `GET /v2/`, following the registry's Basic or Bearer challenge with the credentials.
    pub async fn ping(&self) -> Result<Ping, RegistryError> {
        let url = format!("{}/v2/", self.base);
        let (response, authenticated) = self.get(&url, None, None).await?;
        let status = response.status();
        match (status.is_success(), &self.credentials) {
            (true, creds) => Ok(Ping {
                url,
                authenticated_as: authenticated
                    .then(|| creds.as_ref().map(|c| c.username.clone()))
                    .flatten(),
            }),
            (false, Some(creds)) if authenticated => Err(self.refused(creds, status)),
            (false, _) => Err(self.unexpected(&url, status, response).await),
        }
    }

    /// `GET /v2/REPOSITORY/manifests/REFERENCE` (a tag or a digest), accepting OCI and Docker v2
    /// manifests and indexes.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let response = self.fetch(&url, repository, Some(MANIFEST_ACCEPT)).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE.as_str());
        let digest_header = header("Docker-Content-Digest");
        let bytes = self.read_limited(response, &url, MANIFEST_LIMIT).await?;
        Ok(Manifest {
            url,
            bytes,
            content_type,
            digest_header,
        })
    }

    /// `GET /v2/REPOSITORY/blobs/DIGEST` of a small blob (an image config).
    pub async fn config_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let response = self.fetch(&url, repository, None).await?;
        self.read_limited(response, &url, CONFIG_LIMIT).await
    }

    /// A successful GET with pull access to `repository`.
    async fn fetch(
        &self,
        url: &str,
        repository: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let scope = format!("repository:{repository}:pull");
        let (response, _) = self.get(url, Some(&scope), accept).await?;
        match response.status() {
            s if s.is_success() => Ok(response),
            status => Err(self.unexpected(url, status, response).await),
        }
    }

    /// A GET that answers the registry's challenge with the credentials when it asks for them
    /// (and remembers what worked). Also says whether credentials were sent.
    async fn get(
        &self,
        url: &str,
        scope: Option<&str>,
        accept: Option<&str>,
    ) -> Result<(reqwest::Response, bool), RegistryError> {
        let key = scope.unwrap_or_default().to_string();
        let remembered = self.remembered(&key);
        let response = self.send(url, remembered.as_deref(), accept).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok((response, remembered.is_some()));
        }
        let Some(creds) = &self.credentials else {
            return Err(RegistryError::CredentialsNeeded {
                registry: self.name.clone(),
            });
        };
        let auth = self.authorize(response.headers(), creds, scope).await?;
        let retry = self.send(url, Some(&auth), accept).await?;
        if matches!(
            retry.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.refused(creds, retry.status()));
        }
        if let Ok(mut authorized) = self.authorized.lock() {
            authorized.insert(key, auth);
        }
        Ok((retry, true))
    }

    fn remembered(&self, scope: &str) -> Option<String> {
        self.authorized
            .lock()
            .ok()
            .and_then(|a| a.get(scope).cloned())
    }

    async fn read_limited(
        &self,
        mut response: reqwest::Response,
        url: &str,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(self.unreachable(url))? {
            if out.len() + chunk.len() > limit {
                return Err(RegistryError::TooLarge {
                    registry: self.name.clone(),
                    url: url.to_string(),
                    limit,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn send(
        &self,
        url: &str,
        authorization: Option<&str>,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.http.get(url);
        if let Some(auth) = authorization {
            request = request.header(AUTHORIZATION, auth);
        }
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request.send().await.map_err(self.unreachable(url))
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
            .map_err(self.unreachable(&realm))?;
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

    fn unreachable(&self, url: &str) -> impl FnOnce(reqwest::Error) -> RegistryError + use<> {
        let (registry, url) = (self.name.clone(), url.to_string());
        move |source| RegistryError::Unreachable {
            registry,
            url,
            source,
        }
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
