//! Steps changed by their plan's own condition, in their turn, in one pass, as a
//! hand-written DELETE or UPDATE would be: allowed only where that takes exactly the rows the
//! plan found before anything changed. Every other step is changed by the row ids captured
//! before anything changed ([`super::run`]).
//!
//! A step is direct when its plan reads no table that a step before it changes (so the plan
//! sees what it saw at the start), no foreign key acts by itself from it, and its rows live
//! in one relation; a mask also needs no JSON pages and no lookup (whose guards read captured
//! ids), and the catalog's proof below. A plan names each table it reads as `from` names its
//! own: quoted, so one name is never part of another.

use tracing::Instrument;

use super::ids::{Captured, captured};
use super::policy::{ForeignKey, Step};
use super::{ErasureRefusal, Run};
use crate::config::erasure::EraseAction;
use crate::engine::ExtractError;

/// Which rows a masking UPDATE changes.
#[derive(Clone, Copy)]
pub(super) enum RowsOf<'a> {
    /// The rows captured before anything changed.
    Captured(&'a Captured),
    /// The rows the plan finds now (a direct step): the condition takes the identity as $1.
    Plan,
}

/// How a deleted table is verified: by its captured ids (none left), by its plan run again
/// right after its DELETE (it finds none), or by the catalog's proof that its DELETE kept no
/// row back ([`Run::nothing_keeps_rows_back`]).
pub(super) enum DeleteCheck<'a> {
    Captured(&'a Captured),
    Recount,
    Proven,
}

impl Run<'_> {
    /// The steps that may be changed by their plan (see the module's rules), before the
    /// catalog's proof.
    pub(super) fn direct_candidates(&self, order: &[usize], keys: &[ForeignKey]) -> Vec<bool> {
        let mut direct = vec![false; self.steps.len()];
        let mut changed: Vec<&str> = Vec::new();
        for &i in order {
            let step = &self.steps[i];
            let planned = &step.planned;
            let display = &planned.table.display;
            let acts = keys
                .iter()
                .filter(|k| &k.parent == display)
                .any(|k| match step.action {
                    EraseAction::Delete => k.acts_on_delete(),
                    _ => {
                        k.acts_on_update()
                            && step
                                .masks
                                .iter()
                                .any(|(column, _)| k.parent_columns.contains(column))
                    }
                });
            let reads_changed = changed
                .iter()
                .any(|t| planned.branches.iter().any(|b| b.contains(t)));
            direct[i] = !acts
                && !reads_changed
                && !planned.table.spans_relations
                && match step.action {
                    EraseAction::Delete => true,
                    EraseAction::Mask => {
                        step.json_masks.is_empty() && planned.lookup_branches.is_empty()
                    }
                    EraseAction::Retain => false,
                };
            if step.changes() {
                changed.push(planned.from.trim_end_matches(" AS t0"));
            }
        }
        direct
    }

    /// For each candidate, whether the catalog shows nothing that could keep back a row its
    /// statement finds: no enabled BEFORE row trigger for its DELETE or UPDATE (which may
    /// return NULL), no rule for it, no row security. Then the statement changes every row
    /// its condition matches. Read in this transaction.
    pub(super) async fn nothing_keeps_rows_back(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        candidates: &[bool],
    ) -> Result<Vec<bool>, ExtractError> {
        let mut proven = vec![false; candidates.len()];
        let which: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i]).collect();
        if which.is_empty() {
            return Ok(proven);
        }
        // pg_trigger.tgtype: ROW 1, BEFORE 2, DELETE 8, UPDATE 16; pg_rewrite.ev_type: UPDATE
        // '2', DELETE '4'.
        let (mut names, mut bits, mut events) = (Vec::new(), Vec::new(), Vec::new());
        for &i in &which {
            let delete = self.steps[i].action == EraseAction::Delete;
            names.push(self.steps[i].planned.table.quoted());
            bits.push(if delete { 11i32 } else { 19 });
            events.push(if delete { "4" } else { "2" });
        }
        let rows = txn
            .query(
                "SELECT n.k, NOT (c.relrowsecurity \
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid \
                     AND NOT t.tgisinternal AND t.tgenabled <> 'D' \
                     AND (t.tgtype::int & n.bits) = n.bits) \
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid \
                     AND r.ev_type::text = n.ev)) \
                 FROM unnest($1::text[], $2::int[], $3::text[]) WITH ORDINALITY \
                   AS n(name, bits, ev, k) \
                 JOIN pg_catalog.pg_class c ON c.oid = n.name::regclass",
                &[&names, &bits, &events],
            )
            .await
            .map_err(|e| self.db(&e, None))?;
        for row in rows {
            let k: i64 = row.get(0);
            if let Some(&i) = usize::try_from(k - 1).ok().and_then(|k| which.get(k)) {
                proven[i] = row.get(1);
            }
        }
        Ok(proven)
    }

    /// A condition on `t0` selecting the rows of step `i`: its captured ids, or its plan's
    /// paths (each row once: several paths read the row ids of the plan's UNION ALL).
    pub(super) fn rows_condition(&self, i: usize, step: &Step, rows: RowsOf<'_>) -> String {
        match rows {
            RowsOf::Captured(ids) => ids.condition(&captured(i)),
            RowsOf::Plan => {
                let from = &step.planned.from;
                match step.planned.branches.as_slice() {
                    [only] => format!("({only})"),
                    branches => format!(
                        "t0.ctid = ANY(ARRAY({}))",
                        branches
                            .iter()
                            .map(|w| format!("SELECT t0.ctid FROM {from} WHERE {w}"))
                            .collect::<Vec<_>>()
                            .join(" UNION ALL ")
                    ),
                }
            }
        }
    }

    /// Deletes the rows of a direct delete step by its plan. Unless the catalog proved that
    /// nothing keeps a row back (`proven`), the plan is run again at once, while what it
    /// reads is still as it was, and must find none.
    pub(super) async fn delete_direct(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        i: usize,
        step: &Step,
        proven: bool,
    ) -> Result<u64, ExtractError> {
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            step.planned.from,
            self.rows_condition(i, step, RowsOf::Plan)
        );
        let table = step.planned.table.display.as_str();
        let deleted = txn
            .execute(&sql, &[&self.value])
            .instrument(self.query_span("DELETE", step, &sql))
            .await
            .map_err(|e| self.db(&e, Some(table)))?;
        if !proven {
            let found: i64 = txn
                .query_one(&step.planned.count_sql, &[&self.value])
                .await
                .map_err(|e| self.db(&e, Some(table)))?
                .get(0);
            if found != 0 {
                return Err(ErasureRefusal::Unverified {
                    table: table.to_owned(),
                    detail: format!("{found} rows of the subject still found by the plan"),
                }
                .into());
            }
        }
        Ok(deleted)
    }
}
