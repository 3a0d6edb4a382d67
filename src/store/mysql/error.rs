//! MariaDB's and MySQL's errors, classified once: the server's error numbers by name, and the
//! driver's own (a lost connection shows as an I/O error or a closed connection, never as the
//! C client's 2006/2013).

use mysql_async::{DriverError, Error};

use crate::store::error::{DbError, QueryFailure};

/// `ER_CON_COUNT_ERROR`: too many connections.
const TOO_MANY_CONNECTIONS: u16 = 1040;
/// `ER_OUT_OF_RESOURCES`, `ER_OUTOFMEMORY`, `ER_OUT_OF_SORTMEMORY`.
const OUT_OF_MEMORY: [u16; 3] = [1041, 1037, 1038];
/// `ER_TOO_MANY_USER_CONNECTIONS`, `ER_USER_LIMIT_REACHED`.
const ACCOUNT_LIMITS: [u16; 2] = [1203, 1226];
/// `ER_DBACCESS_DENIED_ERROR`, `ER_ACCESS_DENIED_ERROR`: the account may not connect.
const ACCESS_DENIED: [u16; 2] = [1044, 1045];
/// `ER_BAD_DB_ERROR`: no such database.
const UNKNOWN_DATABASE: u16 = 1049;
/// `ER_SERVER_SHUTDOWN`, MariaDB's `ER_CONNECTION_KILLED`, MySQL's
/// `ER_CLIENT_INTERACTION_TIMEOUT`.
const SERVER_GOING_AWAY: [u16; 3] = [1053, 1927, 4031];
/// `ER_LOCK_WAIT_TIMEOUT`, `ER_LOCK_DEADLOCK`.
const LOCKS: [u16; 2] = [1205, 1213];
/// `ER_QUERY_INTERRUPTED` (KILL QUERY), MariaDB's `ER_STATEMENT_TIMEOUT`
/// (`max_statement_time`), MySQL's `ER_QUERY_TIMEOUT` (`max_execution_time`).
pub(super) const INTERRUPTED: [u16; 3] = [1317, 1969, 3024];
/// `ER_NO_SUCH_TABLE`, `ER_BAD_FIELD_ERROR`, `ER_VIEW_INVALID`.
const SCHEMA_CHANGED: [u16; 3] = [1146, 1054, 1356];
/// `ER_TABLEACCESS_DENIED_ERROR`, `ER_COLUMNACCESS_DENIED_ERROR`.
const NOT_PERMITTED: [u16; 2] = [1142, 1143];
/// `ER_NO_SUCH_THREAD`: the statement to kill already ended.
pub(super) const NO_SUCH_THREAD: u16 = 1094;

/// What an error number means to the service.
pub fn failure_of(code: u16) -> QueryFailure {
    if code == TOO_MANY_CONNECTIONS
        || OUT_OF_MEMORY.contains(&code)
        || ACCOUNT_LIMITS.contains(&code)
    {
        QueryFailure::Resources
    } else if SERVER_GOING_AWAY.contains(&code) {
        QueryFailure::Connection
    } else if LOCKS.contains(&code) {
        QueryFailure::Serialization
    } else if INTERRUPTED.contains(&code) {
        QueryFailure::Cancelled
    } else if SCHEMA_CHANGED.contains(&code) {
        QueryFailure::SchemaChanged
    } else if NOT_PERMITTED.contains(&code) {
        QueryFailure::InsufficientPrivilege
    } else {
        QueryFailure::Other
    }
}

/// Classifies an error of the driver or the server.
pub fn classify(source_name: &str, error: &Error) -> DbError {
    let source_name = source_name.to_owned();
    match error {
        Error::Server(e) if ACCESS_DENIED.contains(&e.code) || e.code == UNKNOWN_DATABASE => {
            DbError::Refused {
                source_name,
                cause: format!("error {} ({}): {}", e.code, e.state, e.message),
            }
        }
        Error::Server(e) => {
            let failure = failure_of(e.code);
            DbError::Query {
                source_name,
                code: e.state.clone(),
                message: format!("error {}: {}", e.code, safe_message(failure, &e.message)),
                failure,
            }
        }
        Error::Driver(DriverError::PoolDisconnected) => DbError::Unavailable {
            source_name,
            cause: "the pool was closed".into(),
        },
        Error::Io(_) | Error::Driver(DriverError::ConnectionClosed) => DbError::ConnectionLost {
            source_name,
            cause: error.to_string(),
        },
        Error::Url(_) | Error::Driver(_) | Error::Other(_) => DbError::Unavailable {
            source_name,
            cause: error.to_string(),
        },
    }
}

/// The server's message for failures that never quote a statement's input (locks,
/// interruptions, resources, a missing table or column, a refused privilege); others (a
/// duplicate entry, a truncated value, a conversion) may quote values, so they are withheld.
fn safe_message(failure: QueryFailure, message: &str) -> String {
    match failure {
        QueryFailure::Other => "message withheld: it may quote data".to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_numbers_mean_what_the_service_acts_on() {
        assert_eq!(failure_of(1213), QueryFailure::Serialization);
        assert_eq!(failure_of(1205), QueryFailure::Serialization);
        assert_eq!(failure_of(1317), QueryFailure::Cancelled);
        assert_eq!(failure_of(1969), QueryFailure::Cancelled);
        assert_eq!(failure_of(3024), QueryFailure::Cancelled);
        assert_eq!(failure_of(1040), QueryFailure::Resources);
        assert_eq!(failure_of(1146), QueryFailure::SchemaChanged);
        assert_eq!(failure_of(1142), QueryFailure::InsufficientPrivilege);
        assert_eq!(failure_of(1062), QueryFailure::Other);
        let duplicate = Error::Server(mysql_async::ServerError {
            code: 1062,
            message: "Duplicate entry 'alice@example.com' for key 'email'".into(),
            state: "23000".into(),
        });
        let said = classify("shop", &duplicate).to_string();
        assert!(!said.contains("alice"), "{said}");
        assert!(said.contains("23000") && said.contains("1062"), "{said}");
    }
}
