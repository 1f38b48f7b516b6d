//! A build's inputs from flags: everything a build needs that neither the engine nor the
//! registry is asked for (flags, the revision, credentials, the lint), and how a build error
//! becomes the process's exit.

use super::{BuildError, BuildRequest};
use crate::cli;
use crate::exit::Failure;
use crate::image::{credentials, registry};

/// Everything a build needs that neither engine nor registry is asked for: flags, the
/// revision, credentials, the lint. `health_probe` overrides --health-probe-configured
/// (deploy knows it from the spec).
pub async fn from_args(
    args: &cli::BuildOptions,
    health_probe: Option<bool>,
) -> Result<(super::PreparedBuild, registry::Registry), Failure> {
    let Some(registry_name) = args.registry.registry.clone() else {
        return Err(
            Failure::usage(anyhow::anyhow!("building needs a registry to push to"))
                .with_hint("pass --registry HOST[:PORT] (or set SLIPWAY_REGISTRY; for a deploy, `registry` in the spec)"),
        );
    };
    let Some(repository) = args.repository.clone() else {
        return Err(
            Failure::usage(anyhow::anyhow!("building needs a repository name"))
                .with_hint("pass --repository team/app (or SLIPWAY_REPOSITORY; for a deploy, `repository` in the spec); to deploy an image built elsewhere, pass --image REPO@sha256:..."),
        );
    };
    let credentials = credentials::Credentials::resolve(
        &registry_name,
        args.registry.registry_user.as_deref(),
        args.registry.registry_password_env.as_deref(),
    )
    .map_err(Failure::usage)?;
    let image = &args.image;
    let mut build_args = super::key_values(&image.build_args, "build arg").map_err(failure)?;
    let labels = super::key_values(&args.labels, "label").map_err(failure)?;
    let revision = super::resolve_revision(args.revision.as_deref(), &image.context)
        .await
        .map_err(failure)?;
    tracing::info!("revision {} (from {})", revision.sha, revision.from);
    if let Some(name) = &args.revision_arg {
        build_args.retain(|(k, _)| k != name);
        build_args.push((name.clone(), revision.sha.clone()));
    }
    let request = BuildRequest {
        context: image.context.clone(),
        dockerfile: image.dockerfile(),
        target: image.target.clone(),
        build_args,
        labels,
        repository,
        revision: revision.sha,
        extra_tags: args.tags.clone(),
        source: super::resolve_source(args.source.as_deref(), &image.context).await,
        created: super::created_now(),
        allow: image.allow.clone(),
        health_probe: health_probe.unwrap_or(image.health_probe_configured),
        builder: args.builder,
    };
    // Flags and the lint are checked before the engine or the registry is asked anything.
    let prepared = super::prepare(&request).map_err(failure)?;
    let registry =
        registry::Registry::new(&registry_name, args.registry.insecure_registry, credentials);
    Ok((prepared, registry))
}

pub fn failure(e: BuildError) -> Failure {
    let exit = e.exit();
    let hint = e.hint();
    let failure = Failure::new(exit, e);
    match hint {
        Some(hint) => failure.with_hint(hint),
        None => failure,
    }
}
