//! `slipway doctor`: the preflight a team runs before trusting slipway on a host.

use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError, OneShotExit};
use crate::host::HostAccess;
use crate::host::proxy::{Driver, ProxyKind, ProxyTarget};
use crate::image::credentials::Credentials;
use crate::image::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub elapsed_ms: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

pub struct RegistryTarget {
    pub name: String,
    pub insecure: bool,
    pub credentials: Option<Credentials>,
}

pub struct Doctor {
    pub docker_host: String,
    pub registry: Option<RegistryTarget>,
    pub host: HostAccess,
    pub proxy: ProxyTarget,
    /// `--swarm-network`: check a swarm (ADR 0011) instead of the host's sibling and reload.
    pub swarm_network: Option<String>,
}

impl Doctor {
    pub async fn run(&self, cancel: &CancellationToken) -> Report {
        let mut checks = Vec::new();
        let engine = self.check_engine(&mut checks).await;
        checks.push(self.check_registry().await);
        match (engine, &self.swarm_network) {
            (Some(engine), Some(network)) => {
                checks.extend(swarm_checks(&engine, network).await);
            }
            (Some(engine), None) => {
                if self.check_sibling(&engine, cancel, &mut checks).await {
                    checks.extend(self.host_checks(&engine, cancel).await);
                } else {
                    checks.extend(
                        self.host_check_names()
                            .map(|name| skip(name, "the privileged sibling could not run")),
                    );
                }
            }
            (None, _) => {
                checks.push(skip("privileged-sibling", "the engine is not usable"));
                checks.extend(
                    self.host_check_names()
                        .map(|name| skip(name, "the engine is not usable")),
                );
            }
        }
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    async fn check_engine(&self, checks: &mut Vec<Check>) -> Option<Engine> {
        let started = Instant::now();
        let hint = "is dockerd running, and is this the right socket? Set --docker-host or DOCKER_HOST (a CI job container needs the host's /var/run/docker.sock mounted)";
        let engine = match Engine::connect(&self.docker_host) {
            Ok(engine) => engine,
            Err(e) => {
                checks.push(fail("engine", chain(&e), hint, started));
                return None;
            }
        };
        match engine.version().await {
            Ok(v) => {
                checks.push(ok(
                    "engine",
                    format!(
                        "{} {} (API {}, {}/{}) at {}",
                        v.kind.name(),
                        v.version,
                        v.api_version,
                        v.os,
                        v.arch,
                        self.docker_host
                    ),
                    started,
                ));
                if v.kind == crate::engine::EngineKind::Podman {
                    checks.push(podman_health(&engine, &v).await);
                }
                Some(engine)
            }
            Err(e) => {
                checks.push(fail("engine", chain(&e), hint, started));
                None
            }
        }
    }

    async fn check_registry(&self) -> Check {
        let started = Instant::now();
        let Some(target) = &self.registry else {
            return skip("registry", "no --registry given");
        };
        let registry = Registry::new(&target.name, target.insecure, target.credentials.clone());
        match registry.ping().await {
            Ok(ping) => ok(
                "registry",
                match ping.authenticated_as {
                    Some(user) => {
                        format!("{} answers, credentials for `{user}` accepted", ping.url)
                    }
                    None => format!("{} answers, anonymous access", ping.url),
                },
                started,
            ),
            Err(e) => fail("registry", chain(&e), &e.hint(), started),
        }
    }

    /// Pulls the sibling image by digest if missing, then runs `nsenter ... -- true` in it.
    async fn check_sibling(
        &self,
        engine: &Engine,
        cancel: &CancellationToken,
        checks: &mut Vec<Check>,
    ) -> bool {
        let started = Instant::now();
        let name = "privileged-sibling";
        if let Err(e) = engine.ensure_image(self.host.image.as_str()).await {
            let hint = e.hint().unwrap_or_else(|| {
                "the engine must hold this image or be able to pull it by digest: push it to a registry the host can reach, or `docker pull` it on the host".into()
            });
            checks.push(fail(name, chain(&e), &hint, started));
            return false;
        }
        let shot = self.host.nsenter("doctor", &["true".to_string()]);
        let command = shot.cmd.join(" ");
        let check = match engine.run_oneshot(&shot, cancel).await {
            Ok(exit) if exit.code == 0 => ok(
                name,
                format!(
                    "`{command}` in a privileged --pid=host sibling from {} exited 0 ({} ms)",
                    self.host.image,
                    exit.elapsed.as_millis()
                ),
                started,
            ),
            Ok(exit) => fail(
                name,
                format!("`{command}` exited {}: {}", exit.code, evidence(&exit)),
                "the engine must allow --privileged and --pid=host for this socket's user; with a Docker-in-Docker engine PID 1 is not the host's init, so use the host's own socket",
                started,
            ),
            Err(e) => fail(name, chain(&e), sibling_hint(&e), started),
        };
        let passed = check.status == Status::Ok;
        checks.push(check);
        passed
    }

    /// The checks run on the host through the sibling, by name.
    fn host_check_names(&self) -> impl Iterator<Item = &'static str> {
        let dir = self.proxy.dir.is_some().then_some("proxy-dir");
        dir.into_iter().chain(["reload-command", "reload-resets"])
    }

