//! Changing one subject's rows in one read-write transaction: what every store provides for
//! Erase.
//!
//! The engine runs an erasure once, for every store, through these traits: it begins an
//! [`EraseTxn`] with [`Erase::begin_erasure`], locks the rows the identity matches, reads
//! the live columns and foreign keys, captures each changed table's rows (by row id, or by
//! primary key) into a slot, runs the guards' counts, deletes or masks the captured rows,
//! verifies them, and commits or rolls back. How a store captures rows, binds the identity
//! and the masks, measures values and stops a running statement stays behind them. The
//! engine keeps the policy, the order, the guards' arithmetic, the verification's verdicts
//! and the records.
//!
//! Every statement takes the identity as its plan's parameter (`$1`, or each `?`); the
//! transaction holds it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::catalog::ForeignKey;
use super::error::DbError;
use crate::config::QualifiedName;
use crate::config::erasure::MaskMethod;

/// A store whose rows an erasure can change.
pub trait Erase: Send + Sync {
    type Txn: EraseTxn;

    /// Begins one read-write REPEATABLE READ transaction on one connection, its row locks
    /// waited for at most `lock_timeout` and its statements limited to what is left of the
    /// deadline. Nothing is read yet: the first lock takes the snapshot.
    fn begin_erasure(
        &self,
        options: EraseOptions<'_>,
    ) -> impl Future<Output = Result<Self::Txn, EraseError>> + Send;

    /// What became of a transaction whose COMMIT lost its connection, asked on another
    /// connection: `Some(true)` committed, `Some(false)` rolled back, `None` unknown (the
    /// store cannot tell, or does not answer).
    fn commit_outcome(
        &self,
        transaction: &str,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Option<bool>> + Send;

    /// Whether a cancelled statement was cut by the transaction's own statement limit (the
    /// time the deadline left), rather than by a person or another session.
    fn limit_fired(error: &DbError) -> bool;
}

/// How an erasure's transaction is begun.
pub struct EraseOptions<'a> {
    pub lock_timeout: Duration,
    pub deadline: Option<Instant>,
    /// The identity, bound to every statement's parameter.
    pub value: &'a str,
    /// The database's name, for spans.
    pub database: &'a str,
}

/// One table of an erasure, as its plan reaches it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The erasure's step: each step's captured and masked rows are held apart.
    pub slot: usize,
    pub name: &'a QualifiedName,
    /// As callers see the table's name.
    pub display: &'a str,
    /// `<table> AS t0`, as the plan reads it.
    pub from: &'a str,
    /// The WHERE clause of each of the plan's paths to the table, with the identity as the
    /// parameter.
    pub branches: &'a [String],
    /// `SELECT count(*) FROM <table> t0 WHERE <condition>`.
    pub count_sql: &'a str,
}

/// Which rows of a table a change takes.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// The rows captured before anything changed.
    Captured(&'a Captured),
    /// The rows the plan finds now (a direct step; see [`EraseTxn::direct_changes`]).
    Plan,
}

/// Rows held by a store for one slot, as the statement that captured or masked them
/// counted them: per relation that holds them (a store without partitions of its own has
/// one, numbered 0), how many rows.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub rels: Vec<(u32, u64)>,
}

impl Captured {
    pub fn rows(&self) -> u64 {
        self.rels.iter().map(|(_, rows)| rows).sum()
    }
}

/// What a masked column is set to.
pub enum MaskValue {
    Null,
    /// The source's redaction text.
    Text(String),
    /// Each distinct value (as [`EraseTxn::distinct_values`] read it) and its token.
    Tokens {
        values: Vec<Vec<u8>>,
        tokens: Vec<String>,
    },
}

/// A column a masked row must hold only as masked, for [`EraseTxn::unmasked`].
pub struct MaskCheck<'a> {
    pub column: &'a str,
    pub method: MaskMethod,
}

/// Which page of JSON documents [`EraseTxn::json_page`] reads: of the slot's captured rows
/// (or, with `masked`, its masked rows), from the row at `offset`, at most `page_bytes` of
/// documents (or one document) and `page_rows` rows. A document above `max_doc` bytes is
/// measured, not read.
#[derive(Debug, Clone, Copy)]
pub struct PageOf {
    pub masked: bool,
    pub offset: u64,
    pub max_doc: u64,
    pub page_bytes: u64,
    pub page_rows: u64,
}

