//! The gRPC surface: the service adapter, and the server with health, reflection and
//! graceful shutdown.
//!
//! The adapter only translates: it reads the request and its deadline, calls the engine, and
//! maps errors through [`status::to_status`]. No SQL lives here.

pub mod discover;
pub mod layers;
pub mod status;
pub mod validate;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::Config;
use crate::engine::{Engine, ExtractParams};
use crate::pb::dsr_connector_service_server::{DsrConnectorService, DsrConnectorServiceServer};
use crate::pb::{
    DiscoverRequest, DiscoverResponse, ExtractRequest, ExtractResponse, ValidateRequest,
    ValidateResponse,
};

/// The descriptor set served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dsr_descriptor");

/// How long after the grace period open connections may delay the process's exit.
const HARD_STOP_AFTER_GRACE: Duration = Duration::from_secs(2);

/// The service adapter.
pub struct Service {
    engine: Arc<Engine>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DsrConnectorService for Service {
    type ExtractStream = BoxStream<ExtractResponse>;
    type ValidateStream = BoxStream<ValidateResponse>;
    type DiscoverStream = BoxStream<DiscoverResponse>;

    async fn extract(
        &self,
        request: Request<ExtractRequest>,
    ) -> Result<Response<Self::ExtractStream>, Status> {
        let context = CallContext::of(&request)?;
        let request = request.into_inner();
        let source = request.source.clone();
        let engine = self.engine.clone();
        // The engine records every call it answers; calls refused before it, or cut off by
        // the deadline while it resolved the plan, are recorded here.
        let mut engine_answered = false;
        let result = async {
            if request.source.is_empty() {
                return Err(Status::invalid_argument("source: must not be empty"));
            }
            context.check_source(&request.source)?;
            let subject = request
                .subject
                .ok_or_else(|| Status::invalid_argument("subject: required"))?;
            let params = ExtractParams {
                source: request.source,
                kind: subject.kind,
                value: SecretString::from(subject.value),
                batch_size: request.batch_size,
                request_id: request.request_id,
                compliance_tag: request.compliance_tag,
                tables: request.tables,
                deadline: Some(context.deadline),
                dry_run: false,
                caller: context.caller.name.clone(),
                call_id: context.request_id.clone(),
                span: context.span.clone(),
            };
            // Resolving the plan may read the catalog; that too must end at the deadline, with
            // DEADLINE_EXCEEDED rather than tonic's CANCELLED.
            let stream = tokio::time::timeout_at(context.deadline, self.engine.extract(params))
                .await
                .map_err(|_| status::to_status(&crate::engine::ExtractError::DeadlineExceeded))?;
            engine_answered = true;
            let stream = stream.map_err(|e| status::to_status(&e))?;
            let counted = source.clone();
            // A stream dropped before its end (the client went away) is CANCELLED.
            let mut ending = StatusOnDrop(Some(context.span.clone()));
            let stream = stream.map(move |item| {
                let item = item.map_err(|e| status::to_status(&e));
                let code = match &item {
                    Err(status) => Some(status.code()),
                    Ok(ExtractResponse {
                        event: Some(crate::pb::extract_response::Event::Manifest(_)),
                    }) => Some(tonic::Code::Ok),
                    Ok(_) => None,
                };
                if let Some(code) = code {
                    engine.metrics().record_request("Extract", &counted, code);
                    ending.record(code);
                }
                item
            });
            Ok(Box::pin(stream) as Self::ExtractStream)
        }
        .instrument(context.span.clone())
        .await;
        if let Err(status) = &result {
            self.engine
                .metrics()
                .record_request("Extract", &source, status.code());
            record_status(&context.span, status.code());
            if !engine_answered {
                self.record_call(&context, "Extract", &source, status.code())
                    .await;
            }
        }
        context.respond(result)
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<Self::ValidateStream>, Status> {
        let context = CallContext::of(&request)?;
        let request = request.into_inner();
        let source = request.source.clone();
        let result = async {
            if !request.source.is_empty() {
                context.check_source(&request.source)?;
            }
            // A dry run for a subject tells whether that person is in the source and how many
            // rows each table holds: it needs the Extract scope, not only Validate.
            if request.subject.is_some() && !context.caller.may_call("Extract") {
                return Err(Status::permission_denied(format!(
                    "caller '{}' may not run a dry run for a subject: that needs the Extract \
                     scope as well as Validate",
                    context.caller.name
                )));
            }
            let messages = validate::run(
                &self.engine,
                request,
                &context.caller.name,
                Some(context.deadline),
            )
            .await?;
            Ok(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok))) as Self::ValidateStream)
        }
        .instrument(context.span.clone())
        .await;
        self.finish_call(&context, "Validate", &source, result)
            .await
    }

    async fn discover(
        &self,
        request: Request<DiscoverRequest>,
    ) -> Result<Response<Self::DiscoverStream>, Status> {
        let context = CallContext::of(&request)?;
        let request = request.into_inner();
        let source = request.source.clone();
        let result = async {
            if request.source.is_empty() {
                return Err(Status::invalid_argument("source: must not be empty"));
            }
            context.check_source(&request.source)?;
            let messages = discover::run(
                &self.engine,
                request,
                &context.caller.name,
                context.deadline,
            )
            .await?;
            Ok(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok))) as Self::DiscoverStream)
        }
        .instrument(context.span.clone())
        .await;
        self.finish_call(&context, "Discover", &source, result)
            .await
    }
}

