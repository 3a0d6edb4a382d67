//! The snapshot: one REPEATABLE READ, READ ONLY transaction on one connection for every
//! table of an extraction, raced against the stop signals, cancelled on the server when it
//! must stop, and the connection reset or discarded afterwards.

use std::future::Future;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;

use super::batch::descriptors;
use super::job::{Job, Progress};
use super::manifest;
use super::outcome::{Found, TableOutcome};
use crate::engine::error::{ExtractError, Stop};
use crate::pb::{self, extract_response::Event};
use crate::schema::PlannedTable;
use crate::store::error::DbError;
use crate::store::read::{Abandon, IdentityCheck, Prefetch, ReadOptions, ReadSnapshot, Store};
use crate::store::{Backend, WithStore};

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

    /// One attempt: a snapshot on the source's store, every table, and the snapshot ended.
    async fn attempt(
        &self,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let source = self.call.guard.source().clone();
        source
            .store
            .with(Attempt {
                job: self,
                extraction_id,
                progress,
            })
            .await
    }

    /// One attempt on `store`. When the call stops or a statement fails, the snapshot is
    /// given up: a statement still running is stopped on the server first, so that the
    /// connection is not drained of rows nobody will read, and the snapshot is never left
    /// open on a pooled connection.
    async fn attempt_on<S: Store>(
        &self,
        store: &S,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let value: &str = self.asking.bound.expose_secret();
        let prefetch = self.prefetch();
        let options = ReadOptions {
            deadline: self.params.deadline,
            idle_limit: self.reading.stall_timeout + Duration::from_secs(5),
            prefetch: &prefetch,
            value,
        };
        let mut snapshot = tokio::select! {
            snapshot = store.read_snapshot(options) => snapshot.map_err(|e| match e {
                DbError::DeadlineWaitingForConnection { .. } => ExtractError::DeadlineExceeded,
                other => other.into(),
            })?,
            stop = self.stop_signal() => return Err(stop.into_error()),
        };
        let outcome = {
            let body = self.stream_snapshot(&mut snapshot, S::SYSTEM, extraction_id, progress);
            tokio::pin!(body);
            tokio::select! {
                result = &mut body => Ok(result),
                stop = self.stop_signal() => Err(stop),
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            // A table's rows may be in flight behind the client that stopped reading: the
            // statement is stopped rather than drained.
            Ok(Err(error @ ExtractError::Stalled(_))) => {
                snapshot.abandon(Abandon::Stopped).await;
                Err(error)
            }
            Ok(Err(error)) => {
                snapshot.abandon(Abandon::Failed).await;
                Err(crate::engine::error::deadline_cut(
                    error,
                    S::Snapshot::limit_fired,
                    self.params.deadline,
                ))
            }
            Err(stop) => {
                snapshot.abandon(Abandon::Stopped).await;
                Err(stop.into_error())
            }
        }
    }

    /// The statements a store may run as the snapshot begins: every table's COUNT(*), the
    /// identity's direct rows (unless the counts give them), and the reach guards.
    fn prefetch(&self) -> Vec<Prefetch<'_>> {
        let mut prefetch: Vec<Prefetch<'_>> = self
            .plan
            .tables
            .iter()
            .map(|t| Prefetch {
                sql: &t.count_sql,
                columns: 1,
            })
            .collect();
        if !self.identity_rows_from_counts()
            && let Some(sql) = &self.plan.identity_rows_sql
        {
            prefetch.push(Prefetch {
                sql,
                columns: self.plan.identity_tables.len(),
            });
        }
        if let Some(sql) = &self.plan.reach_guard_sql {
            prefetch.push(Prefetch {
                sql,
                columns: self.plan.reach_guards.len(),
            });
        }
        if let Some(sql) = &self.plan.identity_counts_sql {
            prefetch.push(Prefetch {
                sql,
                columns: self.plan.tables.len() * self.plan.identities.len(),
            });
        }
        prefetch
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
    async fn stream_snapshot<R: ReadSnapshot>(
        &self,
        snapshot: &mut R,
        system: &'static str,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let started_at = SystemTime::now();
        let value: &str = self.asking.bound.expose_secret();
        // Each identity value must read as every identity column's type of its kind. Checked
        // once, up front, so that a later data error is never mistaken for a bad identity.
        let checks: Vec<(String, &str, &[String], &str)> = match self.plan.identities.as_slice() {
            [] => vec![(
                "subject".to_owned(),
                self.params.kind.as_str(),
                self.plan.identity_types.as_slice(),
                self.params.value.expose_secret(),
            )],
            several => several
                .iter()
                .zip(&self.asking.identities)
                .map(|(identity, asked)| {
                    (
                        asked.field.clone(),
                        identity.kind.as_str(),
                        identity.types.as_slice(),
                        asked.value.expose_secret(),
                    )
                })
                .collect(),
        };
        for (field, kind, types, value) in checks {
            snapshot
                .check_identity(types, value)
                .await
                .map_err(|refused| match refused {
                    IdentityCheck::NotA { base_type, code } => {
                        ExtractError::InvalidArgument(format!(
                            "{field}.value: not a valid {base_type} for identity kind '{kind}'{}",
                            code.map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default()
                        ))
                    }
                    IdentityCheck::Db(e) => e.into(),
                })?;
        }
        let (epoch, server_version) = snapshot.clock();
        let server_version = server_version.to_owned();
        self.send_started(self.started_event(extraction_id, started_at))
            .await?;
        let mut tally = self.tally();
        // The identity's direct matches, counted before any row is read when they must be
        // checked first; a shared identity refused when the source says so.
        if !tally.from_counts
            && let Some(sql) = &self.plan.identity_rows_sql
        {
            let counts = snapshot.counts(sql, value).await?;
            let rows =
                crate::engine::identity_rows(&self.plan, |i| counts.get(i).copied().unwrap_or(-1));
            if self.reading.shared_identity == crate::config::SharedIdentityPolicy::Refuse
                && let Some(refusal) =
                    crate::engine::shared_identity(&rows, self.reading.max_identity_rows)
            {
                return Err(refusal);
            }
            tally.found.identity_rows = rows;
        }
        // The reach rule, before any row is read: no hub reached by lookup, no followed key
        // shared by a second row.
        if let Some(sql) = &self.plan.reach_guard_sql {
            let counts = snapshot.counts(sql, value).await?;
            if let Some(refusal) = self
                .plan
                .reach_refusal(|i| counts.get(i).copied().unwrap_or(-1))
            {
                return Err(refusal.into());
            }
        }
        // With several identities: how many rows each reaches alone, table by table.
        if let Some(sql) = &self.plan.identity_counts_sql {
            tally.identity_counts = snapshot.counts(sql, value).await?;
        }
        for table in &self.plan.tables {
            let query = self.query_span(table, system);
            let outcome = tracing::Instrument::instrument(
                self.stream_table(snapshot, table, value),
                query.clone(),
            )
            .await?;
            self.table_read(table, outcome, query, &mut tally, progress)
                .await?;
        }
        // The values the request's links yield, in the same snapshot, from the identity's own
        // rows only; handed to the caller, never sent.
        let mut linked = Vec::with_capacity(self.reading.link_sql.len());
        for sql in &self.reading.link_sql {
            linked.push(match sql {
                Some(sql) => snapshot.texts(sql, value).await?,
                None => Vec::new(),
            });
        }
        if !linked.is_empty()
            && let Ok(mut found) = self.params.links.found.lock()
        {
            *found = linked;
        }
        snapshot.end().await?;
        self.finish_snapshot(
            extraction_id,
            started_at,
            timestamp_from_epoch(epoch),
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
            from_counts: self.identity_rows_from_counts(),
            found: Found::default(),
            counts: Vec::with_capacity(self.plan.tables.len()),
            identity_counts: Vec::new(),
        }
    }

    /// Whether the identity's direct rows are taken from the tables' own counts.
    fn identity_rows_from_counts(&self) -> bool {
        self.reading.shared_identity == crate::config::SharedIdentityPolicy::Report
            && self.plan.identity_rows_from_counts()
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
            identities: self.asking.named(),
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
            identity_counts,
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
        let identities = self.asking.named();
        let at = counts.len() * identities.len();
        counts.push(pb::TableCount {
            table: table.table.display.clone(),
            row_count: outcome.streamed,
            verified: true,
            identity_rows: identities
                .into_iter()
                .enumerate()
                .map(|(k, i)| pb::IdentityRows {
                    kind: i.kind,
                    subject_id: i.subject_id,
                    row_count: identity_counts.get(at + k).copied().unwrap_or(0).max(0) as u64,
                })
                .collect(),
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
    /// With several identities: per table (plan order), then per identity, the rows that
    /// identity alone reaches.
    pub(super) identity_counts: Vec<i64>,
}

fn timestamp_from_epoch(epoch: f64) -> prost_types::Timestamp {
    let micros = (epoch * 1_000_000.0).round() as i64;
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// An attempt, written once for every store and run on the source's own.
struct Attempt<'a> {
    job: &'a Job,
    extraction_id: &'a str,
    progress: &'a mut Progress,
}

impl WithStore for Attempt<'_> {
    type Output = Result<(), ExtractError>;

    fn with<S: Backend>(self, store: &S) -> impl Future<Output = Self::Output> + Send {
        self.job
            .attempt_on(store, self.extraction_id, self.progress)
    }
}
