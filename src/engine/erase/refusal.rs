//! Why an erasure is refused or rolled back.

/// Why an erasure was refused or rolled back. Names tables, columns and constraints; never a
/// value.
#[derive(Debug, thiserror::Error)]
pub enum ErasureRefusal {
    #[error(
        "table '{table}' is reached by the identity and has no erase policy in the data map; \
         erasure fails closed: give it erase = {{ action = \"delete\" }}, \"mask\" or \"retain\""
    )]
    NoPolicy { table: String },
    #[error("table '{table}'{}: {detail}", if column.is_empty() { String::new() } else { format!(", column '{column}'") })]
    Policy {
        table: String,
        column: String,
        detail: String,
    },
    #[error(
        "table '{child}' references '{table}' with {rule} (constraint '{constraint}'), and the \
         data map does not name '{child}': erasing the subject's rows would change its rows \
         silently; map '{child}' with an erase policy, or change the key"
    )]
    UndeclaredCascade {
        table: String,
        child: String,
        constraint: String,
        rule: &'static str,
    },
    #[error(
        "table '{child}' references '{table}' with {rule} (constraint '{constraint}'), and {rows} \
         of its rows that point at the subject's rows are not rows this erasure deletes (another \
         person's, or kept): the key would change them silently; nothing was erased. Change the \
         key, or the erase policy of '{child}'"
    )]
    MappedCascade {
        table: String,
        child: String,
        constraint: String,
        rule: &'static str,
        rows: u64,
    },
    #[error(
        "source '{source_name}' requires a preview: call Erase with dry_run = true, check its \
         counts, then send its preview_digest"
    )]
    PreviewRequired { source_name: String },
    #[error(
        "the subject's rows differ from what the preview counted (its digest does not match); \
         nothing was erased: preview again"
    )]
    PreviewChanged,
    #[error(
        "the preview's digest expired at {expires} (seconds since 1970; [sources.erasure] \
         preview_valid_for); nothing was erased: preview again"
    )]
    PreviewExpired { expires: u64 },
    #[error(
        "table '{table}': {counted} rows were counted, but the {action} changed {changed}; the \
         transaction was rolled back"
    )]
    CountChanged {
        table: String,
        action: &'static str,
        counted: u64,
        changed: u64,
    },
    #[error(
        "table '{table}': the verification before commit found {detail}; the transaction was \
         rolled back"
    )]
    Unverified { table: String, detail: String },
    #[error(
        "table '{table}': the erasure breaks {what} (SQLSTATE {code}); the transaction was rolled \
         back"
    )]
    Constraint {
        table: String,
        what: String,
        code: String,
        /// A foreign key was broken (by a row a concurrent writer added, perhaps).
        foreign_key: bool,
    },
    #[error(
        "table '{table}': a row the subject's rows look up is shared: {rows} rows of '{child}' \
         that are not the subject's point at it, so it is another person's too and cannot be \
         masked; nothing was erased. Give '{table}' erase = {{ action = \"retain\", reason = \
         \"...\" }} if shared rows are kept"
    )]
    SharedRow {
        table: String,
        child: String,
        rows: u64,
    },
    #[error(
        "the connection was lost while COMMIT was in flight, and the source could not say what \
         became of transaction {transaction}: the erasure may have committed (its `erasing` \
         record names the transaction; on PostgreSQL, `SELECT pg_xact_status('{transaction}')` \
         tells); preview again to see what is left"
    )]
    CommitOutcomeUnknown {
        /// The erasure's transaction id (PostgreSQL's `pg_current_xact_id()`, InnoDB's
        /// `trx_id`), never a value.
        transaction: String,
    },
}

impl ErasureRefusal {
    /// The table the refusal concerns, if one.
    pub fn table(&self) -> Option<&str> {
        match self {
            ErasureRefusal::NoPolicy { table }
            | ErasureRefusal::Policy { table, .. }
            | ErasureRefusal::UndeclaredCascade { table, .. }
            | ErasureRefusal::MappedCascade { table, .. }
            | ErasureRefusal::CountChanged { table, .. }
            | ErasureRefusal::Unverified { table, .. }
            | ErasureRefusal::Constraint { table, .. }
            | ErasureRefusal::SharedRow { table, .. } => Some(table),
            _ => None,
        }
    }

    /// A short, stable name, for records and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            ErasureRefusal::NoPolicy { .. } => "erasure_policy_missing",
            ErasureRefusal::Policy { .. } => "erasure_policy_invalid",
            ErasureRefusal::UndeclaredCascade { .. } => "undeclared_cascade",
            ErasureRefusal::MappedCascade { .. } => "mapped_cascade",
            ErasureRefusal::PreviewRequired { .. } => "preview_required",
            ErasureRefusal::PreviewChanged => "preview_changed",
            ErasureRefusal::PreviewExpired { .. } => "preview_expired",
            ErasureRefusal::CountChanged { .. } => "erasure_count_changed",
            ErasureRefusal::Unverified { .. } => "erasure_unverified",
            ErasureRefusal::Constraint { .. } => "erasure_constraint",
            ErasureRefusal::CommitOutcomeUnknown { .. } => "commit_outcome_unknown",
            ErasureRefusal::SharedRow { .. } => "shared_row",
        }
    }
}
