//! Reading a Dockerfile as the builder does: parser directives (`# escape=`), comments, line
//! continuations, instructions with the line they start on, build stages and `ARG` substitution
//! in `FROM`. Enough for the policy lint; the engine remains the judge of what builds.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// One instruction, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// Upper case: `FROM`, `RUN`, ...
    pub keyword: String,
    /// Everything after the keyword, trimmed.
    pub args: String,
}

impl Instruction {
    /// `["a", "b"]` (JSON, the exec form) as a list; `None` for the shell form. Like the builder,
    /// anything that is not a valid JSON array of strings is shell form (`CMD ['a']` included).
    pub fn exec_form(&self) -> Option<Vec<String>> {
        let args = self.args.trim();
        if !args.starts_with('[') {
            return None;
        }
        serde_json::from_str(args).ok()
    }

    /// The builder flags that start the arguments (`--from=build`, `--mount=type=cache,...`), as
    /// the builder reads them: words starting with `--` up to the first other word (or a lone
    /// `--`), quotes removed and `\` escapes taken. A flag without `=` has no value.
    pub fn flags(&self) -> Vec<(String, Option<String>)> {
        builder_flags(&self.args)
            .into_iter()
            .map(|word| {
                let word = word.strip_prefix("--").unwrap_or(&word);
                match word.split_once('=') {
                    Some((name, value)) => (name.to_string(), Some(value.to_string())),
                    None => (word.to_string(), None),
                }
            })
            .collect()
    }

    /// The values of every `--NAME=VALUE` flag of this instruction, in order.
    pub fn flag_values(&self, name: &str) -> Vec<String> {
        self.flags()
            .into_iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v)
            .collect()
    }

    /// The `from=` source of each `RUN --mount=...` (a stage name or an image), as written.
    pub fn mount_sources(&self) -> Vec<String> {
        self.flag_values("mount")
            .iter()
            .flat_map(|spec| csv_fields(spec))
            .filter_map(|field| {
                let (key, value) = field.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("from")
                    .then(|| value.to_string())
            })
            .filter(|from| !from.is_empty())
            .collect()
    }
}

/// The leading `--flag` words of an instruction's arguments, as the Dockerfile parser extracts
/// them (`extractBuilderFlags`): quotes group and are removed, `\` takes the next character, a
/// lone `--` ends the flags, and the first word not starting with `--` ends them too.
fn builder_flags(args: &str) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        while pos < chars.len() && chars[pos].is_whitespace() {
            pos += 1;
        }
        if !(pos + 1 < chars.len() && chars[pos] == '-' && chars[pos + 1] == '-') {
            return words;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut quoted = false;
        while pos < chars.len() {
            let c = chars[pos];
            pos += 1;
            match quote {
                None if c.is_whitespace() => break,
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    quoted = true;
                }
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if let Some(&next) = chars.get(pos) {
                        word.push(next);
                        pos += 1;
                    }
                }
                _ => word.push(c),
            }
        }
        if word == "--" {
            return words;
        }
        if quoted || !word.is_empty() {
            words.push(word);
        }
    }
}

/// One line of CSV (as Go's `encoding/csv` reads a `--mount` value): fields split on `,`, a
/// field in double quotes may hold commas, and `""` inside it is one quote.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if in_quotes => in_quotes = false,
            '"' if at_start => in_quotes = true,
            ',' if !in_quotes => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            c => field.push(c),
        }
        at_start = false;
    }
    fields.push(field);
    fields
}

/// Splits a Dockerfile into instructions. A heredoc (`RUN <<EOF` ... `EOF`, BuildKit) is part
/// of its instruction: its lines are joined to the arguments with newlines.
pub fn parse(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut in_directives = true;
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    let mut heredocs: std::collections::VecDeque<Heredoc> = Default::default();
    for (index, raw) in text.lines().enumerate() {
        if let Some(doc) = heredocs.front() {
            if let Some((_, joined)) = &mut pending {
                joined.push('\n');
                joined.push_str(raw);
            }
            if doc.ends_at(raw) {
                heredocs.pop_front();
                if heredocs.is_empty() {
                    out.extend(pending.take().map(instruction));
                }
            }
            continue;
        }
        if in_directives {
            if let Some((name, value)) = directive(raw) {
                if name.eq_ignore_ascii_case("escape") && (value == "`" || value == "\\") {
                    escape = value.chars().next().unwrap_or('\\');
                }
                continue;
            }
            in_directives = false;
        }
        let trimmed = raw.trim();
        // Comments, and blank lines (which also do not end a continuation).
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let body = raw.trim_end();
        let (content, continues) = match body.strip_suffix(escape) {
            Some(content) => (content, true),
            None => (body, false),
        };
        match &mut pending {
            Some((_, joined)) => joined.push_str(content),
            None => pending = Some((index + 1, content.to_string())),
        }
        if !continues {
            heredocs = pending
                .as_ref()
                .map(|(_, t)| heredocs_in(t))
                .unwrap_or_default();
            if heredocs.is_empty() {
                out.extend(pending.take().map(instruction));
            }
        }
    }
    out.extend(pending.map(instruction));
    out
}

