//! `slipway doctor`.

use crate::rollout::inputs::host_access;
use tokio_util::sync::CancellationToken;

use crate::cli::{self};
use crate::exit::{Exit, Failure};
use crate::image::credentials;
use crate::{doctor, output};

pub async fn doctor(
    global: &cli::GlobalArgs,
    args: cli::DoctorArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let reload = &args.reload;
    let host = host_access(&reload.sibling)?;
    let proxy = super::proxy_target(reload)?;
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
        proxy,
        swarm_network: args.swarm_network.clone(),
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
