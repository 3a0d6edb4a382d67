//! Following `[[links]]`: when a source's task succeeds, the values its links read (on the
//! rows the task's identity matched directly) become identities of the links' kinds, and each
//! is asked of every other source that declares the kind, as a task of the same request: to
//! a fixed point, at most `max_link_hops` links from a submitted identity, and at most
//! `max_linked_identities` identities found per request. A request whose links find more
//! fails, naming the link: a value shared by many people is not one person's.

use prost::Message as _;

use super::Requests;
use crate::pb::google::rpc;
use crate::store::postgres::control::{ControlClient, ControlError};
use crate::store::postgres::requests::{Claimed, LinkedTask};

/// Inside the request's lock: adds a task for every identity `task`'s links found that the
/// request has not asked yet. `Some(status)` when the links found too many: the request
/// fails with it.
pub(super) async fn follow(
    requests: &Requests,
    c: &ControlClient,
    id: &str,
    task: &Claimed,
    linked: &[Vec<String>],
) -> Result<Option<rpc::Status>, ControlError> {
    let cfg = requests.cfg();
    let max = cfg.max_linked_identities;
    let known = c.task_identities(id).await?;
    let mut found: Vec<LinkedTask> = Vec::new();
    for (link, values) in requests.links_from(&task.source).zip(linked) {
        let path = if task.hops == 0 {
            // The values were read from the rows any of the task's identities matched.
            let asked: Vec<&str> = std::iter::once(task.identity_kind.as_str())
                .chain(task.more_identities.iter().map(|(kind, _)| kind.as_str()))
                .collect();
            format!("{} -> {} as {}", asked.join("+"), link.origin(), link.kind)
        } else {
            format!("{} -> {} as {}", task.path, link.origin(), link.kind)
        };
        if values.len() > max {
            return Ok(Some(too_many(&path, max)));
        }
        if task.hops as u32 >= cfg.max_link_hops {
            tracing::info!(request_id = %id, path = %path,
                "a link was not followed: max_link_hops reached");
            continue;
        }
        let targets = requests
            .engine
            .config()
            .sources
            .iter()
            .filter(|s| s.name != task.source && s.identity_kinds.contains(&link.kind));
        for target in targets {
            for value in values {
                let asked = known
                    .iter()
                    .any(|(s, k, v, _)| *s == target.name && *k == link.kind && v == value)
                    || found.iter().any(|t| {
                        t.source == target.name && t.kind == link.kind && t.value == *value
                    });
                if !asked {
                    found.push(LinkedTask {
                        source: target.name.clone(),
                        // A found identity begins where its finder did: an extraction, or an
                        // erasure's preview.
                        phase: if task.phase == super::state::EXTRACT {
                            super::state::EXTRACT.into()
                        } else {
                            super::state::PREVIEW.into()
                        },
                        kind: link.kind.clone(),
                        value: value.clone(),
                        path: path.clone(),
                        hops: task.hops + 1,
                    });
                }
            }
        }
    }
    // The identities links have found in the request, before and now: (kind, value) pairs.
    let mut identities: Vec<(&str, &str)> = known
        .iter()
        .filter(|(_, _, _, hops)| *hops > 0)
        .map(|(_, k, v, _)| (k.as_str(), v.as_str()))
        .chain(found.iter().map(|t| (t.kind.as_str(), t.value.as_str())))
        .collect();
    identities.sort_unstable();
    identities.dedup();
    if identities.len() > max {
        let path = found.last().map(|t| t.path.clone()).unwrap_or_default();
        return Ok(Some(too_many(&path, max)));
    }
    c.insert_linked_tasks(id, &found).await?;
    Ok(None)
}

/// The status of a request whose links found more identities than one person has.
fn too_many(path: &str, max: usize) -> rpc::Status {
    let status = <tonic::Status as tonic_types::StatusExt>::with_error_details(
        tonic::Code::FailedPrecondition,
        format!(
            "the link {path} finds more than {max} identities (max_linked_identities) for this \
             request: a value shared by many people is not one person's; nothing more is read"
        ),
        tonic_types::ErrorDetails::with_error_info(
            "TOO_MANY_LINKED_IDENTITIES",
            super::ERROR_DOMAIN,
            std::collections::HashMap::from([("path".to_owned(), path.to_owned())]),
        ),
    );
    rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: rpc::Status::decode(status.details())
            .map(|s| s.details)
            .unwrap_or_default(),
    }
}
