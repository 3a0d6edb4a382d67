//! Which way each link of a draft reaches rows, under the reach rule (`DESIGN.md`,
//! invariant 13): `owned` down from a subject's row (an order's `customer_id`), `lookup` up
//! from a person's row to the row it points at (a customer's `address_id`), or not at all.
//!
//! Decided from the catalog and the data. A person table (one with an identity) is never
//! reached through another row. A table that a person's row points at (an address, a store)
//! is looked up, never owned: another person's row may point at it too. A hub, such a table
//! whose rows many people's rows point at (a store, a shipper), is not even looked up. A
//! table that points at several person tables belongs to one of them, the one whose key
//! repeats least among its rows (a rental to its customer, not to the clerk who handed it
//! over). Every link left out is noted with its evidence, never a value.

use std::collections::{BTreeSet, HashMap};

use super::draft::{IdentityProposal, Planner, ReferenceProposal, leads_to};
use crate::config::ReachRule;

/// Rows per distinct key above which the rows a key points at are shared by many people: a
/// hub. A household's address is pointed at by one or two people; a store by hundreds.
pub const HUB_FAN_IN: f64 = 3.0;

/// The rows per distinct key of each measured link, by (child table, column).
pub type FanIn = HashMap<(usize, String), f64>;

/// How a table of the draft is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    No,
    /// By an identity, or down an owned reference.
    Owned,
    /// Only up a lookup from a person's row: read for the subject, never followed down.
    Lookup,
}

/// What the reach rule makes of a draft's candidate links.
pub struct Decision {
    pub reached: Vec<Reached>,
    pub references: Vec<Vec<ReferenceProposal>>,
    pub notes: Vec<Vec<String>>,
}

