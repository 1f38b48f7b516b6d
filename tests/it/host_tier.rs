//! The systemd host tier (`scripts/host-tier`): a real systemd host (nspawn, its own network),
//! with docker.service, caddy.service and a registry, provisioned by the Day-0 script. A job
//! container made `FROM scratch` with only the host's socket mounted runs slipway, as a CI job
//! container does, and the reload is the real `systemctl reload caddy` through nsenter.

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::support::{code, text};

pub struct Host {
    pub leader: String,
    pub docker_host: String,
    pub registry: String,
    pub base_image: String,
    pub public_url: String,
    pub day0_log: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the host-tier tests run on the systemd host that scripts/host-tier \
             boots. Run them with `scripts/test` (or `scripts/sandbox scripts/host-tier cargo test`); \
             they never skip."
        )
    })
}

pub fn host() -> Host {
    Host {
        leader: var("SLIPWAY_HOST_LEADER"),
        docker_host: var("SLIPWAY_HOST_DOCKER_HOST"),
        registry: var("SLIPWAY_HOST_REGISTRY"),
        base_image: var("SLIPWAY_HOST_BASE_IMAGE"),
        public_url: var("SLIPWAY_HOST_PUBLIC_URL"),
        day0_log: var("SLIPWAY_HOST_DAY0_LOG"),
    }
}

/// Held by every test that changes the host (one host, one example service).
pub fn host_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The example service's spec in the job image: `reload_command` left to its default.
const SPEC: &str = include_str!("../fixtures/host/example.toml");

impl Host {
    /// `sh -c SCRIPT` as root in all of the host's namespaces.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader, "-m", "-u", "-n", "-p", "-i", "--"])
            .args(["sh", "-c", script])
            .output()
            .expect("nsenter runs")
    }

    /// `sh -c SCRIPT` on the host, which must succeed; its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "on the host: {script}\n{stdout}\n{stderr}");
        stdout
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(&self.docker_host)
            .args(args)
            .output()
            .expect("the docker CLI runs")
    }

    /// The job image, made once: the static binary `FROM scratch`, the example app and its spec.
    pub fn job_image(&self) -> &'static str {
        static IMAGE: OnceLock<()> = OnceLock::new();
        const TAG: &str = "slipway-job:host-tier";
        IMAGE.get_or_init(|| {
            let ctx = tempfile::tempdir().unwrap();
            std::fs::copy(crate::support::slipway_bin(), ctx.path().join("slipway")).unwrap();
            let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");
            let cp = Command::new("cp")
                .args(["-r", fixture])
                .arg(ctx.path().join("app"))
                .status();
            assert!(cp.unwrap().success());
            std::fs::write(ctx.path().join("example.toml"), SPEC).unwrap();
            std::fs::write(
                ctx.path().join("Dockerfile"),
                "FROM scratch\nCOPY slipway /slipway\nCOPY app /app\nCOPY example.toml /deploy/example.toml\nENTRYPOINT [\"/slipway\"]\n",
            )
            .unwrap();
            let out = self.docker(&["build", "-q", "-t", TAG, ctx.path().to_str().unwrap()]);
            assert_eq!(code(&out), 0, "{:?}", text(&out));
        });
        TAG
    }

    /// `slipway ARGS` in a job container on the host: only the host's socket is mounted, the
    /// host's network (as act runs a job), no DOCKER_HOST (slipway finds the socket).
    pub fn job(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let image = self.job_image();
        let mut cmd = vec!["run", "--rm", "--network", "host"];
        cmd.extend(["-v", "/run/docker.sock:/var/run/docker.sock"]);
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for e in &env {
            cmd.extend(["-e", e]);
        }
        cmd.push(image);
        cmd.extend(args);
        self.docker(&cmd)
    }

    /// The deploy of the example app at `revision` from the job container.
    pub fn deploy(&self, revision: &str, reload_image: &str) -> Output {
        let build_args = format!("BASE_IMAGE={}", self.base_image);
        let url = format!("{}/health", self.public_url);
        self.job(
            &["deploy", "--watch", "1s", "--smoke-interval", "250ms"],
            &[
                ("SLIPWAY_CONFIG", "/deploy/example.toml"),
                ("SLIPWAY_REGISTRY", &self.registry),
                ("SLIPWAY_REPOSITORY", "example/app"),
                ("SLIPWAY_CONTEXT", "/app"),
                ("SLIPWAY_REVISION_ARG", "VERSION"),
                ("SLIPWAY_BUILD_ARGS", &build_args),
                ("SLIPWAY_URL", &url),
                ("SLIPWAY_RELOAD_IMAGE", reload_image),
                ("SLIPWAY_REVISION", revision),
            ],
        )
    }

    /// What the public URL serves: (HTTP status, body of /version).
    pub fn served(&self) -> (u16, String) {
        let out = self.sh(&format!(
            "curl -s -w '\\n%{{http_code}}' {}/version",
            self.public_url
        ));
        let stdout = text(&out).0;
        let (body, status) = stdout.trim_end().rsplit_once('\n').unwrap_or(("", "0"));
        (status.parse().unwrap_or(0), body.trim().to_string())
    }

    /// Deploys `revision` unless it already serves: the state the failure tests start from.
    pub fn serving(&self, revision: &str) {
        if self.served() != (200, revision.to_string()) {
            let out = self.deploy(revision, &self.base_image);
            let (stdout, stderr) = text(&out);
            assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
        }
        assert_eq!(self.served(), (200, revision.to_string()));
    }

    /// What caddy.service logged since the host booted (systemd's lines and Caddy's own).
    pub fn caddy_journal(&self) -> String {
        self.sh_ok("journalctl --no-pager -o cat -u caddy.service")
    }
}

