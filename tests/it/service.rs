//! A service under test: its own Caddy (so a test may break its Caddyfile without touching
//! others), two free slot ports, a spec file, and the fixture images v1/v2 pushed to the
//! sandbox registry and pinned by digest.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::{docker, docker_ok, sandbox, slipway_bin};

pub struct Images {
    pub v1: String,
    pub v2: String,
}

/// The fixture app as v1 and v2, built and pushed once per test run.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    IMAGES.get_or_init(|| Images {
        v1: push_fixture("fixture/rollout:v1", "v1", &[]),
        v2: push_fixture("fixture/rollout:v2", "v2", &[]),
    })
}

/// The fixture app built as `version` (with `extra` docker build flags), pushed to the sandbox
/// registry as `name`, pinned by its digest.
pub fn push_fixture(name: &str, version: &str, extra: &[&str]) -> String {
    let s = sandbox();
    let tag = format!("{}/{name}", s.registry);
    let base = format!("BASE_IMAGE={}", s.base_image);
    let version = format!("VERSION={version}");
    // The docker CLI here has only the classic builder: the fixture's twin without mounts.
    let mut args = vec![
        "build",
        "-q",
        "-f",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/app/Dockerfile.classic"
        ),
        "--build-arg",
        &base,
        "--build-arg",
        &version,
    ];
    args.extend_from_slice(extra);
    args.extend([
        "-t",
        &tag,
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app"),
    ]);
    docker_ok(&args);
    docker_ok(&["push", "-q", &tag]);
    docker_ok(&["inspect", "--format", "{{index .RepoDigests 0}}", &tag])
        .trim()
        .to_string()
}

/// A loopback port no other test of this run is handed, free when handed out. Drawn below the
/// kernel's ephemeral range (32768+): a port from `bind(0)` is released at once, so the kernel
/// may hand it again (to another test's `free_port`, or as a client connection's source port)
/// before the test's container or proxy binds it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    loop {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(port < 32_000, "no free loopback port left below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Svc {
    pub name: String,
    pub dir: PathBuf,
    pub slots: [u16; 2],
    pub port: u16,
    /// Served over HTTPS with Caddy's internal CA as `https://app.test:PORT`.
    pub https: bool,
    caddy: Child,
}

pub const HTTPS_HOST: &str = "app.test";

impl Svc {
    /// `health` is the spec's `[health]` section body; `extra` goes at the top level.
    pub fn new(name: &str, extra: &str, health: &str) -> Svc {
        Svc::start(name, extra, health, false)
    }

    pub fn new_https(name: &str, extra: &str, health: &str) -> Svc {
        Svc::start(name, extra, health, true)
    }

