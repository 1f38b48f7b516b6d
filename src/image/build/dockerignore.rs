//! `.dockerignore` with Docker's own rules (moby's `ignorefile` + `patternmatcher`, as the CLI
//! and the classic builder use them), not gitignore's:
//!
//! - a byte order mark is removed from the start of the file (only there); a line starting with
//!   `#` is a comment; other lines are trimmed, `!` marks an exception, and the pattern is
//!   cleaned like Go's `filepath.Clean` (so `./a/../b/` is `b`), a leading `/` dropped: every
//!   pattern is relative to the context root;
//! - `*` and `?` stop at `/`, `**` crosses directories; the rest is what Docker's translation
//!   to a Go regex makes of it, quirks included (see [`compile`]): `[...]` is a regex class, in
//!   which `*` and `?` are still translated (`[*]` does not match `*`), `\x` is a regex escape,
//!   and `|`, `{` and `}` are not escaped (`a|b` is an alternation);
//! - a pattern that matches a directory matches everything under it;
//! - the last matching line wins, so `!keep` after `*.log` brings a file back;
//! - an excluded directory is not walked into unless an exception's text starts with that
//!   directory's path (`!big/keep.txt` for `big`): a wildcard exception such as `!*/keep.txt`
//!   does not reopen it, exactly as in Docker;
//! - the Dockerfile and `.dockerignore` are always sent ([`DockerIgnore::keep_build_files`]).
//!
//! One difference, on the safe side: Docker compiles a pattern's regex only when a path reaches
//! it, so a pattern whose regex does not compile (`a*[`) fails the build only if it is ever
//! tried; here it is an error when the file is read. Unicode classes (`\p{Greek}`) are refused.

use std::path::Path;

use regex::Regex;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DockerIgnoreError {
    #[error("cannot read {}", path.display())]
    Unreadable {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(".dockerignore line {line} is 64 KiB or longer: Docker cannot read the file")]
    LineTooLong { line: usize },
    #[error(".dockerignore line {line}: `{pattern}` is not a valid pattern ({reason})")]
    BadPattern {
        line: usize,
        pattern: String,
        reason: String,
    },
}

