//! MariaDB and MySQL through `mysql_async` over rustls: the store's half of the boundary. A
//! pool with a checkout timeout, one consistent read-only snapshot on one connection, a
//! streamed query with the identity bound, decoding to the proto's values, the server's
//! error numbers classified once, and cancellation with `KILL QUERY` from a second
//! connection.
//!
//! The engine does not route sources here yet: plans, the schema gate and the Extract path
//! still speak PostgreSQL. What is here is tested against a real MariaDB on its own.
//!
//! Why `mysql_async` and its own pool rather than bb8: the driver's pool already resets a
//! returned connection (`COM_RESET_CONNECTION`, then the session settings again), rolls back
//! a transaction left open, and drains a result left unread; a bb8 manager would have to
//! redo each of those.

mod catalog;
mod decode;
mod error;

pub use catalog::{ColumnInfo, ForeignKeyInfo, TableInfo, table_info};
pub use decode::{MyDecoder, ZERO_DATE_RULE};
pub use error::classify;

use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts};
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
            .finish()
    }
}

/// The session every pooled connection gets, again after each reset: UTC, so that TIMESTAMP
/// values arrive as UTC; REPEATABLE READ; and a generous `net_write_timeout`, since a reader
/// that waits on its caller must not have its query killed by the server after 60 s (the
/// call's own deadline stops it instead).
const SESSION: [&str; 3] = [
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION net_write_timeout = 3600",
];

/// One source's pool, and a second, small one for cancelling: a saturated pool must not keep a
/// `KILL QUERY` waiting.
#[derive(Debug, Clone)]
pub struct MySqlPool {
    name: String,
    pool: Pool,
    killers: Pool,
    connect_timeout: Duration,
    /// Learnt from the first snapshot's `SELECT VERSION()`.
    flavour: std::sync::Arc<std::sync::OnceLock<Flavour>>,
}

impl MySqlPool {
    /// Builds the pools; nothing connects until the first checkout.
    pub fn new(settings: &MySqlSettings) -> MySqlPool {
        let options = |max: u32| {
            let max = max.max(1) as usize;
            OptsBuilder::default()
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
                        .with_reset_connection(true),
                )
        };
        MySqlPool {
            name: settings.name.clone(),
            pool: Pool::new(options(settings.max_connections)),
            killers: Pool::new(options(1)),
            connect_timeout: settings.connect_timeout,
            flavour: Default::default(),
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
        let by_timeout = Instant::now() + self.connect_timeout;
        let until = deadline.map_or(by_timeout, |d| d.min(by_timeout));
        match tokio::time::timeout_at(until, work).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(classify(&self.name, &e)),
            Err(_) if deadline.is_some_and(|d| d <= by_timeout) => {
                Err(DbError::DeadlineWaitingForConnection {
                    source_name: self.name.clone(),
                })
            }
            Err(_) => Err(DbError::Unavailable {
                source_name: self.name.clone(),
                cause: format!(
                    "no connection within the connect timeout ({:?})",
                    self.connect_timeout
                ),
            }),
        }
    }

    /// Opens one consistent read-only snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT`,
    /// READ ONLY, at REPEATABLE READ) on one connection. With a deadline, every statement of
    /// the snapshot is limited to the time left (`max_statement_time` on MariaDB,
    /// `max_execution_time` on MySQL).
    pub async fn snapshot(&self, deadline: Option<Instant>) -> Result<Snapshot, DbError> {
        let mut options = TxOpts::default();
        options
            .with_consistent_snapshot(true)
            .with_isolation_level(IsolationLevel::RepeatableRead)
            .with_readonly(true);
        // The transaction owns its connection; dropped, it is rolled back and the connection
        // reset by the pool.
        let mut txn = self
            .within(deadline, self.pool.start_transaction(options))
            .await?;
        let db = |e: mysql_async::Error| classify(&self.name, &e);
        let flavour = match self.flavour.get() {
            Some(flavour) => *flavour,
            None => {
                let version: Option<String> =
                    txn.query_first("SELECT VERSION()").await.map_err(db)?;
                let flavour = if version.unwrap_or_default().contains("MariaDB") {
                    Flavour::MariaDb
                } else {
                    Flavour::MySql
                };
                *self.flavour.get_or_init(|| flavour)
            }
        };
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = match flavour {
                Flavour::MariaDb => format!(
                    "SET SESSION max_statement_time = {:.3}",
                    left.as_secs_f64().max(0.001)
                ),
                Flavour::MySql => format!(
                    "SET SESSION max_execution_time = {}",
                    left.as_millis().max(1)
                ),
            };
            txn.query_drop(limit).await.map_err(db)?;
        }
        let id = txn.id();
        Ok(Snapshot {
            name: self.name.clone(),
            txn,
            id,
            flavour,
        })
    }

    /// Stops the statement running on connection `id` (`KILL QUERY`), from a connection of
    /// its own. A statement that already ended is not an error.
    pub async fn kill_query(&self, id: u32) -> Result<(), DbError> {
        let mut killer = self.within(None, self.killers.get_conn()).await?;
        match killer.query_drop(format!("KILL QUERY {id}")).await {
            Ok(()) => Ok(()),
            Err(mysql_async::Error::Server(e)) if e.code == error::NO_SUCH_THREAD => Ok(()),
            Err(e) => Err(classify(&self.name, &e)),
        }
    }

    /// The connection ids of this source's account that are running a statement (for tests
    /// and for checking that nothing was left behind).
    pub async fn running_statements(&self) -> Result<Vec<(u32, String)>, DbError> {
        let mut conn = self.within(None, self.killers.get_conn()).await?;
        let rows: Vec<(u64, String)> = conn
            .query(
                "SELECT ID, COALESCE(INFO, '') FROM information_schema.PROCESSLIST \
                 WHERE COMMAND = 'Query' AND ID <> CONNECTION_ID()",
            )
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(rows.into_iter().map(|(id, q)| (id as u32, q)).collect())
    }

    /// Closes every connection of the pools.
    pub async fn disconnect(self) {
        let _ = self.pool.disconnect().await;
        let _ = self.killers.disconnect().await;
    }
}

