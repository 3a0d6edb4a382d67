//! The server: TLS, the policy layers, health, reflection (v1 and v1alpha), the metrics
//! listener, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::follow_breakers;
use super::metrics_http::serve_metrics;
use super::operations::RequestsApi;
use super::service::Service;
use super::{FILE_DESCRIPTOR_SET, layers, status};
use crate::config::Config;
use crate::engine::Engine;
use crate::pb::dsr_connector_service_server::DsrConnectorServiceServer;
use crate::pb::dsr_request_service_server::DsrRequestServiceServer;
use crate::pb::google::longrunning::operations_server::OperationsServer;

/// How often refused calls are written to the audit log, as one record per caller and status.
const REFUSALS_EVERY: Duration = Duration::from_secs(10);

/// How long after the grace period open connections may delay the process's exit.
const HARD_STOP_AFTER_GRACE: Duration = Duration::from_secs(2);

/// The listener's TLS settings; with a client CA, client certificates are verified (and
/// optional: callers without one may still present a bearer token).
fn server_tls(
    tls: &crate::config::ServerTlsConfig,
) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("server.tls.{key}: {}: {e}", path.display()))
    };
    let identity = tonic::transport::Identity::from_pem(
        read("cert_file", &tls.cert_file)?,
        read("key_file", &tls.key_file)?,
    );
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        config = config
            .client_ca_root(tonic::transport::Certificate::from_pem(read(
                "client_ca_file",
                ca,
            )?))
            .client_auth_optional(true);
    }
    Ok(config)
}

/// Serves until `shutdown` resolves, then drains: the health status turns NOT_SERVING, new
/// calls are refused, running streams get `shutdown_grace` to finish, and whatever still runs
/// after that is cancelled (its query too) and ends with UNAVAILABLE.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics_listener =
        match config.server.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("server.metrics_listen: cannot listen on {addr}: {e}")
            })?),
            None => None,
        };
    run_with(config, listener, metrics_listener, shutdown).await
}

/// [`run`], with the metrics listener bound by the caller (tests bind port 0).
pub async fn run_with(
    config: Arc<Config>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cancel_streams = CancellationToken::new();
    let metrics = Arc::new(crate::observability::metrics::Metrics::new(
        &config,
        crate::records::deadletter::CATEGORIES,
    ));
    let records = crate::records::Records::open(&config.server).await?;
    // Refused calls are written as one record per caller and status every few seconds, and
    // once more at the stop.
    let refusals = crate::records::refusals::Refusals::new(records.log.clone(), metrics.clone());
    let refusals_stop = CancellationToken::new();
    refusals.spawn_writer(REFUSALS_EVERY, refusals_stop.clone());
    let engine = Arc::new(
        Engine::new(
            config.clone(),
            cancel_streams.clone(),
            metrics.clone(),
            records,
            |error| crate::observability::metrics::code_name(status::to_status(error).code()),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    if let Some(listener) = metrics_listener {
        let local = listener.local_addr()?;
        tracing::info!(%local, "metrics listening");
        tokio::spawn(serve_metrics(listener, engine.clone()));
    }
    let requests = crate::requests::Requests::open(engine.clone(), status::to_status).await?;
    // The request workers stop claiming when the drain begins; what they still run has the
    // grace period, is then cancelled with the streams, and goes back to the queue for any
    // replica.
    let stop_claiming = CancellationToken::new();
    let workers = match &requests {
        Some(requests) => requests.spawn(stop_claiming.clone(), cancel_streams.clone()),
        None => Vec::new(),
    };
    let adapter = Arc::new(Service {
        engine: engine.clone(),
        requests,
    });
    // Each service sends and accepts the configured encodings.
    macro_rules! compressed {
        ($server:expr) => {
            config
                .server
                .compression
                .iter()
                .fold($server, |service, compression| {
                    let encoding = compression.encoding();
                    service
                        .send_compressed(encoding)
                        .accept_compressed(encoding)
                })
        };
    }
    let service = compressed!(DsrConnectorServiceServer::from_arc(adapter.clone()));
    let requests_api = Arc::new(RequestsApi(adapter));
    let operations = compressed!(OperationsServer::from_arc(requests_api.clone()));
    let request_service = compressed!(DsrRequestServiceServer::from_arc(requests_api));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DsrConnectorServiceServer<Service>>()
        .await;
    // The watchers end with the server (the guard cancels them when this function returns).
    let watchers = CancellationToken::new();
    let _stop_watchers = watchers.clone().drop_guard();
    let source_services = follow_breakers(&engine, &health, &watchers).await;
    // Each reflection service lists every service, both reflections included, so that
    // `grpcurl list` shows what is served whichever version it asks.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let grace = config.server.shutdown_grace;
    let hard_stop = CancellationToken::new();
    let drain = {
        let hard_stop = hard_stop.clone();
        async move {
            shutdown.await;
            stop_claiming.cancel();
            tracing::info!(
                grace_secs = grace.as_secs_f64(),
                "shutting down: draining streams"
            );
            health
                .set_not_serving::<DsrConnectorServiceServer<Service>>()
                .await;
            for name in &source_services {
                health
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                tracing::warn!("shutdown grace period over: cancelling running streams");
                cancel_streams.cancel();
                // Cancelled streams end within moments; a client that keeps its connection
                // open after that must not keep the process alive.
                tokio::time::sleep(HARD_STOP_AFTER_GRACE).await;
                hard_stop.cancel();
            });
        }
    };

    let local = listener.local_addr()?;
    tracing::info!(%local, "dsr-connector listening");
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.server.tls {
        builder = builder.tls_config(server_tls(tls)?)?;
    }
    let serve = builder
        // Detects clients that vanished without closing their connection, whose streams would
        // otherwise hold a snapshot open.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(layers::stack(&config, refusals.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .add_service(request_service)
        .add_service(operations)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, small messages (a manifest) wait for the peer's delayed
            // ACK: about 40 ms per request.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            drain,
        );
    tokio::select! {
        served = serve => served?,
        _ = hard_stop.cancelled() => {
            tracing::warn!("connections still open after the grace period: closing them");
        }
    }
    // Every record and dead letter queued before the stop is written before the process
    // ends: the refusals counted since the last write, then the writers' queues, drained.
    // The workers settle what they ran (queued again when it was cut off), so that another
    // replica takes it at once rather than after the lease.
    let settle_workers = futures_util::future::join_all(workers);
    if tokio::time::timeout(HARD_STOP_AFTER_GRACE * 5, settle_workers)
        .await
        .is_err()
    {
        tracing::warn!("request workers still busy at the stop: their leases will run out");
    }
    refusals_stop.cancel();
    refusals.flush().await;
    engine.records().flush().await;
    tracing::info!("server stopped");
    Ok(())
}
