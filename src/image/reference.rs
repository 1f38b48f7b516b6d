//! Image references, and the rule that what slipway runs is pinned by a full digest.
//!
//! References are read with the grammar of `distribution/reference`, which the engine uses
//! (`ParseNormalizedNamed`), so that a reference the engine would refuse is refused here,
//! before anything runs, with what is wrong in it:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] component ( "/" component )*      at most 255 characters
//! domain     := host [ ":" port ]    host: DNS labels joined by ".", or "[" IPv6 "]"
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex{32,}
//! ```
//!
//! The first component is a domain only if it has a `.` or a `:`, or is `localhost` (`team/app`
//! is `docker.io/team/app`). This is stricter than the engine in one case: the engine also takes
//! a first component with an uppercase letter (`Team/app`) as a registry host, to be looked up
//! by DNS; here, that is an uppercase repository name, an error.

use std::fmt;

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
    #[error("`{given}` is not a valid image reference: {problem}")]
    Malformed { given: String, problem: Problem },
    #[error("`{given}` is not pinned by digest")]
    NotPinned { given: String },
    #[error("`{given}` has a digest that is not a full sha256 (`sha256:` and 64 lowercase hex)")]
    BadDigest { given: String },
}

/// What is wrong in a reference that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Empty,
    NotAscii(char),
    /// An empty component: `a//b`, or a `/` at either end.
    EmptyComponent,
    Domain(String),
    Uppercase(String),
    Component(String),
    NameTooLong(usize),
    Tag(String),
    TagTooLong(usize),
    Digest(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => write!(f, "it is empty"),
            Problem::NotAscii(c) => write!(f, "`{c}` is not an ASCII character"),
            Problem::EmptyComponent => {
                write!(f, "it has an empty component (`//`, or `/` at an end)")
            }
            Problem::Domain(d) => write!(f, "`{d}` is not a valid registry host[:port]"),
            Problem::Uppercase(c) => write!(
                f,
                "the repository component `{c}` has uppercase letters (only a registry host may)"
            ),
            Problem::Component(c) => {
                write!(f, "`{c}` is not a valid repository component")
            }
            Problem::NameTooLong(n) => {
                write!(f, "the repository name is {n} characters long, over 255")
            }
            Problem::Tag(t) => write!(f, "`{t}` is not a valid tag"),
            Problem::TagTooLong(n) => write!(f, "the tag is {n} characters long, over 128"),
            Problem::Digest(d) => write!(f, "`{d}` is not a valid digest"),
        }
    }
}

impl Problem {
    pub fn hint(&self) -> &'static str {
        match self {
            Problem::Empty | Problem::EmptyComponent | Problem::NotAscii(_) => {
                "write it as REGISTRY/REPOSITORY@sha256:<64 hex>, e.g. docker.io/library/alpine@sha256:..."
            }
            Problem::Domain(_) => {
                "a registry host is DNS labels (letters, digits, `-`) joined by `.`, or an IPv6 address in brackets, then an optional :PORT, e.g. registry.example.com:5000"
            }
            Problem::Uppercase(_) => {
                "write the repository in lowercase; a first component counts as a registry host only with a `.` or `:` in it (registry.example.com/team/app, 127.0.0.1:5000/app) or as `localhost`"
            }
            Problem::Component(_) => {
                "repository components are lowercase letters and digits, separated by one `.`, one or two `_`, or `-`s, e.g. team/my-app"
            }
            Problem::NameTooLong(_) => "shorten the repository name to at most 255 characters",
            Problem::Tag(_) | Problem::TagTooLong(_) => {
                "a tag is 1 to 128 of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
            }
            Problem::Digest(_) => {
                "a digest is ALGORITHM:HEX, e.g. sha256: and 64 lowercase hex digits"
            }
        }
    }
}

impl ReferenceError {
    pub fn hint(&self) -> &'static str {
        match self {
            ReferenceError::Malformed { problem, .. } => problem.hint(),
            ReferenceError::NotPinned { .. } | ReferenceError::BadDigest { .. } => {
                "pin it: append @sha256:<digest> (`docker buildx imagetools inspect NAME:TAG` or `skopeo inspect docker://NAME:TAG` prints it)"
            }
        }
    }
}

