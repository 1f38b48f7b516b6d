//! Following the engine's build and push output: whole lines for a CI log (no spinners, no
//! progress bars), the step in progress and its output for the error when a step fails.

use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;

use regex::Regex;

use crate::engine::{BuildEvent, StepUpdate};

/// How many lines of a failing step's output its error shows.
pub const STEP_OUTPUT_TAIL: usize = 30;

/// The classic builder's output: `Step N/M : INSTRUCTION`, the step's own output, and the
/// builder's bookkeeping lines (` ---> Running in ...`, ` ---> Using cache`, ...).
///
/// BuildKit's status: each step (`#N [stage 2/5] RUN ...`) gets a line when it starts and one
/// when it ends (`CACHED`, `DONE 1.2s` or `ERROR`), its output lines are prefixed `#N`; the
/// repeated updates of a step and transfer progress are not printed.
#[derive(Debug, Default)]
pub struct BuildLog {
    partial: String,
    step: Option<String>,
    output: VecDeque<String>,
    pub steps: usize,
    pub cached: usize,
    kit: HashMap<String, KitStep>,
    failed: Option<String>,
}

/// A BuildKit step as followed so far.
#[derive(Debug, Default)]
struct KitStep {
    number: usize,
    name: String,
    started: bool,
    ended: bool,
    partial: String,
    output: VecDeque<String>,
}

impl BuildLog {
    /// Takes one event from the engine; returns the lines worth printing.
    pub fn event(&mut self, event: BuildEvent) -> Vec<String> {
        match event {
            BuildEvent::Text(text) => self.feed(&text),
            BuildEvent::Step(update) => self.kit_step(update),
            BuildEvent::StepOutput { step, text } => self.kit_output(&step, &text),
        }
    }

    fn kit_step(&mut self, update: StepUpdate) -> Vec<String> {
        let next = self.kit.len() + 1;
        let step = self
            .kit
            .entry(update.id.clone())
            .or_insert_with(|| KitStep {
                number: next,
                name: short_name(&update.name),
                ..KitStep::default()
            });
        let mut lines = Vec::new();
        if step.ended {
            return lines;
        }
        let label = format!("#{} {}", step.number, step.name);
        let is_instruction = INSTRUCTION.is_match(&step.name);
        if update.cached {
            step.ended = true;
            lines.push(format!("{label}: CACHED"));
        } else if !update.error.is_empty() {
            step.ended = true;
            lines.push(format!("{label}: ERROR: {}", update.error));
            self.failed.get_or_insert_with(|| update.id.clone());
        } else if let (Some(started), Some(completed)) = (update.started, update.completed) {
            step.ended = true;
            let took = completed.saturating_sub(started).as_secs_f32();
            lines.push(format!("{label}: DONE {took:.1}s"));
        } else if update.started.is_some() && !step.started {
            step.started = true;
            lines.push(label);
        }
        if step.ended && is_instruction {
            self.steps += 1;
            self.cached += usize::from(update.cached);
        }
        lines
    }

    fn kit_output(&mut self, id: &str, text: &str) -> Vec<String> {
        let Some(step) = self.kit.get_mut(id) else {
            return Vec::new();
        };
        step.partial.push_str(text);
        let Some(end) = step.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = step.partial.drain(..=end).collect();
        let mut lines = Vec::new();
        for raw in complete.split('\n') {
            let Some(line) = visible(raw) else { continue };
            if step.output.len() == STEP_OUTPUT_TAIL {
                step.output.pop_front();
            }
            step.output.push_back(line.clone());
            lines.push(format!("#{} {line}", step.number));
        }
        lines
    }

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
        let line = visible(raw)?;
        let line = line.as_str();
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

    /// The step that failed (BuildKit: `[stage 2/5] RUN ...`), else `Step N/M : INSTRUCTION`
    /// of the step that ran last.
    pub fn step(&self) -> Option<&str> {
        match self.failed.as_ref().and_then(|id| self.kit.get(id)) {
            Some(step) => Some(step.name.as_str()),
            None => self.step.as_deref(),
        }
    }

