//! What an erasure says of itself: the receipt (per table, in the order the tables changed),
//! the preview's digest, the audit entries before and after COMMIT, the pointer to an
//! earlier erasure when nothing was left, and the settling of an earlier erasure whose
//! COMMIT's outcome was unknown.

use std::time::SystemTime;

use prost::Message;
use sha2::{Digest, Sha256};

use super::Run;
use crate::config::erasure::EraseAction;
use crate::engine::ExtractError;
use crate::pb;
use crate::records::audit::{Entry, TableEntry, UnsettledErasure};
use crate::store::erase::Erase;

/// One table of an erasure, as done (or, in a preview, as it would be done).
#[derive(Debug, Clone)]
pub(super) struct Done {
    pub(super) step: usize,
    pub(super) rows: u64,
}

impl Run<'_> {
    /// The receipt of what was done, in the order it was done, without its digest.
    pub(super) fn receipt(&self, done: &[Done], attempts: u32) -> pb::ErasureReceipt {
        let mut counted = vec![0u64; self.steps.len()];
        for d in done {
            counted[d.step] = d.rows;
        }
        let tables: Vec<pb::TableErasure> = done
            .iter()
            .map(|d| {
                let step = &self.steps[d.step];
                pb::TableErasure {
                    table: step.planned.table.display.clone(),
                    action: match step.action {
                        EraseAction::Delete => pb::ErasureAction::Delete,
                        EraseAction::Mask => pb::ErasureAction::Mask,
                        EraseAction::Retain => pb::ErasureAction::Retain,
                    } as i32,
                    rows: d.rows,
                    masked_columns: step
                        .masks
                        .iter()
                        .map(|(c, m)| format!("{c}:{}", m.name()))
                        .chain(
                            step.json_masks
                                .iter()
                                .map(|(c, m)| format!("{c}:json:{}", m.name())),
                        )
                        .collect(),
                    retained_columns: step
                        .retained
                        .iter()
                        .map(|(c, why)| format!("{c}: {why}"))
                        .collect(),
                    retain_reason: step.reason.clone(),
                    reached_via: step.planned.reached_via.clone(),
                    verified: true,
                }
            })
            .collect();
        let sum = |action: pb::ErasureAction| {
            tables
                .iter()
                .filter(|t| t.action == action as i32)
                .map(|t| t.rows)
                .sum()
        };
        pb::ErasureReceipt {
            erasure_id: self.erasure_id.clone(),
            subject_id: self.subject_id.clone(),
            source: self.cfg.name.clone(),
            request_id: self.params.request_id.clone(),
            compliance_tag: (!self.params.compliance_tag.is_empty())
                .then(|| self.params.compliance_tag.clone()),
            dry_run: self.params.dry_run,
            rows_deleted: sum(pb::ErasureAction::Delete),
            rows_masked: sum(pb::ErasureAction::Mask),
            rows_retained: sum(pb::ErasureAction::Retain),
            tables,
            preview_digest: self.digest(&counted, self.digest_expiry()),
            committed_at: None,
            attempts,
            receipt_sha256: String::new(),
            matching: self.cfg.erasure.matching.name().to_owned(),
            ..Default::default()
        }
    }

    /// An audit-log lookup, given up when the call's deadline passes.
    async fn by_deadline<T>(
        &self,
        lookup: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        match self.params.deadline {
            Some(at) => tokio::time::timeout_at(at, lookup)
                .await
                .unwrap_or_else(|_| Err("the call's deadline passed".into())),
            None => lookup.await,
        }
    }

    /// When the erasure found nothing to change: points the receipt to the latest erasure of
    /// the subject that did, if the audit log holds one. Looked for within the call's
    /// deadline; a log that cannot be read leaves the pointer out, and says so in the log.
    pub(super) async fn earlier(&self, receipt: &mut pb::ErasureReceipt) {
        let Some(log) = &self.engine.records.records.log else {
            return;
        };
        if receipt.rows_deleted + receipt.rows_masked > 0 {
            return;
        }
        let lookup = log.latest_erasure(&self.entry.source, &self.subject_id);
        let found = self.by_deadline(lookup).await;
        match found {
            Ok(Some(earlier)) => {
                receipt.earlier_erasure_id = earlier.erasure_id;
                receipt.earlier_request_id = earlier.request_id;
                receipt.earlier_recorded_at =
                    chrono::DateTime::parse_from_rfc3339(&earlier.recorded_at)
                        .ok()
                        .map(|t| prost_types::Timestamp::from(SystemTime::from(t)));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(source = %self.cfg.name, erasure_id = %self.erasure_id, %error,
                    "the audit log could not be searched for an earlier erasure");
            }
        }
    }

    /// Seals the receipt with its digest.
    /// Settles the latest earlier erasure of this subject in this source whose COMMIT's
    /// outcome was unknown, once this one has committed: what became of it, as the source
    /// says (`committed`, `rolled_back`) or, where it cannot, as this erasure found the rows:
    /// `nothing_left` (this erasure, which locked every row it found, had nothing to change:
    /// the earlier one's changes were in place) or `rows_left` (this erasure changed them).
    /// Named in the receipt; the caller records it after the completion record.
    pub(super) async fn settle<S: Erase>(
        &self,
        store: &S,
        receipt: &mut pb::ErasureReceipt,
    ) -> Option<(UnsettledErasure, &'static str)> {
        let log = self.engine.records.records.log.as_ref()?;
        let lookup = log.unsettled_erasure(&self.entry.source, &self.subject_id);
        let found = self.by_deadline(lookup).await;
        let earlier = match found {
            Ok(Some(earlier)) => earlier,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(source = %self.cfg.name, erasure_id = %self.erasure_id, %error,
                    "the audit log could not be searched for an unsettled erasure");
                return None;
            }
        };
        let said = match earlier.transaction.as_str() {
            "" => None,
            xid => store.commit_outcome(xid, self.params.deadline).await,
        };
        let settlement = match said {
            Some(true) => "committed",
            Some(false) => "rolled_back",
            None if receipt.rows_deleted + receipt.rows_masked == 0 => "nothing_left",
            None => "rows_left",
        };
        receipt.settled_erasure_id = earlier.erasure_id.clone();
        receipt.settled_as = settlement.to_owned();
        Some((earlier, settlement))
    }

    /// The `settled` record of an earlier erasure, written after this one's completion record.
    pub(super) async fn record_settled(
        &self,
        receipt: &pb::ErasureReceipt,
        began: SystemTime,
        (earlier, settlement): (UnsettledErasure, &'static str),
    ) -> Result<(), ExtractError> {
        let mut entry = self.entry_for(receipt, "settled", began);
        entry.transaction = earlier.transaction;
        entry.settles = earlier.erasure_id;
        entry.settlement = settlement.to_owned();
        self.engine
            .records
            .record(&self.engine.metrics, entry)
            .await
            .map_err(ExtractError::from)
    }

    pub(super) fn finish(&self, receipt: &mut pb::ErasureReceipt) {
        receipt.receipt_sha256.clear();
        receipt.receipt_sha256 = hex::encode(Sha256::digest(receipt.encode_to_vec()));
    }

    pub(super) fn entry_for(
        &self,
        receipt: &pb::ErasureReceipt,
        outcome: &str,
        began: SystemTime,
    ) -> Entry {
        Entry {
            outcome: outcome.to_owned(),
            status: "OK".to_owned(),
            snapshot_at: chrono::DateTime::<chrono::Utc>::from(began)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            tables: receipt
                .tables
                .iter()
                .map(|t| TableEntry {
                    table: t.table.clone(),
                    rows: t.rows,
                    verified: t.verified,
                    action: match pb::ErasureAction::try_from(t.action) {
                        Ok(pb::ErasureAction::Delete) => "delete",
                        Ok(pb::ErasureAction::Mask) => "mask",
                        Ok(pb::ErasureAction::Retain) => "retain",
                        _ => "",
                    }
                    .to_owned(),
                    reason: t.retain_reason.clone(),
                })
                .collect(),
            row_count: receipt.rows_deleted + receipt.rows_masked,
            manifest_sha256: receipt.receipt_sha256.clone(),
            ..self.entry.clone()
        }
    }

    /// Records the end of an erasure; `transaction` is the committed transaction's id (empty
    /// for a preview).
    pub(super) async fn record_done(
        &self,
        receipt: &pb::ErasureReceipt,
        outcome: &str,
        began: SystemTime,
        transaction: &str,
    ) -> Result<(), ExtractError> {
        let mut entry = self.entry_for(receipt, outcome, began);
        entry.transaction = transaction.to_owned();
        self.engine
            .records
            .record(&self.engine.metrics, entry)
            .await
            .map_err(ExtractError::from)
    }
}

