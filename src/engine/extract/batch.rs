//! Cutting a table's rows into batches: by rows (`batch_size`) and by encoded bytes. Rows are
//! encoded into their batch as they come (see [`pb::BatchRows`]). Pure, and unit-tested.

use crate::pb::{self, BatchRows, EncodedBatch, RowBuf};
use crate::schema::PlannedTable;

/// Cuts a table's rows into batches by row count (`batch_size`) and by encoded bytes.
pub(super) struct Batcher {
    max_rows: usize,
    max_bytes: usize,
    /// The most bytes one row may take: a row must fit in one message.
    row_limit: usize,
    rows: BatchRows,
}

impl Batcher {
    pub(super) fn new(
        table: &str,
        columns: &[pb::ColumnDescriptor],
        max_rows: usize,
        max_bytes: usize,
        row_limit: usize,
    ) -> Self {
        Batcher {
            max_rows: max_rows.max(1),
            max_bytes,
            row_limit,
            rows: BatchRows::new(table, columns),
        }
    }

    pub(super) fn row_limit(&self) -> usize {
        self.row_limit
    }

    /// Adds a row; returns a full batch: this one, once it holds `max_rows` rows (it leaves
    /// with its last row, not with the next one, which may be slow to come), or the one before
    /// when the row would push it over the byte limit (the row then starts the next batch).
    pub(super) fn push(&mut self, row: &RowBuf) -> Option<EncodedBatch> {
        let full = if !self.rows.is_empty()
            && (self.rows.len() >= self.max_rows
                || self.rows.bytes() + BatchRows::row_bytes(row.len()) > self.max_bytes)
        {
            self.rows.finish()
        } else {
            None
        };
        self.rows.push(row);
        if full.is_none() && self.rows.len() >= self.max_rows {
            return self.rows.finish();
        }
        full
    }

    pub(super) fn finish(&mut self) -> Option<EncodedBatch> {
        self.rows.finish()
    }
}

/// Column descriptors of a planned table.
pub(super) fn descriptors(table: &PlannedTable) -> Vec<pb::ColumnDescriptor> {
    table
        .table
        .columns
        .iter()
        .map(|c| pb::ColumnDescriptor {
            name: c.name.clone(),
            pg_type: c.type_name.clone(),
            category: c.category.clone(),
            kind: c.kind() as i32,
            coercion: c
                .coercion
                .as_ref()
                .map(|r| r.rule().to_owned())
                .unwrap_or_default(),
            scan_json: c.scan_json,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn row(text: &str) -> Vec<pb::Value> {
        vec![pb::Value {
            kind: Some(pb::value::Kind::StringValue(text.to_owned())),
        }]
    }

    fn push(batcher: &mut Batcher, values: &[pb::Value]) -> Option<EncodedBatch> {
        let mut row = RowBuf::default();
        for value in values {
            row.put(value);
        }
        batcher.push(&row)
    }

    fn decoded(batch: &EncodedBatch) -> pb::RowBatch {
        match pb::ExtractResponse::decode(&*batch.to_vec()).unwrap().event {
            Some(pb::extract_response::Event::Batch(batch)) => batch,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_are_cut_by_bytes_and_offsets_run_on() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 1000, 100, usize::MAX);
        let mut batches = Vec::new();
        for i in 0..10 {
            batches.extend(push(&mut batcher, &row(&format!("{i:040}"))));
        }
        batches.extend(batcher.finish());
        assert!(batcher.finish().is_none(), "nothing is left after finish");
        assert!(batches.len() > 1, "100 bytes hold two 44-byte rows at most");
        let mut offset = 0;
        for batch in batches.iter().map(decoded) {
            assert_eq!(batch.offset, offset);
            assert!(!batch.rows.is_empty());
            let bytes: usize = batch
                .rows
                .iter()
                .map(|r| BatchRows::row_bytes(r.encoded_len()))
                .sum();
            assert!(bytes <= 100 || batch.rows.len() == 1, "{bytes}");
            offset += batch.rows.len() as u64;
        }
        assert_eq!(offset, 10);
    }

    #[test]
    fn batches_are_cut_by_rows_too() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 3, 1 << 20, usize::MAX);
        let mut sizes = Vec::new();
        for i in 0..7 {
            sizes.extend(push(&mut batcher, &row(&i.to_string())).map(|b| b.row_count()));
        }
        sizes.extend(batcher.finish().map(|b| b.row_count()));
        assert_eq!(sizes, [3, 3, 1]);
    }

    #[test]
    fn a_full_batch_leaves_with_its_last_row_not_the_next() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 2, 1 << 20, usize::MAX);
        let pushed: Vec<Option<usize>> = (0..4)
            .map(|i| push(&mut batcher, &row(&i.to_string())).map(|b| b.row_count()))
            .collect();
        assert_eq!(pushed, [None, Some(2), None, Some(2)]);
        assert!(batcher.finish().is_none());
    }

    #[test]
    fn a_row_larger_than_the_limit_is_a_batch_of_its_own() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 1000, 10, usize::MAX);
        let big = row(&"x".repeat(50));
        assert!(push(&mut batcher, &big).is_none());
        let first = push(&mut batcher, &big).expect("the second row cuts the first");
        assert_eq!(first.row_count(), 1);
        let rest = decoded(&batcher.finish().unwrap());
        assert_eq!(rest.offset, 1);
        assert_eq!(rest.rows, vec![pb::Row { values: big }]);
    }
}
