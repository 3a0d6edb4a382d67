//! The dead-letter queue: what was left out or could not be delivered, with an error
//! category, for a person to look at. Rows rejected under `reject_row` and extractions that
//! failed on the service's or the data's side become records; bad requests do not (they are
//! the caller's to fix, and the audit log has them). A record names the source, table,
//! column, primary key (`[classified]` where that is personal data), rule, request and
//! extraction ids, the subject's keyed hash and the time. Never a value.
//!
//! The embedded store is an append-only JSON-lines file ([`crate::records::appender`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::records::appender::{Appender, FileSink, Line, Lines, Segments, closed_segments};
use crate::records::control::{Control, ControlSink, Table};

/// The error categories of dead letters.
pub const CATEGORIES: &[&str] = &[
    "coercion",
    "schema_drift",
    "integrity",
    "transport",
    "deadline",
    "authorization",
    "internal",
];

/// One dead letter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    pub time: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    pub source: String,
    pub table: String,
    pub column: String,
    pub primary_key: String,
    /// The rule a value failed, or the error kind of a failed extraction.
    pub rule: String,
    /// What happened, without values.
    pub detail: String,
    pub rpc: String,
    pub request_id: String,
    pub call_id: String,
    pub extraction_id: String,
    pub subject_id: String,
}

struct Plain;

impl Lines for Plain {
    type Item = DeadLetter;

    fn line(&mut self, item: DeadLetter) -> (Line, String) {
        let text = serde_json::to_string(&item).expect("a dead letter serializes");
        (Line { text, chain: None }, String::new())
    }

    fn commit(&mut self) {}

    fn rollback(&mut self) {}
}

/// The dead-letter queue of this process; cheap to clone.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    appender: Appender<DeadLetter>,
}

impl DeadLetters {
    /// Opens (or creates) the queue file; a line torn by a crash at its end is cut off.
    pub fn open(path: &Path) -> std::io::Result<DeadLetters> {
        DeadLetters::open_segmented(path, Segments::default())
    }

    /// As [`DeadLetters::open`], the file written in `segments`, closed segments past their
    /// retention removed.
    pub fn open_segmented(path: &Path, segments: Segments) -> std::io::Result<DeadLetters> {
        let len = FileSink::complete_len(path)?;
        let sink = FileSink::open(path, len, None)?.with_segments(segments);
        Ok(DeadLetters {
            appender: Appender::start(sink, Plain)?,
        })
    }

    /// Opens the queue in the control database (its tables are created if missing).
    pub async fn open_control(control: &Control) -> Result<DeadLetters, String> {
        let control = control.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The sink owns a runtime of its own, so it is built on a thread outside any runtime.
        std::thread::spawn(move || {
            let opened = ControlSink::open(&control, Table::DeadLetters)
                .and_then(|sink| Appender::start(sink, Plain).map_err(|e| e.to_string()));
            let _ = tx.send(opened);
        });
        let appender = rx
            .await
            .map_err(|_| "the dead-letter store could not be opened".to_owned())??;
        Ok(DeadLetters { appender })
    }

    /// Appends a dead letter and waits until it is durable.
    pub async fn append(&self, mut letter: DeadLetter) -> Result<(), String> {
        stamp(&mut letter);
        self.appender.append(letter).await.map(|_| ())
    }

    /// Appends a dead letter and returns at once what says when it is durable (a row loop
    /// goes on, and waits before it answers).
    pub fn append_pending(
        &self,
        mut letter: DeadLetter,
    ) -> Result<crate::records::appender::Pending, String> {
        stamp(&mut letter);
        self.appender.append_pending(letter)
    }

    /// Waits for a pending letter.
    pub async fn heard(&self, pending: crate::records::appender::Pending) -> Result<(), String> {
        self.appender.heard(pending).await.map(|_| ())
    }

    /// Waits until every letter queued so far was written or failed.
    pub async fn flush(&self) {
        self.appender.flush().await;
    }
}

fn stamp(letter: &mut DeadLetter) {
    if letter.time.is_empty() {
        letter.time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    }
}

