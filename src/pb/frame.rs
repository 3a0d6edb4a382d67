//! What the Extract stream sends.
//!
//! Most events are messages, encoded by prost when tonic sends them. Rows are different: there
//! are many, and each is small. A row is encoded as it is read ([`RowBuf`]), each cell from its
//! `Value` or straight from its text or bytes, and appended to its batch's buffer
//! ([`BatchRows`]), with no `Row` or `RowBatch` built around it; the batch goes out as those
//! bytes ([`EncodedBatch`]). The bytes are exactly prost's encoding of the same
//! `ExtractResponse` (the tests below compare them), so a client sees no difference.

use std::fmt;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

use super::{ColumnDescriptor, ExtractResponse, RowBatch, Value};

/// `ExtractResponse.batch`.
const BATCH_FIELD: u32 = 2;
/// `RowBatch.rows`.
const ROWS_FIELD: u32 = 3;
/// `RowBatch.offset`.
const OFFSET_FIELD: u32 = 4;
/// `Row.values`.
const VALUES_FIELD: u32 = 1;

/// One message of the Extract stream, as the server sends it.
// A frame lives in the stream's small channel, and batches are most of them: boxing the
// message would save a few hundred bytes per slot for an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ExtractFrame {
    /// An event, encoded when it is sent.
    Message(ExtractResponse),
    /// A `batch` event, already encoded.
    Batch(EncodedBatch),
}

impl Default for ExtractFrame {
    fn default() -> Self {
        ExtractFrame::Message(ExtractResponse::default())
    }
}

impl From<ExtractResponse> for ExtractFrame {
    fn from(message: ExtractResponse) -> Self {
        ExtractFrame::Message(message)
    }
}

impl ExtractFrame {
    /// The event, unless this is an encoded batch.
    pub fn message(&self) -> Option<&ExtractResponse> {
        match self {
            ExtractFrame::Message(message) => Some(message),
            ExtractFrame::Batch(_) => None,
        }
    }
}

impl Message for ExtractFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            ExtractFrame::Message(message) => message.encode_raw(buf),
            ExtractFrame::Batch(batch) => {
                buf.put_slice(&batch.head);
                buf.put_slice(&batch.rows);
                buf.put_slice(&batch.tail);
            }
        }
    }

    /// A frame decodes as the `ExtractResponse` it encodes (the server never decodes one).
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if let ExtractFrame::Batch(batch) = self {
            *self = ExtractFrame::Message(ExtractResponse::decode(batch.to_vec().as_slice())?);
        }
        match self {
            ExtractFrame::Message(message) => message.merge_field(tag, wire_type, buf, ctx),
            ExtractFrame::Batch(_) => unreachable!("replaced by its message above"),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            ExtractFrame::Message(message) => message.encoded_len(),
            ExtractFrame::Batch(batch) => batch.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = ExtractFrame::default();
    }
}

/// An `ExtractResponse` whose event is a `RowBatch`, encoded: the event's key and length with
/// the batch's table and column descriptors, then its rows as they were written, then its
/// offset.
#[derive(Clone, PartialEq)]
pub struct EncodedBatch {
    head: Vec<u8>,
    rows: Vec<u8>,
    tail: Vec<u8>,
    count: usize,
    /// The `RowBatch`'s own length (without the event's key and length).
    batch_len: usize,
}

/// Sizes only: a batch's bytes are rows of personal data.
impl fmt::Debug for EncodedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedBatch")
            .field("rows", &self.count)
            .field("bytes", &self.encoded_len())
            .finish()
    }
}

impl EncodedBatch {
    /// Rows in the batch.
    pub fn row_count(&self) -> usize {
        self.count
    }

    /// The encoded `RowBatch`'s length: what `RowBatch::encoded_len` gives for it.
    pub fn batch_len(&self) -> usize {
        self.batch_len
    }

    /// The encoded `ExtractResponse`'s length.
    pub fn encoded_len(&self) -> usize {
        self.head.len() + self.rows.len() + self.tail.len()
    }

    /// The encoded `ExtractResponse`.
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], &self.rows, &self.tail].concat()
    }
}

/// One table's rows, encoded as they come and cut into [`EncodedBatch`]es. Each batch carries
/// the table's name and column descriptors, encoded once for all of its batches, and its
/// offset in the table.
pub struct BatchRows {
    fields: Vec<u8>,
    rows: Vec<u8>,
    count: usize,
    offset: u64,
    /// The bytes of the last batch's rows: the next batch is likely as large.
    last: usize,
}

impl BatchRows {
    pub fn new(table: &str, columns: &[ColumnDescriptor]) -> Self {
        let fields = RowBatch {
            table: table.to_owned(),
            columns: columns.to_vec(),
            rows: Vec::new(),
            offset: 0,
        }
        .encode_to_vec();
        BatchRows {
            fields,
            rows: Vec::new(),
            count: 0,
            offset: 0,
            last: 0,
        }
    }

