//! The control database's SQL: the PostgreSQL database that replicas share for their records
//! (each replica's audit chain with its head, and the dead letters) and for durable requests
//! (`requests`). The records' sinks
//! (`records::control`) decide when to write and how to recover; this is how.

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::ControlConfig;

/// The tables, created when a store opens. Replicas that start together run this at the same
/// time, and concurrent `CREATE TABLE IF NOT EXISTS` races in PostgreSQL (one of them fails
/// with "already exists" or a duplicate `pg_type` key), so a transaction-scoped advisory lock
/// serialises it: the second replica waits, then finds the tables there.
const SCHEMA_SQL: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(hashtext('dsr-connector control schema'));
CREATE TABLE IF NOT EXISTS dsr_audit (
    replica text NOT NULL,
    seq bigint NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (replica, seq)
);
CREATE TABLE IF NOT EXISTS dsr_audit_head (
    replica text PRIMARY KEY,
    seq bigint NOT NULL,
    hash text NOT NULL
);
CREATE TABLE IF NOT EXISTS dsr_audit_unsettling (
    replica text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (replica, seq)
);
CREATE TABLE IF NOT EXISTS dsr_dead_letters (
    id bigserial PRIMARY KEY,
    letter jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS dsr_requests (
    id text PRIMARY KEY,
    kind text NOT NULL,
    submitter text NOT NULL,
    state text NOT NULL,
    identity_kind text NOT NULL,
    identity_value text,
    compliance_tag text NOT NULL,
    fingerprint text NOT NULL,
    due_time timestamptz NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now(),
    finished timestamptz,
    error bytea,
    package_path text,
    package_sha256 text,
    package_expires timestamptz
);
CREATE INDEX IF NOT EXISTS dsr_requests_open ON dsr_requests (due_time)
    WHERE finished IS NULL;
CREATE TABLE IF NOT EXISTS dsr_request_tasks (
    request_id text NOT NULL REFERENCES dsr_requests (id) ON DELETE CASCADE,
    source text NOT NULL,
    ordinal integer NOT NULL DEFAULT 0,
    identity_kind text NOT NULL,
    identity_value text,
    more_identities text,
    path text NOT NULL DEFAULT '',
    hops integer NOT NULL DEFAULT 0,
    folder text NOT NULL,
    phase text NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT now(),
    retrying_since timestamptz,
    lease_owner text,
    lease_until timestamptz,
    rows bigint NOT NULL DEFAULT 0,
    tables integer NOT NULL DEFAULT 0,
    last_reason text NOT NULL DEFAULT '',
    preview bytea,
    preview_digest text NOT NULL DEFAULT '',
    approved_digest text NOT NULL DEFAULT '',
    result bytea,
    part text NOT NULL DEFAULT '',
    PRIMARY KEY (request_id, source, ordinal)
);
CREATE INDEX IF NOT EXISTS dsr_request_tasks_ready ON dsr_request_tasks (not_before)
    WHERE state IN ('queued', 'running');
-- Added after the table first shipped.
ALTER TABLE dsr_request_tasks ADD COLUMN IF NOT EXISTS more_identities text;
COMMIT;";

/// How an audit record whose erasure's COMMIT had an unknown outcome (`unknown`), or one that
/// settles such an erasure (`settled`), reads in its line.
pub const UNSETTLING: [&str; 2] = ["\"outcome\":\"unknown\"", "\"outcome\":\"settled\""];

/// Limits of the control connection unless its connection string sets them: a database that
/// does not answer must fail a batch (which is retried) rather than hang the writer.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
const STATEMENT_TIMEOUT_OPTION: &str = "-c statement_timeout=30s";

/// How to reach the control database.
#[derive(Clone)]
pub struct Control {
    url: SecretString,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control { url: [REDACTED] }")
    }
}

/// A control-database error.
#[derive(Debug)]
pub struct ControlError(Failure);

#[derive(Debug)]
enum Failure {
    Database(tokio_postgres::Error),
    /// No connection could be made (the reason, already described).
    Connect(String),
}

impl ControlError {
    /// No connection could be made.
    pub fn other(reason: String) -> ControlError {
        ControlError(Failure::Connect(reason))
    }

