//! The audit log: one record per call, appended to a file, hash-chained with a keyed hash,
//! and durable (fsynced) before the call's answer leaves.
//!
//! Each record holds who called what (time, replica, caller, RPC, source, the subject's keyed
//! hash, request and extraction ids) and how it ended (outcome, gRPC status, error kind,
//! snapshot time, tables and verified counts, the SHA-256 of the manifest's encoding). It
//! never holds an identity or extracted value.
//!
//! The chain: every record carries the hash of the one before (`prev`) and its own `hash`,
//! HMAC-SHA256 under the audit key over the record's canonical JSON without `hash`. Someone
//! who can write the file but lacks the key cannot rebuild the chain after an edit. A head
//! file beside the log (`<log>.head`) holds the sequence number and hash of the last durable
//! record, so that records cut from the end are noticed too. [`verify`] checks all of it.

mod earlier;
mod verify;

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::records::appender::{
    Appender, DurableTail, FileSink, Line, Lines, Segments, Tail, closed_segments,
};
use crate::records::control::{Control, ControlSink, Table};

pub use earlier::{EarlierErasure, UnsettledErasure};
pub use verify::{VerifyError, VerifyReport, verify, verify_control};

/// What one call contributes to its record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// `Extract` or `Validate`.
    pub rpc: String,
    pub caller: String,
    pub source: String,
    /// The subject's keyed hash, when the call named a subject.
    pub subject_id: String,
    pub request_id: String,
    /// The call's `x-request-id`.
    pub call_id: String,
    pub extraction_id: String,
    pub dry_run: bool,
    /// `started` (an extraction's first record, durable before anything of the subject's
    /// leaves), then `ok` or `failed`; `refused` for calls refused before they began. An
    /// erasure: `erasing` (durable before COMMIT), then `ok`, `failed`, or `unknown` when its
    /// COMMIT lost the connection and the source could not say; a later erasure of the same
    /// subject writes `settled` for it.
    pub outcome: String,
    /// The gRPC status code name (`OK`, `UNAVAILABLE`, ...).
    pub status: String,
    /// What ended the call, as a stable name (`count_mismatch`, `circuit_open`, ...).
    pub error: String,
    /// When the extraction's snapshot was taken (RFC 3339).
    pub snapshot_at: String,
    pub tables: Vec<TableEntry>,
    pub row_count: u64,
    /// SHA-256 (hex) of the manifest's protobuf encoding, as sent.
    pub manifest_sha256: String,
    /// For aggregated refusals: how many calls this record stands for (absent otherwise, so
    /// that records written before it existed verify unchanged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
    /// For an erasure: the id of its transaction in the source (`pg_current_xact_id()`), in
    /// its `erasing` record and after, so that an erasure whose COMMIT lost its connection
    /// can be resolved (`pg_xact_status`). Absent otherwise, so that records written before
    /// it existed verify unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub transaction: String,
    /// For the record that opens a segment of the log: the file name of the segment closed
    /// before it (whose last record's hash is this record's `prev`). Absent otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_segment: String,
    /// For a `settled` record: the erasure whose COMMIT's outcome was unknown, which this
    /// record's erasure settles. Absent otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub settles: String,
    /// For a `settled` record: what became of that erasure (`committed`, `rolled_back`,
    /// `nothing_left`, `rows_left`). Absent otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub settlement: String,
    /// For a call that asked with more identities of the subject: their keyed hashes, in the
    /// order asked. Absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_subject_ids: Vec<String>,
}

/// The `rpc` of the record that opens a segment.
pub const SEGMENT_RPC: &str = "AuditLog";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One table of an extraction and its verified count.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    pub table: String,
    pub rows: u64,
    pub verified: bool,
    /// For an erasure: what was done to the rows (`delete`, `mask`, `retain`). Absent
    /// otherwise, so that records written before it existed verify unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// For a retained table: why its rows were kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A record as written: the entry, its place in the chain, and the chain's keyed hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Body {
    pub seq: u64,
    pub time: String,
    pub replica: String,
    #[serde(flatten)]
    pub entry: Entry,
    pub prev: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Record {
    #[serde(flatten)]
    pub body: Body,
    pub hash: String,
}

