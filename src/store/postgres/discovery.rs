//! Drafting on PostgreSQL: `pg_catalog` read for every selected table, a `TABLESAMPLE` of
//! each in one read-only snapshot (each statement under a savepoint, so that a timeout on one
//! leaves the snapshot usable), and lookups with arrays bound as parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::TryStreamExt;
use tokio::time::Instant;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::{Conn, DbError, SourcePool, describe, quote_ident};
use crate::config::QualifiedName;
use crate::store::ColumnType;
use crate::store::discovery::{
    Column, Discover, DiscoverySnapshot, Filter, ForeignKey, SampleLimits, Table,
};

impl Discover for SourcePool {
    type Snapshot = PgDiscovery;

    async fn discovery(
        &self,
        statement_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<PgDiscovery, DbError> {
        let conn = self.checkout(deadline).await?;
        let snapshot = PgDiscovery {
            name: self.source_name().to_owned(),
            conn,
            open: true,
        };
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
             SET LOCAL statement_timeout = {}",
            statement_timeout.as_millis().max(1)
        );
        snapshot
            .conn
            .client
            .batch_execute(&sql)
            .await
            .map_err(|e| DbError::from_pg(&snapshot.name, &e))?;
        Ok(snapshot)
    }
}

/// A drafting snapshot on one pooled connection; dropped before it ends, the connection is
/// discarded.
pub struct PgDiscovery {
    name: String,
    conn: Conn,
    open: bool,
}

impl Drop for PgDiscovery {
    fn drop(&mut self) {
        if self.open {
            self.conn.mark_broken();
        }
    }
}

impl PgDiscovery {
    /// Runs `work` under a savepoint: released when it succeeds, rolled back to when it
    /// fails, so that the snapshot stays usable.
    async fn under_savepoint<T>(
        &mut self,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        let client = &self.conn.client;
        client.batch_execute("SAVEPOINT dsr_discover").await?;
        match work(client).await {
            Ok(done) => {
                client
                    .batch_execute("RELEASE SAVEPOINT dsr_discover")
                    .await?;
                Ok(done)
            }
            Err(e) => {
                let _ = client
                    .batch_execute("ROLLBACK TO SAVEPOINT dsr_discover")
                    .await;
                Err(e)
            }
        }
    }
}

impl DiscoverySnapshot for PgDiscovery {
    async fn tables(&mut self, filter: &Filter) -> Result<Vec<Table>, DbError> {
        read_tables(&self.conn.client, filter)
            .await
            .map_err(|e| DbError::from_pg(&self.name, &e))
    }

    async fn sample(
        &mut self,
        table: &Table,
        limit: u32,
        limits: SampleLimits,
        each: &mut (dyn FnMut(&[Option<&str>]) + Send),
    ) -> Result<(), String> {
        let sql = sample_sql(table, limit, limits);
        let width = table.columns.len();
        self.under_savepoint(async |client| {
            let rows = client
                .query_raw(sql.as_str(), std::iter::empty::<&str>())
                .await?;
            futures_util::pin_mut!(rows);
            while let Some(row) = rows.try_next().await? {
                let values = (0..width)
                    .map(|i| row.try_get::<_, Option<&str>>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                each(&values);
            }
            Ok(())
        })
        .await
        .map_err(|e| describe(&e))
    }

    async fn count_in(
        &mut self,
        table: &QualifiedName,
        column: &str,
        values: &[&str],
        integer: bool,
    ) -> Option<i64> {
        let from = format!(
            "{}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.table)
        );
        let column = quote_ident(column);
        let (cast, numbers): (&str, Vec<i64>) = if integer {
            (
                "int8",
                values.iter().filter_map(|v| v.parse().ok()).collect(),
            )
        } else {
            ("text", Vec::new())
        };
        let sql = format!("SELECT count(*) FROM {from} WHERE {column} = ANY($1::{cast}[])");
        let param: &(dyn ToSql + Sync) = if integer { &numbers } else { &values };
        self.under_savepoint(async |client| {
            client.query_one(sql.as_str(), &[param]).await?.try_get(0)
        })
        .await
        .ok()
    }

    async fn measure(&mut self, sql: &str) -> Option<i64> {
        self.under_savepoint(async |client| {
            client
                .query_one(sql, &[])
                .await?
                .try_get::<_, Option<i64>>(0)
        })
        .await
        .ok()
        .flatten()
    }

    async fn end(mut self) -> Result<(), DbError> {
        self.conn
            .client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| DbError::from_pg(&self.name, &e))?;
        self.open = false;
        Ok(())
    }
}

const TABLES_SQL: &str = "\
SELECT n.nspname::text, c.relname::text, c.oid, c.reltuples::float8, \
       has_table_privilege(c.oid, 'SELECT') \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
  AND (cardinality($1::text[]) = 0 OR n.nspname = ANY($1::text[])) \
ORDER BY 1, 2";

const COLUMNS_SQL: &str = "\
SELECT a.attrelid, a.attname::text, a.attnum, t.typname::text, t.typcategory::text \
FROM pg_catalog.pg_attribute a \
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY a.attrelid, a.attnum";

/// Unique indexes (primary keys and unique constraints have one) without a predicate or
/// an expression, and every foreign key. A key declared on a partition (as older schemas
/// declare them) is its partitioned table's, which is the table a data map names.
const KEYS_SQL: &str = "\
SELECT i.indrelid, 'u'::text, i.indkey::int2[], NULL::oid, NULL::int2[], i.indisprimary \
FROM pg_catalog.pg_index i \
WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND i.indpred IS NULL \
  AND i.indexprs IS NULL \
UNION ALL \
SELECT k.root, 'f'::text, c.conkey, \
       coalesce(pg_catalog.pg_partition_root(c.confrelid), c.confrelid)::oid, c.confkey, false \
FROM pg_catalog.pg_constraint c, \
     LATERAL (SELECT coalesce(pg_catalog.pg_partition_root(c.conrelid), c.conrelid)::oid \
              AS root) k \
WHERE k.root = ANY($1::oid[]) AND c.contype = 'f'";

