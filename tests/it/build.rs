//! `slipway build` against the sandbox's engine and registries: what it pushes is what `skopeo`
//! finds there, it reuses cached layers, and every failure leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::{Sandbox, code, docker, sandbox, slipway, slipway_with, text};

pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");
/// Every character bollard 0.21.1 mis-encodes, and a few more a shell or URL would mangle.
const TRICKY_PASSWORD: &str = "pa+ss/wo=rd>?~%&x";

/// A git-SHA-shaped revision no other test uses.
pub fn unique_sha() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:024x}{:08x}{:08x}",
        nanos & ((1 << 96) - 1),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A copy of the fixture app that a test may change.
pub fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(FIXTURE), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `slipway build` of the fixture app (or another context) to `registry`/`repo` at `sha`.
pub fn build_args(
    s: &Sandbox,
    context: &Path,
    registry: &str,
    repo: &str,
    sha: &str,
) -> Vec<String> {
    [
        "build",
        "--context",
        context.to_str().unwrap(),
        "--repository",
        repo,
        "--revision",
        sha,
        "--revision-arg",
        "VERSION",
        "--build-arg",
        &format!("BASE_IMAGE={}", s.base_image),
        "--registry",
        registry,
    ]
    .map(String::from)
    .to_vec()
}

pub fn run(args: &[String], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = slipway_with(&args, env);
    let (stdout, stderr) = text(&out);
    (code(&out), stdout, stderr)
}

pub fn skopeo_inspect(reference: &str, creds: Option<&str>) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.args(["--creds", creds]);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn pushes_the_fixture_and_the_registry_holds_that_digest() {
    let s = sandbox();
    let sha = unique_sha();
    let mut args = build_args(&s, Path::new(FIXTURE), &s.registry, "it/pushed", &sha);
    args.extend(["--tag", "main", "--format", "json"].map(String::from));
    let (exit, stdout, stderr) = run(&args, &[]);
    assert_eq!(exit, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is only JSON");
    let digest = report["digest"].as_str().unwrap();
    assert_eq!(
        report["image"],
        format!("{}/it/pushed@{digest}", s.registry).as_str()
    );
    assert_eq!(report["revision"], sha.as_str());
    assert_eq!(report["tags"], serde_json::json!([sha, "main"]));
    // What an independent client finds under both tags.
    for tag in [sha.as_str(), "main"] {
        let seen = skopeo_inspect(&format!("{}/it/pushed:{tag}", s.registry), None).unwrap();
        assert_eq!(seen["Digest"], digest, "{tag}");
        assert_eq!(
            seen["Labels"]["org.opencontainers.image.revision"],
            sha.as_str()
        );
        assert!(
            seen["Labels"]["org.opencontainers.image.created"]
                .as_str()
                .is_some_and(|c| c.ends_with('Z'))
        );
    }
    // The engine's own record agrees, and the image runs as built.
    let repo_digests = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .RepoDigests}}",
        &format!("{}/it/pushed:{sha}", s.registry),
    ]);
    assert!(text(&repo_digests).0.contains(digest));
    assert!(
        stderr.contains("verified: the registry's manifest"),
        "{stderr}"
    );
    assert!(
        stderr.contains("with BuildKit")
            && stderr
                .lines()
                .any(|l| l.contains("] RUN --mount=type=cache")
                    && (l.ends_with(": CACHED") || l.contains(": DONE "))),
        "BuildKit's progress lines on stderr: {stderr}"
    );
    assert!(
        !stderr.contains('\r'),
        "no spinners or redrawn lines in CI logs"
    );
}

#[test]
fn text_output_is_the_pinned_reference_alone() {
    let s = sandbox();
    let sha = unique_sha();
    let (exit, stdout, stderr) = run(
        &build_args(&s, Path::new(FIXTURE), &s.registry, "it/text", &sha),
        &[],
    );
    assert_eq!(exit, 0, "{stderr}");
    let digest = skopeo_inspect(&format!("{}/it/text:{sha}", s.registry), None).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stdout, format!("{}/it/text@{digest}\n", s.registry));
}

