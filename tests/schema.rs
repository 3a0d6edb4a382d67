//! The JSON Schema of `dsr.toml` (docs/dsr.schema.json): it is what the config types say
//! (`dsr-connector config-schema`), and every config this repository ships or documents
//! validates against it, checked by a real JSON Schema validator (Python's `jsonschema`),
//! while a misspelt key, a wrong type or an unknown value is refused.

mod support;

use std::path::Path;
use std::process::Command;

use figment::Figment;
use figment::providers::{Format, Toml};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_checked_in_schema_is_the_one_the_config_types_give() {
    let out = Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .arg("config-schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let checked_in = std::fs::read_to_string(root().join("docs/dsr.schema.json")).unwrap();
    assert!(
        printed == checked_in,
        "docs/dsr.schema.json is out of date: run `dsr-connector config-schema > docs/dsr.schema.json`"
    );
}

/// A minimal source, for snippets that are parts of one.
const SOURCE: &str = "[[sources]]\nname = \"shop\"\nhost = \"db\"\ndatabase = \"shop\"\n\
    user = \"reader\"\nidentity_kinds = [\"email\"]\n";

/// A TOML document as JSON, as the config loader reads it.
fn json(text: &str) -> serde_json::Value {
    Figment::new()
        .merge(Toml::string(text))
        .extract()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

/// Each config and config snippet this repository ships or documents, as a whole config:
/// a snippet of a table's columns gets a source and a table around it, a snippet of server
/// settings or categories an empty list of sources.
fn documented_configs() -> Vec<(String, serde_json::Value)> {
    let mut found = Vec::new();
    let demo = std::fs::read_to_string(root().join("src/demo/datamap.toml"))
        .unwrap()
        .replace("{host}", "127.0.0.1")
        .replace("{port}", "5432")
        .replace("{database}", "shop")
        .replace("{user}", "dsr");
    found.push(("src/demo/datamap.toml".to_owned(), json(&demo)));
    let example = std::fs::read_to_string(root().join("deploy/config.example.toml")).unwrap();
    found.push(("deploy/config.example.toml".to_owned(), json(&example)));
    for (page, text) in support::documentation() {
        for (n, block) in text
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("\n```").next())
            .enumerate()
        {
            let first = block
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .unwrap_or_default();
            let whole = if first.starts_with("[sources.tables.") {
                format!("{SOURCE}[[sources.tables]]\nname = \"t\"\n{block}")
            } else {
                block.to_owned()
            };
            let mut value = json(&whole);
            if value.get("sources").is_none() {
                value["sources"] = serde_json::json!([]);
            }
            found.push((format!("{page}, toml block {}", n + 1), value));
        }
    }
    found
}

/// Validates each `(name, document)` against the schema with Python's `jsonschema`; returns
/// the names of those that fail, each with its first error.
fn invalid(documents: &[(String, serde_json::Value)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("documents.json");
    std::fs::write(&input, serde_json::to_vec(documents).unwrap()).unwrap();
    let check = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema)
for name, document in json.load(open(sys.argv[2])):
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    if errors:
        print(f"{name}: {'/'.join(map(str, errors[0].path))}: {errors[0].message}")
"#;
    let out = Command::new(support::venv_tool("python"))
        .args(["-c", check])
        .arg(root().join("docs/dsr.schema.json"))
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_shipped_and_documented_config_validates_and_a_misspelt_key_does_not() {
    let documents = documented_configs();
    assert!(documents.len() >= 9, "{}", documents.len());
    let failed = invalid(&documents);
    assert!(failed.is_empty(), "{failed:#?}");

    // The demo's config, spoilt three ways: each is refused, naming where.
    let demo = documents[0].1.clone();
    let mut misspelt = demo.clone();
    misspelt["sources"][0]["hots"] = "db".into();
    let mut wrong_type = demo.clone();
    wrong_type["sources"][0]["max_connections"] = "ten".into();
    let mut unknown_value = demo.clone();
    unknown_value["sources"][0]["tables"][0]["erase"]["action"] = "shred".into();
    let mut bad_duration = demo;
    bad_duration["sources"][0]["connect_timeout"] = "soon".into();
    let spoilt = [
        ("misspelt".to_owned(), misspelt),
        ("wrong type".to_owned(), wrong_type),
        ("unknown value".to_owned(), unknown_value),
        ("bad duration".to_owned(), bad_duration),
    ];
    let failed = invalid(&spoilt);
    assert_eq!(failed.len(), 4, "{failed:#?}");
    assert!(failed[0].contains("hots"), "{failed:#?}");
}
