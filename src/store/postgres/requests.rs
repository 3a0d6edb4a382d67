//! Durable requests in the control database: a request row, one task row per source, and the
//! queue's SQL. Tasks are claimed with `FOR UPDATE SKIP LOCKED` under a lease that the holder
//! renews; a task whose lease ran out is claimed again by any replica. A holder settles its
//! task only while it still holds the lease (the owner is the fence), in the transaction that
//! also moves the request: the request row is locked first, then the task, everywhere, so
//! that settling and cancelling cannot deadlock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bb8::ManageConnection;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::control::{Control, ControlClient, ControlError};
pub use super::request_links::LinkedTask;

/// A request as it is submitted.
pub struct NewRequest<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub submitter: &'a str,
    pub identity_kind: &'a str,
    pub identity_value: &'a str,
    pub compliance_tag: &'a str,
    pub fingerprint: &'a str,
    pub due_time: DateTime<Utc>,
    pub tasks: &'a [NewTask],
    /// The tasks' first phase (`extract` or `preview`).
    pub phase: &'a str,
}

/// A source's task as a request is submitted: the identity it is asked with, and the others
/// of the request that it declares (asked in the same snapshot). Not `Debug`: it holds the
/// identity values.
pub struct NewTask {
    pub source: String,
    pub ordinal: i32,
    /// The folder of the package its part becomes (the source's name, `name.2` for its
    /// second task).
    pub folder: String,
    pub kind: String,
    pub value: String,
    pub more: Vec<(String, String)>,
}

/// The other identities of a task as stored (a JSON array of `[kind, value]`), `None` when
/// there are none.
fn more_column(more: &[(String, String)]) -> Option<String> {
    (!more.is_empty()).then(|| serde_json::to_string(more).unwrap_or_default())
}

/// The other identities of a task, from [`more_column`]'s form. A column that does not read
/// as one fails the claim: a task never runs with fewer identities than it was given.
fn more_of(column: Option<String>) -> Result<Vec<(String, secrecy::SecretString)>, ControlError> {
    let Some(text) = column else {
        return Ok(Vec::new());
    };
    let more: Vec<(String, String)> = serde_json::from_str(&text).map_err(|_| {
        ControlError::other("a task's more_identities column does not read as identities".into())
    })?;
    Ok(more
        .into_iter()
        .map(|(kind, value)| (kind, secrecy::SecretString::from(value)))
        .collect())
}

/// A request and its tasks, as stored.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: String,
    pub kind: String,
    pub submitter: String,
    pub state: String,
    pub identity_kind: String,
    pub compliance_tag: String,
    pub fingerprint: String,
    pub due_time: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// An encoded `google.rpc.Status`.
    pub error: Option<Vec<u8>>,
    pub package_path: Option<String>,
    pub package_sha256: Option<String>,
    pub package_expires: Option<DateTime<Utc>>,
    pub tasks: Vec<TaskRow>,
}

/// One source's task.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub source: String,
    /// Tasks of one source are numbered: several identities may ask it (links).
    pub ordinal: i32,
    pub identity_kind: String,
    /// How the task's identity was found: `submitted`, or the links that led to it.
    pub path: String,
    pub hops: i32,
    /// The folder of the request's package that the task's part becomes.
    pub folder: String,
    pub phase: String,
    pub state: String,
    pub attempts: i32,
    pub not_before: DateTime<Utc>,
    pub retrying_since: Option<DateTime<Utc>>,
    pub rows: i64,
    pub tables: i32,
    pub last_reason: String,
    /// An encoded `ErasureReceipt` of the preview.
    pub preview: Option<Vec<u8>>,
    pub preview_digest: String,
    /// An encoded `Manifest` or `ErasureReceipt`.
    pub result: Option<Vec<u8>>,
    /// The package part the settled attempt wrote.
    pub part: String,
}

