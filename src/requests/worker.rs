//! The workers: each claims a due task, runs one attempt under a lease it renews, and settles
//! the attempt in the transaction that moves the request. Between tasks, a worker moves
//! requests whose tasks have all ended (a replica that died after settling its task but
//! before moving the request leaves one behind).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use chrono::Utc;
use prost::Message as _;
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::operation::{reason_of, rpc_status};
use super::state::{self, Next};
use super::{Requests, package};
use crate::cli::extract::package::Package;
use crate::engine::ExtractParams;
use crate::engine::erase::EraseParams;
use crate::pb::google::rpc;
use crate::pb::{self, ExtractFrame, ExtractResponse, extract_response::Event};
use crate::store::postgres::control::{ControlClient, ControlError};
use crate::store::postgres::requests::{Claimed, Renewal, RequestUpdate, Settlement};

/// One worker: claims and runs tasks until `stop`; an attempt it runs stops with `stop_work`.
pub(super) async fn run(
    requests: Arc<Requests>,
    n: usize,
    stop: CancellationToken,
    stop_work: CancellationToken,
) {
    let poll = requests.cfg().poll;
    let mut client: Option<ControlClient> = None;
    while !stop.is_cancelled() {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match requests.control.connect_only().await {
                Ok(c) => client = Some(c),
                Err(error) => {
                    tracing::warn!(worker = n, %error, "request worker: no control database");
                    pause(&stop, poll * 4).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        match step(&requests, c, &stop_work).await {
            Ok(true) => {}
            Ok(false) => pause(&stop, poll).await,
            Err(error) => {
                tracing::warn!(worker = n, %error, "request worker: control database");
                // The connection may be inside a failed transaction: start afresh.
                client = None;
                pause(&stop, poll).await;
            }
        }
    }
}

pub(super) async fn pause(stop: &CancellationToken, time: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(time) => {}
        _ = stop.cancelled() => {}
    }
}

/// Claims and runs one task, or else moves requests that wait to be moved. Whether it did
/// anything.
async fn step(
    requests: &Arc<Requests>,
    c: &mut ControlClient,
    stop: &CancellationToken,
) -> Result<bool, ControlError> {
    if let Some(task) = c.claim_task(&requests.owner, requests.cfg().lease).await? {
        let span = tracing::info_span!(
            "dsr.request.attempt",
            dsr.request_id = %task.request_id,
            dsr.source = %task.source,
            dsr.phase = %task.phase,
            dsr.attempt = task.attempts,
        );
        span.in_scope(|| tracing::info!("request task claimed"));
        let settlement = attempt(requests, &task, stop, span.clone()).await;
        if let Some(settlement) = settlement {
            let moved =
                move_request(requests, c, &task.request_id, Some((&task, &settlement))).await?;
            // The request ended (or another replica took the task) while this attempt wrote
            // its part: the part is no one's to move, and is removed.
            if moved == RequestMove::NotSettled
                && let Some(root) = &requests.cfg().package_dir
            {
                package::discard_part(&package::part(
                    root,
                    &task.request_id,
                    &task.folder,
                    task.attempts,
                ));
            }
        }
        return Ok(true);
    }
    let mut moved = false;
    for id in c.requests_to_move(4).await? {
        moved |= move_request(requests, c, &id, None).await? == RequestMove::Moved;
    }
    Ok(moved)
}

/// What one attempt did.
enum Done {
    Manifest {
        manifest: pb::Manifest,
        part: String,
        /// The values each of the source's links yielded, in `Requests::links_from` order.
        linked: Vec<Vec<String>>,
    },
    /// A preview, and what the source's links yielded.
    Preview(pb::ErasureReceipt, Vec<Vec<String>>),
    Erased(pb::ErasureReceipt),
}

/// Why an attempt did not finish.
enum Failure {
    /// The engine's answer.
    Status(tonic::Status),
    /// The package store could not be written.
    Store(anyhow::Error),
    /// The attempt was stopped (lease lost, request cancelled, or this replica stopping).
    Stopped,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Store(error)
    }
}

/// What the lease keeper found.
const HELD: u8 = 0;
const LOST: u8 = 1;

