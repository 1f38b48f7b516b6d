//! One file for the whole deploy (issue #14): `registry`, `repository`, `[build]` and `[smoke]`
//! in the spec, so `slipway deploy --config FILE` needs nothing else; flags and `SLIPWAY_*`
//! variables override the file; `--image` contradicts only build flags on the command line.

use crate::service::{Svc, images};
use crate::support::{code, sandbox, text};

const HEALTH: &str = "docker = true";

/// A spec that says everything a deploy of the fixture app needs; `url` is the smoke test's.
fn one_file_spec(svc: &Svc, repository: &str, url: &str) {
    let s = sandbox();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");
    let deploy_keys = format!(
        "registry = \"{registry}\"\nrepository = \"{repository}\"\n\
         [build]\ncontext = \"{fixture}\"\nrevision_arg = \"VERSION\"\n\
         [build.args]\nBASE_IMAGE = \"{base}\"\n\
         [smoke]\nurl = [\"{url}\"]\nexpect_json_field = \".version\"\n",
        registry = s.registry,
        base = s.base_image,
    );
    svc.write_spec(&deploy_keys, HEALTH);
}

/// The `image=` line of the step outputs.
fn output_image(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("image="))
        .next_back()
        .expect("an image output")
        .to_string()
}

#[test]
fn a_deploy_whose_only_argument_is_config_builds_and_serves_the_new_revision() {
    let s = sandbox();
    let svc = Svc::new("one-file", "", HEALTH);
    one_file_spec(&svc, "fixture/one-file", &svc.url("/health"));
    let out = svc.run(&["plan"], &[("GITHUB_SHA", "c0ffee5")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    for line in [
        format!("build: lint and build {}", env!("CARGO_MANIFEST_DIR")),
        format!("registry: {} (from the spec)", s.registry),
        "repository: fixture/one-file (from the spec)".into(),
        "build.args.BASE_IMAGE (from the spec)".into(),
        "build.revision_arg: VERSION (from the spec)".into(),
        format!("smoke.url: {} (from the spec)", svc.url("/health")),
    ] {
        assert!(
            stdout.contains(&line),
            "`{line}` not in the plan:\n{stdout}"
        );
    }
    assert_eq!(svc.served().0, 503, "a plan changes nothing");

    let outputs = svc.dir.join("outputs");
    for rev in ["c0ffee5", "c0ffee6"] {
        let env = [
            ("GITHUB_SHA", rev),
            ("GITHUB_OUTPUT", outputs.to_str().unwrap()),
            ("SLIPWAY_WATCH", "1s"),
        ];
        let out = svc.run(&["deploy"], &env);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
        svc.assert_serves(rev);
    }
    let image = output_image(&outputs);
    assert!(
        image.starts_with(&format!("{}/fixture/one-file@sha256:", s.registry)),
        "{image}"
    );
}

#[test]
fn flags_and_variables_override_the_file() {
    let s = sandbox();
    let svc = Svc::new("one-override", "", HEALTH);
    // The file's URL serves plain text, so only the variable's URL can pass the smoke test.
    one_file_spec(&svc, "fixture/one-from-file", &svc.url("/version"));
    let env = [
        ("GITHUB_SHA", "c0ffee7"),
        ("SLIPWAY_REPOSITORY", "fixture/one-from-env"),
        ("SLIPWAY_URL", &svc.url("/health")),
    ];
    let out = svc.run(
        &[
            "plan",
            "--format",
            "json",
            "--repository",
            "fixture/one-cli",
        ],
        &env,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("the plan is JSON");
    let settings = &plan["settings"];
    assert_eq!(
        settings["repository"]["value"], "fixture/one-cli",
        "{plan:#}"
    );
    assert_eq!(settings["repository"]["from"], "--repository", "{plan:#}");
    assert_eq!(settings["smoke.url"]["from"], "SLIPWAY_URL", "{plan:#}");
    assert_eq!(settings["registry"]["from"], "spec", "{plan:#}");
    assert_eq!(settings["registry"]["value"], s.registry.as_str());
    assert_eq!(settings["smoke.expect_json_field"]["from"], "spec");

    let outputs = svc.dir.join("outputs");
    let mut env = env.to_vec();
    env.extend([
        ("GITHUB_OUTPUT", outputs.to_str().unwrap()),
        ("SLIPWAY_WATCH", "1s"),
    ]);
    let out = svc.run(&["deploy"], &env);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    svc.assert_serves("c0ffee7");
    let image = output_image(&outputs);
    assert!(
        image.starts_with(&format!("{}/fixture/one-from-env@sha256:", s.registry)),
        "{image}"
    );
}

#[test]
fn an_image_with_build_values_from_the_environment_or_the_file_deploys_without_a_build() {
    let img = images();
    let svc = Svc::new("one-image-env", "", HEALTH);
    one_file_spec(&svc, "fixture/one-image", &svc.url("/health"));
    let outputs = svc.dir.join("outputs");
    let env = [
        ("SLIPWAY_REPOSITORY", "team/web"),
        ("SLIPWAY_BUILD_ARGS", "MODE=ci"),
        ("GITHUB_OUTPUT", outputs.to_str().unwrap()),
        ("SLIPWAY_WATCH", "1s"),
    ];
    let out = svc.run(&["deploy", "--image", &img.v1], &env);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("build, push, prove"), "no build: {stderr}");
    svc.assert_serves("v1");
    assert_eq!(output_image(&outputs), img.v1);
}

#[test]
fn an_image_with_a_build_flag_on_the_command_line_is_a_usage_error_naming_both() {
    let img = images();
    let svc = Svc::new("one-conflict", "", HEALTH);
    one_file_spec(&svc, "fixture/one-conflict", &svc.url("/health"));
    let out = svc.run(
        &["deploy", "--image", &img.v1, "--repository", "team/web"],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--image cannot be used with --repository on the command line"),
        "{stderr}"
    );
    assert!(stderr.contains("SLIPWAY_* variables"), "a hint: {stderr}");
    assert!(svc.containers().is_empty(), "{:?}", svc.containers());
    assert_eq!(svc.served().0, 503);
}
