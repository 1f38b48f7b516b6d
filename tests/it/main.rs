//! End-to-end tests: the built binary against the real engine, registry and Caddy of the sandbox
//! (`scripts/sandbox`). One test binary, modules per command.

mod build;
mod doctor;
mod lint;
mod static_binary;
mod support;
