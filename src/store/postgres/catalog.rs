//! PostgreSQL's catalog as the schema gate reads it: `pg_catalog` for each mapped table, and
//! every foreign key of the database.

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use tokio::time::Instant;

use super::{DbError, SourcePool, describe};
use crate::config::QualifiedName;
use crate::store::ColumnDecoder;
use crate::store::catalog::{
    Catalog, CatalogError, ForeignKey, IndexKey, KeyAction, LiveColumn, LiveTable, ReadCatalog,
};
use crate::values::Decoder;

impl ReadCatalog for SourcePool {
    async fn catalog(
        &self,
        tables: &[QualifiedName],
        foreign_keys: bool,
        deadline: Option<Instant>,
    ) -> Result<Catalog, CatalogError> {
        let conn = self.checkout(deadline).await?;
        let name = self.source_name();
        let reader = Reader::prepare(name, &conn.client).await?;
        let mut catalog = Catalog::default();
        for table in tables {
            catalog.tables.push(reader.live_table(table).await?);
        }
        if foreign_keys {
            catalog.foreign_keys = read_foreign_keys(&conn.client)
                .await
                .map_err(|e| catalog_error(name, &e))?;
        }
        Ok(catalog)
    }

    async fn sample_texts(
        &self,
        statements: &[String],
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<String>>, DbError> {
        let conn = self.checkout(deadline).await?;
        let mut samples = Vec::with_capacity(statements.len());
        for sql in statements {
            let rows = conn
                .client
                .query(sql.as_str(), &[])
                .await
                .map_err(|e| DbError::from_pg(self.source_name(), &e))?;
            samples.push(rows.iter().filter_map(|r| r.try_get(0).ok()).collect());
        }
        Ok(samples)
    }
}

/// A table's live columns: name, type with and without modifiers, `typname`, `typcategory`,
/// `relkind`, NOT NULL, the most characters a `varchar(n)` or `char(n)` holds, and whether
/// the table's rows live in other relations too (partitions, inheritance children).
const CATALOG_SQL: &str = "\
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL), \
       t.typname::text, t.typcategory::text, c.relkind::text, a.attnotnull, \
       CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 \
            THEN a.atttypmod - 4 END, \
       c.relkind = 'p' OR c.relhassubclass \
FROM pg_catalog.pg_attribute a \
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
  AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY a.attnum";

/// The primary-key columns of a table.
const PRIMARY_KEY_SQL: &str = "\
SELECT a.attname::text \
FROM pg_catalog.pg_index i \
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary \
ORDER BY array_position(i.indkey::int2[], a.attnum)";

/// The first key of every usable index of a table (valid, not partial): the column when it
/// is a plain column, or the column inside `lower(column)` when the first key is that
/// expression. Read from the catalog alone: `pg_get_indexdef` would lock each index, and the
/// gate must not wait on a table that someone holds locked.
const INDEX_KEYS_SQL: &str = "\
SELECT a.attname::text, e.attname::text, i.indisunique AND i.indnkeyatts = 1 \
FROM pg_catalog.pg_index i \
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_attribute a \
  ON a.attrelid = i.indrelid AND i.indkey[0] <> 0 AND a.attnum = i.indkey[0] \
LEFT JOIN pg_catalog.pg_attribute e \
  ON e.attrelid = i.indrelid AND i.indkey[0] = 0 \
  AND substring(i.indexprs::text from '^\\(\\{FUNCEXPR :funcid ([0-9]+) ')::oid \
      = 'pg_catalog.lower(text)'::pg_catalog.regprocedure::oid \
  AND e.attnum = substring(i.indexprs::text from ':varattno ([0-9]+)')::int2 \
WHERE n.nspname = $1 AND c.relname = $2 AND i.indisvalid AND i.indpred IS NULL";

/// Every foreign key of the database: constraint, referencing (child) schema and table,
/// referenced (parent) schema and table, `confdeltype` and `confupdtype` (`a` no action, `r`
/// restrict, `c` cascade, `n` set null, `d` set default), the referenced columns, and the
/// key's columns paired with the referenced ones, in key order. A key declared on a partition
/// is named by its partitioned table, as the data map names it.
const FOREIGN_KEYS_SQL: &str = "\
SELECT con.conname::text, cn.nspname::text, cc.relname::text, \
       pn.nspname::text, pc.relname::text, con.confdeltype::text, con.confupdtype::text, \
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = con.confrelid AND a.attnum = ANY (con.confkey)), \
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n \
             ORDER BY k.i), \
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(n, i) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n \
             ORDER BY k.i) \
FROM pg_catalog.pg_constraint con \
JOIN pg_catalog.pg_class cc \
  ON cc.oid = coalesce(pg_catalog.pg_partition_root(con.conrelid), con.conrelid) \
JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace \
JOIN pg_catalog.pg_class pc \
  ON pc.oid = coalesce(pg_catalog.pg_partition_root(con.confrelid), con.confrelid) \
JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace \
WHERE con.contype = 'f'";

/// Every foreign key of the database, on `client` (a connection, or a transaction that must
/// see them as it does).
pub async fn read_foreign_keys(
    client: &impl GenericClient,
) -> Result<Vec<ForeignKey>, tokio_postgres::Error> {
    let rows = client.query(FOREIGN_KEYS_SQL, &[]).await?;
    let code = |text: String| KeyAction::from_code(text.chars().next().unwrap_or('a'));
    rows.into_iter()
        .map(|r| {
            Ok(ForeignKey {
                constraint: r.try_get(0)?,
                child: QualifiedName {
                    schema: r.try_get(1)?,
                    table: r.try_get(2)?,
                },
                parent: QualifiedName {
                    schema: r.try_get(3)?,
                    table: r.try_get(4)?,
                },
                on_delete: code(r.try_get(5)?),
                on_update: code(r.try_get(6)?),
                pairs: r
                    .try_get::<_, Vec<String>>(8)?
                    .into_iter()
                    .zip(r.try_get::<_, Vec<String>>(9)?)
                    .collect(),
            })
        })
        .collect()
}

/// The catalog statements of one read, prepared once.
struct Reader<'a, C> {
    source_name: &'a str,
    client: &'a C,
    columns: tokio_postgres::Statement,
    primary_key: tokio_postgres::Statement,
    index_keys: tokio_postgres::Statement,
}