/// Runs one attempt under a renewed lease. `None` when the task is no longer this worker's
/// to settle (another replica holds it, or the request ended).
async fn attempt(
    requests: &Arc<Requests>,
    task: &Claimed,
    stop: &CancellationToken,
    span: tracing::Span,
) -> Option<Settlement> {
    let rows = Arc::new(AtomicI64::new(0));
    let tables = Arc::new(AtomicI64::new(0));
    let attempt_stop = stop.child_token();
    let verdict = Arc::new(AtomicU8::new(HELD));
    let keeper = tokio::spawn(keep_lease(
        requests.clone(),
        (task.request_id.clone(), task.source.clone(), task.ordinal),
        (rows.clone(), tables.clone()),
        attempt_stop.clone(),
        verdict.clone(),
    ));
    let part = requests
        .cfg()
        .package_dir
        .as_ref()
        .map(|root| package::part(root, &task.request_id, &task.folder, task.attempts));
    let progress = Progress {
        rows: rows.clone(),
        tables: tables.clone(),
    };
    let outcome = match (state::kind_of(&task.kind), task.phase.as_str()) {
        (pb::RequestKind::Access, _) => match &part {
            Some(part) => {
                extract_part(requests, task, Some(part), &progress, &attempt_stop, span).await
            }
            None => Err(Failure::Store(anyhow::anyhow!(
                "no [server.requests] package_dir"
            ))),
        },
        (pb::RequestKind::Erasure, state::PREVIEW) => {
            preview(requests, task, &progress, &attempt_stop, span).await
        }
        (pb::RequestKind::Erasure, _) => erase_approved(requests, task, &attempt_stop, span).await,
        _ => Err(Failure::Status(tonic::Status::internal(format!(
            "a task of unknown kind '{}'",
            task.kind
        )))),
    };
    let stopped = attempt_stop.is_cancelled();
    attempt_stop.cancel();
    let _ = keeper.await;
    if verdict.load(Ordering::SeqCst) != HELD {
        // Not ours any more: what this attempt wrote is removed, the rest is another's.
        if let Some(part) = &part {
            package::discard_part(part);
        }
        return None;
    }
    let mut settlement = Settlement {
        phase: task.phase.clone(),
        rows: rows.load(Ordering::Relaxed),
        tables: tables.load(Ordering::Relaxed) as i32,
        ..Default::default()
    };
    match outcome {
        Ok(Done::Manifest {
            manifest,
            part,
            linked,
        }) => {
            settlement.linked = linked;
            settlement.state = state::SUCCEEDED.into();
            settlement.rows = manifest.row_count as i64;
            settlement.tables = manifest.tables.len() as i32;
            settlement.result = Some(manifest.encode_to_vec());
            settlement.part = part;
        }
        Ok(Done::Preview(receipt, linked)) => {
            settlement.linked = linked;
            settlement.phase = state::PREVIEW.into();
            settlement.state = state::AWAITING_APPROVAL.into();
            settlement.rows = (receipt.rows_deleted + receipt.rows_masked) as i64;
            settlement.tables = receipt.tables.len() as i32;
            settlement.preview_digest = Some(receipt.preview_digest.clone());
            settlement.preview = Some(receipt.encode_to_vec());
        }
        Ok(Done::Erased(receipt)) => {
            settlement.state = state::SUCCEEDED.into();
            settlement.rows = (receipt.rows_deleted + receipt.rows_masked) as i64;
            settlement.tables = receipt.tables.len() as i32;
            settlement.result = Some(receipt.encode_to_vec());
        }
        Err(Failure::Stopped) if stopped => {
            // This replica is stopping: the task goes back to the queue for any replica.
            settlement.state = state::QUEUED.into();
            settlement.last_reason = "SHUTTING_DOWN".into();
        }
        Err(failure) => {
            let status = match failure {
                Failure::Status(status) => status,
                Failure::Store(error) => {
                    <tonic::Status as tonic_types::StatusExt>::with_error_details(
                        tonic::Code::Unavailable,
                        format!("the package store could not be written: {error:#}"),
                        tonic_types::ErrorDetails::with_error_info(
                            "PACKAGE_STORE_UNAVAILABLE",
                            super::ERROR_DOMAIN,
                            std::collections::HashMap::new(),
                        ),
                    )
                }
                Failure::Stopped => tonic::Status::cancelled("the attempt was stopped"),
            };
            settle_failure(requests, task, status, &mut settlement);
        }
    }
    if settlement.state != state::SUCCEEDED
        && let Some(part) = &part
    {
        package::discard_part(part);
    }
    Some(settlement)
}