    /// The connection failed or closed, rather than the database refusing a statement:
    /// without an answer, or with the server ending the connection (an operator's or a
    /// shutdown's termination, class 57P, or a connection exception, class 08).
    pub fn connection_lost(&self) -> bool {
        match &self.0 {
            Failure::Database(e) => {
                e.as_db_error().is_none()
                    || e.code()
                        .is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
            }
            Failure::Connect(_) => true,
        }
    }

    /// No answer came at all (the connection was gone before the database could say).
    pub fn unanswered(&self) -> bool {
        match &self.0 {
            Failure::Database(e) => e.as_db_error().is_none(),
            Failure::Connect(_) => true,
        }
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Failure::Database(e) => write!(f, "control database: {}", super::describe(e)),
            Failure::Connect(reason) => f.write_str(reason),
        }
    }
}

impl From<tokio_postgres::Error> for ControlError {
    fn from(error: tokio_postgres::Error) -> ControlError {
        ControlError(Failure::Database(error))
    }
}

fn described(error: tokio_postgres::Error) -> String {
    ControlError::from(error).to_string()
}

impl Control {
    pub fn new(cfg: &ControlConfig) -> Result<Control, String> {
        let url = cfg
            .url
            .clone()
            .ok_or("server.control: the connection string was not resolved")?;
        let tls = super::tls::source_tls(cfg.ssl_mode, cfg.root_cert.as_deref())
            .map_err(|e| format!("server.control: {e}"))?;
        Ok(Control {
            url,
            tls: tls.connector,
        })
    }

    /// From a connection string given directly (the command-line tools).
    pub fn from_url(url: &str) -> Result<Control, String> {
        let tls = super::tls::source_tls(crate::config::SslMode::Prefer, None)?;
        Ok(Control {
            url: SecretString::from(url.to_owned()),
            tls: tls.connector,
        })
    }

    /// Connects, drives the connection on the current runtime, and creates the tables.
    pub async fn connect(&self) -> Result<ControlClient, String> {
        let client = self.connect_only().await?;
        client
            .0
            .batch_execute(SCHEMA_SQL)
            .await
            .map_err(described)?;
        Ok(client)
    }

    /// Connects and drives the connection on the current runtime, for a reader of tables a
    /// store opened (and so made) before.
    pub async fn connect_only(&self) -> Result<ControlClient, String> {
        let mut config: tokio_postgres::Config = self
            .url
            .expose_secret()
            .parse()
            .map_err(|e| format!("server.control: not a valid connection string: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true);
        if config.get_keepalives_idle() > KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_options().is_none() {
            config.options(STATEMENT_TIMEOUT_OPTION);
        }
        let (client, connection) = config.connect(self.tls.clone()).await.map_err(described)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(ControlClient(client, Default::default()))
    }
}

/// One connection to the control database; the flag says whether a transaction that
/// `lock_request` began is still open on it.
pub struct ControlClient(pub(super) Client, pub(super) std::sync::atomic::AtomicBool);

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlClient")
    }
}

impl ControlClient {
    /// The database (or a proxy) closed the connection.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Appends `lines` (numbered `seqs`) to the audit chain of `replica`, and moves its head
    /// to `head`, in one transaction; `commit_sent` says whether its COMMIT went out.
    pub async fn write_audit(
        &mut self,
        replica: &str,
        seqs: &[i64],
        lines: &[&str],
        head: Option<(u64, &str)>,
        commit_sent: &mut bool,
    ) -> Result<(), ControlError> {
        let txn = self.0.transaction().await?;
        txn.execute(
            "INSERT INTO dsr_audit (replica, seq, line) \
             SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS u(s, l)",
            &[&replica, &seqs, &lines],
        )
        .await?;
        // The `unknown` and `settled` records are also listed apart, in the same
        // transaction, so that every erasure can look for them without reading the chain.
        let unsettling: Vec<i64> = seqs
            .iter()
            .zip(lines)
            .filter(|(_, line)| UNSETTLING.iter().any(|u| line.contains(u)))
            .map(|(seq, _)| *seq)
            .collect();
        if !unsettling.is_empty() {
            txn.execute(
                "INSERT INTO dsr_audit_unsettling (replica, seq) SELECT $1, unnest($2::bigint[])",
                &[&replica, &unsettling],
            )
            .await?;
        }
        if let Some((seq, hash)) = head {
            txn.execute(
                "INSERT INTO dsr_audit_head (replica, seq, hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (replica) DO UPDATE SET seq = $2, hash = $3",
                &[&replica, &(seq as i64), &hash],
            )
            .await?;
        }
        *commit_sent = true;
        Ok(txn.commit().await?)
    }

