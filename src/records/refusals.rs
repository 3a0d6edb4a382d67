//! Refused calls, aggregated. A caller that sends bad tokens in a loop must not grow the
//! server's memory or its disk: refusals are counted per (RPC, caller, status) and written as
//! one audit record per key and interval, with its count, instead of one fsynced record per
//! refusal. Anonymous refusals (no caller could be identified) are aggregated the same way.
//! The number of keys kept between two writes is bounded; beyond it, refusals are folded into
//! one key of their status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::audit::{AuditLog, Entry};
use crate::observability::metrics::Metrics;

/// Distinct (RPC, caller, status) keys kept between two writes.
const MAX_KEYS: usize = 256;

/// The longest RPC name recorded; a path is attacker-chosen text.
const MAX_RPC_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    rpc: String,
    caller: String,
    status: String,
}

/// The refusals counted since the last write.
pub struct Refusals {
    log: Option<AuditLog>,
    metrics: Arc<Metrics>,
    pending: Mutex<BTreeMap<Key, u64>>,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").finish_non_exhaustive()
    }
}

impl Refusals {
    pub fn new(log: Option<AuditLog>, metrics: Arc<Metrics>) -> Arc<Refusals> {
        Arc::new(Refusals {
            log,
            metrics,
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts one refused call of `rpc` (the method's name, as the request said it) by
    /// `caller` ("" when unidentified) with gRPC status `status`.
    pub fn count(&self, rpc: &str, caller: &str, status: &'static str) {
        self.metrics
            .refused_calls
            .get_or_create(&vec![("code".to_owned(), status.to_owned())])
            .inc();
        let rpc = if !rpc.is_empty()
            && rpc.len() <= MAX_RPC_CHARS
            && rpc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            rpc.to_owned()
        } else {
            "[not a method name]".to_owned()
        };
        let mut key = Key {
            rpc,
            caller: caller.to_owned(),
            status: status.to_owned(),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_KEYS && !pending.contains_key(&key) {
            key.rpc = "[other]".to_owned();
            key.caller = "[other]".to_owned();
        }
        *pending.entry(key).or_default() += 1;
    }

    /// Writes one record per key counted since the last write, and waits until they are
    /// durable. A record that cannot be written is counted as an audit failure.
    pub async fn flush(&self) {
        let drained = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(log) = &self.log else {
            return;
        };
        for (key, count) in drained {
            let entry = Entry {
                rpc: key.rpc,
                caller: key.caller,
                outcome: "refused".into(),
                status: key.status,
                count,
                ..Default::default()
            };
            if let Err(error) = log.append(entry).await {
                self.metrics.audit_failures.inc();
                tracing::error!(%error, "refused calls could not be recorded in the audit log");
            }
        }
    }

    /// Writes the counted refusals every `every`, until `stop`, and once more then.
    pub fn spawn_writer(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let refusals = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => refusals.flush().await,
                    () = stop.cancelled() => break,
                }
            }
        });
    }
}
