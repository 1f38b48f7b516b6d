//! One thin adapter per subcommand: arguments in, the core called, the result out.

pub mod doctor;
pub mod image;
pub mod service;
pub mod smoke;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, Format};
use crate::exit::{Exit, Failure};
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
