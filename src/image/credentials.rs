//! Registry credentials: from flags (a user and the *name* of an env var holding the password) or
//! from Docker's `config.json` (`auths`). Secret values live in `SecretString` and never print.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
    /// Where they came from, for messages (never the value).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("--registry-password-env names `{name}`, but that environment variable is not set")]
    PasswordEnvMissing { name: String },
    #[error("--registry-password-env was given without --registry-user")]
    UserMissing,
    #[error("cannot read Docker's config file {}", path.display())]
    ConfigUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Docker's config file {} is not valid: {reason}", path.display())]
    ConfigInvalid { path: PathBuf, reason: String },
}

impl Credentials {
    /// Credentials for `registry`: the flags win; else DOCKER_CONFIG (or ~/.docker)/config.json.
    pub fn resolve(
        registry: &str,
        user: Option<&str>,
        password_env: Option<&str>,
    ) -> Result<Option<Credentials>, CredentialsError> {
        match (user, password_env) {
            (Some(user), Some(name)) => {
                let password = std::env::var(name)
                    .map_err(|_| CredentialsError::PasswordEnvMissing { name: name.into() })?;
                return Ok(Some(Credentials {
                    username: user.to_string(),
                    password: SecretString::from(password),
                    source: format!("--registry-user and ${name}"),
                }));
            }
            (None, Some(_)) => return Err(CredentialsError::UserMissing),
            _ => {}
        }
        let Some(path) = docker_config_path() else {
            return Ok(None);
        };
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| {
            CredentialsError::ConfigUnreadable {
                path: path.clone(),
                source,
            }
        })?;
        from_config_json(&text, registry, &path)
    }

    /// `user:password` base64-encoded, for a Basic `Authorization` header.
    pub fn basic(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.username,
            self.password.expose_secret()
        ))
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker/config.json"))
}

/// Reads `auths` of a Docker config file. Keys may carry a scheme or path
/// (`https://index.docker.io/v1/`); they match `registry` by host.
pub fn from_config_json(
    text: &str,
    registry: &str,
    path: &Path,
) -> Result<Option<Credentials>, CredentialsError> {
    let invalid = |reason: String| CredentialsError::ConfigInvalid {
        path: path.to_path_buf(),
        reason,
    };
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let wanted = registry_host(registry);
    let Some((key, entry)) = auths.iter().find(|(k, _)| registry_host(k) == wanted) else {
        return Ok(None);
    };
    let source = format!("{} (auths.{key})", path.display());
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| invalid(format!("auths.{key}.auth is not base64")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| invalid(format!("auths.{key}.auth is not UTF-8")))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| invalid(format!("auths.{key}.auth is not user:password")))?;
        return Ok(Some(Credentials {
            username: user.to_string(),
            password: SecretString::from(pass.to_string()),
            source,
        }));
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|p| p.as_str()),
    ) {
        (Some(user), Some(pass)) => Ok(Some(Credentials {
            username: user.to_string(),
            password: SecretString::from(pass.to_string()),
            source,
        })),
        _ => Ok(None),
    }
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; `127.0.0.1:5000` stays.
pub fn registry_host(s: &str) -> &str {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:p+/=>?~w");
        let text = format!(
            r#"{{"auths":{{"https://127.0.0.1:5001/v1/":{{"auth":"{auth}"}},"reg.example":{{"username":"u","password":"pw"}}}}}}"#
        );
        let path = Path::new("/x/config.json");
        let c = from_config_json(&text, "127.0.0.1:5001", path)
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "ci");
        assert_eq!(c.password.expose_secret(), "p+/=>?~w");
        let c = from_config_json(&text, "reg.example", path)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose_secret()),
            ("u", "pw")
        );
        assert!(
            from_config_json(&text, "other:5000", path)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials {
            username: "ci".into(),
            password: SecretString::from("hunter2-secret".to_string()),
            source: "test".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn bad_config_names_the_file() {
        let err = from_config_json("{not json", "r", Path::new("/etc/cfg.json")).unwrap_err();
        assert!(err.to_string().contains("/etc/cfg.json"), "{err}");
    }
}
