//! slipway: the deploy step for a CI job.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use slipway::cli::{Cli, LogFormat};
use slipway::commands;
use slipway::exit::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse_with_sources();
    init_logging(cli.global.log_format, cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Unavailable.code());
        }
    };
    let exit = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(cancel_on_signal(cancel.clone()));
        match commands::run(cli, &cancel).await {
            Ok(exit) => exit,
            Err(failure) => {
                eprint!("{}", failure.render());
                failure.exit
            }
        }
    });
    ExitCode::from(exit.code())
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::warn!("SIGTERM: cleaning up, then stopping"),
        _ = int.recv() => tracing::warn!("SIGINT: cleaning up, then stopping"),
    }
    cancel.cancel();
}

fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "slipway=info",
        1 => "slipway=debug",
        _ => "slipway=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    match format {
        LogFormat::Text => builder.without_time().init(),
        LogFormat::Json => builder.json().init(),
    }
}
