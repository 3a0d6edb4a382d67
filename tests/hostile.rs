//! Hostile rows and hostile callers (invariants 8 and 9): rows built to hurt neither crash the
//! server nor leak their values into anything but the rows, memory stays bounded by bytes and
//! depth in the real binary, callers that stop reading release what they hold, and requests
//! built to hurt get precise errors. A value above one message is refused on both stores, from
//! one body (`both_stores!`).

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dsr_connector::config::Config;
use dsr_connector::pb::extract_response::Event;
use dsr_connector::pb::{Manifest, TableCount, ValidateRequest};
use support::{
    ServeProcess, TestServer, config, config_text, config_with_tokens, eventually, extract,
    request, scrape, service_sessions, with_token,
};
use tonic::Code;

const HOSTILE: &str = "hostile@example.com";
const WIDE: &str = "wide@example.com";
const STALL: &str = "stall@example.com";

/// The largest hostile document, in bytes of JSON text (the 3 MB string).
const LARGEST_DOCUMENT_BYTES: u64 = 3_000_020;

/// Values in the hostile rows that must never reach anything but the rows themselves.
const SECRETS: &[&str] = &[
    "victim.person@example.net",
    "+44 20 7946 0958",
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
    "p7@example.org",
    "+1 415 555 0100",
    "someone@example.com",
];

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        support::run_sql_blocking(
            r#"
            CREATE TABLE hostile_docs (id int PRIMARY KEY, owner text NOT NULL, payload jsonb);
            CREATE INDEX ON hostile_docs (owner);
            INSERT INTO hostile_docs VALUES
              -- a 200,000-character key over a 20,000-item array
              (1, 'hostile@example.com', jsonb_build_object(repeat('k', 200000),
                  (SELECT jsonb_agg(0) FROM generate_series(1, 20000)))),
              -- keys that are data: a third person's e-mail address, phone numbers, digits
              (2, 'hostile@example.com',
                  '{"friends": {"victim.person@example.net": {"phone": "+44 20 7946 0958"}}}'),
              (3, 'hostile@example.com',
                  '{"+1 415 555 0100": {"email": "someone@example.com"}, "12345": {"ip": "203.0.113.9"}}'),
              -- a hundred plain keys that each hold an e-mail address
              (4, 'hostile@example.com',
                  (SELECT jsonb_object_agg('k' || g, 'p' || g || '@example.org') FROM generate_series(1, 100) g)),
              -- a million-item array, 100,000 distinct keys, deep nesting, a 3 MB string
              (5, 'hostile@example.com',
                  (SELECT jsonb_build_object('items', jsonb_agg(0)) FROM generate_series(1, 1000000))),
              (6, 'hostile@example.com',
                  (SELECT jsonb_object_agg('key' || g, g) FROM generate_series(1, 100000) g)),
              (7, 'hostile@example.com', (repeat('[', 2000) || repeat(']', 2000))::jsonb),
              (8, 'hostile@example.com', jsonb_build_object('note', repeat('x', 3000000)));

            CREATE TABLE wide_docs (id int PRIMARY KEY, owner text NOT NULL, payload jsonb);
            CREATE INDEX ON wide_docs (owner);
            INSERT INTO wide_docs
              SELECT g, 'wide@example.com', jsonb_build_object('note', repeat(md5(g::text), 1600))
              FROM generate_series(1, 2000) g;

            CREATE TABLE stall_rows (id int PRIMARY KEY, owner text NOT NULL, note text);
            CREATE INDEX ON stall_rows (owner);
            INSERT INTO stall_rows
              SELECT g, 'stall@example.com', repeat('x', 200) FROM generate_series(1, 100000) g;

            CREATE TABLE reg_things (id int PRIMARY KEY, rel regclass NOT NULL);
            INSERT INTO reg_things VALUES (1, 'customers');
            ANALYZE hostile_docs, wide_docs, stall_rows, reg_things;
            "#,
        );
    });
}

