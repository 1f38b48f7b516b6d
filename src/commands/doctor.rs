//! `slipway doctor`.

use std::path::Path;

use crate::host::proxy::{Driver, ProxyKind};
use crate::rollout::inputs::{host_access, reload_argv};
use crate::spec::ServiceSpec;
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
    let proxy = proxy_target(args.config.as_deref(), reload)?;
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

/// The proxy the host checks look at: the spec's with `--config` (`--reload-command` still
/// overrides its reload), else Caddy's with the given or default reload command.
fn proxy_target(
    config: Option<&Path>,
    reload: &cli::ReloadArgs,
) -> Result<doctor::ProxyTarget, Failure> {
    let caddy_default = || -> Result<doctor::ProxyTarget, Failure> {
        Ok(doctor::ProxyTarget {
            kind: Some(ProxyKind::Caddy),
            reload: Some(reload_argv(reload.command())?),
            test: None,
            dir: None,
        })
    };
    let Some(path) = config else {
        return caddy_default();
    };
    let spec = ServiceSpec::load(path, &[]).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })?;
    let Some(proxy) = spec.proxy() else {
        return Ok(doctor::ProxyTarget {
            kind: None,
            reload: None,
            test: None,
            dir: None,
        });
    };
    let driver = proxy
        .driver(&spec.name, reload.reload_command.as_deref())
        .map_err(|e| Failure::usage(e).with_hint("check the spec's reload and test commands"))?;
    let (reload, test) = match driver {
        Driver::Reload { reload, test, .. } => (Some(reload), test),
        Driver::Confirm { .. } => (None, None),
    };
    Ok(doctor::ProxyTarget {
        kind: Some(proxy.kind()),
        reload,
        test,
        dir: Some((proxy.dir().display().to_string(), proxy.dir_key())),
    })
}
