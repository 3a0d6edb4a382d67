//! Drafting on MySQL and MariaDB: the catalog from `information_schema`, described as the
//! draft's planner reads a catalog, the first rows of each table read in one consistent
//! snapshot (MySQL has no TABLESAMPLE), and lookups bound as parameters.

use std::time::Duration;

use tokio::time::Instant;

use super::dialect::quote;
use super::{ColumnInfo, MySqlPool, Snapshot, table_info, table_names};
use crate::config::QualifiedName;
use crate::store::ColumnType;
use crate::store::discovery::{
    Column, Discover, DiscoverySnapshot, Filter, ForeignKey, SampleLimits, Table,
};
use crate::store::error::DbError;

impl Discover for MySqlPool {
    type Snapshot = MyDiscovery;

    /// The catalog is read on pooled connections of its own, before the snapshot is taken
    /// (for the samples and lookups, each statement limited to `statement_timeout`).
    async fn discovery(
        &self,
        statement_timeout: Duration,
        _: Option<Instant>,
    ) -> Result<MyDiscovery, DbError> {
        Ok(MyDiscovery {
            pool: self.clone(),
            statement_timeout,
            snapshot: None,
        })
    }
}

/// A drafting snapshot, taken at its first sample or lookup.
pub struct MyDiscovery {
    pool: MySqlPool,
    statement_timeout: Duration,
    snapshot: Option<Snapshot>,
}

impl MyDiscovery {
    async fn snapshot(&mut self) -> Result<&mut Snapshot, DbError> {
        if self.snapshot.is_none() {
            let limit = Instant::now() + self.statement_timeout;
            self.snapshot = Some(self.pool.snapshot(Some(limit)).await?);
        }
        Ok(self.snapshot.as_mut().expect("just taken"))
    }
}

impl DiscoverySnapshot for MyDiscovery {
    async fn tables(&mut self, filter: &Filter) -> Result<Vec<Table>, DbError> {
        read_catalog(&self.pool, filter).await
    }

    async fn sample(
        &mut self,
        table: &Table,
        limit: u32,
        limits: SampleLimits,
        each: &mut (dyn FnMut(&[Option<&str>]) + Send),
    ) -> Result<(), String> {
        let sql = sample_sql(table, limit, limits);
        let result = async {
            let mut rows = self.snapshot().await?.query_plain(&sql).await?;
            while let Some(row) = rows.next().await {
                let row = row?;
                let values: Vec<Option<&str>> = row
                    .iter()
                    .map(|v| match v {
                        mysql_async::Value::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
                        _ => None,
                    })
                    .collect();
                each(&values);
            }
            Ok::<_, DbError>(())
        }
        .await;
        result.map_err(|e| e.to_string())
    }

    async fn count_in(
        &mut self,
        table: &QualifiedName,
        column: &str,
        values: &[&str],
        integer: bool,
    ) -> Option<i64> {
        let marks = if integer { "CAST(? AS SIGNED)" } else { "?" };
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {} IN ({})",
            quote(&table.table),
            quote(column),
            vec![marks; values.len()].join(", ")
        );
        self.snapshot()
            .await
            .ok()?
            .count_of(&sql, values)
            .await
            .ok()
    }

    async fn measure(&mut self, sql: &str) -> Option<i64> {
        self.snapshot().await.ok()?.count_of(sql, &[]).await.ok()
    }

    async fn end(self) -> Result<(), DbError> {
        match self.snapshot {
            Some(snapshot) => snapshot.finish().await,
            None => Ok(()),
        }
    }
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

/// A column as the planner reads one.
fn column((i, info): (usize, &ColumnInfo)) -> Column {
    let data_type = info.data_type.to_ascii_lowercase();
    Column {
        name: info.name.clone(),
        attnum: i16::try_from(i + 1).unwrap_or(i16::MAX),
        column_type: super::column_type(&data_type, info.decoder),
        // A `_ci` collation folds case, but an exact match adds a binary comparison.
        folds_case: false,
        type_name: data_type,
    }
}

/// The sampling query: the first `limit` rows as the server reads them (MySQL has no
/// TABLESAMPLE), each value as text, JSON documents over the row's budget as the empty
/// string, and strings up to the row's text budget.
fn sample_sql(table: &Table, limit: u32, limits: SampleLimits) -> String {
    let exprs: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let quoted = quote(&c.name);
            if c.is_json() {
                format!(
                    "CASE WHEN OCTET_LENGTH({quoted}) <= {} \
                     THEN CAST({quoted} AS CHAR) ELSE '' END",
                    limits.json_bytes
                )
            } else if c.column_type == ColumnType::Bytes {
                "NULL".to_owned()
            } else if c.is_text() {
                format!("LEFT({quoted}, {})", limits.text_chars)
            } else {
                format!("LEFT(CAST({quoted} AS CHAR), {})", limits.prefix_chars)
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {} LIMIT {limit}",
        exprs.join(", "),
        quote(&table.name.table)
    )
}
