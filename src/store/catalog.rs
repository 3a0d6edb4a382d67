//! What a store's catalog says of the tables a data map names, in words every store shares:
//! the schema gate checks these, never a store's own catalog rows.

use std::future::Future;

use tokio::time::Instant;

use super::error::DbError;
use super::{ColumnDecoder, ColumnType};
use crate::config::QualifiedName;

/// A store's catalog: the mapped tables, in the order asked, and (when asked for) every
/// foreign key of the database.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: Vec<LiveTable>,
    pub foreign_keys: Vec<ForeignKey>,
}

/// One live table. No columns: no such table, or the account cannot see it.
#[derive(Debug, Default)]
pub struct LiveTable {
    pub columns: Vec<LiveColumn>,
    /// It can have indexes (views and foreign tables have none to advise on).
    pub indexable: bool,
    /// Its rows live in several relations: a partitioned table, or one with inheritance
    /// children.
    pub spans_relations: bool,
    /// A table whose rows are stored here: not a view, a materialised view or a foreign
    /// table.
    pub base_table: bool,
    pub primary_key: Vec<String>,
    pub index_keys: Vec<IndexKey>,
}

/// One live column.
#[derive(Debug)]
pub struct LiveColumn {
    pub name: String,
    /// The store's own type with modifiers (`character varying(255)`, `varchar(255)`), for
    /// messages only.
    pub type_name: String,
    /// The type without modifiers, to which an identity value is cast.
    pub base_type: String,
    /// What the column holds, in words every store shares.
    pub column_type: ColumnType,
    /// The most bytes one value can take, where the store's type bounds it.
    pub max_bytes: Option<u64>,
    pub not_null: bool,
    /// The most characters a `varchar(n)` or `char(n)` column holds.
    pub max_chars: Option<i32>,
    pub decoder: ColumnDecoder,
    /// Compares text case-insensitively by itself (citext, a MySQL `_ci` collation).
    pub folds_case: bool,
}

/// An index's first key: a plain column, or the column of `lower(column)`.
#[derive(Debug, Clone)]
pub struct IndexKey {
    pub column: Option<String>,
    pub lower_of: Option<String>,
    /// A unique index on this key alone.
    pub unique: bool,
}

/// A foreign key: `pairs` of the `child`'s columns refer to the `parent`'s.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub constraint: String,
    pub child: QualifiedName,
    pub parent: QualifiedName,
    pub on_delete: KeyAction,
    pub on_update: KeyAction,
    /// The key's columns in the child, in key order, with the parent's they match.
    pub pairs: Vec<(String, String)>,
}

impl ForeignKey {
    /// The parent's columns the key refers to.
    pub fn parent_columns(&self) -> impl Iterator<Item = &String> {
        self.pairs.iter().map(|(_, parent)| parent)
    }
}

/// A foreign key's referential action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    NoAction,
    Restrict,
    Cascade,
    SetNull,
    SetDefault,
}

impl KeyAction {
    /// PostgreSQL's `pg_constraint.confdeltype` and `confupdtype` (`a` no action, `r`
    /// restrict, `c` cascade, `n` set null, `d` set default).
    pub fn from_code(code: char) -> KeyAction {
        match code {
            'c' => KeyAction::Cascade,
            'n' => KeyAction::SetNull,
            'd' => KeyAction::SetDefault,
            'r' => KeyAction::Restrict,
            _ => KeyAction::NoAction,
        }
    }

    /// `information_schema.REFERENTIAL_CONSTRAINTS`' `DELETE_RULE` and `UPDATE_RULE`.
    pub fn from_rule(rule: &str) -> KeyAction {
        match rule.to_ascii_uppercase().as_str() {
            "CASCADE" => KeyAction::Cascade,
            "SET NULL" => KeyAction::SetNull,
            "SET DEFAULT" => KeyAction::SetDefault,
            "RESTRICT" => KeyAction::Restrict,
            _ => KeyAction::NoAction,
        }
    }

    /// `ON DELETE CASCADE`, ...
    pub fn on_delete(self) -> &'static str {
        match self {
            KeyAction::NoAction => "ON DELETE NO ACTION",
            KeyAction::Restrict => "ON DELETE RESTRICT",
            KeyAction::Cascade => "ON DELETE CASCADE",
            KeyAction::SetNull => "ON DELETE SET NULL",
            KeyAction::SetDefault => "ON DELETE SET DEFAULT",
        }
    }

    /// `ON UPDATE CASCADE`, ...
    pub fn on_update(self) -> &'static str {
        match self {
            KeyAction::NoAction => "ON UPDATE NO ACTION",
            KeyAction::Restrict => "ON UPDATE RESTRICT",
            KeyAction::Cascade => "ON UPDATE CASCADE",
            KeyAction::SetNull => "ON UPDATE SET NULL",
            KeyAction::SetDefault => "ON UPDATE SET DEFAULT",
        }
    }

    /// Whether the action changes the referencing rows by itself (cascade, set null, set
    /// default), rather than refusing the change (no action, restrict).
    pub fn acts(self) -> bool {
        matches!(
            self,
            KeyAction::Cascade | KeyAction::SetNull | KeyAction::SetDefault
        )
    }
}

/// Why a catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No connection: the store's own error.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A catalog statement failed.
    #[error("source '{source_name}': reading the catalog failed: {cause}")]
    Read { source_name: String, cause: String },
}

/// What the schema gate and Validate read of a store besides rows: its catalog, and sampled
/// text values.
pub trait ReadCatalog: Send + Sync {
    /// The catalog of `tables`, in order, and every foreign key of the database when
    /// `foreign_keys` is set, with a connection checked out before `deadline`.
    fn catalog(
        &self,
        tables: &[QualifiedName],
        foreign_keys: bool,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Catalog, CatalogError>> + Send;

    /// The first column, as text, of each row of each sampling statement (which take no
    /// parameter), read on one connection; a row whose first column is NULL or not text
    /// is skipped.
    fn sample_texts(
        &self,
        statements: &[String],
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Vec<Vec<String>>, DbError>> + Send;
}
