//! The schema gate's cache: a source's data map, trusted for `schema_refresh` after the gate
//! last passed, and forgotten at once when a query meets a changed catalog.
//!
//! Reloads are single-flight: one call reads the catalog while the others go on with the map
//! they have. A map that is only old is served while it is reloaded; a map that was
//! forgotten (the catalog changed under a query) is not, so those calls wait for the reload.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::DataMap;

/// The data map of one source, with the time the gate last passed.
#[derive(Default)]
pub struct SchemaCache {
    current: RwLock<Option<(Instant, Arc<DataMap>)>>,
    /// Held by the one call that reads the catalog.
    reload: Mutex<()>,
}

impl SchemaCache {
    /// The cached map if the gate passed less than `refresh` ago; an older map while another
    /// call reloads it; otherwise the map `load` returns. A failed gate drops the old map
    /// (fail closed: calls wait for the next gate rather than trust a map it refused), and is
    /// checked again on the next call.
    pub async fn get_or_load<E, F, Fut>(
        &self,
        refresh: Duration,
        load: F,
    ) -> Result<Arc<DataMap>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<DataMap>, E>>,
    {
        let cached = self.cached();
        if let Some((checked, map)) = &cached
            && checked.elapsed() < refresh
        {
            return Ok(map.clone());
        }
        let _reloading = match (cached, self.reload.try_lock()) {
            (_, Ok(guard)) => guard,
            // Another call reloads an old map: this one goes on with the old map.
            (Some((_, map)), Err(_)) => return Ok(map),
            // No map to go on with: wait for the reload, which may make one.
            (None, Err(_)) => {
                let guard = self.reload.lock().await;
                if let Some((checked, map)) = self.cached()
                    && checked.elapsed() < refresh
                {
                    return Ok(map);
                }
                guard
            }
        };
        match load().await {
            Ok(map) => {
                self.set(Some(map.clone()));
                Ok(map)
            }
            Err(error) => {
                self.set(None);
                Err(error)
            }
        }
    }

    fn cached(&self) -> Option<(Instant, Arc<DataMap>)> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, map: Option<Arc<DataMap>>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            map.map(|map| (Instant::now(), map));
    }

    /// Replaces the cached map with the result of a gate run elsewhere (or forgets it).
    pub async fn store(&self, map: Option<Arc<DataMap>>) {
        self.set(map);
    }

    /// Forgets the map, so that the next call reads the catalog again, and waits for it.
    pub async fn forget(&self) {
        self.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Arc<DataMap> {
        Arc::new(DataMap::empty_for_tests())
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_map_is_served_while_one_call_reloads_it() {
        let cache = Arc::new(SchemaCache::default());
        let first = map();
        cache.store(Some(first.clone())).await;
        tokio::time::advance(Duration::from_secs(120)).await;

        // One call reloads, and its catalog read does not finish until it is told to.
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let reloading = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(Duration::from_secs(60), || async move {
                        finished.await.unwrap();
                        Ok::<_, ()>(map())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        // Meanwhile another call gets the old map at once (with paused time, waiting would
        // let the timeout fire).
        let served = tokio::time::timeout(
            Duration::from_secs(1),
            cache.get_or_load::<(), _, _>(Duration::from_secs(60), || async {
                panic!("a second catalog read while one runs")
            }),
        )
        .await
        .expect("the old map, without waiting for the reload")
        .unwrap();
        assert!(Arc::ptr_eq(&served, &first));
        finish.send(()).unwrap();
        let reloaded = reloading.await.unwrap().unwrap();
        assert!(!Arc::ptr_eq(&reloaded, &first));
        // The reloaded map is fresh now.
        let now = cache
            .get_or_load::<(), _, _>(Duration::from_secs(60), || async {
                panic!("a fresh map is not reloaded")
            })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&now, &reloaded));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_map_is_not_served_while_it_reloads() {
        let cache = SchemaCache::default();
        cache.store(Some(map())).await;
        cache.forget().await;
        let loaded = cache
            .get_or_load(Duration::from_secs(60), || async { Ok::<_, ()>(map()) })
            .await
            .unwrap();
        assert_eq!(Arc::strong_count(&loaded), 2);
    }
}