    /// The last lines that step printed.
    pub fn step_output(&self) -> Vec<String> {
        match self.failed.as_ref().and_then(|id| self.kit.get(id)) {
            Some(step) => step.output.iter().cloned().collect(),
            None => self.output.iter().cloned().collect(),
        }
    }
}

/// How much of a step's name a line shows (a long RUN is cut, its whitespace runs collapsed).
const STEP_NAME_MAX: usize = 100;

fn short_name(name: &str) -> String {
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    match name.char_indices().nth(STEP_NAME_MAX) {
        Some((cut, _)) => format!("{}...", name[..cut].trim_end()),
        None => name,
    }
}

/// A line as a terminal would show it last, or `None` when nothing would show.
fn visible(raw: &str) -> Option<String> {
    // Colours (the builder paints a step's stderr red) are for terminals, not CI logs.
    let raw = ANSI.replace_all(raw, "");
    // A carriage return redraws a line on a terminal: keep what was drawn last.
    let line = raw
        .rsplit('\r')
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .trim_end();
    (!line.trim().is_empty()).then(|| line.to_string())
}

/// A Dockerfile instruction's step (`[builder 2/5] RUN ...`, `[2/3] COPY ...`), not BuildKit's
/// own bookkeeping (`[internal] load ...`, `exporting to image`).
static INSTRUCTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[(?:\S+ )?\d+/\d+\] ").expect("a valid regex"));

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

    fn step(
        id: &str,
        name: &str,
        times: (Option<u64>, Option<u64>),
        cached: bool,
        error: &str,
    ) -> BuildEvent {
        let at = |ms: Option<u64>| ms.map(std::time::Duration::from_millis);
        BuildEvent::Step(StepUpdate {
            id: id.into(),
            name: name.into(),
            cached,
            started: at(times.0),
            completed: at(times.1),
            error: error.into(),
        })
    }

    #[test]
    fn buildkit_steps_start_and_end_once_and_the_failing_one_keeps_its_output() {
        let mut log = BuildLog::default();
        let long = format!("[builder 3/4] RUN {}", "x ".repeat(100));
        let output = |step: &str, text: &str| BuildEvent::StepOutput {
            step: step.into(),
            text: text.into(),
        };
        let lines: Vec<String> = [
            step(
                "a",
                "[internal] load build context",
                (Some(0), None),
                false,
                "",
            ),
            step(
                "a",
                "[internal] load build context",
                (Some(0), Some(40)),
                false,
                "",
            ),
            step(
                "b",
                "[builder 2/4] WORKDIR /build",
                (Some(0), Some(1)),
                true,
                "",
            ),
            step("c", &long, (Some(1000), None), false, ""),
            step("c", &long, (Some(1000), None), false, ""),
            output("c", "downloading\rdownloaded: x 1\nhalf"),
            output("c", " a line\n"),
            step("c", &long, (Some(1000), Some(3500)), false, "exit code: 3"),
            step("c", &long, (Some(1000), Some(3500)), false, "exit code: 3"),
        ]
        .into_iter()
        .flat_map(|e| log.event(e))
        .collect();
        let short = format!("#3 {}...", long[..STEP_NAME_MAX].trim_end());
        assert_eq!(
            lines,
            [
                "#1 [internal] load build context".to_string(),
                "#1 [internal] load build context: DONE 0.0s".into(),
                "#2 [builder 2/4] WORKDIR /build: CACHED".into(),
                short.clone(),
                "#3 downloaded: x 1".into(),
                "#3 half a line".into(),
                format!("{short}: ERROR: exit code: 3"),
            ]
        );
        assert_eq!(log.step(), Some(&short[3..]));
        assert_eq!(log.step_output(), ["downloaded: x 1", "half a line"]);
        assert_eq!((log.steps, log.cached), (2, 1));
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