    fn start(name: &str, extra: &str, health: &str, https: bool) -> Svc {
        let s = sandbox();
        let dir = s.dir.join(format!("svc-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("snippets")).unwrap();
        let port = free_port();
        let slots = [free_port(), free_port()];
        let (global, site, tls) = if https {
            (
                "skip_install_trust\n\tauto_https disable_redirects",
                format!("https://{HTTPS_HOST}:{port}"),
                "\ttls internal\n",
            )
        } else {
            ("auto_https off", format!("http://127.0.0.1:{port}"), "")
        };
        std::fs::write(
            dir.join("Caddyfile"),
            format!(
                "{{\n\tadmin unix/{d}/admin.sock\n\t{global}\n}}\n\n{site} {{\n\tbind 127.0.0.1\n{tls}\troute {{\n\t\timport {d}/snippets/*.caddy\n\t\trespond \"no upstream\" 503\n\t}}\n}}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let caddy = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("XDG_CONFIG_HOME", dir.join("xdg"))
            .env("XDG_DATA_HOME", dir.join("xdg"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap())
            .spawn()
            .expect("caddy starts");
        let svc = Svc {
            name: name.into(),
            dir,
            slots,
            port,
            https,
            caddy,
        };
        let up = Instant::now();
        while svc.served().0 != 503 {
            assert!(
                up.elapsed() < Duration::from_secs(10),
                "caddy for {name} did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        svc.write_spec(extra, health);
        svc
    }

    /// A service behind a proxy the test started itself (tests/it/proxies.rs); `proxy` is
    /// killed on drop like this file's own Caddy.
    pub fn behind(name: &str, dir: PathBuf, port: u16, slots: [u16; 2], proxy: Child) -> Svc {
        Svc {
            name: name.into(),
            dir,
            slots,
            port,
            https: false,
            caddy: proxy,
        }
    }

    pub fn reload_command(&self) -> String {
        format!(
            "caddy reload --adapter caddyfile --config {}/Caddyfile",
            self.dir.display()
        )
    }

    pub fn spec_path(&self) -> PathBuf {
        self.dir.join("slipway.toml")
    }

    pub fn snippet(&self) -> Option<String> {
        std::fs::read_to_string(
            self.dir
                .join("snippets")
                .join(format!("{}.caddy", self.name)),
        )
        .ok()
    }

    pub fn write_spec(&self, extra: &str, health: &str) {
        let caddy = format!(
            "[caddy]\nsnippet_dir = \"{d}/snippets\"\nreload_command = \"{r}\"\n",
            d = self.dir.display(),
            r = self.reload_command(),
        );
        self.write_spec_with(extra, health, &caddy);
    }

    /// The spec with `proxy` as its proxy table.
    pub fn write_spec_with(&self, extra: &str, health: &str, proxy: &str) {
        std::fs::write(
            self.spec_path(),
            format!(
                "name = \"{name}\"\nslots = [{a}, {b}]\ncontainer_port = 8080\ndrain = \"300ms\"\nstop_grace_period = \"5s\"\nenv = [\"APP_HEALTH\", \"APP_START_DELAY\"]\n{extra}\n[health]\n{health}\n{proxy}",
                name = self.name,
                a = self.slots[0],
                b = self.slots[1],
            ),
        )
        .unwrap();
    }

    /// `slipway ARGS --config SPEC` with the sandbox's pinned base as the sibling image and a
    /// healthy app unless `env` says otherwise.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(slipway_bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.spec_path())
            .env("SLIPWAY_RELOAD_IMAGE", &sandbox().base_image)
            .env("APP_HEALTH", "ok")
            .env("APP_START_DELAY", "0")
            .env_remove("SLIPWAY_LOG")
            .env_remove("GITHUB_SHA")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("slipway runs")
    }

    /// Starts slipway, waits for a stderr line containing `marker`, then returns the child
    /// (stderr keeps draining into the returned buffer).
    pub fn spawn_until(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        marker: &str,
    ) -> (Child, std::sync::Arc<Mutex<String>>) {
        let mut child = self
            .command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("slipway starts");
        let stderr = child.stderr.take().unwrap();
        let seen = std::sync::Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = seen.clone();
        let wanted = marker.to_string();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let hit = line.contains(&wanted);
                sink.lock().unwrap().push_str(&(line + "\n"));
                if hit && !sent {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "no `{marker}` on slipway's stderr within 60s:\n{}",
                seen.lock().unwrap()
            );
        }
        (child, seen)
    }

    /// The public URL of `path`, as a user would use it.
    pub fn url(&self, path: &str) -> String {
        if self.https {
            format!("https://{HTTPS_HOST}:{}{path}", self.port)
        } else {
            format!("http://127.0.0.1:{}{path}", self.port)
        }
    }

    /// Caddy's internal root CA (HTTPS only).
    pub fn cacert(&self) -> PathBuf {
        self.dir.join("xdg/caddy/pki/authorities/local/root.crt")
    }

    /// `--resolve` for the HTTPS name.
    pub fn resolve(&self) -> String {
        format!("{HTTPS_HOST}:{}:127.0.0.1", self.port)
    }

    /// GET /version through this service's Caddy: (status, body).
    pub fn served(&self) -> (u16, String) {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-m", "5", "-w", "\n%{http_code}"]);
        if self.https {
            curl.arg("--cacert").arg(self.cacert());
            curl.args(["--resolve", &self.resolve()]);
        }
        let out = curl.arg(self.url("/version")).output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.trim().to_string())
    }

    pub fn assert_serves(&self, version: &str) {
        let served = self.served();
        if served == (200, version.to_string()) {
            return;
        }
        let log = std::fs::read_to_string(self.dir.join("caddy.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        panic!(
            "Caddy does not serve {version} but {served:?}; containers: {:?}; snippet: {:?}; Caddy's log, newest first: {tail:#?}",
            self.containers(),
            self.snippet()
        );
    }

    /// `name state` of every container labelled with this service (app, lock, helpers).
    /// Inspected, not only listed: the list may still show a container the engine is tearing
    /// down as running; inspect answers once that is done.
    pub fn containers(&self) -> Vec<String> {
        // A released lock is renamed and left to the engine to remove: waited out.
        let released = format!("slipway-lock-{}-released-", self.name);
        let since = std::time::Instant::now();
        loop {
            let now = self.listed();
            if !now
                .iter()
                .any(|c| c.contains(" removing ") || c.starts_with(&released))
                || since.elapsed() > std::time::Duration::from_secs(10)
            {
                return now;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn listed(&self) -> Vec<String> {
        let label = format!("label=dev.slipway.service={}", self.name);
        let ids = docker_ok(&["ps", "-aq", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let format = "{{slice .Name 1}} {{.State.Status}} {{index .Config.Labels \"dev.slipway.role\"}} {{index .Config.Labels \"dev.slipway.revision\"}}";
        // One removed meanwhile is left out (its error on stderr).
        let out = docker(&[&["inspect", "--format", format][..], &ids].concat());
        let out = String::from_utf8_lossy(&out.stdout);
        let mut v: Vec<String> = out.lines().map(String::from).collect();
        v.sort();
        v
    }

    /// Running app containers, as their revisions.
    pub fn running_revisions(&self) -> Vec<String> {
        self.containers()
            .iter()
            .filter(|c| c.contains(" running app "))
            .map(|c| c.rsplit(' ').next().unwrap().to_string())
            .collect()
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = self.caddy.kill();
        let _ = self.caddy.wait();
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.slipway.service={}", self.name),
        ]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}
