//! Earlier erasures of a subject, as the audit log records them: the latest committed one,
//! which an erasure that finds nothing left points to, and one whose COMMIT's outcome is
//! unknown, which the next erasure of the subject settles. Only the recent records are read
//! (a bounded tail), line by line, so memory stays one line and the time a bounded read,
//! whatever the log's length; the committed one only when an erasure found nothing.

use std::io::BufRead;
use std::path::PathBuf;

use super::{AuditLog, Entry, Record};
use crate::records::control::{Control, ControlClient};
use crate::store::postgres::control::UNSETTLING;

/// Where a log's records can be read back.
#[derive(Clone, Debug)]
pub(super) enum Store {
    File(PathBuf),
    /// Every replica's chain in the control database, read on one connection kept for it
    /// (the store made the tables when it opened).
    Control(Control, Reader),
}

/// The `unknown` and `settled` records of a log file, read at the first lookup and kept
/// current as this process writes them (`None` until then).
pub(super) type Unsettling = std::sync::Arc<tokio::sync::Mutex<Option<Vec<Entry>>>>;

/// The control database connection of the lookups, opened at the first and kept; opened
/// again after the database closed it.
pub(super) type Reader = std::sync::Arc<tokio::sync::Mutex<Option<ControlClient>>>;

/// An earlier erasure of the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierErasure {
    pub erasure_id: String,
    pub request_id: String,
    /// When its completion record was written, just after its COMMIT (RFC 3339).
    pub recorded_at: String,
}

/// An earlier erasure of the subject whose COMMIT's outcome is unknown, and that no later
/// record settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsettledErasure {
    pub erasure_id: String,
    /// Its transaction in the source, as its records name it.
    pub transaction: String,
}

/// How far back the search reads: the last 64 MiB of a log file, or the last 200,000 records of
/// each replica's chain. An erasure older than that is not pointed to.
const FILE_TAIL_BYTES: u64 = 64 * 1024 * 1024;
const CONTROL_TAIL_RECORDS: i64 = 200_000;

impl AuditLog {
    /// The latest erasure of `subject_id` in `source` that committed and changed rows, among the
    /// recent records ([`FILE_TAIL_BYTES`] of this replica's file, or
    /// [`CONTROL_TAIL_RECORDS`] of each replica's chain in the control database).
    pub async fn latest_erasure(
        &self,
        source: &str,
        subject_id: &str,
    ) -> Result<Option<EarlierErasure>, String> {
        let records = self.erasures_of(source, subject_id).await?;
        Ok(records
            .into_iter()
            .filter(|r| r.body.entry.outcome == "ok" && r.body.entry.row_count > 0)
            .map(|r| EarlierErasure {
                erasure_id: r.body.entry.extraction_id,
                request_id: r.body.entry.request_id,
                recorded_at: r.body.time,
            })
            .max_by(|a, b| a.recorded_at.cmp(&b.recorded_at)))
    }

    /// The latest erasure of `subject_id` in `source` whose COMMIT's outcome is unknown and
    /// that no `settled` record names. Asked by every erasure, so only `unknown` and
    /// `settled` records are read: on a file, its recent records once per process (this
    /// process keeps the list as it writes); in the control database, through the list of
    /// those records kept beside the chain.
    pub async fn unsettled_erasure(
        &self,
        source: &str,
        subject_id: &str,
    ) -> Result<Option<UnsettledErasure>, String> {
        match &self.store {
            Store::File(path) => {
                let mut cache = self.unsettled.lock().await;
                if cache.is_none() {
                    let path = path.clone();
                    let read = tokio::task::spawn_blocking(move || unsettling_in_file(&path))
                        .await
                        .map_err(|e| e.to_string())??;
                    *cache = Some(read);
                }
                Ok(latest_unsettled(
                    cache.as_deref().unwrap_or_default(),
                    source,
                    subject_id,
                ))
            }
            Store::Control(control, reader) => {
                let lines = asked(control, reader, Question::Unsettling(subject_id)).await?;
                let records: Vec<Entry> = lines
                    .iter()
                    .filter_map(|line| serde_json::from_str::<Record>(line).ok())
                    .map(|r| r.body.entry)
                    .collect();
                Ok(latest_unsettled(&records, source, subject_id))
            }
        }
    }

    /// Keeps the list of `unknown` and `settled` records current as this process writes one.
    pub(super) async fn noted(&self, entry: &Entry) {
        if matches!(entry.outcome.as_str(), "unknown" | "settled")
            && let Some(list) = self.unsettled.lock().await.as_mut()
        {
            list.push(entry.clone());
        }
    }

