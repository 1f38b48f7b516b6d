//! The proxy seam: the one place that knows which reverse proxy routes a service. Each proxy is
//! its own room (Caddy, Traefik's file provider, nginx) with the same shape: one file slipway
//! owns on the host, rendered from checked values only; a way to take it in (a reload command
//! with an optional test, or Traefik's own watch confirmed through its API); the applied record
//! beside it (ADR 0007). The rollout, rollback, watch and plan call this seam and never name a
//! proxy.

pub mod caddy;
pub mod nginx;
pub mod traefik;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use caddy::ConfigValueError;

use crate::engine::Engine;
use crate::host::agent::HostAgent;
use crate::host::{CommandError, split_command};
use crate::image::revision::Revision;
use crate::spec;

/// Which proxy a service is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    #[default]
    Caddy,
    Traefik,
    Nginx,
}

impl ProxyKind {
    /// The proxy's name as its users write it.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Caddy => "Caddy",
            ProxyKind::Traefik => "Traefik",
            ProxyKind::Nginx => "nginx",
        }
    }

    /// The 127.0.0.1 port a file of this proxy routes to.
    pub fn routed_port(self, content: &str) -> Option<u16> {
        match self {
            ProxyKind::Caddy => caddy::snippet_port(content),
            ProxyKind::Traefik => traefik::routed_port(content),
            ProxyKind::Nginx => nginx::routed_port(content),
        }
    }

    /// What the file holds when no release serves (valid for the proxy, routes nowhere).
    pub fn placeholder(self) -> &'static str {
        match self {
            ProxyKind::Caddy | ProxyKind::Traefik => PLACEHOLDER,
            ProxyKind::Nginx => nginx::PLACEHOLDER,
        }
    }

    /// What a failed apply is called in a report.
    pub fn apply_failed(self) -> &'static str {
        match self {
            ProxyKind::Caddy => "the Caddy reload failed",
            ProxyKind::Traefik => "Traefik did not serve the new file",
            ProxyKind::Nginx => "the nginx reload failed",
        }
    }

    /// What a successful apply is called in a report.
    pub fn applied(self) -> &'static str {
        match self {
            ProxyKind::Caddy => "Caddy reloaded",
            ProxyKind::Traefik => "Traefik serves it",
            ProxyKind::Nginx => "nginx tested and reloaded",
        }
    }

    /// How the proxy takes a file in, as an instruction.
    pub fn apply_verb(self) -> &'static str {
        match self {
            ProxyKind::Caddy => "reload Caddy",
            ProxyKind::Traefik => "wait for Traefik to serve it",
            ProxyKind::Nginx => "test and reload nginx",
        }
    }

    /// The line that routes to `port`, for an operator repairing the file by hand.
    pub fn manual_route(self, port: u16) -> String {
        match self {
            ProxyKind::Caddy => format!("reverse_proxy 127.0.0.1:{port}"),
            ProxyKind::Traefik => {
                format!("url: 'http://127.0.0.1:{port}' (as the service's server)")
            }
            ProxyKind::Nginx => format!("server 127.0.0.1:{port};"),
        }
    }
}

/// What a comment-only file says (Caddy, Traefik).
pub const PLACEHOLDER: &str = "# slipway: no release serves here\n";

