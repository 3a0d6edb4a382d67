//! An append-only JSON-lines file with group commit: records from many calls are written by
//! one thread, fsynced together, and each caller hears when its record is durable.
//!
//! What a line holds is up to a [`Lines`] implementation, which runs on the writer thread in
//! append order (the audit log chains each record to the one before). A write or fsync that
//! fails is rolled back: the file is cut back to its last durable length, and every caller of
//! that batch hears the error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

/// The most records written under one fsync.
const MAX_BATCH: usize = 256;

/// What a store makes of its items, on the writer thread.
pub trait Lines: Send + 'static {
    type Item: Send + 'static;
    /// The line for `item` (without its newline), and what its caller hears once it is
    /// durable. Called in append order; a failed batch is undone with [`Lines::rollback`].
    fn line(&mut self, item: Self::Item) -> (String, String);
    /// The batch is durable: make its state the committed one (the audit log writes its head).
    fn commit(&mut self) -> std::io::Result<()>;
    /// The batch failed: return to the last committed state.
    fn rollback(&mut self);
}

type Ack = oneshot::Sender<Result<String, String>>;

/// A handle to the writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Appender<T: Send + 'static> {
    tx: mpsc::UnboundedSender<(T, Option<Ack>)>,
    path: PathBuf,
}

impl<T: Send + 'static> Appender<T> {
    /// Opens `path` for appending (after `len` durable bytes: anything past them, such as a
    /// line torn by a crash, is cut off) and starts the writer thread.
    pub fn start<L: Lines<Item = T>>(path: &Path, len: u64, lines: L) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.set_len(len)?;
        file.sync_all()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let name = path.display().to_string();
        std::thread::Builder::new()
            .name("dsr-appender".into())
            .spawn(move || write_loop(file, len, lines, rx, &name))?;
        Ok(Appender {
            tx,
            path: path.to_owned(),
        })
    }

    /// Appends `item` and waits until it is durable. Returns what the store's [`Lines`] said
    /// of it (the audit log: the record's sequence number and hash).
    pub async fn append(&self, item: T) -> Result<String, String> {
        let (ack, heard) = oneshot::channel();
        self.tx
            .send((item, Some(ack)))
            .map_err(|_| format!("{}: the writer has stopped", self.path.display()))?;
        heard
            .await
            .map_err(|_| format!("{}: the writer has stopped", self.path.display()))?
    }

    /// Appends `item` without waiting (for callers that cannot wait, such as an interceptor).
    pub fn append_nowait(&self, item: T) {
        let _ = self.tx.send((item, None));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_loop<L: Lines>(
    mut file: File,
    mut durable: u64,
    mut lines: L,
    mut rx: mpsc::UnboundedReceiver<(L::Item, Option<Ack>)>,
    name: &str,
) {
    use std::io::Seek;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut text = String::new();
        let mut acks = Vec::with_capacity(batch.len());
        for (item, ack) in batch {
            let (line, said) = lines.line(item);
            text.push_str(&line);
            text.push('\n');
            acks.push((ack, said));
        }
        let written = file
            .seek(std::io::SeekFrom::Start(durable))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_data())
            .and_then(|_| lines.commit());
        match written {
            Ok(()) => {
                durable += text.len() as u64;
                for (ack, said) in acks {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(said));
                    }
                }
            }
            Err(e) => {
                lines.rollback();
                let _ = file.set_len(durable);
                tracing::error!(store = %name, error = %e, records = acks.len(),
                    "cannot write to the store; the records of this batch were not kept");
                for (ack, _) in acks {
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(format!("{name}: {e}")));
                    }
                }
            }
        }
    }
}
