//! Erase end to end, against a real PostgreSQL: each test loads the demo data into a database
//! of its own, erases (or tries to erase) alice there through a real server and a real tonic
//! client, and reads the tables back with plain SQL.

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

/// The same shared address, for access: Extract names the table in its manifest (or refuses
/// before any row, when the source says so), and Validate warns that no unique index holds
/// the identity column.
#[tokio::test]
async fn a_shared_address_is_reported_by_extract_refused_on_request_and_warned_by_validate() {
    let db = database("extract_shared").await;
    db.batch_execute(
        "ALTER TABLE customers DROP CONSTRAINT customers_email_key; \
         CREATE INDEX customers_email ON customers (email); \
         INSERT INTO customers VALUES (5, 'user5@example.com', 'User Five', NULL, NULL, 0, false, now()), \
           (6, 'user5@example.com', 'Someone Else', NULL, NULL, 0, false, now()); \
         INSERT INTO orders VALUES (601, 6, now(), 'new', 9.99, 'Somewhere Else 1')",
    )
    .await
    .unwrap();
    let server = TestServer::start(config_for("extract_shared", |t| t)).await;
    let mut client = server.client().await;
    let x = extract(&mut client, support::request("email", "user5@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let manifest = x.manifest.unwrap();
    println!("identity_rows: {}", manifest.metadata["identity_rows"]);
    assert!(manifest.metadata["identity_rows"].contains("customers=2"));
    assert_eq!(manifest.metadata["shared_identity"], "customers");
    let alice = extract(&mut client, support::request("email", ALICE)).await;
    let alice = alice.manifest.unwrap();
    assert!(alice.metadata["identity_rows"].contains("customers=1"));
    assert!(!alice.metadata.contains_key("shared_identity"));
    let gate = validate_demo(&mut client).await;
    assert!(
        gate.text.contains("no unique index holds the column")
            && gate.text.contains(
                "CREATE UNIQUE INDEX ON \\\"public\\\".\\\"customers\\\" (\\\"email\\\")"
            ),
        "{}",
        gate.text
    );
    server.stop().await.unwrap();

    let server = TestServer::start(config_for("extract_shared", |text| {
        with_source_settings(&text, "shared_identity = \"refuse\"")
    }))
    .await;
    let mut client = server.client().await;
    let refused = extract(&mut client, support::request("email", "user5@example.com")).await;
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("matches 2 rows"),
        "{}",
        refused.message()
    );
    assert!(refused.batches.is_empty() && refused.manifest.is_none());
    let alice = extract(&mut client, support::request("email", ALICE)).await;
    assert_eq!(alice.code(), Code::Ok, "{}", alice.message());
    server.stop().await.unwrap();
}

/// A writer adds an order for the subject while the erasure runs: the erasure must not commit
/// with that order left behind. The erasure locked the subject's customer row first, so the
/// order's foreign key check waits for it, and fails once the customer is gone; the erasure
/// needs one attempt, and nothing of the subject is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_for_the_subject_mid_erasure_waits_and_fails_once_it_is_erased() {
    let db = database("erase_insert").await;
    let server = TestServer::start(config_for("erase_insert", |text| {
        with_source_settings(&text, &waiting_erasure("erase-insert"))
    }))
    .await;
    // Someone holds one of alice's events: the erasure waits there, after its snapshot.
    let (holder, call) = erasure_waiting_on(
        &db,
        "erase_insert",
        "BEGIN; SELECT * FROM events WHERE id = 1 FOR UPDATE",
        "erase-insert",
        server.client().await,
    )
    .await;
    // An order written for alice now checks her customer row, which the erasure locked
    // first: it waits, and fails once the erasure has committed.
    let writer = demo::connect(cluster(), "erase_insert").await.unwrap();
    let insert = tokio::spawn(async move {
        writer
            .batch_execute(
                "INSERT INTO orders VALUES (199, 1, now(), 'new', 1.00, 'A new address 1')",
            )
            .await
    });
    assert!(
        support::eventually(100, || async {
            db.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'INSERT INTO orders%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                == 1
        })
        .await,
        "the new order did not wait for the erasure"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    let outcome = call.await.unwrap();
    let inserted = insert.await.unwrap();
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM customers WHERE id = 1) \
                  + (SELECT count(*) FROM orders WHERE customer_id = 1)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (_, receipt) = outcome.unwrap_or_else(|s| panic!("{:?} {}", s.code(), s.message()));
    assert_eq!(receipt.attempts, 1, "{receipt:?}");
    assert_eq!(table(&receipt, "orders").rows, 3);
    let error = inserted.expect_err("the order for an erased customer");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
        "{error:?}"
    );
    assert_eq!(left, 0, "a row of the subject survived a committed erasure");
    server.stop().await.unwrap();
}

