//! `slipway smoke`: the public check alone.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::SmokeCmd;
use crate::deploy::public::{smoke_failure, smoke_from_args};
use crate::exit::{Exit, Failure};
use crate::output;

/// `slipway smoke`: exit 0 when every URL serves the version, 1 when not.
pub async fn smoke_command(cmd: &SmokeCmd, cancel: &CancellationToken) -> Result<Exit, Failure> {
    let version = cmd
        .smoke
        .expect_version
        .clone()
        .or_else(|| std::env::var("GITHUB_SHA").ok().filter(|v| !v.is_empty()))
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!("no version to expect"))
                .with_hint("pass --expect-version (it defaults to GITHUB_SHA in CI)")
        })?;
    let smoke = smoke_from_args(&cmd.smoke, &version)?;
    let seen = smoke.pass(cancel).await.map_err(smoke_failure)?;
    #[derive(Serialize)]
    struct Passed<'a> {
        url: &'a str,
        status: Option<u16>,
        version: &'a str,
    }
    let passed: Vec<Passed> = smoke
        .urls
        .iter()
        .zip(&seen)
        .map(|(url, s)| Passed {
            url,
            status: s.status,
            version: &version,
        })
        .collect();
    output::print(cmd.format, &passed, |passed| {
        passed
            .iter()
            .map(|p| format!("ok  {} serves {}\n", p.url, p.version))
            .collect()
    })?;
    Ok(Exit::Success)
}
