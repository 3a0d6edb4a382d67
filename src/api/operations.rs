//! Durable requests: `dsr.v1.DsrRequestService` (submit, approve) and
//! `google.longrunning.Operations` for the operations they are (`requests/{id}`). The adapter
//! only translates; `crate::requests` keeps them.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::service::{CallContext, Service};
use super::status;
use crate::pb::dsr_request_service_server::DsrRequestService;
use crate::pb::google::longrunning::operations_server::Operations;
use crate::pb::google::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest,
    ListOperationsResponse, Operation, WaitOperationRequest,
};
use crate::pb::{ApproveRequestRequest, SubmitRequestRequest};
use crate::requests::Requests;

/// Both services of durable requests, on the connector's adapter (its records and metrics).
pub struct RequestsApi(pub(super) Arc<Service>);

/// The request store, or the refusal of a server without a control database.
fn available(requests: &Option<Arc<Requests>>) -> Result<&Arc<Requests>, Status> {
    requests.as_ref().ok_or_else(|| {
        status::refusal(
            tonic::Code::FailedPrecondition,
            "NO_CONTROL_DATABASE",
            "durable requests need a control database: configure [server.control] (the demo \
             starts one)",
        )
    })
}

macro_rules! answer {
    ($self:ident, $request:ident, $rpc:literal, |$requests:ident, $context:ident, $body:ident| $work:expr) => {{
        let $context = CallContext::of(&$request)?;
        let $body = $request.into_inner();
        let result = async {
            let $requests = available(&$self.0.requests)?;
            $work.await.map_err(|e| status::request_status(&e))
        }
        .instrument($context.span.clone())
        .await;
        $self.0.finish_unary(&$context, $rpc, result).await
    }};
}

#[tonic::async_trait]
impl DsrRequestService for RequestsApi {
    async fn submit_request(
        &self,
        request: Request<SubmitRequestRequest>,
    ) -> Result<Response<Operation>, Status> {
        answer!(self, request, "SubmitRequest", |requests, context, body| {
            requests.submit(context.asker(), body)
        })
    }

    async fn approve_request(
        &self,
        request: Request<ApproveRequestRequest>,
    ) -> Result<Response<Operation>, Status> {
        answer!(
            self,
            request,
            "ApproveRequest",
            |requests, context, body| requests.approve(context.asker(), body)
        )
    }
}

#[tonic::async_trait]
impl Operations for RequestsApi {
    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        answer!(
            self,
            request,
            "ListOperations",
            |requests, context, body| async {
                if !body.name.is_empty() && body.name != crate::requests::COLLECTION {
                    return Err(crate::requests::RequestError::InvalidArgument(format!(
                        "name: the collection is '{}'",
                        crate::requests::COLLECTION
                    )));
                }
                let (operations, next_page_token) = requests
                    .list(
                        context.asker(),
                        &body.filter,
                        body.page_size,
                        &body.page_token,
                    )
                    .await?;
                Ok(ListOperationsResponse {
                    operations,
                    next_page_token,
                })
            }
        )
    }

    async fn get_operation(
        &self,
        request: Request<GetOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        answer!(self, request, "GetOperation", |requests, context, body| {
            requests.get(context.asker(), &body.name)
        })
    }

    async fn delete_operation(
        &self,
        request: Request<DeleteOperationRequest>,
    ) -> Result<Response<()>, Status> {
        answer!(
            self,
            request,
            "DeleteOperation",
            |requests, context, body| requests.delete(context.asker(), &body.name)
        )
    }

    async fn cancel_operation(
        &self,
        request: Request<CancelOperationRequest>,
    ) -> Result<Response<()>, Status> {
        answer!(
            self,
            request,
            "CancelOperation",
            |requests, context, body| requests.cancel(context.asker(), &body.name)
        )
    }

    async fn wait_operation(
        &self,
        request: Request<WaitOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        answer!(self, request, "WaitOperation", |requests, context, body| {
            let timeout = body.timeout.and_then(|t| {
                (t.seconds >= 0 && t.nanos >= 0)
                    .then(|| Duration::new(t.seconds as u64, t.nanos as u32))
            });
            requests.wait(context.asker(), &body.name, timeout, context.deadline)
        })
    }
}