impl DockerIgnoreError {
    pub fn hint(&self) -> &'static str {
        match self {
            DockerIgnoreError::Unreadable { .. } => "check the file's permissions",
            DockerIgnoreError::LineTooLong { .. } => {
                "shorten the line: Docker's reader (Go's bufio.Scanner) stops at 64 KiB"
            }
            DockerIgnoreError::BadPattern { .. } => {
                "patterns follow Go's filepath.Match: close every `[`, escape a literal `[`, `*`, `?` or `\\` with `\\`"
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `dir/**`: everything below `dir/` (bytes, compared as Go compares them).
    Prefix(Vec<u8>),
    /// `**/name` or `**name`.
    Suffix(Vec<u8>),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned, without the `!`.
    text: String,
    exception: bool,
    kind: Kind,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.as_bytes().starts_with(prefix),
            Kind::Suffix(suffix) => {
                path.as_bytes().ends_with(suffix)
                    || suffix
                        .strip_prefix(b"/")
                        .is_some_and(|bare| path.as_bytes() == bare)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// The patterns of one `.dockerignore`, in order.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// `CONTEXT/.dockerignore`, or no patterns when there is none.
    pub fn read(context: &Path) -> Result<DockerIgnore, DockerIgnoreError> {
        let path = context.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => DockerIgnore::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
            Err(source) => Err(DockerIgnoreError::Unreadable { path, source }),
        }
    }

    /// Parses the text of a `.dockerignore` file, line by line as moby's `ignorefile.ReadAll`
    /// reads it (Go's `bufio.Scanner`): lines end at `\n`, one `\r` before it is dropped, and a
    /// line of 64 KiB or more makes the whole file an error, before any pattern is looked at.
    /// A byte order mark is removed from the start of the file only; on any other line it is
    /// part of the pattern.
    pub fn parse(text: &str) -> Result<DockerIgnore, DockerIgnoreError> {
        let lines = go_lines(text);
        if let Some(index) = lines.iter().position(|l| l.len() >= MAX_LINE) {
            return Err(DockerIgnoreError::LineTooLong { line: index + 1 });
        }
        let mut ignore = DockerIgnore::default();
        for (index, raw) in lines.into_iter().enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let raw = if index == 0 {
                raw.strip_prefix('\u{feff}').unwrap_or(raw)
            } else {
                raw
            };
            // A comment only when `#` is the very first character, before trimming (as Docker).
            if raw.starts_with('#') {
                continue;
            }
            let mut pattern = raw.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let mut cleaned = if pattern.is_empty() {
                String::new()
            } else {
                clean(pattern)
            };
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let line = if exception {
                format!("!{cleaned}")
            } else {
                cleaned
            };
            ignore.push(&line, index + 1)?;
        }
        Ok(ignore)
    }

    /// Adds one pattern line as moby's `patternmatcher.New` takes it.
    fn push(&mut self, line: &str, line_no: usize) -> Result<(), DockerIgnoreError> {
        let bad = |reason: &str| DockerIgnoreError::BadPattern {
            line: line_no,
            pattern: line.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        let cleaned = clean(trimmed);
        let (exception, text) = match cleaned.strip_prefix('!') {
            Some("") => return Err(bad("a lone `!` excepts nothing")),
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        validate_glob(&text).map_err(bad)?;
        let kind = compile(&text).map_err(|e| bad(&e))?;
        self.patterns.push(Pattern {
            text,
            exception,
            kind,
        });
        Ok(())
    }

    /// Docker always sends the Dockerfile (path relative to the context) and `.dockerignore`
    /// itself, whatever the patterns say: exceptions for them are added at the end when needed.
    pub fn keep_build_files(&mut self, dockerfile: &str) {
        for keep in [".dockerignore", dockerfile] {
            if self.is_excluded(keep) {
                // Cannot fail: a path that was just matched is a valid literal pattern, or
                // Docker's own exception would have failed in the same way.
                let _ = self.push(&format!("!{keep}"), 0);
            }
        }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out, because it or one
    /// of its parent directories matches, and no later exception brings it back.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parent = match path.rfind('/') {
            Some(i) => &path[..i],
            None => ".",
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // An include cannot change an already excluded path, nor an exception a kept one.
            if pattern.exception != excluded {
                continue;
            }
            let mut matched = pattern.matches(&path);
            if !matched && parent != "." {
                matched = parent
                    .match_indices('/')
                    .map(|(i, _)| &parent[..i])
                    .chain([parent])
                    .any(|dir| pattern.matches(dir));
            }
            if matched {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// For an excluded directory: whether it must still be walked because an exception's text
    /// starts with `dir/` (Docker's check, on the pattern's text, not by matching).
    pub fn must_descend(&self, dir: &str) -> bool {
        let dir_slash = format!("{}/", clean(dir));
        self.patterns
            .iter()
            .any(|p| p.exception && format!("{}/", p.text).starts_with(&dir_slash))
    }

    /// The patterns as cleaned (exceptions with their `!`), for messages.
    #[cfg(test)]
    fn texts(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exception {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }
}

/// Go's `bufio.MaxScanTokenSize`: a line (without its `\n`) must be shorter.
const MAX_LINE: usize = 64 * 1024;

/// The lines `bufio.ScanLines` gives, each still with a `\r` that ended it: split at `\n`, and
/// no empty line after a final `\n`.
fn go_lines(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    text.strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect()
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// The syntax check moby's `patternmatcher.New` makes: Go's `filepath.Match(pattern, ".")`, and
/// its error. `Match` checks each `*`-separated chunk it tries, up to the first that fails to
/// match `.`, and no further, so `a*[` passes (its regex then fails to compile, which is
/// an error too, see [`compile`]) while `**/x*\` passes and means what its regex means.
fn validate_glob(pattern: &str) -> Result<(), &'static str> {
    go_filepath::matches(pattern.as_bytes(), b".").map(|_| ())
}

/// Go's `path/filepath.Match` (as of Go 1.23, on Unix), on bytes as Go reads strings.
mod go_filepath {
    type Bad = &'static str;
    const UNCLOSED: Bad = "unclosed `[`";
    const TRAILING: Bad = "`\\` at the end";
    const MISPLACED: Bad = "`-` or `]` where a character is expected in `[...]`";

    pub fn matches(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, Bad> {
        'pattern: while !pattern.is_empty() {
            let (star, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            if star && chunk.is_empty() {
                // A trailing `*` matches the rest unless it has a `/`.
                return Ok(!name.contains(&b'/'));
            }
            if let Some(t) = match_chunk(chunk, name)?
                && (t.is_empty() || !pattern.is_empty())
            {
                name = t;
                continue;
            }
            if star {
                let mut i = 0;
                while i < name.len() && name[i] != b'/' {
                    // A match that leaves text over is no use for the last chunk.
                    if let Some(t) = match_chunk(chunk, &name[i + 1..])?
                        && (!pattern.is_empty() || t.is_empty())
                    {
                        name = t;
                        continue 'pattern;
                    }
                    i += 1;
                }
            }
            return Ok(false);
        }
        Ok(name.is_empty())
    }

    /// The next chunk: leading stars, then everything up to a `*` outside `[...]`.
    fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
        let mut star = false;
        while pattern.first() == Some(&b'*') {
            pattern = &pattern[1..];
            star = true;
        }
        let mut in_range = false;
        let mut i = 0;
        while i < pattern.len() {
            match pattern[i] {
                b'\\' if i + 1 < pattern.len() => i += 1,
                b'[' => in_range = true,
                b']' => in_range = false,
                b'*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        (star, &pattern[..i], &pattern[i..])
    }

    /// Whether `chunk` matches the start of `s` (the rest of `s` if so). After a mismatch the
    /// chunk is still read to the end, for its syntax.
    fn match_chunk<'s>(mut chunk: &[u8], mut s: &'s [u8]) -> Result<Option<&'s [u8]>, Bad> {
        let mut failed = false;
        while let Some(&c) = chunk.first() {
            if !failed && s.is_empty() {
                failed = true;
            }
            match c {
                b'[' => {
                    let mut r = 0;
                    if !failed {
                        let (rune, n) = decode(s);
                        r = rune;
                        s = &s[n..];
                    }
                    chunk = &chunk[1..];
                    let negated = chunk.first() == Some(&b'^');
                    if negated {
                        chunk = &chunk[1..];
                    }
                    let mut matched = false;
                    let mut ranges = 0;
                    loop {
                        if chunk.first() == Some(&b']') && ranges > 0 {
                            chunk = &chunk[1..];
                            break;
                        }
                        let (lo, rest) = get_esc(chunk)?;
                        chunk = rest;
                        let mut hi = lo;
                        if chunk.first() == Some(&b'-') {
                            let (h, rest) = get_esc(&chunk[1..])?;
                            hi = h;
                            chunk = rest;
                        }
                        if lo <= r && r <= hi {
                            matched = true;
                        }
                        ranges += 1;
                    }
                    if matched == negated {
                        failed = true;
                    }
                }
                b'?' => {
                    if !failed {
                        if s[0] == b'/' {
                            failed = true;
                        }
                        s = &s[decode(s).1..];
                    }
                    chunk = &chunk[1..];
                }
                _ => {
                    if c == b'\\' {
                        chunk = &chunk[1..];
                        if chunk.is_empty() {
                            return Err(TRAILING);
                        }
                    }
                    if !failed {
                        if chunk[0] != s[0] {
                            failed = true;
                        }
                        s = &s[1..];
                    }
                    chunk = &chunk[1..];
                }
            }
        }
        Ok((!failed).then_some(s))
    }

    /// One possibly escaped character of a class; the class must go on after it.
    fn get_esc(mut chunk: &[u8]) -> Result<(u32, &[u8]), Bad> {
        match chunk.first() {
            None => return Err(UNCLOSED),
            Some(b'-' | b']') => return Err(MISPLACED),
            Some(b'\\') => {
                chunk = &chunk[1..];
                if chunk.is_empty() {
                    return Err(TRAILING);
                }
            }
            Some(_) => {}
        }
        let (r, n) = decode(chunk);
        if chunk.len() == n {
            return Err(UNCLOSED);
        }
        Ok((r, &chunk[n..]))
    }

    /// Go's `utf8.DecodeRune`: the first character and its length, `(U+FFFD, 1)` for a byte
    /// that starts none, `(U+FFFD, 0)` for nothing.
    fn decode(b: &[u8]) -> (u32, usize) {
        let head = &b[..b.len().min(4)];
        let valid = match std::str::from_utf8(head) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        };
        match valid.chars().next() {
            Some(c) => (c as u32, c.len_utf8()),
            None => (0xFFFD, usize::from(!b.is_empty())),
        }
    }
}

/// moby's `shouldEscape`, as it behaves: it means to escape `.+()|{}$`, but its bitmap keeps
/// only characters below 64 (`1 << (c / 8)` overflows a byte), so `|`, `{` and `}` reach the
/// regex as they are: `a|b` is an alternation, `a{2}` a repetition.
fn should_escape(c: char) -> bool {
    ".+()$".contains(c)
}

/// moby's `Pattern.compile`, step for step: the pattern becomes a Go regex (or one of the
/// exact/prefix/suffix shortcuts, which are part of the behaviour: `**name` matches any path
/// ending in `name`), and that Go regex is then read with Go's syntax ([`go_regex`]). Docker
/// converts `*`, `?` and `**` wherever they are, also between `[` and `]`, and passes `[`, `]`
/// and `\x` through, so inside a class they mean what they mean in the Go regex: `[*]` is the
/// class `[[^/]` repeated, then a literal `]` (it matches `]` and `[]`, not `*`). A byte order
/// mark at the start of the pattern is skipped (Go's `text/scanner` drops it), but stays in the
/// text the shortcuts compare with.
fn compile(text: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let mut chars = text.chars().peekable();
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                detected = Detected::Regex;
            }
            c if should_escape(c) => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    detected = Detected::Regex;
                }
                None => re.push('\\'),
            },
            '[' | ']' => {
                re.push(c);
                detected = Detected::Regex;
            }
            c => re.push(c),
        }
        first = false;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        // Byte slices, as Go takes them: after a skipped byte order mark, `[2..]` is not
        // at a character boundary.
        Detected::Prefix => Kind::Prefix(text.as_bytes()[..text.len() - 2].to_vec()),
        Detected::Suffix => Kind::Suffix(text.as_bytes()[2..].to_vec()),
        Detected::Regex => {
            re.push('$');
            let rust = go_regex::to_rust(&re).map_err(|e| format!("{e} in the regex `{re}`"))?;
            Kind::Regex(Regex::new(&rust).map_err(|e| e.to_string())?)
        }
    })
}