/// A row lock held longer than the erasure's lock_timeout: each attempt gives up at the
/// timeout and is tried again within the deadline; when the lock is still held, the call ends
/// UNAVAILABLE (retryable) and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_lock_timeout_is_retried_then_unavailable_with_nothing_changed() {
    let db = database("erase_locked").await;
    let before = rows(&db).await;
    let server = TestServer::start(config_for("erase_locked", |text| {
        with_source_settings(
            &text,
            "retry = { attempts = 2, min_delay = \"50ms\", max_delay = \"100ms\" }\n\
             erasure = { require_preview = false, lock_timeout = \"300ms\" }",
        )
    }))
    .await;
    let holder = demo::connect(cluster(), "erase_locked").await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM customers WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let mut client = server.client().await;
    let locked = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap_err();
    println!("{:?}: {}", locked.code(), locked.message());
    assert_eq!(locked.code(), Code::Unavailable, "{locked:?}");
    assert!(locked.message().contains("lock"), "{locked:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(rows(&db).await, before, "a timed-out erasure changed data");
    // Once the lock is gone, the same erasure goes through.
    let (_, receipt) = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap();
    assert_eq!(table(&receipt, "customers").rows, 1);
    server.stop().await.unwrap();
}

/// A failed erasure is a dead letter with its category, naming the table and never a value:
/// the erasure is still owed. A caller's own mistake (no preview) is not, and neither is a
/// failed preview, which is a question.
#[tokio::test]
async fn a_failed_erasure_is_a_dead_letter_and_a_callers_mistake_is_not() {
    database("erase_letters").await;
    let dir = tempfile::tempdir().unwrap();
    let letters = dir.path().join("dead-letters.jsonl");
    let with_letters = |text: String| {
        format!(
            "{text}\n[server.dead_letters]\npath = {:?}\n",
            letters.display().to_string()
        )
    };
    let server = TestServer::start(config_for("erase_letters", with_letters)).await;
    let mut client = server.client().await;
    let no_preview = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap_err();
    assert!(
        no_preview.message().contains("requires a preview"),
        "{no_preview:?}"
    );
    server.stop().await.unwrap();

    // The customers table loses its policy: the preview and the erasure both fail.
    let server = TestServer::start(config_for("erase_letters", |text| {
        with_letters(text.replacen("erase = { action = \"delete\" }\n", "", 1))
    }))
    .await;
    let mut client = server.client().await;
    for dry_run in [true, false] {
        let failed = erase(&mut client, erase_request(ALICE, dry_run, ""))
            .await
            .unwrap_err();
        assert!(failed.message().contains("no erase policy"), "{failed:?}");
    }
    server.stop().await.unwrap();

    let text = std::fs::read_to_string(&letters).unwrap_or_default();
    assert!(!text.contains(ALICE), "{text}");
    let written: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        written.len(),
        1,
        "one letter, for the erasure itself: {text}"
    );
    assert_eq!(written[0]["rpc"], "Erase");
    assert_eq!(written[0]["category"], "schema_drift");
    assert_eq!(written[0]["rule"], "erasure_policy_missing");
    assert!(
        written[0]["detail"]
            .as_str()
            .unwrap()
            .contains("'customers'"),
        "{text}"
    );
}

/// The values a pseudonym column sends into the process are bounded by bytes, measured in the
/// query: a 17 MB value is refused there, named, and nothing changes.
#[tokio::test]
async fn an_oversized_value_to_pseudonymise_is_refused_in_the_query() {
    let db = database("erase_pseudonym_big").await;
    db.batch_execute(
        "INSERT INTO support_tickets VALUES (9, 'alice@example.com', repeat('x', 17000000), \
         'body', '2024-01-01 00:00:00', '{}')",
    )
    .await
    .unwrap();
    let before = rows(&db).await;
    let server = TestServer::start(pseudonym_config("erase_pseudonym_big")).await;
    let mut client = server.client().await;
    let refused = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap_err();
    println!("{}", refused.message());
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("column 'subject'")
            && refused.message().contains("above 16777216"),
        "{refused:?}"
    );
    assert_eq!(rows(&db).await, before, "a refused erasure changed data");
    server.stop().await.unwrap();
}

