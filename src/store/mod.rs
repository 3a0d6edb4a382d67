//! The stores the engine reads: what a store provides (a pool with a checkout timeout, a
//! consistent read-only snapshot on one connection, a catalog, a streamed cancellable query
//! with bound parameters, decoding to the proto's values, and error classification), one
//! folder per kind of database.
//!
//! - [`read`]: the boundary Extract runs through, once for every store: a [`read::Store`]
//!   opens a [`read::ReadSnapshot`], whose tables stream rows of [`read::Cells`].
//! - [`postgres`]: PostgreSQL through bb8 and tokio-postgres, libpq's `sslmode` over rustls,
//!   and its SQLSTATEs classified once.
//! - [`mysql`]: MariaDB and MySQL through mysql_async over rustls, their error numbers
//!   classified once; `KILL QUERY` from a second pool.
//! - [`error`]: the errors every store's own codes are classified into.
//!
//! - [`catalog`]: what the schema gate reads of a store ([`catalog::ReadCatalog`]): its
//!   tables, keys and indexes in words every store shares, and sampled values.
//!
//! - [`discovery`]: what `discover` reads of a store ([`discovery::Discover`]) to draft a
//!   data map: every table, a bounded sample of values, and lookups.
//!
//! - [`erase`]: what an erasure asks of a store ([`erase::Erase`]): a read-write
//!   transaction that locks, captures, deletes, masks and verifies one subject's rows.
//!
//! A new store implements [`Backend`]: [`read::Store`] (and its snapshot, row stream and
//! cells), [`catalog::ReadCatalog`], [`discovery::Discover`] and [`erase::Erase`] (and its
//! transaction), in a folder of its own, and is registered in [`SourceStore`]: a variant, its
//! arm in [`SourceStore::with`] and in each method of `ReadCatalog`, and its pool built in
//! [`SourceStore::open`]. The plans' SQL (`schema::plan`) and the schema gate's type names
//! are the other places a store's dialect shows.
//!
//! A store may import config and values; it never imports the engine or the API.

pub mod catalog;
pub mod dialect;
pub mod discovery;
pub mod erase;
pub mod error;
pub mod mysql;
pub mod postgres;
pub mod read;
pub mod types;

use std::future::Future;

use crate::config::{DatabaseKind, SourceConfig};
pub use dialect::Dialect;
pub use types::ColumnType;
use crate::pb::ValueKind;
use crate::values::Decoder;
use mysql::{MyDecoder, MySqlPool};
use postgres::SourcePool;

/// How a column's values are read: by a decoder of the source's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnDecoder {
    Postgres(Decoder),
    MySql(MyDecoder),
}

impl ColumnDecoder {
    pub fn kind(self) -> ValueKind {
        match self {
            ColumnDecoder::Postgres(decoder) => decoder.kind(),
            ColumnDecoder::MySql(decoder) => decoder.kind(),
        }
    }

    /// The PostgreSQL decoder, on a PostgreSQL source's column.
    pub fn postgres(self) -> Option<Decoder> {
        match self {
            ColumnDecoder::Postgres(decoder) => Some(decoder),
            ColumnDecoder::MySql(_) => None,
        }
    }
}

/// The SQL dialect of a kind of database.
pub(crate) fn dialect_of(kind: DatabaseKind) -> Dialect {
    match kind {
        DatabaseKind::Postgres => Dialect(&postgres::Postgres),
        DatabaseKind::Mysql => Dialect(&mysql::MySql),
    }
}

/// A source's store: its pool, by the kind of database it is.
pub enum SourceStore {
    Postgres(SourcePool),
    MySql(MySqlPool),
}

impl catalog::ReadCatalog for SourceStore {
    async fn catalog(
        &self,
        tables: &[crate::config::QualifiedName],
        foreign_keys: bool,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<catalog::Catalog, catalog::CatalogError> {
        match self {
            SourceStore::Postgres(pool) => pool.catalog(tables, foreign_keys, deadline).await,
            SourceStore::MySql(pool) => pool.catalog(tables, foreign_keys, deadline).await,
        }
    }

    async fn sample_texts(
        &self,
        statements: &[String],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<Vec<String>>, error::DbError> {
        match self {
            SourceStore::Postgres(pool) => pool.sample_texts(statements, deadline).await,
            SourceStore::MySql(pool) => pool.sample_texts(statements, deadline).await,
        }
    }
}

/// A pool's state, for its gauges.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    pub connections: u32,
    pub idle: u32,
    pub waiting: u64,
}

/// Everything a store provides: snapshots to read a subject from, its catalog, drafting,
/// and erasure.
pub trait Backend: read::Store + catalog::ReadCatalog + discovery::Discover + erase::Erase {}

impl<T: read::Store + catalog::ReadCatalog + discovery::Discover + erase::Erase> Backend for T {}

/// Work written once for every store ([`Backend`]), run on a source's own.
pub trait WithStore: Send {
    type Output;

    fn with<S: Backend>(self, store: &S) -> impl Future<Output = Self::Output> + Send;
}

impl SourceStore {
    /// The source's pool (which connects lazily).
    pub fn open(cfg: &SourceConfig) -> Result<SourceStore, String> {
        Ok(match cfg.kind {
            DatabaseKind::Postgres => SourceStore::Postgres(SourcePool::new(cfg)?),
            DatabaseKind::Mysql => SourceStore::MySql(MySqlPool::for_source(cfg)?),
        })
    }

    /// The pool's connections, idle connections and waiting checkouts, where the driver
    /// shows them (mysql_async does not: a MySQL source's call slots, which admit one call
    /// per connection, are its gauges).
    pub fn pool_state(&self) -> Option<PoolState> {
        match self {
            SourceStore::Postgres(pool) => {
                let state = pool.state();
                Some(PoolState {
                    connections: state.connections,
                    idle: state.idle_connections,
                    waiting: state.statistics.pending_gets(),
                })
            }
            SourceStore::MySql(_) => None,
        }
    }

    /// Closes the store's connections (MySQL's pool waits for it; PostgreSQL's closes as it
    /// drops).
    pub async fn close(self) {
        if let SourceStore::MySql(pool) = self {
            pool.disconnect().await;
        }
    }

    /// Runs `work` on this source's store.
    pub async fn with<W: WithStore>(&self, work: W) -> W::Output {
        match self {
            SourceStore::Postgres(pool) => work.with(pool).await,
            SourceStore::MySql(pool) => work.with(pool).await,
        }
    }
}
