//! Reading one subject from one consistent snapshot: what every store provides for Extract.
//!
//! The engine runs an extraction once, for every store, through these traits: it opens a
//! [`ReadSnapshot`] with [`Store::read_snapshot`], checks the identity against the identity
//! columns' types, asks for counts, reads each table's rows as a [`RowStream`] of [`Cells`],
//! and ends the snapshot, or abandons it when the call stops or fails. How a store takes its
//! snapshot, binds the identity, pipelines its counts, decodes its cells and stops a running
//! statement stays behind them.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::ColumnDecoder;
use super::error::DbError;
use crate::pb::{self, RowBuf};
use crate::values::Coercion;

/// A store that can open read-only snapshots.
pub trait Store: Send + Sync {
    type Snapshot: ReadSnapshot;

    /// The store's name in spans (OpenTelemetry's `db.system.name`).
    const SYSTEM: &'static str;

    /// Opens one consistent, read-only REPEATABLE READ snapshot on one connection, with every
    /// statement limited to what is left of `deadline`. Dropped before it resolves, it leaves
    /// nothing open on a pooled connection.
    fn read_snapshot(
        &self,
        options: ReadOptions<'_>,
    ) -> impl Future<Output = Result<Self::Snapshot, DbError>> + Send;
}

/// How a snapshot is opened.
pub struct ReadOptions<'a> {
    pub deadline: Option<Instant>,
    /// How long the transaction may sit idle before the database ends it itself: a backstop,
    /// should this process stop driving it.
    pub idle_limit: Duration,
    /// Statements the snapshot will be asked for with [`ReadSnapshot::counts`] or
    /// [`TableQuery::count_sql`]: a store may run them as the snapshot begins, in its first
    /// round trip.
    pub prefetch: &'a [Prefetch<'a>],
    /// The identity value, bound to every `$1` (or `?`) of those statements.
    pub value: &'a str,
}

/// A statement of one row of integers (counts) that may be run as a snapshot begins.
#[derive(Debug, Clone, Copy)]
pub struct Prefetch<'a> {
    /// `SELECT count(*) FROM ...` (one column), or `SELECT <expr>, <expr>, ...` of scalar
    /// expressions without a FROM of its own (several columns).
    pub sql: &'a str,
    pub columns: usize,
}

/// One consistent snapshot on one connection. Ended with [`ReadSnapshot::end`], or given up
/// with [`ReadSnapshot::abandon`]; dropped without either, its connection is not reused.
pub trait ReadSnapshot: Send {
    type Rows<'s>: RowStream
    where
        Self: 's;

    /// The server's clock when the snapshot began (seconds since 1970), and its version.
    fn clock(&self) -> (f64, &str);

    /// Checks that the identity value reads as every one of `types` (the identity columns'
    /// base types, as the store names them), before any row is read: a store that would
    /// convert `42abc` to 42 would match another person's rows.
    fn check_identity(
        &mut self,
        types: &[String],
        value: &str,
    ) -> impl Future<Output = Result<(), IdentityCheck>> + Send;

    /// The one row of a statement of integers, the identity bound to it.
    fn counts(
        &mut self,
        sql: &str,
        value: &str,
    ) -> impl Future<Output = Result<Vec<i64>, DbError>> + Send;

    /// The first column of every row of a statement, as text (NULLs left out), the identity
    /// bound to it: the values a link yields (a bounded, small result).
    fn texts(
        &mut self,
        sql: &str,
        value: &str,
    ) -> impl Future<Output = Result<Vec<String>, DbError>> + Send;

