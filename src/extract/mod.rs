//! The extraction engine: one subject, one snapshot, streamed in bounded batches.
//!
//! [`Engine::extract`] checks the request, resolves the plan, and spawns a producer task that
//! owns one pooled connection for the whole extraction:
//!
//! 1. `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`; the first query fixes the snapshot.
//! 2. Per table, a portal over the compiled SELECT is read `batch_size` rows at a time; rows
//!    are decoded and cut into batches by rows and by bytes, and each batch waits for room in
//!    a bounded channel. A slow client therefore slows the database read instead of growing
//!    the server's memory.
//! 3. Per table, `COUNT(*)` in the same snapshot must equal the rows streamed, or the
//!    extraction ends with DATA_LOSS.
//! 4. The manifest is checked against the manifest rules and sent last, after the read-only
//!    transaction committed.
//!
//! The producer races its work against three stop signals: the client went away (the channel
//! closed), the caller's deadline passed, or the server is shutting down. On any of them the
//! running query is cancelled on the PostgreSQL server with a cancel request, the transaction
//! is rolled back, and the connection is returned clean, or marked broken so that the pool
//! discards it.
//!
//! The steps live apart: [`snapshot`] holds the transaction and its cancellation, [`table`]
//! one table's portal reads and row conversion, [`batch`] the cutting of batches, [`job`] the
//! producer's hooks, messages and manifest, and [`error`] what ends an extraction.

mod batch;
mod error;
mod job;
mod looser;
pub mod manifest;
mod outcome;
mod records;
mod snapshot;
mod table;

pub use error::ExtractError;
use job::Job;
pub use outcome::{MAX_PII_FIELDS_PER_COLUMN, MAX_VIOLATIONS_PER_TABLE};
pub use records::Records;
pub use table::{MAX_DETAIL_CHARS, MAX_PRIMARY_KEY_CHARS};

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use crate::admission::SourceSlots;
use crate::config::Config;
use crate::datamap::cache::SchemaCache;
use crate::datamap::{DataMap, PlanError, SchemaReport};
use crate::db::SourcePool;
use crate::metrics::Metrics;
use crate::pb::{ExtractResponse, extract_response::Event};
use crate::pii::Matrix;
use crate::resilience::breaker::{Breaker, Outcome, Pass, State, Transition};
use crate::subject::subject_id;
use error::breaker_outcome;

/// The longest identity value accepted. Identities are e-mails, ids and the like; anything
/// longer is a malformed request, not a subject.
pub const MAX_IDENTITY_BYTES: usize = 1024;

/// The longest request_id or compliance_tag accepted. Both are logged and echoed back.
pub const MAX_LABEL_BYTES: usize = 128;

/// The largest message sent: gRPC clients refuse messages over 4 MiB by default. A single row
/// must fit in one message beside its batch's column descriptors.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 - 16 * 1024;

/// The most table names one request may list.
pub const MAX_REQUESTED_TABLES: usize = 1000;

/// What a caller asked for. The identity value is a secret: it never appears in `Debug`.
#[derive(Debug)]
pub struct ExtractParams {
    pub source: String,
    pub kind: String,
    pub value: SecretString,
    pub batch_size: u32,
    pub request_id: String,
    pub compliance_tag: String,
    pub tables: Vec<String>,
    pub deadline: Option<Instant>,
    /// Read, coerce, scan and count everything, but send no rows (Validate's dry run).
    pub dry_run: bool,
    /// The authenticated caller's name, for logs.
    pub caller: String,
    /// The call's `x-request-id`, for logs.
    pub call_id: String,
    /// The call's server span; the extraction's hook spans are its children.
    pub span: tracing::Span,
}

/// Request limits from the server config.
#[derive(Debug, Clone)]
struct Limits {
    default_batch_size: u32,
    max_batch_size: u32,
    max_batch_bytes: usize,
    stream_buffer: usize,
    stall_timeout: Duration,
}

