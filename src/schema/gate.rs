//! The schema gate: a source's data map checked against its live catalog, table by table.
//! Every mapped table and column must exist with a type its category and rule can read, and
//! every live column must be mapped (fail closed: a new column could hold personal data
//! nobody classified). Missing indexes are warnings that name the CREATE INDEX to run.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::GenericClient;

use super::{
    DataMap, IdentityMatch, MappedColumn, MappedTable, PlanError, is_text_type, quote_ident,
};
use crate::classify::Matrix;
use crate::config::{
    CoerceRule, ColumnSpec, MatchMode, QualifiedName, SourceConfig, TableConfig, UnmappedPolicy,
};
use crate::pb::TableStatus;
use crate::values::{Coercion, Decoder, EpochUnit};

/// One live column as the catalog describes it.
struct LiveColumn {
    name: String,
    pg_type: String,
    base_type: String,
    typname: String,
    category: String,
    not_null: bool,
    /// The most characters a `varchar(n)` or `char(n)` column holds.
    max_chars: Option<i32>,
}

const CATALOG_SQL: &str = "\
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL), \
       t.typname::text, t.typcategory::text, c.relkind::text, a.attnotnull, \
       CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 \
            THEN a.atttypmod - 4 END \
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

/// An index's first key: a plain column, or the column of `lower(column)`.
struct IndexKey {
    column: Option<String>,
    lower_of: Option<String>,
    /// A unique index on this key alone.
    unique: bool,
}

/// The index to create when none of `keys` serves the identity match of `column`, or `None`
/// when one does.
fn missing_index(
    table: &QualifiedName,
    column: &MappedColumn,
    matching: MatchMode,
    keys: &[IndexKey],
) -> Option<String> {
    let (served, expression) = match matching {
        MatchMode::CaseInsensitive if column.typname != "citext" => (
            keys.iter()
                .any(|k| k.lower_of.as_deref() == Some(column.name.as_str())),
            format!("lower({})", quote_ident(&column.name)),
        ),
        _ => (
            keys.iter()
                .any(|k| k.column.as_deref() == Some(column.name.as_str())),
            quote_ident(&column.name),
        ),
    };
    (!served).then(|| {
        format!(
            "CREATE INDEX ON {}.{} ({expression});",
            quote_ident(&table.schema),
            quote_ident(&table.table)
        )
    })
}

/// The schema gate's finding for one table.
#[derive(Debug, Clone)]

pub struct TableReport {
    /// Table name as callers see it.
    pub table: String,
    pub status: TableStatus,
    /// Problems that stop an extraction, each naming the column and what is wrong.
    pub problems: Vec<String>,
    /// Findings that do not stop an extraction (unmapped columns under the warn policy).
    pub warnings: Vec<String>,
}

/// The schema gate's result for a source: one report per mapped table, and the data map when
/// nothing stops an extraction.
#[derive(Debug, Clone)]
pub struct SchemaReport {
    pub tables: Vec<TableReport>,
    pub map: Option<Arc<DataMap>>,
}

impl SchemaReport {
    /// Every problem of every table.
    pub fn problems(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(|t| t.problems.iter().cloned())
            .collect()
    }

    /// Every warning of every table.
    pub fn warnings(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(|t| t.warnings.iter().cloned())
            .collect()
    }
}

/// Runs the schema gate: every mapped table and column against the live catalog, table by
/// table. The report lists every problem at once; its map is set only when there is none.
pub async fn check_schema(
    source: &SourceConfig,
    matrix: &Matrix,
    client: &impl GenericClient,
) -> Result<SchemaReport, PlanError> {
    let catalog = Catalog::prepare(source, client).await?;
    let source_tz: chrono_tz::Tz = source.timezone.parse().unwrap_or(chrono_tz::Tz::UTC);
    let index: HashMap<QualifiedName, usize> = source
        .tables
        .iter()
        .enumerate()
        .filter_map(|(i, t)| QualifiedName::parse(&t.name).map(|q| (q, i)))
        .collect();

    let mut reports = Vec::new();
    let mut tables: Vec<Option<MappedTable>> = Vec::new();
    for table_cfg in &source.tables {
        let (report, table) = check_table(&catalog, table_cfg, matrix, source_tz, &index).await?;
        reports.push(report);
        tables.push(table);
    }
    check_reference_types(&tables, &mut reports);
    check_cascades(source, client, &mut reports).await?;

    let map = if reports.iter().all(|r| r.problems.is_empty()) {
        let tables: Vec<Arc<MappedTable>> = tables.into_iter().flatten().map(Arc::new).collect();
        let warnings = reports
            .iter()
            .flat_map(|r| r.warnings.iter().cloned())
            .collect();
        Some(Arc::new(DataMap::compile(source, tables, warnings)))
    } else {
        None
    };
    Ok(SchemaReport {
        tables: reports,
        map,
    })
}