/// A task claimed by a worker, with what it needs to run.
#[derive(Debug)]
pub struct Claimed {
    pub request_id: String,
    pub source: String,
    pub ordinal: i32,
    pub path: String,
    pub hops: i32,
    pub folder: String,
    pub kind: String,
    pub phase: String,
    pub attempts: i32,
    pub submitter: String,
    pub identity_kind: String,
    /// The identity value: held only while the request is open.
    pub identity_value: secrecy::SecretString,
    /// The request's other identities that the source declares, asked in the same snapshot.
    pub more_identities: Vec<(String, secrecy::SecretString)>,
    pub compliance_tag: String,
    pub due_time: DateTime<Utc>,
    pub approved_digest: String,
    /// The preview that was approved (an encoded `ErasureReceipt`).
    pub preview: Option<Vec<u8>>,
}

/// How a task ends an attempt. Not `Debug`: `linked` holds identity values.
#[derive(Default)]
pub struct Settlement {
    pub phase: String,
    pub state: String,
    pub not_before: Option<DateTime<Utc>>,
    pub last_reason: String,
    pub rows: i64,
    pub tables: i32,
    pub preview: Option<Vec<u8>>,
    pub preview_digest: Option<String>,
    pub result: Option<Vec<u8>>,
    pub part: String,
    /// The attempt failed for a passing reason: the task waits (and `retrying_since` starts
    /// if it had not).
    pub retrying: bool,
    /// What the source's links yielded (personal data: never stored but as tasks' identities).
    pub linked: Vec<Vec<String>>,
}

/// What a lease renewal found.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    Held,
    /// Another replica holds the task now, or it was settled.
    Lost,
    /// The request was cancelled.
    Cancelled,
}

/// How the request moves, decided from its locked row and tasks.
#[derive(Debug, Default)]
pub struct RequestUpdate {
    pub state: String,
    pub finished: bool,
    pub error: Option<Vec<u8>>,
    pub package_path: Option<String>,
    pub package_sha256: Option<String>,
    pub package_expires: Option<DateTime<Utc>>,
    /// Tasks not yet ended are cancelled with it (the request failed or was cancelled).
    pub cancel_open_tasks: bool,
}

const REQUEST_COLUMNS: &str = "id, kind, submitter, state, identity_kind, compliance_tag, \
     fingerprint, due_time, created, updated, finished, error, package_path, package_sha256, \
     package_expires";
const TASK_COLUMNS: &str = "source, phase, state, attempts, not_before, retrying_since, rows, \
     tables, last_reason, preview, preview_digest, result, part, ordinal, \
     identity_kind, path, hops, folder";

fn request_row(row: &Row) -> RequestRow {
    RequestRow {
        id: row.get(0),
        kind: row.get(1),
        submitter: row.get(2),
        state: row.get(3),
        identity_kind: row.get(4),
        compliance_tag: row.get(5),
        fingerprint: row.get(6),
        due_time: row.get(7),
        created: row.get(8),
        updated: row.get(9),
        finished: row.get(10),
        error: row.get(11),
        package_path: row.get(12),
        package_sha256: row.get(13),
        package_expires: row.get(14),
        tasks: Vec::new(),
    }
}

