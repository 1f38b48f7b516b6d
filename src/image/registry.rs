//! A registry's HTTP API (distribution v2), spoken with reqwest: used to check that a registry
//! answers and accepts the credentials, and to read manifests independently of the engine.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use secrecy::ExposeSecret;
use thiserror::Error;

use crate::image::credentials::{Credentials, registry_host};

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
    /// The registry itself failed (an HTTP 5xx: a full disk, a crashed storage backend, a proxy
    /// in front of it that lost it): not a matter of credentials.
    #[error("registry {registry} failed: HTTP {status} from {url}{}", detail(.body))]
    Failed {
        registry: String,
        url: String,
        status: u16,
        body: String,
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
            RegistryError::Failed { status, .. } => format!(
                "the registry itself failed (HTTP {status}): check its logs and free disk space, then retry"
            ),
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

/// `: BODY`, or nothing when the registry said nothing.
fn detail(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
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
    /// The bytes as served: the digest is computed over these, never a re-serialisation.
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// The registry's `Docker-Content-Digest` header.
    pub digest_header: Option<String>,
    pub url: String,
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
            // A 5xx is the registry failing, whatever credentials were sent.
            (false, Some(creds)) if authenticated && !status.is_server_error() => {
                Err(self.refused(creds, status))
            }
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
            bytes,
            content_type,
            digest_header,
            url,
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
        let status = response.status();
        if status.is_server_error() {
            return Err(self.unexpected(&realm, status, response).await);
        }
        if !status.is_success() {
            return Err(self.refused(creds, status));
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
        let (registry, url) = (self.name.clone(), url.to_string());
        if status.is_server_error() {
            return RegistryError::Failed {
                registry,
                url,
                status: status.as_u16(),
                body: self.redact(&error_text(&body, 200)),
            };
        }
        RegistryError::Unexpected {
            registry,
            url,
            status: status.as_u16(),
            body: self.redact(&first_line(&body, 200)),
        }
    }

    /// `text` with the password (and its Basic form) replaced, for text a registry or the engine
    /// sent back that is about to be shown.
    pub fn redact(&self, text: &str) -> String {
        redact(text, self.credentials.as_ref())
    }
}

/// `text` with the credentials' password, and the Basic `user:password` form of them, replaced
/// by `<redacted>`.
pub fn redact(text: &str, credentials: Option<&Credentials>) -> String {
    let Some(creds) = credentials else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for secret in [creds.basic(), creds.password.expose_secret().to_string()] {
        if !secret.is_empty() {
            out = out.replace(&secret, "<redacted>");
        }
    }
    out
}

/// What a registry said in an error body: `CODE: message` for each of distribution's
/// `{"errors": [...]}`, else the body's first line; at most `max` characters.
fn error_text(body: &str, max: usize) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let errors = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.as_array());
    let Some(errors) = errors.filter(|e| !e.is_empty()) else {
        return first_line(body, max);
    };
    let text = errors
        .iter()
        .map(|e| {
            let field = |name: &str| e.get(name).and_then(|v| v.as_str()).unwrap_or_default();
            let mut one = match (field("code"), field("message")) {
                ("", message) => message.to_string(),
                (code, "") => code.to_string(),
                (code, message) => format!("{code}: {message}"),
            };
            match e.get("detail") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(d)) if d.is_empty() => {}
                Some(serde_json::Value::String(d)) => one.push_str(&format!(" ({d})")),
                Some(d) => one.push_str(&format!(" ({d})")),
            }
            one
        })
        .collect::<Vec<_>>()
        .join("; ");
    first_line(&text, max)
}

/// reqwest is built without a default crypto provider: ring keeps the static build simple.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let builder = || {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
    };
    // The fallback has its own roots, so only a broken crypto provider could fail it: then a
    // client without TLS still speaks to loopback (plain HTTP) registries, and HTTPS says why.
    tls_client(builder).unwrap_or_else(|e| {
        tracing::debug!("no TLS client ({e}); HTTPS registries will fail to connect");
        reqwest::Client::new()
    })
}

/// `make()` built with the system's CA store; where the system has none (a `FROM scratch` job
/// container has no /etc/ssl), with the web roots bundled in the binary (Mozilla's, via
/// webpki-root-certs) instead.
pub fn tls_client(
    make: impl Fn() -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match make().build() {
        Ok(client) => Ok(client),
        Err(e) => {
            tracing::debug!(
                "the system's CA store is unusable ({e}): using the web roots bundled in slipway"
            );
            make().tls_certs_only(bundled_roots()).build()
        }
    }
}

