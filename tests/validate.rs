//! Validate, and the schema gate it shares with Extract: live schema changes, dry runs, the
//! manifest rules, and hostile JSON. Every test that changes a schema uses a table of its own.
//! A type changed under a cached gate is refused as drift on both stores, from one body.

mod support;

use std::sync::OnceLock;

use dsr_connector::pb::{Identity, Manifest, TableCheck, TableStatus, ValidateRequest};
use support::{TestServer, config, config_text, extract, request, sql, validate};
use tonic::Code;

fn schema_only(source: &str) -> ValidateRequest {
    ValidateRequest {
        source: source.into(),
        ..Default::default()
    }
}

fn dry_run(kind: &str, value: &str) -> ValidateRequest {
    ValidateRequest {
        source: "demo".into(),
        subject: Some(Identity {
            kind: kind.into(),
            value: value.into(),
        }),
        ..Default::default()
    }
}

fn status(t: &TableCheck) -> TableStatus {
    TableStatus::try_from(t.status).unwrap()
}

#[tokio::test]
async fn the_demo_schema_passes_table_by_table() {
    let server = TestServer::demo().await;
    let v = validate(&mut server.client().await, schema_only("demo"))
        .await
        .unwrap();
    assert!(v.verdict.ok, "{:?}", v.verdict);
    assert_eq!(v.tables.len(), 6);
    assert!(v.tables.iter().all(|t| status(t) == TableStatus::Ok));
    assert_eq!(
        v.table("support_tickets").unreachable_from,
        vec!["customer_id"]
    );
    assert!(v.table("orders").unreachable_from.is_empty());

    let missing = validate(&mut server.client().await, schema_only("nope")).await;
    assert_eq!(missing.err().unwrap().code(), Code::NotFound);
    server.stop().await.unwrap();
}

/// A config with one extra table `name` (identity by e-mail), a gate that re-reads the catalog
/// on every request, and the given unmapped-column policy.
fn gate_config(name: &str, columns: &str, policy: &str) -> dsr_connector::config::Config {
    let text = config_text(&format!(
        r#"
[[sources.tables]]
name = "{name}"
identity = {{ kind = "email", column = "email" }}
columns = {{ {columns} }}
"#
    ))
    .replace(
        "on_coercion_error = \"reject_row\"",
        &format!(
            "on_coercion_error = \"reject_row\"\nunmapped_columns = \"{policy}\"\nschema_refresh = \"0s\""
        ),
    );
    config(&text)
}

fn only(table: &str) -> dsr_connector::pb::ExtractRequest {
    let mut req = request("email", "alice@example.com");
    req.tables = vec![table.into()];
    req
}

