use crate::support::{code, docker_ok, sandbox, slipway, text};

#[test]
fn all_checks_pass_against_the_sandbox() {
    let _host = crate::support::host_settings();
    let s = sandbox();
    let out = slipway(&[
        "doctor",
        "--registry",
        &s.registry,
        "--reload-image",
        &s.base_image,
        "--reload-command",
        &s.reload_command,
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for check in [
        "engine",
        "registry",
        "privileged-sibling",
        "reload-command",
        "reload-resets",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(check)),
            "{check} not ok:\n{stdout}"
        );
    }
    assert!(stdout.contains("API 1."), "{stdout}");
    assert!(stdout.contains("/usr/bin/caddy"), "{stdout}");
}

#[test]
fn json_report_is_data_on_stdout() {
    let _host = crate::support::host_settings();
    let s = sandbox();
    let out = slipway(&[
        "doctor",
        "--format",
        "json",
        "--registry",
        &s.registry,
        "--reload-image",
        &s.base_image,
        "--reload-command",
        &s.reload_command,
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(report["ok"], true);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "engine",
            "registry",
            "privileged-sibling",
            "reload-command",
            "reload-resets"
        ]
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "ok")
    );
}

#[test]
fn wrong_socket_fails_the_engine_check_with_a_hint() {
    let s = sandbox();
    let missing = s.dir.join("no-such.sock");
    let out = slipway(&[
        "--docker-host",
        &format!("unix://{}", missing.display()),
        "doctor",
        "--reload-image",
        &s.base_image,
    ]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}");
    assert!(stdout.contains("FAIL  engine"), "{stdout}");
    assert!(stdout.contains("no-such.sock"), "{stdout}");
    assert!(stdout.contains("hint: is dockerd running"), "{stdout}");
    assert!(stdout.contains("skip  privileged-sibling"), "{stdout}");
}

