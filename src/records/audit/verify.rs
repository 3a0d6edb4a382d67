//! Checks an audit log: every record parses, is in canonical form, follows the one before
//! (sequence and `prev`), and verifies under the key; the head file's record is present.
//! A torn last line (a crash mid-write) is reported but leaves a verifiable prefix.
//!
//! A log written in segments is checked as one chain, from its oldest closed segment to the
//! file being written: a segment removed from the middle, or the oldest ones, shows as
//! records missing before the segment that follows, and a segment renamed or swapped as one
//! that opens after another than the segment before it.

use std::path::Path;

use super::{Head, Record, SEGMENT_RPC, chain_hash, head_path};
use crate::records::appender::closed_segments;

/// What a log that verifies holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub last_hash: String,
    /// The log ended in a line without its newline: a write cut short by a crash.
    pub torn_tail: bool,
    /// The files checked: the closed segments and the file being written.
    pub segments: usize,
}

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record} ({}line {line}): {reason}", if segment.is_empty() { String::new() } else { format!("segment {segment}, ") })]
pub struct VerifyError {
    /// The sequence number the record should have.
    pub record: u64,
    pub line: usize,
    pub reason: String,
    /// The closed segment the line is in (empty for the file being written).
    pub segment: String,
}

/// The longest line a record may have: a longer one is not a record, and is never read whole.
const MAX_LINE: usize = 1024 * 1024;

