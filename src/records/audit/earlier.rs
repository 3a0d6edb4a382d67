//! The latest committed erasure of a subject, as the audit log records it: what an erasure
//! that finds nothing left points to. Only the recent records are read (a bounded tail), line
//! by line, so memory stays one line and the time a bounded read, whatever the log's length;
//! they are read only when an erasure found nothing.

use std::io::BufRead;
use std::path::PathBuf;

use super::{AuditLog, Record};
use crate::records::control::{Control, ControlClient};

/// Where a log's records can be read back.
#[derive(Clone, Debug)]
pub(super) enum Store {
    File(PathBuf),
    /// Every replica's chain in the control database, read on one connection kept for it
    /// (the store made the tables when it opened).
    Control(Control, Reader),
}

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
        let (source, subject_id) = (source.to_owned(), subject_id.to_owned());
        match &self.store {
            Store::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    use std::io::{Seek, SeekFrom};
                    let mut file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                    let len = file.metadata().map_err(|e| e.to_string())?.len();
                    let start = len.saturating_sub(FILE_TAIL_BYTES);
                    file.seek(SeekFrom::Start(start))
                        .map_err(|e| e.to_string())?;
                    let mut lines = std::io::BufReader::new(file).split(b'\n');
                    if start > 0 {
                        lines.next(); // a line cut by the seek
                    }
                    let mut latest = None;
                    for line in lines {
                        let line = line.map_err(|e| e.to_string())?;
                        if let Some(found) = erasure_in(&line, &source, &subject_id) {
                            latest = Some(found);
                        }
                    }
                    Ok(latest)
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Store::Control(control, reader) => {
                let mut reader = reader.lock().await;
                // A kept connection the database (or a proxy) closed while it was idle fails
                // its first query: opened again, and asked once more.
                let mut tries = 0;
                let rows = loop {
                    tries += 1;
                    if reader.as_ref().is_none_or(|c| c.is_closed()) {
                        *reader = Some(control.connect_only().await?);
                    }
                    let client = reader.as_ref().expect("connected above");
                    match client
                        .recent_erasure_lines(&subject_id, CONTROL_TAIL_RECORDS)
                        .await
                    {
                        Ok(rows) => break rows,
                        Err(e) if e.unanswered() && tries < 2 => *reader = None,
                        Err(e) => return Err(e.to_string()),
                    }
                };
                Ok(rows
                    .iter()
                    .filter_map(|line| erasure_in(line.as_bytes(), &source, &subject_id))
                    .max_by(|a, b| a.recorded_at.cmp(&b.recorded_at)))
            }
        }
    }
}

/// The erasure a record names, when it is a committed erasure of the subject that changed rows.
fn erasure_in(line: &[u8], source: &str, subject_id: &str) -> Option<EarlierErasure> {
    // Most lines are not: a cheap look for the subject's hash before parsing.
    let line = std::str::from_utf8(line).ok()?;
    if subject_id.is_empty() || !line.contains(subject_id) {
        return None;
    }
    let record: Record = serde_json::from_str(line).ok()?;
    let entry = &record.body.entry;
    (entry.rpc == "Erase"
        && entry.outcome == "ok"
        && !entry.dry_run
        && entry.row_count > 0
        && entry.source == source
        && entry.subject_id == subject_id)
        .then(|| EarlierErasure {
            erasure_id: entry.extraction_id.clone(),
            request_id: entry.request_id.clone(),
            recorded_at: record.body.time.clone(),
        })
}
