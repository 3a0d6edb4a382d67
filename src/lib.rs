//! dsr-connector: a gRPC service that answers data-subject requests against PostgreSQL and
//! MariaDB/MySQL: access (every row of one subject, streamed from one consistent snapshot)
//! and erasure (the subject's rows deleted or masked in one verified transaction), reaching
//! only the subject's rows (the reach rule: ownership, lookups, never another person's row).
//!
//! # Layout
//!
//! One folder per concern. Arrows run downwards only: a room imports the rooms listed after
//! it, never one above it.
//!
//! - [`api`]: the transport: the server (health, reflection, graceful shutdown, the metrics
//!   listener), one adapter per RPC, the policy layers (request id, trace context, deadline,
//!   auth) and the one error-to-status mapping.
//! - [`requests`]: durable data-subject requests across sources, as long-running operations
//!   in the control database: the API's operations, the workers that claim tasks under
//!   leases and resume a dead replica's, the request's states, and access packages.
//! - [`cli`]: the client-side commands: `extract` (a data package for people), `erase` and
//!   `discover` (a draft data map).
//! - [`engine`]: every RPC's database work behind one guarded call (breaker, call slots,
//!   checkout, settle): `extract` (snapshot, portal batches, bounded channel, cancellation,
//!   count verification, manifest), `erase` (preview, guards, changes, verification before
//!   COMMIT), `validate` and `discover`.
//! - [`records`]: the appender (group commit, files written in segments), the hash-chained
//!   audit log, the dead-letter queue and the control database that replicas share for them.
//! - [`schema`]: the data map checked against the live catalog (the schema gate), the
//!   identity graph compiled under the reach rule into per-identity-kind plans with their
//!   hub and shared-key guards, and the per-source cache.
//! - [`store`]: the databases read, behind one boundary that the engine runs through once
//!   for every store (`read`: snapshots, counts, rows of cells; `catalog`: what the schema
//!   gate reads; `discovery`: what `discover` reads; `erase`: an erasure's transaction):
//!   `postgres` (pools, libpq `sslmode` over rustls, SQLSTATE classification) and `mysql`
//!   (MariaDB and MySQL).
//! - [`values`]: PostgreSQL wire values to typed protobuf values, and the coercion matrix.
//! - [`classify`]: the classification matrix, value detectors, and the nested-JSON PII scan.
//! - [`resilience`]: the circuit breaker, retry policy and admission (call slots).
//! - [`observability`]: logs, traces over OTLP, and Prometheus metrics.
//! - [`subject`]: identity values normalised per kind, and the keyed hash that stands for a
//!   subject wherever one is recorded.
//! - [`config`]: typed, validated, immutable configuration; secrets redacted; its JSON
//!   Schema.
//! - [`demo`]: the built-in demo (its data, its map and a throwaway PostgreSQL cluster), for
//!   the demo command, the tests and the benchmark; behind the default `demo` feature.
//! - [`pb`]: the generated protobuf and gRPC code of `proto/dsr/v1/dsr.proto`, and the frames
//!   the Extract stream sends (batches encoded row by row as they fill).
#![forbid(unsafe_code)]

pub mod api;
pub mod classify;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod engine;
pub mod observability;
pub mod records;
pub mod requests;
pub mod resilience;
pub mod schema;
pub mod store;
pub mod subject;
pub mod values;

pub mod pb;
