//! Append-only records with group commit: records from many calls are written by one thread,
//! made durable together, and each caller hears when its record is durable.
//!
//! What a record says is up to a [`Lines`] implementation, which runs on the writer thread in
//! append order (the audit log chains each record to the one before). Where it goes is up to
//! a [`Sink`]: a JSON-lines file fsynced per batch ([`FileSink`], the embedded default), or a
//! table of a PostgreSQL control database committed per batch ([`crate::records::control`], for
//! several replicas). A batch that fails is undone in both, and every caller of that batch
//! hears the error.
//!
//! A file is written in segments: once the one being written holds [`Segments::max_bytes`]
//! or was begun [`Segments::max_age`] ago, it is closed under a name of its own
//! (`<file>.<UTC time it was closed>`, which sorts in order) and an empty file is begun
//! under the file's name, between two batches. A store may open each segment with a record
//! of its own ([`Lines::segment_opened`]: the audit log names the closed segment there), and
//! closed segments older than [`Segments::retention`] are removed (dead letters; the audit
//! log keeps them all).

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

/// The most records made durable together.
const MAX_BATCH: usize = 256;

/// The most records waiting for the writer. Callers that wait for durability wait for room
/// too; a record that must not wait ([`Appender::append_pending`]) fails when it is full.
const QUEUE: usize = 4096;

/// A record ready to be written: its line (JSON, without a newline) and, for a chain, its
/// sequence number and hash.
#[derive(Debug, Clone)]
pub struct Line {
    pub text: String,
    pub chain: Option<(u64, String)>,
}

/// What a store makes of its items, on the writer thread.
pub trait Lines: Send + 'static {
    type Item: Send + 'static;
    /// The record for `item`, and what its caller hears once it is durable. Called in append
    /// order; a failed batch is undone with [`Lines::rollback`].
    fn line(&mut self, item: Self::Item) -> (Line, String);
    /// The batch is durable.
    fn commit(&mut self);
    /// The batch failed: return to the last committed state.
    fn rollback(&mut self);
    /// After a failed batch, the store's own account of what is durable (see
    /// [`Sink::durable_tail`]): take it as the last committed state.
    fn resync(&mut self, _tail: DurableTail) -> Result<(), String> {
        Ok(())
    }
    /// The record that opens a new segment, begun after the segment named `closed`; none by
    /// default.
    fn segment_opened(&mut self, _closed: &str) -> Option<Self::Item> {
        None
    }
}

/// A store's last durable record (its line) and its head (sequence number and hash).
pub type DurableTail = (Option<String>, Option<(u64, String)>);

/// Where records go. `write` makes a batch durable, in order, or leaves none of it behind.
pub trait Sink: Send + 'static {
    fn write(&mut self, batch: &[Line]) -> std::io::Result<()>;
    /// What logs and errors call this store.
    fn name(&self) -> String;
    /// After a failed batch, what the store itself holds as durable, where it can say: a
    /// database whose COMMIT was cut off may hold the batch after all. `None` when the local
    /// rollback is exact (a file, cut back to its durable length).
    fn durable_tail(&mut self) -> Option<Result<DurableTail, String>> {
        None
    }
    /// Whether the segment being written is full (by size or age): the writer closes it
    /// before its next batch. A store without segments never is.
    fn segment_full(&self) -> bool {
        false
    }
    /// Closes the segment being written, under a name of its own, and begins an empty one;
    /// returns the closed segment's name.
    fn rotate(&mut self) -> std::io::Result<String> {
        Err(std::io::Error::other("this store has no segments"))
    }
}

type Ack = oneshot::Sender<Result<String, String>>;

/// What the caller of [`Appender::append_pending`] awaits: the record is durable, or why not.
pub type Pending = oneshot::Receiver<Result<String, String>>;

/// A record for the writer, or (without one) a flush marker whose ack says that everything
/// queued before it was written or failed.
type Queued<T> = (Option<T>, Option<Ack>);

/// A handle to the writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Appender<T: Send + 'static> {
    tx: mpsc::Sender<Queued<T>>,
    name: String,
}

