//! The one place where errors become gRPC statuses.
//!
//! The codes follow DESIGN.md: bad requests are INVALID_ARGUMENT, unknown names NOT_FOUND,
//! schema drift FAILED_PRECONDITION, a full pool RESOURCE_EXHAUSTED, an unreachable database
//! or a shutdown UNAVAILABLE (retryable), a count mismatch DATA_LOSS. Messages name the source,
//! table, column or key at fault and never contain an identity or extracted value.
//!
//! Every status carries a `google.rpc.ErrorInfo` in its details: domain [`DOMAIN`], a stable
//! upper-case reason, and the source, table and column it concerns where there is one (names
//! from the data map, never values). The proto file lists the reasons under each code.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::engine::ExtractError;
use crate::engine::erase::refusal::ErasureRefusal;
use crate::requests::RequestError;
use crate::resilience::admission::AdmissionError;
use crate::schema::PlanError;
use crate::store::postgres::{DbError, QueryFailure};

/// Maps an engine error to the status the caller receives.
pub fn to_status(error: &ExtractError) -> Status {
    let code = match error {
        ExtractError::InvalidArgument(_) => Code::InvalidArgument,
        ExtractError::UnknownSource(_) => Code::NotFound,
        ExtractError::Plan(plan) => match plan {
            PlanError::UnknownIdentityKind { .. } | PlanError::Unreachable { .. } => {
                Code::InvalidArgument
            }
            PlanError::UnknownTable { .. } => Code::NotFound,
            PlanError::SchemaDrift { .. } | PlanError::NoPersonalData { .. } => {
                Code::FailedPrecondition
            }
            PlanError::Catalog { .. } => Code::Unavailable,
        },
        ExtractError::Db(db) => db_code(db),
        ExtractError::CountMismatch { .. } => Code::DataLoss,
        ExtractError::Coercion(_) => Code::FailedPrecondition,
        ExtractError::RowTooLarge { .. } => Code::ResourceExhausted,
        ExtractError::Decode { .. } | ExtractError::InvalidManifest(_) => Code::Internal,
        ExtractError::Internal(_) => Code::Internal,
        ExtractError::DeadlineExceeded => Code::DeadlineExceeded,
        ExtractError::Admission(AdmissionError::Deadline { .. }) => Code::DeadlineExceeded,
        ExtractError::Admission(_) => Code::ResourceExhausted,
        ExtractError::Stalled(_) | ExtractError::MessageTooLarge { .. } => Code::ResourceExhausted,
        ExtractError::ShuttingDown
        | ExtractError::CircuitOpen { .. }
        | ExtractError::AuditUnavailable(_)
        | ExtractError::DeadLettersUnavailable(_) => Code::Unavailable,
        ExtractError::ClientGone => Code::Cancelled,
        ExtractError::SharedIdentity { .. } | ExtractError::Reach(_) => Code::FailedPrecondition,
        ExtractError::Erasure(refusal) => match refusal {
            ErasureRefusal::PreviewChanged | ErasureRefusal::CountChanged { .. } => Code::Aborted,
            ErasureRefusal::PreviewExpired { .. } => Code::FailedPrecondition,
            // Rolled back: nothing was lost, and the same erasure would fail the same way.
            ErasureRefusal::Unverified { .. } => Code::FailedPrecondition,
            ErasureRefusal::CommitOutcomeUnknown { .. } => Code::Unknown,
            _ => Code::FailedPrecondition,
        },
    };
    let mut status = with_error_info(code, error.to_string(), reason(error), place(error));
    if let ExtractError::CircuitOpen { retry_after, .. } = error
        && let Ok(value) = retry_after.as_millis().max(1).to_string().parse()
    {
        // gRPC's retry pushback: when the client's retry policy may try again.
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

/// Maps a durable request's refusal or failure to the status the caller receives.
pub fn request_status(error: &RequestError) -> Status {
    let (code, reason) = match error {
        RequestError::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        RequestError::NotFound(_) => (Code::NotFound, "REQUEST_NOT_FOUND"),
        RequestError::AlreadyExists(_) => (Code::AlreadyExists, "REQUEST_ID_REUSED"),
        RequestError::FailedPrecondition { reason, .. } => (Code::FailedPrecondition, *reason),
        RequestError::PermissionDenied(_) => (Code::PermissionDenied, "REQUEST_NOT_ALLOWED"),
        RequestError::Unavailable(_) => (Code::Unavailable, "CONTROL_DATABASE_UNAVAILABLE"),
    };
    refusal(code, reason, error.to_string())
}

/// The ErrorInfo domain of every status the service sends.
pub const DOMAIN: &str = crate::requests::ERROR_DOMAIN;

/// A status with its ErrorInfo: `reason` stable and upper-case, `metadata` the names of what
/// it concerns.
pub fn with_error_info(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, metadata),
    )
}

