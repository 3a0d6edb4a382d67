//! Rendering the stream's typed values and the manifest as JSON, for people and for programs.
//!
//! A row becomes one JSON object per line, keyed by column name. Values keep their meaning:
//! numbers stay numbers, exact decimals stay exact (as text), times are RFC 3339 in UTC, binary
//! data is base64, and JSON columns are embedded as JSON, byte for byte as the server sent them.
//! The manifest is written in protobuf's canonical JSON form, so that a program can parse it
//! back into a `Manifest` in any language.

use std::io::{self, Write};

use base64::Engine as _;
use serde_json::json;

use crate::pb::{self, value::Kind};

/// Writes one row as a JSON object (no trailing new line).
pub fn write_row(
    out: &mut impl Write,
    columns: &[pb::ColumnDescriptor],
    row: &pb::Row,
) -> io::Result<()> {
    if columns.len() != row.values.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a row has {} values for {} columns",
                row.values.len(),
                columns.len()
            ),
        ));
    }
    out.write_all(b"{")?;
    for (i, (column, value)) in columns.iter().zip(&row.values).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &column.name)?;
        out.write_all(b":")?;
        write_value(out, value)?;
    }
    out.write_all(b"}")
}

/// Writes one typed value as JSON.
pub fn write_value(out: &mut impl Write, value: &pb::Value) -> io::Result<()> {
    let Some(kind) = &value.kind else {
        return out.write_all(b"null");
    };
    match kind {
        Kind::NullValue(_) => out.write_all(b"null"),
        Kind::BoolValue(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Kind::Int64Value(i) => write!(out, "{i}"),
        Kind::DoubleValue(d) if d.is_finite() => {
            serde_json::to_writer(out, d).map_err(io::Error::from)
        }
        // JSON has no NaN or infinities; protobuf's JSON mapping writes them as these strings.
        Kind::DoubleValue(d) => serde_json::to_writer(
            out,
            if d.is_nan() {
                "NaN"
            } else if *d > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            },
        )
        .map_err(io::Error::from),
        Kind::StringValue(s)
        | Kind::DecimalValue(s)
        | Kind::DateValue(s)
        | Kind::TimestampText(s) => serde_json::to_writer(out, s).map_err(io::Error::from),
        Kind::BytesValue(b) => {
            serde_json::to_writer(out, &base64::engine::general_purpose::STANDARD.encode(b))
                .map_err(io::Error::from)
        }
        Kind::TimestampValue(t) => {
            serde_json::to_writer(out, &timestamp(t)).map_err(io::Error::from)
        }
        Kind::JsonValue(text) => {
            // Embedded as sent, so that large numbers keep every digit; text that is not JSON
            // (which the server never sends) is written as a string instead.
            match serde_json::from_str::<&serde_json::value::RawValue>(text) {
                Ok(raw) => out.write_all(raw.get().as_bytes()),
                Err(_) => serde_json::to_writer(out, text).map_err(io::Error::from),
            }
        }
    }
}

/// A protobuf timestamp as RFC 3339 in UTC, with as many fraction digits as it needs.
pub fn timestamp(t: &prost_types::Timestamp) -> String {
    match u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos))
    {
        Some(at) => at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("{}s", t.seconds),
    }
}

