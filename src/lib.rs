//! dsr-connector: a gRPC service that answers data-subject access requests against
//! PostgreSQL, streaming every row of one subject from one consistent snapshot.
//!
//! # Layout
//!
//! - [`config`]: typed, validated, immutable configuration; secrets redacted.
//! - [`db`]: connection pools, libpq `sslmode` over rustls, PostgreSQL error classification.
//! - [`datamap`]: the data map checked against the live catalog; the identity graph compiled
//!   into per-identity-kind plans of parameterized queries.
//! - [`coerce`]: PostgreSQL wire values to typed protobuf values, and the coercion matrix
//!   (time zones, epochs, legacy date strings).
//! - [`pii`]: the classification matrix, value detectors, and the nested-JSON PII scan.
//! - [`appender`]: append-only records with group commit, into a file or a database.
//! - [`control`]: the PostgreSQL control database that replicas share for their records.
//! - [`audit`]: the hash-chained audit log, one durable record per call, and its check.
//! - [`deadletter`]: the dead-letter queue of rejected rows and failed extractions.
//! - [`admission`]: per-source call slots and each caller's share of them (FIFO).
//! - [`extract`]: the engine: snapshot transaction, portal batches, bounded channel,
//!   cancellation, count verification, manifest.
//! - [`grpc`]: the service adapter, the error-to-status mapping, and the server (health,
//!   reflection, graceful shutdown).
//! - [`resilience`]: the circuit breaker of each source (pure state, time passed in).
//! - [`metrics`]: Prometheus metrics, passed to whoever records.
//! - [`telemetry`]: logs, and traces over OTLP with W3C trace context.
//! - [`identity`]: identity values normalised per kind (trim, NFC, lower-case, E.164).
//! - [`subject`]: the keyed hash that stands for a subject wherever one is recorded.
//! - [`client`]: the `extract` command, a client that writes a data package for people.
//! - [`pgcluster`]: throwaway PostgreSQL clusters for the demo, tests and benchmarks.
//! - [`demo`]: the built-in demo data and its data map.
//! - [`pb`]: the generated protobuf and gRPC code of `proto/dsr/v1/dsr.proto`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod appender;
pub mod audit;
pub mod client;
pub mod coerce;
pub mod config;
pub mod control;
pub mod datamap;
pub mod db;
pub mod deadletter;
pub mod demo;
pub mod discover;
pub mod extract;
pub mod grpc;
pub mod identity;
pub mod metrics;
pub mod pgcluster;
pub mod pii;
pub mod resilience;
pub mod subject;
pub mod telemetry;

/// Generated code for the `dsr.v1` protobuf package.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("dsr.v1");
}
