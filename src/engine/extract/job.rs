//! The producer of one extraction: its hook spans and log line, the messages it sends (with
//! the stall timeout and the size check), and the manifest it ends with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outcome::Found;
use super::{Engine, ExtractParams, MAX_MESSAGE_BYTES, manifest};
use crate::classify::Matrix;
use crate::config::CoercionPolicy;
use crate::engine::error::{ExtractError, error_means_schema_changed};
use crate::engine::guard::Guard;
use crate::observability::metrics::Metrics;
use crate::pb::{self, EncodedBatch, ExtractFrame, ExtractResponse, extract_response::Event};
use crate::records::appender::Pending;
use crate::schema::{Plan, pii_fields};

/// One running extraction: what was asked, the plan, how it reads, what it sends, and what
/// the call answers for.
pub(super) struct Job {
    pub(super) params: ExtractParams,
    /// What the statements bind, and the identities asked when there are several.
    pub(super) asking: super::identities::Asking,
    pub(super) plan: Arc<Plan>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown: CancellationToken,
    pub(super) reading: Reading,
    pub(super) outbox: Outbox,
    pub(super) call: Call,
}

/// How the job reads its source, fixed when it starts.
pub(super) struct Reading {
    /// The statement of each requested link, `None` where the plan does not reach its table
    /// directly.
    pub(super) link_sql: Vec<Option<String>>,
    pub(super) database: String,
    pub(super) matrix: Arc<Matrix>,
    pub(super) coercion_policy: CoercionPolicy,
    /// The schema gate's warnings, for the manifest.
    pub(super) warnings: Vec<String>,
    /// How the identity value was normalised before it was bound and hashed ("trim, nfc,
    /// lowercase"), for the manifest.
    pub(super) normalization: String,
    pub(super) batch_size: u32,
    pub(super) max_batch_bytes: usize,
    /// How transient failures are retried.
    pub(super) retry: crate::resilience::retry::RetryPolicy,
    /// How long a send may wait for room in the channel before the stream counts as stalled.
    pub(super) stall_timeout: Duration,
    /// The most rows the identity may match in a table where one row is one person, and what
    /// happens above it.
    pub(super) max_identity_rows: u64,
    pub(super) shared_identity: crate::config::SharedIdentityPolicy,
}

/// What the job sends, and what has gone out. The flags are atomics because the job's body
/// and its stop signal borrow the job at once, in one task.
pub(super) struct Outbox {
    pub(super) tx: mpsc::Sender<ExtractFrame>,
    /// The error that ended the job, delivered after every buffered message.
    pub(super) outcome: oneshot::Sender<ExtractError>,
    pub(super) created: Instant,
    pub(super) first_batch_sent: AtomicBool,
    /// The `started` event went out (once, whatever the attempts).
    pub(super) started_sent: AtomicBool,
    /// A batch, a table's completion or the manifest went out: from then on a failure is
    /// not retried, because the client has seen part of one snapshot.
    pub(super) sent_data: AtomicBool,
}

/// What the call answers for: its breaker pass and slots, its records, its attempts.
pub(super) struct Call {
    /// The call's pass through the source's breaker, settled when the producer ends, and its
    /// call slots, released then.
    pub(super) guard: Guard,
    pub(super) records: crate::engine::error::Recorder,
    /// What the call's audit record holds before the extraction adds its own.
    pub(super) entry: crate::records::audit::Entry,
    /// The call's record was written (with its manifest).
    pub(super) audited: AtomicBool,
    /// How many attempts were made.
    pub(super) attempts: AtomicU32,
    /// The dead letters of rejected rows, queued and not yet known to be durable.
    pub(super) letters: std::sync::Mutex<std::collections::VecDeque<Pending>>,
    pub(super) subject_id: String,
}

/// Counters of a finished extraction, for the log line.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) rows: u64,
    pub(super) tables: usize,
}