/// A heredoc opened by `<<WORD` (or `<<-WORD`: leading tabs of its lines are not part of them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Heredoc {
    word: String,
    strip_tabs: bool,
}

impl Heredoc {
    fn ends_at(&self, line: &str) -> bool {
        let line = if self.strip_tabs {
            line.trim_start_matches('\t')
        } else {
            line
        };
        line == self.word
    }
}

/// The heredocs an instruction opens, in order (only RUN, COPY and ADD take them).
fn heredocs_in(text: &str) -> std::collections::VecDeque<Heredoc> {
    static OPEN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"<<(-?)(?:"([A-Za-z_][A-Za-z0-9_]*)"|'([A-Za-z_][A-Za-z0-9_]*)'|([A-Za-z_][A-Za-z0-9_]*))"#)
            .expect("a valid regex")
    });
    let keyword = text.split_whitespace().next().unwrap_or("");
    if !["RUN", "COPY", "ADD"].contains(&keyword.to_ascii_uppercase().as_str()) {
        return Default::default();
    }
    OPEN.captures_iter(text)
        .filter_map(|caps| {
            let word = caps.get(2).or(caps.get(3)).or(caps.get(4))?;
            Some(Heredoc {
                word: word.as_str().to_string(),
                strip_tabs: &caps[1] == "-",
            })
        })
        .collect()
}

/// The frontend image a `# syntax=IMAGE` parser directive names, if the Dockerfile has one.
pub fn syntax_directive(text: &str) -> Option<String> {
    text.lines()
        .map_while(directive)
        .find(|(name, _)| name.eq_ignore_ascii_case("syntax"))
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim();
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| (name, value.trim()))
}

fn instruction((line, text): (usize, String)) -> Instruction {
    let text = text.trim();
    let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    Instruction {
        line,
        keyword: keyword.to_ascii_uppercase(),
        args: args.trim().to_string(),
    }
}

/// `NAME=value` pairs of an `ARG` (a missing `=value` gives `None`) or `ENV` (also the legacy
/// `ENV NAME value with spaces`). Quotes are removed as the builder removes them.
pub fn assignments(instruction: &Instruction) -> Vec<(String, Option<String>)> {
    let args = instruction.args.trim();
    let words =
        shlex::split(args).unwrap_or_else(|| args.split_whitespace().map(String::from).collect());
    if instruction.keyword == "ENV"
        && words.first().is_some_and(|w| !w.contains('='))
        && let Some((name, value)) = args.split_once(char::is_whitespace)
    {
        let value = value.trim();
        let value = shlex::split(value)
            .map(|w| w.join(" "))
            .unwrap_or_else(|| value.to_string());
        return vec![(name.to_string(), Some(value))];
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (word, None),
        })
        .collect()
}

/// A build stage: its `FROM` and the instructions after it.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: Option<String>,
    pub from: Instruction,
    /// The base as written, e.g. `${BASE_IMAGE}`.
    pub base: String,
    /// The base with the global ARGs substituted; `Err` names the ARGs that have no value.
    pub resolved: Result<String, Vec<String>>,
    /// The earlier stage this one is built `FROM`, if any.
    pub parent: Option<usize>,
    pub instructions: Vec<Instruction>,
}

/// The stages of a Dockerfile, and its global `ARG`s (those before the first `FROM`).
#[derive(Debug, Clone)]
pub struct Stages {
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

impl Stages {
    /// `build_args` override the global ARGs' defaults, as `--build-arg` does.
    pub fn new(instructions: &[Instruction], build_args: &[(String, String)]) -> Stages {
        let mut global_args = Vec::new();
        let mut vars: HashMap<String, Option<String>> = HashMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for ins in instructions {
            if ins.keyword == "FROM" {
                let (base, name) = from_parts(&ins.args);
                let resolved = substitute(&base, &vars);
                let parent = resolved.as_ref().ok().and_then(|b| {
                    stages
                        .iter()
                        .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(b)))
                });
                stages.push(Stage {
                    name,
                    from: ins.clone(),
                    base,
                    resolved,
                    parent,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(ins.clone());
            } else if ins.keyword == "ARG" {
                for (name, default) in assignments(ins) {
                    let given = build_args.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
                    vars.insert(name, given.cloned().or(default));
                }
                global_args.push(ins.clone());
            }
        }
        Stages {
            global_args,
            stages,
        }
    }

