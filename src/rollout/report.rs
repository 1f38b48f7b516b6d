//! What a rollout reports: its outcome, every step with its timing, and the evidence of a failure.

use serde::Serialize;

use crate::exit::Exit;

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Deployed,
    /// The digest already served; nothing was changed.
    Unchanged,
    /// Something failed; the previous state was restored.
    RolledBack,
    /// The input cannot work (e.g. no health check at all); nothing was changed.
    #[serde(rename = "usage-error")]
    Refused,
    /// The engine or registry failed before anything changed.
    Unavailable,
    /// Restoring the previous state failed too: a human must act.
    RollbackFailed,
    Interrupted,
}

impl Outcome {
    /// The same kebab-case words as its JSON (`deployed`, `rolled-back`, ...), for summaries,
    /// step outputs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Unchanged => "unchanged",
            Outcome::RolledBack => "rolled-back",
            Outcome::Refused => "usage-error",
            Outcome::Unavailable => "unavailable",
            Outcome::RollbackFailed => "rollback-failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    pub fn exit(self) -> Exit {
        match self {
            Outcome::Deployed | Outcome::Unchanged => Exit::Success,
            Outcome::RolledBack => Exit::RolledBack,
            Outcome::Refused => Exit::Usage,
            Outcome::Unavailable => Exit::Unavailable,
            Outcome::RollbackFailed => Exit::RollbackFailed,
            Outcome::Interrupted => Exit::Interrupted,
        }
    }
}

/// Every step a report can name: typed, so nothing matches on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    Build,
    Plan,
    Image,
    Reconcile,
    Release,
    Create,
    Start,
    Verify,
    Health,
    Workers,
    Switch,
    Smoke,
    Drain,
    Retire,
    Prune,
    Rollback,
    VerifyRestored,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Build => "build",
            StepName::Plan => "plan",
            StepName::Image => "image",
            StepName::Reconcile => "reconcile",
            StepName::Release => "release",
            StepName::Create => "create",
            StepName::Start => "start",
            StepName::Verify => "verify",
            StepName::Health => "health",
            StepName::Workers => "workers",
            StepName::Switch => "switch",
            StepName::Smoke => "smoke",
            StepName::Drain => "drain",
            StepName::Retire => "retire",
            StepName::Prune => "prune",
            StepName::Rollback => "rollback",
            StepName::VerifyRestored => "verify-restored",
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: StepName,
    /// Milliseconds since the rollout began.
    pub start_ms: u64,
    pub duration_ms: u64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    pub health_log: Vec<String>,
    pub log_tail: String,
    pub reload_output: String,
    /// The release command's output (tail), secret values masked.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub release_output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub service: String,
    pub outcome: Outcome,
    /// One sentence: what happened and what serves now.
    pub message: String,
    pub image: String,
    pub revision: crate::image::revision::Revision,
    pub previous: Option<super::ContainerRef>,
    pub container: Option<String>,
    pub port: Option<u16>,
    pub steps: Vec<Step>,
    pub evidence: Evidence,
    /// From the start call to the health gate passing.
    pub start_to_healthy_ms: Option<u64>,
    /// When the executor began (steps' `start_ms` count from here).
    pub started_unix_ms: u128,
    pub wall_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_text_is_the_json_name() {
        for outcome in [
            Outcome::Deployed,
            Outcome::Unchanged,
            Outcome::RolledBack,
            Outcome::Refused,
            Outcome::Unavailable,
            Outcome::RollbackFailed,
            Outcome::Interrupted,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::Value::from(outcome.as_str()),
                "{outcome:?}"
            );
        }
    }
}
