//! Drafting a data map: what `discover` reads of a store, in words every store shares. The
//! catalog's tables, columns, keys and foreign keys; a bounded sample of each table's values
//! as text; and lookups that check a link or measure a key's fan-in. Catalog reads only,
//! besides the sample: no other row is read.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::error::DbError;
use crate::config::QualifiedName;
use crate::store::ColumnType;

/// A store that drafts data maps.
pub trait Discover: Send + Sync {
    type Snapshot: DiscoverySnapshot;

    /// One read-only snapshot for drafting, its connection checked out before `deadline`,
    /// each statement limited to `statement_timeout`.
    fn discovery(
        &self,
        statement_timeout: Duration,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Self::Snapshot, DbError>> + Send;
}

/// How much of each sampled value is read, as text.
#[derive(Debug, Clone, Copy)]
pub struct SampleLimits {
    /// A JSON document over this many bytes is read as the empty string.
    pub json_bytes: usize,
    /// A string value is read up to this many characters.
    pub text_chars: usize,
    /// Any other value (bytes excepted, read as NULL) is read up to this many characters.
    pub prefix_chars: usize,
}

/// A drafting snapshot. A failed sample, lookup or measure leaves it usable.
pub trait DiscoverySnapshot: Send {
    /// The tables `filter` selects, with their columns and keys, in catalog order.
    fn tables(
        &mut self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Table>, DbError>> + Send;

    /// At most `limit` rows of `table`, each value as text read as `limits` say, each row
    /// passed to `each` and forgotten. A failure ends this table's sample, and is named
    /// without a value.
    fn sample(
        &mut self,
        table: &Table,
        limit: u32,
        limits: SampleLimits,
        each: &mut (dyn FnMut(&[Option<&str>]) + Send),
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// How many rows of `table` hold one of `values` in `column` (an integer column when
    /// `integer`, whose values all parse as integers); `None` when the lookup failed.
    fn count_in(
        &mut self,
        table: &QualifiedName,
        column: &str,
        values: &[&str],
        integer: bool,
    ) -> impl Future<Output = Option<i64>> + Send;

    /// The one integer of `sql`; `None` when it failed or was NULL.
    fn measure(&mut self, sql: &str) -> impl Future<Output = Option<i64>> + Send;

    /// Ends the snapshot (it only read).
    fn end(self) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// One column of a live table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub attnum: i16,
    /// The store's own type name (`int8`, `varchar`, ...), for messages only.
    pub type_name: String,
    /// What the column holds.
    pub column_type: ColumnType,
    /// Compares case-insensitively even when matched exactly (citext).
    pub folds_case: bool,
}

impl Column {
    pub fn is_text(&self) -> bool {
        self.column_type == ColumnType::Text
    }

    pub fn is_integer(&self) -> bool {
        self.column_type == ColumnType::Integer
    }

    pub fn is_json(&self) -> bool {
        self.column_type == ColumnType::Json
    }
}

/// A single-column foreign key: `column` of this table refers to `to` of `table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub column: String,
    pub table: QualifiedName,
    pub to: String,
}

/// One live table.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: QualifiedName,
    /// `pg_class.reltuples`: the planner's estimate, negative when never analysed.
    pub estimated_rows: f64,
    pub columns: Vec<Column>,
    /// The primary key's column, when it has exactly one.
    pub primary_key: Option<String>,
    /// Columns that are unique on their own (primary key, unique constraint or index).
    pub unique: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Foreign keys that are not proposed as references, each with the reason (several
    /// columns, or a table outside the selection).
    pub unproposed_keys: Vec<String>,
    /// Whether the connected role may SELECT from it.
    pub readable: bool,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_unique(&self, column: &str) -> bool {
        self.unique.iter().any(|u| u == column)
    }

    pub fn foreign_key(&self, column: &str) -> Option<&ForeignKey> {
        self.foreign_keys.iter().find(|f| f.column == column)
    }
}

/// Which tables to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Schemas to read; empty means every schema but PostgreSQL's own.
    pub schemas: Vec<String>,
    /// Tables to leave out: `table`, `schema.table`, with `*` matching any characters.
    pub exclude: Vec<String>,
}

impl Filter {
    pub fn excludes(&self, name: &QualifiedName) -> bool {
        let qualified = format!("{}.{}", name.schema, name.table);
        self.exclude.iter().any(|pattern| {
            let target = if pattern.contains('.') {
                &qualified
            } else {
                &name.table
            };
            glob_matches(pattern, target)
        })
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let regex = format!(
        "^{}$",
        pattern
            .split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*")
    );
    regex::Regex::new(&regex).is_ok_and(|r| r.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("audit_*", "audit_2024"));
        assert!(!glob_matches("audit_*", "my_audit_2024"));
        assert!(glob_matches("tmp", "tmp"));
        assert!(!glob_matches("tmp", "tmp2"));
        assert!(glob_matches("a.b", "a.b"));
        assert!(
            !glob_matches("a.b", "axb"),
            "a dot is a dot, not any character"
        );
    }

    #[test]
    fn exclusions_name_a_table_or_a_qualified_table() {
        let filter = Filter {
            schemas: Vec::new(),
            exclude: vec!["staging.*".into(), "*_log".into()],
        };
        let name = |s: &str, t: &str| QualifiedName {
            schema: s.into(),
            table: t.into(),
        };
        assert!(filter.excludes(&name("staging", "customers")));
        assert!(filter.excludes(&name("public", "access_log")));
        assert!(!filter.excludes(&name("public", "customers")));
    }
}
