//! The data map checked against the live catalog, and the identity graph compiled into plans.
//!
//! A [`DataMap`] is built from a source's configuration plus its live catalog: every mapped
//! table and column must exist, and every live column must be mapped (fail closed: a new column
//! could hold personal data nobody classified). Then, for each identity kind, a [`Plan`] lists
//! the tables reachable from that kind, each with a compiled, parameterized SELECT and COUNT.
//!
//! Reachability follows the identity graph: a table with an identity column of the kind is
//! reached directly (`t0."email" = $1`); a table with a reference to a reached table is reached
//! through it, at any depth
//! (`t0."order_id" IN (SELECT t1."id" FROM "public"."orders" t1 WHERE t1."customer_id" IN (...))`).
//! A table reached by several paths matches any of them. The identity value is always the
//! bound parameter `$1`; names come from the data map, were found in the catalog, and are
//! quoted.

pub mod cache;
mod plan;

pub use plan::Looser;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_postgres::GenericClient;

use crate::classify::Matrix;
use crate::config::{
    CoerceRule, ColumnSpec, MatchMode, NOT_PII, QualifiedName, SourceConfig, UnmappedPolicy,
};
use crate::pb::{TableStatus, ValueKind};
use crate::values::coerce::{Coercion, Decoder, EpochUnit};

/// Problems that stop an extraction before any row is read.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "identity kind '{kind}' is not declared for source '{source_name}' (declared: {declared})"
    )]
    UnknownIdentityKind {
        source_name: String,
        kind: String,
        declared: String,
    },
    #[error("table '{table}' is not in the data map of source '{source_name}'")]
    UnknownTable { source_name: String, table: String },
    #[error("table '{table}' cannot be reached from identity kind '{kind}': {reason}")]
    Unreachable {
        table: String,
        kind: String,
        reason: String,
    },
    /// The live schema does not match the data map.
    #[error("schema drift in source '{source_name}': {problems}", problems = .problems.join("; "))]
    SchemaDrift {
        source_name: String,
        problems: Vec<String>,
    },
    /// A manifest must list at least one personal-data field; a plan without any would
    /// stream everything and then fail.
    #[error("source '{source_name}': nothing to extract as personal data: {detail}")]
    NoPersonalData { source_name: String, detail: String },
    #[error("source '{source_name}': reading the catalog failed: {cause}")]
    Catalog { source_name: String, cause: String },
}

/// One exported column.
#[derive(Debug, Clone)]
pub struct MappedColumn {
    pub name: String,
    /// The catalog's type name with modifiers, e.g. `character varying(255)`.
    pub pg_type: String,
    /// The type without modifiers, used to cast the identity parameter.
    pub base_type: String,
    pub category: String,
    pub decoder: Decoder,
    /// The declared coercion, if any.
    pub coercion: Option<Coercion>,
    /// Walk values for nested personal data.
    pub scan_json: bool,
    /// `pg_type.typcategory`, for comparing reference columns.
    pub typcategory: String,
    /// `pg_type.typname` (`text`, `citext`, `int8`, ...).
    pub typname: String,
}

impl MappedColumn {
    pub fn is_pii(&self) -> bool {
        self.category != NOT_PII
    }

    pub fn kind(&self) -> ValueKind {
        if self.coercion.is_some() {
            ValueKind::Timestamp
        } else {
            self.decoder.kind()
        }
    }
}

/// One mapped table, checked against the catalog.
#[derive(Debug)]
pub struct MappedTable {
    pub name: QualifiedName,
    /// Name shown to callers.
    pub display: String,
    /// What the table holds, in words, from the data map; empty when not given.
    pub description: String,
    /// Exported columns, in catalog order.
    pub columns: Vec<MappedColumn>,
    /// Indexes into `columns` of the primary-key columns.
    pub primary_key: Vec<usize>,
    identities: Vec<IdentityMatch>,
    /// (column, parent table index, parent column)
    references: Vec<(String, usize, String)>,
}

impl MappedTable {
    fn column(&self, name: &str) -> Option<&MappedColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.name.schema),
            quote_ident(&self.name.table)
        )
    }
}

