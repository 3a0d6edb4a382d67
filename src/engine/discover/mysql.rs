//! Drafting the data map of a MySQL or MariaDB source: its catalog from `information_schema`,
//! described as the draft's planner reads a catalog, samples of each table read in one
//! consistent snapshot, and links without foreign keys looked up in it. The planner and the
//! evidence it weighs are the same as for PostgreSQL.

use super::catalog::{Column, Filter, ForeignKey, Table};
use super::evidence::{self, TableEvidence};
use super::{Draft, Options, keep_values, link_evidence, propose};
use crate::classify::Matrix;
use crate::config::{QualifiedName, SourceConfig};
use crate::schema::Dialect;
use crate::store::error::DbError;
use crate::store::mysql::{ColumnInfo, MyDecoder, MySqlPool, Snapshot, table_info, table_names};

/// Drafts the data map of a MySQL or MariaDB source. Each statement is limited to the
/// options' statement timeout.
pub async fn discover(
    pool: &MySqlPool,
    source: &SourceConfig,
    matrix: &Matrix,
    options: &Options,
) -> Result<propose::Proposal, DbError> {
    let limit = options.sample.min(super::MAX_SAMPLE);
    let tables = read_catalog(pool, &options.filter).await?;
    let statement_limit = tokio::time::Instant::now() + options.statement_timeout;
    let mut snapshot = pool.snapshot(Some(statement_limit)).await?;
    let mut sampled = Vec::with_capacity(tables.len());
    for table in &tables {
        sampled.push(sample(&mut snapshot, table, limit, matrix).await);
    }
    let mut draft = Draft::new(&tables, &sampled, source, matrix, options);
    let mut links = Vec::new();
    for candidate in std::mem::take(&mut draft.candidates) {
        if let Some(evidence) = check_link(&mut snapshot, &tables, &sampled, &candidate).await {
            links.push((candidate, evidence));
        }
    }
    let mut fan_in = super::reach::FanIn::new();
    for (t, column, sql) in draft.fan_in_queries(&links, Dialect::MySql) {
        // A failed measure (a timeout) leaves the link without one.
        if let Ok(per_thousand) = snapshot.count_of(&sql, &[]).await {
            fan_in.insert((t, column), per_thousand as f64 / 1000.0);
        }
    }
    let proposal = draft.propose(links, &fan_in);
    drop(sampled);
    snapshot.finish().await?;
    Ok(proposal)
}

/// The base tables of the source's database that `filter` selects, with their columns and
/// keys, named as the data map names them (without a schema).
async fn read_catalog(pool: &MySqlPool, filter: &Filter) -> Result<Vec<Table>, DbError> {
    let names: Vec<(QualifiedName, f64)> = table_names(pool)
        .await?
        .into_iter()
        .map(|(table, rows)| {
            let name = QualifiedName {
                schema: "public".into(),
                table,
            };
            (name, rows)
        })
        .filter(|(name, _)| !filter.excludes(name))
        .collect();
    let mut tables = Vec::with_capacity(names.len());
    for (name, estimated_rows) in &names {
        let info = table_info(pool, &name.table).await?;
        let mut table = Table {
            name: name.clone(),
            estimated_rows: *estimated_rows,
            columns: info.columns.iter().enumerate().map(column).collect(),
            primary_key: match info.primary_key.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
            unique: info
                .index_leads
                .iter()
                .filter(|(_, unique)| *unique)
                .map(|(column, _)| column.clone())
                .collect(),
            foreign_keys: Vec::new(),
            unproposed_keys: Vec::new(),
            readable: true,
        };
        for key in &info.foreign_keys {
            match (&key.columns[..], &key.parent_columns[..]) {
                _ if !names.iter().any(|(n, _)| n.table == key.parent) => table
                    .unproposed_keys
                    .push("a foreign key to a table outside the selection".to_owned()),
                ([column], [to]) => table.foreign_keys.push(ForeignKey {
                    column: column.clone(),
                    table: QualifiedName {
                        schema: "public".into(),
                        table: key.parent.clone(),
                    },
                    to: to.clone(),
                }),
                _ => table.unproposed_keys.push(format!(
                    "a foreign key over several columns to {}",
                    key.parent
                )),
            }
        }
        tables.push(table);
    }
    Ok(tables)
}

