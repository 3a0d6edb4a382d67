//! MariaDB and MySQL through `mysql_async` over rustls: the store's half of the boundary. A
//! pool with a checkout timeout, one consistent read-only snapshot on one connection, a
//! streamed query with the identity bound, decoding to the proto's values, the server's
//! error numbers classified once, and cancellation with `KILL QUERY` from a second
//! connection.
//!
//! The engine routes `kind = "mysql"` sources here for Extract, Validate and discover.
//!
//! Why `mysql_async` and its own pool rather than bb8: the driver's pool already drains a
//! result left unread when a connection comes back, checks an idle connection before it
//! hands it out, and keeps each connection's prepared statements; a bb8 manager would have to
//! redo each of those. Returned connections are not reset (a reset drops the prepared
//! statements): every snapshot sets its own statement limit, and its `START TRANSACTION`
//! ends whatever a failed call left open.

mod catalog;
mod decode;
pub(crate) mod dialect;
mod discovery;
mod erase;
mod error;
mod read;
mod snapshot;

pub use catalog::{ColumnInfo, ForeignKeyInfo, TableInfo, table_info, table_names};
pub use decode::{DecodeError, MyDecoder, ZERO_DATE_RULE};
pub use dialect::{MySql, column_type};
pub use discovery::MyDiscovery;
pub use error::classify;
pub use read::{MyRow, MyRows, MySqlRead};
pub use snapshot::{Rows, Snapshot};

use std::path::PathBuf;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::store::error::DbError;

/// Which server speaks: their statement timeouts differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    MariaDb,
    MySql,
}

/// How to reach a MariaDB or MySQL source. `Debug` never shows the password.
pub struct MySqlSettings {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    pub database: String,
    pub max_connections: u32,
    /// Time allowed to open a connection, and the longest wait for a pooled one.
    pub connect_timeout: Duration,
    pub tls: Tls,
}

impl std::fmt::Debug for MySqlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlSettings")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .field("database", &self.database)
            .field("tls", &self.tls)
            .finish()
    }
}

/// How long an idle pooled connection is kept.
const IDLE_TTL: Duration = Duration::from_secs(60);

/// The session every pooled connection gets when it connects: UTC, so that TIMESTAMP
/// values arrive as UTC; REPEATABLE READ; and a generous `net_write_timeout`, since a reader
/// that waits on its caller must not have its query killed by the server after 60 s (the
/// call's own deadline stops it instead).
const SESSION: [&str; 3] = [
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION net_write_timeout = 3600",
];

/// How a connection is secured, by MySQL's `--ssl-mode` (libpq's `sslmode` names the same
/// modes).
#[derive(Debug, Clone, Default)]
pub enum Tls {
    /// Plaintext.
    #[default]
    Disabled,
    /// TLS when the server offers it, unverified; plaintext when it does not.
    Preferred,
    /// TLS or fail, the certificate not verified.
    Required,
    /// TLS, the certificate chained to `ca` (PEM).
    VerifyCa { ca: PathBuf },
    /// TLS, the certificate chained to `ca` and naming the host.
    VerifyIdentity { ca: PathBuf },
}

impl Tls {
    /// The driver's TLS options, `None` for plaintext.
    fn options(&self) -> Option<SslOpts> {
        let verified = |ca: &PathBuf| {
            SslOpts::default()
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true)
        };
        match self {
            Tls::Disabled => None,
            Tls::Preferred | Tls::Required => {
                Some(SslOpts::default().with_danger_accept_invalid_certs(true))
            }
            // The driver's "skip the name" does not take effect over rustls in 0.37
            // (blackbeam/mysql_async#404): the name is checked as well, which refuses more
            // servers than MySQL's VERIFY_CA would, never fewer.
            Tls::VerifyCa { ca } => Some(verified(ca).with_danger_skip_domain_validation(true)),
            Tls::VerifyIdentity { ca } => Some(verified(ca)),
        }
    }
}

/// One source's pool, and a second, small one for cancelling: a saturated pool must not keep a
/// `KILL QUERY` waiting.
#[derive(Debug, Clone)]
pub struct MySqlPool {
    name: String,
    pool: Pool,
    killers: Pool,
    /// Under `Preferred`, the plaintext pools, used once a server said it has no TLS.
    plaintext: Option<(Pool, Pool)>,
    without_tls: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connect_timeout: Duration,
    /// Learnt from the first snapshot's `SELECT VERSION()`.
    flavour: std::sync::Arc<std::sync::OnceLock<Flavour>>,
}