/// A failed attempt: retried later when the failure passes (and the request is not near its
/// due time), the task failed otherwise.
fn settle_failure(
    requests: &Requests,
    task: &Claimed,
    status: tonic::Status,
    settlement: &mut Settlement,
) {
    let rpc_status = rpc_status(&status);
    settlement.last_reason = reason_of(&rpc_status);
    let passing = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    );
    let cfg = requests.cfg();
    let give_up_at = task.due_time
        - chrono::Duration::from_std(cfg.give_up_before_due).unwrap_or(chrono::Duration::zero());
    if passing && Utc::now() < give_up_at {
        let wait = state::backoff(task.attempts, cfg.retry_first, cfg.retry_max, rand_unit());
        settlement.state = state::QUEUED.into();
        settlement.retrying = true;
        settlement.not_before =
            Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default());
        tracing::warn!(code = ?status.code(), reason = %settlement.last_reason,
            wait_ms = wait.as_millis() as u64, "request task failed; it will be tried again");
    } else {
        settlement.state = state::FAILED.into();
        settlement.result = Some(rpc_status.encode_to_vec());
        tracing::warn!(code = ?status.code(), reason = %settlement.last_reason,
            "request task failed");
    }
}

/// A number in [0, 1) for the retry's jitter.
fn rand_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

/// Renews the attempt's lease until `attempt_stop`; stops the attempt when the lease is lost
/// or the request ended.
async fn keep_lease(
    requests: Arc<Requests>,
    (request_id, source, ordinal): (String, String, i32),
    (rows, tables): (Arc<AtomicI64>, Arc<AtomicI64>),
    attempt_stop: CancellationToken,
    verdict: Arc<AtomicU8>,
) {
    let lease = requests.cfg().lease;
    let every = lease / 5;
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = attempt_stop.cancelled() => return,
        }
        let renewal = async {
            let client = requests.client().await?;
            Ok::<_, super::RequestError>(
                client
                    .renew_lease(
                        (&request_id, &source, ordinal),
                        &requests.owner,
                        lease,
                        rows.load(Ordering::Relaxed),
                        tables.load(Ordering::Relaxed) as i32,
                    )
                    .await?,
            )
        }
        .await;
        match renewal {
            Ok(Renewal::Held) => last_renewed = Instant::now(),
            Ok(found) => {
                tracing::info!(
                    request_id,
                    source,
                    ?found,
                    "request task stopped: {}",
                    if found == Renewal::Cancelled {
                        "the request was cancelled"
                    } else {
                        "its lease is another's now, or the request ended"
                    }
                );
                verdict.store(LOST, Ordering::SeqCst);
                attempt_stop.cancel();
                return;
            }
            Err(error) => {
                tracing::warn!(request_id, source, %error, "a request task's lease could not be renewed");
                if last_renewed.elapsed() >= lease {
                    // Another replica may hold it now.
                    verdict.store(LOST, Ordering::SeqCst);
                    attempt_stop.cancel();
                    return;
                }
            }
        }
    }
}

/// Counts what an attempt has done, for the operation's progress.
struct Progress {
    rows: Arc<AtomicI64>,
    tables: Arc<AtomicI64>,
}

