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

pub mod manifest;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::IsolationLevel;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::admission::{AdmissionError, Permit, SourceSlots};
use crate::coerce::RawCell;
use crate::config::{CoercionPolicy, Config};
use crate::datamap::{
    DataMap, MappedTable, Plan, PlanError, PlannedTable, SchemaReport, pii_fields,
};
use crate::db::{Conn, DbError, SourcePool};
use crate::metrics::Metrics;
use crate::pb::{self, ExtractResponse, extract_response::Event};
use crate::pii::{Matrix, ScanLimits};
use crate::subject::subject_id;

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

/// The most distinct fields found in one scanned JSON column and table; more set
/// `pii_fields_truncated`.
pub const MAX_PII_FIELDS_PER_COLUMN: usize = 32;

/// The longest primary-key text and violation detail sent or recorded.
pub const MAX_PRIMARY_KEY_CHARS: usize = 128;
pub const MAX_DETAIL_CHARS: usize = 256;

/// The first statement of every extraction: it takes the snapshot and sets the
/// transaction's statement timeout (`$1`, milliseconds; NULL keeps the server's) and
/// idle-in-transaction timeout (`$2`).
const SNAPSHOT_SQL: &str = "SELECT extract(epoch from now())::float8, \
     current_setting('server_version'), \
     set_config('statement_timeout', coalesce($1, current_setting('statement_timeout')), true), \
     set_config('idle_in_transaction_session_timeout', $2, true)";

/// Everything that ends an extraction early.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("unknown source '{0}'")]
    UnknownSource(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "table '{table}': {streamed} rows were streamed but COUNT(*) in the same snapshot is {counted}"
    )]
    CountMismatch {
        table: String,
        streamed: u64,
        counted: i64,
    },
    #[error(
        "table '{table}': a row is {bytes} bytes encoded (largest column: '{column}'), above the \
         {limit}-byte message limit; such rows cannot be streamed"
    )]
    RowTooLarge {
        table: String,
        column: String,
        bytes: usize,
        limit: usize,
    },
    #[error("table '{table}', column '{column}': {reason}")]
    Decode {
        table: String,
        column: String,
        reason: String,
    },
    /// The message names table, column, rule and category; the row's key stays in the
    /// structured violation, out of log lines.
    #[error(
        "table '{}', column '{}': a value fails rule '{}' ({}); fix the data or the rule, or \
         set on_coercion_error = \"reject_row\"",
        .0.table, .0.column, .0.rule, .0.category
    )]
    Coercion(Box<pb::Violation>),
    #[error("the deadline passed during the extraction; the database query was cancelled")]
    DeadlineExceeded,
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(
        "the client took no message for {0:?} (server.send_stall_timeout); the extraction was \
         cancelled and its snapshot released"
    )]
    Stalled(Duration),
    #[error(
        "the {what} message would be {bytes} bytes, above the {limit}-byte message limit; \
         request fewer tables"
    )]
    MessageTooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("the server is shutting down; retry on another replica")]
    ShuttingDown,
    #[error("the extraction manifest breaks the manifest rules: {}", .0.join("; "))]
    InvalidManifest(Vec<String>),
    #[error("internal error: {0}")]
    Internal(String),
    /// The client went away. Nobody hears this error; it ends the producer.
    #[error("the client went away")]
    ClientGone,
}

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
    pool: SourcePool,
    slots: SourceSlots,
    map: Mutex<Option<(Instant, Arc<DataMap>)>>,
}

