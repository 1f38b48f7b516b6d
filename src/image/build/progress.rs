//! Following the engine's build and push output: whole lines for a CI log (no spinners, no
//! progress bars), the step in progress and its output for the error when a step fails.

use std::collections::VecDeque;
use std::sync::LazyLock;

use regex::Regex;

/// How many lines of a failing step's output its error shows.
pub const STEP_OUTPUT_TAIL: usize = 30;

/// The classic builder's output: `Step N/M : INSTRUCTION`, the step's own output, and the
/// builder's bookkeeping lines (` ---> Running in ...`, ` ---> Using cache`, ...).
#[derive(Debug, Default)]
pub struct BuildLog {
    partial: String,
    step: Option<String>,
    output: VecDeque<String>,
    pub steps: usize,
    pub cached: usize,
}

impl BuildLog {
    /// Takes a piece of output as it arrives; returns the lines it completed.
    pub fn feed(&mut self, chunk: &str) -> Vec<String> {
        self.partial.push_str(chunk);
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.partial.drain(..=end).collect();
        complete
            .split('\n')
            .filter_map(|line| self.line(line))
            .collect()
    }

    /// The last line, if the output did not end with a newline.
    pub fn finish(&mut self) -> Vec<String> {
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest).into_iter().collect()
    }

    fn line(&mut self, raw: &str) -> Option<String> {
        // Colours (the builder paints a step's stderr red) are for terminals, not CI logs.
        let raw = ANSI.replace_all(raw, "");
        // A carriage return redraws a line on a terminal: keep what was drawn last.
        let line = raw
            .rsplit('\r')
            .find(|s| !s.is_empty())
            .unwrap_or("")
            .trim_end();
        if line.trim().is_empty() {
            return None;
        }
        if line.starts_with("Step ") {
            self.step = Some(line.to_string());
            self.output.clear();
            self.steps += 1;
        } else if line.trim() == "---> Using cache" {
            self.cached += 1;
        } else if !is_bookkeeping(line) {
            if self.output.len() == STEP_OUTPUT_TAIL {
                self.output.pop_front();
            }
            self.output.push_back(line.to_string());
        }
        Some(line.to_string())
    }

    /// `Step N/M : INSTRUCTION` of the step that ran last.
    pub fn step(&self) -> Option<&str> {
        self.step.as_deref()
    }

    /// The last lines that step printed.
    pub fn step_output(&self) -> Vec<String> {
        self.output.iter().cloned().collect()
    }
}

static ANSI: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").expect("a valid regex"));

fn is_bookkeeping(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.starts_with("---> ")
        || trimmed.starts_with("Removing intermediate container ")
        || trimmed.starts_with("Successfully built ")
        || trimmed.starts_with("Successfully tagged ")
}

/// A push's status lines: per-layer progress is counted, not printed.
#[derive(Debug, Default)]
pub struct PushLog {
    pub uploaded: usize,
    pub existing: usize,
}

impl PushLog {
    /// The line worth a log line, if any.
    pub fn status(&mut self, status: &str) -> Option<String> {
        let status = status.trim();
        match status {
            "Pushed" => self.uploaded += 1,
            "Layer already exists" => self.existing += 1,
            "Preparing" | "Waiting" | "Pushing" | "" => {}
            s if s.starts_with("Mounted from ") => self.existing += 1,
            s => return Some(s.to_string()),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_and_the_failing_step_keeps_its_output() {
        let mut log = BuildLog::default();
        let mut lines = Vec::new();
        for chunk in [
            "Step 1/3 : FROM base\n ---> 1a2b3c\n",
            "Step 2/3 : COPY deps.txt ./\n ---> Using cache\n ---> 4d5e6f\n",
            "Step 3/3 : RUN make\n ---> Running in 0123abcd\nbuild",
            "ing...\nprogress 10%\rprogress 100%\n\x1b[91merror: it broke\n\x1b[0mRemoving intermediate container 0123abcd\n",
        ] {
            lines.extend(log.feed(chunk));
        }
        lines.extend(log.finish());
        assert_eq!(lines.len(), 11, "{lines:#?}");
        assert!(lines.contains(&"building...".to_string()));
        assert!(lines.contains(&"progress 100%".to_string()));
        assert_eq!(log.step(), Some("Step 3/3 : RUN make"));
        assert_eq!(
            log.step_output(),
            ["building...", "progress 100%", "error: it broke"]
        );
        assert_eq!((log.steps, log.cached), (3, 1));
    }

    #[test]
    fn only_the_tail_of_a_long_step_is_kept() {
        let mut log = BuildLog::default();
        log.feed("Step 1/1 : RUN noisy\n");
        for i in 0..100 {
            log.feed(&format!("line {i}\n"));
        }
        let tail = log.step_output();
        assert_eq!(tail.len(), STEP_OUTPUT_TAIL);
        assert_eq!(tail.last().map(String::as_str), Some("line 99"));
    }

    #[test]
    fn push_progress_is_counted_not_printed() {
        let mut log = PushLog::default();
        let printed: Vec<String> = [
            "The push refers to repository [127.0.0.1:5000/app]",
            "Preparing",
            "Waiting",
            "Pushing",
            "Pushed",
            "Layer already exists",
            "Mounted from slipway/busybox",
            "abc: digest: sha256:00 size: 1",
        ]
        .into_iter()
        .filter_map(|s| log.status(s))
        .collect();
        assert_eq!(printed.len(), 2);
        assert_eq!((log.uploaded, log.existing), (1, 2));
    }
}