impl MySqlPool {
    /// The pool of a configured `kind = "mysql"` source.
    pub fn for_source(cfg: &crate::config::SourceConfig) -> Result<MySqlPool, String> {
        use crate::config::SslMode;
        let password = cfg
            .password
            .clone()
            .ok_or_else(|| format!("source '{}': no password was resolved", cfg.name))?;
        let ca = || {
            cfg.root_cert.clone().ok_or_else(|| {
                format!(
                    "source '{}': root_cert is required for ssl_mode verify_ca and verify_identity",
                    cfg.name
                )
            })
        };
        let tls = match (cfg.ssl_mode, &cfg.root_cert) {
            (SslMode::Disable, _) => Tls::Disabled,
            (SslMode::Prefer, None) => Tls::Preferred,
            (SslMode::Require, None) => Tls::Required,
            // A CA given with preferred or required verifies as VERIFY_CA, as libpq does.
            (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, _) => {
                Tls::VerifyCa { ca: ca()? }
            }
            (SslMode::VerifyFull, _) => Tls::VerifyIdentity { ca: ca()? },
        };
        Ok(MySqlPool::new(&MySqlSettings {
            name: cfg.name.clone(),
            host: cfg.host.clone(),
            port: cfg.port(),
            user: cfg.user.clone(),
            password,
            database: cfg.database.clone(),
            max_connections: cfg.max_connections,
            connect_timeout: cfg.connect_timeout,
            tls,
        }))
    }

    /// Builds the pools; nothing connects until the first checkout.
    pub fn new(settings: &MySqlSettings) -> MySqlPool {
        let options = |max: u32, tls: Option<SslOpts>| {
            let max = max.max(1) as usize;
            OptsBuilder::default()
                .ssl_opts(tls)
                .ip_or_hostname(settings.host.clone())
                .tcp_port(settings.port)
                .user(Some(settings.user.clone()))
                .pass(Some(settings.password.expose_secret().to_owned()))
                .db_name(Some(settings.database.clone()))
                // Otherwise the driver moves a TCP connection to the server's unix socket when
                // that path exists here, which may be another server.
                .prefer_socket(false)
                .setup(SESSION.to_vec())
                .pool_opts(
                    PoolOpts::default()
                        .with_constraints(
                            PoolConstraints::new(0, max).expect("0 <= max and max > 0"),
                        )
                        // Without it the driver closes every idle connection above the
                        // minimum as it is returned: each call would connect anew and
                        // prepare its statements again.
                        .with_inactive_connection_ttl(IDLE_TTL)
                        .with_ttl_check_interval(IDLE_TTL / 2)
                        // Not reset when returned: a reset drops the connection's prepared
                        // statements (two more round trips per statement on every call),
                        // and every snapshot sets what it needs itself.
                        .with_reset_connection(false),
                )
        };
        let tls = settings.tls.options();
        MySqlPool {
            name: settings.name.clone(),
            pool: Pool::new(options(settings.max_connections, tls.clone())),
            killers: Pool::new(options(1, tls)),
            plaintext: matches!(settings.tls, Tls::Preferred).then(|| {
                (
                    Pool::new(options(settings.max_connections, None)),
                    Pool::new(options(1, None)),
                )
            }),
            without_tls: Default::default(),
            connect_timeout: settings.connect_timeout,
            flavour: Default::default(),
        }
    }

