//! A PostgreSQL snapshot for Extract: `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY` on
//! one pooled connection, its first statement taking the snapshot and setting its limits,
//! each table's COUNT(*) and rows pipelined in one round trip, the rows' binary cells decoded
//! straight into the proto's encoding, and a cancel request when the call stops.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{CancelToken, Client, Row, RowStream, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_stream::StreamExt;

use super::{Conn, DbError, SourcePool, StatementCache, describe, is_quote_free_sqlstate};
use crate::pb::{self, RowBuf};
use crate::store::ColumnDecoder;
use crate::store::read::{
    Abandon, CellError, Cells, IdentityCheck, ReadError, ReadOptions, ReadSnapshot, Store,
    TableQuery,
};
use crate::values::{Coercion, Decoder};

impl Store for SourcePool {
    type Snapshot = PgSnapshot;

    const SYSTEM: &'static str = "postgresql";

    async fn read_snapshot(&self, options: ReadOptions<'_>) -> Result<PgSnapshot, DbError> {
        let conn = self.checkout(options.deadline).await?;
        // From here on, a snapshot dropped before it is ended discards its connection.
        let mut snapshot = PgSnapshot {
            name: self.source_name().to_owned(),
            cancel: conn.client.cancel_token(),
            cancel_tls: self.cancel_tls(),
            conn,
            open: true,
            epoch: 0.0,
            version: String::new(),
        };
        let name = snapshot.name.as_str();
        let db = |e: tokio_postgres::Error| DbError::from_pg(name, &e);
        let (client, statements) = snapshot.conn.parts();
        // The first query of a REPEATABLE READ transaction takes the snapshot. The same round
        // trip sets the transaction's limits: the statement timeout is the call's remaining
        // deadline, and the idle-in-transaction timeout a backstop (should this process stop
        // driving the transaction, PostgreSQL ends it and releases the snapshot itself).
        let statement_timeout = options.deadline.map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .max(1)
                .to_string()
        });
        let idle_timeout = options.idle_limit.as_millis().to_string();
        let limits: [&(dyn ToSql + Sync); 2] = [&statement_timeout, &idle_timeout];
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db)?;
        let first = prepare(statements, client, SNAPSHOT_SQL)
            .await
            .map_err(db)?;
        let row = client.query_one(&first, &limits).await.map_err(db)?;
        snapshot.epoch = row.try_get(0).map_err(db)?;
        snapshot.version = row.try_get(1).map_err(db)?;
        Ok(snapshot)
    }
}

/// The first statement of every snapshot: it takes the snapshot and sets the transaction's
/// statement timeout (`$1`, milliseconds; NULL keeps the server's) and idle-in-transaction
/// timeout (`$2`).
pub(super) const SNAPSHOT_SQL: &str = "SELECT extract(epoch from now())::float8, \
     current_setting('server_version'), \
     set_config('statement_timeout', coalesce($1, current_setting('statement_timeout')), true), \
     set_config('idle_in_transaction_session_timeout', $2, true)";

/// One read-only snapshot on one pooled connection.
pub struct PgSnapshot {
    name: String,
    conn: Conn,
    cancel: CancelToken,
    cancel_tls: MakeRustlsConnect,
    /// The transaction may still be open: dropped so, the connection is discarded.
    open: bool,
    epoch: f64,
    version: String,
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        if self.open {
            self.conn.mark_broken();
        }
    }
}

impl ReadSnapshot for PgSnapshot {
    type Rows<'s> = PgRows<'s>;

    fn clock(&self) -> (f64, &str) {
        (self.epoch, &self.version)
    }

    async fn check_identity(&mut self, types: &[String], value: &str) -> Result<(), IdentityCheck> {
        let name = self.name.as_str();
        let (client, statements) = self.conn.parts();
        for base_type in types.iter().filter(|t| !is_string_type(t)) {
            let check = format!("SELECT CAST($1::text AS {base_type}) IS NOT NULL");
            let statement = prepare(statements, client, &check)
                .await
                .map_err(|e| IdentityCheck::Db(DbError::from_pg(name, &e)))?;
            if let Err(e) = client.query_one(&statement, &[&value]).await {
                // A failed cast's message quotes its input (a regclass cast says "relation ...
                // does not exist"): only the SQLSTATE is passed on, and anything but an
                // infrastructure failure means the value is not one of this kind.
                return Err(match e.as_db_error().map(|d| d.code().code().to_owned()) {
                    Some(code) if !is_quote_free_sqlstate(&code) => IdentityCheck::NotA {
                        base_type: base_type.clone(),
                        code: Some(code),
                    },
                    _ => IdentityCheck::Db(DbError::from_pg_bound(name, &e)),
                });
            }
        }
        Ok(())
    }

    async fn counts(&mut self, sql: &str, value: &str) -> Result<Vec<i64>, DbError> {
        let name = self.name.as_str();
        let db = |e: tokio_postgres::Error| DbError::from_pg_bound(name, &e);
        let (client, statements) = self.conn.parts();
        let statement = prepare(statements, client, sql).await.map_err(db)?;
        let row = client.query_one(&statement, &[&value]).await.map_err(db)?;
        (0..row.len())
            .map(|i| row.try_get::<_, i64>(i).map_err(db))
            .collect()
    }

