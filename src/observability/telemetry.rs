//! Logs and traces.
//!
//! Logs go to stderr, as text or as one JSON object a line (`server.log_format = "json"`, or
//! `DSR_LOG_FORMAT=json`), filtered by `RUST_LOG` (default `info`), with tokio-postgres capped at
//! INFO whatever `RUST_LOG` says: at DEBUG it prints bound parameters, and the identity value is
//! one. The cap is a filter of its own, so no directive can lift it.
//!
//! Traces are exported over OTLP/gRPC (what Jaeger receives on 4317) when an endpoint is
//! configured (`server.otlp_endpoint`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`); the
//! service name comes from `OTEL_SERVICE_NAME` (default `dsr-connector`) and sampling from
//! `OTEL_TRACES_SAMPLER`. Without an endpoint no OpenTelemetry layer is installed at all.
//! Spans are batched and flushed on shutdown. W3C `traceparent`/`tracestate` from request
//! metadata make each server span a child of the caller's.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What must be flushed when the process ends.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the span exporter. Blocking work, so it runs off the runtime.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = provider.force_flush();
                let _ = provider.shutdown();
            })
            .await;
        }
    }
}

/// Whether logs are JSON: the config's `log_format`, else `DSR_LOG_FORMAT`.
pub fn json_logs(configured: Option<&str>) -> bool {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("DSR_LOG_FORMAT").ok())
        .is_some_and(|f| f.eq_ignore_ascii_case("json"))
}

/// The OTLP endpoint: the config's, else `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn otlp_endpoint(configured: Option<&str>) -> Option<String> {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty())
}

/// Installs the global subscriber: logs, and traces when `endpoint` is set. Must run inside
/// the tokio runtime (the OTLP exporter's client needs it).
pub fn init(endpoint: Option<String>, json: bool) -> anyhow::Result<Telemetry> {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let cap = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("tokio_postgres") && *meta.level() > tracing::Level::INFO)
    });
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(cap)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(cap)
            .boxed()
    };
    let Some(endpoint) = endpoint else {
        tracing_subscriber::registry()
            .with(env)
            .with(logs)
            .try_init()?;
        return Ok(Telemetry { provider: None });
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "dsr-connector".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("dsr-connector");
    // Only this crate's spans are exported: library internals (h2, hyper, tokio-postgres)
    // would drown the compliance hooks.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("dsr_connector")
        }));
    tracing_subscriber::registry()
        .with(env)
        .with(logs)
        .with(traces)
        .try_init()?;
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Reads W3C trace context from gRPC metadata.
pub struct MetadataExtractor<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The caller's trace context, from `traceparent`/`tracestate` (empty when there is none or no
/// propagator is installed).
pub fn parent_context(metadata: &tonic::metadata::MetadataMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)))
}