/// The extraction engine, shared by every request.
pub struct Engine {
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

/// Why the producer stopped before finishing.
enum Stop {
    ClientGone,
    Deadline,
    Shutdown,
}

impl Stop {
    fn into_error(self) -> ExtractError {
        match self {
            Stop::ClientGone => ExtractError::ClientGone,
            Stop::Deadline => ExtractError::DeadlineExceeded,
            Stop::Shutdown => ExtractError::ShuttingDown,
        }
    }
}

impl Engine {
    /// Builds the pools (which connect lazily). `shutdown` cancels running extractions.
    pub fn new(
        config: Arc<Config>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, String> {
        if config.subject_key().len() < 16 {
            return Err("the subject key is missing or shorter than 16 bytes".into());
        }
        let mut sources = HashMap::new();
        for (index, cfg) in config.sources.iter().enumerate() {
            let source = Source {
                index,
                pool: SourcePool::new(cfg)?,
                slots: SourceSlots::new(
                    &cfg.name,
                    cfg.max_connections as usize,
                    cfg.caller_share() as usize,
                    cfg.connect_timeout,
                ),
                map: Mutex::new(None),
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

    /// The metrics the engine records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Checks the request, resolves its plan and starts the producer.
    pub async fn extract(&self, params: ExtractParams) -> Result<ExtractStream, ExtractError> {
        let source = self.source(&params.source)?.clone();
        let batch_size = self.check_request(&source, &params)?;
        // The slots are held until the producer ends: a stalled stream gives them back at the
        // stall timeout.
        let permit = source.slots.admit(&params.caller, params.deadline).await?;
        let map = self.data_map(&source, params.deadline).await?;
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
        let refresh = self.config.sources[source.index].schema_refresh;
        let mut slot = source.map.lock().await;
        if let Some((checked, map)) = slot.as_ref()
            && checked.elapsed() < refresh
        {
            return Ok(map.clone());
        }
        *slot = None;
        let conn = source.pool.checkout(deadline).await?;
        let cfg = &self.config.sources[source.index];
        let map = match DataMap::load(cfg, &self.matrix, &conn.client).await {
            Ok(map) => map,
            Err(error) => {
                if matches!(error, PlanError::SchemaDrift { .. }) {
                    self.metrics
                        .gate_rejections
                        .get_or_create(&crate::metrics::source_labels(&cfg.name))
                        .inc();
                }
                return Err(error.into());
            }
        };
        *slot = Some((Instant::now(), map.clone()));
        Ok(map)
    }

    /// Runs the schema gate for `source` now, table by table (Validate without a subject).
    pub async fn schema_report(
        &self,
        source: &str,
        caller: &str,
        deadline: Option<Instant>,
    ) -> Result<SchemaReport, ExtractError> {
        let source = self.source(source)?;
        let _permit = source.slots.admit(caller, deadline).await?;
        let conn = source.pool.checkout(deadline).await?;
        let cfg = &self.config.sources[source.index];
        let report = crate::datamap::check_schema(cfg, &self.matrix, &conn.client).await?;
        // The connection goes back before the map's lock is taken: `data_map` takes the lock
        // and then a connection, and the opposite order could wait on it until a timeout.
        drop(conn);
        let mut slot = source.map.lock().await;
        *slot = report.map.clone().map(|map| (Instant::now(), map));
        Ok(report)
    }

    /// Forgets a source's data map, so that the next request reads the catalog again.
    async fn forget_map(source: &Source) {
        *source.map.lock().await = None;
    }
}

/// One running extraction.
struct Job {
    params: ExtractParams,
    database: String,
    metrics: Arc<Metrics>,
    created: Instant,
    first_batch_sent: std::sync::atomic::AtomicBool,
    matrix: Arc<Matrix>,
    coercion_policy: CoercionPolicy,
    warnings: Vec<String>,
    subject_id: String,
    plan: Arc<Plan>,
    batch_size: u32,
    max_batch_bytes: usize,
    source: Arc<Source>,
    tx: mpsc::Sender<ExtractResponse>,
    outcome: oneshot::Sender<ExtractError>,
    stall_timeout: Duration,
    shutdown: CancellationToken,
    /// The source and caller slots, released when the producer ends.
    _permit: Permit,
}

/// Counters of a finished extraction, for the log line.
#[derive(Default)]
struct Progress {
    rows: u64,
    tables: usize,
}

impl Job {
    async fn run(self) {
        let extraction_id = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut progress = Progress::default();
        tracing::Span::current().record("dsr.subject_id", self.subject_id.as_str());
        tracing::info_span!(
            "compliance.extraction_start",
            dsr.extraction_id = %extraction_id,
            dsr.source = %self.params.source,
            dsr.request_id = %self.params.request_id,
            dsr.caller = %self.params.caller,
            dsr.identity_kind = %self.plan.kind,
            dsr.plan.tables = self.plan.tables.len() as u64,
            dsr.plan.unreachable_tables = self.plan.unreachable.len() as u64,
            dsr.dry_run = self.params.dry_run,
        )
        .in_scope(|| {});
        // The breaker itself is not built yet: the state checked is always "closed".
        tracing::info_span!(
            "compliance.circuit_breaker",
            dsr.source = %self.params.source,
            dsr.breaker.state = "closed",
        )
        .in_scope(|| {});
        let result = self.run_inner(&extraction_id, &mut progress).await;
        let code = match &result {
            Ok(()) => tonic::Code::Ok,
            Err(error) => crate::grpc::status::to_status(error).code(),
        };
        tracing::Span::current().record("rpc.grpc.status_code", code as i64);
        tracing::info_span!(
            "compliance.extraction_end",
            dsr.extraction_id = %extraction_id,
            dsr.rows = progress.rows,
            dsr.tables = progress.tables as u64,
            dsr.outcome = if result.is_ok() { "ok" } else { "failed" },
            rpc.grpc.status_code = crate::metrics::code_name(code),
        )
        .in_scope(|| {});
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if !self.params.dry_run {
            self.metrics
                .duration
                .get_or_create(&crate::metrics::source_labels(&self.params.source))
                .observe(self.created.elapsed().as_secs_f64());
        }
        if let Err(ExtractError::InvalidManifest(problems)) = &result {
            self.metrics
                .manifest_violations
                .get_or_create(&crate::metrics::source_labels(&self.params.source))
                .inc_by(problems.len() as u64);
        }
        let source = &self.params.source;
        match &result {
            Ok(()) => tracing::info!(
                extraction_id, source, subject_id = %self.subject_id,
                caller = %self.params.caller, call_id = %self.params.call_id,
                request_id = %self.params.request_id, rows = progress.rows,
                tables = progress.tables, elapsed_ms, "extraction finished"
            ),
            Err(error) => tracing::warn!(
                extraction_id, source, subject_id = %self.subject_id,
                caller = %self.params.caller, call_id = %self.params.call_id,
                request_id = %self.params.request_id, rows = progress.rows,
                tables = progress.tables, elapsed_ms, %error, "extraction failed"
            ),
        }
        if let Err(error) = result {
            if error_means_schema_changed(&error) {
                Engine::forget_map(&self.source).await;
            }
            // Sent before `self.tx` drops, so the stream sees it when the channel closes.
            let _ = self.outcome.send(error);
        }
    }

    async fn run_inner(
        &self,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let checkout = self.source.pool.checkout(self.params.deadline);
        let mut conn = tokio::select! {
            conn = checkout => conn.map_err(|e| match e {
                DbError::DeadlineWaitingForConnection { .. } => ExtractError::DeadlineExceeded,
                other => other.into(),
            })?,
            stop = self.stop_signal() => return Err(stop.into_error()),
        };
        let cancel = conn.client.cancel_token();

        let outcome = {
            let body = self.stream_snapshot(&mut conn, extraction_id, progress);
            tokio::pin!(body);
            tokio::select! {
                result = &mut body => Ok(result),
                stop = self.stop_signal() => Err(stop),
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error @ ExtractError::Stalled(_))) => {
                // A portal fetch may be in flight behind the client that stopped reading:
                // cancel it rather than drain it.
                self.cancel_and_discard(&cancel, &mut conn).await;
                Err(error)
            }
            Ok(Err(error)) => {
                // The transaction was dropped, which queues a ROLLBACK; confirm it. Prepared
                // statements may be stale if the error came from a schema change.
                conn.clear_statements();
                reset_connection(&mut conn).await;
                Err(match error {
                    ExtractError::Db(DbError::Query {
                        ref code,
                        ref message,
                        ..
                    }) if code == "57014" && self.statement_timeout_fired(message) => {
                        ExtractError::DeadlineExceeded
                    }
                    other => other,
                })
            }
            Err(stop) => {
                // The body future is gone; its query may still run on the server.
                self.cancel_and_discard(&cancel, &mut conn).await;
                Err(stop.into_error())
            }
        }
    }

    /// Cancels whatever runs on the connection, on the server, and discards the connection.
    /// The cancel request travels on its own connection and PostgreSQL may act on it a moment
    /// later, so the connection is never reused: a late cancel must not hit the next query.
    async fn cancel_and_discard(&self, cancel: &tokio_postgres::CancelToken, conn: &mut Conn) {
        if let Err(e) = cancel.cancel_query(self.source.pool.cancel_tls()).await {
            tracing::warn!(source = %self.params.source, error = %crate::db::describe(&e),
                "cancel request failed");
        }
        conn.mark_broken();
    }

    /// Whether a cancelled statement (57014) was ended by this call's statement timeout,
    /// rather than by someone else (an administrator's `pg_cancel_backend`, say), which is
    /// not the caller's fault and is reported as retryable.
    fn statement_timeout_fired(&self, message: &str) -> bool {
        message.contains("statement timeout")
            || self
                .params
                .deadline
                .is_some_and(|d| Instant::now() + Duration::from_millis(250) >= d)
    }

    /// Resolves when the extraction must stop before it finishes.
    async fn stop_signal(&self) -> Stop {
        let deadline = async {
            match self.params.deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.tx.closed() => Stop::ClientGone,
            _ = deadline => Stop::Deadline,
            _ = self.shutdown.cancelled() => Stop::Shutdown,
        }
    }

    /// Reads every planned table inside one snapshot and sends the stream's messages.
    async fn stream_snapshot(
        &self,
        conn: &mut Conn,
        extraction_id: &str,
        progress: &mut Progress,
    ) -> Result<(), ExtractError> {
        let source_name = self.params.source.as_str();
        let db = |e: tokio_postgres::Error| ExtractError::from(DbError::from_pg(source_name, &e));
        let started_at = SystemTime::now();
        let (client, statements) = conn.parts();
        let txn = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        // The first query of a REPEATABLE READ transaction takes the snapshot. The same round
        // trip sets the transaction's limits: the statement timeout is the call's remaining
        // deadline, and the idle-in-transaction timeout is a backstop behind the stall
        // timeout (should this process stop driving the transaction, PostgreSQL ends it and
        // releases the snapshot itself).
        let statement_timeout = self.params.deadline.map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .max(1)
                .to_string()
        });
        let idle_timeout = (self.stall_timeout + Duration::from_secs(5))
            .as_millis()
            .to_string();
        let snapshot = crate::db::prepare_cached(statements, &txn, SNAPSHOT_SQL)
            .await
            .map_err(db)?;
        let row = txn
            .query_one(&snapshot, &[&statement_timeout, &idle_timeout])
            .await
            .map_err(db)?;
        let snapshot_at = timestamp_from_epoch(row.get(0));
        let server_version: String = row.get(1);

        self.send(Event::Started(pb::ExtractionStarted {
            extraction_id: extraction_id.to_owned(),
            source: source_name.to_owned(),
            tables: self
                .plan
                .tables
                .iter()
                .map(|t| pb::PlannedTable {
                    table: t.table.display.clone(),
                    reached_via: t.reached_via.clone(),
                    columns: descriptors(t),
                })
                .collect(),
            unreachable_tables: self
                .plan
                .unreachable
                .iter()
                .map(|(table, reason)| pb::UnreachableTable {
                    table: table.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            started_at: Some(prost_types::Timestamp::from(started_at)),
            request_id: self.params.request_id.clone(),
            subject_id: self.subject_id.clone(),
        }))
        .await?;

        let value: &str = self.params.value.expose_secret();
        // The identity value must convert to every identity column's type. Checked once, up
        // front, so that a later data error is never mistaken for a bad identity.
        for base_type in self
            .plan
            .identity_types
            .iter()
            .filter(|t| !is_string_type(t))
        {
            let check = format!("SELECT CAST($1::text AS {base_type}) IS NOT NULL");
            let statement = crate::db::prepare_cached(statements, &txn, &check)
                .await
                .map_err(db)?;
            if let Err(e) = txn.query_one(&statement, &[&value]).await {
                // A failed cast's message quotes its input (a regclass cast says "relation ...
                // does not exist" or "cross-database references are not implemented: ..."):
                // only the SQLSTATE is passed on, and anything but an infrastructure failure
                // means the value is not one of this kind.
                return Err(match e.as_db_error().map(|d| d.code().code().to_owned()) {
                    Some(code) if !crate::db::is_quote_free_sqlstate(&code) => {
                        ExtractError::InvalidArgument(format!(
                            "subject.value: not a valid {base_type} for identity kind '{}' (SQLSTATE {code})",
                            self.params.kind
                        ))
                    }
                    _ => ExtractError::from(DbError::from_pg_bound(source_name, &e)),
                });
            }
        }
        let mut counts = Vec::with_capacity(self.plan.tables.len());
        let mut found = Found::default();
        for table in &self.plan.tables {
            let query = tracing::info_span!(
                "db.query",
                otel.name = %format!("SELECT {}", table.table.display),
                otel.kind = "client",
                db.system.name = "postgresql",
                db.namespace = %self.database,
                db.collection.name = %table.table.display,
                db.operation.name = "SELECT",
                db.query.text = %table.select_sql,
                db.response.returned_rows = tracing::field::Empty,
            );
            let outcome = tracing::Instrument::instrument(
                self.stream_table(&txn, statements, table, value),
                query.clone(),
            )
            .await?;
            query.record("db.response.returned_rows", outcome.streamed);
            drop(query);
            let counted = outcome.counted;
            let read = outcome.streamed + outcome.rejected;
            tracing::info_span!(
                "compliance.row_count_verify",
                dsr.table = %table.table.display,
                dsr.streamed = read,
                dsr.counted = counted,
                dsr.ok = counted >= 0 && counted as u64 == read,
            )
            .in_scope(|| {});
            if counted < 0 || counted as u64 != read {
                return Err(ExtractError::CountMismatch {
                    table: table.table.display.clone(),
                    streamed: read,
                    counted,
                });
            }
            progress.rows += outcome.streamed;
            progress.tables += 1;
            counts.push(pb::TableCount {
                table: table.table.display.clone(),
                row_count: outcome.streamed,
                verified: true,
            });
            found.add(&table.table.display, &outcome);
            self.send(Event::TableCompleted(pb::TableCompleted {
                table: table.table.display.clone(),
                row_count: outcome.streamed,
                rejected_count: outcome.rejected,
                violations: outcome.violations,
                violations_truncated: outcome.violations_truncated,
                pii_fields_truncated: outcome.fields_truncated,
                pii_fields: outcome
                    .fields
                    .iter()
                    .map(|(path, category)| format!("{path}:{category}"))
                    .collect(),
            }))
            .await?;
        }
        txn.commit().await.map_err(db)?;

        let manifest = self.manifest(
            extraction_id,
            started_at,
            snapshot_at,
            server_version,
            counts,
            &found,
        );
        let problems = manifest::violations(&manifest);
        let mut categories: Vec<&str> = self
            .plan
            .tables
            .iter()
            .flat_map(|t| t.table.columns.iter().filter(|c| c.is_pii()))
            .map(|c| c.category.as_str())
            .chain(found.fields.iter().map(|(_, c)| c.as_str()))
            .collect();
        categories.sort_unstable();
        categories.dedup();
        tracing::info_span!(
            "compliance.pii_mapping_validate",
            dsr.pii_fields = manifest.pii_fields.len() as u64,
            dsr.categories = %categories.join(","),
            dsr.result = if problems.is_empty() { "ok" } else { "violations" },
            dsr.violations = problems.len() as u64,
        )
        .in_scope(|| {});
        if !problems.is_empty() {
            return Err(ExtractError::InvalidManifest(problems));
        }
        self.send(Event::Manifest(manifest)).await
    }

    /// Streams one table through a portal: decodes, coerces and scans every row, cuts batches,
    /// and (unless this is a dry run) sends them.
    async fn stream_table(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        statements: &mut crate::db::StatementCache,
        table: &PlannedTable,
        value: &str,
    ) -> Result<TableOutcome, ExtractError> {
        let source_name = self.params.source.as_str();
        let db = |e: tokio_postgres::Error| ExtractError::from(DbError::from_pg(source_name, &e));
        let statement = crate::db::prepare_cached(statements, txn, &table.select_sql)
            .await
            .map_err(db)?;
        // The decoders were chosen when the schema gate last passed; a column whose type
        // changed since must not be decoded with the old one.
        for (column, described) in table.table.columns.iter().zip(statement.columns()) {
            if !column.decoder.accepts(described.type_()) {
                return Err(ExtractError::Plan(PlanError::SchemaDrift {
                    source_name: source_name.to_owned(),
                    problems: vec![format!(
                        "table '{}', column '{}': its type changed since the schema check (now {})",
                        table.table.display,
                        column.name,
                        described.type_().name()
                    )],
                }));
            }
        }
        // A statement prepared on this connection before a schema change fails with 0A000:
        // say which table changed. These statements bind the identity, so PostgreSQL's
        // messages are withheld unless their class never quotes input.
        let db = |e: tokio_postgres::Error| match DbError::from_pg_bound(source_name, &e) {
            DbError::Query { code, .. } if code == "0A000" => {
                ExtractError::Plan(PlanError::SchemaDrift {
                    source_name: source_name.to_owned(),
                    problems: vec![format!(
                        "table '{}': its definition changed since its query was prepared; \
                         the schema is checked again on the next request",
                        table.table.display
                    )],
                })
            }
            other => ExtractError::from(other),
        };
        let portal = txn.bind(&statement, &[&value]).await.map_err(db)?;
        let columns = descriptors(table);
        // A batch carries its column descriptors; a single row must fit beside them.
        let row_limit = MAX_MESSAGE_BYTES
            .saturating_sub(columns.iter().map(Message::encoded_len).sum::<usize>() + 1024);
        let mut batch = Batcher::new(&table.table.display, &columns, self.max_batch_bytes);
        let mut outcome = TableOutcome::default();
        let mapped = &table.table;
        let count = crate::db::prepare_cached(statements, txn, &table.count_sql)
            .await
            .map_err(db)?;
        let fetch_rows = self.batch_size as i32;
        let mut counted = None;
        loop {
            // Rows are taken off the connection one at a time as they arrive, so memory is
            // bounded by the batch's bytes, not by `batch_size` rows of unknown width: the
            // connection stops reading the socket while a row waits to be taken.
            let rows = match counted {
                Some(_) => txn
                    .query_portal_raw(&portal, fetch_rows)
                    .await
                    .map_err(db)?,
                None => {
                    // COUNT(*) in the same snapshot rides along with the first fetch. It goes
                    // out first, so that its answer arrives before the portal's rows, which
                    // wait on the connection until they are read.
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&value];
                    let (count, rows) = tokio::join!(
                        biased;
                        txn.query_one(&count, &params),
                        txn.query_portal_raw(&portal, fetch_rows)
                    );
                    counted = Some(count.map_err(db)?.get::<_, i64>(0));
                    rows.map_err(db)?
                }
            };
            let mut rows = std::pin::pin!(rows);
            let mut fetched = 0;
            while let Some(row) = rows.next().await {
                let row = row.map_err(db)?;
                fetched += 1;
                let converted = self.convert_row(mapped, &row, &mut outcome)?;
                drop(row);
                // Decoding, coercion and JSON scans run without awaiting anything else; let
                // other streams on this worker run now and then.
                tokio::task::consume_budget().await;
                let Some(values) = converted else {
                    continue; // rejected
                };
                let row = pb::Row { values };
                let size = row.encoded_len();
                if size > row_limit {
                    return Err(row_too_large(table, &row, size, row_limit));
                }
                outcome.streamed += 1;
                if self.params.dry_run {
                    continue;
                }
                if let Some(full) = batch.push(row, size) {
                    self.send_batch(full).await?;
                }
            }
            // One portal fetch is at most one batch's rows; the byte limit may cut it earlier.
            if let Some(rest) = batch.finish() {
                self.send_batch(rest).await?;
            }
            if fetched < fetch_rows {
                break; // the portal is exhausted
            }
        }
        outcome.counted = counted.unwrap_or(-1);
        Ok(outcome)
    }

    /// Converts one database row: decodes each cell, applies coercion rules and scans JSON.
    /// Returns `None` when the row is rejected under the `reject_row` policy.
    fn convert_row(
        &self,
        table: &MappedTable,
        row: &tokio_postgres::Row,
        outcome: &mut TableOutcome,
    ) -> Result<Option<Vec<pb::Value>>, ExtractError> {
        let source_name = self.params.source.as_str();
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, column) in table.columns.iter().enumerate() {
            let cell: RawCell = row
                .try_get(i)
                .map_err(|e| ExtractError::from(DbError::from_pg(source_name, &e)))?;
            let value = match (&column.coercion, cell.0) {
                (Some(rule), Some(raw)) => match rule.apply(column.decoder, raw) {
                    Ok(kind) => pb::Value { kind: Some(kind) },
                    Err(e) => {
                        let violation = pb::Violation {
                            table: table.display.clone(),
                            column: column.name.clone(),
                            primary_key: primary_key_text(table, row),
                            rule: e.rule.to_owned(),
                            category: e.category.to_owned(),
                            detail: String::new(),
                        };
                        match self.coercion_policy {
                            CoercionPolicy::Fail => {
                                return Err(ExtractError::Coercion(Box::new(violation)));
                            }
                            CoercionPolicy::RejectRow => {
                                outcome.rejected += 1;
                                *outcome
                                    .rejected_by
                                    .entry(violation.category.clone())
                                    .or_default() += 1;
                                outcome.record(violation);
                                return Ok(None);
                            }
                        }
                    }
                },
                (_, raw) => column
                    .decoder
                    .decode(raw)
                    .map_err(|e| ExtractError::Decode {
                        table: table.display.clone(),
                        column: column.name.clone(),
                        reason: e.to_string(),
                    })?,
            };
            if column.scan_json
                && let Some(pb::value::Kind::JsonValue(json)) = &value.kind
            {
                let root = format!("{}.{}", table.display, column.name);
                let scan = crate::pii::scan_json(&self.matrix, &root, json, ScanLimits::default());
                outcome.add_fields(i, scan.fields, scan.fields_truncated);
                for v in scan.violations {
                    outcome.json_violations += 1;
                    outcome.record(pb::Violation {
                        table: table.display.clone(),
                        column: column.name.clone(),
                        primary_key: primary_key_text(table, row),
                        rule: "json_scan".to_owned(),
                        category: v.category.to_owned(),
                        detail: clip(&v.detail, MAX_DETAIL_CHARS),
                    });
                }
            }
            values.push(value);
        }
        Ok(Some(values))
    }

    fn manifest(
        &self,
        extraction_id: &str,
        started_at: SystemTime,
        snapshot_at: prost_types::Timestamp,
        server_version: String,
        tables: Vec<pb::TableCount>,
        found: &Found,
    ) -> pb::Manifest {
        let row_count = tables.iter().map(|t| t.row_count as i64).sum();
        let mut metadata = HashMap::new();
        metadata.insert("request_id".to_owned(), self.params.request_id.clone());
        metadata.insert("identity_kind".to_owned(), self.plan.kind.clone());
        metadata.insert(
            "isolation".to_owned(),
            "repeatable read, read only".to_owned(),
        );
        metadata.insert("server_version".to_owned(), server_version);
        metadata.insert(
            "service_version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        metadata.insert("batch_size".to_owned(), self.batch_size.to_string());
        metadata.insert(
            "unreachable_tables".to_owned(),
            self.plan
                .unreachable
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        metadata.insert("rejected_rows".to_owned(), found.rejected.to_string());
        for (category, n) in &found.rejected_by {
            metadata.insert(format!("rejected.{category}"), n.to_string());
        }
        metadata.insert(
            "json_scan_violations".to_owned(),
            found.json_violations.to_string(),
        );
        if !found.truncated.is_empty() {
            metadata.insert("pii_fields_truncated".to_owned(), found.truncated.join(","));
        }
        if !self.warnings.is_empty() {
            metadata.insert("schema_warnings".to_owned(), self.warnings.join("; "));
        }
        if self.params.dry_run {
            metadata.insert("dry_run".to_owned(), "true".to_owned());
        }
        let fields = pii_fields(&self.plan)
            .into_iter()
            .chain(found.fields.iter().map(|(path, _)| path.clone()));
        pb::Manifest {
            subject_id: self.subject_id.clone(),
            pii_fields: manifest::normalize_pii_fields(fields),
            extraction_timestamp: Some(snapshot_at),
            row_count,
            metadata,
            compliance_tag: Some(self.params.compliance_tag.clone())
                .filter(|tag| !tag.trim().is_empty()),
            extraction_id: extraction_id.to_owned(),
            source: self.params.source.clone(),
            request_id: self.params.request_id.clone(),
            tables,
            started_at: Some(prost_types::Timestamp::from(started_at)),
            finished_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            subject_kind: self.plan.kind.clone(),
        }
    }

    /// Sends one row batch, and counts it.
    async fn send_batch(&self, batch: pb::RowBatch) -> Result<(), ExtractError> {
        let labels = crate::metrics::table_labels(&self.params.source, &batch.table);
        self.metrics
            .rows
            .get_or_create(&labels)
            .inc_by(batch.rows.len() as u64);
        self.metrics.batches.get_or_create(&labels).inc();
        self.metrics
            .bytes
            .get_or_create(&labels)
            .inc_by(batch.encoded_len() as u64);
        if !self
            .first_batch_sent
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.metrics
                .first_batch
                .get_or_create(&crate::metrics::source_labels(&self.params.source))
                .observe(self.created.elapsed().as_secs_f64());
        }
        self.send(Event::Batch(batch)).await
    }

    /// Sends one message, waiting for room in the channel (backpressure), at most the stall
    /// timeout. Messages other than batches (which are cut by bytes) are size-checked first,
    /// so that a client never meets a message it cannot receive.
    async fn send(&self, event: Event) -> Result<(), ExtractError> {
        let what = match &event {
            Event::Batch(_) => None,
            Event::Started(_) => Some("started"),
            Event::TableCompleted(_) => Some("table_completed"),
            Event::Manifest(_) => Some("manifest"),
        };
        let message = ExtractResponse { event: Some(event) };
        if let Some(what) = what {
            let bytes = message.encoded_len();
            if bytes > MAX_MESSAGE_BYTES {
                return Err(ExtractError::MessageTooLarge {
                    what,
                    bytes,
                    limit: MAX_MESSAGE_BYTES,
                });
            }
        }
        match tokio::time::timeout(self.stall_timeout, self.tx.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ExtractError::ClientGone),
            Err(_) => Err(ExtractError::Stalled(self.stall_timeout)),
        }
    }
}

/// The most violations listed per table; the counts are always complete.
pub const MAX_VIOLATIONS_PER_TABLE: usize = 100;

/// What reading one table produced besides rows.
#[derive(Default)]
struct TableOutcome {
    /// COUNT(*) of the table's query in the same snapshot.
    counted: i64,
    streamed: u64,
    rejected: u64,
    rejected_by: std::collections::BTreeMap<String, u64>,
    json_violations: u64,
    violations: Vec<pb::Violation>,
    violations_truncated: bool,
    fields: std::collections::BTreeSet<(String, String)>,
    /// Distinct fields kept per scanned column (by column index).
    fields_per_column: HashMap<usize, usize>,
    fields_truncated: bool,
}

impl TableOutcome {
    /// Keeps a document's fields, at most [`MAX_PII_FIELDS_PER_COLUMN`] per column.
    fn add_fields(
        &mut self,
        column: usize,
        fields: std::collections::BTreeSet<(String, String)>,
        truncated: bool,
    ) {
        self.fields_truncated |= truncated;
        let kept = self.fields_per_column.entry(column).or_default();
        for field in fields {
            if self.fields.contains(&field) {
                continue;
            }
            if *kept >= MAX_PII_FIELDS_PER_COLUMN {
                self.fields_truncated = true;
                break;
            }
            *kept += 1;
            self.fields.insert(field);
        }
    }

