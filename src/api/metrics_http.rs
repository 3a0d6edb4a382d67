//! The metrics listener: `GET /metrics` in Prometheus text format, on its own port.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::engine::Engine;

/// Serves `GET /metrics` in Prometheus text format until the process ends.
pub(super) async fn serve_metrics(listener: TcpListener, engine: Arc<Engine>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let engine = engine.clone();
            async move {
                engine.update_pool_gauges();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    engine.metrics().render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "metrics listener stopped");
    }
}
