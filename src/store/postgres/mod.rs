//! The database boundary: connection pools, TLS, and the translation of PostgreSQL errors.
//!
//! Each source gets one bb8 pool. Connections are wrapped in [`PgConn`] so that the engine can
//! mark one broken (after a cancel whose rollback did not confirm, say) and bb8 then discards it
//! instead of handing it to the next request. bb8 hides connection errors behind a checkout
//! timeout; the pool's error sink keeps the last real cause, so a caller hears "connection
//! refused" or "password authentication failed", not just "timed out".
//!
//! PostgreSQL errors are classified here, once, into transient ones (worth a retry with
//! backoff) and permanent ones.

mod catalog;
pub mod control;
mod dialect;
mod discovery;
mod erase;
mod read;
mod request_links;
pub mod requests;
pub mod tls;

pub use catalog::read_foreign_keys;
pub use dialect::{Postgres, column_type};
pub use discovery::PgDiscovery;
pub use erase::PgErase;
pub use read::{PgRows, PgSnapshot, RawCell};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bb8::{ErrorSink, ManageConnection, Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::SourceConfig;
pub use crate::store::error::{DbError, QueryFailure};

impl DbError {
    /// Classifies an error from tokio-postgres.
    pub fn from_pg(source_name: &str, error: &tokio_postgres::Error) -> DbError {
        match error.as_db_error() {
            Some(db) => {
                let code = db.code().code().to_owned();
                DbError::Query {
                    source_name: source_name.to_owned(),
                    failure: QueryFailure::of(db.code()),
                    message: safe_message(&code, db.message()),
                    code,
                }
            }
            None => DbError::ConnectionLost {
                source_name: source_name.to_owned(),
                cause: describe(error),
            },
        }
    }
}

impl DbError {
    /// Classifies an error of a statement that binds the identity value. Its message is
    /// passed on only for classes that never quote input ([`is_quote_free_sqlstate`]); a
    /// cast into a `reg*` type, for one, fails with messages (classes 42 and 0A) that name
    /// the value it could not find.
    pub fn from_pg_bound(source_name: &str, error: &tokio_postgres::Error) -> DbError {
        match DbError::from_pg(source_name, error) {
            DbError::Query {
                source_name,
                code,
                failure,
                ..
            } if !is_quote_free_sqlstate(&code) => DbError::Query {
                source_name,
                message: "message withheld: the statement binds the identity value".to_owned(),
                code,
                failure,
            },
            other => other,
        }
    }
}

/// SQLSTATE classes whose messages never quote a statement's input: connection (08),
/// transaction state (25), rollback (40), resources (53), object state (55), operator
/// intervention (57).
pub fn is_quote_free_sqlstate(code: &str) -> bool {
    ["08", "25", "40", "53", "55", "57"]
        .iter()
        .any(|class| code.starts_with(class))
}

impl QueryFailure {
    /// Classifies a PostgreSQL SQLSTATE given as its five characters.
    pub fn of_sqlstate(code: &str) -> QueryFailure {
        QueryFailure::of(&SqlState::from_code(code))
    }

    /// Classifies a PostgreSQL SQLSTATE.
    pub fn of(code: &SqlState) -> QueryFailure {
        let class = |prefix: &str| code.code().starts_with(prefix);
        if class("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code)
        {
            QueryFailure::Connection
        } else if class("53") {
            QueryFailure::Resources
        } else if [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code)
        {
            QueryFailure::Serialization
        } else if *code == SqlState::QUERY_CANCELED {
            QueryFailure::Cancelled
        } else if [
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::DATATYPE_MISMATCH,
            SqlState::CANNOT_COERCE,
            SqlState::FEATURE_NOT_SUPPORTED,
        ]
        .contains(code)
        {
            QueryFailure::SchemaChanged
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            QueryFailure::InsufficientPrivilege
        } else {
            QueryFailure::Other
        }
    }
}

/// PostgreSQL's message for SQLSTATE classes whose messages name objects and conditions, not
/// data: connection (08), transaction state (25), authorization (28), catalog (3D), rollback
/// (40), syntax and access (42), resources (53), object state (55), operator intervention (57).
/// Other messages (data exceptions, integrity violations, errors raised by functions) may quote
/// values, so they are withheld and only the SQLSTATE is reported.
pub fn safe_message(code: &str, message: &str) -> String {
    const SAFE_CLASSES: &[&str] = &["08", "25", "28", "3D", "40", "42", "53", "55", "57"];
    if SAFE_CLASSES.iter().any(|class| code.starts_with(class)) {
        message.to_owned()
    } else {
        "message withheld: it may quote data".to_owned()
    }
}

/// Whether a connection error is a refusal for good: an SQLSTATE that says so, or a server
/// certificate that failed verification (retrying cannot change the certificate).
fn is_refusal(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| is_refusal_sqlstate(db.code().code()))
        || is_certificate_failure(error)
}

/// Whether a connection failed because the server's TLS certificate failed verification.
fn is_certificate_failure(error: &tokio_postgres::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        let rustls = current.downcast_ref::<rustls::Error>().or_else(|| {
            current
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(rustls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        next = current.source();
    }
    false
}

/// A connection error's cause, with what to do about a certificate that failed verification.
fn refusal_cause(error: &tokio_postgres::Error) -> String {
    let cause = describe(error);
    if is_certificate_failure(error) {
        format!(
            "{cause}; the server's TLS certificate failed verification: give root_cert the CA \
             that signed it, or use a CA-signed server certificate (a self-signed certificate \
             is accepted when root_cert is that certificate itself)"
        )
    } else {
        cause
    }
}

/// Whether an SQLSTATE says the database refused this client for good: wrong password, no
/// access rule, or no such database. Retrying does not help; the configuration must change.
pub fn is_refusal_sqlstate(code: &str) -> bool {
    code.starts_with("28") || code == SqlState::INVALID_CATALOG_NAME.code()
}

/// The full cause chain of a tokio-postgres error. Its `Display` alone is often just
/// "db error" or "error connecting to server".
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        return format!("SQLSTATE {code}: {}", safe_message(code, db.message()));
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Quotes an SQL identifier: wraps it in double quotes and doubles any double quote inside.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A pooled connection that can be marked broken, so that bb8 drops it.
pub struct PgConn {
    pub client: Client,
    broken: bool,
    /// Statements prepared on this connection, by SQL text. Extractions reuse them instead of
    /// preparing the same query again: two round trips fewer per table.
    statements: StatementCache,
}

/// Prepared statements of one connection, by SQL text.
pub type StatementCache = std::collections::HashMap<String, tokio_postgres::Statement>;

/// The most statements a connection keeps prepared. A data map's plans need far fewer; plans
/// of several identities are compiled per list of kinds, so the cache is bounded for callers
/// who vary them: once full it is emptied (its statements are closed as they drop).
const MAX_PREPARED: usize = 1024;

/// Keeps `statement`, prepared for `sql`, in `cache`.
pub fn remember(cache: &mut StatementCache, sql: &str, statement: &tokio_postgres::Statement) {
    if cache.len() >= MAX_PREPARED {
        cache.clear();
    }
    cache.insert(sql.to_owned(), statement.clone());
}

impl PgConn {
    /// The pool will discard this connection instead of reusing it.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// The client and the statement cache, borrowed apart so that a transaction on the client
    /// can use the cache.
    pub fn parts(&mut self) -> (&mut Client, &mut StatementCache) {
        (&mut self.client, &mut self.statements)
    }

    /// Forgets the prepared statements (after an error, or when the schema may have changed).
    pub fn clear_statements(&mut self) {
        self.statements.clear();
    }
}

/// Prepares `sql` on the transaction's connection, or reuses the statement prepared before.
pub async fn prepare_cached(
    cache: &mut StatementCache,
    txn: &tokio_postgres::Transaction<'_>,
    sql: &str,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    if let Some(statement) = cache.get(sql) {
        return Ok(statement.clone());
    }
    let statement = txn.prepare(sql).await?;
    remember(cache, sql, &statement);
    Ok(statement)
}

/// bb8 manager: bb8-postgres's manager, plus the broken flag and the statements a new
/// connection prepares.
pub struct PgManager {
    inner: PostgresConnectionManager<MakeRustlsConnect>,
    /// The current data map's statements (empty until the schema gate first passes).
    warm: Arc<std::sync::RwLock<Arc<[String]>>>,
}

/// How long a new connection's preparation waits for a table's lock (held by a migration, say)
/// before it leaves that statement to be prepared when first used.
const WARM_LOCK_TIMEOUT: &str = "SET lock_timeout = 200";

/// Prepares `sqls` on a new connection, all in one round trip's time (tokio-postgres pipelines
/// them): the first calls on the connection then prepare nothing. A statement that fails
/// (a table dropped since, a lock held past [`WARM_LOCK_TIMEOUT`]) is prepared when first used,
/// where its error is reported.
async fn warm_up(
    client: &Client,
    cache: &mut StatementCache,
    sqls: &[String],
) -> Result<(), tokio_postgres::Error> {
    if sqls.is_empty() {
        return Ok(());
    }
    // No more than the cache keeps: preparing beyond it would only empty it again.
    let sqls = &sqls[..sqls.len().min(MAX_PREPARED)];
    client.batch_execute(WARM_LOCK_TIMEOUT).await?;
    let prepared = futures_util::future::join_all(sqls.iter().map(|sql| client.prepare(sql))).await;
    for (sql, statement) in sqls.iter().zip(prepared) {
        if let Ok(statement) = statement {
            remember(cache, sql, &statement);
        }
    }
    // The session's own lock timeout again, or no connection (the pool makes another).
    client.batch_execute("RESET lock_timeout").await
}

impl ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConn, tokio_postgres::Error> {
        let client = self.inner.connect().await?;
        let mut statements = StatementCache::new();
        let warm = self.warm.read().unwrap_or_else(|e| e.into_inner()).clone();
        warm_up(&client, &mut statements, &warm).await?;
        Ok(PgConn {
            client,
            broken: false,
            statements,
        })
    }

    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), tokio_postgres::Error> {
        self.inner.is_valid(&mut conn.client).await
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

/// Keeps the latest connection error of a pool, and logs it (without secrets: tokio-postgres
/// errors never contain the password).
#[derive(Debug, Clone)]
struct LastError {
    source_name: String,
    last: Arc<Mutex<Option<(Instant, String, bool)>>>,
    /// Wakes waiting checkouts when the database refused a connection for good: retrying
    /// until the checkout timeout cannot help.
    refused: Arc<tokio::sync::Notify>,
}

impl ErrorSink<tokio_postgres::Error> for LastError {
    fn sink(&self, error: tokio_postgres::Error) {
        let cause = refusal_cause(&error);
        let refused = is_refusal(&error);
        tracing::warn!(source = %self.source_name, error = %cause, "database connection failed");
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), cause, refused));
        if refused {
            self.refused.notify_waiters();
        }
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<tokio_postgres::Error>> {
        Box::new(self.clone())
    }
}

/// The connection pool of one source.
pub struct SourcePool {
    source_name: String,
    pool: Pool<PgManager>,
    cancel_tls: MakeRustlsConnect,
    last_error: LastError,
    checkout_timeout: Duration,
    max: u32,
    /// The statements new connections prepare (shared with the pool's manager).
    warm: Arc<std::sync::RwLock<Arc<[String]>>>,
}

/// A connection checked out of a pool, owned (usable in a spawned task).
pub type Conn = PooledConnection<'static, PgManager>;

impl SourcePool {
    /// Builds the pool. It connects lazily: a database that is down at start-up makes requests
    /// fail with UNAVAILABLE (and the cause) rather than stopping the server.
    pub fn new(cfg: &SourceConfig) -> Result<SourcePool, String> {
        let tls = tls::source_tls(cfg.ssl_mode, cfg.root_cert.as_deref())
            .map_err(|e| format!("source '{}': {e}", cfg.name))?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&cfg.host)
            .port(cfg.port())
            .dbname(&cfg.database)
            .user(&cfg.user)
            .application_name(&cfg.application_name)
            .connect_timeout(cfg.connect_timeout)
            .ssl_mode(tls.pg_mode);
        if let Some(password) = &cfg.password {
            pg.password(password.expose_secret());
        }
        let last_error = LastError {
            source_name: cfg.name.clone(),
            last: Arc::new(Mutex::new(None)),
            refused: Arc::new(tokio::sync::Notify::new()),
        };
        let warm = Arc::new(std::sync::RwLock::new(Arc::from(Vec::new())));
        let manager = PgManager {
            inner: PostgresConnectionManager::new(pg, tls.connector.clone()),
            warm: warm.clone(),
        };
        let pool = Pool::builder()
            .max_size(cfg.max_connections)
            .min_idle(Some(cfg.min_idle))
            .connection_timeout(cfg.connect_timeout)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        Ok(SourcePool {
            source_name: cfg.name.clone(),
            pool,
            cancel_tls: tls.connector,
            last_error,
            checkout_timeout: cfg.connect_timeout,
            max: cfg.max_connections,
            warm,
        })
    }

    /// Checks out a connection, waiting at most the connect timeout or until `deadline`,
    /// whichever comes first.
    pub async fn checkout(&self, deadline: Option<Instant>) -> Result<Conn, DbError> {
        let started = Instant::now();
        let mut limit = started + self.checkout_timeout;
        let mut deadline_first = false;
        if let Some(deadline) = deadline
            && deadline < limit
        {
            limit = deadline;
            deadline_first = true;
        }
        // A refusal for good (a wrong password, a certificate that fails verification) ends
        // the wait at once, instead of at the checkout timeout.
        let refused = self.last_error.refused.notified();
        let got = tokio::select! {
            got = tokio::time::timeout_at(limit, self.pool.get_owned()) => got,
            () = refused => return Err(self.timeout_error(started)),
        };
        match got {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(RunError::User(e))) => {
                let cause = refusal_cause(&e);
                let source_name = self.source_name.clone();
                Err(if is_refusal(&e) {
                    DbError::Refused { source_name, cause }
                } else {
                    DbError::Unavailable { source_name, cause }
                })
            }
            Ok(Err(RunError::TimedOut)) | Err(_) => {
                if deadline_first {
                    return Err(DbError::DeadlineWaitingForConnection {
                        source_name: self.source_name.clone(),
                    });
                }
                Err(self.timeout_error(started))
            }
        }
    }

    /// Explains a checkout timeout: a full pool, or a database that cannot be reached.
    fn timeout_error(&self, started: Instant) -> DbError {
        let recent = self
            .last_error
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _, _)| {
                started
                    .checked_sub(self.checkout_timeout)
                    .is_none_or(|since| *at >= since)
            })
            .map(|(_, cause, refused)| (cause.clone(), *refused));
        if let Some((cause, true)) = &recent {
            return DbError::Refused {
                source_name: self.source_name.clone(),
                cause: cause.clone(),
            };
        }
        let recent = recent.map(|(cause, _)| cause);
        let state = self.pool.state();
        match recent {
            Some(cause) if state.connections < self.max || state.idle_connections > 0 => {
                DbError::Unavailable {
                    source_name: self.source_name.clone(),
                    cause,
                }
            }
            _ if state.connections >= self.max => DbError::PoolExhausted {
                source_name: self.source_name.clone(),
                max: self.max,
                waited: started.elapsed(),
            },
            Some(cause) => DbError::Unavailable {
                source_name: self.source_name.clone(),
                cause,
            },
            None => DbError::Unavailable {
                source_name: self.source_name.clone(),
                cause: format!(
                    "no connection could be opened within {:?}",
                    self.checkout_timeout
                ),
            },
        }
    }

    /// The TLS connector to use for cancel requests, which open their own connection.
    pub fn cancel_tls(&self) -> MakeRustlsConnect {
        self.cancel_tls.clone()
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Connections open and idle, for health and metrics.
    pub fn state(&self) -> bb8::State {
        self.pool.state()
    }
}

impl crate::store::Backend for SourcePool {
    const DIALECT: &'static dyn crate::store::dialect::SqlDialect = &Postgres;

    fn open(cfg: &SourceConfig) -> Result<SourcePool, String> {
        SourcePool::new(cfg)
    }

    fn prepare_on_connect(&self, mut statements: Vec<String>) {
        statements.push(read::SNAPSHOT_SQL.to_owned());
        *self.warm.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(statements);
    }

    fn pool_state(&self) -> Option<crate::store::PoolState> {
        let state = self.state();
        Some(crate::store::PoolState {
            connections: state.connections,
            idle: state.idle_connections,
            waiting: state.statistics.pending_gets(),
        })
    }
}
