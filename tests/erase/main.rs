//! Erase end to end, against a real PostgreSQL: each test loads the demo data into a database
//! of its own, erases (or tries to erase) alice there through a real server and a real tonic
//! client, and reads the tables back with plain SQL.

mod guards;
mod json;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use dsr_connector::demo;
use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::{EraseRequest, ErasureAction, ErasureReceipt, Identity, TableErasure};
use support::{SUBJECT_KEY, TestServer, cluster, extract};
use support::{erase_events as erase, erased_table as table};
use tonic::Code;
use tonic::transport::Channel;

const ALICE: &str = "alice@example.com";

/// The demo tables, each with its primary key `id`.
const TABLES: [&str; 6] = [
    "customers",
    "orders",
    "order_items",
    "events",
    "support_tickets",
    "legacy_accounts",
];

/// Loads the demo data into a fresh database `name` of the test cluster.
async fn database(name: &str) -> tokio_postgres::Client {
    support::demo_database(name).await
}

/// The demo config for database `name`, with `edit` applied to its text.
fn config_for(name: &str, edit: impl Fn(String) -> String) -> dsr_connector::config::Config {
    let text = demo::config_toml(cluster(), name, "127.0.0.1:0".parse().unwrap());
    demo::config(cluster(), &edit(text), SUBJECT_KEY).unwrap_or_else(|e| panic!("{e}"))
}

/// `text` with source settings added after its identity kinds (keys of the `[[sources]]`
/// entry, before its tables).
fn with_source_settings(text: &str, settings: &str) -> String {
    const KINDS: &str = "identity_kinds = [\"email\", \"customer_id\"]";
    text.replace(KINDS, &format!("{KINDS}\n{settings}"))
}

/// Settings for an erasure that waits on row locks: no preview, a long lock timeout, and the
/// sessions named `app`.
fn waiting_erasure(app: &str) -> String {
    format!(
        "application_name = \"{app}\"\n\
         erasure = {{ require_preview = false, lock_timeout = \"60s\" }}"
    )
}

/// Whether a session of `app` is running a DELETE, or taking the subject's row locks (waiting
/// on a lock, in these tests), polled a bounded number of times.
async fn deleting(db: &tokio_postgres::Client, app: &str) -> bool {
    support::eventually(100, || async {
        support::service_sessions(db, app)
            .await
            .iter()
            .any(|(state, query)| {
                state == "active"
                    && (query.starts_with("DELETE") || query.ends_with("FOR UPDATE OF t0"))
            })
    })
    .await
}