#[test]
fn day0_runs_twice_and_changes_nothing_the_second_time() {
    let h = host();
    let _lock = host_lock();
    let first = std::fs::read_to_string(&h.day0_log).unwrap();
    assert!(first.contains("changed    caddyfile"), "{first}");
    assert!(first.contains("changed    sysctl.d"), "{first}");
    let files = "cat /etc/caddy/Caddyfile /etc/caddy/slipway/example.caddy /etc/sysctl.d/90-slipway.conf /etc/systemd/system/slipway-firewall.service | sha256sum; iptables-save -t raw | grep -c 127.0.0.0/8";
    let before = h.sh_ok(files);

    let setup = "slipway-host-setup --site http://127.0.0.1:8080 example";
    let second = h.sh_ok(setup);
    assert!(second.contains("setup: nothing to change"), "{second}");
    assert!(!second.contains("changed"), "{second}");
    assert_eq!(
        h.sh_ok(files),
        before,
        "the second run changed files or rules"
    );
    assert!(before.ends_with("\n1\n"), "one raw-table rule: {before}");
    let check = h.sh_ok(&format!("{setup} --check"));
    assert!(check.contains("setup: nothing to change"), "{check}");

    // --check on a host that drifted reports and changes nothing; a run puts it back.
    h.sh_ok("rm /etc/sysctl.d/90-slipway.conf");
    let out = h.sh(&format!("{setup} --check"));
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}");
    assert!(stdout.contains("would      sysctl.d"), "{stdout}");
    h.sh_ok("test ! -e /etc/sysctl.d/90-slipway.conf");
    assert!(h.sh_ok(setup).contains("changed    sysctl.d"));
    assert_eq!(h.sh_ok(files), before);
}

