//! One erasure's transaction: counts and captures, guards, changes children first, the
//! verification ([`super::verify`]), the record before COMMIT and the receipt
//! ([`super::receipt`]).

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tracing::Instrument;

use super::direct::{DeleteCheck, RowsOf};
use super::ids::{Captured, IDS, captured, in_ids};
use super::policy::{self, ForeignKey, Step};
use super::receipt::Done;
use super::{ErasureRefusal, Run};
use crate::config::erasure::{EraseAction, MaskMethod};
use crate::engine::ExtractError;
use crate::pb;
use crate::schema::quote_ident;
use crate::store::postgres::{Conn, DbError};

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

    /// One attempt: the transaction, verified, recorded and committed (or rolled back for a
    /// preview). A connection that did not end cleanly is discarded.
    pub(super) async fn attempt(
        &self,
        mut conn: Conn,
        attempt: u32,
    ) -> Result<pb::ErasureReceipt, ExtractError> {
        let cancel = conn.client.cancel_token();
        let (result, clean) = self.transaction(&mut conn.client, &cancel, attempt).await;
        if !clean {
            conn.mark_broken();
        }
        result
    }

    /// The transaction of one attempt, and whether the connection ended it cleanly.
    async fn transaction(
        &self,
        client: &mut tokio_postgres::Client,
        cancel: &tokio_postgres::CancelToken,
        attempt: u32,
    ) -> (Result<pb::ErasureReceipt, ExtractError>, bool) {
        let began = SystemTime::now();
        let txn = match client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
        {
            Ok(txn) => txn,
            Err(e) => return (Err(self.db(&e, None)), false),
        };
        let prepared = tokio::select! {
            done = self.prepare(&txn) => Ok(done),
            stop = self.stop_signal() => Err(stop),
        };
        let done = match prepared {
            Ok(Ok(done)) => done,
            // Dropping the transaction rolls it back; the connection is discarded all the same.
            Ok(Err(error)) => return (Err(error), false),
            Err(stop) => {
                // The statement in flight may still run on the server: cancel it there.
                drop(txn);
                if let Ok(pool) = self.source.postgres("erasure")
                    && let Err(e) = cancel.cancel_query(pool.cancel_tls()).await
                {
                    tracing::warn!(source = %self.cfg.name,
                        error = %crate::store::postgres::describe(&e), "cancel request failed");
                }
                return (Err(stop), false);
            }
        };
        let mut receipt = self.receipt(&done, attempt);
        if self.params.dry_run {
            let clean = txn.rollback().await.is_ok();
            self.earlier(&mut receipt).await;
            self.finish(&mut receipt);
            let recorded = self.record_done(&receipt, "ok", began, "").await;
            return (recorded.map(|()| receipt), clean);
        }
        // The transaction's id, to ask PostgreSQL what became of it should the connection be
        // lost while COMMIT is in flight.
        let xid: Option<String> = match txn
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await
        {
            Ok(row) => row.get(0),
            Err(e) => return (Err(self.db(&e, None)), false),
        };
        // Durable before COMMIT: an erasure is never committed without a record naming it.
        let mut erasing = self.entry_for(&receipt, "erasing", began);
        erasing.status = String::new();
        erasing.transaction = xid.clone().unwrap_or_default();
        // The record's write races the client and the deadline, as every statement before it
        // did: row locks are held, and a caller told DEADLINE_EXCEEDED must not see the
        // erasure commit after. Dropping the transaction rolls it back.
        let recorded = tokio::select! {
            recorded = self.engine.records.record(&self.engine.metrics, erasing) => recorded,
            stop = self.stop_signal() => return (Err(stop), false),
        };
        if let Err(error) = recorded {
            return (Err(error.into()), false);
        }
        // Once more, with nothing left to wait for: the last moment to stop is before COMMIT.
        tokio::select! {
            biased;
            stop = self.stop_signal() => return (Err(stop), false),
            () = std::future::ready(()) => {}
        }
        let erasing_transaction = xid.clone().unwrap_or_default();
        if let Err(error) = txn.commit().await {
            // The server said no (a deferred constraint, a serialization failure at commit):
            // nothing was committed. Anything else leaves the outcome unknown.
            let error = if error.as_db_error().is_some() {
                self.db(&error, None)
            } else {
                match self.commit_outcome(xid.as_deref()).await {
                    // Committed after all: the erasure is done, and answered as such.
                    Some(true) => {
                        tracing::warn!(source = %self.cfg.name, erasure_id = %self.erasure_id,
                            "the connection was lost during COMMIT, and the erasure committed");
                        let (done, _) = self.committed(receipt, began, &erasing_transaction).await;
                        return (done, false);
                    }
                    // Rolled back: nothing changed, and the erasure may run again.
                    Some(false) => ExtractError::Db(crate::store::postgres::DbError::from_pg(
                        &self.cfg.name,
                        &error,
                    )),
                    None => ErasureRefusal::CommitOutcomeUnknown {
                        transaction: erasing_transaction,
                    }
                    .into(),
                }
            };
            return (Err(error), false);
        }
        self.committed(receipt, began, &erasing_transaction).await
    }

    /// What became of transaction `xid` whose COMMIT lost its connection, asked on another
    /// connection: `Some(true)` committed, `Some(false)` rolled back, `None` unknown (the
    /// source does not answer, or PostgreSQL no longer knows).
    async fn commit_outcome(&self, xid: Option<&str>) -> Option<bool> {
        let xid = xid?;
        let pool = self.source.postgres("erasure").ok()?;
        let conn = pool.checkout(self.params.deadline).await.ok()?;
        let row = conn
            .client
            .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])
            .await
            .ok()?;
        match row.get::<_, Option<String>>(0).as_deref() {
            Some("committed") => Some(true),
            Some("aborted") => Some(false),
            _ => None,
        }
    }

    /// The end of a committed erasure: the receipt completed, counted and recorded.
    async fn committed(
        &self,
        mut receipt: pb::ErasureReceipt,
        began: SystemTime,
        transaction: &str,
    ) -> (Result<pb::ErasureReceipt, ExtractError>, bool) {
        receipt.committed_at = Some(prost_types::Timestamp::from(SystemTime::now()));
        self.earlier(&mut receipt).await;
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
        (Ok(receipt), true)
    }

    /// Everything before COMMIT: limits, keys, capture, guards, changes and verification.
    async fn prepare(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
    ) -> Result<Vec<Done>, ExtractError> {
        // SET takes no snapshot: the snapshot is taken by the first lock below, so that no
        // row committed between the two is missed.
        let mut limits = format!(
            "SET LOCAL lock_timeout = {}",
            self.cfg.erasure.lock_timeout.as_millis().max(1)
        );
        if let Some(deadline) = self.params.deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis();
            limits.push_str(&format!("; SET LOCAL statement_timeout = {}", left.max(1)));
        }
        txn.batch_execute(&limits)
            .await
            .map_err(|e| self.db(&e, None))?;
        self.lock_identity_rows(txn).await?;
        // The captured and masked row ids of every step, in one temporary table (made after
        // the lock above, which takes the snapshot). It stays with the connection for the
        // next erasure, emptied at every COMMIT (made again after a rollback undid it).
        txn.batch_execute(&format!(
            "SET LOCAL client_min_messages = warning; \
             CREATE TEMPORARY TABLE IF NOT EXISTS {IDS} \
             (step int, masked bool, rel oid, tids tid[]) ON COMMIT DELETE ROWS"
        ))
        .await
        .map_err(|e| self.db(&e, None))?;

        self.check_live_columns(txn).await?;
        let keys = self.foreign_keys(txn).await?;
        policy::check_cascades(&self.steps, &self.mapped, &keys)?;
        let order = policy::order(&self.steps, &keys);
        let candidates = self.direct_candidates(&order, &keys);
        let proven = self.nothing_keeps_rows_back(txn, &candidates).await?;
        // A mask is direct only when proven; a delete either way (checked by a recount).
        let direct: Vec<bool> = (0..self.steps.len())
            .map(|i| candidates[i] && (proven[i] || self.steps[i].action == EraseAction::Delete))
            .collect();

        // The subject's rows of every table, before anything changes: a table the erasure
        // changes has them captured (their row ids, per relation), and is changed and
        // verified by those ids alone, whatever the other steps changed first; a retained
        // table's are counted. A direct step (`direct.rs`) is counted by its own DELETE or
        // UPDATE, in its turn, when nothing it reads has changed yet.
        let mut counted = vec![0u64; self.steps.len()];
        let mut captures = vec![Captured::default(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            let table = step.planned.table.display.as_str();
            if direct[i] {
                continue;
            }
            if !step.changes() {
                let found: i64 = txn
                    .query_one(&step.planned.count_sql, &[&self.value])
                    .await
                    .map_err(|e| self.db(&e, Some(table)))?
                    .get(0);
                counted[i] = found.max(0) as u64;
                continue;
            }
            captures[i] = self.capture(txn, i, step).await?;
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
                    EraseAction::Delete if direct[i] => {
                        self.delete_direct(txn, i, step, proven[i]).await
                    }
                    EraseAction::Delete => self.delete(txn, i, step, &captures[i]).await,
                    EraseAction::Mask => {
                        let rows = if direct[i] {
                            RowsOf::Plan
                        } else {
                            RowsOf::Captured(&captures[i])
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
    /// can still gain a row after the snapshot: the README says so.
    async fn lock_identity_rows(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), ExtractError> {
        for planned in &self.plan.tables {
            for branch in &planned.branches[..planned.identity_branches] {
                let sql = format!(
                    "SELECT 1 FROM {} WHERE {branch} FOR UPDATE OF t0",
                    planned.from
                );
                txn.execute(&sql, &[&self.value]).await.map_err(|e| {
                    // The first statement to bind the identity: a value that does not convert
                    // to an identity column's type is the caller's mistake, as for Extract.
                    // Only the SQLSTATE is passed on: a failed cast's message quotes it.
                    match e.as_db_error().map(|d| d.code().code().to_owned()) {
                        Some(code) if code.starts_with("22") => {
                            ExtractError::InvalidArgument(format!(
                                "subject.value: not a valid value of identity kind '{}' for \
                                 table '{}' (SQLSTATE {code})",
                                self.params.kind, planned.table.display
                            ))
                        }
                        _ => self.db(&e, Some(&planned.table.display)),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Refuses, before anything changes, an identity that matches more rows than
    /// `max_identity_rows` in a table where one row is one person, and a subject whose rows
    /// break the reach rule (a hub reached by lookup, a followed key shared by a second
    /// row): the plan's two counting queries.
    async fn check_guards(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), ExtractError> {
        if let Some(sql) = &self.plan.identity_rows_sql {
            let row = txn
                .query_one(sql, &[&self.value])
                .await
                .map_err(|e| self.db(&e, None))?;
            let rows = crate::engine::identity_rows(&self.plan, |i| row.get::<_, i64>(i));
            if let Some(refusal) = crate::engine::shared_identity(&rows, self.cfg.max_identity_rows)
            {
                return Err(refusal);
            }
        }
        if let Some(sql) = &self.plan.reach_guard_sql {
            let row = txn
                .query_one(sql, &[&self.value])
                .await
                .map_err(|e| self.db(&e, None))?;
            if let Some(refusal) = self.plan.reach_refusal(|i| row.get::<_, i64>(i)) {
                return Err(refusal.into());
            }
        }
        Ok(())
    }

    /// Captures the rows of step `i` into its temporary table: per relation that holds them
    /// (the table, or each partition or inheritance child), one row of its sorted row ids.
    async fn capture(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        i: usize,
        step: &Step,
    ) -> Result<Captured, ExtractError> {
        let table = step.planned.table.display.as_str();
        let db = |e: tokio_postgres::Error| self.db(&e, Some(table));
        let select = step
            .planned
            .branches
            .iter()
            .map(|w| {
                format!(
                    "SELECT t0.tableoid AS rel, t0.ctid AS tid FROM {} WHERE {w}",
                    step.planned.from
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        // Sorted for the JSON pages, which read them in order; unsorted otherwise.
        let order = if step.json_masks.is_empty() {
            ""
        } else {
            " ORDER BY tid"
        };
        let sql = format!(
            "INSERT INTO {IDS} SELECT {i}, false, rel, array_agg(tid{order}) \
             FROM ({select}) AS s GROUP BY rel RETURNING rel, cardinality(tids)::bigint"
        );
        let rows = txn
            .query(&sql, &[&self.value])
            .instrument(self.query_span("SELECT", step, &sql))
            .await
            .map_err(db)?;
        Ok(Captured::from_rows(&rows))
    }

    /// Deletes the captured rows of step `i`, one statement per relation that holds them.
    async fn delete(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        i: usize,
        step: &Step,
        captured_ids: &Captured,
    ) -> Result<u64, ExtractError> {
        let mut deleted = 0;
        for &(rel, _) in &captured_ids.rels {
            let sql = format!(
                "DELETE FROM {} WHERE {}",
                step.planned.from,
                in_ids(&captured(i), rel)
            );
            deleted += txn
                .execute(&sql, &[])
                .instrument(self.query_span("DELETE", step, &sql))
                .await
                .map_err(|e| self.db(&e, Some(&step.planned.table.display)))?;
        }
        Ok(deleted)
    }

    /// Masks the captured rows in one UPDATE, and keeps the masked rows' new row ids (in
    /// temporary table [`masked`]) for the verification: they are returned.
    async fn mask(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        i: usize,
        step: &Step,
        rows_of: RowsOf<'_>,
    ) -> Result<Captured, ExtractError> {
        let table = step.planned.table.display.as_str();
        let db = |e: tokio_postgres::Error| self.db(&e, Some(table));
        let quoted = step.planned.table.quoted();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        // Found by the plan, the rows' condition takes the identity as $1.
        if matches!(rows_of, RowsOf::Plan) {
            params.push(Box::new(self.value.clone()));
        }
        let rows = self.rows_condition(i, step, rows_of);
        let mut sets = Vec::new();
        for (column, method) in &step.masks {
            let c = quote_ident(column);
            match method {
                MaskMethod::Null => sets.push(format!("{c} = NULL")),
                MaskMethod::Redact => {
                    params.push(Box::new(self.cfg.erasure.redaction.clone()));
                    sets.push(format!("{c} = ${}", params.len()));
                }
                MaskMethod::Pseudonym => {
                    let (values, tokens) = self
                        .pseudonyms(txn, step, column, &rows, matches!(rows_of, RowsOf::Plan))
                        .await?;
                    params.push(Box::new(values));
                    params.push(Box::new(tokens));
                    let (v, t) = (params.len() - 1, params.len());
                    sets.push(format!(
                        "{c} = (SELECT m.token FROM unnest(${v}::text[], ${t}::text[]) AS m(v, token) \
                         WHERE m.v = t0.{c}::text)"
                    ));
                }
            }
        }
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        if !step.json_masks.is_empty() {
            // Never direct (`direct.rs`): the pages are read by captured ids.
            return self.mask_json_pages(txn, i, step, sets, &refs).await;
        }
        // The new ids unsorted (only the JSON pages read them in order), of the one relation
        // a masked table's rows live in (masking is refused where they span several).
        let sql = format!(
            "WITH changed AS (UPDATE {quoted} AS t0 SET {} WHERE {rows} RETURNING t0.ctid) \
             INSERT INTO {IDS} SELECT {i}, true, '{}'::regclass::oid, array_agg(ctid) \
             FROM changed HAVING count(*) > 0 RETURNING rel, cardinality(tids)::bigint",
            sets.join(", "),
            quoted.replace('\'', "''"),
        );
        let rows = txn
            .query(&sql, &refs)
            .instrument(self.query_span("UPDATE", step, &sql))
            .await
            .map_err(db)?;
        Ok(Captured::from_rows(&rows))
    }

    /// A database client span, as OpenTelemetry's database conventions name it. The SQL
    /// holds no value: the identity and the masks are bound parameters.
    pub(super) fn query_span(&self, operation: &str, step: &Step, sql: &str) -> tracing::Span {
        tracing::info_span!(
            "db.query",
            otel.name = %format!("{operation} {}", step.planned.table.display),
            otel.kind = "client",
            db.system.name = "postgresql",
            db.namespace = %self.cfg.database,
            db.collection.name = %step.planned.table.display,
            db.operation.name = operation,
            db.query.text = %sql,
        )
    }

    /// The distinct values of a pseudonym column in the rows `rows` selects (a condition on
    /// `t0` that takes the identity as $1 when `with_identity`), and their tokens.
    async fn pseudonyms(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        step: &Step,
        column: &str,
        rows: &str,
        with_identity: bool,
    ) -> Result<(Vec<String>, Vec<String>), ExtractError> {
        let table = step.planned.table.display.as_str();
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
        let c = quote_ident(column);
        // Measured in the query: the values cross into the process only when their bytes are
        // within the bound (otherwise one row comes back, with the size and no value).
        let limit = MAX_PSEUDONYM_BYTES as i64;
        let (params, n): (Vec<&(dyn ToSql + Sync)>, usize) = if with_identity {
            (vec![&self.value, &limit], 2)
        } else {
            (vec![&limit], 1)
        };
        let rows = txn
            .query(
                &format!(
                    "WITH d AS (SELECT DISTINCT t0.{c}::text AS v FROM {} AS t0 \
                     WHERE ({rows}) AND t0.{c} IS NOT NULL), \
                     s AS (SELECT coalesce(sum(octet_length(v)), 0)::bigint AS bytes FROM d) \
                     SELECT d.v, s.bytes FROM s LEFT JOIN d ON s.bytes <= ${n}",
                    step.planned.table.quoted(),
                ),
                &params,
            )
            .await
            .map_err(|e| self.db(&e, Some(table)))?;
        let bytes: i64 = rows.first().map(|r| r.get(1)).unwrap_or(0);
        if bytes as usize > MAX_PSEUDONYM_BYTES {
            return Err(ErasureRefusal::Policy {
                table: table.to_owned(),
                column: column.to_owned(),
                detail: format!(
                    "the subject's distinct values hold {bytes} bytes, above {MAX_PSEUDONYM_BYTES}; \
                     delete the rows or mask with null"
                ),
            }
            .into());
        }
        let values: Vec<String> = rows.iter().filter_map(|r| r.get(0)).collect();
        let tokens = values
            .iter()
            .map(|v| pseudonym(key.expose_secret(), v))
            .collect();
        Ok((values, tokens))
    }

    /// Every foreign key of the database that points at a table of this erasure.
    async fn foreign_keys(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
    ) -> Result<Vec<ForeignKey>, ExtractError> {
        let keys = crate::store::postgres::read_foreign_keys(txn)
            .await
            .map_err(|e| self.db(&e, None))?
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

    /// A database error of this erasure: an integrity or data error names what it broke (a
    /// constraint, a column's limits) without the values PostgreSQL's message may quote.
    pub(super) fn db(&self, error: &tokio_postgres::Error, table: Option<&str>) -> ExtractError {
        if let Some(db) = error.as_db_error() {
            let code = db.code().code();
            if code.starts_with("23") || code.starts_with("22") {
                let what = match (db.constraint(), db.column()) {
                    (Some(constraint), _) => format!("constraint '{constraint}'"),
                    (None, Some(column)) => format!("the limits of column '{column}'"),
                    (None, None) => "a constraint or a column's limits".to_owned(),
                };
                return ErasureRefusal::Constraint {
                    table: db
                        .table()
                        .map(str::to_owned)
                        .or(table.map(str::to_owned))
                        .unwrap_or_default(),
                    what,
                    code: code.to_owned(),
                }
                .into();
            }
        }
        ExtractError::from(DbError::from_pg(&self.cfg.name, error))
    }
}

/// A keyed pseudonym of a value: the first 128 bits of HMAC-SHA256(key, value), as 32 hex
/// digits. The same value masks to the same token under one key.
pub(super) fn pseudonym(key: &[u8], value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}
