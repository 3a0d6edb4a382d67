//! Masking inside scanned JSON columns: the captured rows are read page by page (a page is at
//! most [`PAGE_BYTES`] of documents, or one document), each document is masked in the process
//! by the same matrix the scan uses, and the page is written back in one UPDATE with the
//! table's other masks. The verification reads the masked rows back the same way and masks
//! them again: nothing may be left to mask.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use tokio_postgres::types::ToSql;
use tracing::Instrument;

use super::ids::{Captured, IDS, captured, masked};
use super::policy::Step;
use super::{ErasureRefusal, Run};
use crate::classify::{JsonMasker, Matrix, Replacement, ScanLimits, ScanViolation};
use crate::config::erasure::MaskMethod;
use crate::engine::ExtractError;
use crate::schema::quote_ident;

/// The most bytes of documents one page reads (a single larger document is a page of its own,
/// up to the scan's limit).
const PAGE_BYTES: i64 = 4 * 1024 * 1024;

/// The most rows of one page, so that the join of a page's rows with its documents stays
/// small whatever plan PostgreSQL picks for it.
const PAGE_ROWS: i32 = 10_000;

/// One page of rows: each row's id (as text) and, per JSON column, its document.
struct Page {
    tids: Vec<String>,
    /// Per JSON column of the step, the page's documents (NULL stays NULL).
    docs: Vec<Vec<Option<String>>>,
}

