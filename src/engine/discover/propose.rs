//! From catalog and evidence to a proposal: identities, references (declared and inferred),
//! a category and rule for every column, and the tables no identity reaches, with why.
//!
//! Every proposal carries its evidence in words and counts. None carries a value.

use std::collections::BTreeSet;

use super::catalog::{Column, Table};
use super::evidence::{ColumnEvidence, TableEvidence, date_cover};
use crate::classify::{CHECK, FREE_TEXT_WORDS, Matrix, NOT_PII, NameMatch, words};
use crate::config::{CoerceRule, ReachRule, SourceConfig};
use crate::schema::category_fits_type;

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

/// Words in a table's name that suggest records a law may require keeping.
const KEPT_BY_LAW: &[&str] = &[
    "invoice",
    "invoices",
    "payment",
    "payments",
    "billing",
    "tax",
    "taxes",
    "ledger",
    "transaction",
    "transactions",
    "receipt",
    "receipts",
    "accounting",
    "contract",
    "contracts",
];

/// The erase policy to propose for table `name`: delete, the most an erasure can do, with what
/// a person must check; a name that suggests records kept by law says so.
fn erase_proposal(name: &str) -> EraseProposal {
    let table = name.rsplit('.').next().unwrap_or(name).to_lowercase();
    let kept = table
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|word| KEPT_BY_LAW.contains(word));
    let mut evidence = "proposed delete: every row an identity reaches is the subject's. Check: \
                        rows a law or contract requires keeping need { action = \"retain\", \
                        reason = \"...\" }, or keep them and mask their personal columns"
        .to_owned();
    if let Some(word) = kept {
        evidence.push_str(&format!(
            "; the name ('{word}') suggests records kept for tax or accounting law"
        ));
    }
    EraseProposal {
        action: "delete".to_owned(),
        evidence,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProposal {
    pub kind: String,
    pub column: String,
    pub case_insensitive: bool,
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
    pub typname: String,
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
const FREE_TEXT: &str = "free_text";

/// The category an identity kind's values have, when the kind says (`email`, `phone`).
fn kind_shape(kind: &str) -> Option<&'static str> {
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
fn key_name(table: &str, column: &str) -> String {
    let table = singular(&snake_case(table));
    let column = snake_case(column);
    if column.starts_with(&table) {
        column
    } else {
        format!("{table}_{column}")
    }
}

/// A refinement of `identifier` named after a column, when the name is a plain word.
fn identifier_for(name: &str) -> String {
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

/// What the name and the samples say a column holds, before identities and links.
#[derive(Debug, Clone, Default)]
struct Shape {
    by_name: Option<String>,
    /// The words of the name that matched, when not the whole name did.
    by_words: Option<String>,
    by_values: Option<(String, u32)>,
}

impl Shape {
    fn of(column: &Column, evidence: &ColumnEvidence, matrix: &Matrix) -> Shape {
        let fits = |c: &str| category_fits_type(c, &column.typname, &column.typcategory, false);
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
    fn category(&self) -> Option<&str> {
        match (&self.by_values, &self.by_name) {
            (Some((values, _)), Some(name)) if values == "contact.phone" => Some(name),
            (Some((values, _)), _) => Some(values),
            (None, name) => name.as_deref(),
        }
    }

    fn describe(&self, non_null: u32) -> Vec<String> {
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

impl Planner<'_> {
    /// Whether a row of table `t` is one person: an identity column of it is unique (a
    /// customer's e-mail), where an invoice's billing e-mail repeats.
    fn one_per_person(&self, t: usize, identities: &[Vec<IdentityProposal>]) -> bool {
        identities[t]
            .iter()
            .any(|i| self.tables[t].is_unique(&i.column))
    }

    /// The category a column's name or samples point at, if any.
    pub(super) fn column_shape(&self, t: usize, c: usize) -> Option<String> {
        self.shape(t, c).category().map(str::to_owned)
    }

    fn shape(&self, t: usize, c: usize) -> Shape {
        Shape::of(
            &self.tables[t].columns[c],
            &self.evidence[t].columns[c],
            self.matrix,
        )
    }

    /// What detectors found inside a text column's samples, when it meets the share of
    /// samples the discovery asks for: the categories and how often, never a value.
    fn free_text(&self, evidence: &ColumnEvidence) -> Option<String> {
        let found = evidence.with_personal_text;
        if found == 0 || f64::from(found) < self.free_text_share * f64::from(evidence.non_null) {
            return None;
        }
        let what = evidence
            .in_text
            .iter()
            .map(|(category, n)| format!("{category} inside {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "free text: personal data inside {found} of {} samples ({what})",
            evidence.non_null
        ))
    }

    fn usable(&self, t: usize) -> bool {
        self.tables[t].readable && !self.tables[t].columns.is_empty()
    }

    /// Identity columns of table `t`, for the source's kinds. A column with a foreign key is
    /// reached through it instead.
    pub fn identities(&self, t: usize) -> Vec<IdentityProposal> {
        let table = &self.tables[t];
        let mut found = Vec::new();
        if !self.usable(t) {
            return found;
        }
        for (c, column) in table.columns.iter().enumerate() {
            if table.foreign_key(&column.name).is_some() {
                continue;
            }
            let evidence = &self.evidence[t].columns[c];
            let shape = self.shape(t, c);
            let unique = table.is_unique(&column.name);
            let keyed_as = format!(
                "{}_{}",
                singular(&snake_case(&table.name.table)),
                snake_case(&column.name)
            );
            for kind in &self.source.identity_kinds {
                let why = if snake_case(&column.name) == snake_case(kind) {
                    format!("named for identity kind {kind}")
                } else if unique && keyed_as.eq_ignore_ascii_case(kind) {
                    format!("unique key of {}, as {kind}", table.name.display_name())
                } else if let Some(expected) = kind_shape(kind)
                    && shape.category() == Some(expected)
                {
                    shape.describe(evidence.non_null).join("; ")
                } else {
                    continue;
                };
                let lowercases = self.source.normalizer(kind).lowercases();
                // citext compares case-insensitively as it is.
                let case_insensitive = lowercases
                    && column.is_text()
                    && column.typname != "citext"
                    && evidence.with_capitals > 0;
                let mut evidence_text = why;
                if unique && !evidence_text.starts_with("unique") {
                    evidence_text.push_str("; unique");
                }
                if case_insensitive {
                    evidence_text.push_str(&format!(
                        "; {} of {} samples have capitals, and {kind} values are lower-cased \
                         (index it: CREATE INDEX ON {}.{} (lower({})))",
                        evidence.with_capitals,
                        evidence.non_null,
                        crate::schema::quote_ident(&table.name.schema),
                        crate::schema::quote_ident(&table.name.table),
                        crate::schema::quote_ident(&column.name)
                    ));
                }
                found.push(IdentityProposal {
                    kind: kind.clone(),
                    column: column.name.clone(),
                    case_insensitive,
                    evidence: evidence_text,
                });
                break;
            }
        }
        found
    }

    /// Links without a foreign key worth checking against the data: a column of the same
    /// shape as an identity column that is unique in its table (an e-mail column beside
    /// `customers.email`), or an integer column named for another table's key
    /// (`customer_id` beside `customers.id`).
    pub fn link_candidates(&self, identities: &[Vec<IdentityProposal>]) -> Vec<LinkCandidate> {
        let mut candidates = Vec::new();
        for (p, parent) in self.tables.iter().enumerate() {
            for identity in &identities[p] {
                let Some(u) = parent
                    .columns
                    .iter()
                    .position(|c| c.name == identity.column)
                else {
                    continue;
                };
                let target = &parent.columns[u];
                if !parent.is_unique(&target.name) {
                    continue;
                }
                let target_shape = self.shape(p, u);
                for (t, child) in self.tables.iter().enumerate() {
                    if t == p || !self.usable(t) {
                        continue;
                    }
                    for (c, column) in child.columns.iter().enumerate() {
                        if child.foreign_key(&column.name).is_some() {
                            continue;
                        }
                        let same_shape = column.is_text()
                            && target.is_text()
                            && target_shape.category().is_some()
                            && self.shape(t, c).category() == target_shape.category();
                        let named_for = column.is_integer()
                            && target.is_integer()
                            && (column.name
                                == format!("{}_{}", singular(&parent.name.table), target.name)
                                || (target.name != "id" && column.name == target.name));
                        if (same_shape || named_for)
                            && !self.evidence[t].columns[c].values.is_empty()
                        {
                            candidates.push(LinkCandidate {
                                child: t,
                                column: column.name.clone(),
                                parent: p,
                                to: target.name.clone(),
                            });
                        }
                    }
                }
            }
        }
        candidates
    }

    /// The whole proposal. `links` are the inferred links the data confirmed, with evidence.
    pub fn propose(
        &self,
        identities: Vec<Vec<IdentityProposal>>,
        links: Vec<(LinkCandidate, String)>,
        fan_in: &super::reach::FanIn,
    ) -> Proposal {
        let n = self.tables.len();
        // Every possible edge child → parent: declared foreign keys first, then links.
        let mut candidates: Vec<(usize, usize, ReferenceProposal)> = Vec::new();
        let index =
            |name: &crate::config::QualifiedName| self.tables.iter().position(|t| &t.name == name);
        let mut notes: Vec<Vec<String>> = vec![Vec::new(); n];
        for (t, table) in self.tables.iter().enumerate() {
            if !self.usable(t) {
                continue;
            }
            for key in &table.foreign_keys {
                let Some(p) = index(&key.table) else {
                    continue;
                };
                if p == t {
                    notes[t].push(format!(
                        "{} refers to this table's own {}: not a path to a subject",
                        key.column, key.to
                    ));
                    continue;
                }
                candidates.push((
                    t,
                    p,
                    ReferenceProposal {
                        column: key.column.clone(),
                        table: self.tables[p].name.display_name(),
                        to: key.to.clone(),
                        reach: ReachRule::Owned,
                        inferred: false,
                        evidence: format!(
                            "foreign key {}.{} -> {}.{}",
                            table.name.display_name(),
                            key.column,
                            self.tables[p].name.display_name(),
                            key.to
                        ),
                    },
                ));
            }
            for reason in &table.unproposed_keys {
                notes[t].push(format!("{reason}: not proposed, map it by hand if needed"));
            }
        }
        for (link, evidence) in links {
            candidates.push((
                link.child,
                link.parent,
                ReferenceProposal {
                    column: link.column,
                    table: self.tables[link.parent].name.display_name(),
                    to: link.to,
                    reach: ReachRule::Owned,
                    inferred: true,
                    evidence,
                },
            ));
        }

        let super::reach::Decision {
            reached,
            references,
            mut notes,
        } = self.decide_reach(&identities, candidates, fan_in, notes);

        let mut proposal = Proposal::default();
        for kind in &self.source.identity_kinds {
            if !identities.iter().flatten().any(|i| &i.kind == kind) {
                proposal.kinds_without_identity.push(kind.clone());
            }
        }
        for (t, table) in self.tables.iter().enumerate() {
            let name = table.name.display_name();
            if reached[t] == super::reach::Reached::No {
                let mut reason = self.unreachable_reason(t, &reached);
                for note in &notes[t] {
                    reason.push_str("; ");
                    reason.push_str(note);
                }
                proposal.unreachable.push(Unreachable {
                    table: name,
                    reason,
                });
                continue;
            }
            let columns = table
                .columns
                .iter()
                .enumerate()
                .map(|(c, _)| self.column(t, c, &identities, &references))
                .collect();
            let name_for_erase = name.clone();
            proposal.tables.push(TableProposal {
                name,
                estimated_rows: table.estimated_rows,
                sampled_rows: self.evidence[t].rows,
                sample_error: self.evidence[t].error.clone(),
                identities: identities[t].clone(),
                // Cloned, not taken: a later table's key is "linked from" this one's
                // references, whatever order the catalog lists the tables in.
                references: references[t].clone(),
                columns,
                notes: std::mem::take(&mut notes[t]),
                erase: match reached[t] {
                    // Erasure is PostgreSQL's only, for now: a MySQL draft proposes none.
                    _ if self.source.kind == crate::config::DatabaseKind::Mysql => {
                        EraseProposal::default()
                    }
                    super::reach::Reached::Lookup => EraseProposal {
                        action: "retain".to_owned(),
                        evidence: "proposed retain: its rows are looked up by the subject's \
                                   rows, and such a row may be shared (a household's address), \
                                   so erasure never deletes it. Check: mask its personal columns \
                                   instead (masked only when no other row points at it)"
                            .to_owned(),
                    },
                    _ => erase_proposal(&name_for_erase),
                },
            });
        }
        proposal
    }

    fn unreachable_reason(&self, t: usize, reached: &[super::reach::Reached]) -> String {
        let table = &self.tables[t];
        if !table.readable {
            return "the connected role may not read it".to_owned();
        }
        if table.columns.is_empty() {
            return "it has no columns".to_owned();
        }
        let parents: Vec<String> = table
            .foreign_keys
            .iter()
            .filter(|k| k.table != table.name)
            .map(|k| k.table.display_name())
            .collect();
        let children: Vec<(String, &str, &str)> = self
            .tables
            .iter()
            .enumerate()
            .filter(|(c, _)| reached[*c] != super::reach::Reached::No)
            .flat_map(|(_, child)| {
                child
                    .foreign_keys
                    .iter()
                    .filter(|k| k.table == table.name)
                    .map(|k| (child.name.display_name(), k.column.as_str(), k.to.as_str()))
            })
            .collect();
        let kinds = self.source.identity_kinds.join(", ");
        if !parents.is_empty() {
            format!(
                "its foreign keys lead only to tables no identity reaches ({}); no column is \
                 an identity of kind {kinds}",
                parents.join(", ")
            )
        } else if let Some((child, column, to)) = children.first() {
            format!(
                "{child}.{column} points at its {to}, but it holds no identity of kind {kinds}; \
                 if the row a subject's row points at is theirs to see, add to {child}: \
                 reference = {{ column = \"{column}\", table = \"{}\", to = \"{to}\", \
                 reach = \"lookup\" }}",
                table.name.display_name()
            )
        } else if !table.unproposed_keys.is_empty() {
            format!(
                "no column is an identity of kind {kinds}, and its links were not followed: {}",
                table.unproposed_keys.join("; ")
            )
        } else {
            format!(
                "no column is an identity of kind {kinds}, and no foreign key or sampled value \
                 links it to a table that one reaches"
            )
        }
    }

    fn column(
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
            && (column.typname == "bytea"
                || words(&column.name).last().is_some_and(|w| w == "title"))
        {
            // What a person table holds beside a name is about that person: a picture, a
            // title (`Sales Manager`, `Dr`).
            let category = if column.typname == "bytea" {
                "photo"
            } else {
                "employment"
            };
            said.push(format!("a {} column of a person table", column.typname));
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
            typname: column.typname.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasure_is_proposed_as_delete_and_a_name_kept_by_law_is_pointed_out() {
        let plain = erase_proposal("customers");
        assert_eq!(plain.action, "delete");
        assert!(plain.evidence.contains("Check:"), "{}", plain.evidence);
        assert!(!plain.evidence.contains("tax or accounting law"));
        let kept = erase_proposal("billing.customer_invoices");
        assert_eq!(kept.action, "delete");
        assert!(
            kept.evidence
                .contains("('invoices') suggests records kept for tax"),
            "{}",
            kept.evidence
        );
    }

    #[test]
    fn pascal_case_names_read_as_snake_case() {
        assert_eq!(snake_case("CustomerId"), "customer_id");
        assert_eq!(snake_case("customer_id"), "customer_id");
        assert_eq!(snake_case("Email"), "email");
        assert_eq!(snake_case("SupportRepId"), "support_rep_id");
        assert_eq!(snake_case("Address2"), "address2");
    }

    #[test]
    fn plural_table_names_become_singular() {
        assert_eq!(singular("customers"), "customer");
        assert_eq!(singular("categories"), "category");
        assert_eq!(singular("addresses"), "address");
        assert_eq!(singular("boxes"), "box");
        assert_eq!(singular("address"), "address");
        assert_eq!(singular("Users"), "user");
        assert_eq!(singular("staff"), "staff");
    }

    #[test]
    fn identifier_refinements_are_plain_words() {
        assert_eq!(identifier_for("order_id"), "identifier.order_id");
        assert_eq!(identifier_for("Order ID"), "identifier");
        assert_eq!(identifier_for("1st"), "identifier");
    }

    #[test]
    fn cycles_are_found_through_parents() {
        let parents = vec![vec![1], vec![2], vec![]];
        assert!(leads_to(0, 2, &parents));
        assert!(!leads_to(2, 0, &parents));
    }
}
