//! The coercion matrix: declared rules that turn a column's values into UTC timestamps
//! (epochs, local timestamps in a time zone, legacy date strings), with a named rule for
//! every value that fails.

use prost_types::Timestamp;

use super::decode::{
    Decoder, MAX_TIMESTAMP_SECS, MIN_TIMESTAMP_SECS, PG_EPOCH_UNIX_SECS, timestamp_kind,
};
use crate::pb::{Value, value::Kind};

/// A declared coercion: how a column's values become UTC timestamps.
///
/// - `Epoch`: integer seconds, milliseconds or microseconds since 1970-01-01 UTC. Negative
///   values are before 1970. Results outside years 1-9999 are `epoch_out_of_range`.
/// - `LocalTimestamp`: a `timestamp without time zone` read in a declared time zone.
/// - `Date`: text parsed with declared formats, tried in order; a format without a time of day
///   gives local midnight. `%y` uses the century pivot: two-digit years below it are 20yy,
///   the rest 19yy (default 69, as POSIX). Unparseable text is `unparseable_date`.
///
/// Local times are converted to UTC with one documented choice for the two DST edge cases,
/// the same as PostgreSQL's: a time in the spring-forward gap (which never happened on the wall
/// clock) is read with the offset in force before the gap, so 02:30 in a 02:00-03:00 gap becomes
/// 03:30 daylight time; a time in the autumn overlap (which happened twice) is the earlier
/// instant, still in daylight time.
#[derive(Debug, Clone, PartialEq)]
pub enum Coercion {
    Epoch {
        unit: EpochUnit,
    },
    LocalTimestamp {
        tz: chrono_tz::Tz,
    },
    Date {
        formats: Vec<String>,
        tz: chrono_tz::Tz,
        pivot: u8,
    },
}

/// The unit of an epoch integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    Seconds,
    Milliseconds,
    Microseconds,
}

/// A value that fails its rule: the rule and a category, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoerceError {
    pub rule: &'static str,
    pub category: &'static str,
}

/// The default century pivot for `%y`.
pub const DEFAULT_CENTURY_PIVOT: u8 = 69;

impl Coercion {
    /// The rule's name, as violations report it.
    pub fn rule(&self) -> &'static str {
        match self {
            Coercion::Epoch {
                unit: EpochUnit::Seconds,
            } => "epoch_seconds",
            Coercion::Epoch {
                unit: EpochUnit::Milliseconds,
            } => "epoch_milliseconds",
            Coercion::Epoch {
                unit: EpochUnit::Microseconds,
            } => "epoch_microseconds",
            Coercion::LocalTimestamp { .. } => "timezone",
            Coercion::Date { .. } => "date",
        }
    }

    /// The rule, as the proto types it.
    pub fn rule_type(&self) -> crate::pb::Rule {
        use crate::pb::Rule;
        match self {
            Coercion::Epoch {
                unit: EpochUnit::Seconds,
            } => Rule::EpochSeconds,
            Coercion::Epoch {
                unit: EpochUnit::Milliseconds,
            } => Rule::EpochMilliseconds,
            Coercion::Epoch {
                unit: EpochUnit::Microseconds,
            } => Rule::EpochMicroseconds,
            Coercion::LocalTimestamp { .. } => Rule::Timezone,
            Coercion::Date { .. } => Rule::Date,
        }
    }

    /// Applies the rule to one non-null cell, decoded first with `decoder`.
    pub fn apply(&self, decoder: Decoder, raw: &[u8]) -> Result<Kind, CoerceError> {
        let fail = |category| CoerceError {
            rule: self.rule(),
            category,
        };
        match self {
            Coercion::Epoch { unit } => {
                let n: i64 = match decoder.decode(Some(raw)) {
                    Ok(Value {
                        kind: Some(Kind::Int64Value(n)),
                    }) => n,
                    _ => return Err(fail("not_an_integer")),
                };
                epoch_timestamp(n, *unit)
                    .map(Kind::TimestampValue)
                    .ok_or(fail("epoch_out_of_range"))
            }
            Coercion::LocalTimestamp { tz } => {
                if raw.len() != 8 {
                    return Err(fail("not_a_timestamp"));
                }
                let micros = i64::from_be_bytes(raw.try_into().unwrap_or_default());
                if micros == i64::MAX || micros == i64::MIN {
                    return decoder
                        .decode(Some(raw))
                        .map(|v| v.kind.unwrap_or(Kind::NullValue(0)))
                        .map_err(|_| fail("not_a_timestamp"));
                }
                // PostgreSQL allows years up to 294276, whose microseconds since 1970 do not
                // fit in an i64: checked, never wrapped.
                let naive = micros
                    .checked_add(PG_EPOCH_UNIX_SECS * 1_000_000)
                    .and_then(chrono::DateTime::from_timestamp_micros)
                    .ok_or(fail("timestamp_out_of_range"))?
                    .naive_utc();
                Ok(timestamp_kind(local_to_utc(naive, *tz)))
            }
            Coercion::Date { formats, tz, pivot } => {
                let text = std::str::from_utf8(raw)
                    .map_err(|_| fail("invalid_utf8"))?
                    .trim();
                let naive =
                    parse_legacy_date(text, formats, *pivot).ok_or(fail("unparseable_date"))?;
                Ok(timestamp_kind(local_to_utc(naive, *tz)))
            }
        }
    }
}

