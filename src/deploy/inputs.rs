//! The deploy's inputs, every one checked before the engine is touched: the spec and flags, the
//! image to build or the one given, the revision, the expected version.

use crate::ci::Ci;
use crate::cli::{DeployArgs, GlobalArgs};
use crate::exit::Failure;
use crate::image::lint;
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::rollout::{self};

use super::public::*;
use super::settings::{Conflict, Effective, Setting, build_flags_on_command_line, effective};

/// Values of the spec's env masked in CI logs: under a secret-looking name (the lint's rule,
/// `lint::looks_secret_name`), or anything long whatever its name.
pub(crate) fn looks_secret(name: &str, value: &str) -> bool {
    lint::looks_secret_name(name) && value.len() >= 4 || value.len() >= 16
}

/// Where the image comes from.
pub(crate) enum Source {
    Given(PinnedImage),
    Build(
        Box<(
            crate::image::build::PreparedBuild,
            crate::image::registry::Registry,
        )>,
    ),
}

/// What the checks found: the host's inputs, the image's source, and the flags after
/// precedence (`settings::effective`) with where each value came from.
pub(crate) struct Checked {
    pub(crate) p: rollout::Prepared,
    pub(crate) source: Source,
    pub(crate) args: DeployArgs,
    pub(crate) settings: Vec<Setting>,
}

/// Everything checked before anything changes; usage errors exit 2 here. `url` is the public
/// URL as soon as it is known, for a report of an early end.
pub(crate) async fn check_inputs(
    global: &GlobalArgs,
    given: &DeployArgs,
    ci: &Ci,
    url: &mut Option<String>,
) -> Result<Checked, Failure> {
    build_flags_on_command_line(given).map_err(Conflict::failure)?;
    let p = rollout::prepare(global, &given.service)?;
    let Effective { args, settings } = effective(&p.spec, given).map_err(Conflict::failure)?;
    *url = args.smoke.urls.first().cloned();
    for (name, value) in &p.values {
        if looks_secret(name, value) {
            ci.mask(value);
        }
    }
    if let Some(name) = &args.build.registry.registry_password_env
        && let Ok(value) = std::env::var(name)
    {
        ci.mask(&value);
    }
    // Checked now so a bad flag fails before anything runs; the version comes later.
    smoke_from_args(&args.smoke, "-")?;
    if let Some(path) = &args.report
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--report {}: the directory {} does not exist",
            path.display(),
            dir.display()
        ))
        .with_hint("create it first, or write the report elsewhere"));
    }
    let source = match &args.image {
        Some(image) => Source::Given(PinnedImage::parse(image).map_err(|e| {
            let hint = e.hint();
            Failure::usage(anyhow::Error::new(e).context("--image must be pinned")).with_hint(hint)
        })?),
        None => Source::Build(Box::new(
            crate::image::build::from_args::from_args(
                &args.build,
                Some(p.spec.health.http.is_some()),
            )
            .await?,
        )),
    };
    rollout::reachable(&p.engine).await?;
    Ok(Checked {
        p,
        source,
        args,
        settings,
    })
}

/// The revision given for the job: --revision (SLIPWAY_REVISION), else GITHUB_SHA; checked.
pub(crate) fn given_revision(args: &DeployArgs) -> Result<Option<Revision>, Failure> {
    let flag = args
        .build
        .revision
        .as_deref()
        .map(|r| (r.to_string(), "--revision (SLIPWAY_REVISION)"));
    let env = || {
        std::env::var("GITHUB_SHA")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|r| (r, "GITHUB_SHA"))
    };
    flag.or_else(env)
        .map(|(text, source)| rollout::revision_arg(&text, source))
        .transpose()
}

pub(crate) async fn revision_label(
    p: &rollout::Prepared,
    image: &PinnedImage,
) -> Result<String, Failure> {
    rollout::read::pulled(&p.engine, image)
        .await?
        .and_then(|i| i.labels.get(rollout::REVISION_LABEL).cloned())
        .map(|label| {
            rollout::revision_arg(&label, "the image's org.opencontainers.image.revision label")
                .map(|r| r.to_string())
        })
        .transpose()?
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{image} has no org.opencontainers.image.revision label, so there is no version to expect"
            ))
            .with_hint("pass --expect-version (or --revision); in CI it defaults to GITHUB_SHA")
        })
}
