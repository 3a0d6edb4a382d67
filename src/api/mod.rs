//! The gRPC surface, transport only: the server with health, reflection and graceful
//! shutdown ([`server`]), one adapter per RPC ([`service`], [`validate`], [`discover`]), the
//! policy layers ([`layers`]: request id, trace context, deadline, auth), and the one mapping
//! of the engine's errors to statuses ([`status`]).
//!
//! The adapter only translates: it reads the request and its deadline, calls the engine, and
//! maps errors through [`status::to_status`]. No SQL lives here. This room is the top: nothing
//! imports it but the binary.

pub mod discover;
mod headers;
mod health;
pub mod layers;
mod metrics_http;
mod operations;
mod server;
mod service;
pub mod status;
pub mod validate;

pub use headers::grpc_timeout;
pub use server::{run, run_with};
pub use service::Service;

/// The descriptor set served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dsr_descriptor");