impl Coercion {
    /// Applies the rule to one non-null value a store already decoded (MySQL's and MariaDB's
    /// values arrive typed): an integer for the epoch rules, a date and time without a zone
    /// (decoded as if UTC) for the time zone rule, text for the date rule.
    pub fn apply_decoded(&self, value: &Kind) -> Result<Kind, CoerceError> {
        let fail = |category| CoerceError {
            rule: self.rule(),
            category,
        };
        match (self, value) {
            (Coercion::Epoch { unit }, Kind::Int64Value(n)) => epoch_timestamp(*n, *unit)
                .map(Kind::TimestampValue)
                .ok_or(fail("epoch_out_of_range")),
            (Coercion::Epoch { .. }, _) => Err(fail("not_an_integer")),
            (Coercion::LocalTimestamp { tz }, Kind::TimestampValue(t)) => {
                let naive = chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    .ok_or(fail("timestamp_out_of_range"))?
                    .naive_utc();
                Ok(timestamp_kind(local_to_utc(naive, *tz)))
            }
            (Coercion::LocalTimestamp { .. }, _) => Err(fail("not_a_timestamp")),
            (Coercion::Date { formats, tz, pivot }, Kind::StringValue(text)) => {
                let naive = parse_legacy_date(text.trim(), formats, *pivot)
                    .ok_or(fail("unparseable_date"))?;
                Ok(timestamp_kind(local_to_utc(naive, *tz)))
            }
            (Coercion::Date { .. }, _) => Err(fail("unparseable_date")),
        }
    }
}

/// Epoch integer to timestamp, or `None` outside years 1-9999.
pub fn epoch_timestamp(n: i64, unit: EpochUnit) -> Option<Timestamp> {
    let per_second: i64 = match unit {
        EpochUnit::Seconds => 1,
        EpochUnit::Milliseconds => 1_000,
        EpochUnit::Microseconds => 1_000_000,
    };
    let seconds = n.div_euclid(per_second);
    let nanos = n.rem_euclid(per_second) * (1_000_000_000 / per_second);
    (MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS)
        .contains(&seconds)
        .then_some(Timestamp {
            seconds,
            nanos: nanos as i32,
        })
}

/// Interprets a wall-clock time in `tz` (see [`Coercion`] for the DST choices).
pub fn local_to_utc(naive: chrono::NaiveDateTime, tz: chrono_tz::Tz) -> Timestamp {
    use chrono::{Offset, TimeZone};
    let utc = match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.naive_utc(),
        chrono::LocalResult::Ambiguous(earlier, _) => earlier.naive_utc(),
        chrono::LocalResult::None => {
            // In a gap: use the offset in force just before it. Gaps are at most a few hours.
            let offset = naive
                .checked_sub_signed(chrono::Duration::hours(6))
                .and_then(|before| tz.offset_from_local_datetime(&before).earliest())
                .map(|o| o.fix());
            offset
                .and_then(|offset| {
                    naive.checked_sub_signed(chrono::Duration::seconds(i64::from(
                        offset.local_minus_utc(),
                    )))
                })
                .unwrap_or(naive)
        }
    };
    let utc = utc.and_utc();
    Timestamp {
        seconds: utc.timestamp(),
        nanos: utc.timestamp_subsec_nanos() as i32,
    }
}

