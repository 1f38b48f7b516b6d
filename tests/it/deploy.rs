//! `slipway deploy` (and `smoke`, `plan`) end to end: the built binary, the real engine, registry
//! and Caddy, the public URL checked as a user would, CI files written as a runner reads them.

use std::process::Command;

use crate::service::{Svc, images};
use crate::support::{code, docker_ok, signal, slipway, text};

const HEALTH: &str = "docker = true";
const SECRET: &str = "s3cr3t+/=>?~Value";

/// The spec also passes APP_TOKEN (the secret) from the job's environment.
fn pass_token(svc: &Svc) {
    let spec = std::fs::read_to_string(svc.spec_path()).unwrap().replace(
        "env = [\"APP_HEALTH\", \"APP_START_DELAY\"]",
        "env = [\"APP_HEALTH\", \"APP_START_DELAY\", \"APP_TOKEN\"]",
    );
    std::fs::write(svc.spec_path(), spec).unwrap();
}

fn deploy_args<'a>(svc: &'a Svc, image: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = ["deploy", "--image", image, "--url", &svc.url("/health")]
        .into_iter()
        .map(String::from)
        .collect();
    if !extra.contains(&"--watch") {
        args.extend(["--watch", "1s"].map(String::from));
    }
    args.extend(["--smoke-deadline", "5s", "--smoke-interval", "250ms"].map(String::from));
    if svc.https {
        args.extend(["--cacert".to_string(), svc.cacert().display().to_string()]);
        args.extend(["--resolve".to_string(), svc.resolve()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn deploy(svc: &Svc, image: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let args = deploy_args(svc, image, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    svc.run(&args, env)
}

#[test]
fn v1_then_v2_over_https_with_ci_outputs_summary_and_report() {
    let img = images();
    let svc = Svc::new_https("dep-green", "", HEALTH);
    let ci = svc.dir.join("ci");
    std::fs::create_dir_all(&ci).unwrap();
    let (out_file, summary, report) = (
        ci.join("output"),
        ci.join("summary.md"),
        ci.join("report.json"),
    );
    let env = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_OUTPUT", out_file.to_str().unwrap()),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
    ];
    let out = deploy(&svc, &img.v1, &[], &env);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    svc.assert_serves("v1");
    assert!(
        stderr.contains("::group::slipway: rollout and smoke test"),
        "{stderr}"
    );
    assert!(stderr.contains("::endgroup::"), "{stderr}");

    std::fs::remove_file(&out_file).unwrap();
    let report_arg = report.display().to_string();
    let out = deploy(&svc, &img.v2, &["--report", &report_arg], &env);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    svc.assert_serves("v2");

    let outputs = std::fs::read_to_string(&out_file).unwrap();
    let v2_digest = img.v2.rsplit_once('@').unwrap().1;
    let v1_digest = img.v1.rsplit_once('@').unwrap().1;
    assert!(
        outputs.contains(&format!("image={}\n", img.v2)),
        "{outputs}"
    );
    assert!(
        outputs.contains(&format!("digest={v2_digest}\n")),
        "{outputs}"
    );
    assert!(
        outputs.contains(&format!("previous-digest={v1_digest}\n")),
        "{outputs}"
    );
    assert!(
        outputs.contains(&format!("url={}\n", svc.url("/health"))),
        "{outputs}"
    );
    assert!(outputs.contains("outcome=deployed\n"), "{outputs}");

    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("slipway deploy `dep-green`: deployed"), "{md}");
    assert!(md.contains(&format!("| image | `{}` |", img.v2)), "{md}");
    assert!(md.contains("| smoke | ✓ |"), "{md}");

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["outcome"], "deployed");
    assert_eq!(r["previous_digest"], v1_digest);
    let names: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for step in [
        "image", "start", "verify", "health", "switch", "smoke", "drain", "retire",
    ] {
        assert!(names.contains(&step), "{step} missing: {names:?}");
    }
    for s in r["steps"].as_array().unwrap() {
        assert!(s["start_unix_ms"].as_u64().unwrap() >= r["started_unix_ms"].as_u64().unwrap());
        assert!(s["duration_ms"].is_u64() && s["ok"].is_boolean());
    }
}

#[test]
fn an_unhealthy_image_never_reaches_the_public_url() {
    let img = images();
    let svc = Svc::new("dep-unhealthy", "", "docker = true\ndeadline = \"20s\"");
    assert_eq!(code(&deploy(&svc, &img.v1, &[], &[])), 0);
    let out = deploy(&svc, &img.v2, &[], &[("APP_HEALTH", "fail")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(
        !stdout.contains(" smoke "),
        "no smoke test before the switch: {stdout}"
    );
    svc.assert_serves("v1");
}

#[test]
fn a_site_routed_elsewhere_rolls_back_and_the_previous_version_serves_again() {
    let img = images();
    let svc = Svc::new("dep-mismatch", "", HEALTH);
    assert_eq!(code(&deploy(&svc, &img.v1, &[], &[])), 0);
    // A stale Caddyfile: the site is pinned to v1's slot, so the switch changes nothing public.
    let caddyfile = svc.dir.join("Caddyfile");
    let pinned = std::fs::read_to_string(&caddyfile).unwrap().replace(
        "\troute {\n",
        &format!("\troute {{\n\t\treverse_proxy 127.0.0.1:{}\n", svc.slots[0]),
    );
    std::fs::write(&caddyfile, pinned).unwrap();
    let reload = svc.reload_command();
    let argv: Vec<&str> = reload.split(' ').collect();
    assert!(
        Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap()
            .status
            .success()
    );

    let out = deploy(&svc, &img.v2, &[], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("deployed and rolled back; the previous release is serving"),
        "{stderr}"
    );
    // Expected and served side by side, with the body.
    assert!(stderr.contains("expected  served"), "{stderr}");
    assert!(stderr.contains(".version  v2        v1 ≠"), "{stderr}");
    assert!(stderr.contains("body (first lines):"), "{stderr}");
    assert!(stdout.contains("ok   verify-restored"), "{stdout}");
    svc.assert_serves("v1");
    assert_eq!(svc.running_revisions(), ["v1"], "{:?}", svc.containers());
    assert!(
        svc.snippet()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", svc.slots[0]))
    );
}

#[test]
fn a_failing_reload_rolls_back_with_caddys_message() {
    let img = images();
    let svc = Svc::new("dep-reload", "", HEALTH);
    assert_eq!(code(&deploy(&svc, &img.v1, &[], &[])), 0);
    let spec = std::fs::read_to_string(svc.spec_path()).unwrap().replace(
        "[caddy]\n",
        "[caddy]\nupstream_options = [\"lb_policy bogus_policy\"]\n",
    );
    std::fs::write(svc.spec_path(), spec).unwrap();
    let out = deploy(&svc, &img.v2, &[], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("bogus_policy"), "{stderr}");
    svc.assert_serves("v1");
}

#[test]
fn ctrl_c_in_each_stage_leaves_the_previous_release_serving() {
    let img = images();
    let svc = Svc::new("dep-sigint", "", HEALTH);
    assert_eq!(code(&deploy(&svc, &img.v1, &[], &[])), 0);
    // Waiting for health; then inside the smoke test's watch window, after the switch.
    for (marker, watch) in [("start:", "1s"), ("smoke:", "30s")] {
        let args = deploy_args(&svc, &img.v2, &["--watch", watch]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (mut child, seen) = svc.spawn_until(&args, &[], marker);
        signal(&child, "-INT");
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
            !svc.containers().iter().any(|c| c.contains(" lock ")),
            "the lock is released after `{marker}`"
        );
    }
}

/// What a dry run must not touch: this service's containers and their state, its lock, the
/// snippet Caddy imports. (Other tests run beside this one, so nothing global is compared.)
fn engine_state(svc: &Svc) -> String {
    // Waits out a released lock that the engine is still removing.
    svc.containers();
    format!(
        "{}\n{:?}",
        docker_ok(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=dev.slipway.service={}", svc.name),
            "--format",
            "{{.ID}} {{.Names}} {{.State}} {{.Image}}",
        ]),
        svc.snippet()
    )
}

#[test]
fn a_dry_run_changes_nothing_and_prints_the_plan_as_data() {
    let img = images();
    let svc = Svc::new("dep-plan", "[limits]\nmemory = \"128m\"\npids = 64", HEALTH);
    pass_token(&svc);
    let secret = [("APP_TOKEN", SECRET)];
    assert_eq!(code(&deploy(&svc, &img.v1, &[], &secret)), 0);
    let before = engine_state(&svc);
    let out = deploy(&svc, &img.v2, &["--dry-run"], &secret);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    for needle in [
        "serving now:",
        &format!("127.0.0.1:{}", svc.slots[1]),
        "env: [APP_HEALTH, APP_START_DELAY, APP_TOKEN]",
        "memory: 128 MiB",
        "pids: 64",
        "take the deploy lock",
        "reload image:",
        "smoke: GET",
        "on failure:",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` not in the plan:\n{stdout}"
        );
    }
    let args = deploy_args(&svc, &img.v2, &["--format", "json"]);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args[0] = "plan";
    let out = svc.run(&args, &secret);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("the plan is JSON");
    assert_eq!(plan["rollout"]["active"]["revision"], "v1", "{stdout}");
    assert_eq!(plan["rollout"]["action"]["kind"], "rollout");
    assert_eq!(plan["rollout"]["action"]["port"], svc.slots[1]);
    assert_eq!(plan["image"], img.v2.as_str());
    for text_ in [&stdout, &stderr] {
        assert!(!text_.contains(SECRET), "a secret value in the plan output");
    }
    assert_eq!(
        engine_state(&svc),
        before,
        "a dry run changed the engine or the host"
    );
    svc.assert_serves("v1");
}

#[test]
fn secrets_never_reach_output_reports_or_the_host_files() {
    let img = images();
    let svc = Svc::new("dep-secret", "", HEALTH);
    pass_token(&svc);
    let ci = svc.dir.join("ci");
    std::fs::create_dir_all(&ci).unwrap();
    let (out_file, summary, report) = (
        ci.join("output"),
        ci.join("summary.md"),
        ci.join("report.json"),
    );
    let report_arg = report.display().to_string();
    let env = [
        ("APP_TOKEN", SECRET),
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_OUTPUT", out_file.to_str().unwrap()),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
    ];
    let out = deploy(
        &svc,
        &img.v1,
        &["--report", &report_arg, "--format", "json"],
        &env,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    // The only place it appears is the runner's mask command.
    assert!(
        stderr.contains(&format!("::add-mask::{SECRET}")),
        "{stderr}"
    );
    let unmasked: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(SECRET) && !l.starts_with("::add-mask::"))
        .collect();
    assert!(unmasked.is_empty(), "{unmasked:?}");
    assert!(!stdout.contains(SECRET));
    for file in [&out_file, &summary, &report] {
        assert!(
            !std::fs::read_to_string(file).unwrap().contains(SECRET),
            "{}",
            file.display()
        );
    }
    for entry in std::fs::read_dir(svc.dir.join("snippets")).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            !std::fs::read_to_string(&path).unwrap().contains(SECRET),
            "{}",
            path.display()
        );
    }
    // The app did get it.
    let name = svc
        .containers()
        .into_iter()
        .find(|c| c.contains(" running app "))
        .unwrap();
    let env = docker_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        name.split(' ').next().unwrap(),
    ]);
    assert!(env.contains("APP_TOKEN="), "{env}");
    svc.assert_serves("v1");
}

#[test]
fn smoke_alone_reports_a_mismatch_side_by_side() {
    let img = images();
    let svc = Svc::new("dep-smoke", "", HEALTH);
    assert_eq!(code(&deploy(&svc, &img.v1, &[], &[])), 0);
    let url = svc.url("/health");
    let ok = slipway(&["smoke", "--url", &url, "--expect-version", "v1"]);
    assert_eq!(code(&ok), 0, "{:?}", text(&ok));
    let bad = slipway(&[
        "smoke",
        "--url",
        &url,
        "--expect-version",
        "v9",
        "--smoke-deadline",
        "1s",
    ]);
    let (_, stderr) = text(&bad);
    assert_eq!(code(&bad), 1, "{stderr}");
    assert!(stderr.contains(".version  v9        v1 ≠"), "{stderr}");
    let regex = slipway(&[
        "smoke",
        "--url",
        &svc.url("/version"),
        "--expect-version",
        "v1",
        "--expect-body-regex",
        "(?m)^(v\\d+)$",
    ]);
    assert_eq!(code(&regex), 0, "{:?}", text(&regex));
}

#[test]
fn the_whole_job_lints_builds_pushes_proves_and_deploys_from_source() {
    let s = crate::support::sandbox();
    let svc = Svc::new("dep-whole", "", HEALTH);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");
    let ci = svc.dir.join("ci");
    std::fs::create_dir_all(&ci).unwrap();
    let out_file = ci.join("output");
    let base = format!("BASE_IMAGE={}", s.base_image);
    let url = svc.url("/health");
    let common = [
        "--context",
        fixture,
        "--registry",
        &s.registry,
        "--repository",
        "fixture/whole",
        "--revision-arg",
        "VERSION",
        "--build-arg",
        &base,
        "--url",
        &url,
        "--watch",
        "1s",
    ];
    let mut plan_args = vec!["plan", "--revision", "c0ffee1"];
    plan_args.extend(common);
    let out = svc.run(&plan_args, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("build: lint and build"), "{stdout}");
    assert!(stdout.contains("fixture/whole:c0ffee1"), "{stdout}");
    assert!(stdout.contains("<built by this deploy>"), "{stdout}");
    assert_eq!(svc.served().0, 503, "a plan changes nothing");

    for rev in ["c0ffee1", "c0ffee2"] {
        let mut args = vec!["deploy", "--revision", rev];
        args.extend(common);
        let out = svc.run(&args, &[("GITHUB_OUTPUT", out_file.to_str().unwrap())]);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
        svc.assert_serves(rev);
    }
    // The digest in the outputs is what the registry holds for the tag.
    let outputs = std::fs::read_to_string(&out_file).unwrap();
    let digest = outputs
        .lines()
        .filter_map(|l| l.strip_prefix("digest="))
        .next_back()
        .unwrap()
        .to_string();
    let manifest = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{}/fixture/whole:c0ffee2", s.registry))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&manifest.stdout).trim(),
        digest,
        "{outputs}"
    );
    assert!(outputs.contains("outcome=deployed"), "{outputs}");
}

#[test]
fn a_deploy_that_ends_early_still_tells_ci_how() {
    let img = images();
    let svc = Svc::new("dep-early", "", HEALTH);
    let ci = svc.dir.join("ci");
    std::fs::create_dir_all(&ci).unwrap();
    let (out_file, report) = (ci.join("output"), ci.join("report.json"));
    let report_arg = report.display().to_string();
    // The spec passes APP_TOKEN, which the job does not set: a usage error before anything runs.
    pass_token(&svc);
    let out = deploy(
        &svc,
        &img.v1,
        &["--report", &report_arg],
        &[("GITHUB_OUTPUT", out_file.to_str().unwrap())],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("APP_TOKEN"), "{stderr}");
    let outputs = std::fs::read_to_string(&out_file).unwrap();
    assert!(outputs.contains("outcome=usage-error\n"), "{outputs}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["outcome"], "usage-error");
    assert!(svc.containers().is_empty(), "{:?}", svc.containers());
    // A socket that is not there is "unavailable" (4), not a usage error.
    let out = svc.run(
        &deploy_args(
            &svc,
            &img.v1,
            &["--docker-host", "unix:///nonexistent/docker.sock"],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        &[("APP_TOKEN", "x")],
    );
    assert_eq!(code(&out), 4, "{:?}", text(&out));
}
