//! The SQL a store speaks, as far as the engine's plans need it: quoting, table names, how a
//! column is selected and measured, how an identity is compared, and the indexes to advise.
//! The planner and the schema gate write their queries through a [`Dialect`] and never name
//! a store; each store implements [`SqlDialect`] in its own folder.

use std::fmt;
use std::ops::Deref;

use super::ColumnDecoder;
use super::types::ColumnType;
use crate::config::{MatchMode, QualifiedName};

/// A looser match than the data map declares, for telling an operator what an empty answer
/// may have missed: every text identity column compared case-insensitively, or trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looser {
    CaseInsensitive,
    Trimmed,
}

impl Looser {
    pub const ALL: [Looser; 2] = [Looser::CaseInsensitive, Looser::Trimmed];

    pub fn name(self) -> &'static str {
        match self {
            Looser::CaseInsensitive => "case_insensitive",
            Looser::Trimmed => "trimmed",
        }
    }
}

/// How a plan compares identity columns with the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// As the data map declares each column (`match = ...`).
    Declared,
    /// More loosely than declared.
    Looser(Looser),
    /// Exactly, whatever the data map declares: `column = value`, case-sensitive even on a
    /// `citext` column. Erasure compares so unless its source says otherwise.
    Exact,
}

/// A column as a dialect writes SQL about it.
#[derive(Debug, Clone, Copy)]
pub struct SqlColumn<'a> {
    /// The column as the query names it (`t0."email"`), already quoted.
    pub expr: &'a str,
    pub column_type: ColumnType,
    pub decoder: ColumnDecoder,
    /// Compares text case-insensitively by itself (citext, a `_ci` collation).
    pub folds_case: bool,
    /// The store's type without modifiers, which the identity value is cast to.
    pub cast_type: &'a str,
    /// The most bytes one value can take, where the store's type bounds it.
    pub max_bytes: Option<u64>,
}

/// What an advised index is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOn {
    /// The column itself.
    Column,
    /// The column lower-cased.
    Lower,
    /// The column's digits.
    Digits,
}

/// The SQL of one store.
pub trait SqlDialect: Send + Sync {
    /// The store's name in messages (`postgres`, `mysql`).
    fn name(&self) -> &'static str;

    /// Quotes an identifier.
    fn quote(&self, name: &str) -> String;

    /// A table as a query names it.
    fn table(&self, name: &QualifiedName) -> String;

    /// `expr` as a 64-bit integer.
    fn as_bigint(&self, expr: &str) -> String;

    /// `expr` (a text column) as the client reads text.
    fn as_text(&self, expr: &str) -> String;

    /// The select-list expression that the column's decoder reads.
    fn select(&self, column: &SqlColumn) -> String;

    /// For a column that can hold a value above `limit` bytes: the condition that one does,
    /// and its size, both computed in SQL (so that the value never crosses).
    fn measured(&self, column: &SqlColumn, limit: usize) -> Option<(String, String)>;

    /// The condition on the column for the identity value (the query's one parameter,
    /// bound once per placeholder, or one element of it, as `param` says), compared as
    /// `compare` and `matching` say. Each form can use an index.
    fn identity_condition(
        &self,
        column: &SqlColumn,
        compare: Compare,
        matching: MatchMode,
        param: Param,
    ) -> String;

    /// The statement that creates the index an identity match or a reference needs.
    fn create_index(&self, table: &QualifiedName, column: &str, on: IndexOn) -> String;

    /// Whether a reference from a column of type `child` to one of `parent` compares.
    fn compares(&self, child: ColumnType, parent: ColumnType) -> bool {
        child.compares_with(parent)
    }
}

/// Where a plan's identity value is: the query's one parameter, or, for a plan of several
/// identities, element `k` of that parameter, a JSON array of the normalised values. One
/// parameter either way, so that every statement binds the same thing however many identities
/// it compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    Only,
    Element(usize),
}

/// A source's dialect, chosen once from its kind ([`super::dialect_of`]).
#[derive(Clone, Copy)]
pub struct Dialect(pub(super) &'static dyn SqlDialect);

impl Dialect {
    pub fn of(kind: crate::config::DatabaseKind) -> Dialect {
        super::dialect_of(kind)
    }
}

impl Deref for Dialect {
    type Target = dyn SqlDialect;

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Dialect {
    fn eq(&self, other: &Dialect) -> bool {
        self.0.name() == other.0.name()
    }
}

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}