/// An access task: the source's extraction, streamed into the attempt's package part.
/// Without a part, the rows are read and dropped (an erasure's preview reads its links so).
async fn extract_part(
    requests: &Requests,
    task: &Claimed,
    part: Option<&Path>,
    progress: &Progress,
    attempt_stop: &CancellationToken,
    span: tracing::Span,
) -> Result<Done, Failure> {
    if let Some(part) = part {
        package::prepare_part(part)?;
    }
    let params = ExtractParams {
        source: task.source.clone(),
        kind: task.identity_kind.clone(),
        value: task.identity_value.clone(),
        batch_size: 0,
        request_id: task.request_id.clone(),
        compliance_tag: task.compliance_tag.clone(),
        tables: Vec::new(),
        deadline: Some(Instant::now() + requests.cfg().attempt_timeout),
        dry_run: false,
        caller: task.submitter.clone(),
        call_id: format!("{}/{}/{}", task.request_id, task.source, task.attempts),
        span,
        more_identities: task
            .more_identities
            .iter()
            .map(|(kind, value)| crate::engine::MoreIdentity {
                kind: kind.clone(),
                value: value.clone(),
            })
            .collect(),
        links: crate::engine::LinkReads {
            columns: requests
                .links_from(&task.source)
                .map(|link| (link.from.table.clone(), link.from.column.clone()))
                .collect(),
            // One more than a request may take: more than that is refused, not cut.
            limit: requests.cfg().max_linked_identities + 1,
            found: Default::default(),
        },
    };
    let found = params.links.found.clone();
    let to_status = requests.to_status;
    let mut stream = tokio::select! {
        stream = requests.engine.extract(params) => stream.map_err(|e| Failure::Status(to_status(&e)))?,
        _ = attempt_stop.cancelled() => return Err(Failure::Stopped),
    };
    let mut package = part
        .map(|part| Package::create_sealed(part, requests.sealing.clone()))
        .transpose()?;
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = attempt_stop.cancelled() => return Err(Failure::Stopped),
        };
        let message = match frame {
            None => {
                return Err(Failure::Status(tonic::Status::internal(
                    "the extraction ended without a manifest",
                )));
            }
            Some(Err(e)) => return Err(Failure::Status(to_status(&e))),
            Some(Ok(ExtractFrame::Message(message))) => message,
            Some(Ok(ExtractFrame::Batch(batch))) => {
                ExtractResponse::decode(batch.to_vec().as_slice())
                    .map_err(|e| anyhow::anyhow!("a batch could not be read back: {e}"))?
            }
        };
        match message.event {
            Some(Event::Started(started)) => {
                if let Some(package) = &mut package {
                    package.start(&started)?;
                }
            }
            Some(Event::TableStarted(table)) => {
                if let Some(package) = &mut package {
                    package.table_started(&table)?;
                }
            }
            Some(Event::Batch(batch)) => {
                if let Some(package) = &mut package {
                    let rows = package.batch(&batch)?;
                    progress.rows.fetch_add(rows as i64, Ordering::Relaxed);
                }
            }
            Some(Event::TableCompleted(done)) => {
                if let Some(package) = &mut package {
                    package.table_completed(&done)?;
                    progress.tables.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Event::Manifest(manifest)) => {
                if let Some(package) = package.take() {
                    package.finish(&manifest)?;
                }
                let part = part
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let linked = found.lock().map(|f| f.clone()).unwrap_or_default();
                return Ok(Done::Manifest {
                    manifest,
                    part,
                    linked,
                });
            }
            None => {}
        }
    }
}

/// An erasure's preview. When the source has links to follow, its extraction is read first
/// (rows dropped, the read audited as any extraction), for the identities its links yield:
/// they are previewed too, and shown for approval with the path they came by.
async fn preview(
    requests: &Requests,
    task: &Claimed,
    progress: &Progress,
    attempt_stop: &CancellationToken,
    span: tracing::Span,
) -> Result<Done, Failure> {
    let mut linked = Vec::new();
    if requests.links_from(&task.source).next().is_some()
        && (task.hops as u32) < requests.cfg().max_link_hops
        && let Done::Manifest { linked: found, .. } =
            extract_part(requests, task, None, progress, attempt_stop, span.clone()).await?
    {
        linked = found;
    }
    erase(requests, task, true, String::new(), attempt_stop, span)
        .await
        .map(|receipt| Done::Preview(receipt, linked))
}

/// One erasure call of the engine, on a task of its own so that it is never dropped halfway:
/// `attempt_stop` stops it (rolled back unless its COMMIT was sent).
async fn erase(
    requests: &Requests,
    task: &Claimed,
    dry_run: bool,
    preview_digest: String,
    attempt_stop: &CancellationToken,
    span: tracing::Span,
) -> Result<pb::ErasureReceipt, Failure> {
    let params = EraseParams {
        source: task.source.clone(),
        kind: task.identity_kind.clone(),
        value: secrecy::SecretString::from(task.identity_value.expose_secret().to_owned()),
        request_id: task.request_id.clone(),
        compliance_tag: task.compliance_tag.clone(),
        dry_run,
        preview_digest,
        deadline: Some(Instant::now() + requests.cfg().attempt_timeout),
        caller: task.submitter.clone(),
        call_id: format!("{}/{}/{}", task.request_id, task.source, task.attempts),
        stop: attempt_stop.clone(),
    };
    let engine = requests.engine.clone();
    let to_status = requests.to_status;
    let work = tokio::spawn(tracing::Instrument::instrument(
        async move { engine.erase(params).await.map_err(|e| to_status(&e)) },
        span,
    ));
    match work.await {
        Ok(Ok(receipt)) => Ok(receipt),
        Ok(Err(_)) if attempt_stop.is_cancelled() => Err(Failure::Stopped),
        Ok(Err(status)) => Err(Failure::Status(status)),
        Err(_) => Err(Failure::Status(tonic::Status::internal(
            "the erasure's task ended without an answer",
        ))),
    }
}