/// A page of JSON documents of a slot's rows, read by [`EraseTxn::json_page`].
pub struct JsonPage {
    /// Each row's id, as the store names it.
    pub ids: Vec<String>,
    /// Per JSON column asked for, the page's documents (NULL stays NULL).
    pub docs: Vec<Vec<Option<String>>>,
    /// A document above the limit: its column (index) and size. It was not read.
    pub too_large: Option<(usize, u64)>,
}

/// The distinct values of a column in a slot's rows, or their total size when above the
/// bound (then none was read).
pub enum Distinct {
    Values(Vec<Vec<u8>>),
    TooLarge(u64),
}

/// Why a step of an erasure failed.
#[derive(Debug)]
pub enum EraseError {
    Db(DbError),
    /// The change broke an integrity rule or a column's limits: named by its constraint or
    /// column, never by a value the database's message may quote.
    Integrity {
        table: Option<String>,
        what: String,
        /// The store's own code (a SQLSTATE, an error number).
        code: String,
        /// A foreign key was broken (a row a concurrent writer added may be the cause).
        foreign_key: bool,
        /// A data error (a value that does not convert), rather than a constraint.
        data: bool,
    },
    /// The store cannot change this table's rows as asked.
    Unsupported {
        table: String,
        column: String,
        detail: String,
    },
}

impl From<DbError> for EraseError {
    fn from(error: DbError) -> EraseError {
        EraseError::Db(error)
    }
}

/// Why a COMMIT failed.
pub enum CommitError {
    /// The database refused it: nothing was committed.
    Refused(EraseError),
    /// The connection was lost while COMMIT was in flight: the outcome is unknown.
    Lost(DbError),
}

/// One erasure's transaction on one connection. Ended by [`EraseTxn::commit`],
/// [`EraseTxn::rollback`] or [`EraseTxn::abandon`]; dropped without either, it is rolled
/// back and its connection is not reused.
pub trait EraseTxn: Send {
    /// Whether a step may be changed by its plan's own condition ([`Rows::Plan`]); a store
    /// that cannot (MySQL refuses a DELETE whose condition reads its own table) captures
    /// every changed table.
    fn direct_changes(&self) -> bool;

    /// Locks the rows of `target` that `branch` (an identity branch) selects, as the
    /// transaction's first reads.
    fn lock(
        &mut self,
        target: Target<'_>,
        branch: &str,
    ) -> impl Future<Output = Result<(), EraseError>> + Send;

    /// A count: `SELECT count(*) ...` with the identity.
    fn count(&mut self, sql: &str) -> impl Future<Output = Result<u64, EraseError>> + Send;

    /// One row of integers (the plan's guards) with the identity.
    fn integers(&mut self, sql: &str) -> impl Future<Output = Result<Vec<i64>, EraseError>> + Send;

    /// The live columns of a table, read in this transaction.
    fn live_columns(
        &mut self,
        table: &QualifiedName,
    ) -> impl Future<Output = Result<Vec<String>, EraseError>> + Send;

    /// Every foreign key of the database, read in this transaction.
    fn foreign_keys(&mut self) -> impl Future<Output = Result<Vec<ForeignKey>, EraseError>> + Send;

    /// For each table and whether it is deleted (else masked): whether the catalog shows
    /// nothing that could keep back a row its statement finds (a trigger that skips a row, a
    /// rule, row security).
    fn unconditional(
        &mut self,
        tables: &[(&QualifiedName, bool)],
    ) -> impl Future<Output = Result<Vec<bool>, EraseError>> + Send;

    /// Captures the rows of `target` that its plan finds into its slot; `sorted` when they
    /// will be read back in pages.
    fn capture(
        &mut self,
        target: Target<'_>,
        sorted: bool,
    ) -> impl Future<Output = Result<Captured, EraseError>> + Send;

    /// Deletes `rows` of `target`; the rows deleted.
    fn delete(
        &mut self,
        target: Target<'_>,
        rows: Rows<'_>,
    ) -> impl Future<Output = Result<u64, EraseError>> + Send;

