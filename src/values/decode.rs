//! PostgreSQL values to typed protobuf values.
//!
//! Each exported column gets a [`Decoder`] chosen once, from its catalog type, when the data
//! map is loaded. Types with a compact binary form (booleans, integers, floats, bytea,
//! timestamps, dates, json/jsonb) are decoded straight from PostgreSQL's binary wire format,
//! without an intermediate value per cell. Types whose exact text form matters more than a
//! binary decoding (numeric, uuid, inet, enums, intervals, ...) are cast to text in the query
//! itself, and arrays become JSON with `to_jsonb`, so that nothing is rounded or lost.

use prost_types::Timestamp;

use crate::pb::{RowBuf, TextField, Value, ValueKind, value::Kind};

/// How one column's values are read and converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// numeric, selected as `::text`, kept exact.
    Decimal,
    /// Any text type, or any other type selected as `::text`.
    Text,
    /// A type without a dedicated decoder, selected as `::text`.
    AsText,
    /// inet, selected as `abbrev(..)`: the form its output function (and psql) shows,
    /// `203.0.113.7` for a host, where `::text` would add `/32`.
    Inet,
    Bytea,
    /// timestamp and timestamptz: microseconds since 2000-01-01 UTC.
    Timestamp,
    /// date: days since 2000-01-01.
    Date,
    Json,
    /// jsonb, and arrays selected as `to_jsonb(..)`: a version byte, then JSON text.
    Jsonb,
    /// An array, selected as `to_jsonb(..)`.
    Array,
}

/// Microseconds and days between the Unix epoch and PostgreSQL's epoch (2000-01-01).
pub(super) const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
/// The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
pub(super) const MIN_TIMESTAMP_SECS: i64 = -62_135_596_800;
pub(super) const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;
pub(super) const PG_EPOCH_UNIX_DAYS: i64 = 10_957;

/// A value could not be decoded. Names the problem, never the value.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode a {decoder:?} value: {reason}")]
pub struct DecodeError {
    pub decoder: Decoder,
    pub reason: &'static str,
}

impl Decoder {
    /// Chooses the decoder for a catalog type (`pg_type.typname`, `pg_type.typcategory`).
    pub fn for_type(typname: &str, typcategory: &str) -> Decoder {
        match typname {
            "bool" => Decoder::Bool,
            "int2" => Decoder::Int2,
            "int4" => Decoder::Int4,
            "int8" => Decoder::Int8,
            "oid" => Decoder::Oid,
            "float4" => Decoder::Float4,
            "float8" => Decoder::Float8,
            "numeric" => Decoder::Decimal,
            "text" | "varchar" | "bpchar" | "name" => Decoder::Text,
            "bytea" => Decoder::Bytea,
            "inet" => Decoder::Inet,
            "timestamp" | "timestamptz" => Decoder::Timestamp,
            "date" => Decoder::Date,
            "json" => Decoder::Json,
            "jsonb" => Decoder::Jsonb,
            _ if typcategory == "A" => Decoder::Array,
            _ => Decoder::AsText,
        }
    }

    /// The select-list expression for a column reference.
    pub fn select_expr(&self, column: &str) -> String {
        match self {
            Decoder::Decimal | Decoder::AsText => format!("{column}::text"),
            Decoder::Inet => format!("abbrev({column})"),
            Decoder::Array => format!("to_jsonb({column})"),
            _ => column.to_owned(),
        }
    }

    /// The Value field this decoder fills.
    pub fn kind(&self) -> ValueKind {
        match self {
            Decoder::Bool => ValueKind::Bool,
            Decoder::Int2 | Decoder::Int4 | Decoder::Int8 | Decoder::Oid => ValueKind::Int64,
            Decoder::Float4 | Decoder::Float8 => ValueKind::Double,
            Decoder::Decimal => ValueKind::Decimal,
            Decoder::Text | Decoder::AsText | Decoder::Inet => ValueKind::String,
            Decoder::Bytea => ValueKind::Bytes,
            Decoder::Timestamp => ValueKind::Timestamp,
            Decoder::Date => ValueKind::Date,
            Decoder::Json | Decoder::Jsonb | Decoder::Array => ValueKind::Json,
        }
    }