    fn record(&mut self, violation: pb::Violation) {
        if self.violations.len() < MAX_VIOLATIONS_PER_TABLE {
            self.violations.push(violation);
        } else {
            self.violations_truncated = true;
        }
    }
}

/// Totals over the tables of one extraction, for the manifest.
#[derive(Default)]
struct Found {
    rejected: u64,
    rejected_by: std::collections::BTreeMap<String, u64>,
    json_violations: u64,
    fields: std::collections::BTreeSet<(String, String)>,
    /// Tables whose found fields were cut at the limit.
    truncated: Vec<String>,
}

impl Found {
    fn add(&mut self, name: &str, table: &TableOutcome) {
        if table.fields_truncated {
            self.truncated.push(name.to_owned());
        }
        self.rejected += table.rejected;
        for (category, n) in &table.rejected_by {
            *self.rejected_by.entry(category.clone()).or_default() += n;
        }
        self.json_violations += table.json_violations;
        self.fields.extend(table.fields.iter().cloned());
    }
}

/// A row's primary key for a violation: `id=42`, `[classified]` when a key column holds
/// personal data, or empty without a primary key. Never an identity or classified value.
fn primary_key_text(table: &MappedTable, row: &tokio_postgres::Row) -> String {
    clip(&primary_key_full(table, row), MAX_PRIMARY_KEY_CHARS)
}

fn primary_key_full(table: &MappedTable, row: &tokio_postgres::Row) -> String {
    if table.primary_key.is_empty() {
        return String::new();
    }
    if table.primary_key.iter().any(|i| table.columns[*i].is_pii()) {
        return "[classified]".to_owned();
    }
    table
        .primary_key
        .iter()
        .map(|i| {
            let column = &table.columns[*i];
            let text = row
                .try_get::<_, RawCell>(*i)
                .ok()
                .and_then(|cell| column.decoder.decode(cell.0).ok())
                .and_then(|v| v.kind)
                .map(|k| match k {
                    pb::value::Kind::Int64Value(n) => n.to_string(),
                    pb::value::Kind::StringValue(s) | pb::value::Kind::DecimalValue(s) => s,
                    pb::value::Kind::NullValue(_) => "NULL".to_owned(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            format!("{}={text}", column.name)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Cuts a table's rows into batches by row count (the portal fetch) and by encoded bytes.
struct Batcher<'a> {
    table: &'a str,
    columns: &'a [pb::ColumnDescriptor],
    max_bytes: usize,
    rows: Vec<pb::Row>,
    bytes: usize,
    offset: u64,
}

impl<'a> Batcher<'a> {
    fn new(table: &'a str, columns: &'a [pb::ColumnDescriptor], max_bytes: usize) -> Self {
        Batcher {
            table,
            columns,
            max_bytes,
            rows: Vec::new(),
            bytes: 0,
            offset: 0,
        }
    }

    /// Adds a row; returns a full batch when the row would push the batch over the byte
    /// limit (the row then starts the next batch).
    fn push(&mut self, row: pb::Row, size: usize) -> Option<pb::RowBatch> {
        let full = if !self.rows.is_empty() && self.bytes + size > self.max_bytes {
            self.finish()
        } else {
            None
        };
        self.bytes += size + 4;
        self.rows.push(row);
        full
    }

    fn finish(&mut self) -> Option<pb::RowBatch> {
        if self.rows.is_empty() {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
        let offset = self.offset;
        self.offset += rows.len() as u64;
        self.bytes = 0;
        Some(pb::RowBatch {
            table: self.table.to_owned(),
            columns: self.columns.to_vec(),
            rows,
            offset,
        })
    }
}

/// `text`, cut to at most `max` characters (with a trailing `…` when cut).
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Column descriptors of a planned table.
fn descriptors(table: &PlannedTable) -> Vec<pb::ColumnDescriptor> {
    table
        .table
        .columns
        .iter()
        .map(|c| pb::ColumnDescriptor {
            name: c.name.clone(),
            pg_type: c.pg_type.clone(),
            category: c.category.clone(),
            kind: c.kind() as i32,
            coercion: c
                .coercion
                .as_ref()
                .map(|r| r.rule().to_owned())
                .unwrap_or_default(),
            scan_json: c.scan_json,
        })
        .collect()
}

fn row_too_large(table: &PlannedTable, row: &pb::Row, size: usize, limit: usize) -> ExtractError {
    let (largest, _) = row
        .values
        .iter()
        .enumerate()
        .max_by_key(|(_, v)| v.encoded_len())
        .unwrap_or((0, &pb::Value::default()));
    ExtractError::RowTooLarge {
        table: table.table.display.clone(),
        column: table
            .table
            .columns
            .get(largest)
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        bytes: size,
        limit,
    }
}

fn timestamp_from_epoch(epoch: f64) -> prost_types::Timestamp {
    let micros = (epoch * 1_000_000.0).round() as i64;
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Types to which any text converts: no need to check an identity value against them.
fn is_string_type(base_type: &str) -> bool {
    matches!(base_type, "text" | "character varying" | "bpchar" | "name")
}

/// Whether an error suggests the catalog changed under a cached data map.
fn error_means_schema_changed(error: &ExtractError) -> bool {
    match error {
        ExtractError::Plan(PlanError::SchemaDrift { .. }) | ExtractError::Decode { .. } => true,
        // undefined_table, undefined_column, datatype_mismatch, cannot coerce
        ExtractError::Db(DbError::Query { code, .. }) => {
            matches!(
                code.as_str(),
                "42P01" | "42703" | "42804" | "42846" | "0A000"
            )
        }
        _ => false,
    }
}

/// Leaves the connection idle and outside any transaction, or marks it broken.
async fn reset_connection(conn: &mut Conn) {
    let reset = tokio::time::timeout(
        Duration::from_secs(5),
        conn.client.batch_execute("ROLLBACK"),
    )
    .await;
    if !matches!(reset, Ok(Ok(()))) {
        conn.mark_broken();
    }
}
