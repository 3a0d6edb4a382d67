//! What can go wrong at a store's boundary, whatever the store: the errors the engine sees,
//! each store's own codes already classified.

use std::time::Duration;

/// Everything that can go wrong at the database boundary.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "source '{source_name}': all {max} pooled connections stayed busy for {waited:?}; retry later"
    )]
    PoolExhausted {
        source_name: String,
        max: u32,
        waited: Duration,
    },
    #[error("source '{source_name}': cannot connect to the database: {cause}")]
    Unavailable { source_name: String, cause: String },
    #[error("source '{source_name}': the database refused the connection: {cause}")]
    Refused { source_name: String, cause: String },
    #[error("source '{source_name}': the deadline passed while waiting for a connection")]
    DeadlineWaitingForConnection { source_name: String },
    #[error("source '{source_name}': SQLSTATE {code}: {message}")]
    Query {
        source_name: String,
        code: String,
        message: String,
        /// What the SQLSTATE means, classified once, here.
        failure: QueryFailure,
    },
    #[error("source '{source_name}': the database connection failed: {cause}")]
    ConnectionLost { source_name: String, cause: String },
}

impl DbError {
    /// Whether a retry with backoff may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::PoolExhausted { .. }
            | DbError::Unavailable { .. }
            | DbError::ConnectionLost { .. } => true,
            DbError::DeadlineWaitingForConnection { .. } | DbError::Refused { .. } => false,
            DbError::Query { failure, .. } => failure.is_transient(),
        }
    }

    /// The source the error happened on.
    pub fn source_name(&self) -> &str {
        match self {
            DbError::PoolExhausted { source_name, .. }
            | DbError::Unavailable { source_name, .. }
            | DbError::Refused { source_name, .. }
            | DbError::DeadlineWaitingForConnection { source_name }
            | DbError::Query { source_name, .. }
            | DbError::ConnectionLost { source_name, .. } => source_name,
        }
    }

    /// The SQLSTATE, when the database sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Query { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What a failed statement means to the service. Each store classifies its own codes into it
/// once (PostgreSQL's SQLSTATEs through `tokio_postgres::error::SqlState`, MySQL's error
/// numbers by name); the rest of the service matches on this instead of on codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFailure {
    /// The connection or the server failed: PostgreSQL's connection exceptions (class 08) or
    /// a server shutting down or starting (57P01-57P03); MySQL's server shutdown (1053) or a
    /// killed connection (1927). Transient, and the source's own failure.
    Connection,
    /// Insufficient resources: PostgreSQL's class 53; MySQL's too many connections (1040) or
    /// out of memory. Transient, and the source's own failure.
    Resources,
    /// A serialization failure, a deadlock, or a lock not granted in time (PostgreSQL 40001,
    /// 40P01, 55P03; MySQL 1213, 1205). Transient, and not the source's failure.
    Serialization,
    /// The statement was cancelled: by its statement timeout, or by someone else (PostgreSQL
    /// 57014; MySQL 1317, 1969, 3024).
    Cancelled,
    /// The schema changed under a statement: undefined table or column, a type that no longer
    /// matches, or a cached plan whose result type changed (PostgreSQL 0A000).
    SchemaChanged,
    /// The source's account may not read what the data map names (PostgreSQL 42501; MySQL
    /// 1142, 1143).
    InsufficientPrivilege,
    /// Anything else.
    Other,
}

impl QueryFailure {
    /// Whether the same request may succeed if tried again.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            QueryFailure::Connection | QueryFailure::Resources | QueryFailure::Serialization
        )
    }

    /// Whether the failure is the source's own (counted by its circuit breaker).
    pub fn is_source_failure(self) -> bool {
        matches!(self, QueryFailure::Connection | QueryFailure::Resources)
    }
}
