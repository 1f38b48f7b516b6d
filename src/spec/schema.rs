//! The spec's JSON Schema (`slipway schema`), derived from the same types that read it, so an
//! editor completes and checks a spec as slipway would. The schema checks the shape (keys,
//! types, durations); the values' rules are `ServiceSpec::problems`.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::Value;

use super::ServiceSpec;

/// The schema, as JSON. TOML has no null, so an optional key is only its type.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(ServiceSpec);
    schema.insert("title".into(), "slipway service spec".into());
    let mut value = schema.to_value();
    without_null(&mut value);
    value
}

/// Drops `null` from types, `anyOf`s and defaults: a TOML key is either there or not.
fn without_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if let [Value::Object(only)] = any.as_slice() {
                    let only = only.clone();
                    map.remove("anyOf");
                    map.extend(only);
                }
            }
            map.values_mut().for_each(without_null);
        }
        Value::Array(items) => items.iter_mut().for_each(without_null),
        _ => {}
    }
}

/// A duration is written as text: "10s", "1m30s", "500ms".
pub(crate) fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": r"^\s*([0-9]+\s*[a-zA-Zµ]+\s*)+$",
        "examples": ["10s", "1m30s", "500ms"],
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// Every spec the repository shows: deploy/*.toml, and each ```toml block of the README and
    /// the operator's guide.
    fn examples() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("deploy"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for path in files {
            found.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
        for doc in ["README.md", "docs/operator-guide.md"] {
            let text = std::fs::read_to_string(root.join(doc)).unwrap();
            let mut blocks = text.split("```toml\n").skip(1).enumerate();
            for (i, block) in &mut blocks {
                let body = block.split("\n```").next().unwrap();
                found.push((format!("{doc}, toml block {}", i + 1), body.to_string()));
            }
        }
        found
    }

    fn schema_errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let instance = serde_json::to_value(table).unwrap();
        validator
            .iter_errors(&instance)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn every_example_spec_in_the_repository_and_the_docs_is_valid_by_the_schema_and_by_slipway() {
        let validator = jsonschema::validator_for(&json_schema()).unwrap();
        let examples = examples();
        let docs = examples.iter().filter(|(w, _)| w.contains(".md")).count();
        assert!(
            examples.len() >= 5 && docs >= 3,
            "deploy/*.toml and the docs' specs: {:?}",
            examples.iter().map(|e| &e.0).collect::<Vec<_>>()
        );
        for (where_, text) in &examples {
            let errors = schema_errors(&validator, text);
            assert!(errors.is_empty(), "{where_}:\n{}", errors.join("\n"));
            if let Err(e) = ServiceSpec::parse(Path::new(where_), text) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn the_schema_refuses_what_slipway_refuses_to_read() {
        let validator = jsonschema::validator_for(&json_schema()).unwrap();
        let top = "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\n";
        let tables = "[health]\n[caddy]\nsnippet_dir = \"/etc/caddy/slipway\"\n";
        let with = |extra: &str| format!("{top}{extra}\n{tables}");
        assert!(schema_errors(&validator, &with("")).is_empty());
        for (extra, at) in [
            ("slotz = 1", ""),
            (
                "release_command = \"bin/migrate && echo\"",
                "/release_command",
            ),
            ("drain = \"soon\"", "/drain"),
            (
                "[workers.jobs]\ncommand = [\"w\"]\nport = 9000",
                "/workers/jobs",
            ),
            ("[build]\ncontext = \".\"\ndockerfile = \"x\"", "/build"),
            ("[smoke]\nurl = \"https://web.example.com\"", "/smoke/url"),
            ("[build.args]\nVERSION = 3", "/build/args/VERSION"),
        ] {
            let errors = schema_errors(&validator, &with(extra));
            assert!(
                errors.iter().any(|e| e.starts_with(&format!("{at}: "))),
                "{extra}: {errors:?}"
            );
        }
        let schema = json_schema();
        assert_eq!(schema["additionalProperties"], false, "{schema:#}");
        assert_eq!(schema["properties"]["drain"]["default"], "2s");
    }
}