impl Job {
    pub(super) async fn run(mut self) {
        let extraction_id = self.call.entry.extraction_id.clone();
        let started = Instant::now();
        let mut progress = Progress::default();
        tracing::Span::current().record("dsr.subject_id", self.call.subject_id.as_str());
        tracing::info_span!(
            "compliance.extraction_start",
            dsr.extraction_id = %extraction_id,
            dsr.source = %self.params.source,
            dsr.request_id = %self.params.request_id,
            dsr.caller = %self.params.caller,
            dsr.identity_kind = %self.plan.kind,
            dsr.plan.tables = self.plan.tables.len() as u64,
            dsr.plan.unreachable_tables = self.plan.unreachable.len() as u64,
            dsr.dry_run = self.params.dry_run,
        )
        .in_scope(|| {});
        // A panic in the producer (a bug) ends the call as INTERNAL with its record, like
        // any other failure, instead of a stream that just stops.
        // Audited before any row leaves: a record naming the call (caller, source, subject's
        // hash, time) is durable before the stream sends anything; a call that cannot be
        // recorded sends nothing. A dry run is part of a Validate call, recorded by the API.
        let recorded = if self.params.dry_run {
            Ok(())
        } else {
            self.record_start().await
        };
        let work = async {
            recorded?;
            self.run_inner(&extraction_id, &mut progress).await
        };
        let result = std::panic::AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                // The panic's text may quote a value: it goes to the log at most by length.
                tracing::error!(
                    panic_chars = what.chars().count(),
                    "the extraction's producer panicked (a bug); the call ends as INTERNAL"
                );
                Err(ExtractError::Internal(
                    "the extraction failed on a bug in the service; it was recorded".into(),
                ))
            });
        self.call.guard.settle(result.as_ref().err());
        // A dry run is part of a Validate call, which the API layer records once.
        if let Err(error) = &result
            && !self.params.dry_run
            && !self.call.audited.load(std::sync::atomic::Ordering::Relaxed)
        {
            let entry = crate::records::audit::Entry {
                row_count: progress.rows,
                ..self.call.entry.clone()
            };
            self.call.records.failed(&self.metrics, entry, error).await;
        }
        // The gRPC status is the adapter's to record on the server span; the engine names
        // what ended the extraction.
        tracing::info_span!(
            "compliance.extraction_end",
            dsr.extraction_id = %extraction_id,
            dsr.rows = progress.rows,
            dsr.tables = progress.tables as u64,
            dsr.outcome = if result.is_ok() { "ok" } else { "failed" },
            dsr.error = result.as_ref().err().map(ExtractError::kind).unwrap_or(""),
        )
        .in_scope(|| {});
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if !self.params.dry_run {
            self.metrics
                .duration
                .get_or_create(&crate::observability::metrics::source_labels(
                    &self.params.source,
                ))
                .observe(self.outbox.created.elapsed().as_secs_f64());
        }
        if let Err(ExtractError::InvalidManifest(problems)) = &result {
            self.metrics
                .manifest_violations
                .get_or_create(&crate::observability::metrics::source_labels(
                    &self.params.source,
                ))
                .inc_by(problems.len() as u64);
        }
        let source = &self.params.source;
        match &result {
            Ok(()) => tracing::info!(
                extraction_id, source, subject_id = %self.call.subject_id,
                caller = %self.params.caller, call_id = %self.params.call_id,
                request_id = %self.params.request_id, rows = progress.rows,
                tables = progress.tables, elapsed_ms, "extraction finished"
            ),
            Err(error) => tracing::warn!(
                extraction_id, source, subject_id = %self.call.subject_id,
                caller = %self.params.caller, call_id = %self.params.call_id,
                request_id = %self.params.request_id, rows = progress.rows,
                tables = progress.tables, elapsed_ms, %error, "extraction failed"
            ),
        }
        if let Err(error) = result {
            if error_means_schema_changed(&error) {
                Engine::forget_map(self.call.guard.source()).await;
            }
            // Sent before `self.outbox.tx` drops, so the stream sees it when the channel closes.
            let _ = self.outbox.outcome.send(error);
        }
    }

    pub(super) fn manifest(
        &self,
        extraction_id: &str,
        started_at: SystemTime,
        snapshot_at: prost_types::Timestamp,
        server_version: String,
        tables: Vec<pb::TableCount>,
        found: &Found,
    ) -> pb::Manifest {
        let row_count = tables.iter().map(|t| t.row_count).sum();
        let mut metadata = BTreeMap::new();
        metadata.insert("request_id".to_owned(), self.params.request_id.clone());
        metadata.insert("identity_kind".to_owned(), self.plan.kind.clone());
        metadata.insert(
            "isolation".to_owned(),
            "repeatable read, read only".to_owned(),
        );
        metadata.insert("server_version".to_owned(), server_version);
        metadata.insert(
            "service_version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        metadata.insert("batch_size".to_owned(), self.reading.batch_size.to_string());
        metadata.insert(
            "attempts".to_owned(),
            self.call
                .attempts
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        );
        metadata.insert(
            "unreachable_tables".to_owned(),
            self.plan
                .unreachable
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        metadata.insert("rejected_rows".to_owned(), found.rejected.to_string());
        // How many rows the identity matched in each table it reaches directly, and the
        // tables where one row is one person that it matched more often than allowed.
        metadata.insert(
            "identity_rows".to_owned(),
            found
                .identity_rows
                .iter()
                .map(|(table, rows, _)| format!("{table}={rows}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        let shared: Vec<&str> = found
            .identity_rows
            .iter()
            .filter(|(_, rows, guarded)| *guarded && *rows > self.reading.max_identity_rows)
            .map(|(table, _, _)| table.as_str())
            .collect();
        if !shared.is_empty() {
            metadata.insert("shared_identity".to_owned(), shared.join(","));
        }
        // An empty answer says so: no table held a row for this subject (rows left out under
        // reject_row are rows held, so they count as found).
        metadata.insert(
            "subject_found".to_owned(),
            (row_count > 0 || found.rejected > 0).to_string(),
        );
        metadata.insert(
            "identity_normalization".to_owned(),
            self.reading.normalization.clone(),
        );
        for (category, n) in &found.rejected_by {
            metadata.insert(format!("rejected.{category}"), n.to_string());
        }
        metadata.insert(
            "json_scan_violations".to_owned(),
            found.json_violations.to_string(),
        );
        if !found.truncated.is_empty() {
            metadata.insert("pii_fields_truncated".to_owned(), found.truncated.join(","));
        }
        if !self.reading.warnings.is_empty() {
            metadata.insert(
                "schema_warnings".to_owned(),
                self.reading.warnings.join("; "),
            );
        }
        if self.params.dry_run {
            metadata.insert("dry_run".to_owned(), "true".to_owned());
        }
        let fields = pii_fields(&self.plan)
            .into_iter()
            .chain(found.fields.iter().map(|(path, _)| path.clone()));
        pb::Manifest {
            subject_id: self.call.subject_id.clone(),
            pii_fields: manifest::normalize_pii_fields(fields),
            extraction_timestamp: Some(snapshot_at),
            row_count,
            metadata,
            compliance_tag: Some(self.params.compliance_tag.clone())
                .filter(|tag| !tag.trim().is_empty()),
            extraction_id: extraction_id.to_owned(),
            source: self.params.source.clone(),
            request_id: self.params.request_id.clone(),
            tables,
            started_at: Some(prost_types::Timestamp::from(started_at)),
            finished_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            subject_kind: self.params.kind.clone(),
            identities: self.asking.named(),
        }
    }

    /// Makes the call's first record durable: that it started, and for whom.
    async fn record_start(&self) -> Result<(), ExtractError> {
        let entry = crate::records::audit::Entry {
            outcome: "started".into(),
            ..self.call.entry.clone()
        };
        self.call
            .records
            .record(&self.metrics, entry)
            .await
            .map_err(ExtractError::AuditUnavailable)
    }

    /// Waits until at most `keep` of the call's dead letters are in flight, oldest first. A
    /// letter that could not be made durable fails the call: the manifest would otherwise
    /// leave rows out with no record of them.
    pub(super) async fn letters_heard(&self, keep: usize) -> Result<(), ExtractError> {
        loop {
            let oldest = {
                let mut letters = self.call.letters.lock().unwrap_or_else(|e| e.into_inner());
                if letters.len() <= keep {
                    return Ok(());
                }
                letters.pop_front()
            };
            if let Some(pending) = oldest {
                self.call
                    .records
                    .letter_heard(&self.metrics, pending)
                    .await?;
            }
        }
    }

    /// Makes the manifest's audit record durable. Only then may the manifest leave: if the
    /// record cannot be written, the call fails and no manifest is sent.
    pub(super) async fn record_manifest(
        &self,
        manifest: &pb::Manifest,
    ) -> Result<(), ExtractError> {
        if self.params.dry_run {
            // A dry run's manifest answers a Validate call, which the API layer records.
            return Ok(());
        }
        let entry = crate::records::audit::Entry {
            extraction_id: manifest.extraction_id.clone(),
            outcome: "ok".into(),
            status: "OK".into(),
            snapshot_at: manifest
                .extraction_timestamp
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_default(),
            tables: manifest
                .tables
                .iter()
                .map(|t| crate::records::audit::TableEntry {
                    table: t.table.clone(),
                    rows: t.row_count,
                    verified: t.verified,
                    ..Default::default()
                })
                .collect(),
            row_count: manifest.row_count,
            manifest_sha256: crate::records::audit::message_sha256(manifest),
            ..self.call.entry.clone()
        };
        self.call.records.record(&self.metrics, entry).await?;
        self.call
            .audited
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Sends one row batch, and counts it.
    pub(super) async fn send_batch(
        &self,
        table: &str,
        batch: EncodedBatch,
    ) -> Result<(), ExtractError> {
        let labels = crate::observability::metrics::table_labels(&self.params.source, table);
        self.metrics
            .rows
            .get_or_create(&labels)
            .inc_by(batch.row_count() as u64);
        self.metrics.batches.get_or_create(&labels).inc();
        self.metrics
            .bytes
            .get_or_create(&labels)
            .inc_by(batch.batch_len() as u64);
        if !self
            .outbox
            .first_batch_sent
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.metrics
                .first_batch
                .get_or_create(&crate::observability::metrics::source_labels(
                    &self.params.source,
                ))
                .observe(self.outbox.created.elapsed().as_secs_f64());
        }
        self.deliver(ExtractFrame::Batch(batch), true).await
    }

    /// Sends the `started` event, unless an earlier attempt did: a retry runs the same plan
    /// under the same extraction id.
    pub(super) async fn send_started(
        &self,
        started: pb::ExtractionStarted,
    ) -> Result<(), ExtractError> {
        if self
            .outbox
            .started_sent
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        self.send(Event::Started(started)).await
    }

    /// The data categories of the planned columns, each with its description.
    pub(super) fn category_descriptions(&self) -> Vec<pb::CategoryDescription> {
        let names: std::collections::BTreeSet<&str> = self
            .plan
            .tables
            .iter()
            .flat_map(|t| t.table.columns.iter().map(|c| c.category.as_str()))
            .collect();
        names
            .into_iter()
            .map(|name| pb::CategoryDescription {
                name: name.to_owned(),
                description: self
                    .reading
                    .matrix
                    .describe(name)
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect()
    }

    /// Whether part of the snapshot's data (a batch, a table's completion, the manifest) has
    /// left for the client.
    pub(super) fn sent_data(&self) -> bool {
        self.outbox
            .sent_data
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one event, waiting for room in the channel (backpressure), at most the stall
    /// timeout. The event is size-checked first, so that a client never meets a message it
    /// cannot receive. Batches, cut by bytes as they fill, go through [`Self::send_batch`].
    pub(super) async fn send(&self, event: Event) -> Result<(), ExtractError> {
        let data = !matches!(event, Event::Started(_));
        let what = match &event {
            Event::Batch(_) => Some("batch"),
            Event::Started(_) => Some("started"),
            Event::TableStarted(_) => Some("table_started"),
            Event::TableCompleted(_) => Some("table_completed"),
            Event::Manifest(_) => Some("manifest"),
        };
        let message = ExtractResponse { event: Some(event) };
        if let Some(what) = what {
            let bytes = message.encoded_len();
            if bytes > MAX_MESSAGE_BYTES {
                return Err(ExtractError::MessageTooLarge {
                    what,
                    bytes,
                    limit: MAX_MESSAGE_BYTES,
                });
            }
        }
        self.deliver(ExtractFrame::Message(message), data).await
    }

    /// Puts a frame in the channel, waiting for room (backpressure) at most the stall timeout.
    async fn deliver(&self, frame: ExtractFrame, data: bool) -> Result<(), ExtractError> {
        match tokio::time::timeout(self.reading.stall_timeout, self.outbox.tx.send(frame)).await {
            Ok(Ok(())) => {
                if data {
                    self.outbox
                        .sent_data
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            }
            Ok(Err(_)) => Err(ExtractError::ClientGone),
            Err(_) => Err(ExtractError::Stalled(self.reading.stall_timeout)),
        }
    }
}
