//! The draft's vocabulary: what is proposed for each table and column (with its evidence),
//! the planner that proposes it over the catalog and samples, and the small naming rules the
//! rooms of `discover` share. Nothing here reads a database.

use std::collections::BTreeSet;

use super::evidence::TableEvidence;
use crate::classify::Matrix;
use crate::config::{CoerceRule, ReachRule, SourceConfig};
use crate::store::discovery::Table;

/// The draft for one table.
#[derive(Debug, Clone, Default)]
pub struct TableProposal {
    /// `table` in `public`, `schema.table` elsewhere.
    pub name: String,
    /// The planner's estimate; negative when the table was never analysed.
    pub estimated_rows: f64,
    pub sampled_rows: u32,
    /// Why sampling stopped early, if it did.
    pub sample_error: Option<String>,
    pub identities: Vec<IdentityProposal>,
    pub references: Vec<ReferenceProposal>,
    pub columns: Vec<ColumnProposal>,
    /// Links seen but not proposed, each with the reason.
    pub notes: Vec<String>,
    /// What erasure should do to the table's rows, for a person to check.
    pub erase: EraseProposal,
}

/// The erase policy proposed for a table, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EraseProposal {
    /// `delete`: every row an identity reaches is the subject's.
    pub action: String,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProposal {
    pub kind: String,
    pub column: String,
    /// How the column is compared: case-insensitively when samples have capitals and the
    /// kind lower-cases; by digits when phone numbers are stored as typed.
    pub matching: crate::config::MatchMode,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceProposal {
    pub column: String,
    pub table: String,
    pub to: String,
    /// Which rows it reaches: `owned` down from a subject's row, `lookup` up to the row a
    /// subject's row points at.
    pub reach: ReachRule,
    /// Found from sampled values, not from a foreign key: to be checked by a person.
    pub inferred: bool,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoerceProposal {
    Date { formats: Vec<String> },
    Epoch(CoerceRule),
}

#[derive(Debug, Clone)]
pub struct ColumnProposal {
    pub name: String,
    /// The store's own type name, for messages.
    pub type_name: String,
    pub category: String,
    /// Why this category (and rule): names, counts of samples, never a value.
    pub evidence: Vec<String>,
    /// Nothing pointed at a category: `not_pii` until a person says otherwise.
    pub no_evidence: bool,
    pub scan_json: bool,
    pub coerce: Option<CoerceProposal>,
}

/// A table that no identity reaches, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub table: String,
    pub reason: String,
}

/// The whole draft.
#[derive(Debug, Clone, Default)]
pub struct Proposal {
    /// The tables an identity reaches, in catalog order.
    pub tables: Vec<TableProposal>,
    pub unreachable: Vec<Unreachable>,
    /// Identity kinds of the source that no column was found for.
    pub kinds_without_identity: Vec<String>,
}

/// A link to check against the data: sampled values of `tables[child].columns[column]`
/// looked up in `tables[parent].columns[to]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCandidate {
    pub child: usize,
    pub column: String,
    pub parent: usize,
    pub to: String,
}

/// The built-in category of free text written by or about a person.
pub(super) const FREE_TEXT: &str = "free_text";

/// The category an identity kind's values have, when the kind says (`email`, `phone`).
pub(super) fn kind_shape(kind: &str) -> Option<&'static str> {
    let kind = kind.to_lowercase();
    if kind.contains("email") || kind.contains("e_mail") {
        Some("contact.email")
    } else if kind.contains("phone") {
        Some("contact.phone")
    } else {
        None
    }
}

/// A name as snake_case words: `CustomerId` → `customer_id`, `customer_id` as it is, so that
/// PascalCase catalogs (MariaDB's samples, SQL Server's) match kinds as snake_case ones do.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_uppercase() && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit()) {
            out.push('_');
        }
        out.extend(c.to_lowercase());
        previous = Some(c);
    }
    out
}

/// What to say of an identity column whose stored values (`form`) the kind's normalisation
/// (`steps`) seldom reproduces, and whether comparing digits finds them. Counts only.
pub fn stored_form_note(
    dialect: crate::schema::Dialect,
    table: &crate::config::QualifiedName,
    column: &str,
    kind: &str,
    steps: &str,
    form: crate::subject::normalize::StoredForm,
) -> (String, bool) {
    let unmatched = form.sampled - form.as_stored;
    let index = dialect.create_index(table, column, crate::store::dialect::IndexOn::Digits);
    if !form.mostly_unmatched(true) {
        return (
            format!(
                "{unmatched} of {} sampled values are stored as typed, not as {kind} values \
                 are normalised ({steps}), but {} of them match by their digits: compared by \
                 digits (match = \"digits\"; index it: {index})",
                form.sampled, form.by_digits
            ),
            true,
        );
    }
    (
        format!(
            "{unmatched} of {} sampled values are stored as typed, not as {kind} values are \
             normalised ({steps}), and only {} match even by their digits: no {kind} identity \
             can find these rows. Store the values normalised, or normalise the kind as they \
             are stored ([sources.identities.{kind}] normalize = [\"trim\"]) and compare digits \
             (match = \"digits\"; index it: {index})",
            form.sampled, form.by_digits
        ),
        false,
    )
}

/// `customers` → `customer`, `categories` → `category`, `addresses` → `address`.
pub fn singular(name: &str) -> String {
    let lower = name.to_lowercase();
    if let Some(stem) = lower.strip_suffix("ies") {
        format!("{stem}y")
    } else if ["sses", "xes", "ches", "shes"]
        .iter()
        .any(|end| lower.ends_with(end))
    {
        lower[..lower.len() - 2].to_owned()
    } else if lower.ends_with("ss") {
        lower
    } else {
        lower.strip_suffix('s').unwrap_or(&lower).to_owned()
    }
}

/// The name of a table's key as an identifier's refinement: `customer_id` as it is, `id` of
/// `customers` as `customer_id`.
pub(super) fn key_name(table: &str, column: &str) -> String {
    let table = singular(&snake_case(table));
    let column = snake_case(column);
    if column.starts_with(&table) {
        column
    } else {
        format!("{table}_{column}")
    }
}

/// A refinement of `identifier` named after a column, when the name is a plain word.
pub(super) fn identifier_for(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        format!("identifier.{name}")
    } else {
        "identifier".to_owned()
    }
}

/// Builds proposals from the catalog and evidence. `links` holds the inferred links that
/// the data confirmed, each with its evidence.
pub struct Planner<'a> {
    pub tables: &'a [Table],
    pub evidence: &'a [TableEvidence],
    pub source: &'a SourceConfig,
    pub matrix: &'a Matrix,
    /// The share of a text column's samples in which a detector must find personal data
    /// inside the text for the column to be proposed as free text (0: any sample).
    pub free_text_share: f64,
}

/// Whether `from` reaches `to` by following parent edges.
pub(super) fn leads_to(from: usize, to: usize, parents: &[Vec<usize>]) -> bool {
    let mut stack = vec![from];
    let mut seen = BTreeSet::new();
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        if seen.insert(node) {
            stack.extend(parents[node].iter().copied());
        }
    }
    false
}