/// Every foreign key of the database: constraint, referencing (child) schema and table,
/// referenced (parent) schema and table, `confdeltype` and `confupdtype` (`a` no action, `r`
/// restrict, `c` cascade, `n` set null, `d` set default), and the referenced columns.
pub(crate) const FOREIGN_KEYS_SQL: &str = "\
SELECT con.conname::text, cn.nspname::text, cc.relname::text, \
       pn.nspname::text, pc.relname::text, con.confdeltype::text, con.confupdtype::text, \
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = con.confrelid AND a.attnum = ANY (con.confkey)) \
FROM pg_catalog.pg_constraint con \
JOIN pg_catalog.pg_class cc ON cc.oid = con.conrelid \
JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace \
JOIN pg_catalog.pg_class pc ON pc.oid = con.confrelid \
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
async fn check_cascades(
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

/// Warns about a mask that the live column cannot hold: every erasure of a subject with rows in
/// the table would fail, and change nothing.
fn check_masks(
    display: &str,
    table_cfg: &crate::config::TableConfig,
    live: &[LiveColumn],
    source: &SourceConfig,
    report: &mut TableReport,
) {
    use crate::config::erasure::{ColumnErasure, MaskMethod};
    let Some(erase) = &table_cfg.erase else {
        return;
    };
    for (column, how) in &erase.mask {
        let (ColumnErasure::Mask(method), Some(live)) =
            (how, live.iter().find(|c| &c.name == column))
        else {
            continue;
        };
        let written = match method {
            MaskMethod::Null if live.not_null => Some("\"null\" on a NOT NULL column".to_owned()),
            MaskMethod::Redact => live
                .max_chars
                .filter(|n| (*n as usize) < source.erasure.redaction.chars().count())
                .map(|n| {
                    format!(
                        "the column holds at most {n} characters and the redaction text has {}",
                        source.erasure.redaction.chars().count()
                    )
                }),
            MaskMethod::Pseudonym => live
                .max_chars
                .filter(|n| *n < 32)
                .map(|n| format!("the column holds at most {n} characters and a pseudonym has 32")),
            _ => None,
        };
        if let Some(why) = written {
            report.warnings.push(format!(
                "{display}.erase.mask.{column}: {why}: every erasure of a subject with rows here \
                 fails (ERASURE_CONSTRAINT) and changes nothing"
            ));
        }
    }
}

/// The catalog statements of one gate run, prepared once.
struct Catalog<'a, C> {
    source: &'a SourceConfig,
    client: &'a C,
    columns: tokio_postgres::Statement,
    primary_key: tokio_postgres::Statement,
    index_keys: tokio_postgres::Statement,
}

