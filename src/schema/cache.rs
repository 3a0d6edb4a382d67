//! The schema gate's cache: a source's data map, trusted for `schema_refresh` after the gate
//! last passed, and forgotten at once when a query meets a changed catalog.
//!
//! One lock per source makes the gate single-flight: while one call reads the catalog, the
//! others wait for its result instead of reading it too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::DataMap;

/// The data map of one source, with the time the gate last passed.
#[derive(Default)]
pub struct SchemaCache {
    slot: Mutex<Option<(Instant, Arc<DataMap>)>>,
}

impl SchemaCache {
    /// The cached map if the gate passed less than `refresh` ago, or the map `load` returns
    /// (cached only when it succeeds: a failed gate is checked again on the next call).
    pub async fn get_or_load<E, F, Fut>(
        &self,
        refresh: Duration,
        load: F,
    ) -> Result<Arc<DataMap>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<DataMap>, E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((checked, map)) = slot.as_ref()
            && checked.elapsed() < refresh
        {
            return Ok(map.clone());
        }
        *slot = None;
        let map = load().await?;
        *slot = Some((Instant::now(), map.clone()));
        Ok(map)
    }

    /// Replaces the cached map with the result of a gate run elsewhere (or forgets it).
    pub async fn store(&self, map: Option<Arc<DataMap>>) {
        *self.slot.lock().await = map.map(|map| (Instant::now(), map));
    }

    /// Forgets the map, so that the next call reads the catalog again.
    pub async fn forget(&self) {
        self.store(None).await;
    }
}
