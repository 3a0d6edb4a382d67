//! One erasure's transaction, written once for every store: counts and captures, guards,
//! changes children first, the verification ([`super::verify`]), the record before COMMIT
//! and the receipt ([`super::receipt`]).

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use tracing::Instrument;

use super::direct::DeleteCheck;
use super::policy::{self, ForeignKey, Step};
use super::receipt::Done;
use super::{ErasureRefusal, Run};
use crate::config::erasure::{EraseAction, MaskMethod};
use crate::engine::ExtractError;
use crate::pb;
use crate::store::erase::{
    Captured, CommitError, Distinct, Erase, EraseError, EraseOptions, EraseTxn, MaskValue, Rows,
    Target,
};

/// The most bytes of distinct values one pseudonym column of one subject may hold.
const MAX_PSEUDONYM_BYTES: usize = 16 * 1024 * 1024;

impl Run<'_> {
    /// Resolves when the erasure must stop before it commits.
    pub(super) async fn stop_signal(&self) -> ExtractError {
        crate::engine::error::Stop::first(
            self.params.stop.cancelled(),
            self.params.deadline,
            &self.engine.shutdown,
        )
        .await
        .into_error()
    }

    /// Step `i` as the store changes it.
    pub(super) fn target(&self, i: usize) -> Target<'_> {
        let planned = &self.steps[i].planned;
        Target {
            slot: i,
            name: &planned.table.name,
            display: &planned.table.display,
            from: &planned.from,
            branches: &planned.branches,
            count_sql: &planned.count_sql,
        }
    }

    /// One attempt on `store`: the transaction, verified, recorded and committed (or rolled
    /// back for a preview). A transaction that did not end cleanly leaves its connection
    /// unused.
    pub(super) async fn attempt_on<S: Erase>(
        &self,
        store: &S,
        attempt: u32,
    ) -> Result<pb::ErasureReceipt, ExtractError> {
        self.attempt_in(store, attempt).await.map_err(|error| {
            crate::engine::error::deadline_cut(error, S::limit_fired, self.params.deadline)
        })
    }

    async fn attempt_in<S: Erase>(
        &self,
        store: &S,
        attempt: u32,
    ) -> Result<pb::ErasureReceipt, ExtractError> {
        let began = SystemTime::now();
        let mut txn = store
            .begin_erasure(EraseOptions {
                lock_timeout: self.cfg.erasure.lock_timeout,
                deadline: self.params.deadline,
                value: &self.value,
                database: &self.cfg.database,
            })
            .await
            .map_err(|e| self.db(e))?;
        let prepared = tokio::select! {
            done = self.prepare(&mut txn) => Ok(done),
            stop = self.stop_signal() => Err(stop),
        };
        let done = match prepared {
            Ok(Ok(done)) => done,
            // Dropping the transaction rolls it back; its connection is not reused.
            Ok(Err(error)) => return Err(error),
            Err(stop) => {
                // The statement in flight may still run on the server: stopped there.
                txn.abandon().await;
                return Err(stop);
            }
        };
        let mut receipt = self.receipt(&done, attempt);
        if self.params.dry_run {
            txn.rollback().await;
            self.earlier(&mut receipt).await;
            self.finish(&mut receipt);
            let recorded = self.record_done(&receipt, "ok", began, "").await;
            return recorded.map(|()| receipt);
        }
        // The transaction's id, to ask the store what became of it should the connection be
        // lost while COMMIT is in flight.
        let xid = txn.transaction_id().await.map_err(|e| self.db(e))?;
        let transaction = xid.clone().unwrap_or_default();
        // Durable before COMMIT: an erasure is never committed without a record naming it.
        let mut erasing = self.entry_for(&receipt, "erasing", began);
        erasing.status = String::new();
        erasing.transaction = transaction.clone();
        // The record's write races the client and the deadline, as every statement before it
        // did: row locks are held, and a caller told DEADLINE_EXCEEDED must not see the
        // erasure commit after. Dropping the transaction rolls it back.
        let recorded = tokio::select! {
            recorded = self.engine.records.record(&self.engine.metrics, erasing) => recorded,
            stop = self.stop_signal() => return Err(stop),
        };
        recorded?;
        // Once more, with nothing left to wait for: the last moment to stop is before COMMIT.
        tokio::select! {
            biased;
            stop = self.stop_signal() => return Err(stop),
            () = std::future::ready(()) => {}
        }
        match txn.commit().await {
            Ok(()) => Ok(self.committed(store, receipt, began, &transaction).await),
            Err(CommitError::Refused(error)) => Err(self.db(error)),
            Err(CommitError::Lost(error)) => {
                let outcome = match &xid {
                    Some(xid) => store.commit_outcome(xid, self.params.deadline).await,
                    None => None,
                };
                match outcome {
                    // Committed after all: the erasure is done, and answered as such.
                    Some(true) => {
                        tracing::warn!(source = %self.cfg.name, erasure_id = %self.erasure_id,
                            "the connection was lost during COMMIT, and the erasure committed");
                        Ok(self.committed(store, receipt, began, &transaction).await)
                    }
                    // Rolled back: nothing changed, and the erasure may run again.
                    Some(false) => Err(error.into()),
                    None => Err(ErasureRefusal::CommitOutcomeUnknown { transaction }.into()),
                }
            }
        }
    }

    /// The end of a committed erasure: the receipt completed, counted and recorded.
    async fn committed<S: Erase>(
        &self,
        store: &S,
        mut receipt: pb::ErasureReceipt,
        began: SystemTime,
        transaction: &str,
    ) -> pb::ErasureReceipt {
        receipt.committed_at = Some(prost_types::Timestamp::from(SystemTime::now()));
        self.earlier(&mut receipt).await;
        let settled = self.settle(store, &mut receipt).await;
        self.finish(&mut receipt);
        for (action, rows) in [
            ("delete", receipt.rows_deleted),
            ("mask", receipt.rows_masked),
        ] {
            self.engine
                .metrics
                .erased_rows
                .get_or_create(&vec![
                    ("source".to_owned(), self.cfg.name.clone()),
                    ("action".to_owned(), action.to_owned()),
                ])
                .inc_by(rows);
        }
        if let Err(error) = self.record_done(&receipt, "ok", began, transaction).await {
            // The erasure committed and its record before COMMIT is durable; the receipt is
            // still the caller's, and the missing completion record is counted and logged.
            tracing::error!(source = %self.cfg.name, erasure_id = %self.erasure_id, %error,
                "the completion record of a committed erasure could not be written");
        }
        if let Some(settled) = settled
            && let Err(error) = self.record_settled(&receipt, began, settled).await
        {
            tracing::error!(source = %self.cfg.name, erasure_id = %self.erasure_id, %error,
                "the record settling an earlier erasure could not be written");
        }
        receipt
    }

    /// Everything before COMMIT: keys, capture, guards, changes and verification.
    async fn prepare<T: EraseTxn>(&self, txn: &mut T) -> Result<Vec<Done>, ExtractError> {
        self.lock_identity_rows(txn).await?;
        self.check_live_columns(txn).await?;
        let keys = self.foreign_keys(txn).await?;
        policy::check_cascades(&self.steps, &self.mapped, &keys)?;
        let order = policy::order(&self.steps, &keys);
        let candidates = if txn.direct_changes() {
            self.direct_candidates(&order, &keys)
        } else {
            vec![false; self.steps.len()]
        };
        let proven = self.nothing_keeps_rows_back(txn, &candidates).await?;
        // A mask is direct only when proven; a delete either way (checked by a recount).
        let direct: Vec<bool> = (0..self.steps.len())
            .map(|i| candidates[i] && (proven[i] || self.steps[i].action == EraseAction::Delete))
            .collect();

        // The subject's rows of every table, before anything changes: a table the erasure
        // changes has them captured (by row id or key), and is changed and verified by those
        // alone, whatever the other steps changed first; a retained table's are counted. A
        // direct step (`direct.rs`) is counted by its own DELETE or UPDATE, in its turn, when
        // nothing it reads has changed yet.
        let mut counted = vec![0u64; self.steps.len()];
        let mut captures = vec![Captured::default(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            if direct[i] {
                continue;
            }
            if !step.changes() {
                counted[i] = txn
                    .count(&step.planned.count_sql)
                    .await
                    .map_err(|e| self.db(e))?;
                continue;
            }
            // Sorted for the JSON pages, which read them in order.
            captures[i] = txn
                .capture(self.target(i), !step.json_masks.is_empty())
                .await
                .map_err(|e| self.db(e))?;
            counted[i] = captures[i].rows();
        }
        self.check_guards(txn).await?;
        self.check_unshared(txn, &keys, &captures).await?;
        self.check_mapped_cascades(txn, &keys, &captures).await?;

        let mut done = Vec::new();
        let mut masked_ids = vec![Captured::default(); self.steps.len()];
        for &i in &order {
            let step = &self.steps[i];
            // A hook span per table: what the policy does there and to how many rows.
            let hook = tracing::info_span!(
                "compliance.erase",
                dsr.table = %step.planned.table.display,
                dsr.action = step.action.name(),
                dsr.rows.counted = tracing::field::Empty,
                dsr.rows.changed = tracing::field::Empty,
            );
            let changed = async {
                match step.action {
                    EraseAction::Delete if direct[i] => self.delete_direct(txn, i, proven[i]).await,
                    EraseAction::Delete => txn
                        .delete(self.target(i), Rows::Captured(&captures[i]))
                        .await
                        .map_err(|e| self.db(e)),
                    EraseAction::Mask => {
                        let rows = if direct[i] {
                            Rows::Plan
                        } else {
                            Rows::Captured(&captures[i])
                        };
                        masked_ids[i] = self.mask(txn, i, step, rows).await?;
                        Ok(masked_ids[i].rows())
                    }
                    EraseAction::Retain => Ok(counted[i]),
                }
            }
            .instrument(hook.clone())
            .await?;
            if direct[i] {
                counted[i] = changed;
            }
            hook.record("dsr.rows.counted", counted[i]);
            hook.record("dsr.rows.changed", changed);
            if changed != counted[i] {
                return Err(ErasureRefusal::CountChanged {
                    table: step.planned.table.display.clone(),
                    action: step.action.name(),
                    counted: counted[i],
                    changed,
                }
                .into());
            }
            done.push(Done {
                step: i,
                rows: changed,
            });
        }
        // What the preview showed, against what this transaction did (rolled back on any
        // difference: nothing is committed).
        if !self.params.dry_run && !self.params.preview_digest.is_empty() {
            let Some(expires) = super::receipt::sent_expiry(&self.params.preview_digest) else {
                return Err(ErasureRefusal::PreviewChanged.into());
            };
            if super::receipt::unix_now() > expires {
                return Err(ErasureRefusal::PreviewExpired { expires }.into());
            }
            if self.params.preview_digest != self.digest(&counted, expires) {
                return Err(ErasureRefusal::PreviewChanged.into());
            }
        }

        for (i, step) in self.steps.iter().enumerate() {
            if !step.changes() {
                tracing::info_span!(
                    "compliance.erase",
                    dsr.table = %step.planned.table.display,
                    dsr.action = step.action.name(),
                    dsr.rows.counted = counted[i],
                    dsr.rows.changed = 0,
                )
                .in_scope(|| {});
                done.push(Done {
                    step: i,
                    rows: counted[i],
                });
            }
            let hook = tracing::info_span!(
                "compliance.erase_verify",
                dsr.table = %step.planned.table.display,
                dsr.action = step.action.name(),
                dsr.ok = tracing::field::Empty,
            );
            let deleted = match (direct[i], proven[i]) {
                (false, _) => DeleteCheck::Captured(&captures[i]),
                (true, false) => DeleteCheck::Recount,
                (true, true) => DeleteCheck::Proven,
            };
            let verified = self
                .verify(txn, i, step, deleted, &masked_ids[i])
                .instrument(hook.clone())
                .await;
            hook.record("dsr.ok", verified.is_ok());
            verified?;
        }
        Ok(done)
    }

    /// Locks the rows the identity matches directly (`FOR UPDATE`), as the transaction's first
    /// statement. A row written for the subject while the erasure runs (an order whose
    /// foreign key checks the customer's row) then waits for it, and fails once the customer
    /// is gone, instead of surviving a verified erasure. A table with no key to a locked row
    /// can still gain a row after the snapshot: docs/status.md says so.
    async fn lock_identity_rows<T: EraseTxn>(&self, txn: &mut T) -> Result<(), ExtractError> {
        // The steps are the plan's tables, in plan order.
        for (i, planned) in self.plan.tables.iter().enumerate() {
            for branch in &planned.branches[..planned.identity_branches] {
                txn.lock(self.target(i), branch)
                    .await
                    .map_err(|e| match e {
                        // The first statement to bind the identity: a value that does not convert
                        // to an identity column's type is the caller's mistake, as for Extract.
                        // Only the code is passed on: a failed cast's message quotes it.
                        EraseError::Integrity {
                            data: true, code, ..
                        } => ExtractError::InvalidArgument(format!(
                            "subject.value: not a valid value of identity kind '{}' for table '{}' \
                         (SQLSTATE {code})",
                            self.params.kind, planned.table.display
                        )),
                        e => self.db(e),
                    })?;
            }
        }
        Ok(())
    }

    /// Refuses, before anything changes, an identity that matches more rows than
    /// `max_identity_rows` in a table where one row is one person, and a subject whose rows
    /// break the reach rule (a hub reached by lookup, a followed key shared by a second
    /// row): the plan's two counting queries.
    async fn check_guards<T: EraseTxn>(&self, txn: &mut T) -> Result<(), ExtractError> {
        if let Some(sql) = &self.plan.identity_rows_sql {
            let row = txn.integers(sql).await.map_err(|e| self.db(e))?;
            let at = |i: usize| row.get(i).copied().unwrap_or_default();
            let rows = crate::engine::identity_rows(&self.plan, at);
            if let Some(refusal) = crate::engine::shared_identity(&rows, self.cfg.max_identity_rows)
            {
                return Err(refusal);
            }
        }
        if let Some(sql) = &self.plan.reach_guard_sql {
            let row = txn.integers(sql).await.map_err(|e| self.db(e))?;
            if let Some(refusal) = self
                .plan
                .reach_refusal(|i| row.get(i).copied().unwrap_or_default())
            {
                return Err(refusal.into());
            }
        }
        Ok(())
    }

    /// Masks `rows` of step `i` as its policy says, and returns the masked rows.
    async fn mask<T: EraseTxn>(
        &self,
        txn: &mut T,
        i: usize,
        step: &Step,
        rows: Rows<'_>,
    ) -> Result<Captured, ExtractError> {
        let mut sets = Vec::new();
        for (column, method) in &step.masks {
            let value = match method {
                MaskMethod::Null => MaskValue::Null,
                MaskMethod::Redact => MaskValue::Text(self.cfg.erasure.redaction.clone()),
                MaskMethod::Pseudonym => self.pseudonyms(txn, i, column, rows).await?,
            };
            sets.push((column.clone(), value));
        }
        if !step.json_masks.is_empty() {
            // Never direct (`direct.rs`): the pages are read by captured rows.
            return self.mask_json_pages(txn, i, step, &sets).await;
        }
        txn.mask(self.target(i), rows, &sets)
            .await
            .map_err(|e| self.db(e))
    }

    /// The distinct values of a pseudonym column in `rows` of step `i`, and their tokens.
    async fn pseudonyms<T: EraseTxn>(
        &self,
        txn: &mut T,
        i: usize,
        column: &str,
        rows: Rows<'_>,
    ) -> Result<MaskValue, ExtractError> {
        let table = self.steps[i].planned.table.display.as_str();
        let key =
            self.cfg
                .erasure
                .pseudonym_key
                .as_ref()
                .ok_or_else(|| ErasureRefusal::Policy {
                    table: table.to_owned(),
                    column: column.to_owned(),
                    detail: "a pseudonym mask needs the source's erasure.pseudonym_key_env".into(),
                })?;
        let found = txn
            .distinct_values(self.target(i), rows, column, MAX_PSEUDONYM_BYTES as u64)
            .await
            .map_err(|e| self.db(e))?;
        let values = match found {
            Distinct::Values(values) => values,
            Distinct::TooLarge(bytes) => {
                return Err(ErasureRefusal::Policy {
                    table: table.to_owned(),
                    column: column.to_owned(),
                    detail: format!(
                        "the subject's distinct values hold {bytes} bytes, above \
                         {MAX_PSEUDONYM_BYTES}; delete the rows or mask with null"
                    ),
                }
                .into());
            }
        };
        let tokens = values
            .iter()
            .map(|v| pseudonym(key.expose_secret(), v))
            .collect();
        Ok(MaskValue::Tokens { values, tokens })
    }

    /// Every foreign key of the database that points at a table of this erasure.
    async fn foreign_keys<T: EraseTxn>(
        &self,
        txn: &mut T,
    ) -> Result<Vec<ForeignKey>, ExtractError> {
        let keys = txn
            .foreign_keys()
            .await
            .map_err(|e| self.db(e))?
            .into_iter()
            .map(ForeignKey::of)
            .filter(|k| {
                self.steps
                    .iter()
                    .any(|s| s.planned.table.display == k.parent)
            })
            .collect();
        Ok(keys)
    }

    /// An error of the store in this erasure: an integrity or data error names what it broke
    /// (a constraint, a column's limits), never a value.
    pub(super) fn db(&self, error: EraseError) -> ExtractError {
        match error {
            EraseError::Db(error) => error.into(),
            EraseError::Integrity {
                table,
                what,
                code,
                foreign_key,
                ..
            } => ErasureRefusal::Constraint {
                table: table.unwrap_or_default(),
                what,
                code,
                foreign_key,
            }
            .into(),
            EraseError::Unsupported {
                table,
                column,
                detail,
            } => ErasureRefusal::Policy {
                table,
                column,
                detail,
            }
            .into(),
        }
    }
}

/// A keyed pseudonym of a value: the first 128 bits of HMAC-SHA256(key, value), as 32 hex
/// digits. The same value masks to the same token under one key.
pub(super) fn pseudonym(key: &[u8], value: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value);
    hex::encode(&mac.finalize().into_bytes()[..16])
}
