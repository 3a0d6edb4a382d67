//! An erasure's transaction on MariaDB and MySQL: one InnoDB transaction at REPEATABLE READ
//! on one pooled connection, each changed table's rows captured by primary key (or a unique
//! key of NOT NULL columns) into a temporary table of the connection, with locking reads, and
//! changed and verified by a join on that key (the temporary tables are dropped when the
//! transaction ends, or go with the connection when it does not end cleanly). Row locks are
//! waited for at most the source's
//! `lock_timeout` (`innodb_lock_wait_timeout`, whole seconds), statements limited by the
//! deadline, and a running statement stopped by `KILL QUERY` when the call stops.
//!
//! Locking reads (the captures) read the latest committed rows, not the snapshot; the first
//! consistent read (a count, a guard) comes after them, so that every row a check reads is
//! at least as new as what was captured. A row written for the subject after its capture
//! waits for the captured rows' locks where a foreign key checks them.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use tokio::time::Instant;

mod pages;

use super::dialect::quote;
use super::{MySqlPool, classify, identity_values, params};
use crate::config::QualifiedName;
use crate::config::erasure::MaskMethod;
use crate::store::catalog::ForeignKey;
use crate::store::erase::{
    Captured, CommitError, Distinct, Erase, EraseError, EraseOptions, EraseTxn, JsonPage,
    MaskCheck, MaskValue, PageOf, Rows, Target,
};
use crate::store::error::DbError;

/// Error numbers of a broken integrity rule or column limit, and whether each is a foreign
/// key's: `ER_ROW_IS_REFERENCED_2`, `ER_NO_REFERENCED_ROW_2`, `ER_ROW_IS_REFERENCED`,
/// `ER_NO_REFERENCED_ROW`.
const FOREIGN_KEYS: [u16; 4] = [1451, 1452, 1216, 1217];
/// `ER_DUP_ENTRY`, `ER_DUP_ENTRY_WITH_KEY_NAME`, `ER_BAD_NULL_ERROR`, `ER_DATA_TOO_LONG`,
/// `ER_WARN_DATA_OUT_OF_RANGE`, `ER_TRUNCATED_WRONG_VALUE_FOR_FIELD`,
/// `ER_TRUNCATED_WRONG_VALUE`, `ER_CHECK_CONSTRAINT_VIOLATED` (MySQL),
/// `ER_CONSTRAINT_FAILED` (MariaDB).
const INTEGRITY: [u16; 9] = [1062, 1586, 1048, 1406, 1264, 1366, 1292, 3819, 4025];

/// The temporary table holding slot `slot`'s captured keys.
fn keys_table(slot: usize) -> String {
    format!("`dsr_erase_k{slot}`")
}

