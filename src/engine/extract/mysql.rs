//! An extraction from a MySQL or MariaDB source: one consistent read-only snapshot on one
//! connection (`START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` at REPEATABLE READ),
//! each table's COUNT(*) in it, its rows streamed off the socket one at a time, and
//! `KILL QUERY` from a second connection when the call must stop. Everything after a row is
//! decoded (coercion, scans, batches, counts, the manifest, records) is the same code as for
//! PostgreSQL.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::job::{Job, Progress};
use super::outcome::TableOutcome;
use super::snapshot::timestamp_from_epoch;
use super::table::{measured_too_large, primary_key_from};
use crate::engine::error::ExtractError;
use crate::pb::{self, extract_response::Event};
use crate::schema::{ColumnDecoder, MappedTable, PlannedTable};
use crate::store::error::{DbError, QueryFailure};
use crate::store::mysql::{DecodeError, MySqlPool, Snapshot, ZERO_DATE_RULE, integer};

impl Job {
    /// One attempt on MySQL or MariaDB: a snapshot, every table, and the connection back
    /// clean. A statement still running when the call stops is killed on the server first,
    /// so that the connection is not drained of rows nobody will read.
    pub(super) async fn attempt_mysql(
        &self,
        pool: &MySqlPool,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let value: &str = self.params.value.expose_secret();
        self.check_mysql_identity(value)?;
        // Every table's COUNT(*), and the identity's direct rows, counted as the snapshot
        // begins, in its first round trip.
        let (counts, identity_columns, guard_columns) = counts_sql(&self.plan, value);
        let mut snapshot = tokio::select! {
            snapshot = pool.snapshot_with(self.params.deadline, Some(&counts)) => snapshot.map_err(|e| match e {
                DbError::DeadlineWaitingForConnection { .. } => ExtractError::DeadlineExceeded,
                other => other.into(),
            })?,
            stop = self.stop_signal() => return Err(stop.into_error()),
        };
        let id = snapshot.connection_id();
        let outcome = {
            let body = self.stream_snapshot_mysql(
                &mut snapshot,
                &identity_columns,
                guard_columns,
                extraction_id,
                progress,
            );
            tokio::pin!(body);
            tokio::select! {
                result = &mut body => Ok(result),
                stop = self.stop_signal() => Err(stop),
            }
        };
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(stop) => stop.into_error(),
        };
        if let Err(e) = pool.kill_query(id).await {
            tracing::warn!(source = %self.params.source, error = %e, "KILL QUERY failed");
        }
        // The snapshot ended here, not left open on a pooled connection: rolled back, or the
        // connection closed.
        snapshot.close().await;
        Err(match error {
            ExtractError::Db(DbError::Query {
                failure: QueryFailure::Cancelled,
                ref message,
                ..
            }) if self.mysql_timeout_fired(message) => ExtractError::DeadlineExceeded,
            other => other,
        })
    }

    /// Whether an interrupted statement was ended by this call's statement limit (MariaDB's
    /// 1969, MySQL's 3024), or by a kill when the deadline had come, rather than by someone
    /// else's `KILL QUERY`.
    fn mysql_timeout_fired(&self, message: &str) -> bool {
        message.starts_with("error 1969") || message.starts_with("error 3024") || {
            self.params
                .deadline
                .is_some_and(|d| Instant::now() + Duration::from_millis(250) >= d)
        }
    }

    /// Reads every planned table inside one snapshot and sends the stream's messages.
    async fn stream_snapshot_mysql(
        &self,
        snapshot: &mut Snapshot,
        identity_columns: &[usize],
        guard_columns: usize,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let started_at = SystemTime::now();
        let (epoch, server_version) = snapshot.clock();
        let server_version = server_version.to_owned();
        self.send_started(self.started_event(extraction_id, started_at))
            .await?;
        let value: &str = self.params.value.expose_secret();
        let counts = snapshot.first().to_vec();
        let mut tally = self.tally();
        if !tally.from_counts && self.plan.identity_rows_sql.is_some() {
            let rows = crate::engine::identity_rows(&self.plan, |i| {
                identity_columns
                    .get(i)
                    .and_then(|c| counts.get(*c))
                    .copied()
                    .unwrap_or(-1)
            });
            if self.reading.shared_identity == crate::config::SharedIdentityPolicy::Refuse
                && let Some(refusal) =
                    crate::engine::shared_identity(&rows, self.reading.max_identity_rows)
            {
                return Err(refusal);
            }
            tally.found.identity_rows = rows;
        }
        // The reach rule, from the same first row, before any row is read.
        if let Some(refusal) = self
            .plan
            .reach_refusal(|i| counts.get(guard_columns + i).copied().unwrap_or(-1))
        {
            return Err(refusal.into());
        }
        for (i, table) in self.plan.tables.iter().enumerate() {
            let query = self.query_span(table, "mysql");
            let counted = counts.get(i).copied().unwrap_or(-1);
            let outcome = tracing::Instrument::instrument(
                self.stream_table_mysql(snapshot, table, value, counted),
                query.clone(),
            )
            .await?;
            self.table_read(table, outcome, query, &mut tally, progress)
                .await?;
        }
        snapshot.end().await?;
        let snapshot_at = timestamp_from_epoch(epoch);
        self.finish_snapshot(
            extraction_id,
            started_at,
            snapshot_at,
            server_version,
            tally,
        )
        .await
    }

    /// The identity value must read as every identity column's type: MySQL would otherwise
    /// convert `42abc` to 42 and match another person's rows. Checked before any row is read.
    fn check_mysql_identity(&self, value: &str) -> Result<(), ExtractError> {
        for base_type in &self.plan.identity_types {
            if !reads_as(base_type, value) {
                return Err(ExtractError::InvalidArgument(format!(
                    "subject.value: not a valid {base_type} for identity kind '{}'",
                    self.params.kind
                )));
            }
        }
        Ok(())
    }

    /// Streams one table's rows (`counted` by its COUNT(*) in the snapshot), decoded,
    /// coerced and scanned, cut into batches and (unless this is a dry run) sent.
    async fn stream_table_mysql(
        &self,
        snapshot: &mut Snapshot,
        table: &PlannedTable,
        value: &str,
        counted: i64,
    ) -> Result<TableOutcome, ExtractError> {
        let mapped = &table.table;
        if !self.params.dry_run {
            self.send(Event::TableStarted(pb::TableStarted {
                table: mapped.display.clone(),
                expected_rows: counted.max(0) as u64,
            }))
            .await?;
        }
        let mut batch = self.batcher(table);
        let mut outcome = TableOutcome::default();
        let mut encoded = pb::RowBuf::default();
        let width = mapped.columns.len();
        let mut rows = snapshot.query(&table.select_sql, value).await?;
        while let Some(row) = rows.next().await {
            let mut row = row?;
            if row.len() != width + if table.bounded { 2 } else { 0 } {
                return Err(ExtractError::Decode {
                    table: mapped.display.clone(),
                    column: String::new(),
                    reason: format!("a row of {} columns where {width} were planned", row.len()),
                });
            }
            if table.bounded {
                let size = row.pop().as_ref().map_or(-1, integer);
                let column = row.pop().as_ref().map_or(-1, integer);
                if column > 0 {
                    return Err(measured_too_large(&batch, mapped, column, size));
                }
            }
            let kept = self.convert_mysql_row(mapped, row, &mut encoded, &mut outcome)?;
            self.pass_row(table, kept, &encoded, &mut batch, &mut outcome)
                .await?;
        }
        self.send_rest(table, &mut batch).await?;
        outcome.counted = counted;
        Ok(outcome)
    }

    /// Converts one row of the driver's values: decodes each cell, applies coercion rules
    /// (a zero date breaks [`ZERO_DATE_RULE`]) and scans JSON, into `encoded`. Returns `false`
    /// when the row is rejected under the `reject_row` policy.
    fn convert_mysql_row(
        &self,
        table: &MappedTable,
        row: Vec<mysql_async::Value>,
        encoded: &mut pb::RowBuf,
        outcome: &mut TableOutcome,
    ) -> Result<bool, ExtractError> {
        let mut decoded = Vec::with_capacity(row.len());
        for (value, column) in row.into_iter().zip(&table.columns) {
            let ColumnDecoder::MySql(decoder) = column.decoder else {
                return Err(ExtractError::Decode {
                    table: table.display.clone(),
                    column: column.name.clone(),
                    reason: "a PostgreSQL column in a MySQL plan".into(),
                });
            };
            decoded.push(decoder.decode(value));
        }
        let primary_key = |decoded: &[Result<pb::Value, DecodeError>]| {
            primary_key_from(table, |i| decoded.get(i)?.as_ref().ok()?.kind.clone())
        };
        encoded.clear();
        for (i, column) in table.columns.iter().enumerate() {
            let violation = |rule: &str, category: &str, rule_type: pb::Rule| pb::Violation {
                table: table.display.clone(),
                column: column.name.clone(),
                primary_key: primary_key(&decoded),
                rule: rule.to_owned(),
                category: category.to_owned(),
                detail: String::new(),
                rule_type: rule_type.into(),
            };
            let value = match &decoded[i] {
                Err(DecodeError::ZeroDate) => {
                    let v = violation(ZERO_DATE_RULE, "zero_date", pb::Rule::ZeroDate);
                    self.violated(v, outcome)?;
                    return Ok(false);
                }
                Err(e) => {
                    return Err(ExtractError::Decode {
                        table: table.display.clone(),
                        column: column.name.clone(),
                        reason: e.to_string(),
                    });
                }
                Ok(value) => match (&column.coercion, &value.kind) {
                    (Some(_), None | Some(pb::value::Kind::NullValue(_))) | (None, _) => {
                        Cow::Borrowed(value)
                    }
                    (Some(rule), Some(kind)) => match rule.apply_decoded(kind) {
                        Ok(kind) => Cow::Owned(pb::Value { kind: Some(kind) }),
                        Err(e) => {
                            let v = violation(e.rule, e.category, rule.rule_type());
                            self.violated(v, outcome)?;
                            return Ok(false);
                        }
                    },
                },
            };
            self.inspect_cell(table, i, &value, || primary_key(&decoded), outcome);
            encoded.put(&value);
        }
        Ok(true)
    }
}

