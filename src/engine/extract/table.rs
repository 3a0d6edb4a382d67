//! One table: its rows read one at a time, each row decoded, coerced and scanned, cut into
//! batches and sent; what the table produced besides rows.

use prost::Message;

use super::MAX_MESSAGE_BYTES;
use super::batch::{Batcher, descriptors};
use super::job::Job;
use super::outcome::TableOutcome;
use crate::config::CoercionPolicy;
use crate::engine::error::ExtractError;
use crate::pb::{self, RowBuf, extract_response::Event};
use crate::schema::{MappedTable, PlanError, PlannedTable};
use crate::store::ColumnDecoder;
use crate::store::read::{CellError, Cells, ReadError, ReadSnapshot, RowStream, TableQuery};

impl Job {
    /// Streams one table: announces it with its COUNT(*) in the snapshot, then decodes,
    /// coerces and scans every row, cuts batches, and (unless this is a dry run) sends them.
    pub(super) async fn stream_table<R: ReadSnapshot>(
        &self,
        snapshot: &mut R,
        table: &PlannedTable,
        value: &str,
    ) -> Result<TableOutcome, ExtractError> {
        // Fault injection for the tests, in debug builds only: a bug in the producer (a
        // panic) while this table is read. Release builds have no such hook.
        #[cfg(debug_assertions)]
        if std::env::var("DSR_DEBUG_PANIC_AT_TABLE").is_ok_and(|t| t == table.table.display) {
            panic!("injected panic while reading {}", table.table.display);
        }
        let mapped = &table.table;
        let decoders: Vec<ColumnDecoder> = mapped.columns.iter().map(|c| c.decoder).collect();
        let query = TableQuery {
            select_sql: &table.select_sql,
            count_sql: &table.count_sql,
            decoders: &decoders,
        };
        let mut rows = snapshot
            .table(query, value)
            .await
            .map_err(|e| self.read_error(table, e))?;
        let counted = rows.counted();
        if !self.params.dry_run {
            self.send(Event::TableStarted(pb::TableStarted {
                table: mapped.display.clone(),
                expected_rows: counted.max(0) as u64,
            }))
            .await?;
        }
        let mut batch = self.batcher(table);
        let mut outcome = TableOutcome::default();
        // One row at a time, encoded into a buffer kept for the table's every row.
        let mut encoded = RowBuf::default();
        let width = mapped.columns.len();
        let measured = if table.bounded { 2 } else { 0 };
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| self.read_error(table, e))?;
            if row.width() != width + measured {
                return Err(ExtractError::Decode {
                    table: mapped.display.clone(),
                    column: String::new(),
                    reason: format!(
                        "a row of {} columns where {width} were planned",
                        row.width() - measured.min(row.width())
                    ),
                });
            }
            if table.bounded {
                let cell = |e| self.cell_error(mapped, width, e);
                let column = row.integer(width).map_err(cell)?;
                if column > 0 {
                    let bytes = row.integer(width + 1).map_err(cell)?;
                    return Err(measured_too_large(&batch, mapped, column, bytes));
                }
            }
            let kept = self.convert_row(mapped, &row, &mut encoded, &mut outcome)?;
            drop(row);
            self.pass_row(table, kept, &encoded, &mut batch, &mut outcome)
                .await?;
        }
        self.send_rest(table, &mut batch).await?;
        outcome.counted = counted;
        Ok(outcome)
    }

    /// What a failed read of `table` ends the extraction with: a table that changed since
    /// the schema gate passed is schema drift, named.
    fn read_error(&self, table: &PlannedTable, error: ReadError) -> ExtractError {
        match error {
            ReadError::Db(e) => e.into(),
            ReadError::Drift { column, what } => {
                let column = column
                    .and_then(|i| table.table.columns.get(i))
                    .map(|c| format!(", column '{}'", c.name))
                    .unwrap_or_default();
                ExtractError::Plan(PlanError::SchemaDrift {
                    source_name: self.params.source.clone(),
                    problems: vec![format!("table '{}'{column}: {what}", table.table.display)],
                })
            }
        }
    }

    /// A cell that could not be read, as an error (a broken rule is not one: see
    /// [`Self::convert_row`]).
    fn cell_error(&self, table: &MappedTable, i: usize, error: CellError) -> ExtractError {
        let column = table
            .columns
            .get(i)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        match error {
            CellError::Undecodable(reason) => ExtractError::Decode {
                table: table.display.clone(),
                column,
                reason,
            },
            CellError::Broken { rule, .. } => ExtractError::Decode {
                table: table.display.clone(),
                column,
                reason: format!("violates rule {rule}"),
            },
            CellError::Drift(what) => ExtractError::Plan(PlanError::SchemaDrift {
                source_name: self.params.source.clone(),
                problems: vec![format!(
                    "table '{}', column '{column}': {what}",
                    table.display
                )],
            }),
            CellError::Db(e) => e.into(),
        }
    }

    /// A table's batcher, on any store: its rows cut by `batch_size` and by bytes, and a row
    /// limited to what fits in one message beside the column descriptors its batch carries.
    pub(super) fn batcher(&self, table: &PlannedTable) -> Batcher {
        let columns = descriptors(table);
        let row_limit = MAX_MESSAGE_BYTES
            .saturating_sub(columns.iter().map(Message::encoded_len).sum::<usize>() + 1024);
        Batcher::new(
            &table.table.display,
            &columns,
            self.reading.batch_size as usize,
            self.reading.max_batch_bytes,
            row_limit,
        )
    }

    /// A converted row, on any store. A rejected one (`kept` is false) waits while too many
    /// dead letters are in flight: memory for them is bounded, and only a rejected row queues
    /// one, so rows that stream pay nothing there. A kept one is measured against one
    /// message, counted, and put in its batch (unless this is a dry run); a batch it fills is
    /// sent. Decoding, coercion and JSON scans run without awaiting anything else, so other
    /// streams on this worker get to run here now and then.
    pub(super) async fn pass_row(
        &self,
        table: &PlannedTable,
        kept: bool,
        row: &RowBuf,
        batch: &mut Batcher,
        outcome: &mut TableOutcome,
    ) -> Result<(), ExtractError> {
        if !kept {
            self.letters_heard(MAX_LETTERS_IN_FLIGHT).await?;
        }
        tokio::task::consume_budget().await;
        if !kept {
            return Ok(());
        }
        if row.len() > batch.row_limit() {
            return Err(ExtractError::RowTooLarge {
                table: table.table.display.clone(),
                column: row
                    .largest()
                    .and_then(|i| table.table.columns.get(i))
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                bytes: row.len(),
                limit: batch.row_limit(),
            });
        }
        outcome.streamed += 1;
        if self.params.dry_run {
            return Ok(());
        }
        match batch.push(row) {
            Some(full) => self.send_batch(&table.table.display, full).await,
            None => Ok(()),
        }
    }

    /// Sends what is left in a table's batch once its rows are read.
    pub(super) async fn send_rest(
        &self,
        table: &PlannedTable,
        batch: &mut Batcher,
    ) -> Result<(), ExtractError> {
        match batch.finish() {
            Some(rest) => self.send_batch(&table.table.display, rest).await,
            None => Ok(()),
        }
    }

    /// Converts one database row into `encoded`: decodes each cell, applies coercion rules
    /// and scans JSON. Returns `false` when the row is rejected under the `reject_row` policy
    /// (a value broke its rule).
    ///
    /// A cell that nothing inspects (no coercion rule, no JSON scan, not a dry run's text
    /// scan) is written from the store's cell straight into the row; the others are decoded
    /// into a value first.
    pub(super) fn convert_row<C: Cells>(
        &self,
        table: &MappedTable,
        row: &C,
        encoded: &mut RowBuf,
        outcome: &mut TableOutcome,
    ) -> Result<bool, ExtractError> {
        encoded.clear();
        for (i, column) in table.columns.iter().enumerate() {
            let inspected = column.scan_json || (self.params.dry_run && !column.is_pii());
            let value = match &column.coercion {
                None if !inspected => match row.write(i, column.decoder, encoded) {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
                None => row.value(i, column.decoder),
                Some(rule) => row.coerced(i, column.decoder, rule),
            };
            let value = match value {
                Ok(value) => value,
                Err(CellError::Broken {
                    rule,
                    category,
                    rule_type,
                }) => {
                    let violation = pb::Violation {
                        table: table.display.clone(),
                        column: column.name.clone(),
                        primary_key: primary_key_text(table, row),
                        rule: rule.to_owned(),
                        category: category.to_owned(),
                        detail: String::new(),
                        rule_type: rule_type.into(),
                    };
                    self.violated(violation, outcome)?;
                    return Ok(false);
                }
                Err(e) => return Err(self.cell_error(table, i, e)),
            };
            self.inspect_cell(table, i, &value, || primary_key_text(table, row), outcome);
            encoded.put(&value);
        }
        Ok(true)
    }

    /// A value broke its rule: under `fail`, the extraction stops; under `reject_row`, its
    /// row is left out, counted, recorded and dead-lettered, and `Ok` is returned.
    pub(super) fn violated(
        &self,
        violation: pb::Violation,
        outcome: &mut TableOutcome,
    ) -> Result<(), ExtractError> {
        match self.reading.coercion_policy {
            CoercionPolicy::Fail => Err(ExtractError::Coercion(Box::new(violation))),
            CoercionPolicy::RejectRow => {
                // The letter is queued, or the call fails: a row is never left out unrecorded.
                if !self.params.dry_run
                    && let Some(pending) = self.call.records.dead_letter(
                        &self.metrics,
                        crate::records::deadletter::DeadLetter {
                            category: "coercion".into(),
                            source: self.call.entry.source.clone(),
                            table: violation.table.clone(),
                            column: violation.column.clone(),
                            primary_key: violation.primary_key.clone(),
                            rule: violation.rule.clone(),
                            detail: format!(
                                "the row was left out (reject_row); category {}",
                                violation.category
                            ),
                            rpc: self.call.entry.rpc.clone(),
                            request_id: self.call.entry.request_id.clone(),
                            call_id: self.call.entry.call_id.clone(),
                            extraction_id: self.call.entry.extraction_id.clone(),
                            subject_id: self.call.entry.subject_id.clone(),
                            ..Default::default()
                        },
                    )?
                {
                    self.call
                        .letters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(pending);
                }
                outcome.rejected += 1;
                *outcome
                    .rejected_by
                    .entry(violation.category.clone())
                    .or_default() += 1;
                outcome.record(violation);
                Ok(())
            }
        }
    }

    /// What is looked for inside a decoded value: in a dry run, personal data inside the
    /// text of a column classified not_pii (counts, no value), for a person to reclassify;
    /// and nested personal data inside a scanned JSON column.
    pub(super) fn inspect_cell(
        &self,
        table: &MappedTable,
        i: usize,
        value: &pb::Value,
        primary_key: impl Fn() -> String,
        outcome: &mut TableOutcome,
    ) {
        let column = &table.columns[i];
        if self.params.dry_run
            && !column.is_pii()
            && let Some(pb::value::Kind::StringValue(text)) = &value.kind
        {
            for category in self.reading.matrix.categories_in_text(text) {
                *outcome.in_text.entry((i, category.to_owned())).or_default() += 1;
            }
        }
        if column.scan_json
            && let Some(pb::value::Kind::JsonValue(json)) = &value.kind
        {
            let scan = outcome.scan_of(i, || format!("{}.{}", table.display, column.name));
            let violations = scan.scan(&self.reading.matrix, json);
            for v in violations {
                outcome.json_violations += 1;
                outcome.record(pb::Violation {
                    table: table.display.clone(),
                    column: column.name.clone(),
                    primary_key: primary_key(),
                    rule: "json_scan".to_owned(),
                    category: v.category.to_owned(),
                    detail: clip(&v.detail, MAX_DETAIL_CHARS),
                    rule_type: pb::Rule::JsonScan.into(),
                });
            }
        }
    }
}

