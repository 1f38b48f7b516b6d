//! Which reverse proxy routes the service: `[caddy]`, `[traefik]` or `[nginx]`, at most one.
//! On a single host one is required (a backend whose proxy discovers its tasks itself may
//! later allow none: `ServiceSpec::proxy` is already an `Option`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ServiceSpec, check_snippet_dir};
use crate::host::proxy::{Proxy, nginx, traefik};

/// Traefik with its file provider: slipway writes `<name>.yml` into the watched directory.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traefik {
    /// The directory Traefik's file provider watches (`providers.file.directory`).
    pub dynamic_dir: PathBuf,
    /// The router rule, e.g. "Host(`example.com`)".
    pub rule: String,
    /// The entry points the router listens on, e.g. ["websecure"].
    pub entrypoints: Vec<String>,
    /// Traefik's API (e.g. "http://127.0.0.1:8080"), reached from the host's network, to confirm
    /// what Traefik applied. Without it the switch is not confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The router's TLS certificate resolver (`tls.certResolver`), if it serves HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_resolver: Option<String>,
}

/// nginx: slipway owns one file included inside an `upstream` block.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nginx {
    /// The file slipway writes (`server 127.0.0.1:PORT;`), included inside an `upstream` block.
    pub upstream_file: PathBuf,
    /// Run on the host before the reload; a failure restores the previous file.
    #[serde(default = "default_test_command")]
    pub test_command: String,
    /// Run on the host through the privileged nsenter sibling.
    #[serde(default = "default_nginx_reload")]
    pub reload_command: String,
}

fn default_test_command() -> String {
    "nginx -t".into()
}
fn default_nginx_reload() -> String {
    "systemctl reload nginx".into()
}

impl ServiceSpec {
    /// The proxy table the spec has (the first, when it wrongly has several).
    pub fn proxy(&self) -> Option<Proxy<'_>> {
        let caddy = self.caddy.as_ref().map(Proxy::Caddy);
        let traefik = self.traefik.as_ref().map(Proxy::Traefik);
        caddy.or(traefik).or(self.nginx.as_ref().map(Proxy::Nginx))
    }

    /// One proxy table, and what goes into its file or onto the host checked.
    pub(super) fn proxy_problems(&self, p: &mut Vec<String>) {
        let tables: Vec<&str> = [
            ("[caddy]", self.caddy.is_some()),
            ("[traefik]", self.traefik.is_some()),
            ("[nginx]", self.nginx.is_some()),
        ]
        .into_iter()
        .filter_map(|(t, has)| has.then_some(t))
        .collect();
        match tables.len() {
            0 if self.swarm.as_ref().is_some_and(|s| s.proxy_discovers_tasks()) => {}
            0 => p.push("proxy: no [caddy], [traefik] or [nginx] table: slipway switches the proxy that routes to the release; add the table of the proxy this host runs (only a [swarm] service with endpoint_mode = \"dnsrr\" may leave it out)".into()),
            1 => {}
            _ => p.push(format!(
                "proxy: {} are both given; a service has one proxy: keep the table of the proxy this host runs",
                tables.join(" and ")
            )),
        }
        if let Some(t) = &self.traefik {
            traefik_problems(t, p);
        }
        if let Some(n) = &self.nginx {
            nginx_problems(n, p);
        }
    }
}

fn traefik_problems(t: &Traefik, p: &mut Vec<String>) {
    if let Err(why) = check_snippet_dir(&t.dynamic_dir) {
        let dir = t.dynamic_dir.display();
        p.push(format!("traefik.dynamic_dir: `{dir}` {why}"));
    }
    if let Err(why) = traefik::check_rule(&t.rule) {
        p.push(format!("traefik.rule: `{}` {why}", t.rule.escape_debug()));
    }
    if t.entrypoints.is_empty() {
        p.push("traefik.entrypoints: name at least one entry point, e.g. [\"websecure\"]".into());
    }
    for (i, e) in t.entrypoints.iter().enumerate() {
        if let Err(why) = traefik::check_name(e) {
            p.push(format!(
                "traefik.entrypoints[{i}]: `{}` {why}",
                e.escape_debug()
            ));
        }
    }
    if let Some(r) = &t.cert_resolver
        && let Err(why) = traefik::check_name(r)
    {
        p.push(format!(
            "traefik.cert_resolver: `{}` {why}",
            r.escape_debug()
        ));
    }
    if let Some(u) = &t.api_url
        && let Err(why) = traefik::check_api_url(u)
    {
        p.push(format!("traefik.api_url: `{}` {why}", u.escape_debug()));
    }
}

