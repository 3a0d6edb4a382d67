//! Evidence from sampled rows: what the detectors recognise, which date formats parse, which
//! integers look like epochs, and what the JSON walker finds. Every value is classified and
//! dropped as its row is read; only counts leave this module, and the few distinct values of
//! columns that may link tables, which stay in memory until the links are checked.

use std::collections::{BTreeMap, BTreeSet};

use crate::classify::{Matrix, ScanLimits};
use crate::store::ColumnType;
use crate::store::discovery::{Column, DiscoverySnapshot, SampleLimits, Table};

/// The longest text read of a value that is not JSON: longer than any e-mail address
/// (254), phone number or date, and what the detectors look at (they refuse longer text).
pub(super) const TEXT_PREFIX: usize = 320;
/// The longest text read of a string value, for finding personal data inside free text.
const FREE_TEXT_LIMIT: usize = 4096;
/// The most string text read from one sampled row, shared by its string columns (each gets
/// at least [`TEXT_PREFIX`]).
const TEXT_ROW_BUDGET: usize = 4 << 20;
/// Distinct values (as hashes) counted per column, to tell enum-like text from the rest.
const DISTINCT_COUNTED: usize = 64;
/// The largest JSON document read from a sample; larger ones are counted, not scanned.
const JSON_LIMIT: usize = 1 << 20;
/// The most JSON text read from one sampled row, shared by its JSON columns (each gets at
/// least [`JSON_FLOOR`]), so that a row's memory is bounded whatever the table's width.
const JSON_ROW_BUDGET: usize = 8 << 20;
const JSON_FLOOR: usize = 4 << 10;
/// Distinct values kept per column for checking inferred links.
const KEPT_VALUES: usize = 256;
/// The most bytes of values kept per table for checking inferred links.
const KEPT_BYTES: usize = 4 << 20;

/// Date formats tried on text columns, most common first.
pub const DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%Y%m%d", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y", "%Y/%m/%d",
    "%d/%m/%y", "%m/%d/%y", "%m-%d-%y", "%d-%m-%y",
];

/// Epoch ranges (2000-01-01 to 2100-01-01) in seconds, milliseconds and microseconds.
pub const EPOCH_RANGES: [(i64, i64); 3] = [
    (946_684_800, 4_102_444_800),
    (946_684_800_000, 4_102_444_800_000),
    (946_684_800_000_000, 4_102_444_800_000_000),
];

/// What the samples of one column showed.
#[derive(Debug, Default, Clone)]
pub struct ColumnEvidence {
    /// Samples that were not NULL.
    pub non_null: u32,
    /// Category → samples a detector of that category recognises.
    pub detected: BTreeMap<String, u32>,
    /// Text samples that lower-casing would change.
    pub with_capitals: u32,
    /// For each text sample, which of [`DATE_FORMATS`] parse it (bit i for format i).
    pub date_masks: Vec<u16>,
    /// Integer samples within each of [`EPOCH_RANGES`].
    pub epochs: [u32; 3],
    /// Integer samples in all.
    pub integers: u32,
    /// (path, category) → documents where the JSON walker found it.
    pub json_fields: BTreeMap<(String, String), u32>,
    /// Documents with at least one field found.
    pub json_documents_with_pii: u32,
    /// Documents too large or too hostile to scan completely.
    pub json_unscanned: u32,
    /// Distinct sampled values, kept only while links between tables are checked.
    pub values: BTreeSet<String>,
    /// Category → text samples in which a detector of it found something inside the text.
    pub in_text: BTreeMap<String, u32>,
    /// Text samples in which any detector found something inside the text.
    pub with_personal_text: u32,
    /// Hashes of the distinct text samples, up to [`DISTINCT_COUNTED`] (never a value).
    pub distinct: BTreeSet<u64>,
    /// The longest text sample, in characters.
    pub longest: usize,
}

impl ColumnEvidence {
    /// Whether the text samples look like the values of an enumeration (a status, a kind, a
    /// currency): few distinct short values, each seen more than once on average.
    pub fn enum_like(&self) -> bool {
        let distinct = self.distinct.len() as u32;
        self.non_null > 0 && distinct <= 12 && self.non_null >= 2 * distinct && self.longest <= 40
    }

    /// The category most samples were recognised as, with its count.
    pub fn leading_category(&self) -> Option<(&str, u32)> {
        self.detected
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(c, n)| (c.as_str(), *n))
    }
}