    /// The stage that is built: `target` by name, else the last one.
    pub fn final_stage(&self, target: Option<&str>) -> Option<&Stage> {
        match target {
            Some(t) => self
                .stages
                .iter()
                .find(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t))),
            None => self.stages.last(),
        }
    }

    /// The last `keyword` instruction in effect in `stage`: its own, else inherited from the
    /// stage it is built from.
    pub fn effective<'a>(&'a self, stage: &'a Stage, keyword: &str) -> Option<&'a Instruction> {
        let mut current = Some(stage);
        while let Some(s) = current {
            if let Some(found) = s.instructions.iter().rev().find(|i| i.keyword == keyword) {
                return Some(found);
            }
            current = s.parent.map(|p| &self.stages[p]);
        }
        None
    }
}

/// `[--platform=...] IMAGE [AS NAME]` -> (IMAGE, NAME).
fn from_parts(args: &str) -> (String, Option<String>) {
    let mut words = args.split_whitespace().filter(|w| !w.starts_with("--"));
    let base = words.next().unwrap_or_default().to_string();
    let name = match (words.next(), words.next()) {
        (Some(kw), Some(name)) if kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
        _ => None,
    };
    (base, name)
}

static VARIABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
        .expect("a valid regex")
});

/// Replaces `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}`. `Err` lists the
/// variables that have no value and no default.
pub fn substitute(
    text: &str,
    vars: &HashMap<String, Option<String>>,
) -> Result<String, Vec<String>> {
    let mut missing = Vec::new();
    let out = VARIABLE.replace_all(text, |caps: &regex::Captures<'_>| {
        let name = caps.get(1).or(caps.get(4)).map_or("", |m| m.as_str());
        let value = vars.get(name).cloned().flatten().filter(|v| !v.is_empty());
        match (caps.get(2).map(|m| m.as_str()), value) {
            (Some("-"), Some(v)) => v,
            (Some("-"), None) => caps[3].to_string(),
            (Some(_), Some(_)) => caps[3].to_string(),
            (Some(_), None) => String::new(),
            (None, Some(v)) => v,
            (None, None) => {
                missing.push(name.to_string());
                String::new()
            }
        }
    });
    if missing.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syntax_directive_names_the_frontend() {
        let text = "# syntax=docker/dockerfile:1\n# escape=\\\nFROM a\n";
        assert_eq!(
            syntax_directive(text).as_deref(),
            Some("docker/dockerfile:1")
        );
        assert_eq!(
            syntax_directive("# escape=`\n# syntax = x/y:2\nFROM a\n").as_deref(),
            Some("x/y:2")
        );
        assert_eq!(
            syntax_directive("FROM a\n# syntax=docker/dockerfile:1\n"),
            None
        );
    }

    #[test]
    fn a_heredoc_belongs_to_its_instruction() {
        let text = "FROM a\nRUN <<EOF\n# not a comment\nset -eu\n\necho \"$X\"\nEOF\nCOPY <<-\"ONE\" /one <<TWO /two\n\tone\n\tONE\ntwo\nTWO\nUSER 10001\n";
        let ins = parse(text);
        let keywords: Vec<&str> = ins.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(keywords, ["FROM", "RUN", "COPY", "USER"]);
        assert_eq!(
            ins[1].args,
            "<<EOF\n# not a comment\nset -eu\n\necho \"$X\"\nEOF"
        );
        assert_eq!(ins[2].line, 8);
        assert!(ins[2].args.ends_with("two\nTWO"), "{}", ins[2].args);
        assert_eq!(ins[3].line, 13);
        // `<<` inside a shell command of another instruction is not a heredoc.
        assert_eq!(parse("FROM a\nENV X=<<Y\nUSER 1\n").len(), 3);
    }

    #[test]
    fn instructions_keep_their_first_line() {
        let text = "# syntax=docker/dockerfile:1\n\nFROM a AS build\n# a comment\nRUN one \\\n  # inside\n\n  two\nCMD [\"x\"]\n";
        let got = parse(text);
        assert_eq!(
            got,
            [
                Instruction {
                    line: 3,
                    keyword: "FROM".into(),
                    args: "a AS build".into()
                },
                Instruction {
                    line: 5,
                    keyword: "RUN".into(),
                    args: "one   two".into()
                },
                Instruction {
                    line: 9,
                    keyword: "CMD".into(),
                    args: "[\"x\"]".into()
                },
            ]
        );
        assert_eq!(got[2].exec_form(), Some(vec!["x".to_string()]));
        assert_eq!(got[1].exec_form(), None);
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let got = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo hi\n");
        assert_eq!(got[1].args, "dir c:\\   && echo hi");
        assert_eq!(got[1].line, 3);
    }

    #[test]
    fn single_quoted_json_is_shell_form() {
        let got = parse("CMD ['serve']\nENTRYPOINT [\"a\", 1]\n");
        assert_eq!(got[0].exec_form(), None);
        assert_eq!(got[1].exec_form(), None);
    }

    #[test]
    fn builder_flags_as_the_parser_extracts_them() {
        let flags = |line: &str| parse(line)[0].flags();
        let some = |n: &str, v: &str| (n.to_string(), Some(v.to_string()));
        assert_eq!(
            flags("COPY --from=build --chown=1:1 --link /a /b"),
            [
                some("from", "build"),
                some("chown", "1:1"),
                ("link".to_string(), None)
            ]
        );
        assert_eq!(
            flags("COPY --from=\"my img\" --chmod='7 5' a b"),
            [some("from", "my img"), some("chmod", "7 5")]
        );
        assert_eq!(flags("COPY --from=a\\ b c"), [some("from", "a b")]);
        assert_eq!(flags("COPY a --from=b c"), []);
        assert_eq!(flags("COPY -- --from=b c"), []);
        assert_eq!(flags("COPY --from=a -- --from=b c"), [some("from", "a")]);
        assert_eq!(flags("COPY --from="), [some("from", "")]);
        assert_eq!(flags("RUN"), []);
        let run = &parse(
            "RUN --network=none --mount=type=cache,target=/c --mount=type=bind,FROM=img:1,source=/x \\\n  --mount=\"type=bind,\"\"from=a,b\"\"\" make\n",
        )[0];
        assert_eq!(run.mount_sources(), ["img:1", "a"]);
        assert_eq!(run.flag_values("network"), ["none"]);
        assert_eq!(
            csv_fields(r#"type=bind,"from=a,b",x="#),
            ["type=bind", "from=a,b", "x="]
        );
        assert_eq!(csv_fields(r#""a""b",c"#), ["a\"b", "c"]);
    }

    #[test]
    fn arg_and_env_assignments() {
        let got = |line: &str| assignments(&parse(line)[0]);
        assert_eq!(
            got("ARG A B=2 C=\"x y\""),
            [
                ("A".into(), None),
                ("B".into(), Some("2".into())),
                ("C".into(), Some("x y".into()))
            ]
        );
        assert_eq!(
            got("ENV PORT=8080 NAME='a b'"),
            [
                ("PORT".into(), Some("8080".into())),
                ("NAME".into(), Some("a b".into()))
            ]
        );
        assert_eq!(
            got("ENV GREETING hello  world"),
            [("GREETING".into(), Some("hello world".into()))]
        );
    }

    #[test]
    fn stages_resolve_global_args_and_earlier_stages() {
        let text = "ARG BASE=alpine:3.20\nARG TAG\nFROM ${BASE} AS Builder\nRUN x\nFROM builder\nUSER app\nFROM base:$TAG\n";
        let stages = Stages::new(&parse(text), &[]);
        assert_eq!(stages.global_args.len(), 2);
        let s = &stages.stages;
        assert_eq!(s[0].resolved.as_deref(), Ok("alpine:3.20"));
        assert_eq!(s[0].name.as_deref(), Some("Builder"));
        assert_eq!(s[1].parent, Some(0));
        assert_eq!(s[2].resolved, Err(vec!["TAG".to_string()]));
        let given = Stages::new(
            &parse(text),
            &[
                ("BASE".into(), "x@sha256:1".into()),
                ("TAG".into(), "1".into()),
            ],
        );
        assert_eq!(given.stages[0].resolved.as_deref(), Ok("x@sha256:1"));
        assert_eq!(given.stages[2].resolved.as_deref(), Ok("base:1"));
        assert_eq!(
            stages.final_stage(Some("BUILDER")).map(|s| s.from.line),
            Some(3)
        );
        assert_eq!(stages.final_stage(None).map(|s| s.from.line), Some(7));
        assert!(stages.final_stage(Some("nope")).is_none());
        assert_eq!(
            stages.effective(&stages.stages[1], "RUN").map(|i| i.line),
            Some(4)
        );
    }

    #[test]
    fn substitution_forms() {
        let vars: HashMap<String, Option<String>> = [
            ("A".to_string(), Some("a".to_string())),
            ("E".to_string(), Some(String::new())),
            ("N".to_string(), None),
        ]
        .into();
        assert_eq!(substitute("$A/${A}", &vars).unwrap(), "a/a");
        assert_eq!(substitute("${N:-d}${A:-d}", &vars).unwrap(), "da");
        assert_eq!(substitute("${A:+x}${E:+x}", &vars).unwrap(), "x");
        assert_eq!(
            substitute("$N-$UNDECLARED", &vars),
            Err(vec!["N".into(), "UNDECLARED".into()])
        );
    }
}