#[test]
fn registry_down_fails_the_registry_check() {
    let s = sandbox();
    let out = slipway(&[
        "doctor",
        "--registry",
        "127.0.0.1:5999",
        "--reload-image",
        &s.base_image,
        "--reload-command",
        &s.reload_command,
    ]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}");
    assert!(
        stdout.contains("FAIL  registry") && stdout.contains("127.0.0.1:5999 is unreachable"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    engine"), "{stdout}");
}

#[test]
fn an_image_by_tag_is_refused_before_any_container_is_created() {
    let s = sandbox();
    let tagged = s.base_image.split('@').next().unwrap().to_string() + ":sandbox";
    // Against an engine address that does not exist: exit 2 proves nothing was asked of any engine.
    let nowhere = format!("unix://{}", s.dir.join("never.sock").display());
    for host in [nowhere.as_str(), s.docker_host.as_str()] {
        let out = slipway(&["--docker-host", host, "doctor", "--reload-image", &tagged]);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
        assert!(stdout.is_empty(), "no report for a usage error: {stdout}");
        assert!(stderr.contains("is not pinned by digest"), "{stderr}");
        assert!(stderr.contains("hint: pin it"), "{stderr}");
    }
    for bad in [
        "alpine@sha256:1234",
        "alpine@sha256:ZZZZ9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b",
    ] {
        let out = slipway(&["--docker-host", &nowhere, "doctor", "--reload-image", bad]);
        assert_eq!(code(&out), 2, "{bad}: {:?}", text(&out));
    }
}

#[test]
fn a_missing_reload_command_fails_its_check() {
    let s = sandbox();
    let out = slipway(&[
        "doctor",
        "--reload-image",
        &s.base_image,
        "--reload-command",
        "no-such-reloader --now",
    ]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}");
    assert!(
        stdout.contains("FAIL  reload-command")
            && stdout.contains("`no-such-reloader` was not found on the host"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    privileged-sibling"), "{stdout}");
}

#[test]
fn systemctl_without_systemd_as_pid_1_is_called_out() {
    // The sandbox's PID 1 is tini, as in Docker-in-Docker: `systemctl reload caddy` cannot work.
    let s = sandbox();
    let out = slipway(&["doctor", "--reload-image", &s.base_image]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}");
    assert!(stdout.contains("FAIL  reload-command"), "{stdout}");
    assert!(
        stdout.contains("is `tini`, not systemd") || stdout.contains("`systemctl` was not found"),
        "{stdout}"
    );
}

#[test]
fn an_unpullable_sibling_image_fails_with_the_engine_message() {
    let s = sandbox();
    let digest = "sha256:".to_string() + &"0".repeat(64);
    let image = format!("{}/slipway/absent@{digest}", s.registry);
    let out = slipway(&["doctor", "--reload-image", &image]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}");
    assert!(stdout.contains("FAIL  privileged-sibling"), "{stdout}");
    // The pull's own failure, naming the image and its registry (EngineError::PullFailed).
    assert!(
        stdout.contains(&format!("could not pull {image} from {}", s.registry)),
        "{stdout}"
    );
    // Nothing is left behind by the checks that did run.
    let left = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        "label=dev.slipway.purpose=doctor",
        "--filter",
        "status=exited",
    ]);
    assert!(left.trim().is_empty(), "leftover doctor containers: {left}");
}

#[test]
fn a_host_that_resets_connections_on_reload_is_reported() {
    let _host = crate::support::host_settings();
    let s = sandbox();
    // The sandbox's network namespace is this test's "host"; put the setting back after.
    let set = |v: &str| {
        let out = std::process::Command::new("sysctl")
            .args(["-qw", &format!("net.ipv4.tcp_migrate_req={v}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    set("0");
    let out = slipway(&[
        "doctor",
        "--reload-image",
        &s.base_image,
        "--reload-command",
        &s.reload_command,
    ]);
    set("1");
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("reload-resets") && l.contains("= 0")),
        "{stdout}"
    );
    assert!(
        stdout.contains("sysctl -w net.ipv4.tcp_migrate_req=1"),
        "{stdout}"
    );
}

/// Whether a line of doctor's report starts with `start` and says `says`.
fn line(report: &str, start: &str, says: &str) -> bool {
    report
        .lines()
        .any(|l| l.starts_with(start) && l.contains(says))
}

/// `slipway doctor --config SPEC` in the sandbox: its output and stdout.
fn doctor_with(spec: &std::path::Path) -> (std::process::Output, String) {
    let s = sandbox();
    let config = spec.to_str().unwrap();
    let out = slipway(&[
        "doctor",
        "--reload-image",
        &s.base_image,
        "--config",
        config,
    ]);
    let stdout = text(&out).0;
    (out, stdout)
}

/// A spec for `doctor --config`: `proxy` is its proxy table.
fn doctor_spec(name: &str, proxy: &str) -> std::path::PathBuf {
    let dir = sandbox().dir.join(format!("doctor-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("slipway.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\nslots = [18501, 18502]\ncontainer_port = 8080\n[health]\ndocker = true\n{proxy}"
        ),
    )
    .unwrap();
    spec
}

#[test]
fn with_a_traefik_spec_its_directory_is_checked_and_nothing_is_reloaded() {
    let s = sandbox();
    let dynamic = s.dir.join("doctor-traefik-dynamic");
    let _ = std::fs::remove_dir_all(&dynamic);
    let table = format!(
        "[traefik]\ndynamic_dir = \"{}\"\nrule = \"PathPrefix(`/`)\"\nentrypoints = [\"web\"]\n",
        dynamic.display()
    );
    let spec = doctor_spec("doc-traefik", &table);
    let (out, stdout) = doctor_with(&spec);
    assert_eq!(code(&out), 4, "{stdout}");
    let missing = format!(
        "{} (traefik.dynamic_dir) does not exist on the host",
        dynamic.display()
    );
    assert!(line(&stdout, "FAIL  proxy-dir", &missing), "{stdout}");
    assert!(stdout.contains("create it as Day 0 does"), "{stdout}");
    let nothing = "Traefik watches its directory itself";
    assert!(line(&stdout, "skip  reload-command", nothing), "{stdout}");
    let kept = "only a Caddy reload closes its listener";
    assert!(line(&stdout, "skip  reload-resets", kept), "{stdout}");

    // Day 0 done: the directory is there, and nothing else is asked of a Traefik host.
    std::fs::create_dir_all(&dynamic).unwrap();
    let (out, stdout) = doctor_with(&spec);
    assert_eq!(code(&out), 0, "{stdout}");
    assert!(stdout.contains("ok    proxy-dir"), "{stdout}");
}

#[test]
fn with_an_nginx_spec_its_test_and_reload_commands_are_checked() {
    let s = sandbox();
    let dir = s.dir.join("doctor-nginx-conf");
    std::fs::create_dir_all(&dir).unwrap();
    let table = |test: &str| {
        format!(
            "[nginx]\nupstream_file = \"{}/web.upstream\"\ntest_command = \"{test}\"\nreload_command = \"nginx -s reload\"\n",
            dir.display()
        )
    };
    let spec = doctor_spec("doc-nginx", &table("nginx -t"));
    let (out, stdout) = doctor_with(&spec);
    assert_eq!(code(&out), 0, "{stdout}");
    assert!(stdout.contains("ok    proxy-dir"), "{stdout}");
    assert!(
        stdout.contains("`nginx -t` found on the host at /usr/sbin/nginx")
            && stdout.contains("`nginx -s reload` found on the host at /usr/sbin/nginx"),
        "{stdout}"
    );
    assert!(stdout.contains("skip  reload-resets"), "{stdout}");

    // A test command the host lacks fails the check, naming it and nginx.
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("nginx -t", "no-such-tester -t"),
    )
    .unwrap();
    let (out, stdout) = doctor_with(&spec);
    assert_eq!(code(&out), 4, "{stdout}");
    assert!(
        stdout.contains("FAIL  reload-command")
            && stdout.contains("`no-such-tester` was not found on the host")
            && stdout.contains("what reloads nginx there"),
        "{stdout}"
    );
}