/// Validate's report on the demo source.
async fn validate_demo(client: &mut DsrConnectorServiceClient<Channel>) -> support::Validation {
    support::validate(
        client,
        dsr_connector::pb::ValidateRequest {
            source: "demo".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Holds a row of alice's with `lock` in a session of its own on database `name`, and starts
/// erasing alice through `client` (sessions named `app`): returns once the erasure's DELETE
/// waits on that row, with the holding session and the running call.
async fn erasure_waiting_on(
    db: &tokio_postgres::Client,
    name: &str,
    lock: &str,
    app: &str,
    mut client: DsrConnectorServiceClient<Channel>,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(Vec<TableErasure>, ErasureReceipt), tonic::Status>>,
) {
    let holder = demo::connect(cluster(), name).await.unwrap();
    holder.batch_execute(lock).await.unwrap();
    let call =
        tokio::spawn(async move { erase(&mut client, erase_request(ALICE, false, "")).await });
    assert!(
        deleting(db, app).await,
        "the erasure never waited on the held row"
    );
    (holder, call)
}

fn erase_request(value: &str, dry_run: bool, digest: &str) -> EraseRequest {
    EraseRequest {
        source: "demo".into(),
        subject: Some(Identity {
            kind: "email".into(),
            value: value.into(),
        }),
        request_id: "dsr-erase-1".into(),
        compliance_tag: "gdpr-art17".into(),
        dry_run,
        preview_digest: digest.into(),
    }
}

/// Every row of every demo table as text, by table and id.
async fn rows(db: &tokio_postgres::Client) -> BTreeMap<(String, i64), String> {
    let mut all = BTreeMap::new();
    for table in TABLES {
        for row in db
            .query(
                &format!("SELECT id::bigint, t::text FROM {table} t ORDER BY id"),
                &[],
            )
            .await
            .unwrap()
        {
            all.insert((table.to_owned(), row.get(0)), row.get(1));
        }
    }
    all
}

/// The ids of alice's rows, by table.
async fn alice_rows(db: &tokio_postgres::Client) -> Vec<(String, i64)> {
    let queries = [
        ("customers", "SELECT id FROM customers WHERE email = $1"),
        (
            "orders",
            "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.email = $1",
        ),
        (
            "order_items",
            "SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id \
             JOIN customers c ON c.id = o.customer_id WHERE c.email = $1",
        ),
        (
            "events",
            "SELECT e.id FROM events e JOIN customers c ON c.id = e.customer_id WHERE c.email = $1",
        ),
        (
            "support_tickets",
            "SELECT id FROM support_tickets WHERE requester_email = $1",
        ),
        (
            "legacy_accounts",
            "SELECT id::bigint FROM legacy_accounts WHERE email = $1",
        ),
    ];
    let mut ids = Vec::new();
    for (table, sql) in queries {
        for row in db.query(sql, &[&ALICE]).await.unwrap() {
            ids.push((table.to_owned(), row.get(0)));
        }
    }
    ids
}

#[tokio::test]
async fn a_preview_changes_nothing_then_the_erasure_deletes_masks_and_retains_as_declared() {
    let db = database("erase_policies").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let config = config_for("erase_policies", |text| {
        format!(
            "{text}\n[server.audit]\npath = {:?}\nreplica = \"replica-erase\"\n",
            log.display().to_string()
        )
    });
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let before = rows(&db).await;
    let alice = alice_rows(&db).await;
    assert_eq!(alice.len(), 19, "{alice:?}");

    // The preview: counts per table, a digest, and nothing changed.
    let (streamed, preview) = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap();
    assert!(preview.dry_run);
    assert!(preview.committed_at.is_none());
    assert_eq!(streamed, preview.tables);
    assert_eq!(rows(&db).await, before, "a preview changed data");
    let counts: Vec<(&str, i32, u64)> = preview
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.action, t.rows))
        .collect();
    println!("preview: {counts:?}");
    // Children before parents, then what is kept.
    let order: Vec<&str> = preview.tables.iter().map(|t| t.table.as_str()).collect();
    let at = |name: &str| order.iter().position(|t| *t == name).unwrap();
    assert!(at("order_items") < at("orders") && at("orders") < at("customers"));
    assert!(at("events") < at("customers"));
    assert_eq!(table(&preview, "customers").rows, 1);
    assert_eq!(table(&preview, "orders").rows, 3);
    assert_eq!(table(&preview, "order_items").rows, 5);
    assert_eq!(
        table(&preview, "support_tickets").action,
        ErasureAction::Mask as i32
    );
    assert_eq!(table(&preview, "support_tickets").rows, 2);
    let legacy = table(&preview, "legacy_accounts");
    assert_eq!(legacy.action, ErasureAction::Retain as i32);
    assert!(legacy.retain_reason.contains("commercial law"));
    assert_eq!(
        preview.rows_deleted + preview.rows_masked + preview.rows_retained,
        alice.len() as u64
    );

    // The erasure, with the preview's digest.
    let (_, receipt) = erase(
        &mut client,
        erase_request(ALICE, false, &preview.preview_digest),
    )
    .await
    .unwrap();
    assert!(!receipt.dry_run);
    assert!(receipt.committed_at.is_some());
    assert_eq!(receipt.preview_digest, preview.preview_digest);
    assert_eq!(receipt.rows_deleted, preview.rows_deleted);
    assert_eq!(receipt.rows_masked, 2);
    assert_eq!(receipt.receipt_sha256.len(), 64);
    assert!(receipt.tables.iter().all(|t| t.verified));

    // Deleted, masked, retained; every other row byte-identical.
    let after = rows(&db).await;
    for (key, text) in &before {
        let alices = alice.contains(key);
        match (alices, key.0.as_str(), after.get(key)) {
            (false, _, Some(now)) => assert_eq!(now, text, "{key:?} changed"),
            (false, _, None) => panic!("{key:?} of another subject is gone"),
            (true, "support_tickets", Some(now)) => {
                assert!(!now.contains(ALICE) && now.contains("[redacted]"), "{now}");
            }
            (true, "legacy_accounts", Some(now)) => assert_eq!(now, text),
            (true, _, Some(now)) => panic!("{key:?} was not deleted: {now}"),
            (true, _, None) => {}
        }
    }
    assert_eq!(after.len(), before.len() - receipt.rows_deleted as usize);

    // Extract finds nothing of the deleted tables by the customer id.
    let mut by_id = support::request("customer_id", "1");
    by_id.source = "demo".into();
    let x = extract(&mut client, by_id).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.manifest.unwrap().metadata["subject_found"], "false");

    // Erasing again finds nothing left to delete or mask.
    let (_, again) = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap();
    assert_eq!(again.rows_deleted + again.rows_masked, 0);
    // ... and points to the erasure that did, from the audit log.
    assert_eq!(again.earlier_erasure_id, receipt.erasure_id, "{again:?}");
    assert_eq!(again.earlier_request_id, "dsr-erase-1");
    let recorded = again.earlier_recorded_at.expect("a time");
    let committed = receipt.committed_at.unwrap();
    // Records are timed to the millisecond.
    let millis = |t: &prost_types::Timestamp| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
    assert!(
        millis(&recorded) >= millis(&committed),
        "recorded {recorded:?} before the commit {committed:?}"
    );
    // Repeating the erasure itself is safe: it changes nothing, commits, and points to the
    // first, and so does a repeat after it (an erasure that changed nothing is not pointed to).
    for _ in 0..2 {
        let (_, repeat) = erase(
            &mut client,
            erase_request(ALICE, false, &again.preview_digest),
        )
        .await
        .unwrap();
        assert_eq!(repeat.rows_deleted + repeat.rows_masked, 0);
        assert!(repeat.committed_at.is_some());
        assert_eq!(repeat.earlier_erasure_id, receipt.erasure_id);
    }
    assert_eq!(rows(&db).await, after, "a repeat changed data");
    server.stop().await.unwrap();

    // The records: a record before COMMIT and one after, per table actions, never a value.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(ALICE) && !text.contains("Alice"), "{text}");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["rpc"] == "Erase" && r["dry_run"] == false)
        .collect();
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["erasing", "ok", "erasing", "ok", "erasing", "ok"],
        "{records:#?}"
    );
    assert_eq!(
        records[1]["manifest_sha256"],
        receipt.receipt_sha256.as_str()
    );
    // Each committed erasure's records name its transaction, which the source knows as
    // committed: what an operator asks after a COMMIT that lost its connection.
    for pair in records.chunks(2) {
        let transaction = pair[0]["transaction"].as_str().expect("a transaction id");
        assert_eq!(pair[1]["transaction"], transaction, "{records:#?}");
        assert_eq!(support::xact_status(&db, transaction).await, "committed");
    }
    assert_ne!(records[0]["transaction"], records[2]["transaction"]);
    assert!(
        records[1]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["action"] == "retain" && t["reason"].as_str().unwrap().contains("law"))
    );
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["audit", "verify"])
        .arg(&log)
        .env("DSR_AUDIT_KEY", demo::audit_key(SUBJECT_KEY))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test]
