//! Prometheus metrics, served as text on their own HTTP listener (`server.metrics_listen`).
//!
//! One [`Metrics`] is created by the server and passed to whoever records (no global). Label
//! values are only names from the configuration (sources, tables), RPC names and status codes:
//! never an identity or extracted value, and never a name taken from a request unchecked (an
//! unknown source is counted as `unknown`, so requests cannot grow the label space).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::Config;

/// Label pairs.
pub type Labels = Vec<(String, String)>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    sources: Vec<String>,
    /// Finished calls by `rpc`, `source` and gRPC `code`.
    pub requests: Family<Labels, Counter>,
    /// Rows, batches and encoded bytes streamed, by `source` and `table`.
    pub rows: Family<Labels, Counter>,
    pub batches: Family<Labels, Counter>,
    pub bytes: Family<Labels, Counter>,
    /// Extraction duration and time to first batch, by `source`.
    pub duration: Histograms,
    pub first_batch: Histograms,
    /// Pool connections, idle connections and waiting checkouts, by `source`.
    pub pool_connections: Family<Labels, Gauge>,
    pub pool_max: Family<Labels, Gauge>,
    pub pool_idle: Family<Labels, Gauge>,
    pub pool_waiting: Family<Labels, Gauge>,
    /// Calls queued for a call slot (their caller's share, or the source's), by `source`.
    pub slots_waiting: Family<Labels, Gauge>,
    /// Extractions refused by the schema gate, by `source`.
    pub gate_rejections: Family<Labels, Counter>,
    /// Manifest rule violations found (own manifests and Validate requests), by `source`.
    pub manifest_violations: Family<Labels, Counter>,
    /// Audit records that could not be written.
    pub audit_failures: Counter,
    pub dead_letter_failures: Counter,
    /// Calls refused before they began (token, scope, deadline header), by gRPC `code`.
    pub refused_calls: Family<Labels, Counter>,
    /// Dead letters by `category`.
    pub dead_letters: Family<Labels, Counter>,
    /// Circuit breaker state by `source`: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<Labels, Gauge>,
    /// Rows changed by committed erasures, by `source` and `action` (delete, mask).
    pub erased_rows: Family<Labels, Counter>,
    /// Durable data-subject requests by `state`, as the control database holds them (every
    /// replica reports the same figures).
    pub subject_requests: Family<Labels, Gauge>,
    /// Seconds until the earliest due date of a request that has not ended (negative: it is
    /// overdue); absent (NaN) when none is open.
    pub earliest_due: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Seconds the longest-retrying task of an open request has been retrying (0: none).
    pub longest_retry: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// The states a durable request can be in, each reported from the start.
const REQUEST_STATES: [&str; 6] = [
    "queued",
    "running",
    "awaiting_approval",
    "succeeded",
    "failed",
    "cancelled",
];