/// The manifest in protobuf's canonical JSON form (lowerCamelCase names, 64-bit integers as
/// strings, RFC 3339 times), as `MessageToJson` or `protojson` would write it.
pub fn manifest_json(m: &pb::Manifest) -> serde_json::Value {
    let mut v = json!({
        "subjectId": m.subject_id,
        "piiFields": m.pii_fields,
        "rowCount": m.row_count.to_string(),
        "metadata": m.metadata,
        "extractionId": m.extraction_id,
        "source": m.source,
        "requestId": m.request_id,
        "tables": m.tables.iter().map(|t| {
            let mut table = json!({
                "table": t.table,
                "rowCount": t.row_count.to_string(),
                "verified": t.verified,
            });
            if !t.identity_rows.is_empty() {
                table["identityRows"] = t.identity_rows.iter().map(|i| json!({
                    "kind": i.kind,
                    "subjectId": i.subject_id,
                    "rowCount": i.row_count.to_string(),
                })).collect::<Vec<_>>().into();
            }
            table
        }).collect::<Vec<_>>(),
        "subjectKind": m.subject_kind,
    });
    let object = v.as_object_mut().expect("an object");
    // As protobuf's JSON mapping, a repeated field that is empty is left out.
    if !m.identities.is_empty() {
        object.insert(
            "identities".into(),
            m.identities
                .iter()
                .map(|i| json!({ "kind": i.kind, "subjectId": i.subject_id }))
                .collect::<Vec<_>>()
                .into(),
        );
    }
    for (key, at) in [
        ("extractionTimestamp", &m.extraction_timestamp),
        ("startedAt", &m.started_at),
        ("finishedAt", &m.finished_at),
    ] {
        if let Some(at) = at {
            object.insert(key.into(), timestamp(at).into());
        }
    }
    if let Some(tag) = &m.compliance_tag {
        object.insert("complianceTag".into(), tag.clone().into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(kind: Kind) -> String {
        let mut out = Vec::new();
        write_value(&mut out, &pb::Value { kind: Some(kind) }).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_keep_their_meaning() {
        assert_eq!(render(Kind::NullValue(0)), "null");
        assert_eq!(render(Kind::BoolValue(true)), "true");
        assert_eq!(
            render(Kind::Int64Value(-9007199254740993)),
            "-9007199254740993"
        );
        assert_eq!(render(Kind::DoubleValue(1.5)), "1.5");
        assert_eq!(render(Kind::DoubleValue(f64::NAN)), "\"NaN\"");
        assert_eq!(
            render(Kind::DoubleValue(f64::NEG_INFINITY)),
            "\"-Infinity\""
        );
        assert_eq!(render(Kind::DecimalValue("12.50".into())), "\"12.50\"");
        assert_eq!(render(Kind::StringValue("a\"b\n".into())), r#""a\"b\n""#);
        assert_eq!(render(Kind::BytesValue(vec![0, 255, 1])), "\"AP8B\"");
        assert_eq!(
            render(Kind::DateValue("2024-02-29".into())),
            "\"2024-02-29\""
        );
        assert_eq!(
            render(Kind::TimestampValue(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000
            })),
            "\"2023-11-14T22:13:20.123Z\""
        );
        // Embedded as sent: a number beyond f64 keeps its digits.
        assert_eq!(
            render(Kind::JsonValue(
                r#"{"n": 123456789012345678901234567890}"#.into()
            )),
            r#"{"n": 123456789012345678901234567890}"#
        );
        assert_eq!(
            render(Kind::JsonValue("{not json".into())),
            r#""{not json""#
        );
    }

    #[test]
    fn a_row_is_an_object_and_must_match_its_columns() {
        let columns = vec![
            pb::ColumnDescriptor {
                name: "id".into(),
                ..Default::default()
            },
            pb::ColumnDescriptor {
                name: "e\"mail".into(),
                ..Default::default()
            },
        ];
        let row = pb::Row {
            values: vec![
                pb::Value {
                    kind: Some(Kind::Int64Value(7)),
                },
                pb::Value { kind: None },
            ],
        };
        let mut out = Vec::new();
        write_row(&mut out, &columns, &row).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, json!({"id": 7, "e\"mail": null}));
        let short = pb::Row {
            values: vec![row.values[0].clone()],
        };
        assert!(write_row(&mut Vec::new(), &columns, &short).is_err());
    }

    #[test]
    fn the_manifest_is_canonical_protobuf_json() {
        let m = pb::Manifest {
            subject_id: "hmac-sha256:ab".into(),
            row_count: 3,
            compliance_tag: Some("gdpr-art15".into()),
            tables: vec![pb::TableCount {
                table: "orders".into(),
                row_count: 3,
                verified: true,
                ..Default::default()
            }],
            extraction_timestamp: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        let v = manifest_json(&m);
        assert_eq!(v["rowCount"], "3");
        assert_eq!(v["tables"][0]["rowCount"], "3");
        assert_eq!(v["complianceTag"], "gdpr-art15");
        assert_eq!(v["extractionTimestamp"], "1970-01-01T00:00:00Z");
        assert!(v.get("startedAt").is_none());
    }
}
