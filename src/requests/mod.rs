//! Durable data-subject requests: one request across sources, as a long-running operation
//! (`requests/{id}`) kept in the control database, that outlives the call that submitted it
//! and the replica that ran it.
//!
//! A request is a row, and each of its sources a task row. Every replica runs workers
//! ([`worker`]) that claim due tasks with `FOR UPDATE SKIP LOCKED` under a lease they renew;
//! a replica that dies loses its leases, and another replica claims the tasks again. Every
//! step is idempotent: an access task rewrites its package part whole ([`package`]); an
//! erasure task checks, before it erases, whether an earlier attempt of the same request
//! already did (the erasure's own receipt points to it). The request moves ([`state`]) in the
//! transaction that settles its task, under its row lock.
//!
//! The identity value is kept in the request row while the request is open (a worker needs
//! it to resume), and forgotten when the request ends. Nothing else of the subject is stored:
//! progress and results hold counts, manifests and receipts, which name the subject by its
//! keyed hash.

mod housekeeping;
mod links;
mod operation;
pub mod package;
pub mod state;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RequestsConfig;
use crate::engine::{Engine, ExtractError};
use crate::pb::google::longrunning::Operation;
use crate::pb::{self, RequestKind};
use crate::store::postgres::control::{Control, ControlError};
use crate::store::postgres::requests::{
    ControlManager, ControlPool, NewRequest, NewTask, RequestRow, RequestUpdate,
};

pub use operation::{COLLECTION, operation, request_id_of};

/// The ErrorInfo domain of the statuses the service sends (`api::status::DOMAIN`).
pub const ERROR_DOMAIN: &str = "dsr-connector";

/// The longest request id.
const MAX_ID_BYTES: usize = 128;
/// The longest identity value a request may carry.
const MAX_VALUE_BYTES: usize = 1024;
/// How long a WaitOperation without a timeout waits.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting call looks at its request.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// A request refused or failed, mapped to a status in `api::status`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<ControlError> for RequestError {
    fn from(error: ControlError) -> RequestError {
        RequestError::Unavailable(error.to_string())
    }
}

/// Who asks, and what the caller's scopes allow (the API's policy layers say).
pub trait Asker: Sync {
    fn name(&self) -> &str;
    fn may_read(&self, source: &str) -> bool;
    fn may_call(&self, rpc: &str) -> bool;
}

/// A request is shown to, and may be cancelled or deleted by, callers with the scopes that
/// submitting it needed: every one of its sources, and its kind's RPC.
fn may_see(asker: &dyn Asker, request: &RequestRow) -> bool {
    let kind_allowed = match state::kind_of(&request.kind) {
        RequestKind::Erasure => asker.may_call("Erase"),
        _ => asker.may_call("SubmitRequest"),
    };
    kind_allowed && request.tasks.iter().all(|t| asker.may_read(&t.source))
}

/// Durable requests on one replica: the API's operations, and the workers.
pub struct Requests {
    engine: Arc<Engine>,
    pool: ControlPool,
    control: Control,
    /// This replica's name on the leases it holds.
    owner: String,
    to_status: fn(&ExtractError) -> tonic::Status,
    /// Whom packages are encrypted to, when `package_recipients` names anyone.
    sealing: Option<crate::cli::extract::package::Sealing>,
}

