//! A table as `information_schema` describes it: its columns (with the decoder each gets), its
//! primary key, its indexes' leading columns and its foreign keys. What the schema gate and
//! `discover` need from a MariaDB or MySQL source.

use mysql_async::prelude::Queryable;

use super::{MyDecoder, MySqlPool};
use crate::config::QualifiedName;
use crate::store::ColumnDecoder;
use tokio::time::Instant;

use crate::store::catalog::{
    Catalog, CatalogError, ForeignKey, IndexKey, KeyAction, LiveColumn, LiveTable, ReadCatalog,
};
use crate::store::error::DbError;

impl ReadCatalog for MySqlPool {
    /// The catalog of `tables` (in the source's database; their schema is not read), and
    /// every foreign key of the database when asked for. Each statement waits for its
    /// connection at most the connect timeout.
    async fn catalog(
        &self,
        tables: &[QualifiedName],
        foreign_keys: bool,
        _: Option<Instant>,
    ) -> Result<Catalog, CatalogError> {
        let failed = |e: DbError| CatalogError::Read {
            source_name: self.source_name().to_owned(),
            cause: e.to_string(),
        };
        let mut catalog = Catalog::default();
        for name in tables {
            let info = table_info(self, &name.table).await.map_err(failed)?;
            catalog.tables.push(live_table(info));
        }
        if foreign_keys {
            catalog.foreign_keys = all_foreign_keys(self).await.map_err(failed)?;
        }
        Ok(catalog)
    }

    async fn sample_texts(
        &self,
        statements: &[String],
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<String>>, DbError> {
        let mut snapshot = self.snapshot(deadline).await?;
        let mut samples = Vec::with_capacity(statements.len());
        for sql in statements {
            samples.push(snapshot.first_texts(sql).await?);
        }
        snapshot.finish().await?;
        Ok(samples)
    }
}

/// A table as the schema gate reads it.
fn live_table(info: TableInfo) -> LiveTable {
    LiveTable {
        indexable: info.base_table,
        spans_relations: false,
        base_table: info.base_table,
        columns: info.columns.into_iter().map(live_column).collect(),
        primary_key: info.primary_key,
        // MariaDB has no index on an expression; a `_ci` collation folds case instead.
        index_keys: info
            .index_leads
            .into_iter()
            .map(|(column, unique)| IndexKey {
                column: Some(column),
                lower_of: None,
                unique,
            })
            .collect(),
    }
}

fn live_column(column: ColumnInfo) -> LiveColumn {
    let data_type = column.data_type.to_ascii_lowercase();
    LiveColumn {
        column_type: super::column_type(&data_type, column.decoder),
        max_bytes: super::dialect::max_bytes(&data_type, column.decoder),
        base_type: data_type,
        type_name: column.column_type,
        not_null: !column.nullable,
        max_chars: column.max_chars.and_then(|n| i32::try_from(n).ok()),
        decoder: ColumnDecoder::MySql(column.decoder),
        folds_case: column
            .collation
            .is_some_and(|c| c.to_ascii_lowercase().ends_with("_ci")),
        name: column.name,
    }
}

/// Every foreign key of the source's database (`DATABASE()`), each table named as a data map
/// names a MySQL table: by its name alone (which parses into the default schema).
async fn all_foreign_keys(pool: &MySqlPool) -> Result<Vec<ForeignKey>, DbError> {
    let mut conn = pool.connection_unlimited().await?;
    foreign_keys_on(&mut conn)
        .await
        .map_err(|e| super::classify(pool.source_name(), &e))
}

/// Every foreign key of the database of `conn`, read on it (in its transaction, if one is
/// open).
pub(super) async fn foreign_keys_on(
    conn: &mut mysql_async::Conn,
) -> Result<Vec<ForeignKey>, mysql_async::Error> {
    type Row = (String, String, String, String, String, String, String);
    let rows: Vec<Row> = conn
        .query(
            "SELECT k.CONSTRAINT_NAME, k.TABLE_NAME, k.COLUMN_NAME, \
               k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, r.DELETE_RULE, r.UPDATE_RULE \
             FROM information_schema.KEY_COLUMN_USAGE k \
             JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
               ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA \
              AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME \
             WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL \
             ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        )
        .await?;
    let mut keys: Vec<ForeignKey> = Vec::new();
    // As `QualifiedName::parse` names a table given without a schema.
    let named = |table: String| QualifiedName {
        schema: "public".to_owned(),
        table,
    };
    for (constraint, table, column, parent, parent_column, on_delete, on_update) in rows {
        match keys.last_mut() {
            Some(key) if key.constraint == constraint && key.child.table == table => {
                key.pairs.push((column, parent_column));
            }
            _ => keys.push(ForeignKey {
                constraint,
                child: named(table),
                parent: named(parent),
                on_delete: KeyAction::from_rule(&on_delete),
                on_update: KeyAction::from_rule(&on_update),
                pairs: vec![(column, parent_column)],
            }),
        }
    }
    Ok(keys)
}

/// One column of a live table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `DATA_TYPE`: `bigint`, `varchar`, `longtext`, ...
    pub data_type: String,
    /// `COLUMN_TYPE`: `bigint(20) unsigned`, `varchar(255)`, `enum('a','b')`, ...
    pub column_type: String,
    pub nullable: bool,
    /// A `json_valid` check constrains it (MariaDB's JSON).
    pub json_checked: bool,
    pub decoder: MyDecoder,
    /// `COLLATION_NAME` of a text column (`utf8mb4_general_ci`).
    pub collation: Option<String>,
    /// `CHARACTER_MAXIMUM_LENGTH` of a `char(n)` or `varchar(n)` column.
    pub max_chars: Option<u64>,
}

