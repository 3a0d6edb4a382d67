//! The interceptor stack every RPC passes through, built in one function: [`stack`].
//!
//! In order: the method path is noted (the gRPC layer below forgets the URI), then one policy
//! interceptor runs four steps:
//!
//! 1. **Request id:** `x-request-id` from the caller (at most 128 visible ASCII characters), or
//!    a new UUID. Handlers echo it in response metadata and logs carry it.
//! 2. **Deadline:** `grpc-timeout` parsed into a [`Deadline`]. A call without one gets
//!    `server.default_deadline` (5 minutes unless configured), or INVALID_ARGUMENT when
//!    `server.require_deadline` is set; a longer one is cut to `server.max_deadline` (1 hour).
//!    A malformed header is INVALID_ARGUMENT.
//! 3. **Auth:** `authorization: Bearer <token>`; the token's SHA-256 is compared in constant
//!    time with every configured digest. A missing or unknown token is UNAUTHENTICATED; a
//!    token without the RPC in its scope is PERMISSION_DENIED (the source scope is checked by
//!    the handler, which sees the request). Health and reflection pass unauthenticated when
//!    `server.open_health` is set. The [`Caller`] (a name, never the token) goes into the
//!    request's extensions.
//! 4. **Trace context:** a server span named after the RPC, the child of the caller's W3C
//!    `traceparent` (see [`crate::observability::telemetry`]); handlers and the engine run inside it.
//!
//! Calls are counted in the Prometheus metrics by the handlers, which know the final code.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tonic::service::InterceptorLayer;
use tonic::{Code, Request, Status};

use super::status::refusal;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::MapRequestLayer;

use crate::config::{AuthMode, Config};

/// The RPC path of the call, e.g. `/dsr.v1.DsrConnectorService/Extract`.
#[derive(Debug, Clone)]
pub struct MethodPath(pub String);

/// The request id of the call.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The call's server span: a child of the caller's `traceparent`, when there is one.
#[derive(Debug, Clone)]
pub struct ServerSpan(pub tracing::Span);

/// When the call must end.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl crate::requests::Asker for Caller {
    fn name(&self) -> &str {
        &self.name
    }

    fn may_read(&self, source: &str) -> bool {
        Caller::may_read(self, source)
    }

    fn may_call(&self, rpc: &str) -> bool {
        Caller::may_call(self, rpc)
    }
}

/// The RPCs that `*` does not grant: what they do cannot be undone.
const NAMED_ONLY: [&str; 2] = ["Erase", "ApproveRequest"];

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The configured caller name, or `anonymous` without authentication.
    pub name: String,
    sources: Vec<String>,
    rpcs: Vec<String>,
}

impl Caller {
    /// Whether this caller may read `source`.
    pub fn may_read(&self, source: &str) -> bool {
        self.sources.iter().any(|s| s == "*" || s == source)
    }

    /// Whether this caller may call `rpc` (`Extract`, `Validate`, ...). `*` grants every RPC
    /// but `Erase` and `ApproveRequest`, which a caller's scopes must name.
    pub fn may_call(&self, rpc: &str) -> bool {
        self.rpcs
            .iter()
            .any(|r| r == rpc || (r == "*" && !NAMED_ONLY.contains(&rpc)))
    }
}

/// The layers, outermost first.
pub type Layers =
    ServiceBuilder<Stack<InterceptorLayer<Policy>, Stack<MapRequestLayer<TagMethod>, Identity>>>;

type TagMethod = fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>;

/// Builds the interceptor stack for `config`.
pub fn stack(config: &Config, refusals: Arc<crate::records::refusals::Refusals>) -> Layers {
    ServiceBuilder::new()
        .map_request(tag_method as TagMethod)
        .layer(InterceptorLayer::new(Policy::new(config, refusals)))
}

fn tag_method(mut request: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    let path = MethodPath(request.uri().path().to_owned());
    request.extensions_mut().insert(path);
    request
}

