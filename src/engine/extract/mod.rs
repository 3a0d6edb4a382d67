//! The extraction engine: one subject, one snapshot, streamed in bounded batches.
//!
//! [`Engine::extract`] checks the request, resolves the plan, and spawns a producer task that
//! owns one pooled connection for the whole extraction:
//!
//! 1. `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`; the first query fixes the snapshot.
//! 2. Per table, the compiled SELECT and its `COUNT(*)` go out in one round trip, and the
//!    rows stream off the connection one at a time; they are decoded and cut into batches by
//!    rows and by bytes, and each batch waits for room in a bounded channel. A slow client
//!    therefore slows the database read instead of growing the server's memory.
//! 3. Per table, `COUNT(*)` in the same snapshot must equal the rows streamed, or the
//!    extraction ends with DATA_LOSS.
//! 4. The manifest is checked against the manifest rules and sent last, after the read-only
//!    transaction committed.
//!
//! The producer races its work against three stop signals: the client went away (the channel
//! closed), the caller's deadline passed, or the server is shutting down. On any of them the
//! running query is cancelled on the PostgreSQL server with a cancel request, the transaction
//! is rolled back, and the connection is returned clean, or marked broken so that the pool
//! discards it.
//!
//! The steps live apart: [`snapshot`] holds the transaction and its cancellation, [`table`]
//! one table's portal reads and row conversion, [`batch`] the cutting of batches, [`job`] the
//! producer's hooks, messages and manifest, and [`super::ExtractError`] what ends an
//! extraction.

mod batch;
mod identities;
mod job;
pub mod manifest;
mod outcome;
mod snapshot;
mod table;

pub use identities::{MAX_IDENTITIES, MoreIdentity};
use job::Job;
pub use outcome::{MAX_PII_FIELDS_PER_COLUMN, MAX_VIOLATIONS_PER_TABLE};
pub use table::{MAX_DETAIL_CHARS, MAX_PRIMARY_KEY_CHARS};

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::task::{Context, Poll};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::Stream;

use super::{Engine, ExtractError, Source};
use crate::pb::{ExtractFrame, ExtractResponse, extract_response::Event};
use crate::subject::subject_id;

/// The longest identity value accepted. Identities are e-mails, ids and the like; anything
/// longer is a malformed request, not a subject.
pub const MAX_IDENTITY_BYTES: usize = 1024;

/// The longest request_id or compliance_tag accepted. Both are logged and echoed back.
pub const MAX_LABEL_BYTES: usize = 128;

/// The largest message sent: gRPC clients refuse messages over 4 MiB by default. A single row
/// must fit in one message beside its batch's column descriptors.
pub const MAX_MESSAGE_BYTES: usize = crate::schema::MAX_VALUE_BYTES;

/// The most table names one request may list.
pub const MAX_REQUESTED_TABLES: usize = 1000;

/// A label the caller chose, as records show it: itself within the request limits.
pub(super) fn label(text: &str) -> String {
    if text.len() <= MAX_LABEL_BYTES && !text.chars().any(char::is_control) {
        text.to_owned()
    } else {
        "[refused: too long or control characters]".to_owned()
    }
}

/// What a caller asked for. The identity value is a secret: it never appears in `Debug`.
#[derive(Debug)]
pub struct ExtractParams {
    pub source: String,
    pub kind: String,
    pub value: SecretString,
    pub batch_size: u32,
    pub request_id: String,
    pub compliance_tag: String,
    pub tables: Vec<String>,
    pub deadline: Option<Instant>,
    /// Read, coerce, scan and count everything, but send no rows (Validate's dry run).
    pub dry_run: bool,
    /// The authenticated caller's name, for logs.
    pub caller: String,
    /// The call's `x-request-id`, for logs.
    pub call_id: String,
    /// The call's server span; the extraction's hook spans are its children.
    pub span: tracing::Span,
    /// Link columns to read in the same snapshot (durable requests follow `[[links]]`).
    pub links: LinkReads,
    /// More identities of the subject, asked in the same snapshot.
    pub more_identities: Vec<MoreIdentity>,
}

/// Columns whose values, on the rows the identity matches directly, a durable request asks
/// other sources with (`[[links]]`), and where the values go. Personal data: they are never
/// sent, logged or recorded, only handed to the caller through `found` (and `Debug` shows
/// how many were found, never which).
#[derive(Clone, Default)]
pub struct LinkReads {
    /// (table, column) per link, as the data map names them.
    pub columns: Vec<(String, String)>,
    /// At most this many distinct values are read per link.
    pub limit: usize,
    /// One list per link, in order, filled before the manifest is sent.
    pub found: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
}

impl std::fmt::Debug for LinkReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let found: Vec<usize> = self
            .found
            .lock()
            .map(|found| found.iter().map(Vec::len).collect())
            .unwrap_or_default();
        f.debug_struct("LinkReads")
            .field("columns", &self.columns)
            .field("limit", &self.limit)
            .field("found", &found)
            .finish()
    }
}

