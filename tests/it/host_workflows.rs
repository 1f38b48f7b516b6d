//! The project's own workflows under a real runner: act (tests/it/host_act.rs) runs
//! `.gitea/workflows/nightly.yml` as committed (job `staging`, workflow_dispatch on main) and
//! release.yml's `production` job (a push of the tag `v<Cargo.toml version>`; act first runs the
//! `publish` job it needs) against the systemd host tier. The job containers run on the host's
//! engine with its socket, as act_runner runs them. What a real runner would get from its
//! instance is passed with act's own flags: `--var`, `--secret`, `--env`, `--eventpath`, `-P`.
//!
//! The job image (made locally from `scripts/host-rootfs job`) has bash, curl, jq, file and gcc;
//! the machine's Rust toolchain, cargo home and this repository's target dir are bound in at
//! their own paths (scripts/host-tier binds them into the host), so the workflows' cargo builds
//! find the suite's static release build (scripts/build-static) fresh instead of rebuilding it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::action_install::sha256_hex;
use crate::host_act::act_bin;
use crate::host_tier::{Host, host, host_lock};
use crate::support::{code, slipway_bin, text};

const RUST_IMAGE: &str = "slipway-act-rust:host-tier";
const PASSWORD: &str = "registry-pw-3c9d-never-in-a-log";
const TOKEN: &str = "release-token-8e1f-never-in-a-log";
/// Where the stand-in for the Gitea instance listens, in the host's network.
const SERVER_URL: &str = "http://127.0.0.1:8098";

fn var(name: &str, why: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {why}; they never skip"))
}

/// The machine's Rust toolchain, cargo home and target dir, as scripts/host-tier bound them.
fn rust_paths() -> [String; 3] {
    let why = "scripts/host-tier binds the machine's Rust toolchain (rustc --print sysroot), cargo \
               home and target dir into the host for these tests, and one of them was missing \
               (run scripts/build-static first)";
    [
        "SLIPWAY_HOST_RUST_SYSROOT",
        "SLIPWAY_HOST_CARGO_HOME",
        "SLIPWAY_HOST_TARGET_DIR",
    ]
    .map(|name| var(name, why))
}

/// The job image, made once per host from the cached `scripts/host-rootfs job` tree.
fn rust_job_image(h: &Host) -> &'static str {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let rootfs = var(
            "SLIPWAY_ACT_JOB_ROOTFS",
            "scripts/test builds the act job image's root filesystem with `scripts/host-rootfs job` \
             before the sandbox and exports its path",
        );
        let [sysroot, cargo_home, _] = rust_paths();
        let script = format!(
            "set -o pipefail; tar -C {rootfs} --exclude=./usr/share/doc --exclude=./usr/share/man \
             --exclude=./usr/share/locale --exclude=./var/lib/apt/lists -c . | docker -H {} import \
             -c 'ENV PATH={sysroot}/bin:/usr/local/bin:/usr/bin:/bin' -c 'ENV CARGO_HOME={cargo_home}' \
             - {RUST_IMAGE} >/dev/null",
            h.docker_host
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        assert_eq!(code(&out), 0, "the act job image: {:?}", text(&out));
    });
    RUST_IMAGE
}

