//! Discovery: a draft data map read from the live database.
//!
//! In one read-only REPEATABLE READ snapshot, under a statement timeout:
//! 1. [`catalog`]: tables, columns, unique keys and foreign keys;
//! 2. [`evidence`]: a bounded `TABLESAMPLE` of each table, every value classified by the
//!    classification matrix's detectors, date formats, epoch ranges and the JSON walker, then
//!    dropped;
//! 3. [`propose`]: identities for the source's kinds, foreign keys as references, links
//!    without a foreign key checked against the data ("inferred, check"); [`reach`]: which
//!    way each reference reaches rows (owned, lookup, or left out), from the catalog and each
//!    key's measured fan-in; and (`columns`) a category and rule for every column, each with
//!    its evidence;
//! 4. [`render`]: the draft as TOML that `check-config` accepts.
//!
//! No sampled value leaves this module: not in the draft, the logs or the spans. Evidence is
//! names, categories, formats and counts.

pub mod catalog;
mod columns;
mod draft;
pub mod evidence;
mod mysql;
pub mod propose;
pub mod reach;
pub use mysql::discover as discover_mysql;
pub mod render;

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use super::{Engine, ExtractError};
use crate::classify::Matrix;
use crate::config::SourceConfig;
use crate::store::postgres::DbError;
pub use catalog::Filter;
pub use propose::{Proposal, TableProposal};

/// The largest sample per table a caller may ask for.
pub const MAX_SAMPLE: u32 = 10_000;
/// Rows sampled per table unless asked otherwise.
pub const DEFAULT_SAMPLE: u32 = 100;
/// The statement timeout of the sampling snapshot unless asked otherwise.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to read and how much.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows sampled per table, at most [`MAX_SAMPLE`]; 0 reads the catalog only.
    pub sample: u32,
    pub filter: Filter,
    /// Each sampling statement is cancelled after this long; the table's evidence is then
    /// what the catalog and the names say.
    pub statement_timeout: Duration,
    /// The share of a text column's samples in which a detector must find personal data inside
    /// the text for the column to be proposed as free text; 0 (the default) means any sample,
    /// since one leaked address is already personal data.
    pub free_text_share: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sample: DEFAULT_SAMPLE,
            filter: Filter::default(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            free_text_share: 0.0,
        }
    }
}

/// Drafts the data map of `source` from the database `client` is connected to.
pub async fn discover(
    client: &mut Client,
    source: &SourceConfig,
    matrix: &Matrix,
    options: &Options,
) -> Result<Proposal, DbError> {
    let db = |e: tokio_postgres::Error| DbError::from_pg(&source.name, &e);
    let limit = options.sample.min(MAX_SAMPLE);
    let mut tx = crate::store::postgres::read_only_snapshot(client)
        .await
        .map_err(db)?;
    evidence::set_statement_timeout(&tx, options.statement_timeout)
        .await
        .map_err(db)?;
    let tables = catalog::read(&tx, &options.filter).await.map_err(db)?;
    let mut sampled = Vec::with_capacity(tables.len());
    for table in &tables {
        let keep = keep_values(table);
        let evidence = if table.readable {
            evidence::sample(&mut tx, table, limit, matrix, &keep).await
        } else {
            evidence::TableEvidence {
                columns: vec![Default::default(); table.columns.len()],
                ..Default::default()
            }
        };
        sampled.push(evidence);
    }
    let mut draft = Draft::new(&tables, &sampled, source, matrix, options);
    let mut links = Vec::new();
    for candidate in std::mem::take(&mut draft.candidates) {
        if let Some(evidence) = check_link(&mut tx, &tables, &sampled, &candidate).await {
            links.push((candidate, evidence));
        }
    }
    let mut fan_in = reach::FanIn::new();
    for (t, column, sql) in draft.fan_in_queries(&links, crate::schema::Dialect::Postgres) {
        // A failed measure (a timeout) leaves the link without one and the snapshot usable.
        let Ok(savepoint) = tx.savepoint("dsr_discover_fan_in").await else {
            continue;
        };
        match savepoint.query_one(sql.as_str(), &[]).await {
            Ok(row) => {
                if let Some(per_thousand) = row.get::<_, Option<i64>>(0) {
                    fan_in.insert((t, column), per_thousand as f64 / 1000.0);
                }
                let _ = savepoint.commit().await;
            }
            Err(_) => {
                let _ = savepoint.rollback().await;
            }
        }
    }
    let proposal = draft.propose(links, &fan_in);
    drop(sampled);
    tx.rollback().await.map_err(db)?;
    Ok(proposal)
}

