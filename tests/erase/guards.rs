//! Erasures that meet other callers and other writers: a shared address on the access side,
//! a row written mid-erasure, a lock held too long, failures as dead letters, oversized
//! pseudonyms, exact matching, and a repeat on another replica.

use super::*;

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
