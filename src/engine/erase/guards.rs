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

use tokio_postgres::types::ToSql;

use super::ids::{Captured, captured, in_ids};
use super::policy::{ForeignKey, Step};
use super::{ErasureRefusal, Run};
use crate::config::erasure::EraseAction;
use crate::engine::ExtractError;
use crate::schema::quote_ident;

/// A key's (child column, parent column) pairs, in key order.
type KeyPairs = Vec<(String, String)>;

impl Run<'_> {
    /// Refuses to mask a table with a live column the data map does not list: a kept row
    /// would keep whatever it holds (a `cc_email` added a second ago, or left unmapped under
    /// `unmapped_columns = "warn"`). Read from the catalog in this transaction, never from
    /// the schema gate's cache.
    pub(super) async fn check_live_columns(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), ExtractError> {
        for step in self.steps.iter().filter(|s| s.action == EraseAction::Mask) {
            let table = &step.planned.table;
            let live = txn
                .query(
                    "SELECT attname::text FROM pg_catalog.pg_attribute \
                     WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
                     ORDER BY attnum",
                    &[&table.quoted()],
                )
                .await
                .map_err(|e| self.db(&e, Some(&table.display)))?;
            for row in live {
                let column: String = row.get(0);
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
    pub(super) async fn check_unshared(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        keys: &[ForeignKey],
        captures: &[Captured],
    ) -> Result<(), ExtractError> {
        for (i, step) in self.steps.iter().enumerate() {
            let planned = &step.planned;
            if step.action != EraseAction::Mask || planned.lookup_branches.is_empty() {
                continue;
            }
            let table = &planned.table.display;
            // (child as callers name it, child in SQL, key pairs)
            let mut pointers: Vec<(String, String, KeyPairs)> = keys
                .iter()
                .filter(|k| &k.parent == table && !k.pairs.is_empty())
                .map(|k| (k.child.clone(), k.child_sql.clone(), k.pairs.clone()))
                .collect();
            for l in &planned.lookup_branches {
                let pairs = vec![(l.column.clone(), l.key.clone())];
                if !pointers
                    .iter()
                    .any(|(c, _, p)| *c == l.child && *p == pairs)
                {
                    let child_sql = self
                        .planned(&l.child)
                        .map(|t| t.table.quoted())
                        .unwrap_or_default();
                    pointers.push((l.child.clone(), child_sql, pairs));
                }
            }
            let parents = self.captured_rows(i, step, captures);
            for (child, child_sql, pairs) in pointers {
                // The subject's own rows of the referencing table do not count.
                let own = self
                    .planned(&child)
                    .map(|t| t.branches.as_slice())
                    .unwrap_or_default();
                let rows = self
                    .rows_pointing_at(txn, table, &child_sql, &pairs, &parents, own)
                    .await?;
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

    /// Queries selecting `{}` of the captured rows of step `i`, one per relation.
    fn captured_rows(&self, i: usize, step: &Step, captures: &[Captured]) -> Vec<String> {
        captures[i]
            .rels
            .iter()
            .map(|&(rel, _)| {
                format!(
                    "SELECT {{}} FROM {} WHERE {}",
                    step.planned.from,
                    in_ids(&captured(i), rel)
                )
            })
            .collect()
    }

    /// The planned table of this erasure named `display`, if the plan reaches it.
    fn planned(&self, display: &str) -> Option<&crate::schema::PlannedTable> {
        self.plan.tables.iter().find(|t| t.table.display == display)
    }

    /// How many rows of `child_sql` point, through `pairs` (child column, parent column), at
    /// a row that `parents` select (queries on the parent at `t0` whose select list is `{}`),
    /// leaving out the rows that any of `own` (branches on the child at `t0`) selects.
    async fn rows_pointing_at(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        table: &str,
        child_sql: &str,
        pairs: &[(String, String)],
        parents: &[String],
        own: &[String],
    ) -> Result<u64, ExtractError> {
        let join = |side: fn(&(String, String)) -> &String| {
            pairs
                .iter()
                .map(|pair| format!("t0.{}", quote_ident(side(pair))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (columns, targets) = (join(|p| &p.0), join(|p| &p.1));
        let parent_keys = parents
            .iter()
            .map(|p| p.replace("{}", &targets))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let not_own: String = own
            .iter()
            .map(|b| format!(" AND ({b}) IS NOT TRUE"))
            .collect();
        let sql = format!(
            "WITH p AS ({parent_keys}) SELECT count(*) FROM {child_sql} AS t0 \
             WHERE ({columns}) IN (SELECT * FROM p){not_own}"
        );
        // Branches compare the identity; a query without one takes no parameter.
        let params: &[&(dyn ToSql + Sync)] = if sql.contains("$1") {
            &[&self.value]
        } else {
            &[]
        };
        let rows: i64 = txn
            .query_one(&sql, params)
            .await
            .map_err(|e| self.db(&e, Some(table)))?
            .get(0);
        Ok(rows.max(0) as u64)
    }

    /// Refuses an erasure whose deletes or masked keys would make a foreign key change a row
    /// of a mapped table that this erasure does not delete itself.
    pub(super) async fn check_mapped_cascades(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
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
                let (rule, parents) = match step.action {
                    // The rows this step changes, one query per relation that holds them.
                    EraseAction::Delete if key.acts_on_delete() => {
                        (key.on_delete_name(), self.captured_rows(i, step, captures))
                    }
                    EraseAction::Mask if masks_key && key.acts_on_update() => {
                        (key.on_update_name(), self.captured_rows(i, step, captures))
                    }
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
                let rows = self
                    .rows_pointing_at(txn, table, &key.child_sql, &key.pairs, &parents, own)
                    .await?;
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
