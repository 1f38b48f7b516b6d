//! Which services the watchdog knows: one spec per service, from `--config PATH` (repeatable)
//! and every `*.toml` in `--config-dir DIR`. The long-running mode reads them again every few
//! seconds, so a spec added, changed or removed is picked up without a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::spec::ServiceSpec;

#[derive(Debug, Clone, Default)]
pub struct SpecSource {
    pub files: Vec<PathBuf>,
    pub dir: Option<PathBuf>,
}

/// One read of every spec: what parsed, by path, and what did not, as messages.
#[derive(Debug, Default)]
pub struct Read {
    pub specs: BTreeMap<PathBuf, ServiceSpec>,
    pub problems: BTreeMap<PathBuf, String>,
}

impl SpecSource {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// The files: each `--config`, then the directory's `*.toml`, sorted.
    fn paths(&self) -> (Vec<PathBuf>, Option<(PathBuf, String)>) {
        let mut paths = self.files.clone();
        let mut problem = None;
        if let Some(dir) = &self.dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                        .collect();
                    found.sort();
                    paths.extend(found);
                }
                Err(e) => {
                    problem = Some((dir.clone(), format!("cannot read the spec directory: {e}")))
                }
            }
        }
        paths.dedup();
        (paths, problem)
    }

    pub fn read(&self) -> Read {
        let mut read = Read::default();
        let (paths, problem) = self.paths();
        if let Some((dir, message)) = problem {
            read.problems.insert(dir, message);
        }
        for path in paths {
            match ServiceSpec::load(&path, &[]) {
                Ok(spec) => {
                    read.specs.insert(path, spec);
                }
                Err(e) => {
                    let mut message = e.to_string();
                    if let Some(source) = std::error::Error::source(&e) {
                        message.push_str(&format!(": {source}"));
                    }
                    read.problems.insert(path, message);
                }
            }
        }
        read
    }
}

/// By service name; a name given twice is a problem of the later file.
pub fn by_name(
    specs: &BTreeMap<PathBuf, ServiceSpec>,
) -> (
    BTreeMap<String, (PathBuf, ServiceSpec)>,
    BTreeMap<PathBuf, String>,
) {
    let mut named: BTreeMap<String, (PathBuf, ServiceSpec)> = BTreeMap::new();
    let mut problems = BTreeMap::new();
    for (path, spec) in specs {
        if let Some((first, _)) = named.get(&spec.name) {
            problems.insert(
                path.clone(),
                format!(
                    "service `{}` is already given by {}",
                    spec.name,
                    first.display()
                ),
            );
            continue;
        }
        named.insert(spec.name.clone(), (path.clone(), spec.clone()));
    }
    (named, problems)
}

/// Why a spec cannot be watched, if it cannot.
pub fn unwatchable(spec: &ServiceSpec) -> Option<String> {
    spec.health.http.is_none().then(|| {
        "its spec has no [health.http] probe; the watchdog probes over HTTP with those options"
            .to_string()
    })
}

/// What changed between two sets of watched specs, by name.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

pub fn changes(
    before: &BTreeMap<String, ServiceSpec>,
    after: &BTreeMap<String, ServiceSpec>,
) -> Changes {
    let mut c = Changes::default();
    for (name, spec) in after {
        match before.get(name) {
            None => c.added.push(name.clone()),
            Some(old) if old != spec => c.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    c.removed = before
        .keys()
        .filter(|n| !after.contains_key(*n))
        .cloned()
        .collect();
    c
}

pub fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, http: bool) -> String {
        format!(
            "name = \"{name}\"\nslots = [18001, 18002]\ncontainer_port = 8080\n[health]\n{}\n[caddy]\nsnippet_dir = \"/etc/caddy/slipway\"\n",
            if http { "[health.http]" } else { "" }
        )
    }

    #[test]
    fn files_and_a_directory_are_read_and_every_problem_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.toml"), spec("a", true)).unwrap();
        std::fs::write(d.join("b.toml"), spec("b", false)).unwrap();
        std::fs::write(d.join("broken.toml"), "name = ").unwrap();
        std::fs::write(d.join("notes.txt"), "not a spec").unwrap();
        let extra = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(extra.path(), spec("a", true)).unwrap();
        let source = SpecSource {
            files: vec![extra.path().to_path_buf(), d.join("missing.toml")],
            dir: Some(d.to_path_buf()),
        };
        let read = source.read();
        assert_eq!(read.specs.len(), 3, "{:?}", read.specs.keys());
        assert_eq!(read.problems.len(), 2, "{:?}", read.problems);
        assert!(read.problems[&d.join("broken.toml")].contains("not a valid service spec"));
        assert!(read.problems[&d.join("missing.toml")].contains("cannot read"));
        let (named, dup) = by_name(&read.specs);
        assert_eq!(named.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(dup.len(), 1, "service a is given twice: {dup:?}");
        assert!(unwatchable(&named["a"].1).is_none());
        assert!(
            unwatchable(&named["b"].1)
                .unwrap()
                .contains("[health.http]")
        );
    }

    #[test]
    fn changes_are_found_by_name() {
        let parse = |n: &str, port: u16| {
            let text = spec(n, true).replace("18001", &port.to_string());
            ServiceSpec::parse(Path::new("x.toml"), &text).unwrap()
        };
        let before = BTreeMap::from([
            ("a".to_string(), parse("a", 18001)),
            ("b".to_string(), parse("b", 18001)),
        ]);
        let after = BTreeMap::from([
            ("a".to_string(), parse("a", 18001)),
            ("b".to_string(), parse("b", 18003)),
            ("c".to_string(), parse("c", 18001)),
        ]);
        assert_eq!(
            changes(&before, &after),
            Changes {
                added: vec!["c".into()],
                changed: vec!["b".into()],
                removed: vec![],
            }
        );
        assert_eq!(changes(&after, &before).removed, ["c"]);
    }
}
