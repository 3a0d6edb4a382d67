//! An erasure's transaction on PostgreSQL: `BEGIN ISOLATION LEVEL REPEATABLE READ` on one
//! pooled connection, rows captured by row id (`ctid`, per relation: the table, or each
//! partition or inheritance child) into a temporary table, changed by those ids or by the
//! plan's own condition, masks bound as arrays, and a cancel request when the call stops.

use std::collections::HashMap;

use tokio::time::Instant;
use tokio_postgres::CancelToken;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres_rustls::MakeRustlsConnect;

mod pages;

use super::{Conn, DbError, SourcePool, quote_ident};
use crate::config::QualifiedName;
use crate::config::erasure::MaskMethod;
use crate::store::catalog::ForeignKey;
use crate::store::erase::{
    Captured, CommitError, Distinct, Erase, EraseError, EraseOptions, EraseTxn, JsonPage,
    MaskCheck, MaskValue, PageOf, Rows, Target,
};

/// The temporary table of the erasure's row ids: per step, its captured rows (`masked`
/// false) and its masked rows' new ids (`masked` true), one row per relation that holds
/// them, its ids sorted where pages read them. It stays with the connection for the next
/// erasure, emptied at every COMMIT (made again after a rollback undid it).
const IDS: &str = "pg_temp.dsr_erase_ids";

/// The captured row ids of slot `i`, as a FROM item `(rel, tids)`.
fn captured(i: usize) -> String {
    format!("(SELECT rel, tids FROM {IDS} WHERE step = {i} AND NOT masked) AS ids")
}

/// The masked rows' new row ids of slot `i`, likewise.
fn masked(i: usize) -> String {
    format!("(SELECT rel, tids FROM {IDS} WHERE step = {i} AND masked) AS ids")
}

/// A condition on `t0`: the row is one that `ids` (a FROM item of [`captured`] or [`masked`])
/// holds for relation `rel`. A row id names a row only within its relation, hence the
/// relation; the ids are read as one array, which PostgreSQL looks up by row id (a TID scan).
fn in_ids(ids: &str, rel: u32) -> String {
    format!(
        "t0.tableoid = {rel}::oid AND t0.ctid = ANY((SELECT tids FROM {ids} WHERE rel = {rel}::oid)::tid[])"
    )
}

/// A condition on `t0` selecting exactly the rows `held` counts, held in `ids` (`false` when
/// there are none).
fn held_condition(held: &Captured, ids: &str) -> String {
    if held.rels.is_empty() {
        return "false".to_owned();
    }
    held.rels
        .iter()
        .map(|&(rel, _)| format!("({})", in_ids(ids, rel)))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// From the `RETURNING rel, cardinality(tids)::bigint` of a statement that wrote row ids.
fn held(rows: &[tokio_postgres::Row]) -> Captured {
    Captured {
        rels: rows
            .iter()
            .map(|r| (r.get::<_, u32>(0), r.get::<_, i64>(1).max(0) as u64))
            .collect(),
    }
}

/// The table in SQL.
fn quoted(name: &QualifiedName) -> String {
    format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.table))
}

impl Erase for SourcePool {
    type Txn = PgErase;

