//! `slipway doctor`.

use tokio_util::sync::CancellationToken;

use crate::cli::{self};
use crate::exit::{Exit, Failure};
use crate::image::credentials;
use crate::{doctor, host, output};

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
