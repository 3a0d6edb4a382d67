//! The one place where errors become gRPC statuses.
//!
//! The codes follow DESIGN.md: bad requests are INVALID_ARGUMENT, unknown names NOT_FOUND,
//! schema drift FAILED_PRECONDITION, a full pool RESOURCE_EXHAUSTED, an unreachable database
//! or a shutdown UNAVAILABLE (retryable), a count mismatch DATA_LOSS. Messages name the source,
//! table, column or key at fault and never contain an identity or extracted value.

use tonic::{Code, Status};

use crate::engine::ExtractError;
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
        | ExtractError::AuditUnavailable(_) => Code::Unavailable,
        ExtractError::ClientGone => Code::Cancelled,
    };
    let mut status = Status::new(code, error.to_string());
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
        let state = tokio_postgres::error::SqlState::from_code(code);
        ExtractError::Db(DbError::Query {
            source_name: "s".into(),
            code: code.into(),
            message: "m".into(),
            failure: QueryFailure::of(&state),
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