    /// The pools in use: under `Preferred`, the plaintext ones once the server said it has no
    /// TLS.
    fn pick(&self, killer: bool) -> &Pool {
        let (pool, killers) = match &self.plaintext {
            Some((pool, killers))
                if self.without_tls.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                (pool, killers)
            }
            _ => (&self.pool, &self.killers),
        };
        if killer { killers } else { pool }
    }

    /// A connection from the pool (or the killers' pool), within the connect timeout and the deadline; under
    /// `Preferred`, from the plaintext pool when the server turns out to have no TLS.
    async fn connection(
        &self,
        deadline: Option<Instant>,
        killer: bool,
    ) -> Result<mysql_async::Conn, DbError> {
        let first = self
            .within_raw(deadline, self.pick(killer).get_conn())
            .await;
        match first {
            Err(Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            ))) if self.plaintext.is_some() => {
                self.without_tls
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.within(deadline, self.pick(killer).get_conn()).await
            }
            Err(Err(e)) => Err(classify(&self.name, &e)),
            Err(Ok(e)) => Err(e),
            Ok(conn) => Ok(conn),
        }
    }

    pub fn source_name(&self) -> &str {
        &self.name
    }

    /// `work` (a checkout) within the connect timeout and the call's deadline.
    async fn within<T>(
        &self,
        deadline: Option<Instant>,
        work: impl Future<Output = Result<T, mysql_async::Error>>,
    ) -> Result<T, DbError> {
        self.within_raw(deadline, work).await.map_err(|e| match e {
            Ok(db) => db,
            Err(e) => classify(&self.name, &e),
        })
    }

    /// As [`Self::within`], with the driver's own error kept apart (`Err(Err(..))`).
    async fn within_raw<T>(
        &self,
        deadline: Option<Instant>,
        work: impl Future<Output = Result<T, mysql_async::Error>>,
    ) -> Result<T, Result<DbError, mysql_async::Error>> {
        let by_timeout = Instant::now() + self.connect_timeout;
        let until = deadline.map_or(by_timeout, |d| d.min(by_timeout));
        match tokio::time::timeout_at(until, work).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(Err(e)),
            Err(_) if deadline.is_some_and(|d| d <= by_timeout) => {
                Err(Ok(DbError::DeadlineWaitingForConnection {
                    source_name: self.name.clone(),
                }))
            }
            Err(_) => Err(Ok(DbError::Unavailable {
                source_name: self.name.clone(),
                cause: format!(
                    "no connection within the connect timeout ({:?})",
                    self.connect_timeout
                ),
            })),
        }
    }

    /// A pooled connection without a statement limit, for work outside a snapshot (the
    /// catalog): a snapshot's limit stays on its connection after it is returned.
    pub(super) async fn connection_unlimited(&self) -> Result<mysql_async::Conn, DbError> {
        let mut conn = self.connection(None, false).await?;
        let reset = match self.flavour.get() {
            Some(Flavour::MariaDb) => "SET SESSION max_statement_time = 0",
            Some(Flavour::MySql) => "SET SESSION max_execution_time = 0",
            // No snapshot has run yet, so no limit was set.
            None => return Ok(conn),
        };
        conn.query_drop(reset)
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(conn)
    }

    /// Opens one consistent read-only snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT`,
    /// READ ONLY, at REPEATABLE READ) on one connection. With a deadline, every statement of
    /// the snapshot is limited to the time left (`max_statement_time` on MariaDB,
    /// `max_execution_time` on MySQL).
    pub async fn snapshot(&self, deadline: Option<Instant>) -> Result<Snapshot, DbError> {
        self.snapshot_with(deadline, None).await
    }

    /// As [`Self::snapshot`], and `first` (a text statement of one row of integers, counts)
    /// run in the snapshot in the same round trip: [`Snapshot::first`] holds its row.
    pub async fn snapshot_with(
        &self,
        deadline: Option<Instant>,
        first: Option<&str>,
    ) -> Result<Snapshot, DbError> {
        // The snapshot owns its connection, and ends its transaction on every path (see
        // `Snapshot`); so does a failure before the snapshot is made, below.
        let mut txn = self.connection(deadline, false).await?;
        let db = |e: mysql_async::Error| classify(&self.name, &e);
        // One round trip: the statement limit (none without a deadline), then the transaction,
        // whose snapshot is taken as it starts (at REPEATABLE READ, the session's level), not
        // at its first read, then the server's clock and version. The limit is built from
        // numbers alone. A transaction a failed call left open on this connection is ended by
        // START TRANSACTION itself.
        let limit = self.statement_limit(&mut txn, deadline).await.map_err(db)?;
        let first_sql = first.map(|sql| format!("; {sql}")).unwrap_or_default();
        let sql = format!(
            "{limit}; START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY; \
             SELECT CAST(UNIX_TIMESTAMP(NOW(6)) AS CHAR), VERSION(){first_sql}"
        );
        // The result sets: the SET's and START TRANSACTION's (empty), the clock's, `first`'s.
        let read = async {
            let mut started = txn.query_iter(sql).await?;
            let mut sets: Vec<Vec<mysql_async::Row>> = Vec::new();
            while !started.is_empty() {
                let rows: Vec<mysql_async::Row> = started.collect().await?;
                if !rows.is_empty() {
                    sets.push(rows);
                }
            }
            Ok::<_, mysql_async::Error>(sets)
        }
        .await;
        let read = match read {
            // `first` gave no row: a statement that failed after the others is not reported
            // by the multi-statement's results but by the connection's next command, which
            // would take it for its own. Asked for here, so that it is this call's error.
            Ok(sets) if first.is_some() && sets.len() < 2 => {
                txn.query_drop("DO 1").await.map(|()| sets)
            }
            read => read,
        };
        let sets = match read {
            Ok(sets) => sets,
            // The transaction may have begun (`first` failed after it): ended here.
            Err(e) => {
                snapshot::close(txn).await;
                return Err(db(e));
            }
        };
        let mut sets = sets.into_iter();
        let clock = sets
            .next()
            .and_then(|mut rows| rows.pop())
            .map(mysql_async::Row::unwrap);
        let text = |value: Option<&mysql_async::Value>| match value {
            Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let (epoch, version) = clock
            .map(|values| (text(values.first()), text(values.get(1))))
            .unwrap_or_default();
        let first = sets
            .next()
            .and_then(|mut rows| rows.pop())
            .map(|row| row.unwrap().iter().map(integer).collect())
            .unwrap_or_default();
        let id = txn.id();
        Ok(Snapshot {
            name: self.name.clone(),
            txn: Some(txn),
            id,
            epoch: epoch.parse().unwrap_or_default(),
            version,
            first,
        })
    }

    /// The statement that limits every statement of `conn`'s session to what is left of
    /// `deadline` (no limit without one): `max_statement_time` on MariaDB,
    /// `max_execution_time` (which limits reads alone) on MySQL. Built from numbers alone.
    pub(super) async fn statement_limit(
        &self,
        conn: &mut mysql_async::Conn,
        deadline: Option<Instant>,
    ) -> Result<String, mysql_async::Error> {
        let flavour = match self.flavour.get() {
            Some(flavour) => *flavour,
            None => {
                let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
                let flavour = if version.unwrap_or_default().contains("MariaDB") {
                    Flavour::MariaDb
                } else {
                    Flavour::MySql
                };
                *self.flavour.get_or_init(|| flavour)
            }
        };
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        Ok(match flavour {
            Flavour::MariaDb => format!(
                "SET SESSION max_statement_time = {:.3}",
                left.map_or(0.0, |l| l.as_secs_f64().max(0.001))
            ),
            Flavour::MySql => format!(
                "SET SESSION max_execution_time = {}",
                left.map_or(0, |l| l.as_millis().max(1))
            ),
        })
    }

    /// Stops the statement running on connection `id` (`KILL QUERY`), from a connection of
    /// its own. A statement that already ended is not an error.
    pub async fn kill_query(&self, id: u32) -> Result<(), DbError> {
        let mut killer = self.connection(None, true).await?;
        match killer.query_drop(format!("KILL QUERY {id}")).await {
            Ok(()) => Ok(()),
            Err(mysql_async::Error::Server(e)) if e.code == error::NO_SUCH_THREAD => Ok(()),
            Err(e) => Err(classify(&self.name, &e)),
        }
    }

    /// The connection ids of this source's account that are running a statement (for tests
    /// and for checking that nothing was left behind).
    pub async fn running_statements(&self) -> Result<Vec<(u32, String)>, DbError> {
        let mut conn = self.connection(None, true).await?;
        let rows: Vec<(u64, String)> = conn
            .query(
                "SELECT ID, COALESCE(INFO, '') FROM information_schema.PROCESSLIST \
                 WHERE COMMAND IN ('Query', 'Execute') AND ID <> CONNECTION_ID()",
            )
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(rows.into_iter().map(|(id, q)| (id as u32, q)).collect())
    }

    /// The open transactions (`information_schema.INNODB_TRX`) of connections to this
    /// source's database other than the asking one: what a snapshot left open would show
    /// (for tests, and for checking that nothing was left behind). InnoDB refreshes that
    /// table only once it has gone 100 ms unread, so this waits 150 ms first: a count read
    /// sooner could be the state before the last change.
    pub async fn open_transactions(&self) -> Result<u64, DbError> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut conn = self.connection(None, true).await?;
        let count: Option<u64> = conn
            .query_first(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX t \
                 JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                 WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()",
            )
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(count.unwrap_or(0))
    }

    /// Closes every connection of the pools.
    pub async fn disconnect(self) {
        let _ = self.pool.disconnect().await;
        let _ = self.killers.disconnect().await;
        if let Some((pool, killers)) = self.plaintext {
            let _ = pool.disconnect().await;
            let _ = killers.disconnect().await;
        }
    }
}