/// One source: its pool and its data map, with the time the schema gate last passed.
struct Source {
    index: usize,
    name: String,
    breaker: Arc<Breaker>,
    pool: SourcePool,
    slots: SourceSlots,
    schema: SchemaCache,
}

/// Lets a call through the source's breaker, or refuses it with `CircuitOpen` while open.
/// Either way the check is a `compliance.circuit_breaker` hook span.
fn pass_breaker(source: &Source) -> Result<Pass, ExtractError> {
    let (pass, moved) = source.breaker.admit(Instant::now());
    breaker_hook(&source.name, source.breaker.state(), moved);
    pass.map_err(|refused| ExtractError::CircuitOpen {
        source_name: source.name.clone(),
        retry_after: refused.retry_after,
    })
}

/// Reports a call's outcome to its source's breaker; a state change is a hook span too.
fn settle(source: &Source, pass: Pass, outcome: Outcome) {
    if let Some(moved) = source.breaker.finish(pass, outcome, Instant::now()) {
        breaker_hook(&source.name, moved.to, Some(moved));
    }
}

/// Settles the breaker when a step before the producer failed; passes the pass on otherwise.
fn settle_on_error<T>(
    source: &Source,
    pass: Pass,
    result: Result<T, ExtractError>,
) -> Result<(T, Pass), ExtractError> {
    match result {
        Ok(value) => Ok((value, pass)),
        Err(error) => {
            settle(source, pass, breaker_outcome(Some(&error)));
            Err(error)
        }
    }
}

/// The `compliance.circuit_breaker` hook: the state checked or reached, and a transition as
/// an event of the span.
pub(crate) fn breaker_hook(source: &str, state: State, moved: Option<Transition>) {
    let span = tracing::info_span!(
        "compliance.circuit_breaker",
        dsr.source = %source,
        dsr.breaker.state = state.as_str(),
    );
    if let Some(t) = moved {
        tracing::info!(
            parent: &span,
            dsr.breaker.from = t.from.as_str(),
            dsr.breaker.to = t.to.as_str(),
            dsr.breaker.calls = t.calls,
            dsr.breaker.failures = t.failures,
            "circuit breaker transition"
        );
    }
}

/// The extraction engine, shared by every request.
pub struct Engine {
    records: Records,
    config: Arc<Config>,
    matrix: Arc<Matrix>,
    metrics: Arc<Metrics>,
    sources: HashMap<String, Arc<Source>>,
    limits: Limits,
    shutdown: CancellationToken,
}

/// The stream of one extraction: the producer's messages, then its error if it failed.
///
/// The error travels on its own one-shot channel, so the producer never blocks on delivering
/// it to a client that stopped reading, and the client still receives every buffered batch
/// before the error. A stream that closes without a manifest and without an error (which the
/// producer never does on purpose) still ends with an error: a stream never ends "OK" without
/// its manifest.
pub struct ExtractStream {
    rx: mpsc::Receiver<ExtractResponse>,
    outcome: oneshot::Receiver<ExtractError>,
    saw_manifest: bool,
    done: bool,
}

impl Stream for ExtractStream {
    type Item = Result<ExtractResponse, ExtractError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(message) => {
                if matches!(message.event, Some(Event::Manifest(_))) {
                    self.saw_manifest = true;
                }
                Poll::Ready(Some(Ok(message)))
            }
            None => {
                self.done = true;
                match self.outcome.try_recv() {
                    Ok(error) => Poll::Ready(Some(Err(error))),
                    Err(_) if self.saw_manifest => Poll::Ready(None),
                    Err(_) => Poll::Ready(Some(Err(ExtractError::Internal(
                        "the extraction ended without a manifest".into(),
                    )))),
                }
            }
        }
    }
}

