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

use super::{
    ColumnDecoder, Dialect, MappedColumn, MappedTable, Plan, PlannedTable, is_text_type,
    quote_ident,
};
use crate::config::MatchMode;
use crate::store::mysql::MyDecoder;
use crate::values::Decoder;

/// A looser match than the data map declares, for telling an operator what an empty answer
/// may have missed: every text identity column compared case-insensitively, or trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looser {
    CaseInsensitive,
    Trimmed,
}

/// How a plan compares identity columns with the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// As the data map declares each column (`match = ...`).
    Declared,
    /// More loosely than declared.
    Looser(Looser),
    /// Exactly, whatever the data map declares: `column = value`, case-sensitive even on a
    /// `citext` column. Erasure compares so unless its source says otherwise.
    Exact,
}

impl Looser {
    pub const ALL: [Looser; 2] = [Looser::CaseInsensitive, Looser::Trimmed];

    pub fn name(self) -> &'static str {
        match self {
            Looser::CaseInsensitive => "case_insensitive",
            Looser::Trimmed => "trimmed",
        }
    }
}

/// How one table is reached at alias `t{alias}`: one SQL condition per path, each usable as
/// an index condition, their descriptions, and the distance from the identity.
#[derive(Clone)]
struct Reach {
    paths: Vec<String>,
    via: Vec<String>,
    depth: usize,
    /// How many of the first paths are the table's own identity columns.
    identity_paths: usize,
}

/// The largest single value a plan lets through: one gRPC message (4 MiB, less room for the
/// message's own fields). A larger value is measured in the query and sent as NULL, so a
/// 200 MB value never crosses into the process; the extraction then refuses its row.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024 - 16 * 1024;

/// jsonb and arrays have no cheap length: their stored size (`pg_column_size`, compressed)
/// comes first, and only a value stored larger than this is rendered to be measured.
/// Compression never shrinks a value by more than a few hundred times, so a value above
/// [`MAX_VALUE_BYTES`] is always stored larger than this.
const STORED_BYTES_WORTH_MEASURING: usize = 8 * 1024;

/// How a column's value is found to be above [`MAX_VALUE_BYTES`] in SQL, and its size then,
/// for columns that can hold such a value.
fn measured(mapped: &MappedColumn, column: &str) -> Option<(String, String)> {
    let plain = |size: String| Some((format!("{size} > {MAX_VALUE_BYTES}"), size));
    let decoder = match mapped.decoder {
        ColumnDecoder::Postgres(decoder) => decoder,
        // MySQL and MariaDB keep the length of every value. Only these types hold more than
        // one message: a CHAR, VARCHAR, TEXT or BLOB holds at most 64 KiB.
        ColumnDecoder::MySql(_)
            if matches!(
                mapped.typname.as_str(),
                "mediumtext" | "longtext" | "mediumblob" | "longblob" | "json"
            ) =>
        {
            return plain(format!("OCTET_LENGTH({column})"));
        }
        ColumnDecoder::MySql(_) => return None,
    };
    let rendered = |text: String| {
        let size = format!("octet_length({text})");
        Some((
            format!(
                "(CASE WHEN pg_column_size({column}) <= {STORED_BYTES_WORTH_MEASURING} \
                 THEN false ELSE {size} > {MAX_VALUE_BYTES} END)"
            ),
            size,
        ))
    };
    match decoder {
        // octet_length reads the stored length of text and bytea without reading the value.
        Decoder::Text | Decoder::Bytea => plain(format!("octet_length({column})")),
        Decoder::Json => plain(format!("octet_length({column}::text)")),
        Decoder::Jsonb => rendered(format!("{column}::text")),
        Decoder::Array => rendered(format!("to_jsonb({column})::text")),
        _ => None,
    }
}

