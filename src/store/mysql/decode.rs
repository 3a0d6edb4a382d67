//! MariaDB and MySQL values to typed protobuf values.
//!
//! Each column gets a [`MyDecoder`] chosen once from its catalog type (`information_schema`'s
//! `DATA_TYPE` and `COLUMN_TYPE`, and whether a JSON check constrains it). Values arrive in the
//! binary protocol as the driver's `Value`: integers as `Int` (a `BIGINT UNSIGNED` above
//! `i64::MAX` as `UInt`), floats as `Float`/`Double`, DECIMAL, text, JSON, ENUM, SET, BIT and
//! blobs as `Bytes`, and DATE, DATETIME and TIMESTAMP as `Date`, TIMESTAMP already in the
//! session's time zone (UTC, see the pool's session settings).

use mysql_async::Value as My;
use prost_types::Timestamp;

use crate::pb::{Value, ValueKind, value::Kind};
use crate::values::{format_date, timestamp_kind};

/// The rule a zero date (`0000-00-00`, or a date with a zero month or day) breaks: it is not a
/// date, and is reported as a violation of this rule rather than sent.
pub const ZERO_DATE_RULE: &str = "zero_date";

/// How one column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MyDecoder {
    /// `BOOLEAN` (`TINYINT(1)`): 0 and 1.
    Bool,
    /// Signed integers, unsigned ones up to `INT UNSIGNED`, and YEAR.
    Int,
    /// `BIGINT UNSIGNED`, whose values pass `i64::MAX`: exact, as a decimal.
    BigUnsigned,
    /// `BIT(n)`: its bits as an unsigned number, a decimal when n is 64.
    Bit {
        bits: u8,
    },
    Float,
    /// DECIMAL and NUMERIC, exact.
    Decimal,
    /// CHAR, VARCHAR, the TEXTs, ENUM and SET (its labels comma-joined), in utf8mb4.
    Text,
    /// BINARY, VARBINARY and the BLOBs.
    Bytes,
    Date,
    /// DATETIME: a wall-clock time without a zone, read as UTC.
    DateTime,
    /// TIMESTAMP: an instant, which the session's UTC zone delivers as UTC.
    Timestamp,
    /// TIME: a duration of up to ±838:59:59, as text (`-12:30:00`, `100:00:00.500`).
    Time {
        /// The column's fractional digits (`TIME(3)`: 3), which every value shows, as the
        /// server prints them.
        digits: u8,
    },
    /// JSON (MySQL's type, or MariaDB's LONGTEXT constrained by `json_valid`).
    Json,
}

/// A value could not be decoded. Names the problem, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a {decoder:?} column sent a value of another kind")]
    Unexpected { decoder: MyDecoder },
    #[error("text is not valid UTF-8")]
    NotUtf8,
    #[error("a boolean column holds a value other than 0 and 1")]
    NotBoolean,
    /// A zero date: a coercion violation of [`ZERO_DATE_RULE`].
    #[error("violates rule {ZERO_DATE_RULE}: a date with a zero year, month or day")]
    ZeroDate,
}

