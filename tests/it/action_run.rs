//! The composite action run for real, step by step as act runs it: action.yml is parsed, each
//! step's `env:` is evaluated from the inputs (or their defaults), the `github` context and earlier
//! steps' outputs, its `run:` text goes to `bash --noprofile --norc -e -o pipefail`, with the
//! files and variables act gives a step (GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_ENV,
//! GITHUB_SHA, GITHUB_RUN_ID, GITHUB_ACTION_PATH, DOCKER_HOST), and the action's outputs are
//! evaluated from the steps' output files. The binary comes through the download path from a
//! local server on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use yaml_rust2::{Yaml, YamlLoader};

use crate::action_install::{AssetServer, script, sha256_hex, version_tag};
use crate::support::slipway_bin;

const SHA: &str = "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c";

struct StepRun {
    id: String,
    code: i32,
    stderr: String,
    outputs: BTreeMap<String, String>,
}

struct ActionRun {
    steps: Vec<StepRun>,
    outputs: BTreeMap<String, String>,
    summary: String,
}

impl ActionRun {
    fn step(&self, id: &str) -> &StepRun {
        self.steps
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("step {id} ran"))
    }
    fn failed(&self) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.code != 0)
    }
}

/// Parses a GITHUB_OUTPUT file: `key=value` lines and `key<<DELIM` blocks.
fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((k, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(k.to_string(), value.join("\n"));
        } else if let Some((k, v)) = line.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

struct Context<'a> {
    action: &'a Yaml,
    inputs: &'a BTreeMap<&'a str, String>,
    github: &'a BTreeMap<&'a str, String>,
    steps: &'a [StepRun],
}

impl Context<'_> {
    /// The expressions action.yml uses, evaluated as act does; any other is a test failure.
    fn eval(&self, expr: &str) -> String {
        if let Some(name) = expr.strip_prefix("inputs.") {
            let decl = &self.action["inputs"][name];
            assert!(!decl.is_badvalue(), "undeclared input {name}");
            return match self.inputs.get(name) {
                Some(v) => v.clone(),
                None => self.interpolate(decl["default"].as_str().unwrap_or("")),
            };
        }
        if let Some(name) = expr.strip_prefix("github.") {
            return self
                .github
                .get(name)
                .unwrap_or_else(|| panic!("github.{name} is not in the test's context"))
                .clone();
        }
        if let Some(rest) = expr.strip_prefix("steps.") {
            let (id, output) = rest.split_once(".outputs.").expect("steps.ID.outputs.NAME");
            return self
                .steps
                .iter()
                .find(|s| s.id == id)
                .and_then(|s| s.outputs.get(output).cloned())
                .unwrap_or_default();
        }
        panic!("expression the test cannot evaluate: {expr}")
    }

    fn interpolate(&self, s: &str) -> String {
        let re = Regex::new(r"\$\{\{\s*(.*?)\s*\}\}").unwrap();
        re.replace_all(s, |c: &regex::Captures| self.eval(&c[1]))
            .into_owned()
    }
}