impl Service {
    /// Ends a call answered in one piece (Validate, Discover): counts it, records its status
    /// on the span and in the audit log, and echoes the request id.
    async fn finish_call<T>(
        &self,
        context: &CallContext,
        rpc: &str,
        source: &str,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = result
            .as_ref()
            .err()
            .map(|s: &Status| s.code())
            .unwrap_or(tonic::Code::Ok);
        self.engine.metrics().record_request(rpc, source, code);
        record_status(&context.span, code);
        self.record_call(context, rpc, source, code).await;
        context.respond(result)
    }

    /// Appends a call-level audit record (a Validate call, or a call refused before the
    /// engine answered it), and waits until it is durable.
    async fn record_call(&self, context: &CallContext, rpc: &str, source: &str, code: tonic::Code) {
        let entry = crate::records::audit::Entry {
            rpc: rpc.to_owned(),
            caller: context.caller.name.clone(),
            source: if source.len() <= crate::engine::MAX_LABEL_BYTES {
                source.to_owned()
            } else {
                "[refused: too long]".to_owned()
            },
            call_id: context.request_id.clone(),
            outcome: if code == tonic::Code::Ok {
                "ok"
            } else {
                "failed"
            }
            .into(),
            status: crate::observability::metrics::code_name(code).into(),
            ..Default::default()
        };
        let records = self.engine.records();
        if let Err(error) = records.record(self.engine.metrics(), entry).await {
            tracing::error!(%error, "a call could not be recorded in the audit log");
        }
    }
}

/// Records a call's final gRPC status on its server span.
fn record_status(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
}

/// Records the stream's final status once; if the stream is dropped before it ended (the
/// client went away), records CANCELLED.
struct StatusOnDrop(Option<tracing::Span>);

impl StatusOnDrop {
    fn record(&mut self, code: tonic::Code) {
        if let Some(span) = self.0.take() {
            record_status(&span, code);
        }
    }
}

impl Drop for StatusOnDrop {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

/// What the interceptor stack learned about a call.
struct CallContext {
    span: tracing::Span,
    request_id: String,
    deadline: Instant,
    caller: layers::Caller,
}

impl CallContext {
    fn of<T>(request: &Request<T>) -> Result<CallContext, Status> {
        let missing = || Status::internal("the call did not pass the interceptor stack");
        Ok(CallContext {
            span: request
                .extensions()
                .get::<layers::ServerSpan>()
                .map(|s| s.0.clone())
                .unwrap_or_else(tracing::Span::none),
            request_id: request
                .extensions()
                .get::<layers::RequestId>()
                .ok_or_else(missing)?
                .0
                .clone(),
            deadline: request
                .extensions()
                .get::<layers::Deadline>()
                .ok_or_else(missing)?
                .0,
            caller: request
                .extensions()
                .get::<layers::Caller>()
                .ok_or_else(missing)?
                .clone(),
        })
    }