/// Parses legacy date text with the formats in order. Two-digit years follow `pivot`.
pub fn parse_legacy_date(
    text: &str,
    formats: &[String],
    pivot: u8,
) -> Option<chrono::NaiveDateTime> {
    use chrono::Datelike;
    if text.is_empty() {
        return None;
    }
    formats.iter().find_map(|format| {
        let parsed = chrono::NaiveDateTime::parse_from_str(text, format)
            .ok()
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(text, format)
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })?;
        if format.contains("%y") {
            let yy = parsed.year().rem_euclid(100);
            let year = if yy < i32::from(pivot) {
                2000 + yy
            } else {
                1900 + yy
            };
            parsed.with_year(year)
        } else {
            Some(parsed)
        }
    })
}

/// Checks that a date format is well-formed and names at least a year, a month and a day.
pub fn check_date_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err("not a valid strftime format".into());
    }
    let has = |spec: &[&str]| spec.iter().any(|s| format.contains(s));
    if !(has(&["%Y", "%y", "%G", "%F", "%D", "%x"])
        && has(&["%m", "%b", "%B", "%h", "%F", "%D", "%x"])
        && has(&["%d", "%e", "%F", "%D", "%x"]))
    {
        return Err("a date format needs a year, a month and a day".into());
    }
    Ok(())
}

#[cfg(test)]
mod coercion_tests {
    use super::*;
    use chrono_tz::Tz;

