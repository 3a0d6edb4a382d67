//! Erasure as the data map declares it: what `Erase` does to a subject's rows in each table
//! (`erase = { action = ... }` on a `[[sources.tables]]` entry), and a source's erasure
//! settings (`[sources.erasure]`).
//!
//! Erasure fails closed. A table that an identity reaches and that has no policy cannot be
//! erased, and `Erase` refuses the source naming it. A kept row (action `mask`) must name every
//! personal column of its table, its identity and reference columns included, with a mask or
//! with the reason it is retained; the config does not load otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretBox;
use serde::Deserialize;

/// What erasure does to a table's rows of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EraseAction {
    /// The rows are deleted.
    Delete,
    /// The rows are kept, and their personal columns masked.
    Mask,
    /// The rows are kept unchanged, for a stated legal reason.
    Retain,
}

impl EraseAction {
    pub fn name(self) -> &'static str {
        match self {
            EraseAction::Delete => "delete",
            EraseAction::Mask => "mask",
            EraseAction::Retain => "retain",
        }
    }
}

/// How one column of a kept row is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaskMethod {
    /// Set to NULL.
    Null,
    /// Replaced by the source's fixed redaction text (text columns).
    Redact,
    /// Replaced by a keyed pseudonym of the value (HMAC-SHA256 under the source's pseudonym
    /// key, hex): the same value masks to the same token, so joins on it still work (text
    /// columns).
    Pseudonym,
}

impl MaskMethod {
    pub fn name(self) -> &'static str {
        match self {
            MaskMethod::Null => "null",
            MaskMethod::Redact => "redact",
            MaskMethod::Pseudonym => "pseudonym",
        }
    }
}

/// One column of a `mask` policy: a method, `{ json = "method" }` (a scanned JSON column:
/// its personal paths masked in place, the rest of each document kept), or
/// `{ retain = "reason" }`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ColumnErasure {
    Mask(MaskMethod),
    Json { json: MaskMethod },
    Retain { retain: String },
}

/// `erase = { action = "delete" }`, `erase = { action = "mask", mask = { ... } }` or
/// `erase = { action = "retain", reason = "..." }`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableErasure {
    pub action: EraseAction,
    /// For `mask`: every personal column, with its mask or its retain reason.
    #[serde(default)]
    pub mask: BTreeMap<String, ColumnErasure>,
    /// For `retain`: why the rows are kept (for example the law that requires it). The
    /// receipt and the audit record repeat it.
    pub reason: Option<String>,
}

impl TableErasure {
    /// Checks the policy of table `at` against its columns. `personal` lists the columns
    /// that a kept row must mask or retain: the personal ones, and the identity and reference
    /// columns.
    pub(super) fn validate(
        &self,
        at: &str,
        columns: &BTreeMap<String, super::ColumnSpec>,
        personal: &[String],
        problems: &mut Vec<String>,
    ) {
        let reason_given = self.reason.as_ref().is_some_and(|r| !r.trim().is_empty());
        match self.action {
            EraseAction::Delete => {
                if !self.mask.is_empty() || self.reason.is_some() {
                    problems.push(format!(
                        "{at}.erase: action \"delete\" takes no mask and no reason"
                    ));
                }
            }
            EraseAction::Retain => {
                if !reason_given {
                    problems.push(format!(
                        "{at}.erase: action \"retain\" needs a reason (the law or duty that \
                         requires keeping the rows)"
                    ));
                }
                if !self.mask.is_empty() {
                    problems.push(format!("{at}.erase: action \"retain\" takes no mask"));
                }
            }
            EraseAction::Mask => {
                if self.reason.is_some() {
                    problems.push(format!(
                        "{at}.erase: action \"mask\" takes no reason; retain a column with \
                         {{ retain = \"...\" }} in mask"
                    ));
                }
                for (column, how) in &self.mask {
                    if !columns.contains_key(column) {
                        problems.push(format!(
                            "{at}.erase.mask.{column}: not a column of the table's data map"
                        ));
                    }
                    match how {
                        ColumnErasure::Retain { retain } if retain.trim().is_empty() => {
                            problems.push(format!(
                                "{at}.erase.mask.{column}: a retained column needs a reason"
                            ));
                        }
                        ColumnErasure::Json { .. }
                            if !columns
                                .get(column)
                                .and_then(|c| c.rule())
                                .is_some_and(|r| r.scan_json) =>
                        {
                            problems.push(format!(
                                "{at}.erase.mask.{column}: {{ json = ... }} masks the paths the \
                                 JSON scan finds, and the column is not scanned (scan_json = true)"
                            ));
                        }
                        // A kept row must stay answerable: a mask its column's rule cannot
                        // read would fail every later access request for the row.
                        ColumnErasure::Mask(
                            method @ (MaskMethod::Redact | MaskMethod::Pseudonym),
                        ) if let Some(coerce) = columns
                            .get(column)
                            .and_then(|c| c.rule())
                            .and_then(|r| r.coerce) =>
                        {
                            problems.push(format!(
                                "{at}.erase.mask.{column}: \"{}\" writes text that the column's \
                                 rule (coerce = \"{}\") cannot read, so every later access \
                                 request for the kept row would fail; use \"null\"",
                                method.name(),
                                coerce.name()
                            ));
                        }
                        _ => {}
                    }
                }
                for column in personal {
                    if !self.mask.contains_key(column) {
                        problems.push(format!(
                            "{at}.erase.mask: personal column '{column}' of a kept row has \
                             neither a mask (null, redact, pseudonym) nor {{ retain = \"reason\" }}"
                        ));
                    }
                }
            }
        }
    }

