//! The JSON Schema of `dsr.toml`, generated from the config types, so that editors (taplo,
//! Even Better TOML) complete and check a config. `dsr-connector config-schema` prints it;
//! `docs/dsr.schema.json` is it, checked in, and a test keeps the two equal.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A duration as the config writes it: `30s`, `5m`, `1h 30m`, `250ms`, `7d`.
pub struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ms, s, m, h, d), several allowed: \"30s\", \"5m\", \"1h 30m\".",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Zµ]+(\\s*[0-9]+\\s*[a-zA-Zµ]+)*\\s*$"
        })
    }
}

/// A source's `ssl_mode`: libpq's names, and MySQL's for the same modes (serde aliases,
/// which a derived schema would leave out).
pub struct SslModeNames;

impl JsonSchema for SslModeNames {
    fn schema_name() -> Cow<'static, str> {
        "SslMode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "How the source's connection is secured: libpq's names (disable, prefer, require, verify-ca, verify-full) or MySQL's for the same modes (disabled, preferred, required, verify_ca, verify_identity).",
            "enum": ["disable", "prefer", "require", "verify-ca", "verify-full",
                     "disabled", "preferred", "required", "verify_ca", "verify_identity"]
        })
    }
}

/// A source's `kind`.
pub struct DatabaseKindNames;

impl JsonSchema for DatabaseKindNames {
    fn schema_name() -> Cow<'static, str> {
        "DatabaseKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "The kind of database: postgres (the default), or mysql (MySQL or MariaDB; \"mariadb\" is the same).",
            "enum": ["postgres", "mysql", "mariadb"]
        })
    }
}

/// The schema of a whole config file, as pretty JSON with a newline at its end.
pub fn config_schema() -> String {
    let mut schema = schemars::schema_for!(super::Config);
    schema.insert(
        "title".to_owned(),
        "dsr-connector configuration (dsr.toml)".into(),
    );
    schema.insert(
        "description".to_owned(),
        "The server, the classification categories, and the sources with their data maps. \
         `dsr-connector check-config` checks what a schema cannot: secrets, ranges and the \
         data map's cross-references."
            .into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}
