//! What reading tables produced besides rows: per table (counts, rejected rows, violations,
//! PII fields found in JSON) and over an extraction, for the manifest. Pure bookkeeping.

use crate::classify::{ColumnScan, Matrix, ScanLimits};
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
    /// The scans of the table's JSON columns (by column index), each with the fields found
    /// in its documents so far; gathered into `fields` when the table is read.
    pub(super) scans: std::collections::BTreeMap<usize, ColumnScan>,
    pub(super) fields: std::collections::BTreeSet<(String, String)>,
    pub(super) fields_truncated: bool,
    /// Dry runs: (column index, category) -> values of a not_pii text column in which the
    /// category's detectors found something inside the text.
    pub(super) in_text: std::collections::BTreeMap<(usize, String), u64>,
}

impl TableOutcome {
    /// The scan of the JSON column at `column`, named `root` (`events.payload`): kept over
    /// the table's rows, at most [`MAX_PII_FIELDS_PER_COLUMN`] fields.
    pub(super) fn scan_of(
        &mut self,
        column: usize,
        root: impl FnOnce() -> String,
    ) -> &mut ColumnScan {
        self.scans.entry(column).or_insert_with(|| {
            let limits = ScanLimits {
                max_fields: MAX_PII_FIELDS_PER_COLUMN,
                ..ScanLimits::default()
            };
            ColumnScan::new(&root(), limits)
        })
    }

    /// Gathers the fields the column scans found, once the table is read.
    pub(super) fn gather_fields(&mut self, matrix: &Matrix) {
        for scan in std::mem::take(&mut self.scans).into_values() {
            self.fields_truncated |= scan.truncated();
            self.fields.extend(scan.fields(matrix));
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
