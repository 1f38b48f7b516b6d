//! slipway: the deploy step for a CI job. The library behind the one binary: `commands` maps
//! each subcommand to the core, everything else is the core.

pub mod build;
pub mod caddy;
pub mod ci;
pub mod cli;
pub mod commands;
pub mod credentials;
pub mod deploy;
pub mod dockerfile;
pub mod doctor;
pub mod engine;
pub mod exit;
pub mod host;
pub mod lint;
pub mod lock;
pub mod output;
pub mod probe;
pub mod reference;
pub mod registry;
pub mod revision;
pub mod rollout;
pub mod service;
pub mod smoke;
pub mod spec;
pub mod watch;