/// act with what every run here shares: the job image for `labels`, the host's socket in the
/// job container, the Rust binds, no pulls, no cache server off loopback, the event file.
fn act(h: &Host, event: &str, ref_: &str, labels: &[&str]) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let event_file = dir.path().join("event.json");
    std::fs::write(&event_file, format!(r#"{{"ref":"{ref_}"}}"#)).unwrap();
    let binds = rust_paths()
        .iter()
        .zip([":ro", "", ""])
        .map(|(p, mode)| format!("-v {p}:{p}{mode}"))
        .collect::<Vec<_>>()
        .join(" ");
    let image = rust_job_image(h);
    let mut cmd = Command::new(act_bin());
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg(event);
    cmd.arg("--eventpath").arg(&event_file);
    for label in labels {
        cmd.args(["-P", &format!("{label}={image}")]);
    }
    cmd.args(["--pull=false", "--action-offline-mode"])
        .args(["--cache-server-addr", "127.0.0.1"])
        .args(["--container-daemon-socket", "unix:///var/run/docker.sock"])
        .args(["--container-options", &binds])
        .env("DOCKER_HOST", &h.docker_host);
    (cmd, dir)
}

/// The vars and secrets the workflows read, and `--env SLIPWAY_RELOAD_IMAGE`: the workflows pin
/// docker.io's alpine, which no engine here can pull, so the host's busybox (also pinned by
/// digest, with nsenter) stands in; act lets `--env` override the workflow's env.
fn deploy_inputs(cmd: &mut Command, h: &Host, url_var: &str, repository: &str) {
    let vars = [
        ("BASE_IMAGE", h.base_image.clone()),
        ("REGISTRY", h.registry.clone()),
        (url_var, format!("{}/health", h.public_url)),
        ("IMAGE_REPOSITORY", repository.to_string()),
        ("REGISTRY_USER", "ci".to_string()),
    ];
    for (k, v) in vars {
        cmd.args(["--var", &format!("{k}={v}")]);
    }
    cmd.args(["-s", &format!("REGISTRY_PASSWORD={PASSWORD}")]);
    cmd.args(["--env", &format!("SLIPWAY_RELOAD_IMAGE={}", h.base_image)]);
}

fn run(mut cmd: Command, what: &str) -> Output {
    let t0 = Instant::now();
    let out = cmd.output().expect("act runs");
    eprintln!("act ran {what} in {} ms", t0.elapsed().as_millis());
    out
}

/// The digest the host's Caddy snippet routes to (what serves), or "none".
fn serving_digest(h: &Host) -> String {
    let snippet = h.sh_ok("cat /etc/caddy/slipway/example.caddy");
    let digest = snippet
        .split_whitespace()
        .find_map(|w| w.strip_prefix("digest="))
        .filter(|d| d.starts_with("sha256:"));
    digest.unwrap_or("none").to_string()
}

fn head_sha() -> String {
    let out = Command::new("git")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    text(&out).0.trim().to_string()
}

/// The workflow's Result line, `JOB: outcome=.. image=.. previous=.. url=..`, as key → value.
fn result(log: &str, job: &str) -> Vec<(String, String)> {
    let line = log
        .lines()
        .find_map(|l| l.split_once(&format!("| {job}: outcome=")).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no `{job}: outcome=` Result line:\n{log}"));
    format!("outcome={line}")
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Result of a deploy that served `revision`: outcome, image in `repository`, previous, url.
fn assert_deployed(h: &Host, log: &str, job: &str, repository: &str, previous: &str) {
    let r = result(log, job);
    let get = |k: &str| &r.iter().find(|(key, _)| key == k).unwrap().1;
    assert_eq!(get("outcome"), "deployed", "{log}");
    let prefix = format!("{}/{repository}@sha256:", h.registry);
    assert!(get("image").starts_with(&prefix), "{log}");
    assert_eq!(get("previous"), previous, "{log}");
    assert_eq!(get("url"), &format!("{}/health", h.public_url), "{log}");
    assert_eq!(h.served(), (200, head_sha()), "the public URL serves HEAD");
    assert_eq!(serving_digest(h), get("image").rsplit('@').next().unwrap());
}

fn assert_no_secret(out: &Output, extra: &str) {
    let (stdout, stderr) = text(out);
    for secret in [PASSWORD, TOKEN] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret) && !extra.contains(secret),
            "a secret leaked into the act log"
        );
    }
}

