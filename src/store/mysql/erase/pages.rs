//! Masking inside JSON on MariaDB and MySQL: a step's captured keys numbered in a temporary
//! table, its documents read back page by page in that order (their sizes first, so that only
//! a page's worth crosses into the process), and each page written back through a temporary
//! table of masked documents in one UPDATE, with the table's other masks.

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, Value};

use super::{MyErase, keys_table, quote, quoted, same_key};
use crate::store::erase::{EraseError, JsonPage, MaskValue, PageOf, Target};

/// The column numbering a slot's captured keys.
const N: &str = "`dsr_erase_n`";

/// The temporary table of slot `slot`'s captured keys, numbered from 1 in key order.
pub(super) fn numbered_table(slot: usize) -> String {
    format!("`dsr_erase_n{slot}`")
}

/// The temporary table of one page of slot `slot`'s masked documents.
pub(super) fn page_table(slot: usize) -> String {
    format!("`dsr_erase_w{slot}`")
}

/// How a slot's pages are written: the table's other masks, made at its first page, and the
/// rows written so far.
pub(super) struct PageWriter {
    clauses: Vec<String>,
    values: Vec<Value>,
    pub(super) written: u64,
}

/// The most bytes of documents bound in one INSERT of a page (a larger document goes alone).
const INSERT_BYTES: usize = 1 << 20;

impl MyErase {
    /// `t0` joined to the slot's numbered keys (`n`), as a FROM clause.
    async fn numbered(&mut self, target: Target<'_>) -> Result<String, EraseError> {
        let key = self.key(target)?.to_vec();
        let table = numbered_table(target.slot);
        if !self.numbered.contains(&target.slot) {
            let columns = key.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
            self.run(&[
                &format!("DROP TEMPORARY TABLE IF EXISTS {table}"),
                // Numbered 1..N by ROW_NUMBER, not AUTO_INCREMENT, whose steps a server may
                // set above 1 (`auto_increment_increment`, as Galera does): a page after
                // `offset` rows begins at number `offset + 1`.
                &format!(
                    "CREATE TEMPORARY TABLE {table} ({N} BIGINT NOT NULL PRIMARY KEY) \
                     SELECT ROW_NUMBER() OVER (ORDER BY {columns}) AS {N}, {columns} FROM {}",
                    keys_table(target.slot)
                ),
            ])
            .await?;
            self.numbered.push(target.slot);
        }
        let on = same_key(&key, "n", "t0");
        Ok(format!(
            "{table} AS n JOIN {} AS t0 ON {on}",
            quoted(target.name)
        ))
    }

