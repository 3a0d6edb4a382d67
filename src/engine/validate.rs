//! Validate's database work: the schema gate run now, table by table, and, for a subject no
//! table holds, how many rows a looser match of the identity columns would find
//! (case-insensitive, and trimmed): counts only, from one read-only snapshot, never a value.
//! A dry run for a subject is an extraction that sends no rows (see [`super::extract`]).

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::{Engine, ExtractError};
use crate::pb;
use crate::schema::{LoadError, Looser, Plan, SchemaReport};
use crate::store::catalog::ReadCatalog;
use crate::store::read::{Abandon, Prefetch, ReadOptions, ReadSnapshot};
use crate::store::{Backend, WithStore};

/// The longest a looser count may run when the call has no deadline: these matches may not
/// have an index, so they can scan whole tables.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Engine {
    /// Runs the schema gate for `source` now, table by table (Validate without a subject).
    pub async fn schema_report(
        &self,
        source: &str,
        caller: &str,
        deadline: Option<Instant>,
    ) -> Result<SchemaReport, ExtractError> {
        let source = self.source(source)?;
        let cfg = &self.config.sources[source.index];
        // The connection goes back (when the guarded call ends) before the map's lock is
        // taken: `data_map` takes the lock and then a connection, and the opposite order could
        // wait on it until a timeout.
        let report = self
            .admitted(source, caller, deadline, async || {
                let (tables, foreign_keys) = crate::schema::catalog_wanted(cfg);
                let catalog = source
                    .store
                    .catalog(&tables, foreign_keys, deadline)
                    .await
                    .map_err(LoadError::from)?;
                let mut report = crate::schema::check_schema(cfg, &self.matrix, catalog);
                let samples = stored_form_samples(cfg, &report);
                if !samples.is_empty() {
                    let statements: Vec<String> = samples
                        .iter()
                        .map(|(_, _, sql, _, _)| sql.clone())
                        .collect();
                    let sampled = source.store.sample_texts(&statements, deadline).await?;
                    for ((t, column, _, kind, matching), values) in samples.into_iter().zip(sampled)
                    {
                        stored_form_warning(cfg, &mut report, t, &column, &kind, matching, &values);
                    }
                }
                Ok(report)
            })
            .await?;
        if let Some(map) = &report.map {
            source.store.prepare_on_connect(map.statements());
        }
        source.schema.store(report.map.clone()).await;
        Ok(report)
    }

    /// Counts, table by table, what each looser match of `kind` finds for `value` (as the
    /// kind's normalisation makes it) in the tables of the kind's plan.
    pub async fn looser_counts(
        &self,
        source_name: &str,
        caller: &str,
        kind: &str,
        value: &SecretString,
        deadline: Option<Instant>,
    ) -> Result<Vec<pb::LooserMatch>, ExtractError> {
        let source = self.source(source_name)?;
        let value = source
            .normalizers
            .get(kind)
            .ok_or_else(|| {
                ExtractError::InvalidArgument(format!(
                    "subject.kind: '{kind}' is not an identity kind of source '{source_name}'"
                ))
            })?
            .apply(value.expose_secret())
            .map_err(|e| ExtractError::InvalidArgument(format!("subject.value: {e}")))?;
        let map = self.data_map(source, deadline).await?;
        let plan = map.plan(kind, &[])?;
        let plans: Vec<_> = Looser::ALL
            .iter()
            .map(|looser| (*looser, map.looser_plan(&plan, *looser)))
            .collect();
        // As for an extraction: the time left, and never above the default.
        let cap = Instant::now() + DEFAULT_TIMEOUT;
        let limit = deadline.map_or(cap, |d| d.min(cap));
        self.admitted(source, caller, deadline, async || {
            source
                .store
                .with(LooserCounts {
                    plans: &plans,
                    value: &value,
                    deadline: limit,
                })
                .await
        })
        .await
    }
}

/// Each looser match's count, table by table, in one read-only snapshot.
struct LooserCounts<'a> {
    plans: &'a [(Looser, Plan)],
    value: &'a str,
    deadline: Instant,
}

impl WithStore for LooserCounts<'_> {
    type Output = Result<Vec<pb::LooserMatch>, ExtractError>;

    async fn with<S: Backend>(self, store: &S) -> Self::Output {
        {
            let prefetch: Vec<Prefetch<'_>> = self
                .plans
                .iter()
                .flat_map(|(_, plan)| &plan.tables)
                .map(|table| Prefetch {
                    sql: &table.count_sql,
                    columns: 1,
                })
                .collect();
            let mut snapshot = store
                .read_snapshot(ReadOptions {
                    deadline: Some(self.deadline),
                    idle_limit: DEFAULT_TIMEOUT,
                    prefetch: &prefetch,
                    value: self.value,
                })
                .await?;
            let counted = self.count(&mut snapshot).await;
            match counted {
                Ok(_) => snapshot.end().await?,
                Err(_) => snapshot.abandon(Abandon::Failed).await,
            }
            counted
        }
    }
}