impl<T: Send + 'static> Appender<T> {
    /// Starts the writer thread over `sink`.
    pub fn start<L: Lines<Item = T>, S: Sink>(sink: S, lines: L) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let name = sink.name();
        std::thread::Builder::new()
            .name("dsr-appender".into())
            .spawn(move || write_loop(sink, lines, rx))?;
        Ok(Appender { tx, name })
    }

    /// Appends `item` and waits until it is durable. Returns what the store's [`Lines`] said
    /// of it (the audit log: the record's sequence number and hash).
    pub async fn append(&self, item: T) -> Result<String, String> {
        let (ack, heard) = oneshot::channel();
        self.tx
            .send((Some(item), Some(ack)))
            .await
            .map_err(|_| format!("{}: the writer has stopped", self.name))?;
        self.heard(heard).await
    }

    /// Appends `item` and returns at once what says when it is durable, for a caller that
    /// goes on working and waits later (before it answers).
    pub fn append_pending(&self, item: T) -> Result<Pending, String> {
        let (ack, heard) = oneshot::channel();
        self.tx
            .try_send((Some(item), Some(ack)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("{}: {QUEUE} records wait for the writer already", self.name)
                }
                mpsc::error::TrySendError::Closed(_) => {
                    format!("{}: the writer has stopped", self.name)
                }
            })?;
        Ok(heard)
    }

    /// Waits for a pending record.
    pub async fn heard(&self, pending: Pending) -> Result<String, String> {
        pending
            .await
            .map_err(|_| format!("{}: the writer has stopped", self.name))?
    }

    /// Waits until everything queued so far was written (or failed): at shutdown, nothing
    /// queued is left behind in memory.
    pub async fn flush(&self) {
        let (ack, heard) = oneshot::channel();
        if self.tx.send((None, Some(ack))).await.is_ok() {
            let _ = heard.await;
        }
    }

    /// What logs and errors call this store.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn write_loop<L: Lines, S: Sink>(
    mut sink: S,
    mut lines: L,
    mut rx: mpsc::Receiver<Queued<L::Item>>,
) {
    let name = sink.name();
    // The segment begun last, until a batch that opens it with its record is durable.
    let mut opened: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        if sink.segment_full() {
            match sink.rotate() {
                Ok(closed) => {
                    tracing::info!(store = %name, segment = %closed, "segment closed, a new one begun");
                    opened = Some(closed);
                }
                // The records go on into the full segment; the next batch tries again.
                Err(e) => tracing::error!(store = %name, error = %e,
                    "cannot close the segment being written; records go on into it"),
            }
        }
        let mut items = Vec::new();
        if let Some(closed) = &opened
            && let Some(item) = lines.segment_opened(closed)
        {
            items.push((Some(item), None));
        }
        items.push(first);
        while items.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => items.push(next),
                Err(_) => break,
            }
        }
        let mut batch = Vec::with_capacity(items.len());
        let mut acks = Vec::with_capacity(items.len());
        for (item, ack) in items {
            match item {
                Some(item) => {
                    let (line, said) = lines.line(item);
                    batch.push(line);
                    acks.push((ack, said));
                }
                // A flush marker: acknowledged with the batch that holds what came before.
                None => acks.push((ack, String::new())),
            }
        }
        let written = if batch.is_empty() {
            Ok(())
        } else {
            sink.write(&batch)
        };
        match written {
            Ok(()) => {
                lines.commit();
                if !batch.is_empty() {
                    opened = None;
                }
                for (ack, said) in acks {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(said));
                    }
                }
            }
            Err(e) => {
                lines.rollback();
                // The store may hold more than the rollback assumes (a COMMIT whose answer
                // was lost): go on from what it holds, or the next batch would reuse its
                // sequence numbers for ever.
                if let Some(tail) = sink.durable_tail()
                    && let Err(error) = tail.and_then(|tail| lines.resync(tail))
                {
                    tracing::error!(store = %name, %error,
                        "cannot read back the store's last durable record; the next batch tries again");
                }
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

/// The end of a JSON-lines file, read backwards from its end: whatever the file's size, only
/// its last complete line is held in memory.
#[derive(Debug, Default)]
pub struct Tail {
    /// The bytes up to and with the last newline: what a crash left whole.
    pub durable: u64,
    /// The file's length; more than `durable` when its last line was torn.
    pub len: u64,
    /// The last complete line, without its newline.
    pub last_line: Option<Vec<u8>>,
}

impl Tail {
    /// The longest last line read: a longer one is not a record.
    const MAX_LINE: u64 = 1024 * 1024;

    pub fn of(path: &Path) -> std::io::Result<Tail> {
        use std::io::Read;
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tail::default()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        // The positions of the last two newlines, searched backwards in chunks.
        let mut newlines: Vec<u64> = Vec::with_capacity(2);
        let mut end = len;
        let mut chunk = vec![0u8; 64 * 1024];
        while end > 0 && newlines.len() < 2 {
            let start = end.saturating_sub(chunk.len() as u64);
            let buf = &mut chunk[..(end - start) as usize];
            file.seek(std::io::SeekFrom::Start(start))?;
            file.read_exact(buf)?;
            for (i, b) in buf.iter().enumerate().rev() {
                if *b == b'\n' {
                    newlines.push(start + i as u64);
                    if newlines.len() == 2 {
                        break;
                    }
                }
            }
            end = start;
            if newlines.len() == 1 && newlines[0] - end > Self::MAX_LINE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: its last line is longer than any record",
                        path.display()
                    ),
                ));
            }
        }
        let Some(&last) = newlines.first() else {
            return Ok(Tail {
                durable: 0,
                len,
                last_line: None,
            });
        };
        let from = newlines.get(1).map(|p| p + 1).unwrap_or(0);
        let mut line = vec![0u8; (last - from) as usize];
        file.seek(std::io::SeekFrom::Start(from))?;
        file.read_exact(&mut line)?;
        Ok(Tail {
            durable: last + 1,
            len,
            last_line: Some(line),
        })
    }
}

