//! Checks an audit log: every record parses, is in canonical form, follows the one before
//! (sequence and `prev`), and verifies under the key; the head file's record is present.
//! A torn last line (a crash mid-write) is reported but leaves a verifiable prefix.

use std::path::Path;

use super::{Head, Record, chain_hash, head_path};

/// What a log that verifies holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub last_hash: String,
    /// The log ended in a line without its newline: a write cut short by a crash.
    pub torn_tail: bool,
}

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record} (line {line}): {reason}")]
pub struct VerifyError {
    /// The sequence number the record should have.
    pub record: u64,
    pub line: usize,
    pub reason: String,
}

/// Verifies the log file at `path` under `key`, with its head file if there is one.
pub fn verify(path: &Path, key: &[u8]) -> Result<VerifyReport, VerifyError> {
    let text = std::fs::read(path).map_err(|e| VerifyError {
        record: 0,
        line: 0,
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let durable = text
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let head: Option<Head> = match std::fs::read_to_string(head_path(path)) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| VerifyError {
            record: 0,
            line: 0,
            reason: format!("the head file is not valid: {e}"),
        })?),
        Err(_) => None,
    };
    let lines: Vec<&[u8]> = match text[..durable].split_last() {
        Some((_, without_newline)) => without_newline.split(|b| *b == b'\n').collect(),
        None => Vec::new(),
    };
    let (records, last_hash) = verify_lines(&lines, head.as_ref(), key)?;
    Ok(VerifyReport {
        records,
        last_hash,
        torn_tail: durable < text.len(),
    })
}

/// Verifies one replica's chain in the control database.
pub fn verify_control(
    lines: &[String],
    head: Option<(u64, String)>,
    key: &[u8],
) -> Result<VerifyReport, VerifyError> {
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let head = head.map(|(seq, hash)| Head { seq, hash });
    let (records, last_hash) = verify_lines(&lines, head.as_ref(), key)?;
    Ok(VerifyReport {
        records,
        last_hash,
        torn_tail: false,
    })
}

/// Verifies records in order; returns their number and the last hash.
fn verify_lines(
    lines: &[&[u8]],
    head: Option<&Head>,
    key: &[u8],
) -> Result<(u64, String), VerifyError> {
    let mut prev = String::new();
    let mut seq = 0;
    for (i, line) in lines.iter().enumerate() {
        let expected = seq + 1;
        let bad = |reason: String| VerifyError {
            record: expected,
            line: i + 1,
            reason,
        };
        let record: Record =
            serde_json::from_slice(line).map_err(|e| bad(format!("not a valid record: {e}")))?;
        let canonical = serde_json::to_vec(&record).expect("a record serializes");
        if canonical != *line {
            return Err(bad(
                "not in canonical form: bytes were added, removed or changed".into(),
            ));
        }
        if record.body.seq != expected {
            return Err(bad(format!(
                "sequence number {} where {expected} was expected: a record was deleted, \
                 inserted or moved",
                record.body.seq
            )));
        }
        if record.body.prev != prev {
            return Err(bad(
                "does not follow the record before it: a record was deleted, inserted or moved"
                    .into(),
            ));
        }
        if chain_hash(key, &record.body) != record.hash {
            return Err(bad(
                "its hash does not verify under the key: the record was edited (or the key \
                 is not this log's)"
                    .into(),
            ));
        }
        if let Some(head) = head
            && head.seq == expected
            && head.hash != record.hash
        {
            return Err(bad("the head names another record here".into()));
        }
        prev = record.hash;
        seq = expected;
    }
    if let Some(head) = head
        && head.seq > seq
    {
        return Err(VerifyError {
            record: seq + 1,
            line: 0,
            reason: format!(
                "the head says record {} is durable but the log ends at record {seq}: \
                 records were cut from the end",
                head.seq
            ),
        });
    }
    Ok((seq, prev))
}
