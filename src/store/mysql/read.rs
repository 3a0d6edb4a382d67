//! A MySQL or MariaDB snapshot for Extract: `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ
//! ONLY` at REPEATABLE READ on one connection, the counts asked for up front run in its first
//! round trip, each table's rows taken off the socket one at a time and decoded from the
//! driver's values, and `KILL QUERY` from a second connection when the call stops.

use std::borrow::Cow;
use std::ops::Range;

use super::{DecodeError, MySqlPool, Rows, Snapshot, ZERO_DATE_RULE, inline_identity, integer};
use crate::pb::{self, RowBuf};
use crate::store::ColumnDecoder;
use crate::store::error::DbError;
use crate::store::read::{
    Abandon, CellError, Cells, IdentityCheck, Prefetch, ReadError, ReadOptions, ReadSnapshot,
    RowStream, Store, TableQuery,
};
use crate::values::Coercion;

impl Store for MySqlPool {
    type Snapshot = MySqlRead;

    const SYSTEM: &'static str = "mysql";

    async fn read_snapshot(&self, options: ReadOptions<'_>) -> Result<MySqlRead, DbError> {
        // Every prefetched statement, as columns of one statement of one row, the identity
        // written in as a literal, so that it runs in the snapshot's first round trip.
        let mut columns = Vec::with_capacity(options.prefetch.len());
        let mut prefetched = Vec::with_capacity(options.prefetch.len());
        let mut at = 0;
        for Prefetch { sql, columns: n } in options.prefetch {
            let column = match (*n, sql.strip_prefix("SELECT ")) {
                (1, _) => format!("({sql})"),
                (_, Some(expressions)) => expressions.to_owned(),
                // Not a list of expressions: asked for when it is needed.
                (_, None) => continue,
            };
            columns.push(column);
            prefetched.push((sql.to_string(), at..at + n));
            at += n;
        }
        let first = (!columns.is_empty())
            .then(|| inline_identity(&format!("SELECT {}", columns.join(", ")), options.value));
        let snapshot = self
            .snapshot_with(options.deadline, first.as_deref())
            .await?;
        Ok(MySqlRead {
            pool: self.clone(),
            snapshot,
            prefetched,
        })
    }
}

/// One read-only snapshot on one connection, with the counts its first round trip ran.
pub struct MySqlRead {
    pool: MySqlPool,
    snapshot: Snapshot,
    /// Each prefetched statement, and its columns of [`Snapshot::first`].
    prefetched: Vec<(String, Range<usize>)>,
}

impl MySqlRead {
    /// The prefetched row of `sql`, when it was run as the snapshot began.
    fn prefetched(&self, sql: &str) -> Option<Vec<i64>> {
        let (_, range) = self.prefetched.iter().find(|(s, _)| s == sql)?;
        Some(
            range
                .clone()
                .map(|i| self.snapshot.first().get(i).copied().unwrap_or(-1))
                .collect(),
        )
    }
}

impl ReadSnapshot for MySqlRead {
    type Rows<'s> = MyRows<'s>;

    fn clock(&self) -> (f64, &str) {
        self.snapshot.clock()
    }

    async fn check_identity(&mut self, types: &[String], value: &str) -> Result<(), IdentityCheck> {
        match types.iter().find(|t| !reads_as(t, value)) {
            Some(base_type) => Err(IdentityCheck::NotA {
                base_type: base_type.clone(),
                code: None,
            }),
            None => Ok(()),
        }
    }

    async fn counts(&mut self, sql: &str, value: &str) -> Result<Vec<i64>, DbError> {
        if let Some(row) = self.prefetched(sql) {
            return Ok(row);
        }
        let mut rows = self.snapshot.query(sql, value).await?;
        let mut first = Vec::new();
        while let Some(row) = rows.next().await {
            let row = row?;
            if first.is_empty() {
                first = row.iter().map(integer).collect();
            }
        }
        Ok(first)
    }

    async fn texts(&mut self, sql: &str, value: &str) -> Result<Vec<String>, DbError> {
        let mut rows = self.snapshot.query(sql, value).await?;
        let mut texts = Vec::new();
        while let Some(row) = rows.next().await {
            match row?.first() {
                Some(mysql_async::Value::Bytes(bytes)) => {
                    texts.push(String::from_utf8_lossy(bytes).into_owned())
                }
                Some(mysql_async::Value::Int(n)) => texts.push(n.to_string()),
                Some(mysql_async::Value::UInt(n)) => texts.push(n.to_string()),
                _ => {}
            }
        }
        Ok(texts)
    }

    async fn table<'s>(
        &'s mut self,
        query: TableQuery<'s>,
        value: &'s str,
    ) -> Result<MyRows<'s>, ReadError> {
        let counted = match self.prefetched(query.count_sql) {
            Some(row) => row.first().copied().unwrap_or(-1),
            None => self.snapshot.count(query.count_sql, value).await?,
        };
        let rows = self.snapshot.query(query.select_sql, value).await?;
        Ok(MyRows {
            counted,
            rows,
            decoders: query.decoders,
        })
    }

    async fn end(&mut self) -> Result<(), DbError> {
        self.snapshot.end().await
    }

    async fn abandon(self, _: Abandon) {
        // A statement still running is killed on the server first, so that the connection
        // is not drained of rows nobody will read; then the snapshot is ended, not left open
        // on a pooled connection: rolled back, or the connection closed. A snapshot that
        // already ended has given its connection back, and nothing of it is killed.
        if self.snapshot.is_open()
            && let Err(e) = self.pool.kill_query(self.snapshot.connection_id()).await
        {
            tracing::warn!(source = %self.pool.source_name(), error = %e, "KILL QUERY failed");
        }
        self.snapshot.close().await;
    }

    fn limit_fired(error: &DbError) -> bool {
        // MariaDB's max_statement_time (1969), MySQL's max_execution_time (3024).
        matches!(error, DbError::Query { message, .. }
            if message.starts_with("error 1969") || message.starts_with("error 3024"))
    }
}