/// Erasure compares the value exactly as sent, case-sensitive, whatever Extract's
/// normalisation and `match = "case_insensitive"` say, unless the source's erasure settings
/// say `matching = "as_extract"`.
#[tokio::test]
async fn erasure_matches_exactly_unless_its_source_says_as_extract() {
    let db = database("erase_matching").await;
    // One of alice's tickets was written with her address in another case.
    db.batch_execute(
        "UPDATE support_tickets SET requester_email = 'Alice@Example.COM' WHERE id = 2",
    )
    .await
    .unwrap();
    let loose_tickets = |text: String| {
        text.replace(
            "identity = { kind = \"email\", column = \"requester_email\" }",
            "identity = { kind = \"email\", column = \"requester_email\", match = \"case_insensitive\" }",
        )
    };
    let before = rows(&db).await;

    let server = TestServer::start(config_for("erase_matching", loose_tickets)).await;
    let mut client = server.client().await;
    let x = extract(&mut client, support::request("email", ALICE)).await;
    assert_eq!(
        x.rows("support_tickets").len(),
        2,
        "Extract matches the ticket case-insensitively"
    );

    let (_, exact) = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap();
    assert_eq!(exact.matching, "exact");
    assert_eq!(table(&exact, "support_tickets").rows, 1, "{exact:?}");
    assert!(
        !table(&exact, "support_tickets")
            .reached_via
            .contains("case-insensitive"),
        "{exact:?}"
    );
    // A value that only normalisation would turn into alice's address reaches nothing.
    let (_, unnormalised) = erase(&mut client, erase_request(" ALICE@example.com", true, ""))
        .await
        .unwrap();
    assert_eq!(
        unnormalised.rows_deleted + unnormalised.rows_masked,
        0,
        "{unnormalised:?}"
    );
    assert_eq!(table(&unnormalised, "customers").rows, 0);
    // The subject is the same person for the records: one subject id.
    assert_eq!(unnormalised.subject_id, exact.subject_id);
    server.stop().await.unwrap();

    let as_extract = |text: String| {
        with_source_settings(
            &loose_tickets(text),
            "erasure = { matching = \"as_extract\" }",
        )
    };
    let server = TestServer::start(config_for("erase_matching", as_extract)).await;
    let mut client = server.client().await;
    let (_, loose) = erase(&mut client, erase_request(" ALICE@example.com", true, ""))
        .await
        .unwrap();
    assert_eq!(loose.matching, "as_extract");
    assert_eq!(table(&loose, "customers").rows, 1, "{loose:?}");
    assert_eq!(table(&loose, "support_tickets").rows, 2, "{loose:?}");
    server.stop().await.unwrap();
    assert_eq!(rows(&db).await, before, "previews changed nothing");
}

