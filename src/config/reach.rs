//! The reach rule as the configuration states it (`DESIGN.md`, invariant 13): which tables
//! are person tables, and the checks a data map passes before any catalog is read: every
//! reference says which rows it reaches, no followed reference reaches a person table, a
//! row belongs to one person, a looked-up row is never deleted, and followed references
//! form no cycle.

use std::collections::{HashMap, HashSet};

use super::erasure::{ColumnErasure, EraseAction};
use super::{QualifiedName, ReachRule, SourceConfig, TableConfig};

impl SourceConfig {
    /// Whether one row of `table` is one person, so that `max_identity_rows` guards the
    /// identity's matches in it: a table named in `person_tables`, or by default a table with
    /// an identity column that another mapped table references.
    pub fn one_row_per_person(&self, table: &QualifiedName) -> bool {
        if !self.person_tables.is_empty() {
            return self.listed_person_table(table);
        }
        self.has_identity(table)
            && self.tables.iter().any(|t| {
                t.reference
                    .as_slice()
                    .iter()
                    .any(|r| QualifiedName::parse(&r.table).as_ref() == Some(table))
            })
    }

    /// Whether `table` is a person table for the reach rule: a table with an identity column
    /// (its rows are found by the identity itself), or one named in `person_tables`. A row of
    /// one is reached only by the identity matching it, never through another row.
    pub fn is_person_table(&self, table: &QualifiedName) -> bool {
        self.has_identity(table) || self.listed_person_table(table)
    }

    fn has_identity(&self, table: &QualifiedName) -> bool {
        self.tables.iter().any(|t| {
            QualifiedName::parse(&t.name).as_ref() == Some(table)
                && !t.identity.as_slice().is_empty()
        })
    }

    fn listed_person_table(&self, table: &QualifiedName) -> bool {
        self.person_tables
            .iter()
            .any(|t| QualifiedName::parse(t).as_ref() == Some(table))
    }

    /// The most rows one subject may reach by `lookup` in `table`.
    pub fn max_reached_rows(&self, table: &QualifiedName) -> u64 {
        self.tables
            .iter()
            .find(|t| QualifiedName::parse(&t.name).as_ref() == Some(table))
            .and_then(|t| t.max_reached_rows)
            .unwrap_or(self.max_reached_rows)
    }

