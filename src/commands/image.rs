//! `slipway build` and `slipway lint`.

use tokio_util::sync::CancellationToken;

use crate::cli::{self};
use crate::exit::{Exit, Failure};
use crate::image::build::{self};
use crate::image::lint;
use crate::output;

pub async fn build(
    global: &cli::GlobalArgs,
    args: cli::BuildArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let (prepared, registry) =
        crate::image::build::from_args::from_args(&args.options, None).await?;
    let engine = crate::rollout::connect(global)?;
    let pushed = prepared
        .build_and_push(&engine, &registry, cancel)
        .await
        .map_err(crate::image::build::from_args::failure)?;
    output::print(args.format, &pushed, |p| format!("{}\n", p.image))?;
    Ok(Exit::Success)
}

pub fn lint(args: cli::LintArgs) -> Result<Exit, Failure> {
    let image = &args.image;
    let options = lint::LintOptions {
        build_args: build::key_values(&image.build_args, "build arg")
            .map_err(crate::image::build::from_args::failure)?,
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