/// One configured token: its digest and its caller.
#[derive(Debug, Clone)]
struct Token {
    sha256: [u8; 32],
    caller: Caller,
}

/// The policy interceptor: request id, deadline, authentication.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: AuthMode,
    tokens: Arc<Vec<Token>>,
    /// (common name, caller) of client certificates.
    clients: Arc<Vec<(String, Caller)>>,
    open_health: bool,
    anonymous_erase: bool,
    default_deadline: Duration,
    max_deadline: Duration,
    require_deadline: bool,
    /// Refused calls are counted here, and recorded per caller and interval.
    refusals: Arc<crate::records::refusals::Refusals>,
}

impl Policy {
    fn new(config: &Config, refusals: Arc<crate::records::refusals::Refusals>) -> Policy {
        let server = &config.server;
        Policy {
            mode: config.auth_mode(),
            tokens: Arc::new(
                server
                    .tokens
                    .iter()
                    .filter_map(|t| {
                        Some(Token {
                            sha256: t.sha256?,
                            caller: Caller {
                                name: t.name.clone(),
                                sources: t.sources.clone(),
                                rpcs: t.rpcs.clone(),
                            },
                        })
                    })
                    .collect(),
            ),
            clients: Arc::new(
                server
                    .clients
                    .iter()
                    .map(|c| {
                        (
                            c.common_name.clone(),
                            Caller {
                                name: c.name.clone(),
                                sources: c.sources.clone(),
                                rpcs: c.rpcs.clone(),
                            },
                        )
                    })
                    .collect(),
            ),
            open_health: server.open_health,
            anonymous_erase: server.anonymous_erase,
            default_deadline: server.default_deadline,
            max_deadline: server.max_deadline,
            require_deadline: server.require_deadline,
            refusals,
        }
    }

    fn deadline(&self, request: &Request<()>) -> Result<Deadline, Status> {
        let now = Instant::now();
        match super::grpc_timeout(request.metadata())? {
            Some(timeout) => Ok(Deadline(now + timeout.min(self.max_deadline))),
            None if self.require_deadline => Err(refusal(
                Code::InvalidArgument,
                "DEADLINE_REQUIRED",
                "this server requires a deadline (grpc-timeout); set one on the call",
            )),
            None => Ok(Deadline(now + self.default_deadline)),
        }
    }

    fn authenticate(&self, request: &Request<()>, path: &str) -> Result<Caller, Status> {
        let service_open =
            path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.");
        if self.mode == AuthMode::None || (service_open && self.open_health) {
            // A server without authentication lets anyone read; erasure, which cannot be
            // undone, only where `anonymous_erase` says so (a loopback listener).
            let mut rpcs = vec!["*".to_owned()];
            if self.anonymous_erase && self.mode == AuthMode::None {
                rpcs.extend(NAMED_ONLY.iter().map(|rpc| (*rpc).to_owned()));
            }
            return Ok(Caller {
                name: "anonymous".into(),
                sources: vec!["*".into()],
                rpcs,
            });
        }
        let caller = match client_common_name(request) {
            // A verified client certificate (mutual TLS) identifies the caller.
            Some(cn) => self
                .clients
                .iter()
                .find(|(name, _)| *name == cn)
                .map(|(_, caller)| caller.clone())
                .ok_or_else(|| {
                    refusal(
                        Code::Unauthenticated,
                        "UNKNOWN_CLIENT_CERTIFICATE",
                        "the client certificate is not a configured caller",
                    )
                })?,
            None => self.token_caller(request)?,
        };
        Ok(caller)
    }

    /// Whether an authenticated caller may call the method at `path`.
    fn authorize(caller: &Caller, path: &str) -> Result<(), Status> {
        let service_open =
            path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.");
        let rpc = path.rsplit('/').next().unwrap_or_default();
        // Operations are read, cancelled and deleted by callers who may submit requests of
        // some kind; each operation is then shown only to callers with its kind's scopes.
        let operations = path.starts_with("/google.longrunning.Operations/")
            && ["SubmitRequest", "Erase", "ApproveRequest"]
                .iter()
                .any(|rpc| caller.may_call(rpc));
        if service_open || operations || caller.may_call(rpc) {
            Ok(())
        } else {
            Err(refusal(
                Code::PermissionDenied,
                "RPC_NOT_ALLOWED",
                format!("caller '{}' may not call {rpc}", caller.name),
            ))
        }
    }

