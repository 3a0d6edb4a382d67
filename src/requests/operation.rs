//! A stored request as a `google.longrunning.Operation`: its progress as metadata, and when
//! it has ended, its result or its error.

use prost::Message as _;

use super::RequestError;
use super::state;
use crate::pb::google::longrunning::{Operation, operation};
use crate::pb::google::rpc;
use crate::pb::{self, RequestKind, RequestProgress, RequestResult, SourceProgress, SourceResult};
use crate::store::postgres::requests::RequestRow;

/// The collection operations are named in: `requests/{id}`.
pub const COLLECTION: &str = "requests";

const TYPE_PREFIX: &str = "type.googleapis.com/";

/// The request id of an operation name.
pub fn request_id_of(name: &str) -> Result<&str, RequestError> {
    name.strip_prefix(COLLECTION)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| {
            RequestError::InvalidArgument(format!(
                "name: an operation is named '{COLLECTION}/{{request_id}}'"
            ))
        })
}

fn any(message: &impl prost::Message, full_name: &str) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("{TYPE_PREFIX}{full_name}"),
        value: message.encode_to_vec(),
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The operation of `row`.
pub fn operation(row: &RequestRow) -> Operation {
    let kind = state::kind_of(&row.kind);
    // A request is shown running as soon as one of its sources is.
    let mut shown = state::state_of(&row.state);
    if shown == pb::RequestState::Queued && row.tasks.iter().any(|t| t.attempts > 0) {
        shown = pb::RequestState::Running;
    }
    let sources = row
        .tasks
        .iter()
        .map(|t| SourceProgress {
            source: t.source.clone(),
            state: state::state_of(&t.state) as i32,
            attempts: t.attempts.max(0) as u32,
            rows: t.rows.max(0) as u64,
            tables: t.tables.max(0) as u32,
            last_reason: t.last_reason.clone(),
            preview: t
                .preview
                .as_deref()
                .and_then(|b| pb::ErasureReceipt::decode(b).ok()),
            preview_digest: t.preview_digest.clone(),
            next_attempt_time: (t.state == state::QUEUED && t.attempts > 0)
                .then(|| timestamp(t.not_before)),
            identity_kind: t.identity_kind.clone(),
            identity_path: t.path.clone(),
            folder: t.folder.clone(),
        })
        .collect();
    let progress = RequestProgress {
        request_id: row.id.clone(),
        kind: kind as i32,
        state: shown as i32,
        sources,
        due_time: Some(timestamp(row.due_time)),
        create_time: Some(timestamp(row.created)),
        update_time: Some(timestamp(row.updated)),
        compliance_tag: row.compliance_tag.clone(),
        submitter: row.submitter.clone(),
    };
    let result = if row.finished.is_none() {
        None
    } else if row.state == state::SUCCEEDED {
        Some(operation::Result::Response(any(
            &result(row, kind),
            "dsr.v1.RequestResult",
        )))
    } else {
        Some(operation::Result::Error(
            row.error
                .as_deref()
                .and_then(|b| rpc::Status::decode(b).ok())
                .unwrap_or(rpc::Status {
                    code: tonic::Code::Unknown as i32,
                    message: format!("the request ended {}", row.state),
                    details: Vec::new(),
                }),
        ))
    };
    Operation {
        name: format!("{COLLECTION}/{}", row.id),
        metadata: Some(any(&progress, "dsr.v1.RequestProgress")),
        done: row.finished.is_some(),
        result,
    }
}

fn result(row: &RequestRow, kind: RequestKind) -> RequestResult {
    let sources = row
        .tasks
        .iter()
        .map(|t| SourceResult {
            source: t.source.clone(),
            identity_kind: t.identity_kind.clone(),
            identity_path: t.path.clone(),
            folder: t.folder.clone(),
            result: t.result.as_deref().and_then(|bytes| match kind {
                RequestKind::Erasure => pb::ErasureReceipt::decode(bytes)
                    .ok()
                    .map(pb::source_result::Result::Receipt),
                _ => pb::Manifest::decode(bytes)
                    .ok()
                    .map(pb::source_result::Result::Manifest),
            }),
        })
        .collect();
    RequestResult {
        sources,
        package_path: row.package_path.clone().unwrap_or_default(),
        package_sha256: row.package_sha256.clone().unwrap_or_default(),
        package_expire_time: row.package_expires.map(timestamp),
    }
}

/// A status as `google.rpc.Status`, with its details (the ErrorInfo) kept.
pub(super) fn rpc_status(status: &tonic::Status) -> rpc::Status {
    let details = rpc::Status::decode(status.details())
        .map(|s| s.details)
        .unwrap_or_default();
    rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details,
    }
}

/// The ErrorInfo reason of a status, or its code's name.
pub(super) fn reason_of(status: &rpc::Status) -> String {
    status
        .details
        .iter()
        .filter(|d| d.type_url.ends_with("google.rpc.ErrorInfo"))
        .find_map(|d| tonic_types::pb::ErrorInfo::decode(d.value.as_slice()).ok())
        .map(|info| info.reason)
        .unwrap_or_else(|| format!("{:?}", tonic::Code::from_i32(status.code)).to_uppercase())
}
