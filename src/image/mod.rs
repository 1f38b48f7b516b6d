//! The image side: what is built (Dockerfile, lint, context), where it goes (registry,
//! credentials), and how it is named (references, revisions).

pub mod build;
pub mod credentials;
pub mod dockerfile;
pub mod lint;
pub mod reference;
pub mod registry;
pub mod revision;