/// When a file's segment is closed and a new one begun, and how long closed segments are
/// kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segments {
    /// Close a segment once it holds this many bytes (0: never by size).
    pub max_bytes: u64,
    /// Close a segment once it was begun this long ago.
    pub max_age: Option<Duration>,
    /// Remove closed segments last written longer ago than this (`None`: keep them all).
    pub retention: Option<Duration>,
}

/// A JSON-lines file, fsynced per batch; for a chain, a head file beside it holds the last
/// durable record's number and hash. Written in segments when it has [`Segments`].
pub struct FileSink {
    file: File,
    path: PathBuf,
    durable: u64,
    head: Option<PathBuf>,
    segments: Option<Segments>,
    /// When the segment being written was begun (its file's birth, where the file system
    /// keeps it).
    begun: SystemTime,
}

impl FileSink {
    /// Opens `path` for appending after its first `len` bytes (anything past them, such as a
    /// line torn by a crash, is cut off). With `head`, each batch also replaces that file.
    /// The directory is fsynced too: a file made here keeps its name after a power loss, as
    /// its fsynced records do.
    pub fn open(path: &Path, len: u64, head: Option<PathBuf>) -> std::io::Result<FileSink> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.set_len(len)?;
        file.sync_all()?;
        File::open(directory_of(path))?.sync_all()?;
        let begun = file
            .metadata()
            .and_then(|m| m.created())
            .unwrap_or_else(|_| SystemTime::now());
        // A segment begun by a rotation that a crash cut short.
        let _ = std::fs::remove_file(next_segment_path(path));
        Ok(FileSink {
            file,
            path: path.to_owned(),
            durable: len,
            head,
            segments: None,
            begun,
        })
    }

    /// Writes in segments, as `segments` says.
    pub fn with_segments(mut self, segments: Segments) -> FileSink {
        self.segments = Some(segments);
        self
    }

    /// Removes the closed segments last written longer ago than `retention`, and says how
    /// many and how many records they held.
    fn prune(&self, retention: Duration) {
        let old = match closed_segments(&self.path) {
            Ok(all) => all.into_iter().filter(|segment| {
                std::fs::metadata(segment)
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > retention))
            }),
            Err(e) => {
                tracing::error!(store = %self.path.display(), error = %e,
                    "cannot list the closed segments to prune");
                return;
            }
        };
        let (mut segments, mut records) = (0u64, 0u64);
        for segment in old.collect::<Vec<_>>() {
            let lines = count_lines(&segment);
            match std::fs::remove_file(&segment) {
                Ok(()) => {
                    segments += 1;
                    records += lines.unwrap_or(0);
                }
                Err(e) => tracing::error!(segment = %segment.display(), error = %e,
                    "cannot remove a segment past its retention"),
            }
        }
        if segments > 0 {
            let _ = File::open(directory_of(&self.path)).and_then(|d| d.sync_all());
            tracing::info!(store = %self.path.display(), segments, records,
                retention_s = retention.as_secs(), "closed segments past their retention removed");
        }
    }

    /// The length of the complete lines of a file (0 when it does not exist).
    pub fn complete_len(path: &Path) -> std::io::Result<u64> {
        Ok(Tail::of(path)?.durable)
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &[Line]) -> std::io::Result<()> {
        let mut text = String::new();
        for line in batch {
            text.push_str(&line.text);
            text.push('\n');
        }
        let written = self
            .file
            .seek(std::io::SeekFrom::Start(self.durable))
            .and_then(|_| self.file.write_all(text.as_bytes()))
            .and_then(|_| self.file.sync_data())
            .and_then(
                |_| match (&self.head, batch.last().and_then(|l| l.chain.as_ref())) {
                    (Some(head), Some((seq, hash))) => write_head(head, *seq, hash),
                    _ => Ok(()),
                },
            );
        match written {
            Ok(()) => {
                self.durable += text.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.durable);
                Err(e)
            }
        }
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn segment_full(&self) -> bool {
        let Some(segments) = self.segments else {
            return false;
        };
        self.durable > 0
            && ((segments.max_bytes > 0 && self.durable >= segments.max_bytes)
                || segments
                    .max_age
                    .is_some_and(|age| self.begun.elapsed().is_ok_and(|was| was >= age)))
    }

    /// The new segment's file is made first (beside the log), then the full one is renamed
    /// to its closed name and the new one to the log's, and the directory fsynced: a crash
    /// in between leaves the closed segment whole and no log file, which opening takes as an
    /// empty segment after it.
    fn rotate(&mut self) -> std::io::Result<String> {
        let next = next_segment_path(&self.path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&next)?;
        file.sync_all()?;
        let closed = closed_name(&self.path);
        std::fs::rename(&self.path, &closed)?;
        if let Err(e) = std::fs::rename(&next, &self.path) {
            // Undone: the full segment goes on under the log's name.
            let _ = std::fs::rename(&closed, &self.path);
            return Err(e);
        }
        File::open(directory_of(&self.path))?.sync_all()?;
        self.file = file;
        self.durable = 0;
        self.begun = SystemTime::now();
        if let Some(retention) = self.segments.and_then(|s| s.retention) {
            self.prune(retention);
        }
        Ok(closed
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default())
    }
}