    /// The distinct values of `column` in `rows` (not NULL), each as the store renders it
    /// for comparing, when they hold at most `max_bytes`.
    fn distinct_values(
        &mut self,
        target: Target<'_>,
        rows: Rows<'_>,
        column: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Distinct, EraseError>> + Send;

    /// Sets each masked column of `rows`; the masked rows, held in the slot for
    /// [`EraseTxn::unmasked`].
    fn mask(
        &mut self,
        target: Target<'_>,
        rows: Rows<'_>,
        sets: &[(String, MaskValue)],
    ) -> impl Future<Output = Result<Captured, EraseError>> + Send;

    /// How many of the slot's captured rows are still there.
    fn left(
        &mut self,
        target: Target<'_>,
        captured: &Captured,
    ) -> impl Future<Output = Result<u64, EraseError>> + Send;

    /// How many of the slot's masked rows hold a column not masked as `masks` say, or a value
    /// of a `text_columns` equal to the identity.
    fn unmasked(
        &mut self,
        target: Target<'_>,
        masked: &Captured,
        masks: &[MaskCheck<'_>],
        text_columns: &[&str],
        redaction: &str,
    ) -> impl Future<Output = Result<u64, EraseError>> + Send;

    /// How many rows of `child` point, through `pairs` (child column, parent column), at a
    /// captured row of `parent`, leaving out the rows that any of `own` (branches on the
    /// child at `t0`) selects.
    fn pointing_at(
        &mut self,
        parent: Target<'_>,
        captured: &Captured,
        child: &QualifiedName,
        pairs: &[(String, String)],
        own: &[String],
    ) -> impl Future<Output = Result<u64, EraseError>> + Send;

    /// The next page of JSON documents of `columns` in the slot's rows, as `page` says;
    /// `None` when none is left.
    fn json_page(
        &mut self,
        target: Target<'_>,
        columns: &[&str],
        page: PageOf,
    ) -> impl Future<Output = Result<Option<JsonPage>, EraseError>> + Send;

    /// Writes a page back: `sets` (the table's other masks) and each JSON column's masked
    /// documents (`None` keeps a document) on the page's rows; the rows written, held in
    /// the slot's masked rows once [`EraseTxn::json_done`] runs. `columns` are the JSON
    /// columns and their declared types, as `json_page` read them; `sets` are the same on
    /// every page of a slot.
    fn write_json_page(
        &mut self,
        target: Target<'_>,
        sets: &[(String, MaskValue)],
        columns: &[(&str, &str)],
        ids: &[String],
        docs: &[Vec<Option<String>>],
    ) -> impl Future<Output = Result<u64, EraseError>> + Send;

    /// The rows every page of the slot wrote, as its masked rows.
    fn json_done(
        &mut self,
        target: Target<'_>,
    ) -> impl Future<Output = Result<Captured, EraseError>> + Send;

    /// The transaction's id, to ask what became of it should COMMIT lose its connection.
    fn transaction_id(&mut self)
    -> impl Future<Output = Result<Option<String>, EraseError>> + Send;

    /// Commits.
    fn commit(self) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// Rolls back; whether the connection ended it cleanly (else it is not reused).
    fn rollback(self) -> impl Future<Output = bool> + Send;

    /// Gives the transaction up mid-statement: the statement in flight is stopped on the
    /// server, the transaction rolled back and the connection not reused.
    fn abandon(self) -> impl Future<Output = ()> + Send;

    /// A database client span of one statement of `target` ([`query_span`]).
    fn span(&self, operation: &str, target: Target<'_>, sql: &str) -> tracing::Span;
}

/// A database client span of one statement of an erasure on `target`, as OpenTelemetry's
/// database conventions name it: `system` is the store's `db.system.name`, `database` its
/// `db.namespace`. The SQL holds no value: the identity and the masks are bound parameters.
pub fn query_span(
    system: &'static str,
    database: &str,
    operation: &str,
    target: Target<'_>,
    sql: &str,
) -> tracing::Span {
    tracing::info_span!(
        "db.query",
        otel.name = %format!("{operation} {}", target.display),
        otel.kind = "client",
        db.system.name = system,
        db.namespace = %database,
        db.collection.name = %target.display,
        db.operation.name = operation,
        db.query.text = %sql,
    )
}