async fn an_erasure_needs_its_preview_and_is_aborted_when_the_rows_changed_since() {
    let db = database("erase_preview").await;
    let server = TestServer::start(config_for("erase_preview", |t| t)).await;
    let mut client = server.client().await;
    let before = rows(&db).await;

    let refused = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("requires a preview"),
        "{refused:?}"
    );

    let (_, preview) = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap();
    db.batch_execute("INSERT INTO orders VALUES (199, 1, now(), 'new', 1.00, NULL)")
        .await
        .unwrap();
    let aborted = erase(
        &mut client,
        erase_request(ALICE, false, &preview.preview_digest),
    )
    .await
    .unwrap_err();
    assert_eq!(aborted.code(), Code::Aborted, "{aborted:?}");
    assert!(aborted.message().contains("preview again"), "{aborted:?}");
    let mut expected = before.clone();
    let now = rows(&db).await;
    expected.insert(
        ("orders".into(), 199),
        now[&("orders".to_owned(), 199)].clone(),
    );
    assert_eq!(now, expected, "an aborted erasure changed data");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_shared_address_an_undeclared_cascade_and_a_table_without_policy_are_refused() {
    // A second customer shares alice's address.
    let db = database("erase_guards").await;
    db.batch_execute(
        "ALTER TABLE customers DROP CONSTRAINT customers_email_key; \
         INSERT INTO customers VALUES (4, 'alice@example.com', 'Another Alice', NULL, NULL, 0, \
         false, now())",
    )
    .await
    .unwrap();
    let before = rows(&db).await;
    let server = TestServer::start(config_for("erase_guards", |t| t)).await;
    let mut client = server.client().await;
    let shared = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap_err();
    println!("shared address: {}", shared.message());
    assert_eq!(shared.code(), Code::FailedPrecondition, "{shared:?}");
    assert!(
        shared.message().contains("matches 2 rows") && shared.message().contains("customers"),
        "{shared:?}"
    );
    assert!(!shared.message().contains(ALICE));
    server.stop().await.unwrap();

    // A table outside the data map cascades from customers.
    db.batch_execute(
        "DELETE FROM customers WHERE id = 4; \
         CREATE TABLE wishlists (id bigint PRIMARY KEY, \
           customer_id bigint REFERENCES customers (id) ON DELETE CASCADE, sku text); \
         INSERT INTO wishlists VALUES (1, 1, 'CLOCK-1')",
    )
    .await
    .unwrap();
    let server = TestServer::start(config_for("erase_guards", |t| t)).await;
    let mut client = server.client().await;
    let cascade = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap_err();
    println!("undeclared cascade: {}", cascade.message());
    assert_eq!(cascade.code(), Code::FailedPrecondition, "{cascade:?}");
    assert!(
        cascade.message().contains("wishlists") && cascade.message().contains("ON DELETE CASCADE"),
        "{cascade:?}"
    );
    // Validate reports the cascade before anyone asks to erase.
    let gate = validate_demo(&mut client).await;
    let customers = gate.table("customers").warnings.join("\n");
    assert!(
        customers.contains("table 'wishlists' references 'customers' with ON DELETE CASCADE"),
        "{}",
        gate.text
    );
    server.stop().await.unwrap();

    // A reached table without a policy.
    let server = TestServer::start(config_for("erase_guards", |text| {
        text.replacen(
            "erase = { action = \"delete\" }\n",
            "",
            1, // the customers table's
        )
    }))
    .await;
    let mut client = server.client().await;
    let missing = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap_err();
    println!("no policy: {}", missing.message());
    assert_eq!(missing.code(), Code::FailedPrecondition, "{missing:?}");
    assert!(missing.message().contains("'customers'"), "{missing:?}");
    // Validate says so before anyone asks to erase.
    let gate = validate_demo(&mut client).await;
    assert!(
        gate.text
            .contains("table 'customers' has no erase policy, while other tables"),
        "{}",
        gate.text
    );
    server.stop().await.unwrap();

    let mut after = rows(&db).await;
    after.insert(
        ("customers".into(), 4),
        before[&("customers".to_owned(), 4)].clone(),
    );
    assert_eq!(after, before, "a refused erasure changed data");
}

