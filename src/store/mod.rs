//! The stores the engine reads: what a store provides (a pool with a checkout timeout, a
//! consistent read-only snapshot on one connection, a catalog, a streamed cancellable query
//! with bound parameters, decoding to the proto's values, and error classification), one
//! folder per kind of database.
//!
//! - [`postgres`]: PostgreSQL through bb8 and tokio-postgres, libpq's `sslmode` over rustls,
//!   and its SQLSTATEs classified once.
//! - [`mysql`]: MariaDB and MySQL through mysql_async over rustls, their error numbers
//!   classified once; `KILL QUERY` from a second pool.
//! - [`error`]: the errors every store's own codes are classified into.
//!
//! A store may import config and values; it never imports the engine or the API.

pub mod error;
pub mod mysql;
pub mod postgres;
