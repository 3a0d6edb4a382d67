//! The service on both kinds of store: the demo shop served from PostgreSQL (source `demo`)
//! and from a real MariaDB (source `mariadb`, `kind = "mysql"`) by one server. What does not
//! depend on the store is asserted on both, with the same assertions: the same subject gives
//! the same stream, value by value; bad identities are refused alike; Validate reads each
//! store's catalog. What is the store's own is tested on MariaDB here (PostgreSQL's has its
//! own suites): its plans read through indexes, its zero dates are rejected by name, and a
//! MariaDB killed mid-stream is UNAVAILABLE and opens the breaker, which closes once it is
//! back. A deadline and a client that leaves are tested on both stores from one body in
//! cancel.rs, and a value above one message in hostile.rs.

mod connections;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use dsr_connector::config::Config;
use dsr_connector::demo::{self, mariadb::TempMariaDb};
use dsr_connector::pb::{self, ValidateRequest, value::Kind};
use dsr_connector::store::mysql::MySqlPool;
use support::{SUBJECT_KEY, TestServer, extract, request, validate};
use tonic::Code;

const ALICE: &str = "alice@example.com";

/// The databases of this binary's MariaDB (see `support::mariadb::server`).
fn mariadb() -> &'static TempMariaDb {
    support::mariadb::server(&[
        ("shop", ""),
        ("drift", DRIFT),
        ("hostile", HOSTILE),
        ("indexed", INDEXED),
    ])
}

/// A column nobody mapped.
const DRIFT: &str = "ALTER TABLE customers ADD COLUMN nickname VARCHAR(32);";

/// A zero date in carol's birth date (a value above one message is tested on both stores in
/// hostile.rs).
const HOSTILE: &str = "SET SESSION sql_mode = ''; \
     UPDATE customers SET birth_date = '0000-00-00' WHERE email = 'carol@example.org';";

/// Enough customers, orders and items that reading a table whole costs more than its
/// indexes, so that EXPLAIN shows what the optimizer would really do.
const INDEXED: &str = "INSERT INTO customers (id, email, full_name, created_at) \
       SELECT 1000000 + seq, CONCAT('c', seq, '@example.net'), 'n', NOW() FROM seq_1_to_5000; \
     INSERT INTO orders (id, customer_id, placed_at, status, total) \
       SELECT 2000000 + seq, 1000001 + seq % 5000, NOW(), 'paid', 1 FROM seq_1_to_20000; \
     INSERT INTO order_items (id, order_id, sku, quantity, unit_price) \
       SELECT 3000000 + seq, 2000001 + seq % 20000, 'sku', 1, 1 FROM seq_1_to_40000; \
     INSERT INTO support_tickets (id, requester_email, subject, body, opened_at, tags) \
       SELECT 4000000 + seq, CONCAT('c', seq, '@example.net'), 's', 'b', NOW(), '[]' \
       FROM seq_1_to_5000; \
     INSERT INTO legacy_accounts (id, email, legacy_ref) \
       SELECT 5000000 + seq, CONCAT('c', seq, '@example.net'), UUID() FROM seq_1_to_5000; \
     ANALYZE TABLE customers, orders, order_items, events, support_tickets, legacy_accounts;";

/// The demo config: PostgreSQL's `demo`, and the same shop in MariaDB's `database` as source
/// `mariadb`, with `extra` appended.
fn config_text(database: &str, extra: &str) -> String {
    support::mariadb::config_text(mariadb(), database, extra)
}

/// Parses config text with both stores' passwords.
fn config(text: &str) -> Config {
    support::mariadb::config(mariadb(), text)
}

/// Parses config text with PostgreSQL's password and this MariaDB password.
fn config_with(text: &str, mariadb_password: &str) -> Config {
    support::mariadb::config_with(text, mariadb_password)
}

fn on(source: &str, kind: &str, value: &str) -> pb::ExtractRequest {
    pb::ExtractRequest {
        source: source.into(),
        ..request(kind, value)
    }
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

/// An extraction's rows by table and `id`, each a list of (column, comparable value).
fn rows_by_id(x: &support::Extraction) -> BTreeMap<String, BTreeMap<i64, Vec<(String, String)>>> {
    let started = x.started.as_ref().expect("a started event");
    started
        .tables
        .iter()
        .map(|planned| {
            let rows = x
                .rows(&planned.table)
                .into_iter()
                .map(|row| {
                    let id = match row[0].kind {
                        Some(Kind::Int64Value(id)) => id,
                        ref other => panic!("an id: {other:?}"),
                    };
                    let values = planned
                        .columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| (c.name.clone(), comparable(v)))
                        .collect();
                    (id, values)
                })
                .collect();
            (planned.table.clone(), rows)
        })
        .collect()
}