    async fn begin_erasure(&self, options: EraseOptions<'_>) -> Result<PgErase, EraseError> {
        let conn = self.checkout(options.deadline).await?;
        // From here on, a transaction dropped before it ends discards its connection.
        let txn = PgErase {
            name: self.source_name().to_owned(),
            database: options.database.to_owned(),
            value: options.value.to_owned(),
            cancel: conn.client.cancel_token(),
            cancel_tls: self.cancel_tls(),
            conn,
            open: true,
            ids_made: false,
            pages: HashMap::new(),
        };
        // SET takes no snapshot: the snapshot is taken by the first lock, so that no row
        // committed between the two is missed.
        let mut begin = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL lock_timeout = {}",
            options.lock_timeout.as_millis().max(1)
        );
        if let Some(deadline) = options.deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis();
            begin.push_str(&format!("; SET LOCAL statement_timeout = {}", left.max(1)));
        }
        txn.conn
            .client
            .batch_execute(&begin)
            .await
            .map_err(|e| txn.err(&e, None))?;
        Ok(txn)
    }

    fn limit_fired(error: &DbError) -> bool {
        <super::PgSnapshot as crate::store::read::ReadSnapshot>::limit_fired(error)
    }

    async fn commit_outcome(&self, transaction: &str, deadline: Option<Instant>) -> Option<bool> {
        let conn = self.checkout(deadline).await.ok()?;
        let row = conn
            .client
            .query_one("SELECT pg_xact_status($1::text::xid8)", &[&transaction])
            .await
            .ok()?;
        match row.get::<_, Option<String>>(0).as_deref() {
            Some("committed") => Some(true),
            Some("aborted") => Some(false),
            _ => None,
        }
    }
}

/// One erasure's transaction on one pooled PostgreSQL connection.
pub struct PgErase {
    name: String,
    database: String,
    value: String,
    conn: Conn,
    cancel: CancelToken,
    cancel_tls: MakeRustlsConnect,
    /// The transaction may still be open: dropped so, the connection is discarded.
    open: bool,
    /// The temporary table [`IDS`] exists in this transaction.
    ids_made: bool,
    /// Per slot masked in pages: its page statement, prepared once, and its parameters.
    pages: HashMap<usize, pages::PageWrite>,
}

impl Drop for PgErase {
    fn drop(&mut self) {
        if self.open {
            self.conn.mark_broken();
        }
    }
}

impl PgErase {
    /// A database error of this erasure: an integrity or data error names what it broke (a
    /// constraint, a column's limits) without the values PostgreSQL's message may quote.
    fn err(&self, error: &tokio_postgres::Error, table: Option<&str>) -> EraseError {
        if let Some(db) = error.as_db_error() {
            let code = db.code().code();
            if code.starts_with("23") || code.starts_with("22") {
                let what = match (db.constraint(), db.column()) {
                    (Some(constraint), _) => format!("constraint '{constraint}'"),
                    (None, Some(column)) => format!("the limits of column '{column}'"),
                    (None, None) => "a constraint or a column's limits".to_owned(),
                };
                return EraseError::Integrity {
                    table: db.table().map(str::to_owned).or(table.map(str::to_owned)),
                    what,
                    code: code.to_owned(),
                    foreign_key: code
                        == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION.code(),
                    data: code.starts_with("22"),
                };
            }
        }
        EraseError::Db(DbError::from_pg(&self.name, error))
    }

    /// Makes the temporary table of row ids, once per transaction (after the first lock,
    /// which takes the snapshot).
    async fn ids(&mut self) -> Result<(), EraseError> {
        if self.ids_made {
            return Ok(());
        }
        self.conn
            .client
            .batch_execute(&format!(
                "SET LOCAL client_min_messages = warning; \
                 CREATE TEMPORARY TABLE IF NOT EXISTS {IDS} \
                 (step int, masked bool, rel oid, tids tid[]) ON COMMIT DELETE ROWS"
            ))
            .await
            .map_err(|e| self.err(&e, None))?;
        self.ids_made = true;
        Ok(())
    }

    /// A condition on `t0` selecting `rows` of `target`: its captured ids, or its plan's
    /// paths (each row once: several paths read the row ids of the plan's UNION ALL).
    fn rows_condition(target: Target<'_>, rows: Rows<'_>) -> String {
        match rows {
            Rows::Captured(ids) => held_condition(ids, &captured(target.slot)),
            Rows::Plan => match target.branches {
                [only] => format!("({only})"),
                branches => format!(
                    "t0.ctid = ANY(ARRAY({}))",
                    branches
                        .iter()
                        .map(|w| format!("SELECT t0.ctid FROM {} WHERE {w}", target.from))
                        .collect::<Vec<_>>()
                        .join(" UNION ALL ")
                ),
            },
        }
    }

