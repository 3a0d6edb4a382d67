//! Masking inside JSON on PostgreSQL: a step's rows read back page by page by row id, and
//! each page written back in one prepared UPDATE that records the masked rows' new ids.

use tokio_postgres::types::ToSql;

use super::{IDS, PgErase, captured, held, masked, quoted};
use crate::store::erase::{Captured, EraseError, EraseTxn, JsonPage, MaskValue, PageOf, Target};
use crate::store::postgres::quote_ident;

impl PgErase {
    pub(super) async fn page(
        &mut self,
        target: Target<'_>,
        columns: &[&str],
        page_of: PageOf,
    ) -> Result<Option<JsonPage>, EraseError> {
        let tids = if page_of.masked {
            masked(target.slot)
        } else {
            captured(target.slot)
        };
        let texts = columns
            .iter()
            .enumerate()
            .map(|(k, c)| format!("t0.{}::text AS d{k}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let own = (0..columns.len())
            .map(|k| format!("coalesce(octet_length(d{k}), 0)"))
            .collect::<Vec<_>>()
            .join(" + ");
        let stored = columns
            .iter()
            .map(|c| format!("coalesce(pg_column_size(t0.{}), 0)", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" + ");
        let out = (0..columns.len())
            .map(|k| {
                format!("CASE WHEN octet_length(d{k}) <= $2 THEN d{k} END, octet_length(d{k})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        // The next rows by id (at most $4), then those whose stored documents fit in the page
        // ($3), then their text, cut again at $3 bytes of text: only the page's documents are
        // rendered, so that each document is read about once over the whole erasure, and only
        // a page's worth crosses into the process.
        //
        // An id whose row is gone (masked by an earlier page: its old id is no longer
        // visible) only makes a later page begin a little earlier, never skips a row.
        let table_sql = quoted(target.name);
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
        let offset = i32::try_from(page_of.offset).unwrap_or(i32::MAX);
        let limit = i32::try_from(page_of.max_doc).unwrap_or(i32::MAX);
        let (page_bytes, page_rows) = (page_of.page_bytes as i64, page_of.page_rows as i32);
        let rows = self
            .conn
            .client
            .query(&sql, &[&offset, &limit, &page_bytes, &page_rows])
            .await
            .map_err(|e| self.err(&e, Some(target.display)))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut page = JsonPage {
            ids: Vec::with_capacity(rows.len()),
            docs: vec![Vec::with_capacity(rows.len()); columns.len()],
            too_large: None,
        };
        for row in &rows {
            page.ids.push(row.get(0));
            for k in 0..columns.len() {
                let doc: Option<String> = row.get(1 + 2 * k);
                let bytes: Option<i32> = row.get(2 + 2 * k);
                if doc.is_none()
                    && let Some(bytes) = bytes
                {
                    page.too_large = Some((k, bytes.max(0) as u64));
                    return Ok(Some(page));
                }
                page.docs[k].push(doc);
            }
        }
        Ok(Some(page))
    }

    pub(super) async fn write_page(
        &mut self,
        target: Target<'_>,
        sets: &[(String, MaskValue)],
        columns: &[(&str, &str)],
        ids: &[String],
        docs: &[Vec<Option<String>>],
    ) -> Result<u64, EraseError> {
        // The statement and the other masks' parameters (a pseudonym's values and tokens may
        // be megabytes) are made at the slot's first page, and bound again for every page.
        if !self.pages.contains_key(&target.slot) {
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            let mut clauses = Self::set_clauses(sets, &mut params);
            let n = params.len();
            // Each page's masked row ids, gathered into `masked(slot)` by `json_done`.
            let pages = format!("pg_temp.dsr_masked_pages_{}", target.slot);
            self.conn
                .client
                .batch_execute(&format!(
                    "CREATE TEMPORARY TABLE {pages} (rel oid, tid tid) ON COMMIT DROP"
                ))
                .await
                .map_err(|e| self.err(&e, Some(target.display)))?;
            // The page's parameters follow the other masks': the row ids, then one array of
            // documents per JSON column (NULL where a document is unchanged).
            let arrays = (0..columns.len())
                .map(|k| format!("${}::text[]", n + 2 + k))
                .collect::<Vec<_>>();
            let names = (0..columns.len())
                .map(|k| format!("d{k}"))
                .collect::<Vec<_>>();
            for (k, (column, base_type)) in columns.iter().enumerate() {
                let c = quote_ident(column);
                clauses.push(format!("{c} = coalesce(m.d{k}::{base_type}, t0.{c})"));
            }
            let sql = format!(
                "WITH changed AS (UPDATE {} AS t0 SET {} \
                 FROM unnest(${}::text[], {}) AS m(tid, {}) \
                 WHERE t0.ctid = m.tid::tid AND t0.ctid = ANY(${}::text[]::tid[]) \
                 RETURNING t0.tableoid, t0.ctid) \
                 INSERT INTO {pages} SELECT * FROM changed",
                quoted(target.name),
                clauses.join(", "),
                n + 1,
                arrays.join(", "),
                names.join(", "),
                n + 1,
            );
            let statement = self.conn.client.prepare(&sql).await;
            let statement = statement.map_err(|e| self.err(&e, Some(target.display)))?;
            self.pages.insert(
                target.slot,
                PageWrite {
                    sql,
                    statement,
                    params,
                },
            );
        }
        let write = &self.pages[&target.slot];
        let mut bound: Vec<&(dyn ToSql + Sync)> = write
            .params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        bound.push(&ids);
        for d in docs {
            bound.push(d);
        }
        let span = self.span("UPDATE", target, &write.sql);
        let written = tracing::Instrument::instrument(
            self.conn.client.execute(&write.statement, &bound),
            span,
        )
        .await;
        written.map_err(|e| self.err(&e, Some(target.display)))
    }

    pub(super) async fn pages_done(&mut self, target: Target<'_>) -> Result<Captured, EraseError> {
        if self.pages.remove(&target.slot).is_none() {
            return Ok(Captured::default());
        }
        let rows = self
            .conn
            .client
            .query(
                &format!(
                    "INSERT INTO {IDS} SELECT {}, true, rel, array_agg(tid ORDER BY tid) \
                     FROM pg_temp.dsr_masked_pages_{} GROUP BY rel \
                     RETURNING rel, cardinality(tids)::bigint",
                    target.slot, target.slot
                ),
                &[],
            )
            .await
            .map_err(|e| self.err(&e, Some(target.display)))?;
        Ok(held(&rows))
    }
}

/// A slot's page UPDATE: its SQL, prepared, and the parameters of the table's other masks.
pub(super) struct PageWrite {
    sql: String,
    statement: tokio_postgres::Statement,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}