    /// The recent records of erasures (not previews) of `subject_id` in `source`.
    async fn erasures_of(&self, source: &str, subject_id: &str) -> Result<Vec<Record>, String> {
        let (source, subject_id) = (source.to_owned(), subject_id.to_owned());
        match &self.store {
            Store::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut found = Vec::new();
                    each_recent_line(&path, |line| {
                        found.extend(erasure_in(line, &source, &subject_id));
                    })?;
                    Ok(found)
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Store::Control(control, reader) => {
                let lines = asked(control, reader, Question::Recent(&subject_id)).await?;
                Ok(lines
                    .iter()
                    .filter_map(|line| erasure_in(line.as_bytes(), &source, &subject_id))
                    .collect())
            }
        }
    }
}

/// What the lookups ask the control database, for one subject's hash.
enum Question<'a> {
    /// Its recent Erase records.
    Recent(&'a str),
    /// Its `unknown` and `settled` records.
    Unsettling(&'a str),
}

/// Asks on the lookups' kept control connection, opened when it is missing or closed. A kept
/// connection the database (or a proxy) closed while it was idle fails its first query
/// without an answer: opened again, and asked once more.
async fn asked(
    control: &Control,
    reader: &Reader,
    question: Question<'_>,
) -> Result<Vec<String>, String> {
    let mut reader = reader.lock().await;
    let mut tries = 0;
    loop {
        tries += 1;
        if reader.as_ref().is_none_or(|c| c.is_closed()) {
            *reader = Some(control.connect_only().await?);
        }
        let client = reader.as_ref().expect("connected above");
        let answer = match question {
            Question::Recent(subject) => {
                client
                    .recent_erasure_lines(subject, CONTROL_TAIL_RECORDS)
                    .await
            }
            Question::Unsettling(subject) => client.unsettling_lines(subject).await,
        };
        match answer {
            Ok(found) => return Ok(found),
            Err(e) if e.unanswered() && tries < 2 => *reader = None,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Calls `each` with every line of the last [`FILE_TAIL_BYTES`] of a log file (none when
/// there is no file yet).
fn each_recent_line(path: &std::path::Path, mut each: impl FnMut(&[u8])) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let start = len.saturating_sub(FILE_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut lines = std::io::BufReader::new(file).split(b'\n');
    if start > 0 {
        lines.next(); // a line cut by the seek
    }
    for line in lines {
        each(&line.map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// The latest `unknown` erasure of `subject_id` in `source` among `records` (in order) that
/// no `settled` record names.
fn latest_unsettled(records: &[Entry], source: &str, subject_id: &str) -> Option<UnsettledErasure> {
    let mine = |e: &&Entry| e.rpc == "Erase" && e.source == source && e.subject_id == subject_id;
    let settled: Vec<&str> = records
        .iter()
        .filter(mine)
        .filter(|e| e.outcome == "settled")
        .map(|e| e.settles.as_str())
        .collect();
    records
        .iter()
        .filter(mine)
        .rev()
        .find(|e| e.outcome == "unknown" && !settled.contains(&e.extraction_id.as_str()))
        .map(|e| UnsettledErasure {
            erasure_id: e.extraction_id.clone(),
            transaction: e.transaction.clone(),
        })
}

/// The `unknown` and `settled` erasure records among a log file's recent records, in order.
fn unsettling_in_file(path: &std::path::Path) -> Result<Vec<Entry>, String> {
    let mut found = Vec::new();
    each_recent_line(path, |line| {
        if let Ok(text) = std::str::from_utf8(line)
            && UNSETTLING.iter().any(|u| text.contains(u))
            && let Ok(record) = serde_json::from_str::<Record>(text)
        {
            found.push(record.body.entry);
        }
    })?;
    Ok(found)
}

/// The record of an erasure (not a preview) of the subject in `source`, when the line is one.
fn erasure_in(line: &[u8], source: &str, subject_id: &str) -> Option<Record> {
    // Most lines are not: a cheap look for the subject's hash before parsing.
    let line = std::str::from_utf8(line).ok()?;
    if subject_id.is_empty() || !line.contains(subject_id) {
        return None;
    }
    let record: Record = serde_json::from_str(line).ok()?;
    let entry = &record.body.entry;
    (entry.rpc == "Erase"
        && !entry.dry_run
        && entry.source == source
        && entry.subject_id == subject_id)
        .then_some(record)
}
