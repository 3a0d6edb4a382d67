//! The engine: every RPC's database work, behind one guarded call.
//!
//! [`Engine`] holds the sources (pool, breaker, call slots, schema cache) and the stores that
//! record calls. Each RPC's work lives in a room of its own: [`extract`] streams one subject
//! from one snapshot, [`validate`] runs the schema gate and counts looser matches, and
//! [`discover`] drafts a data map. Each passes through [`guard`]: the source's circuit
//! breaker, then the caller's call slots, then a pooled connection, and the outcome settled
//! with the breaker, written once.
//!
//! A source's store is a [`SourceStore`]: PostgreSQL, or MySQL and MariaDB. Extract,
//! Validate and discover are written once, generic over [`crate::store::Backend`], and run on
//! a source's own store through [`SourceStore::with`]; Erase serves PostgreSQL, and refuses a
//! MySQL source by name.
//!
//! The engine does not know gRPC: the API layer maps [`ExtractError`] to a status.
//! It may import the schema, store, values, classify, records, resilience, observability and
//! subject rooms; nothing below it imports the engine.

pub mod discover;
pub mod erase;
mod error;
pub mod extract;
mod guard;
mod validate;

pub use error::ExtractError;
use error::Recorder;
pub use extract::{
    ExtractParams, ExtractStream, LinkReads, MAX_DETAIL_CHARS, MAX_IDENTITIES, MAX_IDENTITY_BYTES,
    MAX_LABEL_BYTES, MAX_MESSAGE_BYTES, MAX_PII_FIELDS_PER_COLUMN, MAX_PRIMARY_KEY_CHARS,
    MAX_REQUESTED_TABLES, MAX_VIOLATIONS_PER_TABLE, MoreIdentity,
};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::classify::Matrix;
use crate::config::Config;
use crate::observability::metrics::Metrics;
use crate::records::Records;
use crate::resilience::admission::SourceSlots;
use crate::resilience::breaker::{Breaker, State};
use crate::schema::cache::SchemaCache;
use crate::schema::{DataMap, LoadError, Plan, PlanError};
use crate::store::SourceStore;
use crate::subject::normalize::Normalizer;

/// Request limits from the server config.
#[derive(Debug, Clone)]
struct Limits {
    default_batch_size: u32,
    max_batch_size: u32,
    max_batch_bytes: usize,
    stream_buffer: usize,
    stall_timeout: Duration,
}

/// The identity's direct matches in each table it reaches directly, read from the counts of
/// the plan's `identity_rows_sql` (column `i` of its row at `count(i)`), each with whether one
/// row there is one person.
pub(crate) fn identity_rows(plan: &Plan, count: impl Fn(usize) -> i64) -> Vec<(String, u64, bool)> {
    plan.identity_tables
        .iter()
        .enumerate()
        .map(|(i, (table, guarded))| (table.clone(), count(i).max(0) as u64, *guarded))
        .collect()
}

/// The refusal for the first table where one row is one person that the identity matched
/// more than `max` times, if any.
pub(crate) fn shared_identity(rows: &[(String, u64, bool)], max: u64) -> Option<ExtractError> {
    rows.iter()
        .find(|(_, n, guarded)| *guarded && *n > max)
        .map(|(table, n, _)| ExtractError::SharedIdentity {
            table: table.clone(),
            rows: *n,
            max,
        })
}

/// One source: its pool and its data map, with the time the schema gate last passed.
pub(crate) struct Source {
    index: usize,
    name: String,
    breaker: Arc<Breaker>,
    store: SourceStore,
    slots: SourceSlots,
    schema: SchemaCache,
    /// Each identity kind's normaliser, built once when the engine starts.
    normalizers: HashMap<String, Normalizer>,
}

/// The engine, shared by every request.
pub struct Engine {
    records: Recorder,
    config: Arc<Config>,
    matrix: Arc<Matrix>,
    metrics: Arc<Metrics>,
    sources: HashMap<String, Arc<Source>>,
    limits: Limits,
    shutdown: CancellationToken,
}