#[tokio::test]
async fn an_extract_only_caller_cannot_erase() {
    database("erase_scopes").await;
    let text = support::with_server_block(
        &demo::config_toml(cluster(), "erase_scopes", "127.0.0.1:0".parse().unwrap()),
        "[[server.tokens]]\nname = \"reader\"\nsha256_env = \"TOKEN_SHA_0\"\nsources = [\"*\"]\n\
         rpcs = [\"*\"]\n\n[[server.tokens]]\nname = \"eraser\"\nsha256_env = \"TOKEN_SHA_1\"\n\
         sources = [\"demo\"]\nrpcs = [\"Erase\"]\n",
    );
    let (reader, eraser) = (
        "token-of-the-reader-0123456789",
        "token-of-the-eraser-0123456789",
    );
    let digests = [support::digest(reader), support::digest(eraser)];
    let config = dsr_connector::config::Config::from_toml_str(&text, |var| match var {
        demo::PASSWORD_ENV => Some(cluster().password().to_owned()),
        "DSR_SUBJECT_KEY" => Some(SUBJECT_KEY.to_owned()),
        "TOKEN_SHA_0" => Some(digests[0].clone()),
        "TOKEN_SHA_1" => Some(digests[1].clone()),
        _ => None,
    })
    .unwrap();
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let refused = erase(
        &mut client,
        support::with_token(erase_request(ALICE, true, ""), reader),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("may not call Erase"),
        "{refused:?}"
    );
    let (_, preview) = erase(
        &mut client,
        support::with_token(erase_request(ALICE, true, ""), eraser),
    )
    .await
    .unwrap();
    assert_eq!(table(&preview, "customers").rows, 1);
    server.stop().await.unwrap();
}

/// The demo config for database `name`, its support tickets masked with pseudonyms only (no
/// redaction, so the verification binds no redaction text), without a preview.
fn pseudonym_config(name: &str) -> dsr_connector::config::Config {
    let text = with_source_settings(
        &demo::config_toml(cluster(), name, "127.0.0.1:0".parse().unwrap()),
        "erasure = { require_preview = false, pseudonym_key_env = \"PSEUDONYM_KEY\" }",
    )
    .replace(
        "requester_email = \"redact\", subject = \"redact\", body = \"redact\"",
        "requester_email = \"pseudonym\", subject = \"pseudonym\", body = \"pseudonym\"",
    );
    dsr_connector::config::Config::from_toml_str(&text, |var| match var {
        demo::PASSWORD_ENV => Some(cluster().password().to_owned()),
        "DSR_SUBJECT_KEY" => Some(SUBJECT_KEY.to_owned()),
        "PSEUDONYM_KEY" => Some("pseudonym-key-0123456789abcdef".to_owned()),
        _ => None,
    })
    .unwrap()
}

