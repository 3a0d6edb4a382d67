//! Each column's category and rule in a draft, with its evidence: what an identity, a link or
//! a key makes of it, what its name and samples say, and how text holding dates or epochs is
//! read. Never a value.

use super::draft::{
    CoerceProposal, ColumnProposal, FREE_TEXT, IdentityProposal, Planner, ReferenceProposal,
    identifier_for, key_name, kind_shape,
};
use super::evidence::{ColumnEvidence, date_cover};
use crate::classify::{CHECK, FREE_TEXT_WORDS, Matrix, NOT_PII, NameMatch, words};
use crate::config::CoerceRule;
use crate::schema::{ColumnType, category_fits_type};
use crate::store::discovery::Column;

/// What the name and the samples say a column holds, before identities and links.
#[derive(Debug, Clone, Default)]
pub(super) struct Shape {
    by_name: Option<String>,
    /// The words of the name that matched, when not the whole name did.
    by_words: Option<String>,
    by_values: Option<(String, u32)>,
}

impl Shape {
    pub(super) fn of(column: &Column, evidence: &ColumnEvidence, matrix: &Matrix) -> Shape {
        let fits = |c: &str| category_fits_type(c, column.column_type, false);
        let (by_name, by_words) = match matrix.name_category(&column.name) {
            Some((c, NameMatch::Whole)) if fits(c) => (Some(c.to_owned()), None),
            Some((c, NameMatch::Words(w))) if fits(c) => (Some(c.to_owned()), Some(w)),
            _ => match words(&column.name).last() {
                Some(last) if column.is_text() && FREE_TEXT_WORDS.contains(&last.as_str()) => {
                    (Some(FREE_TEXT.to_owned()), Some(last.clone()))
                }
                _ => (None, None),
            },
        };
        // Most samples, not merely some, must be recognised.
        let by_values = evidence
            .leading_category()
            .filter(|(c, n)| *n * 2 >= evidence.non_null.max(1) && fits(c))
            .map(|(c, n)| (c.to_owned(), n));
        Shape {
            by_name,
            by_words,
            by_values,
        }
    }

    /// The samples' category, or the name's. A phone number is the weakest evidence a value
    /// gives (digits, some separators: a passport or account number has the same shape), so
    /// a name that says something else wins over it.
    pub(super) fn category(&self) -> Option<&str> {
        match (&self.by_values, &self.by_name) {
            (Some((values, _)), Some(name)) if values == "contact.phone" => Some(name),
            (Some((values, _)), _) => Some(values),
            (None, name) => name.as_deref(),
        }
    }

    pub(super) fn describe(&self, non_null: u32) -> Vec<String> {
        let mut said = Vec::new();
        match (&self.by_name, &self.by_words) {
            (Some(c), Some(words)) => said.push(format!("the name's word '{words}' matches {c}")),
            (Some(c), None) => said.push(format!("name matches {c}")),
            _ => {}
        }
        if let Some((c, n)) = &self.by_values {
            said.push(format!("{n} of {non_null} samples are {c}"));
        }
        said
    }
}

