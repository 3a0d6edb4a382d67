//! Validate's database work: the schema gate run now, table by table, and, for a subject no
//! table holds, how many rows a looser match of the identity columns would find
//! (case-insensitive, and trimmed): counts only, from one read-only snapshot, never a value.
//! A dry run for a subject is an extraction that sends no rows (see [`super::extract`]).

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::{Engine, ExtractError};
use crate::pb;
use crate::schema::{Looser, SchemaReport};
use crate::store::SourceStore;
use crate::store::postgres::DbError;

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
        let report = match &source.store {
            SourceStore::Postgres(_) => {
                self.guarded(source, caller, deadline, "validate", |conn| async move {
                    let mut report =
                        crate::schema::check_schema(cfg, &self.matrix, &conn.client).await?;
                    for (t, column, sql, kind, matching) in stored_form_samples(cfg, &report) {
                        let rows = conn
                            .client
                            .query(&sql, &[])
                            .await
                            .map_err(|e| ExtractError::from(DbError::from_pg(&cfg.name, &e)))?;
                        let values: Vec<String> = rows.iter().filter_map(|r| r.get(0)).collect();
                        stored_form_warning(cfg, &mut report, t, &column, &kind, matching, &values);
                    }
                    Ok(report)
                })
                .await?
            }
            SourceStore::MySql(pool) => {
                self.admitted(source, caller, deadline, async || {
                    let mut report =
                        crate::schema::check_schema_mysql(cfg, &self.matrix, pool).await?;
                    let samples = stored_form_samples(cfg, &report);
                    if !samples.is_empty() {
                        let mut snapshot = pool.snapshot(deadline).await?;
                        for (t, column, sql, kind, matching) in samples {
                            let values = snapshot.first_texts(&sql).await?;
                            stored_form_warning(
                                cfg,
                                &mut report,
                                t,
                                &column,
                                &kind,
                                matching,
                                &values,
                            );
                        }
                        snapshot.finish().await?;
                    }
                    Ok(report)
                })
                .await?
            }
        };
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
        if let SourceStore::MySql(pool) = &source.store {
            return self
                .admitted(source, caller, deadline, async || {
                    // As on PostgreSQL: the time left, and never above the default.
                    let cap = Instant::now() + DEFAULT_TIMEOUT;
                    let limit = deadline.map_or(cap, |d| d.min(cap));
                    let mut snapshot = pool.snapshot(Some(limit)).await?;
                    let mut matches = Vec::new();
                    for (looser, plan) in &plans {
                        let mut found = looser_match(*looser);
                        for table in &plan.tables {
                            let n = snapshot.count(&table.count_sql, &value).await?;
                            found.add(&table.table.display, n);
                        }
                        matches.push(found);
                    }
                    snapshot.finish().await?;
                    Ok(matches)
                })
                .await;
        }
        let db =
            |e: tokio_postgres::Error| ExtractError::from(DbError::from_pg_bound(source_name, &e));
        self.guarded(
            source,
            caller,
            deadline,
            "validate",
            |mut conn| async move {
                let (client, _) = conn.parts();
                let txn = crate::store::postgres::read_only_snapshot(client)
                    .await
                    .map_err(db)?;
                let timeout = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(DEFAULT_TIMEOUT)
                    .min(DEFAULT_TIMEOUT)
                    .as_millis()
                    .max(1)
                    .to_string();
                txn.query(
                    "SELECT set_config('statement_timeout', $1, true)",
                    &[&timeout],
                )
                .await
                .map_err(db)?;
                let mut matches = Vec::new();
                for (looser, plan) in &plans {
                    let mut found = looser_match(*looser);
                    for table in &plan.tables {
                        let n: i64 = txn
                            .query_one(&table.count_sql, &[&value])
                            .await
                            .map_err(db)?
                            .get(0);
                        found.add(&table.table.display, n);
                    }
                    matches.push(found);
                }
                txn.commit().await.map_err(db)?;
                Ok(matches)
            },
        )
        .await
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
            if !crate::schema::is_text_type(&column.typname) {
                continue;
            }
            let c = map.dialect.quote(&column.name);
            let text = match map.dialect {
                crate::schema::Dialect::Postgres => format!("{c}::text"),
                crate::schema::Dialect::MySql => c.clone(),
            };
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