/// Runs action.yml's steps with `inputs`, the job's `env` and a fresh work dir, like act.
fn run_action(
    inputs: &BTreeMap<&str, String>,
    job_env: &[(&str, String)],
    work: &Path,
) -> ActionRun {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let action =
        YamlLoader::load_from_str(&std::fs::read_to_string(root.join("action.yml")).unwrap())
            .unwrap()
            .remove(0);
    let github: BTreeMap<&str, String> = BTreeMap::from([
        ("sha", SHA.to_string()),
        ("server_url", "http://127.0.0.1:1".to_string()),
        ("action_path", root.display().to_string()),
    ]);
    let summary = work.join("step_summary.md");
    std::fs::write(&summary, "").unwrap();
    let mut steps: Vec<StepRun> = Vec::new();
    for (i, step) in action["runs"]["steps"].as_vec().unwrap().iter().enumerate() {
        assert!(step["if"].is_badvalue(), "the test runner has no `if:`");
        assert_eq!(step["shell"].as_str(), Some("bash"));
        let id = step["id"].as_str().unwrap_or("").to_string();
        let ctx = Context {
            action: &action,
            inputs,
            github: &github,
            steps: &steps,
        };
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in step["env"].as_hash().unwrap() {
            env.push((
                k.as_str().unwrap().to_string(),
                ctx.interpolate(v.as_str().unwrap()),
            ));
        }
        let run = ctx.interpolate(step["run"].as_str().unwrap());
        let script_file = work.join(format!("step{i}.sh"));
        std::fs::write(&script_file, &run).unwrap();
        let output_file = work.join(format!("output{i}"));
        let env_file = work.join(format!("env{i}"));
        std::fs::write(&output_file, "").unwrap();
        std::fs::write(&env_file, "").unwrap();

        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-e", "-o", "pipefail"])
            .arg(&script_file)
            .current_dir(work)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("GITHUB_ACTIONS", "true")
            .env("GITEA_ACTIONS", "true")
            .env("CI", "true")
            .env("GITHUB_SHA", SHA)
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_RUN_NUMBER", "7")
            .env("GITHUB_REPOSITORY", "team/app")
            .env("GITHUB_SERVER_URL", &github["server_url"])
            .env("GITHUB_WORKSPACE", work)
            .env("GITHUB_ACTION_PATH", &root)
            .env("GITHUB_OUTPUT", &output_file)
            .env("GITHUB_ENV", &env_file)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("RUNNER_TEMP", work.join("runner_temp"))
            .env("NO_PROXY", "127.0.0.1");
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        for (k, v) in job_env {
            cmd.env(k, v);
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("bash runs the step");
        let code = out.status.code().expect("the step exited");
        steps.push(StepRun {
            id,
            code,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            outputs: parse_outputs(&std::fs::read_to_string(&output_file).unwrap()),
        });
        if code != 0 {
            break; // the runner stops at a failed step
        }
    }
    let ctx = Context {
        action: &action,
        inputs,
        github: &github,
        steps: &steps,
    };
    let outputs = action["outputs"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                ctx.interpolate(v["value"].as_str().unwrap()),
            )
        })
        .collect();
    ActionRun {
        steps,
        outputs,
        summary: std::fs::read_to_string(&summary).unwrap(),
    }
}

/// A stand-in for `slipway deploy` that records what it was given and answers like slipway:
/// the step outputs, a summary line, and the exit code it is told to end with.
fn fake_slipway(record: &Path, exit: i32, write_outcome: bool) -> Vec<u8> {
    let outcome = if write_outcome {
        "echo outcome=deployed >>\"$GITHUB_OUTPUT\"\n"
    } else {
        ""
    };
    format!(
        r#"#!/bin/bash
if [ "$1" = --version ]; then echo "slipway {version}"; exit 0; fi
printf '%s\n' "$@" > '{record}/argv'
env | grep -E '^(SLIPWAY|GITHUB)_' | sort > '{record}/env'
printf '%s' "$SLIPWAY_REGISTRY_PASSWORD" > '{record}/password'
{{
  echo "image=127.0.0.1:5000/app@sha256:{digest}"
  echo "digest=sha256:{digest}"
  echo "previous-digest=sha256:{previous}"
  echo "url=https://app.example.test/"
}} >>"$GITHUB_OUTPUT"
{outcome}echo "deployed" >>"$GITHUB_STEP_SUMMARY"
exit {exit}
"#,
        version = env!("CARGO_PKG_VERSION"),
        record = record.display(),
        digest = "1".repeat(64),
        previous = "2".repeat(64),
    )
    .into_bytes()
}

