//! One consistent read-only snapshot on one connection, and the rows of its running query.

use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;

use super::{MyDecoder, RowError, classify, params};
use crate::store::error::DbError;

/// One consistent read-only snapshot on one connection.
///
/// Its transaction is ended explicitly on every path: the pool resets nothing (a reset
/// drops the prepared statements), and mysql_async rolls back only transactions opened
/// through its own API, so a snapshot left open would keep its read view (which blocks
/// InnoDB's purge) until the pool's idle timeout closed the connection. [`Snapshot::end`]
/// and [`Snapshot::close`] end it; dropped without either (an error on the way), it is
/// ended by a task of its own.
pub struct Snapshot {
    pub(super) name: String,
    /// The connection, until the snapshot ends.
    pub(super) txn: Option<mysql_async::Conn>,
    pub(super) id: u32,
    /// The server's clock when the snapshot began (seconds since 1970), and its version.
    pub(super) epoch: f64,
    pub(super) version: String,
    /// The row of the statement run as the snapshot began (see [`MySqlPool::snapshot_with`]).
    pub(super) first: Vec<i64>,
}

impl Snapshot {
    /// The server's id of the snapshot's connection: what [`MySqlPool::kill_query`] takes.
    pub fn connection_id(&self) -> u32 {
        self.id
    }

    /// Whether the snapshot still holds its connection (it has not ended).
    pub fn is_open(&self) -> bool {
        self.txn.is_some()
    }

    /// `SELECT COUNT(*) ...` with the identity bound to each `?`, in the snapshot.
    pub async fn count(&mut self, sql: &str, value: &str) -> Result<i64, DbError> {
        let params = params(sql, value);
        let count: Option<i64> = self
            .conn()
            .exec_first(sql, params)
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(count.unwrap_or(0))
    }

    /// The server's clock when the snapshot began (seconds since 1970), and its version.
    pub fn clock(&self) -> (f64, &str) {
        (self.epoch, &self.version)
    }

    /// The integers of the statement run as the snapshot began; -1 where one was not an
    /// integer.
    pub fn first(&self) -> &[i64] {
        &self.first
    }

    /// `SELECT COUNT(*) ...` with `values` bound to its `?`s in order.
    pub async fn count_of(&mut self, sql: &str, values: &[&str]) -> Result<i64, DbError> {
        let params = values
            .iter()
            .map(|v| mysql_async::Value::from(*v))
            .collect();
        let count: Option<i64> = self
            .conn()
            .exec_first(sql, mysql_async::Params::Positional(params))
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(count.unwrap_or(0))
    }

    /// Runs `sql`, which takes no parameter (a sampling query), its rows taken as they come.
    pub async fn query_plain(&mut self, sql: &str) -> Result<Rows<'_>, DbError> {
        self.query(sql, "").await
    }

    /// The first column of each row of `sql`, where it is text.
    pub async fn first_texts(&mut self, sql: &str) -> Result<Vec<String>, DbError> {
        let mut rows = self.query_plain(sql).await?;
        let mut texts = Vec::new();
        while let Some(row) = rows.next().await {
            if let Some(mysql_async::Value::Bytes(bytes)) = row?.first()
                && let Ok(text) = std::str::from_utf8(bytes)
            {
                texts.push(text.to_owned());
            }
        }
        Ok(texts)
    }

    /// Runs `sql` with the identity bound to each `?`; its rows are taken off the socket one
    /// at a time by [`Rows::next`], so a row is read only when the one before was taken.
    pub async fn query(&mut self, sql: &str, value: &str) -> Result<Rows<'_>, DbError> {
        let name = &self.name;
        let db = |e: mysql_async::Error| classify(name, &e);
        let result = self
            .txn
            .as_mut()
            .expect("a snapshot has its connection until it ends")
            .exec_iter(sql, params(sql, value))
            .await
            .map_err(db)?;
        let stream = result
            .stream_and_drop::<mysql_async::Row>()
            .await
            .map_err(db)?;
        Ok(Rows { name, stream })
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
        let mut rows = self.query(sql, value).await?;
        let mut read = 0;
        while let Some(row) = rows.next().await {
            let row = row?;
            read += 1;
            if row.len() != decoders.len() {
                return Err(RowError::Shape {
                    expected: decoders.len(),
                    got: row.len(),
                });
            }
            let values = row
                .into_iter()
                .zip(decoders)
                .enumerate()
                .map(|(i, (value, decoder))| {
                    decoder
                        .decode(value)
                        .map_err(|reason| RowError::Decode { column: i, reason })
                })
                .collect::<Result<Vec<_>, _>>()?;
            each(values).await?;
        }
        Ok(read)
    }

    /// The snapshot's connection.
    fn conn(&mut self) -> &mut mysql_async::Conn {
        self.txn
            .as_mut()
            .expect("a snapshot has its connection until it ends")
    }

    /// Ends the snapshot (it read only, so nothing is committed) and returns the connection.
    pub async fn finish(mut self) -> Result<(), DbError> {
        self.end().await
    }

    /// Ends the snapshot's transaction and returns its connection to the pool; nothing may
    /// be read after. A connection that cannot end it is closed, which ends it on the server.
    pub async fn end(&mut self) -> Result<(), DbError> {
        let Some(mut conn) = self.txn.take() else {
            return Ok(());
        };
        match conn.query_drop("ROLLBACK").await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = tokio::time::timeout(END_WAIT, conn.disconnect()).await;
                Err(classify(&self.name, &e))
            }
        }
    }

    /// Ends the snapshot after a failure or a stop (its statement already killed): a
    /// ROLLBACK within [`END_WAIT`], or else the connection is closed. Never fails.
    pub async fn close(mut self) {
        if let Some(conn) = self.txn.take() {
            close(conn).await;
        }
    }
}

/// How long ending a snapshot may take before its connection is closed instead.
const END_WAIT: Duration = Duration::from_secs(5);

/// Rolls back the transaction on `conn` and returns it to the pool, or closes it.
pub(super) async fn close(mut conn: mysql_async::Conn) {
    match tokio::time::timeout(END_WAIT, conn.query_drop("ROLLBACK")).await {
        Ok(Ok(())) => {}
        // Dropped by the timeout mid-statement, or failed: the connection is not reused.
        _ => {
            let _ = tokio::time::timeout(END_WAIT, conn.disconnect()).await;
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Some(conn) = self.txn.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(close(conn));
        }
    }
}

/// The rows of a running query.
pub struct Rows<'a> {
    pub(super) name: &'a str,
    pub(super) stream: Option<
        mysql_async::ResultSetStream<
            'a,
            'a,
            'static,
            mysql_async::Row,
            mysql_async::BinaryProtocol,
        >,
    >,
}

impl Rows<'_> {
    /// The next row, as the driver's values; `None` after the last.
    pub async fn next(&mut self) -> Option<Result<Vec<mysql_async::Value>, DbError>> {
        let row = self.stream.as_mut()?.next().await?;
        Some(
            row.map(mysql_async::Row::unwrap)
                .map_err(|e| classify(self.name, &e)),
        )
    }
}
