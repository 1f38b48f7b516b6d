//! The action's download path (`scripts/action/install-slipway`) against a local HTTP server on
//! 127.0.0.1 serving release assets: a good binary is installed and runs; a tampered one, one
//! whose checksum file is missing, or one that names another release is refused and never run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::support::{code, slipway_bin, text};

pub const ASSET: &str = "slipway-x86_64-linux";

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Routes = HashMap<(String, String), (u16, Vec<u8>)>;

/// A tiny HTTP/1.1 server on an ephemeral loopback port: a known (method, path) answers its
/// status and body, anything else 404. Every request is recorded. Stops when dropped.
pub struct AssetServer {
    pub port: u16,
    routes: Arc<Mutex<Routes>>,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AssetServer {
    pub fn start() -> AssetServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, requests, stop) = (routes.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        serve(conn, &routes, &requests);
                    }
                }
            })
        };
        AssetServer {
            port,
            routes,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `GET path` answers 200 with `body`.
    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.route("GET", path, 200, body);
    }

    pub fn route(&self, method: &str, path: &str, status: u16, body: impl Into<Vec<u8>>) {
        self.routes.lock().unwrap().insert(
            (method.to_string(), path.to_string()),
            (status, body.into()),
        );
    }

    /// The paths requested, in order.
    pub fn requests(&self) -> Vec<String> {
        self.log().into_iter().map(|r| r.path).collect()
    }

    pub fn log(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Base URL of the release downloads: BASE/VERSION/ASSET.
    pub fn release_url(&self) -> String {
        format!("{}/releases/download", self.url())
    }

    /// Publishes `binary` as release VERSION's asset, with a checksum file saying `published`.
    pub fn publish(&self, version: &str, binary: &[u8], published: Option<&str>) {
        self.put(&format!("/releases/download/{version}/{ASSET}"), binary);
        if let Some(sum) = published {
            self.put(
                &format!("/releases/download/{version}/{ASSET}.sha256"),
                format!("{sum}  {ASSET}\n"),
            );
        }
    }
}

