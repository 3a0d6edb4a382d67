//! Masking inside JSON documents in place, and what Validate says of masks and keys that
//! would make an erasure fail.

use super::*;

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