/// A service's proxy as its spec names it: where its file lives and what goes into it.
#[derive(Debug, Clone, Copy)]
pub enum Proxy<'a> {
    Caddy(&'a spec::Caddy),
    Traefik(&'a spec::Traefik),
    Nginx(&'a spec::Nginx),
}

/// What every proxy file says about itself, each value checked again where it is written.
pub struct UpstreamValues<'a> {
    pub service: &'a str,
    pub port: u16,
    pub digest: &'a str,
    pub revision: &'a Revision,
}

impl<'a> Proxy<'a> {
    pub fn kind(self) -> ProxyKind {
        match self {
            Proxy::Caddy(_) => ProxyKind::Caddy,
            Proxy::Traefik(_) => ProxyKind::Traefik,
            Proxy::Nginx(_) => ProxyKind::Nginx,
        }
    }

    /// The host directory slipway writes in (mounted into the host agent).
    pub fn dir(self) -> &'a Path {
        match self {
            Proxy::Caddy(c) => &c.snippet_dir,
            Proxy::Traefik(t) => &t.dynamic_dir,
            Proxy::Nginx(n) => n.upstream_file.parent().unwrap_or(Path::new("/")),
        }
    }

    /// The spec key that names that directory (for messages).
    pub fn dir_key(self) -> &'static str {
        match self {
            Proxy::Caddy(_) => "caddy.snippet_dir",
            Proxy::Traefik(_) => "traefik.dynamic_dir",
            Proxy::Nginx(_) => "nginx.upstream_file",
        }
    }

    /// The file's name inside `dir`.
    pub fn file(self, service: &str) -> String {
        match self {
            Proxy::Caddy(_) => format!("{service}.caddy"),
            Proxy::Traefik(_) => format!("{service}.yml"),
            Proxy::Nginx(n) => n
                .upstream_file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    pub fn path(self, service: &str) -> PathBuf {
        self.dir().join(self.file(service))
    }

    /// The one renderer of proxy config: refuses any value it cannot write as it is.
    pub fn render(self, v: &UpstreamValues<'_>) -> Result<String, ConfigValueError> {
        match self {
            Proxy::Caddy(c) => caddy::render_snippet(&caddy::SnippetValues {
                service: v.service,
                port: v.port,
                digest: v.digest,
                revision: v.revision,
                options: &c.upstream_options,
            }),
            Proxy::Traefik(t) => traefik::render(t, v),
            Proxy::Nginx(_) => nginx::render(v),
        }
    }

    /// How the written file is taken in; `reload_override` is `--reload-command`.
    pub fn driver(
        self,
        service: &str,
        reload_override: Option<&str>,
    ) -> Result<Driver, CommandError> {
        let reload = |spec_command: &str| split_command(reload_override.unwrap_or(spec_command));
        Ok(match self {
            Proxy::Caddy(c) => Driver::Reload {
                kind: ProxyKind::Caddy,
                test: None,
                reload: reload(&c.reload_command)?,
            },
            Proxy::Nginx(n) => Driver::Reload {
                kind: ProxyKind::Nginx,
                test: Some(split_command(&n.test_command)?),
                reload: reload(&n.reload_command)?,
            },
            Proxy::Traefik(t) => Driver::Confirm {
                service: service.to_string(),
                api_url: t.api_url.clone(),
            },
        })
    }
}

/// A value the proxy file may not hold, as the renderers refuse it.
pub(crate) fn refuse(what: &str, value: &str, why: &str) -> ConfigValueError {
    ConfigValueError {
        what: format!("{what} `{}`", value.escape_debug()),
        why: why.to_string(),
    }
}

/// The values every proxy file carries, checked: name, digest, revision.
pub(crate) fn check_values(v: &UpstreamValues<'_>) -> Result<(), ConfigValueError> {
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
    if !crate::image::reference::is_sha256_digest(v.digest) {
        return Err(refuse("the digest", v.digest, "not sha256:<64 hex>"));
    }
    if !crate::image::revision::is_token(v.revision.as_str()) {
        return Err(refuse(
            "the revision",
            v.revision.as_str(),
            "not a short token",
        ));
    }
    Ok(())
}

/// The proxy a command reaches outside a rollout (`reload`, `doctor`): a spec's, or Caddy's
/// with the given or default reload command.
pub struct ProxyTarget {
    /// How the proxy takes a change in; `None`: the spec names no proxy.
    pub driver: Option<Driver>,
    /// The directory slipway writes, and the spec key naming it (only with a spec).
    pub dir: Option<(String, &'static str)>,
}

/// How a written file is taken in by the proxy, resolved from the spec and the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// Commands run on the host through the nsenter sibling: an optional test, then the reload.
    Reload {
        kind: ProxyKind,
        test: Option<Vec<String>>,
        reload: Vec<String>,
    },
    /// The proxy watches the file itself (Traefik): confirmed through its API.
    Confirm {
        service: String,
        api_url: Option<String>,
    },
}

impl Driver {
    pub fn kind(&self) -> ProxyKind {
        match self {
            Driver::Reload { kind, .. } => *kind,
            Driver::Confirm { .. } => ProxyKind::Traefik,
        }
    }

    /// What applying means, for the plan and the exit-3 advice.
    pub fn text(&self) -> String {
        match self {
            Driver::Reload {
                test: Some(t),
                reload,
                ..
            } => format!("{} && {}", t.join(" "), reload.join(" ")),
            Driver::Reload { reload, .. } => reload.join(" "),
            Driver::Confirm {
                api_url: Some(api), ..
            } => format!("Traefik applies the file itself; confirmed at {api}/api/http/services"),
            Driver::Confirm { api_url: None, .. } => format!(
                "Traefik applies the file itself; not confirmed (no traefik.api_url): waits {} ms",
                traefik::UNCONFIRMED_WAIT.as_millis()
            ),
        }
    }

    /// The proxy's own check of the written file before it takes it in (`nginx -t`). A failure
    /// means the proxy still runs what it ran before.
    pub async fn check(&self, engine: &Engine, agent: &HostAgent) -> Result<(), String> {
        match self {
            Driver::Reload {
                kind,
                test: Some(test),
                ..
            } => {
                let out = agent
                    .on_host(engine, test)
                    .await
                    .map_err(|e| e.to_string())?;
                if out.code != 0 {
                    let said = format!("{}{}", out.stdout, out.stderr);
                    return Err(format!(
                        "`{}` rejected the new file (exit {}): {}; {} still runs its previous config",
                        test.join(" "),
                        out.code,
                        said.trim(),
                        kind.name()
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Makes the proxy serve `content` (the file just written; `None`: the placeholder) and
    /// returns what it said.
    pub async fn apply(
        &self,
        engine: &Engine,
        agent: &HostAgent,
        content: Option<&str>,
    ) -> Result<String, String> {
        match self {
            Driver::Reload { reload, .. } => {
                let out = agent
                    .reload(engine, reload)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("{}{}", out.stdout, out.stderr).trim().into())
            }
            Driver::Confirm { service, api_url } => {
                let port = content.and_then(traefik::routed_port);
                traefik::confirm(engine, agent, api_url.as_deref(), service, port).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_proxy_names_its_file_and_finds_its_port() {
        let dir = std::path::PathBuf::from("/etc/x");
        let caddy = spec::Caddy {
            snippet_dir: dir.clone(),
            reload_command: "systemctl reload caddy".into(),
            upstream_options: vec![],
        };
        let nginx = spec::Nginx {
            upstream_file: dir.join("web.upstream"),
            test_command: "nginx -t".into(),
            reload_command: "systemctl reload nginx".into(),
        };
        assert_eq!(Proxy::Caddy(&caddy).file("web"), "web.caddy");
        assert_eq!(Proxy::Nginx(&nginx).file("web"), "web.upstream");
        assert_eq!(Proxy::Nginx(&nginx).dir(), dir.as_path());
        let d = Proxy::Nginx(&nginx).driver("web", None).unwrap();
        assert_eq!(d.text(), "nginx -t && systemctl reload nginx");
        let d = Proxy::Caddy(&caddy)
            .driver("web", Some("caddy reload"))
            .unwrap();
        assert_eq!(d.text(), "caddy reload");
        for kind in [ProxyKind::Caddy, ProxyKind::Traefik, ProxyKind::Nginx] {
            assert_eq!(kind.routed_port(kind.placeholder()), None, "{kind:?}");
        }
    }
}
