//! Image references, and the rule that what slipway runs is pinned by a full digest.

use std::fmt;

use oci_spec::distribution::Reference;
use thiserror::Error;

/// An image reference pinned by a full `sha256` digest: `name@sha256:<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// The reference exactly as given (what the engine is asked for).
    text: String,
    digest: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("`{given}` is not a valid image reference ({reason})")]
    Malformed { given: String, reason: String },
    #[error("`{given}` is not pinned by digest")]
    NotPinned { given: String },
    #[error("`{given}` has a digest that is not a full sha256 (`sha256:` and 64 lowercase hex)")]
    BadDigest { given: String },
}

impl ReferenceError {
    pub fn hint(&self) -> &'static str {
        match self {
            ReferenceError::Malformed { .. } => {
                "write it as REGISTRY/REPOSITORY@sha256:<64 hex>, e.g. docker.io/library/alpine@sha256:..."
            }
            ReferenceError::NotPinned { .. } | ReferenceError::BadDigest { .. } => {
                "pin it: append @sha256:<digest> (`docker buildx imagetools inspect NAME:TAG` or `skopeo inspect docker://NAME:TAG` prints it)"
            }
        }
    }
}

impl PinnedImage {
    pub fn parse(given: &str) -> Result<PinnedImage, ReferenceError> {
        let given = given.trim();
        let parsed = Reference::try_from(given).map_err(|e| ReferenceError::Malformed {
            given: given.to_string(),
            reason: e.to_string(),
        })?;
        let Some(digest) = parsed.digest() else {
            return Err(ReferenceError::NotPinned {
                given: given.to_string(),
            });
        };
        if !is_sha256_digest(digest) {
            return Err(ReferenceError::BadDigest {
                given: given.to_string(),
            });
        }
        Ok(PinnedImage {
            text: given.to_string(),
            digest: digest.to_string(),
        })
    }

    /// The `sha256:...` digest.
    #[allow(
        dead_code,
        reason = "the rollout compares it with the running container's image"
    )]
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for PinnedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `sha256:` followed by exactly 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b";

    #[test]
    fn accepts_full_digests_with_or_without_tag() {
        for given in [
            format!("127.0.0.1:5000/slipway/busybox@{D}"),
            format!("alpine@{D}"),
            format!("docker.io/library/alpine:3.20@{D}"),
        ] {
            let pinned = PinnedImage::parse(&given).unwrap();
            assert_eq!(pinned.digest(), D);
            assert_eq!(pinned.as_str(), given);
        }
    }

    #[test]
    fn refuses_what_is_not_pinned_by_a_full_digest() {
        let cases = [
            ("alpine", "NotPinned"),
            ("alpine:3.20", "NotPinned"),
            ("alpine:latest", "NotPinned"),
            ("alpine@sha256:932bf9c6", "Malformed"),
            (
                "alpine@sha256:932BF9C60AAFAEBEA43BBC56087D75C83F423AE074E2E4C086B7E20046D58D9B",
                "BadDigest",
            ),
            ("alpine@md5:abc", "Malformed"),
            ("", "Malformed"),
            ("UPPER/case@sha256:0", "Malformed"),
            ("has space@sha256:0", "Malformed"),
        ];
        for (given, kind) in cases {
            let err = PinnedImage::parse(given).unwrap_err();
            let got = format!("{err:?}");
            assert!(
                got.starts_with(kind),
                "{given:?}: expected {kind}, got {got}"
            );
            assert!(err.to_string().contains(given.trim()), "{err}");
        }
    }

    #[test]
    fn sha512_is_refused_as_not_sha256() {
        let given = format!("alpine@sha512:{}", "a".repeat(128));
        assert!(matches!(
            PinnedImage::parse(&given),
            Err(ReferenceError::BadDigest { .. })
        ));
    }
}