    fn check_source(&self, source: &str) -> Result<(), Status> {
        if self.caller.may_read(source) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "caller '{}' may not read source '{source}'",
                self.caller.name
            )))
        }
    }

    /// Echoes the request id in the response metadata, or in the error's.
    fn respond<T>(&self, result: Result<T, Status>) -> Result<Response<T>, Status> {
        let id = self
            .request_id
            .parse::<tonic::metadata::MetadataValue<_>>()
            .ok();
        match result {
            Ok(body) => {
                let mut response = Response::new(body);
                if let Some(id) = id {
                    response.metadata_mut().insert("x-request-id", id);
                }
                Ok(response)
            }
            Err(mut status) => {
                if let Some(id) = id {
                    status.metadata_mut().insert("x-request-id", id);
                }
                Err(status)
            }
        }
    }
}

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

/// Serves `GET /metrics` in Prometheus text format until the process ends.
async fn serve_metrics(listener: TcpListener, engine: Arc<Engine>) {
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

/// Reports each source's circuit breaker as a health service of its own,
/// `dsr.v1.DsrConnectorService/<source>` (SERVING while closed, NOT_SERVING while open or
/// half-open), and as the `dsr_circuit_breaker_state` gauge. The server's own health stays
/// SERVING while a source is open: the other sources still serve. Returns the service names.
async fn follow_breakers(
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

/// Reads `grpc-timeout` (an ASCII integer of at most 8 digits and a unit: H, M, S, m, u, n).
pub fn grpc_timeout(metadata: &MetadataMap) -> Result<Option<Duration>, Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let bad = || Status::invalid_argument("grpc-timeout: malformed header");
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    }))
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
    let metrics = Arc::new(crate::observability::metrics::Metrics::new(&config));
    let control = match &config.server.control {
        Some(cfg) => Some(crate::records::control::Control::new(cfg).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let audit_log = match &config.server.audit {
        Some(audit) => {
            let key = audit
                .key
                .as_ref()
                .map(|k| secrecy::ExposeSecret::expose_secret(k).clone())
                .unwrap_or_default();
            let replica = audit.replica_name();
            let log = match (audit.store, &audit.path, &control) {
                (crate::config::StoreKind::Control, _, Some(control)) => {
                    crate::records::audit::AuditLog::open_control(control, &key, &replica).await?
                }
                (_, Some(path), _) => crate::records::audit::AuditLog::open(path, &key, &replica)?,
                _ => anyhow::bail!("server.audit: no store to open (check-config names why)"),
            };
            tracing::info!(log = %log.name(), %replica, "audit log open");
            Some(log)
        }
        None => {
            tracing::warn!("no [server.audit] configured: calls are not recorded in an audit log");
            None
        }
    };
    let dead_letters = match &config.server.dead_letters {
        Some(queue) => Some(match (queue.store, &queue.path, &control) {
            (crate::config::StoreKind::Control, _, Some(control)) => {
                crate::records::deadletter::DeadLetters::open_control(control)
                    .await
                    .map_err(|e| anyhow::anyhow!("server.dead_letters: {e}"))?
            }
            (_, Some(path), _) => {
                crate::records::deadletter::DeadLetters::open(path).map_err(|e| {
                    anyhow::anyhow!("server.dead_letters.path: {}: {e}", path.display())
                })?
            }
            _ => anyhow::bail!("server.dead_letters: no store to open (check-config names why)"),
        }),
        None => None,
    };
    let records = crate::records::Records {
        log: audit_log.clone(),
        dead_letters,
    };
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
    let service = DsrConnectorServiceServer::new(Service {
        engine: engine.clone(),
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DsrConnectorServiceServer<Service>>()
        .await;
    // The watchers end with the server (the guard cancels them when this function returns).
    let watchers = CancellationToken::new();
    let _stop_watchers = watchers.clone().drop_guard();
    let source_services = follow_breakers(&engine, &health, &watchers).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let grace = config.server.shutdown_grace;
    let hard_stop = CancellationToken::new();
    let drain = {
        let hard_stop = hard_stop.clone();
        async move {
            shutdown.await;
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
        .layer(layers::stack(&config, audit_log))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
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
    tracing::info!("server stopped");
    Ok(())
}