    /// Starts reading a table: its COUNT(*) is in when this resolves, its rows follow.
    fn table<'s>(
        &'s mut self,
        query: TableQuery<'s>,
        value: &'s str,
    ) -> impl Future<Output = Result<Self::Rows<'s>, ReadError>> + Send + 's;

    /// Ends the snapshot; nothing is read after.
    fn end(&mut self) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Gives the snapshot up after a failure or a stop: a statement still running is stopped
    /// on the server, and the transaction is ended or its connection closed. Never fails.
    fn abandon(self, why: Abandon) -> impl Future<Output = ()> + Send;

    /// Whether `error` (a cancelled statement) came from the snapshot's own statement limit,
    /// rather than from someone else's cancel.
    fn limit_fired(error: &DbError) -> bool;
}

/// Why a snapshot is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// The call stopped (the client left, the deadline passed, the server shuts down, the
    /// client stopped reading): a statement may still be running, and rows may be in flight.
    Stopped,
    /// A statement failed: nothing runs any more.
    Failed,
}

/// Why an identity value was refused.
#[derive(Debug)]
pub enum IdentityCheck {
    /// The value does not read as `base_type`; `code` is the store's error code, when it
    /// said one (its message may quote the value, so it is never passed on).
    NotA {
        base_type: String,
        code: Option<String>,
    },
    Db(DbError),
}

/// One planned table's statements.
#[derive(Debug, Clone, Copy)]
pub struct TableQuery<'a> {
    /// Its rows, the identity bound; with `bounded`, two integer columns follow the
    /// table's: which column (1-based, 0 for none) was measured too large, and its size.
    pub select_sql: &'a str,
    pub count_sql: &'a str,
    /// The decoders of the table's columns, chosen when the schema gate last passed.
    pub decoders: &'a [ColumnDecoder],
}

/// What reading a table can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The table changed since the schema gate passed: `column` (its index, when one is
    /// named) and what changed.
    #[error("{what}")]
    Drift { column: Option<usize>, what: String },
}

/// The rows of one table's statement, taken one at a time as they arrive: a row is read off
/// the connection only when the one before was taken.
pub trait RowStream: Send {
    type Row: Cells + Send;

    /// The table's COUNT(*), in the same snapshot.
    fn counted(&self) -> i64;

    /// The next row; `None` after the last.
    fn next(&mut self) -> impl Future<Output = Option<Result<Self::Row, ReadError>>> + Send;
}

/// One row's cells, decoded by the store's decoder of each column.
pub trait Cells {
    /// How many cells the row has.
    fn width(&self) -> usize;

    /// Writes cell `i` into `out` as the proto's value, without building one where the store
    /// can.
    fn write(&self, i: usize, decoder: ColumnDecoder, out: &mut RowBuf) -> Result<(), CellError>;

    /// Cell `i` as the proto's value.
    fn value(&self, i: usize, decoder: ColumnDecoder) -> Result<Cow<'_, pb::Value>, CellError>;

    /// Cell `i` as `rule` reads it (NULL stays NULL); a value that breaks the rule is
    /// [`CellError::Broken`].
    fn coerced(
        &self,
        i: usize,
        decoder: ColumnDecoder,
        rule: &Coercion,
    ) -> Result<Cow<'_, pb::Value>, CellError>;

    /// Cell `i` as an integer (the measured columns of a bounded statement).
    fn integer(&self, i: usize) -> Result<i64, CellError>;
}

/// Why a cell could not be read.
#[derive(Debug)]
pub enum CellError {
    /// The value breaks a rule: its row is a violation (left out, or the call fails, as the
    /// coercion policy says).
    Broken {
        rule: &'static str,
        category: &'static str,
        rule_type: pb::Rule,
    },
    /// The value could not be decoded as its column's type.
    Undecodable(String),
    /// The value is of another kind than the column's decoder reads: the column's type
    /// changed since the schema gate chose the decoder (`what` says how, without the value).
    Drift(String),
    Db(DbError),
}

impl CellError {
    /// A value that breaks `rule` as `error` says.
    pub fn broken(rule: &Coercion, error: crate::values::CoerceError) -> CellError {
        CellError::Broken {
            rule: error.rule,
            category: error.category,
            rule_type: rule.rule_type(),
        }
    }
}