/// One statement of one row: every table's COUNT(*), in plan order, then the identity's
/// direct rows in each table it reaches directly (a table reached by its identity columns
/// alone is not counted twice: its COUNT(*) is those rows); the identity written in as a
/// literal, so that it can run in the snapshot's first round trip; then the plan's reach
/// guards. Returns the statement, for each of the plan's identity tables the column of the
/// row that counts its rows, and the column of the first reach guard.
fn counts_sql(plan: &crate::schema::Plan, value: &str) -> (String, Vec<usize>, usize) {
    let mut columns: Vec<String> = plan
        .tables
        .iter()
        .map(|t| format!("({})", t.count_sql))
        .collect();
    let mut identity = Vec::with_capacity(plan.identity_tables.len());
    for (name, _) in &plan.identity_tables {
        let found = plan
            .tables
            .iter()
            .enumerate()
            .find(|(_, t)| &t.table.display == name);
        match found {
            Some((i, t)) if t.identity_branches == t.branches.len() => identity.push(i),
            Some((_, t)) => {
                identity.push(columns.len());
                columns.push(t.identity_count_sql());
            }
            // A table left out of a restricted plan: the plan's own identity query counts
            // every identity table, in order.
            None => {
                identity.clear();
                let first = columns.len();
                if let Some(all) = plan
                    .identity_rows_sql
                    .as_deref()
                    .and_then(|sql| sql.strip_prefix("SELECT "))
                {
                    columns.truncate(plan.tables.len());
                    columns.push(all.to_owned());
                    identity.extend(first..first + plan.identity_tables.len());
                }
                break;
            }
        }
    }
    let guards = columns.len();
    if let Some(all) = plan
        .reach_guard_sql
        .as_deref()
        .and_then(|sql| sql.strip_prefix("SELECT "))
    {
        columns.push(all.to_owned());
    }
    let sql = format!("SELECT {}", columns.join(", "));
    (
        crate::store::mysql::inline_identity(&sql, value),
        identity,
        guards,
    )
}

/// Whether `value` reads as a value of the MySQL type `base_type` (`DATA_TYPE`): integers as
/// integers, numbers as finite numbers, dates and times as dates and times; text, binary and
/// the rest take any value.
pub(super) fn reads_as(base_type: &str, value: &str) -> bool {
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