/// Compiles the plan for one identity kind, its identity columns compared as `compare` says.
pub(super) fn compile(
    tables: &[Arc<MappedTable>],
    kind: &str,
    compare: Compare,
    dialect: Dialect,
) -> Plan {
    // Conditions are built for alias depth 0; a parent's conditions are rebuilt at its depth.
    let mut memo: HashMap<(usize, usize), Option<Reach>> = HashMap::new();
    let mut planned: Vec<(usize, usize, PlannedTable)> = Vec::new();
    let mut unreachable = Vec::new();
    let matcher = Matcher {
        kind,
        compare,
        dialect,
    };
    for (i, table) in tables.iter().enumerate() {
        match reach(tables, i, &matcher, 0, &mut memo) {
            Some(r) => {
                let mut checks = Vec::new();
                let mut columns = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let column = format!("t0.{}", dialect.quote(&c.name));
                        let expr = match c.decoder {
                            ColumnDecoder::Postgres(decoder) => decoder.select_expr(&column),
                            ColumnDecoder::MySql(_) => column.clone(),
                        };
                        match measured(c, &column) {
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
                    columns.push(match dialect {
                        Dialect::Postgres => format!("(CASE {size} ELSE 0 END)::bigint"),
                        Dialect::MySql => format!("CAST(CASE {size} ELSE 0 END AS SIGNED)"),
                    });
                }
                let columns = columns.join(", ");
                let from = format!("{} AS t0", dialect.table(&table.name));
                let branches = branches(&r.paths);
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
                        reached_via: r.via.join(" | "),
                        select_sql,
                        bounded,
                        count_sql,
                        from,
                        identity_branches: r.identity_paths,
                        branches,
                    },
                ));
            }
            None => unreachable.push((
                table.display.clone(),
                format!(
                    "it has no identity column of kind '{kind}' and no reference to a table \
                     that is reachable from it"
                ),
            )),
        }
    }
    // Tables nearer the identity first; the data map's order among equals.
    planned.sort_by_key(|(depth, i, _)| (*depth, *i));
    let mut identity_types: Vec<String> = tables
        .iter()
        .flat_map(|t| {
            t.identities
                .iter()
                .filter(|i| i.kind == kind)
                .filter_map(|i| t.column(&i.column).map(|c| c.base_type.clone()))
        })
        .collect();
    identity_types.sort();
    identity_types.dedup();
    Plan {
        kind: kind.to_owned(),
        tables: planned.into_iter().map(|(_, _, t)| t).collect(),
        unreachable,
        identity_types,
        identity_tables: Vec::new(),
        identity_rows_sql: None,
    }
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

/// The identity kind of a plan, and how its identity columns are compared.
struct Matcher<'a> {
    kind: &'a str,
    compare: Compare,
    dialect: Dialect,
}

impl Matcher<'_> {
    /// The condition on `{t}.column` for the identity parameter `$1`. Each form can use an
    /// index: on the column, or on `lower(column)`.
    fn condition(&self, t: &str, column: &MappedColumn, matching: MatchMode) -> String {
        if self.dialect == Dialect::MySql {
            return self.mysql_condition(t, column, matching);
        }
        let c = format!("{t}.{}", quote_ident(&column.name));
        let text = is_text_type(&column.typname);
        match (self.compare, matching) {
            (Compare::Looser(Looser::CaseInsensitive), _) if text => {
                format!("lower({c}) = lower($1::text)")
            }
            (Compare::Looser(Looser::Trimmed), _) if text => {
                format!("btrim({c}) = btrim($1::text)")
            }
            // citext would compare case-insensitively by itself (and no index serves this).
            (Compare::Exact, _) if column.folds_case => format!("{c}::text = $1::text"),
            (Compare::Exact, _) => format!("{c} = CAST($1::text AS {})", column.base_type),
            (_, MatchMode::CaseInsensitive) if !column.folds_case => {
                format!("lower({c}) = lower($1::text)")
            }
            // citext compares case-insensitively by itself.
            _ => format!("{c} = CAST($1::text AS {})", column.base_type),
        }
    }
}