    /// The proxy's directory, its reload (and test) command, and the reload's resets.
    async fn host_checks(&self, engine: &Engine, cancel: &CancellationToken) -> Vec<Check> {
        let mut checks = Vec::new();
        if let Some((dir, key)) = &self.proxy.dir {
            checks.push(self.check_proxy_dir(engine, cancel, dir, key).await);
        }
        let Some(driver) = &self.proxy.driver else {
            let why = "the spec names no proxy";
            checks.extend([skip("reload-command", why), skip("reload-resets", why)]);
            return checks;
        };
        let kind = driver.kind();
        let name = kind.name();
        match driver {
            Driver::Reload { test, reload, .. } => {
                let mut found = Vec::new();
                for argv in test.iter().chain([reload]) {
                    found.push(self.check_reload_command(engine, cancel, kind, argv).await);
                }
                checks.push(merge_checks(found));
            }
            Driver::Confirm { .. } => checks.push(skip(
                "reload-command",
                &format!("{name} watches its directory itself: nothing is reloaded"),
            )),
        }
        checks.push(match kind {
            ProxyKind::Caddy => self.check_reload_resets(engine, cancel).await,
            _ => skip(
                "reload-resets",
                &format!("only a Caddy reload closes its listener; {name} keeps it"),
            ),
        });
        checks
    }

    /// The directory slipway writes the proxy's file in exists on the host (Day 0 makes it).
    async fn check_proxy_dir(
        &self,
        engine: &Engine,
        cancel: &CancellationToken,
        dir: &str,
        key: &str,
    ) -> Check {
        let started = Instant::now();
        let name = "proxy-dir";
        let probe = ["test", "-d", dir].map(String::from);
        match engine
            .run_oneshot(&self.host.nsenter("doctor", &probe), cancel)
            .await
        {
            Ok(exit) if exit.code == 0 => {
                ok(name, format!("{dir} ({key}) exists on the host"), started)
            }
            Ok(_) => fail(
                name,
                format!("{dir} ({key}) does not exist on the host"),
                "create it as Day 0 does (deploy/host/setup, see docs/operator-guide.md), or correct the spec's path",
                started,
            ),
            Err(e) => fail(name, chain(&e), sibling_hint(&e), started),
        }
    }

    /// A Caddy reload closes its listening socket; connections queued on it are reset unless
    /// the host migrates them (`net.ipv4.tcp_migrate_req`, Linux 5.14+).
    async fn check_reload_resets(&self, engine: &Engine, cancel: &CancellationToken) -> Check {
        let started = Instant::now();
        let name = "reload-resets";
        let file = "/proc/sys/net/ipv4/tcp_migrate_req";
        let probe = ["cat", file].map(String::from);
        let hint = "run `sysctl -w net.ipv4.tcp_migrate_req=1` on the host and persist it in /etc/sysctl.d/ (see docs/operator-guide.md): without it a Caddy reload resets connections queued on the old listener (measured: 5 resets in 20 reloads under load, 0 with it)";
        match engine.run_oneshot(&self.host.nsenter("doctor", &probe), cancel).await {
            Ok(exit) if exit.code == 0 && exit.stdout.trim() == "1" => ok(
                name,
                "net.ipv4.tcp_migrate_req = 1: a Caddy reload hands queued connections to the new listener".into(),
                started,
            ),
            Ok(exit) if exit.code == 0 => fail(
                name,
                format!("net.ipv4.tcp_migrate_req = {} on the host", exit.stdout.trim()),
                hint,
                started,
            ),
            Ok(exit) => fail(
                name,
                format!("{file} is missing on the host (exit {}): the kernel predates 5.14, so a Caddy reload can reset queued connections", exit.code),
                "upgrade the host's kernel to 5.14 or later, or accept rare resets during reloads",
                started,
            ),
            Err(e) => fail(name, chain(&e), sibling_hint(&e), started),
        }
    }

