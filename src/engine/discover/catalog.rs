//! What the catalog says about a source: its tables and columns, their keys, and the foreign
//! keys between them. Catalog reads only: no row of a table is read here.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use crate::config::QualifiedName;

/// One column of a live table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub attnum: i16,
    /// `pg_type.typname` (`text`, `int8`, `jsonb`, ...).
    pub typname: String,
    /// `pg_type.typcategory` (`S` strings, `N` numbers, `A` arrays, ...).
    pub typcategory: String,
}

impl Column {
    pub fn is_text(&self) -> bool {
        matches!(
            self.typname.as_str(),
            "text" | "varchar" | "bpchar" | "citext"
        )
    }

    pub fn is_integer(&self) -> bool {
        matches!(self.typname.as_str(), "int2" | "int4" | "int8")
    }

    pub fn is_json(&self) -> bool {
        matches!(self.typname.as_str(), "json" | "jsonb")
    }
}

/// A single-column foreign key: `column` of this table refers to `to` of `table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub column: String,
    pub table: QualifiedName,
    pub to: String,
}

/// One live table.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: QualifiedName,
    /// `pg_class.reltuples`: the planner's estimate, negative when never analysed.
    pub estimated_rows: f64,
    pub columns: Vec<Column>,
    /// The primary key's column, when it has exactly one.
    pub primary_key: Option<String>,
    /// Columns that are unique on their own (primary key, unique constraint or index).
    pub unique: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Foreign keys that are not proposed as references, each with the reason (several
    /// columns, or a table outside the selection).
    pub unproposed_keys: Vec<String>,
    /// Whether the connected role may SELECT from it.
    pub readable: bool,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_unique(&self, column: &str) -> bool {
        self.unique.iter().any(|u| u == column)
    }

    pub fn foreign_key(&self, column: &str) -> Option<&ForeignKey> {
        self.foreign_keys.iter().find(|f| f.column == column)
    }
}

/// Which tables to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Schemas to read; empty means every schema but PostgreSQL's own.
    pub schemas: Vec<String>,
    /// Tables to leave out: `table`, `schema.table`, with `*` matching any characters.
    pub exclude: Vec<String>,
}

impl Filter {
    pub(super) fn excludes(&self, name: &QualifiedName) -> bool {
        let qualified = format!("{}.{}", name.schema, name.table);
        self.exclude.iter().any(|pattern| {
            let target = if pattern.contains('.') {
                &qualified
            } else {
                &name.table
            };
            glob_matches(pattern, target)
        })
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let regex = format!(
        "^{}$",
        pattern
            .split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*")
    );
    regex::Regex::new(&regex).is_ok_and(|r| r.is_match(text))
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
pub async fn read(
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
            table.columns.push(Column {
                name: row.get(1),
                attnum: row.get(2),
                typname: row.get(3),
                typcategory: row.get(4),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("audit_*", "audit_2024"));
        assert!(!glob_matches("audit_*", "my_audit_2024"));
        assert!(glob_matches("tmp", "tmp"));
        assert!(!glob_matches("tmp", "tmp2"));
        assert!(glob_matches("a.b", "a.b"));
        assert!(
            !glob_matches("a.b", "axb"),
            "a dot is a dot, not any character"
        );
    }

    #[test]
    fn exclusions_name_a_table_or_a_qualified_table() {
        let filter = Filter {
            schemas: Vec::new(),
            exclude: vec!["staging.*".into(), "*_log".into()],
        };
        let name = |s: &str, t: &str| QualifiedName {
            schema: s.into(),
            table: t.into(),
        };
        assert!(filter.excludes(&name("staging", "customers")));
        assert!(filter.excludes(&name("public", "access_log")));
        assert!(!filter.excludes(&name("public", "customers")));
    }
}