impl Engine {
    /// Builds the pools (which connect lazily). `shutdown` cancels running extractions.
    pub fn new(
        config: Arc<Config>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
        records: Records,
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
                pool: SourcePool::new(cfg)?,
                slots: SourceSlots::new(
                    &cfg.name,
                    cfg.max_connections as usize,
                    cfg.caller_share() as usize,
                    cfg.connect_timeout,
                ),
                schema: SchemaCache::default(),
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
            records,
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
            let state = source.pool.state();
            let labels = crate::metrics::source_labels(name);
            self.metrics
                .pool_connections
                .get_or_create(&labels)
                .set(i64::from(state.connections));
            self.metrics
                .pool_max
                .get_or_create(&labels)
                .set(i64::from(self.config.sources[source.index].max_connections));
            self.metrics
                .pool_idle
                .get_or_create(&labels)
                .set(i64::from(state.idle_connections));
            self.metrics
                .pool_waiting
                .get_or_create(&labels)
                .set(state.statistics.pending_gets() as i64);
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

    /// Drafts the data map of `source` from its database (the Discover RPC). Like an
    /// extraction, it passes the source's circuit breaker and holds one of the caller's slots
    /// and one pooled connection, checked out before `deadline`.
    pub async fn discover(
        &self,
        source_name: &str,
        caller: &str,
        options: &crate::discover::Options,
        deadline: Option<Instant>,
    ) -> Result<crate::discover::Proposal, ExtractError> {
        let source = self
            .sources
            .get(source_name)
            .ok_or_else(|| ExtractError::UnknownSource(source_name.to_owned()))?;
        let config = &self.config.sources[source.index];
        let pass = pass_breaker(source)?;
        let drafted = async {
            let _permit = source.slots.admit(caller, deadline).await?;
            let mut conn = source.pool.checkout(deadline).await?;
            // No statement outlives the call's deadline, and a connection left mid-query by
            // the deadline is not reused.
            let mut options = options.clone();
            if let Some(deadline) = deadline {
                options.statement_timeout = options
                    .statement_timeout
                    .min(deadline.saturating_duration_since(Instant::now()));
            }
            let (client, _) = conn.parts();
            let run = crate::discover::discover(client, config, &self.matrix, &options);
            let proposal = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, run).await {
                    Ok(drafted) => drafted.map_err(ExtractError::from),
                    Err(_) => Err(ExtractError::DeadlineExceeded),
                },
                None => run.await.map_err(ExtractError::from),
            };
            if proposal.is_err() {
                conn.mark_broken();
            }
            proposal
        }
        .await;
        settle(source, pass, breaker_outcome(drafted.as_ref().err()));
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

    /// Checks the request, resolves its plan and starts the producer.
    pub async fn extract(&self, params: ExtractParams) -> Result<ExtractStream, ExtractError> {
        let entry = self.entry(&params);
        match self.start(params, entry.clone()).await {
            Ok(stream) => Ok(stream),
            Err(error) => {
                self.records.failed(&self.metrics, entry, &error).await;
                Err(error)
            }
        }
    }

    /// What every audit record of this call holds. Fields the caller chose are recorded only
    /// when they are within the request limits.
    fn entry(&self, params: &ExtractParams) -> crate::audit::Entry {
        let label = |text: &str| {
            if text.len() <= MAX_LABEL_BYTES && !text.chars().any(char::is_control) {
                text.to_owned()
            } else {
                "[refused: too long or control characters]".to_owned()
            }
        };
        let value = params.value.expose_secret();
        crate::audit::Entry {
            rpc: if params.dry_run {
                "Validate"
            } else {
                "Extract"
            }
            .to_owned(),
            caller: params.caller.clone(),
            source: label(&params.source),
            subject_id: if value.is_empty() || value.len() > MAX_IDENTITY_BYTES {
                String::new()
            } else {
                // The normalised value where the source and kind are known, so that a call
                // refused later is recorded under the same subject as its successful retry.
                let normalized = self
                    .sources
                    .get(&params.source)
                    .map(|s| &self.config.sources[s.index])
                    .filter(|cfg| cfg.identity_kinds.contains(&params.kind))
                    .and_then(|cfg| cfg.normalizer(&params.kind).apply(value).ok());
                subject_id(
                    self.config.subject_key(),
                    &label(&params.kind),
                    normalized.as_deref().unwrap_or(value),
                )
            },
            request_id: label(&params.request_id),
            call_id: params.call_id.clone(),
            dry_run: params.dry_run,
            ..Default::default()
        }
    }

