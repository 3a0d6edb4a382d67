//! Observability: what operators read. [`telemetry`] sets up logs and OTLP traces with W3C
//! trace context; [`metrics`] holds the Prometheus metrics, passed to whoever records (no
//! global). Nothing here may carry an identity or extracted value.

pub mod metrics;
pub mod telemetry;
