//! The control database: a PostgreSQL database that several replicas share for their records:
//! the audit log (one chain per replica, with its head) and the dead-letter queue. The
//! service creates the tables it needs. Each batch of records is one transaction, so a batch
//! is durable when it commits, or not there at all. The SQL is the store's
//! ([`crate::store::postgres::control`]); when to write, reconnect and retry is decided here.

pub use crate::store::postgres::control::{Control, ControlClient};

use crate::records::appender::{DurableTail, Line, Sink};
use crate::store::postgres::control::ControlError;

/// Writes one batch to `table` in one transaction; `commit_sent` says whether its COMMIT went
/// out.
async fn write_batch(
    client: &mut ControlClient,
    table: &Table,
    batch: &[Line],
    commit_sent: &mut bool,
) -> Result<(), ControlError> {
    let texts: Vec<&str> = batch.iter().map(|l| l.text.as_str()).collect();
    match table {
        Table::Audit { replica } => {
            let seqs: Vec<i64> = batch
                .iter()
                .map(|l| l.chain.as_ref().map(|(s, _)| *s as i64).unwrap_or(0))
                .collect();
            let head = batch
                .last()
                .and_then(|l| l.chain.as_ref())
                .map(|(seq, hash)| (*seq, hash.as_str()));
            client
                .write_audit(replica, &seqs, &texts, head, commit_sent)
                .await
        }
        Table::DeadLetters => client.write_dead_letters(&texts, commit_sent).await,
    }
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
    client: ControlClient,
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
    pub fn block_on<T>(&self, work: impl AsyncFnOnce(&ControlClient) -> T) -> T {
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
                Err(e) if !commit_sent && !reopened && e.connection_lost() => {
                    reopened = true;
                    self.client = self
                        .runtime
                        .block_on(self.control.connect())
                        .map_err(std::io::Error::other)?;
                }
                Err(e) => {
                    return Err(std::io::Error::other(e.to_string()));
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
        Some(self.runtime.block_on(self.client.audit_end(replica)))
    }
}