impl Run<'_> {
    /// Masks the captured rows of step `i` page by page: `sets` are the table's other masks,
    /// whose parameters are `params` ($1 ...). Returns the masked rows, whose new ids are then
    /// in temporary table [`masked`].
    pub(super) async fn mask_json_pages(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        i: usize,
        step: &Step,
        mut sets: Vec<String>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Captured, ExtractError> {
        // Each page's masked row ids, gathered into `masked(i)` at the end.
        let pages = format!("pg_temp.dsr_masked_pages_{i}");
        txn.batch_execute(&format!(
            "CREATE TEMPORARY TABLE {pages} (rel oid, tid tid) ON COMMIT DROP"
        ))
        .await
        .map_err(|e| self.db(&e, Some(&step.planned.table.display)))?;
        let table = step.planned.table.display.as_str();
        let n = params.len();
        // The page's parameters follow the other masks': the row ids, then one array of
        // documents per JSON column (NULL where a document is unchanged).
        let arrays = (0..step.json_masks.len())
            .map(|k| format!("${}::text[]", n + 2 + k))
            .collect::<Vec<_>>();
        let names = (0..step.json_masks.len())
            .map(|k| format!("d{k}"))
            .collect::<Vec<_>>();
        for (k, (column, _)) in step.json_masks.iter().enumerate() {
            let c = quote_ident(column);
            let mapped = super::policy::live_column(&step.planned, column)?;
            sets.push(format!(
                "{c} = coalesce(m.d{k}::{}, t0.{c})",
                mapped.base_type
            ));
        }
        let sql = format!(
            "WITH changed AS (UPDATE {} AS t0 SET {} \
             FROM unnest(${}::text[], {}) AS m(tid, {}) \
             WHERE t0.ctid = m.tid::tid AND t0.ctid = ANY(${}::text[]::tid[]) \
             RETURNING t0.tableoid, t0.ctid) \
             INSERT INTO {pages} SELECT * FROM changed",
            step.planned.table.quoted(),
            sets.join(", "),
            n + 1,
            arrays.join(", "),
            names.join(", "),
            n + 1,
        );
        let statement = txn
            .prepare(&sql)
            .await
            .map_err(|e| self.db(&e, Some(table)))?;
        let mut changed = 0u64;
        // Captured rows are of one relation: masking is refused where rows span several.
        let mut offset = 0i32;
        let masker = Arc::new(self.page_masker(step)?);
        while let Some(page) = self.page(txn, step, &captured(i), offset).await? {
            // Parsing and rewriting a page's documents (up to PAGE_BYTES) is CPU work: on a
            // blocking thread, so that no runtime thread is held by it.
            let masker = masker.clone();
            let (tids, docs) = (page.tids, page.docs);
            let masked = tokio::task::spawn_blocking(move || masker.mask_page(&docs, false))
                .await
                .map_err(|e| ExtractError::Internal(format!("masking a page of documents: {e}")))?;
            let docs = masked.map_err(|(k, v)| refused(table, &step.json_masks[k].0, &v))?;
            let mut bound: Vec<&(dyn ToSql + Sync)> = params.to_vec();
            bound.push(&tids);
            for d in &docs {
                bound.push(d);
            }
            let rows = txn
                .execute(&statement, &bound)
                .instrument(self.query_span("UPDATE", step, &sql))
                .await
                .map_err(|e| self.db(&e, Some(table)))?;
            changed += rows;
            if rows == 0 {
                // Nothing of the page was written: stop, and let the count check say so.
                break;
            }
            offset = offset.saturating_add(tids.len() as i32);
        }
        let rows = txn
            .query(
                &format!(
                    "INSERT INTO {IDS} SELECT {i}, true, rel, array_agg(tid ORDER BY tid) \
                     FROM {pages} GROUP BY rel RETURNING rel, cardinality(tids)::bigint"
                ),
                &[],
            )
            .await
            .map_err(|e| self.db(&e, Some(table)))?;
        let masked = Captured::from_rows(&rows);
        debug_assert_eq!(masked.rows(), changed);
        Ok(masked)
    }

    /// Verifies the masked rows of step `i`: each document, masked again, has nothing left to
    /// mask (no personal path unmasked, no value or key equal to the identity).
    pub(super) async fn verify_json(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        i: usize,
        step: &Step,
    ) -> Result<(), ExtractError> {
        let table = step.planned.table.display.as_str();
        let mut offset = 0i32;
        let mut wrong = 0u64;
        let masker = Arc::new(self.page_masker(step)?);
        while let Some(page) = self.page(txn, step, &masked(i), offset).await? {
            let rows = page.tids.len();
            let masker = masker.clone();
            wrong += tokio::task::spawn_blocking(move || masker.unmasked(&page.docs))
                .await
                .map_err(|e| {
                    ExtractError::Internal(format!("verifying a page of documents: {e}"))
                })?;
            offset = offset.saturating_add(rows as i32);
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

    /// The next page of the step's rows whose ids temporary table `tids` holds (one relation,
    /// ids sorted), from the id at `offset` (counted from 0): at most [`PAGE_BYTES`] of
    /// documents (or one document) and [`PAGE_ROWS`] rows. `None` when none is left. A
    /// document above the scan's limit is measured in the query, and refused.
    ///
    /// The next page starts `offset` plus this page's rows further on. An id whose row is
    /// gone (masked by an earlier page: its old id is no longer visible) only makes a later
    /// page begin a little earlier, never skips a row.
    async fn page(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        step: &Step,
        tids: &str,
        offset: i32,
    ) -> Result<Option<Page>, ExtractError> {
        let table = step.planned.table.display.as_str();
        let columns = step.json_masks.len();
        let texts = step
            .json_masks
            .iter()
            .enumerate()
            .map(|(k, (c, _))| format!("t0.{}::text AS d{k}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let own = (0..columns)
            .map(|k| format!("coalesce(octet_length(d{k}), 0)"))
            .collect::<Vec<_>>()
            .join(" + ");
        let stored = step
            .json_masks
            .iter()
            .map(|(c, _)| format!("coalesce(pg_column_size(t0.{}), 0)", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" + ");
        let out = (0..columns)
            .map(|k| {
                format!("CASE WHEN octet_length(d{k}) <= $2 THEN d{k} END, octet_length(d{k})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        // The next rows by id (at most $4), then those whose stored documents fit in the page
        // ($3), then their text, cut again at $3 bytes of text: only the page's documents are
        // rendered, so that each document is read about once over the whole erasure, and only
        // a page's worth crosses into the process.
        let table_sql = step.planned.table.quoted();
        let sql = format!(
            "WITH p AS (SELECT unnest(tids[$1::int + 1 : $1::int + $4::int]) AS tid FROM {tids}), \
             s AS (SELECT t0.ctid AS tid, {stored} AS stored FROM {table_sql} AS t0 \
               WHERE t0.ctid = ANY(ARRAY(SELECT tid FROM p))), \
             c AS (SELECT tid FROM (SELECT tid, stored, \
               sum(stored) OVER (ORDER BY tid) AS running FROM s) x WHERE running - stored < $3), \
             r AS MATERIALIZED (SELECT t0.ctid AS tid, {texts} FROM {table_sql} AS t0 \
               WHERE t0.ctid = ANY(ARRAY(SELECT tid FROM c))), \
             w AS (SELECT r.*, {own} AS own, sum({own}) OVER (ORDER BY tid) AS running FROM r) \
             SELECT tid::text, {out} FROM w WHERE running - own < $3 ORDER BY tid"
        );
        let limit = ScanLimits::default().max_bytes as i32;
        let rows = txn
            .query(&sql, &[&offset, &limit, &PAGE_BYTES, &PAGE_ROWS])
            .await
            .map_err(|e| self.db(&e, Some(table)))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut page = Page {
            tids: Vec::with_capacity(rows.len()),
            docs: vec![Vec::with_capacity(rows.len()); columns],
        };
        for row in &rows {
            page.tids.push(row.get(0));
            for (k, (column, _)) in step.json_masks.iter().enumerate() {
                let doc: Option<String> = row.get(1 + 2 * k);
                let bytes: Option<i32> = row.get(2 + 2 * k);
                if doc.is_none()
                    && let Some(bytes) = bytes
                {
                    return Err(refused(
                        table,
                        column,
                        &ScanViolation {
                            category: "json_too_large",
                            detail: format!(
                                "a document of {bytes} bytes is above the {limit}-byte limit"
                            ),
                        },
                    ));
                }
                page.docs[k].push(doc);
            }
        }
        Ok(Some(page))
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
        let token = |text: &str| super::run::pseudonym(key.unwrap_or_default(), text);
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