/// The line that ends BuildKit's step naming `needle` (`: CACHED`, `: DONE 0.3s` or `: ERROR`).
pub fn step_end<'a>(stderr: &'a str, needle: &str) -> &'a str {
    stderr
        .lines()
        .filter(|l| l.contains(needle))
        .find(|l| l.ends_with(": CACHED") || l.contains(": DONE ") || l.contains(": ERROR"))
        .unwrap_or_else(|| panic!("no end of a step with {needle:?} in:\n{stderr}"))
}

#[test]
fn a_source_only_change_reuses_the_dependency_layers() {
    let s = sandbox();
    let app = fixture_copy();
    let first = unique_sha();
    let (exit, _, stderr) = run(
        &build_args(&s, app.path(), &s.registry, "it/cache", &first),
        &[],
    );
    assert_eq!(exit, 0, "{stderr}");

    let page = app.path().join("src/www/index.html.in");
    let html = std::fs::read_to_string(&page).unwrap();
    std::fs::write(&page, html.replace("<h1>", "<h1>changed: ")).unwrap();
    let second = unique_sha();
    let (exit, stdout, stderr) = run(
        &build_args(&s, app.path(), &s.registry, "it/cache", &second),
        &[],
    );
    assert_eq!(exit, 0, "{stderr}");
    let deps_install = step_end(&stderr, "RUN --mount=type=cache");
    assert!(deps_install.ends_with(": CACHED"), "{deps_install}");
    let assets = step_end(&stderr, "COPY src/www/");
    assert!(
        !assets.ends_with(": CACHED"),
        "the change was seen: {assets}"
    );
    let build = step_end(&stderr, "RUN --mount=type=bind,source=src");
    assert!(build.contains(": DONE "), "{build}");
    // And the new page is in what was pushed.
    let image = stdout.trim();
    let out = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        image,
        "/app/www/index.html",
    ]);
    assert!(text(&out).0.contains("changed: "), "{:?}", text(&out));
}

#[test]
fn a_registry_that_is_down_fails_with_4_and_nothing_is_built() {
    let s = sandbox();
    let sha = unique_sha();
    let (exit, stdout, stderr) = run(
        &build_args(&s, Path::new(FIXTURE), "127.0.0.1:5999", "it/down", &sha),
        &[],
    );
    assert_eq!(exit, 4, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("registry 127.0.0.1:5999 is not usable; nothing was built"),
        "{stderr}"
    );
    assert!(stderr.contains("is unreachable"), "{stderr}");
    assert!(!stderr.contains("building "), "no build started: {stderr}");
    let local = docker(&["image", "inspect", &format!("127.0.0.1:5999/it/down:{sha}")]);
    assert_ne!(code(&local), 0, "no image was built or tagged");
}

