//! slipway: the deploy step for a CI job. The library behind the one binary: `commands` maps
//! each subcommand to the core, everything else is the core.

pub mod ci;
pub mod cli;
pub mod commands;
pub mod deploy;
pub mod doctor;
pub mod engine;
pub mod exit;
pub mod host;
pub mod image;
pub mod output;
pub mod probe;
pub mod rollout;
pub mod spec;
pub mod swarm;
pub mod watch;