    /// The SET clauses of `sets`, their parameters pushed onto `params` (numbered after
    /// those already there).
    fn set_clauses(
        sets: &[(String, MaskValue)],
        params: &mut Vec<Box<dyn ToSql + Sync + Send>>,
    ) -> Vec<String> {
        let mut clauses = Vec::new();
        for (column, value) in sets {
            let c = quote_ident(column);
            match value {
                MaskValue::Null => clauses.push(format!("{c} = NULL")),
                MaskValue::Text(text) => {
                    params.push(Box::new(text.clone()));
                    clauses.push(format!("{c} = ${}", params.len()));
                }
                MaskValue::Tokens { values, tokens } => {
                    // Read as text by `distinct_values`: valid UTF-8.
                    let values: Vec<String> = values
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect();
                    params.push(Box::new(values));
                    params.push(Box::new(tokens.clone()));
                    let (v, t) = (params.len() - 1, params.len());
                    clauses.push(format!(
                        "{c} = (SELECT m.token FROM unnest(${v}::text[], ${t}::text[]) AS m(v, token) \
                         WHERE m.v = t0.{c}::text)"
                    ));
                }
            }
        }
        clauses
    }

    /// Queries selecting `{}` of the captured rows of `target`, one per relation.
    fn captured_rows(target: Target<'_>, held: &Captured) -> Vec<String> {
        held.rels
            .iter()
            .map(|&(rel, _)| {
                format!(
                    "SELECT {{}} FROM {} WHERE {}",
                    target.from,
                    in_ids(&captured(target.slot), rel)
                )
            })
            .collect()
    }
}

impl EraseTxn for PgErase {
    fn direct_changes(&self) -> bool {
        true
    }