    /// Decodes one cell from its binary wire form (`None` is SQL NULL).
    pub fn decode(&self, raw: Option<&[u8]>) -> Result<Value, DecodeError> {
        let Some(raw) = raw else {
            return Ok(Value {
                kind: Some(Kind::NullValue(0)),
            });
        };
        let kind = match self {
            Decoder::Bool => Kind::BoolValue(*self.fixed::<1>(raw)?.first().unwrap_or(&0) != 0),
            Decoder::Int2 => Kind::Int64Value(i16::from_be_bytes(self.fixed(raw)?).into()),
            Decoder::Int4 => Kind::Int64Value(i32::from_be_bytes(self.fixed(raw)?).into()),
            Decoder::Int8 => Kind::Int64Value(i64::from_be_bytes(self.fixed(raw)?)),
            Decoder::Oid => Kind::Int64Value(u32::from_be_bytes(self.fixed(raw)?).into()),
            Decoder::Float4 => Kind::DoubleValue(f32::from_be_bytes(self.fixed(raw)?).into()),
            Decoder::Float8 => Kind::DoubleValue(f64::from_be_bytes(self.fixed(raw)?)),
            Decoder::Decimal => Kind::DecimalValue(self.text(raw)?),
            Decoder::Text | Decoder::AsText | Decoder::Inet => Kind::StringValue(self.text(raw)?),
            Decoder::Bytea => Kind::BytesValue(raw.to_vec()),
            Decoder::Timestamp => match i64::from_be_bytes(self.fixed(raw)?) {
                i64::MAX => Kind::TimestampText("infinity".to_owned()),
                i64::MIN => Kind::TimestampText("-infinity".to_owned()),
                // No overflow: |micros / 10^6| is below 10^13.
                micros => timestamp_kind(Timestamp {
                    seconds: micros.div_euclid(1_000_000) + PG_EPOCH_UNIX_SECS,
                    nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
                }),
            },
            Decoder::Date => match i32::from_be_bytes(self.fixed(raw)?) {
                i32::MAX => Kind::DateValue("infinity".to_owned()),
                i32::MIN => Kind::DateValue("-infinity".to_owned()),
                days => Kind::DateValue(format_date(i64::from(days) + PG_EPOCH_UNIX_DAYS)),
            },
            Decoder::Json => Kind::JsonValue(self.text(raw)?),
            Decoder::Jsonb | Decoder::Array => match raw.split_first() {
                Some((1, json)) => Kind::JsonValue(self.text(json)?),
                _ => return Err(self.error("unsupported jsonb version")),
            },
        };
        Ok(Value { kind: Some(kind) })
    }

    /// Writes one cell into its row (`None` is SQL NULL): the value [`decode`](Self::decode)
    /// gives, encoded. Values that are their text or bytes are written straight from the
    /// cell, without a `Value` or a copy of their own.
    pub fn write(&self, raw: Option<&[u8]>, row: &mut RowBuf) -> Result<(), DecodeError> {
        match (self, raw) {
            (Decoder::Text | Decoder::AsText | Decoder::Inet, Some(raw)) => {
                row.put_text(TextField::String, self.str(raw)?);
            }
            (Decoder::Decimal, Some(raw)) => row.put_text(TextField::Decimal, self.str(raw)?),
            (Decoder::Json, Some(raw)) => row.put_text(TextField::Json, self.str(raw)?),
            (Decoder::Jsonb | Decoder::Array, Some(raw)) => match raw.split_first() {
                Some((1, json)) => row.put_text(TextField::Json, self.str(json)?),
                _ => return Err(self.error("unsupported jsonb version")),
            },
            (Decoder::Bytea, Some(raw)) => row.put_bytes(raw),
            _ => row.put(&self.decode(raw)?),
        }
        Ok(())
    }

    fn str<'a>(&self, raw: &'a [u8]) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(raw).map_err(|_| self.error("text is not valid UTF-8"))
    }

    fn fixed<const N: usize>(&self, raw: &[u8]) -> Result<[u8; N], DecodeError> {
        raw.try_into()
            .map_err(|_| self.error("unexpected length of binary value"))
    }

    fn text(&self, raw: &[u8]) -> Result<String, DecodeError> {
        String::from_utf8(raw.to_vec()).map_err(|_| self.error("text is not valid UTF-8"))
    }

    fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            decoder: *self,
            reason,
        }
    }
}

/// A timestamp as a value: `timestamp_value` within the years google.protobuf.Timestamp
/// allows (1-9999), `timestamp_text` beyond them, so that no client meets an invalid
/// Timestamp.
pub fn timestamp_kind(t: Timestamp) -> Kind {
    if (MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&t.seconds) {
        Kind::TimestampValue(t)
    } else {
        let second_of_day = t.seconds.rem_euclid(86_400);
        Kind::TimestampText(format!(
            "{}T{:02}:{:02}:{:02}.{:06}Z",
            format_date(t.seconds.div_euclid(86_400)),
            second_of_day / 3600,
            second_of_day % 3600 / 60,
            second_of_day % 60,
            t.nanos / 1000
        ))
    }
}