/// An approved erasure. A fresh preview comes first: when it changes nothing and the
/// subject's last erasure was this request's, an earlier attempt committed (its replica died
/// before it could say) and that erasure stands; when it shows the same changes as the
/// approved preview, the erasure runs against the fresh preview's digest; when it changes
/// nothing and keeps no more than the approved one did (another identity of the request
/// erased those rows first), the erasure runs too: a transaction that changes nothing, so that
/// its record says so and settles any earlier one whose outcome was unknown; otherwise the
/// source waits for approval again, with the fresh preview.
async fn erase_approved(
    requests: &Requests,
    task: &Claimed,
    attempt_stop: &CancellationToken,
    span: tracing::Span,
) -> Result<Done, Failure> {
    let fresh = erase(
        requests,
        task,
        true,
        String::new(),
        attempt_stop,
        span.clone(),
    )
    .await?;
    if fresh.rows_deleted + fresh.rows_masked == 0 && fresh.earlier_request_id == task.request_id {
        return Ok(Done::Erased(fresh));
    }
    let approved = task
        .preview
        .as_deref()
        .and_then(|b| pb::ErasureReceipt::decode(b).ok())
        .unwrap_or_default();
    if !same_changes(&fresh, &approved) && !nothing_left_of(&fresh, &approved) {
        return Ok(Done::Preview(fresh, Vec::new()));
    }
    let digest = fresh.preview_digest.clone();
    erase(requests, task, false, digest, attempt_stop, span)
        .await
        .map(Done::Erased)
}

/// Whether `fresh` changes nothing, and every table where it keeps rows was approved with the
/// same action on at least as many: what was approved is gone, and nothing else is kept that a
/// person did not see kept (a policy changed to `retain` since shows here as a difference).
fn nothing_left_of(fresh: &pb::ErasureReceipt, approved: &pb::ErasureReceipt) -> bool {
    fresh.subject_id == approved.subject_id
        && fresh.rows_deleted + fresh.rows_masked == 0
        && fresh.tables.iter().filter(|t| t.rows > 0).all(|t| {
            approved.tables.iter().any(|a| {
                a.table == t.table
                    && a.action == t.action
                    && a.rows >= t.rows
                    && a.retained_columns == t.retained_columns
            })
        })
}