#[tokio::test]
async fn an_added_column_is_drift_until_classified() {
    let db = sql().await;
    db.batch_execute(
        "CREATE TABLE gate_add (id int PRIMARY KEY, email text);
         INSERT INTO gate_add VALUES (1, 'alice@example.com');",
    )
    .await
    .unwrap();
    let server = TestServer::start(gate_config(
        "gate_add",
        "id = \"not_pii\", email = \"contact.email\"",
        "fail",
    ))
    .await;
    let mut client = server.client().await;
    assert_eq!(
        extract(&mut client, only("gate_add")).await.code(),
        Code::Ok
    );

    db.batch_execute("ALTER TABLE gate_add ADD COLUMN shoe_size int")
        .await
        .unwrap();
    let v = validate(&mut client, schema_only("demo")).await.unwrap();
    assert!(!v.verdict.ok);
    let check = v.table("gate_add");
    assert_eq!(status(check), TableStatus::UnmappedColumns);
    assert!(check.problems[0].contains("'shoe_size'"), "{check:?}");
    let x = extract(&mut client, only("gate_add")).await;
    assert_eq!(x.code(), Code::FailedPrecondition);
    assert!(
        x.message().contains("gate_add") && x.message().contains("shoe_size"),
        "{}",
        x.message()
    );
    server.stop().await.unwrap();

    // Under the warn policy the extraction proceeds, without the unclassified column, and
    // says so.
    let server = TestServer::start(gate_config(
        "gate_add",
        "id = \"not_pii\", email = \"contact.email\"",
        "warn",
    ))
    .await;
    let mut client = server.client().await;
    let x = extract(&mut client, only("gate_add")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.started.unwrap().tables[0].columns.len(), 2);
    let warnings = x.manifest.unwrap().metadata["schema_warnings"].clone();
    assert!(warnings.contains("shoe_size"), "{warnings}");
    let v = validate(&mut client, schema_only("demo")).await.unwrap();
    assert!(v.verdict.ok);
    assert!(v.table("gate_add").warnings[0].contains("shoe_size"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_dropped_column_and_a_changed_type_are_named() {
    let db = sql().await;
    db.batch_execute(
        "CREATE TABLE gate_change (id int PRIMARY KEY, email text, phone text, note text);
         INSERT INTO gate_change VALUES (1, 'alice@example.com', '+44 20 7946 0958', 'n');",
    )
    .await
    .unwrap();
    let columns = "id = \"not_pii\", email = \"contact.email\", phone = \"contact.phone\", note = \"not_pii\"";
    let server = TestServer::start(gate_config("gate_change", columns, "fail")).await;
    let mut client = server.client().await;
    assert_eq!(
        extract(&mut client, only("gate_change")).await.code(),
        Code::Ok
    );

    db.batch_execute("ALTER TABLE gate_change DROP COLUMN note")
        .await
        .unwrap();
    let v = validate(&mut client, schema_only("demo")).await.unwrap();
    let check = v.table("gate_change");
    assert_eq!(status(check), TableStatus::MissingColumns);
    assert!(
        check.problems[0].contains("'note' does not exist"),
        "{check:?}"
    );
    let x = extract(&mut client, only("gate_change")).await;
    assert_eq!(x.code(), Code::FailedPrecondition);
    assert!(x.message().contains("note"));

    db.batch_execute(
        "ALTER TABLE gate_change ADD COLUMN note text;
         ALTER TABLE gate_change ALTER COLUMN phone TYPE bigint USING 442079460958",
    )
    .await
    .unwrap();
    let v = validate(&mut client, schema_only("demo")).await.unwrap();
    let check = v.table("gate_change");
    assert_eq!(status(check), TableStatus::TypeMismatch, "{check:?}");
    assert!(check.problems[0].contains("'phone'") && check.problems[0].contains("contact.phone"));
    assert_eq!(
        extract(&mut client, only("gate_change")).await.code(),
        Code::FailedPrecondition
    );
    server.stop().await.unwrap();
}

/// The cached-gate table on MariaDB, made with this binary's MariaDB.
const GATE_CACHED_MARIADB: &str = "CREATE TABLE gate_cached \
     (id INT PRIMARY KEY, email VARCHAR(100), score INT); \
     INSERT INTO gate_cached VALUES (1, 'alice@example.com', 7);";

const GATE_CACHED_TABLE: &str = r#"
[[sources.tables]]
name = "gate_cached"
identity = { kind = "email", column = "email" }
columns = { id = "not_pii", email = "contact.email", score = "not_pii" }
"#;

both_stores!(
    a_type_change_under_a_cached_gate_is_still_refused,
    type_change_under_a_cached_gate_on
);

async fn type_change_under_a_cached_gate_on(store: &'static str) {
    // The default refresh (60 s): the second request uses the cached gate.
    let (server, alter) = if store == "demo" {
        let db = sql().await;
        db.batch_execute(
            "CREATE TABLE gate_cached (id int PRIMARY KEY, email text, score int);
             INSERT INTO gate_cached VALUES (1, 'alice@example.com', 7);",
        )
        .await
        .unwrap();
        let server = TestServer::start(config(&config_text(GATE_CACHED_TABLE))).await;
        let alter: Box<dyn Fn()> = Box::new(|| {
            support::run_sql_blocking("ALTER TABLE gate_cached ALTER COLUMN score TYPE float8")
        });
        (server, alter)
    } else {
        let mariadb = support::mariadb::server(&[("shop", GATE_CACHED_MARIADB)]);
        let text = support::mariadb::config_text(mariadb, "shop", GATE_CACHED_TABLE);
        let server = TestServer::start(support::mariadb::config(mariadb, &text)).await;
        let alter: Box<dyn Fn()> = Box::new(move || {
            mariadb
                .execute("shop", "ALTER TABLE gate_cached MODIFY score DOUBLE;")
                .unwrap();
        });
        (server, alter)
    };
    let mut client = server.client().await;
    let mut req = only("gate_cached");
    req.source = store.into();
    assert_eq!(extract(&mut client, req.clone()).await.code(), Code::Ok);
    alter();
    let x = extract(&mut client, req.clone()).await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    // Named by the column when the query is prepared anew (PostgreSQL) or its first value
    // arrives of another kind (MariaDB), by the table when a PostgreSQL statement prepared
    // before the change meets it.
    assert!(
        x.message().contains("gate_cached")
            && (x.message().contains("'score': its type changed")
                || x.message().contains("definition changed")),
        "{}",
        x.message()
    );
    // The cache was dropped: the next request reads the catalog and works.
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_dry_run_reports_counts_findings_and_the_manifest_but_no_values() {
    let server = TestServer::demo().await;
    let mut client = server.client().await;
    let v = validate(&mut client, dry_run("email", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!(v.table("customers").row_count, 1);
    assert_eq!(v.table("order_items").row_count, 5);
    let legacy = v.table("legacy_accounts");
    assert_eq!((legacy.row_count, legacy.rejected_count), (3, 1));
    assert_eq!(legacy.violations[0].category, "unparseable_date");
    assert!(
        v.table("events")
            .pii_fields
            .contains(&"events.payload.contact.email:contact.email".to_owned())
    );
    // The rejected legacy row is a finding.
    assert!(!v.verdict.ok);
    assert_eq!(v.verdict.violations.len(), 1, "{:?}", v.verdict.violations);
    assert!(
        v.verdict.violations[0].contains("legacy_accounts")
            && v.verdict.violations[0].contains("unparseable_date")
    );
    let m = v
        .verdict
        .manifest
        .as_ref()
        .expect("the manifest the extraction would produce");
    assert_eq!(m.row_count, 18);
    assert_eq!(m.metadata.get("dry_run").map(String::as_str), Some("true"));
    for value in [
        "Alice Liddell",
        "+44 20 7946 0958",
        "1 Rabbit Hole",
        "31/02/2010",
        "Where is my clock?",
        "alice@example.com",
    ] {
        assert!(!v.text.contains(value), "the dry run returned '{value}'");
    }

    // By customer id, tables the kind cannot reach say so.
    let v = validate(&mut client, dry_run("customer_id", "1"))
        .await
        .unwrap();
    assert_eq!(status(v.table("support_tickets")), TableStatus::Unreachable);
    assert_eq!(v.table("orders").row_count, 3);

    // A bad identity is a bad request, as in Extract.
    let bad = validate(&mut client, dry_run("email", "")).await;
    assert_eq!(bad.err().unwrap().code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

/// A text column classified not_pii that holds personal data inside its text is named by a
/// dry run, with the category and how many values, and no value.
#[tokio::test]
async fn a_dry_run_names_personal_data_inside_a_column_classified_not_pii() {
    let text = config_text("").replace(
        "subject = \"support.message\", body = \"support.message\"",
        "subject = \"support.message\", body = \"not_pii\"",
    );
    assert!(
        text.contains("body = \"not_pii\""),
        "the demo's tickets changed"
    );
    let server = TestServer::start(config(&text)).await;
    let mut client = server.client().await;
    let v = validate(&mut client, dry_run("email", "alice@example.com"))
        .await
        .unwrap();
    let tickets = v.table("support_tickets").warnings.join("\n");
    // Ticket 1's body asks to be called on +44 20 7946 0958; ticket 2's holds nothing.
    assert!(
        tickets.contains(
            "column 'body' is classified not_pii, and the dry run found contact.phone inside 1 \
             of its values"
        ),
        "{}",
        v.text
    );
    assert!(!v.text.contains("7946"), "{}", v.text);
    // A schema-only check reads no value, so it finds nothing of the kind.
    let v = validate(&mut client, schema_only("demo")).await.unwrap();
    assert!(
        !v.table("support_tickets")
            .warnings
            .join("")
            .contains("found")
    );
    server.stop().await.unwrap();
}

fn good_manifest() -> Manifest {
    Manifest {
        subject_id: "hmac-sha256:abc".into(),
        pii_fields: vec!["customers.email".into()],
        extraction_timestamp: Some(prost_types::Timestamp::default()),
        row_count: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn manifests_are_checked_rule_by_rule() {
    let server = TestServer::demo().await;
    let mut client = server.client().await;
    let check = |m: Manifest| ValidateRequest {
        manifest: Some(m),
        ..Default::default()
    };
    let v = validate(&mut client, check(good_manifest())).await.unwrap();
    assert!(v.verdict.ok, "{:?}", v.verdict);

    let broken: Vec<(Manifest, &str)> = vec![
        (
            Manifest {
                subject_id: "  ".into(),
                ..good_manifest()
            },
            "subject_id",
        ),
        (
            Manifest {
                pii_fields: vec![" ".into(), "".into()],
                ..good_manifest()
            },
            "pii_fields",
        ),
        (
            Manifest {
                extraction_timestamp: None,
                ..good_manifest()
            },
            "extraction_timestamp",
        ),
        (
            // The total must be the per-table counts' sum (a negative total no longer fits
            // the contract's uint64).
            Manifest {
                row_count: 3,
                tables: vec![dsr_connector::pb::TableCount {
                    table: "orders".into(),
                    row_count: 2,
                    verified: true,
                    ..Default::default()
                }],
                ..good_manifest()
            },
            "row_count",
        ),
    ];
    for (manifest, field) in broken.clone() {
        let v = validate(&mut client, check(manifest)).await.unwrap();
        assert!(!v.verdict.ok);
        assert_eq!(
            v.verdict.violations.len(),
            1,
            "{field}: {:?}",
            v.verdict.violations
        );
        assert!(
            v.verdict.violations[0].contains(field),
            "{:?}",
            v.verdict.violations
        );
    }
    let all = Manifest {
        subject_id: String::new(),
        pii_fields: vec![],
        extraction_timestamp: None,
        row_count: 3,
        tables: vec![dsr_connector::pb::TableCount {
            table: "orders".into(),
            row_count: 2,
            verified: true,
            ..Default::default()
        }],
        ..good_manifest()
    };
    let v = validate(&mut client, check(all)).await.unwrap();
    assert_eq!(v.verdict.violations.len(), 4, "{:?}", v.verdict.violations);
    for (_, field) in broken {
        assert!(v.verdict.violations.iter().any(|p| p.contains(field)));
    }
    server.stop().await.unwrap();
}

/// A table of JSON documents for one subject: PII at depth 1, depth 5 and in arrays of
/// objects; 5,000 levels of nesting; a key with a control character. A second subject has a
/// document too large for one message.
fn hostile_setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
        support::run_sql_blocking(&format!(
            r#"CREATE TABLE documents (id int PRIMARY KEY, owner text NOT NULL, doc json NOT NULL);
               INSERT INTO documents VALUES
                 (1, 'alice@example.com', '{{"email": "alice@example.com",
                      "a": {{"b": {{"c": {{"d": {{"phone": "+44 20 7946 0958"}}}}}}}},
                      "history": [{{"ip": "203.0.113.7"}}, {{"note": "nothing"}}, {{"card": "4242 4242 4242 4242"}}]}}'),
                 (2, 'alice@example.com', '{deep}'),
                 (3, 'alice@example.com', '{{"ok\u0001": "x"}}'),
                 (4, 'big@example.com', '{big}');"#
        ));
    });
}

fn hostile_config() -> dsr_connector::config::Config {
    hostile_setup();
    config(&config_text(
        r#"
[[sources.tables]]
name = "documents"
identity = { kind = "email", column = "owner" }
columns = { id = "not_pii", owner = "contact.email", doc = { category = "behaviour", scan_json = true } }
"#,
    ))
}

#[tokio::test]
async fn hostile_json_gives_violations_and_the_server_stays_up() {
    let server = TestServer::start(hostile_config()).await;
    let mut client = server.client().await;

    let x = extract(&mut client, only("documents")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("documents").len(), 3, "hostile rows still stream");
    let done = &x.completed[0];
    let mut fields = done.pii_fields.clone();
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "documents.doc.a.b.c.d.phone:contact.phone",
            "documents.doc.email:contact.email",
            "documents.doc.history[].card:financial.card",
            "documents.doc.history[].ip:network.ip",
        ]
    );
    let mut categories: Vec<(&str, &str)> = done
        .violations
        .iter()
        .map(|v| (v.primary_key.as_str(), v.category.as_str()))
        .collect();
    categories.sort();
    assert_eq!(
        categories,
        vec![
            ("id=2", "json_too_deep"),
            ("id=3", "json_control_chars_in_key")
        ]
    );
    assert_eq!(
        x.manifest
            .unwrap()
            .metadata
            .get("json_scan_violations")
            .map(String::as_str),
        Some("2")
    );

    // A document larger than a message: a precise error naming the column, not a client-side
    // "message larger than max".
    let mut req = request("email", "big@example.com");
    req.tables = vec!["documents".into()];
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::ResourceExhausted, "{}", x.message());
    assert!(
        x.message().contains("'doc'") && x.message().contains("documents"),
        "{}",
        x.message()
    );

    // The dry run reports the same, as findings.
    let mut req = dry_run("email", "big@example.com");
    req.source = "demo".into();
    let v = validate(&mut client, req).await.unwrap();
    assert!(!v.verdict.ok);
    assert_eq!(status(v.table("documents")), TableStatus::ExtractionFailed);

    // And the server still serves.
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_reference_without_an_index_is_a_warning_that_names_the_index() {
    let db = sql().await;
    db.batch_execute(
        "CREATE TABLE ref_unindexed (id bigint PRIMARY KEY, customer_id bigint NOT NULL);
         CREATE TABLE ref_indexed (id bigint PRIMARY KEY, customer_id bigint NOT NULL);
         CREATE INDEX ref_indexed_customer_id ON ref_indexed (customer_id);
         CREATE VIEW ref_view AS SELECT id, customer_id FROM ref_unindexed;
         INSERT INTO ref_unindexed VALUES (1, 1);
         INSERT INTO ref_indexed VALUES (1, 1);",
    )
    .await
    .unwrap();
    let mut extra = String::new();
    for table in ["ref_unindexed", "ref_indexed", "ref_view"] {
        extra.push_str(&format!(
            "[[sources.tables]]\nname = \"{table}\"\n\
             reference = {{ column = \"customer_id\", table = \"customers\", to = \"id\", reach = \"owned\" }}\n\
             columns = {{ id = \"not_pii\", customer_id = \"identifier.customer_id\" }}\n\
             erase = {{ action = \"delete\" }}\n\n"
        ));
    }
    let server = TestServer::start(config(&config_text(&extra))).await;
    let mut client = server.client().await;
    let v = validate(&mut client, schema_only("demo")).await.unwrap();
    assert!(
        v.verdict.ok,
        "a warning does not fail the gate: {:?}",
        v.verdict
    );
    let unindexed = v.table("ref_unindexed").warnings.join("\n");
    assert!(
        unindexed
            .contains(r#"reference column 'customer_id' (to customers.id): no index serves it"#)
            && unindexed.contains(
                r#"create one: CREATE INDEX ON "public"."ref_unindexed" ("customer_id");"#
            ),
        "{unindexed}"
    );
    assert!(v.table("ref_indexed").warnings.is_empty());
    assert!(
        v.table("ref_view").warnings.is_empty(),
        "a view has no index to advise on"
    );
    // The demo's own references all have their indexes.
    for table in ["orders", "order_items", "events"] {
        assert!(v.table(table).warnings.is_empty(), "{table}");
    }
    let x = extract(&mut client, request("customer_id", "1")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("ref_unindexed").len(), 1);
    server.stop().await.unwrap();
}