    fn ts(text: &str) -> Timestamp {
        let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
        Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }
    }

    fn naive(text: &str) -> chrono::NaiveDateTime {
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn epochs_in_each_unit() {
        assert_eq!(
            epoch_timestamp(0, EpochUnit::Seconds),
            Some(ts("1970-01-01T00:00:00Z"))
        );
        assert_eq!(
            epoch_timestamp(1_262_304_000, EpochUnit::Seconds),
            Some(ts("2010-01-01T00:00:00Z"))
        );
        assert_eq!(
            epoch_timestamp(1_262_304_000_123, EpochUnit::Milliseconds),
            Some(ts("2010-01-01T00:00:00.123Z"))
        );
        assert_eq!(
            epoch_timestamp(1_262_304_000_000_001, EpochUnit::Microseconds),
            Some(ts("2010-01-01T00:00:00.000001Z"))
        );
        // Negative epochs are before 1970, with non-negative nanos.
        assert_eq!(
            epoch_timestamp(-1, EpochUnit::Seconds),
            Some(ts("1969-12-31T23:59:59Z"))
        );
        assert_eq!(
            epoch_timestamp(-1, EpochUnit::Milliseconds),
            Some(ts("1969-12-31T23:59:59.999Z"))
        );
        assert_eq!(epoch_timestamp(i64::MAX, EpochUnit::Seconds), None);
        assert_eq!(epoch_timestamp(i64::MIN, EpochUnit::Milliseconds), None);
    }

    #[test]
    fn epoch_rule_accepts_each_integer_width() {
        let rule = Coercion::Epoch {
            unit: EpochUnit::Seconds,
        };
        assert_eq!(
            rule.apply(Decoder::Int4, &0i32.to_be_bytes()),
            Ok(Kind::TimestampValue(ts("1970-01-01T00:00:00Z")))
        );
        assert_eq!(
            rule.apply(Decoder::Int8, &86_400i64.to_be_bytes()),
            Ok(Kind::TimestampValue(ts("1970-01-02T00:00:00Z")))
        );
        assert_eq!(
            rule.apply(Decoder::Int8, &i64::MAX.to_be_bytes()),
            Err(CoerceError {
                rule: "epoch_seconds",
                category: "epoch_out_of_range"
            })
        );
    }

    #[test]
    fn legacy_dates_try_formats_in_order() {
        let formats: Vec<String> = ["%d/%m/%Y", "%Y%m%d", "%m-%d-%y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = |t: &str| parse_legacy_date(t, &formats, DEFAULT_CENTURY_PIVOT);
        assert_eq!(p("14/03/2009"), Some(naive("2009-03-14 00:00:00")));
        assert_eq!(p("20090314"), Some(naive("2009-03-14 00:00:00")));
        assert_eq!(p("03-14-09"), Some(naive("2009-03-14 00:00:00")));
        assert_eq!(
            p("29/02/2024"),
            Some(naive("2024-02-29 00:00:00")),
            "a leap day"
        );
        assert_eq!(p("29/02/2023"), None, "not a leap year");
        assert_eq!(p("31/04/2020"), None);
        assert_eq!(p("yesterday"), None);
        assert_eq!(p(""), None);
        // The pivot: 68 -> 2068, 69 -> 1969 by default; a pivot of 30 sends 45 to 1945.
        assert_eq!(p("01-01-68"), Some(naive("2068-01-01 00:00:00")));
        assert_eq!(p("01-01-69"), Some(naive("1969-01-01 00:00:00")));
        assert_eq!(
            parse_legacy_date("01-01-45", &formats, 30),
            Some(naive("1945-01-01 00:00:00"))
        );
        assert_eq!(
            parse_legacy_date("01-01-29", &formats, 30),
            Some(naive("2029-01-01 00:00:00"))
        );
    }

    #[test]
    fn local_times_become_utc_with_documented_dst_choices() {
        let london: Tz = "Europe/London".parse().unwrap();
        assert_eq!(
            local_to_utc(naive("2024-01-15 12:00:00"), london),
            ts("2024-01-15T12:00:00Z")
        );
        assert_eq!(
            local_to_utc(naive("2024-07-15 12:00:00"), london),
            ts("2024-07-15T11:00:00Z")
        );
        // Gap: 2024-03-31 01:30 never happened in London; read with GMT, the offset before.
        assert_eq!(
            local_to_utc(naive("2024-03-31 01:30:00"), london),
            ts("2024-03-31T01:30:00Z")
        );
        // Overlap: 2024-10-27 01:30 happened twice; the earlier one is BST.
        assert_eq!(
            local_to_utc(naive("2024-10-27 01:30:00"), london),
            ts("2024-10-27T00:30:00Z")
        );
        let new_york: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            local_to_utc(naive("2024-03-10 02:30:00"), new_york),
            ts("2024-03-10T07:30:00Z")
        );
        assert_eq!(
            local_to_utc(naive("2024-11-03 01:30:00"), new_york),
            ts("2024-11-03T05:30:00Z")
        );
    }

    #[test]
    fn timestamp_without_time_zone_is_read_in_the_declared_zone() {
        let rule = Coercion::LocalTimestamp {
            tz: "Europe/Paris".parse().unwrap(),
        };
        // 2000-01-01 00:00:00 local Paris = 1999-12-31 23:00 UTC.
        assert_eq!(
            rule.apply(Decoder::Timestamp, &0i64.to_be_bytes()),
            Ok(Kind::TimestampValue(ts("1999-12-31T23:00:00Z")))
        );
    }

    #[test]
    fn date_rule_reports_unparseable_text_without_the_value() {
        let rule = Coercion::Date {
            formats: vec!["%d/%m/%Y".into()],
            tz: Tz::UTC,
            pivot: DEFAULT_CENTURY_PIVOT,
        };
        assert_eq!(
            rule.apply(Decoder::Text, b"14/03/2009"),
            Ok(Kind::TimestampValue(ts("2009-03-14T00:00:00Z")))
        );
        let err = rule.apply(Decoder::Text, b"2009-13-45").unwrap_err();
        assert_eq!(
            err,
            CoerceError {
                rule: "date",
                category: "unparseable_date"
            }
        );
    }

    #[test]
    fn date_formats_are_checked() {
        assert!(check_date_format("%d/%m/%Y").is_ok());
        assert!(check_date_format("%Y%m%d").is_ok());
        assert!(check_date_format("%H:%M").is_err());
        assert!(check_date_format("%Q").is_err());
    }
}

#[cfg(test)]
mod coercion_extremes {
    use super::*;

