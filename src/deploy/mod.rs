//! `slipway deploy`: the whole CI step. Inputs are checked before the engine is touched; the
//! image is built and proven (or given); the rollout runs with the public smoke test and its
//! watch window as the post-switch check, so a wrong version served puts the previous release
//! back. Every path ends with outputs, a summary and (with --report) a JSON report.

mod inputs;
mod plan;
pub(crate) mod public;
mod report;
mod settings;
pub mod smoke;
mod swarm;

use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::ci::Ci;
use crate::cli::{DeployArgs, GlobalArgs};
use crate::exit::{Exit, Failure};
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::rollout::Choice;
use crate::rollout::{self, StepName};

use inputs::*;
use plan::*;
use public::*;
use report::*;

pub async fn deploy(
    global: &GlobalArgs,
    args: &DeployArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    // The steps before the rollout (the build), reported on every path, a failed one included.
    let mut early = Early::default();
    let result = deploy_inner(global, args, cancel, &mut early).await;
    if let Err(f) = &result
        && !args.service.dry_run
    {
        record_early_failure(&Ci::from_env(), args, f, &early);
    }
    result
}

pub(crate) async fn deploy_inner(
    global: &GlobalArgs,
    given: &DeployArgs,
    cancel: &CancellationToken,
    early: &mut Early,
) -> Result<Exit, Failure> {
    let ci = Ci::from_env();
    let started = SystemTime::now();
    ci.group("slipway: check inputs");
    let checked = check_inputs(global, given, &ci, &mut early.url).await;
    ci.end_group();
    let Checked {
        p,
        source,
        args,
        settings,
    } = checked?;
    let args = &args;

    let given_revision = given_revision(args)?;
    if args.service.dry_run && p.spec.swarm.is_some() {
        return swarm::dry_run(args, &p, &source, given_revision).await;
    }
    if args.service.dry_run {
        return dry_run(args, &p, &source, given_revision, settings).await;
    }

    if p.spec.swarm.is_none() {
        reload_image_ready(&p).await?;
    }
    // The image: built, pushed and proven, or given.
    let (image, revision) = match source {
        Source::Given(image) => (image, given_revision),
        Source::Build(b) => build_step(&ci, &p, *b, cancel, &mut early.steps).await?,
    };
    let choice = Choice::Image {
        image: image.to_string(),
        revision: revision.clone(),
    };

    // The expected version: given, the revision, or the image's own revision label.
    let expected = match args
        .smoke
        .expect_version
        .clone()
        .or(revision.as_ref().map(ToString::to_string))
    {
        Some(v) => v,
        None => revision_label(&p, &image).await?,
    };
    tracing::info!("deploying {image}; the public URL must serve {expected}");

    ci.group("slipway: rollout and smoke test");
    let hook = PublicCheck {
        smoke: smoke_from_args(&args.smoke, &expected)?,
        window: args.watch,
        args: args.smoke.clone(),
    };
    let report = match p.spec.swarm {
        Some(_) => {
            let revision = swarm::revision_or_expected(
                args,
                revision.or(Some(rollout::revision_arg(
                    &expected,
                    "the expected version",
                )?)),
            )?;
            swarm::rollout(&p, args, &image, &revision, &hook, cancel).await
        }
        None => rollout::execute_locked(&p, &args.service, &choice, &hook, cancel).await,
    };
    ci.end_group();
    let report = report?;
    finish(&ci, args, &p.spec.name, &report, started, &early.steps)
}

/// The pinned reload image (one host's lock, agent and reload), checked and pulled before anything
/// is built: a host that cannot get it fails here, with nothing built, pushed or changed.
async fn reload_image_ready(p: &rollout::Prepared) -> Result<(), Failure> {
    let image = p.host.image.to_string();
    p.engine.ensure_image(&image).await.map_err(|e| {
        let hint = e
            .hint()
            .unwrap_or_else(|| "check that the Docker engine answers (`slipway doctor`)".into());
        Failure::new(Exit::Unavailable, e).with_hint(hint)
    })
}

