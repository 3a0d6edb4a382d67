//! How a request moves: its state, decided from its tasks' states. Pure, so that every rule
//! has a unit test; the worker applies the decision under the request's row lock.

use crate::pb::{RequestKind, RequestState};
use crate::store::postgres::requests::RequestRow;

/// A task's or a request's state as stored.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const AWAITING_APPROVAL: &str = "awaiting_approval";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";

/// A task's phase: an access request's extraction, an erasure request's preview, then (after
/// approval) its erasure.
pub const EXTRACT: &str = "extract";
pub const PREVIEW: &str = "preview";
pub const ERASE: &str = "erase";

/// The stored name of a request kind.
pub fn kind_name(kind: RequestKind) -> Option<&'static str> {
    match kind {
        RequestKind::Access => Some("access"),
        RequestKind::Erasure => Some("erasure"),
        RequestKind::Unspecified => None,
    }
}

pub fn kind_of(name: &str) -> RequestKind {
    match name {
        "access" => RequestKind::Access,
        "erasure" => RequestKind::Erasure,
        _ => RequestKind::Unspecified,
    }
}

pub fn state_of(name: &str) -> RequestState {
    match name {
        QUEUED => RequestState::Queued,
        RUNNING => RequestState::Running,
        AWAITING_APPROVAL => RequestState::AwaitingApproval,
        SUCCEEDED => RequestState::Succeeded,
        FAILED => RequestState::Failed,
        CANCELLED => RequestState::Cancelled,
        _ => RequestState::Unspecified,
    }
}

pub fn state_name(state: RequestState) -> Option<&'static str> {
    Some(match state {
        RequestState::Queued => QUEUED,
        RequestState::Running => RUNNING,
        RequestState::AwaitingApproval => AWAITING_APPROVAL,
        RequestState::Succeeded => SUCCEEDED,
        RequestState::Failed => FAILED,
        RequestState::Cancelled => CANCELLED,
        RequestState::Unspecified => return None,
    })
}

/// Where a request goes next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Stays open in this state.
    Open(&'static str),
    /// Every source finished: an access request's package is completed, then it succeeds.
    Succeed,
    /// A source failed for good: the request fails with its error, and the other sources
    /// stop.
    Fail { source: String },
    /// Unchanged: it has ended (a cancelled request ends when it is cancelled).
    Same,
}

/// Decides where `request` goes, from its tasks. A cancelled request has ended already:
/// cancelling ends it at once, and its running attempts stop at their next lease renewal.
pub fn next(request: &RequestRow) -> Next {
    if request.finished.is_some() {
        return Next::Same;
    }
    let tasks = &request.tasks;
    if let Some(failed) = tasks.iter().find(|t| t.state == FAILED) {
        return Next::Fail {
            source: failed.source.clone(),
        };
    }
    if !tasks.is_empty() && tasks.iter().all(|t| t.state == SUCCEEDED) {
        return Next::Succeed;
    }
    if tasks.iter().any(|t| t.state == AWAITING_APPROVAL)
        && tasks
            .iter()
            .all(|t| t.state == AWAITING_APPROVAL || t.state == SUCCEEDED)
    {
        return Next::Open(AWAITING_APPROVAL);
    }
    if tasks.iter().any(|t| t.attempts > 0 || t.state != QUEUED) {
        Next::Open(RUNNING)
    } else {
        Next::Open(QUEUED)
    }
}

/// The time to wait before attempt `attempts + 1`, after a passing failure: doubled per
/// attempt from `first` up to `max`, then a random share of it taken off (so that tasks that
/// failed together do not return together).
pub fn backoff(
    attempts: i32,
    first: std::time::Duration,
    max: std::time::Duration,
    jitter: f64,
) -> std::time::Duration {
    let doubled = first.saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1) as u32);
    let capped = doubled.min(max);
    capped.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::requests::TaskRow;
    use chrono::Utc;

    fn task(source: &str, state: &str, attempts: i32) -> TaskRow {
        TaskRow {
            source: source.into(),
            ordinal: 0,
            identity_kind: "email".into(),
            path: "submitted".into(),
            hops: 0,
            folder: source.into(),
            phase: EXTRACT.into(),
            state: state.into(),
            attempts,
            not_before: Utc::now(),
            retrying_since: None,
            rows: 0,
            tables: 0,
            last_reason: String::new(),
            preview: None,
            preview_digest: String::new(),
            result: None,
            part: String::new(),
        }
    }

    fn request(state: &str, tasks: Vec<TaskRow>) -> RequestRow {
        RequestRow {
            id: "r".into(),
            kind: "access".into(),
            submitter: "s".into(),
            state: state.into(),
            identity_kind: "email".into(),
            compliance_tag: String::new(),
            fingerprint: String::new(),
            due_time: Utc::now(),
            created: Utc::now(),
            updated: Utc::now(),
            finished: None,
            error: None,
            package_path: None,
            package_sha256: None,
            package_expires: None,
            tasks,
        }
    }

    #[test]
    fn a_request_moves_with_its_tasks() {
        let r = request(QUEUED, vec![task("a", QUEUED, 0), task("b", QUEUED, 0)]);
        assert_eq!(next(&r), Next::Open(QUEUED));
        let r = request(QUEUED, vec![task("a", RUNNING, 1), task("b", QUEUED, 0)]);
        assert_eq!(next(&r), Next::Open(RUNNING));
        let r = request(RUNNING, vec![task("a", SUCCEEDED, 1), task("b", QUEUED, 2)]);
        assert_eq!(next(&r), Next::Open(RUNNING));
        let r = request(
            RUNNING,
            vec![task("a", SUCCEEDED, 1), task("b", SUCCEEDED, 3)],
        );
        assert_eq!(next(&r), Next::Succeed);
        let r = request(RUNNING, vec![task("a", SUCCEEDED, 1), task("b", FAILED, 1)]);
        assert_eq!(next(&r), Next::Fail { source: "b".into() });
    }

    #[test]
    fn an_erasure_waits_for_approval_only_when_every_preview_is_ready() {
        let r = request(
            RUNNING,
            vec![task("a", AWAITING_APPROVAL, 1), task("b", RUNNING, 1)],
        );
        assert_eq!(next(&r), Next::Open(RUNNING));
        let r = request(
            RUNNING,
            vec![
                task("a", AWAITING_APPROVAL, 1),
                task("b", AWAITING_APPROVAL, 1),
            ],
        );
        assert_eq!(next(&r), Next::Open(AWAITING_APPROVAL));
        // One source's digest changed after approval: it waits again, the other is done.
        let r = request(
            RUNNING,
            vec![task("a", SUCCEEDED, 1), task("b", AWAITING_APPROVAL, 2)],
        );
        assert_eq!(next(&r), Next::Open(AWAITING_APPROVAL));
    }

    #[test]
    fn an_ended_request_stays_as_it_ended() {
        let mut ended = request(SUCCEEDED, vec![task("a", SUCCEEDED, 1)]);
        ended.finished = Some(Utc::now());
        assert_eq!(next(&ended), Next::Same);
    }

    #[test]
    fn retries_back_off_up_to_the_cap_with_jitter_below_it() {
        use std::time::Duration;
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(1, first, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(4, first, max, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(30, first, max, 0.0), max);
        assert_eq!(backoff(4, first, max, 1.0), Duration::from_secs(4));
    }
}