    /// Appends dead letters (JSON texts) in one transaction; `commit_sent` says whether its
    /// COMMIT went out.
    pub async fn write_dead_letters(
        &mut self,
        letters: &[&str],
        commit_sent: &mut bool,
    ) -> Result<(), ControlError> {
        let txn = self.0.transaction().await?;
        txn.execute(
            "INSERT INTO dsr_dead_letters (letter) \
             SELECT l::jsonb FROM unnest($1::text[]) AS u(l)",
            &[&letters],
        )
        .await?;
        *commit_sent = true;
        Ok(txn.commit().await?)
    }

    /// The head of one replica's chain: the last durable record's number and hash.
    async fn audit_head(&self, replica: &str) -> Result<Option<(u64, String)>, String> {
        Ok(self
            .0
            .query_opt(
                "SELECT seq, hash FROM dsr_audit_head WHERE replica = $1",
                &[&replica],
            )
            .await
            .map_err(described)?
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1))))
    }

    /// The audit lines of one replica in order, and its head.
    pub async fn audit_lines(
        &self,
        replica: &str,
    ) -> Result<(Vec<String>, Option<(u64, String)>), String> {
        let lines = self
            .0
            .query(
                "SELECT line FROM dsr_audit WHERE replica = $1 ORDER BY seq",
                &[&replica],
            )
            .await
            .map_err(described)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok((lines, self.audit_head(replica).await?))
    }

    /// The last audit line of one replica and its head: where its chain goes on.
    pub async fn audit_end(
        &self,
        replica: &str,
    ) -> Result<(Option<String>, Option<(u64, String)>), String> {
        let last = self
            .0
            .query_opt(
                "SELECT line FROM dsr_audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1",
                &[&replica],
            )
            .await
            .map_err(described)?
            .map(|r| r.get::<_, String>(0));
        Ok((last, self.audit_head(replica).await?))
    }

    /// The Erase records among the last `tail` records of every replica's chain that contain
    /// `subject_id`.
    pub async fn recent_erasure_lines(
        &self,
        subject_id: &str,
        tail: i64,
    ) -> Result<Vec<String>, ControlError> {
        Ok(self
            .0
            .query(
                "SELECT recent.line FROM dsr_audit_head h \
                 CROSS JOIN LATERAL (SELECT a.line FROM dsr_audit a \
                   WHERE a.replica = h.replica ORDER BY a.seq DESC LIMIT $2) recent \
                 WHERE strpos(recent.line, $1) > 0 \
                   AND strpos(recent.line, '\"rpc\":\"Erase\"') > 0",
                &[&subject_id, &tail],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }

    /// Every replica's `unknown` and `settled` records that contain `subject_id`, oldest
    /// first: read through the list of those records alone.
    pub async fn unsettling_lines(&self, subject_id: &str) -> Result<Vec<String>, ControlError> {
        Ok(self
            .0
            .query(
                "SELECT a.line FROM dsr_audit_unsettling u \
                 JOIN dsr_audit a ON a.replica = u.replica AND a.seq = u.seq \
                 WHERE strpos(a.line, $1) > 0 \
                 ORDER BY (a.line::jsonb ->> 'time'), a.replica, a.seq",
                &[&subject_id],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }

    /// Every dead letter, oldest first, as JSON text.
    pub async fn dead_letter_lines(&self) -> Result<Vec<String>, String> {
        Ok(self
            .0
            .query("SELECT letter::text FROM dsr_dead_letters ORDER BY id", &[])
            .await
            .map_err(described)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }
}
