//! Masking inside scanned JSON columns: the captured rows are read page by page (a page is at
//! most [`PAGE_BYTES`] of documents, or one document), each document is masked in the process
//! by the same matrix the scan uses, and the page is written back in one UPDATE with the
//! table's other masks. The verification reads the masked rows back the same way and masks
//! them again: nothing may be left to mask.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::policy::Step;
use super::{ErasureRefusal, Run};
use crate::classify::{JsonMasker, Matrix, Replacement, ScanLimits, ScanViolation};
use crate::config::erasure::MaskMethod;
use crate::engine::ExtractError;
use crate::store::erase::{Captured, EraseTxn, JsonPage, MaskValue, PageOf};

/// The most bytes of documents one page reads (a single larger document is a page of its own,
/// up to the scan's limit).
const PAGE_BYTES: u64 = 4 * 1024 * 1024;

/// The most rows of one page, so that the join of a page's rows with its documents stays
/// small whatever plan the database picks for it.
const PAGE_ROWS: u64 = 10_000;

impl Run<'_> {
    /// Masks the captured rows of step `i` page by page, with `sets` (the table's other
    /// masks). Returns the masked rows.
    pub(super) async fn mask_json_pages<T: EraseTxn>(
        &self,
        txn: &mut T,
        i: usize,
        step: &Step,
        sets: &[(String, MaskValue)],
    ) -> Result<Captured, ExtractError> {
        let table = step.planned.table.display.as_str();
        let mut columns = Vec::new();
        for (column, _) in &step.json_masks {
            let mapped = super::policy::live_column(&step.planned, column)?;
            columns.push((column.as_str(), mapped.base_type.as_str()));
        }
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let mut changed = 0u64;
        let mut offset = 0u64;
        let masker = Arc::new(self.page_masker(step)?);
        while let Some(page) = self.page(txn, i, step, false, &names, offset).await? {
            // Parsing and rewriting a page's documents (up to PAGE_BYTES) is CPU work: on a
            // blocking thread, so that no runtime thread is held by it.
            let masker = masker.clone();
            let (ids, docs) = (page.ids, page.docs);
            let masked = tokio::task::spawn_blocking(move || masker.mask_page(&docs, false))
                .await
                .map_err(|e| ExtractError::Internal(format!("masking a page of documents: {e}")))?;
            let docs = masked.map_err(|(k, v)| refused(table, &step.json_masks[k].0, &v))?;
            let rows = txn
                .write_json_page(self.target(i), sets, &columns, &ids, &docs)
                .await
                .map_err(|e| self.db(e))?;
            changed += rows;
            if rows == 0 {
                // Nothing of the page was written: stop, and let the count check say so.
                break;
            }
            offset = offset.saturating_add(ids.len() as u64);
        }
        let masked = txn
            .json_done(self.target(i))
            .await
            .map_err(|e| self.db(e))?;
        debug_assert_eq!(masked.rows(), changed);
        Ok(masked)
    }

    /// Verifies the masked rows of step `i`: each document, masked again, has nothing left to
    /// mask (no personal path unmasked, no value or key equal to the identity).
    pub(super) async fn verify_json<T: EraseTxn>(
        &self,
        txn: &mut T,
        i: usize,
        step: &Step,
    ) -> Result<(), ExtractError> {
        let table = step.planned.table.display.as_str();
        let names: Vec<&str> = step.json_masks.iter().map(|(c, _)| c.as_str()).collect();
        let mut offset = 0u64;
        let mut wrong = 0u64;
        let masker = Arc::new(self.page_masker(step)?);
        while let Some(page) = self.page(txn, i, step, true, &names, offset).await? {
            let rows = page.ids.len();
            let masker = masker.clone();
            wrong += tokio::task::spawn_blocking(move || masker.unmasked(&page.docs))
                .await
                .map_err(|e| {
                    ExtractError::Internal(format!("verifying a page of documents: {e}"))
                })?;
            offset = offset.saturating_add(rows as u64);
        }
        if wrong != 0 {
            return Err(ErasureRefusal::Unverified {
                table: table.to_owned(),
                detail: format!(
                    "{wrong} kept JSON documents still hold a personal path or the identity"
                ),
            }
            .into());
        }
        Ok(())
    }

    /// The next page of step `i`'s captured (or `masked`) rows, from the row at `offset`:
    /// at most [`PAGE_BYTES`] of documents (or one document) and [`PAGE_ROWS`] rows; `None`
    /// when none is left. A document above the scan's limit is refused.
    async fn page<T: EraseTxn>(
        &self,
        txn: &mut T,
        i: usize,
        step: &Step,
        masked: bool,
        columns: &[&str],
        offset: u64,
    ) -> Result<Option<JsonPage>, ExtractError> {
        let limit = ScanLimits::default().max_bytes as u64;
        let page_of = PageOf {
            masked,
            offset,
            max_doc: limit,
            page_bytes: PAGE_BYTES,
            page_rows: PAGE_ROWS,
        };
        let page = txn
            .json_page(self.target(i), columns, page_of)
            .await
            .map_err(|e| self.db(e))?;
        if let Some((k, bytes)) = page.as_ref().and_then(|p| p.too_large) {
            return Err(refused(
                &step.planned.table.display,
                &step.json_masks[k].0,
                &ScanViolation {
                    category: "json_too_large",
                    detail: format!("a document of {bytes} bytes is above the {limit}-byte limit"),
                },
            ));
        }
        Ok(page)
    }

    /// What masks the step's documents, owned, for a blocking thread.
    fn page_masker(&self, step: &Step) -> Result<PageMasker, ExtractError> {
        let columns = step
            .json_masks
            .iter()
            .map(|(column, method)| {
                if *method != MaskMethod::Pseudonym {
                    return Ok((*method, None));
                }
                let key = self.cfg.erasure.pseudonym_key.as_ref().ok_or_else(|| {
                    ErasureRefusal::Policy {
                        table: step.planned.table.display.clone(),
                        column: column.clone(),
                        detail: "a pseudonym mask needs the source's erasure.pseudonym_key_env"
                            .into(),
                    }
                })?;
                Ok((
                    *method,
                    Some(SecretBox::new(Box::new(key.expose_secret().clone()))),
                ))
            })
            .collect::<Result<_, ExtractError>>()?;
        Ok(PageMasker {
            matrix: self.engine.matrix.clone(),
            identity: SecretString::from(self.value.clone()),
            redaction: self.cfg.erasure.redaction.clone(),
            columns,
        })
    }
}