/// The condition that rows `a` and `b` have the same `key`.
fn same_key(key: &[String], a: &str, b: &str) -> String {
    key.iter()
        .map(|c| format!("{a}.{0} = {b}.{0}", quote(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A table in SQL: by its name alone, in the source's database.
fn quoted(name: &QualifiedName) -> String {
    quote(&name.table)
}

impl Erase for MySqlPool {
    type Txn = MyErase;

    async fn begin_erasure(&self, options: EraseOptions<'_>) -> Result<MyErase, EraseError> {
        let mut conn = self.connection(options.deadline, false).await?;
        let id = conn.id();
        let db = |e: mysql_async::Error| EraseError::Db(classify(self.source_name(), &e));
        let limit = self
            .statement_limit(&mut conn, options.deadline)
            .await
            .map_err(db)?;
        // Whole seconds, at least one: InnoDB's unit.
        let lock_wait = options.lock_timeout.as_secs_f64().ceil().max(1.0) as u64;
        // From here on, a transaction dropped before it ends is rolled back by a task of its
        // own (see `Drop`).
        let mut txn = MyErase {
            pool: self.clone(),
            database: options.database.to_owned(),
            value: options.value.to_owned(),
            conn: Some(conn),
            id,
            keys: HashMap::new(),
            tokens: 0,
            numbered: Vec::new(),
            pages: HashMap::new(),
        };
        // The transaction's snapshot is taken by its first consistent read, after the
        // captures' locking reads (see the module's notes). A transaction a failed call left
        // open on this connection is ended by START TRANSACTION itself.
        txn.run(&[
            &limit,
            &format!("SET SESSION innodb_lock_wait_timeout = {lock_wait}"),
            "START TRANSACTION READ WRITE",
        ])
        .await?;
        Ok(txn)
    }

    fn limit_fired(error: &DbError) -> bool {
        <super::read::MySqlRead as crate::store::read::ReadSnapshot>::limit_fired(error)
    }

    async fn commit_outcome(&self, _transaction: &str, _deadline: Option<Instant>) -> Option<bool> {
        // InnoDB keeps no answer for a transaction that has ended: unknown, and a repeat
        // erasure settles it (it finds nothing left, or erases what is).
        None
    }
}

/// One erasure's transaction on one pooled MariaDB or MySQL connection.
pub struct MyErase {
    pool: MySqlPool,
    database: String,
    value: String,
    /// The connection, until the transaction ends.
    conn: Option<mysql_async::Conn>,
    /// The server's id of the connection, for `KILL QUERY`.
    id: u32,
    /// Per captured slot, the key columns its temporary table holds.
    keys: HashMap<usize, Vec<String>>,
    /// Temporary tables of pseudonym tokens made so far.
    tokens: usize,
    /// The slots whose captured keys are numbered, for reading JSON documents by page.
    numbered: Vec<usize>,
    /// Per slot whose JSON documents are being masked, how each page is written.
    pages: HashMap<usize, pages::PageWriter>,
}

impl Drop for MyErase {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(discard(conn));
        }
    }
}

/// Closes a connection whose erasure did not end cleanly: the server rolls the transaction
/// back and drops its temporary tables (captured keys, and the values a pseudonym mask was
/// computing tokens for), which a ROLLBACK alone would leave on a pooled connection.
async fn discard(conn: mysql_async::Conn) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.disconnect()).await;
}

impl MyErase {
    fn conn(&mut self) -> &mut mysql_async::Conn {
        self.conn
            .as_mut()
            .expect("an erasure has its connection until it ends")
    }

    fn name(&self) -> &str {
        self.pool.source_name()
    }

    /// An error of this erasure: an integrity rule or a column's limits is named by its
    /// constraint or column, never by a value the server's message may quote.
    fn err(&self, error: mysql_async::Error, table: Option<&str>) -> EraseError {
        if let mysql_async::Error::Server(e) = &error {
            let foreign_key = FOREIGN_KEYS.contains(&e.code);
            if foreign_key || INTEGRITY.contains(&e.code) {
                let data = matches!(e.code, 1264 | 1366 | 1292);
                return EraseError::Integrity {
                    table: table.map(str::to_owned),
                    what: format!("{} (error {})", broken(e.code, &e.message), e.code),
                    code: e.state.clone(),
                    foreign_key,
                    data,
                };
            }
        }
        EraseError::Db(classify(self.name(), &error))
    }

    /// Runs statements that return no rows, one after another.
    async fn run(&mut self, statements: &[&str]) -> Result<(), EraseError> {
        for sql in statements {
            let done = self.conn().query_drop(*sql).await;
            done.map_err(|e| self.err(e, None))?;
        }
        Ok(())
    }

    /// Runs `sql` with `values` bound to its `?`s in order; the rows it changed or, for an
    /// UPDATE, matched.
    async fn change(
        &mut self,
        sql: &str,
        values: Vec<Value>,
        target: Target<'_>,
        operation: &str,
    ) -> Result<u64, EraseError> {
        let span = self.span(operation, target, sql);
        let conn = self.conn();
        let done =
            tracing::Instrument::instrument(conn.exec_drop(sql, Params::Positional(values)), span)
                .await;
        let conn = self.conn();
        let rows = if operation == "UPDATE" {
            // MySQL counts the rows an UPDATE changed; a row set to what it held counts as
            // matched only.
            matched(&conn.info()).unwrap_or(conn.affected_rows())
        } else {
            conn.affected_rows()
        };
        done.map_err(|e| self.err(e, Some(target.display)))?;
        Ok(rows)
    }

