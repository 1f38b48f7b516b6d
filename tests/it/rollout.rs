//! `slipway rollout | rollback | reload | lock` against the real engine, registry and Caddy, with a
//! privileged nsenter sibling doing every host step. Every test checks what Caddy serves after.

use std::time::{Duration, Instant};

use crate::service::{Svc, images, push_fixture};
use crate::support::{code, docker_ok, sandbox, signal, slipway, text};

const DOCKER_HEALTH: &str =
    "docker = true\n[health.http]\njson_field = \".version\"\ninterval = \"200ms\"";

fn ok(svc: &Svc, image: &str) {
    let out = svc.run(&["rollout", image], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
}

#[test]
fn first_second_same_digest_and_rollback() {
    let img = images();
    let svc = Svc::new("roll-basic", "", DOCKER_HEALTH);

    let out = svc.run(&["rollout", &img.v1, "--format", "json"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["outcome"], "deployed");
    assert_eq!(report["revision"], "v1");
    assert!(report["start_to_healthy_ms"].as_u64().unwrap() > 0);
    svc.assert_serves("v1");
    assert!(
        svc.snippet()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", svc.slots[0]))
    );

    ok(&svc, &img.v2);
    svc.assert_serves("v2");
    assert!(
        svc.snippet()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", svc.slots[1]))
    );
    assert_eq!(svc.running_revisions(), ["v2"], "{:?}", svc.containers());
    assert!(
        svc.containers()
            .iter()
            .any(|c| c.contains(" exited app v1")),
        "v1 is kept stopped for rollback: {:?}",
        svc.containers()
    );

    let before = svc.containers();
    let out = svc.run(&["rollout", &img.v2], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("nothing to do"), "{stdout}");
    assert_eq!(svc.containers(), before, "a no-op creates nothing");
    svc.assert_serves("v2");

    let out = svc.run(&["rollback"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"], "{:?}", svc.containers());
    // The retained container was restarted in place, not recreated.
    assert_eq!(
        svc.containers()
            .iter()
            .filter(|c| c.contains(" app "))
            .count(),
        2,
        "{:?}",
        svc.containers()
    );
    // Nothing of slipway's own is left running: no lock, no agent, no probe.
    assert!(
        !svc.containers()
            .iter()
            .any(|c| c.contains(" lock ") || c.contains(" agent ") || c.contains(" probe ")),
        "{:?}",
        svc.containers()
    );
}

#[test]
fn an_image_the_engine_lacks_is_pulled_before_planning_and_its_revision_label_read() {
    let image = push_fixture("fixture/pulled:v4", "v4", &[]);
    let id = docker_ok(&["inspect", "--format", "{{.Id}}", &image]);
    docker_ok(&["image", "rm", "-f", id.trim()]);
    let svc = Svc::new("roll-pulled", "", DOCKER_HEALTH);

    // No --revision: the `.version` gate expects the image's label, readable only once pulled.
    let out = svc.run(&["rollout", &image, "--format", "json"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["revision"], "v4", "{stdout}");
    svc.assert_serves("v4");
}

#[test]
fn an_unhealthy_image_rolls_back_and_the_old_keeps_serving() {
    let img = images();
    let svc = Svc::new("roll-unhealthy", "", "docker = true\ndeadline = \"20s\"");
    ok(&svc, &img.v1);
    let out = svc.run(&["rollout", &img.v2], &[("APP_HEALTH", "fail")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("unhealthy"), "{stdout}");
    assert!(
        stdout.contains("health log:"),
        "the report carries the health log: {stdout}"
    );
    assert!(stdout.contains("container log (tail):"), "{stdout}");
    assert!(stderr.contains("error: rolled back"), "{stderr}");
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"]);
    assert!(
        !svc.containers().iter().any(|c| c.ends_with(" v2")),
        "{:?}",
        svc.containers()
    );
}

#[test]
fn a_hanging_image_rolls_back_at_the_deadline() {
    let img = images();
    let health = "docker = false\ndeadline = \"4s\"\n[health.http]\npath = \"/health\"\ntimeout = \"1s\"\ninterval = \"250ms\"";
    let svc = Svc::new("roll-hang", "", health);
    ok(&svc, &img.v1);
    let began = Instant::now();
    let out = svc.run(&["rollout", &img.v2], &[("APP_START_DELAY", "600")]);
    let took = began.elapsed();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("within 4s"), "{stdout}");
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"]);
}

#[test]
fn a_rejected_reload_restores_the_snippet_and_shows_caddys_message() {
    let img = images();
    let svc = Svc::new("roll-badreload", "", DOCKER_HEALTH);
    ok(&svc, &img.v1);
    let good = svc.snippet().unwrap();
    svc.write_spec("", DOCKER_HEALTH);
    let spec = std::fs::read_to_string(svc.spec_path()).unwrap().replace(
        "[caddy]\n",
        "[caddy]\nupstream_options = [\"lb_try_duration not-a-duration\"]\n",
    );
    std::fs::write(svc.spec_path(), spec).unwrap();
    let out = svc.run(&["rollout", &img.v2], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("not-a-duration"),
        "Caddy's own message: {stdout}"
    );
    assert_eq!(svc.snippet().unwrap(), good, "the previous snippet is back");
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"]);
}

#[test]
fn a_broken_caddyfile_is_a_failed_rollback_that_says_what_to_do() {
    let img = images();
    let svc = Svc::new("roll-broken", "", DOCKER_HEALTH);
    ok(&svc, &img.v1);
    let caddyfile = svc.dir.join("Caddyfile");
    let mut text_ = std::fs::read_to_string(&caddyfile).unwrap();
    text_.push_str("\nthis is { not a caddyfile\n");
    std::fs::write(&caddyfile, text_).unwrap();
    let out = svc.run(&["rollout", &img.v2], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 3, "{stdout}\n{stderr}");
    assert!(stderr.contains("To fix:"), "{stderr}");
    assert!(
        stderr.contains(&format!("reverse_proxy 127.0.0.1:{}", svc.slots[0])),
        "{stderr}"
    );
    // Caddy rejected both reloads, so it still runs its last good config: v1.
    svc.assert_serves("v1");
}

#[test]
fn sigterm_in_each_phase_leaves_the_old_release_serving() {
    let img = images();
    let svc = Svc::new("roll-sigterm", "", DOCKER_HEALTH);
    ok(&svc, &img.v1);
    // During the health gate, and during the drain after the switch.
    for (marker, extra) in [("start:", ""), ("switch:", "drain = \"20s\"")] {
        if !extra.is_empty() {
            let spec = std::fs::read_to_string(svc.spec_path())
                .unwrap()
                .replace("drain = \"300ms\"", extra);
            std::fs::write(svc.spec_path(), spec).unwrap();
        }
        let (mut child, seen) = svc.spawn_until(&["rollout", &img.v2], &[], marker);
        signal(&child, "-TERM");
        let status = child.wait().unwrap();
        let log = seen.lock().unwrap().clone();
        assert_eq!(status.code(), Some(130), "after `{marker}`:\n{log}");
        svc.assert_serves("v1");
        assert_eq!(
            svc.running_revisions(),
            ["v1"],
            "after `{marker}`: {:?}",
            svc.containers()
        );
        assert!(
            svc.snippet()
                .unwrap()
                .contains(&format!("127.0.0.1:{}", svc.slots[0]))
        );
        assert!(
            !svc.containers()
                .iter()
                .any(|c| c.contains(" lock ") || c.contains(" agent ")),
            "lock and agent released after `{marker}`: {:?}",
            svc.containers()
        );
    }
}

#[test]
fn concurrent_rollouts_never_both_proceed() {
    let img = images();
    let svc = Svc::new("roll-concurrent", "", DOCKER_HEALTH);
    ok(&svc, &img.v1);
    let b = std::thread::scope(|s| {
        let first = s.spawn(|| svc.run(&["rollout", &img.v2], &[]));
        let second = s.spawn(|| svc.run(&["rollout", &img.v2], &[]));
        [first.join().unwrap(), second.join().unwrap()]
    });
    let codes: Vec<i32> = b.iter().map(code).collect();
    let (_, loser_err) = text(&b[if codes[0] == 4 { 0 } else { 1 }]);
    // One takes the lock and deploys; the other is refused the lock with exit 4.
    assert!(codes.contains(&4), "{codes:?}");
    assert!(codes.contains(&0), "{codes:?}");
    assert!(loser_err.contains("is held by"), "{loser_err}");
    svc.assert_serves("v2");
}

/// The retire step is done once the old process exited; the engine may still tear it down when
/// a rollout queued on the lock takes the lock. That one still succeeds on the same ports.
#[test]
fn a_rollout_queued_on_the_lock_follows_one_whose_old_release_is_torn_down() {
    let img = images();
    let svc = Svc::new("roll-queued", "", DOCKER_HEALTH);
    ok(&svc, &img.v1);
    let (first, first_err) = svc.spawn_until(&["rollout", &img.v2], &[], "start:");
    let second = svc.run(&["rollout", &img.v1, "--lock-wait", "60s"], &[]);
    let first = first.wait_with_output().expect("the first rollout ends");
    let first_out = String::from_utf8_lossy(&first.stdout);
    let first_err = first_err.lock().unwrap().clone();
    assert!(first.status.success(), "{first_out}\n{first_err}");
    assert!(first_out.contains("(kept for rollback)"), "{first_out}");
    let (stdout, stderr) = text(&second);
    assert_eq!(code(&second), 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("waiting up to 60s for the deploy lock"),
        "{stderr}"
    );
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"]);
    let all = svc.containers();
    let exited_v2 = all
        .iter()
        .any(|c| c.contains(" exited app ") && c.ends_with(" v2"));
    assert!(exited_v2, "the first's release is kept stopped: {all:?}");
    let helpers: Vec<&String> = all.iter().filter(|c| !c.contains(" app ")).collect();
    assert!(helpers.is_empty(), "no lock or helper left: {all:?}");
}

#[test]
fn a_stale_lock_is_taken_over_and_a_dead_run_is_reconciled() {
    let img = images();
    let svc = Svc::new("roll-stale", "", DOCKER_HEALTH);
    ok(&svc, &img.v1);
    let (mut child, _) = svc.spawn_until(&["rollout", &img.v2, "--lock-ttl", "3s"], &[], "start:");
    // A runner killed outright: no cleanup at all.
    signal(&child, "-KILL");
    let _ = child.wait();
    let status = svc.run(&["lock", "status"], &[]);
    assert!(text(&status).0.contains("held by"), "{:?}", text(&status));
    svc.assert_serves("v1");
    let out = svc.run(&["rollout", &img.v2, "--lock-wait", "30s"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("taking over the expired deploy lock"),
        "{stderr}"
    );
    assert!(stdout.contains("removed abandoned"), "{stdout}");
    svc.assert_serves("v2");
    let left: Vec<String> = svc
        .containers()
        .into_iter()
        .filter(|c| !c.contains(" app "))
        .collect();
    assert!(left.is_empty(), "no orphans: {left:?}");
    assert_eq!(svc.running_revisions(), ["v2"]);
}

#[test]
fn a_spec_over_quota_is_refused_before_anything_runs() {
    let img = images();
    let svc = Svc::new(
        "roll-quota",
        "[limits]\nmemory = \"512m\"\n[quota]\nmemory = \"256m\"",
        DOCKER_HEALTH,
    );
    let out = svc.run(&["rollout", &img.v1], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("limits.memory 512m is above the quota of 256m"),
        "{stderr}"
    );
    assert!(stderr.contains("--approve-over-quota"), "{stderr}");
    assert!(svc.containers().is_empty(), "{:?}", svc.containers());
    assert_eq!(svc.served().0, 503);
}

#[test]
fn unpinned_images_and_bad_specs_are_refused_with_exit_2() {
    let svc = Svc::new("roll-usage", "", DOCKER_HEALTH);
    let out = svc.run(&["rollout", "127.0.0.1:5000/fixture/rollout:v1"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stderr.contains("not pinned by digest"), "{stderr}");
    let out = svc.run(
        &["rollout", &images().v1, "--reload-image", "alpine:3.20"],
        &[],
    );
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    let out = svc.run(&["rollout", &images().v1], &[("APP_HEALTH", "")]);
    assert_eq!(
        code(&out),
        0,
        "an empty value is still a value: {:?}",
        text(&out)
    );
    std::fs::write(svc.spec_path(), "name = \"Bad Name\"\nslots = [80, 80]\ncontainer_port = 8080\n[health]\ndocker = false\n[caddy]\nsnippet_dir = \"rel\"\n").unwrap();
    let out = svc.run(&["rollout", &images().v2], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    for path in ["name:", "slots:", "health:", "caddy.snippet_dir:"] {
        assert!(stderr.contains(path), "{path} missing in {stderr}");
    }
    svc.assert_serves("v1");
}

#[test]
fn reload_runs_the_command_on_the_host_and_refuses_a_tag() {
    let s = sandbox();
    let out = slipway(&[
        "reload",
        "--reload-image",
        &s.base_image,
        "--reload-command",
        &s.reload_command,
    ]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let out = slipway(&[
        "reload",
        "--reload-image",
        &s.base_image,
        "--reload-command",
        "caddy reload --config /nonexistent/Caddyfile",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/Caddyfile"),
        "the host's output is shown: {stderr}"
    );
    let out = slipway(&["reload", "--reload-image", "busybox:latest"]);
    assert_eq!(code(&out), 2, "{:?}", text(&out));
}

#[test]
fn sigterm_while_waiting_for_the_lock_leaves_the_holder_alone() {
    let img = images();
    let svc = Svc::new("roll-lockwait", "drain = \"6s\"", DOCKER_HEALTH);
    let spec = std::fs::read_to_string(svc.spec_path())
        .unwrap()
        .replace("drain = \"300ms\"\n", "");
    std::fs::write(svc.spec_path(), spec).unwrap();
    ok(&svc, &img.v1);
    let (holder, _) = svc.spawn_until(&["rollout", &img.v2], &[], "switch:");
    let (mut waiter, seen) = svc.spawn_until(
        &["rollout", &img.v1, "--lock-wait", "60s"],
        &[],
        "waiting up to 60s for the deploy lock",
    );
    signal(&waiter, "-TERM");
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{}", seen.lock().unwrap());
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "the holder finishes: {:?}", text(&out));
    svc.assert_serves("v2");
    assert_eq!(svc.running_revisions(), ["v2"]);
}

#[test]
fn a_released_lock_the_engine_failed_to_remove_is_removed_by_the_next_rollout() {
    let img = images();
    let svc = Svc::new("roll-released", "", DOCKER_HEALTH);
    ok(&svc, &img.v1);
    // As a release leaves it when the engine's removal fails: renamed, not running.
    let name = format!("slipway-lock-{}-released-0123456789ab", svc.name);
    let service = format!("dev.slipway.service={}", svc.name);
    let labels = [
        "dev.slipway.managed=true",
        &service,
        "dev.slipway.role=lock",
    ];
    let base = sandbox().base_image;
    let mut create = vec!["create", "--name", name.as_str()];
    for l in &labels {
        create.extend(["--label", l]);
    }
    create.extend([base.as_str(), "true"]);
    docker_ok(&create);
    let left = || docker_ok(&["ps", "-aq", "--filter", &format!("name=^/{name}$")]);
    assert!(!left().trim().is_empty());

    let out = svc.run(&["rollout", &img.v2], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("removed leftover {name}")),
        "{stdout}"
    );
    assert!(left().trim().is_empty(), "{}", left());
    svc.assert_serves("v2");
}