fn publish(server: &AssetServer, binary: &[u8]) -> BTreeMap<&'static str, String> {
    let sum = sha256_hex(binary);
    server.publish(&version_tag(), binary, Some(&sum));
    BTreeMap::from([
        ("binary-source", "download".to_string()),
        ("slipway-version", version_tag()),
        ("slipway-sha256", sum),
        ("release-url", server.release_url()),
    ])
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn the_action_maps_inputs_to_slipway_and_slipways_outputs_to_its_own() {
    let server = AssetServer::start();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("record");
    std::fs::create_dir(&record).unwrap();
    let mut inputs = publish(&server, &fake_slipway(&record, 0, true));
    inputs.extend([
        ("config", "deploy/staging.toml".to_string()),
        ("image-repo", "team/app".to_string()),
        (
            "url",
            "https://app.example.test/\nhttps://www.app.example.test/health\n".to_string(),
        ),
        ("dry-run", "true".to_string()),
        ("extra-args", "--report report.json  -v *".to_string()),
        ("registry-user", "ci".to_string()),
        ("registry-password", "s3cret $(touch pwned) *".to_string()),
    ]);
    // A file a glob in extra-args would expand to, if the script ever globbed.
    std::fs::write(work.path().join("glob-bait"), "").unwrap();

    let run = run_action(&inputs, &[], work.path());
    if let Some(failed) = run.failed() {
        panic!("step {} failed: {}", failed.id, failed.stderr);
    }
    assert_eq!(run.steps.len(), 2);

    let argv = read_lines(&record.join("argv"));
    assert_eq!(
        argv,
        [
            "deploy",
            "--url",
            "https://app.example.test/",
            "--url",
            "https://www.app.example.test/health",
            "--report",
            "report.json",
            "-v",
            "*",
        ],
        "URLs become one --url each; extra-args split on whitespace, never globbed"
    );
    assert!(
        !argv.iter().any(|a| a.contains("s3cret")),
        "the password is never on the command line"
    );

    let env = read_lines(&record.join("env"));
    for want in [
        "SLIPWAY_CONFIG=deploy/staging.toml",
        "SLIPWAY_REPOSITORY=team/app",
        &format!("SLIPWAY_EXPECT_VERSION={SHA}"),
        "SLIPWAY_DRY_RUN=true",
        "SLIPWAY_REGISTRY_USER=ci",
        "SLIPWAY_REGISTRY_PASSWORD_ENV=SLIPWAY_REGISTRY_PASSWORD",
        "GITHUB_RUN_ID=4242",
    ] {
        assert!(
            env.iter().any(|l| l == want),
            "{want} in\n{}",
            env.join("\n")
        );
    }
    // The reload image defaults to the digest pinned in action.yml (== slipway's default).
    let cli = std::fs::read_to_string(script("src/cli.rs")).unwrap();
    let reload = env
        .iter()
        .find_map(|l| l.strip_prefix("SLIPWAY_RELOAD_IMAGE="))
        .expect("SLIPWAY_RELOAD_IMAGE set");
    assert!(cli.contains(&format!("\"{reload}\"")), "{reload}");
    // Empty inputs are unset, so slipway's own defaults apply.
    assert!(
        !env.iter().any(|l| l.starts_with("SLIPWAY_REGISTRY=")),
        "empty registry input is unset:\n{}",
        env.join("\n")
    );
    assert_eq!(
        std::fs::read_to_string(record.join("password")).unwrap(),
        "s3cret $(touch pwned) *",
        "the secret arrives intact, through the environment"
    );
    assert!(
        !work.path().join("pwned").exists(),
        "nothing in an input is executed"
    );

    assert_eq!(
        run.outputs,
        BTreeMap::from([
            (
                "image".to_string(),
                format!("127.0.0.1:5000/app@sha256:{}", "1".repeat(64))
            ),
            ("digest".to_string(), format!("sha256:{}", "1".repeat(64))),
            (
                "previous-digest".to_string(),
                format!("sha256:{}", "2".repeat(64))
            ),
            ("url".to_string(), "https://app.example.test/".to_string()),
            ("outcome".to_string(), "deployed".to_string()),
        ])
    );
    assert_eq!(run.summary, "deployed\n");
    // The binary came through the verified download path, into RUNNER_TEMP.
    assert_eq!(
        run.step("install").outputs["bin"],
        work.path()
            .join("runner_temp/slipway-bin/slipway")
            .display()
            .to_string()
    );
}

#[test]
fn the_deploy_steps_exit_code_fails_the_action_and_an_outcome_is_always_set() {
    for (exit, outcome) in [
        (1, "rolled-back"),
        (3, "rollback-failed"),
        (4, "unavailable"),
        (130, "interrupted"),
    ] {
        let server = AssetServer::start();
        let work = tempfile::tempdir().unwrap();
        let record = work.path().join("record");
        std::fs::create_dir(&record).unwrap();
        // This slipway ends without writing an outcome: the step adds one from the exit code.
        let mut inputs = publish(&server, &fake_slipway(&record, exit, false));
        inputs.insert("config", "slipway.toml".to_string());
        let run = run_action(&inputs, &[], work.path());
        let failed = run.failed().expect("the action fails");
        assert_eq!(failed.id, "deploy");
        assert_eq!(failed.code, exit, "{}", failed.stderr);
        assert_eq!(run.outputs["outcome"], outcome);
        assert_eq!(run.outputs["digest"], format!("sha256:{}", "1".repeat(64)));
    }
}