impl LooserCounts<'_> {
    async fn count<R: ReadSnapshot>(
        &self,
        snapshot: &mut R,
    ) -> Result<Vec<pb::LooserMatch>, ExtractError> {
        let mut matches = Vec::new();
        for (looser, plan) in self.plans {
            let mut found = looser_match(*looser);
            for table in &plan.tables {
                let n = snapshot.counts(&table.count_sql, self.value).await?;
                found.add(&table.table.display, n.first().copied().unwrap_or(0));
            }
            matches.push(found);
        }
        Ok(matches)
    }
}

/// What a looser match found, before its tables are counted.
/// Stored values sampled per identity column, to tell whether normalised identities can
/// match them as the map compares them.
const STORED_FORM_SAMPLE: u32 = 100;

/// For each text identity column of a map that loaded: the index of its table report, the
/// column, the query that samples its stored values, its kind and how it is compared.
fn stored_form_samples(
    cfg: &crate::config::SourceConfig,
    report: &SchemaReport,
) -> Vec<(usize, String, String, String, crate::config::MatchMode)> {
    let Some(map) = &report.map else {
        return Vec::new();
    };
    let mut samples = Vec::new();
    for table_cfg in &cfg.tables {
        let Some(name) = crate::config::QualifiedName::parse(&table_cfg.name) else {
            continue;
        };
        let display = name.display_name();
        let (Some(t), Some(mapped)) = (
            report.tables.iter().position(|r| r.table == display),
            map.tables.iter().find(|m| m.display == display),
        ) else {
            continue;
        };
        for identity in table_cfg.identity.as_slice() {
            let Some(column) = mapped.columns.iter().find(|c| c.name == identity.column) else {
                continue;
            };
            if !column.is_text() {
                continue;
            }
            let c = map.dialect.quote(&column.name);
            let text = map.dialect.as_text(&c);
            let sql = format!(
                "SELECT {text} FROM {} WHERE {c} IS NOT NULL LIMIT {STORED_FORM_SAMPLE}",
                map.dialect.table(&name)
            );
            samples.push((
                t,
                column.name.clone(),
                sql,
                identity.kind.clone(),
                identity.matching,
            ));
        }
    }
    samples
}

/// Warns on table report `t` when identities of `kind` can hardly ever match the sampled
/// stored `values` of `column` as the map compares them (a phone stored as typed). Counts
/// only: no value leaves.
fn stored_form_warning(
    cfg: &crate::config::SourceConfig,
    report: &mut SchemaReport,
    t: usize,
    column: &str,
    kind: &str,
    matching: crate::config::MatchMode,
    values: &[String],
) {
    use crate::config::MatchMode;
    let normalizer = cfg.normalizer(kind);
    let form = normalizer.stored_form(
        values.iter().map(String::as_str),
        matching == MatchMode::CaseInsensitive,
    );
    if !form.mostly_unmatched(matching == MatchMode::Digits) {
        return;
    }
    let Some(name) = crate::config::QualifiedName::parse(&report.tables[t].table) else {
        return;
    };
    let dialect = crate::schema::Dialect::of(cfg.kind);
    let (note, _) = crate::engine::discover::propose::stored_form_note(
        dialect,
        &name,
        column,
        kind,
        &normalizer.describe(),
        form,
    );
    let table = &mut report.tables[t];
    table.warnings.push(format!(
        "table '{}', identity column '{column}' (kind {kind}, {}): {note}",
        table.table,
        matching.name()
    ));
}

fn looser_match(looser: Looser) -> pb::LooserMatch {
    pb::LooserMatch {
        r#match: looser.name().to_owned(),
        match_mode: match looser {
            Looser::CaseInsensitive => pb::MatchMode::CaseInsensitive,
            Looser::Trimmed => pb::MatchMode::Trimmed,
        }
        .into(),
        ..Default::default()
    }
}

impl pb::LooserMatch {
    /// Adds one table's count.
    fn add(&mut self, table: &str, n: i64) {
        self.row_count += n.max(0) as u64;
        self.tables.push(pb::TableRowCount {
            table: table.to_owned(),
            row_count: n.max(0) as u64,
        });
    }
}