/// Where a new segment is made before it takes the log's name.
fn next_segment_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    directory_of(path).join(format!(".{name}.next"))
}

/// A free name for the segment of `path` closed now: `<file>.<UTC time, to the
/// millisecond>`, with `-<n>` added should two segments close within one millisecond.
fn closed_name(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let base = format!("{}.{stamp}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// The closed segments of the file at `path`, oldest first (by their names, which sort by the
/// time they were closed).
pub fn closed_segments(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(directory_of(path))? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(stamp) = file.strip_prefix(&prefix) else {
            continue;
        };
        // `20261206T131500.123Z`, perhaps with `-<n>`.
        let looks_closed = stamp.len() >= 20
            && stamp.as_bytes()[..8].iter().all(u8::is_ascii_digit)
            && stamp.as_bytes()[8] == b'T';
        if looks_closed && entry.file_type()?.is_file() {
            found.push(entry.path());
        }
    }
    found.sort_by_key(|path| segment_order(path));
    Ok(found)
}

/// A closed segment's place: its time, then its `-<n>`.
fn segment_order(path: &Path) -> (String, u64) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('Z') {
        Some((time, rest)) => (
            time.to_owned(),
            rest.strip_prefix('-')
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        ),
        None => (name, 0),
    }
}

/// How many lines a file holds, read in chunks.
fn count_lines(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        let read = file.read(&mut chunk)?;
        if read == 0 {
            return Ok(lines);
        }
        lines += chunk[..read].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// The directory that holds `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces a head file atomically: a new temporary file beside it, fsynced, persisted over
/// the old one (a rename), and then the directory fsynced, so that the rename itself survives
/// a crash. A crash before the rename leaves the old head and no stray file behind.
fn write_head(path: &Path, seq: u64, hash: &str) -> std::io::Result<()> {
    let dir = directory_of(path);
    let mut file = tempfile::Builder::new().prefix(".head-").tempfile_in(dir)?;
    file.write_all(
        serde_json::json!({ "seq": seq, "hash": hash })
            .to_string()
            .as_bytes(),
    )?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}