/// Reads the tables that `filter` selects, with their columns and keys.
async fn read_tables(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<Vec<Table>, tokio_postgres::Error> {
    let rows = client.query(TABLES_SQL, &[&filter.schemas]).await?;
    let mut tables: BTreeMap<u32, Table> = BTreeMap::new();
    // Catalog order (schema, then name), which the draft keeps.
    let mut order = Vec::new();
    for row in rows {
        let name = QualifiedName {
            schema: row.get(0),
            table: row.get(1),
        };
        if filter.excludes(&name) {
            continue;
        }
        order.push(row.get::<_, u32>(2));
        tables.insert(
            row.get(2),
            Table {
                name,
                estimated_rows: row.get(3),
                columns: Vec::new(),
                primary_key: None,
                unique: Vec::new(),
                foreign_keys: Vec::new(),
                unproposed_keys: Vec::new(),
                readable: row.get(4),
            },
        );
    }
    let oids: Vec<u32> = tables.keys().copied().collect();
    for row in client.query(COLUMNS_SQL, &[&oids]).await? {
        if let Some(table) = tables.get_mut(&row.get::<_, u32>(0)) {
            let (typname, category): (String, String) = (row.get(3), row.get(4));
            table.columns.push(Column {
                name: row.get(1),
                attnum: row.get(2),
                column_type: super::column_type(&typname, &category),
                folds_case: typname == "citext",
                type_name: typname,
            });
        }
    }
    let keys = client.query(KEYS_SQL, &[&oids]).await?;
    let column_name = |table: &Table, attnum: i16| {
        table
            .columns
            .iter()
            .find(|c| c.attnum == attnum)
            .map(|c| c.name.clone())
    };
    let mut foreign = Vec::new();
    for row in keys {
        let oid: u32 = row.get(0);
        let kind: String = row.get(1);
        let attnums: Vec<i16> = row.get(2);
        if kind == "f" {
            foreign.push((
                oid,
                attnums,
                row.get::<_, u32>(3),
                row.get::<_, Vec<i16>>(4),
            ));
            continue;
        }
        let Some(table) = tables.get_mut(&oid) else {
            continue;
        };
        if let [attnum] = attnums[..]
            && let Some(column) = column_name(table, attnum)
        {
            if row.get::<_, bool>(5) {
                table.primary_key = Some(column.clone());
            }
            if !table.unique.contains(&column) {
                table.unique.push(column);
            }
        }
    }
    for (oid, from, target, to) in foreign {
        let target_table = tables.get(&target).cloned();
        let Some(table) = tables.get_mut(&oid) else {
            continue;
        };
        let Some(target_table) = target_table else {
            table
                .unproposed_keys
                .push("a foreign key to a table outside the selection".to_owned());
            continue;
        };
        let ([from], [to]) = (&from[..], &to[..]) else {
            table.unproposed_keys.push(format!(
                "a foreign key over several columns to {}",
                target_table.name.display_name()
            ));
            continue;
        };
        if let (Some(column), Some(to)) =
            (column_name(table, *from), column_name(&target_table, *to))
        {
            // A partitioned table's key is declared once per partition: keep it once.
            let key = ForeignKey {
                column,
                table: target_table.name.clone(),
                to,
            };
            if !table.foreign_keys.contains(&key) {
                table.foreign_keys.push(key);
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|oid| tables.remove(&oid))
        .collect())
}

/// How a column is read for sampling, as `limits` say. A JSON document over the limit is
/// read as the empty string (no JSON text is empty), which the caller counts as unscanned.
fn sample_expr(column: &Column, limits: SampleLimits) -> String {
    let quoted = quote_ident(&column.name);
    let (json, text, prefix) = (limits.json_bytes, limits.text_chars, limits.prefix_chars);
    if column.is_json() {
        format!("CASE WHEN octet_length({quoted}::text) <= {json} THEN {quoted}::text ELSE '' END")
    } else if column.column_type == ColumnType::Bytes {
        "NULL::text".to_owned()
    } else if column.is_text() {
        format!("left({quoted}::text, {text})")
    } else {
        format!("left({quoted}::text, {prefix})")
    }
}

/// The sampling query: at most `limit` rows, chosen by `TABLESAMPLE` with a fixed seed so
/// that the same data gives the same draft. Small or never-analysed tables are sampled at
/// 100%; large ones by pages (SYSTEM), which does not read the whole table.
pub fn sample_sql(table: &Table, limit: u32, limits: SampleLimits) -> String {
    let exprs: Vec<String> = table
        .columns
        .iter()
        .map(|c| sample_expr(c, limits))
        .collect();
    let estimated = table.estimated_rows;
    let (method, percent) = if estimated <= 0.0 {
        ("BERNOULLI", 100.0)
    } else {
        let percent = (f64::from(limit) * 4.0 * 100.0 / estimated).clamp(0.001, 100.0);
        let method = if estimated > 1_000_000.0 {
            "SYSTEM"
        } else {
            "BERNOULLI"
        };
        (method, percent)
    };
    format!(
        "SELECT {} FROM {}.{} TABLESAMPLE {method} ({percent}) REPEATABLE (42) LIMIT {limit}",
        exprs.join(", "),
        quote_ident(&table.name.schema),
        quote_ident(&table.name.table)
    )
}
