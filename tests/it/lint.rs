//! `slipway lint` through the binary: one fixture per rule makes that rule fire, the clean one
//! and the fixture app make none fire, `--allow` waives, findings are data on stdout.

use crate::support::{code, sandbox, slipway, text};

const LINT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lint");
const RULES: [&str; 7] = [
    "unpinned-base",
    "latest-tag",
    "root-user",
    "shell-form",
    "no-healthcheck",
    "secret-value",
    "dockerignore",
];

fn lint(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["lint"];
    all.extend_from_slice(args);
    let out = slipway(&all);
    let (stdout, stderr) = text(&out);
    (code(&out), stdout, stderr)
}

#[test]
fn each_rule_fixture_fires_exactly_its_rule() {
    for rule in RULES {
        let dir = format!("{LINT}/{rule}");
        let (exit, stdout, stderr) = lint(&["--context", &dir]);
        assert_eq!(exit, 2, "{rule}: {stdout}{stderr}");
        assert!(!stdout.is_empty(), "{rule}");
        for line in stdout.lines() {
            let mut fields = line.split("  ");
            let place = fields.next().unwrap();
            assert!(place.starts_with(&dir), "{line}");
            assert_eq!(fields.next(), Some(rule), "{line}");
            assert!(line.contains("  fix: "), "{line}");
        }
        let (exit, stdout, stderr) = lint(&["--context", &dir, "--allow", rule]);
        assert_eq!((exit, stdout.as_str()), (0, ""), "{rule} waived: {stderr}");
        assert!(stderr.contains("0 finding(s), "), "{stderr}");
    }
}

#[test]
fn findings_carry_file_line_rule_and_fix() {
    let dir = format!("{LINT}/shell-form");
    let (_, stdout, _) = lint(&["--context", &dir]);
    assert_eq!(
        stdout,
        format!(
            "{dir}/Dockerfile:6  shell-form  `CMD /app/serve --port 8080` is in shell form: /bin/sh becomes PID 1 and SIGTERM never reaches the app, so every stop waits out the timeout and is killed  fix: use the exec form: CMD [\"/app/serve\",\"--port\",\"8080\"]\n"
        )
    );
    let (_, stdout, _) = lint(&["--context", &format!("{LINT}/dockerignore")]);
    assert!(
        stdout.starts_with(&format!(
            "{LINT}/dockerignore/.dockerignore  dockerignore  does not exclude .git, .venv"
        )),
        "{stdout}"
    );
}

#[test]
fn clean_dockerfiles_pass() {
    let (exit, stdout, stderr) = lint(&["--context", &format!("{LINT}/clean")]);
    assert_eq!((exit, stdout.as_str()), (0, ""), "{stderr}");
    // The fixture app, given the pinned base it is built from.
    let s = sandbox();
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");
    let (exit, stdout, stderr) = lint(&[
        "--context",
        app,
        "--build-arg",
        &format!("BASE_IMAGE={}", s.base_image),
    ]);
    assert_eq!((exit, stdout.as_str()), (0, ""), "{stderr}");
    // Given an unpinned base instead, the ARG-substituted FROM is resolved and refused.
    let unpinned = s.base_image.split('@').next().unwrap().to_string() + ":sandbox";
    let (exit, stdout, _) = lint(&[
        "--context",
        app,
        "--build-arg",
        &format!("BASE_IMAGE={unpinned}"),
    ]);
    assert_eq!(exit, 2);
    assert_eq!(stdout.lines().count(), 3, "all three stages: {stdout}");
    assert!(
        stdout.contains(&format!(
            "`FROM {unpinned}` (`${{BASE_IMAGE}}`) is not pinned by digest"
        )),
        "{stdout}"
    );
}

#[test]
fn json_findings_and_waivers() {
    let dir = format!("{LINT}/no-healthcheck");
    let (exit, stdout, _) = lint(&["--context", &dir, "--format", "json"]);
    assert_eq!(exit, 2);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["findings"][0]["rule"], "no-healthcheck");
    assert_eq!(report["findings"][0]["line"], 3);
    assert_eq!(report["waived"], serde_json::json!([]));
    // An HTTP probe configured for the deploy stands in for the HEALTHCHECK.
    let (exit, stdout, _) = lint(&[
        "--context",
        &dir,
        "--health-probe-configured",
        "--format",
        "json",
    ]);
    assert_eq!(exit, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["findings"], serde_json::json!([]));

    let (exit, stdout, _) = lint(&[
        "--context",
        &dir,
        "--allow",
        "no-healthcheck",
        "--format",
        "json",
    ]);
    assert_eq!(exit, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["waived"][0]["rule"], "no-healthcheck");
}

#[test]
fn unknown_rules_and_missing_files_are_usage_errors() {
    let (exit, _, stderr) = lint(&[
        "--context",
        &format!("{LINT}/clean"),
        "--allow",
        "everything",
    ]);
    assert_eq!(exit, 2);
    assert!(stderr.contains("possible values"), "{stderr}");
    let (exit, _, stderr) = lint(&["--context", "/nonexistent"]);
    assert_eq!(exit, 2);
    assert!(
        stderr.contains("cannot read the Dockerfile /nonexistent/Dockerfile"),
        "{stderr}"
    );
    let (exit, _, stderr) = lint(&["--context", &format!("{LINT}/clean"), "--target", "nope"]);
    assert_eq!(exit, 2);
    assert!(
        stderr.contains("--target `nope` is not a stage"),
        "{stderr}"
    );
}
