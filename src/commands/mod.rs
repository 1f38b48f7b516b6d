//! One thin adapter per subcommand: arguments in, the core called, the result out.

pub mod service;

use tokio_util::sync::CancellationToken;

use crate::cli::{self, Cli, Command};
use crate::exit::{Exit, Failure};
use crate::image::build::{self, BuildError, BuildRequest};
use crate::image::{credentials, lint, registry};
use crate::{deploy, doctor, engine, host, output, rollout, watch};

/// Runs one parsed command line.
pub async fn run(cli: Cli, cancel: &CancellationToken) -> Result<Exit, Failure> {
    match cli.command {
        Command::Doctor(args) => doctor(&cli.global, args, cancel).await,
        Command::Rollout(args) => {
            let revision = args
                .revision
                .as_deref()
                .map(|r| rollout::revision_arg(r, "--revision (SLIPWAY_REVISION)"))
                .transpose()?;
            let choice = rollout::Choice::Image {
                image: args.image,
                revision,
            };
            service::run(&cli.global, &args.service, choice, cancel).await
        }
        Command::Rollback(args) => {
            service::run(
                &cli.global,
                &args.service,
                rollout::Choice::LastGood,
                cancel,
            )
            .await
        }
        Command::Reload(args) => service::reload(&cli.global, &args, cancel).await,
        Command::Lock(args) => service::lock_command(&cli.global, &args).await,
        Command::Smoke(args) => deploy::smoke_command(&args, cancel).await,
        Command::Deploy(args) => deploy::deploy(&cli.global, &args, cancel).await,
        Command::Plan(mut args) => {
            args.service.dry_run = true;
            deploy::deploy(&cli.global, &args, cancel).await
        }
        Command::Build(args) => build(&cli.global, args, cancel).await,
        Command::Lint(args) => lint(args),
        Command::Watch(args) => watch::command(&cli.global, &args, cancel).await,
    }
}

pub async fn build(
    global: &cli::GlobalArgs,
    args: cli::BuildArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let (prepared, registry) = prepare_build(&args.options, None).await?;
    let engine = engine::Engine::connect(&global.docker_host()).map_err(|e| {
        Failure::new(Exit::Unavailable, e).with_hint(
            "is dockerd running, and is this the right socket? Set --docker-host or DOCKER_HOST",
        )
    })?;
    let pushed = prepared
        .build_and_push(&engine, &registry, cancel)
        .await
        .map_err(build_failure)?;
    output::print(args.format, &pushed, |p| format!("{}\n", p.image))?;
    Ok(Exit::Success)
}

/// Everything a build needs that neither engine nor registry is asked for: flags, the
/// revision, credentials, the lint. `health_probe` overrides --health-probe-configured
/// (deploy knows it from the spec).
pub async fn prepare_build(
    args: &cli::BuildOptions,
    health_probe: Option<bool>,
) -> Result<(build::PreparedBuild, registry::Registry), Failure> {
    let Some(registry_name) = args.registry.registry.clone() else {
        return Err(
            Failure::usage(anyhow::anyhow!("building needs a registry to push to"))
                .with_hint("pass --registry HOST[:PORT] (or set SLIPWAY_REGISTRY)"),
        );
    };
    let Some(repository) = args.repository.clone() else {
        return Err(
            Failure::usage(anyhow::anyhow!("building needs a repository name"))
                .with_hint("pass --repository team/app (or SLIPWAY_REPOSITORY); to deploy an image built elsewhere, pass --image REPO@sha256:..."),
        );
    };
    let credentials = credentials::Credentials::resolve(
        &registry_name,
        args.registry.registry_user.as_deref(),
        args.registry.registry_password_env.as_deref(),
    )
    .map_err(Failure::usage)?;
    let image = &args.image;
    let mut build_args =
        build::key_values(&image.build_args, "build arg").map_err(build_failure)?;
    let labels = build::key_values(&args.labels, "label").map_err(build_failure)?;
    let revision = build::resolve_revision(args.revision.as_deref(), &image.context)
        .await
        .map_err(build_failure)?;
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
        source: build::resolve_source(args.source.as_deref(), &image.context).await,
        created: build::created_now(),
        allow: image.allow.clone(),
        health_probe: health_probe.unwrap_or(image.health_probe_configured),
    };
    // Flags and the lint are checked before the engine or the registry is asked anything.
    let prepared = build::prepare(&request).map_err(build_failure)?;
    let registry =
        registry::Registry::new(&registry_name, args.registry.insecure_registry, credentials);
    Ok((prepared, registry))
}

pub fn build_failure(e: BuildError) -> Failure {
    let exit = e.exit();
    let hint = e.hint();
    let failure = Failure::new(exit, e);
    match hint {
        Some(hint) => failure.with_hint(hint),
        None => failure,
    }
}

pub fn lint(args: cli::LintArgs) -> Result<Exit, Failure> {
    let image = &args.image;
    let options = lint::LintOptions {
        build_args: build::key_values(&image.build_args, "build arg").map_err(build_failure)?,
        target: image.target.clone(),
        allow: image.allow.clone(),
        health_probe: image.health_probe_configured,
    };
    let dockerfile = image.dockerfile();
    let report = lint::lint(&image.context, &dockerfile, &options).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })?;
    output::print(args.format, &report, lint::Report::render_text)?;
    tracing::info!(
        "{}: {} finding(s), {} waived with --allow",
        dockerfile.display(),
        report.findings.len(),
        report.waived.len()
    );
    Ok(if report.findings.is_empty() {
        Exit::Success
    } else {
        Exit::Usage
    })
}

pub async fn doctor(
    global: &cli::GlobalArgs,
    args: cli::DoctorArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let host = host::HostAccess::new(
        &args.reload.reload_image,
        args.reload.host_pid,
        args.reload.reload_timeout,
    )
    .map_err(|e| {
        let hint = e.hint();
        Failure::usage(anyhow::Error::new(e).context("--reload-image is not usable"))
            .with_hint(hint)
    })?;
    let reload_argv = host::split_command(&args.reload.reload_command).map_err(|e| {
        Failure::usage(e).with_hint("e.g. --reload-command 'systemctl reload caddy'")
    })?;
    let registry = match &args.registry.registry {
        Some(name) => Some(doctor::RegistryTarget {
            name: name.clone(),
            insecure: args.registry.insecure_registry,
            credentials: credentials::Credentials::resolve(
                name,
                args.registry.registry_user.as_deref(),
                args.registry.registry_password_env.as_deref(),
            )
            .map_err(Failure::usage)?,
        }),
        None => None,
    };
    let doctor = doctor::Doctor {
        docker_host: global.docker_host(),
        registry,
        host,
        reload_argv,
    };
    let report = doctor.run(cancel).await;
    if cancel.is_cancelled() {
        return Ok(Exit::Interrupted);
    }
    output::print(args.format, &report, doctor::Report::render_text)?;
    Ok(if report.ok {
        Exit::Success
    } else {
        Exit::Unavailable
    })
}
