//! Issue #18 end to end: values from outside the spec never reach Caddy's config, and no state
//! of the host makes a rollout remove what serves. Each test checks what Caddy serves after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::service::{Svc, images, push_fixture};
use crate::support::{code, signal, text};

const HEALTH: &str =
    "docker = true\n[health.http]\njson_field = \".version\"\ninterval = \"200ms\"";
const HOSTILE: &str = "a000000\nhandle_path /leak/* {\n\troot * /\n\tfile_server\n}";

fn ok(svc: &Svc, image: &str) {
    let out = svc.run(&["rollout", image], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
}

/// The config Caddy has loaded, from its admin socket.
fn loaded_config(svc: &Svc) -> String {
    let out = Command::new("curl")
        .args(["-s", "-H", "Host;", "--unix-socket"])
        .arg(svc.dir.join("admin.sock"))
        .arg("http://localhost/config/")
        .output()
        .expect("curl runs");
    let config = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(config.contains("reverse_proxy"), "no config read: {config}");
    config
}

/// Nothing of the hostile value was loaded or served.
fn assert_untouched(svc: &Svc, config: &str, snippet: &str) {
    assert_eq!(loaded_config(svc), config, "Caddy's loaded config changed");
    assert_eq!(svc.snippet().unwrap(), snippet, "the snippet changed");
    let leak = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(svc.url("/leak/etc/passwd"))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&leak.stdout).into_owned();
    assert_ne!(status, "200", "Caddy served a host file");
    svc.assert_serves("v1");
}

/// The fixture as v3 with `revision` as its OCI revision label, pushed and pinned.
fn image_labelled(revision: &str) -> String {
    let label = format!("org.opencontainers.image.revision={revision}");
    push_fixture("fixture/hostile:v3", "v3", &["--label", &label])
}

