//! Records, one concern: where calls are recorded and how the records are kept.
//!
//! - [`appender`]: append-only records with group commit, into a file or a database;
//! - [`audit`]: the hash-chained audit log, one durable record per call, and its check;
//! - [`deadletter`]: the dead-letter queue of rejected rows and failed calls;
//! - [`control`]: the PostgreSQL control database that replicas share for their records;
//! - [`refusals`]: refused calls, counted and written as one record per caller and interval.
//!
//! [`Records`] is what the engine holds: the audit log and the dead-letter queue together.
//! This room knows nothing of the engine or of gRPC: a failed call arrives as a [`Failure`],
//! already named. It may import config, observability and the store's PostgreSQL helpers.

pub mod appender;
pub mod audit;
pub mod control;
pub mod deadletter;
pub mod refusals;

use appender::Pending;
use audit::{AuditError, AuditLog, Entry};
use deadletter::{DeadLetter, DeadLetters};

use crate::observability::metrics::Metrics;

/// The stores a call is recorded in.
#[derive(Clone)]
pub struct Records {
    pub log: Option<AuditLog>,
    pub dead_letters: Option<DeadLetters>,
}

/// A failed call, as its records name it.
pub struct Failure {
    /// The gRPC status name the caller received.
    pub status: &'static str,
    /// The error's stable kind.
    pub error: &'static str,
    /// The error's message (no personal data by construction).
    pub detail: String,
    /// The dead-letter category, when the failure is the service's or the data's (not the
    /// caller's).
    pub dead_letter: Option<&'static str>,
    /// The record's outcome: `failed`, or `unknown` for an erasure whose COMMIT's outcome the
    /// source could not say.
    pub outcome: &'static str,
}

impl Records {
    /// Opens the stores the server's config names (a file, or the control database that
    /// replicas share), with errors that name the config key.
    pub async fn open(server: &crate::config::ServerConfig) -> anyhow::Result<Records> {
        let control = match &server.control {
            Some(cfg) => Some(control::Control::new(cfg).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let audit_log = match &server.audit {
            Some(audit) => {
                let key = audit
                    .key
                    .as_ref()
                    .map(|k| secrecy::ExposeSecret::expose_secret(k).clone())
                    .unwrap_or_default();
                let replica = audit.replica_name();
                let log = match (audit.store, &audit.path, &control) {
                    (crate::config::StoreKind::Control, _, Some(control)) => {
                        audit::AuditLog::open_control(control, &key, &replica).await?
                    }
                    (_, Some(path), _) => audit::AuditLog::open_segmented(
                        path,
                        &key,
                        &replica,
                        appender::Segments {
                            max_bytes: audit.segment_bytes,
                            max_age: audit.segment_age,
                            retention: None,
                        },
                    )?,
                    _ => anyhow::bail!("server.audit: no store to open (check-config names why)"),
                };
                tracing::info!(log = %log.name(), %replica, "audit log open");
                Some(log)
            }
            None => {
                tracing::warn!(
                    "no [server.audit] configured: calls are not recorded in an audit log"
                );
                None
            }
        };
        let dead_letters = match &server.dead_letters {
            Some(queue) => Some(match (queue.store, &queue.path, &control) {
                (crate::config::StoreKind::Control, _, Some(control)) => {
                    deadletter::DeadLetters::open_control(control)
                        .await
                        .map_err(|e| anyhow::anyhow!("server.dead_letters: {e}"))?
                }
                (_, Some(path), _) => deadletter::DeadLetters::open_segmented(
                    path,
                    appender::Segments {
                        max_bytes: queue.segment_bytes,
                        max_age: queue.segment_age,
                        retention: queue.retention,
                    },
                )
                .map_err(|e| {
                    anyhow::anyhow!("server.dead_letters.path: {}: {e}", path.display())
                })?,
                _ => {
                    anyhow::bail!("server.dead_letters: no store to open (check-config names why)")
                }
            }),
            None => None,
        };
        Ok(Records {
            log: audit_log,
            dead_letters,
        })
    }

    /// Appends an audit record and waits until it is durable.
    pub async fn record(&self, metrics: &Metrics, entry: Entry) -> Result<(), AuditError> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        match log.append(entry).await {
            Ok(_) => Ok(()),
            Err(error) => {
                metrics.audit_failures.inc();
                Err(error)
            }
        }
    }

    /// Records a call that failed: its audit record, and a dead letter when the failure is
    /// the service's or the data's (not the caller's). A record that cannot be written is
    /// logged and counted.
    pub async fn failed(&self, metrics: &Metrics, entry: Entry, failure: Failure) {
        if let Some(category) = failure.dead_letter
            && !entry.dry_run
            && let Ok(Some(pending)) = self.dead_letter(
                metrics,
                DeadLetter {
                    category: category.into(),
                    source: entry.source.clone(),
                    rule: failure.error.into(),
                    detail: clip(&failure.detail, 512),
                    rpc: entry.rpc.clone(),
                    request_id: entry.request_id.clone(),
                    call_id: entry.call_id.clone(),
                    extraction_id: entry.extraction_id.clone(),
                    subject_id: entry.subject_id.clone(),
                    ..Default::default()
                },
            )
        {
            // The failed call's letter is durable before its status leaves.
            let _ = self.letter_heard(metrics, pending).await;
        }
        let entry = Entry {
            outcome: failure.outcome.into(),
            status: failure.status.into(),
            error: failure.error.into(),
            ..entry
        };
        if let Err(e) = self.record(metrics, entry).await {
            tracing::error!(error = %e, "a failed call could not be recorded in the audit log");
        }
    }

    /// Queues a dead letter, counts it by category, and returns what says when it is durable
    /// (None without a queue). The caller waits for it before it answers
    /// ([`Records::letter_heard`]). A letter the queue cannot take (full: the writer is
    /// behind) is an error, never dropped: the call it belongs to must not answer as if
    /// nothing had been left out.
    pub fn dead_letter(
        &self,
        metrics: &Metrics,
        letter: DeadLetter,
    ) -> Result<Option<Pending>, String> {
        metrics
            .dead_letters
            .get_or_create(&vec![("category".to_owned(), letter.category.clone())])
            .inc();
        let Some(queue) = self.dead_letters.as_ref() else {
            return Ok(None);
        };
        queue.append_pending(letter).map(Some).inspect_err(|error| {
            metrics.dead_letter_failures.inc();
            tracing::error!(%error, "a dead letter could not be queued");
        })
    }

    /// Waits for a queued dead letter. A letter that could not be made durable is counted
    /// and logged, and its error returned: the call it belongs to must not answer as if
    /// nothing had been left out.
    pub async fn letter_heard(&self, metrics: &Metrics, pending: Pending) -> Result<(), String> {
        let Some(queue) = &self.dead_letters else {
            return Ok(());
        };
        queue.heard(pending).await.inspect_err(|error| {
            metrics.dead_letter_failures.inc();
            tracing::error!(%error, "a dead letter could not be made durable");
        })
    }

    /// Waits until every record and letter queued so far was written or failed (at
    /// shutdown).
    pub async fn flush(&self) {
        if let Some(log) = &self.log {
            log.flush().await;
        }
        if let Some(queue) = &self.dead_letters {
            queue.flush().await;
        }
    }
}

/// `text`, cut to at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
