//! The MariaDB store against a real MariaDB started by the test (Debian's `mariadb-server`):
//! the demo shop's rows stream from it as they do from PostgreSQL, value by value; a snapshot
//! is one moment; a statement is stopped by `KILL QUERY` or by the deadline and leaves nothing
//! running; every type decodes exactly; a killed server is a lost connection.
//!
//! The queries here are written by hand for the store alone; `tests/stores/` runs the
//! service on both stores.

mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use dsr_connector::demo::mariadb::{TempMariaDb, USER};
use dsr_connector::pb::{self, value::Kind};
use dsr_connector::store::error::{DbError, QueryFailure};
use dsr_connector::store::mysql::{
    MyDecoder, MySqlPool, MySqlSettings, RowError, Tls, ZERO_DATE_RULE, table_info,
};
use support::{TestServer, extract};
use tokio::time::Instant;

const ALICE: &str = "alice@example.com";

/// The MariaDB of this test binary, with the demo shop in databases `shop`, `snapshot`,
/// `ended` and `types` (the last with a table of every type). Every schema change happens here, before
/// any test reads a catalog: MariaDB's `information_schema` may fail (error 6) while another
/// session drops a database.
fn mariadb() -> &'static TempMariaDb {
    static SERVER: OnceLock<TempMariaDb> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server =
            TempMariaDb::start().unwrap_or_else(|e| panic!("cannot start the test MariaDB: {e}"));
        for database in ["shop", "snapshot", "ended", "types"] {
            server
                .load_demo(database)
                .unwrap_or_else(|e| panic!("cannot load the demo shop: {e}"));
        }
        server
            .execute("types", TYPED_TABLE)
            .unwrap_or_else(|e| panic!("cannot create the typed table: {e}"));
        server
    })
}

/// A table of every type, and two rows: one of extremes, one of zeros (a zero date among them).
const TYPED_TABLE: &str = "SET SESSION sql_mode = ''; \
     CREATE TABLE typed (id INT PRIMARY KEY, email VARCHAR(64), \
       tiny TINYINT, small SMALLINT UNSIGNED, medium MEDIUMINT, big BIGINT, \
       ubig BIGINT UNSIGNED, flag BOOLEAN, dec_value DECIMAL(20, 6), \
       f FLOAT, d DOUBLE, day DATE, moment DATETIME(6), stamp TIMESTAMP(6) NULL, \
       span TIME(3), yr YEAR, word CHAR(4), txt TEXT, bin BINARY(3), blb BLOB, \
       kind ENUM('a', 'b'), tags SET('x', 'y', 'z'), bits BIT(10), doc JSON, \
       missing VARCHAR(8)) DEFAULT CHARSET = utf8mb4; \
     INSERT INTO typed VALUES (1, 'alice@example.com', -128, 65535, -8388608, \
       -9223372036854775808, 18446744073709551615, TRUE, -12345678901234.567890, \
       1.5, 2.25, '2024-02-29', '1999-12-31 23:59:59.999999', \
       '2038-01-19 03:14:07.123456', '-838:59:59.000', 2155, 'ab', \
       'Zoë 🦀 こんにちは', X'000102', X'DEADBEEF', 'b', 'x,z', b'1000000001', \
       '{\"a\": [1, 2.5, \"x\"]}', NULL), \
       (2, 'alice@example.com', 0, 0, 0, 0, 0, FALSE, 0, 0, 0, '0000-00-00', \
       '2020-01-01 00:00:00', NULL, '00:00:00', 0, '', '', X'000000', X'', 'a', '', \
       b'0', '{}', NULL);";

fn settings(server: &TempMariaDb, database: &str) -> MySqlSettings {
    MySqlSettings {
        name: "shop".into(),
        host: server.host().into(),
        port: server.port(),
        user: USER.into(),
        password: server.password().to_owned().into(),
        database: database.into(),
        max_connections: 4,
        connect_timeout: Duration::from_secs(5),
        tls: Tls::Disabled,
    }
}

fn pool() -> MySqlPool {
    MySqlPool::new(&settings(mariadb(), "shop"))
}

