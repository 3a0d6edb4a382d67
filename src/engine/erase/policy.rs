//! From a plan and the data map's policies to the steps of one erasure: what each reached
//! table's rows get, checked so that erasure fails closed.

use crate::config::erasure::{ColumnErasure, EraseAction, MaskMethod};
use crate::config::{QualifiedName, SourceConfig};
use crate::schema::{ColumnType, Plan, PlannedTable};
use crate::store::catalog::KeyAction;

use super::ErasureRefusal;

/// One table of an erasure: its planned queries and what happens to its rows.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub planned: PlannedTable,
    pub action: EraseAction,
    /// For `mask`: each masked column and how.
    pub masks: Vec<(String, MaskMethod)>,
    /// For `mask`: each scanned JSON column whose personal paths are masked in place, and how.
    pub json_masks: Vec<(String, MaskMethod)>,
    /// For `mask`: each retained column and why.
    pub retained: Vec<(String, String)>,
    /// For `retain`: why the rows are kept.
    pub reason: String,
}

impl Step {
    /// Whether the step changes rows.
    pub fn changes(&self) -> bool {
        self.action != EraseAction::Retain
    }
}

/// The steps of an erasure by `plan` on `source`, in plan order. Refuses a reached table
/// without a policy, and a mask that its column's type cannot hold.
pub(super) fn steps(plan: &Plan, source: &SourceConfig) -> Result<Vec<Step>, ErasureRefusal> {
    plan.tables
        .iter()
        .map(|planned| {
            let display = &planned.table.display;
            let policy = source
                .tables
                .iter()
                .find(|t| {
                    QualifiedName::parse(&t.name)
                        .map(|q| q.display_name())
                        .as_ref()
                        == Some(display)
                })
                .and_then(|t| t.erase.as_ref())
                .ok_or_else(|| ErasureRefusal::NoPolicy {
                    table: display.clone(),
                })?;
            let mut step = Step {
                planned: planned.clone(),
                action: policy.action,
                masks: Vec::new(),
                json_masks: Vec::new(),
                retained: Vec::new(),
                reason: policy.reason.clone().unwrap_or_default(),
            };
            for (column, how) in &policy.mask {
                match how {
                    ColumnErasure::Retain { retain } => {
                        step.retained.push((column.clone(), retain.clone()));
                    }
                    ColumnErasure::Json { json: method } => {
                        let mapped = live_column(planned, column)?;
                        if mapped.column_type != ColumnType::Json {
                            return Err(ErasureRefusal::Policy {
                                table: display.clone(),
                                column: column.clone(),
                                detail: format!(
                                    "{{ json = ... }} masks inside JSON documents, and the column \
                                     is {}",
                                    mapped.type_name
                                ),
                            });
                        }
                        step.json_masks.push((column.clone(), *method));
                    }
                    ColumnErasure::Mask(method) => {
                        let mapped = live_column(planned, column)?;
                        if *method != MaskMethod::Null && !mapped.is_text() {
                            return Err(ErasureRefusal::Policy {
                                table: display.clone(),
                                column: column.clone(),
                                detail: format!(
                                    "mask \"{}\" writes text, and the column is {}; use \"null\", \
                                     or delete the rows",
                                    method.name(),
                                    mapped.type_name
                                ),
                            });
                        }
                        step.masks.push((column.clone(), *method));
                    }
                }
            }
            if step.action == EraseAction::Mask
                && step.masks.is_empty()
                && step.json_masks.is_empty()
            {
                return Err(ErasureRefusal::Policy {
                    table: display.clone(),
                    column: String::new(),
                    detail: "a mask policy that masks no column changes nothing; use retain".into(),
                });
            }
            if step.action != EraseAction::Retain && !planned.table.base_table {
                // A view's rows are another table's; a foreign table's DELETE runs on another
                // server, even in a preview that this one rolls back.
                return Err(ErasureRefusal::Policy {
                    table: display.clone(),
                    column: String::new(),
                    detail: "it is a view, a materialised view or a foreign table, whose rows \
                             this erasure cannot change within its own transaction; map the \
                             table that holds the rows, or { action = \"retain\", reason = \
                             \"...\" }"
                        .into(),
                });
            }
            if step.action == EraseAction::Mask && planned.table.spans_relations {
                // Masked rows are captured by row id, which names a row only within one
                // relation: a partition's row could be taken for another partition's.
                return Err(ErasureRefusal::Policy {
                    table: display.clone(),
                    column: String::new(),
                    detail: "its rows live in several relations (partitions or inheritance \
                             children), and masking them is not supported yet; use delete or \
                             retain"
                        .into(),
                });
            }
            Ok(step)
        })
        .collect()
}

