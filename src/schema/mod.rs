//! The data map checked against the live catalog ([`gate`]), the identity graph compiled into
//! plans ([`plan`]), and each source's map kept between calls ([`cache`]).
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
mod gate;
mod plan;

pub use crate::store::dialect::{Compare, Looser, SqlColumn};
pub use gate::{SchemaReport, TableReport, catalog_wanted, category_fits_type, check_schema};
pub use plan::MAX_VALUE_BYTES;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::classify::Matrix;
use crate::config::{MatchMode, NOT_PII, QualifiedName, SourceConfig};
use crate::pb::ValueKind;
use crate::store::catalog::{CatalogError, ReadCatalog};
use crate::store::error::DbError;
pub use crate::store::{ColumnDecoder, ColumnType, Dialect};
use crate::values::Coercion;

/// Why a data map could not be loaded: no connection, or a problem of the map.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl From<CatalogError> for LoadError {
    fn from(error: CatalogError) -> LoadError {
        match error {
            CatalogError::Db(e) => LoadError::Db(e),
            CatalogError::Read { source_name, cause } => {
                LoadError::Plan(PlanError::Catalog { source_name, cause })
            }
        }
    }
}

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
    /// The catalog's type name with modifiers, e.g. `character varying(255)` (MySQL's
    /// `COLUMN_TYPE`, `varchar(255)`).
    pub type_name: String,
    /// The type without modifiers, used to cast the identity parameter.
    pub base_type: String,
    pub category: String,
    pub decoder: ColumnDecoder,
    /// The column compares text case-insensitively by itself: `citext`, or a MySQL `_ci`
    /// collation.
    pub folds_case: bool,
    /// The declared coercion, if any.
    pub coercion: Option<Coercion>,
    /// Walk values for nested personal data.
    pub scan_json: bool,
    /// What the column holds.
    pub column_type: ColumnType,
    /// The most bytes one value can take, where the store's type bounds it.
    pub max_bytes: Option<u64>,
}

impl MappedColumn {
    /// The column as a dialect writes SQL about it, named in the query as `expr`.
    pub fn sql<'a>(&'a self, expr: &'a str) -> SqlColumn<'a> {
        SqlColumn {
            expr,
            column_type: self.column_type,
            decoder: self.decoder,
            folds_case: self.folds_case,
            cast_type: &self.base_type,
            max_bytes: self.max_bytes,
        }
    }

    pub fn is_text(&self) -> bool {
        self.column_type == ColumnType::Text
    }

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
    /// Its rows live in several relations (partitions, inheritance children), where a row
    /// id (`ctid`) names a row only within one of them.
    pub spans_relations: bool,
    /// Its rows are stored here (a table, or a partitioned one), not in a view, a
    /// materialised view or a foreign table, so that erasure can change them.
    pub base_table: bool,
    identities: Vec<IdentityMatch>,
    /// The followed references (`owned` and `lookup`); `none` is left out.
    references: Vec<MappedReference>,
    /// Columns that hold a unique value per row by the catalog (a primary key or a unique
    /// index of one column): a reference into one cannot reach a second row by sharing a key.
    unique: Vec<String>,
}

/// A followed reference of a mapped table: `column` holds `to` of a row of `tables[parent]`.
#[derive(Debug, Clone)]
struct MappedReference {
    column: String,
    parent: usize,
    to: String,
    reach: crate::config::ReachRule,
}