impl Matcher<'_> {
    /// The condition in MySQL's and MariaDB's SQL, with the identity as `?` (bound once per
    /// `?`). The value is cast to the column's kind, so that a number is compared as a number
    /// and not as a double, and a text column compares as its collation says: a `_ci`
    /// collation folds case by itself, so a case-insensitive match needs no `LOWER()` (which
    /// no index serves); an exact one adds a binary comparison behind the indexed one.
    fn mysql_condition(&self, t: &str, column: &MappedColumn, matching: MatchMode) -> String {
        let c = format!("{t}.{}", Dialect::MySql.quote(&column.name));
        let ColumnDecoder::MySql(decoder) = column.decoder else {
            unreachable!("a mysql plan has mysql columns");
        };
        let value = match decoder {
            MyDecoder::Int | MyDecoder::Bool => "CAST(? AS SIGNED)",
            MyDecoder::BigUnsigned => "CAST(? AS UNSIGNED)",
            MyDecoder::Decimal => "CAST(? AS DECIMAL(65, 30))",
            MyDecoder::Date => "CAST(? AS DATE)",
            MyDecoder::DateTime | MyDecoder::Timestamp => "CAST(? AS DATETIME(6))",
            MyDecoder::Bytes => "CAST(? AS BINARY)",
            _ => "?",
        };
        let text = decoder == MyDecoder::Text;
        let folding = match (self.compare, matching) {
            (Compare::Looser(Looser::Trimmed), _) if text => {
                return format!("TRIM({c}) = TRIM(?)");
            }
            (Compare::Looser(Looser::CaseInsensitive), _) => true,
            (Compare::Declared, MatchMode::CaseInsensitive) => true,
            _ => false,
        };
        match (text, folding, column.folds_case) {
            (true, true, true) => format!("{c} = ?"),
            (true, true, false) => format!("LOWER({c}) = LOWER(?)"),
            (true, false, true) => format!("{c} = ? AND {c} = CAST(? AS BINARY)"),
            _ => format!("{c} = {value}"),
        }
    }
}

fn reach(
    tables: &[Arc<MappedTable>],
    i: usize,
    matcher: &Matcher<'_>,
    alias: usize,
    memo: &mut HashMap<(usize, usize), Option<Reach>>,
) -> Option<Reach> {
    let kind = matcher.kind;
    if let Some(known) = memo.get(&(i, alias)) {
        return known.clone();
    }
    let table = &tables[i];
    let t = format!("t{alias}");
    let mut paths = Vec::new();
    let mut via = Vec::new();
    let mut depth = usize::MAX;
    for identity in &table.identities {
        if identity.kind == kind {
            let column = table
                .column(&identity.column)
                .expect("identity columns are mapped");
            paths.push(matcher.condition(&t, column, identity.matching));
            via.push(format!(
                "{kind} -> {}.{}{}",
                table.display,
                identity.column,
                match (matcher.compare, identity.matching) {
                    (Compare::Exact, _) | (_, MatchMode::Exact) => "",
                    (_, MatchMode::CaseInsensitive) => " (case-insensitive)",
                }
            ));
            depth = 0;
        }
    }
    for (column, parent, to) in &table.references {
        // Reference graphs are acyclic (checked by Config::validate), so this terminates.
        if let Some(p) = reach(tables, *parent, matcher, alias + 1, memo) {
            let parent_table = &tables[*parent];
            let a = alias + 1;
            let keys = p
                .paths
                .iter()
                .map(|condition| {
                    format!(
                        "SELECT t{a}.{} FROM {} AS t{a} WHERE {condition}",
                        matcher.dialect.quote(to),
                        matcher.dialect.table(&parent_table.name),
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            paths.push(format!("{t}.{} IN ({keys})", matcher.dialect.quote(column)));
            via.push(format!(
                "{}.{to} <- {}.{column}",
                parent_table.display, table.display
            ));
            depth = depth.min(p.depth + 1);
        }
    }
    let identity_paths = if depth == 0 {
        table.identities.iter().filter(|i| i.kind == kind).count()
    } else {
        0
    };
    let result = (!paths.is_empty()).then_some(Reach {
        paths,
        via,
        depth,
        identity_paths,
    });
    memo.insert((i, alias), result.clone());
    result
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