fn seconds_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// Registers every metric; the circuit breaker starts closed for every source.
    /// The metrics of a server for `config`. The dead-letter counter starts at zero for each
    /// of `dead_letter_categories` (the records' own list: this room imports no other).
    pub fn new(config: &Config, dead_letter_categories: &[&str]) -> Metrics {
        let mut registry = Registry::with_prefix("dsr");
        let metrics = Metrics {
            sources: config.sources.iter().map(|s| s.name.clone()).collect(),
            requests: Family::default(),
            rows: Family::default(),
            batches: Family::default(),
            bytes: Family::default(),
            duration: Histograms::new_with_constructor(seconds_histogram),
            first_batch: Histograms::new_with_constructor(seconds_histogram),
            pool_connections: Family::default(),
            pool_max: Family::default(),
            pool_idle: Family::default(),
            pool_waiting: Family::default(),
            slots_waiting: Family::default(),
            gate_rejections: Family::default(),
            manifest_violations: Family::default(),
            breaker_state: Family::default(),
            audit_failures: Counter::default(),
            dead_letter_failures: Counter::default(),
            refused_calls: Family::default(),
            dead_letters: Family::default(),
            erased_rows: Family::default(),
            subject_requests: Family::default(),
            earliest_due: Gauge::default(),
            longest_retry: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Finished calls by RPC, source and gRPC code",
            metrics.requests.clone(),
        );
        registry.register(
            "rows_streamed",
            "Rows streamed by source and table",
            metrics.rows.clone(),
        );
        registry.register(
            "batches_streamed",
            "Row batches streamed by source and table",
            metrics.batches.clone(),
        );
        registry.register(
            "bytes_streamed",
            "Encoded bytes of row batches by source and table",
            metrics.bytes.clone(),
        );
        registry.register(
            "extraction_duration_seconds",
            "Extraction duration by source",
            metrics.duration.clone(),
        );
        registry.register(
            "time_to_first_batch_seconds",
            "Time from request to first row batch by source",
            metrics.first_batch.clone(),
        );
        registry.register(
            "pool_connections",
            "Open pooled connections by source",
            metrics.pool_connections.clone(),
        );
        registry.register(
            "pool_max_connections",
            "The pool's size (max_connections) by source",
            metrics.pool_max.clone(),
        );
        registry.register(
            "pool_idle_connections",
            "Idle pooled connections by source",
            metrics.pool_idle.clone(),
        );
        registry.register(
            "pool_waiting_checkouts",
            "Checkouts waiting for a connection by source",
            metrics.pool_waiting.clone(),
        );
        registry.register(
            "calls_waiting",
            "Calls queued for a call slot (the caller's share or the source's) by source",
            metrics.slots_waiting.clone(),
        );
        registry.register(
            "schema_gate_rejections",
            "Extractions refused by the schema gate by source",
            metrics.gate_rejections.clone(),
        );
        registry.register(
            "manifest_violations",
            "Manifest rule violations found by source",
            metrics.manifest_violations.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters (rejected rows, failed extractions) by category",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records that could not be made durable (their calls failed)",
            metrics.audit_failures.clone(),
        );
        registry.register(
            "refused_calls",
            "Calls refused before they began (authentication, scope, deadline header), by code",
            metrics.refused_calls.clone(),
        );
        registry.register(
            "dead_letter_write_failures",
            "Dead letters that could not be made durable (their calls failed)",
            metrics.dead_letter_failures.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker state by source: 0 closed, 1 half-open, 2 open",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "erased_rows",
            "Rows deleted or masked by committed erasures, by source and action",
            metrics.erased_rows.clone(),
        );
        registry.register(
            "subject_requests",
            "Durable data-subject requests by state",
            metrics.subject_requests.clone(),
        );
        registry.register(
            "subject_request_earliest_due_seconds",
            "Seconds until the earliest due date of an open data-subject request (negative: \
             overdue; NaN: none open)",
            metrics.earliest_due.clone(),
        );
        registry.register(
            "subject_request_longest_retry_seconds",
            "Seconds the longest-retrying task of an open data-subject request has been retrying",
            metrics.longest_retry.clone(),
        );
        metrics.earliest_due.set(f64::NAN);
        for state in REQUEST_STATES {
            metrics
                .subject_requests
                .get_or_create(&vec![("state".to_owned(), state.to_owned())])
                .set(0);
        }
        // Series that alerts and dashboards watch for a first increase exist from the start,
        // at zero, so that `increase()` sees the first event.
        for source in &metrics.sources {
            let labels = source_labels(source);
            metrics.breaker_state.get_or_create(&labels).set(0);
            metrics.gate_rejections.get_or_create(&labels).inc_by(0);
            metrics.manifest_violations.get_or_create(&labels).inc_by(0);
        }
        for category in dead_letter_categories {
            metrics
                .dead_letters
                .get_or_create(&vec![("category".to_owned(), (*category).to_owned())])
                .inc_by(0);
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The label value for a source named in a request: the name when configured, else
    /// `unknown`.
    pub fn source_label(&self, source: &str) -> String {
        if self.sources.iter().any(|s| s == source) {
            source.to_owned()
        } else {
            "unknown".to_owned()
        }
    }

    /// Counts a finished call.
    pub fn record_request(&self, rpc: &str, source: &str, code: tonic::Code) {
        let labels = vec![
            ("rpc".to_owned(), rpc.to_owned()),
            ("source".to_owned(), self.source_label(source)),
            ("code".to_owned(), code_name(code).to_owned()),
        ];
        self.requests.get_or_create(&labels).inc();
    }

    /// The request gauges, from the control database's figures.
    pub fn set_request_gauges(
        &self,
        states: &[(String, i64)],
        earliest_due_secs: Option<f64>,
        longest_retry_secs: Option<f64>,
    ) {
        for state in REQUEST_STATES {
            let count = states
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.subject_requests
                .get_or_create(&vec![("state".to_owned(), state.to_owned())])
                .set(count);
        }
        self.earliest_due.set(earliest_due_secs.unwrap_or(f64::NAN));
        self.longest_retry.set(longest_retry_secs.unwrap_or(0.0));
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `[("source", name)]`.
pub fn source_labels(source: &str) -> Labels {
    vec![("source".to_owned(), source.to_owned())]
}

/// `[("source", name), ("table", name)]`.
pub fn table_labels(source: &str, table: &str) -> Labels {
    vec![
        ("source".to_owned(), source.to_owned()),
        ("table".to_owned(), table.to_owned()),
    ]
}

/// The canonical gRPC name of a code, as Prometheus conventions and grpcurl print it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
