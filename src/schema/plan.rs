//! Compiling the identity graph into one plan per identity kind: for each reachable table, a
//! SELECT and a COUNT with one parameter, the identity value.
//!
//! A table reached by several paths (an identity column and a reference, say) is never
//! compiled to `path1 OR path2`: PostgreSQL cannot use an index for such an OR, and reads the
//! whole table or index instead. Each path stays a condition of its own, which an index can
//! serve, and the paths are combined with `UNION ALL`, branch k keeping only rows that no
//! earlier path reached (`(path_j) IS NOT TRUE`), so a row reached twice streams once. A
//! reference to a table reached by several paths takes the parent's keys as a `UNION ALL` of
//! one index-friendly SELECT per path.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Dialect, LookupBranch, MappedColumn, MappedTable, Plan, PlanIdentity, PlannedTable};
use crate::config::{MatchMode, ReachRule};
use crate::store::dialect::{Compare, Param};

/// An identity a plan compares: its kind, where its value is bound, and how the plan's paths
/// name it (the kind, or `email#2` for a second identity of one kind).
#[derive(Clone, Debug)]
pub(super) struct Asked {
    pub kind: String,
    pub param: Param,
    pub label: String,
}

impl Asked {
    /// The one identity of a plan, bound as the query's parameter.
    pub fn only(kind: &str) -> Vec<Asked> {
        vec![Asked {
            kind: kind.to_owned(),
            param: Param::Only,
            label: kind.to_owned(),
        }]
    }

    /// Several identities of one subject, bound together as a JSON array, in this order.
    pub fn several(kinds: &[String]) -> Vec<Asked> {
        kinds
            .iter()
            .enumerate()
            .map(|(k, kind)| {
                let nth = kinds[..=k].iter().filter(|x| *x == kind).count();
                Asked {
                    kind: kind.clone(),
                    param: Param::Element(k),
                    label: if nth == 1 {
                        kind.clone()
                    } else {
                        format!("{kind}#{nth}")
                    },
                }
            })
            .collect()
    }
}

/// How one table is reached at alias `t{alias}`: one SQL condition per path, each usable as
/// an index condition, with what it is, and the distance from the identity. Identity paths
/// come first, then `owned` references, then `lookup` ones.
#[derive(Clone, Default)]
struct Reach {
    paths: Vec<Path>,
    depth: usize,
}

#[derive(Clone)]
struct Path {
    condition: String,
    via: String,
    kind: PathKind,
    /// For a lookup: the referencing table (as callers see it), its column, and the column
    /// of this table that the key is compared with.
    lookup: Option<(String, String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Identity,
    Owned,
    Lookup,
}

impl Reach {
    fn conditions(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(|p| p.condition.as_str())
    }

