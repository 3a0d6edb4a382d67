//! Erasure: one subject's rows in one source deleted or masked, as each reached table's policy
//! says, in one read-write REPEATABLE READ transaction.
//!
//! The transaction first counts the subject's rows of every table, and captures those of
//! masked tables (their row ids, in temporary tables), since masking may change the values the
//! plan finds them by. It refuses a shared identity and an undeclared cascade, and checks the
//! preview's digest. Then it changes the tables children first (so that the rows a table is
//! reached through are still there when it changes), checks that each changed exactly the
//! rows it counted, and verifies: no deleted row is left, no kept row holds an unmasked value
//! or the identity. Its audit record is made durable before `COMMIT`. A
//! preview runs the same transaction and rolls it back. Anything that stops it before
//! `COMMIT` (an error, the deadline, a client that went away, a server stopping or killed)
//! leaves the data as it was.

mod direct;
mod guards;
mod json;
mod policy;
mod receipt;
pub mod refusal;
mod run;
mod verify;

pub use refusal::ErasureRefusal;

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::extract::MAX_IDENTITY_BYTES;
use super::{Engine, ExtractError};
use crate::config::SourceConfig;
use crate::config::erasure::ErasureMatching;
use crate::pb;
use crate::records::audit::Entry;
use crate::store::{Backend, WithStore};
use policy::Step;

/// What a caller asked to erase. The identity value never appears in `Debug`.
#[derive(Debug)]
pub struct EraseParams {
    pub source: String,
    pub kind: String,
    pub value: SecretString,
    pub request_id: String,
    pub compliance_tag: String,
    pub dry_run: bool,
    pub preview_digest: String,
    pub deadline: Option<Instant>,
    /// The authenticated caller's name.
    pub caller: String,
    /// The call's `x-request-id`.
    pub call_id: String,
    /// Cancelled when the client goes away: an erasure not yet committed rolls back.
    pub stop: CancellationToken,
}

/// Everything one erasure needs, resolved before its transaction.
struct Run<'a> {
    engine: &'a Engine,
    cfg: &'a SourceConfig,
    params: &'a EraseParams,
    value: String,
    subject_id: String,
    erasure_id: String,
    entry: Entry,
    plan: std::sync::Arc<crate::schema::Plan>,
    steps: Vec<Step>,
    /// Every mapped table of the source, as callers see their names.
    mapped: Vec<String>,
}

impl Engine {
    /// Erases one subject in one source (or previews it), and returns its receipt. Records
    /// every outcome.
    pub async fn erase(&self, params: EraseParams) -> Result<pb::ErasureReceipt, ExtractError> {
        let raw = params.value.expose_secret();
        let normalized = self
            .normalizer(&params.source, &params.kind)
            .filter(|_| !raw.trim().is_empty() && raw.len() <= MAX_IDENTITY_BYTES)
            .map(|n| n.apply(raw));
        let erasure_id = uuid::Uuid::new_v4().to_string();
        let subject_id = self.subject_id_normalized(
            &params.kind,
            raw,
            normalized.as_ref().and_then(|n| n.as_deref().ok()),
        );
        let entry = Entry {
            rpc: "Erase".to_owned(),
            caller: params.caller.clone(),
            source: super::extract::label(&params.source),
            subject_id: subject_id.clone(),
            request_id: super::extract::label(&params.request_id),
            call_id: params.call_id.clone(),
            extraction_id: erasure_id.clone(),
            dry_run: params.dry_run,
            ..Default::default()
        };
        let result = self
            .erase_checked(&params, normalized, subject_id, erasure_id, entry.clone())
            .await;
        if let Err(error) = &result {
            let mut entry = entry;
            // An erasure whose COMMIT is unresolved: its record names the transaction.
            if let ExtractError::Erasure(ErasureRefusal::CommitOutcomeUnknown { transaction }) =
                error
            {
                entry.transaction = transaction.clone();
            }
            self.records.failed(&self.metrics, entry, error).await;
        }
        result
    }

    async fn erase_checked(
        &self,
        params: &EraseParams,
        normalized: Option<Result<String, crate::subject::normalize::NormalizeError>>,
        subject_id: String,
        erasure_id: String,
        entry: Entry,
    ) -> Result<pb::ErasureReceipt, ExtractError> {
        let raw = params.value.expose_secret();
        if raw.trim().is_empty() {
            return Err(ExtractError::InvalidArgument(
                "subject.value: must not be empty or blank".into(),
            ));
        }
        if raw.len() > MAX_IDENTITY_BYTES {
            return Err(ExtractError::InvalidArgument(format!(
                "subject.value: longer than the {MAX_IDENTITY_BYTES}-byte maximum"
            )));
        }
        let source = self.source(&params.source)?.clone();
        let cfg = &self.config.sources[source.index];
        let value = match normalized {
            // A value its kind cannot normalise is malformed, whatever the matching.
            Some(Err(e)) => {
                return Err(ExtractError::InvalidArgument(format!("subject.value: {e}")));
            }
            Some(Ok(value)) if cfg.erasure.matching == ErasureMatching::AsExtract => value,
            // Exact matching, or not a kind of this source (the plan below names the kinds
            // it has): the value as sent.
            _ => raw.to_owned(),
        };
        let map = self.data_map_retrying(&source, params.deadline).await?;
        let plan = map.erasure_plan(&params.kind)?;
        let steps = policy::steps(&plan, cfg)?;
        if !params.dry_run && cfg.erasure.require_preview && params.preview_digest.is_empty() {
            return Err(ErasureRefusal::PreviewRequired {
                source_name: cfg.name.clone(),
            }
            .into());
        }
        let run = Run {
            engine: self,
            cfg,
            params,
            value,
            subject_id,
            erasure_id,
            entry,
            plan,
            steps,
            mapped: map.tables.iter().map(|t| t.display.clone()).collect(),
        };
        let mut delays = cfg.retry.policy().delays();
        let mut attempts = 0u32;
        let mut foreign_key_retried = false;
        loop {
            attempts += 1;
            let result = self
                .admitted(&source, &params.caller, params.deadline, async || {
                    source
                        .store
                        .with(Attempt {
                            run: &run,
                            attempt: attempts,
                        })
                        .await
                })
                .await;
            // A foreign key broken by a row that a concurrent writer added after the
            // snapshot (invisible to it) passes in a new snapshot, which captures that row
            // too: tried once more. A key broken again is a real one, and refused.
            let concurrent_row = !foreign_key_retried
                && matches!(
                    &result,
                    Err(ExtractError::Erasure(ErasureRefusal::Constraint {
                        foreign_key: true,
                        ..
                    }))
                );
            foreign_key_retried |= concurrent_row;
            match &result {
                Err(error) if error.is_retryable() || concurrent_row => {
                    let Some(delay) = delays.next_before(params.deadline) else {
                        return result;
                    };
                    tracing::warn!(source = %cfg.name, attempt = attempts,
                        delay_ms = delay.as_millis() as u64, %error,
                        "erasure rolled back after a transient failure: trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        stop = run.stop_signal() => return Err(stop),
                    }
                }
                _ => return result,
            }
        }
    }
}

/// One attempt of an erasure, written once for every store and run on the source's own.
struct Attempt<'a> {
    run: &'a Run<'a>,
    attempt: u32,
}

impl WithStore for Attempt<'_> {
    type Output = Result<pb::ErasureReceipt, ExtractError>;

    fn with<S: Backend>(self, store: &S) -> impl std::future::Future<Output = Self::Output> + Send {
        self.run.attempt_on(store, self.attempt)
    }
}