/// A column as the planner reads one: the PostgreSQL type that holds the same values
/// (`typname`, `typcategory`), so that text, integers, dates and JSON are told apart alike.
fn column((i, info): (usize, &ColumnInfo)) -> Column {
    let (typname, typcategory) = match info.decoder {
        MyDecoder::Bool => ("bool", "B"),
        MyDecoder::Int => match info.data_type.as_str() {
            "tinyint" | "smallint" | "year" => ("int2", "N"),
            "bigint" => ("int8", "N"),
            _ => ("int4", "N"),
        },
        MyDecoder::BigUnsigned => ("numeric", "N"),
        MyDecoder::Bit { .. } => ("varbit", "V"),
        MyDecoder::Float => ("float8", "N"),
        MyDecoder::Decimal => ("numeric", "N"),
        MyDecoder::Text => match info.data_type.as_str() {
            "char" => ("bpchar", "S"),
            "varchar" => ("varchar", "S"),
            _ => ("text", "S"),
        },
        MyDecoder::Bytes => ("bytea", "U"),
        MyDecoder::Date => ("date", "D"),
        MyDecoder::DateTime => ("timestamp", "D"),
        MyDecoder::Timestamp => ("timestamptz", "D"),
        MyDecoder::Time { .. } => ("time", "D"),
        MyDecoder::Json => ("json", "U"),
    };
    Column {
        name: info.name.clone(),
        attnum: i16::try_from(i + 1).unwrap_or(i16::MAX),
        typname: typname.to_owned(),
        typcategory: typcategory.to_owned(),
    }
}

/// The sampling query: the first `limit` rows as the server reads them (MySQL has no
/// TABLESAMPLE), each value as text, JSON documents over the row's budget as the empty
/// string, and strings up to the row's text budget.
fn sample_sql(table: &Table, limit: u32) -> String {
    let (json_limit, text_limit) = (evidence::json_limit(table), evidence::text_limit(table));
    let exprs: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let quoted = Dialect::MySql.quote(&c.name);
            if c.is_json() {
                format!(
                    "CASE WHEN OCTET_LENGTH({quoted}) <= {json_limit} \
                     THEN CAST({quoted} AS CHAR) ELSE '' END"
                )
            } else if c.typname == "bytea" {
                "NULL".to_owned()
            } else if c.is_text() {
                format!("LEFT({quoted}, {text_limit})")
            } else {
                format!("LEFT(CAST({quoted} AS CHAR), {})", evidence::TEXT_PREFIX)
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {} LIMIT {limit}",
        exprs.join(", "),
        Dialect::MySql.table(&table.name)
    )
}

/// Samples `table` in the snapshot. A failure (a timeout, a permission) ends this table's
/// sample, named without a value, and leaves the others to be sampled.
async fn sample(
    snapshot: &mut Snapshot,
    table: &Table,
    limit: u32,
    matrix: &Matrix,
) -> TableEvidence {
    let mut evidence = TableEvidence {
        columns: vec![Default::default(); table.columns.len()],
        ..Default::default()
    };
    if table.columns.is_empty() || limit == 0 {
        return evidence;
    }
    let keep = keep_values(table);
    let mut kept_bytes = 0;
    let result = async {
        let mut rows = snapshot.query_plain(&sample_sql(table, limit)).await?;
        while let Some(row) = rows.next().await {
            let row = row?;
            let values: Vec<Option<&str>> = row
                .iter()
                .map(|v| match v {
                    mysql_async::Value::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
                    _ => None,
                })
                .collect();
            evidence::observe_row(
                &mut evidence,
                table,
                &values,
                matrix,
                &keep,
                &mut kept_bytes,
            );
        }
        Ok::<_, DbError>(())
    }
    .await;
    if let Err(e) = result {
        evidence.error = Some(e.to_string());
    }
    evidence
}

/// Looks the child column's sampled values up in the parent's column, in the snapshot.
async fn check_link(
    snapshot: &mut Snapshot,
    tables: &[Table],
    sampled: &[TableEvidence],
    link: &propose::LinkCandidate,
) -> Option<String> {
    let child = &tables[link.child];
    let parent = &tables[link.parent];
    let c = child.columns.iter().position(|c| c.name == link.column)?;
    let to = parent.column(&link.to)?;
    let values: Vec<&str> = sampled[link.child].columns[c]
        .values
        .iter()
        .map(String::as_str)
        .filter(|v| !to.is_integer() || v.parse::<i64>().is_ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    let marks = if to.is_integer() {
        "CAST(? AS SIGNED)"
    } else {
        "?"
    };
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE {} IN ({})",
        Dialect::MySql.table(&parent.name),
        Dialect::MySql.quote(&to.name),
        vec![marks; values.len()].join(", ")
    );
    // A failed lookup (a timeout) leaves the link unproposed.
    let found = snapshot.count_of(&sql, &values).await.ok()?;
    link_evidence(
        tables,
        link,
        found,
        sampled[link.child].columns[c].values.len(),
    )
}
