//! The snapshot: one REPEATABLE READ, READ ONLY transaction on one connection for every
//! table of an extraction, raced against the stop signals, cancelled on the server when it
//! must stop, and the connection reset or discarded afterwards.

use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::batch::descriptors;
use super::job::{Job, Progress};
use super::manifest;
use super::outcome::{Found, TableOutcome};
use crate::engine::Store;
use crate::engine::error::{ExtractError, Stop};
use crate::pb::{self, extract_response::Event};
use crate::schema::PlannedTable;
use crate::store::postgres::{Conn, DbError, QueryFailure, SourcePool};

impl Job {
    /// Runs the extraction, and runs it again after a transient failure (a lost connection, a
    /// serialization failure, a server restart) while none of the snapshot's data has left for
    /// the client: checkout, BEGIN, the snapshot, the identity check, the first fetch. Retries
    /// back off with jitter inside the deadline. Once data has left, a failure ends the
    /// stream: the client retries the call with the same request id.
    pub(super) async fn run_inner(
        &self,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let mut delays = self.reading.retry.delays();
        loop {
            let attempt = 1 + self
                .call
                .attempts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = self.attempt(extraction_id, progress).await;
            let Err(error) = &result else {
                return result;
            };
            if self.sent_data() || !error.is_retryable() {
                return result;
            }
            let Some(delay) = delays.next_before(self.params.deadline) else {
                return result;
            };
            // The failed attempt counts with the breaker now; a breaker it opened stops the
            // retries too, so the source is left alone as the breaker says.
            if self.call.guard.attempt_failed(error) {
                return result;
            }
            tracing::warn!(
                source = %self.params.source, attempt, delay_ms = delay.as_millis() as u64,
                %error, "transient failure before anything was sent: trying again"
            );
            *progress = Progress::default();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                stop = self.stop_signal() => return Err(stop.into_error()),
            }
        }
    }

    /// One attempt: a connection, its snapshot, every table, and the connection back clean.
    async fn attempt(
        &self,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let source = self.call.guard.source().clone();
        match &source.store {
            Store::Postgres(pool) => self.attempt_postgres(pool, extraction_id, progress).await,
            Store::MySql(pool) => self.attempt_mysql(pool, extraction_id, progress).await,
        }
    }

    /// One attempt on PostgreSQL.
    async fn attempt_postgres(
        &self,
        pool: &SourcePool,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let checkout = pool.checkout(self.params.deadline);
        let mut conn = tokio::select! {
            conn = checkout => conn.map_err(|e| match e {
                DbError::DeadlineWaitingForConnection { .. } => ExtractError::DeadlineExceeded,
                other => other.into(),
            })?,
            stop = self.stop_signal() => return Err(stop.into_error()),
        };
        let cancel = conn.client.cancel_token();

        let outcome = {
            let body = self.stream_snapshot(&mut conn, extraction_id, progress);
            tokio::pin!(body);
            tokio::select! {
                result = &mut body => Ok(result),
                stop = self.stop_signal() => Err(stop),
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error @ ExtractError::Stalled(_))) => {
                // A table's rows may be in flight behind the client that stopped reading:
                // cancel it rather than drain it.
                self.cancel_and_discard(pool, &cancel, &mut conn).await;
                Err(error)
            }
            Ok(Err(error)) => {
                // The transaction was dropped, which queues a ROLLBACK; confirm it. Prepared
                // statements may be stale if the error came from a schema change.
                conn.clear_statements();
                reset_connection(&mut conn).await;
                Err(match error {
                    ExtractError::Db(DbError::Query {
                        failure: QueryFailure::Cancelled,
                        ref message,
                        ..
                    }) if self.statement_timeout_fired(message) => ExtractError::DeadlineExceeded,
                    other => other,
                })
            }
            Err(stop) => {
                // The body future is gone; its query may still run on the server.
                self.cancel_and_discard(pool, &cancel, &mut conn).await;
                Err(stop.into_error())
            }
        }
    }

    /// Counts the identity's direct matches in each table it reaches directly, in one round
    /// trip, before any row is read; refuses a shared identity when the source says so.
    async fn identity_rows(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        statements: &mut crate::store::postgres::StatementCache,
        value: &str,
    ) -> Result<Vec<(String, u64, bool)>, ExtractError> {
        let Some(sql) = &self.plan.identity_rows_sql else {
            return Ok(Vec::new());
        };
        let row = self.counts(txn, statements, sql, value).await?;
        let rows = crate::engine::identity_rows(&self.plan, |i| row.get::<_, i64>(i));
        if self.reading.shared_identity == crate::config::SharedIdentityPolicy::Refuse
            && let Some(refusal) =
                crate::engine::shared_identity(&rows, self.reading.max_identity_rows)
        {
            return Err(refusal);
        }
        Ok(rows)
    }

    /// Checks the reach rule in the snapshot before any row is read: no hub reached by
    /// lookup, no followed key shared by a second row.
    async fn reach_guard(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        statements: &mut crate::store::postgres::StatementCache,
        value: &str,
    ) -> Result<(), ExtractError> {
        let Some(sql) = &self.plan.reach_guard_sql else {
            return Ok(());
        };
        let row = self.counts(txn, statements, sql, value).await?;
        match self.plan.reach_refusal(|i| row.get::<_, i64>(i)) {
            Some(refusal) => Err(refusal.into()),
            None => Ok(()),
        }
    }

    /// The one row of a plan's counting query (the identity bound once), prepared once per
    /// connection.
    async fn counts(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        statements: &mut crate::store::postgres::StatementCache,
        sql: &str,
        value: &str,
    ) -> Result<tokio_postgres::Row, ExtractError> {
        let source_name = self.params.source.as_str();
        let db = |e: tokio_postgres::Error| ExtractError::from(DbError::from_pg(source_name, &e));
        let statement = crate::store::postgres::prepare_cached(statements, txn, sql)
            .await
            .map_err(db)?;
        txn.query_one(&statement, &[&value]).await.map_err(db)
    }

    /// Cancels whatever runs on the connection, on the server, and discards the connection.
    /// The cancel request travels on its own connection and PostgreSQL may act on it a moment
    /// later, so the connection is never reused: a late cancel must not hit the next query.
    async fn cancel_and_discard(
        &self,
        pool: &SourcePool,
        cancel: &tokio_postgres::CancelToken,
        conn: &mut Conn,
    ) {
        if let Err(e) = cancel.cancel_query(pool.cancel_tls()).await {
            tracing::warn!(source = %self.params.source, error = %crate::store::postgres::describe(&e),
                "cancel request failed");
        }
        conn.mark_broken();
    }

    /// Whether a cancelled statement (57014) was ended by this call's statement timeout,
    /// rather than by someone else (an administrator's `pg_cancel_backend`, say), which is
    /// not the caller's fault and is reported as retryable.
    pub(super) fn statement_timeout_fired(&self, message: &str) -> bool {
        message.contains("statement timeout")
            || self
                .params
                .deadline
                .is_some_and(|d| Instant::now() + Duration::from_millis(250) >= d)
    }

    /// Resolves when the extraction must stop before it finishes.
    pub(super) async fn stop_signal(&self) -> Stop {
        Stop::first(
            self.outbox.tx.closed(),
            self.params.deadline,
            &self.shutdown,
        )
        .await
    }

    /// Reads every planned table inside one snapshot and sends the stream's messages.
    pub(super) async fn stream_snapshot(
        &self,
        conn: &mut Conn,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let source_name = self.params.source.as_str();
        let db = |e: tokio_postgres::Error| ExtractError::from(DbError::from_pg(source_name, &e));
        let started_at = SystemTime::now();
        let (client, statements) = conn.parts();
        let txn = crate::store::postgres::read_only_snapshot(client)
            .await
            .map_err(db)?;
        // The first query of a REPEATABLE READ transaction takes the snapshot. The same round
        // trip sets the transaction's limits: the statement timeout is the call's remaining
        // deadline, and the idle-in-transaction timeout is a backstop behind the stall
        // timeout (should this process stop driving the transaction, PostgreSQL ends it and
        // releases the snapshot itself).
        let statement_timeout = self.params.deadline.map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .max(1)
                .to_string()
        });
        let idle_timeout = (self.reading.stall_timeout + Duration::from_secs(5))
            .as_millis()
            .to_string();
        let snapshot = crate::store::postgres::prepare_cached(statements, &txn, SNAPSHOT_SQL)
            .await
            .map_err(db)?;
        let row = txn
            .query_one(&snapshot, &[&statement_timeout, &idle_timeout])
            .await
            .map_err(db)?;
        let snapshot_at = timestamp_from_epoch(row.get(0));
        let server_version: String = row.get(1);

        self.send_started(self.started_event(extraction_id, started_at))
            .await?;

        let value: &str = self.params.value.expose_secret();
        // The identity value must convert to every identity column's type. Checked once, up
        // front, so that a later data error is never mistaken for a bad identity.
        for base_type in self
            .plan
            .identity_types
            .iter()
            .filter(|t| !is_string_type(t))
        {
            let check = format!("SELECT CAST($1::text AS {base_type}) IS NOT NULL");
            let statement = crate::store::postgres::prepare_cached(statements, &txn, &check)
                .await
                .map_err(db)?;
            if let Err(e) = txn.query_one(&statement, &[&value]).await {
                // A failed cast's message quotes its input (a regclass cast says "relation ...
                // does not exist" or "cross-database references are not implemented: ..."):
                // only the SQLSTATE is passed on, and anything but an infrastructure failure
                // means the value is not one of this kind.
                return Err(match e.as_db_error().map(|d| d.code().code().to_owned()) {
                    Some(code) if !crate::store::postgres::is_quote_free_sqlstate(&code) => {
                        ExtractError::InvalidArgument(format!(
                            "subject.value: not a valid {base_type} for identity kind '{}' (SQLSTATE {code})",
                            self.params.kind
                        ))
                    }
                    _ => ExtractError::from(DbError::from_pg_bound(source_name, &e)),
                });
            }
        }
        let mut tally = self.tally();
        if !tally.from_counts {
            tally.found.identity_rows = self.identity_rows(&txn, statements, value).await?;
        }
        self.reach_guard(&txn, statements, value).await?;
        for table in &self.plan.tables {
            let query = self.query_span(table, "postgresql");
            let outcome = tracing::Instrument::instrument(
                self.stream_table(&txn, statements, table, value),
                query.clone(),
            )
            .await?;
            self.table_read(table, outcome, query, &mut tally, progress)
                .await?;
        }
        txn.commit().await.map_err(db)?;

        self.finish_snapshot(
            extraction_id,
            started_at,
            snapshot_at,
            server_version,
            tally,
        )
        .await
    }

    /// An empty tally. The identity's direct rows per table are counted up front when they
    /// must be checked before any row is read (or cannot be had otherwise), else taken from
    /// each table's own COUNT(*), which costs no round trip.
    pub(super) fn tally(&self) -> Tally {
        Tally {
            from_counts: self.reading.shared_identity
                == crate::config::SharedIdentityPolicy::Report
                && self.plan.identity_rows_from_counts(),
            found: Found::default(),
            counts: Vec::with_capacity(self.plan.tables.len()),
        }
    }

    /// The stream's first message: the plan, as the caller will receive it.
    pub(super) fn started_event(
        &self,
        extraction_id: &str,
        started_at: SystemTime,
    ) -> pb::ExtractionStarted {
        pb::ExtractionStarted {
            extraction_id: extraction_id.to_owned(),
            source: self.params.source.clone(),
            tables: self
                .plan
                .tables
                .iter()
                .map(|t| pb::PlannedTable {
                    table: t.table.display.clone(),
                    reached_via: t.reached_via.clone(),
                    columns: descriptors(t),
                    description: t.table.description.clone(),
                })
                .collect(),
            unreachable_tables: self
                .plan
                .unreachable
                .iter()
                .map(|(table, reason)| pb::UnreachableTable {
                    table: table.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            started_at: Some(prost_types::Timestamp::from(started_at)),
            request_id: self.params.request_id.clone(),
            subject_id: self.call.subject_id.clone(),
            categories: self.category_descriptions(),
        }
    }

    /// The span of one table's query.
    pub(super) fn query_span(&self, table: &PlannedTable, system: &str) -> tracing::Span {
        tracing::info_span!(
            "db.query",
            otel.name = %format!("SELECT {}", table.table.display),
            otel.kind = "client",
            db.system.name = %system,
            db.namespace = %self.reading.database,
            db.collection.name = %table.table.display,
            db.operation.name = "SELECT",
            db.query.text = %table.select_sql,
            db.response.returned_rows = tracing::field::Empty,
            dsr.rows.rejected = tracing::field::Empty,
        )
    }

    /// What follows a table's read, on any store: its counts recorded on its span and
    /// verified against its COUNT(*), its identity rows noted, and its completion sent.
    pub(super) async fn table_read(
        &self,
        table: &PlannedTable,
        mut outcome: TableOutcome,
        query: tracing::Span,
        tally: &mut Tally,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let Tally {
            from_counts,
            found,
            counts,
        } = tally;
        let from_counts = *from_counts;
        // The database returned every row read; those a coercion rule left out are counted
        // apart (OpenTelemetry's database conventions: returned_rows is what the query
        // returned).
        query.record(
            "db.response.returned_rows",
            outcome.streamed + outcome.rejected,
        );
        query.record("dsr.rows.rejected", outcome.rejected);
        drop(query);
        let counted = outcome.counted;
        let read = outcome.streamed + outcome.rejected;
        tracing::info_span!(
            "compliance.row_count_verify",
            dsr.table = %table.table.display,
            dsr.streamed = read,
            dsr.counted = counted,
            dsr.ok = counted >= 0 && counted as u64 == read,
        )
        .in_scope(|| {});
        if counted < 0 || counted as u64 != read {
            return Err(ExtractError::CountMismatch {
                table: table.table.display.clone(),
                streamed: read,
                counted,
            });
        }
        if from_counts
            && let Some((name, guarded)) = self
                .plan
                .identity_tables
                .iter()
                .find(|(name, _)| *name == table.table.display)
        {
            found
                .identity_rows
                .push((name.clone(), counted as u64, *guarded));
        }
        progress.rows += outcome.streamed;
        progress.tables += 1;
        counts.push(pb::TableCount {
            table: table.table.display.clone(),
            row_count: outcome.streamed,
            verified: true,
        });
        outcome.gather_fields(&self.reading.matrix);
        found.add(&table.table.display, &outcome);
        self.send(Event::TableCompleted(pb::TableCompleted {
            table: table.table.display.clone(),
            row_count: outcome.streamed,
            rejected_count: outcome.rejected,
            violations: outcome.violations,
            violations_truncated: outcome.violations_truncated,
            pii_fields_truncated: outcome.fields_truncated,
            pii_fields: outcome
                .fields
                .iter()
                .map(|(path, category)| format!("{path}:{category}"))
                .collect(),
            found_fields: outcome
                .fields
                .iter()
                .map(|(path, category)| pb::PiiField {
                    path: path.clone(),
                    category: category.clone(),
                })
                .collect(),
            text_findings: outcome
                .in_text
                .iter()
                .map(|((column, category), values)| pb::TextFinding {
                    column: table.table.columns[*column].name.clone(),
                    category: category.clone(),
                    values: *values,
                })
                .collect(),
        }))
        .await?;
        Ok(())
    }

    /// The manifest of a finished snapshot, checked, audited, then sent.
    pub(super) async fn finish_snapshot(
        &self,
        extraction_id: &str,
        started_at: SystemTime,
        snapshot_at: prost_types::Timestamp,
        server_version: String,
        tally: Tally,
    ) -> Result<(), ExtractError> {
        let Tally { found, counts, .. } = tally;
        let found = &found;
        let manifest = self.manifest(
            extraction_id,
            started_at,
            snapshot_at,
            server_version,
            counts,
            found,
        );
        let problems = manifest::violations(&manifest);
        let mut categories: Vec<&str> = self
            .plan
            .tables
            .iter()
            .flat_map(|t| t.table.columns.iter().filter(|c| c.is_pii()))
            .map(|c| c.category.as_str())
            .chain(found.fields.iter().map(|(_, c)| c.as_str()))
            .collect();
        categories.sort_unstable();
        categories.dedup();
        tracing::info_span!(
            "compliance.pii_mapping_validate",
            dsr.pii_fields = manifest.pii_fields.len() as u64,
            dsr.categories = %categories.join(","),
            dsr.result = if problems.is_empty() { "ok" } else { "violations" },
            dsr.violations = problems.len() as u64,
        )
        .in_scope(|| {});
        if !problems.is_empty() {
            return Err(ExtractError::InvalidManifest(problems));
        }
        // Audited before answered: the rejected rows' dead letters and then the call's record
        // are durable before the manifest leaves.
        self.letters_heard(0).await?;
        self.record_manifest(&manifest).await?;
        self.send(Event::Manifest(manifest)).await
    }
}

/// What a snapshot's tables have added up to: each table's verified count and what was found,
/// and whether the identity's direct rows are taken from the tables' counts.
pub(super) struct Tally {
    pub(super) from_counts: bool,
    pub(super) found: Found,
    pub(super) counts: Vec<pb::TableCount>,
}

/// The first statement of every extraction: it takes the snapshot and sets the
/// transaction's statement timeout (`$1`, milliseconds; NULL keeps the server's) and
/// idle-in-transaction timeout (`$2`).
pub(super) const SNAPSHOT_SQL: &str = "SELECT extract(epoch from now())::float8, \
     current_setting('server_version'), \
     set_config('statement_timeout', coalesce($1, current_setting('statement_timeout')), true), \
     set_config('idle_in_transaction_session_timeout', $2, true)";

pub(super) fn timestamp_from_epoch(epoch: f64) -> prost_types::Timestamp {
    let micros = (epoch * 1_000_000.0).round() as i64;
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Types to which any text converts: no need to check an identity value against them.
pub(super) fn is_string_type(base_type: &str) -> bool {
    matches!(base_type, "text" | "character varying" | "bpchar" | "name")
}

/// Leaves the connection idle and outside any transaction, or marks it broken.
pub(super) async fn reset_connection(conn: &mut Conn) {
    let reset = tokio::time::timeout(
        Duration::from_secs(5),
        conn.client.batch_execute("ROLLBACK"),
    )
    .await;
    if !matches!(reset, Ok(Ok(()))) {
        conn.mark_broken();
    }
}