    /// The next page of documents after number `page_of.offset`: the rows whose documents,
    /// summed in order, begin within `page_bytes` (at least one, at most `page_rows`). A
    /// document above `max_doc` is not read: the page names it.
    pub(super) async fn page(
        &mut self,
        target: Target<'_>,
        columns: &[&str],
        page_of: PageOf,
    ) -> Result<Option<JsonPage>, EraseError> {
        let from = self.numbered(target).await?;
        let sizes = columns
            .iter()
            .map(|c| format!("OCTET_LENGTH(t0.{})", quote(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("SELECT n.{N}, {sizes} FROM {from} WHERE n.{N} > ? ORDER BY n.{N} LIMIT ?");
        let bound = vec![Value::from(page_of.offset), Value::from(page_of.page_rows)];
        let rows: Result<Vec<Row>, _> = self.conn().exec(sql, Params::Positional(bound)).await;
        let rows = rows.map_err(|e| self.err(e, Some(target.display)))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let first_n: u64 = first.get(0).unwrap_or(0);
        let (mut last_n, mut bytes) = (first_n, 0u64);
        for row in &rows {
            if bytes >= page_of.page_bytes {
                break;
            }
            last_n = row.get(0).unwrap_or(last_n);
            for k in 0..columns.len() {
                let size: Option<u64> = row.get::<Option<u64>, _>(k + 1).flatten();
                let size = size.unwrap_or(0);
                if size > page_of.max_doc {
                    return Ok(Some(JsonPage {
                        ids: Vec::new(),
                        docs: vec![Vec::new(); columns.len()],
                        too_large: Some((k, size)),
                    }));
                }
                bytes += size;
            }
        }
        let texts = columns
            .iter()
            .map(|c| format!("CAST(t0.{} AS CHAR)", quote(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("SELECT n.{N}, {texts} FROM {from} WHERE n.{N} BETWEEN ? AND ? ORDER BY n.{N}");
        let bound = vec![Value::from(first_n), Value::from(last_n)];
        let rows: Result<Vec<Row>, _> = self.conn().exec(sql, Params::Positional(bound)).await;
        let rows = rows.map_err(|e| self.err(e, Some(target.display)))?;
        let mut page = JsonPage {
            ids: Vec::with_capacity(rows.len()),
            docs: vec![Vec::with_capacity(rows.len()); columns.len()],
            too_large: None,
        };
        for row in &rows {
            let n: u64 = row.get(0).unwrap_or(0);
            page.ids.push(n.to_string());
            for (k, docs) in page.docs.iter_mut().enumerate() {
                docs.push(row.get::<Option<String>, _>(k + 1).flatten());
            }
        }
        Ok(Some(page))
    }

    /// Writes a page of masked documents (`None` keeps a document) and the table's other
    /// masks on the page's rows; the rows written.
    pub(super) async fn write_page(
        &mut self,
        target: Target<'_>,
        sets: &[(String, MaskValue)],
        columns: &[(&str, &str)],
        ids: &[String],
        docs: &[Vec<Option<String>>],
    ) -> Result<u64, EraseError> {
        let table = page_table(target.slot);
        if !self.pages.contains_key(&target.slot) {
            if let Some((column, _)) = columns
                .iter()
                .find(|(c, _)| self.key(target).is_ok_and(|k| k.iter().any(|k| k == c)))
            {
                return Err(EraseError::Unsupported {
                    table: target.display.to_owned(),
                    column: column.to_string(),
                    detail: "it is part of the key the erasure finds the rows by".into(),
                });
            }
            let (clauses, values) = self.set_clauses(target, sets).await?;
            let documents = (0..columns.len())
                // UTF-8 whatever the database's default: the documents are text as masked.
                .map(|k| format!(", d{k} LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
                .collect::<String>();
            self.run(&[
                &format!("DROP TEMPORARY TABLE IF EXISTS {table}"),
                &format!("CREATE TEMPORARY TABLE {table} ({N} BIGINT PRIMARY KEY{documents})"),
            ])
            .await?;
            self.pages.insert(
                target.slot,
                PageWriter {
                    clauses,
                    values,
                    written: 0,
                },
            );
        }
        self.run(&[&format!("DELETE FROM {table}")]).await?;
        // The page's documents, in statements of about a mebibyte at most.
        let mut at = 0;
        while at < ids.len() {
            let (mut bytes, mut end) = (0, at);
            while end < ids.len() && (end == at || bytes < INSERT_BYTES) && end - at < 1000 {
                bytes += docs
                    .iter()
                    .map(|d| d[end].as_ref().map_or(0, String::len))
                    .sum::<usize>();
                end += 1;
            }
            let row = format!("(?{})", ", ?".repeat(columns.len()));
            let rows = vec![row.as_str(); end - at].join(", ");
            let mut bound = Vec::with_capacity((end - at) * (1 + columns.len()));
            for i in at..end {
                let n: u64 = ids[i].parse().map_err(|_| EraseError::Unsupported {
                    table: target.display.to_owned(),
                    column: String::new(),
                    detail: "a page named a row this store did not number".into(),
                })?;
                bound.push(Value::from(n));
                bound.extend(docs.iter().map(|d| Value::from(d[i].as_deref())));
            }
            let sql = format!("INSERT INTO {table} VALUES {rows}");
            let done = self.conn().exec_drop(sql, Params::Positional(bound)).await;
            done.map_err(|e| self.err(e, Some(target.display)))?;
            at = end;
        }
        let writer = self.pages.get(&target.slot).expect("made above");
        let mut clauses: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(k, (c, _))| format!("t0.{0} = COALESCE(w.d{k}, t0.{0})", quote(c)))
            .collect();
        clauses.extend(writer.clauses.iter().cloned());
        let values = writer.values.clone();
        let sql = format!(
            "UPDATE {} JOIN {table} AS w ON w.{N} = n.{N} SET {}",
            self.numbered(target).await?,
            clauses.join(", ")
        );
        let rows = self.change(&sql, values, target, "UPDATE").await?;
        if let Some(writer) = self.pages.get_mut(&target.slot) {
            writer.written += rows;
        }
        Ok(rows)
    }
}