impl Drop for AssetServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, routes: &Mutex<Routes>, requests: &Mutex<Vec<Request>>) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut reader = BufReader::new(&conn);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    if method.is_empty() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let mut conn = &conn;
    if request
        .header("Expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let length: usize = request
        .header("Content-Length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    request.body = body;
    let answer = routes
        .lock()
        .unwrap()
        .get(&(request.method.clone(), request.path.clone()))
        .cloned();
    requests.lock().unwrap().push(request);
    let (status, body) = answer.unwrap_or((404, b"not found\n".to_vec()));
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
    let _ = conn.flush();
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn script(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn version_tag() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// A stand-in for a tampered binary: if it is ever run, it leaves `marker` behind.
fn tampered_binary(marker: &Path) -> Vec<u8> {
    format!(
        "#!/bin/sh\n# not slipway\ntouch '{}'\necho 'slipway {}'\n",
        marker.display(),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

struct Install {
    out: Output,
    dir: tempfile::TempDir,
}

impl Install {
    fn installed(&self) -> PathBuf {
        self.dir.path().join("bin/slipway")
    }
    fn github_output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("github_output")).unwrap_or_default()
    }
}

/// Runs the install script in download mode with the environment the action's step gives it.
fn install(server: &AssetServer, version: &str, sha256: &str) -> Install {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("github_output"), "").unwrap();
    let out = Command::new(script("scripts/action/install-slipway"))
        .env("SLIPWAY_BINARY_SOURCE", "download")
        .env("SLIPWAY_VERSION", version)
        .env("SLIPWAY_SHA256", sha256)
        .env("SLIPWAY_RELEASE_URL", server.release_url())
        .env("SLIPWAY_INSTALL_DIR", dir.path().join("bin"))
        .env("GITHUB_OUTPUT", dir.path().join("github_output"))
        .env_remove("RUNNER_TEMP")
        // Loopback only, never through a proxy.
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("the install script runs");
    Install { out, dir }
}

fn real_binary() -> Vec<u8> {
    std::fs::read(slipway_bin()).expect("the slipway binary")
}

#[test]
fn a_pinned_release_asset_is_verified_installed_and_runs() {
    let server = AssetServer::start();
    let binary = real_binary();
    let sum = sha256_hex(&binary);
    let version = version_tag();
    server.publish(&version, &binary, Some(&sum));

    let run = install(&server, &version, &sum);
    let (stdout, stderr) = text(&run.out);
    assert_eq!(code(&run.out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let installed = run.installed();
    assert_eq!(stdout.trim(), installed.display().to_string());
    assert!(
        run.github_output()
            .contains(&format!("bin={}\n", installed.display())),
        "{}",
        run.github_output()
    );
    assert_eq!(sha256_hex(&std::fs::read(&installed).unwrap()), sum);
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(
        stderr.contains(&format!("sha256 {sum} verified")),
        "{stderr}"
    );

    let out = Command::new(&installed).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("slipway {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        server.requests(),
        vec![
            format!("/releases/download/{version}/{ASSET}"),
            format!("/releases/download/{version}/{ASSET}.sha256"),
        ]
    );
}

/// The refusals all leave nothing installed and never run what was downloaded.
fn assert_refused(run: &Install, marker: &Path, why: &[&str]) {
    let (stdout, stderr) = text(&run.out);
    assert_eq!(code(&run.out), 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("REFUSED"), "{stderr}");
    for w in why {
        assert!(stderr.contains(w), "the message says {w:?}:\n{stderr}");
    }
    assert!(
        !marker.exists(),
        "the refused binary was executed:\n{stderr}"
    );
    assert!(!run.installed().exists(), "nothing is installed");
    assert!(
        !run.dir.path().join("bin").exists()
            || std::fs::read_dir(run.dir.path().join("bin"))
                .unwrap()
                .next()
                .is_none(),
        "the install dir stays empty"
    );
    assert!(!run.github_output().contains("bin="), "no step output");
    assert!(stdout.trim().is_empty(), "no path printed: {stdout}");
}

#[test]
fn a_tampered_binary_is_refused_and_never_run() {
    let server = AssetServer::start();
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("tampered-binary-ran");
    let pinned = sha256_hex(&real_binary());
    let tampered = tampered_binary(&marker);
    let actual = sha256_hex(&tampered);
    let version = version_tag();
    // Only the binary was swapped: the checksum file still names the real one.
    server.publish(&version, &tampered, Some(&pinned));

    let run = install(&server, &version, &pinned);
    assert_refused(
        &run,
        &marker,
        &[
            "sha256 mismatch",
            &format!("expected (pinned) {pinned}"),
            &format!("actual {actual}"),
        ],
    );
}

#[test]
fn a_tampered_binary_with_a_matching_checksum_file_is_refused_by_the_pin() {
    let server = AssetServer::start();
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("tampered-binary-ran");
    let pinned = sha256_hex(&real_binary());
    let tampered = tampered_binary(&marker);
    let actual = sha256_hex(&tampered);
    let version = version_tag();
    // The attacker replaced both the asset and its .sha256: only the pin can tell.
    server.publish(&version, &tampered, Some(&actual));

    let run = install(&server, &version, &pinned);
    assert_refused(
        &run,
        &marker,
        &[
            &format!("expected (pinned) {pinned}"),
            &format!("actual {actual}"),
        ],
    );
}

#[test]
fn a_missing_checksum_file_is_refused() {
    let server = AssetServer::start();
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("unverified-binary-ran");
    // Even a binary that matches the pin is not run without its published checksum.
    let binary = tampered_binary(&marker);
    let pinned = sha256_hex(&binary);
    let version = version_tag();
    server.publish(&version, &binary, None);

    let run = install(&server, &version, &pinned);
    assert_refused(&run, &marker, &[&format!("{ASSET}.sha256"), "never run"]);
    assert!(
        server
            .requests()
            .contains(&format!("/releases/download/{version}/{ASSET}.sha256")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn a_published_checksum_that_disagrees_with_the_pin_is_refused() {
    let server = AssetServer::start();
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("ran");
    let binary = tampered_binary(&marker);
    let pinned = sha256_hex(&binary);
    let version = version_tag();
    server.publish(&version, &binary, Some(&"0".repeat(64)));

    let run = install(&server, &version, &pinned);
    assert_refused(&run, &marker, &["published", &pinned]);
}

#[test]
fn a_pin_for_another_release_is_refused() {
    let server = AssetServer::start();
    let binary = real_binary();
    let sum = sha256_hex(&binary);
    // The asset under v9.9.9 is really this version's binary.
    server.publish("v9.9.9", &binary, Some(&sum));

    let run = install(&server, "v9.9.9", &sum);
    let (_, stderr) = text(&run.out);
    assert_eq!(code(&run.out), 1, "{stderr}");
    assert!(stderr.contains("the pin names another release"), "{stderr}");
    assert!(!run.installed().exists());
    assert!(!run.github_output().contains("bin="));
}

#[test]
fn bad_pins_and_unsafe_urls_are_usage_errors_before_any_download() {
    let server = AssetServer::start();
    let good = "a".repeat(64);
    for (version, sha, url, says) in [
        (
            "v0.1.0",
            "",
            None,
            "slipway-sha256 must be the pinned sha256",
        ),
        (
            "v0.1.0",
            "abc",
            None,
            "slipway-sha256 must be the pinned sha256",
        ),
        (
            "latest",
            good.as_str(),
            None,
            "slipway-version must be a release tag",
        ),
        (
            "v0.1.0",
            good.as_str(),
            Some("http://downloads.invalid/releases"),
            "must be https://",
        ),
        (
            "v0.1.0",
            good.as_str(),
            Some("ftp://127.0.0.1/x"),
            "must be https://",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script("scripts/action/install-slipway"))
            .env("SLIPWAY_BINARY_SOURCE", "download")
            .env("SLIPWAY_VERSION", version)
            .env("SLIPWAY_SHA256", sha)
            .env(
                "SLIPWAY_RELEASE_URL",
                url.map(String::from)
                    .unwrap_or_else(|| server.release_url()),
            )
            .env("SLIPWAY_INSTALL_DIR", dir.path().join("bin"))
            .env_remove("GITHUB_OUTPUT")
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{version} {sha} {url:?}: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!dir.path().join("bin").exists());
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    let out = Command::new(script("scripts/action/install-slipway"))
        .env("SLIPWAY_BINARY_SOURCE", "curl-pipe-sh")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("'build' or 'download'"));
}

/// `binary-source: build` from the action's checkout: a stand-in crate named slipway (the real
/// one's release build takes minutes), built with the same `cargo build --locked --release`.
fn stand_in_crate() -> tempfile::TempDir {
    let action = tempfile::tempdir().unwrap();
    let src = action.path();
    std::fs::create_dir(src.join("src")).unwrap();
    std::fs::write(
        src.join("Cargo.toml"),
        "[package]\nname = \"slipway\"\nversion = \"0.0.1\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        src.join("Cargo.lock"),
        "version = 3\n\n[[package]]\nname = \"slipway\"\nversion = \"0.0.1\"\n",
    )
    .unwrap();
    std::fs::write(
        src.join("src/main.rs"),
        "fn main() { println!(\"slipway 0.0.1\"); }\n",
    )
    .unwrap();
    action
}

#[test]
fn build_mode_builds_the_actions_checkout_and_outputs_the_binary() {
    let action = stand_in_crate();
    let src = action.path();
    let output = src.join("github_output");
    std::fs::write(&output, "").unwrap();
    let out = Command::new(script("scripts/action/install-slipway"))
        .env("SLIPWAY_BINARY_SOURCE", "build")
        .env("SLIPWAY_ACTION_PATH", src)
        .env("GITHUB_OUTPUT", &output)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let bin = src.join("target/release/slipway");
    assert_eq!(stdout.trim(), bin.display().to_string());
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        format!("bin={}\n", bin.display())
    );
    assert!(stderr.contains("slipway 0.0.1"), "{stderr}");

    // Without Rust on PATH: a usage error that says what to do.
    assert!(
        !Path::new("/usr/bin/cargo").exists() && !Path::new("/bin/cargo").exists(),
        "this check needs a PATH without cargo"
    );
    let out = Command::new(script("scripts/action/install-slipway"))
        .env("SLIPWAY_BINARY_SOURCE", "build")
        .env("SLIPWAY_ACTION_PATH", src)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stderr.contains("needs cargo on PATH"), "{stderr}");

    // Without a C linker in the job image: said before cargo runs, not as a link error after.
    let out = Command::new(script("scripts/action/install-slipway"))
        .env("SLIPWAY_BINARY_SOURCE", "build")
        .env("SLIPWAY_ACTION_PATH", src)
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
            "slipway-no-such-cc",
        )
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("needs a C linker (slipway-no-such-cc) in the job image"),
        "{stderr}"
    );
    assert!(!stderr.contains("building slipway"), "{stderr}");
}

/// A target set in the job's environment (e.g. for static builds): the binary is one level down.
#[test]
fn build_mode_finds_the_binary_under_cargo_build_target() {
    let action = stand_in_crate();
    let src = action.path();
    let out = Command::new(script("scripts/action/install-slipway"))
        .env("SLIPWAY_BINARY_SOURCE", "build")
        .env("SLIPWAY_ACTION_PATH", src)
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let bin = src.join("target/x86_64-unknown-linux-gnu/release/slipway");
    assert_eq!(stdout.trim(), bin.display().to_string());
}