#[test]
fn a_bad_dry_run_value_is_a_usage_error_before_slipway_runs() {
    let server = AssetServer::start();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("record");
    std::fs::create_dir(&record).unwrap();
    let mut inputs = publish(&server, &fake_slipway(&record, 0, true));
    inputs.insert("config", "slipway.toml".to_string());
    inputs.insert("dry-run", "yes".to_string());
    let run = run_action(&inputs, &[], work.path());
    let failed = run.failed().expect("fails");
    assert_eq!((failed.id.as_str(), failed.code), ("deploy", 2));
    assert!(failed.stderr.contains("dry-run must be 'true' or 'false'"));
    assert!(!record.join("argv").exists(), "slipway was not run");
    assert_eq!(run.outputs["outcome"], "usage-error");
}

#[test]
fn a_tampered_download_stops_the_action_before_the_deploy_step() {
    let server = AssetServer::start();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("record");
    std::fs::create_dir(&record).unwrap();
    let mut inputs = publish(&server, &fake_slipway(&record, 0, true));
    // The pin is the real binary's; the server has the fake.
    inputs.insert(
        "slipway-sha256",
        sha256_hex(&std::fs::read(slipway_bin()).unwrap()),
    );
    inputs.insert("config", "slipway.toml".to_string());
    let run = run_action(&inputs, &[], work.path());
    assert_eq!(run.steps.len(), 1, "the deploy step never ran");
    assert_eq!(
        (run.steps[0].id.as_str(), run.steps[0].code),
        ("install", 1)
    );
    assert!(run.steps[0].stderr.contains("sha256 mismatch"));
    assert!(!record.join("argv").exists());
    assert_eq!(run.outputs["outcome"], "");
}

/// The real binary through the whole action, in the sandbox (DOCKER_HOST is the sandbox's
/// engine). A config that does not exist is a usage error (2) for `slipway deploy` both before
/// and after the deploy command exists; either way the action fails with 2 and sets `outcome`.
#[test]
fn the_real_binary_runs_through_the_action_and_its_exit_code_is_kept() {
    let server = AssetServer::start();
    let work = tempfile::tempdir().unwrap();
    let binary = std::fs::read(slipway_bin()).unwrap();
    let mut inputs = publish(&server, &binary);
    inputs.insert("config", "no-such-config.toml".to_string());
    inputs.insert("dry-run", "true".to_string());
    let run = run_action(&inputs, &[], work.path());
    let install = run.step("install");
    assert_eq!(install.code, 0, "{}", install.stderr);
    let failed = run.failed().expect("a missing config fails the deploy");
    assert_eq!(
        (failed.id.as_str(), failed.code),
        ("deploy", 2),
        "{}",
        failed.stderr
    );
    assert!(!run.outputs["outcome"].is_empty(), "{:?}", run.outputs);
}

/// The composite action's steps for real: the release binary downloaded and verified, then a
/// whole deploy (build, push, rollout, smoke) into the sandbox with the environment act gives a
/// step; the action's outputs come from slipway's.
#[test]
fn the_action_deploys_the_fixture_for_real_in_the_sandbox() {
    let s = crate::support::sandbox();
    let svc = crate::service::Svc::new("action-real", "", "docker = true");
    let server = AssetServer::start();
    let work = tempfile::tempdir().unwrap();
    let binary = std::fs::read(slipway_bin()).unwrap();
    let mut inputs = publish(&server, &binary);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");
    inputs.extend([
        ("config", svc.spec_path().display().to_string()),
        ("registry", s.registry.clone()),
        ("image-repo", "fixture/action".to_string()),
        ("url", svc.url("/health")),
        ("reload-image", s.base_image.clone()),
        (
            "extra-args",
            format!(
                "--context {fixture} --revision-arg VERSION --build-arg BASE_IMAGE={} --watch 1s",
                s.base_image
            ),
        ),
    ]);
    let job_env = [
        ("APP_HEALTH", "ok".to_string()),
        ("APP_START_DELAY", "0".to_string()),
    ];
    let run = run_action(&inputs, &job_env, work.path());
    if let Some(failed) = run.failed() {
        panic!(
            "step {} failed ({}): {}",
            failed.id, failed.code, failed.stderr
        );
    }
    svc.assert_serves(SHA);
    assert_eq!(run.outputs["outcome"], "deployed", "{:?}", run.outputs);
    let image = &run.outputs["image"];
    assert!(
        image.starts_with(&format!("{}/fixture/action@sha256:", s.registry)),
        "{image}"
    );
    assert_eq!(
        image.rsplit_once('@').unwrap().1,
        run.outputs["digest"],
        "{:?}",
        run.outputs
    );
    assert_eq!(run.outputs["url"], svc.url("/health"));
    assert!(run.summary.contains("deployed"), "{}", run.summary);
}