/// An identity column of a table: the kind it answers, and how it is compared.
#[derive(Debug, Clone)]
struct IdentityMatch {
    kind: String,
    column: String,
    matching: MatchMode,
}

/// The tables and queries of one extraction by one identity kind.
#[derive(Debug)]
pub struct Plan {
    pub kind: String,
    pub tables: Vec<PlannedTable>,
    pub unreachable: Vec<(String, String)>,
    /// The distinct types of the identity columns of this kind, to check the value against.
    pub identity_types: Vec<String>,
}

/// A table of a plan with its compiled queries.
#[derive(Debug, Clone)]
pub struct PlannedTable {
    pub table: Arc<MappedTable>,
    pub reached_via: String,
    /// `SELECT <columns> FROM <table> t0 WHERE <condition>`, one parameter: the identity.
    pub select_sql: String,
    /// `SELECT count(*) FROM <table> t0 WHERE <condition>`.
    pub count_sql: String,
}

/// A source's data map, checked against its catalog, with one plan per identity kind.
#[derive(Debug)]
pub struct DataMap {
    pub source_name: String,
    pub tables: Vec<Arc<MappedTable>>,
    plans: HashMap<String, Arc<Plan>>,
    declared_kinds: Vec<String>,
    /// Schema findings that did not stop extraction (unmapped columns under `warn`).
    pub warnings: Vec<String>,
}

/// One live column as the catalog describes it.
struct LiveColumn {
    name: String,
    pg_type: String,
    base_type: String,
    typname: String,
    category: String,
}

const CATALOG_SQL: &str = "\
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL), \
       t.typname::text, t.typcategory::text, c.relkind::text \
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
SELECT a.attname::text, e.attname::text \
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

/// Text-like catalog types, whose values are PostgreSQL strings.
fn is_text_type(typname: &str) -> bool {
    matches!(typname, "text" | "varchar" | "bpchar" | "name" | "citext")
}

