//! A rollout as data: facts gathered read-only, a pure `plan(spec, target, facts)`, and one
//! executor (`execute.rs`) that carries the plan out and undoes it on failure.

mod backend;
mod containers;
pub(crate) mod early;
mod facts;
mod gate;
pub mod inputs;
pub mod locked;
mod model;
mod plan;
pub mod read;
pub mod render;
mod report;
mod retire;
mod undo;
pub mod worker_gate;
pub mod workers;

pub mod execute;
pub use backend::{Backend, Live};
pub use containers::{container_ref, label};
pub use execute::{Outcome, Report, StepName, execute};
pub use facts::{Facts, SnippetState, gather_facts};
pub use gate::{Gate, HttpGate};
pub use inputs::{Choice, Prepared, connect, prepare, reachable, revision_arg};
pub use locked::{execute_locked, plan_only, plan_target};
pub use model::*;
pub use plan::*;
pub use render::{render_plan, render_plan_as, render_report};

pub const LABEL_SERVICE: &str = "dev.slipway.service";
pub const LABEL_SLOT: &str = "dev.slipway.slot";
pub const LABEL_PORT: &str = "dev.slipway.port";
pub const LABEL_DIGEST: &str = "dev.slipway.digest";
pub const LABEL_IMAGE: &str = "dev.slipway.image";
pub const LABEL_REVISION: &str = "dev.slipway.revision";
pub const LABEL_RELEASED: &str = "dev.slipway.released";
pub const LABEL_RUN: &str = "dev.slipway.run-url";
/// On a container `slipway watch` started in place of a stuck one: when this release was replaced
/// on this host (unix ms, comma-separated, oldest first), the new replacement included.
pub const LABEL_REPLACEMENTS: &str = "dev.slipway.replacements";
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";

#[cfg(test)]
mod tests;
