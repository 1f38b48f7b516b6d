//! The deploy's report: the steps (the build's and the rollout's), the CI outputs, the job
//! summary and the `--report` file, on every path.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::ci::Ci;
use crate::cli::DeployArgs;
use crate::exit::{Exit, Failure};
use crate::output;
use crate::rollout::{self, Outcome, Report, StepName};

#[derive(Debug, Serialize)]
pub(crate) struct DeployReport<'a> {
    pub(crate) outcome: Outcome,
    pub(crate) message: &'a str,
    pub(crate) service: &'a str,
    pub(crate) image: &'a str,
    pub(crate) digest: String,
    pub(crate) previous_digest: String,
    pub(crate) revision: &'a str,
    pub(crate) url: String,
    pub(crate) started_unix_ms: u128,
    pub(crate) wall_ms: u64,
    pub(crate) steps: Vec<StepAt<'a>>,
    pub(crate) evidence: &'a rollout::execute::Evidence,
}

#[derive(Debug, Serialize)]
pub(crate) struct StepAt<'a> {
    pub(crate) name: &'a str,
    pub(crate) start_unix_ms: u128,
    pub(crate) duration_ms: u64,
    pub(crate) ok: bool,
    pub(crate) detail: &'a str,
}

pub(crate) fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// What a deploy that ends early still reports: the steps that ran (the build), and the public
/// URL once the settings are known.
#[derive(Default)]
pub(crate) struct Early {
    pub(crate) steps: Vec<PreStep>,
    pub(crate) url: Option<String>,
}

/// A deploy that ended before the rollout report existed still tells CI how it ended, and
/// which steps ran (a failed build among them).
pub(crate) fn record_early_failure(ci: &Ci, args: &DeployArgs, f: &Failure, early: &Early) {
    let before = &early.steps;
    let outcome = match f.exit {
        Exit::Usage => "usage-error",
        Exit::Unavailable => "unavailable",
        Exit::Interrupted => "interrupted",
        Exit::RolledBack => "rolled-back",
        Exit::RollbackFailed => "rollback-failed",
        Exit::Success => "deployed",
        Exit::HeldBack => "held-back",
    };
    let message = f.error.to_string();
    let _ = ci.outputs(&[
        ("outcome", outcome.to_string()),
        (
            "url",
            early
                .url
                .clone()
                .or_else(|| args.smoke.urls.first().cloned())
                .unwrap_or_default(),
        ),
    ]);
    let mut summary = format!(
        "### ❌ slipway deploy: {outcome}\n\n{message}\n\nNothing was changed on the host.\n\n"
    );
    if !before.is_empty() {
        summary.push_str(&steps_markdown(&step_rows(before, None)));
        summary.push('\n');
    }
    let _ = ci.summary(&summary);
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "outcome": outcome,
            "message": message,
            "steps": step_rows(before, None),
        });
        let _ = std::fs::write(path, format!("{json:#}\n"));
    }
}

/// A step before the rollout (the build), for the report.
pub(crate) struct PreStep {
    pub(crate) name: StepName,
    pub(crate) at: SystemTime,
    pub(crate) duration_ms: u64,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

impl PreStep {
    pub(crate) fn new(name: StepName, at: SystemTime, ok: bool, detail: String) -> PreStep {
        PreStep {
            name,
            at,
            duration_ms: at.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0),
            ok,
            detail,
        }
    }
}

/// Every step, those before the rollout first, as the report and the summary show them.
pub(crate) fn step_rows<'a>(before: &'a [PreStep], report: Option<&'a Report>) -> Vec<StepAt<'a>> {
    let pre = before.iter().map(|s| StepAt {
        name: s.name.as_str(),
        start_unix_ms: unix_ms(s.at),
        duration_ms: s.duration_ms,
        ok: s.ok,
        detail: &s.detail,
    });
    let rollout = report.into_iter().flat_map(|r| {
        r.steps.iter().map(|s| StepAt {
            name: s.name.as_str(),
            start_unix_ms: r.started_unix_ms + s.start_ms as u128,
            duration_ms: s.duration_ms,
            ok: s.ok,
            detail: &s.detail,
        })
    });
    pre.chain(rollout).collect()
}

/// Outputs, summary, report file, the human result; the exit code.
pub(crate) fn finish(
    ci: &Ci,
    args: &DeployArgs,
    service: &str,
    report: &Report,
    started: SystemTime,
    before: &[PreStep],
) -> Result<Exit, Failure> {
    let digest = report
        .image
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let previous_digest = report
        .previous
        .as_ref()
        .map(|p| p.digest.clone())
        .unwrap_or_default();
    let url = args.smoke.urls.first().cloned().unwrap_or_default();
    let outcome = report.outcome.as_str();
    let io = |e: std::io::Error| Failure::new(Exit::Unavailable, e);
    ci.outputs(&[
        ("image", report.image.clone()),
        ("digest", digest.clone()),
        ("previous-digest", previous_digest.clone()),
        ("url", url.clone()),
        ("outcome", outcome.to_string()),
    ])
    .map_err(io)?;
    let steps = step_rows(before, Some(report));
    ci.summary(&summary_markdown(service, report, outcome, &url, &steps))
        .map_err(io)?;
    let deploy_report = DeployReport {
        outcome: report.outcome,
        message: &report.message,
        service,
        image: &report.image,
        digest,
        previous_digest,
        revision: report.revision.as_str(),
        url,
        started_unix_ms: unix_ms(started),
        wall_ms: SystemTime::now()
            .duration_since(started)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        steps,
        evidence: &report.evidence,
    };
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&deploy_report).expect("plain data serializes");
        // The deploy has happened by now: a report that cannot be written does not change
        // how it ended.
        if let Err(e) = std::fs::write(path, json + "\n") {
            tracing::error!("could not write the report {}: {e}", path.display());
        }
    }
    output::print(args.service.format, &deploy_report, |_| {
        rollout::render_report(report)
    })?;
    let exit = report.outcome.exit();
    if exit != Exit::Success {
        eprintln!("error: {}", report.message);
    }
    Ok(exit)
}

pub(crate) fn summary_markdown(
    service: &str,
    r: &Report,
    outcome: &str,
    url: &str,
    steps: &[StepAt],
) -> String {
    let icon = match r.outcome {
        Outcome::Deployed | Outcome::Unchanged => "✅",
        Outcome::RolledBack => "↩️",
        _ => "❌",
    };
    let mut s = format!(
        "### {icon} slipway deploy `{service}`: {outcome}\n\n{}\n\n",
        r.message
    );
    s.push_str("| | |\n|---|---|\n");
    let _ = writeln!(s, "| image | `{}` |", r.image);
    let _ = writeln!(s, "| revision | `{}` |", r.revision);
    let _ = writeln!(
        s,
        "| previous | {} |",
        r.previous.as_ref().map_or("none".into(), |p| format!(
            "`{}` ({})",
            p.digest, p.revision
        ))
    );
    let _ = writeln!(s, "| url | {url} |");
    s.push('\n');
    s.push_str(&steps_markdown(steps));
    s.push('\n');
    s
}

/// The steps as a Markdown table.
pub(crate) fn steps_markdown(steps: &[StepAt]) -> String {
    let mut s = String::from("| step | ok | ms | detail |\n|---|---|---|---|\n");
    for st in steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            st.name,
            if st.ok { "✓" } else { "✗" },
            st.duration_ms,
            st.detail.replace('|', "\\|").replace('\n', " ")
        );
    }
    s
}
