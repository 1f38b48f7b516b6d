//! Exit codes, and the one error type that reaches `main`.

use std::fmt::Write as _;

/// What a run of slipway ended in. Every command uses the same codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done: everything asked for happened (for `doctor`: every check passed).
    Success = 0,
    /// Failed and rolled back: the previous release is serving.
    RolledBack = 1,
    /// Usage or configuration error: nothing was changed.
    Usage = 2,
    /// The rollback itself failed: a human must act.
    RollbackFailed = 3,
    /// The engine, a registry, the lock or the host is not usable: nothing was changed.
    Unavailable = 4,
    /// `watch`: a service is stuck and crash-loop protection (backoff or cap) held its
    /// replacement back: a human must look.
    HeldBack = 5,
    /// Interrupted by SIGINT or SIGTERM after cleaning up.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Which outcome a run over several services reports, most severe first.
    pub const SEVERITY: [Exit; 7] = [
        Exit::Interrupted,
        Exit::RollbackFailed,
        Exit::HeldBack,
        Exit::RolledBack,
        Exit::Usage,
        Exit::Unavailable,
        Exit::Success,
    ];

    /// The more severe of two outcomes (see `SEVERITY`).
    pub fn worst(self, other: Exit) -> Exit {
        let rank = |e: Exit| Exit::SEVERITY.iter().position(|s| *s == e).unwrap_or(0);
        if rank(other) < rank(self) {
            other
        } else {
            self
        }
    }
}

/// Shown in `--help` and kept in step with the README.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (doctor: every check passed)
  1  failed and rolled back: the previous release is serving
  2  usage or configuration error: nothing was changed
  3  rollback failed: a human must act (the message says what to run)
  4  engine, registry, lock or host unavailable: nothing was changed
  130 interrupted (SIGINT/SIGTERM) after cleaning up";

/// `slipway build --help`: the same codes, said for a build.
pub const BUILD_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  built, pushed, and the registry's copy verified; the pinned reference is on stdout
  2  bad flags, lint findings, or the build failed (a Dockerfile error or a failing step):
     nothing was pushed
  4  engine or registry unavailable, credentials refused, the push failed, or the registry does
     not hold what was built (a failure before the push leaves no tag behind)
  130 interrupted (SIGINT/SIGTERM)";

/// `slipway watch --help`.
pub const WATCH_EXIT_CODES_HELP: &str = "\
Exit codes (--once; the long-running mode exits 0 on SIGTERM/SIGINT, 2 on bad flags or specs):
  0  every watched service answered, or was stuck and its replacement now serves
  1  a replacement failed its gate and was undone: the stuck container is still routed to
  2  usage or configuration error (flags, a spec, a spec without [health.http]): nothing changed
  3  a replacement's rollback failed: a human must act (the event says what to run)
  4  the engine is unreachable, or a stuck service's deploy lock is held (a deploy is running):
     nothing was changed
  5  a service is stuck and crash-loop protection held the replacement back (backoff or
     --cap reached): a human must look
  130 interrupted (SIGINT/SIGTERM) after cleaning up
With several services the most severe wins: 130, 3, 5, 1, 2, 4, then 0.";

/// `slipway lint --help`.
pub const LINT_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  no findings (waived ones aside)
  2  findings remain, or bad flags, or the Dockerfile or .dockerignore cannot be read";

/// An error on its way out of slipway: what failed, why (the source chain), what to do.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            exit,
            error: error.into(),
            hint: None,
        }
    }

    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure::new(Exit::Usage, error)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// `error: ...`, then one `Caused by:` line per source, then `hint: ...`.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}\n", self.error);
        let causes: Vec<String> = self.error.chain().skip(1).map(|c| c.to_string()).collect();
        if !causes.is_empty() {
            out.push_str("Caused by:\n");
            for cause in causes {
                let _ = writeln!(out, "  {cause}");
            }
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn render_shows_error_causes_and_hint() {
        let err = Err::<(), _>(std::io::Error::other("connection refused"))
            .context("cannot reach the engine")
            .unwrap_err();
        let failure = Failure::new(Exit::Unavailable, err).with_hint("start dockerd");
        assert_eq!(
            failure.render(),
            "error: cannot reach the engine\nCaused by:\n  connection refused\nhint: start dockerd\n"
        );
    }

    #[test]
    fn codes_are_the_documented_ones() {
        for (exit, code) in [
            (Exit::Success, 0),
            (Exit::RolledBack, 1),
            (Exit::Usage, 2),
            (Exit::RollbackFailed, 3),
            (Exit::Unavailable, 4),
        ] {
            assert_eq!(exit.code(), code);
            assert!(EXIT_CODES_HELP.contains(&format!("  {code}  ")));
        }
    }

    #[test]
    fn watch_documents_each_of_its_codes_and_their_order() {
        for exit in [
            Exit::Success,
            Exit::RolledBack,
            Exit::Usage,
            Exit::RollbackFailed,
            Exit::Unavailable,
            Exit::HeldBack,
        ] {
            assert!(
                WATCH_EXIT_CODES_HELP.contains(&format!("\n  {}  ", exit.code())),
                "{exit:?}"
            );
        }
        assert!(WATCH_EXIT_CODES_HELP.contains("  130 "));
        let order: Vec<String> = Exit::SEVERITY
            .iter()
            .map(|e| e.code().to_string())
            .collect();
        assert!(
            WATCH_EXIT_CODES_HELP.contains(
                &format!("most severe wins: {}", order.join(", ")).replace(", 0", ", then 0")
            ),
            "{order:?}"
        );
    }
}
