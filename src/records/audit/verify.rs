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

/// The longest line a record may have: a longer one is not a record, and is never read whole.
const MAX_LINE: usize = 1024 * 1024;

/// Verifies the log file at `path` under `key`, with its head file if there is one. The log
/// is read line by line: memory stays bounded by the longest line, whatever the log's size.
pub fn verify(path: &Path, key: &[u8]) -> Result<VerifyReport, VerifyError> {
    use std::io::{BufRead, Read};
    let cannot = |e: std::io::Error| VerifyError {
        record: 0,
        line: 0,
        reason: format!("cannot read {}: {e}", path.display()),
    };
    let head: Option<Head> = match std::fs::read_to_string(head_path(path)) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| VerifyError {
            record: 0,
            line: 0,
            reason: format!("the head file is not valid: {e}"),
        })?),
        Err(_) => None,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut chain = ChainCheck::new(head.as_ref(), key);
    let mut line = Vec::new();
    let mut torn_tail = false;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(cannot)?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if line.len() > MAX_LINE {
                return Err(
                    chain.error(format!("a line longer than {MAX_LINE} bytes: not a record"))
                );
            }
            // The end of the file without its newline: a write cut short by a crash.
            torn_tail = true;
            break;
        }
        line.pop();
        chain.check(&line)?;
        // Past the buffer's usual size, give back what one long line took.
        if line.capacity() > 64 * 1024 {
            line = Vec::new();
        }
    }
    let (records, last_hash) = chain.finish()?;
    Ok(VerifyReport {
        records,
        last_hash,
        torn_tail,
    })
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
    })
}

/// A chain checked record by record, in order.
struct ChainCheck<'a> {
    head: Option<&'a Head>,
    key: &'a [u8],
    prev: String,
    seq: u64,
    line: usize,
}

impl<'a> ChainCheck<'a> {
    fn new(head: Option<&'a Head>, key: &'a [u8]) -> Self {
        ChainCheck {
            head,
            key,
            prev: String::new(),
            seq: 0,
            line: 0,
        }
    }

    /// An error at the record expected next.
    fn error(&self, reason: String) -> VerifyError {
        VerifyError {
            record: self.seq + 1,
            line: self.line + 1,
            reason,
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
        Ok(())
    }

    /// The number of records and the last hash, once the head is not ahead of them.
    fn finish(self) -> Result<(u64, String), VerifyError> {
        if let Some(head) = self.head
            && head.seq > self.seq
        {
            return Err(VerifyError {
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