#[tokio::test]
async fn a_pseudonym_masks_one_value_to_one_token_under_the_key() {
    let db = database("erase_pseudonym").await;
    let config = pseudonym_config("erase_pseudonym");
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let (_, receipt) = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap();
    let masked = table(&receipt, "support_tickets");
    assert!(
        masked
            .masked_columns
            .contains(&"requester_email:pseudonym".to_owned())
    );
    let tokens: Vec<String> = db
        .query(
            "SELECT requester_email FROM support_tickets WHERE id IN (1, 2)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], tokens[1], "one person, one token");
    assert_eq!(tokens[0].len(), 32);
    assert!(tokens[0].chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(tokens[0], ALICE);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_erasure_leaves_the_data_as_it_was() {
    let db = database("erase_cancel").await;
    let before = rows(&db).await;
    let server = TestServer::start(config_for("erase_cancel", |text| {
        with_source_settings(&text, &waiting_erasure("erase-cancel"))
    }))
    .await;
    // Another session holds alice's customer row: the erasure's DELETE waits for it.
    let (holder, call) = erasure_waiting_on(
        &db,
        "erase_cancel",
        "BEGIN; SELECT * FROM customers WHERE id = 1 FOR UPDATE",
        "erase-cancel",
        server.client().await,
    )
    .await;
    call.abort();
    // The erasure stops and its statement is cancelled on the server.
    let gone = support::eventually(100, || async {
        !support::service_sessions(&db, "erase-cancel")
            .await
            .iter()
            .any(|(state, _)| state == "active" || state.starts_with("idle in transaction"))
    })
    .await;
    assert!(gone, "the erasure still runs after its client left");
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(rows(&db).await, before, "a cancelled erasure changed data");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_writer_makes_the_erasure_run_again_never_half_done() {
    let db = database("erase_race").await;
    let server = TestServer::start(config_for("erase_race", |text| {
        with_source_settings(&text, &waiting_erasure("erase-race"))
    }))
    .await;
    // A writer changes one of alice's orders and holds it; the erasure, whose snapshot is
    // older, waits on the row and then fails to serialize: it rolls back and runs again.
    let (writer, call) = erasure_waiting_on(
        &db,
        "erase_race",
        "BEGIN; UPDATE orders SET status = 'returned' WHERE id = 101",
        "erase-race",
        server.client().await,
    )
    .await;
    writer.batch_execute("COMMIT").await.unwrap();
    let (_, receipt) = call.await.unwrap().unwrap();
    println!("attempts: {}", receipt.attempts);
    assert!(receipt.attempts >= 2, "{receipt:?}");
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM customers WHERE id = 1) \
                  + (SELECT count(*) FROM orders WHERE customer_id = 1) \
                  + (SELECT count(*) FROM events WHERE customer_id = 1)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_erasure_leaves_the_data_as_it_was() {
    let db = database("erase_kill").await;
    let before = rows(&db).await;
    let text = with_source_settings(
        &demo::config_toml(cluster(), "erase_kill", "127.0.0.1:0".parse().unwrap()),
        &waiting_erasure("erase-kill"),
    );
    let server = support::ServeProcess::start_with(&text, &[]).await;
    let (holder, call) = erasure_waiting_on(
        &db,
        "erase_kill",
        "BEGIN; SELECT * FROM customers WHERE id = 1 FOR UPDATE",
        "erase-kill",
        server.client().await,
    )
    .await;
    // Earlier tables' rows are deleted inside the open transaction; the server dies.
    let pid = server.pid();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let (status, _) = server.wait().await;
    assert!(!status.success());
    let failed = call.await.unwrap();
    assert!(failed.is_err(), "{failed:?}");
    holder.batch_execute("COMMIT").await.unwrap();
    let ended = support::eventually(100, || async {
        support::service_sessions(&db, "erase-kill")
            .await
            .is_empty()
    })
    .await;
    assert!(ended, "the killed server's sessions did not end");
    assert_eq!(rows(&db).await, before, "a killed erasure changed data");
}