/// Checks `given` against the grammar; its digest, if it has one.
fn grammar(given: &str) -> Result<Option<&str>, Problem> {
    if given.is_empty() {
        return Err(Problem::Empty);
    }
    if let Some(c) = given.chars().find(|c| !c.is_ascii()) {
        return Err(Problem::NotAscii(c));
    }
    let (rest, digest) = match given.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (given, None),
    };
    // A tag follows the last `:` after the last `/` (a `:` before it is a port's).
    let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[after_slash..].rfind(':') {
        Some(i) => (&rest[..after_slash + i], Some(&rest[after_slash + i + 1..])),
        None => (rest, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), path)
        }
        _ => (None, name),
    };
    if let Some(domain) = domain
        && !is_domain(domain)
    {
        return Err(Problem::Domain(domain.to_string()));
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(Problem::EmptyComponent);
        }
        if !is_component(component) {
            return Err(if is_component(&component.to_ascii_lowercase()) {
                Problem::Uppercase(component.to_string())
            } else {
                Problem::Component(component.to_string())
            });
        }
    }
    // The engine counts the path normalized: `alpine` is `library/alpine` on Docker Hub.
    let hub = matches!(domain, None | Some("docker.io" | "index.docker.io"));
    let length = path.len() + if hub && !path.contains('/') { 8 } else { 0 };
    if length > 255 {
        return Err(Problem::NameTooLong(length));
    }
    if let Some(tag) = tag {
        if tag.len() > 128 {
            return Err(Problem::TagTooLong(tag.len()));
        }
        if !is_tag(tag) {
            return Err(Problem::Tag(tag.to_string()));
        }
    }
    if let Some(digest) = digest
        && !is_digest(digest)
    {
        return Err(Problem::Digest(digest.to_string()));
    }
    Ok(digest)
}

