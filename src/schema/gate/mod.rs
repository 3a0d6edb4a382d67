//! The schema gate: a source's data map checked against its live catalog, table by table.
//! Every mapped table and column must exist with a type its category and rule can read, and
//! every live column must be mapped (fail closed: a new column could hold personal data
//! nobody classified). Missing indexes are warnings that name the CREATE INDEX to run.

use std::collections::HashMap;
use std::sync::Arc;

mod cascades;

use super::{
    ColumnType, DataMap, Dialect, IdentityMatch, MappedColumn, MappedReference, MappedTable,
    PlanError,
};
use crate::classify::Matrix;
use crate::config::{
    CoerceRule, ColumnSpec, MatchMode, QualifiedName, SourceConfig, TableConfig, UnmappedPolicy,
};
use crate::pb::TableStatus;
use crate::store::catalog::{Catalog, IndexKey, LiveColumn, LiveTable};
use crate::store::dialect::IndexOn;
use crate::values::{Coercion, EpochUnit};

/// The index to create when none of `keys` serves the identity match of `column`, or `None`
/// when one does.
fn missing_index(
    table: &QualifiedName,
    column: &MappedColumn,
    matching: MatchMode,
    keys: &[IndexKey],
    dialect: Dialect,
) -> Option<String> {
    let (served, on) = match matching {
        MatchMode::CaseInsensitive if !column.folds_case => (
            keys.iter()
                .any(|k| k.lower_of.as_deref() == Some(column.name.as_str())),
            IndexOn::Lower,
        ),
        // An index on the digits is an expression the catalog reader does not take apart:
        // the advice is given once, when the map asks for digits, and is not checked.
        MatchMode::Digits => return None,
        _ => (
            keys.iter()
                .any(|k| k.column.as_deref() == Some(column.name.as_str())),
            IndexOn::Column,
        ),
    };
    (!served).then(|| format!("{};", dialect.create_index(table, &column.name, on)))
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

    /// The data map, or every problem at once as schema drift.
    pub fn into_map(self, source: &SourceConfig) -> Result<Arc<DataMap>, PlanError> {
        match self.map {
            Some(map) => Ok(map),
            None => Err(PlanError::SchemaDrift {
                source_name: source.name.clone(),
                problems: self.problems(),
            }),
        }
    }

    /// Every warning of every table.
    pub fn warnings(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(|t| t.warnings.iter().cloned())
            .collect()
    }
}

/// The tables a source's data map names, in order, and whether the gate needs the
/// database's foreign keys (when erasure changes a table, to warn about the keys into it
/// from tables the map does not name): what [`check_schema`] wants of the catalog.
pub fn catalog_wanted(source: &SourceConfig) -> (Vec<QualifiedName>, bool) {
    (
        source.tables.iter().map(parse_name).collect(),
        cascades::changes_tables(source),
    )
}

/// Runs the schema gate: every mapped table and column against the live catalog (as
/// [`catalog_wanted`] asked for it), table by table. The report lists every problem at once;
/// its map is set only when there is none.
pub fn check_schema(source: &SourceConfig, matrix: &Matrix, catalog: Catalog) -> SchemaReport {
    let (mut reports, tables) = check_tables(source, matrix, catalog.tables);
    cascades::check(source, &catalog.foreign_keys, &mut reports);
    finish(source, reports, tables)
}

fn parse_name(table_cfg: &TableConfig) -> QualifiedName {
    QualifiedName::parse(&table_cfg.name).expect("table names are checked by Config::validate")
}

/// Checks every mapped table against what the catalog said of it.
fn check_tables(
    source: &SourceConfig,
    matrix: &Matrix,
    live: Vec<LiveTable>,
) -> (Vec<TableReport>, Vec<Option<MappedTable>>) {
    let source_tz: chrono_tz::Tz = source.timezone.parse().unwrap_or(chrono_tz::Tz::UTC);
    let index: HashMap<QualifiedName, usize> = source
        .tables
        .iter()
        .enumerate()
        .filter_map(|(i, t)| QualifiedName::parse(&t.name).map(|q| (q, i)))
        .collect();
    let mut reports = Vec::new();
    let mut tables: Vec<Option<MappedTable>> = Vec::new();
    for (table_cfg, live) in source.tables.iter().zip(live) {
        let (report, table) = check_table(source, live, table_cfg, matrix, source_tz, &index);
        reports.push(report);
        tables.push(table);
    }
    check_reference_types(Dialect::of(source.kind), &tables, &mut reports);
    for kept in source.kept_unreachable_after_erasure() {
        if let Some(report) = reports.get_mut(kept.index) {
            report.warnings.push(format!(
                "table '{}': an erasure keeps its rows (retain), but a later access request for \
                 the same person could no longer find them: every path to them runs through {} \
                 (deleted or masked by the erasure). The kept rows are still the person's; keep \
                 the link (mask the parent's row rather than delete it, and leave its key \
                 unmasked), or give this table an identity column",
                kept.table,
                kept.broken_by.join(", ")
            ));
        }
    }
    (reports, tables)
}

