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

use super::policy::ForeignKey;
use super::{ErasureRefusal, Run};
use crate::config::erasure::EraseAction;
use crate::engine::ExtractError;
use crate::store::erase::{Captured, EraseTxn, Rows};

/// How a deleted table is verified: by its captured rows (none left), by its plan run again
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
    /// statement finds: no trigger that may skip a row, no rule, no row security. Then the
    /// statement changes every row its condition matches. Read in this transaction.
    pub(super) async fn nothing_keeps_rows_back<T: EraseTxn>(
        &self,
        txn: &mut T,
        candidates: &[bool],
    ) -> Result<Vec<bool>, ExtractError> {
        let mut proven = vec![false; candidates.len()];
        let which: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i]).collect();
        if which.is_empty() {
            return Ok(proven);
        }
        let tables: Vec<_> = which
            .iter()
            .map(|&i| {
                let step = &self.steps[i];
                (&step.planned.table.name, step.action == EraseAction::Delete)
            })
            .collect();
        let found = txn.unconditional(&tables).await.map_err(|e| self.db(e))?;
        for (&i, ok) in which.iter().zip(found) {
            proven[i] = ok;
        }
        Ok(proven)
    }

    /// Deletes the rows of direct delete step `i` by its plan. Unless the catalog proved that
    /// nothing keeps a row back (`proven`), the plan is run again at once, while what it
    /// reads is still as it was, and must find none.
    pub(super) async fn delete_direct<T: EraseTxn>(
        &self,
        txn: &mut T,
        i: usize,
        proven: bool,
    ) -> Result<u64, ExtractError> {
        let target = self.target(i);
        let deleted = txn
            .delete(target, Rows::Plan)
            .await
            .map_err(|e| self.db(e))?;
        if !proven {
            let found = txn.count(target.count_sql).await.map_err(|e| self.db(e))?;
            if found != 0 {
                return Err(ErasureRefusal::Unverified {
                    table: target.display.to_owned(),
                    detail: format!("{found} rows of the subject still found by the plan"),
                }
                .into());
            }
        }
        Ok(deleted)
    }
}
