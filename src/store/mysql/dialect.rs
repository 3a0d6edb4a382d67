//! MariaDB's and MySQL's SQL for the engine's plans: `` `quoted` `` identifiers, tables in
//! the source's database, `?` bound once per use and cast to the column's kind, and
//! collations that fold case by themselves.

use super::MyDecoder;
use crate::config::{MatchMode, QualifiedName};
use crate::store::ColumnDecoder;
use crate::store::dialect::{Compare, IndexOn, Looser, Param, SqlColumn, SqlDialect};
use crate::store::types::ColumnType;

pub struct MySql;

/// Quotes an identifier: `` `name` ``, an inner `` ` `` doubled.
pub(super) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl SqlDialect for MySql {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn quote(&self, name: &str) -> String {
        quote(name)
    }

    /// A table by its name alone: it lives in the source's database.
    fn table(&self, name: &QualifiedName) -> String {
        quote(&name.table)
    }

    fn as_bigint(&self, expr: &str) -> String {
        format!("CAST({expr} AS SIGNED)")
    }

    fn as_text(&self, expr: &str) -> String {
        expr.to_owned()
    }

    fn select(&self, column: &SqlColumn) -> String {
        column.expr.to_owned()
    }

    /// MySQL and MariaDB keep the length of every value; only types that can hold more than
    /// `limit` (a MEDIUMTEXT, a LONGBLOB, JSON) are measured.
    fn measured(&self, column: &SqlColumn, limit: usize) -> Option<(String, String)> {
        let large = matches!(
            column.column_type,
            ColumnType::Text | ColumnType::Bytes | ColumnType::Json | ColumnType::Other
        ) && column.max_bytes.is_none_or(|max| max > limit as u64);
        large.then(|| {
            let size = format!("OCTET_LENGTH({})", column.expr);
            (format!("{size} > {limit}"), size)
        })
    }

    /// The value is cast to the column's kind, so that a number is compared as a number and
    /// not as a double, and a text column compares as its collation says: a `_ci` collation
    /// folds case by itself, so a case-insensitive match needs no `LOWER()` (which no index
    /// serves); an exact one adds a binary comparison behind the indexed one.
    fn identity_condition(
        &self,
        column: &SqlColumn,
        compare: Compare,
        matching: MatchMode,
        param: Param,
    ) -> String {
        let c = column.expr;
        // The value: the parameter, or its element (as coercible as the parameter itself, so
        // the column's collation decides the comparison as it does for a bare `?`).
        let v = match param {
            Param::Only => "?".to_owned(),
            Param::Element(k) => format!("JSON_UNQUOTE(JSON_EXTRACT(?, '$[{k}]'))"),
        };
        let decoder = match column.decoder {
            ColumnDecoder::MySql(decoder) => decoder,
            // A MySQL source's catalog gives only MySQL decoders.
            _ => MyDecoder::Text,
        };
        let value = match decoder {
            MyDecoder::Int | MyDecoder::Bool => format!("CAST({v} AS SIGNED)"),
            MyDecoder::BigUnsigned => format!("CAST({v} AS UNSIGNED)"),
            MyDecoder::Decimal => format!("CAST({v} AS DECIMAL(65, 30))"),
            MyDecoder::Date => format!("CAST({v} AS DATE)"),
            MyDecoder::DateTime | MyDecoder::Timestamp => format!("CAST({v} AS DATETIME(6))"),
            MyDecoder::Bytes => format!("CAST({v} AS BINARY)"),
            _ => v.clone(),
        };
        // ENUM and SET arrive as text, and compare as their labels.
        let text = decoder == MyDecoder::Text;
        if text && matching == MatchMode::Digits {
            return format!(
                "REGEXP_REPLACE({c}, '[^0-9]', '') = REGEXP_REPLACE({v}, '[^0-9]', '')"
            );
        }
        let folding = match (compare, matching) {
            (Compare::Looser(Looser::Trimmed), _) if text => {
                return format!("TRIM({c}) = TRIM({v})");
            }
            (Compare::Looser(Looser::CaseInsensitive), _) => true,
            (Compare::Declared, MatchMode::CaseInsensitive) => true,
            _ => false,
        };
        match (text, folding, column.folds_case) {
            (true, true, true) => format!("{c} = {v}"),
            (true, true, false) => format!("LOWER({c}) = LOWER({v})"),
            (true, false, true) => format!("{c} = {v} AND {c} = CAST({v} AS BINARY)"),
            _ => format!("{c} = {value}"),
        }
    }

    /// MySQL and MariaDB want the index named. An index on an expression needs MySQL 8.
    fn create_index(&self, table: &QualifiedName, column: &str, on: IndexOn) -> String {
        let (t, c) = (self.table(table), quote(column));
        let named = |suffix: &str| quote(&format!("{}_{column}_{suffix}", table.table));
        match on {
            IndexOn::Column => format!("CREATE INDEX {} ON {t} ({c})", named("idx")),
            IndexOn::Lower => format!("CREATE INDEX {} ON {t} ((LOWER({c})))", named("idx")),
            IndexOn::Digits => format!(
                "on MySQL 8, CREATE INDEX {} ON {t} ((REGEXP_REPLACE({c}, '[^0-9]', '')))",
                named("digits")
            ),
        }
    }

    /// ENUM and SET compare as their labels, BIT and YEAR as numbers.
    fn compares(&self, child: ColumnType, parent: ColumnType) -> bool {
        let widened = |t: ColumnType| match t {
            ColumnType::Enum | ColumnType::Set => ColumnType::Text,
            ColumnType::Bit | ColumnType::Year => ColumnType::Integer,
            t => t,
        };
        widened(child).compares_with(widened(parent))
    }
}