/// The planner over a source's sampled tables, with the identities it proposes and the links
/// without a foreign key it would check (each store looks them up in its own snapshot).
struct Draft<'a> {
    planner: propose::Planner<'a>,
    identities: Vec<Vec<propose::IdentityProposal>>,
    candidates: Vec<propose::LinkCandidate>,
}

impl<'a> Draft<'a> {
    fn new(
        tables: &'a [catalog::Table],
        sampled: &'a [evidence::TableEvidence],
        source: &'a SourceConfig,
        matrix: &'a Matrix,
        options: &Options,
    ) -> Draft<'a> {
        let planner = propose::Planner {
            tables,
            evidence: sampled,
            source,
            matrix,
            free_text_share: options.free_text_share,
        };
        let identities: Vec<_> = (0..tables.len()).map(|t| planner.identities(t)).collect();
        let candidates = planner.link_candidates(&identities);
        Draft {
            planner,
            identities,
            candidates,
        }
    }

    /// The links whose fan-in the reach rule weighs: every foreign key and every link the
    /// data confirmed, each as (child table, column, the query that measures it in `dialect`).
    fn fan_in_queries(
        &self,
        links: &[(propose::LinkCandidate, String)],
        dialect: crate::schema::Dialect,
    ) -> Vec<(usize, String, String)> {
        let mut queries: Vec<(usize, String, String)> = Vec::new();
        let keys = self
            .planner
            .tables
            .iter()
            .enumerate()
            .flat_map(|(t, table)| {
                table
                    .foreign_keys
                    .iter()
                    .map(move |k| (t, k.column.clone()))
            });
        let linked = links.iter().map(|(l, _)| (l.child, l.column.clone()));
        for (t, column) in keys.chain(linked) {
            let table = &self.planner.tables[t];
            if !table.readable || queries.iter().any(|(c, k, _)| *c == t && *k == column) {
                continue;
            }
            let sql = reach::fan_in_sql(&dialect.table(&table.name), &dialect.quote(&column));
            queries.push((t, column, sql));
        }
        queries
    }

    /// The proposal, with the links that were found and the fan-in of each measured link.
    fn propose(
        self,
        links: Vec<(propose::LinkCandidate, String)>,
        fan_in: &reach::FanIn,
    ) -> Proposal {
        self.planner.propose(self.identities, links, fan_in)
    }
}

/// Which columns' sampled values are kept: only where a link without a foreign key may start.
fn keep_values(table: &catalog::Table) -> Vec<bool> {
    table
        .columns
        .iter()
        .map(|c| {
            table.foreign_key(&c.name).is_none()
                && (c.is_text() || (c.is_integer() && c.name.ends_with("_id")))
        })
        .collect()
}

/// How many of the child's distinct sampled values were found in the parent's column: the
/// evidence for a link when most of them were.
fn link_evidence(
    tables: &[catalog::Table],
    link: &propose::LinkCandidate,
    found: i64,
    distinct: usize,
) -> Option<String> {
    let (child, parent) = (&tables[link.child], &tables[link.parent]);
    let distinct = distinct as i64;
    (found > 0 && found * 2 >= distinct).then(|| {
        format!(
            "inferred, check: {found} of {distinct} distinct sampled values of {}.{} are in \
             {}.{}, and no foreign key says so",
            child.name.display_name(),
            link.column,
            parent.name.display_name(),
            link.to
        )
    })
}

