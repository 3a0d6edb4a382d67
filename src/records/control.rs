//! The control database: a PostgreSQL database that several replicas share for their records:
//! the audit log (one chain per replica, with its head) and the dead-letter queue. The
//! service creates the tables it needs. Each batch of records is one transaction, so a batch
//! is durable when it commits, or not there at all.

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::ControlConfig;
use crate::records::appender::{DurableTail, Line, Sink};

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
CREATE TABLE IF NOT EXISTS dsr_dead_letters (
    id bigserial PRIMARY KEY,
    letter jsonb NOT NULL
);
COMMIT;";

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

impl Control {
    pub fn new(cfg: &ControlConfig) -> Result<Control, String> {
        let url = cfg
            .url
            .clone()
            .ok_or("server.control: the connection string was not resolved")?;
        let tls = crate::store::postgres::tls::source_tls(cfg.ssl_mode, cfg.root_cert.as_deref())
            .map_err(|e| format!("server.control: {e}"))?;
        Ok(Control {
            url,
            tls: tls.connector,
        })
    }

    /// From a connection string given directly (the command-line tools).
    pub fn from_url(url: &str) -> Result<Control, String> {
        let tls = crate::store::postgres::tls::source_tls(crate::config::SslMode::Prefer, None)?;
        Ok(Control {
            url: SecretString::from(url.to_owned()),
            tls: tls.connector,
        })
    }

    /// Connects, drives the connection on the current runtime, and creates the tables.
    pub async fn connect(&self) -> Result<Client, String> {
        let client = self.connect_only().await?;
        client.batch_execute(SCHEMA_SQL).await.map_err(describe)?;
        Ok(client)
    }

    /// Connects and drives the connection on the current runtime, for a reader of tables a
    /// store opened (and so made) before.
    pub async fn connect_only(&self) -> Result<Client, String> {
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
        let (client, connection) = config.connect(self.tls.clone()).await.map_err(describe)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// Whether the server ended the connection: an operator's or a shutdown's termination
/// (class 57P, sent as the connection closes) or a connection exception (class 08).
fn connection_ended(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
}

/// Writes one batch in one transaction; `commit_sent` says whether its COMMIT went out.
async fn write_batch(
    client: &mut Client,
    table: &Table,
    batch: &[Line],
    commit_sent: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let txn = client.transaction().await?;
    let texts: Vec<&str> = batch.iter().map(|l| l.text.as_str()).collect();
    match table {
        Table::Audit { replica } => {
            let seqs: Vec<i64> = batch
                .iter()
                .map(|l| l.chain.as_ref().map(|(s, _)| *s as i64).unwrap_or(0))
                .collect();
            txn.execute(
                "INSERT INTO dsr_audit (replica, seq, line) \
                 SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS u(s, l)",
                &[replica, &seqs, &texts],
            )
            .await?;
            if let Some((seq, hash)) = batch.last().and_then(|l| l.chain.as_ref()) {
                txn.execute(
                    "INSERT INTO dsr_audit_head (replica, seq, hash) VALUES ($1, $2, $3) \
                     ON CONFLICT (replica) DO UPDATE SET seq = $2, hash = $3",
                    &[replica, &(*seq as i64), hash],
                )
                .await?;
            }
        }
        Table::DeadLetters => {
            txn.execute(
                "INSERT INTO dsr_dead_letters (letter) \
                 SELECT l::jsonb FROM unnest($1::text[]) AS u(l)",
                &[&texts],
            )
            .await?;
        }
    }
    *commit_sent = true;
    txn.commit().await
}

/// Which table a [`ControlSink`] writes.
#[derive(Debug, Clone)]
pub enum Table {
    /// The audit chain of one replica, with its head.
    Audit {
        replica: String,
    },
    DeadLetters,
}

/// A [`Sink`] into the control database, on a writer thread with a runtime of its own.
pub struct ControlSink {
    runtime: tokio::runtime::Runtime,
    control: Control,
    client: Client,
    table: Table,
}

impl ControlSink {
    /// Connects from the calling (writer) thread, which must not be inside a runtime.
    pub fn open(control: &Control, table: Table) -> Result<ControlSink, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = runtime.block_on(control.connect())?;
        Ok(ControlSink {
            runtime,
            control: control.clone(),
            client,
            table,
        })
    }

    /// Runs a query of the store's own on its connection (reading the chain's last record).
    pub fn block_on<T>(&self, work: impl AsyncFnOnce(&Client) -> T) -> T {
        self.runtime.block_on(work(&self.client))
    }
}

impl Sink for ControlSink {
    fn write(&mut self, batch: &[Line]) -> std::io::Result<()> {
        let mut reopened = false;
        loop {
            // A connection the database closed (a restart, a failover) is opened again; if
            // that fails, this batch fails and the next one tries again.
            if self.client.is_closed() {
                self.client = self
                    .runtime
                    .block_on(self.control.connect())
                    .map_err(std::io::Error::other)?;
            }
            let mut commit_sent = false;
            let written = self.runtime.block_on(write_batch(
                &mut self.client,
                &self.table,
                batch,
                &mut commit_sent,
            ));
            match written {
                Ok(()) => return Ok(()),
                // Lost before its COMMIT was sent, nothing of the batch is committed: a
                // connection dropped while idle (by a proxy, or the database) reads as open
                // until it is used, since this runtime runs only during a write. Once more,
                // on a new connection. (A lost COMMIT is the appender's to settle.)
                Err(e)
                    if !commit_sent
                        && !reopened
                        && (e.as_db_error().is_none() || connection_ended(&e)) =>
                {
                    reopened = true;
                    self.client = self
                        .runtime
                        .block_on(self.control.connect())
                        .map_err(std::io::Error::other)?;
                }
                Err(e) => {
                    return Err(std::io::Error::other(crate::store::postgres::describe(&e)));
                }
            }
        }
    }