    fn add(&mut self, other: Reach) {
        if other.paths.is_empty() {
            return;
        }
        self.depth = if self.paths.is_empty() {
            other.depth
        } else {
            self.depth.min(other.depth)
        };
        self.paths.extend(other.paths);
    }
}

/// The largest single value a plan lets through: one gRPC message (4 MiB, less room for the
/// message's own fields). A larger value is measured in the query and sent as NULL, so a
/// 200 MB value never crosses into the process; the extraction then refuses its row.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024 - 16 * 1024;

/// Compiles the plan for the identities `asked` (one, or several of one subject, each row
/// reached by any of them once), identity columns compared as `compare` says.
pub(super) fn compile(
    tables: &[Arc<MappedTable>],
    asked: &[Asked],
    compare: Compare,
    dialect: Dialect,
) -> Plan {
    let kind = asked
        .iter()
        .map(|a| a.label.as_str())
        .collect::<Vec<_>>()
        .join("+");
    // Conditions are built for alias depth 0; a parent's conditions are rebuilt at its depth.
    let mut planned: Vec<(usize, usize, PlannedTable)> = Vec::new();
    let mut unreachable = Vec::new();
    let mut graph = Graph::new(
        tables,
        Matcher {
            asked,
            compare,
            dialect,
        },
    );
    for (i, table) in tables.iter().enumerate() {
        let r = graph.reached(i, 0);
        match (!r.paths.is_empty()).then_some(r) {
            Some(r) => {
                let mut checks = Vec::new();
                let mut columns = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let column = format!("t0.{}", dialect.quote(&c.name));
                        let sql = c.sql(&column);
                        let expr = dialect.select(&sql);
                        match dialect.measured(&sql, MAX_VALUE_BYTES) {
                            Some((over, size)) => {
                                let value = format!("CASE WHEN {over} THEN NULL ELSE {expr} END");
                                checks.push((i + 1, over, size));
                                value
                            }
                            None => expr,
                        }
                    })
                    .collect::<Vec<_>>();
                let bounded = !checks.is_empty();
                if bounded {
                    let which = checks
                        .iter()
                        .map(|(i, over, _)| format!("WHEN {over} THEN {i}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let size = checks
                        .iter()
                        .map(|(_, over, size)| format!("WHEN {over} THEN {size}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    columns.push(format!("CASE {which} ELSE 0 END"));
                    columns.push(dialect.as_bigint(&format!("CASE {size} ELSE 0 END")));
                }
                let columns = columns.join(", ");
                let from = format!("{} AS t0", dialect.table(&table.name));
                let conditions: Vec<String> = r.conditions().map(str::to_owned).collect();
                let branches = branches(&conditions);
                let target_checks = graph.target_checks(i, &r);
                let select_sql = branches
                    .iter()
                    .map(|w| format!("SELECT {columns} FROM {from} WHERE {w}"))
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                let count_sql = match branches.as_slice() {
                    [only] => format!("SELECT count(*) FROM {from} WHERE {only}"),
                    _ => format!(
                        "SELECT {}",
                        branches
                            .iter()
                            .map(|w| format!("(SELECT count(*) FROM {from} WHERE {w})"))
                            .collect::<Vec<_>>()
                            .join(" + ")
                    ),
                };
                planned.push((
                    r.depth,
                    i,
                    PlannedTable {
                        table: table.clone(),
                        reached_via: r
                            .paths
                            .iter()
                            .map(|p| p.via.as_str())
                            .collect::<Vec<_>>()
                            .join(" | "),
                        select_sql,
                        bounded,
                        count_sql,
                        from,
                        identity_branches: r
                            .paths
                            .iter()
                            .take_while(|p| p.kind == PathKind::Identity)
                            .count(),
                        lookup_branches: r
                            .paths
                            .iter()
                            .enumerate()
                            .filter_map(|(k, p)| {
                                let (child, column, key) = p.lookup.clone()?;
                                Some(LookupBranch {
                                    branch: k,
                                    via: p.via.clone(),
                                    child,
                                    column,
                                    key,
                                })
                            })
                            .collect(),
                        target_checks,
                        branches,
                        identity_counts: Vec::new(),
                    },
                ));
            }
            None => unreachable.push((
                table.display.clone(),
                format!(
                    "it has no identity column of kind {}, no owned reference to a table \
                     the kind reaches, and no lookup into it from one",
                    asked
                        .iter()
                        .map(|a| format!("'{}'", a.kind))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        }
    }
    // Tables nearer the identity first; the data map's order among equals.
    planned.sort_by_key(|(depth, i, _)| (*depth, *i));
    let types_of = |kind: &str| {
        let mut types: Vec<String> = tables
            .iter()
            .flat_map(|t| {
                t.identities
                    .iter()
                    .filter(|i| i.kind == kind)
                    .filter_map(|i| t.column(&i.column).map(|c| c.base_type.clone()))
            })
            .collect();
        types.sort();
        types.dedup();
        types
    };
    let identity_types = types_of(&asked[0].kind);
    let identities = match asked {
        [_] => Vec::new(),
        several => several
            .iter()
            .map(|a| PlanIdentity {
                kind: a.kind.clone(),
                label: a.label.clone(),
                types: types_of(&a.kind),
            })
            .collect(),
    };
    let mut plan = Plan {
        kind,
        tables: planned.into_iter().map(|(_, _, t)| t).collect(),
        unreachable,
        identity_types,
        identity_tables: Vec::new(),
        identity_rows_sql: None,
        reach_guards: Vec::new(),
        reach_guard_sql: None,
        identities,
        identity_counts_sql: None,
    };
    if asked.len() > 1 {
        // What each identity alone reaches, counted table by table in the same snapshot.
        let alone: Vec<Plan> = asked
            .iter()
            .map(|a| compile(tables, std::slice::from_ref(a), compare, dialect))
            .collect();
        for table in &mut plan.tables {
            table.identity_counts = alone
                .iter()
                .map(|p| {
                    p.tables
                        .iter()
                        .find(|t| t.table.display == table.table.display)
                        .map(|t| {
                            t.branches
                                .iter()
                                .map(|w| format!("(SELECT count(*) FROM {} WHERE {w})", t.from))
                                .collect::<Vec<_>>()
                                .join(" + ")
                        })
                        .unwrap_or_else(|| "0".to_owned())
                })
                .collect();
        }
        plan.fill_identity_counts(dialect);
    }
    plan
}

/// The WHERE clause of each UNION ALL branch: path k, and no earlier path. `IS NOT TRUE`
/// rather than `NOT`, so that a path that is NULL for a row (a NULL column) does not hide it
/// from a later path that matches: exactly the rows `path1 OR path2 OR ...` would select,
/// each once.
fn branches(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .enumerate()
        .map(|(k, path)| {
            std::iter::once(path.clone())
                .chain(
                    paths[..k]
                        .iter()
                        .map(|earlier| format!("({earlier}) IS NOT TRUE")),
                )
                .collect::<Vec<_>>()
                .join(" AND ")
        })
        .collect()
}

/// The identities of a plan, and how its identity columns are compared.
struct Matcher<'a> {
    asked: &'a [Asked],
    compare: Compare,
    dialect: Dialect,
}

impl Matcher<'_> {
    /// The condition on `{t}.column` for the identity value at `param`, in the source's
    /// dialect.
    fn condition(
        &self,
        t: &str,
        column: &MappedColumn,
        matching: MatchMode,
        param: Param,
    ) -> String {
        let c = format!("{t}.{}", self.dialect.quote(&column.name));
        self.dialect
            .identity_condition(&column.sql(&c), self.compare, matching, param)
    }
}

/// The identity graph of one plan: which rows of each table the identity reaches, as SQL
/// conditions at any alias depth, under the reach rule (`DESIGN.md`, invariant 13).
struct Graph<'a> {
    tables: &'a [Arc<MappedTable>],
    matcher: Matcher<'a>,
    /// For each table, the `lookup` references into it: (child table, child column, column).
    lookups_into: Vec<Vec<(usize, String, String)>>,
    owned_memo: HashMap<(usize, usize), Reach>,
    lookup_memo: HashMap<(usize, usize), Reach>,
}

impl<'a> Graph<'a> {
    fn new(tables: &'a [Arc<MappedTable>], matcher: Matcher<'a>) -> Self {
        let mut lookups_into = vec![Vec::new(); tables.len()];
        for (child, table) in tables.iter().enumerate() {
            for r in &table.references {
                if r.reach == ReachRule::Lookup {
                    lookups_into[r.parent].push((child, r.column.clone(), r.to.clone()));
                }
            }
        }
        Graph {
            tables,
            matcher,
            lookups_into,
            owned_memo: HashMap::new(),
            lookup_memo: HashMap::new(),
        }
    }

    /// Every row of table `i` that belongs to the subject or is read for it.
    fn reached(&mut self, i: usize, alias: usize) -> Reach {
        let mut reach = self.owned(i, alias);
        reach.add(self.looked_up(i, alias));
        reach
    }

    /// The rows of table `i` that the identity matches, and the rows that point at an owned
    /// row through an `owned` reference, transitively. Only owned rows are followed down: a
    /// looked-up row never brings the rows that point at it.
    fn owned(&mut self, i: usize, alias: usize) -> Reach {
        if let Some(known) = self.owned_memo.get(&(i, alias)) {
            return known.clone();
        }
        let tables = self.tables;
        let table = &tables[i];
        let dialect = self.matcher.dialect;
        let t = format!("t{alias}");
        let mut reach = Reach::default();
        let asked = self.matcher.asked;
        for (a, identity) in asked.iter().flat_map(|a| {
            table
                .identities
                .iter()
                .filter(move |i| i.kind == a.kind)
                .map(move |i| (a, i))
        }) {
            let column = table
                .column(&identity.column)
                .expect("identity columns are mapped");
            reach.paths.push(Path {
                condition: self
                    .matcher
                    .condition(&t, column, identity.matching, a.param),
                via: format!(
                    "{} -> {}.{}{}",
                    a.label,
                    table.display,
                    identity.column,
                    match (self.matcher.compare, identity.matching) {
                        (_, MatchMode::Digits) => " (digits)",
                        (Compare::Exact, _) | (_, MatchMode::Exact) => "",
                        (_, MatchMode::CaseInsensitive) => " (case-insensitive)",
                    }
                ),
                kind: PathKind::Identity,
                lookup: None,
            });
        }
        for r in table
            .references
            .iter()
            .filter(|r| r.reach == ReachRule::Owned)
        {
            // Followed references are acyclic (checked by Config::validate): this ends.
            let parent = self.owned(r.parent, alias + 1);
            if parent.paths.is_empty() {
                continue;
            }
            let keys = keys_of(&tables[r.parent], &r.to, alias + 1, &parent, dialect);
            reach.add(Reach {
                paths: vec![Path {
                    condition: format!("{t}.{} IN ({keys})", dialect.quote(&r.column)),
                    via: format!(
                        "{}.{} <- {}.{}",
                        tables[r.parent].display, r.to, table.display, r.column
                    ),
                    kind: PathKind::Owned,
                    lookup: None,
                }],
                depth: parent.depth + 1,
            });
        }
        self.owned_memo.insert((i, alias), reach.clone());
        reach
    }

    /// The rows of table `i` that a reached row points at through a `lookup` reference: read
    /// for the subject, never followed down.
    fn looked_up(&mut self, i: usize, alias: usize) -> Reach {
        if let Some(known) = self.lookup_memo.get(&(i, alias)) {
            return known.clone();
        }
        let tables = self.tables;
        let dialect = self.matcher.dialect;
        let t = format!("t{alias}");
        let mut reach = Reach::default();
        for (child, column, to) in self.lookups_into[i].clone() {
            let from = self.reached(child, alias + 1);
            if from.paths.is_empty() {
                continue;
            }
            let keys = keys_of(&tables[child], &column, alias + 1, &from, dialect);
            reach.add(Reach {
                paths: vec![Path {
                    condition: format!("{t}.{} IN ({keys})", dialect.quote(&to)),
                    via: format!(
                        "{}.{column} -> {}.{to} (lookup)",
                        tables[child].display, tables[i].display
                    ),
                    kind: PathKind::Lookup,
                    lookup: Some((tables[child].display.clone(), column, to)),
                }],
                depth: from.depth + 1,
            });
        }
        self.lookup_memo.insert((i, alias), reach.clone());
        reach
    }

    /// The checks that a key the plan follows into table `i` names one row: for each
    /// `lookup` path into `i`, and for each `owned` path out of it whose target column is not
    /// unique by the catalog, an expression that is above 0 when a second row shares the key
    /// (a lookup reads two rows for one key; an owned path reaches the rows of another
    /// parent row with the subject's key). Nothing is checked where the catalog proves the
    /// key unique.
    fn target_checks(&mut self, i: usize, reach: &Reach) -> Vec<(String, String)> {
        let tables = self.tables;
        let dialect = self.matcher.dialect;
        let table = &tables[i];
        let mut checks = Vec::new();
        for path in reach.paths.iter().filter(|p| p.kind == PathKind::Lookup) {
            let Some((_, _, to)) = path.lookup.clone() else {
                continue;
            };
            if table.unique.contains(&to) {
                continue;
            }
            checks.push((
                path.via.clone(),
                format!(
                    "(SELECT count(*) - count(DISTINCT t0.{to}) FROM {} AS t0 WHERE {})",
                    dialect.table(&table.name),
                    path.condition,
                    to = dialect.quote(&to)
                ),
            ));
        }
        for r in table
            .references
            .iter()
            .filter(|r| r.reach == ReachRule::Owned)
        {
            let parent_table = &tables[r.parent];
            if parent_table.unique.contains(&r.to) {
                continue;
            }
            let parent = self.owned(r.parent, 0);
            if parent.paths.is_empty() {
                continue;
            }
            let from = format!("{} AS t0", dialect.table(&parent_table.name));
            let to = dialect.quote(&r.to);
            let keys = keys_of(parent_table, &r.to, 1, &self.owned(r.parent, 1), dialect);
            let own = branches(&parent.conditions().map(str::to_owned).collect::<Vec<_>>())
                .iter()
                .map(|b| format!("(SELECT count(*) FROM {from} WHERE t0.{to} IS NOT NULL AND {b})"))
                .collect::<Vec<_>>()
                .join(" + ");
            checks.push((
                format!(
                    "{}.{} <- {}.{}",
                    parent_table.display, r.to, table.display, r.column
                ),
                format!("((SELECT count(*) FROM {from} WHERE t0.{to} IN ({keys})) - ({own}))"),
            ));
        }
        checks
    }
}

/// `SELECT t{alias}.column FROM table AS t{alias} WHERE path` for each path of `reach` (at
/// `alias`), joined by `UNION ALL`: the keys a reference takes from the rows reached there,
/// each branch able to use its index.
fn keys_of(
    table: &MappedTable,
    column: &str,
    alias: usize,
    reach: &Reach,
    dialect: Dialect,
) -> String {
    reach
        .conditions()
        .map(|condition| {
            format!(
                "SELECT t{alias}.{} FROM {} AS t{alias} WHERE {condition}",
                dialect.quote(column),
                dialect.table(&table.name),
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

impl super::DataMap {
    /// The statements of every one-identity plan of the map (each table's rows and count, the
    /// identity rows and the reach guards), each once: what a new connection of the source can
    /// prepare before any call needs it.
    pub fn statements(&self) -> Vec<String> {
        let mut statements = std::collections::BTreeSet::new();
        for plan in self.plans.values() {
            let tables = plan
                .tables
                .iter()
                .flat_map(|t| [&t.select_sql, &t.count_sql]);
            let checks = [&plan.identity_rows_sql, &plan.reach_guard_sql]
                .into_iter()
                .flatten();
            statements.extend(tables.chain(checks));
        }
        statements.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_branch_excludes_what_earlier_paths_reached() {
        let paths = vec![
            "a = 1".to_owned(),
            "b IN (SELECT 1)".to_owned(),
            "c = 2".to_owned(),
        ];
        assert_eq!(
            branches(&paths),
            [
                "a = 1",
                "b IN (SELECT 1) AND (a = 1) IS NOT TRUE",
                "c = 2 AND (a = 1) IS NOT TRUE AND (b IN (SELECT 1)) IS NOT TRUE",
            ]
        );
        assert_eq!(branches(&paths[..1]), ["a = 1"]);
    }
}