/// `host[:port]`: DNS-like labels (`[A-Za-z0-9]`, inner `-`) joined by `.`, or `[` IPv6 hex
/// and colons `]`; a port is decimal digits.
fn is_domain(domain: &str) -> bool {
    let port = if let Some(inner) = domain.strip_prefix('[') {
        let Some((ip, after)) = inner.split_once(']') else {
            return false;
        };
        if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        }
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        let label = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label) {
            return false;
        }
        port
    };
    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` runs separated by one `.`, one `_`, `__`, or one or more `-`.
fn is_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        match &component[sep..i] {
            "." | "_" | "__" => {}
            s if s.bytes().all(|b| b == b'-') => {}
            _ => return false,
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]*` (the length is checked apart).
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut bytes = tag.bytes();
    bytes.next().is_some_and(word) && bytes.all(|b| word(b) || b == b'.' || b == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:` then at least 32 hex digits.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let mut bytes = part.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

impl PinnedImage {
    pub fn parse(given: &str) -> Result<PinnedImage, ReferenceError> {
        let given = given.trim();
        let digest = grammar(given).map_err(|problem| ReferenceError::Malformed {
            given: given.to_string(),
            problem,
        })?;
        let Some(digest) = digest else {
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
    #[allow(dead_code, reason = "the rollout compares it with the running container's image")]
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

    /// What the engine's grammar (`distribution/reference`) refuses is refused here, saying
    /// what is wrong. Each case was checked against its `ParseNormalizedNamed`: it refuses them
    /// all but `Team/app`, `LOCALHOST/app` (a registry host named so, for the engine) and
    /// `a_b.com/app` (a name without a registry, for the engine), which are refused here on
    /// purpose; it accepts every reference of the second list.
    #[test]
    fn follows_the_engines_grammar_and_names_the_problem() {
        let malformed = |given: String| match PinnedImage::parse(&given) {
            Err(ReferenceError::Malformed { problem, .. }) => problem,
            other => panic!("{given:?}: {other:?}"),
        };
        let cases = [
            // Uppercase is for registry hosts, and a first component is a host only with a
            // `.` or `:` in it, or as `localhost`.
            (format!("Team/app@{D}"), Problem::Uppercase("Team".into())),
            (
                format!("LOCALHOST/app@{D}"),
                Problem::Uppercase("LOCALHOST".into()),
            ),
            (
                format!("docker.io/Team/app@{D}"),
                Problem::Uppercase("Team".into()),
            ),
            (format!("team/App@{D}"), Problem::Uppercase("App".into())),
            (format!("alpine:t\u{e2}g@{D}"), Problem::NotAscii('\u{e2}')),
            (format!("\u{430}lpine@{D}"), Problem::NotAscii('\u{430}')),
            (
                format!("alpine:{}@{D}", "a".repeat(129)),
                Problem::TagTooLong(129),
            ),
            (format!("alpine:.x@{D}"), Problem::Tag(".x".into())),
            (format!("alpine:-x@{D}"), Problem::Tag("-x".into())),
            (format!("alpine:@{D}"), Problem::Tag("".into())),
            (format!("a..b@{D}"), Problem::Component("a..b".into())),
            (format!("a___b@{D}"), Problem::Component("a___b".into())),
            (format!("a-@{D}"), Problem::Component("a-".into())),
            (format!("-r.ex/app@{D}"), Problem::Domain("-r.ex".into())),
            (
                format!("host:abc/app@{D}"),
                Problem::Domain("host:abc".into()),
            ),
            (
                format!("a_b.com/app@{D}"),
                Problem::Domain("a_b.com".into()),
            ),
            (format!("[::1/app@{D}"), Problem::Domain("[::1".into())),
            (format!("a//b@{D}"), Problem::EmptyComponent),
            (format!("r.ex/@{D}"), Problem::EmptyComponent),
            // 248 characters, and `library/` in front on Docker Hub.
            (
                format!("{}@{D}", "a".repeat(248)),
                Problem::NameTooLong(256),
            ),
            (
                format!("r.ex/{}@{D}", "a".repeat(256)),
                Problem::NameTooLong(256),
            ),
            (
                "alpine@sha256:932bf9c6".to_string(),
                Problem::Digest("sha256:932bf9c6".into()),
            ),
            (
                format!("alpine@{D}@{D}"),
                Problem::Digest(format!("{D}@{D}")),
            ),
        ];
        for (given, want) in cases {
            assert_eq!(malformed(given.clone()), want, "{given:?}");
            let err = PinnedImage::parse(&given).unwrap_err();
            assert!(err.to_string().contains(&want.to_string()), "{err}");
        }
        for given in [
            format!("Registry.Example.com/team/app@{D}"),
            format!("localhost/app@{D}"),
            format!("localhost:5000/app@{D}"),
            format!("[::1]:5000/app@{D}"),
            format!("[fe80::1]/app:v1@{D}"),
            format!("team/app@{D}"),
            format!("a__b/c---d/e.f_g@{D}"),
            format!("alpine:{}@{D}", "A_.-".repeat(32)),
            format!("{}@{D}", "a".repeat(247)),
            format!("r.ex/{}@{D}", "a".repeat(255)),
            format!("  alpine@{D}\n"),
        ] {
            assert!(PinnedImage::parse(&given).is_ok(), "{given:?}");
        }
    }

    #[test]
    fn each_problem_has_its_hint() {
        let err = PinnedImage::parse(&format!("Team/app@{D}")).unwrap_err();
        assert!(err.hint().contains("lowercase"), "{}", err.hint());
        let err = PinnedImage::parse(&format!("alpine:{}@{D}", "a".repeat(200))).unwrap_err();
        assert!(err.hint().contains("128"), "{}", err.hint());
        let err = PinnedImage::parse(&format!("bad_host.io/app@{D}")).unwrap_err();
        assert!(err.hint().contains("registry host"), "{}", err.hint());
        let err = PinnedImage::parse("alpine:3.20").unwrap_err();
        assert!(err.hint().starts_with("pin it"), "{}", err.hint());
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
