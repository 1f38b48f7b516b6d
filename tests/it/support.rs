//! What every end-to-end test needs: the sandbox's addresses, the binary, and `docker` itself.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The running sandbox, from the variables `scripts/sandbox` exports.
pub struct Sandbox {
    pub dir: PathBuf,
    pub docker_host: String,
    pub registry: String,
    pub base_image: String,
    pub reload_command: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the end-to-end tests run against the real sandbox. \
             Run them with `scripts/test` (or `scripts/sandbox cargo test`); they never skip."
        )
    })
}

pub fn sandbox() -> Sandbox {
    Sandbox {
        dir: PathBuf::from(var("SLIPWAY_SANDBOX_DIR")),
        docker_host: var("DOCKER_HOST"),
        registry: var("SLIPWAY_SANDBOX_REGISTRY"),
        base_image: var("SLIPWAY_SANDBOX_BASE_IMAGE"),
        reload_command: var("SLIPWAY_SANDBOX_RELOAD_COMMAND"),
    }
}

impl Sandbox {
    /// The docker socket's path on this machine.
    pub fn socket_path(&self) -> &str {
        self.docker_host
            .strip_prefix("unix://")
            .expect("the sandbox's DOCKER_HOST is a unix socket")
    }
}

/// The binary under test: `SLIPWAY_BIN` (the static release build `scripts/test` makes), else
/// the one cargo built for this test run.
pub fn slipway_bin() -> PathBuf {
    std::env::var_os("SLIPWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_slipway")))
}

pub fn slipway(args: &[&str]) -> Output {
    slipway_with(args, &[])
}

/// `slipway ARGS` with extra environment variables.
pub fn slipway_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(slipway_bin())
        .args(args)
        .env_remove("SLIPWAY_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("slipway runs")
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// `docker ARGS`, which must succeed; its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed by a signal")
}

/// Held by tests that read or change host-wide settings of the sandbox (sysctls that `doctor`
/// checks), so they never see each other's changes.
pub fn host_settings() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `sig` (e.g. "-TERM") to a child process, as a CI runner cancelling a job would.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} failed");
}