impl Run<'_> {
    /// The digest of what this erasure does, valid until `expires` (seconds since 1970),
    /// written `<expires>.<hex>`: the source, the subject, the value as it is matched (keyed,
    /// so that under exact matching `Alice@Example.com` is not `alice@example.com`), how it
    /// is matched, and per table the action, the rows counted, each path the plan reads it
    /// by, each mask and each reason. A changed policy, data map, subject or count gives
    /// another digest.
    pub(super) fn digest(&self, counted: &[u64], expires: u64) -> String {
        let key = self.engine.config.subject_key();
        let mut hash = Sha256::new();
        hash.update(b"dsr-erase-preview-v3\n");
        hash.update(format!(
            "{}\n{}\n{}\n{}\n{expires}\n",
            self.cfg.name,
            self.subject_id,
            crate::subject::subject_id(key, &self.params.kind, &self.value),
            self.cfg.erasure.matching.name(),
        ));
        for (step, rows) in self.steps.iter().zip(counted) {
            hash.update(format!(
                "{}\t{}\t{rows}\t{}\n",
                step.planned.table.display,
                step.action.name(),
                step.reason
            ));
            // How the map reaches the table (its references, identities and matching, as
            // the plan's SQL has them): a data map changed since the preview is another
            // digest even where the counts agree.
            for branch in &step.planned.branches {
                hash.update(format!("\tpath\t{branch}\n"));
            }
            for (column, method) in step.masks.iter().chain(&step.json_masks) {
                hash.update(format!("\tmask\t{column}\t{}\n", method.name()));
            }
            for (column, why) in &step.retained {
                hash.update(format!("\tretain\t{column}\t{why}\n"));
            }
        }
        format!("{expires}.{}", hex::encode(hash.finalize()))
    }

    /// When the digest of this call expires: the one the caller sent, or a new one a
    /// `preview_valid_for` from now.
    pub(super) fn digest_expiry(&self) -> u64 {
        sent_expiry(&self.params.preview_digest)
            .unwrap_or_else(|| unix_now() + self.cfg.erasure.preview_valid_for.as_secs().max(1))
    }
}

/// The expiry of a digest as sent, `<expires>.<hex>`.
pub(super) fn sent_expiry(digest: &str) -> Option<u64> {
    digest.split_once('.')?.0.parse().ok()
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
