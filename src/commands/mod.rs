//! One thin adapter per subcommand: arguments in, the core called, the result out.

pub mod doctor;
pub mod image;
pub mod service;
pub mod smoke;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, Format, ReloadArgs};
use crate::exit::{Exit, Failure};
use crate::host::proxy::{Driver, ProxyKind, ProxyTarget};
use crate::rollout::inputs::{load_spec, reload_argv};
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
    let spec = load_spec(path, &[])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn reload_args(extra: &[&str]) -> ReloadArgs {
        let argv = ["slipway", "reload"].iter().chain(extra).copied();
        let Command::Reload(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not `reload`");
        };
        args
    }

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[test]
    fn without_a_spec_it_is_caddy_with_the_default_reload() {
        let target = proxy_target(&reload_args(&[])).unwrap();
        let caddy = Driver::Reload {
            kind: ProxyKind::Caddy,
            test: None,
            reload: argv("systemctl reload caddy"),
        };
        assert_eq!(target.driver, Some(caddy));
        assert_eq!(target.dir, None);
    }

    #[test]
    fn a_spec_gives_its_proxy_and_the_flag_overrides_only_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("slipway.toml");
        let upstream = dir.path().join("web.upstream");
        std::fs::write(
            &spec,
            format!(
                "name = \"web\"\nslots = [18501, 18502]\ncontainer_port = 8080\n[health]\ndocker = true\n[nginx]\nupstream_file = \"{}\"\n",
                upstream.display()
            ),
        )
        .unwrap();
        let config = spec.to_str().unwrap();
        let flags = ["--config", config, "--reload-command", "nginx -s reload"];
        let target = proxy_target(&reload_args(&flags)).unwrap();
        let nginx = Driver::Reload {
            kind: ProxyKind::Nginx,
            test: Some(argv("nginx -t")),
            reload: argv("nginx -s reload"),
        };
        assert_eq!(target.driver, Some(nginx));
        let key = "nginx.upstream_file";
        assert_eq!(target.dir, Some((dir.path().display().to_string(), key)));
    }

    #[test]
    fn a_spec_that_does_not_load_is_a_usage_error_naming_it() {
        let Err(failure) = proxy_target(&reload_args(&["--config", "/nonexistent/slipway.toml"]))
        else {
            panic!("a missing spec was accepted");
        };
        assert_eq!(failure.exit, Exit::Usage);
        assert!(
            format!("{:#}", failure.error).contains("/nonexistent/slipway.toml"),
            "{:#}",
            failure.error
        );
    }
}