#[test]
fn the_job_container_runs_doctor_then_deploys_through_systemctl_reload() {
    let h = host();
    let _lock = host_lock();
    let out = h.job(
        &["doctor", "--registry", &h.registry],
        &[("SLIPWAY_RELOAD_IMAGE", &h.base_image)],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("`systemctl reload caddy` found on the host")
            && stdout.contains("PID 1 is systemd"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    registry"), "{stdout}");

    let main_pid = "systemctl show -p MainPID --value caddy";
    let caddy_pid = h.sh_ok(main_pid);
    let reloads = |j: &str| j.matches("Reloaded caddy.service").count();
    let before = reloads(&h.caddy_journal());
    for rev in ["a1b2c3d1", "a1b2c3d2"] {
        let out = h.deploy(rev, &h.base_image);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
        assert_eq!(h.served(), (200, rev.to_string()));
    }
    let journal = h.caddy_journal();
    assert!(journal.contains("Reloading caddy.service"), "{journal}");
    assert!(reloads(&journal) >= before + 2, "{journal}");
    assert_eq!(h.sh_ok(main_pid), caddy_pid, "a reload, not a restart");
    let snippet = h.sh_ok("cat /etc/caddy/slipway/example.caddy");
    assert!(snippet.contains("revision=a1b2c3d2"), "{snippet}");
}

#[test]
fn a_caddyfile_broken_on_the_host_rolls_back_with_caddys_message() {
    let h = host();
    let _lock = host_lock();
    h.serving("b0b0b0b1");
    let backup = "cp /etc/caddy/Caddyfile /tmp/Caddyfile.good";
    h.sh_ok(&format!(
        "{backup} && printf 'http://127.0.0.1:8081 {{\\n\\tbogus_directive_xyz\\n}}\\n' >>/etc/caddy/Caddyfile"
    ));
    let out = h.deploy("b0b0b0b2", &h.base_image);
    h.sh_ok("cp /tmp/Caddyfile.good /etc/caddy/Caddyfile");
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("Job for caddy.service failed"), "{stderr}");
    assert!(
        stderr.contains("bogus_directive_xyz"),
        "Caddy's own message: {stderr}"
    );
    assert_eq!(h.served(), (200, "b0b0b0b1".to_string()));
    assert!(h.sh_ok("systemctl is-active caddy").trim() == "active");
    let snippet = h.sh_ok("cat /etc/caddy/slipway/example.caddy");
    assert!(snippet.contains("revision=b0b0b0b1"), "{snippet}");
}

#[test]
fn caddy_stopped_refuses_the_reload_and_nothing_is_lost() {
    let h = host();
    let _lock = host_lock();
    h.serving("c0c0c0c1");
    h.sh_ok("systemctl stop caddy");
    let out = h.deploy("c0c0c0c2", &h.base_image);
    h.sh_ok("systemctl start caddy");
    let (stdout, stderr) = text(&out);
    // The public URL cannot prove the previous release serves while Caddy is down: exit 3, with
    // what to do; nothing was removed.
    assert_eq!(code(&out), 3, "{stdout}\n{stderr}");
    assert!(stderr.contains("caddy.service is not active"), "{stderr}");
    assert!(stderr.contains("To fix:"), "{stderr}");
    // The release that served is still there: Caddy, started again, serves it.
    let snippet = h.sh_ok("cat /etc/caddy/slipway/example.caddy");
    assert!(snippet.contains("revision=c0c0c0c1"), "{snippet}");
    assert_eq!(h.served(), (200, "c0c0c0c1".to_string()));
}

#[test]
fn a_reload_image_the_host_cannot_pull_fails_before_anything_is_built() {
    let h = host();
    let _lock = host_lock();
    let missing = format!("{}/slipway/missing@sha256:{}", h.registry, "0".repeat(64));
    let out = h.deploy("d0d0d0d1", &missing);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("could not pull {missing} from {}", h.registry)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("must reach {}", h.registry)),
        "{stderr}"
    );
    assert!(
        !stderr.contains("check that the Docker engine answers"),
        "{stderr}"
    );
    let built = h.docker(&["image", "inspect", "example/app:d0d0d0d1"]);
    assert_ne!(
        code(&built),
        0,
        "nothing is built before the reload image is there"
    );
    let tagged = format!("{}/example/app:d0d0d0d1", h.registry);
    assert_ne!(code(&h.docker(&["image", "inspect", &tagged])), 0);
}

/// A `FROM scratch` job container has no CA store: slipway falls back to its bundled roots (said
/// at debug level) instead of panicking, for every command that speaks to a registry.
#[test]
fn a_scratch_job_container_without_a_ca_store_speaks_to_the_registry() {
    let h = host();
    let out = h.job(
        &["doctor", "--registry", &h.registry],
        &[
            ("SLIPWAY_RELOAD_IMAGE", &h.base_image),
            ("SLIPWAY_LOG", "slipway=debug"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("using the web roots bundled in slipway"),
        "{stderr}"
    );
    assert!(stdout.contains("ok    registry"), "{stdout}");
}

/// The other side of the reload-command check: a host whose PID 1 is not systemd (the sandbox's
/// engine runs under tini) fails `doctor` for `systemctl reload caddy`, saying what PID 1 is.
#[test]
fn doctor_fails_where_pid_1_is_not_systemd() {
    let s = crate::support::sandbox();
    let out = crate::support::slipway(&[
        "doctor",
        "--reload-image",
        &s.base_image,
        "--reload-command",
        "systemctl reload caddy",
    ]);
    let (stdout, stderr) = text(&out);
    assert_ne!(code(&out), 0, "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("reload-command"))
        .unwrap_or_default();
    assert!(line.starts_with("FAIL"), "{stdout}");
    assert!(line.contains("is `tini`, not systemd"), "{stdout}");
}
