//! The deploy's plan as data: the image (given, or built by this deploy), the rollout's plan,
//! the lock, the smoke test; rendered as text and as JSON from the same value.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::DeployArgs;
use crate::deploy::smoke::Smoke;
use crate::exit::{Exit, Failure};
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::output;
use crate::rollout::{self, Choice, Plan, Target, TargetImage};

use super::inputs::*;
use super::public::*;
use super::settings::{Setting, as_map};

/// What `slipway plan` shows: one value, printed as text (`render_deploy_plan`) or as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct DeployPlan {
    /// Where the image comes from, tagged `image_source`: given, or built by this deploy.
    #[serde(flatten)]
    pub(crate) image: DeployImage,
    pub(crate) revision: String,
    pub(crate) rollout: Plan,
    pub(crate) reload_image: String,
    pub(crate) lock: String,
    pub(crate) smoke: Smoke,
    pub(crate) watch: String,
    pub(crate) on_failure: Vec<String>,
    /// Each value the flags and the spec decide, with where it came from.
    #[serde(serialize_with = "as_map")]
    pub(crate) settings: Vec<Setting>,
}

/// Where the deployed image comes from.
#[derive(Debug, Serialize)]
#[serde(tag = "image_source", rename_all = "kebab-case")]
pub(crate) enum DeployImage {
    /// `--image`: built elsewhere, pinned by digest.
    Given {
        #[serde(serialize_with = "as_text")]
        image: PinnedImage,
    },
    /// Linted, built, pushed and proven by this deploy: the digest is known after the push.
    Built {
        /// `REGISTRY/REPOSITORY`.
        repository: String,
        build: BuildSteps,
    },
}

/// What the deploy's build step will do.
#[derive(Debug, Serialize)]
pub(crate) struct BuildSteps {
    pub(crate) context: PathBuf,
    pub(crate) dockerfile: PathBuf,
    /// Every reference pushed, `REGISTRY/REPOSITORY:TAG`.
    pub(crate) tags: Vec<String>,
}

pub(crate) fn as_text<S: serde::Serializer>(image: &PinnedImage, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&image.to_string())
}

/// The image a deploy plans for, and its revision: the given one's (if any), or the build's.
pub(crate) fn planned_image(
    source: &Source,
    revision: Option<Revision>,
) -> Result<(DeployImage, Option<Revision>), Failure> {
    let (prepared, registry) = match source {
        Source::Given(image) => {
            let image = image.clone();
            return Ok((DeployImage::Given { image }, revision));
        }
        Source::Build(b) => &**b,
    };
    let req = prepared.request();
    let repository = format!("{}/{}", registry.name(), req.repository);
    let tags = req
        .tags()
        .iter()
        .map(|t| format!("{repository}:{t}"))
        .collect();
    let build = BuildSteps {
        context: req.context.clone(),
        dockerfile: req.dockerfile.clone(),
        tags,
    };
    let revision = rollout::revision_arg(&req.revision, "the build's revision")?;
    Ok((DeployImage::Built { repository, build }, Some(revision)))
}

pub(crate) async fn dry_run(
    args: &DeployArgs,
    p: &rollout::Prepared,
    source: &Source,
    revision: Option<Revision>,
    settings: Vec<Setting>,
) -> Result<Exit, Failure> {
    let (image, revision) = planned_image(source, revision)?;
    let plan = match &image {
        DeployImage::Given { image } => {
            let choice = Choice::Image {
                image: image.to_string(),
                revision,
            };
            rollout::plan_only(p, &choice).await?
        }
        DeployImage::Built { repository, .. } => {
            let target = Target {
                image: TargetImage::Unbuilt {
                    repository: repository.clone(),
                },
                revision,
                reuse_retained: false,
                replace: None,
            };
            rollout::plan_target(p, &target).await?
        }
    };
    let version = args
        .smoke
        .expect_version
        .clone()
        .unwrap_or_else(|| plan.revision.to_string());
    let smoke = smoke_from_args(&args.smoke, &version)?;
    let dp = DeployPlan {
        image,
        revision: plan.revision.to_string(),
        rollout: plan,
        reload_image: p.host.image.to_string(),
        lock: format!(
            "slipway-lock-{} (wait {}, expires {} after its last heartbeat)",
            p.spec.name,
            humantime::format_duration(args.service.lock_wait),
            humantime::format_duration(args.service.lock_ttl)
        ),
        smoke,
        watch: humantime::format_duration(args.watch).to_string(),
        on_failure: vec![
            "before the switch (unhealthy, wrong digest, exited, reload rejected): remove the new container; the old one never stopped serving".into(),
            "after the switch (smoke test or watch window fails): restore the previous snippet, reload Caddy, check the previous version is served again, remove the new container".into(),
            "if that restore fails: exit 3 with the state of the host and what to run".into(),
        ],
        settings,
    };
    output::print(args.service.format, &dp, render_deploy_plan)?;
    Ok(Exit::Success)
}

pub(crate) fn render_deploy_plan(dp: &DeployPlan) -> String {
    let mut s = String::new();
    if let DeployImage::Built { build, .. } = &dp.image {
        let _ = writeln!(
            s,
            "build: lint and build {} ({}), push {}, prove the registry's digest",
            build.context.display(),
            build.dockerfile.display(),
            build.tags.join(", ")
        );
    }
    s.push_str(&rollout::render_plan(&dp.rollout));
    let _ = writeln!(s, "  reload image: {}", dp.reload_image);
    let _ = writeln!(s, "  lock: {}", dp.lock);
    for url in &dp.smoke.urls {
        let mut what = vec![format!("status {}", dp.smoke.expect.status)];
        if let Some((f, v)) = &dp.smoke.expect.json {
            what.push(format!("{f} == {v}"));
        }
        if let Some((re, v)) = &dp.smoke.expect.body_regex {
            what.push(format!("/{re}/ == {v}"));
        }
        if let Some((h, v)) = &dp.smoke.expect.header {
            what.push(format!("header {h} == {v}"));
        }
        let _ = writeln!(
            s,
            "  smoke: GET {url} -> {} (retry every {} for {}), then watch {}",
            what.join(", "),
            humantime::format_duration(dp.smoke.interval),
            humantime::format_duration(dp.smoke.deadline),
            dp.watch
        );
    }
    if !dp.settings.is_empty() {
        s.push_str("  settings (a flag wins, then a SLIPWAY_* variable, then the spec, then the default):\n");
    }
    for setting in &dp.settings {
        let value = setting
            .value
            .as_ref()
            .map(|v| format!(": {v}"))
            .unwrap_or_default();
        let _ = writeln!(s, "    {}{value} ({})", setting.key, setting.from);
    }
    s
}