    /// `command -v` of a reload (or test) command's program, run on the host side.
    async fn check_reload_command(
        &self,
        engine: &Engine,
        cancel: &CancellationToken,
        kind: ProxyKind,
        argv: &[String],
    ) -> Check {
        let started = Instant::now();
        let name = "reload-command";
        let proxy = kind.name();
        let program = &argv[0];
        let probe = [
            "/bin/sh",
            "-c",
            r#"command -v "$1" && cat /proc/1/comm"#,
            "slipway-doctor",
            program,
        ]
        .map(String::from);
        let shot = self.host.nsenter("doctor", &probe);
        match engine.run_oneshot(&shot, cancel).await {
            Ok(exit) if exit.code == 0 => {
                let mut lines = exit.stdout.lines();
                let path = lines.next().unwrap_or(program).trim().to_string();
                let init = lines.next().unwrap_or("").trim().to_string();
                if program == "systemctl" && init != "systemd" {
                    return fail(
                        name,
                        format!(
                            "`{path}` exists, but PID {} on the host is `{init}`, not systemd, so `systemctl` cannot reload {proxy}",
                            self.host.pid
                        ),
                        &format!(
                            "is this engine Docker-in-Docker? Use the host's own socket, or set --reload-command to what reloads {proxy} there (e.g. `caddy reload --config /etc/caddy/Caddyfile`)"
                        ),
                        started,
                    );
                }
                ok(
                    name,
                    format!(
                        "`{}` found on the host at {path} (PID {} is {init})",
                        argv.join(" "),
                        self.host.pid
                    ),
                    started,
                )
            }
            Ok(exit) => fail(
                name,
                format!(
                    "`{program}` was not found on the host (exit {}){}",
                    exit.code,
                    if exit.stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", exit.stderr.trim())
                    }
                ),
                &format!(
                    "install it on the host or set --reload-command / SLIPWAY_RELOAD_COMMAND (or the spec's reload and test commands) to what reloads {proxy} there"
                ),
                started,
            ),
            Err(e) => fail(name, chain(&e), sibling_hint(&e), started),
        }
    }
}

impl Report {
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let status = match check.status {
                Status::Ok => "ok  ",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out.push_str(&format!("{status}  {:<18} {}\n", check.name, check.detail));
            if let Some(hint) = &check.hint {
                out.push_str(&format!("      {:<18} hint: {hint}\n", ""));
            }
        }
        out
    }
}

/// A swarm deploy's prerequisites: a manager, every node Ready, the overlay network.
async fn swarm_checks(engine: &Engine, network: &str) -> Vec<Check> {
    let started = Instant::now();
    let nodes = match engine.swarm_nodes().await {
        Ok(nodes) => nodes,
        Err(e) => {
            let hint = "point DOCKER_HOST at a manager (`docker node ls` works there)";
            return vec![fail("swarm-manager", chain(&e), hint, started)];
        }
    };
    let managers = nodes.iter().filter(|n| n.manager).count();
    let mut checks = vec![ok(
        "swarm-manager",
        format!(
            "a manager of a swarm of {} node(s), {managers} manager(s)",
            nodes.len()
        ),
        started,
    )];
    let down: Vec<_> = nodes.iter().filter(|n| n.state != "ready").collect();
    checks.push(if down.is_empty() {
        ok(
            "swarm-nodes",
            format!("all {} node(s) Ready", nodes.len()),
            started,
        )
    } else {
        let names: Vec<_> = down
            .iter()
            .map(|n| format!("{} ({})", n.hostname, n.state))
            .collect();
        fail(
            "swarm-nodes",
            format!("not Ready: {}", names.join(", ")),
            "bring the nodes back, or drain them (`docker node update --availability drain`)",
            started,
        )
    });
    let started = Instant::now();
    checks.push(match engine.network_driver(network).await {
        Ok(Some((driver, scope))) if driver == "overlay" && scope == "swarm" => ok(
            "swarm-overlay",
            format!("{network} is a swarm overlay network"),
            started,
        ),
        Ok(Some((driver, scope))) => fail(
            "swarm-overlay",
            format!("{network} is a {driver} network of scope {scope}, not a swarm overlay"),
            "create one: docker network create -d overlay --attachable NAME",
            started,
        ),
        Ok(None) => fail(
            "swarm-overlay",
            format!("there is no network {network}"),
            "create it: docker network create -d overlay --attachable NAME",
            started,
        ),
        Err(e) => fail(
            "swarm-overlay",
            chain(&e),
            "is the engine a manager?",
            started,
        ),
    });
    checks
}