/// What the samples of one table showed.
#[derive(Debug, Default, Clone)]
pub struct TableEvidence {
    pub rows: u32,
    /// In the order of the table's columns.
    pub columns: Vec<ColumnEvidence>,
    /// Why sampling stopped early (a statement timeout, a permission), never a value.
    pub error: Option<String>,
}

/// The byte limit of each JSON document of `table`'s rows.
pub(super) fn json_limit(table: &Table) -> usize {
    let json_columns = table.columns.iter().filter(|c| c.is_json()).count().max(1);
    (JSON_ROW_BUDGET / json_columns).clamp(JSON_FLOOR, JSON_LIMIT)
}

/// The characters read of each string value of `table`'s rows.
pub(super) fn text_limit(table: &Table) -> usize {
    let text_columns = table.columns.iter().filter(|c| c.is_text()).count().max(1);
    (TEXT_ROW_BUDGET / text_columns).clamp(TEXT_PREFIX, FREE_TEXT_LIMIT)
}

/// How much of each of `table`'s sampled values is read: its JSON and string budgets shared
/// by the row's columns of each kind.
pub(super) fn sample_limits(table: &Table) -> SampleLimits {
    SampleLimits {
        json_bytes: json_limit(table),
        text_chars: text_limit(table),
        prefix_chars: TEXT_PREFIX,
    }
}

/// Samples `table` in the snapshot: every value classified and forgotten as its row is read,
/// except those `keep[i]` says may link tables. A failure (a timeout, a permission) ends
/// this table's sample, named without a value, and leaves the others to be sampled.
pub(super) async fn sample<D: DiscoverySnapshot>(
    snapshot: &mut D,
    table: &Table,
    limit: u32,
    matrix: &Matrix,
    keep: &[bool],
) -> TableEvidence {
    let mut evidence = TableEvidence {
        columns: vec![ColumnEvidence::default(); table.columns.len()],
        ..Default::default()
    };
    if table.columns.is_empty() || limit == 0 {
        return evidence;
    }
    let mut kept_bytes = 0;
    let sampled = snapshot
        .sample(table, limit, sample_limits(table), &mut |values| {
            observe_row(&mut evidence, table, values, matrix, keep, &mut kept_bytes);
        })
        .await;
    if let Err(e) = sampled {
        evidence.error = Some(e);
    }
    evidence
}

/// Classifies one sampled row's values (as text, in the order of the table's columns) and
/// forgets them, except those `keep` says may link tables, within [`KEPT_BYTES`].
pub fn observe_row(
    evidence: &mut TableEvidence,
    table: &Table,
    values: &[Option<&str>],
    matrix: &Matrix,
    keep: &[bool],
    kept_bytes: &mut usize,
) {
    evidence.rows += 1;
    for (i, column) in table.columns.iter().enumerate() {
        if let Some(Some(value)) = values.get(i) {
            let keep = keep[i] && *kept_bytes + value.len() <= KEPT_BYTES;
            if observe(
                &mut evidence.columns[i],
                column,
                &table.name.display_name(),
                value,
                matrix,
                keep,
            ) {
                *kept_bytes += value.len();
            }
        }
    }
}

/// Classifies one sampled value and forgets it, unless `keep` (the column may link tables):
/// returns whether it was kept.
fn observe(
    evidence: &mut ColumnEvidence,
    column: &Column,
    table: &str,
    value: &str,
    matrix: &Matrix,
    keep: bool,
) -> bool {
    evidence.non_null += 1;
    if column.is_json() {
        if value.is_empty() {
            evidence.json_unscanned += 1; // over the row's JSON budget
            return false;
        }
        let root = format!("{table}.{}", crate::classify::path_segment(&column.name));
        let result = crate::classify::scan_json(matrix, &root, value, ScanLimits::default());
        if !result.violations.is_empty() {
            evidence.json_unscanned += 1;
        }
        if !result.fields.is_empty() {
            evidence.json_documents_with_pii += 1;
        }
        for field in result.fields {
            *evidence.json_fields.entry(field).or_default() += 1;
        }
        return false;
    }
    if column.is_integer() {
        evidence.integers += 1;
        if let Ok(n) = value.parse::<i64>() {
            for (i, (low, high)) in EPOCH_RANGES.iter().enumerate() {
                if (*low..*high).contains(&n) {
                    evidence.epochs[i] += 1;
                }
            }
        }
    } else if matches!(column.column_type, ColumnType::Text | ColumnType::Network) {
        if let Some(category) = matrix.value_category(value) {
            *evidence.detected.entry(category.to_owned()).or_default() += 1;
        }
        if column.column_type == ColumnType::Text {
            if value.chars().any(char::is_uppercase) {
                evidence.with_capitals += 1;
            }
            evidence.date_masks.push(date_mask(value));
            let inside = matrix.categories_in_text(value);
            if !inside.is_empty() {
                evidence.with_personal_text += 1;
            }
            for category in inside {
                *evidence.in_text.entry(category.to_owned()).or_default() += 1;
            }
            if evidence.distinct.len() < DISTINCT_COUNTED {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                value.hash(&mut hasher);
                evidence.distinct.insert(hasher.finish());
            }
            evidence.longest = evidence.longest.max(value.chars().count());
        }
    }
    keep && evidence.values.len() < KEPT_VALUES && evidence.values.insert(value.to_owned())
}