/// A refusal of the API layer (a header, a token, a scope), with its reason.
pub fn refusal(code: Code, reason: &str, message: impl Into<String>) -> Status {
    with_error_info(code, message, reason, HashMap::new())
}

/// The stable reason of an engine error.
fn reason(error: &ExtractError) -> &'static str {
    match error {
        ExtractError::InvalidArgument(_) => "INVALID_ARGUMENT",
        ExtractError::UnknownSource(_) => "UNKNOWN_SOURCE",
        ExtractError::Plan(plan) => match plan {
            PlanError::UnknownIdentityKind { .. } => "UNKNOWN_IDENTITY_KIND",
            PlanError::Unreachable { .. } => "UNREACHABLE_TABLE",
            PlanError::UnknownTable { .. } => "UNKNOWN_TABLE",
            PlanError::SchemaDrift { .. } => "SCHEMA_DRIFT",
            PlanError::NoPersonalData { .. } => "NO_PERSONAL_DATA",
            PlanError::Catalog { .. } => "CATALOG_UNAVAILABLE",
        },
        ExtractError::Db(db) => match db {
            DbError::PoolExhausted { .. } => "POOL_EXHAUSTED",
            DbError::Unavailable { .. } => "DATABASE_UNAVAILABLE",
            DbError::Refused { .. } => "DATABASE_REFUSED",
            DbError::DeadlineWaitingForConnection { .. } => "DEADLINE",
            DbError::ConnectionLost { .. } => "CONNECTION_LOST",
            DbError::Query { failure, .. } => match failure {
                QueryFailure::Connection | QueryFailure::Resources => "DATABASE_UNAVAILABLE",
                QueryFailure::Serialization => "SERIALIZATION_FAILURE",
                QueryFailure::Cancelled => "QUERY_CANCELLED",
                QueryFailure::SchemaChanged => "SCHEMA_CHANGED",
                QueryFailure::InsufficientPrivilege => "INSUFFICIENT_PRIVILEGE",
                QueryFailure::Other => "DATABASE_ERROR",
            },
        },
        ExtractError::CountMismatch { .. } => "COUNT_MISMATCH",
        ExtractError::RowTooLarge { .. } => "ROW_TOO_LARGE",
        ExtractError::Decode { .. } => "DECODE",
        ExtractError::Coercion(_) => "COERCION",
        ExtractError::DeadlineExceeded => "DEADLINE",
        ExtractError::Admission(AdmissionError::Deadline { .. }) => "DEADLINE",
        ExtractError::Admission(_) => "BUSY",
        ExtractError::CircuitOpen { .. } => "CIRCUIT_OPEN",
        ExtractError::Stalled(_) => "STALLED",
        ExtractError::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
        ExtractError::ShuttingDown => "SHUTTING_DOWN",
        ExtractError::AuditUnavailable(_) => "AUDIT_UNAVAILABLE",
        ExtractError::DeadLettersUnavailable(_) => "DEAD_LETTERS_UNAVAILABLE",
        ExtractError::InvalidManifest(_) => "INVALID_MANIFEST",
        ExtractError::Internal(_) => "INTERNAL",
        ExtractError::ClientGone => "CLIENT_GONE",
        ExtractError::SharedIdentity { .. } => "SHARED_IDENTITY",
        ExtractError::Reach(crate::schema::ReachRefusal::Hub { .. }) => "HUB_REACHED",
        ExtractError::Reach(crate::schema::ReachRefusal::SharedKey { .. }) => "SHARED_KEY",
        ExtractError::Erasure(refusal) => match refusal {
            ErasureRefusal::NoPolicy { .. } => "ERASURE_POLICY_MISSING",
            ErasureRefusal::Policy { .. } => "ERASURE_POLICY_INVALID",
            ErasureRefusal::UndeclaredCascade { .. } => "UNDECLARED_CASCADE",
            ErasureRefusal::MappedCascade { .. } => "CASCADE_BEYOND_SUBJECT",
            ErasureRefusal::PreviewRequired { .. } => "PREVIEW_REQUIRED",
            ErasureRefusal::PreviewChanged => "PREVIEW_CHANGED",
            ErasureRefusal::PreviewExpired { .. } => "PREVIEW_EXPIRED",
            ErasureRefusal::CountChanged { .. } => "ERASURE_COUNT_CHANGED",
            ErasureRefusal::Unverified { .. } => "ERASURE_UNVERIFIED",
            ErasureRefusal::Constraint { .. } => "ERASURE_CONSTRAINT",
            ErasureRefusal::CommitOutcomeUnknown { .. } => "COMMIT_OUTCOME_UNKNOWN",
            ErasureRefusal::SharedRow { .. } => "SHARED_ROW",
        },
    }
}

