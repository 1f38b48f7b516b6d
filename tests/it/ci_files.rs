//! The CI files agree with each other and with slipway: one privileged reload image, pinned by
//! digest, in action.yml, every deploying workflow, renovate.json's rule and slipway's built-in
//! default; Renovate's regex finds each reference exactly once; the action and the workflows keep
//! the rules the validators cannot see (inputs only through `env:`, outputs from the deploy step,
//! actions pinned by commit, no persisted checkout credentials).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{slipway_bin, text};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: one YAML document");
    docs.remove(0)
}

fn renovate() -> serde_json::Value {
    serde_json::from_str(&read("renovate.json")).expect("renovate.json is JSON")
}

/// The workflow files, relative to the repository root.
fn workflows() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(".gitea/workflows"))
        .expect(".gitea/workflows exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .map(|n| format!(".gitea/workflows/{n}"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "ci, nightly and release workflows: {files:?}"
    );
    files
}

/// The regex manager's one match string, compiled by the `regex` crate exactly as written.
fn renovate_regex() -> Regex {
    let r = renovate();
    let managers = r["customManagers"].as_array().expect("customManagers");
    assert_eq!(managers.len(), 1, "one custom manager");
    let m = &managers[0];
    assert_eq!(m["customType"], "regex");
    assert_eq!(m["datasourceTemplate"], "docker");
    let strings = m["matchStrings"].as_array().expect("matchStrings");
    assert_eq!(
        strings.len(),
        1,
        "one match string: two could extract a reference twice"
    );
    Regex::new(strings[0].as_str().unwrap()).expect("the match string compiles")
}

/// `/re/` patterns of managerFilePatterns as regexes.
fn renovate_file_patterns() -> Vec<Regex> {
    renovate()["customManagers"][0]["managerFilePatterns"]
        .as_array()
        .expect("managerFilePatterns")
        .iter()
        .map(|p| {
            let p = p.as_str().unwrap();
            let inner = p
                .strip_prefix('/')
                .and_then(|p| p.strip_suffix('/'))
                .unwrap_or_else(|| panic!("{p}: a /regex/ pattern"));
            Regex::new(inner).unwrap()
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    dep_name: String,
    current_value: String,
    current_digest: String,
}

impl Reference {
    fn image(&self) -> String {
        format!(
            "{}:{}@{}",
            self.dep_name, self.current_value, self.current_digest
        )
    }
}

/// What Renovate would extract from one file.
fn extract(re: &Regex, content: &str) -> Vec<Reference> {
    re.captures_iter(content)
        .map(|c| Reference {
            dep_name: c["depName"].to_string(),
            current_value: c["currentValue"].to_string(),
            current_digest: c["currentDigest"].to_string(),
        })
        .collect()
}

/// slipway's built-in default, read from the source the way a person would.
fn cli_default() -> String {
    let src = read("src/cli.rs");
    let re = Regex::new(r#"pub const DEFAULT_RELOAD_IMAGE: &str =\s*"([^"]+)";"#).unwrap();
    let caps: Vec<_> = re.captures_iter(&src).collect();
    assert_eq!(caps.len(), 1, "one DEFAULT_RELOAD_IMAGE in src/cli.rs");
    caps[0][1].to_string()
}

fn managed_files() -> Vec<String> {
    let mut files = vec!["action.yml".to_string(), "src/cli.rs".to_string()];
    files.extend(workflows());
    files
}

#[test]
fn renovate_manages_every_file_that_pins_the_reload_image() {
    let patterns = renovate_file_patterns();
    for file in managed_files() {
        let hits = patterns.iter().filter(|p| p.is_match(&file)).count();
        assert_eq!(hits, 1, "{file}: matched by exactly one managerFilePattern");
    }
    for other in ["Cargo.toml", "README.md", "src/main.rs", "renovate.json"] {
        assert!(
            !patterns.iter().any(|p| p.is_match(other)),
            "{other} is not managed"
        );
    }
}

#[test]
fn one_reload_image_digest_everywhere_each_reference_extracted_once() {
    let re = renovate_regex();
    let default = cli_default();
    let pinned_anywhere = Regex::new(r"@sha256:[0-9a-f]{64}").unwrap();
    let mut found: BTreeMap<String, Vec<Reference>> = BTreeMap::new();
    for file in managed_files() {
        let content = read(&file);
        let refs = extract(&re, &content);
        // Every `@sha256:` in the file is one extracted reference: none missed, none doubled.
        assert_eq!(
            refs.len(),
            pinned_anywhere.find_iter(&content).count(),
            "{file}: every pinned reference is extracted, and only once: {refs:?}"
        );
        found.insert(file, refs);
    }

    // One place per file: action.yml's input default, the workflow env, the Rust constant.
    let per_file: BTreeMap<&str, usize> =
        found.iter().map(|(f, r)| (f.as_str(), r.len())).collect();
    assert_eq!(per_file["action.yml"], 1, "{per_file:?}");
    assert_eq!(per_file["src/cli.rs"], 1, "{per_file:?}");
    assert_eq!(per_file[".gitea/workflows/nightly.yml"], 1, "{per_file:?}");
    assert_eq!(per_file[".gitea/workflows/release.yml"], 1, "{per_file:?}");
    assert_eq!(
        per_file[".gitea/workflows/ci.yml"], 0,
        "ci deploys nothing: {per_file:?}"
    );

    let distinct: BTreeSet<&Reference> = found.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        1,
        "one reload image, the same digest everywhere: {distinct:#?}"
    );
    let reference = distinct.into_iter().next().unwrap();
    assert_eq!(
        reference.image(),
        default,
        "the files agree with src/cli.rs"
    );
    assert!(
        Regex::new(r"^sha256:[0-9a-f]{64}$")
            .unwrap()
            .is_match(&reference.current_digest)
    );

    // Renovate's rule for the privileged image covers every name it extracts.
    let rules = renovate()["packageRules"].clone();
    let rule = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["matchDepNames"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == reference.dep_name.as_str()))
        })
        .unwrap_or_else(|| panic!("a packageRule matches {}", reference.dep_name))
        .clone();
    assert_eq!(rule["automerge"], false, "{rule}");
    assert_eq!(rule["dependencyDashboardApproval"], true, "{rule}");
    let names: Vec<&str> = rule["matchDepNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for spelling in ["alpine", "docker.io/library/alpine"] {
        assert!(names.contains(&spelling), "{names:?} lists {spelling}");
    }
    assert_eq!(renovate()["pinDigests"], true);

    // The binary itself shows the same default.
    let out = Command::new(slipway_bin())
        .args(["doctor", "--help"])
        .env_remove("SLIPWAY_RELOAD_IMAGE")
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout.replace(char::is_whitespace, "").contains(&default),
        "`slipway doctor --help` shows the default reload image {default}:\n{stdout}"
    );
}

