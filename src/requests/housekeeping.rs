//! Housekeeping on each replica: the request gauges from the control database, and packages
//! whose retention has passed, removed (and the removal recorded).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::worker::pause;
use super::{Requests, package};

/// How often housekeeping runs: the gauges, and packages past their retention.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// Housekeeping on one replica: the request gauges, and packages whose retention passed.
pub(super) async fn run(requests: Arc<Requests>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Err(error) = housekeep(&requests).await {
            tracing::warn!(%error, "request housekeeping");
        }
        pause(&stop, HOUSEKEEPING_EVERY).await;
    }
}

async fn housekeep(requests: &Requests) -> Result<(), super::RequestError> {
    let client = requests.client().await?;
    let gauges = client.request_gauges().await?;
    requests.engine.metrics().set_request_gauges(
        &gauges.states,
        gauges.earliest_due_secs,
        gauges.longest_retry_secs,
    );
    let expired = client.expired_packages(16).await?;
    drop(client);
    for id in expired {
        let mut client = requests.client().await?;
        let Some(row) = client.lock_request(&id, false).await? else {
            continue;
        };
        if let (Some(root), Some(_)) = (&requests.cfg().package_dir, &row.package_path) {
            if let Err(error) = package::remove(root, &id) {
                client.rollback().await?;
                tracing::warn!(request_id = %id, error = %format!("{error:#}"),
                    "an expired package could not be removed");
                continue;
            }
            client.forget_package(&id).await?;
        }
        client.commit().await?;
        drop(client);
        requests
            .record("PackageExpired", "", &id, "", "deleted")
            .await;
    }
    Ok(())
}