/// Reads the dead letters of a queue file and its closed segments, oldest first, optionally
/// only those at or after `since` and of one category. A torn last line is skipped.
pub fn read(
    path: &Path,
    since: Option<chrono::DateTime<chrono::Utc>>,
    category: Option<&str>,
) -> Result<Vec<DeadLetter>, String> {
    let mut files = closed_segments(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let closed = files.len();
    files.push(path.to_owned());
    let mut letters = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            // A rotation cut short by a crash leaves no file being written.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && n == closed && closed > 0 => {
                continue;
            }
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => "",
        };
        let lines: Vec<&str> = complete.lines().collect();
        letters.extend(
            select(&lines, since, category)
                .map_err(|(i, e)| format!("{} line {}: {e}", file.display(), i + 1))?,
        );
    }
    Ok(letters)
}

/// The dead letters among `lines` (JSON, oldest first) at or after `since` and of
/// `category`. An error names the index of the line that is not a dead letter.
pub fn select(
    lines: &[&str],
    since: Option<chrono::DateTime<chrono::Utc>>,
    category: Option<&str>,
) -> Result<Vec<DeadLetter>, (usize, String)> {
    let mut letters = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let letter: DeadLetter = serde_json::from_str(line).map_err(|e| (i, e.to_string()))?;
        if category.is_some_and(|c| c != letter.category) {
            continue;
        }
        if let Some(since) = since {
            let at = chrono::DateTime::parse_from_rfc3339(&letter.time)
                .map_err(|e| (i, format!("time: {e}")))?;
            if at < since {
                continue;
            }
        }
        letters.push(letter);
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn letters_are_appended_and_read_back_by_category_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.jsonl");
        let queue = DeadLetters::open(&path).unwrap();
        queue
            .append(DeadLetter {
                category: "coercion".into(),
                table: "legacy".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let before_second = chrono::Utc::now();
        // Times are stamped to the millisecond: let one pass.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        queue
            .append(DeadLetter {
                category: "integrity".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(read(&path, None, None).unwrap().len(), 2);
        let coercion = read(&path, None, Some("coercion")).unwrap();
        assert_eq!(coercion.len(), 1);
        assert_eq!(coercion[0].table, "legacy");
        let recent = read(&path, Some(before_second), None).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].category, "integrity");

        // A torn line is skipped when read and cut off when reopened.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"time\":");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read(&path, None, None).unwrap().len(), 2);
        let queue = DeadLetters::open(&path).unwrap();
        queue.append(DeadLetter::default()).await.unwrap();
        assert_eq!(read(&path, None, None).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn closed_segments_past_their_retention_are_removed_and_the_rest_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.jsonl");
        let segments = Segments {
            max_bytes: 4096,
            max_age: None,
            retention: Some(std::time::Duration::from_secs(24 * 3600)),
        };
        let letter = |n: u64| DeadLetter {
            category: "coercion".into(),
            primary_key: format!("{{\"id\":{n}}}"),
            ..Default::default()
        };
        let queue = DeadLetters::open_segmented(&path, segments).unwrap();
        for n in 0..60 {
            queue.append(letter(n)).await.unwrap();
        }
        drop(queue);
        let closed = closed_segments(&path).unwrap();
        assert!(closed.len() >= 3, "{closed:?}");
        let all = read(&path, None, None).unwrap();
        let keys: Vec<String> = (0..60).map(|n| format!("{{\"id\":{n}}}")).collect();
        assert_eq!(
            all.iter()
                .map(|l| l.primary_key.clone())
                .collect::<Vec<_>>(),
            keys,
            "every letter, oldest first"
        );

        // The two oldest segments were last written two days ago: the next rotation removes
        // them, and only them.
        let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
        for old in &closed[..2] {
            let file = std::fs::File::options().write(true).open(old).unwrap();
            file.set_modified(two_days_ago).unwrap();
        }
        let pruned: usize = closed[..2]
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
            .sum();
        let queue = DeadLetters::open_segmented(&path, segments).unwrap();
        for n in 60..80 {
            queue.append(letter(n)).await.unwrap();
        }
        drop(queue);
        let now = closed_segments(&path).unwrap();
        assert!(
            !now.contains(&closed[0]) && !now.contains(&closed[1]),
            "{now:?}"
        );
        assert!(now.contains(&closed[2]), "{now:?}");
        let left = read(&path, None, None).unwrap();
        assert_eq!(left.len(), 80 - pruned);
        assert_eq!(left[0].primary_key, keys[pruned]);
    }
}