impl Requests {
    /// Opens the request store when `[server.control]` is configured; `None` otherwise.
    pub async fn open(
        engine: Arc<Engine>,
        to_status: fn(&ExtractError) -> tonic::Status,
    ) -> anyhow::Result<Option<Arc<Requests>>> {
        let Some(cfg) = &engine.config().server.control else {
            return Ok(None);
        };
        let control = Control::new(cfg).map_err(|e| anyhow::anyhow!(e))?;
        // Creates the tables (under the schema lock) before anything uses them.
        control
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("server.control: {e}"))?;
        let pool = bb8::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(10))
            .build_unchecked(ControlManager(control.clone()));
        let recipients = &engine.config().server.requests.package_recipients;
        let sealing = if recipients.is_empty() {
            None
        } else {
            Some(
                crate::cli::extract::package::Sealing::parse(recipients)
                    .map_err(|e| anyhow::anyhow!("server.requests.package_recipients: {e}"))?,
            )
        };
        let owner = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Ok(Some(Arc::new(Requests {
            engine,
            pool,
            control,
            owner,
            to_status,
            sealing,
        })))
    }

    fn cfg(&self) -> &RequestsConfig {
        &self.engine.config().server.requests
    }

    /// The links whose values come from `source`, in the configuration's order.
    fn links_from<'a>(
        &'a self,
        source: &'a str,
    ) -> impl Iterator<Item = &'a crate::config::LinkConfig> + 'a {
        self.engine
            .config()
            .links
            .iter()
            .filter(move |link| link.from.source == source)
    }

    /// Starts this replica's workers and its housekeeping. They claim nothing more once
    /// `stop_claiming` is cancelled; an attempt still running is stopped by `stop_work` and
    /// settled as queued again. The handles end when the workers have.
    pub fn spawn(
        self: &Arc<Self>,
        stop_claiming: CancellationToken,
        stop_work: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles: Vec<_> = (0..self.cfg().workers)
            .map(|n| {
                tokio::spawn(worker::run(
                    self.clone(),
                    n,
                    stop_claiming.clone(),
                    stop_work.clone(),
                ))
            })
            .collect();
        handles.push(tokio::spawn(housekeeping::run(self.clone(), stop_claiming)));
        handles
    }

    async fn client(&self) -> Result<bb8::PooledConnection<'_, ControlManager>, RequestError> {
        self.pool.get().await.map_err(|e| match e {
            bb8::RunError::User(e) => RequestError::Unavailable(e.to_string()),
            bb8::RunError::TimedOut => {
                RequestError::Unavailable("control database: no connection within 10 s".into())
            }
        })
    }

    /// SubmitRequest: stores the request (or finds it, for an id submitted before) and
    /// returns its operation.
    pub async fn submit(
        &self,
        asker: &dyn Asker,
        request: pb::SubmitRequestRequest,
    ) -> Result<Operation, RequestError> {
        let invalid = |m: String| RequestError::InvalidArgument(m);
        let id = request.request_id.as_str();
        if id.is_empty()
            || id.len() > MAX_ID_BYTES
            || id.starts_with('.')
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "request_id: 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-', not starting \
                 with '.'"
                    .into(),
            ));
        }
        let kind = RequestKind::try_from(request.kind).unwrap_or(RequestKind::Unspecified);
        let Some(kind_name) = state::kind_name(kind) else {
            return Err(invalid("kind: ACCESS or ERASURE".into()));
        };
        let subject = request
            .subject
            .ok_or_else(|| invalid("subject: required".into()))?;
        if request.more_identities.len() >= crate::engine::MAX_IDENTITIES {
            return Err(invalid(format!(
                "more_identities: at most {} besides the subject",
                crate::engine::MAX_IDENTITIES - 1
            )));
        }
        let identities: Vec<(String, &pb::Identity)> =
            std::iter::once(("subject".into(), &subject))
                .chain(
                    request
                        .more_identities
                        .iter()
                        .enumerate()
                        .map(|(i, identity)| (format!("more_identities[{i}]"), identity)),
                )
                .collect();
        for (field, identity) in &identities {
            if identity.kind.is_empty() || identity.value.trim().is_empty() {
                return Err(invalid(format!(
                    "{field}: both kind and value are required"
                )));
            }
            if identity.value.len() > MAX_VALUE_BYTES {
                return Err(invalid(format!(
                    "{field}.value: longer than {MAX_VALUE_BYTES} bytes"
                )));
            }
        }
        let identities: Vec<&pb::Identity> = identities.into_iter().map(|(_, i)| i).collect();
        if kind == RequestKind::Erasure && !asker.may_call("Erase") {
            return Err(RequestError::PermissionDenied(format!(
                "caller '{}' may not submit an erasure request: that needs the Erase scope as \
                 well as SubmitRequest",
                asker.name()
            )));
        }
        let tasks = self.tasks_for(asker, &identities, &request.sources, kind)?;
        let mut sources: Vec<String> = tasks.iter().map(|t| t.source.clone()).collect();
        sources.dedup();
        if kind == RequestKind::Access && self.cfg().package_dir.is_none() {
            return Err(RequestError::FailedPrecondition {
                reason: "NO_PACKAGE_STORE",
                message: "access requests need [server.requests] package_dir, where their \
                          packages are written"
                    .into(),
            });
        }
        let now = Utc::now();
        let due_time = match request.due_time {
            Some(t) => {
                let due = DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    .ok_or_else(|| invalid("due_time: out of range".into()))?;
                if due <= now {
                    return Err(invalid("due_time: must be in the future".into()));
                }
                due
            }
            None => {
                let after = match kind {
                    RequestKind::Erasure => self.cfg().erasure_due_after,
                    _ => self.cfg().access_due_after,
                };
                now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::days(30))
            }
        };
        let joined = sources.join("\u{1f}");
        let mut parts: Vec<&str> = vec![
            kind_name,
            &subject.kind,
            &subject.value,
            &joined,
            &request.compliance_tag,
        ];
        for more in &request.more_identities {
            parts.extend([more.kind.as_str(), more.value.as_str()]);
        }
        let fingerprint = self.fingerprint(&parts);
        let new = NewRequest {
            id,
            kind: kind_name,
            submitter: asker.name(),
            identity_kind: &subject.kind,
            identity_value: &subject.value,
            compliance_tag: &request.compliance_tag,
            fingerprint: &fingerprint,
            due_time,
            tasks: &tasks,
            phase: match kind {
                RequestKind::Erasure => state::PREVIEW,
                _ => state::EXTRACT,
            },
        };
        let mut client = self.client().await?;
        let earlier = client.insert_request(&new).await?;
        if let Some(stored) = &earlier
            && *stored != fingerprint
        {
            return Err(RequestError::AlreadyExists(format!(
                "request_id '{id}' was submitted before with other content (kind, identities, \
                 sources or compliance tag); a new request needs a new id"
            )));
        }
        let row = client
            .request(id)
            .await?
            .ok_or_else(|| RequestError::NotFound(format!("request '{id}' is gone")))?;
        drop(client);
        if !may_see(asker, &row) {
            return Err(RequestError::PermissionDenied(format!(
                "caller '{}' may not see request '{id}'",
                asker.name()
            )));
        }
        let subject_id = sources
            .first()
            .map(|s| self.engine.subject_id_of(s, &subject.kind, &subject.value))
            .unwrap_or_default();
        self.record(
            "SubmitRequest",
            asker.name(),
            id,
            &subject_id,
            if earlier.is_some() {
                "resubmitted"
            } else {
                "ok"
            },
        )
        .await;
        Ok(operation(&row))
    }

    /// The tasks of a request, for each source the identities it declares, in the order
    /// given. An access request asks each source once, with all of them in one snapshot (the
    /// first is the task's identity). An erasure asks each source once per identity, each task
    /// previewed and approved by itself (one transaction erases what one identity reaches).
    /// The sources are those named, each of which must declare one of the kinds, or every
    /// source that declares one; the caller must be allowed to read each.
    fn tasks_for(
        &self,
        asker: &dyn Asker,
        identities: &[&pb::Identity],
        named: &[String],
        kind: RequestKind,
    ) -> Result<Vec<NewTask>, RequestError> {
        let config = self.engine.config();
        let declares = |source: &crate::config::SourceConfig| {
            identities
                .iter()
                .filter(|i| source.identity_kinds.contains(&i.kind))
                .collect::<Vec<_>>()
        };
        let kinds = || {
            identities
                .iter()
                .map(|i| format!("'{}'", clipped(&i.kind)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sources: Vec<String> = if named.is_empty() {
            config
                .sources
                .iter()
                .filter(|s| !declares(s).is_empty())
                .map(|s| s.name.clone())
                .collect()
        } else {
            named.to_vec()
        };
        sources.sort();
        sources.dedup();
        if sources.is_empty() {
            return Err(RequestError::InvalidArgument(format!(
                "subject.kind: no configured source declares the identity kind {}",
                kinds()
            )));
        }
        let mut tasks = Vec::with_capacity(sources.len());
        for name in sources {
            let Some(source) = config.sources.iter().find(|s| s.name == name) else {
                return Err(RequestError::NotFound(format!(
                    "sources: no source named '{}'",
                    clipped(&name)
                )));
            };
            let asked = declares(source);
            let Some((first, more)) = asked.split_first() else {
                return Err(RequestError::InvalidArgument(format!(
                    "source '{name}' does not declare the identity kind {}",
                    kinds()
                )));
            };
            if !asker.may_read(&name) {
                return Err(RequestError::PermissionDenied(format!(
                    "caller '{}' may not read source '{name}'",
                    asker.name()
                )));
            }
            if kind == RequestKind::Erasure {
                for (ordinal, identity) in asked.iter().enumerate() {
                    tasks.push(NewTask {
                        folder: match ordinal {
                            0 => name.clone(),
                            n => format!("{name}.{}", n + 1),
                        },
                        source: name.clone(),
                        ordinal: ordinal as i32,
                        kind: identity.kind.clone(),
                        value: identity.value.clone(),
                        more: Vec::new(),
                    });
                }
                continue;
            }
            tasks.push(NewTask {
                folder: name.clone(),
                source: name,
                ordinal: 0,
                kind: first.kind.clone(),
                value: first.value.clone(),
                more: more
                    .iter()
                    .map(|i| (i.kind.clone(), i.value.clone()))
                    .collect(),
            });
        }
        Ok(tasks)
    }

    /// A keyed hash of what was submitted: a resubmission with the same id must carry the
    /// same content, and the stored fingerprint reveals none of it.
    fn fingerprint(&self, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.engine.config().subject_key())
            .expect("HMAC takes a key of any length");
        mac.update(b"dsr-request-v1");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// A request the asker may see.
    async fn visible(&self, asker: &dyn Asker, name: &str) -> Result<RequestRow, RequestError> {
        let id = request_id_of(name)?;
        let row = self.client().await?.request(id).await?;
        match row {
            Some(row) if may_see(asker, &row) => Ok(row),
            // One answer for "absent" and "not yours": the ids of other callers' requests
            // are not revealed.
            _ => Err(RequestError::NotFound(format!("no request named '{name}'"))),
        }
    }

    /// GetOperation.
    pub async fn get(&self, asker: &dyn Asker, name: &str) -> Result<Operation, RequestError> {
        Ok(operation(&self.visible(asker, name).await?))
    }

    /// WaitOperation: returns once the request is done, or at `until`.
    pub async fn wait(
        &self,
        asker: &dyn Asker,
        name: &str,
        timeout: Option<Duration>,
        deadline: Instant,
    ) -> Result<Operation, RequestError> {
        let until = (Instant::now() + timeout.unwrap_or(DEFAULT_WAIT)).min(deadline);
        loop {
            let row = self.visible(asker, name).await?;
            let now = Instant::now();
            if row.finished.is_some() || now + WAIT_POLL >= until {
                return Ok(operation(&row));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// ListOperations: the requests the asker may see, in id order, a page at a time.
    /// `filter` is empty or `state=<STATE>`.
    pub async fn list(
        &self,
        asker: &dyn Asker,
        filter: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Operation>, String), RequestError> {
        let state = match filter.trim() {
            "" => None,
            f => {
                let wanted = f
                    .strip_prefix("state=")
                    .map(|name| name.trim_start_matches("REQUEST_STATE_"))
                    .and_then(|name| {
                        pb::RequestState::from_str_name(&format!("REQUEST_STATE_{name}"))
                    })
                    .and_then(state::state_name)
                    .ok_or_else(|| {
                        RequestError::InvalidArgument(
                            "filter: empty, or state=<QUEUED|RUNNING|AWAITING_APPROVAL|\
                             SUCCEEDED|FAILED|CANCELLED> (with or without REQUEST_STATE_)"
                                .into(),
                        )
                    })?;
                Some(wanted)
            }
        };
        let size = if page_size <= 0 {
            50
        } else {
            page_size.min(500)
        } as i64;
        let rows = self
            .client()
            .await?
            .requests(page_token, size, state)
            .await?;
        let next = if rows.len() as i64 == size {
            rows.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let ops = rows
            .iter()
            .filter(|r| may_see(asker, r))
            .map(operation)
            .collect();
        Ok((ops, next))
    }

    /// CancelOperation: an open request ends as cancelled; its running tasks stop at their
    /// next lease renewal (their queries cancelled, an erasure not committed rolled back),
    /// and an access request's partial package is removed.
    pub async fn cancel(&self, asker: &dyn Asker, name: &str) -> Result<(), RequestError> {
        let row = self.visible(asker, name).await?;
        let mut client = self.client().await?;
        let Some(locked) = client.lock_request(&row.id, true).await? else {
            return Err(RequestError::NotFound(format!("no request named '{name}'")));
        };
        if locked.finished.is_some() {
            client.commit().await?;
            return Ok(());
        }
        let status = crate::pb::google::rpc::Status {
            code: tonic::Code::Cancelled as i32,
            message: format!("cancelled by '{}'", asker.name()),
            details: Vec::new(),
        };
        client
            .update_request(
                &row.id,
                &RequestUpdate {
                    state: state::CANCELLED.into(),
                    finished: true,
                    error: Some(prost::Message::encode_to_vec(&status)),
                    cancel_open_tasks: true,
                    ..Default::default()
                },
            )
            .await?;
        client.commit().await?;
        drop(client);
        if let Some(root) = &self.cfg().package_dir {
            let _ = package::remove(root, &row.id);
        }
        self.record("CancelOperation", asker.name(), &row.id, "", "cancelled")
            .await;
        Ok(())
    }

    /// DeleteOperation: forgets a finished request, and removes its package.
    pub async fn delete(&self, asker: &dyn Asker, name: &str) -> Result<(), RequestError> {
        let row = self.visible(asker, name).await?;
        if row.finished.is_none() {
            return Err(RequestError::FailedPrecondition {
                reason: "REQUEST_OPEN",
                message: format!("request '{}' has not ended; cancel it first", row.id),
            });
        }
        if let Some(root) = &self.cfg().package_dir {
            package::remove(root, &row.id)
                .map_err(|e| RequestError::Unavailable(format!("package store: {e:#}")))?;
        }
        let mut client = self.client().await?;
        if client.lock_request(&row.id, true).await?.is_some() {
            client.delete_request(&row.id).await?;
            client.commit().await?;
        }
        drop(client);
        self.record("DeleteOperation", asker.name(), &row.id, "", "deleted")
            .await;
        Ok(())
    }

    /// ApproveRequest: the sources waiting for approval whose digests are sent go on to
    /// their erasure.
    pub async fn approve(
        &self,
        asker: &dyn Asker,
        request: pb::ApproveRequestRequest,
    ) -> Result<Operation, RequestError> {
        let row = self.visible(asker, &request.name).await?;
        let mut client = self.client().await?;
        let Some(locked) = client.lock_request(&row.id, true).await? else {
            return Err(RequestError::NotFound(format!(
                "no request named '{}'",
                request.name
            )));
        };
        let result = async {
            if locked.state != state::AWAITING_APPROVAL || locked.finished.is_some() {
                return Err(RequestError::FailedPrecondition {
                    reason: "NOT_AWAITING_APPROVAL",
                    message: format!(
                        "request '{}' is {}, not awaiting approval",
                        locked.id, locked.state
                    ),
                });
            }
            let mut approved = Vec::new();
            for task in &locked.tasks {
                if task.state != state::AWAITING_APPROVAL {
                    continue;
                }
                // Keyed by the task's folder: a source asked with several identities (links)
                // has a preview for each, and each is approved on its own.
                let Some(digest) = request.digests.get(&task.folder) else {
                    return Err(RequestError::InvalidArgument(format!(
                        "digests: '{}' (source '{}', {} found as {}) waits for approval; send \
                         its preview_digest",
                        task.folder, task.source, task.identity_kind, task.path
                    )));
                };
                if *digest != task.preview_digest {
                    return Err(RequestError::FailedPrecondition {
                        reason: "PREVIEW_CHANGED",
                        message: format!(
                            "'{}': the digest is not its latest preview's; read the operation \
                             again",
                            task.folder
                        ),
                    });
                }
                approved.push((task.folder.clone(), digest.clone()));
            }
            client.approve_tasks(&locked.id, &approved).await?;
            client
                .update_request(
                    &locked.id,
                    &RequestUpdate {
                        state: state::RUNNING.into(),
                        ..Default::default()
                    },
                )
                .await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => client.commit().await?,
            Err(e) => {
                client.rollback().await?;
                return Err(e);
            }
        }
        let row = client.request(&row.id).await?.ok_or_else(|| {
            RequestError::NotFound(format!("no request named '{}'", request.name))
        })?;
        drop(client);
        self.record("ApproveRequest", asker.name(), &row.id, "", "approved")
            .await;
        Ok(operation(&row))
    }

    /// An audit record of a request's step (names and ids only).
    async fn record(&self, rpc: &str, caller: &str, id: &str, subject_id: &str, outcome: &str) {
        let entry = crate::records::audit::Entry {
            rpc: rpc.to_owned(),
            caller: caller.to_owned(),
            request_id: id.to_owned(),
            subject_id: subject_id.to_owned(),
            outcome: outcome.to_owned(),
            status: "OK".into(),
            ..Default::default()
        };
        if let Err(error) = self
            .engine
            .records()
            .record(self.engine.metrics(), entry)
            .await
        {
            tracing::error!(%error, rpc, "a request's step could not be recorded in the audit log");
        }
    }
}

/// A name the caller sent, for a message: cut when it is longer than any configured name.
fn clipped(text: &str) -> &str {
    if text.len() <= crate::engine::MAX_LABEL_BYTES {
        text
    } else {
        "[too long]"
    }
}