/// The head file: the last durable record's sequence number and hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Why the audit log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the audit log cannot be written ({0}); the call's answer was withheld")]
    Write(String),
}

/// The keyed hash of a record body: HMAC-SHA256 under the audit key, hex.
pub(crate) fn chain_hash(key: &[u8], body: &Body) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(
        serde_json::to_string(body)
            .expect("a record serializes")
            .as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

/// The head file of a log.
pub fn head_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// Assigns each record its place in the chain, on the writer thread.
struct Chain {
    key: Vec<u8>,
    replica: String,
    last: Head,
    committed: Head,
}

impl Lines for Chain {
    type Item = Entry;

    fn line(&mut self, entry: Entry) -> (Line, String) {
        let body = Body {
            seq: self.last.seq + 1,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            replica: self.replica.clone(),
            entry,
            prev: self.last.hash.clone(),
        };
        let hash = chain_hash(&self.key, &body);
        self.last = Head {
            seq: body.seq,
            hash: hash.clone(),
        };
        let text = serde_json::to_string(&Record { body, hash }).expect("a record serializes");
        let said = format!("{}:{}", self.last.seq, self.last.hash);
        (
            Line {
                text,
                chain: Some((self.last.seq, self.last.hash.clone())),
            },
            said,
        )
    }

    fn commit(&mut self) {
        self.committed = self.last.clone();
    }

    fn resync(&mut self, (last_line, head): DurableTail) -> Result<(), String> {
        let head = head.map(|(seq, hash)| Head { seq, hash });
        let end = chain_end(last_line.as_deref().map(str::as_bytes), head, &self.key)?;
        self.committed = end.clone();
        self.last = end;
        Ok(())
    }

    fn rollback(&mut self) {
        self.last = self.committed.clone();
    }

    fn segment_opened(&mut self, closed: &str) -> Option<Entry> {
        Some(Entry {
            rpc: SEGMENT_RPC.to_owned(),
            caller: "dsr-connector".to_owned(),
            outcome: "segment_opened".to_owned(),
            status: "OK".to_owned(),
            previous_segment: closed.to_owned(),
            ..Entry::default()
        })
    }
}

/// The chain's last durable record, from the last line of a log and its head: the line must
/// verify under the key, and the head must not be ahead of it.
fn chain_end(last_line: Option<&[u8]>, head: Option<Head>, key: &[u8]) -> Result<Head, String> {
    let last = match last_line {
        None => Head {
            seq: 0,
            hash: String::new(),
        },
        Some(line) => {
            let record: Record = serde_json::from_slice(line)
                .map_err(|e| format!("the last record is not valid: {e}"))?;
            if chain_hash(key, &record.body) != record.hash {
                return Err(
                    "the last record does not verify under the configured key: the key \
                     is not this log's, or the record was edited"
                        .into(),
                );
            }
            Head {
                seq: record.body.seq,
                hash: record.hash,
            }
        }
    };
    if let Some(written) = head
        && written.seq > last.seq
    {
        return Err(format!(
            "the head says record {} is durable but the log ends at record {}: records were \
             cut from the end",
            written.seq, last.seq
        ));
    }
    Ok(last)
}

/// The audit log of this process; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    appender: Appender<Entry>,
    store: earlier::Store,
    unsettled: earlier::Unsettling,
}

impl AuditLog {
    /// Opens (or creates) the log file. A line torn by a crash at the end is cut off; a log
    /// that ends before its head file says, or whose last record does not verify under
    /// `key`, is refused: someone cut or edited it, or the key is not the log's.
    pub fn open(path: &Path, key: &[u8], replica: &str) -> Result<AuditLog, AuditError> {
        AuditLog::open_segmented(path, key, replica, Segments::default())
    }