impl Planner<'_> {
    pub(super) fn column(
        &self,
        t: usize,
        c: usize,
        identities: &[Vec<IdentityProposal>],
        references: &[Vec<ReferenceProposal>],
    ) -> ColumnProposal {
        let table = &self.tables[t];
        let column = &table.columns[c];
        let evidence = &self.evidence[t].columns[c];
        let shape = self.shape(t, c);
        let mut said = Vec::new();
        let mut no_evidence = false;
        let mut scan_json = false;
        let identity = identities[t].iter().find(|i| i.column == column.name);
        let reference = references[t].iter().find(|r| r.column == column.name);
        let referenced_by: Vec<String> = references
            .iter()
            .enumerate()
            .flat_map(|(child, refs)| {
                refs.iter()
                    .filter(|r| r.table == table.name.display_name() && r.to == column.name)
                    .map(move |r| {
                        format!("{}.{}", self.tables[child].name.display_name(), r.column)
                    })
            })
            .collect();
        let keyish = identity.is_some() || reference.is_some() || !referenced_by.is_empty();
        let category = if let Some(identity) = identity {
            said.push(format!("identity of kind {}", identity.kind));
            said.extend(shape.describe(evidence.non_null));
            kind_shape(&identity.kind)
                .map(str::to_owned)
                .unwrap_or_else(|| identifier_for(&identity.kind))
        } else if let Some(reference) = reference {
            said.push(format!("links to {}.{}", reference.table, reference.to));
            let parent = self
                .tables
                .iter()
                .position(|p| p.name.display_name() == reference.table);
            let parent_identity = parent.and_then(|p| {
                identities[p]
                    .iter()
                    .find(|i| i.column == reference.to)
                    .map(|i| i.kind.clone())
            });
            let to_person = parent.is_some_and(|p| self.one_per_person(p, identities));
            match (&parent_identity, shape.category()) {
                (Some(kind), _) => kind_shape(kind)
                    .map(str::to_owned)
                    .unwrap_or_else(|| identifier_for(kind)),
                (None, Some(category)) => category.to_owned(),
                // A key is personal only when it leads to a person's row.
                (None, None) if to_person => identifier_for(&column.name),
                (None, None) => NOT_PII.to_owned(),
            }
        } else if self.one_per_person(t, identities)
            && table.primary_key.as_deref() == Some(column.name.as_str())
        {
            said.push("the key of a person table".to_owned());
            identifier_for(&key_name(&table.name.table, &column.name))
        } else if self.one_per_person(t, identities)
            && shape.category().is_none()
            && (column.column_type == ColumnType::Bytes
                || words(&column.name).last().is_some_and(|w| w == "title"))
        {
            // What a person table holds beside a name is about that person: a picture, a
            // title (`Sales Manager`, `Dr`).
            let category = if column.column_type == ColumnType::Bytes {
                "photo"
            } else {
                "employment"
            };
            said.push(format!("a {} column of a person table", column.type_name));
            category.to_owned()
        } else if let Some(key) = table.foreign_key(&column.name) {
            // A key is personal only when it leads to a person's row.
            let parent = self.tables.iter().position(|p| p.name == key.table);
            match parent.filter(|p| self.one_per_person(*p, identities)) {
                Some(p) => {
                    said.push(format!(
                        "a key to {}, a person table",
                        self.tables[p].name.display_name()
                    ));
                    identifier_for(&key_name(&key.table.table, &key.to))
                }
                None => {
                    said.push(format!(
                        "a key to {}, which holds no person",
                        key.table.display_name()
                    ));
                    NOT_PII.to_owned()
                }
            }
        } else if !referenced_by.is_empty() {
            // The key of a row that is not a person's (an order, an address) identifies
            // the row, not a person.
            said.push(format!(
                "linked from {}; the key of a table that holds no person",
                referenced_by.join(", ")
            ));
            shape
                .category()
                .map_or_else(|| NOT_PII.to_owned(), str::to_owned)
        } else if column.is_json() {
            said.extend(shape.describe(evidence.non_null));
            let found = json_summary(evidence);
            if let Some((nested, text)) = found {
                scan_json = true;
                said.push(text);
                shape.by_name.clone().unwrap_or(nested)
            } else {
                said.push(format!(
                    "no personal data found in {} sampled documents",
                    evidence.non_null
                ));
                match shape.by_name.clone() {
                    Some(category) => category,
                    None => {
                        no_evidence = true;
                        NOT_PII.to_owned()
                    }
                }
            }
        } else if let Some(category) = shape.category() {
            said.extend(shape.describe(evidence.non_null));
            if let Some(inside) = self.free_text(evidence) {
                said.push(inside);
            }
            category.to_owned()
        } else if let Some(inside) = self.free_text(evidence) {
            said.push(inside);
            FREE_TEXT.to_owned()
        } else if column.is_text() && !evidence.enum_like() {
            // When in doubt, say so: text with no evidence either way is for a person to
            // decide, and check-config refuses the draft until one does.
            no_evidence = true;
            CHECK.to_owned()
        } else {
            no_evidence = true;
            NOT_PII.to_owned()
        };
        if column.is_json() && evidence.json_unscanned > 0 {
            said.push(format!(
                "{} sampled documents were too large or malformed to scan",
                evidence.json_unscanned
            ));
        }
        let coerce = if keyish {
            None
        } else {
            self.coercion(column, evidence, &mut said)
        };
        // Text that holds dates or epochs is a timestamp: evidence enough for not_pii.
        let category = if category == CHECK && coerce.is_some() {
            no_evidence = false;
            NOT_PII.to_owned()
        } else {
            category
        };
        if no_evidence {
            let seen = if evidence.non_null == 0 {
                "no evidence (no sampled values)".to_owned()
            } else {
                format!("no evidence in the name or {} samples", evidence.non_null)
            };
            said.push(if category == CHECK {
                format!(
                    "{seen}, and text that is not enum-like: decide (a category, or not_pii); \
                     check-config refuses \"check\""
                )
            } else {
                format!("{seen}: check")
            });
        }
        ColumnProposal {
            name: column.name.clone(),
            type_name: column.type_name.clone(),
            category,
            evidence: said,
            no_evidence,
            scan_json,
            coerce,
        }
    }

    fn coercion(
        &self,
        column: &Column,
        evidence: &ColumnEvidence,
        said: &mut Vec<String>,
    ) -> Option<CoerceProposal> {
        if column.is_text() && evidence.non_null > 0 {
            let (formats, parsed) = date_cover(&evidence.date_masks);
            // Three in four samples must be dates; the rest become rejected rows.
            if !formats.is_empty() && parsed * 4 >= evidence.non_null * 3 {
                said.push(format!(
                    "{parsed} of {} samples parse as dates with {}",
                    evidence.non_null,
                    formats.join(", ")
                ));
                return Some(CoerceProposal::Date {
                    formats: formats.into_iter().map(str::to_owned).collect(),
                });
            }
            return None;
        }
        if !column.is_integer() {
            return None;
        }
        let lower = column.name.to_lowercase();
        let named = ["_epoch", "_at", "_ts", "_timestamp"]
            .iter()
            .any(|end| lower.ends_with(end));
        let (unit, in_range) = evidence
            .epochs
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .unwrap_or((0, 0));
        let all_in_range = evidence.integers > 0 && in_range == evidence.integers;
        if !named && !all_in_range {
            return None;
        }
        let (rule, unit_name) = match unit {
            _ if in_range == 0 => (CoerceRule::EpochSeconds, "seconds"),
            0 => (CoerceRule::EpochSeconds, "seconds"),
            1 => (CoerceRule::EpochMilliseconds, "milliseconds"),
            _ => (CoerceRule::EpochMicroseconds, "microseconds"),
        };
        let mut why = Vec::new();
        if named {
            why.push(format!("named like an epoch ({})", column.name));
        }
        why.push(format!(
            "{in_range} of {} samples are {unit_name} since 1970 between 2000 and 2100",
            evidence.integers
        ));
        said.push(why.join("; "));
        Some(CoerceProposal::Epoch(rule))
    }
}

/// The nested category found most often in a JSON column's samples, and the evidence.
fn json_summary(evidence: &ColumnEvidence) -> Option<(String, String)> {
    if evidence.json_fields.is_empty() {
        return None;
    }
    let mut by_category: std::collections::BTreeMap<&str, u32> = Default::default();
    for ((_, category), n) in &evidence.json_fields {
        *by_category.entry(category.as_str()).or_default() += n;
    }
    let leading = by_category
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(c, _)| (*c).to_owned())?;
    const SHOWN: usize = 6;
    let mut fields: Vec<String> = evidence
        .json_fields
        .keys()
        .take(SHOWN)
        .map(|(path, category)| format!("{category} at {path}"))
        .collect();
    if evidence.json_fields.len() > SHOWN {
        fields.push(format!("{} more", evidence.json_fields.len() - SHOWN));
    }
    Some((
        leading,
        format!(
            "nested personal data in {} of {} sampled documents: {}",
            evidence.json_documents_with_pii,
            evidence.non_null,
            fields.join(", ")
        ),
    ))
}