/// The report, with the data map compiled when no table has a problem.
fn finish(
    source: &SourceConfig,
    reports: Vec<TableReport>,
    tables: Vec<Option<MappedTable>>,
) -> SchemaReport {
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
    SchemaReport {
        tables: reports,
        map,
    }
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
fn check_table(
    source: &SourceConfig,
    live: LiveTable,
    table_cfg: &TableConfig,
    matrix: &Matrix,
    source_tz: chrono_tz::Tz,
    index: &HashMap<QualifiedName, usize>,
) -> (TableReport, Option<MappedTable>) {
    let name = parse_name(table_cfg);
    let display = name.display_name();
    let mut report = TableReport {
        table: display.clone(),
        status: TableStatus::Ok,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    if live.columns.is_empty() {
        report.status = TableStatus::Missing;
        report.problems.push(format!(
            "table '{display}' does not exist in database '{}' (or the role cannot see it)",
            source.database
        ));
        return (report, None);
    }
    check_masks(&display, table_cfg, &live.columns, source, &mut report);
    let mut findings = Findings::default();
    let columns = map_columns(
        &display,
        table_cfg,
        live.columns,
        matrix,
        source_tz,
        source.unmapped_columns,
        &mut report,
        &mut findings,
    );
    let dialect = super::Dialect::of(source.kind);
    if live.indexable {
        advise_indexes(
            &name,
            table_cfg,
            &columns,
            &live.index_keys,
            dialect,
            &mut report,
        );
        if source.one_row_per_person(&name) {
            advise_unique(
                &name,
                table_cfg,
                &columns,
                &live.index_keys,
                source,
                &mut report,
            );
        }
    }
    check_identity_types(&display, table_cfg, &columns, &mut report, &mut findings);
    if table_cfg.erase.is_none()
        && source
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
    let primary_key = live
        .primary_key
        .iter()
        .filter_map(|pk| columns.iter().position(|c: &MappedColumn| &c.name == pk))
        .collect();
    let table = MappedTable {
        name,
        display,
        description: table_cfg.description.clone().unwrap_or_default(),
        columns,
        primary_key,
        spans_relations: live.spans_relations,
        base_table: live.base_table,
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
            .filter(|r| r.followed())
            .map(|r| MappedReference {
                column: r.column.clone(),
                parent: QualifiedName::parse(&r.table)
                    .and_then(|q| index.get(&q).copied())
                    .expect("references are checked by Config::validate"),
                to: r.to.clone(),
                reach: r.rule().expect("followed references have a reach"),
            })
            .collect(),
        unique: live
            .index_keys
            .iter()
            .filter(|k| k.unique)
            .filter_map(|k| k.column.clone())
            .chain((live.primary_key.len() == 1).then(|| live.primary_key[0].clone()))
            .collect(),
    };
    (report, Some(table))
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
                l.name, l.type_name
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
        if identity.matching != MatchMode::Exact && !column.is_text() {
            findings.mismatch = true;
            report.problems.push(format!(
                "table '{display}', identity column '{}' (kind {}, {}): {} \
                 matching needs a text column; this one is {}",
                column.name,
                identity.kind,
                identity.matching.name(),
                identity.matching.name(),
                column.type_name
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
        let unique_keys: Vec<IndexKey> = index_keys.iter().filter(|k| k.unique).cloned().collect();
        let dialect = Dialect::of(source.kind);
        if let Some(create) = missing_index(name, column, identity.matching, &unique_keys, dialect)
        {
            let create = create.replacen("CREATE INDEX", "CREATE UNIQUE INDEX", 1);
            report.warnings.push(format!(
                "table '{display}', identity column '{}' (kind {}): one row of this table is one \
                 person, but no unique index holds the column, so two people can share a value \
                 and one call would answer for both; create one ({create}), or set \
                 shared_identity = \"refuse\" (above max_identity_rows = {}, Erase always \
                 refuses)",
                column.name, identity.kind, source.max_identity_rows
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
    dialect: Dialect,
    report: &mut TableReport,
) {
    let display = name.display_name();
    for identity in table_cfg.identity.as_slice() {
        let Some(column) = columns.iter().find(|c| c.name == identity.column) else {
            continue; // reported as missing
        };
        if identity.matching == MatchMode::CaseInsensitive && !column.is_text() {
            continue; // reported as a type problem
        }
        if let Some(create) = missing_index(name, column, identity.matching, index_keys, dialect) {
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
        if let Some(create) = missing_index(name, column, MatchMode::Exact, index_keys, dialect) {
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
fn check_reference_types(
    dialect: Dialect,
    tables: &[Option<MappedTable>],
    reports: &mut [TableReport],
) {
    for (i, table) in tables.iter().enumerate() {
        let Some(table) = table else { continue };
        for MappedReference {
            column, parent, to, ..
        } in &table.references
        {
            let (Some(child), Some(Some(parent_table))) =
                (table.column(column), tables.get(*parent))
            else {
                continue;
            };
            let Some(target) = parent_table.column(to) else {
                continue;
            };
            // Two columns of a type no store names (geometry, a composite) compare only
            // when they are of the same type.
            let same_other =
                child.column_type != ColumnType::Other || child.base_type == target.base_type;
            if !(dialect.compares(child.column_type, target.column_type) && same_other) {
                reports[i].status = TableStatus::TypeMismatch;
                reports[i].problems.push(format!(
                    "table '{}': reference column '{column}' ({}) cannot be compared with '{}.{to}' ({})",
                    table.display, child.type_name, parent_table.display, target.type_name
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
    let at = format!(
        "table '{table}', column '{}' ({})",
        live.name, live.type_name
    );
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
    let decoder = live.decoder;
    let integer = live.column_type == ColumnType::Integer;
    // A date and time without a zone: PostgreSQL's timestamp, MySQL's DATETIME (MySQL's
    // TIMESTAMP is an instant, which the session delivers in UTC).
    let wall_clock = live.column_type == ColumnType::LocalTimestamp;
    let coercion = match rule.and_then(|r| r.coerce) {
        Some(
            coerce @ (CoerceRule::EpochSeconds
            | CoerceRule::EpochMilliseconds
            | CoerceRule::EpochMicroseconds),
        ) => {
            if !integer {
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
            if live.column_type != ColumnType::Text {
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
        None if wall_clock => (tz != chrono_tz::Tz::UTC).then_some(Coercion::LocalTimestamp { tz }),
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
    if scan_json && live.column_type != ColumnType::Json {
        return Err(format!("{at}: scan_json needs a json or jsonb column"));
    }
    if !category_fits_type(&category, live.column_type, coercion.is_some()) {
        return Err(format!(
            "{at}: a {} column cannot hold values of category '{category}': {}",
            live.type_name,
            category_types(&category)
        ));
    }
    Ok(MappedColumn {
        decoder,
        folds_case: live.folds_case,
        coercion,
        scan_json,
        category,
        column_type: live.column_type,
        max_bytes: live.max_bytes,
        name: live.name,
        type_name: live.type_name,
        base_type: live.base_type,
    })
}

/// Whether a column of this type can hold values of `category`: categories whose values have
/// a known shape need a type that can hold it.
pub fn category_fits_type(category: &str, column_type: ColumnType, coerced: bool) -> bool {
    let text = column_type == ColumnType::Text;
    match category {
        "contact.email" | "contact.phone" => text,
        "network.ip" => text || column_type == ColumnType::Network,
        // A YEAR (MySQL) holds a year of birth.
        "birth_date" => {
            text || coerced
                || matches!(
                    column_type,
                    ColumnType::Date
                        | ColumnType::LocalTimestamp
                        | ColumnType::Timestamp
                        | ColumnType::Year
                )
        }
        _ => true,
    }
}

/// The column types a category takes, in words, for the message of a column that does not
/// fit ([`category_fits_type`]).
fn category_types(category: &str) -> &'static str {
    match category {
        "contact.email" | "contact.phone" => "it takes a text column",
        "network.ip" => "it takes a text or an address column (inet, cidr; MariaDB's inet4, inet6)",
        "birth_date" => {
            "it takes a date, timestamp, datetime or year column, a text column, or a coercion \
             rule that reads a date (coerce = \"date\", \"epoch_seconds\", ...)"
        }
        _ => "every type fits it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_category_names_the_types_that_hold_it() {
        // A year of birth (MySQL's YEAR) is a birth date; an integer is not.
        use ColumnType::*;
        assert!(category_fits_type("birth_date", Year, false));
        assert!(!category_fits_type("birth_date", Integer, false));
        assert!(category_fits_type("birth_date", Integer, true), "coerced");
        assert!(!category_fits_type("contact.email", Integer, false));
        assert!(category_fits_type("network.ip", Network, false));
        assert!(!category_fits_type("network.ip", Uuid, false));
        assert!(category_types("birth_date").contains("year column"));
        assert!(category_types("network.ip").contains("inet4"));
    }
}
