//! What an erasure checks in its own transaction before anything changes, beyond the plan's
//! guards: that a masked table has no live column the map does not list, and that no
//! foreign key acts by itself on a row the erasure does not delete.
//!
//! Keys act by themselves when the erasure changes a row they point at (`ON DELETE CASCADE |
//! SET NULL | SET DEFAULT`, `ON UPDATE` of a masked key). PostgreSQL's DELETE count leaves out
//! what a cascade takes, so neither the count check nor the verification would see another
//! person's reply deleted with the subject's comment, or a retained invoice deleted with its
//! customer. A count in the same transaction proves that every row such a key would change
//! in a mapped table is one this erasure deletes itself; otherwise the erasure is refused and
//! nothing changes. (A key from a table outside the map is refused without counting:
//! [`super::policy::check_cascades`].)

use super::policy::ForeignKey;
use super::{ErasureRefusal, Run};
use crate::config::QualifiedName;
use crate::config::erasure::EraseAction;
use crate::engine::ExtractError;
use crate::store::erase::{Captured, EraseTxn};

/// A key's (child column, parent column) pairs, in key order.
type KeyPairs = Vec<(String, String)>;

impl Run<'_> {
    /// Refuses to mask a table with a live column the data map does not list: a kept row
    /// would keep whatever it holds (a `cc_email` added a second ago, or left unmapped under
    /// `unmapped_columns = "warn"`). Read from the catalog in this transaction, never from
    /// the schema gate's cache.
    pub(super) async fn check_live_columns<T: EraseTxn>(
        &self,
        txn: &mut T,
    ) -> Result<(), ExtractError> {
        for step in self.steps.iter().filter(|s| s.action == EraseAction::Mask) {
            let table = &step.planned.table;
            let live = txn
                .live_columns(&table.name)
                .await
                .map_err(|e| self.db(e))?;
            for column in live {
                if !table.columns.iter().any(|c| c.name == column) {
                    return Err(ErasureRefusal::Policy {
                        table: table.display.clone(),
                        column,
                        detail: "the live table has this column and the data map does not: a \
                                 masked row would keep whatever it holds; map and classify it, \
                                 then erase"
                            .into(),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Refuses to mask a row reached by lookup that a row not the subject's also points at
    /// (a household's shared address): the captured rows of each masked table reached by
    /// lookup, against every foreign key into it and every mapped lookup, in this transaction.
    pub(super) async fn check_unshared<T: EraseTxn>(
        &self,
        txn: &mut T,
        keys: &[ForeignKey],
        captures: &[Captured],
    ) -> Result<(), ExtractError> {
        for (i, step) in self.steps.iter().enumerate() {
            let planned = &step.planned;
            if step.action != EraseAction::Mask || planned.lookup_branches.is_empty() {
                continue;
            }
            let table = &planned.table.display;
            // (child as callers name it, the child, key pairs)
            let mut pointers: Vec<(String, QualifiedName, KeyPairs)> = keys
                .iter()
                .filter(|k| &k.parent == table && !k.pairs.is_empty())
                .map(|k| (k.child.clone(), k.child_name.clone(), k.pairs.clone()))
                .collect();
            for l in &planned.lookup_branches {
                let pairs = vec![(l.column.clone(), l.key.clone())];
                if !pointers
                    .iter()
                    .any(|(c, _, p)| *c == l.child && *p == pairs)
                {
                    let child_name = self
                        .planned(&l.child)
                        .map(|t| t.table.name.clone())
                        .ok_or_else(|| {
                            ExtractError::Internal(format!(
                                "the lookup into '{table}' from '{}' has no planned table",
                                l.child
                            ))
                        })?;
                    pointers.push((l.child.clone(), child_name, pairs));
                }
            }
            for (child, child_name, pairs) in pointers {
                // The subject's own rows of the referencing table do not count.
                let own = self
                    .planned(&child)
                    .map(|t| t.branches.as_slice())
                    .unwrap_or_default();
                let rows = txn
                    .pointing_at(self.target(i), &captures[i], &child_name, &pairs, own)
                    .await
                    .map_err(|e| self.db(e))?;
                if rows > 0 {
                    return Err(ErasureRefusal::SharedRow {
                        table: table.clone(),
                        child,
                        rows,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The planned table of this erasure named `display`, if the plan reaches it.
    fn planned(&self, display: &str) -> Option<&crate::schema::PlannedTable> {
        self.plan.tables.iter().find(|t| t.table.display == display)
    }

    /// Refuses an erasure whose deletes or masked keys would make a foreign key change a row
    /// of a mapped table that this erasure does not delete itself.
    pub(super) async fn check_mapped_cascades<T: EraseTxn>(
        &self,
        txn: &mut T,
        keys: &[ForeignKey],
        captures: &[Captured],
    ) -> Result<(), ExtractError> {
        for (i, step) in self.steps.iter().enumerate() {
            let table = &step.planned.table.display;
            for key in keys
                .iter()
                .filter(|k| &k.parent == table && !k.pairs.is_empty())
            {
                if !self.mapped.contains(&key.child) {
                    continue; // refused by the policy, whatever the rows
                }
                let masks_key = step
                    .masks
                    .iter()
                    .chain(&step.json_masks)
                    .any(|(column, _)| key.parent_columns.contains(column));
                // The rows this step changes: its captured rows.
                let rule = match step.action {
                    EraseAction::Delete if key.acts_on_delete() => key.on_delete_name(),
                    EraseAction::Mask if masks_key && key.acts_on_update() => key.on_update_name(),
                    _ => continue,
                };
                // The child's own rows that this erasure deletes do not count: they are gone
                // before the parent's rows change (children first).
                let own = self
                    .steps
                    .iter()
                    .find(|s| s.planned.table.display == key.child)
                    .filter(|s| s.action == EraseAction::Delete)
                    .map(|s| s.planned.branches.as_slice())
                    .unwrap_or_default();
                let rows = txn
                    .pointing_at(
                        self.target(i),
                        &captures[i],
                        &key.child_name,
                        &key.pairs,
                        own,
                    )
                    .await
                    .map_err(|e| self.db(e))?;
                if rows > 0 {
                    return Err(ErasureRefusal::MappedCascade {
                        table: table.clone(),
                        child: key.child.clone(),
                        constraint: key.constraint.clone(),
                        rule,
                        rows,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }
}
