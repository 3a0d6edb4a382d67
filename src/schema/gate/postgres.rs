//! The schema gate's catalog on PostgreSQL: `pg_catalog` read for each mapped table, and the
//! foreign keys into tables that erasure changes.

use tokio_postgres::GenericClient;

use super::{IndexKey, LiveColumn, LiveTable, TableReport};
use crate::config::{QualifiedName, SourceConfig};
use crate::schema::{ColumnDecoder, PlanError};
use crate::values::Decoder;

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
pub(crate) const FOREIGN_KEYS_SQL: &str = "\
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

/// A foreign key's `ON DELETE` action by `pg_constraint.confdeltype` (`a` no action, `r`
/// restrict, `c` cascade, `n` set null, `d` set default).
pub(crate) fn on_delete_rule(code: char) -> &'static str {
    match code {
        'c' => "ON DELETE CASCADE",
        'n' => "ON DELETE SET NULL",
        'd' => "ON DELETE SET DEFAULT",
        'r' => "ON DELETE RESTRICT",
        _ => "ON DELETE NO ACTION",
    }
}

/// A foreign key's `ON UPDATE` action by `pg_constraint.confupdtype`, likewise.
pub(crate) fn on_update_rule(code: char) -> &'static str {
    match code {
        'c' => "ON UPDATE CASCADE",
        'n' => "ON UPDATE SET NULL",
        'd' => "ON UPDATE SET DEFAULT",
        'r' => "ON UPDATE RESTRICT",
        _ => "ON UPDATE NO ACTION",
    }
}

/// Whether a referential action changes the referencing rows by itself (cascade, set null, set
/// default), rather than refusing the change (no action, restrict).
pub(crate) fn rule_acts(code: char) -> bool {
    matches!(code, 'c' | 'n' | 'd')
}

/// Warns, before anyone asks to erase, about a foreign key from a table outside the data map
/// into a table that erasure changes: one that would act on its rows (`ON DELETE CASCADE`,
/// `SET NULL`, `SET DEFAULT`, or the same `ON UPDATE` of a masked referenced column), which
/// `Erase` refuses, and one that would stop the deletion (`NO ACTION`, `RESTRICT`).
pub(super) async fn check_cascades(
    source: &SourceConfig,
    client: &impl GenericClient,
    reports: &mut [TableReport],
) -> Result<(), PlanError> {
    use crate::config::erasure::{ColumnErasure, EraseAction};
    // Each table that erasure changes: its action, and its masked columns.
    let changed: Vec<(String, EraseAction, Vec<&String>)> = source
        .tables
        .iter()
        .filter_map(|t| {
            let erase = t
                .erase
                .as_ref()
                .filter(|e| e.action != EraseAction::Retain)?;
            let masked = erase
                .mask
                .iter()
                .filter(|(_, how)| !matches!(how, ColumnErasure::Retain { .. }))
                .map(|(column, _)| column)
                .collect();
            Some((
                QualifiedName::parse(&t.name)?.display_name(),
                erase.action,
                masked,
            ))
        })
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let mapped: Vec<String> = source
        .tables
        .iter()
        .filter_map(|t| QualifiedName::parse(&t.name).map(|q| q.display_name()))
        .collect();
    let rows = client
        .query(FOREIGN_KEYS_SQL, &[])
        .await
        .map_err(|e| catalog_error(source, &e))?;
    for row in rows {
        let child = QualifiedName {
            schema: row.get(1),
            table: row.get(2),
        }
        .display_name();
        let parent = QualifiedName {
            schema: row.get(3),
            table: row.get(4),
        }
        .display_name();
        let Some((_, action, masked)) = changed.iter().find(|(t, _, _)| *t == parent) else {
            continue;
        };
        if mapped.contains(&child) {
            continue;
        }
        let referenced: Vec<String> = row.get(7);
        let code = |i: usize| row.get::<_, String>(i).chars().next().unwrap_or('a');
        let (rule, acts) = match action {
            EraseAction::Delete => (on_delete_rule(code(5)), rule_acts(code(5))),
            _ if masked.iter().any(|c| referenced.contains(c)) => {
                (on_update_rule(code(6)), rule_acts(code(6)))
            }
            _ => continue,
        };
        let constraint: String = row.get(0);
        let outcome = if acts {
            "Erase refuses any subject with rows here"
        } else {
            "an erasure of a subject who has rows in it fails (ERASURE_CONSTRAINT) and \
             changes nothing"
        };
        if let Some(report) = reports.iter_mut().find(|r| r.table == parent) {
            report.warnings.push(format!(
                "table '{child}' references '{parent}' with {rule} (constraint \
                 '{constraint}'), and the data map does not name '{child}': {outcome} \
                 until '{child}' is mapped with an erase policy"
            ));
        }
    }
    Ok(())
}

/// The catalog statements of one gate run, prepared once.
pub(super) struct Catalog<'a, C> {
    source: &'a SourceConfig,
    client: &'a C,
    columns: tokio_postgres::Statement,
    primary_key: tokio_postgres::Statement,
    index_keys: tokio_postgres::Statement,
}

impl<'a, C: GenericClient> Catalog<'a, C> {
    pub(super) async fn prepare(
        source: &'a SourceConfig,
        client: &'a C,
    ) -> Result<Self, PlanError> {
        let prepare = async |sql: &str| {
            client
                .prepare(sql)
                .await
                .map_err(|e| catalog_error(source, &e))
        };
        Ok(Catalog {
            source,
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
    ) -> Result<Vec<tokio_postgres::Row>, PlanError> {
        self.client
            .query(statement, &[&name.schema, &name.table])
            .await
            .map_err(|e| catalog_error(self.source, &e))
    }

    /// The table as the catalog describes it.
    pub(super) async fn live_table(&self, name: &QualifiedName) -> Result<LiveTable, PlanError> {
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
                LiveColumn {
                    name: r.get(0),
                    pg_type: r.get(1),
                    base_type: r.get(2),
                    decoder: ColumnDecoder::Postgres(Decoder::for_type(&typname, &category)),
                    folds_case: typname == "citext",
                    typname,
                    category,
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

fn catalog_error(source: &SourceConfig, e: &tokio_postgres::Error) -> PlanError {
    PlanError::Catalog {
        source_name: source.name.clone(),
        cause: crate::store::postgres::describe(e),
    }
}
