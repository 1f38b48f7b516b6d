//! End-to-end tests: the built binary against the real engine, registry and Caddy of the sandbox
//! (`scripts/sandbox`). One test binary, modules per command.

mod action_install;
mod action_run;
mod build;
mod buildkit;
mod ci_files;
mod deploy;
mod doctor;
mod host_act;
mod host_tier;
mod host_workflows;
mod lint;
mod one_file;
mod podman;
mod proxies;
mod release;
mod release_publish;
mod rollout;
mod security;
mod service;
mod static_binary;
mod support;
mod swarm;
mod watch;
mod workers;