impl Engine {
    /// Builds the pools (which connect lazily). `shutdown` cancels running extractions.
    pub fn new(
        config: Arc<Config>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
        records: Records,
        status_name: fn(&ExtractError) -> &'static str,
    ) -> Result<Engine, String> {
        if config.subject_key().len() < 16 {
            return Err("the subject key is missing or shorter than 16 bytes".into());
        }
        let mut sources = HashMap::new();
        for (index, cfg) in config.sources.iter().enumerate() {
            let source = Source {
                index,
                name: cfg.name.clone(),
                breaker: Breaker::new(&cfg.name, cfg.circuit_breaker.settings()),
                store: SourceStore::open(cfg)?,
                slots: SourceSlots::new(
                    &cfg.name,
                    cfg.max_connections as usize,
                    cfg.caller_share() as usize,
                    cfg.connect_timeout,
                ),
                schema: SchemaCache::default(),
                normalizers: cfg
                    .identity_kinds
                    .iter()
                    .map(|kind| (kind.clone(), cfg.normalizer(kind)))
                    .collect(),
            };
            sources.insert(cfg.name.clone(), Arc::new(source));
        }
        let server = &config.server;
        let limits = Limits {
            default_batch_size: server.default_batch_size,
            max_batch_size: server.max_batch_size,
            max_batch_bytes: server.max_batch_bytes,
            stream_buffer: server.stream_buffer,
            stall_timeout: server.send_stall_timeout,
        };
        Ok(Engine {
            records: Recorder {
                records,
                status_name,
            },
            metrics,
            matrix: config.matrix(),
            config,
            sources,
            limits,
            shutdown,
        })
    }

    /// Copies each pool's state into the pool gauges (called when metrics are scraped).
    pub fn update_pool_gauges(&self) {
        for (name, source) in &self.sources {
            let labels = crate::observability::metrics::source_labels(name);
            self.metrics
                .pool_max
                .get_or_create(&labels)
                .set(i64::from(self.config.sources[source.index].max_connections));
            if let Some(state) = source.store.pool_state() {
                self.metrics
                    .pool_connections
                    .get_or_create(&labels)
                    .set(i64::from(state.connections));
                self.metrics
                    .pool_idle
                    .get_or_create(&labels)
                    .set(i64::from(state.idle));
                self.metrics
                    .pool_waiting
                    .get_or_create(&labels)
                    .set(state.waiting as i64);
            }
            self.metrics
                .slots_waiting
                .get_or_create(&labels)
                .set(source.slots.waiting());
        }
    }

    /// Each source's circuit breaker state, and its changes.
    pub fn breaker_states(&self) -> Vec<(String, tokio::sync::watch::Receiver<State>)> {
        self.sources
            .values()
            .map(|s| (s.name.clone(), s.breaker.watch()))
            .collect()
    }

    /// The metrics the engine records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where calls are recorded: the audit log and the dead-letter queue.
    pub fn records(&self) -> &Records {
        &self.records.records
    }

    /// The normaliser of `kind` in `source`, when the source declares that kind.
    fn normalizer(&self, source: &str, kind: &str) -> Option<&Normalizer> {
        self.sources.get(source)?.normalizers.get(kind)
    }

    /// The named source. Names are echoed in errors, so an overlong one is refused unread.
    fn source(&self, name: &str) -> Result<&Arc<Source>, ExtractError> {
        if name.len() > MAX_LABEL_BYTES {
            return Err(ExtractError::InvalidArgument(format!(
                "source: at most {MAX_LABEL_BYTES} bytes"
            )));
        }
        self.sources
            .get(name)
            .ok_or_else(|| ExtractError::UnknownSource(name.to_owned()))
    }