fn bundled_roots() -> Vec<reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect()
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

    /// A registry on 127.0.0.1 that answers each connection, in order, with the next of the
    /// responses `make` writes (given its address). Returns that address.
    fn serve(make: impl FnOnce(&str) -> Vec<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let responses = make(&addr);
        std::thread::spawn(move || {
            for response in responses {
                let Ok((mut socket, _)) = listener.accept() else {
                    return;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(response.as_bytes());
            }
        });
        addr
    }

    fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(body);
        out
    }

    const PASSWORD: &str = "s3cret-Pa55word";

    fn credentials() -> Option<Credentials> {
        Some(Credentials {
            username: "ci".into(),
            password: secrecy::SecretString::from(PASSWORD),
            source: "--registry-user and $PW".into(),
        })
    }

    const DISK_FULL: &str = r#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"filesystem: no space left on device"}]}"#;

    #[tokio::test]
    async fn a_5xx_answer_to_the_ping_is_the_registry_failing() {
        let addr = serve(|_| vec![response("500 Internal Server Error", &[], DISK_FULL)]);
        let err = Registry::new(&addr, false, None).ping().await.unwrap_err();
        assert!(
            matches!(err, RegistryError::Failed { status: 500, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "registry {addr} failed: HTTP 500 from http://{addr}/v2/: UNKNOWN: unknown error (filesystem: no space left on device)"
            )
        );
        let hint = err.hint();
        assert!(
            hint.contains(
                "the registry itself failed (HTTP 500): check its logs and free disk space"
            ),
            "{hint}"
        );
        assert!(
            !hint.contains("credentials") && !hint.contains("password"),
            "{hint}"
        );
    }

    #[tokio::test]
    async fn a_5xx_after_sending_credentials_is_not_refused_credentials() {
        let addr = serve(|_| {
            vec![
                response(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", "Basic realm=\"r\"")],
                    "",
                ),
                response(
                    "503 Service Unavailable",
                    &[],
                    &format!("storage down; you sent {PASSWORD}"),
                ),
            ]
        });
        let err = Registry::new(&addr, false, credentials())
            .ping()
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Failed { status: 503, .. }),
            "{err:?}"
        );
        let text = crate::doctor::chain(&err);
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(text.contains("storage down; you sent <redacted>"), "{text}");
        assert!(!err.hint().contains("credentials"));
    }

    #[tokio::test]
    async fn a_401_after_sending_credentials_is_still_refused_credentials() {
        let basic = ("WWW-Authenticate", "Basic realm=\"r\"");
        let addr = serve(|_| {
            vec![
                response("401 Unauthorized", &[basic], ""),
                response("401 Unauthorized", &[basic], ""),
            ]
        });
        let err = Registry::new(&addr, false, credentials())
            .ping()
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::CredentialsRefused { status: 401, .. }),
            "{err:?}"
        );
        assert!(err.hint().contains("check the user and password"));
    }

    #[tokio::test]
    async fn a_5xx_manifest_read_is_the_registry_failing() {
        let addr = serve(|_| vec![response("502 Bad Gateway", &[], "<html>bad gateway</html>")]);
        let err = Registry::new(&addr, false, None)
            .manifest("app", "latest")
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Failed { status: 502, ref body, .. } if body == "<html>bad gateway</html>"),
            "{err:?}"
        );
        assert!(err.hint().contains("HTTP 502"));
    }

    #[tokio::test]
    async fn a_5xx_from_the_token_server_is_the_registry_failing() {
        let addr = serve(|addr| {
            let challenge = format!("Bearer realm=\"http://{addr}/token\",service=\"reg\"");
            vec![
                response("401 Unauthorized", &[("WWW-Authenticate", &challenge)], ""),
                response("500 Internal Server Error", &[], "token service down"),
            ]
        });
        let err = Registry::new(&addr, false, credentials())
            .ping()
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Failed { status: 500, ref url, .. } if url.ends_with("/token")),
            "{err:?}"
        );
    }

    #[test]
    fn distribution_error_bodies_are_summarised() {
        assert_eq!(
            error_text(DISK_FULL, 200),
            "UNKNOWN: unknown error (filesystem: no space left on device)"
        );
        assert_eq!(
            error_text(
                r#"{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}"#,
                200
            ),
            "UNAVAILABLE: service unavailable"
        );
        assert_eq!(error_text("plain text\nsecond line", 200), "plain text");
        assert_eq!(error_text("", 200), "");
    }

    #[test]
    fn redact_removes_the_password_and_its_basic_form() {
        let creds = credentials().unwrap();
        let text = format!("x {PASSWORD} y Basic {}", creds.basic());
        assert_eq!(
            redact(&text, Some(&creds)),
            "x <redacted> y Basic <redacted>"
        );
        assert_eq!(redact(&text, None), text);
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
