//! What a CI runner (Gitea Actions, GitHub Actions, act) reads from a step: `::group::` folds and
//! `::add-mask::` on stderr (stdout stays data), step outputs in GITHUB_OUTPUT, and a Markdown
//! summary in GITHUB_STEP_SUMMARY.

use std::io::Write as _;
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct Ci {
    pub actions: bool,
    pub output: Option<PathBuf>,
    pub summary: Option<PathBuf>,
}

impl Ci {
    pub fn from_env() -> Ci {
        let path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Ci {
            actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            output: path("GITHUB_OUTPUT"),
            summary: path("GITHUB_STEP_SUMMARY"),
        }
    }

    pub fn group(&self, title: &str) {
        if self.actions {
            eprintln!("::group::{title}");
        } else {
            tracing::info!("== {title}");
        }
    }

    pub fn end_group(&self) {
        if self.actions {
            eprintln!("::endgroup::");
        }
    }

    /// Tells the runner to hide `value` from every later log line.
    pub fn mask(&self, value: &str) {
        if self.actions && !value.trim().is_empty() {
            for line in value.lines().filter(|l| !l.trim().is_empty()) {
                eprintln!("::add-mask::{line}");
            }
        }
    }

    /// Appends `key=value` lines (multi-line values in the heredoc form).
    pub fn outputs(&self, pairs: &[(&str, String)]) -> std::io::Result<()> {
        let Some(path) = &self.output else {
            return Ok(());
        };
        let mut text = String::new();
        for (k, v) in pairs {
            if v.contains('\n') {
                let delim = format!("slipway_{}", crate::engine::unique_suffix());
                text.push_str(&format!("{k}<<{delim}\n{v}\n{delim}\n"));
            } else {
                text.push_str(&format!("{k}={v}\n"));
            }
        }
        append(path, &text)
    }

    pub fn summary(&self, markdown: &str) -> std::io::Result<()> {
        match &self.summary {
            Some(path) => append(path, markdown),
            None => Ok(()),
        }
    }
}

fn append(path: &PathBuf, text: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_use_the_heredoc_form_for_multiline_values() {
        let dir = tempfile::tempdir().unwrap();
        let ci = Ci {
            actions: true,
            output: Some(dir.path().join("out")),
            summary: None,
        };
        ci.outputs(&[("digest", "sha256:ab".into()), ("note", "a\nb".into())])
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert!(
            text.starts_with("digest=sha256:ab\nnote<<slipway_"),
            "{text}"
        );
        assert!(text.contains("\na\nb\nslipway_"), "{text}");
    }
}