    fn name(&self) -> String {
        match &self.table {
            Table::Audit { replica } => format!("control database (audit of {replica})"),
            Table::DeadLetters => "control database (dead letters)".to_owned(),
        }
    }

    /// The chain's last record and head as the database holds them: after a failed batch,
    /// its COMMIT may have gone through all the same (the connection dropped before the
    /// answer), and only the database can say.
    fn durable_tail(&mut self) -> Option<Result<DurableTail, String>> {
        let Table::Audit { replica } = &self.table else {
            return None;
        };
        if self.client.is_closed() {
            match self.runtime.block_on(self.control.connect()) {
                Ok(client) => self.client = client,
                Err(error) => return Some(Err(error)),
            }
        }
        Some(self.runtime.block_on(audit_end(&self.client, replica)))
    }
}

/// A control-database error, as the tools and logs say it.
pub(crate) fn describe(e: tokio_postgres::Error) -> String {
    format!("control database: {}", crate::store::postgres::describe(&e))
}

/// The head of one replica's chain: the last durable record's number and hash.
async fn audit_head(client: &Client, replica: &str) -> Result<Option<(u64, String)>, String> {
    Ok(client
        .query_opt(
            "SELECT seq, hash FROM dsr_audit_head WHERE replica = $1",
            &[&replica],
        )
        .await
        .map_err(describe)?
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1))))
}

/// The audit lines of one replica in order, and its head, from the control database.
pub async fn audit_lines(
    client: &Client,
    replica: &str,
) -> Result<(Vec<String>, Option<(u64, String)>), String> {
    let lines = client
        .query(
            "SELECT line FROM dsr_audit WHERE replica = $1 ORDER BY seq",
            &[&replica],
        )
        .await
        .map_err(describe)?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok((lines, audit_head(client, replica).await?))
}

/// The last audit line of one replica and its head: where its chain goes on.
pub async fn audit_end(
    client: &Client,
    replica: &str,
) -> Result<(Option<String>, Option<(u64, String)>), String> {
    let last = client
        .query_opt(
            "SELECT line FROM dsr_audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1",
            &[&replica],
        )
        .await
        .map_err(describe)?
        .map(|r| r.get::<_, String>(0));
    Ok((last, audit_head(client, replica).await?))
}

/// Every dead letter in the control database, oldest first, as JSON text.
pub async fn dead_letter_lines(client: &Client) -> Result<Vec<String>, String> {
    Ok(client
        .query("SELECT letter::text FROM dsr_dead_letters ORDER BY id", &[])
        .await
        .map_err(describe)?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect())
}