/// Checks the data map of `source` against the live catalog, table by table.
pub async fn check_schema(
    source: &SourceConfig,
    matrix: &Matrix,
    client: &impl GenericClient,
) -> Result<SchemaReport, PlanError> {
    let columns_stmt = client
        .prepare(CATALOG_SQL)
        .await
        .map_err(|e| catalog_error(source, &e))?;
    let pk_stmt = client
        .prepare(PRIMARY_KEY_SQL)
        .await
        .map_err(|e| catalog_error(source, &e))?;
    let index_stmt = client
        .prepare(INDEX_KEYS_SQL)
        .await
        .map_err(|e| catalog_error(source, &e))?;
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
        let name = QualifiedName::parse(&table_cfg.name)
            .expect("table names are checked by Config::validate");
        let display = name.display_name();
        let mut report = TableReport {
            table: display.clone(),
            status: TableStatus::Ok,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let rows = client
            .query(&columns_stmt, &[&name.schema, &name.table])
            .await
            .map_err(|e| catalog_error(source, &e))?;
        // Views and foreign tables have no indexes to advise on.
        let indexable = rows
            .first()
            .is_some_and(|r| matches!(r.get::<_, String>(5).as_str(), "r" | "p" | "m"));
        let live: Vec<LiveColumn> = rows
            .iter()
            .map(|r| LiveColumn {
                name: r.get(0),
                pg_type: r.get(1),
                base_type: r.get(2),
                typname: r.get(3),
                category: r.get(4),
            })
            .collect();
        if live.is_empty() {
            report.status = TableStatus::Missing;
            report.problems.push(format!(
                "table '{display}' does not exist in database '{}' (or the role cannot see it)",
                source.database
            ));
            reports.push(report);
            tables.push(None);
            continue;
        }
        let mut missing = false;
        for column in table_cfg.columns.keys() {
            if !live.iter().any(|l| &l.name == column) {
                missing = true;
                report.problems.push(format!(
                    "table '{display}': mapped column '{column}' does not exist"
                ));
            }
        }
        let mut mismatch = false;
        let mut unmapped = false;
        let mut columns = Vec::new();
        for l in live {
            let Some(spec) = table_cfg.columns.get(&l.name) else {
                let finding = format!(
                    "table '{display}': column '{}' ({}) is not in the data map; \
                     classify it or mark it not_pii",
                    l.name, l.pg_type
                );
                match source.unmapped_columns {
                    UnmappedPolicy::Fail => {
                        unmapped = true;
                        report.problems.push(finding);
                    }
                    UnmappedPolicy::Warn => report.warnings.push(finding),
                }
                continue;
            };
            match map_column(&display, l, spec, matrix, source_tz) {
                Ok(column) => columns.push(column),
                Err(problem) => {
                    mismatch = true;
                    report.problems.push(problem);
                }
            }
        }
        let primary_key: Vec<String> = client
            .query(&pk_stmt, &[&name.schema, &name.table])
            .await
            .map_err(|e| catalog_error(source, &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let index_keys: Vec<IndexKey> = client
            .query(&index_stmt, &[&name.schema, &name.table])
            .await
            .map_err(|e| catalog_error(source, &e))?
            .iter()
            .map(|r| IndexKey {
                column: r.get(0),
                lower_of: r.get(1),
            })
            .collect();
        for identity in table_cfg.identity.as_slice() {
            let Some(column) = columns.iter().find(|c| c.name == identity.column) else {
                continue; // reported above
            };
            let at = format!(
                "table '{display}', identity column '{}' (kind {}, {})",
                column.name,
                identity.kind,
                identity.matching.name()
            );
            if identity.matching == MatchMode::CaseInsensitive && !is_text_type(&column.typname) {
                mismatch = true;
                report.problems.push(format!(
                    "{at}: case_insensitive matching needs a text column; this one is {}",
                    column.pg_type
                ));
                continue;
            }
            if indexable
                && let Some(create) = missing_index(&name, column, identity.matching, &index_keys)
            {
                report.warnings.push(format!(
                    "{at}: no index serves this match, so every subject costs a sequential \
                     scan of the table; create one: {create}"
                ));
            }
        }
        // A reference finds its rows by its column: without an index on it, every subject
        // reached through it costs a sequential scan of this table.
        for reference in table_cfg.reference.as_slice() {
            let Some(column) = columns.iter().find(|c| c.name == reference.column) else {
                continue; // reported above
            };
            if indexable
                && let Some(create) = missing_index(&name, column, MatchMode::Exact, &index_keys)
            {
                report.warnings.push(format!(
                    "table '{display}', reference column '{}' (to {}.{}): no index serves it, \
                     so every subject reached through it costs a sequential scan of the table; \
                     create one: {create}",
                    column.name, reference.table, reference.to
                ));
            }
        }
        report.status = if missing {
            TableStatus::MissingColumns
        } else if mismatch {
            TableStatus::TypeMismatch
        } else if unmapped {
            TableStatus::UnmappedColumns
        } else {
            TableStatus::Ok
        };
        let primary_key = primary_key
            .iter()
            .filter_map(|pk| columns.iter().position(|c: &MappedColumn| &c.name == pk))
            .collect();
        tables.push(Some(MappedTable {
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
        }));
        reports.push(report);
    }

    // References must compare columns of the same kind of type.
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
                    .unwrap_or(crate::values::coerce::DEFAULT_CENTURY_PIVOT),
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

impl DataMap {
    /// Reads the catalog and returns the data map, or every schema problem at once.
    pub async fn load(
        source: &SourceConfig,
        matrix: &Matrix,
        client: &impl GenericClient,
    ) -> Result<Arc<DataMap>, PlanError> {
        let report = check_schema(source, matrix, client).await?;
        report.map.clone().ok_or_else(|| PlanError::SchemaDrift {
            source_name: source.name.clone(),
            problems: report.problems(),
        })
    }

    /// Compiles the plans of checked tables.
    fn compile(
        source: &SourceConfig,
        tables: Vec<Arc<MappedTable>>,
        warnings: Vec<String>,
    ) -> DataMap {
        let plans = source
            .identity_kinds
            .iter()
            .map(|kind| (kind.clone(), Arc::new(plan::compile(&tables, kind, None))))
            .collect();
        DataMap {
            source_name: source.name.clone(),
            tables,
            plans,
            declared_kinds: source.identity_kinds.clone(),
            warnings,
        }
    }

    /// The identity kinds from which `table` cannot be reached.
    pub fn unreachable_from(&self, table: &str) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .plans
            .values()
            .filter(|p| p.unreachable.iter().any(|(t, _)| t == table))
            .map(|p| p.kind.clone())
            .collect();
        kinds.sort();
        kinds
    }

    /// The plan for `kind` with its text identity columns compared more loosely than declared
    /// (for counting what an empty answer may have missed), restricted to the tables of
    /// `like`.
    pub fn looser_plan(&self, like: &Plan, looser: Looser) -> Plan {
        let mut plan = plan::compile(&self.tables, &like.kind, Some(looser));
        plan.tables.retain(|t| {
            like.tables
                .iter()
                .any(|l| l.table.display == t.table.display)
        });
        plan
    }

    /// The plan for `kind`, optionally restricted to `only` (table names as callers see them).
    pub fn plan(&self, kind: &str, only: &[String]) -> Result<Arc<Plan>, PlanError> {
        let plan = self
            .plans
            .get(kind)
            .ok_or_else(|| PlanError::UnknownIdentityKind {
                source_name: self.source_name.clone(),
                kind: kind.to_owned(),
                declared: self.declared_kinds.join(", "),
            })?;
        if only.is_empty() {
            if pii_fields(plan).is_empty() {
                return Err(PlanError::NoPersonalData {
                    source_name: self.source_name.clone(),
                    detail: format!("no table reachable by '{kind}' has a classified column"),
                });
            }
            return Ok(plan.clone());
        }
        let mut tables = Vec::new();
        for wanted in only {
            let wanted_name = QualifiedName::parse(wanted).map(|q| q.display_name());
            let Some(display) = wanted_name.filter(|d| self.tables.iter().any(|t| &t.display == d))
            else {
                return Err(PlanError::UnknownTable {
                    source_name: self.source_name.clone(),
                    table: wanted.clone(),
                });
            };
            if let Some((_, reason)) = plan.unreachable.iter().find(|(t, _)| *t == display) {
                return Err(PlanError::Unreachable {
                    table: display,
                    kind: kind.to_owned(),
                    reason: reason.clone(),
                });
            }
            if !tables
                .iter()
                .any(|t: &PlannedTable| t.table.display == display)
            {
                tables.extend(
                    plan.tables
                        .iter()
                        .find(|t| t.table.display == display)
                        .cloned(),
                );
            }
        }
        // Keep plan order, whatever order the caller listed the tables in.
        tables.sort_by_key(|t| {
            plan.tables
                .iter()
                .position(|p| p.table.display == t.table.display)
        });
        let restricted = Plan {
            kind: plan.kind.clone(),
            tables,
            unreachable: Vec::new(),
            identity_types: plan.identity_types.clone(),
        };
        if pii_fields(&restricted).is_empty() {
            return Err(PlanError::NoPersonalData {
                source_name: self.source_name.clone(),
                detail: "the requested tables hold no classified column".into(),
            });
        }
        Ok(Arc::new(restricted))
    }
}

fn catalog_error(source: &SourceConfig, e: &tokio_postgres::Error) -> PlanError {
    PlanError::Catalog {
        source_name: source.name.clone(),
        cause: crate::store::postgres::describe(e),
    }
}

/// Quotes an SQL identifier: wraps it in double quotes and doubles any double quote inside.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The personal-data fields of a plan, normalized: `table.column`, trimmed, lower-case,
/// without empties or duplicates, sorted.
pub fn pii_fields(plan: &Plan) -> Vec<String> {
    let mut fields: BTreeMap<String, ()> = BTreeMap::new();
    for t in &plan.tables {
        for c in t.table.columns.iter().filter(|c| c.is_pii()) {
            let field = format!("{}.{}", t.table.display, c.name)
                .trim()
                .to_lowercase();
            if !field.is_empty() {
                fields.insert(field, ());
            }
        }
    }
    fields.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_doubles_embedded_quotes() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --"),
            "\"x\"\"; DROP TABLE t; --\""
        );
    }
}