/// The parts of a stream that must not depend on the store.
fn shape(x: &support::Extraction) -> Vec<String> {
    let started = x.started.as_ref().expect("a started event");
    let mut shape: Vec<String> = started
        .tables
        .iter()
        .map(|t| {
            let columns: Vec<String> = t
                .columns
                .iter()
                .map(|c| format!("{}:{:?}:{}", c.name, c.kind(), c.category))
                .collect();
            format!("{} via {} [{}]", t.table, t.reached_via, columns.join(", "))
        })
        .collect();
    for completed in &x.completed {
        let mut found: Vec<String> = completed
            .found_fields
            .iter()
            .map(|f| format!("{}:{}", f.path, f.category))
            .collect();
        found.sort();
        shape.push(format!(
            "{}: {} rows, {} rejected, found {found:?}",
            completed.table, completed.row_count, completed.rejected_count
        ));
    }
    let manifest = x.manifest.as_ref().expect("a manifest");
    shape.push(format!(
        "manifest: {} rows, identity rows {}, fields {:?}, counts {:?}",
        manifest.row_count,
        manifest.metadata["identity_rows"],
        manifest.pii_fields,
        manifest
            .tables
            .iter()
            .map(|t| (t.table.clone(), t.row_count, t.verified))
            .collect::<Vec<_>>()
    ));
    shape
}

