//! The manifest rules of the DSRExtractionSchema contract.
//!
//! `subject_id` is non-empty; `pii_fields` is normalized (trimmed, lower-cased, empties
//! dropped) and at least one remains; `extraction_timestamp` is present; `row_count` equals
//! the per-table counts' sum. `row_count` is at least 0, `metadata` a string map and
//! `compliance_tag` optional by construction.
//! Every violation is reported, not just the first.

use crate::pb::Manifest;

/// Normalizes PII field names as the contract requires: trimmed, lower-case, empties dropped.
/// Duplicates are removed and the result sorted, so that manifests compare equal.
pub fn normalize_pii_fields<I: IntoIterator<Item = S>, S: AsRef<str>>(fields: I) -> Vec<String> {
    let mut out: Vec<String> = fields
        .into_iter()
        .map(|f| f.as_ref().trim().to_lowercase())
        .filter(|f| !f.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every rule the manifest breaks. Empty means valid.
pub fn violations(manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    if manifest.subject_id.trim().is_empty() {
        problems.push("subject_id: must not be empty".to_owned());
    }
    if normalize_pii_fields(&manifest.pii_fields).is_empty() {
        problems.push(
            "pii_fields: at least one non-empty field is required after normalization".to_owned(),
        );
    }
    if manifest.extraction_timestamp.is_none() {
        problems.push("extraction_timestamp: must be present".to_owned());
    }
    // The counts may come from any system: summed without overflow.
    let table_rows = manifest
        .tables
        .iter()
        .try_fold(0u64, |sum, t| sum.checked_add(t.row_count));
    match table_rows {
        None => problems.push("tables: the per-table row counts overflow a 64-bit sum".to_owned()),
        Some(sum) if !manifest.tables.is_empty() && sum != manifest.row_count => {
            problems.push(format!(
                "row_count: {} differs from the sum of the per-table counts ({sum})",
                manifest.row_count
            ))
        }
        Some(_) => {}
    }
    for table in manifest.tables.iter().filter(|t| !t.verified) {
        problems.push(format!(
            "tables.{}: row count was not verified",
            table.table
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::TableCount;

    fn valid() -> Manifest {
        Manifest {
            subject_id: "hmac-sha256:00".into(),
            pii_fields: vec!["customers.email".into()],
            extraction_timestamp: Some(prost_types::Timestamp::default()),
            row_count: 2,
            tables: vec![TableCount {
                table: "customers".into(),
                row_count: 2,
                verified: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn pii_fields_are_trimmed_lowercased_and_deduplicated() {
        assert_eq!(
            normalize_pii_fields([" Customers.Email ", "", "  ", "customers.email", "a.b"]),
            vec!["a.b".to_owned(), "customers.email".to_owned()]
        );
    }

    #[test]
    fn a_valid_manifest_has_no_violations() {
        assert!(violations(&valid()).is_empty());
    }

    #[test]
    fn per_table_counts_that_overflow_are_a_violation_not_a_panic() {
        let mut manifest = valid();
        manifest.tables = vec![
            TableCount {
                table: "a".into(),
                row_count: u64::MAX,
                verified: true,
                ..Default::default()
            },
            TableCount {
                table: "b".into(),
                row_count: 2,
                verified: true,
                ..Default::default()
            },
        ];
        let problems = violations(&manifest);
        assert!(
            problems.iter().any(|p| p.contains("overflow")),
            "{problems:?}"
        );
    }

    #[test]
    fn every_violation_is_reported() {
        let manifest = Manifest {
            subject_id: " ".into(),
            pii_fields: vec!["  ".into()],
            extraction_timestamp: None,
            row_count: 3,
            ..valid()
        };
        let problems = violations(&manifest);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
