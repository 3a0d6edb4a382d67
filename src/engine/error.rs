//! What ends an extraction early, and why a producer stopped.

use std::time::Duration;

use crate::engine::erase::refusal::ErasureRefusal;
use crate::observability::metrics::Metrics;
use crate::pb;
use crate::records::audit::{AuditError, Entry};
use crate::records::deadletter::DeadLetter;
use crate::records::{Failure, Records};
use crate::resilience::admission::AdmissionError;
use crate::resilience::breaker::Outcome;
use crate::schema::PlanError;
use crate::store::postgres::{DbError, QueryFailure};

/// Everything that ends an extraction early.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("unknown source '{0}'")]
    UnknownSource(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "table '{table}': {streamed} rows were streamed but COUNT(*) in the same snapshot is {counted}"
    )]
    CountMismatch {
        table: String,
        streamed: u64,
        counted: i64,
    },
    #[error(
        "table '{table}': a row is {bytes} bytes encoded (largest column: '{column}'), above the \
         {limit}-byte message limit; such rows cannot be streamed"
    )]
    RowTooLarge {
        table: String,
        column: String,
        bytes: usize,
        limit: usize,
    },
    #[error("table '{table}', column '{column}': {reason}")]
    Decode {
        table: String,
        column: String,
        reason: String,
    },
    /// The message names table, column, rule and category; the row's key stays in the
    /// structured violation, out of log lines.
    #[error(
        "table '{}', column '{}': a value fails rule '{}' ({}); fix the data or the rule, or \
         set on_coercion_error = \"reject_row\"",
        .0.table, .0.column, .0.rule, .0.category
    )]
    Coercion(Box<pb::Violation>),
    #[error("the deadline passed during the extraction; the database query was cancelled")]
    DeadlineExceeded,
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(
        "source '{source_name}': the circuit breaker is open after repeated database failures; \
         calls fail fast, retry after {retry_after:?}"
    )]
    CircuitOpen {
        source_name: String,
        retry_after: Duration,
    },
    #[error(
        "the client took no message for {0:?} (server.send_stall_timeout); the extraction was \
         cancelled and its snapshot released"
    )]
    Stalled(Duration),
    #[error(
        "the {what} message would be {bytes} bytes, above the {limit}-byte message limit; \
         request fewer tables"
    )]
    MessageTooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("the server is shutting down; retry on another replica")]
    ShuttingDown,
    /// The audit record could not be made durable, so the manifest was withheld.
    #[error(transparent)]
    AuditUnavailable(#[from] crate::records::audit::AuditError),
    /// A rejected row's dead letter could not be made durable, so the manifest was withheld:
    /// the queue is the only list of what the answer left out.
    #[error(
        "the dead-letter queue cannot be written ({0}); the call's answer was withheld because \
         it would leave rows out without a record of them"
    )]
    DeadLettersUnavailable(String),
    #[error("the extraction manifest breaks the manifest rules: {}", .0.join("; "))]
    InvalidManifest(Vec<String>),
    /// The identity matches more rows than `max_identity_rows` in a table where one row is
    /// one person.
    #[error(
        "table '{table}': the identity matches {rows} rows, above max_identity_rows = {max}; a \
         shared identity is not one person, so the call was refused before any row was read \
         or changed"
    )]
    SharedIdentity { table: String, rows: u64, max: u64 },
    /// The subject's rows broke the reach rule in the snapshot: a hub reached by lookup, or a
    /// followed key that is not unique.
    #[error(transparent)]
    Reach(#[from] crate::schema::ReachRefusal),
    /// An erasure refused, or rolled back, for a reason it names.
    #[error(transparent)]
    Erasure(#[from] crate::engine::erase::refusal::ErasureRefusal),
    #[error("internal error: {0}")]
    Internal(String),
    /// The client went away. Nobody hears this error; it ends the producer.
    #[error("the client went away")]
    ClientGone,
}

impl ExtractError {
    /// A short, stable name for what ended the extraction, for spans and records. It never
    /// holds a value.
    pub fn kind(&self) -> &'static str {
        match self {
            ExtractError::InvalidArgument(_) => "invalid_argument",
            ExtractError::UnknownSource(_) => "unknown_source",
            ExtractError::Plan(PlanError::SchemaDrift { .. }) => "schema_drift",
            ExtractError::Plan(_) => "plan",
            ExtractError::Db(_) => "database",
            ExtractError::CountMismatch { .. } => "count_mismatch",
            ExtractError::RowTooLarge { .. } => "row_too_large",
            ExtractError::Decode { .. } => "decode",
            ExtractError::Coercion(_) => "coercion",
            ExtractError::DeadlineExceeded => "deadline",
            ExtractError::Admission(_) => "admission",
            ExtractError::CircuitOpen { .. } => "circuit_open",
            ExtractError::Stalled(_) => "stalled",
            ExtractError::MessageTooLarge { .. } => "message_too_large",
            ExtractError::ShuttingDown => "shutting_down",
            ExtractError::AuditUnavailable(_) => "audit_unavailable",
            ExtractError::DeadLettersUnavailable(_) => "dead_letters_unavailable",
            ExtractError::InvalidManifest(_) => "invalid_manifest",
            ExtractError::SharedIdentity { .. } => "shared_identity",
            ExtractError::Reach(_) => "reach",
            ExtractError::Erasure(refusal) => refusal.kind(),
            ExtractError::Internal(_) => "internal",
            ExtractError::ClientGone => "client_gone",
        }
    }
}