    /// As [`AuditLog::open`], the log written in `segments`: each closed under a name of
    /// its own, and every one kept.
    pub fn open_segmented(
        path: &Path,
        key: &[u8],
        replica: &str,
        segments: Segments,
    ) -> Result<AuditLog, AuditError> {
        let fail = |reason: String| AuditError::Open {
            path: path.display().to_string(),
            reason,
        };
        // Only the log's last complete line is read: start-up costs the same for a log of a
        // day or of a year.
        let tail = Tail::of(path).map_err(|e| fail(e.to_string()))?;
        let durable = tail.durable;
        if durable < tail.len {
            tracing::warn!(log = %path.display(), bytes = tail.len - durable,
                "the audit log ends in a torn line (a crash mid-write); it is cut off");
        }
        // A segment with no record yet (begun just before a crash, or before its first
        // batch): the chain ends in the segment closed last.
        let closed_tail = match tail.last_line {
            Some(_) => None,
            None => match closed_segments(path)
                .map_err(|e| fail(e.to_string()))?
                .last()
            {
                Some(segment) => Some(Tail::of(segment).map_err(|e| fail(e.to_string()))?),
                None => None,
            },
        };
        let last_line = tail
            .last_line
            .as_deref()
            .or(closed_tail.as_ref().and_then(|t| t.last_line.as_deref()))
            .filter(|l| !l.is_empty());
        let head_file = head_path(path);
        let head = match std::fs::read_to_string(&head_file) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| fail(format!("{}: not a valid head: {e}", head_file.display())))?,
            ),
            Err(_) => None,
        };
        let last = chain_end(last_line, head, key).map_err(fail)?;
        let chain = Chain {
            key: key.to_vec(),
            replica: replica.to_owned(),
            committed: last.clone(),
            last,
        };
        let sink = FileSink::open(path, durable, Some(head_file))
            .map_err(|e| fail(e.to_string()))?
            .with_segments(segments);
        let appender = Appender::start(sink, chain).map_err(|e| fail(e.to_string()))?;
        Ok(AuditLog {
            appender,
            store: earlier::Store::File(path.to_owned()),
            unsettled: Default::default(),
        })
    }

    /// Opens this replica's chain in the control database (its tables are created if
    /// missing), with the same checks as a file: the last record must verify, and the head
    /// must not be ahead of it.
    pub async fn open_control(
        control: &Control,
        key: &[u8],
        replica: &str,
    ) -> Result<AuditLog, AuditError> {
        let fail = |reason: String| AuditError::Open {
            path: format!("control database, replica {replica}"),
            reason,
        };
        let store = earlier::Store::Control(control.clone(), Default::default());
        let (control, key, replica) = (control.clone(), key.to_vec(), replica.to_owned());
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The sink owns a runtime of its own, so it is built on a thread outside any runtime.
        std::thread::spawn(move || {
            let opened = (|| {
                let sink = ControlSink::open(
                    &control,
                    Table::Audit {
                        replica: replica.clone(),
                    },
                )?;
                let (last_line, head) =
                    sink.block_on(async |client| client.audit_end(&replica).await)?;
                let head = head.map(|(seq, hash)| Head { seq, hash });
                let last = chain_end(last_line.as_deref().map(str::as_bytes), head, &key)?;
                let chain = Chain {
                    key,
                    replica,
                    committed: last.clone(),
                    last,
                };
                Appender::start(sink, chain).map_err(|e| e.to_string())
            })();
            let _ = tx.send(opened);
        });
        let appender = rx
            .await
            .map_err(|_| fail("the store could not be opened".into()))?
            .map_err(fail)?;
        Ok(AuditLog {
            appender,
            store,
            unsettled: Default::default(),
        })
    }

    /// Appends a record and waits until it is durable. Returns `seq:hash` of the record.
    pub async fn append(&self, entry: Entry) -> Result<String, AuditError> {
        let unsettling = matches!(entry.outcome.as_str(), "unknown" | "settled");
        let noted = unsettling.then(|| entry.clone());
        let appended = self
            .appender
            .append(entry)
            .await
            .map_err(AuditError::Write)?;
        if let Some(entry) = noted {
            self.noted(&entry).await;
        }
        Ok(appended)
    }

    /// Waits until every record queued so far was written or failed.
    pub async fn flush(&self) {
        self.appender.flush().await;
    }

    /// What logs and errors call this log.
    pub fn name(&self) -> &str {
        self.appender.name()
    }
}