fn task_row(row: &Row) -> TaskRow {
    TaskRow {
        source: row.get(0),
        phase: row.get(1),
        state: row.get(2),
        attempts: row.get(3),
        not_before: row.get(4),
        retrying_since: row.get(5),
        rows: row.get(6),
        tables: row.get(7),
        last_reason: row.get(8),
        preview: row.get(9),
        preview_digest: row.get(10),
        result: row.get(11),
        part: row.get(12),
        ordinal: row.get(13),
        identity_kind: row.get(14),
        path: row.get(15),
        hops: row.get(16),
        folder: row.get(17),
    }
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl ControlClient {
    /// Stores a new request and its tasks. `Ok(None)` when it was stored now; otherwise the
    /// stored request's fingerprint (the id was submitted before).
    pub async fn insert_request(
        &mut self,
        new: &NewRequest<'_>,
    ) -> Result<Option<String>, ControlError> {
        let txn = self.0.transaction().await?;
        let inserted = txn
            .execute(
                "INSERT INTO dsr_requests (id, kind, submitter, state, identity_kind, \
                 identity_value, compliance_tag, fingerprint, due_time) \
                 VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    &new.id,
                    &new.kind,
                    &new.submitter,
                    &new.identity_kind,
                    &new.identity_value,
                    &new.compliance_tag,
                    &new.fingerprint,
                    &new.due_time,
                ],
            )
            .await?;
        if inserted == 0 {
            let row = txn
                .query_one(
                    "SELECT fingerprint FROM dsr_requests WHERE id = $1",
                    &[&new.id],
                )
                .await?;
            txn.rollback().await?;
            return Ok(Some(row.get(0)));
        }
        let sources: Vec<&str> = new.tasks.iter().map(|t| t.source.as_str()).collect();
        let ordinals: Vec<i32> = new.tasks.iter().map(|t| t.ordinal).collect();
        let folders: Vec<&str> = new.tasks.iter().map(|t| t.folder.as_str()).collect();
        let kinds: Vec<&str> = new.tasks.iter().map(|t| t.kind.as_str()).collect();
        let values: Vec<&str> = new.tasks.iter().map(|t| t.value.as_str()).collect();
        let more: Vec<Option<String>> = new.tasks.iter().map(|t| more_column(&t.more)).collect();
        txn.execute(
            "INSERT INTO dsr_request_tasks (request_id, source, ordinal, folder, phase, state, \
               identity_kind, identity_value, more_identities, path) \
             SELECT $1, s, o, f, $3, 'queued', k, v, m, 'submitted' \
             FROM unnest($2::text[], $4::text[], $5::text[], $6::text[], $7::int4[], \
               $8::text[]) AS u(s, k, v, m, o, f)",
            &[
                &new.id, &sources, &new.phase, &kinds, &values, &more, &ordinals, &folders,
            ],
        )
        .await?;
        txn.commit().await?;
        Ok(None)
    }

    /// One request with its tasks.
    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>, ControlError> {
        let rows = self
            .0
            .query(
                &format!("SELECT {REQUEST_COLUMNS} FROM dsr_requests WHERE id = $1"),
                &[&id],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut request = request_row(row);
        request.tasks = self.tasks(id).await?;
        Ok(Some(request))
    }

    /// The tasks of request `id`.
    pub async fn tasks(&self, id: &str) -> Result<Vec<TaskRow>, ControlError> {
        Ok(self
            .0
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM dsr_request_tasks WHERE request_id = $1 \
                     ORDER BY source, ordinal"
                ),
                &[&id],
            )
            .await?
            .iter()
            .map(task_row)
            .collect())
    }

    /// Requests after `after` in id order, at most `limit`, in `state` when given.
    pub async fn requests(
        &self,
        after: &str,
        limit: i64,
        state: Option<&str>,
    ) -> Result<Vec<RequestRow>, ControlError> {
        let rows = self
            .0
            .query(
                &format!(
                    "SELECT {REQUEST_COLUMNS} FROM dsr_requests WHERE id > $1 \
                     AND ($3::text IS NULL OR state = $3) ORDER BY id LIMIT $2"
                ),
                &[&after, &limit, &state],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut request = request_row(row);
            request.tasks = self.tasks(&request.id).await?;
            out.push(request);
        }
        Ok(out)
    }

    /// Claims one task that is due (queued and past its `not_before`, or running under a
    /// lease that ran out) of an open request, for `owner`, under a lease of `lease`.
    pub async fn claim_task(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, ControlError> {
        // A task is not claimed while another task of its request and source runs, so that
        // one source is not asked twice at once for one request. One statement's snapshot
        // cannot promise it against a claim made at the same moment; an erasure that meets
        // another one's changes sees a changed preview (ABORTED) and is tried again.
        let row = self
            .0
            .query_opt(
                "WITH due AS ( \
                   SELECT t.request_id, t.source, t.ordinal FROM dsr_request_tasks t \
                   JOIN dsr_requests r ON r.id = t.request_id \
                   WHERE r.finished IS NULL AND r.state <> 'cancelled' \
                     AND ((t.state = 'queued' AND t.not_before <= now()) \
                       OR (t.state = 'running' AND t.lease_until < now())) \
                     AND NOT EXISTS (SELECT 1 FROM dsr_request_tasks o \
                       WHERE o.request_id = t.request_id AND o.source = t.source \
                         AND o.ordinal <> t.ordinal AND o.state = 'running' \
                         AND o.lease_until >= now()) \
                   ORDER BY t.not_before LIMIT 1 FOR UPDATE OF t SKIP LOCKED) \
                 UPDATE dsr_request_tasks t SET state = 'running', lease_owner = $1, \
                   lease_until = now() + make_interval(secs => $2), attempts = t.attempts + 1 \
                 FROM due, dsr_requests r \
                 WHERE t.request_id = due.request_id AND t.source = due.source \
                   AND t.ordinal = due.ordinal AND r.id = t.request_id \
                 RETURNING t.request_id, t.source, r.kind, t.phase, t.attempts, r.submitter, \
                   t.identity_kind, t.identity_value, r.compliance_tag, r.due_time, \
                   t.approved_digest, t.preview, t.ordinal, t.path, t.hops, t.folder, \
                   t.more_identities",
                &[&owner, &interval(lease)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let more_identities = more_of(row.get(16))?;
        Ok(Some(Claimed {
            request_id: row.get(0),
            source: row.get(1),
            kind: row.get(2),
            phase: row.get(3),
            attempts: row.get(4),
            submitter: row.get(5),
            identity_kind: row.get(6),
            identity_value: secrecy::SecretString::from(
                row.get::<_, Option<String>>(7).unwrap_or_default(),
            ),
            compliance_tag: row.get(8),
            due_time: row.get(9),
            approved_digest: row.get(10),
            preview: row.get(11),
            ordinal: row.get(12),
            path: row.get(13),
            hops: row.get(14),
            folder: row.get(15),
            more_identities,
        }))
    }

    /// Renews `owner`'s lease on a task, and records its progress.
    pub async fn renew_lease(
        &self,
        (request_id, source, ordinal): (&str, &str, i32),
        owner: &str,
        lease: Duration,
        rows: i64,
        tables: i32,
    ) -> Result<Renewal, ControlError> {
        let row = self
            .0
            .query_opt(
                "UPDATE dsr_request_tasks t SET lease_until = now() + make_interval(secs => $4), \
                   rows = $5, tables = $6 \
                 FROM dsr_requests r \
                 WHERE t.request_id = $1 AND t.source = $2 AND t.lease_owner = $3 \
                   AND t.ordinal = $7 AND t.state = 'running' AND r.id = t.request_id \
                 RETURNING r.state",
                &[
                    &request_id,
                    &source,
                    &owner,
                    &interval(lease),
                    &rows,
                    &tables,
                    &ordinal,
                ],
            )
            .await?;
        Ok(match row {
            None => Renewal::Lost,
            Some(row) if row.get::<_, String>(0) == "cancelled" => Renewal::Cancelled,
            Some(_) => Renewal::Held,
        })
    }

    /// Begins a transaction that holds the request's row lock: with `wait`, until it is free;
    /// without, `None` when another replica holds it. Returns the request and its tasks.
    /// [`ControlClient::commit`] ends it; a client whose transaction failed is dropped.
    pub async fn lock_request(
        &mut self,
        id: &str,
        wait: bool,
    ) -> Result<Option<RequestRow>, ControlError> {
        self.0.batch_execute("BEGIN").await?;
        self.1.store(true, Ordering::SeqCst);
        let row = self
            .0
            .query_opt(
                &format!(
                    "SELECT {REQUEST_COLUMNS} FROM dsr_requests WHERE id = $1 FOR UPDATE{}",
                    if wait { "" } else { " SKIP LOCKED" }
                ),
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            self.rollback().await?;
            return Ok(None);
        };
        let mut request = request_row(&row);
        request.tasks = self.tasks(id).await?;
        Ok(Some(request))
    }

    /// Inside [`ControlClient::lock_request`]: settles `owner`'s attempt at a task. `false`
    /// when `owner` no longer holds it (its lease ran out and another replica took it).
    pub async fn settle_task(
        &self,
        (request_id, source, ordinal): (&str, &str, i32),
        owner: &str,
        s: &Settlement,
    ) -> Result<bool, ControlError> {
        let changed = self
            .0
            .execute(
                "UPDATE dsr_request_tasks SET phase = $4, state = $5, \
                   not_before = COALESCE($6, now()), last_reason = $7, rows = $8, tables = $9, \
                   preview = COALESCE($10, preview), \
                   preview_digest = COALESCE($11, preview_digest), \
                   result = COALESCE($12, result), part = $13, \
                   retrying_since = CASE WHEN $14 THEN COALESCE(retrying_since, now()) END, \
                   lease_owner = NULL, lease_until = NULL \
                 WHERE request_id = $1 AND source = $2 AND lease_owner = $3 \
                   AND state = 'running' AND ordinal = $15",
                &[
                    &request_id,
                    &source,
                    &owner,
                    &s.phase,
                    &s.state,
                    &s.not_before,
                    &s.last_reason,
                    &s.rows,
                    &s.tables,
                    &s.preview,
                    &s.preview_digest,
                    &s.result,
                    &s.part,
                    &s.retrying,
                    &ordinal,
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    /// Inside [`ControlClient::lock_request`]: queues the tasks awaiting approval whose
    /// digests were approved (by the task's folder), for their erasure. Returns how many.
    pub async fn approve_tasks(
        &self,
        request_id: &str,
        approved: &[(String, String)],
    ) -> Result<u64, ControlError> {
        let (sources, digests): (Vec<&str>, Vec<&str>) = approved
            .iter()
            .map(|(s, d)| (s.as_str(), d.as_str()))
            .unzip();
        Ok(self
            .0
            .execute(
                "UPDATE dsr_request_tasks t SET phase = 'erase', state = 'queued', \
                   approved_digest = a.digest, not_before = now(), attempts = 0 \
                 FROM unnest($2::text[], $3::text[]) AS a(folder, digest) \
                 WHERE t.request_id = $1 AND t.folder = a.folder \
                   AND t.state = 'awaiting_approval' AND t.preview_digest = a.digest",
                &[&request_id, &sources, &digests],
            )
            .await?)
    }

    /// Inside [`ControlClient::lock_request`]: moves the request, and ends it when
    /// `update.finished` (its identity value is forgotten then).
    pub async fn update_request(
        &self,
        id: &str,
        update: &RequestUpdate,
    ) -> Result<(), ControlError> {
        self.0
            .execute(
                "UPDATE dsr_requests SET state = $2, updated = now(), \
                   finished = CASE WHEN $3 THEN COALESCE(finished, now()) END, \
                   identity_value = CASE WHEN $3 THEN NULL ELSE identity_value END, \
                   error = COALESCE($4, error), package_path = COALESCE($5, package_path), \
                   package_sha256 = COALESCE($6, package_sha256), \
                   package_expires = COALESCE($7, package_expires) \
                 WHERE id = $1",
                &[
                    &id,
                    &update.state,
                    &update.finished,
                    &update.error,
                    &update.package_path,
                    &update.package_sha256,
                    &update.package_expires,
                ],
            )
            .await?;
        if update.finished {
            self.0
                .execute(
                    "UPDATE dsr_request_tasks SET identity_value = NULL, more_identities = NULL \
                     WHERE request_id = $1",
                    &[&id],
                )
                .await?;
        }
        if update.cancel_open_tasks {
            self.0
                .execute(
                    "UPDATE dsr_request_tasks SET state = 'cancelled', lease_owner = NULL, \
                       lease_until = NULL \
                     WHERE request_id = $1 AND state NOT IN ('succeeded', 'failed')",
                    &[&id],
                )
                .await?;
        }
        Ok(())
    }

    /// Ends the transaction [`ControlClient::lock_request`] began.
    pub async fn commit(&self) -> Result<(), ControlError> {
        self.0.batch_execute("COMMIT").await?;
        self.1.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Abandons the transaction [`ControlClient::lock_request`] began.
    pub async fn rollback(&self) -> Result<(), ControlError> {
        self.0.batch_execute("ROLLBACK").await?;
        self.1.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// A transaction that `lock_request` began is still open: a step failed inside it.
    pub fn in_transaction(&self) -> bool {
        self.1.load(Ordering::SeqCst)
    }

    /// Open requests whose tasks have all ended, or that wait for nothing but their state to
    /// move (an erasure whose previews are all ready): the requests a worker must move.
    pub async fn requests_to_move(&self, limit: i64) -> Result<Vec<String>, ControlError> {
        Ok(self
            .0
            .query(
                "SELECT r.id FROM dsr_requests r WHERE r.finished IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM dsr_request_tasks t WHERE t.request_id = r.id \
                     AND t.state IN ('queued', 'running')) \
                   AND r.state <> 'awaiting_approval' \
                 ORDER BY r.updated LIMIT $1",
                &[&limit],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// Finished requests whose package's retention has passed.
    pub async fn expired_packages(&self, limit: i64) -> Result<Vec<String>, ControlError> {
        Ok(self
            .0
            .query(
                "SELECT id FROM dsr_requests WHERE package_expires < now() \
                   AND package_path IS NOT NULL ORDER BY package_expires LIMIT $1",
                &[&limit],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// Inside [`ControlClient::lock_request`]: the package was removed.
    pub async fn forget_package(&self, id: &str) -> Result<(), ControlError> {
        self.0
            .execute(
                "UPDATE dsr_requests SET package_path = NULL, package_expires = NULL, \
                   updated = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// Inside [`ControlClient::lock_request`]: removes a finished request and its tasks.
    pub async fn delete_request(&self, id: &str) -> Result<(), ControlError> {
        self.0
            .execute("DELETE FROM dsr_requests WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// For the gauges: requests per state, the earliest due time of an unfinished request,
    /// and the longest a task has been retrying.
    pub async fn request_gauges(&self) -> Result<RequestGauges, ControlError> {
        let states = self
            .0
            .query(
                "SELECT state, count(*) FROM dsr_requests GROUP BY state",
                &[],
            )
            .await?
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
            .collect();
        let row = self
            .0
            .query_one(
                "SELECT (SELECT extract(epoch FROM min(due_time) - now())::float8 \
                   FROM dsr_requests WHERE finished IS NULL), \
                 (SELECT extract(epoch FROM now() - min(t.retrying_since))::float8 \
                   FROM dsr_request_tasks t JOIN dsr_requests r ON r.id = t.request_id \
                   WHERE r.finished IS NULL AND t.retrying_since IS NOT NULL \
                     AND t.state IN ('queued', 'running'))",
                &[],
            )
            .await?;
        Ok(RequestGauges {
            states,
            earliest_due_secs: row.get(0),
            longest_retry_secs: row.get(1),
        })
    }
}

/// What the request gauges show.
#[derive(Debug, Default)]
pub struct RequestGauges {
    pub states: Vec<(String, i64)>,
    pub earliest_due_secs: Option<f64>,
    pub longest_retry_secs: Option<f64>,
}

/// A pool of control-database connections for the request API (each worker holds one of its
/// own for its transactions).
pub type ControlPool = bb8::Pool<ControlManager>;

/// Opens control connections for a [`ControlPool`].
pub struct ControlManager(pub Control);

impl ManageConnection for ControlManager {
    type Connection = ControlClient;
    type Error = ControlError;

    async fn connect(&self) -> Result<ControlClient, ControlError> {
        self.0.connect_only().await.map_err(ControlError::other)
    }

    async fn is_valid(&self, conn: &mut ControlClient) -> Result<(), ControlError> {
        conn.0.simple_query("").await?;
        Ok(())
    }

    /// A connection whose transaction a failed step left open is closed rather than reused.
    fn has_broken(&self, conn: &mut ControlClient) -> bool {
        conn.is_closed() || conn.in_transaction()
    }
}