/// A row's primary key for a violation: `id=42`, `[classified]` when a key column holds
/// personal data, or empty without a primary key. Never an identity or classified value.
pub(super) fn primary_key_text<C: Cells>(table: &MappedTable, row: &C) -> String {
    primary_key_from(table, |i| {
        row.value(i, table.columns[i].decoder).ok()?.kind.clone()
    })
}

/// A row's primary key (as [`primary_key_text`] says), from its values.
pub(super) fn primary_key_from(
    table: &MappedTable,
    value_at: impl Fn(usize) -> Option<pb::value::Kind>,
) -> String {
    if table.primary_key.is_empty() {
        return String::new();
    }
    if table.primary_key.iter().any(|i| table.columns[*i].is_pii()) {
        return "[classified]".to_owned();
    }
    let text = table
        .primary_key
        .iter()
        .map(|i| {
            let text = value_at(*i)
                .map(|k| match k {
                    pb::value::Kind::Int64Value(n) => n.to_string(),
                    pb::value::Kind::StringValue(s) | pb::value::Kind::DecimalValue(s) => s,
                    pb::value::Kind::NullValue(_) => "NULL".to_owned(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            format!("{}={text}", table.columns[*i].name)
        })
        .collect::<Vec<_>>()
        .join(",");
    clip(&text, MAX_PRIMARY_KEY_CHARS)
}

/// `text`, cut to at most `max` characters (with a trailing `…` when cut).
pub(super) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A row whose value the query measured above one message (and sent as NULL): refused, naming
/// the column (`column` counts from 1) and the bytes the query measured.
pub(super) fn measured_too_large(
    batch: &Batcher,
    table: &MappedTable,
    column: i64,
    bytes: i64,
) -> ExtractError {
    ExtractError::RowTooLarge {
        table: table.display.clone(),
        column: usize::try_from(column - 1)
            .ok()
            .and_then(|i| table.columns.get(i))
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
        limit: batch.row_limit(),
    }
}

/// The longest primary-key text and violation detail sent or recorded.
pub const MAX_PRIMARY_KEY_CHARS: usize = 128;
pub const MAX_DETAIL_CHARS: usize = 256;

/// Dead letters of rejected rows one extraction may have in flight before it waits.
pub(super) const MAX_LETTERS_IN_FLIGHT: usize = 256;