    /// Whether the policy masks a column, or paths inside one, with a pseudonym.
    pub fn uses_pseudonyms(&self) -> bool {
        self.mask.values().any(|m| {
            matches!(
                m,
                ColumnErasure::Mask(MaskMethod::Pseudonym)
                    | ColumnErasure::Json {
                        json: MaskMethod::Pseudonym
                    }
            )
        })
    }
}

/// How `Erase` compares identity columns with the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureMatching {
    /// The value exactly as the caller sent it, compared with `=` (case-sensitive) in every
    /// identity column: no normalisation and no `match = "case_insensitive"`. An erasure that
    /// cannot be undone never reaches a row that differs from the value it was given.
    #[default]
    Exact,
    /// As `Extract` matches: the kind's normalisation, and each column's declared `match`.
    AsExtract,
}

impl ErasureMatching {
    pub fn name(self) -> &'static str {
        match self {
            ErasureMatching::Exact => "exact",
            ErasureMatching::AsExtract => "as_extract",
        }
    }
}

/// `[sources.erasure]`: how `Erase` behaves on a source.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureSettings {
    /// Whether an erasure must carry the digest of its preview (a dry run). Default true:
    /// what is erased is what a person saw.
    #[serde(default = "yes")]
    pub require_preview: bool,
    /// How long a statement of the erasure waits for a row lock before the erasure fails
    /// (and is retried within the deadline).
    #[serde(default = "default_lock_timeout", with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub lock_timeout: Duration,
    /// How long a preview's digest confirms an erasure. Default one hour: past it, the
    /// erasure is refused and a new preview is needed.
    #[serde(default = "default_preview_valid_for", with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub preview_valid_for: Duration,
    /// How identity columns are compared with the value: `exact` (default) or `as_extract`.
    #[serde(default)]
    pub matching: ErasureMatching,
    /// The text that `redact` writes.
    #[serde(default = "default_redaction")]
    pub redaction: String,
    /// Environment variable that holds the pseudonym key (at least 16 bytes).
    pub pseudonym_key_env: Option<String>,
    /// File that holds the pseudonym key.
    pub pseudonym_key_file: Option<std::path::PathBuf>,
    /// The key, once read. `Debug` prints it redacted.
    #[serde(skip)]
    pub pseudonym_key: Option<SecretBox<Vec<u8>>>,
}

impl Default for ErasureSettings {
    fn default() -> Self {
        ErasureSettings {
            require_preview: true,
            lock_timeout: default_lock_timeout(),
            preview_valid_for: default_preview_valid_for(),
            matching: ErasureMatching::default(),
            redaction: default_redaction(),
            pseudonym_key_env: None,
            pseudonym_key_file: None,
            pseudonym_key: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_preview_valid_for() -> Duration {
    Duration::from_secs(3600)
}

fn default_lock_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_redaction() -> String {
    "[redacted]".to_owned()
}