/// An integer the server sent (binary or text protocol); -1 for anything else.
pub fn integer(value: &mysql_async::Value) -> i64 {
    match value {
        mysql_async::Value::Int(n) => *n,
        mysql_async::Value::UInt(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        mysql_async::Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(-1),
        _ => -1,
    }
}

/// The identity bound once per `?` of the statement (a plan with several paths repeats it).
fn params(sql: &str, value: &str) -> mysql_async::Params {
    mysql_async::Params::Positional(identity_values(sql, value))
}

/// The identity once per `?` of the statement, as the values to bind.
fn identity_values(sql: &str, value: &str) -> Vec<mysql_async::Value> {
    vec![mysql_async::Value::from(value); placeholders(sql)]
}

/// Where the `?` placeholders of a statement are, outside quotes, backticks and comments.
fn placeholder_positions(sql: &str) -> Vec<usize> {
    let bytes = sql.as_bytes();
    let (mut found, mut i) = (Vec::new(), 0);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' && quote != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'?' => found.push(i),
            _ => {}
        }
        i += 1;
    }
    found
}

/// The `?` placeholders of a statement.
fn placeholders(sql: &str) -> usize {
    placeholder_positions(sql).len()
}

/// `sql` with the identity written in place of each `?`, for a statement sent as text (with
/// others, in one round trip): as a hex literal with a `utf8mb4` introducer, which no value
/// can break out of, and which takes the compared column's collation as a bound parameter
/// does.
pub fn inline_identity(sql: &str, value: &str) -> String {
    let literal = format!("_utf8mb4 X'{}'", hex::encode(value.as_bytes()));
    let mut inlined = String::with_capacity(sql.len());
    let mut from = 0;
    for at in placeholder_positions(sql) {
        inlined.push_str(&sql[from..at]);
        inlined.push_str(&literal);
        from = at + 1;
    }
    inlined.push_str(&sql[from..]);
    inlined
}