    async fn lock(&mut self, target: Target<'_>, branch: &str) -> Result<(), EraseError> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE {branch} FOR UPDATE OF t0",
            target.from
        );
        let value = &self.value;
        let done = self.conn.client.execute(&sql, &[value]).await;
        done.map(|_| ())
            .map_err(|e| self.err(&e, Some(target.display)))
    }

    async fn count(&mut self, sql: &str) -> Result<u64, EraseError> {
        let row = self.conn.client.query_one(sql, &[&self.value]).await;
        let row = row.map_err(|e| self.err(&e, None))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    async fn integers(&mut self, sql: &str) -> Result<Vec<i64>, EraseError> {
        let row = self.conn.client.query_one(sql, &[&self.value]).await;
        let row = row.map_err(|e| self.err(&e, None))?;
        Ok((0..row.len()).map(|i| row.get::<_, i64>(i)).collect())
    }

    async fn live_columns(&mut self, table: &QualifiedName) -> Result<Vec<String>, EraseError> {
        let rows = self
            .conn
            .client
            .query(
                "SELECT attname::text FROM pg_catalog.pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
                 ORDER BY attnum",
                &[&quoted(table)],
            )
            .await
            .map_err(|e| self.err(&e, Some(&table.display_name())))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn foreign_keys(&mut self) -> Result<Vec<ForeignKey>, EraseError> {
        let keys = super::read_foreign_keys(&self.conn.client).await;
        keys.map_err(|e| self.err(&e, None))
    }

    async fn unconditional(
        &mut self,
        tables: &[(&QualifiedName, bool)],
    ) -> Result<Vec<bool>, EraseError> {
        let mut proven = vec![false; tables.len()];
        if tables.is_empty() {
            return Ok(proven);
        }
        // pg_trigger.tgtype: ROW 1, BEFORE 2, DELETE 8, UPDATE 16; pg_rewrite.ev_type: UPDATE
        // '2', DELETE '4'.
        let (mut names, mut bits, mut events) = (Vec::new(), Vec::new(), Vec::new());
        for &(name, delete) in tables {
            names.push(quoted(name));
            bits.push(if delete { 11i32 } else { 19 });
            events.push(if delete { "4" } else { "2" });
        }
        let rows = self
            .conn
            .client
            .query(
                "SELECT n.k, NOT (c.relrowsecurity \
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid \
                     AND NOT t.tgisinternal AND t.tgenabled <> 'D' \
                     AND (t.tgtype::int & n.bits) = n.bits) \
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid \
                     AND r.ev_type::text = n.ev)) \
                 FROM unnest($1::text[], $2::int[], $3::text[]) WITH ORDINALITY \
                   AS n(name, bits, ev, k) \
                 JOIN pg_catalog.pg_class c ON c.oid = n.name::regclass",
                &[&names, &bits, &events],
            )
            .await
            .map_err(|e| self.err(&e, None))?;
        for row in rows {
            let k: i64 = row.get(0);
            if let Some(p) = usize::try_from(k - 1).ok().and_then(|k| proven.get_mut(k)) {
                *p = row.get(1);
            }
        }
        Ok(proven)
    }

    async fn capture(&mut self, target: Target<'_>, sorted: bool) -> Result<Captured, EraseError> {
        self.ids().await?;
        let select = target
            .branches
            .iter()
            .map(|w| {
                format!(
                    "SELECT t0.tableoid AS rel, t0.ctid AS tid FROM {} WHERE {w}",
                    target.from
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let order = if sorted { " ORDER BY tid" } else { "" };
        let sql = format!(
            "INSERT INTO {IDS} SELECT {}, false, rel, array_agg(tid{order}) \
             FROM ({select}) AS s GROUP BY rel RETURNING rel, cardinality(tids)::bigint",
            target.slot
        );
        let span = self.span("SELECT", target, &sql);
        let rows =
            tracing::Instrument::instrument(self.conn.client.query(&sql, &[&self.value]), span)
                .await
                .map_err(|e| self.err(&e, Some(target.display)))?;
        Ok(held(&rows))
    }

    async fn delete(&mut self, target: Target<'_>, rows: Rows<'_>) -> Result<u64, EraseError> {
        let statements: Vec<(String, bool)> = match rows {
            // One statement per relation that holds them.
            Rows::Captured(ids) => ids
                .rels
                .iter()
                .map(|&(rel, _)| {
                    let ids = in_ids(&captured(target.slot), rel);
                    (format!("DELETE FROM {} WHERE {ids}", target.from), false)
                })
                .collect(),
            Rows::Plan => vec![(
                format!(
                    "DELETE FROM {} WHERE {}",
                    target.from,
                    Self::rows_condition(target, rows)
                ),
                true,
            )],
        };
        let mut deleted = 0;
        for (sql, with_identity) in statements {
            let params: &[&(dyn ToSql + Sync)] = if with_identity { &[&self.value] } else { &[] };
            let span = self.span("DELETE", target, &sql);
            deleted +=
                tracing::Instrument::instrument(self.conn.client.execute(&sql, params), span)
                    .await
                    .map_err(|e| self.err(&e, Some(target.display)))?;
        }
        Ok(deleted)
    }

    async fn distinct_values(
        &mut self,
        target: Target<'_>,
        rows: Rows<'_>,
        column: &str,
        max_bytes: u64,
    ) -> Result<Distinct, EraseError> {
        let c = quote_ident(column);
        let condition = Self::rows_condition(target, rows);
        // Measured in the query: the values cross into the process only when their bytes are
        // within the bound (otherwise one row comes back, with the size and no value).
        let limit = max_bytes as i64;
        let (params, n): (Vec<&(dyn ToSql + Sync)>, usize) = if matches!(rows, Rows::Plan) {
            (vec![&self.value, &limit], 2)
        } else {
            (vec![&limit], 1)
        };
        let sql = format!(
            "WITH d AS (SELECT DISTINCT t0.{c}::text AS v FROM {} AS t0 \
             WHERE ({condition}) AND t0.{c} IS NOT NULL), \
             s AS (SELECT coalesce(sum(octet_length(v)), 0)::bigint AS bytes FROM d) \
             SELECT d.v, s.bytes FROM s LEFT JOIN d ON s.bytes <= ${n}",
            quoted(target.name),
        );
        let found = self.conn.client.query(&sql, &params).await;
        let found = found.map_err(|e| self.err(&e, Some(target.display)))?;
        let bytes: i64 = found.first().map(|r| r.get(1)).unwrap_or(0);
        if bytes > limit {
            return Ok(Distinct::TooLarge(bytes as u64));
        }
        Ok(Distinct::Values(
            found
                .iter()
                .filter_map(|r| r.get::<_, Option<String>>(0))
                .map(String::into_bytes)
                .collect(),
        ))
    }

    async fn mask(
        &mut self,
        target: Target<'_>,
        rows: Rows<'_>,
        sets: &[(String, MaskValue)],
    ) -> Result<Captured, EraseError> {
        self.ids().await?;
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        // Found by the plan, the rows' condition takes the identity as $1.
        if matches!(rows, Rows::Plan) {
            params.push(Box::new(self.value.clone()));
        }
        let condition = Self::rows_condition(target, rows);
        let clauses = Self::set_clauses(sets, &mut params);
        let table = quoted(target.name);
        // The new ids unsorted (only the JSON pages read them in order), of the one relation
        // a masked table's rows live in (masking is refused where they span several).
        let sql = format!(
            "WITH changed AS (UPDATE {table} AS t0 SET {} WHERE {condition} RETURNING t0.ctid) \
             INSERT INTO {IDS} SELECT {}, true, '{}'::regclass::oid, array_agg(ctid) \
             FROM changed HAVING count(*) > 0 RETURNING rel, cardinality(tids)::bigint",
            clauses.join(", "),
            target.slot,
            table.replace('\'', "''"),
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let span = self.span("UPDATE", target, &sql);
        let rows = tracing::Instrument::instrument(self.conn.client.query(&sql, &refs), span)
            .await
            .map_err(|e| self.err(&e, Some(target.display)))?;
        Ok(held(&rows))
    }

    async fn left(&mut self, target: Target<'_>, ids: &Captured) -> Result<u64, EraseError> {
        let mut found = 0u64;
        for &(rel, _) in &ids.rels {
            let sql = format!(
                "SELECT count(*) FROM {} WHERE {}",
                target.from,
                in_ids(&captured(target.slot), rel)
            );
            let row = self.conn.client.query_one(&sql, &[]).await;
            let row = row.map_err(|e| self.err(&e, Some(target.display)))?;
            found += row.get::<_, i64>(0).max(0) as u64;
        }
        Ok(found)
    }

    async fn unmasked(
        &mut self,
        target: Target<'_>,
        masked_ids: &Captured,
        masks: &[MaskCheck<'_>],
        text_columns: &[&str],
        redaction: &str,
    ) -> Result<u64, EraseError> {
        let mut masked_as_told = Vec::new();
        for check in masks {
            let c = format!("t0.{}", quote_ident(check.column));
            masked_as_told.push(match check.method {
                MaskMethod::Null => format!("{c} IS NULL"),
                MaskMethod::Redact => format!("{c}::text IS NOT DISTINCT FROM $2"),
                // A token is 32 hex digits; NULL stays NULL.
                MaskMethod::Pseudonym => {
                    format!("({c} IS NULL OR {c}::text ~ '^[0-9a-f]{{32}}$')")
                }
            });
        }
        // Each condition is TRUE or FALSE, never NULL: a NULL column (a "null" mask, or a
        // value that was never there) holds no identity, and must not read as one under the
        // fail-closed `IS NOT FALSE` below.
        let mut bad: Vec<String> = Vec::new();
        if !masked_as_told.is_empty() {
            bad.push(format!("NOT ({})", masked_as_told.join(" AND ")));
        }
        bad.extend(
            text_columns
                .iter()
                .map(|c| format!("coalesce(t0.{}::text = $1, false)", quote_ident(c))),
        );
        if bad.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT count(*) FROM {} AS t0 WHERE ({}) AND (({}) IS NOT FALSE)",
            quoted(target.name),
            held_condition(masked_ids, &masked(target.slot)),
            bad.join(" OR ")
        );
        // Both parameters are declared: a table may use neither the identity (no text
        // column) nor the redaction (no redact mask).
        let statement = self
            .conn
            .client
            .prepare_typed(&sql, &[Type::TEXT, Type::TEXT])
            .await
            .map_err(|e| self.err(&e, Some(target.display)))?;
        let redaction = redaction.to_owned();
        let params: [&(dyn ToSql + Sync); 2] = [&self.value, &redaction];
        let row = self.conn.client.query_one(&statement, &params).await;
        let row = row.map_err(|e| self.err(&e, Some(target.display)))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    async fn pointing_at(
        &mut self,
        parent: Target<'_>,
        held: &Captured,
        child: &QualifiedName,
        pairs: &[(String, String)],
        own: &[String],
    ) -> Result<u64, EraseError> {
        let join = |side: fn(&(String, String)) -> &String| {
            pairs
                .iter()
                .map(|pair| format!("t0.{}", quote_ident(side(pair))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (columns, targets) = (join(|p| &p.0), join(|p| &p.1));
        let parent_keys = Self::captured_rows(parent, held)
            .iter()
            .map(|p| p.replace("{}", &targets))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        if parent_keys.is_empty() {
            return Ok(0);
        }
        let not_own: String = own
            .iter()
            .map(|b| format!(" AND ({b}) IS NOT TRUE"))
            .collect();
        let sql = format!(
            "WITH p AS ({parent_keys}) SELECT count(*) FROM {} AS t0 \
             WHERE ({columns}) IN (SELECT * FROM p){not_own}",
            quoted(child)
        );
        // Branches compare the identity; a query without one takes no parameter.
        let params: &[&(dyn ToSql + Sync)] = if sql.contains("$1") {
            &[&self.value]
        } else {
            &[]
        };
        let row = self.conn.client.query_one(&sql, params).await;
        let row = row.map_err(|e| self.err(&e, Some(parent.display)))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    async fn json_page(
        &mut self,
        target: Target<'_>,
        columns: &[&str],
        page: PageOf,
    ) -> Result<Option<JsonPage>, EraseError> {
        self.page(target, columns, page).await
    }

    async fn write_json_page(
        &mut self,
        target: Target<'_>,
        sets: &[(String, MaskValue)],
        columns: &[(&str, &str)],
        ids: &[String],
        docs: &[Vec<Option<String>>],
    ) -> Result<u64, EraseError> {
        self.write_page(target, sets, columns, ids, docs).await
    }

    async fn json_done(&mut self, target: Target<'_>) -> Result<Captured, EraseError> {
        self.pages_done(target).await
    }

    async fn transaction_id(&mut self) -> Result<Option<String>, EraseError> {
        let row = self
            .conn
            .client
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await;
        Ok(row.map_err(|e| self.err(&e, None))?.get(0))
    }

    async fn commit(mut self) -> Result<(), CommitError> {
        match self.conn.client.batch_execute("COMMIT").await {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            // The server said no (a deferred constraint, a serialization failure at commit):
            // nothing was committed. Anything else leaves the outcome unknown.
            Err(e) if e.as_db_error().is_some() => Err(CommitError::Refused(self.err(&e, None))),
            Err(e) => Err(CommitError::Lost(DbError::from_pg(&self.name, &e))),
        }
    }

    async fn rollback(mut self) -> bool {
        let clean = self.conn.client.batch_execute("ROLLBACK").await.is_ok();
        self.open = !clean;
        clean
    }

    async fn abandon(self) {
        // The statement in flight may still run on the server: cancelled there. The
        // connection is discarded as the transaction drops, which ends it.
        if let Err(e) = self.cancel.cancel_query(self.cancel_tls.clone()).await {
            tracing::warn!(source = %self.name, error = %super::describe(&e),
                "cancel request failed");
        }
    }

    fn span(&self, operation: &str, target: Target<'_>, sql: &str) -> tracing::Span {
        crate::store::erase::query_span("postgresql", &self.database, operation, target, sql)
    }
}