/// What a MySQL or MariaDB column holds, by its `DATA_TYPE` and the decoder it got.
pub fn column_type(data_type: &str, decoder: MyDecoder) -> ColumnType {
    match decoder {
        MyDecoder::Bool => ColumnType::Bool,
        MyDecoder::Int if data_type == "year" => ColumnType::Year,
        MyDecoder::Int => ColumnType::Integer,
        MyDecoder::BigUnsigned | MyDecoder::Decimal => ColumnType::Decimal,
        MyDecoder::Bit { .. } => ColumnType::Bit,
        MyDecoder::Float => ColumnType::Float,
        MyDecoder::Text => match data_type {
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                ColumnType::Text
            }
            "enum" => ColumnType::Enum,
            "set" => ColumnType::Set,
            "inet4" | "inet6" => ColumnType::Network,
            "uuid" => ColumnType::Uuid,
            _ => ColumnType::Other,
        },
        MyDecoder::Bytes => ColumnType::Bytes,
        MyDecoder::Date => ColumnType::Date,
        MyDecoder::DateTime => ColumnType::LocalTimestamp,
        MyDecoder::Timestamp => ColumnType::Timestamp,
        MyDecoder::Time { .. } => ColumnType::Time,
        MyDecoder::Json => ColumnType::Json,
    }
}

/// The most bytes a value of a `DATA_TYPE` takes, where the type bounds it below what a
/// message holds (`None`: a MEDIUM or LONG text or blob, JSON, or a type not known here).
pub fn max_bytes(data_type: &str, decoder: MyDecoder) -> Option<u64> {
    match data_type {
        "tinytext" | "tinyblob" => Some(255),
        "char" | "varchar" | "binary" | "varbinary" | "text" | "blob" | "enum" | "set" => {
            Some(65_535 * 4)
        }
        "mediumtext" | "mediumblob" | "longtext" | "longblob" | "json" => None,
        _ if decoder == MyDecoder::Text || decoder == MyDecoder::Bytes => None,
        _ => Some(64),
    }
}