/// Alice's rows of each demo table, as the store streams them, by table and `id`.
async fn alice_from_mariadb(
    pool: &MySqlPool,
) -> BTreeMap<String, BTreeMap<i64, Vec<(String, pb::Value)>>> {
    let queries = [
        ("customers", "SELECT * FROM customers WHERE email = ?"),
        (
            "orders",
            "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email = ?)",
        ),
        (
            "order_items",
            "SELECT * FROM order_items WHERE order_id IN (SELECT o.id FROM orders o \
             WHERE o.customer_id IN (SELECT id FROM customers WHERE email = ?))",
        ),
        (
            "events",
            "SELECT * FROM events WHERE customer_id IN (SELECT id FROM customers WHERE email = ?)",
        ),
        (
            "support_tickets",
            "SELECT * FROM support_tickets WHERE requester_email = ?",
        ),
        (
            "legacy_accounts",
            "SELECT * FROM legacy_accounts WHERE email = ?",
        ),
    ];
    let mut snapshot = pool.snapshot(None).await.unwrap();
    let mut all = BTreeMap::new();
    for (table, sql) in queries {
        let info = table_info(pool, table).await.unwrap();
        let decoders: Vec<MyDecoder> = info.columns.iter().map(|c| c.decoder).collect();
        let names: Vec<String> = info.columns.iter().map(|c| c.name.clone()).collect();
        let mut rows = BTreeMap::new();
        let counted = snapshot
            .count(&sql.replacen("*", "COUNT(*)", 1), ALICE)
            .await
            .unwrap();
        let read = snapshot
            .rows(sql, ALICE, &decoders, async |values| {
                let id = match values[0].kind {
                    Some(Kind::Int64Value(id)) => id,
                    ref other => panic!("an id: {other:?}"),
                };
                rows.insert(id, names.iter().cloned().zip(values).collect());
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            read as i64, counted,
            "{table}: rows and COUNT(*) in one snapshot"
        );
        all.insert(table.to_owned(), rows);
    }
    snapshot.finish().await.unwrap();
    all
}

/// One value in a form both stores share: JSON compared as parsed documents (PostgreSQL's
/// jsonb orders keys its own way), everything else exactly.
fn comparable(value: &pb::Value) -> String {
    match &value.kind {
        Some(Kind::JsonValue(json)) => serde_json::from_str::<serde_json::Value>(json)
            .unwrap()
            .to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn the_demo_shop_streams_the_same_values_from_mariadb_as_from_postgresql() {
    let pool = pool();
    let from_mariadb = alice_from_mariadb(&pool).await;

    // PostgreSQL's side: the service's Extract, without the demo's coercion rules, so that
    // both sides show the values as stored.
    let text = support::config_text("")
        .replace(
            "signup_date = { category = \"account.signup_date\", coerce = \"date\", formats = \
             [\"%d/%m/%Y\", \"%Y%m%d\", \"%m-%d-%y\"], timezone = \"Europe/London\" }",
            "signup_date = \"account.signup_date\"",
        )
        .replace(
            "last_login_epoch = { category = \"account.last_login\", coerce = \"epoch_seconds\" }",
            "last_login_epoch = \"account.last_login\"",
        );
    assert!(
        !text.contains("coerce ="),
        "the demo gained a coercion rule"
    );
    let server = TestServer::start(support::config(&text)).await;
    let mut client = server.client().await;
    let x = extract(&mut client, support::request("email", ALICE)).await;
    assert_eq!(x.code(), tonic::Code::Ok, "{}", x.message());
    let started = x.started.clone().unwrap();
    let mut compared = 0;
    for planned in &started.tables {
        let table = planned.table.as_str();
        let mariadb_rows = &from_mariadb[table];
        let pg_rows = x.rows(table);
        assert_eq!(pg_rows.len(), mariadb_rows.len(), "{table}: row counts");
        for row in pg_rows {
            let id = match row[0].kind {
                Some(Kind::Int64Value(id)) => id,
                ref other => panic!("an id: {other:?}"),
            };
            let theirs: BTreeMap<&str, &pb::Value> = mariadb_rows[&id]
                .iter()
                .map(|(name, value)| (name.as_str(), value))
                .collect();
            for (column, value) in planned.columns.iter().zip(row) {
                let other = theirs
                    .get(column.name.as_str())
                    .unwrap_or_else(|| panic!("{table}.{} is not in MariaDB", column.name));
                assert_eq!(
                    comparable(value),
                    comparable(other),
                    "{table} id {id}, column {}",
                    column.name
                );
                compared += 1;
            }
        }
    }
    println!("{compared} values of alice's rows are the same from both stores");
    // 19 rows over six tables: 8 + 3 * 6 + 5 * 5 + 4 * 6 + 2 * 6 + 4 * 6 values.
    assert_eq!(compared, 111);
    server.stop().await.unwrap();
    pool.disconnect().await;
}

#[tokio::test]
async fn a_snapshot_is_one_moment_for_its_rows_and_its_counts() {
    let server = mariadb();
    let pool = MySqlPool::new(&settings(server, "snapshot"));
    let sql = "SELECT id, total FROM orders WHERE customer_id = \
               (SELECT id FROM customers WHERE email = ?)";
    let count_sql = "SELECT COUNT(*) FROM orders WHERE customer_id = \
                     (SELECT id FROM customers WHERE email = ?)";
    let mut snapshot = pool.snapshot(None).await.unwrap();
    assert_eq!(snapshot.count(count_sql, ALICE).await.unwrap(), 3);
    // Another session commits a fourth order for alice while the snapshot is open.
    server
        .execute(
            "snapshot",
            "INSERT INTO orders VALUES (104, 1, NOW(), 'new', 1.00, NULL);",
        )
        .unwrap();
    let decoders = [MyDecoder::Int, MyDecoder::Decimal];
    let mut ids = Vec::new();
    snapshot
        .rows(sql, ALICE, &decoders, async |values| {
            ids.push(values[0].kind.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(ids.len(), 3, "the snapshot does not see the later order");
    assert_eq!(snapshot.count(count_sql, ALICE).await.unwrap(), 3);
    snapshot.finish().await.unwrap();
    let mut later = pool.snapshot(None).await.unwrap();
    assert_eq!(later.count(count_sql, ALICE).await.unwrap(), 4);
    later.finish().await.unwrap();
    pool.disconnect().await;
}

#[tokio::test]
async fn kill_query_and_the_deadline_stop_a_statement_and_leave_nothing_running() {
    let pool = pool();
    let slow = "SELECT SLEEP(30) FROM customers WHERE email = ?";
    let mut snapshot = pool.snapshot(None).await.unwrap();
    let id = snapshot.connection_id();
    let reading = async {
        snapshot
            .rows(slow, ALICE, &[MyDecoder::Int], async |_| Ok(()))
            .await
    };
    let killing = async {
        // Wait until the statement runs, then stop it from another connection.
        for _ in 0..100 {
            let running = pool.running_statements().await.unwrap();
            if running
                .iter()
                .any(|(running, q)| *running == id && q.contains("SLEEP"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pool.kill_query(id).await.unwrap();
    };
    let began = Instant::now();
    let (read, ()) = tokio::join!(reading, killing);
    match read {
        Err(RowError::Db(DbError::Query { failure, code, .. })) => {
            assert_eq!(failure, QueryFailure::Cancelled, "{code}");
        }
        other => panic!("a cancelled statement: {other:?}"),
    }
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "it stopped early"
    );
    // Nothing of it runs on the server, while its connection is still open. The error
    // reaches the client a moment before the server's thread leaves the statement, so the
    // processlist is read until it shows the thread idle (at most 5 s) ...
    let mut gone = false;
    for _ in 0..100 {
        let running = pool.running_statements().await.unwrap();
        if !running.iter().any(|(running, _)| *running == id) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the killed statement is gone from the processlist");
    // ... and the connection stays usable.
    assert_eq!(
        snapshot
            .count("SELECT COUNT(*) FROM customers WHERE email = ?", ALICE)
            .await
            .unwrap(),
        1
    );
    snapshot.finish().await.unwrap();

    // The deadline: every statement of the snapshot is limited to the time left.
    let mut snapshot = pool
        .snapshot(Some(Instant::now() + Duration::from_secs(1)))
        .await
        .unwrap();
    let read = snapshot
        .rows(slow, ALICE, &[MyDecoder::Int], async |_| Ok(()))
        .await;
    match read {
        Err(RowError::Db(DbError::Query {
            failure, message, ..
        })) => {
            assert_eq!(failure, QueryFailure::Cancelled, "{message}");
            assert!(
                message.contains("1969"),
                "MariaDB's statement timeout: {message}"
            );
        }
        other => panic!("a statement past its deadline: {other:?}"),
    }
    drop(snapshot);
    pool.disconnect().await;
}

#[tokio::test]
async fn every_type_decodes_exactly_and_a_zero_date_is_a_rule_violation() {
    let server = mariadb();
    let pool = MySqlPool::new(&settings(server, "types"));
    let info = table_info(&pool, "typed").await.unwrap();
    assert_eq!(info.primary_key, ["id"]);
    let decoders: Vec<MyDecoder> = info.columns.iter().map(|c| c.decoder).collect();
    let mut snapshot = pool.snapshot(None).await.unwrap();
    let mut rows = Vec::new();
    let read = snapshot
        .rows(
            "SELECT * FROM typed WHERE email = ? AND id = 1",
            ALICE,
            &decoders,
            async |values| {
                rows.push(values);
                Ok(())
            },
        )
        .await
        .unwrap();
    assert_eq!(read, 1);
    let got: Vec<Option<Kind>> = rows[0].iter().map(|v| v.kind.clone()).collect();
    let ts =
        |seconds: i64, nanos: i32| Kind::TimestampValue(prost_types::Timestamp { seconds, nanos });
    let expected = vec![
        Some(Kind::Int64Value(1)),
        Some(Kind::StringValue(ALICE.into())),
        Some(Kind::Int64Value(-128)),
        Some(Kind::Int64Value(65535)),
        Some(Kind::Int64Value(-8_388_608)),
        Some(Kind::Int64Value(i64::MIN)),
        Some(Kind::DecimalValue("18446744073709551615".into())),
        Some(Kind::BoolValue(true)),
        Some(Kind::DecimalValue("-12345678901234.567890".into())),
        Some(Kind::DoubleValue(1.5)),
        Some(Kind::DoubleValue(2.25)),
        Some(Kind::DateValue("2024-02-29".into())),
        Some(ts(946_684_799, 999_999_000)),
        Some(ts(2_147_483_647, 123_456_000)),
        // A TIME(3): its three digits, as the server prints it.
        Some(Kind::StringValue("-838:59:59.000".into())),
        Some(Kind::Int64Value(2155)),
        Some(Kind::StringValue("ab".into())),
        Some(Kind::StringValue("Zoë 🦀 こんにちは".into())),
        Some(Kind::BytesValue(vec![0, 1, 2])),
        Some(Kind::BytesValue(vec![0xDE, 0xAD, 0xBE, 0xEF])),
        Some(Kind::StringValue("b".into())),
        Some(Kind::StringValue("x,z".into())),
        Some(Kind::Int64Value(513)),
        Some(Kind::JsonValue("{\"a\": [1, 2.5, \"x\"]}".into())),
        Some(Kind::NullValue(0)),
    ];
    assert_eq!(got, expected);

    // A zero date is not a date: a violation of its rule, naming the column, never a crash.
    let zero = snapshot
        .rows(
            "SELECT * FROM typed WHERE email = ? AND id = 2",
            ALICE,
            &decoders,
            async |_| Ok(()),
        )
        .await;
    match zero {
        Err(RowError::Decode { column, reason }) => {
            assert_eq!(info.columns[column].name, "day");
            assert!(reason.to_string().contains(ZERO_DATE_RULE), "{reason}");
        }
        other => panic!("a zero date: {other:?}"),
    }
    drop(snapshot);
    pool.disconnect().await;
}

#[tokio::test]
async fn the_catalog_names_keys_indexes_and_json() {
    let pool = pool();
    let orders = table_info(&pool, "orders").await.unwrap();
    assert_eq!(orders.primary_key, ["id"]);
    assert!(orders.index_leads.contains(&("customer_id".into(), false)));
    let key = &orders.foreign_keys[0];
    assert_eq!(
        (
            key.columns.as_slice(),
            key.parent.as_str(),
            key.parent_columns.as_slice()
        ),
        (
            ["customer_id".to_owned()].as_slice(),
            "customers",
            ["id".to_owned()].as_slice()
        )
    );
    let customers = table_info(&pool, "customers").await.unwrap();
    assert!(customers.index_leads.contains(&("email".into(), true)));
    let events = table_info(&pool, "events").await.unwrap();
    let payload = events.columns.iter().find(|c| c.name == "payload").unwrap();
    assert!(
        payload.json_checked && payload.decoder == MyDecoder::Json,
        "{payload:?}"
    );
    assert!(
        table_info(&pool, "no_such_table")
            .await
            .unwrap()
            .columns
            .is_empty()
    );
    pool.disconnect().await;
}

#[tokio::test]
async fn a_server_killed_mid_stream_is_a_lost_connection() {
    let mut server = TempMariaDb::start().unwrap();
    server.load_demo("shop").unwrap();
    let pool = MySqlPool::new(&settings(&server, "shop"));
    let mut snapshot = pool.snapshot(None).await.unwrap();
    let mut seen = 0;
    let read = snapshot
        .rows(
            // 10,005 rows of 4 KB: more than the sockets hold, so most are still on the
            // server when it dies.
            "SELECT id, REPEAT('x', 4000) FROM events WHERE kind = 'page_view' OR customer_id = \
             (SELECT id FROM customers WHERE email = ?)",
            ALICE,
            &[MyDecoder::Int, MyDecoder::Text],
            async |_| {
                seen += 1;
                if seen == 10 {
                    server.kill();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            },
        )
        .await;
    match read {
        Err(RowError::Db(error)) => {
            assert!(error.is_transient(), "{error}");
            assert!(matches!(error, DbError::ConnectionLost { .. }), "{error}");
        }
        other => panic!("a lost connection: {other:?} after {seen} rows"),
    }
    assert!(seen < 10_005, "the stream ended early ({seen} rows)");
    drop(snapshot);
    let again = pool.snapshot(None).await;
    assert!(
        matches!(&again, Err(e) if e.is_transient()),
        "no server: {:?}",
        again.err()
    );
}

/// A snapshot's transaction ends on every path, so that no read view is left open on a
/// pooled connection (it would block InnoDB's purge until the pool's idle timeout closed the
/// connection, since the pool resets nothing): finished, closed after a failure, or dropped
/// on the way out of an error. Read in `INNODB_TRX` (which InnoDB refreshes at most every
/// 100 ms, so each count is read until it settles), from a pool of its own, on a database no
/// other test reads.
#[tokio::test]
async fn a_snapshot_ends_its_transaction_on_every_path() {
    let pool = MySqlPool::new(&settings(mariadb(), "ended"));
    let watch = MySqlPool::new(&settings(mariadb(), "ended"));
    let count = "SELECT COUNT(*) FROM customers WHERE email = ?";
    // The open transactions once they are `expected`, or what they still are after 5 s.
    let open = |expected: u64| {
        let watch = &watch;
        async move {
            let mut now = u64::MAX;
            for _ in 0..100 {
                now = watch.open_transactions().await.unwrap();
                if now == expected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            now
        }
    };

    let mut snapshot = pool.snapshot(None).await.unwrap();
    assert_eq!(snapshot.count(count, ALICE).await.unwrap(), 1);
    assert_eq!(open(1).await, 1, "an open snapshot is seen");
    snapshot.finish().await.unwrap();
    assert_eq!(open(0).await, 0, "finished");

    let mut snapshot = pool.snapshot(None).await.unwrap();
    snapshot.count(count, ALICE).await.unwrap();
    assert_eq!(open(1).await, 1);
    snapshot.close().await;
    assert_eq!(open(0).await, 0, "closed");

    // Dropped without either, as a `?` on the way out of an error leaves it: ended by a task
    // of its own.
    let mut snapshot = pool.snapshot(None).await.unwrap();
    snapshot.count(count, ALICE).await.unwrap();
    assert_eq!(open(1).await, 1);
    drop(snapshot);
    assert_eq!(
        open(0).await,
        0,
        "a dropped snapshot left its transaction open"
    );

    // A statement stopped by the snapshot's deadline, then the snapshot closed, as an
    // extraction past its deadline does.
    let mut snapshot = pool
        .snapshot(Some(Instant::now() + Duration::from_secs(1)))
        .await
        .unwrap();
    let slow = snapshot
        .rows(
            "SELECT SLEEP(30) FROM customers WHERE email = ?",
            ALICE,
            &[MyDecoder::Int],
            async |_| Ok(()),
        )
        .await;
    assert!(slow.is_err());
    snapshot.close().await;
    assert_eq!(open(0).await, 0, "closed after its deadline");

    // The connections go back to the pool and serve the next snapshot.
    let mut snapshot = pool.snapshot(None).await.unwrap();
    assert_eq!(snapshot.count(count, ALICE).await.unwrap(), 1);
    snapshot.finish().await.unwrap();
    watch.disconnect().await;
    pool.disconnect().await;
}

/// The statement run as a snapshot begins (`first`: the counts) failing is the snapshot's
/// error, named, not the next statement's: MariaDB reports it on the connection's next
/// command, which would take it for its own.
#[tokio::test]
async fn a_first_statement_that_fails_is_the_snapshots_error() {
    // Not `ended`, whose open transactions another test counts.
    let pool = MySqlPool::new(&settings(mariadb(), "types"));
    let failed = pool
        .snapshot_with(None, Some("SELECT COUNT(*) FROM no_such_table"))
        .await;
    match failed {
        Err(DbError::Query { message, .. }) => {
            assert!(message.contains("1146"), "{message}")
        }
        Err(other) => panic!("the missing table's error: {other:?}"),
        Ok(_) => panic!("a snapshot whose first statement failed"),
    }
    // The pool's connections serve the next snapshot, with no error left over.
    let mut snapshot = pool.snapshot(None).await.unwrap();
    assert_eq!(
        snapshot
            .count("SELECT COUNT(*) FROM customers WHERE email = ?", ALICE)
            .await
            .unwrap(),
        1
    );
    snapshot.finish().await.unwrap();
    pool.disconnect().await;
}