    /// Where calls are recorded: the audit log and the dead-letter queue.
    pub fn records(&self) -> &Records {
        &self.records
    }

    async fn start(
        &self,
        mut params: ExtractParams,
        entry: crate::audit::Entry,
    ) -> Result<ExtractStream, ExtractError> {
        let source = self.source(&params.source)?.clone();
        let batch_size = self.check_request(&source, &params)?;
        // The value is bound, hashed and recorded as its kind's normalisation makes it.
        let normalizer = self.config.sources[source.index].normalizer(&params.kind);
        let value = normalizer
            .apply(params.value.expose_secret())
            .map_err(|e| {
                ExtractError::InvalidArgument(format!(
                    "subject.value: {e} (identity kind '{}' is normalised by: {})",
                    params.kind,
                    normalizer.describe()
                ))
            })?;
        if value.len() > MAX_IDENTITY_BYTES {
            return Err(ExtractError::InvalidArgument(format!(
                "subject.value: longer than the {MAX_IDENTITY_BYTES}-byte maximum once normalised"
            )));
        }
        params.value = secrecy::SecretString::from(value);
        let pass = pass_breaker(&source)?;
        // The slots are held until the producer ends: a stalled stream gives them back at the
        // stall timeout.
        let permit = source.slots.admit(&params.caller, params.deadline).await?;
        let map = self.data_map_retrying(&source, params.deadline).await;
        let (map, pass) = settle_on_error(&source, pass, map)?;
        let plan = map.plan(&params.kind, &params.tables)?;

        let (tx, rx) = mpsc::channel(self.limits.stream_buffer);
        let (outcome_tx, outcome) = oneshot::channel();
        let cfg = &self.config.sources[source.index];
        let job = Job {
            database: cfg.database.clone(),
            metrics: self.metrics.clone(),
            created: Instant::now(),
            first_batch_sent: std::sync::atomic::AtomicBool::new(false),
            outcome: outcome_tx,
            matrix: self.matrix.clone(),
            coercion_policy: cfg.on_coercion_error,
            warnings: map.warnings.clone(),
            normalization: normalizer.describe(),
            subject_id: subject_id(
                self.config.subject_key(),
                &params.kind,
                params.value.expose_secret(),
            ),
            params,
            plan,
            batch_size,
            max_batch_bytes: self.limits.max_batch_bytes,
            source: source.clone(),
            tx,
            stall_timeout: self.limits.stall_timeout,
            shutdown: self.shutdown.clone(),
            _permit: permit,
            breaker: Some(pass),
            records: self.records.clone(),
            entry: crate::audit::Entry {
                extraction_id: uuid::Uuid::new_v4().to_string(),
                ..entry
            },
            audited: std::sync::atomic::AtomicBool::new(false),
            retry: cfg.retry.policy(),
            attempts: std::sync::atomic::AtomicU32::new(0),
            started_sent: std::sync::atomic::AtomicBool::new(false),
            sent_data: std::sync::atomic::AtomicBool::new(false),
        };
        let span = job.params.span.clone();
        tokio::spawn(tracing::Instrument::instrument(job.run(), span));
        Ok(ExtractStream {
            rx,
            outcome,
            saw_manifest: false,
            done: false,
        })
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

    /// Validates what can be validated without the database. Returns the batch size to use.
    fn check_request(&self, source: &Source, params: &ExtractParams) -> Result<u32, ExtractError> {
        let cfg = &self.config.sources[source.index];
        if params.kind.is_empty() {
            return Err(ExtractError::InvalidArgument(
                "subject.kind: must not be empty".into(),
            ));
        }
        if params.kind.len() > MAX_LABEL_BYTES || params.kind.chars().any(char::is_control) {
            return Err(ExtractError::InvalidArgument(format!(
                "subject.kind: at most {MAX_LABEL_BYTES} bytes, without control characters"
            )));
        }
        if params.tables.len() > MAX_REQUESTED_TABLES
            || params
                .tables
                .iter()
                .any(|t| t.len() > MAX_LABEL_BYTES || t.chars().any(char::is_control))
        {
            return Err(ExtractError::InvalidArgument(format!(
                "tables: at most {MAX_REQUESTED_TABLES} names of at most {MAX_LABEL_BYTES} \
                 bytes, without control characters"
            )));
        }
        if !cfg.identity_kinds.contains(&params.kind) {
            return Err(ExtractError::InvalidArgument(format!(
                "subject.kind: '{}' is not an identity kind of source '{}' (declared: {})",
                params.kind,
                cfg.name,
                cfg.identity_kinds.join(", ")
            )));
        }
        let value = params.value.expose_secret();
        if value.trim().is_empty() {
            return Err(ExtractError::InvalidArgument(
                "subject.value: must not be empty".into(),
            ));
        }
        if value.len() > MAX_IDENTITY_BYTES {
            return Err(ExtractError::InvalidArgument(format!(
                "subject.value: {} bytes is longer than the {MAX_IDENTITY_BYTES}-byte maximum",
                value.len()
            )));
        }
        if value.contains('\0') {
            return Err(ExtractError::InvalidArgument(
                "subject.value: must not contain NUL characters".into(),
            ));
        }
        for (field, text) in [
            ("request_id", &params.request_id),
            ("compliance_tag", &params.compliance_tag),
        ] {
            if text.len() > MAX_LABEL_BYTES || text.chars().any(char::is_control) {
                return Err(ExtractError::InvalidArgument(format!(
                    "{field}: at most {MAX_LABEL_BYTES} bytes, without control characters"
                )));
            }
        }
        match params.batch_size {
            0 => Ok(self.limits.default_batch_size),
            n if n > self.limits.max_batch_size => Err(ExtractError::InvalidArgument(format!(
                "batch_size: {n} is above the maximum of {}",
                self.limits.max_batch_size
            ))),
            n => Ok(n),
        }
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
                let conn = source.pool.checkout(deadline).await?;
                DataMap::load(cfg, &self.matrix, &conn.client)
                    .await
                    .map_err(|error| {
                        if matches!(error, PlanError::SchemaDrift { .. }) {
                            self.metrics
                                .gate_rejections
                                .get_or_create(&crate::metrics::source_labels(&cfg.name))
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

    /// Runs the schema gate for `source` now, table by table (Validate without a subject).
    pub async fn schema_report(
        &self,
        source: &str,
        caller: &str,
        deadline: Option<Instant>,
    ) -> Result<SchemaReport, ExtractError> {
        let source = self.source(source)?;
        let pass = pass_breaker(source)?;
        let _permit = source.slots.admit(caller, deadline).await?;
        let checked = async {
            let conn = source.pool.checkout(deadline).await?;
            let cfg = &self.config.sources[source.index];
            let report = crate::datamap::check_schema(cfg, &self.matrix, &conn.client).await?;
            Ok::<_, ExtractError>((conn, report))
        }
        .await;
        settle(source, pass, breaker_outcome(checked.as_ref().err()));
        let (conn, report) = checked?;
        // The connection goes back before the map's lock is taken: `data_map` takes the lock
        // and then a connection, and the opposite order could wait on it until a timeout.
        drop(conn);
        source.schema.store(report.map.clone()).await;
        Ok(report)
    }

    /// Forgets a source's data map, so that the next request reads the catalog again.
    async fn forget_map(source: &Source) {
        source.schema.forget().await;
    }
}