    async fn texts(&mut self, sql: &str, value: &str) -> Result<Vec<String>, DbError> {
        let name = self.name.as_str();
        let db = |e: tokio_postgres::Error| DbError::from_pg_bound(name, &e);
        let (client, statements) = self.conn.parts();
        let statement = prepare(statements, client, sql).await.map_err(db)?;
        let rows = client.query(&statement, &[&value]).await.map_err(db)?;
        rows.iter()
            .filter_map(|row| row.try_get::<_, Option<String>>(0).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)
    }

    async fn table<'s>(
        &'s mut self,
        query: TableQuery<'s>,
        value: &'s str,
    ) -> Result<PgRows<'s>, ReadError> {
        let PgSnapshot { name, conn, .. } = self;
        let name = name.as_str();
        let (client, statements) = conn.parts();
        let statement = prepare(statements, client, query.select_sql)
            .await
            .map_err(|e| bound(name, &e))?;
        // The decoders were chosen when the schema gate last passed; a column whose type
        // changed since must not be decoded with the old one.
        for (i, (decoder, described)) in query.decoders.iter().zip(statement.columns()).enumerate()
        {
            if !decoder
                .postgres()
                .is_some_and(|d| accepts(d, described.type_()))
            {
                return Err(ReadError::Drift {
                    column: Some(i),
                    what: format!(
                        "its type changed since the schema check (now {})",
                        described.type_().name()
                    ),
                });
            }
        }
        let count = prepare(statements, client, query.count_sql)
            .await
            .map_err(|e| bound(name, &e))?;
        let client: &'s Client = client;
        // COUNT(*) in the same snapshot and the table's rows go out together, the count first,
        // so that its answer arrives before the rows: one round trip. The rows then stream
        // without stopping (an unnamed portal run to the end), taken off the connection one at
        // a time as they arrive, so memory is bounded by the batch's bytes, not by rows of
        // unknown width: the connection stops reading the socket while a row waits to be
        // taken, and PostgreSQL waits on the socket. PostgreSQL sends rows in 8 KiB chunks, so
        // a slow query's batch smaller than that leaves when its chunk is full.
        //
        // Each request goes out on its first poll, so both are polled once, the count first.
        // The rows' future resolves only when their first chunk arrives (PostgreSQL holds its
        // BindComplete with them): the count is answered as soon as it is in.
        let params: [&(dyn ToSql + Sync); 1] = [&value];
        let mut counting = std::pin::pin!(client.query_one(&count, &params));
        let mut starting: Starting<'s> = Box::pin(start_rows(client, statement, value));
        let (mut counted, mut started) = (None, None);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(count) = counting.as_mut().poll(cx) {
                counted = Some(count);
            }
            if let Poll::Ready(rows) = starting.as_mut().poll(cx) {
                started = Some(rows);
            }
            Poll::Ready(())
        })
        .await;
        let counted = match counted {
            Some(count) => count,
            None => counting.await,
        }
        .and_then(|row| row.try_get::<_, i64>(0))
        .map_err(|e| bound(name, &e))?;
        Ok(PgRows {
            name,
            counted,
            starting: if started.is_some() {
                None
            } else {
                Some(starting)
            },
            started,
            rows: None,
        })
    }

    async fn end(&mut self) -> Result<(), DbError> {
        match self.conn.client.batch_execute("COMMIT").await {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => Err(DbError::from_pg(&self.name, &e)),
        }
    }

    async fn abandon(mut self, why: Abandon) {
        match why {
            Abandon::Stopped => {
                // The statement may still run on the server, and rows may be in flight: the
                // cancel request travels on its own connection, and PostgreSQL may act on it
                // a moment later, so the connection is never reused (a late cancel must not
                // hit the next query).
                if let Err(e) = self.cancel.cancel_query(self.cancel_tls.clone()).await {
                    tracing::warn!(source = %self.name, error = %describe(&e),
                        "cancel request failed");
                }
            }
            Abandon::Failed => {
                // Prepared statements may be stale if the error came from a schema change.
                self.conn.clear_statements();
                let reset = tokio::time::timeout(
                    Duration::from_secs(5),
                    self.conn.client.batch_execute("ROLLBACK"),
                )
                .await;
                if matches!(reset, Ok(Ok(()))) {
                    self.open = false;
                }
            }
        }
    }

    fn limit_fired(error: &DbError) -> bool {
        matches!(error, DbError::Query { message, .. } if message.contains("statement timeout"))
    }
}

/// Types to which any text converts: no need to check an identity value against them.
fn is_string_type(base_type: &str) -> bool {
    matches!(base_type, "text" | "character varying" | "bpchar" | "name")
}

/// Prepares `sql` on the connection, or reuses the statement prepared there before.
async fn prepare(
    cache: &mut StatementCache,
    client: &Client,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(statement) = cache.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql).await?;
    super::remember(cache, sql, &statement);
    Ok(statement)
}