#[test]
fn the_regex_extracts_registry_hosts_ports_and_tags() {
    let re = renovate_regex();
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let cases = [
        ("alpine", "3.20"),
        ("docker.io/library/alpine", "3.20.3"),
        ("127.0.0.1:5000/tools/nsenter", "v1.2.3-r0"),
        ("registry.example.com:443/a/b", "latest"),
    ];
    for (name, tag) in cases {
        for wrap in ["\"{}\"", "image: {}\n", "  run: docker run {} true"] {
            let text = wrap.replace("{}", &format!("{name}:{tag}@{digest}"));
            let refs = extract(&re, &text);
            assert_eq!(
                refs,
                vec![Reference {
                    dep_name: name.into(),
                    current_value: tag.into(),
                    current_digest: digest.clone(),
                }],
                "{text}"
            );
        }
    }
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is a string, got {y:?}"))
}

fn hash_keys(y: &Yaml) -> Vec<String> {
    y.as_hash()
        .map(|h| h.keys().map(|k| k.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Every `${{ ... }}` expression in a string.
fn expressions(s: &str) -> Vec<String> {
    Regex::new(r"\$\{\{\s*(.*?)\s*\}\}")
        .unwrap()
        .captures_iter(s)
        .map(|c| c[1].to_string())
        .collect()
}

#[test]
fn the_action_reads_inputs_only_through_env_and_maps_every_output() {
    let action = yaml("action.yml");
    let reload_default = str_of(&action["inputs"]["reload-image"]["default"], "reload-image");
    assert_eq!(reload_default, cli_default());
    assert_eq!(
        str_of(&action["inputs"]["expected-version"]["default"], "default"),
        "${{ github.sha }}"
    );
    for input in [
        "config",
        "image-repo",
        "registry",
        "url",
        "dry-run",
        "extra-args",
        "registry-user",
        "registry-password",
        "binary-source",
        "slipway-version",
        "slipway-sha256",
        "release-url",
    ] {
        assert!(
            !action["inputs"][input].is_badvalue(),
            "action.yml has input {input}"
        );
    }
    assert_eq!(
        str_of(&action["inputs"]["binary-source"]["default"], "default"),
        "download"
    );

    assert_eq!(str_of(&action["runs"]["using"], "using"), "composite");
    let steps = action["runs"]["steps"].as_vec().expect("steps");
    let mut inputs_used = BTreeSet::new();
    for step in steps {
        let name = str_of(&step["name"], "step name");
        let run = str_of(&step["run"], "run");
        assert_eq!(str_of(&step["shell"], "shell"), "bash", "{name}");
        assert!(
            expressions(run).is_empty(),
            "{name}: no expression in run text, only env: {run}"
        );
        for (k, v) in step["env"].as_hash().expect("env") {
            for e in expressions(str_of(v, "env value")) {
                if let Some(input) = e.strip_prefix("inputs.") {
                    assert!(
                        !action["inputs"][input].is_badvalue(),
                        "{name}: env {k:?} reads undeclared input {input}"
                    );
                    inputs_used.insert(input.to_string());
                }
            }
        }
    }
    let declared: BTreeSet<String> = hash_keys(&action["inputs"]).into_iter().collect();
    assert_eq!(inputs_used, declared, "every input is used, through env");

    let deploy = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("deploy"))
        .expect("a step with id deploy");
    assert!(
        deploy["env"]["SLIPWAY_REGISTRY_PASSWORD"]
            .as_str()
            .is_some()
    );
    let outputs = &action["outputs"];
    let names: BTreeSet<String> = hash_keys(outputs).into_iter().collect();
    let want: BTreeSet<String> = ["image", "digest", "previous-digest", "url", "outcome"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
    for name in &names {
        assert_eq!(
            str_of(&outputs[name.as_str()]["value"], "value"),
            format!("${{{{ steps.deploy.outputs.{name} }}}}")
        );
    }
}

fn steps_of(workflow: &Yaml) -> Vec<(String, &Yaml)> {
    let mut out = Vec::new();
    for (job, def) in workflow["jobs"].as_hash().expect("jobs") {
        for step in def["steps"].as_vec().expect("steps") {
            out.push((job.as_str().unwrap().to_string(), step));
        }
    }
    out
}

#[test]
fn workflows_pin_actions_keep_no_credentials_and_interpolate_nothing_into_run() {
    let pinned = Regex::new(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$").unwrap();
    let release_comment = Regex::new(r"# v\d+\.\d+\.\d+$").unwrap();
    for file in workflows() {
        let wf = yaml(&file);
        assert_eq!(
            wf["permissions"]["contents"].as_str(),
            Some("read"),
            "{file}: read-only by default"
        );
        for (job, step) in steps_of(&wf) {
            if let Some(uses) = step["uses"].as_str() {
                if uses == "./" {
                    continue;
                }
                assert!(
                    pinned.is_match(uses),
                    "{file}/{job}: {uses} pinned by commit"
                );
                let sha = uses.rsplit('@').next().unwrap();
                let line = read(&file)
                    .lines()
                    .find(|l| l.contains(sha))
                    .unwrap()
                    .to_string();
                assert!(
                    release_comment.is_match(&line),
                    "{file}: the pinned release is named in a comment: {line}"
                );
                if uses.starts_with("actions/checkout@") {
                    assert_eq!(
                        step["with"]["persist-credentials"].as_bool(),
                        Some(false),
                        "{file}/{job}: checkout persists no credentials"
                    );
                }
            }
            if let Some(run) = step["run"].as_str() {
                assert!(
                    expressions(run).is_empty(),
                    "{file}/{job}: no expression in run text, only env: {run}"
                );
                assert_eq!(step["shell"].as_str(), Some("bash"), "{file}/{job}: {run}");
            }
        }
    }
}

/// The steps of a workflow that use the action from this checkout.
fn deploy_steps(wf: &Yaml) -> Vec<&Yaml> {
    steps_of(wf)
        .into_iter()
        .filter(|(_, s)| s["uses"].as_str() == Some("./"))
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn nightly_deploys_main_to_staging_on_a_five_field_schedule() {
    let wf = yaml(".gitea/workflows/nightly.yml");
    let on = &wf["on"];
    let crons = on["schedule"].as_vec().expect("schedule");
    assert_eq!(crons.len(), 1);
    let cron = str_of(&crons[0]["cron"], "cron");
    assert_eq!(cron.split_whitespace().count(), 5, "5-field cron: {cron}");
    assert!(!cron.starts_with('@'));
    assert!(
        on.as_hash()
            .unwrap()
            .contains_key(&Yaml::String("workflow_dispatch".into()))
    );
    let job = &wf["jobs"]["staging"];
    assert_eq!(str_of(&job["if"], "if"), "github.ref == 'refs/heads/main'");

    let steps = deploy_steps(&wf);
    assert_eq!(steps.len(), 1, "one deploy");
    let with = &steps[0]["with"];
    assert_eq!(with["binary-source"].as_str(), Some("build"));
    assert_eq!(
        with["reload-image"].as_str(),
        Some("${{ env.SLIPWAY_RELOAD_IMAGE }}")
    );
    assert_eq!(
        str_of(&wf["env"]["SLIPWAY_RELOAD_IMAGE"], "env"),
        cli_default()
    );
    assert!(
        str_of(&with["registry-password"], "password").starts_with("${{ secrets."),
        "the password comes from a secret"
    );
    // Building from source needs cargo before the action runs.
    let names: Vec<_> = job["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|s| s["run"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        names.iter().any(|r| r == "scripts/ci/setup-rust"),
        "{names:?}"
    );
}

#[test]
fn release_publishes_the_static_binary_and_deploys_the_verified_asset() {
    let wf = yaml(".gitea/workflows/release.yml");
    let tags = wf["on"]["push"]["tags"].as_vec().expect("on.push.tags");
    assert_eq!(tags, &vec![Yaml::String("v*".into())]);
    assert_eq!(
        str_of(&wf["env"]["SLIPWAY_RELOAD_IMAGE"], "env"),
        cli_default()
    );

    let publish = &wf["jobs"]["publish"];
    assert_eq!(publish["permissions"]["contents"].as_str(), Some("write"));
    let runs: Vec<&str> = publish["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    let all = runs.join("\n");
    assert!(all.contains("scripts/build-static"), "{all}");
    assert!(all.contains("sha256sum slipway-x86_64-linux > slipway-x86_64-linux.sha256"));
    assert!(all.contains(
        "scripts/ci/publish-release \"$GITHUB_REF_NAME\" dist/slipway-x86_64-linux dist/slipway-x86_64-linux.sha256"
    ));
    let token_step = publish["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|s| !s["env"]["GITEA_TOKEN"].is_badvalue())
        .expect("a step gets the token through env");
    assert_eq!(
        token_step["env"]["GITEA_TOKEN"].as_str(),
        Some("${{ secrets.RELEASE_TOKEN }}")
    );

    let production = &wf["jobs"]["production"];
    assert_eq!(production["needs"].as_str(), Some("publish"));
    let steps = deploy_steps(&wf);
    assert_eq!(steps.len(), 1);
    let with = &steps[0]["with"];
    assert_eq!(with["binary-source"].as_str(), Some("download"));
    assert_eq!(
        with["slipway-version"].as_str(),
        Some("${{ github.ref_name }}")
    );
    assert_eq!(
        with["slipway-sha256"].as_str(),
        Some("${{ needs.publish.outputs.sha256 }}")
    );
    assert_eq!(
        with["reload-image"].as_str(),
        Some("${{ env.SLIPWAY_RELOAD_IMAGE }}")
    );
}

#[test]
fn ci_runs_fmt_clippy_and_the_test_command_on_push_and_pull_request() {
    let wf = yaml(".gitea/workflows/ci.yml");
    let on: Vec<String> = hash_keys(&wf["on"]);
    assert_eq!(on, vec!["push".to_string(), "pull_request".to_string()]);
    let runs: Vec<String> = steps_of(&wf)
        .into_iter()
        .filter_map(|(_, s)| s["run"].as_str().map(String::from))
        .collect();
    for want in [
        "cargo fmt --check",
        "cargo clippy --locked --all-targets -- -D warnings",
        "scripts/test",
    ] {
        assert!(runs.iter().any(|r| r == want), "ci runs `{want}`: {runs:?}");
    }
    // The command CI runs is the README's test command.
    assert!(Path::new(&root()).join("scripts/test").exists());
    assert!(read(".ci/run").contains("exec scripts/test"));
}