/// A foreign key of the table: `columns` refer to `parent_columns` of `parent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyInfo {
    pub constraint: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// `DELETE_RULE`: `CASCADE`, `SET NULL`, `RESTRICT`, `NO ACTION`, ...
    pub on_delete: String,
}

/// A live table. No columns: no such table, or the account cannot see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// A base table (not a view), which can have indexes.
    pub base_table: bool,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    /// Each index's first column, and whether the index is unique on that column alone.
    pub index_leads: Vec<(String, bool)>,
    pub foreign_keys: Vec<ForeignKeyInfo>,
}

/// The base tables of the source's database (`DATABASE()`), by name, each with the server's
/// estimate of its rows.
pub async fn table_names(pool: &MySqlPool) -> Result<Vec<(String, f64)>, DbError> {
    let mut conn = pool.connection_unlimited().await?;
    let rows: Vec<(String, Option<u64>)> = conn
        .query(
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        )
        .await
        .map_err(|e| super::classify(pool.source_name(), &e))?;
    Ok(rows
        .into_iter()
        .map(|(name, rows)| (name, rows.map_or(-1.0, |n| n as f64)))
        .collect())
}

/// Reads `table` of the source's database (`DATABASE()`) from `information_schema`.
pub async fn table_info(pool: &MySqlPool, table: &str) -> Result<TableInfo, DbError> {
    let mut conn = pool.connection_unlimited().await?;
    let db = |e: mysql_async::Error| super::classify(pool.source_name(), &e);
    type Row = (String, String, String, String, Option<String>, Option<u64>);
    let columns: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME, \
               CASE WHEN DATA_TYPE IN ('char', 'varchar') THEN CHARACTER_MAXIMUM_LENGTH END \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (table,),
        )
        .await
        .map_err(db)?;
    // The table's checks, read once and matched here: a subquery on CHECK_CONSTRAINTS per
    // column was seen to crash MariaDB 10.11 (signal 11 building its temporary table).
    let checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(db)?;
    let columns = columns
        .into_iter()
        .map(
            |(name, data_type, column_type, nullable, collation, max_chars)| {
                let check = format!("json_valid(`{name}`)");
                let json = checks.iter().any(|c| c.contains(&check));
                ColumnInfo {
                    decoder: MyDecoder::for_column(&data_type, &column_type, json),
                    name,
                    data_type,
                    column_type,
                    nullable: nullable == "YES",
                    json_checked: json,
                    collation,
                    max_chars,
                }
            },
        )
        .collect();
    let indexes: Vec<(String, String, i64, i64)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE, SEQ_IN_INDEX \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (table,),
        )
        .await
        .map_err(db)?;
    let primary_key = indexes
        .iter()
        .filter(|(index, ..)| index == "PRIMARY")
        .map(|(_, column, ..)| column.clone())
        .collect();
    let index_leads = indexes
        .iter()
        .filter(|(.., seq)| *seq == 1)
        .map(|(index, column, non_unique, _)| {
            let columns = indexes.iter().filter(|(i, ..)| i == index).count();
            (column.clone(), *non_unique == 0 && columns == 1)
        })
        .collect();
    let keys: Vec<(String, String, String, String, String)> = conn
        .exec(
            "SELECT k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, \
               k.REFERENCED_COLUMN_NAME, r.DELETE_RULE \
             FROM information_schema.KEY_COLUMN_USAGE k \
             JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
               ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA \
              AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME \
             WHERE k.TABLE_SCHEMA = DATABASE() AND k.TABLE_NAME = ? \
               AND k.REFERENCED_TABLE_NAME IS NOT NULL \
             ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (table,),
        )
        .await
        .map_err(db)?;
    let mut foreign_keys: Vec<ForeignKeyInfo> = Vec::new();
    for (constraint, column, parent, parent_column, on_delete) in keys {
        match foreign_keys.last_mut() {
            Some(key) if key.constraint == constraint => {
                key.columns.push(column);
                key.parent_columns.push(parent_column);
            }
            _ => foreign_keys.push(ForeignKeyInfo {
                constraint,
                columns: vec![column],
                parent,
                parent_columns: vec![parent_column],
                on_delete,
            }),
        }
    }
    let kind: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(db)?;
    Ok(TableInfo {
        base_table: kind.as_deref() == Some("BASE TABLE"),
        columns,
        primary_key,
        index_leads,
        foreign_keys,
    })
}
