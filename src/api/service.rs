//! The service adapter: one handler per RPC. A handler reads the request and what the
//! policy layers learned (caller, deadline, request id, span), calls the engine, maps its
//! errors through [`super::status::to_status`], and records the call's status. No SQL here.

use std::pin::Pin;
use std::sync::Arc;

use secrecy::SecretString;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{discover, layers, status, validate};
use crate::engine::erase::EraseParams;
use crate::engine::{Engine, ExtractParams};
use crate::pb::dsr_connector_service_server::DsrConnectorService;
use crate::pb::{
    DiscoverRequest, DiscoverResponse, EraseRequest, EraseResponse, ExtractFrame, ExtractRequest,
    ExtractResponse, ValidateRequest, ValidateResponse, erase_response,
};

/// The service adapter.
pub struct Service {
    pub(super) engine: Arc<Engine>,
    /// Durable requests, when `[server.control]` is configured.
    pub(super) requests: Option<Arc<crate::requests::Requests>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DsrConnectorService for Service {
    type ExtractStream = BoxStream<ExtractFrame>;
    type ValidateStream = BoxStream<ValidateResponse>;
    type DiscoverStream = BoxStream<DiscoverResponse>;
    type EraseStream = BoxStream<EraseResponse>;

    async fn erase(
        &self,
        request: Request<EraseRequest>,
    ) -> Result<Response<Self::EraseStream>, Status> {
        let context = CallContext::of(&request)?;
        let request = request.into_inner();
        let source = request.source.clone();
        // The engine records every erasure it begins; calls refused before it are recorded
        // here.
        let mut engine_answered = false;
        let result = async {
            context.check_named_source(&request.source)?;
            let subject = request
                .subject
                .ok_or_else(|| invalid("subject: required"))?;
            let stop = tokio_util::sync::CancellationToken::new();
            // Dropped with this handler when the client goes away: the erasure stops, and
            // rolls back unless its COMMIT was already sent.
            let client_gone = stop.clone().drop_guard();
            let params = EraseParams {
                source: request.source,
                kind: subject.kind,
                value: SecretString::from(subject.value),
                request_id: request.request_id,
                compliance_tag: request.compliance_tag,
                dry_run: request.dry_run,
                preview_digest: request.preview_digest,
                deadline: Some(context.deadline),
                caller: context.caller.name.clone(),
                call_id: context.request_id.clone(),
                stop: stop.clone(),
            };
            // The erasure runs on its own task, so that it is never dropped halfway: a client
            // that goes away stops it through `stop`.
            let engine = self.engine.clone();
            let work = tokio::spawn(
                async move {
                    engine
                        .erase(params)
                        .await
                        .map_err(|e| status::to_status(&e))
                }
                .instrument(context.span.clone()),
            );
            let answer = work.await;
            client_gone.disarm();
            let receipt = match answer {
                Ok(done) => {
                    engine_answered = true;
                    done?
                }
                Err(_) => {
                    return Err(status::refusal(
                        tonic::Code::Internal,
                        "INTERNAL",
                        "the erasure's task ended without an answer",
                    ));
                }
            };
            let mut messages: Vec<Result<EraseResponse, Status>> = receipt
                .tables
                .iter()
                .map(|table| {
                    Ok(EraseResponse {
                        event: Some(erase_response::Event::Table(table.clone())),
                    })
                })
                .collect();
            messages.push(Ok(EraseResponse {
                event: Some(erase_response::Event::Receipt(receipt)),
            }));
            Ok(Box::pin(tokio_stream::iter(messages)) as Self::EraseStream)
        }
        .instrument(context.span.clone())
        .await;
        let code = result
            .as_ref()
            .err()
            .map(|s: &Status| s.code())
            .unwrap_or(tonic::Code::Ok);
        self.engine.metrics().record_request("Erase", &source, code);
        record_status(&context.span, code);
        if result.is_err() && !engine_answered {
            self.record_call(&context, "Erase", &source, "", code).await;
        }
        context.respond(result)
    }

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
            context.check_named_source(&request.source)?;
            let subject = request
                .subject
                .ok_or_else(|| invalid("subject: required"))?;
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
                links: Default::default(),
                more_identities: request
                    .more_identities
                    .into_iter()
                    .map(|i| crate::engine::MoreIdentity {
                        kind: i.kind,
                        value: SecretString::from(i.value),
                    })
                    .collect(),
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
                    Ok(ExtractFrame::Message(ExtractResponse {
                        event: Some(crate::pb::extract_response::Event::Manifest(_)),
                    })) => Some(tonic::Code::Ok),
                    Ok(_) => None,
                };
                if let Some(code) = code {
                    engine.metrics().record_request("Extract", &counted, code);
                    ending.record(code);
                }
                item
            });
            Ok::<_, Status>(Box::pin(stream) as Self::ExtractStream)
        }
        .instrument(context.span.clone())
        .await;
        if let Err(status) = &result {
            self.engine
                .metrics()
                .record_request("Extract", &source, status.code());
            record_status(&context.span, status.code());
            if !engine_answered {
                self.record_call(&context, "Extract", &source, "", status.code())
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
        // The call's one record names the subject of a dry run, as a keyed hash.
        let subject_id = request
            .subject
            .as_ref()
            .map(|s| self.engine.subject_id_of(&source, &s.kind, &s.value))
            .unwrap_or_default();
        let result = async {
            if !request.source.is_empty() {
                context.check_source(&request.source)?;
            }
            // A dry run for a subject tells whether that person is in the source and how many
            // rows each table holds: it needs the Extract scope, not only Validate.
            if request.subject.is_some() && !context.caller.may_call("Extract") {
                return Err(status::refusal(
                    tonic::Code::PermissionDenied,
                    "RPC_NOT_ALLOWED",
                    format!(
                        "caller '{}' may not run a dry run for a subject: that needs the \
                         Extract scope as well as Validate",
                        context.caller.name
                    ),
                ));
            }
            let messages = validate::run(
                &self.engine,
                request,
                &context.caller.name,
                &context.request_id,
                Some(context.deadline),
            )
            .await?;
            Ok(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok))) as Self::ValidateStream)
        }
        .instrument(context.span.clone())
        .await;
        self.finish_call(&context, "Validate", &source, &subject_id, result)
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
            context.check_named_source(&request.source)?;
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
        self.finish_call(&context, "Discover", &source, "", result)
            .await
    }
}

