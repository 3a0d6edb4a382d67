//! From catalog and evidence to a proposal: identities, references (declared and inferred),
//! a category and rule for every column, and the tables no identity reaches, with why.
//!
//! Every proposal carries its evidence in words and counts. None carries a value.

use super::columns::Shape;
use super::draft::kind_shape;
pub use super::draft::{
    CoerceProposal, ColumnProposal, EraseProposal, IdentityProposal, LinkCandidate, Planner,
    Proposal, ReferenceProposal, TableProposal, Unreachable, singular, snake_case,
    stored_form_note,
};
use super::evidence::ColumnEvidence;
use crate::config::{MatchMode, ReachRule};

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

impl Planner<'_> {
    /// Whether a row of table `t` is one person: an identity column of it is unique (a
    /// customer's e-mail), where an invoice's billing e-mail repeats.
    pub(super) fn one_per_person(&self, t: usize, identities: &[Vec<IdentityProposal>]) -> bool {
        identities[t]
            .iter()
            .any(|i| self.tables[t].is_unique(&i.column))
    }

    /// The category a column's name or samples point at, if any.
    pub(super) fn column_shape(&self, t: usize, c: usize) -> Option<String> {
        self.shape(t, c).category().map(str::to_owned)
    }

    pub(super) fn shape(&self, t: usize, c: usize) -> Shape {
        Shape::of(
            &self.tables[t].columns[c],
            &self.evidence[t].columns[c],
            self.matrix,
        )
    }

    /// What detectors found inside a text column's samples, when it meets the share of
    /// samples the discovery asks for: the categories and how often, never a value.
    pub(super) fn free_text(&self, evidence: &ColumnEvidence) -> Option<String> {
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

    pub(super) fn usable(&self, t: usize) -> bool {
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
        // A phone alone does not make a row a person's: an address carries one, and is
        // looked up from the person's row, not matched as a person.
        let describes_person = (0..table.columns.len()).any(|c| {
            matches!(
                self.shape(t, c).category(),
                Some("name" | "contact.email" | "birth_date")
            )
        });
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
                if kind_shape(kind) == Some("contact.phone") && !describes_person {
                    continue;
                }
                let normalizer = self.source.normalizer(kind);
                let lowercases = normalizer.lowercases();
                // citext compares case-insensitively as it is.
                let case_insensitive = lowercases
                    && column.is_text()
                    && !column.folds_case
                    && evidence.with_capitals > 0;
                let mut evidence_text = why;
                if unique && !evidence_text.starts_with("unique") {
                    evidence_text.push_str("; unique");
                }
                if case_insensitive {
                    evidence_text.push_str(&format!(
                        "; {} of {} samples have capitals, and {kind} values are lower-cased \
                         (index it: {})",
                        evidence.with_capitals,
                        evidence.non_null,
                        crate::schema::Dialect::of(self.source.kind).create_index(
                            &table.name,
                            &column.name,
                            crate::store::dialect::IndexOn::Lower
                        )
                    ));
                }
                let mut matching = if case_insensitive {
                    MatchMode::CaseInsensitive
                } else {
                    MatchMode::Exact
                };
                // Values stored as typed (a phone as `(503) 555-9831`) that no normalised
                // identity equals: compared by their digits when that finds them, or said.
                if column.is_text() {
                    let form = normalizer
                        .stored_form(evidence.values.iter().map(String::as_str), case_insensitive);
                    if form.mostly_unmatched(false) {
                        let (note, digits) = stored_form_note(
                            crate::schema::Dialect::of(self.source.kind),
                            &table.name,
                            &column.name,
                            kind,
                            &normalizer.describe(),
                            form,
                        );
                        evidence_text.push_str("; ");
                        evidence_text.push_str(&note);
                        if digits {
                            matching = MatchMode::Digits;
                        }
                    }
                }
                found.push(IdentityProposal {
                    kind: kind.clone(),
                    column: column.name.clone(),
                    matching,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::discover::draft::{identifier_for, leads_to};

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