const TABLES: &str = r#"
[[sources.tables]]
name = "hostile_docs"
identity = { kind = "email", column = "owner" }
columns = { id = "not_pii", owner = "contact.email", payload = { category = "behaviour", scan_json = true } }

[[sources.tables]]
name = "wide_docs"
identity = { kind = "email", column = "owner" }
columns = { id = "not_pii", owner = "contact.email", payload = { category = "behaviour", scan_json = true } }

[[sources.tables]]
name = "stall_rows"
identity = { kind = "email", column = "owner" }
columns = { id = "not_pii", owner = "contact.email", note = "not_pii" }
"#;

fn text() -> String {
    setup();
    config_text(TABLES)
}

/// Everything of an extraction that is not a row: the messages auditors and logs keep.
fn artifacts(x: &support::Extraction) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        x.started, x.completed, x.manifest, x.status
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rows_neither_crash_nor_leak_and_the_binary_stays_within_its_memory_bound() {
    let (receiver, otlp_addr) = support::otlp::start().await;
    let endpoint = format!("http://{otlp_addr}");
    let server = ServeProcess::start_with(
        &text(),
        &[
            ("RUST_LOG", "trace"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("DSR_CONNECTOR_SERVER__METRICS_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let mut client = server.client().await;

    // Another caller's extraction runs beside the hostile one.
    let mut other_client = server.client().await;
    let other = tokio::spawn(async move {
        extract(&mut other_client, request("email", "alice@example.com")).await
    });
    let mut req = request("email", HOSTILE);
    req.tables = vec!["hostile_docs".into()];
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("hostile_docs").len(), 8);
    let other = other.await.unwrap();
    assert_eq!(other.code(), Code::Ok, "{}", other.message());

    // Keys that are data show as "*"; plain names stay readable.
    let completed = &x.completed[0];
    for field in [
        "hostile_docs.payload.friends.*.phone:contact.phone",
        "hostile_docs.payload.*.email:contact.email",
        "hostile_docs.payload.*.ip:network.ip",
    ] {
        assert!(
            completed.pii_fields.iter().any(|f| f == field),
            "{field} in {:?}",
            completed.pii_fields
        );
    }
    // A hundred fields in one column are cut at the limit, and the cut is said.
    assert!(
        completed.pii_fields.len() <= 32,
        "{:?}",
        completed.pii_fields
    );
    assert!(completed.pii_fields_truncated);
    let manifest = x.manifest.as_ref().expect("a manifest");
    assert_eq!(
        manifest
            .metadata
            .get("pii_fields_truncated")
            .map(String::as_str),
        Some("hostile_docs")
    );
    let categories: Vec<&str> = completed
        .violations
        .iter()
        .map(|v| v.category.as_str())
        .collect();
    assert!(
        categories.contains(&"json_too_many_nodes"),
        "{categories:?}"
    );
    assert!(categories.contains(&"json_too_deep"), "{categories:?}");

    // The peak of the real process: a small fixed part plus the largest document (held as
    // wire bytes, decoded text and an encoded message), never the documents' width.
    let peak_kib = server.peak_rss_kib();
    println!("hostile corpus: peak RSS {} KiB", peak_kib);
    assert!(
        peak_kib < 64 * 1024 + LARGEST_DOCUMENT_BYTES / 1024,
        "peak RSS {peak_kib} KiB is above 64 MiB plus the largest document"
    );

    // And it still serves.
    let again = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(again.code(), Code::Ok, "{}", again.message());

    let metrics_addr = server
        .metrics_addr
        .clone()
        .expect("the server logs its metrics listener")
        .parse()
        .unwrap();
    let metrics = scrape(metrics_addr).await;
    assert!(metrics.contains("dsr_rows_streamed_total"), "{metrics}");
    // SIGTERM flushes the spans.
    let (status, lines) = server.terminate().await;
    assert!(status.success());
    let spans = support::otlp::span_text(&receiver.spans.lock().unwrap());
    assert!(spans.contains("SELECT hostile_docs"), "{spans}");
    let artifacts = artifacts(&x);
    let logs = lines.join("\n");
    for secret in SECRETS {
        assert!(
            !artifacts.contains(secret),
            "{secret} leaked into the messages"
        );
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
        assert!(!spans.contains(secret), "{secret} leaked into a span");
        assert!(
            !metrics.contains(secret),
            "{secret} leaked into the metrics"
        );
    }
}

#[tokio::test]
async fn wide_rows_with_the_largest_batch_size_stay_within_the_memory_bound() {
    let server = ServeProcess::start_with(&text(), &[]).await;
    let mut client = server.client().await;
    let mut req = request("email", WIDE);
    req.tables = vec!["wide_docs".into()];
    req.batch_size = 10_000;
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("wide_docs").len(), 2000);
    let bytes: usize = x.batches.iter().map(prost::Message::encoded_len).sum();
    let peak_kib = server.peak_rss_kib();
    println!(
        "wide rows: {} MB streamed with batch_size 10000, peak RSS {} KiB",
        bytes / 1_000_000,
        peak_kib
    );
    assert!(bytes > 100_000_000, "the subject is wide: {bytes} bytes");
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB is above 64 MiB"
    );
    let (status, _) = server.terminate().await;
    assert!(status.success());
}

const STALLED: &str = "token-of-a-caller-that-stops-reading";
const OTHER: &str = "token-of-another-caller-0123456789";

fn stall_config(app: &str) -> Config {
    config_with_tokens(
        &text()
            .replace("[server]\n", "[server]\nsend_stall_timeout = \"2s\"\n")
            .replace(
                "max_connections = 10",
                &format!("max_connections = 10\napplication_name = \"{app}\""),
            ),
        &[
            ("stalled", STALLED, "sources = [\"demo\"]"),
            ("other", OTHER, "sources = [\"demo\"]"),
        ],
    )
}

#[tokio::test]
async fn stalled_callers_release_their_snapshots_and_others_are_served() {
    let app = "t-stalled_callers_release";
    let server = TestServer::start(stall_config(app)).await;
    let db = support::sql().await;
    let started = Instant::now();

    // Ten streams that read one message each and then stop reading, on a pool of ten.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut client = server.client().await;
        let mut release = release_rx.clone();
        stalled.push(tokio::spawn(async move {
            let mut req = request("email", STALL);
            req.tables = vec!["stall_rows".into()];
            req.batch_size = 100;
            let mut stream = match client.extract(with_token(req, STALLED)).await {
                Ok(response) => response.into_inner(),
                Err(status) => return status,
            };
            let _ = stream.message().await;
            let _ = release.wait_for(|go| *go).await;
            loop {
                match stream.message().await {
                    Ok(Some(m)) => assert!(!matches!(m.event, Some(Event::Manifest(_)))),
                    Ok(None) => panic!("a stalled stream ended OK"),
                    Err(status) => return status,
                }
            }
        }));
    }
    // The stalled caller holds at most its share of the pool (half of it).
    assert!(
        eventually(100, || async {
            service_sessions(&db, app)
                .await
                .iter()
                .filter(|(state, _)| state.contains("transaction") || state == "active")
                .count()
                == 5
        })
        .await,
        "{:?}",
        service_sessions(&db, app).await
    );

    // Meanwhile another caller is served.
    let mut other = server.client().await;
    let served = Instant::now();
    let mut req = request("email", "alice@example.com");
    req.source = "demo".into();
    let x = {
        let mut out = support::Extraction::default();
        let response = other.extract(with_token(req, OTHER)).await;
        match response {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(m)) => {
                            if let Some(Event::Manifest(m)) = m.event {
                                out.manifest = Some(m);
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            out.status = Some(status);
                            break;
                        }
                    }
                }
            }
            Err(status) => out.status = Some(status),
        }
        out
    };
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert!(x.manifest.is_some());
    println!(
        "another caller served in {:?} while ten streams stalled",
        served.elapsed()
    );

    // Within a few stall timeouts every stalled snapshot is gone: the first five are cancelled
    // at the stall timeout, the five queued behind them get in and are cancelled in turn (or
    // give up waiting for the caller's share).
    assert!(
        eventually(150, || async {
            service_sessions(&db, app)
                .await
                .iter()
                .all(|(state, _)| state == "idle")
        })
        .await,
        "stalled snapshots still open: {:?}",
        service_sessions(&db, app).await
    );
    println!(
        "every stalled snapshot released {:?} after the streams started",
        started.elapsed()
    );
    release_tx.send(true).unwrap();
    for handle in stalled {
        let status = handle.await.unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("send_stall_timeout")
                || status.message().contains("share of the source"),
            "{}",
            status.message()
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn fields_echoed_in_errors_are_bounded_and_failed_casts_do_not_quote_the_identity() {
    setup();
    let text = config_text(
        r#"
[[sources.tables]]
name = "reg_things"
identity = { kind = "relation", column = "rel" }
columns = { id = "not_pii", rel = "identifier.relation" }
"#,
    )
    .replace(
        "identity_kinds = [\"email\", \"customer_id\"]",
        "identity_kinds = [\"email\", \"customer_id\", \"relation\"]\nunmapped_columns = \"warn\"",
    );
    let server = TestServer::start(config(&text)).await;
    let mut client = server.client().await;
    let long = "x".repeat(100_000);

    let mut req = request(&long, "a@b.c");
    let x = extract(&mut client, req.clone()).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(x.message().len() < 200, "{}", x.message());

    req = request("email", "a@b.c");
    req.source = long.clone();
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(x.message().len() < 200, "{}", x.message());

    req = request("email", "a@b.c");
    req.tables = vec![long.clone()];
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(x.message().len() < 200, "{}", x.message());

    // A cast into regclass fails with messages that quote its input: "relation ... does not
    // exist" (42P01) and "cross-database references are not implemented: ..." (0A000).
    for person in ["mariagonzalezprivate", "maria.gonzalez.private"] {
        let mut req = request("relation", person);
        req.tables = vec!["reg_things".into()];
        let x = extract(&mut client, req).await;
        assert_eq!(x.code(), Code::InvalidArgument, "{}", x.message());
        assert!(!x.message().contains(person), "{}", x.message());
    }

    // A manifest from elsewhere whose counts overflow a sum is a finding, not a crash.
    let verdict = client
        .validate(ValidateRequest {
            manifest: Some(Manifest {
                subject_id: "hmac-sha256:00".into(),
                pii_fields: vec!["a.b".into()],
                extraction_timestamp: Some(prost_types::Timestamp::default()),
                row_count: 1,
                tables: vec![
                    TableCount {
                        table: "a".into(),
                        row_count: u64::MAX,
                        verified: true,
                        ..Default::default()
                    },
                    TableCount {
                        table: "b".into(),
                        row_count: u64::MAX,
                        verified: true,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("the manifest is checked")
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(format!("{verdict:?}").contains("overflow"), "{verdict:?}");
    let alive = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(alive.code(), Code::Ok, "{}", alive.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn validate_and_extract_side_by_side_on_a_one_connection_pool_both_finish() {
    let text = text()
        .replace("max_connections = 10", "max_connections = 1")
        .replace("min_idle = 1", "min_idle = 0\nconnect_timeout = \"20s\"");
    let server = TestServer::start(config(&text)).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut a = server.client().await;
        let mut b = server.client().await;
        tasks.push(tokio::spawn(async move {
            let x = extract(&mut a, request("email", "alice@example.com")).await;
            assert_eq!(x.code(), Code::Ok, "{}", x.message());
        }));
        tasks.push(tokio::spawn(async move {
            let v = b
                .validate(ValidateRequest {
                    source: "demo".into(),
                    ..Default::default()
                })
                .await;
            assert!(v.is_ok(), "{v:?}");
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("no call waits on another for good")
            .unwrap();
    }
    server.stop().await.unwrap();
}

/// A table with a 100 MB text value (owner `huge@example.com`), a JSON document of about
/// 100 MB (owner `hugedoc@example.com`) and a small row (owner `small@example.com`).
const HUGE_NOTES: &str = r#"
[[sources.tables]]
name = "huge_notes"
identity = { kind = "email", column = "owner" }
columns = { id = "not_pii", owner = "contact.email", note = "not_pii", doc = "not_pii" }
"#;

/// The binary serving `store`'s (`demo` or `mariadb`) demo shop with [`HUGE_NOTES`] in it.
async fn huge_notes_served(store: &str) -> ServeProcess {
    if store == "demo" {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            // 100 MB of text in one value (TOAST compresses it on disk; its length is 100 MB).
            support::run_sql_blocking(
                "CREATE TABLE huge_notes (id int PRIMARY KEY, owner text NOT NULL, note text,
                                          doc jsonb);
                 INSERT INTO huge_notes VALUES
                   (1, 'huge@example.com', repeat('x', 100000000), NULL),
                   (2, 'small@example.com', 'fine', '{\"a\": 1}'),
                   (3, 'hugedoc@example.com', 'fine',
                    (SELECT jsonb_agg(g) FROM generate_series(1, 12000000) g));
                 ANALYZE huge_notes;",
            );
        });
        return ServeProcess::start_with(&config_text(HUGE_NOTES), &[]).await;
    }
    let mariadb = support::mariadb::server(&[(
        "huge",
        "CREATE TABLE huge_notes (id INT PRIMARY KEY, owner VARCHAR(255) NOT NULL, \
           note LONGTEXT, doc JSON); \
         INSERT INTO huge_notes VALUES \
           (1, 'huge@example.com', REPEAT('x', 100000000), NULL), \
           (2, 'small@example.com', 'fine', '{\"a\": 1}'), \
           (3, 'hugedoc@example.com', 'fine', \
            CONCAT('[', REPEAT('1234567,', 12000000), '1]'));",
    )]);
    let text = support::mariadb::config_text(mariadb, "huge", HUGE_NOTES);
    ServeProcess::start_with(
        &text,
        &[(
            dsr_connector::demo::mariadb::PASSWORD_ENV,
            mariadb.password(),
        )],
    )
    .await
}

both_stores!(
    a_value_above_one_message_is_refused_without_entering_the_process,
    huge_value_on
);

async fn huge_value_on(store: &'static str) {
    let server = huge_notes_served(store).await;
    let mut client = server.client().await;
    let huge = |owner: &str| {
        let mut req = request("email", owner);
        req.source = store.into();
        req.tables = vec!["huge_notes".into()];
        req
    };
    let x = extract(&mut client, huge("huge@example.com")).await;
    assert_eq!(x.code(), Code::ResourceExhausted, "{}", x.message());
    assert!(
        x.message().contains("huge_notes") && x.message().contains("'note'"),
        "{}",
        x.message()
    );
    // A JSON document of about 100 MB as text: its stored size sends it to be measured.
    let x = extract(&mut client, huge("hugedoc@example.com")).await;
    assert_eq!(x.code(), Code::ResourceExhausted, "{}", x.message());
    assert!(x.message().contains("'doc'"), "{}", x.message());
    // The values were measured in the query and never sent: the process stays far below them.
    let peak_kib = server.peak_rss_kib();
    println!("{store}: 100 MB text and JSON values refused: peak RSS {peak_kib} KiB");
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB: the 100 MB value entered the process"
    );
    // Other rows of the table still stream.
    let x = extract(&mut client, huge("small@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("huge_notes").len(), 1);
}
