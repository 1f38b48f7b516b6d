//! One thin adapter per subcommand: arguments in, the core called, the result out.

pub mod doctor;
pub mod image;
pub mod service;
pub mod smoke;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, Format, ReloadArgs};
use crate::exit::{Exit, Failure};
use crate::host::proxy::{Driver, ProxyKind, ProxyTarget};
use crate::rollout::inputs::reload_argv;
use crate::spec::ServiceSpec;
use crate::{deploy, output, rollout, watch};

/// Runs one parsed command line.
pub async fn run(cli: Cli, cancel: &CancellationToken) -> Result<Exit, Failure> {
    match cli.command {
        Command::Doctor(args) => doctor::doctor(&cli.global, args, cancel).await,
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
        Command::Smoke(args) => smoke::smoke_command(&args, cancel).await,
        Command::Deploy(args) => deploy::deploy(&cli.global, &args, cancel).await,
        Command::Plan(mut args) => {
            args.service.dry_run = true;
            deploy::deploy(&cli.global, &args, cancel).await
        }
        Command::Build(args) => image::build(&cli.global, args, cancel).await,
        Command::Lint(args) => image::lint(args),
        Command::Watch(args) => watch::command(&cli.global, &args, cancel).await,
        Command::Schema => {
            let schema = crate::spec::json_schema();
            output::print(Format::Json, &schema, |_| String::new())?;
            Ok(Exit::Success)
        }
    }
}

/// The proxy `reload` and `doctor` reach: the spec's with `--config` (`--reload-command` still
/// overrides its reload), else Caddy's with the given or default reload command.
fn proxy_target(args: &ReloadArgs) -> Result<ProxyTarget, Failure> {
    let Some(path) = &args.config else {
        let driver = Driver::Reload {
            kind: ProxyKind::Caddy,
            test: None,
            reload: reload_argv(args.command())?,
        };
        return Ok(ProxyTarget {
            driver: Some(driver),
            dir: None,
        });
    };
    let spec = ServiceSpec::load(path, &[]).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })?;
    let Some(proxy) = spec.proxy() else {
        return Ok(ProxyTarget {
            driver: None,
            dir: None,
        });
    };
    let driver = proxy
        .driver(&spec.name, args.reload_command.as_deref())
        .map_err(|e| Failure::usage(e).with_hint("check the spec's reload and test commands"))?;
    Ok(ProxyTarget {
        driver: Some(driver),
        dir: Some((proxy.dir().display().to_string(), proxy.dir_key())),
    })
}
