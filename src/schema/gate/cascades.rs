//! Foreign keys into tables that erasure changes, from tables the data map does not name.

use super::TableReport;
use crate::config::erasure::{ColumnErasure, EraseAction};
use crate::config::{QualifiedName, SourceConfig};
use crate::store::catalog::ForeignKey;

/// Whether erasure changes any table of the source (deletes or masks its rows).
pub(super) fn changes_tables(source: &SourceConfig) -> bool {
    source.tables.iter().any(|t| {
        t.erase
            .as_ref()
            .is_some_and(|e| e.action != EraseAction::Retain)
    })
}

/// Warns, before anyone asks to erase, about a foreign key from a table outside the data map
/// into a table that erasure changes: one that would act on its rows (`ON DELETE CASCADE`,
/// `SET NULL`, `SET DEFAULT`, or the same `ON UPDATE` of a masked referenced column), which
/// `Erase` refuses, and one that would stop the deletion (`NO ACTION`, `RESTRICT`).
pub(super) fn check(source: &SourceConfig, keys: &[ForeignKey], reports: &mut [TableReport]) {
    // Each table that erasure changes: its action, and its masked columns.
    let changed: Vec<(String, EraseAction, Vec<&String>)> = source
        .tables
        .iter()
        .filter_map(|t| {
            let erase = t
                .erase
                .as_ref()
                .filter(|e| e.action != EraseAction::Retain)?;
            let masked = erase
                .mask
                .iter()
                .filter(|(_, how)| !matches!(how, ColumnErasure::Retain { .. }))
                .map(|(column, _)| column)
                .collect();
            Some((
                QualifiedName::parse(&t.name)?.display_name(),
                erase.action,
                masked,
            ))
        })
        .collect();
    if changed.is_empty() {
        return;
    }
    let mapped: Vec<String> = source
        .tables
        .iter()
        .filter_map(|t| QualifiedName::parse(&t.name).map(|q| q.display_name()))
        .collect();
    for key in keys {
        let child = key.child.display_name();
        let parent = key.parent.display_name();
        let Some((_, action, masked)) = changed.iter().find(|(t, _, _)| *t == parent) else {
            continue;
        };
        if mapped.contains(&child) {
            continue;
        }
        let (rule, acts) = match action {
            EraseAction::Delete => (key.on_delete.on_delete(), key.on_delete.acts()),
            _ if key.parent_columns().any(|c| masked.contains(&c)) => {
                (key.on_update.on_update(), key.on_update.acts())
            }
            _ => continue,
        };
        let outcome = if acts {
            "Erase refuses any subject with rows here"
        } else {
            "an erasure of a subject who has rows in it fails (ERASURE_CONSTRAINT) and \
             changes nothing"
        };
        if let Some(report) = reports.iter_mut().find(|r| r.table == parent) {
            report.warnings.push(format!(
                "table '{child}' references '{parent}' with {rule} (constraint \
                 '{constraint}'), and the data map does not name '{child}': {outcome} \
                 until '{child}' is mapped with an erase policy",
                constraint = key.constraint
            ));
        }
    }
}