/// The source, table and column an engine error concerns, where it names them.
fn place(error: &ExtractError) -> HashMap<String, String> {
    let mut at = HashMap::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            at.insert(key.to_owned(), value.to_owned());
        }
    };
    match error {
        ExtractError::UnknownSource(source) => put("source", source),
        ExtractError::Plan(plan) => match plan {
            PlanError::UnknownIdentityKind { source_name, .. }
            | PlanError::SchemaDrift { source_name, .. }
            | PlanError::NoPersonalData { source_name, .. }
            | PlanError::Catalog { source_name, .. } => put("source", source_name),
            PlanError::UnknownTable { source_name, table } => {
                put("source", source_name);
                put("table", table);
            }
            PlanError::Unreachable { table, .. } => put("table", table),
        },
        ExtractError::Db(db) => put("source", db.source_name()),
        ExtractError::CountMismatch { table, .. } => put("table", table),
        ExtractError::RowTooLarge { table, column, .. }
        | ExtractError::Decode { table, column, .. } => {
            put("table", table);
            put("column", column);
        }
        ExtractError::Coercion(violation) => {
            put("table", &violation.table);
            put("column", &violation.column);
        }
        ExtractError::CircuitOpen { source_name, .. } => put("source", source_name),
        ExtractError::SharedIdentity { table, .. } => put("table", table),
        ExtractError::Reach(
            crate::schema::ReachRefusal::Hub { table, .. }
            | crate::schema::ReachRefusal::SharedKey { table, .. },
        ) => put("table", table),
        ExtractError::Erasure(refusal) => {
            put("table", refusal.table().unwrap_or_default());
            if let ErasureRefusal::Policy { column, .. } = refusal {
                put("column", column);
            }
            if let ErasureRefusal::PreviewRequired { source_name } = refusal {
                put("source", source_name);
            }
        }
        _ => {}
    }
    at
}

fn db_code(error: &DbError) -> Code {
    match error {
        DbError::PoolExhausted { .. } => Code::ResourceExhausted,
        DbError::Unavailable { .. } | DbError::ConnectionLost { .. } => Code::Unavailable,
        DbError::DeadlineWaitingForConnection { .. } => Code::DeadlineExceeded,
        DbError::Refused { .. } => Code::FailedPrecondition,
        DbError::Query { failure, .. } => match failure {
            // A statement cancelled by someone else (an administrator, a server timeout): the
            // caller's own deadline is mapped before this point.
            QueryFailure::Cancelled => Code::Unavailable,
            // undefined table or column, types that no longer match the data map, or a
            // prepared statement whose result type changed under it
            QueryFailure::SchemaChanged => Code::FailedPrecondition,
            // the source's database role cannot read a mapped table
            QueryFailure::InsufficientPrivilege => Code::FailedPrecondition,
            failure if failure.is_transient() => Code::Unavailable,
            _ => Code::Internal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(code: &str) -> ExtractError {
        ExtractError::Db(DbError::Query {
            source_name: "s".into(),
            code: code.into(),
            message: "m".into(),
            failure: QueryFailure::of_sqlstate(code),
        })
    }

    #[test]
    fn codes_follow_the_design() {
        assert_eq!(
            to_status(&ExtractError::UnknownSource("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            to_status(&ExtractError::CountMismatch {
                table: "t".into(),
                streamed: 1,
                counted: 2
            })
            .code(),
            Code::DataLoss
        );
        assert_eq!(to_status(&query("42P01")).code(), Code::FailedPrecondition);
        assert_eq!(to_status(&query("40001")).code(), Code::Unavailable);
        assert_eq!(to_status(&query("XX000")).code(), Code::Internal);
        assert_eq!(to_status(&query("57014")).code(), Code::Unavailable);
        assert_eq!(to_status(&query("08006")).code(), Code::Unavailable);
        assert_eq!(to_status(&query("42501")).code(), Code::FailedPrecondition);
        assert_eq!(to_status(&query("0A000")).code(), Code::FailedPrecondition);
        assert_eq!(
            to_status(&ExtractError::ShuttingDown).code(),
            Code::Unavailable
        );
        assert_eq!(
            to_status(&ExtractError::Db(DbError::PoolExhausted {
                source_name: "s".into(),
                max: 1,
                waited: std::time::Duration::from_secs(1),
            }))
            .code(),
            Code::ResourceExhausted
        );
    }
}
