//! Building the image and pushing it, then proving what the registry holds.

pub mod dockerignore;