/// What masks one page's documents, owned so that a page is masked on a blocking thread.
/// Holds the identity and any pseudonym key as secrets; it has no `Debug`.
struct PageMasker {
    matrix: Arc<Matrix>,
    identity: SecretString,
    redaction: String,
    /// Per JSON column of the step: its mask, and the pseudonym key when it needs one.
    columns: Vec<(MaskMethod, Option<SecretBox<Vec<u8>>>)>,
}

impl PageMasker {
    /// The page's documents masked, per JSON column (`None` where a document is unchanged
    /// or NULL), or the first column (by index) whose document cannot be masked in place.
    #[allow(clippy::type_complexity)]
    fn mask_page(
        &self,
        docs: &[Vec<Option<String>>],
        verifying: bool,
    ) -> Result<Vec<Vec<Option<String>>>, (usize, ScanViolation)> {
        let limit = ScanLimits::default().max_bytes;
        docs.iter()
            .enumerate()
            .map(|(k, column)| {
                column
                    .iter()
                    .map(|doc| match doc {
                        Some(doc) => match self.mask(k, doc, verifying) {
                            // Masks may be longer than what they replace: a document must
                            // stay within what the scan (and the verification) reads.
                            Ok(Some(masked)) if masked.len() > limit => Err((
                                k,
                                ScanViolation {
                                    category: "json_too_large",
                                    detail: format!(
                                        "masked, a document would hold {} bytes, above the \
                                         {limit}-byte limit",
                                        masked.len()
                                    ),
                                },
                            )),
                            masked => masked.map_err(|v| (k, v)),
                        },
                        None => Ok(None),
                    })
                    .collect()
            })
            .collect()
    }

    /// How many of the page's documents, masked again, still have something to mask (or
    /// cannot be read).
    fn unmasked(&self, docs: &[Vec<Option<String>>]) -> u64 {
        let mut wrong = 0;
        for (k, column) in docs.iter().enumerate() {
            for doc in column.iter().flatten() {
                if !matches!(self.mask(k, doc, true), Ok(None)) {
                    wrong += 1;
                }
            }
        }
        wrong
    }

    /// One document of JSON column `k` masked, or `None` when nothing in it needs masking.
    fn mask(&self, k: usize, doc: &str, verifying: bool) -> Result<Option<String>, ScanViolation> {
        let (method, key) = &self.columns[k];
        let key = key.as_ref().map(|k| k.expose_secret().as_slice());
        let token = |text: &str| super::run::pseudonym(key.unwrap_or_default(), text.as_bytes());
        let replacement = match method {
            MaskMethod::Null => Replacement::Null(&self.redaction),
            MaskMethod::Redact => Replacement::Redact(&self.redaction),
            MaskMethod::Pseudonym => Replacement::Pseudonym(&token),
        };
        JsonMasker {
            matrix: &self.matrix,
            identity: self.identity.expose_secret(),
            replacement,
            limits: ScanLimits::default(),
            verifying,
        }
        .mask(doc)
    }
}

/// A document that cannot be masked in place: the erasure is refused, naming the column.
fn refused(table: &str, column: &str, violation: &ScanViolation) -> ExtractError {
    ErasureRefusal::Policy {
        table: table.to_owned(),
        column: column.to_owned(),
        detail: format!(
            "a document cannot be masked in place ({}: {}); delete the rows, or mask the \
             column with null",
            violation.category, violation.detail
        ),
    }
    .into()
}
