//! The deploy flow's Swarm branch: the same inputs, build and public check as on one host, the
//! rollout handed to `crate::swarm` (ADR 0011).

use crate::cli::DeployArgs;
use crate::exit::{Exit, Failure};
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::output;
use crate::rollout::{self, Report, TargetImage};

use super::inputs::Source;
use super::plan::DeployImage;
use super::public::PublicCheck;

/// `slipway plan` / `deploy --dry-run` for a `[swarm]` spec: the service diff.
pub(crate) async fn dry_run(
    args: &DeployArgs,
    p: &rollout::Prepared,
    source: &Source,
    revision: Option<Revision>,
) -> Result<Exit, Failure> {
    let (image, revision) = super::plan::planned_image(source, revision)?;
    let revision = match (revision, &image) {
        (None, DeployImage::Given { image }) if args.smoke.expect_version.is_none() => {
            let label = super::inputs::revision_label(p, image).await?;
            rollout::revision_arg(&label, "the image's revision label")?
        }
        (revision, _) => revision_or_expected(args, revision)?,
    };
    let target = match &image {
        DeployImage::Given { image } => TargetImage::from(image.clone()),
        DeployImage::Built { repository, .. } => TargetImage::Unbuilt {
            repository: repository.clone(),
        },
    };
    let plan = crate::swarm::plan_for(p, &target, &revision).await?;
    output::print(args.service.format, &plan, crate::swarm::render)?;
    Ok(Exit::Success)
}

/// The revision the service is labelled with: the build's or given one, else the expected
/// version.
pub(crate) fn revision_or_expected(
    args: &DeployArgs,
    revision: Option<Revision>,
) -> Result<Revision, Failure> {
    match (revision, &args.smoke.expect_version) {
        (Some(r), _) => Ok(r),
        (None, Some(v)) => rollout::revision_arg(v, "--expect-version"),
        (None, None) => Err(Failure::usage(anyhow::anyhow!(
            "a swarm deploy needs a revision to label the service with"
        ))
        .with_hint("pass --revision (in CI it defaults to GITHUB_SHA) or --expect-version")),
    }
}

/// The rollout on the swarm with the public check after Swarm's verdict.
pub(crate) async fn rollout(
    p: &rollout::Prepared,
    args: &DeployArgs,
    image: &PinnedImage,
    revision: &Revision,
    hook: &PublicCheck,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Report, Failure> {
    crate::swarm::deploy(p, args.service.lock_ttl, image, revision, hook, cancel).await
}