impl ExtractError {
    /// Whether trying again may succeed: a transient database error (connection refused,
    /// reset or lost; SQLSTATE 40001, 40P01, class 08 and 53, 57P01-57P03) or a catalog
    /// read that failed. A full pool is not: the call already waited its checkout timeout.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExtractError::Db(DbError::PoolExhausted { .. }) => false,
            ExtractError::Db(db) => db.is_transient(),
            ExtractError::Plan(PlanError::Catalog { .. }) => true,
            _ => false,
        }
    }
}

impl ExtractError {
    /// The dead-letter category of a failure on the service's or the data's side; `None`
    /// for the caller's own mistakes (bad input, unknown names) and for a client that left.
    pub fn dead_letter_category(&self) -> Option<&'static str> {
        Some(match self {
            ExtractError::Coercion(_) => "coercion",
            ExtractError::Plan(PlanError::SchemaDrift { .. }) | ExtractError::Decode { .. } => {
                "schema_drift"
            }
            ExtractError::CountMismatch { .. } | ExtractError::InvalidManifest(_) => "integrity",
            ExtractError::Db(DbError::Refused { .. }) => "authorization",
            ExtractError::Db(DbError::Query {
                failure: QueryFailure::InsufficientPrivilege,
                ..
            }) => "authorization",
            ExtractError::DeadlineExceeded
            | ExtractError::Admission(AdmissionError::Deadline { .. }) => "deadline",
            ExtractError::Db(_)
            | ExtractError::Plan(PlanError::Catalog { .. })
            | ExtractError::Admission(_)
            | ExtractError::CircuitOpen { .. }
            | ExtractError::Stalled(_)
            | ExtractError::ShuttingDown
            | ExtractError::AuditUnavailable(_)
            | ExtractError::DeadLettersUnavailable(_)
            | ExtractError::RowTooLarge { .. }
            | ExtractError::MessageTooLarge { .. } => "transport",
            ExtractError::Internal(_) => "internal",
            // What the data map does not cover, or what the database would not let change:
            // the erasure is owed still, and someone must act.
            ExtractError::Erasure(
                ErasureRefusal::NoPolicy { .. }
                | ErasureRefusal::Policy { .. }
                | ErasureRefusal::UndeclaredCascade { .. }
                | ErasureRefusal::MappedCascade { .. },
            ) => "schema_drift",
            ExtractError::Erasure(ErasureRefusal::SharedRow { .. }) => "integrity",
            ExtractError::SharedIdentity { .. } | ExtractError::Reach(_) => "integrity",
            ExtractError::Erasure(
                ErasureRefusal::CountChanged { .. }
                | ErasureRefusal::Unverified { .. }
                | ErasureRefusal::Constraint { .. }
                | ErasureRefusal::CommitOutcomeUnknown { .. },
            ) => "integrity",
            ExtractError::Erasure(
                ErasureRefusal::PreviewRequired { .. }
                | ErasureRefusal::PreviewChanged
                | ErasureRefusal::PreviewExpired { .. },
            ) => return None,
            ExtractError::InvalidArgument(_)
            | ExtractError::UnknownSource(_)
            | ExtractError::Plan(_)
            | ExtractError::ClientGone => return None,
        })
    }
}

/// What a call's error (`None`: it succeeded) says about its source, for the circuit breaker. Only the source's
/// infrastructure failures count against it: refused, reset or lost connections, pool
/// checkout timeouts, SQLSTATE classes 08 and 53 and 57P0x, and catalog reads that failed.
/// A caller's bad input, its deadline, unknown names, drift and the service's own limits say
/// nothing about the source's health.
pub fn breaker_outcome(error: Option<&ExtractError>) -> Outcome {
    match error {
        None => Outcome::Success,
        Some(ExtractError::Db(db)) => match db {
            DbError::Unavailable { .. }
            | DbError::ConnectionLost { .. }
            | DbError::PoolExhausted { .. }
            | DbError::Refused { .. } => Outcome::Failure,
            DbError::Query { failure, .. } if failure.is_source_failure() => Outcome::Failure,
            _ => Outcome::Neutral,
        },
        Some(ExtractError::Plan(PlanError::Catalog { .. })) => Outcome::Failure,
        Some(_) => Outcome::Neutral,
    }
}

