//! The latest committed erasure of a subject, as the audit log records it: what an erasure
//! that finds nothing left points to. The log is only read, line by line, so memory stays
//! one line whatever the log's length; it is read only when an erasure found nothing.

use std::io::BufRead;
use std::path::PathBuf;

use super::{AuditLog, Record};
use crate::records::control::Control;

/// Where a log's records can be read back.
#[derive(Clone, Debug)]
pub(super) enum Store {
    File(PathBuf),
    /// Every replica's chain in the control database.
    Control(Control),
}

/// An earlier erasure of the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierErasure {
    pub erasure_id: String,
    pub request_id: String,
    /// When its completion record was written, just after its COMMIT (RFC 3339).
    pub recorded_at: String,
}

impl AuditLog {
    /// The latest erasure of `subject_id` in `source` that committed and changed rows: in this
    /// replica's file, or in every replica's chain of the control database.
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
                    let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                    let mut latest = None;
                    for line in std::io::BufReader::new(file).split(b'\n') {
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
            Store::Control(control) => {
                let client = control.connect().await?;
                let rows = client
                    .query(
                        "SELECT line FROM dsr_audit WHERE strpos(line, $1) > 0 \
                         AND strpos(line, '\"rpc\":\"Erase\"') > 0",
                        &[&subject_id],
                    )
                    .await
                    .map_err(crate::records::control::describe)?;
                Ok(rows
                    .iter()
                    .filter_map(|r| {
                        erasure_in(r.get::<_, &str>(0).as_bytes(), &source, &subject_id)
                    })
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