/// A column of a planned table, as the live catalog has it.
pub(super) fn live_column<'p>(
    planned: &'p PlannedTable,
    column: &str,
) -> Result<&'p crate::schema::MappedColumn, ErasureRefusal> {
    planned
        .table
        .columns
        .iter()
        .find(|c| c.name == column)
        .ok_or_else(|| ErasureRefusal::Policy {
            table: planned.table.display.clone(),
            column: column.to_owned(),
            detail: "the column is not in the live table".into(),
        })
}

/// A foreign key that points at a table of the erasure, as the catalog has it.
#[derive(Debug, Clone)]
pub(super) struct ForeignKey {
    pub constraint: String,
    /// The referencing table, as `schema.table` (`public.` left out, as callers see names).
    pub child: String,
    /// The referenced table, likewise.
    pub parent: String,
    pub on_delete: KeyAction,
    pub on_update: KeyAction,
    /// The referenced columns of the parent.
    pub parent_columns: Vec<String>,
    /// The key's columns in the child, in key order, with the parent's they match.
    pub pairs: Vec<(String, String)>,
    /// The referencing table.
    pub child_name: QualifiedName,
}

impl ForeignKey {
    pub fn of(key: crate::store::catalog::ForeignKey) -> ForeignKey {
        ForeignKey {
            child: key.child.display_name(),
            child_name: key.child.clone(),
            parent: key.parent.display_name(),
            parent_columns: key.parent_columns().cloned().collect(),
            constraint: key.constraint,
            on_delete: key.on_delete,
            on_update: key.on_update,
            pairs: key.pairs,
        }
    }

    pub fn on_delete_name(&self) -> &'static str {
        self.on_delete.on_delete()
    }

    /// Whether deleting a parent row changes rows of the child by itself.
    pub fn acts_on_delete(&self) -> bool {
        self.on_delete.acts()
    }

    pub fn on_update_name(&self) -> &'static str {
        self.on_update.on_update()
    }

    /// Whether changing a referenced column of a parent row changes rows of the child by
    /// itself.
    pub fn acts_on_update(&self) -> bool {
        self.on_update.acts()
    }
}

/// Refuses a foreign key that would carry a deletion, or the masking of a referenced column,
/// into a table the data map does not name: a cascade must never erase silently.
pub(super) fn check_cascades(
    steps: &[Step],
    mapped: &[String],
    keys: &[ForeignKey],
) -> Result<(), ErasureRefusal> {
    for key in keys.iter().filter(|k| !mapped.contains(&k.child)) {
        let Some(step) = steps.iter().find(|s| s.planned.table.display == key.parent) else {
            continue;
        };
        // A masked referenced column is an UPDATE of the key.
        let masks_key = step.action == EraseAction::Mask
            && step
                .masks
                .iter()
                .chain(&step.json_masks)
                .any(|(column, _)| key.parent_columns.contains(column));
        let rule = match step.action {
            EraseAction::Delete if key.acts_on_delete() => key.on_delete_name(),
            EraseAction::Mask if masks_key && key.acts_on_update() => key.on_update_name(),
            _ => continue,
        };
        return Err(ErasureRefusal::UndeclaredCascade {
            table: key.parent.clone(),
            child: key.child.clone(),
            constraint: key.constraint.clone(),
            rule,
        });
    }
    Ok(())
}

/// The order in which the steps change rows: a table whose rows reference another table's
/// comes before it (children first), so that no foreign key is broken on the way; among
/// tables that no key orders, the farthest from the identity first.
pub(super) fn order(steps: &[Step], keys: &[ForeignKey]) -> Vec<usize> {
    let changing: Vec<usize> = (0..steps.len())
        .rev()
        .filter(|i| steps[*i].changes())
        .collect();
    let name = |i: usize| &steps[i].planned.table.display;
    // Edges child -> parent among the changing tables (a self-reference orders nothing).
    let edges: Vec<(usize, usize)> = keys
        .iter()
        .filter(|k| k.child != k.parent)
        .filter_map(|k| {
            let child = changing.iter().copied().find(|i| *name(*i) == k.child)?;
            let parent = changing.iter().copied().find(|i| *name(*i) == k.parent)?;
            Some((child, parent))
        })
        .collect();
    let mut done: Vec<usize> = Vec::new();
    let mut left = changing;
    while !left.is_empty() {
        // The first table left that no remaining table references.
        let next = left
            .iter()
            .position(|t| {
                !edges
                    .iter()
                    .any(|(child, parent)| parent == t && left.contains(child) && child != t)
            })
            // A cycle of keys: take the tables in the fallback order; the database's deferred
            // or cascading keys decide.
            .unwrap_or(0);
        done.push(left.remove(next));
    }
    done
}
