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
//! - [`types`]: [`ColumnType`], what a column holds in words every store shares; the gate,
//!   the planner and `discover` reason in it.
//! - [`dialect`]: the SQL the plans need of a store ([`dialect::SqlDialect`]): quoting,
//!   table names, select and measure expressions, identity conditions, advised indexes.
//!
//! A new store lives in a folder of its own and implements [`Backend`]: [`read::Store`] (and
//! its snapshot, row stream and cells), [`catalog::ReadCatalog`] (mapping its types onto
//! [`ColumnType`]), [`discovery::Discover`], [`erase::Erase`] (and its transaction), its
//! [`dialect::SqlDialect`], and how its pool opens. It is registered by one line of the
//! `stores!` list below (its variant, pool type, value decoder and config kind), beside its
//! kind of database and settings in `config`. Outside `store/`, only the config's kinds and
//! the demo's loaders (and the benchmark's raw readers) name a store or its driver.
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
use crate::pb::ValueKind;
use crate::values::Decoder;
pub use dialect::Dialect;
use mysql::{MyDecoder, MySqlPool};
use postgres::SourcePool;
pub use types::ColumnType;

/// The stores, one line each: the variant of [`SourceStore`] and [`ColumnDecoder`], its pool
/// (a [`Backend`]), its value decoder, and the config's kind of database it serves.
macro_rules! stores {
    ($($(#[$doc:meta])* $variant:ident($pool:ty, $decoder:ty) = $kind:path;)+) => {
        /// A source's store: its pool, by the kind of database it is.
        pub enum SourceStore {
            $($(#[$doc])* $variant($pool),)+
        }

        /// How a column's values are read: by a decoder of the source's store.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ColumnDecoder {
            $($variant($decoder),)+
        }

        impl ColumnDecoder {
            /// The Value field the decoder fills.
            pub fn kind(self) -> ValueKind {
                match self {
                    $(ColumnDecoder::$variant(decoder) => decoder.kind(),)+
                }
            }
        }

        /// The SQL dialect of a kind of database.
        pub(crate) fn dialect_of(kind: DatabaseKind) -> Dialect {
            match kind {
                $($kind => Dialect(<$pool as Backend>::DIALECT),)+
            }
        }

        impl SourceStore {
            /// The source's pool (which connects lazily).
            pub fn open(cfg: &SourceConfig) -> Result<SourceStore, String> {
                Ok(match cfg.kind {
                    $($kind => SourceStore::$variant(<$pool as Backend>::open(cfg)?),)+
                })
            }

            /// Runs `work` on this source's store.
            pub async fn with<W: WithStore>(&self, work: W) -> W::Output {
                match self {
                    $(SourceStore::$variant(pool) => work.with(pool).await,)+
                }
            }

            /// The pool's connections, idle connections and waiting checkouts, where the
            /// driver shows them.
            pub fn pool_state(&self) -> Option<PoolState> {
                match self {
                    $(SourceStore::$variant(pool) => pool.pool_state(),)+
                }
            }

            /// Connections opened from now on prepare `statements` (see
            /// [`Backend::prepare_on_connect`]).
            pub fn prepare_on_connect(&self, statements: Vec<String>) {
                match self {
                    $(SourceStore::$variant(pool) => pool.prepare_on_connect(statements),)+
                }
            }

            /// Closes the store's connections.
            pub async fn close(self) {
                match self {
                    $(SourceStore::$variant(pool) => pool.close().await,)+
                }
            }
        }

        impl catalog::ReadCatalog for SourceStore {
            async fn catalog(
                &self,
                tables: &[crate::config::QualifiedName],
                foreign_keys: bool,
                deadline: Option<tokio::time::Instant>,
            ) -> Result<catalog::Catalog, catalog::CatalogError> {
                match self {
                    $(SourceStore::$variant(pool) => {
                        pool.catalog(tables, foreign_keys, deadline).await
                    })+
                }
            }

            async fn sample_texts(
                &self,
                statements: &[String],
                deadline: Option<tokio::time::Instant>,
            ) -> Result<Vec<Vec<String>>, error::DbError> {
                match self {
                    $(SourceStore::$variant(pool) => pool.sample_texts(statements, deadline).await,)+
                }
            }
        }
    };
}

stores! {
    /// PostgreSQL, through bb8 and tokio-postgres.
    Postgres(SourcePool, Decoder) = DatabaseKind::Postgres;
    /// MariaDB and MySQL, through mysql_async.
    MySql(MySqlPool, MyDecoder) = DatabaseKind::Mysql;
}

impl ColumnDecoder {
    /// The PostgreSQL decoder, on a PostgreSQL source's column.
    pub fn postgres(self) -> Option<Decoder> {
        match self {
            ColumnDecoder::Postgres(decoder) => Some(decoder),
            _ => None,
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
/// erasure, its SQL, and its pool.
pub trait Backend:
    read::Store + catalog::ReadCatalog + discovery::Discover + erase::Erase + Sized
{
    /// The SQL the engine's plans are written in for this store.
    const DIALECT: &'static dyn dialect::SqlDialect;

    /// The pool of a source (which connects lazily).
    fn open(cfg: &SourceConfig) -> Result<Self, String>;

    /// The pool's gauges, where the driver shows them.
    fn pool_state(&self) -> Option<PoolState> {
        None
    }

    /// The statements of the source's current data map: connections opened from now on
    /// prepare them before their first call, where the driver keeps prepared statements.
    fn prepare_on_connect(&self, _statements: Vec<String>) {}

    /// Closes the pool's connections.
    fn close(self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Work written once for every store ([`Backend`]), run on a source's own.
pub trait WithStore: Send {
    type Output;

    fn with<S: Backend>(self, store: &S) -> impl Future<Output = Self::Output> + Send;
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn no_code_outside_the_stores_names_a_driver_or_a_store_kind() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 50, "read the sources");
        // The demo's loaders and the benchmark's raw readers speak to a store's driver; the
        // config names the kinds; `values/decode.rs` is PostgreSQL's wire decoding, pure,
        // which the coercions share.
        let allowed = ["store", "config", "demo", "bin", "values/decode.rs"].map(|d| src.join(d));
        let named = [
            "tokio_postgres::",
            "mysql_async::",
            "MyDecoder",
            "ColumnDecoder::",
            "values::Decoder",
            "DatabaseKind::Postgres =>",
            "DatabaseKind::Mysql =>",
            "typname",
            "typcategory",
        ];
        let mut found = Vec::new();
        for (path, text) in &files {
            if allowed
                .iter()
                .any(|a| path.starts_with(&a.display().to_string()))
            {
                continue;
            }
            for name in named {
                if text.contains(name) {
                    found.push(format!("{path}: {name}"));
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
    }
}