/// The stream of one extraction: the producer's messages, then its error if it failed.
///
/// The error travels on its own one-shot channel, so the producer never blocks on delivering
/// it to a client that stopped reading, and the client still receives every buffered batch
/// before the error. A stream that closes without a manifest and without an error (which the
/// producer never does on purpose) still ends with an error: a stream never ends "OK" without
/// its manifest.
pub struct ExtractStream {
    rx: mpsc::Receiver<ExtractFrame>,
    outcome: oneshot::Receiver<ExtractError>,
    saw_manifest: bool,
    done: bool,
}

impl Stream for ExtractStream {
    type Item = Result<ExtractFrame, ExtractError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(message) => {
                if matches!(
                    message.message(),
                    Some(ExtractResponse {
                        event: Some(Event::Manifest(_))
                    })
                ) {
                    self.saw_manifest = true;
                }
                Poll::Ready(Some(Ok(message)))
            }
            None => {
                self.done = true;
                match self.outcome.try_recv() {
                    Ok(error) => Poll::Ready(Some(Err(error))),
                    Err(_) if self.saw_manifest => Poll::Ready(None),
                    Err(_) => Poll::Ready(Some(Err(ExtractError::Internal(
                        "the extraction ended without a manifest".into(),
                    )))),
                }
            }
        }
    }
}

impl Engine {
    /// Checks the request, resolves its plan and starts the producer.
    pub async fn extract(&self, params: ExtractParams) -> Result<ExtractStream, ExtractError> {
        // The value as its kind's normalisation makes it, once: so it is bound, hashed and
        // recorded.
        // A value no call accepts (empty, oversized) is refused unread by check_request.
        let value = params.value.expose_secret();
        let normalized = self
            .normalizer(&params.source, &params.kind)
            .filter(|_| !value.is_empty() && value.len() <= MAX_IDENTITY_BYTES)
            .map(|n| n.apply(value));
        let entry = self.entry(&params, normalized.as_ref().and_then(|n| n.as_deref().ok()));
        let dry_run = params.dry_run;
        match self.start(params, normalized, entry.clone()).await {
            Ok(stream) => Ok(stream),
            Err(error) => {
                // A dry run is part of a Validate call, which the API layer records once.
                if !dry_run {
                    self.records.failed(&self.metrics, entry, &error).await;
                }
                Err(error)
            }
        }
    }

    /// The subject id of an identity value, as a call's records name it: the value as its
    /// kind's normalisation makes it where the source and kind are known, so that a call
    /// refused later is recorded under the same subject as its successful retry. Empty for a
    /// value no call accepts (empty or oversized).
    pub fn subject_id_of(&self, source: &str, kind: &str, value: &str) -> String {
        let normalized = self
            .normalizer(source, kind)
            .and_then(|n| n.apply(value).ok());
        self.subject_id_normalized(kind, value, normalized.as_deref())
    }

    /// The subject id of `value`, as normalised already (`normalized`, when it could be).
    pub(super) fn subject_id_normalized(
        &self,
        kind: &str,
        value: &str,
        normalized: Option<&str>,
    ) -> String {
        if value.is_empty() || value.len() > MAX_IDENTITY_BYTES {
            return String::new();
        }
        subject_id(
            self.config.subject_key(),
            &label(kind),
            normalized.unwrap_or(value),
        )
    }

    /// What every audit record of this call holds. Fields the caller chose are recorded only
    /// when they are within the request limits.
    fn entry(
        &self,
        params: &ExtractParams,
        normalized: Option<&str>,
    ) -> crate::records::audit::Entry {
        crate::records::audit::Entry {
            rpc: if params.dry_run {
                "Validate"
            } else {
                "Extract"
            }
            .to_owned(),
            caller: params.caller.clone(),
            source: label(&params.source),
            subject_id: self.subject_id_normalized(
                &params.kind,
                params.value.expose_secret(),
                normalized,
            ),
            request_id: label(&params.request_id),
            call_id: params.call_id.clone(),
            dry_run: params.dry_run,
            ..Default::default()
        }
    }