#[tokio::test]
async fn a_subject_streams_the_same_from_postgresql_and_mariadb() {
    let server = TestServer::start(config(&config_text("shop", ""))).await;
    let mut client = server.client().await;
    for (kind, value) in [
        ("email", ALICE),
        ("customer_id", "1"),
        ("email", "bob@example.com"),
    ] {
        let pg = extract(&mut client, on("demo", kind, value)).await;
        let my = extract(&mut client, on("mariadb", kind, value)).await;
        assert_eq!(pg.code(), Code::Ok, "{}", pg.message());
        assert_eq!(my.code(), Code::Ok, "{}", my.message());
        assert_eq!(
            shape(&pg),
            shape(&my),
            "{kind} {value}: plan, counts, findings"
        );
        let (pg_rows, my_rows) = (rows_by_id(&pg), rows_by_id(&my));
        let mut compared = 0;
        for (table, rows) in &pg_rows {
            for (id, values) in rows {
                assert_eq!(
                    Some(values),
                    my_rows[table].get(id),
                    "{kind} {value}: {table} id {id}"
                );
                compared += values.len();
            }
        }
        assert_eq!(pg_rows, my_rows);
        println!("{kind} {value}: {compared} values, the same from both stores");
        if value == ALICE {
            // 18 rows over six tables, the coercion rules applied on both sides (one legacy
            // row fails its rule and is left out on both).
            assert_eq!(pg.manifest.as_ref().unwrap().row_count, 18);
        }
        // The manifest is the snapshot's own: MariaDB's version, not PostgreSQL's.
        let version = &my.manifest.as_ref().unwrap().metadata["server_version"];
        assert!(version.contains("MariaDB"), "{version}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn identities_that_are_not_their_kinds_type_are_refused_by_both_stores() {
    let server = TestServer::start(config(&config_text("shop", ""))).await;
    let mut client = server.client().await;
    for (kind, value, code) in [
        // MySQL would compare '1 OR 1=1' with a number as the number 1: refused first.
        ("customer_id", "1 OR 1=1", Code::InvalidArgument),
        ("customer_id", "42abc", Code::InvalidArgument),
        ("customer_id", "1.5", Code::InvalidArgument),
        ("email", "x' OR '1'='1", Code::Ok),
        ("email", "nobody@example.com", Code::Ok),
        ("customer_id", " 2 ", Code::Ok),
    ] {
        let mut rows = Vec::new();
        for source in ["demo", "mariadb"] {
            let x = extract(&mut client, on(source, kind, value)).await;
            assert_eq!(x.code(), code, "{source} {kind} {value:?}: {}", x.message());
            rows.push(x.manifest.as_ref().map(|m| m.row_count));
            if value.trim() != "2" {
                assert!(
                    !x.message().contains(value),
                    "{source}: the value is echoed: {}",
                    x.message()
                );
            }
        }
        println!("{kind} {value:?}: {code:?}, rows {rows:?}");
        assert_eq!(
            rows[0], rows[1],
            "{kind} {value:?}: the same rows from both"
        );
        if kind == "email" {
            assert_eq!(rows[0], Some(0), "{value:?} is nobody");
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn validate_reads_each_stores_catalog() {
    let extra = demo::mariadb::source_toml("drifted", mariadb().host(), mariadb().port(), "drift");
    let server = TestServer::start(config(&config_text("shop", &extra))).await;
    let mut client = server.client().await;
    for source in ["demo", "mariadb"] {
        let report = validate(
            &mut client,
            ValidateRequest {
                source: source.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{source}: {e}"));
        for table in &report.tables {
            assert_eq!(table.status(), pb::TableStatus::Ok, "{source}: {table:?}");
        }
        assert_eq!(report.tables.len(), 6, "{source}");

        // A dry run counts alice's rows in one snapshot, the same on both.
        let dry = validate(
            &mut client,
            ValidateRequest {
                source: source.into(),
                subject: Some(pb::Identity {
                    kind: "email".into(),
                    value: ALICE.into(),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let counts: Vec<(String, u64)> = dry
            .tables
            .iter()
            .map(|t| (t.table.clone(), t.row_count))
            .collect();
        // 18: one legacy row fails its coercion rule and is left out, on both.
        assert_eq!(
            counts.iter().map(|(_, n)| n).sum::<u64>(),
            18,
            "{source}: {counts:?}"
        );
        assert!(
            !dry.text.contains(ALICE),
            "{source}: the value is in the response"
        );
    }

    // A live column nobody mapped, in MariaDB: the table fails closed, naming the column.
    let drifted = validate(
        &mut client,
        ValidateRequest {
            source: "drifted".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let customers = drifted.table("customers");
    assert_eq!(customers.status(), pb::TableStatus::UnmappedColumns);
    assert!(
        customers
            .problems
            .iter()
            .any(|p| p.contains("'nickname' (varchar(32))")),
        "{customers:?}"
    );
    assert!(!drifted.verdict.ok);
    let x = extract(&mut client, on("drifted", "email", ALICE)).await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    assert!(x.message().contains("nickname"), "{}", x.message());
    assert!(x.batches.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mariadb_plans_read_through_indexes() {
    let text = config_text("indexed", "");
    let config = config(&text);
    let source = config.sources.iter().find(|s| s.name == "mariadb").unwrap();
    let pool = MySqlPool::for_source(source).unwrap();
    let map = dsr_connector::schema::DataMap::load(source, &config.matrix(), &pool, None)
        .await
        .unwrap();
    let mut conn = mysql_async::Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(mariadb().host())
            .tcp_port(mariadb().port())
            .user(Some(demo::mariadb::USER))
            .pass(Some(mariadb().password()))
            .db_name(Some("indexed"))
            .prefer_socket(false),
    )
    .await
    .unwrap();
    use mysql_async::prelude::Queryable;
    let mut explained = 0;
    for kind in ["email", "customer_id"] {
        let plan = map.plan(kind, &[]).unwrap();
        for table in &plan.tables {
            for sql in [&table.select_sql, &table.count_sql] {
                let marks = sql.matches('?').count();
                let explain: Vec<mysql_async::Row> = conn
                    .exec(
                        format!("EXPLAIN {sql}"),
                        mysql_async::Params::Positional(vec![
                            mysql_async::Value::from(
                                if kind == "email" { ALICE } else { "1" }
                            );
                            marks
                        ]),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
                for row in explain {
                    let text = |column: &str| row.get::<Option<String>, _>(column).flatten();
                    let (access, key, read) = (text("type"), text("key"), text("table"));
                    assert!(
                        !matches!(access.as_deref(), Some("ALL" | "index")),
                        "{kind}: {} reads {read:?} whole ({access:?}, key {key:?}): {sql}",
                        table.table.display
                    );
                }
                explained += 1;
            }
        }
    }
    println!("{explained} statements read through indexes");
    assert_eq!(explained, 2 * (6 + 4));
    drop(conn);
    pool.disconnect().await;
}

/// The statements of the service's account that are running now and mention `needle`.
#[tokio::test]
async fn a_zero_date_in_mariadb_is_rejected_by_name() {
    let extra =
        demo::mariadb::source_toml("hostile", mariadb().host(), mariadb().port(), "hostile");
    let server = TestServer::start(config(&config_text("shop", &extra))).await;
    let mut client = server.client().await;

    // A zero date is a violation of its rule: the row is left out under reject_row.
    let x = extract(&mut client, on("hostile", "email", "carol@example.org")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let customers = x.completed.iter().find(|c| c.table == "customers").unwrap();
    assert_eq!((customers.row_count, customers.rejected_count), (0, 1));
    let violation = &customers.violations[0];
    assert_eq!(violation.rule, "zero_date");
    assert_eq!(violation.column, "birth_date");
    assert_eq!(violation.rule_type(), pb::Rule::ZeroDate);
    assert_eq!(violation.primary_key, "[classified]");
    server.stop().await.unwrap();
}

/// Held by a test that kills a MariaDB of its own and starts it again on its port: the
/// shared servers are started first, and no other server starts meanwhile, so that none can
/// take the port while it is free.
async fn killing() -> tokio::sync::MutexGuard<'static, ()> {
    static KILLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = KILLING.lock().await;
    tokio::task::block_in_place(|| {
        mariadb();
        connections::tls_mariadb();
    });
    guard
}

/// A MariaDB of the test's own with the demo shop, that keeps every commit through a kill
/// (the test servers flush their log only once a second otherwise).
fn durable_mariadb() -> TempMariaDb {
    let db = TempMariaDb::start().unwrap();
    db.execute("mysql", "SET GLOBAL innodb_flush_log_at_trx_commit = 1;")
        .unwrap();
    db.load_demo("shop").unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_killed_mid_stream_is_unavailable_and_opens_the_breaker_until_it_is_back() {
    let _alone = killing().await;
    let mut db = durable_mariadb();
    // 4,000 events of 4 KB for alice: more than the sockets hold.
    db.execute(
        "shop",
        "INSERT INTO events (id, customer_id, occurred_at, kind, ip, payload) \
         SELECT 500000 + seq, 1, NOW(), 'bulk', NULL, CONCAT('{\"pad\": \"', REPEAT('x', 4000), '\"}') \
         FROM seq_1_to_4000;",
    )
    .unwrap();
    let text = format!(
        "{}\n{}",
        support::config_text(""),
        demo::mariadb::source_toml("mariadb", db.host(), db.port(), "shop").replace(
            "min_idle = 1",
            "min_idle = 1\nconnect_timeout = \"1s\"\n\
             circuit_breaker = { min_calls = 5, cool_down = \"2s\" }"
        )
    );
    let config = config_with(&text, db.password());
    let server = TestServer::start(config).await;
    let mut client = server.client().await;

    let mut req = on("mariadb", "email", ALICE);
    req.batch_size = 50;
    let mut stream = client.extract(req).await.unwrap().into_inner();
    let mut batches = 0;
    let ended = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if let Some(pb::extract_response::Event::Batch(_)) = message.event {
                    batches += 1;
                    if batches == 3 {
                        tokio::task::block_in_place(|| db.kill());
                    }
                }
                assert!(
                    !matches!(
                        message.event,
                        Some(pb::extract_response::Event::Manifest(_))
                    ),
                    "a manifest from a killed server"
                );
            }
            Ok(None) => panic!("the stream ended OK after the server was killed"),
            Err(status) => break status,
        }
    };
    println!("killed after 3 batches; the stream ended after {batches}: {ended:?}");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");

    // Calls fail with UNAVAILABLE until the breaker opens.
    let mut failures = 0;
    loop {
        let x = extract(&mut client, on("mariadb", "email", ALICE)).await;
        assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
        if x.message().contains("circuit breaker is open") {
            break;
        }
        failures += 1;
        assert!(failures <= 5, "still closed after {failures} failures");
    }
    // PostgreSQL's source is not held back by MariaDB's breaker.
    let x = extract(&mut client, on("demo", "email", ALICE)).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());

    // MariaDB is back: after the cool-down a probe goes through and closes the breaker.
    tokio::task::block_in_place(|| db.restart()).unwrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let x = extract(&mut client, on("mariadb", "email", ALICE)).await;
        if x.code() == Code::Ok {
            assert_eq!(x.manifest.unwrap().row_count, 18 + 4000);
            break;
        }
        assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
        assert!(attempts < 100, "never closed again: {}", x.message());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("closed again after {attempts} attempts");
    server.stop().await.unwrap();
}

/// A Discover stream's tables, as what they propose: identities, references and each
/// column's category, scan and coercion.
async fn drafted(
    client: &mut dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient<
        tonic::transport::Channel,
    >,
    source: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut stream = client
        .discover(pb::DiscoverRequest {
            source: source.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{source}: {e}"))
        .into_inner();
    let mut tables = BTreeMap::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(pb::discover_response::Event::Table(t)) = message.event {
            assert!(
                t.sample_error.is_empty(),
                "{source} {}: {}",
                t.table,
                t.sample_error
            );
            let mut proposed: Vec<String> = t
                .identities
                .iter()
                .map(|i| format!("identity {} {}", i.kind, i.column))
                .chain(t.references.iter().map(|r| {
                    format!(
                        "reference {} -> {}.{} (inferred: {})",
                        r.column, r.table, r.to, r.inferred
                    )
                }))
                .chain(t.columns.iter().map(|c| {
                    format!(
                        "{}: {} scan_json={} coerce={:?}",
                        c.name, c.category, c.scan_json, c.coerce
                    )
                }))
                .collect();
            proposed.push(format!("sampled {}", t.sampled_rows));
            tables.insert(t.table, proposed);
        }
    }
    tables
}

#[tokio::test]
async fn discover_drafts_the_same_shop_from_both_stores() {
    let server = TestServer::start(config(&config_text("shop", ""))).await;
    let mut client = server.client().await;
    let pg = drafted(&mut client, "demo").await;
    let my = drafted(&mut client, "mariadb").await;
    assert_eq!(
        pg.keys().collect::<Vec<_>>(),
        my.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    let mut differences = Vec::new();
    for (table, proposed) in &pg {
        for line in proposed {
            if !my[table].contains(line) {
                differences.push(format!("{table}: postgres {line:?}"));
            }
        }
        for line in &my[table] {
            if !proposed.contains(line) {
                differences.push(format!("{table}: mariadb {line:?}"));
            }
        }
    }
    for line in &differences {
        println!("{line}");
    }
    // The one difference is the stores' types: PostgreSQL's `uuid` says what legacy_ref holds
    // (not_pii), MariaDB's CHAR(36) holds text, which the draft leaves to a person.
    assert_eq!(
        differences,
        [
            "legacy_accounts: postgres \"legacy_ref: not_pii scan_json=false coerce=\\\"\\\"\"",
            "legacy_accounts: mariadb \"legacy_ref: check scan_json=false coerce=\\\"\\\"\"",
        ]
    );
    server.stop().await.unwrap();
}

#[test]
fn the_discover_command_drafts_a_mariadb_source_without_a_sampled_value() {
    let dir = tempfile::tempdir().unwrap();
    // The MariaDB source without its tables: the command drafts them.
    let source = demo::mariadb::source_toml("mariadb", mariadb().host(), mariadb().port(), "shop");
    let without_tables = &source[..source.find("[[sources.tables]]").unwrap()];
    let input = dir.path().join("mariadb.toml");
    let draft = dir.path().join("mariadb.draft.toml");
    std::fs::write(
        &input,
        format!("{}\n{without_tables}", demo::mariadb::categories_toml()),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args([
            "discover",
            "--config",
            input.to_str().unwrap(),
            "--source",
            "mariadb",
        ])
        .args(["--out", draft.to_str().unwrap()])
        .env(demo::mariadb::PASSWORD_ENV, mariadb().password())
        .env("DSR_SUBJECT_KEY", SUBJECT_KEY)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    let drafted = std::fs::read_to_string(&draft).unwrap();
    assert!(drafted.contains("kind = \"mysql\""), "{drafted}");
    for table in [
        "customers",
        "orders",
        "order_items",
        "events",
        "support_tickets",
        "legacy_accounts",
    ] {
        assert!(
            drafted.contains(&format!("name = \"{table}\"")),
            "{table} is not drafted:\n{drafted}"
        );
    }
    for value in [
        "bob@example.com",
        "Alice Liddell",
        "+44 20 7946 0958",
        "Where is my clock",
    ] {
        assert!(
            !drafted.contains(value),
            "a sampled value in the draft: {value}\n{drafted}"
        );
        assert!(!printed.contains(value), "a sampled value printed: {value}");
    }
}