/// A second registry with htpasswd auth on a free loopback port, stopped on drop.
struct AuthRegistry {
    addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl AuthRegistry {
    fn start(user: &str, password: &str) -> AuthRegistry {
        let dir = tempfile::tempdir().unwrap();
        let mut htpasswd = Command::new("htpasswd")
            .args(["-niB", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("htpasswd (apache2-utils) is installed by scripts/install-deps");
        use std::io::Write as _;
        htpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        let entry = htpasswd.wait_with_output().unwrap();
        assert!(entry.status.success());
        std::fs::write(dir.path().join("htpasswd"), &entry.stdout).unwrap();
        let port = crate::service::free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: slipway-test\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = AuthRegistry {
            addr,
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the auth registry did not come up on {}", registry.addr);
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--registry-user ci --registry-password-env VAR`: the password is never on the command line.
fn as_ci_with_password_in(var: &str) -> Vec<String> {
    ["--registry-user", "ci", "--registry-password-env", var]
        .map(String::from)
        .to_vec()
}

fn assert_secret_absent(secret: &str, outputs: &[&str]) {
    use base64::Engine as _;
    let encodings = [
        secret.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("ci:{secret}")),
        base64::engine::general_purpose::URL_SAFE.encode(format!("ci:{secret}")),
    ];
    for output in outputs {
        for form in &encodings {
            assert!(
                !output.contains(form.as_str()),
                "a form of the password appears in an output"
            );
        }
    }
}

#[test]
fn a_password_with_url_unsafe_characters_pushes_and_never_shows() {
    let s = sandbox();
    let registry = AuthRegistry::start("ci", TRICKY_PASSWORD);
    let sha = unique_sha();
    let mut args = build_args(&s, Path::new(FIXTURE), &registry.addr, "it/auth", &sha);
    args.extend(as_ci_with_password_in("IT_REGISTRY_PASSWORD"));
    args.extend(["--format", "json", "-vv"].map(String::from));
    // Trace logging everywhere, bollard's included: the password must not show even there.
    let (exit, stdout, stderr) = run(
        &args,
        &[
            ("IT_REGISTRY_PASSWORD", TRICKY_PASSWORD),
            ("SLIPWAY_LOG", "trace"),
        ],
    );
    assert_eq!(exit, 0, "{stderr}");
    assert_secret_absent(TRICKY_PASSWORD, &[&stdout, &stderr]);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let creds = format!("ci:{TRICKY_PASSWORD}");
    let seen = skopeo_inspect(&format!("{}/it/auth:{sha}", registry.addr), Some(&creds)).unwrap();
    assert_eq!(seen["Digest"], report["digest"]);
    assert!(stderr.contains("credentials for `ci` accepted"), "{stderr}");

    // The same credentials from DOCKER_CONFIG/config.json (`auths`, base64 `auth`) work too.
    use base64::Engine as _;
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(&creds);
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr),
    )
    .unwrap();
    let sha = unique_sha();
    let (exit, stdout, stderr) = run(
        &build_args(&s, Path::new(FIXTURE), &registry.addr, "it/auth", &sha),
        &[("DOCKER_CONFIG", config.path().to_str().unwrap())],
    );
    assert_eq!(exit, 0, "{stderr}");
    assert_secret_absent(TRICKY_PASSWORD, &[&stdout, &stderr]);
    let files: Vec<PathBuf> = std::fs::read_dir(config.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "slipway wrote nothing next to config.json: {files:?}"
    );
}

#[test]
fn refused_or_missing_credentials_fail_with_4_and_push_nothing() {
    let s = sandbox();
    let registry = AuthRegistry::start("ci", TRICKY_PASSWORD);
    let sha = unique_sha();
    let mut args = build_args(&s, Path::new(FIXTURE), &registry.addr, "it/refused", &sha);
    args.extend(as_ci_with_password_in("IT_WRONG"));
    let wrong = "wrong+/=>?~password";
    let (exit, stdout, stderr) = run(&args, &[("IT_WRONG", wrong)]);
    assert_eq!(exit, 4, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!(
            "registry {} refused the credentials from --registry-user and $IT_WRONG (HTTP 401)",
            registry.addr
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was built"), "{stderr}");
    assert_secret_absent(wrong, &[&stdout, &stderr]);

    let (exit, _, stderr) = run(
        &build_args(&s, Path::new(FIXTURE), &registry.addr, "it/refused", &sha),
        &[],
    );
    assert_eq!(exit, 4, "{stderr}");
    assert!(
        stderr.contains("requires credentials and none were found"),
        "{stderr}"
    );

    // Nothing reached the registry, and nothing was built locally.
    let creds = format!("ci:{TRICKY_PASSWORD}");
    let err =
        skopeo_inspect(&format!("{}/it/refused:{sha}", registry.addr), Some(&creds)).unwrap_err();
    assert!(
        err.contains("manifest unknown") || err.contains("name unknown"),
        "{err}"
    );
    let local = docker(&[
        "image",
        "inspect",
        &format!("{}/it/refused:{sha}", registry.addr),
    ]);
    assert_ne!(code(&local), 0);
}

#[test]
fn a_failing_step_fails_with_its_output_and_pushes_nothing() {
    let s = sandbox();
    let app = fixture_copy();
    std::fs::write(
        app.path().join("deps.txt"),
        "greeting-lib 1.2.0\nbroken-dep\n",
    )
    .unwrap();
    let sha = unique_sha();
    let (exit, stdout, stderr) = run(
        &build_args(&s, app.path(), &s.registry, "it/failing", &sha),
        &[],
    );
    assert_eq!(exit, 2, "{stderr}");
    assert!(stdout.is_empty());
    let error = &stderr[stderr.find("error: ").expect("an error line")..];
    assert!(
        error
            .starts_with("error: the build failed at [builder 3/4] RUN --mount=type=cache,id=slipway-fixture-deps,target=/root/.cache/deps"),
        "{error}"
    );
    assert!(
        error.contains("\n  the command exited with code 1\n"),
        "{error}"
    );
    assert!(
        error.contains(
            "output of that step (last lines):\n  | deps.txt: no version for 'broken-dep'\nhint: "
        ),
        "the step's own output, and only that, is in the error: {error}"
    );
    assert!(skopeo_inspect(&format!("{}/it/failing:{sha}", s.registry), None).is_err());
}

#[test]
fn a_dockerfile_the_builder_refuses_fails_with_2_and_its_message() {
    let s = sandbox();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUNN echo typo\nUSER 10001\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".dockerignore"), ".env\n.git\n.venv\n").unwrap();
    let (exit, _, stderr) = run(
        &build_args(&s, dir.path(), &s.registry, "it/typo", &unique_sha()),
        &[],
    );
    assert_eq!(exit, 2, "{stderr}");
    assert!(
        stderr.contains(
            "error: the build failed: dockerfile parse error line 3: unknown instruction: RUNN"
        ),
        "{stderr}"
    );
}

#[test]
fn lint_findings_stop_the_build_before_the_engine_is_asked() {
    let s = sandbox();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lint/root-user");
    let nowhere = format!("unix://{}", s.dir.join("never.sock").display());
    let out = slipway(&[
        "--docker-host",
        &nowhere,
        "build",
        "--context",
        fixture,
        "--repository",
        "it/lint",
        "--revision",
        &unique_sha(),
        "--registry",
        "127.0.0.1:5999",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("error: the lint found 1 problem(s); nothing was built:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("root-user/Dockerfile:2  root-user  the final stage sets no USER"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: fix each finding"), "{stderr}");
}

#[test]
fn bad_flags_fail_with_2_before_anything_runs() {
    let s = sandbox();
    let nowhere = format!("unix://{}", s.dir.join("never.sock").display());
    let cases: &[(&[&str], &str)] = &[
        (
            &["--revision", "main"],
            "the revision `main` is not a git SHA",
        ),
        (
            &["--revision", "abcdef0", "--tag", "a/b"],
            "`a/b` is not a valid tag",
        ),
        (
            &["--revision", "abcdef0", "--build-arg", "IT_UNSET_ARG_XYZ"],
            "IT_UNSET_ARG_XYZ is not set",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec![
            "--docker-host",
            &nowhere,
            "build",
            "--context",
            FIXTURE,
            "--repository",
            "it/flags",
            "--registry",
            "127.0.0.1:5999",
        ];
        args.extend_from_slice(extra);
        let out = slipway(&args);
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }
    let out = slipway(&[
        "build",
        "--context",
        FIXTURE,
        "--repository",
        "Bad/Name",
        "--revision",
        "abcdef0",
        "--registry",
        "127.0.0.1:5999",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out)
            .1
            .contains("`Bad/Name` is not a valid repository name")
    );
    let out = slipway(&[
        "build",
        "--context",
        FIXTURE,
        "--repository",
        "it/x",
        "--revision",
        "abcdef0",
    ]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("needs a registry to push to"));
}

#[test]
fn ignored_large_files_are_never_sent() {
    let s = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Dockerfile"),
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /ctx\nUSER 10001\nHEALTHCHECK CMD [\"true\"]\nCMD [\"ls\", \"/ctx\"]\n",
    )
    .unwrap();
    std::fs::write(
        root.join(".dockerignore"),
        "# the build files are sent whatever this says\nDockerfile\n.dockerignore\n.env\n.git\n.venv\nbig\n**/*.log\n!keep.log\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("big/nested")).unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    // 2 GiB that would take long to send: sparse on disk, so the test stays fast if it is not.
    std::fs::File::create(root.join("big/nested/huge.bin"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    std::fs::File::create(root.join("src/trace.log"))
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    std::fs::write(root.join("src/app.txt"), "app\n").unwrap();
    std::fs::write(root.join("keep.log"), "kept on purpose\n").unwrap();
    std::fs::write(root.join(".env"), "SECRET=1\n").unwrap();

    let sha = unique_sha();
    let mut args = build_args(&s, root, &s.registry, "it/ignored", &sha);
    args.extend(["--format", "json"].map(String::from));
    let (exit, stdout, stderr) = run(&args, &[]);
    assert_eq!(exit, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let sent = report["context"]["bytes"].as_u64().unwrap();
    assert!(sent < 64 * 1024, "{sent} bytes sent");
    assert_eq!(report["context"]["excluded"], 3, "{report}"); // big, .env, src/trace.log

    let image = report["image"].as_str().unwrap();
    let out = docker(&["run", "--rm", "--entrypoint", "find", image, "/ctx"]);
    let (listing, err) = text(&out);
    assert_eq!(code(&out), 0, "{err}");
    let mut files: Vec<&str> = listing.lines().collect();
    files.sort();
    // BuildKit (unlike the classic builder) leaves the two build files that every context
    // carries visible to `COPY .`, even when .dockerignore lists them; nothing else ignored is.
    assert_eq!(
        files,
        [
            "/ctx",
            "/ctx/.dockerignore",
            "/ctx/Dockerfile",
            "/ctx/keep.log",
            "/ctx/src",
            "/ctx/src/app.txt"
        ],
        "{listing}"
    );
}

#[test]
fn sigterm_during_a_step_stops_the_build_and_pushes_nothing() {
    use std::io::{BufRead, BufReader};
    let s = sandbox();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo it-cancel-started && sleep 60\nUSER 10001\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".dockerignore"), ".env\n.git\n.venv\n").unwrap();
    let sha = unique_sha();
    let args = build_args(&s, dir.path(), &s.registry, "it/cancel", &sha);
    let mut child = Command::new(crate::support::slipway_bin())
        .args(&args)
        .env_remove("SLIPWAY_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert_ne!(
            stderr.read_line(&mut line).unwrap(),
            0,
            "ended early:\n{seen}"
        );
        seen.push_str(&line);
        // The step's own output: the RUN container is running now.
        if line.trim_end().ends_with("it-cancel-started") && !line.contains("RUN") {
            break;
        }
    }
    let started = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "stopped well before the step's 60 s"
    );
    assert!(seen.contains("error: interrupted while building"), "{seen}");
    assert!(skopeo_inspect(&format!("{}/it/cancel:{sha}", s.registry), None).is_err());
    // The engine stops the step's container too (the builder's own cleanup).
    let mut left = String::new();
    for _ in 0..50 {
        let out = docker(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]);
        left = text(&out).0;
        if !left.contains("it-cancel-started") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("the RUN container is still there:\n{left}");
}

#[test]
fn a_target_stage_with_the_revision_and_source_from_the_ci_environment() {
    let s = sandbox();
    let sha = unique_sha();
    let out = slipway_with(
        &[
            "build",
            "--context",
            FIXTURE,
            "--repository",
            "it/target",
            "--target",
            "builder",
            "--build-arg",
            &format!("BASE_IMAGE={}", s.base_image),
            "--build-arg",
            "VERSION=abc123",
            "--build-arg",
            "API_TOKEN",
            "--allow",
            "root-user,no-healthcheck",
            "--registry",
            &s.registry,
        ],
        &[
            ("GITHUB_SHA", &sha),
            ("GITHUB_SERVER_URL", "https://git.example"),
            ("GITHUB_REPOSITORY", "team/app"),
            ("API_TOKEN", "it-token-value-6f1e"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(
        stderr.contains(&format!("revision {sha} (from GITHUB_SHA)")),
        "{stderr}"
    );
    assert!(stderr.contains("waived with --allow: "), "{stderr}");
    assert!(
        stderr.contains("build arg API_TOKEN looks like a secret")
            && stderr.contains("RUN --mount=type=secret"),
        "{stderr}"
    );
    assert!(!stderr.contains("it-token-value-6f1e") && !stdout.contains("it-token-value-6f1e"));
    let seen = skopeo_inspect(&format!("{}/it/target:{sha}", s.registry), None).unwrap();
    assert_eq!(
        seen["Labels"]["org.opencontainers.image.source"],
        "https://git.example/team/app"
    );
    assert_eq!(
        seen["Labels"]["org.opencontainers.image.revision"],
        sha.as_str()
    );
    // The builder stage, not the runtime one: its build output is there, under /out.
    let out = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        stdout.trim(),
        "/out/app/www/version",
    ]);
    assert_eq!(text(&out).0, "abc123\n", "{:?}", text(&out));
}