#[test]
fn act_runs_the_nightly_workflow_which_builds_slipway_and_deploys_main_to_the_host() {
    let h = host();
    let _lock = host_lock();
    let previous = serving_digest(&h);
    let (mut cmd, _dir) = act(&h, "workflow_dispatch", "refs/heads/main", &["staging"]);
    cmd.args(["-W", ".gitea/workflows/nightly.yml", "-j", "staging"]);
    deploy_inputs(&mut cmd, &h, "STAGING_URL", "example/nightly");
    // The suite's static build settings (scripts/build-static), so the action's
    // `cargo build --locked --release` finds that build fresh in the bound target dir.
    cmd.args(["--env", "CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu"]);
    cmd.args(["--env", "RUSTFLAGS=-C target-feature=+crt-static"]);
    let out = run(cmd, "nightly.yml");
    let (log, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{log}\n{stderr}");
    // The action built slipway from the checkout (binary-source: build) and ran that binary.
    assert!(log.contains("(cargo build --locked --release)"), "{log}");
    assert!(log.contains("Finished `release` profile"), "{log}");
    let version = format!("| slipway {}", env!("CARGO_PKG_VERSION"));
    assert!(log.contains(&version), "{log}");
    let bin = "/target/x86_64-unknown-linux-gnu/release/slipway";
    assert!(
        log.lines()
            .any(|l| l.contains("::set-output:: bin=") && l.ends_with(bin)),
        "{log}"
    );
    assert_deployed(&h, &log, "staging", "example/nightly", &previous);
    assert_no_secret(&out, "");
}

/// The stand-in for the Gitea instance (tests/fixtures/host/release-api.py, NOT Gitea): the
/// release API calls publish-release makes, and the download path, in the host's network.
struct ReleaseApi {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReleaseApi {
    fn start(h: &Host) -> ReleaseApi {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/release-api.py");
        let child = Command::new("nsenter")
            .args(["-t", &h.leader, "-n", "--", "python3"])
            .arg(script)
            .args(["127.0.0.1", "8098"])
            .env("RELEASE_API_TOKEN", TOKEN)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the release API stand-in in the host's network");
        let api = ReleaseApi {
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while code(&h.sh(&format!("curl -s -o /dev/null {SERVER_URL}/"))) != 0 {
            assert!(
                Instant::now() < deadline,
                "the release API stand-in did not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        api
    }

    /// The requests logged, without the readiness probes (`GET /`).
    fn requests(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines()
            .filter(|l| !l.starts_with("GET / "))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for ReleaseApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn act_runs_the_release_workflow_publish_then_production_deploys_the_published_asset() {
    let h = host();
    let _lock = host_lock();
    let api = ReleaseApi::start(&h);
    let previous = serving_digest(&h);
    let tag = format!("v{}", env!("CARGO_PKG_VERSION"));
    let labels = ["ubuntu-latest", "production"];
    let (mut cmd, _dir) = act(&h, "push", &format!("refs/tags/{tag}"), &labels);
    cmd.args(["-W", ".gitea/workflows/release.yml", "-j", "production"]);
    deploy_inputs(&mut cmd, &h, "PRODUCTION_URL", "example/release");
    cmd.args(["-s", &format!("RELEASE_TOKEN={TOKEN}")]);
    // What act_runner gets from its Gitea instance: the instance's URL and the repository.
    cmd.args(["--env", &format!("GITHUB_SERVER_URL={SERVER_URL}")]);
    cmd.args(["--env", "GITHUB_REPOSITORY=slipway/slipway"]);
    let out = run(cmd, "release.yml");
    let (log, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{log}\n{stderr}");

    // publish built the suite's binary (fresh), created the release and uploaded both assets;
    // production downloaded them and verified the binary against publish's sha256 output.
    let sha256 = sha256_hex(&std::fs::read(slipway_bin()).unwrap());
    assert!(log.contains(&format!("sha256={sha256}")), "{log}");
    assert!(
        log.contains(&format!("sha256 {sha256} verified against the pin")),
        "{log}"
    );
    let api_path = "/api/v1/repos/slipway/slipway/releases";
    let download = format!("/slipway/slipway/releases/download/{tag}/slipway-x86_64-linux");
    let expected = [
        format!("GET {api_path}/tags/{tag} 404"),
        format!("POST {api_path} 201"),
        format!("POST {api_path}/1/assets?name=slipway-x86_64-linux 201"),
        format!("POST {api_path}/1/assets?name=slipway-x86_64-linux.sha256 201"),
        format!("GET {download} 200"),
        format!("GET {download}.sha256 200"),
    ];
    let requests = api.requests();
    assert_eq!(requests.lines().collect::<Vec<_>>(), expected, "{log}");
    assert_deployed(&h, &log, "production", "example/release", &previous);
    assert_no_secret(&out, &requests);
}