impl MyDecoder {
    /// Chooses the decoder for a column from `information_schema.COLUMNS`: its `DATA_TYPE`
    /// (`bigint`), its `COLUMN_TYPE` (`bigint(20) unsigned`, `tinyint(1)`, `bit(3)`), and
    /// whether a `json_valid` check constrains it.
    pub fn for_column(data_type: &str, column_type: &str, json_checked: bool) -> MyDecoder {
        let column_type = column_type.to_ascii_lowercase();
        let unsigned = column_type.contains("unsigned");
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" if column_type.starts_with("tinyint(1)") && !unsigned => MyDecoder::Bool,
            "bigint" if unsigned => MyDecoder::BigUnsigned,
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
                MyDecoder::Int
            }
            "bit" => MyDecoder::Bit {
                bits: column_type
                    .trim_start_matches("bit(")
                    .trim_end_matches(')')
                    .parse()
                    .unwrap_or(64),
            },
            "float" | "double" | "real" => MyDecoder::Float,
            "decimal" | "numeric" => MyDecoder::Decimal,
            "json" => MyDecoder::Json,
            "longtext" | "text" | "mediumtext" if json_checked => MyDecoder::Json,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                MyDecoder::Bytes
            }
            "date" => MyDecoder::Date,
            "datetime" => MyDecoder::DateTime,
            "timestamp" => MyDecoder::Timestamp,
            "time" => MyDecoder::Time {
                digits: column_type
                    .trim_start_matches("time")
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .parse()
                    .unwrap_or(0)
                    .min(6),
            },
            // char, varchar, the texts, enum, set, and MariaDB's uuid, inet4 and inet6, which
            // arrive as their text.
            _ => MyDecoder::Text,
        }
    }

    /// The kind of every non-NULL value the decoder produces.
    pub fn kind(&self) -> ValueKind {
        match self {
            MyDecoder::Bool => ValueKind::Bool,
            MyDecoder::Int => ValueKind::Int64,
            MyDecoder::Bit { bits } if *bits < 64 => ValueKind::Int64,
            MyDecoder::BigUnsigned | MyDecoder::Bit { .. } | MyDecoder::Decimal => {
                ValueKind::Decimal
            }
            MyDecoder::Float => ValueKind::Double,
            MyDecoder::Text | MyDecoder::Time { .. } => ValueKind::String,
            MyDecoder::Bytes => ValueKind::Bytes,
            MyDecoder::Date => ValueKind::Date,
            MyDecoder::DateTime | MyDecoder::Timestamp => ValueKind::Timestamp,
            MyDecoder::Json => ValueKind::Json,
        }
    }

    /// Decodes one value.
    pub fn decode(&self, value: My) -> Result<Value, DecodeError> {
        let unexpected = DecodeError::Unexpected { decoder: *self };
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8);
        let kind = match (self, value) {
            (_, My::NULL) => Kind::NullValue(0),
            (MyDecoder::Bool, My::Int(0)) => Kind::BoolValue(false),
            (MyDecoder::Bool, My::Int(1)) => Kind::BoolValue(true),
            (MyDecoder::Bool, My::Int(_)) => return Err(DecodeError::NotBoolean),
            (MyDecoder::Int, My::Int(n)) => Kind::Int64Value(n),
            (MyDecoder::Int, My::UInt(n)) => {
                Kind::Int64Value(i64::try_from(n).map_err(|_| unexpected)?)
            }
            (MyDecoder::BigUnsigned, My::Int(n)) => Kind::DecimalValue(n.to_string()),
            (MyDecoder::BigUnsigned, My::UInt(n)) => Kind::DecimalValue(n.to_string()),
            (MyDecoder::Bit { bits }, My::Bytes(bytes)) => {
                let n = bytes.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
                if *bits < 64 {
                    Kind::Int64Value(n as i64)
                } else {
                    Kind::DecimalValue(n.to_string())
                }
            }
            (MyDecoder::Float, My::Float(f)) => Kind::DoubleValue(f64::from(f)),
            (MyDecoder::Float, My::Double(f)) => Kind::DoubleValue(f),
            (MyDecoder::Decimal, My::Bytes(bytes)) => Kind::DecimalValue(text(bytes)?),
            (MyDecoder::Text, My::Bytes(bytes)) => Kind::StringValue(text(bytes)?),
            (MyDecoder::Json, My::Bytes(bytes)) => Kind::JsonValue(text(bytes)?),
            (MyDecoder::Bytes, My::Bytes(bytes)) => Kind::BytesValue(bytes),
            (MyDecoder::Date, My::Date(y, m, d, ..)) => Kind::DateValue(format_date(
                days_since_epoch(y, m, d).ok_or(DecodeError::ZeroDate)?,
            )),
            (MyDecoder::DateTime | MyDecoder::Timestamp, My::Date(y, m, d, h, i, s, us)) => {
                let days = days_since_epoch(y, m, d).ok_or(DecodeError::ZeroDate)?;
                timestamp_kind(Timestamp {
                    seconds: days * 86_400 + i64::from(h) * 3600 + i64::from(i) * 60 + i64::from(s),
                    nanos: (us * 1000) as i32,
                })
            }
            (MyDecoder::Time { digits }, My::Time(negative, days, h, i, s, us)) => {
                let hours = i64::from(days) * 24 + i64::from(h);
                let sign = if negative { "-" } else { "" };
                // The column's digits; all six for a fraction a column without them cannot
                // hold (never sent by a server).
                let digits = match (*digits, us) {
                    (0, 0) => 0,
                    (0, _) => 6,
                    (digits, _) => usize::from(digits),
                };
                let fraction = if digits == 0 {
                    String::new()
                } else {
                    format!(".{}", &format!("{us:06}")[..digits])
                };
                Kind::StringValue(format!("{sign}{hours:02}:{i:02}:{s:02}{fraction}"))
            }
            _ => return Err(unexpected),
        };
        Ok(Value { kind: Some(kind) })
    }
}