fn nginx_problems(n: &Nginx, p: &mut Vec<String>) {
    let file = n.upstream_file.display();
    match n.upstream_file.parent() {
        Some(dir) if dir.parent().is_some() => {
            if let Err(why) = check_snippet_dir(&n.upstream_file) {
                p.push(format!("nginx.upstream_file: `{file}` {why}"));
            }
        }
        _ => p.push(format!(
            "nginx.upstream_file: `{file}` must be an absolute file in a directory below /, e.g. /etc/nginx/slipway/web.upstream"
        )),
    }
    let name = n.upstream_file.file_name().map(|f| f.to_string_lossy());
    if let Err(why) = nginx::check_file_name(name.as_deref().unwrap_or_default()) {
        p.push(format!("nginx.upstream_file: `{file}` {why}"));
    }
    for (key, command) in [
        ("nginx.test_command", &n.test_command),
        ("nginx.reload_command", &n.reload_command),
    ] {
        if let Err(e) = crate::host::split_command(command) {
            p.push(format!("{key}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TOP: &str = "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\n[health]\n";

    fn problems(tables: &str) -> String {
        match ServiceSpec::parse(Path::new("s.toml"), &format!("{TOP}{tables}")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn one_proxy_table_exactly() {
        let caddy = "[caddy]\nsnippet_dir = \"/etc/caddy/slipway\"\n";
        let nginx = "[nginx]\nupstream_file = \"/etc/nginx/slipway/web.upstream\"\n";
        let traefik = "[traefik]\ndynamic_dir = \"/etc/traefik/dynamic\"\nrule = \"Host(`a.test`)\"\nentrypoints = [\"web\"]\napi_url = \"http://127.0.0.1:8080\"\ncert_resolver = \"le\"\n";
        for ok in [caddy, nginx, traefik] {
            assert_eq!(problems(ok), "", "{ok}");
        }
        assert!(problems("").contains("proxy: no [caddy], [traefik] or [nginx] table"));
        let two = problems(&format!("{caddy}{nginx}"));
        assert!(
            two.contains("proxy: [caddy] and [nginx] are both given"),
            "{two}"
        );
        let spec = ServiceSpec::parse(Path::new("s.toml"), &format!("{TOP}{nginx}")).unwrap();
        let n = spec.nginx.as_ref().unwrap();
        assert_eq!(
            (n.test_command.as_str(), n.reload_command.as_str()),
            ("nginx -t", "systemctl reload nginx")
        );
    }

    #[test]
    fn bad_proxy_values_are_named_by_key() {
        for (table, key) in [
            (
                "[nginx]\nupstream_file = \"relative/web\"\n",
                "nginx.upstream_file:",
            ),
            (
                "[nginx]\nupstream_file = \"/etc/nginx/.web\"\n",
                "nginx.upstream_file:",
            ),
            (
                "[nginx]\nupstream_file = \"/web\"\n",
                "nginx.upstream_file:",
            ),
            (
                "[nginx]\nupstream_file = \"/etc/n/web\"\ntest_command = \"nginx 't\"\n",
                "nginx.test_command:",
            ),
            (
                "[traefik]\ndynamic_dir = \"/d\"\nrule = \"Host('a')\"\nentrypoints = [\"web\"]\n",
                "traefik.rule:",
            ),
            (
                "[traefik]\ndynamic_dir = \"/d\"\nrule = \"Host(`a`)\"\nentrypoints = []\n",
                "traefik.entrypoints:",
            ),
            (
                "[traefik]\ndynamic_dir = \"/d\"\nrule = \"Host(`a`)\"\nentrypoints = [\"a b\"]\n",
                "traefik.entrypoints[0]:",
            ),
            (
                "[traefik]\ndynamic_dir = \"d\"\nrule = \"Host(`a`)\"\nentrypoints = [\"web\"]\n",
                "traefik.dynamic_dir:",
            ),
            (
                "[traefik]\ndynamic_dir = \"/d\"\nrule = \"Host(`a`)\"\nentrypoints = [\"web\"]\napi_url = \"127.0.0.1:8080\"\n",
                "traefik.api_url:",
            ),
            (
                "[traefik]\ndynamic_dir = \"/d\"\nrule = \"Host(`a`)\"\nentrypoints = [\"web\"]\ncert_resolver = \"l e\"\n",
                "traefik.cert_resolver:",
            ),
        ] {
            let p = problems(table);
            assert!(p.contains(key), "{table}: {p}");
        }
    }
}