impl<'a, C: GenericClient> Catalog<'a, C> {
    async fn prepare(source: &'a SourceConfig, client: &'a C) -> Result<Self, PlanError> {
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

    /// The table's live columns, and whether it can have indexes (views and foreign tables
    /// have none to advise on). No columns: no such table, or the role cannot see it.
    async fn live_columns(
        &self,
        name: &QualifiedName,
    ) -> Result<(Vec<LiveColumn>, bool), PlanError> {
        let rows = self.query(&self.columns, name).await?;
        let indexable = rows
            .first()
            .is_some_and(|r| matches!(r.get::<_, String>(5).as_str(), "r" | "p" | "m"));
        let live = rows
            .iter()
            .map(|r| LiveColumn {
                name: r.get(0),
                pg_type: r.get(1),
                base_type: r.get(2),
                typname: r.get(3),
                category: r.get(4),
                not_null: r.get(6),
                max_chars: r.get(7),
            })
            .collect();
        Ok((live, indexable))
    }

    async fn primary_key(&self, name: &QualifiedName) -> Result<Vec<String>, PlanError> {
        Ok(self
            .query(&self.primary_key, name)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn index_keys(&self, name: &QualifiedName) -> Result<Vec<IndexKey>, PlanError> {
        Ok(self
            .query(&self.index_keys, name)
            .await?
            .iter()
            .map(|r| IndexKey {
                column: r.get(0),
                lower_of: r.get(1),
                unique: r.get(2),
            })
            .collect())
    }
}

/// What one table's check found wrong, by kind; the table's status is the first that holds.
#[derive(Default)]
struct Findings {
    missing: bool,
    mismatch: bool,
    unmapped: bool,
}

impl Findings {
    fn status(&self) -> TableStatus {
        if self.missing {
            TableStatus::MissingColumns
        } else if self.mismatch {
            TableStatus::TypeMismatch
        } else if self.unmapped {
            TableStatus::UnmappedColumns
        } else {
            TableStatus::Ok
        }
    }
}

/// Checks one mapped table against the catalog: its report, and the table as mapped when it
/// exists.
async fn check_table<C: GenericClient>(
    catalog: &Catalog<'_, C>,
    table_cfg: &TableConfig,
    matrix: &Matrix,
    source_tz: chrono_tz::Tz,
    index: &HashMap<QualifiedName, usize>,
) -> Result<(TableReport, Option<MappedTable>), PlanError> {
    let name =
        QualifiedName::parse(&table_cfg.name).expect("table names are checked by Config::validate");
    let display = name.display_name();
    let mut report = TableReport {
        table: display.clone(),
        status: TableStatus::Ok,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let (live, indexable) = catalog.live_columns(&name).await?;
    if live.is_empty() {
        report.status = TableStatus::Missing;
        report.problems.push(format!(
            "table '{display}' does not exist in database '{}' (or the role cannot see it)",
            catalog.source.database
        ));
        return Ok((report, None));
    }
    check_masks(&display, table_cfg, &live, catalog.source, &mut report);
    let mut findings = Findings::default();
    let columns = map_columns(
        &display,
        table_cfg,
        live,
        matrix,
        source_tz,
        catalog.source.unmapped_columns,
        &mut report,
        &mut findings,
    );
    let primary_key = catalog.primary_key(&name).await?;
    if indexable {
        let index_keys = catalog.index_keys(&name).await?;
        advise_indexes(&name, table_cfg, &columns, &index_keys, &mut report);
        if catalog.source.one_row_per_person(&name) {
            advise_unique(
                &name,
                table_cfg,
                &columns,
                &index_keys,
                catalog.source,
                &mut report,
            );
        }
    }
    check_identity_types(&display, table_cfg, &columns, &mut report, &mut findings);
    if table_cfg.erase.is_none()
        && catalog
            .source
            .tables_without_erase_policy()
            .contains(&table_cfg.name.as_str())
    {
        report.warnings.push(format!(
            "table '{display}' has no erase policy, while other tables of the source have one: \
             Erase refuses any subject that reaches it until it has one (erase = {{ action = \
             \"delete\" | \"mask\" | \"retain\" }})"
        ));
    }
    report.status = findings.status();
    let primary_key = primary_key
        .iter()
        .filter_map(|pk| columns.iter().position(|c: &MappedColumn| &c.name == pk))
        .collect();
    let table = MappedTable {
        name,
        display,
        description: table_cfg.description.clone().unwrap_or_default(),
        columns,
        primary_key,
        identities: table_cfg
            .identity
            .as_slice()
            .iter()
            .map(|i| IdentityMatch {
                kind: i.kind.clone(),
                column: i.column.clone(),
                matching: i.matching,
            })
            .collect(),
        references: table_cfg
            .reference
            .as_slice()
            .iter()
            .map(|r| {
                let parent = QualifiedName::parse(&r.table)
                    .and_then(|q| index.get(&q).copied())
                    .expect("references are checked by Config::validate");
                (r.column.clone(), parent, r.to.clone())
            })
            .collect(),
    };
    Ok((report, Some(table)))
}

/// Maps the live columns that the data map names, and reports mapped columns that do not
/// exist and live columns that are not mapped (fail closed, or a warning by policy).
#[allow(clippy::too_many_arguments)]
fn map_columns(
    display: &str,
    table_cfg: &TableConfig,
    live: Vec<LiveColumn>,
    matrix: &Matrix,
    source_tz: chrono_tz::Tz,
    unmapped_policy: UnmappedPolicy,
    report: &mut TableReport,
    findings: &mut Findings,
) -> Vec<MappedColumn> {
    for column in table_cfg.columns.keys() {
        if !live.iter().any(|l| &l.name == column) {
            findings.missing = true;
            report.problems.push(format!(
                "table '{display}': mapped column '{column}' does not exist"
            ));
        }
    }
    let mut columns = Vec::new();
    for l in live {
        let Some(spec) = table_cfg.columns.get(&l.name) else {
            let finding = format!(
                "table '{display}': column '{}' ({}) is not in the data map; \
                 classify it or mark it not_pii",
                l.name, l.pg_type
            );
            match unmapped_policy {
                UnmappedPolicy::Fail => {
                    findings.unmapped = true;
                    report.problems.push(finding);
                }
                UnmappedPolicy::Warn => report.warnings.push(finding),
            }
            continue;
        };
        match map_column(display, l, spec, matrix, source_tz) {
            Ok(column) => columns.push(column),
            Err(problem) => {
                findings.mismatch = true;
                report.problems.push(problem);
            }
        }
    }
    columns
}

/// Case-insensitive matching needs a text column.
fn check_identity_types(
    display: &str,
    table_cfg: &TableConfig,
    columns: &[MappedColumn],
    report: &mut TableReport,
    findings: &mut Findings,
) {
    for identity in table_cfg.identity.as_slice() {
        let Some(column) = columns.iter().find(|c| c.name == identity.column) else {
            continue; // reported as missing
        };
        if identity.matching == MatchMode::CaseInsensitive && !is_text_type(&column.typname) {
            findings.mismatch = true;
            report.problems.push(format!(
                "table '{display}', identity column '{}' (kind {}, {}): case_insensitive \
                 matching needs a text column; this one is {}",
                column.name,
                identity.kind,
                identity.matching.name(),
                column.pg_type
            ));
        }
    }
}

/// Warns when an identity column of a table where one row is one person has no unique index:
/// two people can then share a value, and one call would answer (or erase) for both.
fn advise_unique(
    name: &QualifiedName,
    table_cfg: &TableConfig,
    columns: &[MappedColumn],
    index_keys: &[IndexKey],
    source: &SourceConfig,
    report: &mut TableReport,
) {
    let display = name.display_name();
    for identity in table_cfg.identity.as_slice() {
        let Some(column) = columns.iter().find(|c| c.name == identity.column) else {
            continue;
        };
        let lowered = identity.matching == MatchMode::CaseInsensitive && column.typname != "citext";
        let unique = index_keys.iter().any(|k| {
            k.unique
                && if lowered {
                    k.lower_of.as_deref() == Some(column.name.as_str())
                } else {
                    k.column.as_deref() == Some(column.name.as_str())
                }
        });
        if !unique {
            let key = if lowered {
                format!("lower({})", quote_ident(&column.name))
            } else {
                quote_ident(&column.name)
            };
            report.warnings.push(format!(
                "table '{display}', identity column '{}' (kind {}): one row of this table is one \
                 person, but no unique index holds the column, so two people can share a value \
                 and one call would answer for both; create one (CREATE UNIQUE INDEX ON {}.{} \
                 ({key});), or set shared_identity = \"refuse\" (above max_identity_rows = {}, \
                 Erase always refuses)",
                column.name,
                identity.kind,
                quote_ident(&name.schema),
                quote_ident(&name.table),
                source.max_identity_rows
            ));
        }
    }
}

/// Warns, naming the CREATE INDEX to run, when no index serves an identity match or a
/// reference: without one, every subject costs a sequential scan of the table.
fn advise_indexes(
    name: &QualifiedName,
    table_cfg: &TableConfig,
    columns: &[MappedColumn],
    index_keys: &[IndexKey],
    report: &mut TableReport,
) {
    let display = name.display_name();
    for identity in table_cfg.identity.as_slice() {
        let Some(column) = columns.iter().find(|c| c.name == identity.column) else {
            continue; // reported as missing
        };
        if identity.matching == MatchMode::CaseInsensitive && !is_text_type(&column.typname) {
            continue; // reported as a type problem
        }
        if let Some(create) = missing_index(name, column, identity.matching, index_keys) {
            report.warnings.push(format!(
                "table '{display}', identity column '{}' (kind {}, {}): no index serves this \
                 match, so every subject costs a sequential scan of the table; create one: \
                 {create}",
                column.name,
                identity.kind,
                identity.matching.name()
            ));
        }
    }
    for reference in table_cfg.reference.as_slice() {
        let Some(column) = columns.iter().find(|c| c.name == reference.column) else {
            continue; // reported as missing
        };
        if let Some(create) = missing_index(name, column, MatchMode::Exact, index_keys) {
            report.warnings.push(format!(
                "table '{display}', reference column '{}' (to {}.{}): no index serves it, \
                 so every subject reached through it costs a sequential scan of the table; \
                 create one: {create}",
                column.name, reference.table, reference.to
            ));
        }
    }
}

/// References must compare columns of the same kind of type.
fn check_reference_types(tables: &[Option<MappedTable>], reports: &mut [TableReport]) {
    for (i, table) in tables.iter().enumerate() {
        let Some(table) = table else { continue };
        for (column, parent, to) in &table.references {
            let (Some(child), Some(Some(parent_table))) =
                (table.column(column), tables.get(*parent))
            else {
                continue;
            };
            let Some(target) = parent_table.column(to) else {
                continue;
            };
            if child.typcategory != target.typcategory {
                reports[i].status = TableStatus::TypeMismatch;
                reports[i].problems.push(format!(
                    "table '{}': reference column '{column}' ({}) cannot be compared with '{}.{to}' ({})",
                    table.display, child.pg_type, parent_table.display, target.pg_type
                ));
            }
        }
    }
}

/// Checks one mapped column's type against its category and rule, and builds its decoder
/// and coercion.
fn map_column(
    table: &str,
    live: LiveColumn,
    spec: &ColumnSpec,
    matrix: &Matrix,
    source_tz: chrono_tz::Tz,
) -> Result<MappedColumn, String> {
    let at = format!("table '{table}', column '{}' ({})", live.name, live.pg_type);
    let category = spec.category();
    if !matrix.knows(&category) {
        return Err(format!(
            "{at}: category '{category}' is not in the classification matrix"
        ));
    }
    let rule = spec.rule();
    let tz = match rule.and_then(|r| r.timezone.as_deref()) {
        Some(name) => name
            .parse()
            .map_err(|_| format!("{at}: unknown time zone '{name}'"))?,
        None => source_tz,
    };
    let decoder = Decoder::for_type(&live.typname, &live.category);
    let coercion = match rule.and_then(|r| r.coerce) {
        Some(
            coerce @ (CoerceRule::EpochSeconds
            | CoerceRule::EpochMilliseconds
            | CoerceRule::EpochMicroseconds),
        ) => {
            if !matches!(live.typname.as_str(), "int2" | "int4" | "int8") {
                return Err(format!(
                    "{at}: coerce = \"{}\" needs an integer column",
                    coerce.name()
                ));
            }
            let unit = match coerce {
                CoerceRule::EpochSeconds => EpochUnit::Seconds,
                CoerceRule::EpochMilliseconds => EpochUnit::Milliseconds,
                _ => EpochUnit::Microseconds,
            };
            Some(Coercion::Epoch { unit })
        }
        Some(CoerceRule::Date) => {
            if !is_text_type(&live.typname) {
                return Err(format!("{at}: coerce = \"date\" needs a text column"));
            }
            Some(Coercion::Date {
                formats: rule.map(|r| r.formats.clone()).unwrap_or_default(),
                tz,
                pivot: rule
                    .and_then(|r| r.century_pivot)
                    .unwrap_or(crate::values::DEFAULT_CENTURY_PIVOT),
            })
        }
        None if live.typname == "timestamp" => {
            (tz != chrono_tz::Tz::UTC).then_some(Coercion::LocalTimestamp { tz })
        }
        None => {
            if rule.is_some_and(|r| r.timezone.is_some()) {
                return Err(format!(
                    "{at}: timezone applies only to timestamp without time zone or coerce = \"date\""
                ));
            }
            None
        }
    };
    let scan_json = rule.is_some_and(|r| r.scan_json);
    if scan_json && !matches!(live.typname.as_str(), "json" | "jsonb") {
        return Err(format!("{at}: scan_json needs a json or jsonb column"));
    }
    if !category_fits_type(&category, &live.typname, &live.category, coercion.is_some()) {
        return Err(format!(
            "{at}: the type cannot hold values of category '{category}'"
        ));
    }
    // The identity parameter is cast to the column's type without modifiers; for blank-padded
    // and bit strings that would mean length 1, so they get their unbounded forms.
    let base_type = match live.typname.as_str() {
        "bpchar" => "bpchar".to_owned(),
        "bit" => "varbit".to_owned(),
        _ => live.base_type,
    };
    Ok(MappedColumn {
        decoder,
        coercion,
        scan_json,
        category,
        typcategory: live.category,
        typname: live.typname,
        name: live.name,
        pg_type: live.pg_type,
        base_type,
    })
}

/// Whether a column of this type (`pg_type.typname`, `pg_type.typcategory`) can hold values
/// of `category`: categories whose values have a known shape need a type that can hold it.
pub fn category_fits_type(category: &str, typname: &str, typcategory: &str, coerced: bool) -> bool {
    let text_like = typcategory == "S";
    match category {
        "contact.email" | "contact.phone" => text_like,
        "network.ip" => text_like || matches!(typname, "inet" | "cidr"),
        "birth_date" => {
            text_like || coerced || matches!(typname, "date" | "timestamp" | "timestamptz")
        }
        _ => true,
    }
}

fn catalog_error(source: &SourceConfig, e: &tokio_postgres::Error) -> PlanError {
    PlanError::Catalog {
        source_name: source.name.clone(),
        cause: crate::store::postgres::describe(e),
    }
}