/// Verifies the log file at `path` under `key`, after its closed segments, with its head
/// file if there is one. Each file is read line by line: memory stays bounded by the longest
/// line, whatever the log's size.
pub fn verify(path: &Path, key: &[u8]) -> Result<VerifyReport, VerifyError> {
    let cannot = |e: std::io::Error| VerifyError {
        record: 0,
        line: 0,
        reason: format!("cannot read {}: {e}", path.display()),
        segment: String::new(),
    };
    let head: Option<Head> = match std::fs::read_to_string(head_path(path)) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| VerifyError {
            record: 0,
            line: 0,
            reason: format!("the head file is not valid: {e}"),
            segment: String::new(),
        })?),
        Err(_) => None,
    };
    let closed = closed_segments(path).map_err(cannot)?;
    let mut chain = ChainCheck::new(head.as_ref(), key);
    for segment in &closed {
        let name = file_name(segment);
        chain.begin_segment(&name, &name);
        if check_file(segment, &mut chain)? {
            return Err(chain.error("a closed segment ends in a torn line".into()));
        }
    }
    // The file being written; after a rotation cut short by a crash it may not exist yet.
    chain.begin_segment("", &file_name(path));
    let torn_tail = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !closed.is_empty() => false,
        _ => check_file(path, &mut chain)?,
    };
    let (records, last_hash) = chain.finish()?;
    Ok(VerifyReport {
        records,
        last_hash,
        torn_tail,
        segments: closed.len() + 1,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks every line of one file; whether it ends in a torn line.
fn check_file(path: &Path, chain: &mut ChainCheck<'_>) -> Result<bool, VerifyError> {
    use std::io::{BufRead, Read};
    let segment = chain.segment.clone();
    let cannot = |e: std::io::Error| VerifyError {
        record: 0,
        line: 0,
        reason: format!("cannot read {}: {e}", path.display()),
        segment: segment.clone(),
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(cannot)?;
        if read == 0 {
            return Ok(false);
        }
        if line.last() != Some(&b'\n') {
            if line.len() > MAX_LINE {
                return Err(
                    chain.error(format!("a line longer than {MAX_LINE} bytes: not a record"))
                );
            }
            // The end of the file without its newline: a write cut short by a crash.
            return Ok(true);
        }
        line.pop();
        chain.check(&line)?;
        // Past the buffer's usual size, give back what one long line took.
        if line.capacity() > 64 * 1024 {
            line = Vec::new();
        }
    }
}

/// Verifies one replica's chain in the control database.
pub fn verify_control(
    lines: &[String],
    head: Option<(u64, String)>,
    key: &[u8],
) -> Result<VerifyReport, VerifyError> {
    let head = head.map(|(seq, hash)| Head { seq, hash });
    let mut chain = ChainCheck::new(head.as_ref(), key);
    for line in lines {
        chain.check(line.as_bytes())?;
    }
    let (records, last_hash) = chain.finish()?;
    Ok(VerifyReport {
        records,
        last_hash,
        torn_tail: false,
        segments: 1,
    })
}

/// A chain checked record by record, in order, across the segments of a log.
struct ChainCheck<'a> {
    head: Option<&'a Head>,
    key: &'a [u8],
    prev: String,
    seq: u64,
    /// The line within the file being checked.
    line: usize,
    /// The closed segment being checked (empty for the file being written).
    segment: String,
    /// The file checked before this one, and whether this one has had a record yet.
    previous_file: String,
    file: String,
    first_in_file: bool,
}

impl<'a> ChainCheck<'a> {
    fn new(head: Option<&'a Head>, key: &'a [u8]) -> Self {
        ChainCheck {
            head,
            key,
            prev: String::new(),
            seq: 0,
            line: 0,
            segment: String::new(),
            previous_file: String::new(),
            file: String::new(),
            first_in_file: true,
        }
    }

    /// The next file's records follow: `segment` names a closed segment in errors, `file`
    /// is its file name.
    fn begin_segment(&mut self, segment: &str, file: &str) {
        if !self.file.is_empty() {
            self.previous_file = std::mem::take(&mut self.file);
        }
        self.segment = segment.to_owned();
        self.file = file.to_owned();
        self.line = 0;
        self.first_in_file = true;
    }

    /// An error at the record expected next.
    fn error(&self, reason: String) -> VerifyError {
        VerifyError {
            record: self.seq + 1,
            line: self.line + 1,
            reason,
            segment: self.segment.clone(),
        }
    }

    /// Checks the next record's line (without its newline).
    fn check(&mut self, line: &[u8]) -> Result<(), VerifyError> {
        let expected = self.seq + 1;
        let bad = |reason: String| self.error(reason);
        let record: Record =
            serde_json::from_slice(line).map_err(|e| bad(format!("not a valid record: {e}")))?;
        let canonical = serde_json::to_vec(&record).expect("a record serializes");
        if canonical != line {
            return Err(bad(
                "not in canonical form: bytes were added, removed or changed".into(),
            ));
        }
        let first = self.first_in_file;
        if first && record.body.seq > expected {
            return Err(bad(format!(
                "records {expected} to {} are missing before this file: a segment was removed \
                 (or archived elsewhere; put it back beside the log to verify the chain)",
                record.body.seq - 1
            )));
        }
        if first
            && record.body.entry.rpc == SEGMENT_RPC
            && !self.previous_file.is_empty()
            && record.body.entry.previous_segment != self.previous_file
        {
            return Err(bad(format!(
                "this segment opens after segment {}, but the segment before it is {}: a \
                 segment was renamed, swapped or removed",
                record.body.entry.previous_segment, self.previous_file
            )));
        }
        if record.body.seq != expected {
            return Err(bad(format!(
                "sequence number {} where {expected} was expected: a record was deleted, \
                 inserted or moved",
                record.body.seq
            )));
        }
        if record.body.prev != self.prev {
            return Err(bad(
                "does not follow the record before it: a record was deleted, inserted or moved"
                    .into(),
            ));
        }
        if chain_hash(self.key, &record.body) != record.hash {
            return Err(bad(
                "its hash does not verify under the key: the record was edited (or the key \
                 is not this log's)"
                    .into(),
            ));
        }
        if let Some(head) = self.head
            && head.seq == expected
            && head.hash != record.hash
        {
            return Err(bad("the head names another record here".into()));
        }
        self.prev = record.hash;
        self.seq = expected;
        self.line += 1;
        self.first_in_file = false;
        Ok(())
    }

    /// The number of records and the last hash, once the head is not ahead of them.
    fn finish(self) -> Result<(u64, String), VerifyError> {
        if let Some(head) = self.head
            && head.seq > self.seq
        {
            return Err(VerifyError {
                segment: String::new(),
                record: self.seq + 1,
                line: 0,
                reason: format!(
                    "the head says record {} is durable but the log ends at record {}: \
                     records were cut from the end",
                    head.seq, self.seq
                ),
            });
        }
        Ok((self.seq, self.prev))
    }
}
