//! Masking inside scanned JSON columns: the captured rows are read page by page (a page is at
//! most [`PAGE_BYTES`] of documents, or one document), each document is masked in the process
//! by the same matrix the scan uses, and the page is written back in one UPDATE with the
//! table's other masks. The verification reads the masked rows back the same way and masks
//! them again: nothing may be left to mask.

use secrecy::ExposeSecret;
use tokio_postgres::types::ToSql;
use tracing::Instrument;

use super::policy::Step;
use super::run::{Captured, captured, masked};
use super::{ErasureRefusal, Run};
use crate::classify::{JsonMasker, Replacement, ScanLimits, ScanViolation};
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
        captured_ids: &Captured,
    ) -> Result<Captured, ExtractError> {
        // Each page's masked row ids, gathered into `masked(i)` at the end.
        let pages = format!("{}_pages", masked(i));
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
        let limit = ScanLimits::default().max_bytes;
        let mut changed = 0u64;
        let mut offset = 0i32;
        // Captured rows are of one relation: masking is refused where rows span several.
        debug_assert!(captured_ids.rels.len() <= 1);
        while let Some(page) = self.page(txn, step, &captured(i), offset).await? {
            let mut docs = Vec::with_capacity(page.docs.len());
            for (k, (column, method)) in step.json_masks.iter().enumerate() {
                let key = self.key_for(*method, column, step)?;
                docs.push(
                    page.docs[k]
                        .iter()
                        .map(|doc| match doc {
                            Some(doc) => match self.mask_doc(*method, key, doc, false) {
                                // Masks may be longer than what they replace: a document must
                                // stay within what the scan (and the verification) reads.
                                Ok(Some(masked)) if masked.len() > limit => Err(refused(
                                    table,
                                    column,
                                    &ScanViolation {
                                        category: "json_too_large",
                                        detail: format!(
                                            "masked, a document would hold {} bytes, above \
                                             the {limit}-byte limit",
                                            masked.len()
                                        ),
                                    },
                                )),
                                masked => masked.map_err(|v| refused(table, column, &v)),
                            },
                            None => Ok(None),
                        })
                        .collect::<Result<Vec<Option<String>>, ExtractError>>()?,
                );
            }
            let mut bound: Vec<&(dyn ToSql + Sync)> = params.to_vec();
            bound.push(&page.tids);
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
            offset = offset.saturating_add(page.tids.len() as i32);
        }
        let rows = txn
            .query(
                &format!(
                    "INSERT INTO {} SELECT rel, array_agg(tid ORDER BY tid) FROM {pages} \
                     GROUP BY rel RETURNING rel, cardinality(tids)::bigint",
                    masked(i)
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
        while let Some(page) = self.page(txn, step, &masked(i), offset).await? {
            for (k, (column, method)) in step.json_masks.iter().enumerate() {
                let key = self.key_for(*method, column, step)?;
                for doc in page.docs[k].iter().flatten() {
                    match self.mask_doc(*method, key, doc, true) {
                        Ok(None) => {}
                        Ok(Some(_)) | Err(_) => wrong += 1,
                    }
                }
            }
            offset = offset.saturating_add(page.tids.len() as i32);
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

    /// The pseudonym key, when `method` needs it.
    fn key_for(
        &self,
        method: MaskMethod,
        column: &str,
        step: &Step,
    ) -> Result<Option<&[u8]>, ExtractError> {
        if method != MaskMethod::Pseudonym {
            return Ok(None);
        }
        let key =
            self.cfg
                .erasure
                .pseudonym_key
                .as_ref()
                .ok_or_else(|| ErasureRefusal::Policy {
                    table: step.planned.table.display.clone(),
                    column: column.to_owned(),
                    detail: "a pseudonym mask needs the source's erasure.pseudonym_key_env".into(),
                })?;
        Ok(Some(key.expose_secret().as_slice()))
    }

    /// One document masked by `method` (`key` for pseudonyms), or `None` when nothing in it
    /// needs masking.
    fn mask_doc(
        &self,
        method: MaskMethod,
        key: Option<&[u8]>,
        doc: &str,
        verifying: bool,
    ) -> Result<Option<String>, ScanViolation> {
        let redaction = self.cfg.erasure.redaction.as_str();
        let token = |text: &str| super::run::pseudonym(key.unwrap_or_default(), text);
        let replacement = match method {
            MaskMethod::Null => Replacement::Null(redaction),
            MaskMethod::Redact => Replacement::Redact(redaction),
            MaskMethod::Pseudonym => Replacement::Pseudonym(&token),
        };
        JsonMasker {
            matrix: &self.engine.matrix,
            identity: &self.value,
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