/// The SHA-256 (hex) of a message's protobuf encoding. Map fields encode in key order, so
/// the encoding of a manifest is canonical.
pub fn message_sha256(message: &impl prost::Message) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(message.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"audit-key-0123456789abcdef";

    fn entry(n: u64) -> Entry {
        Entry {
            rpc: "Extract".into(),
            caller: "orchestrator".into(),
            source: "shop".into(),
            subject_id: format!("hmac-sha256:{n:064x}"),
            outcome: "ok".into(),
            status: "OK".into(),
            row_count: n,
            ..Entry::default()
        }
    }

    async fn log_with(records: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, KEY, "replica-a").unwrap();
        for n in 1..=records {
            let said = log.append(entry(n)).await.unwrap();
            assert!(said.starts_with(&format!("{n}:")), "{said}");
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[tokio::test]
    async fn a_log_verifies_and_reopening_continues_the_chain() {
        let (_dir, path) = log_with(3).await;
        assert_eq!(verify(&path, KEY).unwrap().records, 3);
        let log = AuditLog::open(&path, KEY, "replica-a").unwrap();
        assert!(log.append(entry(4)).await.unwrap().starts_with("4:"));
        let report = verify(&path, KEY).unwrap();
        assert_eq!(report.records, 4);
        assert!(!report.torn_tail);
    }

    #[tokio::test]
    async fn an_edited_byte_is_found_and_named() {
        let (_dir, path) = log_with(3).await;
        let mut all = lines(&path);
        all[1] = all[1].replace("\"row_count\":2", "\"row_count\":9");
        write_lines(&path, &all);
        let error = verify(&path, KEY).unwrap_err();
        assert_eq!((error.record, error.line), (2, 2), "{error}");
        assert!(error.reason.contains("edited"), "{error}");

        // Whitespace is a change too.
        let (_dir, path) = log_with(2).await;
        let mut all = lines(&path);
        all[0] = all[0].replacen(':', ": ", 1);
        write_lines(&path, &all);
        assert_eq!(verify(&path, KEY).unwrap_err().record, 1);
    }

    #[tokio::test]
    async fn deleted_reordered_and_cut_records_are_found() {
        let (_dir, path) = log_with(4).await;
        let all = lines(&path);
        write_lines(&path, &[all[0].clone(), all[2].clone(), all[3].clone()]);
        let error = verify(&path, KEY).unwrap_err();
        assert_eq!(error.record, 2, "{error}");

        write_lines(
            &path,
            &[
                all[0].clone(),
                all[2].clone(),
                all[1].clone(),
                all[3].clone(),
            ],
        );
        assert_eq!(verify(&path, KEY).unwrap_err().record, 2);

        write_lines(&path, &all[..3]);
        let error = verify(&path, KEY).unwrap_err();
        assert!(error.reason.contains("cut from the end"), "{error}");
        // And the service refuses to append to it.
        assert!(AuditLog::open(&path, KEY, "replica-a").is_err());
    }

    #[tokio::test]
    async fn a_torn_last_line_leaves_a_verifiable_prefix_and_is_cut_on_reopen() {
        let (_dir, path) = log_with(3).await;
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":4,\"time\":\"2026-");
        std::fs::write(&path, text).unwrap();
        let report = verify(&path, KEY).unwrap();
        assert_eq!(report.records, 3);
        assert!(report.torn_tail);
        let log = AuditLog::open(&path, KEY, "replica-a").unwrap();
        assert!(log.append(entry(4)).await.unwrap().starts_with("4:"));
        let report = verify(&path, KEY).unwrap();
        assert_eq!((report.records, report.torn_tail), (4, false));
    }

    /// Segments of at most 4 KiB: about ten records each.
    const SMALL: Segments = Segments {
        max_bytes: 4096,
        max_age: None,
        retention: None,
    };

    fn segments_of(path: &Path) -> Vec<PathBuf> {
        closed_segments(path).unwrap()
    }

    #[tokio::test]
    async fn a_log_rotated_by_size_verifies_end_to_end_and_a_removed_segment_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open_segmented(&path, KEY, "replica-a", SMALL).unwrap();
        for n in 1..=40 {
            log.append(entry(n)).await.unwrap();
        }
        log.flush().await;
        drop(log);
        let closed = segments_of(&path);
        assert!(closed.len() >= 3, "{closed:?}");
        // Each segment after the first opens with a record naming the one before it.
        let mut before = String::new();
        for file in closed.iter().chain([&path]) {
            let first = lines(file).remove(0);
            let record: Record = serde_json::from_str(&first).unwrap();
            if !before.is_empty() {
                assert_eq!(record.body.entry.rpc, SEGMENT_RPC);
                assert_eq!(record.body.entry.previous_segment, before);
            }
            before = file.file_name().unwrap().to_string_lossy().into_owned();
        }
        let report = verify(&path, KEY).unwrap();
        assert_eq!(report.records, 40 + closed.len() as u64, "{report:?}");
        assert_eq!(report.segments, closed.len() + 1);

        // Reopened, the chain goes on in the segment being written, and across the next.
        let log = AuditLog::open_segmented(&path, KEY, "replica-a", SMALL).unwrap();
        for n in 41..=60 {
            log.append(entry(n)).await.unwrap();
        }
        log.flush().await;
        drop(log);
        let closed = segments_of(&path);
        let report = verify(&path, KEY).unwrap();
        assert_eq!(report.records, 60 + closed.len() as u64, "{report:?}");

        // A segment removed from the middle: the records it held are missing.
        let middle = closed[1].clone();
        let kept = std::fs::read(&middle).unwrap();
        std::fs::remove_file(&middle).unwrap();
        let error = verify(&path, KEY).unwrap_err();
        println!("{error}");
        assert!(error.reason.contains("missing"), "{error}");
        assert_eq!(
            error.segment,
            closed[2].file_name().unwrap().to_string_lossy()
        );
        std::fs::write(&middle, &kept).unwrap();
        verify(&path, KEY).unwrap();

        // The oldest removed (archived elsewhere): the chain does not start at record 1.
        let oldest = closed[0].clone();
        let kept = std::fs::read(&oldest).unwrap();
        std::fs::remove_file(&oldest).unwrap();
        let error = verify(&path, KEY).unwrap_err();
        assert!(error.reason.contains("records 1 to"), "{error}");
        std::fs::write(&oldest, &kept).unwrap();

        // An edited byte in a closed segment.
        let mut all = lines(&closed[1]);
        all[2] = all[2].replace("\"outcome\":\"ok\"", "\"outcome\":\"no\"");
        write_lines(&closed[1], &all);
        let error = verify(&path, KEY).unwrap_err();
        assert!(error.reason.contains("edited"), "{error}");
        assert_eq!(error.line, 3, "{error}");
    }

    #[tokio::test]
    async fn a_segment_older_than_its_age_is_closed_before_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let by_age = Segments {
            max_bytes: 0,
            max_age: Some(std::time::Duration::from_secs(1)),
            retention: None,
        };
        let log = AuditLog::open_segmented(&path, KEY, "replica-a", by_age).unwrap();
        log.append(entry(1)).await.unwrap();
        log.append(entry(2)).await.unwrap();
        assert!(segments_of(&path).is_empty());
        // Past the age (a sleep longer than it, whatever the machine's load).
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        log.append(entry(3)).await.unwrap();
        drop(log);
        assert_eq!(segments_of(&path).len(), 1);
        assert_eq!(lines(&segments_of(&path)[0]).len(), 2);
        // The new segment: its opening record, then the third entry.
        assert_eq!(lines(&path).len(), 2);
        assert_eq!(verify(&path, KEY).unwrap().records, 4);
    }

    #[tokio::test]
    async fn a_rotation_cut_short_by_a_crash_is_taken_up_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open_segmented(&path, KEY, "replica-a", SMALL).unwrap();
        for n in 1..=5 {
            log.append(entry(n)).await.unwrap();
        }
        drop(log);
        // As a crash between the two renames leaves it: the full segment closed, no log.
        std::fs::rename(&path, dir.path().join("audit.log.20260101T000000.000Z")).unwrap();
        assert_eq!(verify(&path, KEY).unwrap().records, 5);
        let log = AuditLog::open_segmented(&path, KEY, "replica-a", SMALL).unwrap();
        assert!(log.append(entry(6)).await.unwrap().starts_with("6:"));
        drop(log);
        assert_eq!(verify(&path, KEY).unwrap().records, 6);
    }

    #[tokio::test]
    async fn another_key_does_not_verify() {
        let (_dir, path) = log_with(2).await;
        let error = verify(&path, b"another-key-0123456789").unwrap_err();
        assert_eq!(error.record, 1);
        assert!(AuditLog::open(&path, b"another-key-0123456789", "r").is_err());
    }
}