    fn token_caller(&self, request: &Request<()>) -> Result<Caller, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            refusal(
                Code::Unauthenticated,
                "MISSING_TOKEN",
                "missing authorization: Bearer <token>",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refusal(
                    Code::Unauthenticated,
                    "MALFORMED_AUTHORIZATION",
                    "authorization must be \"Bearer <token>\"",
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every digest, so that timing says nothing about which one matched.
        let mut found = None;
        for candidate in self.tokens.iter() {
            if bool::from(candidate.sha256.ct_eq(&digest)) {
                found = Some(candidate.caller.clone());
            }
        }
        found.ok_or_else(|| refusal(Code::Unauthenticated, "UNKNOWN_TOKEN", "unknown token"))
    }
}

/// The common name of the client certificate the TLS handshake verified, if any.
fn client_common_name(request: &Request<()>) -> Option<String> {
    use x509_cert::der::Decode;
    let certs = request.peer_certs()?;
    let cert = x509_cert::Certificate::from_der(certs.first()?.as_ref()).ok()?;
    cert.tbs_certificate.subject.0.iter().find_map(|rdn| {
        rdn.0.iter().find_map(|attr| {
            (attr.oid == x509_cert::der::oid::db::rfc4519::CN)
                .then(|| {
                    x509_cert::der::asn1::Utf8StringRef::try_from(&attr.value)
                        .map(|s| s.as_str().to_owned())
                        .or_else(|_| {
                            x509_cert::der::asn1::PrintableStringRef::try_from(&attr.value)
                                .map(|s| s.as_str().to_owned())
                        })
                        .ok()
                })
                .flatten()
        })
    })
}

impl tonic::service::Interceptor for Policy {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let with_id = |mut status: Status| {
            if let Ok(value) = request_id.parse() {
                status.metadata_mut().insert("x-request-id", value);
            }
            status
        };
        let path = request
            .extensions()
            .get::<MethodPath>()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        let refused = |status: Status, caller: &str| {
            self.refusals.count(
                path.rsplit('/').next().unwrap_or_default(),
                caller,
                crate::observability::metrics::code_name(status.code()),
            );
            with_id(status)
        };
        let deadline = self
            .deadline(&request)
            .map_err(|status| refused(status, ""))?;
        let caller = self
            .authenticate(&request, &path)
            .map_err(|status| refused(status, ""))?;
        // A caller refused for its scopes is known: its record names it.
        Self::authorize(&caller, &path).map_err(|status| refused(status, &caller.name))?;
        let span = if path.starts_with("/grpc.") {
            tracing::Span::none()
        } else {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let method = path.trim_start_matches('/');
            let span = tracing::info_span!(
                "rpc",
                otel.name = %method,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = %method,
                request_id = %request_id,
                caller = %caller.name,
                trace_id = tracing::field::Empty,
                dsr.subject_id = tracing::field::Empty,
                rpc.grpc.status_code = tracing::field::Empty,
            );
            let _ = span.set_parent(crate::observability::telemetry::parent_context(
                request.metadata(),
            ));
            // Log lines inside the call carry the trace id (when tracing is on).
            {
                use opentelemetry::trace::TraceContextExt;
                let context = span.context();
                let trace_id = context.span().span_context().trace_id();
                if trace_id != opentelemetry::trace::TraceId::INVALID {
                    span.record("trace_id", trace_id.to_string());
                }
            }
            tracing::debug!(parent: &span, %request_id, caller = %caller.name, method = %path, "call accepted");
            span
        };
        request.extensions_mut().insert(ServerSpan(span));
        request.extensions_mut().insert(RequestId(request_id));
        request.extensions_mut().insert(deadline);
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}