    /// One integer of `sql`, its `?`s bound to `values` in order.
    async fn integer(&mut self, sql: &str, values: Vec<Value>) -> Result<u64, EraseError> {
        let found: Result<Option<Value>, _> = self
            .conn()
            .exec_first(sql, Params::Positional(values))
            .await;
        let found = found.map_err(|e| self.err(e, None))?;
        Ok(found.as_ref().map(super::integer).unwrap_or(0).max(0) as u64)
    }

    /// The key a table's rows are captured by: its primary key, or else a unique key whose
    /// columns are all NOT NULL. Refused by name when it has neither.
    async fn key_of(&mut self, target: Target<'_>) -> Result<Vec<String>, EraseError> {
        let rows: Result<Vec<(String, String, String)>, _> = self
            .conn()
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME, COALESCE(NULLABLE, '') \
                 FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
                 ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME, SEQ_IN_INDEX",
                (target.name.table.as_str(),),
            )
            .await;
        let rows = rows.map_err(|e| self.err(e, Some(target.display)))?;
        let mut indexes: Vec<(String, Vec<String>, bool)> = Vec::new();
        for (index, column, nullable) in rows {
            match indexes.last_mut() {
                Some((name, columns, not_null)) if *name == index => {
                    columns.push(column);
                    *not_null &= nullable.is_empty();
                }
                _ => indexes.push((index, vec![column], nullable.is_empty())),
            }
        }
        indexes
            .into_iter()
            .find(|(_, _, not_null)| *not_null)
            .map(|(_, columns, _)| columns)
            .ok_or_else(|| EraseError::Unsupported {
                table: target.display.to_owned(),
                column: String::new(),
                detail: "it has no primary key and no unique key of NOT NULL columns, by which \
                         an erasure on MariaDB or MySQL captures and changes its rows; add one, \
                         or erase = { action = \"retain\", reason = \"...\" }"
                    .into(),
            })
    }

    /// `t0` joined to slot `slot`'s captured keys (`k`), as a FROM clause.
    fn joined(&self, target: Target<'_>) -> Result<String, EraseError> {
        let on = same_key(self.key(target)?, "k", "t0");
        Ok(format!(
            "{} AS t0 JOIN {} AS k ON {on}",
            quoted(target.name),
            keys_table(target.slot)
        ))
    }

    /// The key columns of a captured slot.
    fn key(&self, target: Target<'_>) -> Result<&[String], EraseError> {
        self.keys
            .get(&target.slot)
            .map(Vec::as_slice)
            .ok_or_else(|| EraseError::Unsupported {
                table: target.display.to_owned(),
                column: String::new(),
                detail: "its rows were not captured before they were changed".into(),
            })
    }

    /// What a change by the plan's own condition gets on this store: never asked for (see
    /// [`EraseTxn::direct_changes`]).
    fn not_direct(target: Target<'_>) -> EraseError {
        EraseError::Unsupported {
            table: target.display.to_owned(),
            column: String::new(),
            detail: "MariaDB and MySQL sources change only captured rows".into(),
        }
    }

    /// A temporary table of `values` and their `tokens`, for one pseudonym mask; its name.
    async fn token_table(
        &mut self,
        values: &[Vec<u8>],
        tokens: &[String],
    ) -> Result<String, EraseError> {
        self.tokens += 1;
        let table = format!("`dsr_erase_t{}`", self.tokens);
        self.run(&[
            &format!("DROP TEMPORARY TABLE IF EXISTS {table}"),
            &format!(
                "CREATE TEMPORARY TABLE {table} (v LONGBLOB NOT NULL, token CHAR(32) NOT NULL, \
                 KEY (v(255)))"
            ),
        ])
        .await?;
        // In statements of at most about a mebibyte of values each.
        let mut at = 0;
        while at < values.len() {
            let (mut bytes, mut end) = (0, at);
            while end < values.len() && (end == at || bytes < 1 << 20) && end - at < 1000 {
                bytes += values[end].len();
                end += 1;
            }
            let rows = vec!["(?, ?)"; end - at].join(", ");
            let bound = values[at..end]
                .iter()
                .zip(&tokens[at..end])
                .flat_map(|(v, t)| [Value::Bytes(v.clone()), Value::from(t.as_str())])
                .collect();
            let sql = format!("INSERT INTO {table} (v, token) VALUES {rows}");
            let done = self.conn().exec_drop(sql, Params::Positional(bound)).await;
            done.map_err(|e| self.err(e, None))?;
            at = end;
        }
        Ok(table)
    }

    /// The SET clauses of `sets` on `t0`, and the values they bind; a pseudonym's tokens go
    /// into a temporary table of their own.
    async fn set_clauses(
        &mut self,
        target: Target<'_>,
        sets: &[(String, MaskValue)],
    ) -> Result<(Vec<String>, Vec<Value>), EraseError> {
        let key = self.key(target)?.to_vec();
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        for (column, value) in sets {
            if key.contains(column) {
                // The rows are found again by their key: a masked key would lose them.
                return Err(EraseError::Unsupported {
                    table: target.display.to_owned(),
                    column: column.clone(),
                    detail: "it is part of the key the erasure finds the rows by; delete the \
                             rows, or retain the column"
                        .into(),
                });
            }
            let c = quote(column);
            match value {
                MaskValue::Null => clauses.push(format!("t0.{c} = NULL")),
                MaskValue::Text(text) => {
                    clauses.push(format!("t0.{c} = ?"));
                    values.push(Value::from(text.as_str()));
                }
                MaskValue::Tokens {
                    values: found,
                    tokens,
                } => {
                    let table = self.token_table(found, tokens).await?;
                    clauses.push(format!(
                        "t0.{c} = (SELECT m.token FROM {table} AS m \
                         WHERE m.v = CAST(t0.{c} AS BINARY))"
                    ));
                }
            }
        }
        Ok((clauses, values))
    }

    /// Drops the transaction's temporary tables (they outlive it on the connection).
    async fn drop_temporary(&mut self) -> bool {
        let mut tables: Vec<String> = self.keys.keys().map(|&slot| keys_table(slot)).collect();
        tables.extend((1..=self.tokens).map(|n| format!("`dsr_erase_t{n}`")));
        tables.extend(
            self.numbered
                .iter()
                .map(|&slot| pages::numbered_table(slot)),
        );
        tables.extend(self.pages.keys().map(|&slot| pages::page_table(slot)));
        if tables.is_empty() {
            return true;
        }
        let sql = format!("DROP TEMPORARY TABLE IF EXISTS {}", tables.join(", "));
        self.conn().query_drop(sql).await.is_ok()
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`), drops its temporary tables
    /// and returns the connection to the pool; a connection that fails is closed.
    async fn end(&mut self, sql: &str) -> Result<(), mysql_async::Error> {
        let ended = self.conn().query_drop(sql).await;
        let clean = ended.is_ok() && self.drop_temporary().await;
        if let Some(conn) = self.conn.take()
            && !clean
        {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), conn.disconnect()).await;
        }
        ended
    }
}

impl EraseTxn for MyErase {
    fn direct_changes(&self) -> bool {
        false
    }

    async fn lock(&mut self, target: Target<'_>, branch: &str) -> Result<(), EraseError> {
        let sql = format!("SELECT 1 FROM {} WHERE {branch} FOR UPDATE", target.from);
        let bound = params(&sql, &self.value);
        let done = self.conn().exec_drop(sql, bound).await;
        done.map_err(|e| self.err(e, Some(target.display)))
    }

    async fn count(&mut self, sql: &str) -> Result<u64, EraseError> {
        self.integer(sql, identity_values(sql, &self.value)).await
    }

    async fn integers(&mut self, sql: &str) -> Result<Vec<i64>, EraseError> {
        let bound = params(sql, &self.value);
        let row: Result<Option<mysql_async::Row>, _> = self.conn().exec_first(sql, bound).await;
        let row = row.map_err(|e| self.err(e, None))?;
        Ok(row
            .map(|r| r.unwrap().iter().map(super::integer).collect())
            .unwrap_or_default())
    }

    async fn live_columns(&mut self, table: &QualifiedName) -> Result<Vec<String>, EraseError> {
        let columns: Result<Vec<String>, _> = self
            .conn()
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (table.table.as_str(),),
            )
            .await;
        columns.map_err(|e| self.err(e, Some(&table.display_name())))
    }

    async fn foreign_keys(&mut self) -> Result<Vec<ForeignKey>, EraseError> {
        let keys = super::catalog::foreign_keys_on(self.conn()).await;
        keys.map_err(|e| self.err(e, None))
    }

    async fn unconditional(
        &mut self,
        tables: &[(&QualifiedName, bool)],
    ) -> Result<Vec<bool>, EraseError> {
        // Never asked: no change here is direct.
        Ok(vec![false; tables.len()])
    }

    async fn capture(&mut self, target: Target<'_>, _sorted: bool) -> Result<Captured, EraseError> {
        let key = self.key_of(target).await?;
        let columns = key
            .iter()
            .map(|c| format!("t0.{}", quote(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = keys_table(target.slot);
        // Made empty from the table itself, so that its columns have the key's types.
        self.run(&[
            &format!("DROP TEMPORARY TABLE IF EXISTS {keys}"),
            &format!(
                "CREATE TEMPORARY TABLE {keys} AS SELECT {columns} FROM {} AS t0 WHERE FALSE",
                quoted(target.name)
            ),
        ])
        .await?;
        self.keys.insert(target.slot, key);
        // Each path's rows (no row is selected by two paths), locked as they are read.
        let mut rows = 0;
        for branch in target.branches {
            let sql = format!(
                "INSERT INTO {keys} SELECT {columns} FROM {} WHERE {branch} FOR UPDATE",
                target.from
            );
            let values = identity_values(&sql, &self.value);
            rows += self.change(&sql, values, target, "SELECT").await?;
        }
        Ok(held(rows))
    }

    async fn delete(&mut self, target: Target<'_>, rows: Rows<'_>) -> Result<u64, EraseError> {
        if matches!(rows, Rows::Plan) {
            return Err(Self::not_direct(target));
        }
        let sql = format!("DELETE t0 FROM {}", self.joined(target)?);
        self.change(&sql, Vec::new(), target, "DELETE").await
    }

    async fn distinct_values(
        &mut self,
        target: Target<'_>,
        rows: Rows<'_>,
        column: &str,
        max_bytes: u64,
    ) -> Result<Distinct, EraseError> {
        if matches!(rows, Rows::Plan) {
            return Err(Self::not_direct(target));
        }
        // As stored, byte for byte: a case-insensitive column's `Alice` and `alice` are two
        // values with two tokens.
        let c = quote(column);
        let distinct = format!(
            "SELECT DISTINCT CAST(t0.{c} AS BINARY) AS v FROM {} WHERE t0.{c} IS NOT NULL",
            self.joined(target)?
        );
        // Measured first: the values cross into the process only within the bound.
        let bytes = self
            .integer(
                &format!("SELECT COALESCE(SUM(LENGTH(d.v)), 0) FROM ({distinct}) AS d"),
                Vec::new(),
            )
            .await?;
        if bytes > max_bytes {
            return Ok(Distinct::TooLarge(bytes));
        }
        let values: Result<Vec<Vec<u8>>, _> = self.conn().query(distinct).await;
        Ok(Distinct::Values(
            values.map_err(|e| self.err(e, Some(target.display)))?,
        ))
    }

    async fn mask(
        &mut self,
        target: Target<'_>,
        rows: Rows<'_>,
        sets: &[(String, MaskValue)],
    ) -> Result<Captured, EraseError> {
        if matches!(rows, Rows::Plan) {
            return Err(Self::not_direct(target));
        }
        let (clauses, values) = self.set_clauses(target, sets).await?;
        let sql = format!("UPDATE {} SET {}", self.joined(target)?, clauses.join(", "));
        let rows = self.change(&sql, values, target, "UPDATE").await?;
        Ok(held(rows))
    }

    async fn left(&mut self, target: Target<'_>, _captured: &Captured) -> Result<u64, EraseError> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.joined(target)?);
        self.integer(&sql, Vec::new()).await
    }

    async fn unmasked(
        &mut self,
        target: Target<'_>,
        _masked: &Captured,
        masks: &[MaskCheck<'_>],
        text_columns: &[&str],
        redaction: &str,
    ) -> Result<u64, EraseError> {
        let mut values = Vec::new();
        let mut masked_as_told = Vec::new();
        for check in masks {
            let c = format!("t0.{}", quote(check.column));
            masked_as_told.push(match check.method {
                MaskMethod::Null => format!("{c} IS NULL"),
                MaskMethod::Redact => {
                    values.push(Value::from(redaction));
                    format!("CAST({c} AS BINARY) <=> CAST(? AS BINARY)")
                }
                // A token is 32 lowercase hex digits; NULL stays NULL.
                MaskMethod::Pseudonym => format!(
                    "({c} IS NULL OR (CAST({c} AS BINARY) = CAST(LOWER({c}) AS BINARY) \
                     AND {c} REGEXP '^[0-9a-f]{{32}}$'))"
                ),
            });
        }
        // Each condition is TRUE or FALSE, never NULL (see PostgreSQL's): a kept value equal
        // to the identity as the column compares it (a `_ci` column folds case).
        let mut bad: Vec<String> = Vec::new();
        if !masked_as_told.is_empty() {
            bad.push(format!("NOT ({})", masked_as_told.join(" AND ")));
        }
        for c in text_columns {
            values.push(Value::from(self.value.as_str()));
            bad.push(format!("COALESCE(t0.{} = ?, FALSE)", quote(c)));
        }
        if bad.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE ({}) IS NOT FALSE",
            self.joined(target)?,
            bad.join(" OR ")
        );
        self.integer(&sql, values).await
    }

    async fn pointing_at(
        &mut self,
        parent: Target<'_>,
        captured: &Captured,
        child: &QualifiedName,
        pairs: &[(String, String)],
        own: &[String],
    ) -> Result<u64, EraseError> {
        if captured.rows() == 0 {
            return Ok(0);
        }
        let on = same_key(self.key(parent)?, "k", "p");
        let columns = pairs
            .iter()
            .map(|(c, _)| format!("t0.{}", quote(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let targets = pairs
            .iter()
            .map(|(_, p)| format!("p.{}", quote(p)))
            .collect::<Vec<_>>()
            .join(", ");
        let not_own: String = own
            .iter()
            .map(|b| format!(" AND ({b}) IS NOT TRUE"))
            .collect();
        let sql = format!(
            "SELECT COUNT(*) FROM {} AS t0 WHERE ({columns}) IN \
             (SELECT {targets} FROM {} AS p JOIN {} AS k ON {on}){not_own}",
            quoted(child),
            quoted(parent.name),
            keys_table(parent.slot)
        );
        // The child's own paths compare the identity: bound to each `?`.
        self.integer(&sql, identity_values(&sql, &self.value)).await
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
        Ok(held(self.pages.get(&target.slot).map_or(0, |p| p.written)))
    }

    async fn transaction_id(&mut self) -> Result<Option<String>, EraseError> {
        let id: Result<Option<String>, _> = self
            .conn()
            .query_first(
                "SELECT CAST(trx_id AS CHAR) FROM information_schema.INNODB_TRX \
                 WHERE trx_mysql_thread_id = CONNECTION_ID()",
            )
            .await;
        id.map_err(|e| self.err(e, None))
    }

    async fn commit(mut self) -> Result<(), CommitError> {
        match self.end("COMMIT").await {
            Ok(()) => Ok(()),
            // The server said no: nothing was committed. Anything else (the connection lost)
            // leaves the outcome unknown.
            Err(e @ mysql_async::Error::Server(_)) => Err(CommitError::Refused(self.err(e, None))),
            Err(e) => Err(CommitError::Lost(classify(self.name(), &e))),
        }
    }

    async fn rollback(mut self) -> bool {
        self.end("ROLLBACK").await.is_ok()
    }

    async fn abandon(mut self) {
        // The statement in flight is stopped on the server, then the connection closed, which
        // rolls the transaction back and drops its temporary tables.
        if let Err(e) = self.pool.kill_query(self.id).await {
            tracing::warn!(source = %self.name(), error = %e, "KILL QUERY failed");
        }
        if let Some(conn) = self.conn.take() {
            discard(conn).await;
        }
    }

    fn span(&self, operation: &str, target: Target<'_>, sql: &str) -> tracing::Span {
        crate::store::erase::query_span("mysql", &self.database, operation, target, sql)
    }
}

/// Rows held in one slot.
fn held(rows: u64) -> Captured {
    Captured {
        rels: if rows > 0 {
            vec![(0, rows)]
        } else {
            Vec::new()
        },
    }
}

/// The rows an UPDATE matched, from the server's `Rows matched: N Changed: M Warnings: W`.
fn matched(info: &str) -> Option<u64> {
    let rest = info.split("Rows matched:").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// What an error names of the rule it broke: the constraint or column of the server's
/// message, never a value it quotes (a duplicate entry's value is left out).
fn broken(code: u16, message: &str) -> String {
    let between = |from: &str, to: char| -> Option<String> {
        let at = message.find(from)? + from.len();
        let rest = &message[at..];
        Some(rest[..rest.find(to)?].to_owned())
    };
    let named = match code {
        1451 | 1452 | 1216 | 1217 => {
            between("CONSTRAINT `", '`').map(|c| format!("constraint '{c}'"))
        }
        1062 | 1586 => between("for key '", '\'').map(|k| format!("unique key '{k}'")),
        3819 | 4025 => between("constraint '", '\'')
            .or_else(|| between("CONSTRAINT `", '`'))
            .map(|c| format!("constraint '{c}'")),
        _ => between("column '", '\'').map(|c| format!("the limits of column '{c}'")),
    };
    named.unwrap_or_else(|| "a constraint or a column's limits".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_rule_and_never_the_value_it_quotes() {
        let duplicate = broken(1062, "Duplicate entry 'alice@example.com' for key 'email'");
        assert_eq!(duplicate, "unique key 'email'");
        assert!(!duplicate.contains("alice"));
        let key = broken(
            1451,
            "Cannot delete or update a parent row: a foreign key constraint fails \
             (`shop`.`orders`, CONSTRAINT `orders_customer` FOREIGN KEY (`customer_id`) \
             REFERENCES `customers` (`id`))",
        );
        assert_eq!(key, "constraint 'orders_customer'");
        assert_eq!(
            broken(1406, "Data too long for column 'email' at row 1"),
            "the limits of column 'email'"
        );
        assert_eq!(broken(1366, "garbled"), "a constraint or a column's limits");
    }

    #[test]
    fn an_update_counts_the_rows_it_matched() {
        assert_eq!(matched("Rows matched: 3  Changed: 1  Warnings: 0"), Some(3));
        assert_eq!(matched(""), None);
    }
}