/// Builds, pushes and proves the image; the step, failed or not, goes into `before`.
pub(crate) async fn build_step(
    ci: &Ci,
    p: &rollout::Prepared,
    (prepared, registry): (
        crate::image::build::PreparedBuild,
        crate::image::registry::Registry,
    ),
    cancel: &CancellationToken,
    before: &mut Vec<PreStep>,
) -> Result<(PinnedImage, Option<Revision>), Failure> {
    ci.group("slipway: build, push, prove");
    let t = SystemTime::now();
    let pushed = prepared.build_and_push(&p.engine, &registry, cancel).await;
    ci.end_group();
    let pushed = match pushed {
        Ok(pushed) => pushed,
        Err(e) => {
            before.push(PreStep::new(StepName::Build, t, false, e.to_string()));
            return Err(crate::image::build::from_args::failure(e));
        }
    };
    before.push(PreStep::new(
        StepName::Build,
        t,
        true,
        format!(
            "{} ({} steps, {} cached, {} bytes of context); the registry holds {}",
            pushed.image, pushed.steps, pushed.cached_steps, pushed.context.bytes, pushed.digest
        ),
    ));
    let revision = rollout::revision_arg(&pushed.revision, "the build's revision")?;
    Ok((pushed.image, Some(revision)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::lint;
    use crate::probe::Expect;
    use smoke::Smoke;
    use std::time::Duration;

    #[test]
    fn secrets_are_recognised_by_name_or_length() {
        assert!(looks_secret("DB_PASSWORD", "hunter2"));
        assert!(looks_secret("API_TOKEN", "abcd"));
        assert!(!looks_secret("APP_HEALTH", "ok"));
        assert!(!looks_secret("API_KEY", "x"));
        assert!(looks_secret("ANYTHING", "a-long-value-0123456789"));
    }

    /// The lint's `secret-value` rule and the deploy's `::add-mask::` judge a name the same way:
    /// a short literal value (not a known token format, not a `$REFERENCE`) under each name.
    #[test]
    fn the_lint_and_the_mask_agree_on_every_name() {
        let value = "hunter2-x";
        for name in [
            "DB_PASSWORD",
            "npm_token",
            "CLIENT_SECRET",
            "API_KEY",
            "apikey",
            "AWS_SECRET_ACCESS_KEY",
            "SSH_PRIVATE_KEY",
            "PASS",
            "SENTRY_DSN",
            "DATABASE_URL",
            "APP_DATABASE_URL",
            "BASIC_AUTH",
            "GITHUB_CREDENTIALS",
            "VERSION",
            "BASE_IMAGE",
            "KEYBOARD",
            "MONKEY",
            "PUBLIC_KEY",
            "GPG_KEY_ID",
            "PWD",
            "PASSENGER",
            "AUTHOR",
            "DATABASE",
            "URL",
            "APP_HEALTH",
        ] {
            assert_eq!(
                looks_secret(name, value),
                lint::holds_secret(name, value),
                "{name}"
            );
            assert_eq!(
                looks_secret(name, value),
                lint::looks_secret_name(name),
                "{name}"
            );
        }
        assert!(looks_secret("SENTRY_DSN", value) && looks_secret("DATABASE_URL", value));
        assert!(!looks_secret("KEYBOARD", value) && !looks_secret("PUBLIC_KEY", value));
    }

    #[test]
    fn a_failed_build_is_a_step_of_the_report_and_the_summary() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.json");
        let cli = crate::cli::Cli::try_parse_from([
            "slipway",
            "deploy",
            "--config",
            "s.toml",
            "--url",
            "https://web.example.com/health",
            "--report",
            report.to_str().unwrap(),
        ])
        .unwrap();
        let crate::cli::Command::Deploy(args) = cli.command else {
            panic!("not a deploy")
        };
        let ci = Ci {
            actions: false,
            output: Some(dir.path().join("output")),
            summary: Some(dir.path().join("summary.md")),
        };
        let early = Early {
            steps: vec![PreStep::new(
                StepName::Build,
                SystemTime::now(),
                false,
                "the build failed: RUN exit 1".into(),
            )],
            url: None,
        };
        let failure = Failure::usage(anyhow::anyhow!("the build failed: RUN exit 1"));
        record_early_failure(&ci, &args, &failure, &early);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(json["outcome"], "usage-error", "{json:#}");
        assert_eq!(json["steps"][0]["name"], "build", "{json:#}");
        assert_eq!(json["steps"][0]["ok"], false, "{json:#}");
        assert_eq!(json["steps"][0]["detail"], "the build failed: RUN exit 1");
        let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            summary.contains("| build | ✗ | ")
                && summary.contains("the build failed: RUN exit 1 |"),
            "{summary}"
        );
        let output = std::fs::read_to_string(dir.path().join("output")).unwrap();
        assert!(output.contains("outcome=usage-error\n"), "{output}");
    }

    fn built_plan() -> DeployPlan {
        let spec = crate::spec::ServiceSpec::parse(
            std::path::Path::new("s.toml"),
            "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\n\
             [health.http]\njson_field = \".version\"\n\
             [caddy]\nsnippet_dir = \"/etc/caddy/slipway\"\n",
        )
        .unwrap();
        let image = DeployImage::Built {
            repository: "127.0.0.1:5000/team/web".into(),
            build: BuildSteps {
                context: "app".into(),
                dockerfile: "app/Dockerfile".into(),
                tags: vec!["127.0.0.1:5000/team/web:c0ffee1".into()],
            },
        };
        let target = rollout::Target {
            image: rollout::TargetImage::Unbuilt {
                repository: "127.0.0.1:5000/team/web".into(),
            },
            revision: Some(Revision::parse("c0ffee1", "test").unwrap()),
            reuse_retained: false,
            replace: None,
        };
        let facts = rollout::Facts::default();
        let plan = rollout::plan(&spec, &target, &facts, "systemctl reload caddy");
        DeployPlan {
            image,
            revision: plan.revision.to_string(),
            rollout: plan,
            reload_image: "r/nsenter@sha256:ab".into(),
            lock: "slipway-lock-web".into(),
            smoke: Smoke {
                urls: vec!["https://web.example.com/health".into()],
                expect: Expect {
                    status: 200,
                    json: Some((".version".into(), "c0ffee1".into())),
                    body_contains: None,
                    body_regex: None,
                    header: None,
                },
                headers: Vec::new(),
                resolve: Vec::new(),
                cacert: None,
                interval: Duration::from_secs(1),
                deadline: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
            },
            watch: "5s".into(),
            on_failure: Vec::new(),
            settings: vec![settings::Setting {
                key: "registry".into(),
                value: Some("127.0.0.1:5000".into()),
                from: settings::Origin::Spec,
            }],
        }
    }

    #[test]
    fn a_plan_for_an_image_this_deploy_builds_says_so_and_names_no_digest() {
        let dp = built_plan();
        let text = render_deploy_plan(&dp);
        let json = serde_json::to_value(&dp).unwrap();
        let json_text = json.to_string();
        for out in [&text, &json_text] {
            assert!(!out.contains("0000000000"), "{out}");
            assert!(
                out.contains("127.0.0.1:5000/team/web@<built by this deploy>"),
                "{out}"
            );
        }
        assert!(text.starts_with("build: lint and build app (app/Dockerfile), push 127.0.0.1:5000/team/web:c0ffee1, prove the registry's digest\nplan for web: 127.0.0.1:5000/team/web@<built by this deploy> (revision c0ffee1)\n"), "{text}");
        assert!(
            text.ends_with("\n    registry: 127.0.0.1:5000 (from the spec)\n"),
            "{text}"
        );
        assert_eq!(json["settings"]["registry"]["from"], "spec", "{json:#}");
        assert_eq!(json["image_source"], "built", "{json:#}");
        assert_eq!(json["repository"], "127.0.0.1:5000/team/web");
        assert_eq!(json["build"]["tags"][0], "127.0.0.1:5000/team/web:c0ffee1");
        assert_eq!(
            json["rollout"]["target"]["image"],
            "127.0.0.1:5000/team/web@<built by this deploy>"
        );
        assert_eq!(json["rollout"]["action"]["kind"], "rollout");
        assert!(json.get("image").is_none(), "{json:#}");
    }

    #[test]
    fn a_plan_for_a_given_image_names_it() {
        let given = PinnedImage::parse(&format!(
            "127.0.0.1:5000/team/web@sha256:{}",
            "ab".repeat(32)
        ))
        .unwrap();
        let mut dp = built_plan();
        dp.image = DeployImage::Given {
            image: given.clone(),
        };
        dp.rollout.target.image = given.clone().into();
        let json = serde_json::to_value(&dp).unwrap();
        assert_eq!(json["image_source"], "given");
        assert_eq!(json["image"], given.to_string());
        assert!(json.get("build").is_none(), "{json:#}");
        let text = render_deploy_plan(&dp);
        assert!(
            text.starts_with(&format!("plan for web: {given} (revision c0ffee1)\n")),
            "{text}"
        );
    }
}
