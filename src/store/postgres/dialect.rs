//! PostgreSQL's SQL for the engine's plans: `"quoted"` identifiers, `$1` cast to the
//! column's type, `lower()` and `btrim()` for looser matches, and values measured by
//! `octet_length` (or first by their stored size, where rendering costs).

use super::quote_ident;
use crate::config::{MatchMode, QualifiedName};
use crate::store::dialect::{Compare, IndexOn, Looser, Param, SqlColumn, SqlDialect};
use crate::store::types::ColumnType;
use crate::values::Decoder;

/// jsonb and arrays have no cheap length: their stored size (`pg_column_size`, compressed)
/// comes first, and only a value stored larger than this is rendered to be measured.
/// Compression never shrinks a value by more than a few hundred times, so a value above any
/// limit of a message is always stored larger than this.
const STORED_BYTES_WORTH_MEASURING: usize = 8 * 1024;

pub struct Postgres;

/// The column's decoder: a PostgreSQL source's catalog gives only PostgreSQL decoders.
fn decoder(column: &SqlColumn) -> Decoder {
    column.decoder.postgres().unwrap_or(Decoder::AsText)
}

impl SqlDialect for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn quote(&self, name: &str) -> String {
        quote_ident(name)
    }

    fn table(&self, name: &QualifiedName) -> String {
        format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.table))
    }

    fn as_bigint(&self, expr: &str) -> String {
        format!("({expr})::bigint")
    }

    fn as_text(&self, expr: &str) -> String {
        format!("{expr}::text")
    }

    fn select(&self, column: &SqlColumn) -> String {
        decoder(column).select_expr(column.expr)
    }

    fn measured(&self, column: &SqlColumn, limit: usize) -> Option<(String, String)> {
        let c = column.expr;
        let plain = |size: String| Some((format!("{size} > {limit}"), size));
        let rendered = |text: String| {
            let size = format!("octet_length({text})");
            Some((
                format!(
                    "(CASE WHEN pg_column_size({c}) <= {STORED_BYTES_WORTH_MEASURING} \
                     THEN false ELSE {size} > {limit} END)"
                ),
                size,
            ))
        };
        match decoder(column) {
            // octet_length reads the stored length of text and bytea without reading the value.
            Decoder::Text | Decoder::Bytea => plain(format!("octet_length({c})")),
            Decoder::Json => plain(format!("octet_length({c}::text)")),
            Decoder::Jsonb => rendered(format!("{c}::text")),
            Decoder::Array => rendered(format!("to_jsonb({c})::text")),
            _ => None,
        }
    }

    fn identity_condition(
        &self,
        column: &SqlColumn,
        compare: Compare,
        matching: MatchMode,
        param: Param,
    ) -> String {
        let c = column.expr;
        let text = column.column_type == ColumnType::Text;
        // The value as text: an expression of the parameter only, so an index still serves.
        let v = match param {
            Param::Only => "$1::text".to_owned(),
            Param::Element(k) => format!("($1::text::jsonb ->> {k})"),
        };
        let cast = column.cast_type;
        match (compare, matching) {
            (Compare::Looser(Looser::CaseInsensitive), _) if text => {
                format!("lower({c}) = lower({v})")
            }
            (Compare::Looser(Looser::Trimmed), _) if text => {
                format!("btrim({c}) = btrim({v})")
            }
            // Digits are compared as digits however the columns are compared otherwise: a
            // phone number stored as typed has no other form to match.
            (_, MatchMode::Digits) if text => format!(
                "regexp_replace({c}, '[^0-9]', '', 'g') = regexp_replace({v}, '[^0-9]', '', 'g')"
            ),
            // citext would compare case-insensitively by itself (and no index serves this).
            (Compare::Exact, _) if column.folds_case => format!("{c}::text = {v}"),
            (Compare::Exact, _) => format!("{c} = CAST({v} AS {cast})"),
            (_, MatchMode::CaseInsensitive) if !column.folds_case => {
                format!("lower({c}) = lower({v})")
            }
            // citext compares case-insensitively by itself.
            _ => format!("{c} = CAST({v} AS {cast})"),
        }
    }

    fn create_index(&self, table: &QualifiedName, column: &str, on: IndexOn) -> String {
        let (t, c) = (self.table(table), quote_ident(column));
        match on {
            IndexOn::Column => format!("CREATE INDEX ON {t} ({c})"),
            IndexOn::Lower => format!("CREATE INDEX ON {t} (lower({c}))"),
            IndexOn::Digits => {
                format!("CREATE INDEX ON {t} ((regexp_replace({c}, '[^0-9]', '', 'g')))")
            }
        }
    }
}

/// What a PostgreSQL type (`pg_type.typname`, `pg_type.typcategory`) holds.
pub fn column_type(typname: &str, typcategory: &str) -> ColumnType {
    match (typname, typcategory) {
        ("bool", _) => ColumnType::Bool,
        ("int2" | "int4" | "int8", _) => ColumnType::Integer,
        ("numeric", _) => ColumnType::Decimal,
        ("float4" | "float8", _) => ColumnType::Float,
        ("bytea", _) => ColumnType::Bytes,
        ("date", _) => ColumnType::Date,
        ("time" | "timetz", _) => ColumnType::Time,
        ("timestamp", _) => ColumnType::LocalTimestamp,
        ("timestamptz", _) => ColumnType::Timestamp,
        ("interval", _) => ColumnType::Interval,
        ("json" | "jsonb", _) => ColumnType::Json,
        ("inet" | "cidr", _) => ColumnType::Network,
        ("bit" | "varbit", _) => ColumnType::Bit,
        ("uuid", _) => ColumnType::Uuid,
        (_, "S") => ColumnType::Text,
        (_, "A") => ColumnType::Array,
        (_, "E") => ColumnType::Enum,
        _ => ColumnType::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_types_map_onto_column_types() {
        assert_eq!(column_type("citext", "S"), ColumnType::Text);
        assert_eq!(column_type("bpchar", "S"), ColumnType::Text);
        assert_eq!(column_type("int8", "N"), ColumnType::Integer);
        assert_eq!(column_type("oid", "N"), ColumnType::Other);
        assert_eq!(column_type("timestamp", "D"), ColumnType::LocalTimestamp);
        assert_eq!(column_type("_text", "A"), ColumnType::Array);
        assert_eq!(column_type("mood", "E"), ColumnType::Enum);
    }
}
