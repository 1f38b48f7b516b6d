//! The revision a release carries: a short printable token, checked wherever it enters (flag,
//! environment, an image's or a container's label), because it is written into container labels,
//! the proxy config's comment line, reports and CI outputs.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

/// Longest revision accepted: a SHA-256 git object id (64) fits with room for a prefix.
pub const MAX_LEN: usize = 128;

/// A validated revision: 1-128 characters of `A-Z a-z 0-9 . _ - + :`, starting with a letter
/// or digit (a git SHA, `v1.2.3`, or `sha256:…` when nothing better is known).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Revision(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("the revision from {source_name} is not a short printable token: {shown}")]
pub struct RevisionError {
    /// Where the value came from, e.g. `--revision (SLIPWAY_REVISION)`.
    pub source_name: String,
    /// The refused value, escaped and cut short so it cannot itself mislead a log reader.
    pub shown: String,
}

impl RevisionError {
    pub fn hint(&self) -> String {
        format!(
            "a revision is 1-{MAX_LEN} characters of A-Z a-z 0-9 . _ - + : starting with a letter or digit (e.g. the commit SHA); fix {}, or pass --revision",
            self.source_name
        )
    }
}

impl Revision {
    /// Checks `text` from `source_name` (named in the error).
    pub fn parse(text: &str, source_name: &str) -> Result<Revision, RevisionError> {
        if is_token(text) {
            return Ok(Revision(text.to_string()));
        }
        let shown: String = format!("{text:?}").chars().take(80).collect();
        Err(RevisionError {
            source_name: source_name.to_string(),
            shown,
        })
    }

    /// An image digest (`sha256:<hex>`) as the revision of last resort.
    pub fn of_digest(digest: &str) -> Revision {
        Revision::parse(digest, "the image digest")
            .unwrap_or_else(|_| Revision("unknown".to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The one predicate: is `text` a short token of safe characters?
pub fn is_token(text: &str) -> bool {
    let mut chars = text.chars();
    (1..=MAX_LEN).contains(&text.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | ':'))
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Revision {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Revision {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_versions_and_digests_are_tokens() {
        for ok in [
            "a1b2c3d",
            "0123456789abcdef0123456789abcdef01234567",
            "v1.2.3",
            "v1",
            "1.0.0+build.5",
            "release_2026-12-07",
            "sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b",
        ] {
            assert_eq!(Revision::parse(ok, "t").unwrap().as_str(), ok);
        }
    }

    #[test]
    fn hostile_values_are_refused_and_named_by_source() {
        for bad in [
            "",
            "a000000\nhandle_path /leak/* {root * /; file_server}",
            "v1 }",
            "v1{",
            "v1\r",
            "-v1",
            ".hidden",
            "a b",
            "a\"b",
            "a#b",
            "a/b",
            "a\u{0}b",
            "ünïcode",
            "v1\u{202e}",
        ] {
            let e = Revision::parse(bad, "the image's org.opencontainers.image.revision label")
                .unwrap_err();
            assert!(
                e.to_string().starts_with(
                    "the revision from the image's org.opencontainers.image.revision label"
                ),
                "{e}"
            );
            assert!(!e.to_string().contains('\n'), "escaped: {e}");
        }
        assert!(Revision::parse(&"a".repeat(MAX_LEN), "t").is_ok());
        assert!(Revision::parse(&"a".repeat(MAX_LEN + 1), "t").is_err());
    }
}
