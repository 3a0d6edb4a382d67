//! Health: each source's circuit breaker reported as a health service of its own.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::service::Service;
use crate::engine::Engine;
use crate::pb::dsr_connector_service_server::DsrConnectorServiceServer;

/// Reports each source's circuit breaker as a health service of its own,
/// `dsr.v1.DsrConnectorService/<source>` (SERVING while closed, NOT_SERVING while open or
/// half-open), and as the `dsr_circuit_breaker_state` gauge. The server's own health stays
/// SERVING while a source is open: the other sources still serve. Returns the service names.
pub(super) async fn follow_breakers(
    engine: &Arc<Engine>,
    health: &tonic_health::server::HealthReporter,
    stop: &CancellationToken,
) -> Vec<String> {
    use tonic::server::NamedService;
    let mut names = Vec::new();
    for (source, mut state) in engine.breaker_states() {
        let name = format!("{}/{source}", DsrConnectorServiceServer::<Service>::NAME);
        names.push(name.clone());
        let (health, engine) = (health.clone(), engine.clone());
        let labels = crate::observability::metrics::source_labels(&source);
        let report = move |now: crate::resilience::breaker::State| {
            engine
                .metrics()
                .breaker_state
                .get_or_create(&labels)
                .set(now.gauge());
            if now == crate::resilience::breaker::State::Closed {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            }
        };
        let first = report(*state.borrow_and_update());
        health.set_service_status(&name, first).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { break },
                    _ = stop.cancelled() => break,
                }
                let status = report(*state.borrow_and_update());
                health.set_service_status(&name, status).await;
            }
        });
    }
    names
}
