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

mod columns;
mod draft;
pub mod evidence;
pub mod links;
pub mod propose;
pub mod reach;
pub mod render;

use std::time::Duration;

use tokio::time::Instant;

use super::{Engine, ExtractError};
use crate::classify::Matrix;
use crate::config::SourceConfig;
pub use crate::store::discovery::Filter;
use crate::store::discovery::{Discover, DiscoverySnapshot, Table};
use crate::store::error::DbError;
use crate::store::{Backend, WithStore};
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

/// Drafts the data map of `source` from `store`, in one read-only snapshot whose
/// connection is checked out before `deadline`.
pub async fn discover<S: Discover>(
    store: &S,
    source: &SourceConfig,
    matrix: &Matrix,
    options: &Options,
    deadline: Option<Instant>,
) -> Result<Proposal, DbError> {
    let mut snapshot = store.discovery(options.statement_timeout, deadline).await?;
    let proposal = draft(&mut snapshot, source, matrix, options).await?;
    snapshot.end().await?;
    Ok(proposal)
}

/// The draft, read in `snapshot`.
async fn draft<D: DiscoverySnapshot>(
    snapshot: &mut D,
    source: &SourceConfig,
    matrix: &Matrix,
    options: &Options,
) -> Result<Proposal, DbError> {
    let limit = options.sample.min(MAX_SAMPLE);
    let tables = snapshot.tables(&options.filter).await?;
    let mut sampled = Vec::with_capacity(tables.len());
    for table in &tables {
        let keep = keep_values(table);
        let evidence = if table.readable {
            evidence::sample(snapshot, table, limit, matrix, &keep).await
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
        if let Some(evidence) = check_link(snapshot, &tables, &sampled, &candidate).await {
            links.push((candidate, evidence));
        }
    }
    let mut fan_in = reach::FanIn::new();
    let dialect = crate::schema::Dialect::of(source.kind);
    for (t, column, sql) in draft.fan_in_queries(&links, dialect) {
        // A failed measure (a timeout) leaves the link without one.
        if let Some(per_thousand) = snapshot.measure(&sql).await {
            fan_in.insert((t, column), per_thousand as f64 / 1000.0);
        }
    }
    Ok(draft.propose(links, &fan_in))
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
        tables: &'a [Table],
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
fn keep_values(table: &Table) -> Vec<bool> {
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
    tables: &[Table],
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
/// when most of them are there; a failed lookup (a timeout) leaves the link unproposed.
async fn check_link<D: DiscoverySnapshot>(
    snapshot: &mut D,
    tables: &[Table],
    sampled: &[evidence::TableEvidence],
    link: &propose::LinkCandidate,
) -> Option<String> {
    let child = &tables[link.child];
    let parent = &tables[link.parent];
    let c = child.columns.iter().position(|c| c.name == link.column)?;
    let to = parent.column(&link.to)?;
    let distinct = &sampled[link.child].columns[c].values;
    let values: Vec<&str> = distinct
        .iter()
        .map(String::as_str)
        .filter(|v| !to.is_integer() || v.parse::<i64>().is_ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    let found = snapshot
        .count_in(&parent.name, &to.name, &values, to.is_integer())
        .await?;
    link_evidence(tables, link, found, distinct.len())
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
        let drafted = self
            .admitted(source, caller, deadline, async || {
                let run = source.store.with(Drafting {
                    source: config,
                    matrix: &self.matrix,
                    options,
                    deadline,
                });
                within(deadline, run).await
            })
            .await;
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

/// A draft of a source's data map, written once for every store.
pub struct Drafting<'a> {
    pub source: &'a SourceConfig,
    pub matrix: &'a Matrix,
    pub options: &'a Options,
    /// The connection is checked out before it.
    pub deadline: Option<Instant>,
}

impl WithStore for Drafting<'_> {
    type Output = Result<Proposal, DbError>;

    async fn with<S: Backend>(self, store: &S) -> Self::Output {
        discover(store, self.source, self.matrix, self.options, self.deadline).await
    }
}

/// A drafting run, ended at `deadline`. A snapshot dropped by the deadline is not reused.
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
