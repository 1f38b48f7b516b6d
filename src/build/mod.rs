//! Building the image and pushing it, then proving what the registry holds.

pub mod context;
pub mod dockerignore;