/// `error`, or DEADLINE_EXCEEDED when it is a statement the store cancelled for the call's
/// deadline, whichever timer saw it first: the store says its own statement limit (set to the
/// time the deadline left) fired (`limit_fired`), or the deadline is within 250 ms.
pub(super) fn deadline_cut(
    error: ExtractError,
    limit_fired: fn(&DbError) -> bool,
    deadline: Option<tokio::time::Instant>,
) -> ExtractError {
    let near =
        deadline.is_some_and(|d| tokio::time::Instant::now() + Duration::from_millis(250) >= d);
    match error {
        ExtractError::Db(
            ref db @ DbError::Query {
                failure: QueryFailure::Cancelled,
                ..
            },
        ) if limit_fired(db) || near => ExtractError::DeadlineExceeded,
        other => other,
    }
}

/// Why the producer stopped before finishing.
pub(super) enum Stop {
    ClientGone,
    Deadline,
    Shutdown,
}

impl Stop {
    /// Resolves with the first reason a call must stop: its client went away
    /// (`client_gone`), its deadline passed, or the server is shutting down.
    pub(super) async fn first(
        client_gone: impl Future<Output = ()>,
        deadline: Option<tokio::time::Instant>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Stop {
        let deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = client_gone => Stop::ClientGone,
            _ = deadline => Stop::Deadline,
            _ = shutdown.cancelled() => Stop::Shutdown,
        }
    }

    pub(super) fn into_error(self) -> ExtractError {
        match self {
            Stop::ClientGone => ExtractError::ClientGone,
            Stop::Deadline => ExtractError::DeadlineExceeded,
            Stop::Shutdown => ExtractError::ShuttingDown,
        }
    }
}

/// Whether an error suggests the catalog changed under a cached data map.
pub(super) fn error_means_schema_changed(error: &ExtractError) -> bool {
    match error {
        ExtractError::Plan(PlanError::SchemaDrift { .. }) | ExtractError::Decode { .. } => true,
        ExtractError::Db(DbError::Query { failure, .. }) => *failure == QueryFailure::SchemaChanged,
        _ => false,
    }
}

/// The records, with how the engine's errors are named in them. The engine does not know
/// gRPC: whoever builds it says how an error becomes a status name.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub(crate) records: Records,
    pub(crate) status_name: fn(&ExtractError) -> &'static str,
}

impl Recorder {
    /// Appends an audit record and waits until it is durable.
    pub(crate) async fn record(&self, metrics: &Metrics, entry: Entry) -> Result<(), AuditError> {
        self.records.record(metrics, entry).await
    }

    /// Records a call that failed with `error`: its audit record, and a dead letter when the
    /// failure is the service's or the data's.
    pub(crate) async fn failed(&self, metrics: &Metrics, entry: Entry, error: &ExtractError) {
        let failure = Failure {
            status: (self.status_name)(error),
            error: error.kind(),
            detail: error.to_string(),
            dead_letter: error.dead_letter_category(),
            // An erasure that may have committed is not recorded as failed.
            outcome: if error.kind() == "commit_outcome_unknown" {
                "unknown"
            } else {
                "failed"
            },
        };
        self.records.failed(metrics, entry, failure).await;
    }

    /// Queues a dead letter, and counts it by category; what says when it is durable, or
    /// DEAD_LETTERS_UNAVAILABLE when the queue cannot take it.
    pub(crate) fn dead_letter(
        &self,
        metrics: &Metrics,
        letter: DeadLetter,
    ) -> Result<Option<crate::records::appender::Pending>, ExtractError> {
        self.records
            .dead_letter(metrics, letter)
            .map_err(ExtractError::DeadLettersUnavailable)
    }

    /// Waits for a queued dead letter; its error when it could not be made durable.
    pub(crate) async fn letter_heard(
        &self,
        metrics: &Metrics,
        pending: crate::records::appender::Pending,
    ) -> Result<(), ExtractError> {
        self.records
            .letter_heard(metrics, pending)
            .await
            .map_err(ExtractError::DeadLettersUnavailable)
    }
}

impl From<crate::schema::LoadError> for ExtractError {
    fn from(error: crate::schema::LoadError) -> ExtractError {
        match error {
            crate::schema::LoadError::Db(e) => ExtractError::Db(e),
            crate::schema::LoadError::Plan(e) => ExtractError::Plan(e),
        }
    }
}
