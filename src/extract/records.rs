//! Where the engine records calls: the audit log (one durable record per call) and the
//! dead-letter queue (what was left out or failed on the service's or the data's side).

use crate::audit::{AuditError, AuditLog, Entry};
use crate::deadletter::{DeadLetter, DeadLetters};
use crate::metrics::Metrics;

use super::ExtractError;

/// The stores, and how the engine's errors are named in them. The engine does not know
/// gRPC: whoever builds it says how an error becomes a status name.
#[derive(Clone)]
pub struct Records {
    pub log: Option<AuditLog>,
    pub dead_letters: Option<DeadLetters>,
    pub status_name: fn(&ExtractError) -> &'static str,
}

impl Records {
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
    pub async fn failed(&self, metrics: &Metrics, entry: Entry, error: &ExtractError) {
        if let Some(category) = error.dead_letter_category()
            && !entry.dry_run
        {
            self.dead_letter(
                metrics,
                DeadLetter {
                    category: category.into(),
                    source: entry.source.clone(),
                    rule: error.kind().into(),
                    detail: clip(&error.to_string(), 512),
                    rpc: entry.rpc.clone(),
                    request_id: entry.request_id.clone(),
                    call_id: entry.call_id.clone(),
                    extraction_id: entry.extraction_id.clone(),
                    subject_id: entry.subject_id.clone(),
                    ..Default::default()
                },
            );
        }
        let entry = Entry {
            outcome: "failed".into(),
            status: (self.status_name)(error).into(),
            error: error.kind().into(),
            ..entry
        };
        if let Err(e) = self.record(metrics, entry).await {
            tracing::error!(error = %e, "a failed call could not be recorded in the audit log");
        }
    }

    /// Queues a dead letter without waiting, and counts it by category.
    pub fn dead_letter(&self, metrics: &Metrics, letter: DeadLetter) {
        metrics
            .dead_letters
            .get_or_create(&vec![("category".to_owned(), letter.category.clone())])
            .inc();
        if let Some(queue) = &self.dead_letters {
            queue.append_nowait(letter);
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
