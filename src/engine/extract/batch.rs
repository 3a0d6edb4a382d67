//! Cutting a table's rows into batches: by rows (`batch_size`) and by encoded bytes.
//! Pure, and unit-tested.

use crate::pb;
use crate::schema::PlannedTable;

/// Cuts a table's rows into batches by row count (`batch_size`) and by encoded bytes.
pub(super) struct Batcher<'a> {
    table: &'a str,
    columns: &'a [pb::ColumnDescriptor],
    max_rows: usize,
    max_bytes: usize,
    rows: Vec<pb::Row>,
    bytes: usize,
    offset: u64,
}

impl<'a> Batcher<'a> {
    pub(super) fn new(
        table: &'a str,
        columns: &'a [pb::ColumnDescriptor],
        max_rows: usize,
        max_bytes: usize,
    ) -> Self {
        Batcher {
            table,
            columns,
            max_rows: max_rows.max(1),
            max_bytes,
            rows: Vec::new(),
            bytes: 0,
            offset: 0,
        }
    }

    /// Adds a row; returns a full batch: this one, once it holds `max_rows` rows (it leaves
    /// with its last row, not with the next one, which may be slow to come), or the one before
    /// when the row would push it over the byte limit (the row then starts the next batch).
    pub(super) fn push(&mut self, row: pb::Row, size: usize) -> Option<pb::RowBatch> {
        let full = if !self.rows.is_empty()
            && (self.rows.len() >= self.max_rows || self.bytes + size > self.max_bytes)
        {
            self.finish()
        } else {
            None
        };
        self.bytes += size + 4;
        self.rows.push(row);
        if full.is_none() && self.rows.len() >= self.max_rows {
            return self.finish();
        }
        full
    }

    pub(super) fn finish(&mut self) -> Option<pb::RowBatch> {
        if self.rows.is_empty() {
            return None;
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(self.max_rows.min(4096)));
        let offset = self.offset;
        self.offset += rows.len() as u64;
        self.bytes = 0;
        Some(pb::RowBatch {
            table: self.table.to_owned(),
            columns: self.columns.to_vec(),
            rows,
            offset,
        })
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
            pg_type: c.pg_type.clone(),
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

    fn row(text: &str) -> pb::Row {
        pb::Row {
            values: vec![pb::Value {
                kind: Some(pb::value::Kind::StringValue(text.to_owned())),
            }],
        }
    }

    #[test]
    fn batches_are_cut_by_bytes_and_offsets_run_on() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 1000, 100);
        let mut batches = Vec::new();
        for i in 0..10 {
            let r = row(&format!("{i:040}"));
            let size = r.encoded_len();
            batches.extend(batcher.push(r, size));
        }
        batches.extend(batcher.finish());
        assert!(batcher.finish().is_none(), "nothing is left after finish");
        assert!(batches.len() > 1, "100 bytes hold two 44-byte rows at most");
        let mut offset = 0;
        for batch in &batches {
            assert_eq!(batch.offset, offset);
            assert!(!batch.rows.is_empty());
            let bytes: usize = batch.rows.iter().map(|r| r.encoded_len() + 4).sum();
            assert!(bytes <= 100 || batch.rows.len() == 1, "{bytes}");
            offset += batch.rows.len() as u64;
        }
        assert_eq!(offset, 10);
    }

    #[test]
    fn batches_are_cut_by_rows_too() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 3, 1 << 20);
        let mut sizes = Vec::new();
        for i in 0..7 {
            let r = row(&i.to_string());
            let size = r.encoded_len();
            sizes.extend(batcher.push(r, size).map(|b| b.rows.len()));
        }
        sizes.extend(batcher.finish().map(|b| b.rows.len()));
        assert_eq!(sizes, [3, 3, 1]);
    }

    #[test]
    fn a_full_batch_leaves_with_its_last_row_not_the_next() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 2, 1 << 20);
        let pushed: Vec<Option<usize>> = (0..4)
            .map(|i| {
                let r = row(&i.to_string());
                let size = r.encoded_len();
                batcher.push(r, size).map(|b| b.rows.len())
            })
            .collect();
        assert_eq!(pushed, [None, Some(2), None, Some(2)]);
        assert!(batcher.finish().is_none());
    }

    #[test]
    fn a_row_larger_than_the_limit_is_a_batch_of_its_own() {
        let columns = [pb::ColumnDescriptor::default()];
        let mut batcher = Batcher::new("t", &columns, 1000, 10);
        let big = row(&"x".repeat(50));
        let size = big.encoded_len();
        assert!(batcher.push(big.clone(), size).is_none());
        let first = batcher
            .push(big, size)
            .expect("the second row cuts the first");
        assert_eq!(first.rows.len(), 1);
        assert_eq!(batcher.finish().unwrap().offset, 1);
    }
}