/// Looks the child column's sampled values up in the parent's column. Returns the evidence
/// when most of them are there.
async fn check_link(
    tx: &mut tokio_postgres::Transaction<'_>,
    tables: &[catalog::Table],
    sampled: &[evidence::TableEvidence],
    link: &propose::LinkCandidate,
) -> Option<String> {
    let child = &tables[link.child];
    let parent = &tables[link.parent];
    let c = child.columns.iter().position(|c| c.name == link.column)?;
    let to = parent.column(&link.to)?;
    let values = &sampled[link.child].columns[c].values;
    if values.is_empty() {
        return None;
    }
    let from = format!(
        "{}.{}",
        crate::schema::quote_ident(&parent.name.schema),
        crate::schema::quote_ident(&parent.name.table)
    );
    let column = crate::schema::quote_ident(&to.name);
    let savepoint = tx.savepoint("dsr_discover_link").await.ok()?;
    let found: Result<i64, _> = if to.is_integer() {
        let numbers: Vec<i64> = values.iter().filter_map(|v| v.parse().ok()).collect();
        let sql = format!("SELECT count(*) FROM {from} WHERE {column} = ANY($1::int8[])");
        savepoint
            .query_one(sql.as_str(), &[&numbers])
            .await
            .map(|r| r.get(0))
    } else {
        let texts: Vec<&str> = values.iter().map(String::as_str).collect();
        let sql = format!("SELECT count(*) FROM {from} WHERE {column} = ANY($1::text[])");
        savepoint
            .query_one(sql.as_str(), &[&texts])
            .await
            .map(|r| r.get(0))
    };
    // A failed lookup (a timeout) leaves the link unproposed and the snapshot usable.
    let found = match found {
        Ok(found) => {
            savepoint.commit().await.ok()?;
            found
        }
        Err(_) => {
            let _ = savepoint.rollback().await;
            return None;
        }
    };
    link_evidence(tables, link, found, values.len())
}

impl Engine {
    /// Drafts the data map of `source` from its database (the Discover RPC), as a guarded
    /// call: like an extraction, it passes the source's circuit breaker and holds one of the
    /// caller's slots and one pooled connection, checked out before `deadline`.
    pub async fn discover(
        &self,
        source_name: &str,
        caller: &str,
        options: &Options,
        deadline: Option<Instant>,
    ) -> Result<Proposal, ExtractError> {
        let source = self
            .sources
            .get(source_name)
            .ok_or_else(|| ExtractError::UnknownSource(source_name.to_owned()))?;
        let config = &self.config.sources[source.index];
        // No statement outlives the call's deadline.
        let mut options = options.clone();
        if let Some(deadline) = deadline {
            options.statement_timeout = options
                .statement_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
        }
        let options = &options;
        let drafted = match &source.store {
            crate::store::SourceStore::MySql(pool) => {
                self.admitted(source, caller, deadline, async || {
                    // A statement left running by the deadline is ended by its own limit.
                    within(
                        deadline,
                        mysql::discover(pool, config, &self.matrix, options),
                    )
                    .await
                })
                .await
            }
            crate::store::SourceStore::Postgres(_) => {
                self.guarded(
                    source,
                    caller,
                    deadline,
                    "discover",
                    |mut conn| async move {
                        let (client, _) = conn.parts();
                        let run = discover(client, config, &self.matrix, options);
                        let proposal = within(deadline, run).await;
                        // A connection left mid-query by the deadline is not reused.
                        if proposal.is_err() {
                            conn.mark_broken();
                        }
                        proposal
                    },
                )
                .await
            }
        };
        if let Ok(proposal) = &drafted {
            tracing::info!(
                dsr.source = %source_name,
                dsr.discover.tables = proposal.tables.len(),
                dsr.discover.unreachable = proposal.unreachable.len(),
                dsr.discover.sampled_rows = proposal
                    .tables
                    .iter()
                    .map(|t| u64::from(t.sampled_rows))
                    .sum::<u64>(),
                "discovery finished"
            );
        }
        drafted
    }
}

/// A drafting run, ended at `deadline`.
async fn within(
    deadline: Option<Instant>,
    run: impl Future<Output = Result<Proposal, DbError>>,
) -> Result<Proposal, ExtractError> {
    match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, run).await {
            Ok(drafted) => drafted.map_err(ExtractError::from),
            Err(_) => Err(ExtractError::DeadlineExceeded),
        },
        None => run.await.map_err(ExtractError::from),
    }
}