/// Days from 1970-01-01 to a calendar date; `None` for a zero year, month or day, or a date
/// that does not exist.
fn days_since_epoch(year: u16, month: u8, day: u8) -> Option<i64> {
    let date = chrono::NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))
        .filter(|_| year > 0)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
    Some((date - epoch).num_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(decoder: MyDecoder, value: My) -> Kind {
        decoder.decode(value).unwrap().kind.unwrap()
    }

    #[test]
    fn types_choose_their_decoders() {
        assert_eq!(
            MyDecoder::for_column("tinyint", "tinyint(1)", false),
            MyDecoder::Bool
        );
        assert_eq!(
            MyDecoder::for_column("tinyint", "tinyint(4)", false),
            MyDecoder::Int
        );
        assert_eq!(
            MyDecoder::for_column("bigint", "bigint(20) unsigned", false),
            MyDecoder::BigUnsigned
        );
        assert_eq!(
            MyDecoder::for_column("bit", "bit(3)", false),
            MyDecoder::Bit { bits: 3 }
        );
        assert_eq!(
            MyDecoder::for_column("longtext", "longtext", true),
            MyDecoder::Json
        );
        assert_eq!(
            MyDecoder::for_column("longtext", "longtext", false),
            MyDecoder::Text
        );
        assert_eq!(
            MyDecoder::for_column("enum", "enum('a','b')", false),
            MyDecoder::Text
        );
    }

    #[test]
    fn values_decode_exactly_and_zero_dates_are_a_rule_violation() {
        assert_eq!(
            kind(MyDecoder::BigUnsigned, My::UInt(u64::MAX)),
            Kind::DecimalValue("18446744073709551615".into())
        );
        assert_eq!(
            kind(MyDecoder::Bit { bits: 3 }, My::Bytes(vec![5])),
            Kind::Int64Value(5)
        );
        assert_eq!(
            kind(MyDecoder::Date, My::Date(2024, 2, 29, 0, 0, 0, 0)),
            Kind::DateValue("2024-02-29".into())
        );
        assert_eq!(
            kind(MyDecoder::Timestamp, My::Date(1970, 1, 2, 0, 0, 1, 500_000)),
            Kind::TimestampValue(Timestamp {
                seconds: 86_401,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            kind(MyDecoder::Time { digits: 0 }, My::Time(true, 1, 2, 3, 4, 0)),
            Kind::StringValue("-26:03:04".into())
        );
        // TIME(3) shows three digits, as the server prints it, zeros included.
        let time3 = MyDecoder::for_column("time", "time(3)", false);
        assert_eq!(time3, MyDecoder::Time { digits: 3 });
        assert_eq!(
            kind(time3, My::Time(false, 0, 12, 30, 0, 500_000)),
            Kind::StringValue("12:30:00.500".into())
        );
        assert_eq!(
            kind(time3, My::Time(false, 0, 12, 30, 0, 0)),
            Kind::StringValue("12:30:00.000".into())
        );
        assert_eq!(
            MyDecoder::Date.decode(My::Date(0, 0, 0, 0, 0, 0, 0)),
            Err(DecodeError::ZeroDate)
        );
        assert_eq!(
            MyDecoder::DateTime.decode(My::Date(2020, 2, 0, 0, 0, 0, 0)),
            Err(DecodeError::ZeroDate)
        );
        assert_eq!(
            MyDecoder::Bool.decode(My::Int(2)),
            Err(DecodeError::NotBoolean)
        );
        assert!(MyDecoder::Text.decode(My::Bytes(vec![0xff])).is_err());
    }
}