/// Whether two previews show the same changes: the same tables, actions, rows and columns.
fn same_changes(a: &pb::ErasureReceipt, b: &pb::ErasureReceipt) -> bool {
    let key = |r: &pb::ErasureReceipt| {
        r.tables
            .iter()
            .map(|t| {
                (
                    t.table.clone(),
                    t.action,
                    t.rows,
                    t.masked_columns.clone(),
                    t.retained_columns.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    a.subject_id == b.subject_id
        && (a.rows_deleted, a.rows_masked, a.rows_retained)
            == (b.rows_deleted, b.rows_masked, b.rows_retained)
        && key(a) == key(b)
}

/// What [`move_request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestMove {
    /// The request is not there to lock, or the attempt's lease was lost: nothing was settled
    /// and nothing moved.
    NotSettled,
    /// The attempt (if any) was settled; the request did not move.
    Unchanged,
    Moved,
}

/// Moves request `id`, under its row lock: with `settle`, the attempt's task is settled in
/// the same transaction (and nothing moves when the attempt's lease was lost).
async fn move_request(
    requests: &Requests,
    c: &mut ControlClient,
    id: &str,
    settle: Option<(&Claimed, &Settlement)>,
) -> Result<RequestMove, ControlError> {
    let Some(mut row) = c.lock_request(id, settle.is_some()).await? else {
        return Ok(RequestMove::NotSettled);
    };
    if let Some((task, settlement)) = settle {
        if !c
            .settle_task(
                (id, &task.source, task.ordinal),
                &requests.owner,
                settlement,
            )
            .await?
        {
            c.rollback().await?;
            return Ok(RequestMove::NotSettled);
        }
        if (settlement.state == state::SUCCEEDED || settlement.state == state::AWAITING_APPROVAL)
            && !settlement.linked.is_empty()
            && let Some(refusal) =
                super::links::follow(requests, c, id, task, &settlement.linked).await?
        {
            let update = RequestUpdate {
                state: state::FAILED.into(),
                finished: true,
                error: Some(refusal.encode_to_vec()),
                cancel_open_tasks: true,
                ..Default::default()
            };
            c.update_request(id, &update).await?;
            c.commit().await?;
            ended(requests, id, &row.submitter, state::FAILED).await;
            return Ok(RequestMove::Moved);
        }
        row.tasks = c.tasks(id).await?;
    }
    let now = Utc::now();
    let next = state::next(&row);
    let mut update = RequestUpdate::default();
    let mut ended_as = None;
    match next {
        Next::Same => {
            c.commit().await?;
            return Ok(RequestMove::Unchanged);
        }
        Next::Open(s) => {
            if s == row.state {
                c.commit().await?;
                return Ok(if settle.is_some() {
                    RequestMove::Moved
                } else {
                    RequestMove::Unchanged
                });
            }
            update.state = s.into();
        }
        Next::Succeed => {
            update.state = state::SUCCEEDED.into();
            update.finished = true;
            if state::kind_of(&row.kind) == pb::RequestKind::Access {
                let root = requests.cfg().package_dir.clone().unwrap_or_default();
                match package::complete(&root, &row, requests.sealing.is_some()) {
                    Ok((folder, sha)) => {
                        update.package_path = Some(folder.to_string_lossy().into_owned());
                        update.package_sha256 = Some(sha);
                        update.package_expires = Some(
                            now + chrono::Duration::from_std(requests.cfg().package_retention)
                                .unwrap_or(chrono::Duration::days(30)),
                        );
                    }
                    Err(error) => {
                        tracing::error!(request_id = %id, error = %format!("{error:#}"),
                            "a request's package could not be completed");
                        update.state = state::FAILED.into();
                        update.error = Some(
                            rpc::Status {
                                code: tonic::Code::Internal as i32,
                                message: format!("the package could not be completed: {error:#}"),
                                details: Vec::new(),
                            }
                            .encode_to_vec(),
                        );
                    }
                }
            }
            ended_as = Some(update.state.clone());
        }
        Next::Fail { source } => {
            let task = row
                .tasks
                .iter()
                .find(|t| t.source == source && t.state == state::FAILED);
            let mut status = task
                .and_then(|t| t.result.as_deref())
                .and_then(|b| rpc::Status::decode(b).ok())
                .unwrap_or(rpc::Status {
                    code: tonic::Code::Unknown as i32,
                    message: String::new(),
                    details: Vec::new(),
                });
            // A source asked with an identity a link found names how it was found.
            let asked = match task {
                Some(t) if t.hops > 0 => format!(" (asked with {})", t.path),
                _ => String::new(),
            };
            status.message = format!("source '{source}'{asked}: {}", status.message);
            update.state = state::FAILED.into();
            update.finished = true;
            update.error = Some(status.encode_to_vec());
            update.cancel_open_tasks = true;
            ended_as = Some(update.state.clone());
        }
    }
    c.update_request(id, &update).await?;
    c.commit().await?;
    if let Some(state) = ended_as {
        ended(requests, id, &row.submitter, &state).await;
    }
    Ok(RequestMove::Moved)
}

/// After a request ended as `state`: a package it will not complete is removed, and the end
/// is logged and recorded.
async fn ended(requests: &Requests, id: &str, submitter: &str, state: &str) {
    if state != state::SUCCEEDED
        && let Some(root) = &requests.cfg().package_dir
    {
        let _ = package::remove(root, id);
    }
    tracing::info!(request_id = %id, state = %state, "request ended");
    requests.record("Request", submitter, id, "", state).await;
}