/// A table's rows on MySQL or MariaDB.
pub struct MyRows<'s> {
    counted: i64,
    rows: Rows<'s>,
    decoders: &'s [ColumnDecoder],
}

impl RowStream for MyRows<'_> {
    type Row = MyRow;

    fn counted(&self) -> i64 {
        self.counted
    }

    async fn next(&mut self) -> Option<Result<MyRow, ReadError>> {
        let row = match self.rows.next().await? {
            Ok(row) => row,
            Err(e) => return Some(Err(e.into())),
        };
        let mut values = Vec::with_capacity(self.decoders.len());
        let mut rest = Vec::new();
        for (i, value) in row.into_iter().enumerate() {
            match self.decoders.get(i) {
                Some(ColumnDecoder::MySql(decoder)) => values.push(decoder.decode(value)),
                // Another store's decoder: a MySQL source's catalog never gives one.
                Some(_) => {
                    values.push(Err(DecodeError::Unexpected {
                        decoder: super::MyDecoder::Text,
                    }));
                }
                // The measured columns of a bounded statement.
                None => rest.push(integer(&value)),
            }
        }
        Some(Ok(MyRow { values, rest }))
    }
}

/// One row, decoded as it came off the socket: MySQL's values arrive typed.
pub struct MyRow {
    values: Vec<Result<pb::Value, DecodeError>>,
    /// Integers after the decoded columns.
    rest: Vec<i64>,
}

impl MyRow {
    fn cell(&self, i: usize) -> Result<&pb::Value, CellError> {
        match self.values.get(i) {
            Some(Ok(value)) => Ok(value),
            Some(Err(DecodeError::ZeroDate)) => Err(CellError::Broken {
                rule: ZERO_DATE_RULE,
                category: "zero_date",
                rule_type: pb::Rule::ZeroDate,
            }),
            // The gate chose the decoder from the catalog: a value of another kind than it reads
            // is drift (the column's type changed since), not a value to decode.
            Some(Err(e @ DecodeError::Unexpected { .. })) => Err(CellError::Drift(format!(
                "its type changed since the schema check ({e}); the schema is checked again \
                 on the next request"
            ))),
            Some(Err(e)) => Err(CellError::Undecodable(e.to_string())),
            None => Err(CellError::Undecodable(format!("no column {i}"))),
        }
    }
}

impl Cells for MyRow {
    fn width(&self) -> usize {
        self.values.len() + self.rest.len()
    }

    fn write(&self, i: usize, _: ColumnDecoder, out: &mut RowBuf) -> Result<(), CellError> {
        out.put(self.cell(i)?);
        Ok(())
    }

    fn value(&self, i: usize, _: ColumnDecoder) -> Result<Cow<'_, pb::Value>, CellError> {
        self.cell(i).map(Cow::Borrowed)
    }

    fn coerced(
        &self,
        i: usize,
        _: ColumnDecoder,
        rule: &Coercion,
    ) -> Result<Cow<'_, pb::Value>, CellError> {
        let value = self.cell(i)?;
        match &value.kind {
            None | Some(pb::value::Kind::NullValue(_)) => Ok(Cow::Borrowed(value)),
            Some(kind) => match rule.apply_decoded(kind) {
                Ok(kind) => Ok(Cow::Owned(pb::Value { kind: Some(kind) })),
                Err(e) => Err(CellError::broken(rule, e)),
            },
        }
    }

    fn integer(&self, i: usize) -> Result<i64, CellError> {
        match i.checked_sub(self.values.len()) {
            Some(j) => self.rest.get(j).copied(),
            None => match &self.cell(i)?.kind {
                Some(pb::value::Kind::Int64Value(n)) => Some(*n),
                _ => None,
            },
        }
        .ok_or_else(|| CellError::Undecodable(format!("column {i} is not an integer")))
    }
}

/// Whether `value` reads as a value of the MySQL type `base_type` (`DATA_TYPE`): integers as
/// integers, numbers as finite numbers, dates and times as dates and times; text, binary and
/// the rest take any value.
pub(crate) fn reads_as(base_type: &str, value: &str) -> bool {
    let v = value.trim();
    match base_type {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bit" => {
            v.parse::<i64>().is_ok() || v.parse::<u64>().is_ok()
        }
        "decimal" | "numeric" | "float" | "double" | "real" => {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
                && v.parse::<f64>().is_ok_and(f64::is_finite)
        }
        "date" => chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok(),
        "datetime" | "timestamp" => {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f").is_ok()
                || chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                || chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_values_must_read_as_the_column_type() {
        assert!(reads_as("bigint", "42"));
        assert!(reads_as("bigint", " 18446744073709551615 "));
        assert!(!reads_as("bigint", "42abc"));
        assert!(!reads_as("int", "4.2"));
        assert!(!reads_as("int", "' OR 1=1 --"));
        assert!(reads_as("decimal", "12.50"));
        assert!(!reads_as("decimal", "inf"));
        assert!(!reads_as("double", "NaN"));
        assert!(reads_as("date", "2024-02-29"));
        assert!(!reads_as("date", "2023-02-29"));
        assert!(!reads_as("date", "2024-01-01x"));
        assert!(reads_as("datetime", "2024-01-01 10:00:00"));
        assert!(reads_as("varchar", "anything at all"));
    }
}
