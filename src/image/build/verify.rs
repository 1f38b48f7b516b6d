//! The proof that the registry holds exactly what was built: pure checks over what the push
//! reported and what the registry served, each failing with both values side by side.

use oci_spec::image::{ImageConfiguration, ImageManifest};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::image::registry::Manifest;

pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(
        "{what} does not match: {expected_from} says {expected}, but {actual_from} says {actual}"
    )]
    Mismatch {
        what: String,
        expected_from: String,
        expected: String,
        actual_from: String,
        actual: String,
    },
    #[error("{url} is not a single image's manifest ({reason})")]
    NotAnImageManifest { url: String, reason: String },
    #[error("the image config the registry served is not valid ({reason})")]
    BadConfig { reason: String },
}

impl VerifyError {
    pub fn hint(&self) -> &'static str {
        match self {
            VerifyError::Mismatch { .. } => {
                "the registry does not hold what was just built: another push to the same tag may have raced this one, or a proxy rewrote it; do not deploy this tag, build again"
            }
            VerifyError::NotAnImageManifest { .. } | VerifyError::BadConfig { .. } => {
                "slipway pushes single-platform images; is something else pushing to this tag?"
            }
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn mismatch(
    what: &str,
    expected_from: &str,
    expected: &str,
    actual_from: &str,
    actual: &str,
) -> VerifyError {
    VerifyError::Mismatch {
        what: what.into(),
        expected_from: expected_from.into(),
        expected: expected.into(),
        actual_from: actual_from.into(),
        actual: actual.into(),
    }
}

/// The manifest's bytes hash to the digest the push reported, and to the registry's
/// `Docker-Content-Digest`; it parses as one image's manifest.
pub fn check_manifest(pushed: &str, manifest: &Manifest) -> Result<ImageManifest, VerifyError> {
    let computed = sha256_digest(&manifest.bytes);
    let served = format!("the sha256 of the manifest served at {}", manifest.url);
    if computed != pushed {
        return Err(mismatch(
            "the manifest digest",
            "the push",
            pushed,
            &served,
            &computed,
        ));
    }
    match &manifest.digest_header {
        Some(header) if *header != computed => {
            return Err(mismatch(
                "the manifest digest",
                &served,
                &computed,
                "the registry's Docker-Content-Digest header",
                header,
            ));
        }
        Some(_) => {}
        None => {
            tracing::warn!(url = %manifest.url, "the registry sent no Docker-Content-Digest header")
        }
    }
    let not_image = |reason: String| VerifyError::NotAnImageManifest {
        url: manifest.url.clone(),
        reason,
    };
    if let Some(kind) = &manifest.content_type
        && (kind.contains("index") || kind.contains("manifest.list"))
    {
        return Err(not_image(format!("it is an index: {kind}")));
    }
    ImageManifest::from_reader(manifest.bytes.as_slice()).map_err(|e| not_image(e.to_string()))
}

/// The config blob is the one the manifest names, is the image the engine built (its ID is the
/// config's digest), and carries the expected revision label.
pub fn check_config(
    manifest: &ImageManifest,
    config: &[u8],
    image_id: &str,
    revision: &str,
) -> Result<(), VerifyError> {
    let named = manifest.config().digest().to_string();
    let computed = sha256_digest(config);
    if computed != named {
        return Err(mismatch(
            "the image config",
            "the manifest",
            &named,
            "the sha256 of the config blob served",
            &computed,
        ));
    }
    if computed != image_id {
        return Err(mismatch(
            "the image",
            "the engine's build",
            image_id,
            "the registry's manifest",
            &computed,
        ));
    }
    let parsed = ImageConfiguration::from_reader(config).map_err(|e| VerifyError::BadConfig {
        reason: e.to_string(),
    })?;
    let label = parsed
        .labels_of_config()
        .and_then(|labels| labels.get(LABEL_REVISION))
        .map_or("(no such label)", String::as_str);
    if label != revision {
        return Err(mismatch(
            &format!("the label {LABEL_REVISION}"),
            "the build",
            revision,
            "the image config in the registry",
            label,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(revision: &str) -> Vec<u8> {
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"{LABEL_REVISION}":"{revision}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        )
        .into_bytes()
    }

    /// A Docker v2 schema 2 manifest, as dockerd pushes it, naming `config`.
    fn manifest(config: &[u8], header: Option<&str>) -> (Manifest, String) {
        let text = format!(
            "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\",\n   \"config\": {{\n      \"mediaType\": \"application/vnd.docker.container.image.v1+json\",\n      \"size\": {},\n      \"digest\": \"{}\"\n   }},\n   \"layers\": []\n}}",
            config.len(),
            sha256_digest(config)
        );
        let digest = sha256_digest(text.as_bytes());
        (
            Manifest {
                url: "http://127.0.0.1:5000/v2/app/manifests/abc1234".into(),
                bytes: text.into_bytes(),
                content_type: Some("application/vnd.docker.distribution.manifest.v2+json".into()),
                digest_header: Some(header.map_or(digest.clone(), String::from)),
            },
            digest,
        )
    }

    #[test]
    fn what_was_built_and_pushed_passes() {
        let cfg = config("abc1234");
        let (m, digest) = manifest(&cfg, None);
        let parsed = check_manifest(&digest, &m).unwrap();
        check_config(&parsed, &cfg, &sha256_digest(&cfg), "abc1234").unwrap();
    }

    #[test]
    fn a_different_push_digest_shows_both() {
        let cfg = config("abc1234");
        let (m, digest) = manifest(&cfg, None);
        let other = sha256_digest(b"other");
        let err = check_manifest(&other, &m).unwrap_err().to_string();
        assert!(err.contains(&other) && err.contains(&digest), "{err}");
        assert!(
            err.starts_with("the manifest digest does not match: the push says"),
            "{err}"
        );
    }

    #[test]
    fn the_bytes_are_hashed_as_served_not_reserialised() {
        let cfg = config("abc1234");
        let (mut m, digest) = manifest(&cfg, None);
        // Same JSON, other whitespace: a different manifest as far as digests go.
        m.bytes =
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&m.bytes).unwrap())
                .unwrap();
        m.digest_header = None;
        assert!(check_manifest(&digest, &m).is_err());
    }

    #[test]
    fn a_disagreeing_content_digest_header_fails() {
        let cfg = config("abc1234");
        let wrong = sha256_digest(b"x");
        let (m, digest) = manifest(&cfg, Some(&wrong));
        let err = check_manifest(&digest, &m).unwrap_err().to_string();
        assert!(
            err.contains("Docker-Content-Digest") && err.contains(&wrong),
            "{err}"
        );
    }

    #[test]
    fn an_index_is_not_an_image() {
        let cfg = config("abc1234");
        let (mut m, digest) = manifest(&cfg, None);
        m.content_type = Some("application/vnd.oci.image.index.v1+json".into());
        assert!(matches!(
            check_manifest(&digest, &m),
            Err(VerifyError::NotAnImageManifest { .. })
        ));
    }

    #[test]
    fn config_checks_show_both_values() {
        let cfg = config("abc1234");
        let (m, digest) = manifest(&cfg, None);
        let parsed = check_manifest(&digest, &m).unwrap();
        let id = sha256_digest(&cfg);

        let err = check_config(&parsed, &config("abc1234 "), &id, "abc1234").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the image config does not match"),
            "{err}"
        );

        let other_id = sha256_digest(b"another build");
        let err = check_config(&parsed, &cfg, &other_id, "abc1234")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&other_id) && err.contains(&id), "{err}");

        let err = check_config(&parsed, &cfg, &id, "fff0000")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the label org.opencontainers.image.revision does not match: the build says fff0000, but the image config in the registry says abc1234"
        );
    }
}