impl From<DbError> for RowError {
    fn from(e: DbError) -> RowError {
        RowError::Db(e)
    }
}

/// Why a streamed row could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error(transparent)]
    Db(DbError),
    #[error("a row of {got} columns where {expected} were selected")]
    Shape { expected: usize, got: usize },
    #[error("column {column}: {reason}")]
    Decode {
        column: usize,
        reason: decode::DecodeError,
    },
}

/// mysql_async does not show its pool's state: a MySQL source's call slots, which admit one
/// call per connection, are its gauges.
impl crate::store::Backend for MySqlPool {
    const DIALECT: &'static dyn crate::store::dialect::SqlDialect = &MySql;

    fn open(cfg: &crate::config::SourceConfig) -> Result<MySqlPool, String> {
        MySqlPool::for_source(cfg)
    }

    /// Waits for the pool's connections to close.
    async fn close(self) {
        self.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inlined_identity_cannot_leave_its_literal() {
        assert_eq!(
            inline_identity(
                "SELECT COUNT(*) FROM t WHERE a = ? AND b = '?'",
                "x' OR 1=1 -- "
            ),
            "SELECT COUNT(*) FROM t WHERE a = _utf8mb4 X'7827204f5220313d31202d2d20' AND b = '?'"
        );
        assert_eq!(
            inline_identity("SELECT ?, ?", ""),
            "SELECT _utf8mb4 X'', _utf8mb4 X''"
        );
    }

    #[test]
    fn placeholders_outside_quotes_are_counted() {
        assert_eq!(placeholders("SELECT 1 FROM t WHERE a = ?"), 1);
        assert_eq!(
            placeholders("SELECT '?', `a?` FROM t WHERE a = ? UNION ALL SELECT 1 WHERE b = ?"),
            2
        );
        assert_eq!(placeholders(r"SELECT 'it\'s ?' WHERE x = ?"), 1);
        assert_eq!(
            placeholders("SELECT 1 /* a = ? */ WHERE a = ? -- or ?\n AND b = ? # and ?"),
            2
        );
    }
}