    /// PostgreSQL's largest timestamp, 294276-12-31 23:59:59.999999, in microseconds since
    /// 2000-01-01: its microseconds since 1970 do not fit in an i64.
    const PG_MAX_TIMESTAMP_MICROS: i64 = 9_223_371_331_199_999_999;

    #[test]
    fn the_timezone_rule_reports_the_far_future_instead_of_wrapping() {
        let rule = Coercion::LocalTimestamp {
            tz: chrono_tz::Tz::Europe__Berlin,
        };
        let error = rule
            .apply(Decoder::Timestamp, &PG_MAX_TIMESTAMP_MICROS.to_be_bytes())
            .unwrap_err();
        assert_eq!(
            (error.rule, error.category),
            ("timezone", "timestamp_out_of_range")
        );
        assert_eq!(
            rule.apply(Decoder::Timestamp, &i64::MAX.to_be_bytes()),
            Ok(Kind::TimestampText("infinity".into()))
        );
    }
}

#[cfg(test)]
mod coercion_proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in ".{0,40}") {
            let formats = vec!["%d/%m/%Y".to_owned(), "%Y%m%d".to_owned(), "%m-%d-%y".to_owned()];
            let _ = parse_legacy_date(&text, &formats, DEFAULT_CENTURY_PIVOT);
        }

        #[test]
        fn formatted_dates_parse_back(y in 1i32..9999, m in 1u32..=12, d in 1u32..=28) {
            let date = chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let text = date.format("%d/%m/%Y").to_string();
            let parsed = parse_legacy_date(&text, &["%d/%m/%Y".to_owned()], DEFAULT_CENTURY_PIVOT);
            prop_assert_eq!(parsed, date.and_hms_opt(0, 0, 0));
        }

        #[test]
        fn epochs_round_trip(s in MIN_TIMESTAMP_SECS..MAX_TIMESTAMP_SECS) {
            let t = epoch_timestamp(s, EpochUnit::Seconds).unwrap();
            prop_assert_eq!(t.seconds, s);
            prop_assert_eq!(t.nanos, 0);
        }

        /// Every 64-bit value a timestamp column can send, PostgreSQL's extremes (4713 BC,
        /// 294276 AD, infinities) and beyond: a local-time rule never panics or wraps, and
        /// a Timestamp it gives is one protobuf allows; anything else is text or a
        /// violation with the rule's name.
        #[test]
        fn the_timezone_rule_holds_at_any_64_bit_timestamp(micros in any::<i64>()) {
            for tz in [chrono_tz::Tz::UTC, chrono_tz::Tz::Pacific__Kiritimati, chrono_tz::Tz::America__St_Johns] {
                match (Coercion::LocalTimestamp { tz }).apply(Decoder::Timestamp, &micros.to_be_bytes()) {
                    Ok(Kind::TimestampValue(t)) => {
                        prop_assert!((MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&t.seconds));
                        prop_assert!((0..1_000_000_000).contains(&t.nanos));
                    }
                    Ok(Kind::TimestampText(_)) => {}
                    Ok(other) => prop_assert!(false, "{other:?}"),
                    Err(e) => {
                        prop_assert_eq!(e.rule, "timezone");
                        prop_assert_eq!(e.category, "timestamp_out_of_range");
                    }
                }
            }
        }

        /// Any 64-bit integer under any epoch unit: a valid Timestamp or `epoch_out_of_range`.
        #[test]
        fn epoch_rules_hold_at_any_64_bit_integer(n in any::<i64>()) {
            for unit in [EpochUnit::Seconds, EpochUnit::Milliseconds, EpochUnit::Microseconds] {
                if let Some(t) = epoch_timestamp(n, unit) {
                    prop_assert!((MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&t.seconds));
                    prop_assert!((0..1_000_000_000).contains(&t.nanos));
                }
            }
        }

        #[test]
        fn local_to_utc_never_panics(secs in -2_000_000_000i64..4_000_000_000i64) {
            let naive = chrono::DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
            for tz in [chrono_tz::Tz::Europe__London, chrono_tz::Tz::America__New_York, chrono_tz::Tz::Australia__Lord_Howe] {
                let _ = local_to_utc(naive, tz);
            }
        }
    }
}