    /// The source's data map. The schema gate runs on first use, again once the last pass is
    /// older than the source's `schema_refresh`, and after any error that suggests the catalog
    /// changed. A failed gate is not cached: the next request checks again.
    async fn data_map(
        &self,
        source: &Source,
        deadline: Option<Instant>,
    ) -> Result<Arc<DataMap>, ExtractError> {
        let cfg = &self.config.sources[source.index];
        source
            .schema
            .get_or_load(cfg.schema_refresh, || async {
                let loaded = DataMap::load(cfg, &self.matrix, &source.store, deadline).await;
                // New connections prepare the map's statements before their first call (the
                // pool replaces its connections over time, and grows under load).
                if let Ok(map) = &loaded {
                    source.store.prepare_on_connect(map.statements());
                }
                loaded.map_err(|error| {
                    if matches!(error, LoadError::Plan(PlanError::SchemaDrift { .. })) {
                        self.metrics
                            .gate_rejections
                            .get_or_create(&crate::observability::metrics::source_labels(&cfg.name))
                            .inc();
                    }
                    ExtractError::from(error)
                })
            })
            .await
    }

    /// The data map, with transient failures of the schema gate retried inside the deadline.
    async fn data_map_retrying(
        &self,
        source: &Source,
        deadline: Option<Instant>,
    ) -> Result<Arc<DataMap>, ExtractError> {
        let mut delays = self.config.sources[source.index].retry.policy().delays();
        loop {
            let result = self.data_map(source, deadline).await;
            match &result {
                Err(error) if error.is_retryable() => match delays.next_before(deadline) {
                    Some(delay) => {
                        tracing::warn!(source = %source.name, delay_ms = delay.as_millis() as u64,
                            %error, "transient failure of the schema gate: trying again");
                        tokio::time::sleep(delay).await;
                    }
                    None => return result,
                },
                _ => return result,
            }
        }
    }

    /// Forgets a source's data map, so that the next request reads the catalog again.
    async fn forget_map(source: &Source) {
        source.schema.forget().await;
    }
}

#[cfg(all(test, feature = "demo"))]
mod tests {
    use super::*;
    use crate::engine::extract::ExtractParams;
    use crate::subject::normalize::counts;
    use secrecy::SecretString;

    /// The demo data map, pointed at a port where nothing listens: the call fails at its
    /// checkout, after its value was normalised.
    fn unreachable_config() -> Config {
        let text = crate::demo::DATAMAP_TEMPLATE
            .replace("{host}", "127.0.0.1")
            .replace("{port}", "1")
            .replace("{database}", "shop")
            .replace("{user}", "nobody");
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{text}");
        Config::from_toml_str(&text, |name| match name {
            crate::demo::PASSWORD_ENV => Some("unused".to_owned()),
            crate::config::DEFAULT_SUBJECT_KEY_ENV => Some("unit-subject-key-0123456789".into()),
            _ => None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn normalisers_are_built_at_start_and_a_call_normalises_its_value_once() {
        let config = Arc::new(unreachable_config());
        let kinds = config.sources[0].identity_kinds.len();
        let metrics = Arc::new(Metrics::new(&config, &[]));
        let records = Records::open(&config.server).await.unwrap();
        let (built_before, _) = counts::get();
        let engine = Engine::new(
            config,
            CancellationToken::new(),
            metrics,
            records,
            |_| "UNAVAILABLE",
        )
        .unwrap();
        let (built, applied) = counts::get();
        assert_eq!(
            built - built_before,
            kinds,
            "one normaliser per identity kind"
        );

        let params = ExtractParams {
            source: "demo".into(),
            kind: "email".into(),
            value: SecretString::from(" Alice@Example.com "),
            batch_size: 0,
            request_id: "normalise-once".into(),
            compliance_tag: String::new(),
            tables: vec![],
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            dry_run: false,
            caller: "unit".into(),
            call_id: String::new(),
            span: tracing::Span::none(),
            links: Default::default(),
            more_identities: Vec::new(),
        };
        let error = match engine.extract(params).await {
            Ok(_) => panic!("nothing listens on port 1"),
            Err(error) => error,
        };
        assert!(error.to_string().contains("source 'demo'"), "{error}");
        assert_eq!(
            counts::get(),
            (built, applied + 1),
            "the call built no normaliser and normalised its value once"
        );
    }
}