#[test]
fn hostile_revisions_from_flag_env_and_label_never_reach_caddy() {
    let img = images();
    let svc = Svc::new("sec-revision", "", HEALTH);
    ok(&svc, &img.v1);
    let config = loaded_config(&svc);
    let snippet = svc.snippet().unwrap();

    let out = svc.run(&["rollout", &img.v2, "--revision", HOSTILE], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("--revision (SLIPWAY_REVISION)"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    assert_untouched(&svc, &config, &snippet);

    let out = svc.run(&["rollout", &img.v2], &[("SLIPWAY_REVISION", HOSTILE)]);
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    assert_untouched(&svc, &config, &snippet);

    let hostile = image_labelled(HOSTILE);
    let out = svc.run(&["rollout", &hostile], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("org.opencontainers.image.revision label"),
        "{stdout}\n{stderr}"
    );
    assert_untouched(&svc, &config, &snippet);
    assert_eq!(svc.running_revisions(), ["v1"], "{:?}", svc.containers());
}

#[test]
fn a_hostile_github_sha_is_refused_by_deploy() {
    let img = images();
    let svc = Svc::new("sec-sha", "", HEALTH);
    ok(&svc, &img.v1);
    let config = loaded_config(&svc);
    let snippet = svc.snippet().unwrap();
    let url = svc.url("/version");
    let out = svc.run(
        &["deploy", "--image", &img.v2, "--url", &url],
        &[("GITHUB_SHA", HOSTILE)],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("GITHUB_SHA"), "{stderr}");
    assert_untouched(&svc, &config, &snippet);
}

#[test]
fn a_missing_snippet_dir_or_file_refuses_and_what_serves_keeps_serving() {
    let img = images();
    let svc = Svc::new("sec-missing", "", HEALTH);
    ok(&svc, &img.v1);
    let snippets = svc.dir.join("snippets");
    let moved = svc.dir.join("snippets-away");
    std::fs::rename(&snippets, &moved).unwrap();

    let out = svc.run(&["rollout", &img.v2], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("{} does not exist", snippets.display())),
        "{stderr}"
    );
    assert!(stderr.contains("Day 0"), "{stderr}");
    assert!(
        !snippets.exists(),
        "the engine must not create the directory"
    );
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"], "{:?}", svc.containers());

    // The directory is back, the file is not: still nothing is touched.
    std::fs::create_dir(&snippets).unwrap();
    let out = svc.run(&["rollout", &img.v2], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains(&format!("{}.caddy does not exist", svc.name)),
        "{stdout}\n{stderr}"
    );
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"], "{:?}", svc.containers());

    // Restored as Day 0 says: the deploy goes through.
    std::fs::remove_dir(&snippets).unwrap();
    std::fs::rename(&moved, &snippets).unwrap();
    ok(&svc, &img.v2);
    svc.assert_serves("v2");
}

/// GETs /version through Caddy on fresh connections until `stop`, counting what failed.
fn load(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    let failed = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        let began = Instant::now();
        let mut sent = 0u64;
        // Bounded in count and time whatever happens.
        while !stop.load(Ordering::Relaxed) && sent < 20_000 && began.elapsed().as_secs() < 120 {
            sent += 1;
            let good = TcpStream::connect(("127.0.0.1", port))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(5)))?;
                    c.write_all(b"GET /version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
                    let mut body = String::new();
                    c.read_to_string(&mut body)?;
                    Ok(body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            if !good {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (sent, failed.load(Ordering::Relaxed))
    })
}

#[test]
fn a_run_killed_between_snippet_write_and_reload_converges_without_a_failed_request() {
    let img = images();
    let svc = Svc::new("sec-killed", "", HEALTH);
    ok(&svc, &img.v1);
    // A reload that waits: the run is killed after the write, before Caddy reloads.
    let go = svc.dir.join("go");
    let held = format!(
        "reload_command = 'sh -c \"while [ ! -e {g} ]; do sleep 0.2; done; [ -e {g}.abort ] || {r}\"'",
        g = go.display(),
        r = svc.reload_command()
    );
    let spec = std::fs::read_to_string(svc.spec_path()).unwrap();
    let normal = spec.clone();
    let reload_line = spec
        .lines()
        .find(|l| l.starts_with("reload_command"))
        .unwrap()
        .to_string();
    std::fs::write(svc.spec_path(), spec.replace(&reload_line, &held)).unwrap();
    let (mut child, _) = svc.spawn_until(&["rollout", &img.v2, "--lock-ttl", "3s"], &[], "health:");
    let until = Instant::now() + Duration::from_secs(30);
    while !svc
        .snippet()
        .unwrap()
        .contains(&format!("127.0.0.1:{}", svc.slots[1]))
    {
        assert!(Instant::now() < until, "the snippet was never written");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, "-KILL");
    let _ = child.wait();
    // The host agent goes with the lock: its pending reload never runs.
    std::fs::write(format!("{}.abort", go.display()), "").unwrap();
    std::fs::write(&go, "").unwrap();
    let _ = crate::support::docker(&["rm", "-f", &format!("slipway-lock-{}", svc.name)]);
    svc.assert_serves("v1");
    assert!(
        svc.snippet()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", svc.slots[1])),
        "the file names the killed run's container"
    );

    std::fs::write(svc.spec_path(), normal).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(svc.port, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let out = svc.run(&["rollout", &img.v2], &[]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = clients.join().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("put back to what Caddy last applied"),
        "{stdout}"
    );
    svc.assert_serves("v2");
    assert_eq!(svc.running_revisions(), ["v2"], "{:?}", svc.containers());
    assert!(sent > 50, "the load ran: {sent}");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
}

#[test]
fn huge_durations_and_host_reaching_values_are_exit_2() {
    let img = images();
    let svc = Svc::new("sec-values", "", HEALTH);
    for set in [
        "health.deadline=400000000000y",
        "drain=2h",
        "network=host",
        "volumes=[\"/:/host\"]",
        "volumes=[\"/var/run/docker.sock:/var/run/docker.sock\"]",
        "caddy.upstream_options=[\"lb_try_duration 1s }\"]",
        "caddy.snippet_dir=/etc/caddy/../../tmp",
        "health.http.host=\"a\\r\\nX: y\"",
    ] {
        let out = svc.run(&["rollout", &img.v1, "--set", set], &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{set}: {stdout}\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = svc.run(&["rollout", &img.v1, "--lock-ttl", "400000000000y"], &[]);
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    assert!(
        svc.containers().is_empty(),
        "nothing was started: {:?}",
        svc.containers()
    );
}
