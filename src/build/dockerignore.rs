//! `.dockerignore` with Docker's own rules (moby's `ignorefile` + `patternmatcher`, as the CLI
//! and the classic builder use them), not gitignore's:
//!
//! - a line starting with `#` is a comment; other lines are trimmed, `!` marks an exception, and
//!   the pattern is cleaned like Go's `filepath.Clean` (so `./a/../b/` is `b`), a leading `/`
//!   dropped: every pattern is relative to the context root;
//! - `*` and `?` stop at `/`, `**` crosses directories, `[...]` classes and `\` escapes as in
//!   Go's `filepath.Match`;
//! - a pattern that matches a directory matches everything under it;
//! - the last matching line wins, so `!keep` after `*.log` brings a file back;
//! - an excluded directory is not walked into unless an exception's text starts with that
//!   directory's path (`!big/keep.txt` for `big`): a wildcard exception such as `!*/keep.txt`
//!   does not reopen it, exactly as in Docker;
//! - the Dockerfile and `.dockerignore` are always sent ([`DockerIgnore::keep_build_files`]).

use std::path::Path;

use regex::Regex;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DockerIgnoreError {
    #[error(".dockerignore line {line}: `{pattern}` is not a valid pattern ({reason})")]
    BadPattern {
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error("cannot read {}", path.display())]
    Unreadable {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DockerIgnoreError {
    pub fn hint(&self) -> &'static str {
        match self {
            DockerIgnoreError::BadPattern { .. } => {
                "patterns follow Go's filepath.Match: close every `[`, escape a literal `[`, `*`, `?` or `\\` with `\\`"
            }
            DockerIgnoreError::Unreadable { .. } => "check the file's permissions",
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `dir/**`: everything below `dir/`.
    Prefix(String),
    /// `**/name` or `**name`.
    Suffix(String),
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
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|bare| path == bare)
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

    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<DockerIgnore, DockerIgnoreError> {
        let mut ignore = DockerIgnore::default();
        for (index, raw) in text.lines().enumerate() {
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
        let kind = compile(&text).map_err(|e| bad(&e.to_string()))?;
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

/// The syntax check of Go's `filepath.Match`: classes closed, no unescaped `-` or `]` where a
/// character is expected, no trailing `\`.
fn validate_glob(pattern: &str) -> Result<(), &'static str> {
    let mut chars = pattern.chars().peekable();
    // One (possibly escaped) character of a class.
    fn class_char(
        chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    ) -> Result<(), &'static str> {
        match chars.next() {
            None => Err("unclosed `[`"),
            Some('-' | ']') => Err("`-` or `]` where a character is expected in `[...]`"),
            Some('\\') => chars.next().map(|_| ()).ok_or("`\\` at the end"),
            Some(_) => Ok(()),
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next().ok_or("`\\` at the end")?;
            }
            '[' => {
                if chars.peek() == Some(&'^') {
                    chars.next();
                }
                let mut ranges = 0;
                loop {
                    if ranges > 0 && chars.peek() == Some(&']') {
                        chars.next();
                        break;
                    }
                    class_char(&mut chars)?;
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        class_char(&mut chars)?;
                    }
                    ranges += 1;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Characters that mean something to a regex but nothing to a glob.
fn regex_special(c: char) -> bool {
    ".+()|{}$".contains(c)
}

/// moby's `Pattern.compile`: a regex, or one of the exact/prefix/suffix shortcuts it takes
/// (they are part of the behaviour: `**name` matches any path ending in `name`). Inside a
/// `[...]` class, the characters Rust's regex gives a meaning there (`[`, `&`, `~`) are escaped,
/// and `*` and `?` are literal, as a glob means them.
fn compile(text: &str) -> Result<Kind, regex::Error> {
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
    let mut first = true;
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    detected = Detected::Regex;
                }
                None => re.push_str("\\\\"),
            },
            ']' if in_class => {
                re.push(']');
                in_class = false;
            }
            '[' | '&' | '~' | '*' | '?' if in_class => {
                re.push('\\');
                re.push(c);
            }
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'^') {
                    re.push(chars.next().unwrap_or('^'));
                }
                in_class = true;
                detected = Detected::Regex;
            }
            ']' => {
                re.push_str("\\]");
                detected = Detected::Regex;
            }
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
            c if regex_special(c) => {
                re.push('\\');
                re.push(c);
            }
            c => re.push(c),
        }
        first = false;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(text[..text.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(text[2..].to_string()),
        Detected::Regex => {
            re.push('$');
            Kind::Regex(Regex::new(&re)?)
        }
    })
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
            ("[*]", "*", true),
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