/// Formats days since the Unix epoch as `YYYY-MM-DD` (proleptic Gregorian; years before 1
/// and after 9999 keep their sign and digits, as ISO 8601 expanded years).
pub fn format_date(unix_days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = unix_days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if (0..=9999).contains(&year) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{year:+05}-{month:02}-{day:02}")
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const DECODERS: [Decoder; 17] = [
        Decoder::Bool,
        Decoder::Int2,
        Decoder::Int4,
        Decoder::Int8,
        Decoder::Oid,
        Decoder::Float4,
        Decoder::Float8,
        Decoder::Decimal,
        Decoder::Text,
        Decoder::AsText,
        Decoder::Inet,
        Decoder::Bytea,
        Decoder::Timestamp,
        Decoder::Date,
        Decoder::Json,
        Decoder::Jsonb,
        Decoder::Array,
    ];

    proptest! {
        /// Whatever a cell holds, writing it straight into its row gives the bytes of the
        /// value it decodes to, or the same error.
        #[test]
        fn a_cell_written_is_its_decoded_value_encoded(
            raw in proptest::option::of(prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..12),
                "[a-zé{}\":,0-9 ]{0,40}".prop_map(String::into_bytes),
                "[a-z0-9]{0,40}".prop_map(|s| [&[1u8][..], s.as_bytes()].concat()),
            ]),
        ) {
            for decoder in DECODERS {
                let mut written = RowBuf::default();
                let mut decoded = RowBuf::default();
                let result = decoder.write(raw.as_deref(), &mut written);
                match decoder.decode(raw.as_deref()) {
                    Ok(value) => {
                        prop_assert!(result.is_ok(), "{:?}", decoder);
                        decoded.put(&value);
                        prop_assert_eq!(written.as_bytes(), decoded.as_bytes());
                    }
                    Err(e) => prop_assert_eq!(
                        result.map_err(|e| e.to_string()),
                        Err(e.to_string())
                    ),
                }
            }
        }

        /// Any 8 bytes a timestamp column can send: a Timestamp protobuf allows, or text.
        #[test]
        fn any_timestamp_decodes_to_a_valid_value(micros in any::<i64>()) {
            match Decoder::Timestamp.decode(Some(&micros.to_be_bytes())).unwrap().kind {
                Some(Kind::TimestampValue(t)) => {
                    prop_assert!((MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&t.seconds));
                    prop_assert!((0..1_000_000_000).contains(&t.nanos));
                }
                Some(Kind::TimestampText(text)) => prop_assert!(
                    text.ends_with('Z') || text.ends_with("infinity"), "{}", text
                ),
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// Any 4 bytes a date column can send: a date, an infinity, or an expanded year.
        #[test]
        fn any_date_decodes(days in any::<i32>()) {
            let Some(Kind::DateValue(text)) = Decoder::Date.decode(Some(&days.to_be_bytes())).unwrap().kind else {
                panic!("not a date");
            };
            prop_assert!(text.len() >= 8, "{}", text);
        }

        /// Any bits of a float: decoded as sent, NaN and infinities included.
        #[test]
        fn any_float_decodes(bits in any::<u64>()) {
            let value = Decoder::Float8.decode(Some(&bits.to_be_bytes())).unwrap();
            let Some(Kind::DoubleValue(d)) = value.kind else { panic!("not a double") };
            prop_assert!(d.to_bits() == bits || d.is_nan());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(d: Decoder, raw: &[u8]) -> Kind {
        d.decode(Some(raw)).unwrap().kind.unwrap()
    }

    #[test]
    fn null_is_null_for_every_decoder() {
        for d in [
            Decoder::Bool,
            Decoder::Text,
            Decoder::Timestamp,
            Decoder::Jsonb,
        ] {
            assert_eq!(d.decode(None).unwrap().kind, Some(Kind::NullValue(0)));
        }
    }

    #[test]
    fn integers_widen_to_int64() {
        assert_eq!(
            decode(Decoder::Int2, &(-3i16).to_be_bytes()),
            Kind::Int64Value(-3)
        );
        assert_eq!(
            decode(Decoder::Int4, &i32::MIN.to_be_bytes()),
            Kind::Int64Value(i32::MIN.into())
        );
        assert_eq!(
            decode(Decoder::Oid, &u32::MAX.to_be_bytes()),
            Kind::Int64Value(4294967295)
        );
        assert!(Decoder::Int8.decode(Some(&[0, 1])).is_err());
    }

    #[test]
    fn timestamps_count_from_the_postgres_epoch() {
        assert_eq!(
            decode(Decoder::Timestamp, &0i64.to_be_bytes()),
            Kind::TimestampValue(Timestamp {
                seconds: 946_684_800,
                nanos: 0
            })
        );
        // One microsecond before 2000-01-01 keeps nanos positive.
        assert_eq!(
            decode(Decoder::Timestamp, &(-1i64).to_be_bytes()),
            Kind::TimestampValue(Timestamp {
                seconds: 946_684_799,
                nanos: 999_999_000
            })
        );
        assert_eq!(
            decode(Decoder::Timestamp, &i64::MAX.to_be_bytes()),
            Kind::TimestampText("infinity".into())
        );
        assert_eq!(
            decode(Decoder::Timestamp, &i64::MIN.to_be_bytes()),
            Kind::TimestampText("-infinity".into())
        );
    }

    /// PostgreSQL's extremes, 4713 BC and 294276 AD, are beyond what google.protobuf.Timestamp
    /// holds: they arrive as text, never as an invalid Timestamp.
    #[test]
    fn timestamps_beyond_years_1_to_9999_are_text() {
        assert_eq!(
            decode(
                Decoder::Timestamp,
                &9_223_371_331_199_999_999i64.to_be_bytes()
            ),
            Kind::TimestampText("+294276-12-31T23:59:59.999999Z".into())
        );
        assert_eq!(
            decode(
                Decoder::Timestamp,
                &(-211_813_488_000_000_000i64).to_be_bytes()
            ),
            Kind::TimestampText("-4713-11-24T00:00:00.000000Z".into())
        );
        // The last instant of 9999 is still a Timestamp; the next is text.
        let end_of_9999 = (253_402_300_799 - PG_EPOCH_UNIX_SECS) * 1_000_000 + 999_999;
        assert!(matches!(
            decode(Decoder::Timestamp, &end_of_9999.to_be_bytes()),
            Kind::TimestampValue(_)
        ));
        assert_eq!(
            decode(Decoder::Timestamp, &(end_of_9999 + 1).to_be_bytes()),
            Kind::TimestampText("+10000-01-01T00:00:00.000000Z".into())
        );
    }

    #[test]
    fn dates_format_as_iso() {
        assert_eq!(
            decode(Decoder::Date, &0i32.to_be_bytes()),
            Kind::DateValue("2000-01-01".into())
        );
        assert_eq!(
            decode(Decoder::Date, &59i32.to_be_bytes()),
            Kind::DateValue("2000-02-29".into())
        );
        assert_eq!(
            decode(Decoder::Date, &(-10_957i32).to_be_bytes()),
            Kind::DateValue("1970-01-01".into())
        );
        assert_eq!(format_date(-719_528), "0000-01-01");
        // PostgreSQL's extremes: 4713 BC (year -4712) and 5874897 AD, and the infinities.
        assert_eq!(
            decode(Decoder::Date, &(-2_451_545i32).to_be_bytes()),
            Kind::DateValue("-4713-11-24".into())
        );
        assert_eq!(
            decode(Decoder::Date, &2_145_031_948i32.to_be_bytes()),
            Kind::DateValue("+5874897-12-31".into())
        );
        assert_eq!(
            decode(Decoder::Date, &i32::MAX.to_be_bytes()),
            Kind::DateValue("infinity".into())
        );
    }

    #[test]
    fn jsonb_strips_its_version_byte() {
        assert_eq!(
            decode(Decoder::Jsonb, b"\x01{\"a\":1}"),
            Kind::JsonValue("{\"a\":1}".into())
        );
        assert!(Decoder::Jsonb.decode(Some(b"\x02{}")).is_err());
    }

    #[test]
    fn unknown_types_are_cast_to_text_and_arrays_to_json() {
        assert_eq!(Decoder::for_type("uuid", "U"), Decoder::AsText);
        assert_eq!(Decoder::AsText.select_expr("t0.\"id\""), "t0.\"id\"::text");
        assert_eq!(Decoder::for_type("_text", "A"), Decoder::Array);
        assert_eq!(
            Decoder::Array.select_expr("t0.\"tags\""),
            "to_jsonb(t0.\"tags\")"
        );
        assert_eq!(Decoder::for_type("numeric", "N").kind(), ValueKind::Decimal);
    }
}
