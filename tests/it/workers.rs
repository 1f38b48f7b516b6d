//! Workers (issue #14): processes of the same image beside the web process, gated before the web
//! switch, rolled back with it.

use crate::service::{Svc, images};
use crate::support::{code, docker_ok, text};

const HEALTH: &str =
    "docker = true\n[health.http]\njson_field = \".version\"\ninterval = \"200ms\"";

/// A web service with one worker running `command` (a TOML argv).
fn svc_with_worker(name: &str, command: &str) -> Svc {
    let svc = Svc::new(name, "", HEALTH);
    let health = format!(
        "{HEALTH}\n[workers.jobs]\ncommand = {command}\n[workers.jobs.health]\nmin_uptime = \"1s\"\ndeadline = \"20s\""
    );
    svc.write_spec("", &health);
    svc
}

/// `revision state` of this service's workers.
fn workers(svc: &Svc) -> Vec<String> {
    let out = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=dev.slipway.service={}", svc.name),
        "--filter",
        "label=dev.slipway.role=worker",
        "--format",
        "{{.Label \"dev.slipway.revision\"}} {{.State}}",
    ]);
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

fn running_workers(svc: &Svc) -> Vec<String> {
    workers(svc)
        .into_iter()
        .filter(|w| w.ends_with(" running"))
        .collect()
}

/// A worker that stops on SIGTERM, as a real one does.
const LOOP: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]"#;

#[test]
fn a_web_and_worker_app_deploys_twice_and_rolls_back_together() {
    let img = images();
    let svc = svc_with_worker("wrk-twice", LOOP);
    let out = svc.run(&["rollout", &img.v1, "--dry-run"], &[]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("start worker wrk-twice-jobs-"), "{stdout}");
    assert!(workers(&svc).is_empty(), "a dry run starts nothing");

    for v in ["v1", "v2"] {
        let image = if v == "v1" { &img.v1 } else { &img.v2 };
        let out = svc.run(&["rollout", image], &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
        assert!(stdout.contains("workers"), "a workers step: {stdout}");
        svc.assert_serves(v);
        assert_eq!(running_workers(&svc), [format!("{v} running")]);
    }
    assert!(
        workers(&svc).contains(&"v1 exited".to_string()),
        "the old worker is kept stopped: {:?}",
        workers(&svc)
    );
    let out = svc.run(&["rollback"], &[]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    svc.assert_serves("v1");
    assert_eq!(running_workers(&svc), ["v1 running"], "{:?}", workers(&svc));
}

#[test]
fn a_worker_that_never_gets_healthy_switches_nothing() {
    let img = images();
    let svc = svc_with_worker("wrk-bad", LOOP);
    let out = svc.run(&["rollout", &img.v1], &[]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    // v2's worker exits at once.
    let health = format!(
        "{HEALTH}\n[workers.jobs]\ncommand = [\"sh\", \"-c\", \"echo no queue; exit 1\"]\n[workers.jobs.health]\nmin_uptime = \"1s\"\ndeadline = \"20s\""
    );
    svc.write_spec("", &health);
    let out = svc.run(&["rollout", &img.v2], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("failed its gate"),
        "{stdout}\n{stderr}"
    );
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"], "{:?}", svc.containers());
    assert_eq!(running_workers(&svc), ["v1 running"], "{:?}", workers(&svc));
    assert_eq!(workers(&svc).len(), 1, "the new worker was removed");
}

#[test]
fn a_worker_with_a_port_is_exit_2() {
    let img = images();
    let svc = Svc::new("wrk-port", "", HEALTH);
    let health = format!("{HEALTH}\n[workers.jobs]\ncommand = [\"bin/jobs\"]\nport = 9000");
    svc.write_spec("", &health);
    let out = svc.run(&["rollout", &img.v1], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("port"), "{stderr}");
    assert!(svc.containers().is_empty());
}

#[test]
fn watch_replaces_a_worker_that_stopped() {
    let img = images();
    let svc = svc_with_worker("wrk-watch", LOOP);
    let out = svc.run(&["rollout", &img.v1], &[]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let id = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.slipway.service={}", svc.name),
        "--filter",
        "label=dev.slipway.role=worker",
    ]);
    docker_ok(&["kill", id.trim()]);
    assert!(running_workers(&svc).is_empty(), "{:?}", workers(&svc));

    let out = svc.run(&["watch", "--once"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"workers_replaced\""), "{stdout}");
    assert_eq!(workers(&svc), ["v1 running"], "the stopped one is removed");
    svc.assert_serves("v1");
    // All well now: nothing to do.
    let out = svc.run(&["watch", "--once"], &[]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(
        !text(&out).0.contains("workers_replaced"),
        "{:?}",
        text(&out)
    );
}
