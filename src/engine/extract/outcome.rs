//! What reading tables produced besides rows: per table (counts, rejected rows, violations,
//! PII fields found in JSON) and over an extraction, for the manifest. Pure bookkeeping.

use std::collections::HashMap;

use crate::pb;

/// The most distinct fields found in one scanned JSON column and table; more set
/// `pii_fields_truncated`.
pub const MAX_PII_FIELDS_PER_COLUMN: usize = 32;

/// The most violations listed per table; the counts are always complete.
pub const MAX_VIOLATIONS_PER_TABLE: usize = 100;

/// What reading one table produced besides rows.
#[derive(Default)]
pub(super) struct TableOutcome {
    /// COUNT(*) of the table's query in the same snapshot.
    pub(super) counted: i64,
    pub(super) streamed: u64,
    pub(super) rejected: u64,
    pub(super) rejected_by: std::collections::BTreeMap<String, u64>,
    pub(super) json_violations: u64,
    pub(super) violations: Vec<pb::Violation>,
    pub(super) violations_truncated: bool,
    pub(super) fields: std::collections::BTreeSet<(String, String)>,
    /// Distinct fields kept per scanned column (by column index).
    pub(super) fields_per_column: HashMap<usize, usize>,
    pub(super) fields_truncated: bool,
    /// Dry runs: (column index, category) -> values of a not_pii text column in which the
    /// category's detectors found something inside the text.
    pub(super) in_text: std::collections::BTreeMap<(usize, String), u64>,
}

impl TableOutcome {
    /// Keeps a document's fields, at most [`MAX_PII_FIELDS_PER_COLUMN`] per column.
    pub(super) fn add_fields(
        &mut self,
        column: usize,
        fields: std::collections::BTreeSet<(String, String)>,
        truncated: bool,
    ) {
        self.fields_truncated |= truncated;
        let kept = self.fields_per_column.entry(column).or_default();
        for field in fields {
            if self.fields.contains(&field) {
                continue;
            }
            if *kept >= MAX_PII_FIELDS_PER_COLUMN {
                self.fields_truncated = true;
                break;
            }
            *kept += 1;
            self.fields.insert(field);
        }
    }

    pub(super) fn record(&mut self, violation: pb::Violation) {
        if self.violations.len() < MAX_VIOLATIONS_PER_TABLE {
            self.violations.push(violation);
        } else {
            self.violations_truncated = true;
        }
    }
}

/// Totals over the tables of one extraction, for the manifest.
#[derive(Default)]
pub(super) struct Found {
    pub(super) rejected: u64,
    pub(super) rejected_by: std::collections::BTreeMap<String, u64>,
    pub(super) json_violations: u64,
    pub(super) fields: std::collections::BTreeSet<(String, String)>,
    /// Tables whose found fields were cut at the limit.
    pub(super) truncated: Vec<String>,
    /// Each table the identity reaches directly: its rows matched directly, and whether one
    /// row there is one person.
    pub(super) identity_rows: Vec<(String, u64, bool)>,
}

impl Found {
    pub(super) fn add(&mut self, name: &str, table: &TableOutcome) {
        if table.fields_truncated {
            self.truncated.push(name.to_owned());
        }
        self.rejected += table.rejected;
        for (category, n) in &table.rejected_by {
            *self.rejected_by.entry(category.clone()).or_default() += n;
        }
        self.json_violations += table.json_violations;
        self.fields.extend(table.fields.iter().cloned());
    }
}