impl<'a, C: GenericClient> Reader<'a, C> {
    async fn prepare(source_name: &'a str, client: &'a C) -> Result<Self, CatalogError> {
        let prepare = async |sql: &str| {
            client
                .prepare(sql)
                .await
                .map_err(|e| catalog_error(source_name, &e))
        };
        Ok(Reader {
            source_name,
            client,
            columns: prepare(CATALOG_SQL).await?,
            primary_key: prepare(PRIMARY_KEY_SQL).await?,
            index_keys: prepare(INDEX_KEYS_SQL).await?,
        })
    }

    async fn query(
        &self,
        statement: &tokio_postgres::Statement,
        name: &QualifiedName,
    ) -> Result<Vec<tokio_postgres::Row>, CatalogError> {
        self.client
            .query(
                statement,
                &[&name.schema as &(dyn ToSql + Sync), &name.table],
            )
            .await
            .map_err(|e| catalog_error(self.source_name, &e))
    }

    /// The table as the catalog describes it.
    async fn live_table(&self, name: &QualifiedName) -> Result<LiveTable, CatalogError> {
        let rows = self.query(&self.columns, name).await?;
        let indexable = rows
            .first()
            .is_some_and(|r| matches!(r.get::<_, String>(5).as_str(), "r" | "p" | "m"));
        let spans_relations = rows.first().is_some_and(|r| r.get::<_, bool>(8));
        let base_table = rows
            .first()
            .is_some_and(|r| matches!(r.get::<_, String>(5).as_str(), "r" | "p"));
        let columns: Vec<LiveColumn> = rows
            .iter()
            .map(|r| {
                let typname: String = r.get(3);
                let category: String = r.get(4);
                // The identity value is cast to the type without modifiers; for blank-padded
                // and bit strings that would mean length 1, so they get their unbounded forms.
                let base_type = match typname.as_str() {
                    "bpchar" => "bpchar".to_owned(),
                    "bit" => "varbit".to_owned(),
                    _ => r.get(2),
                };
                LiveColumn {
                    name: r.get(0),
                    type_name: r.get(1),
                    base_type,
                    decoder: ColumnDecoder::Postgres(Decoder::for_type(&typname, &category)),
                    column_type: super::column_type(&typname, &category),
                    max_bytes: None,
                    folds_case: typname == "citext",
                    not_null: r.get(6),
                    max_chars: r.get(7),
                }
            })
            .collect();
        if columns.is_empty() {
            return Ok(LiveTable {
                columns,
                indexable,
                spans_relations,
                base_table,
                primary_key: Vec::new(),
                index_keys: Vec::new(),
            });
        }
        let primary_key = self
            .query(&self.primary_key, name)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let index_keys = if indexable {
            self.query(&self.index_keys, name)
                .await?
                .iter()
                .map(|r| IndexKey {
                    column: r.get(0),
                    lower_of: r.get(1),
                    unique: r.get(2),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(LiveTable {
            columns,
            indexable,
            spans_relations,
            base_table,
            primary_key,
            index_keys,
        })
    }
}

fn catalog_error(source_name: &str, e: &tokio_postgres::Error) -> CatalogError {
    CatalogError::Read {
        source_name: source_name.to_owned(),
        cause: describe(e),
    }
}