    /// What a row of `row_len` bytes adds to its batch: the row with its key and length.
    pub fn row_bytes(row_len: usize) -> usize {
        encoding::key_len(ROWS_FIELD) + encoding::encoded_len_varint(row_len as u64) + row_len
    }

    /// Appends a row.
    pub fn push(&mut self, row: &RowBuf) {
        if self.rows.capacity() == 0 {
            self.rows.reserve(self.last);
        }
        self.rows.reserve(Self::row_bytes(row.len()));
        encoding::encode_key(ROWS_FIELD, WireType::LengthDelimited, &mut self.rows);
        encoding::encode_varint(row.len() as u64, &mut self.rows);
        self.rows.extend_from_slice(&row.bytes);
        self.count += 1;
    }

    /// Rows since the last batch.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the rows since the last batch.
    pub fn bytes(&self) -> usize {
        self.rows.len()
    }

    /// The rows since the last batch, as a batch; `None` when there are none. The next batch
    /// starts at the row after them.
    pub fn finish(&mut self) -> Option<EncodedBatch> {
        if self.count == 0 {
            return None;
        }
        let mut tail = Vec::new();
        if self.offset != 0 {
            encoding::uint64::encode(OFFSET_FIELD, &self.offset, &mut tail);
        }
        let body = self.fields.len() + self.rows.len() + tail.len();
        let mut head = Vec::with_capacity(self.fields.len() + 11);
        encoding::encode_key(BATCH_FIELD, WireType::LengthDelimited, &mut head);
        encoding::encode_varint(body as u64, &mut head);
        head.extend_from_slice(&self.fields);
        // The next batch's buffer is made when its first row comes: a table's last batch
        // leaves none behind.
        let rows = std::mem::take(&mut self.rows);
        self.last = rows.len();
        let count = std::mem::take(&mut self.count);
        self.offset += count as u64;
        Some(EncodedBatch {
            head,
            rows,
            tail,
            count,
            batch_len: body,
        })
    }
}

/// The fields of `Value` that a cell's text is written into straight from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    String = 5,
    Decimal = 8,
    Json = 9,
}

/// `Value.bytes_value`.
const BYTES_FIELD: u32 = 6;

