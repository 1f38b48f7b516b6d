//! The Swarm backend, beside the single-host rollout (ADR docs/adr/0011-swarm-backend.md): a
//! spec with `[swarm]` runs as one Docker Swarm service, updated start-first by digest; Swarm
//! gates each task on its health check and rolls back by itself; slipway judges the outcome by
//! `UpdateStatus.State` and every task's image, then smoke-tests the public URL.

mod lock;
mod plan;
mod run;

pub use lock::{SwarmLock, lock_name};
pub use plan::{SwarmAction, SwarmPlan, plan, render};
pub use run::{deploy, plan_for, rollback, rollback_and_wait};