fn sibling_hint(e: &EngineError) -> &'static str {
    match e {
        EngineError::Deadline { .. } => {
            "the sibling hung: raise --reload-timeout, or look at the host (`docker ps -a --filter label=dev.slipway.managed`)"
        }
        _ => "check that the engine can create privileged containers with --pid=host",
    }
}

fn evidence(exit: &OneShotExit) -> String {
    let text = format!("{}{}", exit.stderr, exit.stdout);
    let text = text.trim();
    if text.is_empty() {
        "no output".into()
    } else {
        text.lines().take(5).collect::<Vec<_>>().join(" | ")
    }
}

/// An error and its causes on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn ok(name: &'static str, detail: String, started: Instant) -> Check {
    Check {
        name,
        status: Status::Ok,
        detail,
        hint: None,
        elapsed_ms: started.elapsed().as_millis(),
    }
}

fn fail(name: &'static str, detail: String, hint: &str, started: Instant) -> Check {
    Check {
        name,
        status: Status::Fail,
        detail,
        hint: Some(hint.to_string()),
        elapsed_ms: started.elapsed().as_millis(),
    }
}

/// The checks of several commands as one: the first failure, or every detail joined.
fn merge_checks(checks: Vec<Check>) -> Check {
    if let Some(failed) = checks.iter().find(|c| c.status == Status::Fail) {
        return failed.clone();
    }
    let detail: Vec<&str> = checks.iter().map(|c| c.detail.as_str()).collect();
    Check {
        name: "reload-command",
        status: Status::Ok,
        detail: detail.join("; "),
        hint: None,
        elapsed_ms: checks.iter().map(|c| c.elapsed_ms).sum(),
    }
}

fn skip(name: &'static str, why: &str) -> Check {
    Check {
        name,
        status: Status::Skip,
        detail: why.to_string(),
        hint: None,
        elapsed_ms: 0,
    }
}

/// Podman runs HEALTHCHECKs only as systemd timers: without systemd they never report.
async fn podman_health(engine: &Engine, v: &crate::engine::EngineVersion) -> Check {
    let started = Instant::now();
    let name = "podman-healthchecks";
    match engine.runs_healthchecks(v.kind).await {
        Ok(true) => ok(
            name,
            format!(
                "Podman {} uses systemd: HEALTHCHECKs run as systemd timers",
                v.version
            ),
            started,
        ),
        Ok(false) => fail(
            name,
            format!(
                "Podman {} runs without systemd (cgroupfs driver): image HEALTHCHECKs never run, so a health.docker gate can never pass",
                v.version
            ),
            "run Podman's service on a systemd host (docs/operator-guide.md, Podman), or gate on [health.http] with health.docker = false",
            started,
        ),
        Err(e) => fail(
            name,
            chain(&e),
            "check that the Podman service answers /info",
            started,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_has_one_line_per_check_and_hints() {
        let report = Report {
            ok: false,
            checks: vec![
                Check {
                    name: "engine",
                    status: Status::Ok,
                    detail: "Docker 20.10".into(),
                    hint: None,
                    elapsed_ms: 1,
                },
                Check {
                    name: "registry",
                    status: Status::Fail,
                    detail: "unreachable".into(),
                    hint: Some("start it".into()),
                    elapsed_ms: 1,
                },
            ],
        };
        let text = report.render_text();
        assert!(text.starts_with("ok    engine"), "{text}");
        assert!(
            text.contains("FAIL  registry           unreachable\n"),
            "{text}"
        );
        assert!(text.contains("hint: start it"), "{text}");
    }
}