    async fn start(
        &self,
        mut params: ExtractParams,
        normalized: Option<Result<String, crate::subject::normalize::NormalizeError>>,
        entry: crate::records::audit::Entry,
    ) -> Result<ExtractStream, ExtractError> {
        let source = self.source(&params.source)?.clone();
        let batch_size = self.check_request(&source, &params)?;
        // The value is bound, hashed and recorded as its kind's normalisation made it.
        let normalizer = source
            .normalizers
            .get(&params.kind)
            .ok_or_else(|| ExtractError::Internal("no normaliser for a declared kind".into()))?;
        let normalized = normalized
            .ok_or_else(|| ExtractError::Internal("the value was not normalised".into()))?;
        let value = identities::accept("subject", &params.kind, normalized, normalizer)?;
        let asking = identities::asking(
            (&params.kind, &value),
            &params.more_identities,
            |kind| source.normalizers.get(kind),
            |kind, value| subject_id(self.config.subject_key(), kind, value),
        )?;
        params.value = secrecy::SecretString::from(value);
        // The slots are held until the producer ends: a stalled stream gives them back at the
        // stall timeout.
        let mut guard = self.admit(&source, &params.caller, params.deadline).await?;
        let map = self.data_map_retrying(&source, params.deadline).await;
        if let Err(error) = &map {
            guard.settle(Some(error));
        }
        let map = map?;
        let cfg = &self.config.sources[source.index];
        let plan = match asking.identities.as_slice() {
            [] => map.plan(&params.kind, &params.tables)?,
            _ => map.plan_of(cfg, &asking.kinds(), &params.tables)?,
        };
        let link_sql = params
            .links
            .columns
            .iter()
            .map(|(table, column)| map.link_sql(&plan, table, column, params.links.limit))
            .collect();

        let (tx, rx) = mpsc::channel(self.limits.stream_buffer);
        let (outcome_tx, outcome) = oneshot::channel();
        let subject_id = subject_id(
            self.config.subject_key(),
            &params.kind,
            params.value.expose_secret(),
        );
        let job_asking_ids: Vec<String> = asking
            .identities
            .iter()
            .skip(1)
            .map(|i| i.named.subject_id.clone())
            .collect();
        let job = Job {
            params,
            asking,
            plan,
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            reading: job::Reading {
                database: cfg.database.clone(),
                matrix: self.matrix.clone(),
                coercion_policy: cfg.on_coercion_error,
                warnings: map.warnings.clone(),
                normalization: normalizer.describe(),
                batch_size,
                max_batch_bytes: self.limits.max_batch_bytes,
                retry: cfg.retry.policy(),
                stall_timeout: self.limits.stall_timeout,
                max_identity_rows: cfg.max_identity_rows,
                shared_identity: cfg.shared_identity,
                link_sql,
            },
            outbox: job::Outbox {
                tx,
                outcome: outcome_tx,
                created: Instant::now(),
                first_batch_sent: AtomicBool::new(false),
                started_sent: AtomicBool::new(false),
                sent_data: AtomicBool::new(false),
            },
            call: job::Call {
                guard,
                records: self.records.clone(),
                entry: crate::records::audit::Entry {
                    extraction_id: uuid::Uuid::new_v4().to_string(),
                    more_subject_ids: job_asking_ids,
                    ..entry
                },
                audited: AtomicBool::new(false),
                attempts: AtomicU32::new(0),
                letters: Default::default(),
                subject_id,
            },
        };
        let span = job.params.span.clone();
        tokio::spawn(tracing::Instrument::instrument(job.run(), span));
        Ok(ExtractStream {
            rx,
            outcome,
            saw_manifest: false,
            done: false,
        })
    }

    /// Validates what can be validated without the database. Returns the batch size to use.
    fn check_request(&self, source: &Source, params: &ExtractParams) -> Result<u32, ExtractError> {
        let cfg = &self.config.sources[source.index];
        identities::check("subject", &params.kind, params.value.expose_secret(), cfg)?;
        if params.more_identities.len() >= MAX_IDENTITIES {
            return Err(ExtractError::InvalidArgument(format!(
                "more_identities: at most {} besides the subject",
                MAX_IDENTITIES - 1
            )));
        }
        for (i, more) in params.more_identities.iter().enumerate() {
            identities::check(
                &format!("more_identities[{i}]"),
                &more.kind,
                more.value.expose_secret(),
                cfg,
            )?;
        }
        if params.tables.len() > MAX_REQUESTED_TABLES
            || params
                .tables
                .iter()
                .any(|t| t.len() > MAX_LABEL_BYTES || t.chars().any(char::is_control))
        {
            return Err(ExtractError::InvalidArgument(format!(
                "tables: at most {MAX_REQUESTED_TABLES} names of at most {MAX_LABEL_BYTES} \
                 bytes, without control characters"
            )));
        }
        for (field, text) in [
            ("request_id", &params.request_id),
            ("compliance_tag", &params.compliance_tag),
        ] {
            if text.len() > MAX_LABEL_BYTES || text.chars().any(char::is_control) {
                return Err(ExtractError::InvalidArgument(format!(
                    "{field}: at most {MAX_LABEL_BYTES} bytes, without control characters"
                )));
            }
        }
        match params.batch_size {
            0 => Ok(self.limits.default_batch_size),
            n if n > self.limits.max_batch_size => Err(ExtractError::InvalidArgument(format!(
                "batch_size: {n} is above the maximum of {}",
                self.limits.max_batch_size
            ))),
            n => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LinkReads;

    #[test]
    fn link_values_never_show_in_debug() {
        let links = LinkReads {
            columns: vec![("customers".into(), "id".into())],
            limit: 3,
            found: Default::default(),
        };
        *links.found.lock().unwrap() = vec![vec!["4242-secret".into()]];
        let shown = format!("{links:?}");
        assert!(!shown.contains("4242-secret"), "{shown}");
        assert!(shown.contains("found: [1]"), "{shown}");
    }
}
