//! The public check after the switch: the smoke test of the URL, then its watch window.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::SmokeArgs;
use crate::deploy::smoke::{self, Smoke, SmokeError};
use crate::exit::{Exit, Failure};
use crate::probe::Expect;
use crate::rollout::ContainerRef;
use crate::rollout::execute::AfterSwitch;

/// The smoke test from flags, expecting `version`.
pub fn smoke_from_args(args: &SmokeArgs, version: &str) -> Result<Smoke, Failure> {
    let usage = |what: String, hint: &str| Failure::usage(anyhow::anyhow!(what)).with_hint(hint);
    if args.urls.is_empty() {
        return Err(usage(
            "no public URL to check".into(),
            "pass --url https://app.example.com/health (or SLIPWAY_URL; for a deploy, [smoke] url in the spec)",
        ));
    }
    for url in &args.urls {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            usage(
                format!("--url `{url}` is not a URL: {e}"),
                "e.g. --url https://app.example.com/health",
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(usage(
                format!("--url `{url}` is not http(s)"),
                "e.g. --url https://app.example.com/health",
            ));
        }
    }
    let resolve = args
        .resolve
        .iter()
        .map(|r| smoke::parse_resolve(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            usage(
                format!("--resolve: {e}"),
                "--resolve app.example.com:443:127.0.0.1",
            )
        })?;
    let headers = args
        .headers
        .iter()
        .map(|h| smoke::parse_header(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(format!("--header: {e}"), "--header 'X-Smoke: 1'"))?;
    let header = args
        .expect_header
        .as_deref()
        .map(smoke::parse_header)
        .transpose()
        .map_err(|e| {
            usage(
                format!("--expect-header: {e}"),
                "--expect-header 'X-Version: abc123'",
            )
        })?;
    let (json, body_regex) = match &args.expect_body_regex {
        Some(re) => {
            crate::probe::regex_capture(re, "").map_err(|e| {
                usage(
                    format!("--expect-body-regex: {e}"),
                    "e.g. --expect-body-regex 'version: (\\S+)'",
                )
            })?;
            (None, Some((re.clone(), version.to_string())))
        }
        None if args.expect_json_field.is_empty() => (None, None),
        None => (
            Some((args.expect_json_field.clone(), version.to_string())),
            None,
        ),
    };
    Ok(Smoke {
        urls: args.urls.clone(),
        expect: Expect {
            status: args.expect_status,
            json,
            body_contains: None,
            body_regex,
            header,
        },
        headers,
        resolve,
        cacert: args.cacert.clone(),
        interval: args.smoke_interval,
        deadline: args.smoke_deadline,
        timeout: args.smoke_timeout,
    })
}

pub(crate) fn smoke_failure(e: SmokeError) -> Failure {
    match e {
        SmokeError::Interrupted => Failure::new(Exit::Interrupted, e),
        SmokeError::Mismatch { .. } => Failure::new(Exit::RolledBack, e).with_hint(
            "the URL serves something else: check DNS/--resolve, the Caddy site, and the version the app reports",
        ),
        e => Failure::usage(e),
    }
}

/// The post-switch check: the public URL serves the new version, and keeps doing so for the
/// watch window.
pub(crate) struct PublicCheck {
    pub(crate) smoke: Smoke,
    pub(crate) window: Duration,
    pub(crate) args: SmokeArgs,
}

impl AfterSwitch for PublicCheck {
    async fn check(&self, cancel: &CancellationToken) -> Result<String, String> {
        self.smoke.pass(cancel).await.map_err(|e| e.to_string())?;
        let rounds = self
            .smoke
            .hold(self.window, cancel)
            .await
            .map_err(|e| format!("inside the watch window: {e}"))?;
        Ok(format!(
            "{} serve(s) the new version; still so after {} ({rounds} more checks)",
            self.smoke.urls.join(", "),
            humantime::format_duration(self.window)
        ))
    }

    async fn check_restored(&self, previous: Option<&ContainerRef>) -> Result<String, String> {
        let Some(previous) = previous else {
            return Ok("there was no previous release to serve".into());
        };
        let smoke =
            smoke_from_args(&self.args, &previous.revision).map_err(|e| e.error.to_string())?;
        smoke
            .pass(&CancellationToken::new())
            .await
            .map(|_| format!("the public URL serves {} again", previous.revision))
            .map_err(|e| e.to_string())
    }
}
