//! Values at PostgreSQL's extremes, read from a real server in its binary wire format and
//! decoded as an extraction decodes them: the largest and smallest timestamps and dates,
//! the infinities, and what the local-time rule does with them.

mod support;

use dsr_connector::config::Config;
use dsr_connector::demo;
use dsr_connector::pb::value::Kind;
use dsr_connector::store::postgres::RawCell;
use dsr_connector::values::{Coercion, Decoder};

#[tokio::test]
async fn postgres_extremes_decode_to_values_every_client_can_read() {
    // The cluster starts with the first config.
    let _: Config = support::config(&support::config_text(""));
    let db = demo::connect(support::cluster(), "postgres").await.unwrap();
    let row = db
        .query_one(
            "SELECT '294276-12-31 23:59:59.999999'::timestamp, \
                    '4714-11-24 00:00:00 BC'::timestamp, \
                    'infinity'::timestamptz, '-infinity'::timestamp, \
                    '9999-12-31 23:59:59.999999'::timestamp, \
                    '5874897-12-31'::date, '4714-11-24 BC'::date, 'infinity'::date, \
                    'NaN'::float8, '-Infinity'::float8",
            &[],
        )
        .await
        .unwrap();
    let cell = |i: usize| row.get::<_, RawCell>(i).0;
    let decode = |decoder: Decoder, i: usize| decoder.decode(cell(i)).unwrap().kind.unwrap();
    let text = |s: &str| Kind::TimestampText(s.to_owned());
    assert_eq!(
        decode(Decoder::Timestamp, 0),
        text("+294276-12-31T23:59:59.999999Z")
    );
    assert_eq!(
        decode(Decoder::Timestamp, 1),
        text("-4713-11-24T00:00:00.000000Z")
    );
    assert_eq!(decode(Decoder::Timestamp, 2), text("infinity"));
    assert_eq!(decode(Decoder::Timestamp, 3), text("-infinity"));
    let Kind::TimestampValue(last) = decode(Decoder::Timestamp, 4) else {
        panic!("9999-12-31 is a Timestamp");
    };
    assert_eq!((last.seconds, last.nanos), (253_402_300_799, 999_999_000));
    assert_eq!(
        decode(Decoder::Date, 5),
        Kind::DateValue("+5874897-12-31".into())
    );
    assert_eq!(
        decode(Decoder::Date, 6),
        Kind::DateValue("-4713-11-24".into())
    );
    assert_eq!(decode(Decoder::Date, 7), Kind::DateValue("infinity".into()));
    assert!(matches!(decode(Decoder::Float8, 8), Kind::DoubleValue(d) if d.is_nan()));
    assert_eq!(
        decode(Decoder::Float8, 9),
        Kind::DoubleValue(f64::NEG_INFINITY)
    );

    // The local-time rule: the far future is a named violation, never a wrapped date (this
    // overflowed before), and infinity stays infinity.
    let rule = Coercion::LocalTimestamp {
        tz: chrono_tz::Tz::Europe__Berlin,
    };
    let far = rule
        .apply(Decoder::Timestamp, cell(0).unwrap())
        .unwrap_err();
    assert_eq!(
        (far.rule, far.category),
        ("timezone", "timestamp_out_of_range")
    );
    let ancient = rule.apply(Decoder::Timestamp, cell(1).unwrap()).unwrap();
    assert!(
        matches!(&ancient, Kind::TimestampText(t) if t.starts_with("-4713-11-23T")),
        "{ancient:?}"
    );
    assert_eq!(
        rule.apply(Decoder::Timestamp, cell(2).unwrap()).unwrap(),
        text("infinity")
    );
}
