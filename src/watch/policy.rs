//! Crash-loop protection as a pure function: given when a release was replaced before (unix ms)
//! and the time now, may it be replaced again? No clock, no I/O: the history comes from the
//! `dev.slipway.replacements` label of the container (plus replacements that failed, which left
//! no container behind), so the same answer holds after a restart of the watchdog and across
//! `--once` runs.

use std::time::Duration;

/// How often one service may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The wait after a replacement before the next one; doubles with each replacement in the
    /// window (30s, 1m, 2m, ...), up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Replacements allowed per `window`; past it the watchdog stops replacing (0: never replace).
    pub cap: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Replace,
    /// Too soon after the last replacement: `wait` more.
    Backoff {
        wait: Duration,
        recent: usize,
    },
    /// `recent` replacements in the window already: no more until they age out of it.
    Capped {
        recent: usize,
    },
}

impl Policy {
    /// The replacements that still count at `now_ms`, oldest first. A time in the future (a
    /// clock stepped back) counts as now.
    pub fn recent(&self, history: &[u64], now_ms: u64) -> Vec<u64> {
        let window = self.window.as_millis() as u64;
        let mut recent: Vec<u64> = history
            .iter()
            .copied()
            .filter(|t| now_ms.saturating_sub(*t) < window)
            .collect();
        recent.sort_unstable();
        recent
    }

    /// The wait after the `n`-th replacement in the window (`n` >= 1).
    pub fn backoff_after(&self, n: usize) -> Duration {
        let doublings = n.saturating_sub(1).min(32) as u32;
        self.backoff
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    pub fn decide(&self, history: &[u64], now_ms: u64) -> Decision {
        let recent = self.recent(history, now_ms);
        if recent.len() >= self.cap as usize {
            return Decision::Capped {
                recent: recent.len(),
            };
        }
        if let Some(&last) = recent.last() {
            let wait = self.backoff_after(recent.len());
            let since = Duration::from_millis(now_ms.saturating_sub(last));
            if since < wait {
                return Decision::Backoff {
                    wait: wait - since,
                    recent: recent.len(),
                };
            }
        }
        Decision::Replace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;
    const T0: u64 = 1_700_000_000_000;

    fn policy() -> Policy {
        Policy {
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(300),
            cap: 3,
            window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_first_replacement_is_immediate() {
        assert_eq!(policy().decide(&[], T0), Decision::Replace);
    }

    #[test]
    fn each_replacement_in_the_window_doubles_the_wait() {
        let p = policy();
        // One replacement 10 s ago: 30 s backoff, 20 s left.
        assert_eq!(
            p.decide(&[T0 - 10 * S], T0),
            Decision::Backoff {
                wait: Duration::from_secs(20),
                recent: 1
            }
        );
        assert_eq!(p.decide(&[T0 - 30 * S], T0), Decision::Replace);
        // Two: 60 s after the last.
        let two = [T0 - 100 * S, T0 - 59 * S];
        assert_eq!(
            p.decide(&two, T0),
            Decision::Backoff {
                wait: Duration::from_secs(1),
                recent: 2
            }
        );
        assert_eq!(p.decide(&two, T0 + S), Decision::Replace);
        assert_eq!(p.backoff_after(1), Duration::from_secs(30));
        assert_eq!(p.backoff_after(2), Duration::from_secs(60));
        assert_eq!(p.backoff_after(3), Duration::from_secs(120));
        assert_eq!(p.backoff_after(5), Duration::from_secs(300), "capped");
        assert_eq!(
            p.backoff_after(400),
            Duration::from_secs(300),
            "no overflow"
        );
    }

    #[test]
    fn past_the_cap_it_stops_until_the_window_slides() {
        let p = policy();
        let three = [T0 - 3000 * S, T0 - 2000 * S, T0 - 1000 * S];
        assert_eq!(p.decide(&three, T0), Decision::Capped { recent: 3 });
        // The oldest ages out of the hour: one more is allowed (its backoff long passed).
        assert_eq!(p.decide(&three, T0 + 601 * S), Decision::Replace);
        // Unordered input and old entries are fine.
        let mixed = [T0 - 1000 * S, T0 - 90_000 * S, T0 - 3000 * S, T0 - 2000 * S];
        assert_eq!(p.decide(&mixed, T0), Decision::Capped { recent: 3 });
    }

    #[test]
    fn a_cap_of_zero_only_reports() {
        let p = Policy { cap: 0, ..policy() };
        assert_eq!(p.decide(&[], T0), Decision::Capped { recent: 0 });
    }

    #[test]
    fn a_clock_stepped_back_counts_as_now() {
        let p = policy();
        assert_eq!(
            p.decide(&[T0 + 5 * S], T0),
            Decision::Backoff {
                wait: Duration::from_secs(30),
                recent: 1
            }
        );
    }

    /// The whole loop with time paused: a container that hangs again right after every
    /// replacement is replaced at once, then after 30 s, then after 60 s, and then never again
    /// within the hour (cap 3), with the watchdog probing every second throughout.
    #[tokio::test(start_paused = true)]
    async fn a_crash_loop_is_slowed_then_capped() {
        let p = policy();
        let began = tokio::time::Instant::now();
        let now_ms = || T0 + began.elapsed().as_millis() as u64;
        let mut history: Vec<u64> = Vec::new();
        let mut replaced_at = Vec::new();
        let mut capped_at = None;
        let mut backoffs = 0;
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match p.decide(&history, now_ms()) {
                Decision::Replace => {
                    history.push(now_ms());
                    replaced_at.push(began.elapsed().as_secs());
                }
                Decision::Backoff { .. } => backoffs += 1,
                Decision::Capped { recent } => {
                    assert_eq!(recent, 3);
                    capped_at.get_or_insert(began.elapsed().as_secs());
                }
            }
        }
        assert_eq!(replaced_at, [1, 31, 91]);
        assert_eq!(capped_at, Some(92));
        assert_eq!(backoffs, 29 + 59);
    }
}