impl Planner<'_> {
    /// Whether some column of table `t` looks personal by its name or samples.
    fn holds_personal_data(&self, t: usize) -> bool {
        (0..self.tables[t].columns.len()).any(|c| self.column_shape(t, c).is_some())
    }

    /// Decides the reach of each candidate link `(child, parent, reference)`.
    pub fn decide_reach(
        &self,
        identities: &[Vec<IdentityProposal>],
        candidates: Vec<(usize, usize, ReferenceProposal)>,
        fan_in: &FanIn,
        mut notes: Vec<Vec<String>>,
    ) -> Decision {
        let n = self.tables.len();
        // As the service reads a map: a table with an identity is a person table. (A table
        // that only describes a person, a name beside a birth date, is often that person's
        // own record, an identity check say, and is owned like any other.)
        let person: Vec<bool> = identities.iter().map(|i| !i.is_empty()).collect();
        let name = |t: usize| self.tables[t].name.display_name();
        let fan = |child: usize, column: &str| fan_in.get(&(child, column.to_owned())).copied();
        // Hubs: rows that people's rows point at in numbers.
        let mut hub = vec![false; n];
        for (child, parent, r) in &candidates {
            if person[*child]
                && !person[*parent]
                && let Some(f) = fan(*child, &r.column)
                && f > HUB_FAN_IN
            {
                if !hub[*parent] {
                    notes[*parent].push(format!(
                        "a hub: {} rows of {} point at each of its rows (sampled), so its rows \
                         are many people's; not reached",
                        round(f),
                        name(*child)
                    ));
                }
                hub[*parent] = true;
            }
        }
        // Tables a person's row points at: looked up, never owned.
        let pointed_at: Vec<Option<String>> = (0..n)
            .map(|t| {
                candidates
                    .iter()
                    .find(|(child, parent, _)| *parent == t && person[*child])
                    .map(|(child, _, r)| format!("{}.{}", name(*child), r.column))
            })
            .collect();
        // The owner of a table that points at several person tables: the person table whose
        // key repeats least among its rows (the most rows of that table per row, when the
        // data cannot tell).
        let mut owner: Vec<Option<usize>> = vec![None; n];
        for (child, slot) in owner.iter_mut().enumerate() {
            *slot = candidates
                .iter()
                .filter(|(c, parent, _)| *c == child && person[*parent] && !person[child])
                .min_by(|(_, pa, ra), (_, pb, rb)| {
                    let (fa, fb) = (fan(child, &ra.column), fan(child, &rb.column));
                    fa.unwrap_or(f64::MAX)
                        .total_cmp(&fb.unwrap_or(f64::MAX))
                        .then(
                            self.tables[*pb]
                                .estimated_rows
                                .total_cmp(&self.tables[*pa].estimated_rows),
                        )
                })
                .map(|(_, parent, _)| *parent);
        }

        let mut reached: Vec<Reached> = identities
            .iter()
            .map(|i| match i.is_empty() {
                true => Reached::No,
                false => Reached::Owned,
            })
            .collect();
        let mut taken = vec![false; candidates.len()];
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut chosen: Vec<Option<ReachRule>> = vec![None; candidates.len()];
        // Owned, outwards from the identity tables, an edge at a time.
        loop {
            let mut changed = false;
            for (i, (child, parent, r)) in candidates.iter().enumerate() {
                if taken[i] || reached[*parent] != Reached::Owned {
                    continue;
                }
                taken[i] = true;
                let refusal = if person[*child] && !self.same_identity(identities, *child, r) {
                    Some(format!(
                        "{}: a person table's rows are found by the identity itself, never \
                         through {}'s rows; not proposed",
                        r.column,
                        name(*parent)
                    ))
                } else if hub[*child] || hub[*parent] {
                    Some(format!(
                        "{}: {} is a hub; not proposed",
                        r.column,
                        name(if hub[*child] { *child } else { *parent })
                    ))
                } else if let Some(by) = &pointed_at[*child] {
                    Some(format!(
                        "{}: a person's row points at this table ({by}), so its rows are \
                         looked up, never owned through {}; not proposed",
                        r.column,
                        name(*parent)
                    ))
                } else if person[*parent]
                    && let Some(owner) = owner[*child]
                    && owner != *parent
                {
                    Some(format!(
                        "{}: its rows belong to one person, through {}'s key, whose values \
                         repeat least ({} rows each, sampled, against {} here); not proposed",
                        r.column,
                        name(owner),
                        candidates
                            .iter()
                            .find(|(c, p, _)| *c == *child && *p == owner)
                            .and_then(|(_, _, o)| fan(*child, &o.column))
                            .map_or("?".to_owned(), round),
                        fan(*child, &r.column).map_or("?".to_owned(), round),
                    ))
                } else if leads_to(*parent, *child, &parents) {
                    Some(format!(
                        "a link to {} would close a cycle: not proposed",
                        name(*parent)
                    ))
                } else {
                    None
                };
                if let Some(note) = refusal {
                    notes[*child].push(note);
                    continue;
                }
                chosen[i] = Some(ReachRule::Owned);
                parents[*child].push(*parent);
                reached[*child] = Reached::Owned;
                changed = true;
            }
            if !changed {
                break;
            }
        }
        // Lookups: from a person's row up to a row that is not a person's, nor a hub's, and
        // holds something personal (an address).
        for (i, (child, parent, r)) in candidates.iter().enumerate() {
            if chosen[i].is_some()
                || !person[*child]
                || reached[*child] != Reached::Owned
                || person[*parent]
                || hub[*parent]
                || reached[*parent] == Reached::Owned
                || !self.holds_personal_data(*parent)
                || fan(*child, &r.column).is_some_and(|f| f > HUB_FAN_IN)
            {
                continue;
            }
            chosen[i] = Some(ReachRule::Lookup);
            reached[*parent] = Reached::Lookup;
        }
        let mut references: Vec<Vec<ReferenceProposal>> = vec![Vec::new(); n];
        for (i, (child, _, mut reference)) in candidates.into_iter().enumerate() {
            if let Some(reach) = chosen[i] {
                reference.reach = reach;
                if reach == ReachRule::Lookup {
                    reference.evidence.push_str(
                        "; lookup: the row it points at is read for the subject, and goes no \
                         further",
                    );
                }
                references[child].push(reference);
            }
        }
        // A child may hold two candidates for one link (a key and a sampled link); keep each
        // (column, table, to) once.
        for refs in &mut references {
            let mut seen = BTreeSet::new();
            refs.retain(|r| seen.insert((r.column.clone(), r.table.clone(), r.to.clone())));
        }
        Decision {
            reached,
            references,
            notes,
        }
    }

    /// Whether `reference` of table `child` joins two identity columns of one kind (a
    /// ticket's requester e-mail to the customer's e-mail): it reaches the same person.
    fn same_identity(
        &self,
        identities: &[Vec<IdentityProposal>],
        child: usize,
        reference: &ReferenceProposal,
    ) -> bool {
        let Some(parent) = self
            .tables
            .iter()
            .position(|t| t.name.display_name() == reference.table)
        else {
            return false;
        };
        identities[child].iter().any(|mine| {
            mine.column == reference.column
                && identities[parent]
                    .iter()
                    .any(|theirs| theirs.column == reference.to && theirs.kind == mine.kind)
        })
    }
}

/// A fan-in for people to read: whole numbers, or one decimal below ten.
fn round(f: f64) -> String {
    if f >= 10.0 {
        format!("{f:.0}")
    } else {
        format!("{f:.1}")
    }
}

/// The query that measures a link's fan-in on at most 100,000 of the child's rows: rows per
/// distinct key, times 1000, as one integer (NULL keys left out).
pub fn fan_in_sql(table: &str, column: &str) -> String {
    format!(
        "SELECT CAST(COUNT(c) * 1000 / NULLIF(COUNT(DISTINCT c), 0) AS {}) FROM \
         (SELECT {column} AS c FROM {table} LIMIT 100000) AS s",
        if table.starts_with('`') {
            "SIGNED"
        } else {
            "bigint"
        }
    )
}