/// The part of Go's `regexp/syntax` (with the `Perl` flags `regexp.Compile` uses) that a regex
/// made by [`compile`] can contain, rewritten in the syntax of Rust's `regex` with the same
/// meaning: literals escaped, classes as explicit ranges (Go reads `[` inside a class as a
/// literal, and `\d`, `\w`, `\s`, `\b` as ASCII), `\Q...\E`, octal and hex escapes. What Go
/// rejects is an error here; Unicode classes (`\pL`, `\p{Greek}`) are refused, as their tables
/// differ between Go and Rust.
mod go_regex {
    use std::fmt::Write;

    const MAX: u32 = 0x10_FFFF;

    #[derive(Clone, Copy, PartialEq)]
    enum Last {
        /// Start, `(` or `|`: nothing to repeat.
        Nothing,
        Atom,
        Repeat,
    }

    pub fn to_rust(go: &str) -> Result<String, String> {
        let s: Vec<char> = go.chars().collect();
        let mut t = Translation {
            s: &s,
            i: 0,
            out: String::new(),
            depth: 0,
            last: Last::Nothing,
        };
        while t.i < s.len() {
            t.step()?;
        }
        if t.depth > 0 {
            return Err("a missing `)`".into());
        }
        Ok(t.out)
    }

    /// A Go regex being rewritten: where it has got to in `s`, and what it wrote so far.
    struct Translation<'a> {
        s: &'a [char],
        i: usize,
        out: String,
        /// Groups open.
        depth: usize,
        last: Last,
    }

    impl Translation<'_> {
        /// Rewrites the token at `i` and moves past it.
        fn step(&mut self) -> Result<(), String> {
            match self.s[self.i] {
                '(' => self.open_group()?,
                ')' => self.close_group()?,
                '|' => {
                    self.out.push('|');
                    self.last = Last::Nothing;
                    self.i += 1;
                }
                c @ ('*' | '+' | '?') => self.repetition(c)?,
                '{' => self.braces()?,
                '^' => self.atom("(?:^)", 1),
                '$' => self.atom("(?:$)", 1),
                // Any character but a newline, in both.
                '.' => self.atom(".", 1),
                '[' => {
                    let (ranges, next) = class(self.s, self.i)?;
                    push_class(&mut self.out, &ranges);
                    self.last = Last::Atom;
                    self.i = next;
                }
                '\\' => self.backslash()?,
                c => self.literal(c),
            }
            Ok(())
        }

        /// Writes `rust` for an atom `len` characters long in Go.
        fn atom(&mut self, rust: &str, len: usize) {
            self.out.push_str(rust);
            self.last = Last::Atom;
            self.i += len;
        }

        fn literal(&mut self, c: char) {
            push_char(&mut self.out, c as u32);
            self.last = Last::Atom;
            self.i += 1;
        }

        fn open_group(&mut self) -> Result<(), String> {
            if self.s.get(self.i + 1) == Some(&'?') {
                return Err("a `(?` group".into());
            }
            self.out.push_str("(?:");
            self.depth += 1;
            self.last = Last::Nothing;
            self.i += 1;
            Ok(())
        }

        fn close_group(&mut self) -> Result<(), String> {
            if self.depth == 0 {
                return Err("an unexpected `)`".into());
            }
            self.out.push(')');
            self.depth -= 1;
            self.last = Last::Atom;
            self.i += 1;
            Ok(())
        }

        /// `op` may follow only an atom.
        fn check_repeatable(&self, op: char) -> Result<(), String> {
            match self.last {
                Last::Nothing => Err(format!("`{op}` with nothing to repeat")),
                Last::Repeat => Err(format!("a nested repetition `{op}`")),
                Last::Atom => Ok(()),
            }
        }

        /// After a repetition: its non-greedy `?`, if any.
        fn end_repetition(&mut self) {
            if self.s.get(self.i) == Some(&'?') {
                self.out.push('?');
                self.i += 1;
            }
            self.last = Last::Repeat;
        }

        /// `*`, `+` or `?`.
        fn repetition(&mut self, op: char) -> Result<(), String> {
            self.check_repeatable(op)?;
            self.out.push(op);
            self.i += 1;
            self.end_repetition();
            Ok(())
        }

        /// `{n}`, `{n,}` or `{n,m}`; else a literal `{`.
        fn braces(&mut self) -> Result<(), String> {
            let Some((min, max, next)) = repeat(self.s, self.i) else {
                self.literal('{');
                return Ok(());
            };
            let too_big = |n: i64| !(0..=1000).contains(&n);
            if too_big(min) || max.is_some_and(|m| too_big(m) || m < min) {
                return Err("an invalid repeat count".into());
            }
            self.check_repeatable('{')?;
            let _ = match max {
                Some(m) if m == min => write!(self.out, "{{{min}}}"),
                Some(m) => write!(self.out, "{{{min},{m}}}"),
                None => write!(self.out, "{{{min},}}"),
            };
            self.i = next;
            self.end_repetition();
            Ok(())
        }

        /// The `\` at `i`: an assertion, `\Q...\E`, a Perl class or an escaped character.
        fn backslash(&mut self) -> Result<(), String> {
            match self.s.get(self.i + 1) {
                Some('A') => self.atom(r"(?:\A)", 2),
                Some('z') => self.atom(r"(?:\z)", 2),
                Some('b') => self.atom(r"(?:(?-u:\b))", 2),
                Some('B') => self.atom(r"(?:(?-u:\B))", 2),
                Some('Q') => self.quoted(),
                Some('p' | 'P') => return Err("a Unicode class (`\\p`)".into()),
                Some(&k) if perl_class(k).is_some() => {
                    push_class(&mut self.out, &perl_class(k).unwrap_or_default());
                    self.last = Last::Atom;
                    self.i += 2;
                }
                _ => {
                    let (r, next) = escape(self.s, self.i)?;
                    push_char(&mut self.out, r);
                    self.last = Last::Atom;
                    self.i = next;
                }
            }
            Ok(())
        }

        /// `\Q`: literal text up to `\E` or the end (the closing `$` included).
        fn quoted(&mut self) {
            let s = self.s;
            self.i += 2;
            while self.i < s.len() && !(s[self.i] == '\\' && s.get(self.i + 1) == Some(&'E')) {
                self.literal(s[self.i]);
            }
            self.i = (self.i + 2).min(s.len());
        }
    }

    /// Go's `parseRepeat` at the `{` at `i`: `{n}`, `{n,}` (no maximum) or `{n,m}`, and where it
    /// ends; numbers without leading zeros, too large ones as -1.
    fn repeat(s: &[char], i: usize) -> Option<(i64, Option<i64>, usize)> {
        let int = |mut k: usize| -> Option<(i64, usize)> {
            let start = k;
            if !s.get(k)?.is_ascii_digit() {
                return None;
            }
            if s[k] == '0' && s.get(k + 1).is_some_and(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut n: i64 = 0;
            while k < s.len() && s[k].is_ascii_digit() {
                k += 1;
            }
            for &d in &s[start..k] {
                if n >= 100_000_000 {
                    n = -1;
                    break;
                }
                n = n * 10 + i64::from(d as u8 - b'0');
            }
            Some((n, k))
        };
        let (min, mut k) = int(i + 1)?;
        let max = match s.get(k)? {
            ',' => {
                k += 1;
                if *s.get(k)? == '}' {
                    None
                } else {
                    let (m, next) = int(k)?;
                    k = next;
                    Some(m)
                }
            }
            _ => Some(min),
        };
        // Go marks a too large maximum by making the minimum -1.
        let min = if max == Some(-1) { -1 } else { min };
        (s.get(k) == Some(&'}')).then_some((min, max, k + 1))
    }

    /// Go's `parseClass` from the `[` at `start`: the ranges it holds (negation applied) and
    /// where it ends.
    fn class(s: &[char], start: usize) -> Result<(Vec<(u32, u32)>, usize), String> {
        let missing = || "a missing `]`".to_string();
        let mut i = start + 1;
        let negated = s.get(i) == Some(&'^');
        if negated {
            i += 1;
        }
        let mut ranges = Vec::new();
        // `]` first is a literal.
        let mut first = true;
        loop {
            match s.get(i) {
                None => return Err(missing()),
                Some(']') if !first => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            first = false;
            // `[:alpha:]`, looked for up to the first `:]` anywhere after it, as Go does.
            if s[i] == '['
                && s.get(i + 1) == Some(&':')
                && i + 2 < s.len()
                && let Some(end) = (i + 2..s.len() - 1).find(|&k| s[k] == ':' && s[k + 1] == ']')
            {
                let name: String = s[i + 2..end].iter().collect();
                let group =
                    posix_class(&name).ok_or_else(|| format!("an unknown class `[:{name}:]`"))?;
                ranges.extend(group);
                i = end + 2;
                continue;
            }
            if s[i] == '\\' {
                match s.get(i + 1) {
                    Some('p' | 'P') => return Err("a Unicode class (`\\p`)".into()),
                    Some(&k) if perl_class(k).is_some() => {
                        ranges.extend(perl_class(k).unwrap_or_default());
                        i += 2;
                        continue;
                    }
                    _ => {}
                }
            }
            let (lo, next) = class_char(s, i)?;
            i = next;
            let mut hi = lo;
            if s.get(i) == Some(&'-') && s.get(i + 1).is_some_and(|&c| c != ']') {
                let (h, next) = class_char(s, i + 1)?;
                if h < lo {
                    return Err("a range that runs backwards in `[...]`".into());
                }
                hi = h;
                i = next;
            }
            ranges.push((lo, hi));
        }
        let ranges = normalize(ranges);
        Ok((if negated { negate(&ranges) } else { ranges }, i))
    }

    fn class_char(s: &[char], i: usize) -> Result<(u32, usize), String> {
        match s.get(i) {
            None => Err("a missing `]`".into()),
            Some('\\') => escape(s, i),
            Some(&c) => Ok((c as u32, i + 1)),
        }
    }

    /// Go's `parseEscape` at the `\` at `i`: the character and where the escape ends.
    fn escape(s: &[char], i: usize) -> Result<(u32, usize), String> {
        let bad = |end: usize| {
            let text: String = s[i..end.min(s.len())].iter().collect();
            format!("an invalid escape `{text}`")
        };
        let Some(&c) = s.get(i + 1) else {
            return Err("a trailing `\\`".into());
        };
        let octal = |k: usize| s.get(k).filter(|d| ('0'..='7').contains(*d)).copied();
        match c {
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c as u32, i + 2)),
            '1'..='7' if octal(i + 2).is_none() => Err(bad(i + 2)),
            '0'..='7' => {
                let mut r = c as u32 - '0' as u32;
                let mut k = i + 2;
                while k < i + 4 {
                    let Some(d) = octal(k) else { break };
                    r = r * 8 + (d as u32 - '0' as u32);
                    k += 1;
                }
                Ok((r, k))
            }
            'x' if s.get(i + 2) == Some(&'{') => {
                let mut r: u32 = 0;
                let mut k = i + 3;
                loop {
                    match s.get(k) {
                        None => return Err(bad(k)),
                        Some('}') if k > i + 3 => return Ok((r, k + 1)),
                        Some(&h) => {
                            let v = h.to_digit(16).ok_or_else(|| bad(k + 1))?;
                            r = r * 16 + v;
                            if r > MAX {
                                return Err(bad(k + 1));
                            }
                        }
                    }
                    k += 1;
                }
            }
            'x' => {
                let hex = |k: usize| s.get(k).and_then(|h| h.to_digit(16));
                match (hex(i + 2), hex(i + 3)) {
                    (Some(x), Some(y)) => Ok((x * 16 + y, i + 4)),
                    _ => Err(bad(i + 4)),
                }
            }
            'a' => Ok((0x07, i + 2)),
            'f' => Ok((0x0C, i + 2)),
            'n' => Ok((0x0A, i + 2)),
            'r' => Ok((0x0D, i + 2)),
            't' => Ok((0x09, i + 2)),
            'v' => Ok((0x0B, i + 2)),
            _ => Err(bad(i + 2)),
        }
    }

    /// Go's Perl classes: ASCII only.
    fn perl_class(k: char) -> Option<Vec<(u32, u32)>> {
        let d = vec![(0x30, 0x39)];
        let s = vec![(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)];
        let w = vec![(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];
        Some(match k {
            'd' => d,
            's' => s,
            'w' => w,
            'D' => negate(&d),
            'S' => negate(&s),
            'W' => negate(&w),
            _ => return None,
        })
    }

    /// Go's POSIX classes, `alpha` or `^alpha`.
    fn posix_class(name: &str) -> Option<Vec<(u32, u32)>> {
        let (negated, name) = match name.strip_prefix('^') {
            Some(name) => (true, name),
            None => (false, name),
        };
        let ranges: Vec<(u32, u32)> = match name {
            "alnum" => vec![(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
            "alpha" => vec![(0x41, 0x5A), (0x61, 0x7A)],
            "ascii" => vec![(0x00, 0x7F)],
            "blank" => vec![(0x09, 0x09), (0x20, 0x20)],
            "cntrl" => vec![(0x00, 0x1F), (0x7F, 0x7F)],
            "digit" => vec![(0x30, 0x39)],
            "graph" => vec![(0x21, 0x7E)],
            "lower" => vec![(0x61, 0x7A)],
            "print" => vec![(0x20, 0x7E)],
            "punct" => vec![(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
            "space" => vec![(0x09, 0x0D), (0x20, 0x20)],
            "upper" => vec![(0x41, 0x5A)],
            "word" => vec![(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
            "xdigit" => vec![(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
            _ => return None,
        };
        Some(if negated { negate(&ranges) } else { ranges })
    }

    fn normalize(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
        ranges.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    /// The complement over every code point (Go's negated classes also match `\n`).
    fn negate(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut next = 0u32;
        for &(lo, hi) in &normalize(ranges.to_vec()) {
            if lo > next {
                out.push((next, lo - 1));
            }
            next = hi.saturating_add(1);
        }
        if next <= MAX {
            out.push((next, MAX));
        }
        out
    }

    /// A class of explicit ranges. Surrogates are left out: no text holds them, in either
    /// language, and Rust refuses them. An empty class matches nothing.
    fn push_class(out: &mut String, ranges: &[(u32, u32)]) {
        out.push('[');
        let mut any = false;
        for &(lo, hi) in ranges {
            for (lo, hi) in [(lo, hi.min(0xD7FF)), (lo.max(0xE000), hi)] {
                if lo <= hi {
                    let _ = write!(out, r"\x{{{lo:X}}}-\x{{{hi:X}}}");
                    any = true;
                }
            }
        }
        if !any {
            // `[^\x{0}-\x{10FFFF}]`: the empty class.
            out.push_str(r"^\x{0}-\x{10FFFF}");
        }
        out.push(']');
    }

    /// One literal character; a surrogate (`\x{D800}`) can match nothing.
    fn push_char(out: &mut String, r: u32) {
        match char::from_u32(r) {
            Some(c) => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            None => out.push_str(r"[^\x{0}-\x{10FFFF}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(lines: &[&str]) -> DockerIgnore {
        DockerIgnore::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn cleans_like_go_filepath_clean() {
        for (given, want) in [
            ("", "."),
            (".", "."),
            ("a/b/", "a/b"),
            ("./a//b/./c", "a/b/c"),
            ("a/../b", "b"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//a", "/a"),
            ("../..", "../.."),
        ] {
            assert_eq!(clean(given), want, "{given:?}");
        }
    }

    #[test]
    fn lines_are_read_as_docker_reads_them() {
        let got = ignore(&[
            "\u{feff}# comment",
            "\u{feff}kept-bom\r",
            "  # not a comment: leading space",
            "",
            "   ",
            "/abs/path/",
            "./rel/../other//x",
            " ! spaced/exception ",
            "!/rooted-exception",
            "trailing-space   ",
        ]);
        assert_eq!(
            got.texts(),
            [
                "\u{feff}kept-bom",
                "# not a comment: leading space",
                "abs/path",
                "other/x",
                "!spaced/exception",
                "!rooted-exception",
                "trailing-space",
            ]
        );
    }

    /// (pattern, path, excluded): single patterns, from Docker's own documentation and the cases
    /// its matcher is tested with; "excluded" includes matching through a parent directory.
    #[test]
    fn single_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "file", true),
            ("*", "dir/file", true), // through the parent `dir`
            ("*.go", "main.go", true),
            ("*.go", "cmd/main.go", false),
            ("*/*.go", "cmd/main.go", true),
            ("*/temp*", "somedir/temporary.txt", true),
            ("*/temp*", "somedir/sub/temporary.txt", false),
            ("*/*/temp*", "a/b/temp", true),
            ("temp?", "tempa", true),
            ("temp?", "temp", false),
            ("temp?", "temp/x", false),
            ("**", "anything/at/all", true),
            ("**/*.log", "app.log", true),
            ("**/*.log", "a/b/app.log", true),
            ("**/*.log", "a/b/app.logs", false),
            ("**/dir", "dir", true),
            ("**/dir", "x/dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**file", "dir/dir/file", true),
            ("**file", "dir/myfile", true), // moby's suffix shortcut: any path ending in `file`
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/a/b", true),
            ("dir/**", "dir", false),
            ("dir/**", "dirx/file", false),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".env", true),
            (".*", "env", false),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("a(b)c/def", "a(b)c/def", true),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/*.whl",
                "dist/p-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("node_modules", "node_modules/x/y.js", true),
            ("node_modules", "src/node_modules/x.js", false), // anchored at the root, unlike gitignore
            ("/big/", "big/blob.bin", true),
            ("./big", "big", true),
            ("big/../secret", "secret", true),
            ("?", "a/b", true), // through the parent `a`
            ("*.md", "README.md", true),
            ("[[]x", "[x", true),
            ("[a&&b]", "&", true),
            ("[*]", "a", false),
            ("x]", "x]", true),
        ];
        for &(pattern, path, want) in cases {
            assert_eq!(
                ignore(&[pattern]).is_excluded(path),
                want,
                "pattern {pattern:?} path {path:?}"
            );
        }
    }

    /// Docker's answers, quirks included: each row is what moby/patternmatcher v0.6.1
    /// (`ignorefile.ReadAll`, `New`, `MatchesOrParentMatches`, built with Go 1.23) gives for
    /// that `.dockerignore` text and path. Inside `[...]`, `*` and `?` are still translated, so
    /// `[*]` is `[[^/]*]` in the regex; `|`, `{` and `}` reach the regex unescaped, but only a
    /// pattern that is a regex at all (it has `*`, `?`, `[`, `]` or `\`) treats them so; a byte
    /// order mark counts at the start of the file only, and a later one is skipped by the regex
    /// but kept by the exact, prefix and suffix comparisons.
    #[test]
    fn docker_answers_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("[*]", "*", false),
            ("[*]", "]", true),
            ("[*]", "[]", true),
            ("[*]", "a", false),
            ("[?]", "?", false),
            ("[?]", "[]", true),
            ("[?]", "^]", true),
            ("[?]", "]", false),
            ("[[]x", "[x", true),
            ("[[]", "[", true),
            ("x]", "x]", true),
            ("[a&&b]", "&", true),
            ("[a-c]", "b", true),
            ("[^a]", "b", true),
            ("[^a]", "a", false),
            ("[**]", "*", true),
            ("[**]", "(", true),
            ("a[*]b", "a*b", false),
            ("a[*]b", "a]b", true),
            ("[[:digit:]]", "7", true),
            ("[[:digit:]]", "[", false),
            ("[:alpha:]", "a", true),
            ("[:alpha:]", ":", true),
            ("a|b", "xyzb", false),
            ("a|b", "ax", false),
            ("a|b", "x", false),
            ("secret|", "anything", false),
            ("a{2}", "aa", false),
            ("a{2}", "a{2}", true),
            ("a{x}", "a{x}", true),
            ("{a,b}", "a", false),
            ("{a,b}", "{a,b}", true),
            ("a.b", "axb", false),
            ("a+b", "a+b", true),
            ("(a)", "(a)", true),
            ("$x", "$x", true),
            ("\\d", "7", true),
            ("\\d", "d", false),
            ("a\\.b", "a.b", true),
            ("a\\*b", "a*b", true),
            ("\\[x]", "[x]", true),
            ("\\x41", "A", true),
            ("\\101", "A", true),
            ("\\n", "\n", true),
            ("a\\Q*", "a[^/]*$", true),
            ("a\\Q*", "ab", false),
            ("a\\Q*\\Eb", "a[^/]*b", true),
            ("ab*\\", "ab$", true),
            ("ab*\\", "abc$", true),
            ("ab*\\", "abc$/x", true),
            ("ab*\\", "ab", false),
            ("x\n\u{feff}*.env", ".env", true),
            ("x\n\u{feff}*.env", "a.env", true),
            ("x\n\u{feff}secret", "secret", false),
            ("x\n\u{feff}secret", "\u{feff}secret", true),
            ("\u{feff}secret", "secret", true),
            ("\u{feff}#comment\nx", "#comment", false),
            ("x\n\u{feff}#kept", "\u{feff}#kept", true),
            ("x\n\u{feff}**/y", "a/y", false),
            ("x\n\u{feff}**/y", "y", false),
            ("a\r\nb\r\n", "b", true),
            ("**", "a/b", true),
            ("**/x", "x", true),
            ("**x", "ax", true),
            ("dir/**", "dir/a", true),
            ("dir/**", "dir", false),
            ("[a-c]|x*", "anything", true),
            ("[a-c]{2}", "ab", true),
            ("[a-c]{2}", "abc", false),
        ];
        for &(text, path, want) in cases {
            let ignore = DockerIgnore::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(
                ignore.is_excluded(path),
                want,
                "dockerignore {text:?} path {path:?}"
            );
        }
    }

    #[test]
    fn syntax_is_checked_as_go_filepath_match_checks_it() {
        // `Match(pattern, ".")` stops at the first chunk that does not match `.`: what follows
        // is not checked, and means what Docker's regex makes of it (`\` escapes the final `$`).
        for accepted in ["ab*\\", "**/x*\\", "a*[b", "x*[]"] {
            let parsed = DockerIgnore::parse(accepted);
            let regex_fails = accepted.contains('[');
            assert_eq!(parsed.is_err(), regex_fails, "{accepted:?}: {parsed:?}");
        }
        // The regex Docker makes of `a*[b` does not compile: an error, named with its line.
        let err = DockerIgnore::parse("ok\na*[b").unwrap_err();
        assert!(
            matches!(err, DockerIgnoreError::BadPattern { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("missing `]`"), "{err}");
        // Unicode classes are refused rather than guessed.
        let err = DockerIgnore::parse("*\\pL").unwrap_err();
        assert!(err.to_string().contains("Unicode class"), "{err}");
    }

    #[test]
    fn a_line_of_64_kib_makes_the_file_unreadable_as_for_docker() {
        // bufio.Scanner's limit: a line and its `\n` must fit in 64 KiB; a `\r` counts.
        let long = "a".repeat(64 * 1024);
        let err = DockerIgnore::parse(&format!("x\n{long}\n")).unwrap_err();
        assert!(
            matches!(err, DockerIgnoreError::LineTooLong { line: 2 }),
            "{err}"
        );
        for (text, fits) in [
            (format!("{}\n", &long[1..]), true),
            (long[1..].to_string(), true),
            (format!("{}\r\n", &long[2..]), true),
            (format!("{}\r\n", &long[1..]), false),
            (long.clone(), false),
        ] {
            assert_eq!(DockerIgnore::parse(&text).is_ok(), fits, "{}", text.len());
        }
    }

    #[test]
    fn go_regex_translation() {
        for (go, rust) in [
            ("^a|b$", "(?:^)a|b(?:$)"),
            ("^[*]$", r"(?:^)[\x{2A}-\x{2A}](?:$)"),
            (
                r"^\d\x41\101\Q.*\E\.$",
                r"(?:^)[\x{30}-\x{39}]AA\.\*\.(?:$)",
            ),
            ("^a{2,}?$", "(?:^)a{2,}?(?:$)"),
            ("^a{,2}$", r"(?:^)a\{,2\}(?:$)"),
            ("^[^[:^alpha:]]$", r"(?:^)[\x{41}-\x{5A}\x{61}-\x{7A}](?:$)"),
        ] {
            assert_eq!(go_regex::to_rust(go).as_deref(), Ok(rust), "{go}");
        }
        for bad in [
            "a**",
            "*",
            "(*",
            "a{1001}",
            "a{2,1}",
            r"\q",
            r"\1",
            r"\x{110000}",
            "[b-a]",
            "[[:foo:]]",
            "(",
            ")",
            r"\pL",
            "[a",
        ] {
            assert!(go_regex::to_rust(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn last_match_wins_and_exceptions_bring_files_back() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*.md", "!README.md"], "README.md", false),
            (&["*.md", "!README.md"], "CHANGES.md", true),
            (&["!README.md", "*.md"], "README.md", true),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README-secret.md",
                true,
            ),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README-public.md",
                false,
            ),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md"], "docs/other.md", true),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (
                &["**", "!util/docker/web", "util/docker/web/foo"],
                "util/docker/web/foo",
                true,
            ),
            (&["**", "!dist/*.whl"], "dist/a-1.0-py3-none-any.whl", false),
            (&["*", "!keep"], "keep", false),
            (&["*", "!keep"], "keep/inner", false),
        ];
        for &(patterns, path, want) in cases {
            assert_eq!(
                ignore(patterns).is_excluded(path),
                want,
                "patterns {patterns:?} path {path:?}"
            );
        }
    }

    #[test]
    fn excluded_directories_are_entered_only_for_a_literal_exception_below_them() {
        let i = ignore(&["big", "!big/keep.txt", "logs", "!*/keep.log"]);
        assert!(i.is_excluded("big"));
        assert!(i.must_descend("big"));
        assert!(!i.is_excluded("big/keep.txt"));
        assert!(i.is_excluded("big/blob.bin"));
        // Docker checks the exception's text, so a wildcard one does not reopen `logs`.
        assert!(i.is_excluded("logs"));
        assert!(!i.must_descend("logs"));
        assert!(!i.must_descend("bi"));
        let nested = ignore(&["a", "!a/b/c"]);
        assert!(nested.must_descend("a") && nested.must_descend("a/b"));
        assert!(!nested.must_descend("a/x"));
    }

    #[test]
    fn the_dockerfile_and_dockerignore_are_always_sent() {
        let mut i = ignore(&["*", "!src"]);
        assert!(i.is_excluded("Dockerfile") && i.is_excluded(".dockerignore"));
        i.keep_build_files("Dockerfile");
        assert!(!i.is_excluded("Dockerfile"));
        assert!(!i.is_excluded(".dockerignore"));
        assert!(i.is_excluded("other"));

        let mut nested = ignore(&["deploy"]);
        nested.keep_build_files("deploy/app.Dockerfile");
        assert!(!nested.is_excluded("deploy/app.Dockerfile"));
        assert!(nested.must_descend("deploy"));
        assert!(nested.is_excluded("deploy/secrets.env"));

        let mut untouched = ignore(&["*.log"]);
        untouched.keep_build_files("Dockerfile");
        assert_eq!(untouched.texts(), ["*.log"]);
    }

    #[test]
    fn the_context_root_is_never_excluded() {
        assert!(!ignore(&["*", "**", "."]).is_excluded("."));
    }

    #[test]
    fn bad_patterns_name_the_line() {
        for bad in [
            "[", "a[", "[^bc", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]", "\\", "!",
        ] {
            let err = DockerIgnore::parse(&format!("ok\n{bad}")).unwrap_err();
            assert!(
                matches!(err, DockerIgnoreError::BadPattern { line: 2, .. }),
                "{bad:?}: {err}"
            );
        }
        for good in [
            "[\\]a]", "[\\-]", "[x\\-]", "[a-ζ]*", "ab[^e-g]", "[[]", "[a&&b]", "x]",
        ] {
            DockerIgnore::parse(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }
}