/// What a failed statement that binds the identity ends the read with. A statement prepared
/// on this connection before a schema change fails with 0A000 ("cached plan must not change
/// result type"): the table changed.
fn bound(name: &str, e: &tokio_postgres::Error) -> ReadError {
    if e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED) {
        return ReadError::Drift {
            column: None,
            what: "its definition changed since its query was prepared; the schema is \
                   checked again on the next request"
                .into(),
        };
    }
    ReadError::Db(DbError::from_pg_bound(name, e))
}

type Starting<'s> =
    Pin<Box<dyn Future<Output = Result<RowStream, tokio_postgres::Error>> + Send + 's>>;

async fn start_rows(
    client: &Client,
    statement: Statement,
    value: &str,
) -> Result<RowStream, tokio_postgres::Error> {
    let params: [&(dyn ToSql + Sync); 1] = [&value];
    client.query_raw(&statement, params).await
}

/// A table's rows on PostgreSQL.
pub struct PgRows<'s> {
    name: &'s str,
    counted: i64,
    starting: Option<Starting<'s>>,
    started: Option<Result<RowStream, tokio_postgres::Error>>,
    rows: Option<Pin<Box<RowStream>>>,
}

impl crate::store::read::RowStream for PgRows<'_> {
    type Row = Row;

    fn counted(&self) -> i64 {
        self.counted
    }

    async fn next(&mut self) -> Option<Result<Row, ReadError>> {
        if self.rows.is_none() {
            let started = match self.started.take() {
                Some(started) => started,
                None => self.starting.take()?.await,
            };
            match started {
                Ok(rows) => self.rows = Some(Box::pin(rows)),
                Err(e) => return Some(Err(bound(self.name, &e))),
            }
        }
        let row = self.rows.as_mut()?.next().await?;
        Some(row.map_err(|e| bound(self.name, &e)))
    }
}

impl Cells for Row {
    fn width(&self) -> usize {
        self.len()
    }

    fn write(&self, i: usize, decoder: ColumnDecoder, out: &mut RowBuf) -> Result<(), CellError> {
        decoder_of(decoder)?
            .write(raw(self, i)?, out)
            .map_err(|e| CellError::Undecodable(e.to_string()))
    }

    fn value(&self, i: usize, decoder: ColumnDecoder) -> Result<Cow<'_, pb::Value>, CellError> {
        decoder_of(decoder)?
            .decode(raw(self, i)?)
            .map(Cow::Owned)
            .map_err(|e| CellError::Undecodable(e.to_string()))
    }

    fn coerced(
        &self,
        i: usize,
        decoder: ColumnDecoder,
        rule: &Coercion,
    ) -> Result<Cow<'_, pb::Value>, CellError> {
        let Some(cell) = raw(self, i)? else {
            return self.value(i, decoder);
        };
        match rule.apply(decoder_of(decoder)?, cell) {
            Ok(kind) => Ok(Cow::Owned(pb::Value { kind: Some(kind) })),
            Err(e) => Err(CellError::broken(rule, e)),
        }
    }

    fn integer(&self, i: usize) -> Result<i64, CellError> {
        self.try_get::<_, i64>(i)
            .or_else(|_| self.try_get::<_, i32>(i).map(i64::from))
            .map_err(|e| CellError::Undecodable(e.to_string()))
    }
}

/// The binary bytes of cell `i` (`None` for NULL).
fn raw(row: &Row, i: usize) -> Result<Option<&[u8]>, CellError> {
    row.try_get::<_, RawCell>(i)
        .map(|cell| cell.0)
        .map_err(|e| CellError::Undecodable(e.to_string()))
}

/// The PostgreSQL decoder of a PostgreSQL source's column.
fn decoder_of(decoder: ColumnDecoder) -> Result<Decoder, CellError> {
    decoder
        .postgres()
        .ok_or_else(|| CellError::Undecodable("a MySQL column in a PostgreSQL plan".into()))
}

/// Whether a result column of type `ty` is what `decoder` reads.
fn accepts(decoder: Decoder, ty: &Type) -> bool {
    match decoder {
        Decoder::Bool => *ty == Type::BOOL,
        Decoder::Int2 => *ty == Type::INT2,
        Decoder::Int4 => *ty == Type::INT4,
        Decoder::Int8 => *ty == Type::INT8,
        Decoder::Oid => *ty == Type::OID,
        Decoder::Float4 => *ty == Type::FLOAT4,
        Decoder::Float8 => *ty == Type::FLOAT8,
        Decoder::Decimal | Decoder::AsText | Decoder::Inet => *ty == Type::TEXT,
        Decoder::Text => matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME),
        Decoder::Bytea => *ty == Type::BYTEA,
        Decoder::Timestamp => matches!(*ty, Type::TIMESTAMP | Type::TIMESTAMPTZ),
        Decoder::Date => *ty == Type::DATE,
        Decoder::Json => *ty == Type::JSON,
        Decoder::Jsonb | Decoder::Array => *ty == Type::JSONB,
    }
}

/// A cell's raw binary bytes, whatever its type. Lets the engine decode without tokio-postgres
/// building an intermediate value per cell.
pub struct RawCell<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawCell(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawCell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}