/// One row's values, encoded cell by cell (a `Row`, without its key and length): each cell
/// from its `Value`, or straight from its text or bytes, without building a `Value`. Kept
/// for a table's every row, so that rows cost no allocation once it has grown.
#[derive(Default)]
pub struct RowBuf {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// Sizes only: a row's bytes are personal data.
impl fmt::Debug for RowBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowBuf")
            .field("cells", &self.ends.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl RowBuf {
    /// The encoded `Row`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Appends a cell.
    pub fn put(&mut self, value: &Value) {
        encoding::message::encode(VALUES_FIELD, value, &mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    /// Appends a cell whose value is `text` in `field`: as [`put`](Self::put) would write it.
    pub fn put_text(&mut self, field: TextField, text: &str) {
        self.put_delimited(field as u32, text.as_bytes());
    }

    /// Appends a cell whose value is `bytes` (`bytes_value`).
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_delimited(BYTES_FIELD, bytes);
    }

    fn put_delimited(&mut self, field: u32, data: &[u8]) {
        let len = data.len() as u64;
        let value_len = encoding::key_len(field) + encoding::encoded_len_varint(len) + data.len();
        encoding::encode_key(VALUES_FIELD, WireType::LengthDelimited, &mut self.bytes);
        encoding::encode_varint(value_len as u64, &mut self.bytes);
        encoding::encode_key(field, WireType::LengthDelimited, &mut self.bytes);
        encoding::encode_varint(len, &mut self.bytes);
        self.bytes.extend_from_slice(data);
        self.ends.push(self.bytes.len());
    }

    /// The encoded `Row`'s length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The index of the cell that takes the most bytes, if there is a cell.
    pub fn largest(&self) -> Option<usize> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.ends
            .iter()
            .zip(starts)
            .map(|(end, start)| end - start)
            .enumerate()
            .max_by_key(|(_, size)| *size)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Row, extract_response::Event, value::Kind};

    fn values(i: usize) -> Vec<Value> {
        let kinds = [
            Kind::NullValue(0),
            Kind::BoolValue(i.is_multiple_of(2)),
            Kind::Int64Value(-(i as i64) * 1_000_003),
            Kind::DoubleValue(i as f64 / 3.0),
            Kind::StringValue("ä".repeat(i * 40)),
            Kind::BytesValue(vec![0; i]),
            Kind::TimestampValue(prost_types::Timestamp {
                seconds: i as i64,
                nanos: 7,
            }),
            Kind::DecimalValue(String::new()),
            Kind::JsonValue(format!("{{\"k\":{i}}}")),
            Kind::DateValue("2024-02-29".into()),
            Kind::TimestampText(String::new()),
        ];
        kinds
            .into_iter()
            .map(|kind| Value { kind: Some(kind) })
            .collect()
    }

    fn columns() -> Vec<ColumnDescriptor> {
        vec![
            ColumnDescriptor {
                name: "email".into(),
                pg_type: "text".into(),
                category: "contact".into(),
                kind: 4,
                coercion: String::new(),
                scan_json: true,
            },
            ColumnDescriptor::default(),
        ]
    }

    /// Every batch is byte for byte what prost encodes for the same message, at offset 0 (not
    /// encoded) and after, with rows small and large (lengths of several varint bytes).
    #[test]
    fn an_encoded_batch_is_prosts_encoding_of_the_same_message() {
        for table in ["public.orders", ""] {
            let mut rows = BatchRows::new(table, &columns());
            let mut offset = 0;
            for size in [1, 3, 40, 1] {
                let mut expected = Vec::new();
                for i in 0..size {
                    let values = values(i * 7);
                    rows.push(&row_of(&values));
                    expected.push(Row { values });
                }
                assert_eq!(rows.len(), size);
                let batch = rows.finish().expect("rows were pushed");
                let message = ExtractResponse {
                    event: Some(Event::Batch(RowBatch {
                        table: table.into(),
                        columns: columns(),
                        rows: expected,
                        offset,
                    })),
                };
                assert_eq!(batch.to_vec(), message.encode_to_vec(), "offset {offset}");
                assert_eq!(batch.encoded_len(), message.encoded_len());
                assert_eq!(batch.row_count(), size);
                let Some(Event::Batch(expected)) = &message.event else {
                    unreachable!()
                };
                assert_eq!(batch.batch_len(), expected.encoded_len());
                let frame = ExtractFrame::Batch(batch);
                assert_eq!(frame.encode_to_vec(), message.encode_to_vec());
                assert_eq!(
                    ExtractFrame::decode(&*frame.encode_to_vec()).unwrap(),
                    message.into()
                );
                offset += size as u64;
            }
            assert!(rows.finish().is_none(), "nothing is left after a batch");
        }
    }

    fn row_of(values: &[Value]) -> RowBuf {
        let mut row = RowBuf::default();
        for value in values {
            row.put(value);
        }
        row
    }

    #[test]
    fn row_bytes_is_what_a_row_adds() {
        let mut rows = BatchRows::new("t", &[]);
        for i in [0, 1, 5, 400] {
            let row = row_of(&values(i));
            assert_eq!(row.len(), Row { values: values(i) }.encoded_len());
            let before = rows.bytes();
            rows.push(&row);
            assert_eq!(rows.bytes() - before, BatchRows::row_bytes(row.len()));
        }
    }

    /// A cell written from its text or bytes is the cell its `Value` writes.
    #[test]
    fn a_cell_from_its_bytes_is_the_cell_of_its_value() {
        for size in [0, 1, 127, 128, 16_384, 70_000] {
            let text = "é".repeat(size / 2) + &"x".repeat(size % 2);
            let mut direct = RowBuf::default();
            let mut valued = RowBuf::default();
            for (field, kind) in [
                (TextField::String, Kind::StringValue(text.clone())),
                (TextField::Decimal, Kind::DecimalValue(text.clone())),
                (TextField::Json, Kind::JsonValue(text.clone())),
            ] {
                direct.put_text(field, &text);
                valued.put(&Value { kind: Some(kind) });
            }
            direct.put_bytes(text.as_bytes());
            valued.put(&Value {
                kind: Some(Kind::BytesValue(text.clone().into_bytes())),
            });
            assert_eq!(direct.bytes, valued.bytes, "{size}");
            assert_eq!(direct.ends, valued.ends, "{size}");
        }
    }

    #[test]
    fn the_largest_cell_is_found() {
        let mut row = RowBuf::default();
        assert_eq!(row.largest(), None);
        row.put_text(TextField::String, "ab");
        row.put_text(TextField::String, "abcd");
        row.put_bytes(b"a");
        assert_eq!(row.largest(), Some(1));
    }

    #[test]
    fn a_batch_shows_its_size_not_its_values() {
        let mut rows = BatchRows::new("t", &[]);
        let secret = vec![Value {
            kind: Some(Kind::StringValue("alice@example.com".into())),
        }];
        rows.push(&row_of(&secret));
        let shown = format!("{:?}", ExtractFrame::Batch(rows.finish().unwrap()));
        assert!(!shown.contains("alice"), "{shown}");
        assert!(shown.contains("rows: 1"), "{shown}");
    }
}