impl MappedTable {
    fn column(&self, name: &str) -> Option<&MappedColumn> {
        self.columns.iter().find(|c| c.name == name)
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
    /// The tables the identity reaches directly, each with whether one of its rows is one
    /// person (so that `max_identity_rows` guards it), in plan order.
    pub identity_tables: Vec<(String, bool)>,
    /// One row, one column per table of `identity_tables`: how many rows the identity (`$1`)
    /// matches there directly. `None` when no table is reached directly.
    pub identity_rows_sql: Option<String>,
    /// The checks of the reach rule, in the order of the columns of `reach_guard_sql`.
    pub reach_guards: Vec<ReachGuard>,
    /// One row, one column per guard: the rows reached by lookup, or the rows that share a
    /// followed key. `None` when nothing needs checking.
    pub reach_guard_sql: Option<String>,
    /// A plan of several identities of one subject (bound as one JSON array, in this order):
    /// each, with the types its value must read as. Empty for a plan of one identity.
    pub identities: Vec<PlanIdentity>,
    /// For several identities: one row, per table of `tables` and then per identity, how many
    /// of the table's rows that identity alone reaches.
    pub identity_counts_sql: Option<String>,
}

/// One identity of a plan of several.
#[derive(Debug, Clone)]
pub struct PlanIdentity {
    pub kind: String,
    /// The kind, or `email#2` for a second identity of one kind, as paths name it.
    pub label: String,
    /// The distinct types of the identity columns of this kind.
    pub types: Vec<String>,
}

/// A table of a plan with its compiled queries.
#[derive(Debug, Clone)]
pub struct PlannedTable {
    pub table: Arc<MappedTable>,
    pub reached_via: String,
    /// `SELECT <columns> FROM <table> t0 WHERE <condition>`, one parameter: the identity.
    /// With `bounded`, two more columns follow the table's: which column (1-based, 0 for
    /// none) holds a value above [`MAX_VALUE_BYTES`], and its size; such a value is sent as
    /// NULL, so it never crosses into the process (text, bytea, json, jsonb and arrays).
    pub select_sql: String,
    pub bounded: bool,
    /// `SELECT count(*) FROM <table> t0 WHERE <condition>`.
    pub count_sql: String,
    /// `<table> AS t0`.
    pub from: String,
    /// The WHERE clause of each UNION ALL branch (each selects rows no earlier one did), with
    /// the identity as `$1`.
    pub branches: Vec<String>,
    /// How many of the first branches compare the table's own identity columns: the rows
    /// they select are the ones the identity matches directly.
    pub identity_branches: usize,
    /// The branches that select rows reached by `lookup` alone (read for the subject, never
    /// followed down).
    pub lookup_branches: Vec<LookupBranch>,
    /// For each followed key into this table that the catalog does not prove unique: its
    /// path, and an expression that is above 0 when a second row shares a key the subject's
    /// rows hold.
    pub target_checks: Vec<(String, String)>,
    /// In a plan of several identities: per identity, an expression counting the rows of
    /// this table that identity alone reaches (`0` where it reaches none).
    pub identity_counts: Vec<String>,
}

/// A branch of a planned table that selects rows reached by `lookup`: the rows of this table
/// whose `key` equals `column` of a reached row of `child`.
#[derive(Debug, Clone)]
pub struct LookupBranch {
    /// The index of the branch in [`PlannedTable::branches`].
    pub branch: usize,
    /// The path, as `started` names it.
    pub via: String,
    /// The referencing table, as callers see its name.
    pub child: String,
    pub column: String,
    pub key: String,
}

/// A check of the reach rule in the subject's snapshot, before any row leaves or changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachGuard {
    pub table: String,
    /// The path by which the rows are reached, as `started` and the manifest name it.
    pub path: String,
    pub check: ReachCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachCheck {
    /// At most this many rows reached by lookup (`max_reached_rows`): more means a hub.
    Rows { max: u64 },
    /// No second row shares a key that the path follows.
    UniqueTarget,
}

impl PlannedTable {
    /// An expression that counts the rows the identity matches directly in this table: one
    /// `count(*)` subquery per identity branch, summed (the branches select disjoint rows).
    pub fn identity_count_sql(&self) -> String {
        self.branches[..self.identity_branches]
            .iter()
            .map(|w| format!("(SELECT count(*) FROM {} WHERE {w})", self.from))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// The most plans of several identities a data map keeps compiled; beyond it, such a plan
/// is compiled for its call alone.
const MAX_KEPT_PLANS: usize = 64;

/// A source's data map, checked against its catalog, with one plan per identity kind.
#[derive(Debug)]
pub struct DataMap {
    pub source_name: String,
    pub tables: Vec<Arc<MappedTable>>,
    pub dialect: Dialect,
    plans: HashMap<String, Arc<Plan>>,
    /// Plans of several identities, compiled when first asked for, by their kinds in order.
    several: std::sync::Mutex<HashMap<Vec<String>, Arc<Plan>>>,
    /// Erasure's plans, for the kinds where they differ from `plans`: identity columns
    /// compared exactly (the source's `erasure.matching = "exact"`, the default).
    erasure_plans: HashMap<String, Arc<Plan>>,
    declared_kinds: Vec<String>,
    /// Schema findings that did not stop extraction (unmapped columns under `warn`).
    pub warnings: Vec<String>,
}

impl DataMap {
    /// A map with no table, for the cache's tests.
    #[cfg(test)]
    pub(crate) fn empty_for_tests() -> DataMap {
        DataMap {
            source_name: "test".into(),
            tables: Vec::new(),
            dialect: Dialect::of(crate::config::DatabaseKind::Postgres),
            plans: HashMap::new(),
            several: Default::default(),
            erasure_plans: HashMap::new(),
            declared_kinds: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Checks the data map of `source` against the live catalog, table by table.
impl DataMap {
    /// Reads the catalog of `store` and returns the data map, or every schema problem at
    /// once.
    pub async fn load(
        source: &SourceConfig,
        matrix: &Matrix,
        store: &impl ReadCatalog,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Arc<DataMap>, LoadError> {
        let (tables, foreign_keys) = catalog_wanted(source);
        let catalog = store.catalog(&tables, foreign_keys, deadline).await?;
        Ok(check_schema(source, matrix, catalog).into_map(source)?)
    }

    /// Compiles the plans of checked tables.
    fn compile(
        source: &SourceConfig,
        tables: Vec<Arc<MappedTable>>,
        warnings: Vec<String>,
    ) -> DataMap {
        let dialect = Dialect::of(source.kind);
        let compile = |compare: Compare, kinds: &mut dyn Iterator<Item = &String>| {
            kinds
                .map(|kind| {
                    let mut plan =
                        plan::compile(&tables, &plan::Asked::only(kind), compare, dialect);
                    plan.guard_identity(source);
                    plan.guard_reach(source, dialect);
                    (kind.clone(), Arc::new(plan))
                })
                .collect::<HashMap<_, _>>()
        };
        let plans = compile(Compare::Declared, &mut source.identity_kinds.iter());
        // Erasure's own plans, only for the kinds where exact differs from as declared: a
        // column compared case-insensitively, or a citext one.
        let looser_somewhere = |kind: &String| {
            tables.iter().any(|t| {
                t.identities.iter().any(|i| {
                    &i.kind == kind
                        && (i.matching == MatchMode::CaseInsensitive
                            || t.column(&i.column).is_some_and(|c| c.folds_case))
                })
            })
        };
        let erasure_plans = match source.erasure.matching {
            crate::config::erasure::ErasureMatching::Exact => compile(
                Compare::Exact,
                &mut source.identity_kinds.iter().filter(|k| looser_somewhere(k)),
            ),
            crate::config::erasure::ErasureMatching::AsExtract => HashMap::new(),
        };
        DataMap {
            source_name: source.name.clone(),
            tables,
            dialect,
            plans,
            several: Default::default(),
            erasure_plans,
            declared_kinds: source.identity_kinds.clone(),
            warnings,
        }
    }

    /// The statement that reads `column` of `table` on the rows `plan`'s identity matches
    /// there directly (its identity branches only: a link never reads a row reached through
    /// another), as text, at most `limit` distinct values. `None` when the plan does not
    /// reach the table directly, or the column is not mapped.
    pub fn link_sql(&self, plan: &Plan, table: &str, column: &str, limit: usize) -> Option<String> {
        let planned = plan.tables.iter().find(|t| t.table.display == table)?;
        if planned.identity_branches == 0 {
            return None;
        }
        let mapped = planned.table.column(column)?;
        let expr = format!("t0.{}", self.dialect.quote(&mapped.name));
        let matched = planned.branches[..planned.identity_branches]
            .iter()
            .map(|branch| format!("({branch})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        Some(format!(
            "SELECT DISTINCT {} FROM {} WHERE ({matched}) AND {expr} IS NOT NULL LIMIT {limit}",
            self.dialect.as_text(&expr),
            planned.from
        ))
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
        let mut plan = plan::compile(
            &self.tables,
            &plan::Asked::only(&like.kind),
            Compare::Looser(looser),
            self.dialect,
        );
        plan.tables.retain(|t| {
            like.tables
                .iter()
                .any(|l| l.table.display == t.table.display)
        });
        plan
    }

    /// The plan by which `Erase` finds the subject's rows of `kind`: identity columns compared
    /// exactly, unless the source's erasure settings say to match as `Extract` does.
    pub fn erasure_plan(&self, kind: &str) -> Result<Arc<Plan>, PlanError> {
        let declared = self.plan(kind, &[])?;
        Ok(self.erasure_plans.get(kind).cloned().unwrap_or(declared))
    }

    /// The plan for several identities of one subject, of `kinds` in the order their values
    /// are bound (one kind: [`DataMap::plan`]), optionally restricted to `only`. Compiled
    /// when first asked for, and kept.
    pub fn plan_of(
        &self,
        source: &SourceConfig,
        kinds: &[String],
        only: &[String],
    ) -> Result<Arc<Plan>, PlanError> {
        let [first, more @ ..] = kinds else {
            return Err(PlanError::UnknownIdentityKind {
                source_name: self.source_name.clone(),
                kind: String::new(),
                declared: self.declared_kinds.join(", "),
            });
        };
        if more.is_empty() {
            return self.plan(first, only);
        }
        for kind in kinds {
            self.plan(kind, &[])?;
        }
        let known = self
            .several
            .lock()
            .ok()
            .and_then(|plans| plans.get(kinds).cloned());
        let plan = match known {
            Some(plan) => plan,
            None => {
                let mut plan = plan::compile(
                    &self.tables,
                    &plan::Asked::several(kinds),
                    Compare::Declared,
                    self.dialect,
                );
                plan.guard_identity(source);
                plan.guard_reach(source, self.dialect);
                let plan = Arc::new(plan);
                // Kept up to a bound, so that callers who vary their kinds cannot grow it.
                if let Ok(mut plans) = self.several.lock()
                    && plans.len() < MAX_KEPT_PLANS
                {
                    plans.insert(kinds.to_vec(), plan.clone());
                }
                plan
            }
        };
        self.restrict(&plan, only)
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
        self.restrict(plan, only)
    }

    /// `plan`, restricted to `only` when it names tables.
    fn restrict(&self, plan: &Arc<Plan>, only: &[String]) -> Result<Arc<Plan>, PlanError> {
        let kind = &plan.kind;
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
            // A restricted extraction is guarded as the whole plan is: another person's rows
            // are not safer for being asked for one table at a time.
            identity_tables: plan.identity_tables.clone(),
            identity_rows_sql: plan.identity_rows_sql.clone(),
            reach_guards: plan.reach_guards.clone(),
            reach_guard_sql: plan.reach_guard_sql.clone(),
            identities: plan.identities.clone(),
            identity_counts_sql: None,
        };
        let mut restricted = restricted;
        restricted.fill_identity_counts(self.dialect);
        if pii_fields(&restricted).is_empty() {
            return Err(PlanError::NoPersonalData {
                source_name: self.source_name.clone(),
                detail: "the requested tables hold no classified column".into(),
            });
        }
        Ok(Arc::new(restricted))
    }
}

impl Plan {
    /// Whether each table the identity reaches directly is in this plan and reached by its
    /// identity columns alone, so that the table's own COUNT(*) is the identity's direct rows
    /// and `identity_rows_sql` need not run.
    pub fn identity_rows_from_counts(&self) -> bool {
        self.identity_tables.iter().all(|(name, _)| {
            self.tables
                .iter()
                .any(|t| &t.table.display == name && t.identity_branches == t.branches.len())
        })
    }

    /// Fills in the tables the identity reaches directly, and the query that counts its rows
    /// in each.
    fn guard_identity(&mut self, source: &SourceConfig) {
        let direct: Vec<&PlannedTable> = self
            .tables
            .iter()
            .filter(|t| t.identity_branches > 0)
            .collect();
        self.identity_tables = direct
            .iter()
            .map(|t| {
                (
                    t.table.display.clone(),
                    source.one_row_per_person(&t.table.name),
                )
            })
            .collect();
        self.identity_rows_sql = (!direct.is_empty()).then(|| {
            let columns = direct
                .iter()
                .map(|t| t.identity_count_sql())
                .collect::<Vec<_>>()
                .join(", ");
            format!("SELECT {columns}")
        });
    }
}

impl Plan {
    /// Fills in the query that counts, per table and identity, the rows each identity of a
    /// plan of several reaches alone.
    fn fill_identity_counts(&mut self, dialect: Dialect) {
        let columns: Vec<String> = self
            .tables
            .iter()
            .flat_map(|t| t.identity_counts.iter().map(|c| dialect.as_bigint(c)))
            .collect();
        self.identity_counts_sql =
            (!columns.is_empty()).then(|| format!("SELECT {}", columns.join(", ")));
    }

    /// Fills in the checks of the reach rule and the one query that runs them: per table
    /// reached by lookup, its lookup rows against `max_reached_rows`; per followed key the
    /// catalog does not prove unique, the rows that share it.
    fn guard_reach(&mut self, source: &SourceConfig, dialect: Dialect) {
        let mut guards = Vec::new();
        let mut columns = Vec::new();
        for t in &self.tables {
            if !t.lookup_branches.is_empty() {
                guards.push(ReachGuard {
                    table: t.table.display.clone(),
                    path: t
                        .lookup_branches
                        .iter()
                        .map(|l| l.via.as_str())
                        .collect::<Vec<_>>()
                        .join(" | "),
                    check: ReachCheck::Rows {
                        max: source.max_reached_rows(&t.table.name),
                    },
                });
                columns.push(
                    t.lookup_branches
                        .iter()
                        .map(|l| {
                            format!(
                                "(SELECT count(*) FROM {} WHERE {})",
                                t.from, t.branches[l.branch]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" + "),
                );
            }
            for (path, check) in &t.target_checks {
                guards.push(ReachGuard {
                    table: t.table.display.clone(),
                    path: path.clone(),
                    check: ReachCheck::UniqueTarget,
                });
                columns.push(check.clone());
            }
        }
        self.reach_guard_sql = (!columns.is_empty()).then(|| {
            let columns = columns
                .iter()
                .map(|c| dialect.as_bigint(c))
                .collect::<Vec<_>>()
                .join(", ");
            format!("SELECT {columns}")
        });
        self.reach_guards = guards;
    }

    /// The first guard that the counts (in `reach_guards` order) break, as the refusal to
    /// give: `None` when the subject's rows keep to the rule.
    pub fn reach_refusal(&self, count: impl Fn(usize) -> i64) -> Option<ReachRefusal> {
        self.reach_guards.iter().enumerate().find_map(|(i, g)| {
            let found = count(i).max(0) as u64;
            match g.check {
                ReachCheck::Rows { max } if found > max => Some(ReachRefusal::Hub {
                    table: g.table.clone(),
                    path: g.path.clone(),
                    rows: found,
                    max,
                }),
                ReachCheck::UniqueTarget if found > 0 => Some(ReachRefusal::SharedKey {
                    table: g.table.clone(),
                    path: g.path.clone(),
                    rows: found,
                }),
                _ => None,
            }
        })
    }
}

/// Why a subject's reach broke the rule, in the snapshot: names, paths and counts, never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachRefusal {
    #[error(
        "table '{table}' is reached by lookup ({path}) with {rows} rows for this subject, above \
         max_reached_rows = {max}: a hub, whose rows belong to many people, so the call was \
         refused before any row was read or changed. Make the reference reach = \"none\", \
         or raise max_reached_rows for the table if the rows are the subject's"
    )]
    Hub {
        table: String,
        path: String,
        rows: u64,
        max: u64,
    },
    #[error(
        "table '{table}': the key followed by {path} is not unique: {rows} more rows share the \
         subject's keys, so other people's rows would be reached; the call was refused before \
         any row was read or changed. Make the target column unique, or the reference \
         reach = \"none\""
    )]
    SharedKey {
        table: String,
        path: String,
        rows: u64,
    },
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
    fn identifiers_are_quoted_with_embedded_quotes_doubled() {
        let pg = Dialect::of(crate::config::DatabaseKind::Postgres);
        assert_eq!(pg.quote("plain"), "\"plain\"");
        assert_eq!(pg.quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            pg.quote("x\"; DROP TABLE t; --"),
            "\"x\"\"; DROP TABLE t; --\""
        );
        let my = Dialect::of(crate::config::DatabaseKind::Mysql);
        assert_eq!(my.quote("x`; DROP TABLE t; --"), "`x``; DROP TABLE t; --`");
    }
}