/// Replicas that share a control database: a repeat on another replica points to the erasure
/// that the first one committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_on_another_replica_points_to_the_first_erasure_in_the_control_database() {
    let db = database("erase_replicas").await;
    let records = database("erase_replicas_records").await;
    records
        .batch_execute("DROP TABLE IF EXISTS dsr_audit, dsr_audit_head, dsr_dead_letters")
        .await
        .unwrap();
    let control_url = cluster().connection_string("erase_replicas_records");
    let replica = |name: &str| {
        let text = format!(
            "{}\n[server.control]\nurl_env = \"CONTROL_URL\"\n\n\
             [server.audit]\nstore = \"control\"\nreplica = \"{name}\"\n",
            demo::config_toml(cluster(), "erase_replicas", "127.0.0.1:0".parse().unwrap())
        );
        dsr_connector::config::Config::from_toml_str(&text, |var| match var {
            demo::PASSWORD_ENV => Some(cluster().password().to_owned()),
            "DSR_SUBJECT_KEY" => Some(SUBJECT_KEY.to_owned()),
            "DSR_AUDIT_KEY" => Some(demo::audit_key(SUBJECT_KEY)),
            "CONTROL_URL" => Some(control_url.clone()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let a = TestServer::start(replica("replica-a")).await;
    let b = TestServer::start(replica("replica-b")).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;

    let (_, nothing_yet) = erase(&mut on_b, erase_request("nobody@example.com", true, ""))
        .await
        .unwrap();
    assert!(nothing_yet.earlier_erasure_id.is_empty(), "{nothing_yet:?}");

    let (_, preview) = erase(&mut on_a, erase_request(ALICE, true, ""))
        .await
        .unwrap();
    let (_, first) = erase(
        &mut on_a,
        erase_request(ALICE, false, &preview.preview_digest),
    )
    .await
    .unwrap();
    assert!(first.rows_deleted > 0);
    let mut repeat = erase_request(ALICE, true, "");
    repeat.request_id = "dsr-erase-2".into();
    let (_, again) = erase(&mut on_b, repeat).await.unwrap();
    assert_eq!(again.rows_deleted + again.rows_masked, 0);
    assert_eq!(again.earlier_erasure_id, first.erasure_id, "{again:?}");
    assert_eq!(again.earlier_request_id, "dsr-erase-1");
    assert!(again.earlier_recorded_at.is_some());

    // Lookups share one kept connection: ten more open no new session with the control
    // database (each opened one, and ran the schema's DDL, before).
    let sessions = || async {
        records
            .query_one(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = sessions().await;
    for _ in 0..10 {
        let (_, again) = erase(&mut on_b, erase_request(ALICE, true, ""))
            .await
            .unwrap();
        assert_eq!(again.earlier_erasure_id, first.erasure_id);
    }
    // Statistics reach the view within PostgreSQL's reporting delay (about a second).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let opened = sessions().await - before;
    assert!(opened <= 1, "{opened} control sessions for ten lookups");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    drop(db);
}

/// The demo config for database `name` with a scanned JSON column `meta` on support tickets,
/// masked in place by `method`, without a preview.
fn json_config(name: &str, method: &str) -> dsr_connector::config::Config {
    config_for(name, |text| {
        // `prefs` keeps a customer's settings, with no text column and no foreign key: its
        // documents are masked, and nothing else of it.
        let text = format!(
            "{text}\n[[sources.tables]]\nname = \"prefs\"\n\
             reference = {{ column = \"customer_id\", table = \"customers\", to = \"id\", reach = \"owned\" }}\n\
             columns = {{ id = \"not_pii\", customer_id = \"identifier.customer_id\", \
             settings = {{ category = \"behaviour.payload\", scan_json = true }} }}\n\
             erase = {{ action = \"mask\", mask = {{ customer_id = {{ retain = \"joins the kept \
             settings\" }}, settings = {{ json = \"{method}\" }} }} }}\n"
        );
        with_source_settings(&text, "erasure = { require_preview = false }")
            .replace(
                "opened_at = \"support.time\", tags = \"not_pii\" }",
                "opened_at = \"support.time\", tags = \"not_pii\", \
                 meta = { category = \"support.message\", scan_json = true } }",
            )
            .replace(
                "body = \"redact\", ",
                &format!("body = \"redact\", meta = {{ json = \"{method}\" }}, "),
            )
    })
}

/// Inside a scanned JSON column, the personal paths of the subject's documents are masked in
/// place and the rest of each document is kept; a document the scan cannot walk completely
/// is refused and nothing changes.
#[tokio::test]
async fn json_paths_are_masked_in_place_and_the_rest_of_the_document_is_kept() {
    let db = database("erase_json").await;
    db.batch_execute(
        "CREATE TABLE prefs (id bigint PRIMARY KEY, customer_id bigint NOT NULL, settings jsonb); \
         INSERT INTO prefs VALUES (1, 1, '{\"theme\": \"dark\", \"email\": \"alice@example.com\"}'), \
           (2, 2, '{\"theme\": \"light\", \"email\": \"bob@example.com\"}'); \
         ALTER TABLE support_tickets ADD COLUMN meta jsonb; \
         UPDATE support_tickets SET meta = '{\"channel\": \"mail\", \"n\": 1.50, \
           \"from\": {\"email\": \"alice@example.com\", \"ip\": \"203.0.113.7\", \"lang\": \"en\"}, \
           \"cc\": [\"carol@example.org\", \"team\"], \"alice@example.com\": {\"opened\": 3}, \
           \"mentions\": \"alice@example.com\", \"note\": \"see the thread\"}' WHERE id = 1; \
         UPDATE support_tickets SET meta = '{\"from\": {\"email\": \"bob@example.com\"}}' WHERE id = 3; \
         INSERT INTO support_tickets \
           SELECT 100 + i, 'alice@example.com', 's', 'b', now(), '{}', \
             jsonb_build_object('i', i, 'pad', repeat('x', 2000), 'by', jsonb_build_object('email', 'alice@example.com')) \
           FROM generate_series(1, 3000) AS i;",
    )
    .await
    .unwrap();
    let before = rows(&db).await;

    let server = TestServer::start(json_config("erase_json", "redact")).await;
    let mut client = server.client().await;
    let (_, receipt) = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap();
    let tickets = table(&receipt, "support_tickets");
    // 3,002 tickets with over 6 MB of documents: masked over more than one page.
    assert_eq!(tickets.rows, 3002);
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM support_tickets WHERE id > 100 \
             AND (meta->'by'->>'email' <> '[redacted]' OR meta->>'pad' <> repeat('x', 2000))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "every page was masked, and only what is personal");
    assert!(
        tickets
            .masked_columns
            .contains(&"meta:json:redact".to_owned()),
        "{tickets:?}"
    );
    let meta: Option<serde_json::Value> = db
        .query_one("SELECT meta FROM support_tickets WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    let expected: serde_json::Value = serde_json::from_str(
        r#"{"channel": "mail", "n": 1.50,
            "from": {"email": "[redacted]", "ip": "[redacted]", "lang": "en"},
            "cc": ["[redacted]", "team"], "[redacted]#7": {"opened": 3},
            "mentions": "[redacted]", "note": "see the thread"}"#,
    )
    .unwrap();
    assert_eq!(meta, Some(expected));
    let text: String = db
        .query_one("SELECT meta::text FROM support_tickets WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(text.contains("1.50") && !text.contains("example"), "{text}");
    let null: Option<serde_json::Value> = db
        .query_one("SELECT meta FROM support_tickets WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(null, None, "a NULL document stays NULL");
    // A table of documents and no text: its documents are masked, the rest kept.
    let settings: serde_json::Value = db
        .query_one("SELECT settings FROM prefs WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        settings,
        serde_json::json!({"theme": "dark", "email": "[redacted]"})
    );
    assert_eq!(table(&receipt, "prefs").rows, 1);
    // Bob's ticket, and every other row of another subject, is byte-identical.
    let after = rows(&db).await;
    assert_eq!(
        after[&("support_tickets".to_owned(), 3)],
        before[&("support_tickets".to_owned(), 3)]
    );
    server.stop().await.unwrap();

    // A document nested deeper than the scan walks cannot be masked in place: refused, named,
    // and nothing changes.
    let db = database("erase_json_deep").await;
    db.batch_execute(&format!(
        "CREATE TABLE prefs (id bigint PRIMARY KEY, customer_id bigint NOT NULL, settings jsonb); \
         ALTER TABLE support_tickets ADD COLUMN meta jsonb; \
         UPDATE support_tickets SET meta = '{{\"a\": {}1{}}}' WHERE id = 2;",
        "[".repeat(70),
        "]".repeat(70)
    ))
    .await
    .unwrap();
    let before = rows(&db).await;
    let server = TestServer::start(json_config("erase_json_deep", "null")).await;
    let mut client = server.client().await;
    let refused = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let message = refused.message();
    assert!(
        message.contains("support_tickets")
            && message.contains("meta")
            && message.contains("json_too_deep"),
        "{message}"
    );
    assert_eq!(rows(&db).await, before, "a refused erasure changed data");
    server.stop().await.unwrap();

    // A subject erased by a numeric identity: a number equal to it in a document is masked
    // (`{"customer": 2}`), other numbers are kept.
    let db = database("erase_json_number").await;
    db.batch_execute(
        "CREATE TABLE prefs (id bigint PRIMARY KEY, customer_id bigint NOT NULL, settings jsonb); \
         ALTER TABLE support_tickets ADD COLUMN meta jsonb; \
         INSERT INTO prefs VALUES \
           (1, 1, '{\"theme\": \"dark\", \"owner\": {\"customer\": 1}}'), \
           (2, 2, '{\"theme\": \"light\", \"owner\": {\"customer\": 2}, \"visits\": 14}');",
    )
    .await
    .unwrap();
    let server = TestServer::start(json_config("erase_json_number", "redact")).await;
    let mut client = server.client().await;
    let mut request = erase_request("2", false, "");
    request.subject.as_mut().unwrap().kind = "customer_id".into();
    let (_, receipt) = erase(&mut client, request).await.unwrap();
    assert_eq!(table(&receipt, "prefs").rows, 1);
    let settings: Vec<serde_json::Value> = db
        .query("SELECT settings FROM prefs ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        settings,
        [
            serde_json::json!({"theme": "dark", "owner": {"customer": 1}}),
            serde_json::json!({"theme": "light", "owner": {"customer": "[redacted]"}, "visits": 14}),
        ]
    );
    server.stop().await.unwrap();

    // `{ json = ... }` needs a scanned column: the config does not load otherwise.
    let text = demo::config_toml(cluster(), "erase_json", "127.0.0.1:0".parse().unwrap()).replace(
        "body = \"redact\", ",
        "body = \"redact\", tags = { json = \"redact\" }, ",
    );
    let error = demo::config(cluster(), &text, SUBJECT_KEY)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("erase.mask.tags") && error.contains("scan_json"),
        "{error}"
    );
}

/// Validate reports in advance what would make every erasure of a subject with rows fail: a
/// "null" mask on a NOT NULL column, a redaction longer than a varchar column holds, and a
/// NO ACTION key from a table outside the data map. The erasure then fails as reported, and
/// changes nothing.
#[tokio::test]
async fn validate_reports_masks_and_keys_that_would_make_an_erasure_fail() {
    let db = database("erase_foreseen").await;
    db.batch_execute(
        "ALTER TABLE support_tickets ADD COLUMN code varchar(8); \
         CREATE TABLE loyalty_cards (id bigint PRIMARY KEY, \
           customer_id bigint REFERENCES customers (id), number text); \
         INSERT INTO loyalty_cards VALUES (1, 2, 'LC-2')",
    )
    .await
    .unwrap();
    let config = config_for("erase_foreseen", |text| {
        with_source_settings(&text, "erasure = { require_preview = false }")
            .replace(
                "tags = \"not_pii\" }",
                "tags = \"not_pii\", code = \"support.message\" }",
            )
            .replace(
                "subject = \"redact\", body = \"redact\"",
                "subject = \"null\", body = \"redact\", code = \"redact\"",
            )
    });
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let gate = validate_demo(&mut client).await;
    println!("{}", gate.text);
    let tickets = gate.table("support_tickets").warnings.join("\n");
    assert!(
        tickets.contains("support_tickets.erase.mask.subject: \"null\" on a NOT NULL column"),
        "{tickets}"
    );
    assert!(
        tickets.contains("erase.mask.code: the column holds at most 8 characters"),
        "{tickets}"
    );
    let customers = gate.table("customers").warnings.join("\n");
    assert!(
        customers.contains("table 'loyalty_cards' references 'customers' with ON DELETE NO ACTION")
            && customers.contains("fails (ERASURE_CONSTRAINT)"),
        "{customers}"
    );

    // As reported: alice's erasure fails on the NOT NULL column, and nothing changes.
    let before = rows(&db).await;
    let failed = erase(&mut client, erase_request(ALICE, false, ""))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::FailedPrecondition, "{failed:?}");
    assert!(failed.message().contains("support_tickets"), "{failed:?}");
    assert_eq!(rows(&db).await, before);
    server.stop().await.unwrap();
}

/// Masking a referenced column is an UPDATE of the key: a table outside the data map whose key
/// would follow it (`ON UPDATE CASCADE`) is reported by Validate and refused by Erase.
#[tokio::test]
async fn a_masked_key_that_cascades_on_update_into_an_undeclared_table_is_refused() {
    let db = database("erase_update_cascade").await;
    db.batch_execute(
        "ALTER TABLE support_tickets ADD CONSTRAINT ticket_requester UNIQUE (id, requester_email); \
         CREATE TABLE ticket_copies (ticket_id bigint, email text, \
           FOREIGN KEY (ticket_id, email) REFERENCES support_tickets (id, requester_email) \
           ON UPDATE CASCADE); \
         INSERT INTO ticket_copies VALUES (1, 'alice@example.com')",
    )
    .await
    .unwrap();
    let before = rows(&db).await;
    let server = TestServer::start(config_for("erase_update_cascade", |t| t)).await;
    let mut client = server.client().await;
    let gate = validate_demo(&mut client).await;
    let tickets = gate.table("support_tickets").warnings.join("\n");
    assert!(
        tickets
            .contains("table 'ticket_copies' references 'support_tickets' with ON UPDATE CASCADE"),
        "{}",
        gate.text
    );
    let refused = erase(&mut client, erase_request(ALICE, true, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("ticket_copies")
            && refused.message().contains("ON UPDATE CASCADE"),
        "{refused:?}"
    );
    assert_eq!(rows(&db).await, before);
    let copy: String = db
        .query_one("SELECT email FROM ticket_copies", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(copy, ALICE, "the undeclared table is untouched");
    server.stop().await.unwrap();
}