    /// A row belongs to one person: a table owned through two person tables (a rental
    /// through its customer and through the clerk who handed it over) would give one
    /// person's rows to the other. Only run on an acyclic map.
    pub(super) fn validate_owners(&self, at: &str, problems: &mut Vec<String>) {
        let mut owners: HashMap<QualifiedName, Vec<(QualifiedName, String)>> = HashMap::new();
        fn owners_of(
            source: &SourceConfig,
            name: &QualifiedName,
            memo: &mut HashMap<QualifiedName, Vec<(QualifiedName, String)>>,
        ) -> Vec<(QualifiedName, String)> {
            if let Some(known) = memo.get(name) {
                return known.clone();
            }
            // A person table's rows are found by its identity: it is its own owner (its
            // only owned references join identity columns of one kind, the same person).
            if source.is_person_table(name) {
                let own = vec![(name.clone(), name.display_name())];
                memo.insert(name.clone(), own.clone());
                return own;
            }
            let mut found: Vec<(QualifiedName, String)> = Vec::new();
            let table = source
                .tables
                .iter()
                .find(|t| QualifiedName::parse(&t.name).as_ref() == Some(name));
            for r in table.iter().flat_map(|t| t.reference.as_slice()) {
                let Some(parent) = QualifiedName::parse(&r.table) else {
                    continue;
                };
                if r.rule() != Some(ReachRule::Owned) {
                    continue;
                }
                for (owner, path) in owners_of(source, &parent, memo) {
                    if !found.iter().any(|(o, _)| o == &owner) {
                        found.push((
                            owner,
                            format!("{path} <- {}.{}", name.display_name(), r.column),
                        ));
                    }
                }
            }
            memo.insert(name.clone(), found.clone());
            found
        }
        for table in &self.tables {
            let Some(name) = QualifiedName::parse(&table.name) else {
                continue;
            };
            let found = owners_of(self, &name, &mut owners);
            if found.len() > 1 {
                problems.push(format!(
                    "{at}.tables.{}: its rows are owned through {} person tables ({}); a row \
                     belongs to one person, so one of them would get the other's rows (a \
                     rental's clerk, a ticket's agent). Make the references of all but its \
                     owner reach = \"none\"",
                    table.name,
                    found.len(),
                    found
                        .iter()
                        .map(|(_, path)| path.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
    }

    /// The reach rule of each of `table`'s references: given, and safe. Rows of a person
    /// table are reached only by the identity matching them, so no followed reference may
    /// lead into one; a row reached by `lookup` may be shared, so it is never deleted.
    pub(super) fn validate_reach(
        &self,
        tat: &str,
        table: &TableConfig,
        problems: &mut Vec<String>,
    ) {
        let Some(name) = QualifiedName::parse(&table.name) else {
            return;
        };
        for reference in table.reference.as_slice() {
            let rat = format!(
                "{tat}.reference ({} -> {}.{})",
                reference.column, reference.table, reference.to
            );
            let reach = match &reference.reach {
                Some(crate::config::ReachValue::Rule(rule)) => *rule,
                Some(crate::config::ReachValue::Unknown(word)) => {
                    problems.push(format!(
                        "{rat}: reach = \"{word}\" is not a reach rule; use {}",
                        ReachRule::CHOICES
                    ));
                    continue;
                }
                None => {
                    problems.push(format!(
                        "{rat}: say which rows it reaches: {}",
                        ReachRule::CHOICES
                    ));
                    continue;
                }
            };
            let Some(parent) = QualifiedName::parse(&reference.table) else {
                continue; // reported with the reference's table
            };
            let path = format!(
                "{}.{} <- {}.{}",
                parent.display_name(),
                reference.to,
                name.display_name(),
                reference.column
            );
            match reach {
                ReachRule::Owned
                    if self.is_person_table(&name)
                        && !self.same_identity(
                            table,
                            &reference.column,
                            &parent,
                            &reference.to,
                        ) =>
                {
                    problems.push(format!(
                        "{rat}: reach = \"owned\" would reach rows of '{}', a person table (it \
                     has an identity column, or person_tables names it), through another \
                     table's row ({path}): one person's request could return other people. Its \
                     rows are found by the identity itself: give it an identity column for each \
                     kind that should reach it, and make this reach = \"none\" (or \"lookup\" \
                     if '{}' is what the row points at)",
                        name.display_name(),
                        parent.display_name(),
                    ))
                }
                ReachRule::Lookup if self.is_person_table(&parent) => problems.push(format!(
                    "{rat}: reach = \"lookup\" would read the row of '{}', a person table, that \
                     the subject's row points at ({path}): that is another person's row. Make \
                     it reach = \"none\"",
                    parent.display_name()
                )),
                _ => {}
            }
        }
        let looked_up = self.tables.iter().any(|t| {
            t.reference.as_slice().iter().any(|r| {
                r.rule() == Some(ReachRule::Lookup)
                    && QualifiedName::parse(&r.table).as_ref() == Some(&name)
            })
        });
        if looked_up
            && let Some(erase) = &table.erase
            && erase.action == crate::config::erasure::EraseAction::Delete
        {
            problems.push(format!(
                "{tat}.erase: its rows are reached by lookup, and such a row may be shared (a \
                 household's address): erasure never deletes it. Use action = \"mask\" (applied \
                 only when no other row points at it) or \"retain\""
            ));
        }
    }

    /// Whether `column` of `table` and `to` of `parent` are identity columns of one kind: an
    /// owned reference between them follows the very value the identity matched (a ticket's
    /// requester e-mail to the customer's e-mail), so it reaches the same person.
    fn same_identity(
        &self,
        table: &TableConfig,
        column: &str,
        parent: &QualifiedName,
        to: &str,
    ) -> bool {
        let Some(parent) = self
            .tables
            .iter()
            .find(|t| QualifiedName::parse(&t.name).as_ref() == Some(parent))
        else {
            return false;
        };
        table.identity.as_slice().iter().any(|mine| {
            mine.column == column
                && parent
                    .identity
                    .as_slice()
                    .iter()
                    .any(|theirs| theirs.column == to && theirs.kind == mine.kind)
        })
    }

    /// Finds a cycle among the followed references, if there is one.
    pub(super) fn reference_cycle(&self) -> Option<Vec<String>> {
        let parents: HashMap<String, Vec<String>> = self
            .tables
            .iter()
            .filter_map(|t| {
                let qn = QualifiedName::parse(&t.name)?;
                let ps = t
                    .reference
                    .as_slice()
                    .iter()
                    .filter(|r| r.followed())
                    .filter_map(|r| QualifiedName::parse(&r.table).map(|q| q.display_name()))
                    .collect();
                Some((qn.display_name(), ps))
            })
            .collect();
        fn visit(
            node: &str,
            parents: &HashMap<String, Vec<String>>,
            path: &mut Vec<String>,
            done: &mut HashSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(pos) = path.iter().position(|p| p == node) {
                let mut cycle = path[pos..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_owned());
            for parent in parents.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(parent, parents, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(node.to_owned());
            None
        }
        let mut done = HashSet::new();
        let mut names: Vec<&String> = parents.keys().collect();
        names.sort();
        names
            .into_iter()
            .find_map(|name| visit(name, &parents, &mut Vec::new(), &mut done))
    }
}

/// A retained table whose rows an erasure keeps whole, and that a later access request for
/// the same person can no longer reach: every path to it runs through a row the erasure
/// deletes or a link it masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptUnreachable {
    /// The retained table's place in the source's `tables`.
    pub index: usize,
    /// The retained table, as callers name it.
    pub table: String,
    /// What breaks each of its paths: a deleted table, or a masked `table.column`.
    pub broken_by: Vec<String>,
}

impl SourceConfig {
    /// The retained tables (`erase = { action = "retain" }`) that the identity reaches now and
    /// would no longer reach after an erasure: their rows are still the person's, kept by law
    /// or contract, and the right of access still applies to them. Read from the map alone.
    pub fn kept_unreachable_after_erasure(&self) -> Vec<KeptUnreachable> {
        let names: Vec<Option<QualifiedName>> = self
            .tables
            .iter()
            .map(|t| QualifiedName::parse(&t.name))
            .collect();
        let index = |name: &str| {
            let name = QualifiedName::parse(name)?;
            names.iter().position(|n| n.as_ref() == Some(&name))
        };
        let action = |i: usize| self.tables[i].erase.as_ref().map(|e| e.action);
        let deleted = |i: usize| action(i) == Some(EraseAction::Delete);
        let masked = |i: usize, column: &str| {
            action(i) == Some(EraseAction::Mask)
                && self.tables[i].erase.as_ref().is_some_and(|e| {
                    e.mask
                        .get(column)
                        .is_some_and(|m| !matches!(m, ColumnErasure::Retain { .. }))
                })
        };
        // Which tables the identity reaches: before an erasure (`after` false), or after one
        // (deleted tables hold nothing, masked columns link nothing).
        let reach = |after: bool| -> Vec<bool> {
            let gone = |i: usize| after && deleted(i);
            let cut = |i: usize, column: &str| after && masked(i, column);
            let mut reached: Vec<bool> = (0..self.tables.len())
                .map(|i| {
                    !gone(i)
                        && self.tables[i]
                            .identity
                            .as_slice()
                            .iter()
                            .any(|id| !cut(i, &id.column))
                })
                .collect();
            loop {
                let mut changed = false;
                for (child, table) in self.tables.iter().enumerate() {
                    for r in table.reference.as_slice() {
                        let Some(parent) = index(&r.table) else {
                            continue;
                        };
                        if gone(child)
                            || gone(parent)
                            || cut(child, &r.column)
                            || cut(parent, &r.to)
                        {
                            continue;
                        }
                        // An owned row is reached through its parent; a looked-up row
                        // through the row that points at it.
                        let (from, to) = match r.rule() {
                            Some(ReachRule::Owned) => (parent, child),
                            Some(ReachRule::Lookup) => (child, parent),
                            _ => continue,
                        };
                        if reached[from] && !reached[to] {
                            reached[to] = true;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    return reached;
                }
            }
        };
        let (before, after) = (reach(false), reach(true));
        let mut found = Vec::new();
        for (i, table) in self.tables.iter().enumerate() {
            if action(i) != Some(EraseAction::Retain) || !before[i] || after[i] {
                continue;
            }
            let mut broken_by = Vec::new();
            let mut note = |what: String| {
                if !broken_by.contains(&what) {
                    broken_by.push(what);
                }
            };
            // The links into this table that an erasure breaks.
            for (child, other) in self.tables.iter().enumerate() {
                for r in other.reference.as_slice() {
                    let Some(parent) = index(&r.table) else {
                        continue;
                    };
                    let from = match r.rule() {
                        Some(ReachRule::Owned) if child == i => parent,
                        Some(ReachRule::Lookup) if parent == i => child,
                        _ => continue,
                    };
                    if deleted(from) {
                        note(self.tables[from].name.clone());
                    } else if masked(child, &r.column) {
                        note(format!("{}.{}", other.name, r.column));
                    } else if masked(parent, &r.to) {
                        note(format!("{}.{}", self.tables[parent].name, r.to));
                    } else if !after[from] {
                        note(format!(
                            "{} (itself no longer reached)",
                            self.tables[from].name
                        ));
                    }
                }
            }
            found.push(KeptUnreachable {
                index: i,
                table: names[i]
                    .as_ref()
                    .map(QualifiedName::display_name)
                    .unwrap_or_else(|| table.name.clone()),
                broken_by,
            });
        }
        found
    }
}