impl Service {
    /// Ends a call about durable requests: counts it, records its status on the span, and
    /// records a refused or failed one in the audit log (the requests record what they do).
    pub(super) async fn finish_unary<T>(
        &self,
        context: &CallContext,
        rpc: &str,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        self.finish(context, rpc, "", "", result, false).await
    }

    /// Ends a call answered in one piece (Validate, Discover): counts it, records its status
    /// on the span and in the audit log, and echoes the request id.
    async fn finish_call<T>(
        &self,
        context: &CallContext,
        rpc: &str,
        source: &str,
        subject_id: &str,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        self.finish(context, rpc, source, subject_id, result, true)
            .await
    }

    /// Counts a call, records its status on the span, and in the audit log when it failed
    /// or `record_ok`; echoes the request id.
    async fn finish<T>(
        &self,
        context: &CallContext,
        rpc: &str,
        source: &str,
        subject_id: &str,
        result: Result<T, Status>,
        record_ok: bool,
    ) -> Result<Response<T>, Status> {
        let code = result
            .as_ref()
            .err()
            .map(|s: &Status| s.code())
            .unwrap_or(tonic::Code::Ok);
        self.engine.metrics().record_request(rpc, source, code);
        record_status(&context.span, code);
        if record_ok || code != tonic::Code::Ok {
            self.record_call(context, rpc, source, subject_id, code)
                .await;
        }
        context.respond(result)
    }

    /// Appends a call-level audit record (a Validate call, or a call refused before the
    /// engine answered it), and waits until it is durable.
    async fn record_call(
        &self,
        context: &CallContext,
        rpc: &str,
        source: &str,
        subject_id: &str,
        code: tonic::Code,
    ) {
        let entry = crate::records::audit::Entry {
            rpc: rpc.to_owned(),
            caller: context.caller.name.clone(),
            source: if source.len() <= crate::engine::MAX_LABEL_BYTES {
                source.to_owned()
            } else {
                "[refused: too long]".to_owned()
            },
            call_id: context.request_id.clone(),
            subject_id: subject_id.to_owned(),
            dry_run: !subject_id.is_empty(),
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

/// A malformed request.
fn invalid(message: &str) -> Status {
    status::refusal(tonic::Code::InvalidArgument, "INVALID_ARGUMENT", message)
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
pub(super) struct CallContext {
    pub(super) span: tracing::Span,
    request_id: String,
    pub(super) deadline: Instant,
    caller: layers::Caller,
}

impl CallContext {
    pub(super) fn of<T>(request: &Request<T>) -> Result<CallContext, Status> {
        let missing = || {
            status::refusal(
                tonic::Code::Internal,
                "INTERNAL",
                "the call did not pass the interceptor stack",
            )
        };
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

    /// The caller, as durable requests see it.
    pub(super) fn asker(&self) -> &layers::Caller {
        &self.caller
    }

    /// A call that names one source (Extract, Erase, Discover): it must name one, and the
    /// caller must be allowed to read it.
    fn check_named_source(&self, source: &str) -> Result<(), Status> {
        if source.is_empty() {
            return Err(invalid("source: must not be empty"));
        }
        self.check_source(source)
    }

    fn check_source(&self, source: &str) -> Result<(), Status> {
        if self.caller.may_read(source) {
            Ok(())
        } else {
            Err(status::with_error_info(
                tonic::Code::PermissionDenied,
                format!(
                    "caller '{}' may not read source '{source}'",
                    self.caller.name
                ),
                "SOURCE_NOT_ALLOWED",
                [("source".to_owned(), source.to_owned())].into(),
            ))
        }
    }

    /// Echoes the request id in the response metadata, or in the error's.
    pub(super) fn respond<T>(&self, result: Result<T, Status>) -> Result<Response<T>, Status> {
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