/// Which of [`DATE_FORMATS`] parse `text` as a date.
fn date_mask(text: &str) -> u16 {
    let text = text.trim();
    if text.len() < 6 || text.len() > 10 || !text.starts_with(|c: char| c.is_ascii_digit()) {
        return 0;
    }
    let mut mask = 0;
    for (i, format) in DATE_FORMATS.iter().enumerate() {
        let formats = [(*format).to_owned()];
        // A four-digit year must be plausible: "07-04-76" is not 7 April of the year 76.
        let parsed =
            crate::values::parse_legacy_date(text, &formats, crate::values::DEFAULT_CENTURY_PIVOT);
        if parsed.is_some_and(|d| (1800..=2200).contains(&chrono::Datelike::year(&d))) {
            mask |= 1 << i;
        }
    }
    mask
}

/// The fewest formats (at most three, chosen greedily) that parse the most samples, with the
/// number they parse. Empty when no sample is a date.
pub fn date_cover(masks: &[u16]) -> (Vec<&'static str>, u32) {
    let mut left: Vec<u16> = masks.iter().copied().filter(|m| *m != 0).collect();
    let mut chosen = Vec::new();
    let mut covered = 0;
    while chosen.len() < 3 && !left.is_empty() {
        let best = (0..DATE_FORMATS.len())
            .map(|i| (i, left.iter().filter(|m| *m & (1 << i) != 0).count()))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((i, n)) = best.filter(|(_, n)| *n > 0) else {
            break;
        };
        chosen.push(DATE_FORMATS[i]);
        covered += n as u32;
        left.retain(|m| *m & (1 << i) == 0);
    }
    (chosen, covered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_covered_by_the_fewest_formats() {
        let masks: Vec<u16> = [
            "14/03/2009",
            "01/01/2001",
            "31/02/2010",
            "19991231",
            "07-04-76",
        ]
        .iter()
        .map(|t| date_mask(t))
        .collect();
        assert_eq!(masks[2], 0, "31 February is no date");
        let (formats, covered) = date_cover(&masks);
        assert_eq!(formats, ["%d/%m/%Y", "%Y%m%d", "%m-%d-%y"]);
        assert_eq!(covered, 4);
    }

    #[test]
    fn wide_rows_share_one_json_budget() {
        let table = |json_columns: usize| Table {
            name: crate::config::QualifiedName {
                schema: "public".into(),
                table: "t".into(),
            },
            estimated_rows: 0.0,
            columns: (0..json_columns)
                .map(|i| Column {
                    name: format!("doc{i}"),
                    attnum: i as i16 + 1,
                    type_name: "jsonb".into(),
                    column_type: ColumnType::Json,
                    folds_case: false,
                })
                .collect(),
            primary_key: None,
            unique: Vec::new(),
            foreign_keys: Vec::new(),
            unproposed_keys: Vec::new(),
            readable: true,
        };
        assert_eq!(json_limit(&table(1)), JSON_LIMIT);
        assert_eq!(json_limit(&table(64)), JSON_ROW_BUDGET / 64);
        assert_eq!(json_limit(&table(1600)), JSON_ROW_BUDGET / 1600);
        assert_eq!(json_limit(&table(3000)), JSON_FLOOR);
        assert_eq!(sample_limits(&table(2)).json_bytes, 1048576);
    }

    #[test]
    fn text_that_is_not_a_date_has_no_format() {
        for text in ["hello", "2024", "+44 20 7946 0958", "alice@example.com", ""] {
            assert_eq!(date_mask(text), 0, "{text}");
        }
        assert_eq!(date_cover(&[0, 0]), (Vec::new(), 0));
    }
}