/// One consistent read-only snapshot on one connection.
pub struct Snapshot {
    name: String,
    txn: mysql_async::Transaction<'static>,
    id: u32,
    flavour: Flavour,
}

impl Snapshot {
    /// The server's id of the snapshot's connection: what [`MySqlPool::kill_query`] takes.
    pub fn connection_id(&self) -> u32 {
        self.id
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// `SELECT COUNT(*) ...` with the identity bound to each `?`, in the snapshot.
    pub async fn count(&mut self, sql: &str, value: &str) -> Result<i64, DbError> {
        let params = params(sql, value);
        let count: Option<i64> = self
            .txn
            .exec_first(sql, params)
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(count.unwrap_or(0))
    }

    /// Streams the rows of `sql` with the identity bound to each `?`, decoded by `decoders`
    /// (one per column, in order), to `each`, one row at a time as it comes off the socket:
    /// a row is read only when `each` has taken the one before. Returns the rows read.
    pub async fn rows<F>(
        &mut self,
        sql: &str,
        value: &str,
        decoders: &[MyDecoder],
        mut each: F,
    ) -> Result<u64, RowError>
    where
        F: AsyncFnMut(Vec<crate::pb::Value>) -> Result<(), RowError>,
    {
        let name = self.name.clone();
        let db = |e: mysql_async::Error| RowError::Db(classify(&name, &e));
        let result = self
            .txn
            .exec_iter(sql, params(sql, value))
            .await
            .map_err(db)?;
        let Some(mut stream) = result
            .stream_and_drop::<mysql_async::Row>()
            .await
            .map_err(db)?
        else {
            return Ok(0);
        };
        let mut read = 0;
        while let Some(row) = stream.next().await {
            let row = row.map_err(db)?;
            if row.len() != decoders.len() {
                return Err(RowError::Shape {
                    expected: decoders.len(),
                    got: row.len(),
                });
            }
            let values = row
                .unwrap()
                .into_iter()
                .zip(decoders)
                .enumerate()
                .map(|(i, (value, decoder))| {
                    decoder
                        .decode(value)
                        .map_err(|reason| RowError::Decode { column: i, reason })
                })
                .collect::<Result<Vec<_>, _>>()?;
            read += 1;
            each(values).await?;
        }
        Ok(read)
    }

    /// Ends the snapshot (it read only, so nothing is committed) and returns the connection.
    pub async fn finish(self) -> Result<(), DbError> {
        let name = self.name;
        self.txn.rollback().await.map_err(|e| classify(&name, &e))
    }
}

/// The identity bound once per `?` of the statement (a plan with several paths repeats it).
fn params(sql: &str, value: &str) -> mysql_async::Params {
    let count = placeholders(sql);
    mysql_async::Params::Positional(vec![mysql_async::Value::from(value); count])
}

/// The `?` placeholders of a statement, outside quotes, backticks and comments.
fn placeholders(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let (mut count, mut i) = (0, 0);
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
            b'?' => count += 1,
            _ => {}
        }
        i += 1;
    }
    count
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
    /// The consumer stopped (its caller went away, say); its reason, without a value.
    #[error("{0}")]
    Stopped(String),
}

#[cfg(test)]
mod tests {
    use super::*;

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
