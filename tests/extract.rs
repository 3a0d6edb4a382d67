//! Extract against the demo data through a real tonic client: the rows, their types, the
//! stream's shape, the manifest, and the documented status for each kind of bad input. What
//! does not depend on the store (the stream's shape, the manifest, unreachable and restricted
//! tables, an empty subject, SQL in identity values) runs from one body on both stores: the
//! demo shop on PostgreSQL and on MariaDB (`both_stores!`).

mod support;

use std::collections::BTreeMap;

use dsr_connector::pb::{ValueKind, value::Kind};
use support::mariadb::on;
use support::{Extraction, TestServer, extract, request, sql, sql_text_expr, value_text};
use tonic::Code;

/// Direct SQL for each uncoerced demo table: the rows that belong to the subject with e-mail `$1`,
/// written by hand, independently of the service's plan compiler.
const DIRECT: &[(&str, &str)] = &[
    ("customers", "SELECT {cols} FROM customers WHERE email = $1"),
    (
        "orders",
        "SELECT {cols} FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email = $1)",
    ),
    (
        "order_items",
        "SELECT {cols} FROM order_items WHERE order_id IN \
         (SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.email = $1)",
    ),
    (
        "events",
        "SELECT {cols} FROM events WHERE customer_id IN (SELECT id FROM customers WHERE email = $1)",
    ),
    (
        "support_tickets",
        "SELECT {cols} FROM support_tickets WHERE requester_email = $1",
    ),
    // legacy_accounts is coerced (VARCHAR dates, epochs): see legacy_values_are_coerced_to_utc.
];

/// Asserts that every table's streamed rows equal what direct SQL returns, as sorted rows of
/// text.
async fn assert_rows_match_direct_sql(x: &Extraction, email: &str) {
    let db = sql().await;
    let started = x.started.as_ref().expect("a started event");
    for (table, template) in DIRECT {
        let planned = started
            .tables
            .iter()
            .find(|t| t.table == *table)
            .unwrap_or_else(|| panic!("table {table} is not in the plan"));
        let cols = planned
            .columns
            .iter()
            .map(|c| sql_text_expr(&c.name, &c.pg_type))
            .collect::<Vec<_>>()
            .join(", ");
        let direct = db
            .query(&template.replace("{cols}", &cols), &[&email])
            .await
            .unwrap();
        let mut want: Vec<Vec<Option<String>>> = direct
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect()
            })
            .collect();
        let mut got: Vec<Vec<Option<String>>> = x
            .rows(table)
            .into_iter()
            .map(|values| values.iter().map(value_text).collect())
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "rows of {table}");
    }
}

#[tokio::test]
async fn alice_gets_exactly_her_rows_in_every_table() {
    let server = TestServer::demo().await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_rows_match_direct_sql(&x, "alice@example.com").await;

    let counts: BTreeMap<&str, u64> = x
        .completed
        .iter()
        .map(|c| (c.table.as_str(), c.row_count))
        .collect();
    let expected = BTreeMap::from([
        ("customers", 1),
        ("orders", 3),
        ("order_items", 5),
        ("events", 4),
        ("support_tickets", 2),
        ("legacy_accounts", 3),
    ]);
    assert_eq!(counts, expected);

    let manifest = x.manifest.as_ref().expect("a manifest");
    assert_eq!(manifest.row_count, 18);
    assert!(manifest.tables.iter().all(|t| t.verified));
    assert_eq!(
        manifest
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.row_count))
            .collect::<BTreeMap<_, _>>(),
        expected
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn values_carry_their_types() {
    let server = TestServer::demo().await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let started = x.started.as_ref().unwrap();
    let customers = started
        .tables
        .iter()
        .find(|t| t.table == "customers")
        .unwrap();
    let kind_of = |name: &str| {
        customers
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| ValueKind::try_from(c.kind).unwrap())
    };
    assert_eq!(kind_of("id"), Some(ValueKind::Int64));
    assert_eq!(kind_of("loyalty_points"), Some(ValueKind::Decimal));
    assert_eq!(kind_of("created_at"), Some(ValueKind::Timestamp));
    assert_eq!(kind_of("birth_date"), Some(ValueKind::Date));
    assert_eq!(kind_of("marketing_opt_in"), Some(ValueKind::Bool));

    let row = &x.rows("customers")[0];
    let col = |name: &str| {
        let i = customers
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap();
        row[i].kind.clone().unwrap()
    };
    assert_eq!(col("id"), Kind::Int64Value(1));
    assert_eq!(col("email"), Kind::StringValue("alice@example.com".into()));
    assert_eq!(col("loyalty_points"), Kind::DecimalValue("1250.50".into()));
    assert_eq!(col("birth_date"), Kind::DateValue("1990-05-04".into()));
    assert_eq!(col("marketing_opt_in"), Kind::BoolValue(true));
    match col("created_at") {
        Kind::TimestampValue(t) => {
            // 2021-03-14 09:26:53.589793+00
            assert_eq!(t.seconds, 1_615_714_013);
            assert_eq!(t.nanos, 589_793_000);
        }
        other => panic!("created_at: {other:?}"),
    }

    // The exact decimal survives: 99999.99 is not representable as a double.
    assert!(
        x.column("order_items", "unit_price")
            .contains(&Kind::DecimalValue("99999.99".into()))
    );

    // JSONB comes through as JSON text that parses, nested personal data included.
    let mut found_nested_email = false;
    for payload in x.column("events", "payload") {
        let Kind::JsonValue(text) = &payload else {
            panic!("payload is not JSON: {payload:?}");
        };
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        found_nested_email |= json.pointer("/contact/email").is_some();
    }
    assert!(found_nested_email);
    assert!(
        x.column("events", "ip")
            .iter()
            .all(|ip| matches!(ip, Kind::StringValue(_) | Kind::NullValue(_)))
    );

    // Arrays become JSON arrays; uuid becomes its text form.
    assert!(
        x.column("support_tickets", "tags")
            .contains(&Kind::JsonValue("[\"shipping\", \"urgent\"]".into()))
    );
    assert!(
        x.column("legacy_accounts", "legacy_ref")
            .contains(&Kind::StringValue(
                "a1b2c3d4-0000-4000-8000-000000000001".into()
            ))
    );
    server.stop().await.unwrap();
}

both_stores!(
    stream_has_start_then_tables_then_manifest,
    stream_has_start_then_tables_then_manifest_on
);

async fn stream_has_start_then_tables_then_manifest_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let mut req = on(source, "email", "alice@example.com");
    req.batch_size = 2;
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.order.first(), Some(&"started"));
    assert_eq!(x.order.last(), Some(&"manifest"));
    assert_eq!(x.order.iter().filter(|e| **e == "manifest").count(), 1);

    // Each table's batches come before its completion, hold at most batch_size rows, and
    // their offsets are contiguous.
    let plan: Vec<&str> = x
        .started
        .as_ref()
        .unwrap()
        .tables
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    let completed: Vec<&str> = x.completed.iter().map(|c| c.table.as_str()).collect();
    assert_eq!(plan, completed, "tables complete in plan order");
    // Each table opens with its expected count, then its batches, then its completion; the
    // tables do not interleave.
    let mut expected = Vec::new();
    for (table, done) in plan.iter().zip(&x.completed) {
        expected.push(("table_started", table.to_string()));
        let batches = x.batches.iter().filter(|b| b.table == *table).count();
        expected.extend(std::iter::repeat_n(("batch", table.to_string()), batches));
        expected.push(("completed", table.to_string()));
        let started = x.table_started.iter().find(|t| t.table == *table).unwrap();
        assert_eq!(
            started.expected_rows,
            done.row_count + done.rejected_count,
            "table {table}: the count announced first is the one verified"
        );
    }
    assert_eq!(x.table_events, expected);
    // A subject without rows: every table is still announced, with zero.
    let none = extract(
        &mut server.client().await,
        on(source, "email", "nobody@example.com"),
    )
    .await;
    assert_eq!(none.code(), Code::Ok, "{}", none.message());
    assert_eq!(none.table_started.len(), plan.len());
    assert!(none.table_started.iter().all(|t| t.expected_rows == 0));
    for table in &plan {
        let batches: Vec<_> = x.batches.iter().filter(|b| b.table == *table).collect();
        let mut offset = 0;
        for b in &batches {
            assert!(b.rows.len() <= 2 && !b.rows.is_empty());
            assert_eq!(b.offset, offset);
            assert_eq!(b.columns.len(), b.rows[0].values.len());
            offset += b.rows.len() as u64;
        }
    }
    // order_items has 5 rows for alice: batches of 2, 2, 1.
    let sizes: Vec<usize> = x
        .batches
        .iter()
        .filter(|b| b.table == "order_items")
        .map(|b| b.rows.len())
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    // The plan lists tables nearer the identity first: order_items needs two hops.
    assert_eq!(plan.last(), Some(&"order_items"));
    server.stop().await.unwrap();
}

both_stores!(
    manifest_follows_the_extraction_schema,
    manifest_follows_the_extraction_schema_on
);

async fn manifest_follows_the_extraction_schema_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let x = extract(
        &mut server.client().await,
        on(source, "email", "alice@example.com"),
    )
    .await;
    let m = x.manifest.expect("a manifest");
    assert_eq!(
        m.subject_id,
        dsr_connector::subject::subject_id(
            support::SUBJECT_KEY.as_bytes(),
            "email",
            "alice@example.com"
        )
    );
    assert!(!m.subject_id.contains("alice"));
    assert!(m.pii_fields.contains(&"customers.email".to_owned()));
    assert!(m.pii_fields.contains(&"order_items.sku".to_owned()));
    assert!(
        !m.pii_fields.contains(&"customers.created_at".to_owned()),
        "not_pii is not listed"
    );
    let mut sorted = m.pii_fields.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, m.pii_fields);
    assert!(m.pii_fields.iter().all(|f| f == &f.trim().to_lowercase()));
    assert!(m.extraction_timestamp.is_some() && m.started_at.is_some() && m.finished_at.is_some());
    assert_eq!(m.compliance_tag.as_deref(), Some("gdpr-art15"));
    assert_eq!(m.request_id, "test-dsr-1");
    assert_eq!(
        m.metadata.get("isolation").map(String::as_str),
        Some("repeatable read, read only")
    );
    assert_eq!(m.extraction_id, x.started.unwrap().extraction_id);
    assert!(dsr_connector::engine::extract::manifest::violations(&m).is_empty());
    server.stop().await.unwrap();
}

both_stores!(
    identity_by_customer_id_reports_tables_it_cannot_reach,
    identity_by_customer_id_reports_tables_it_cannot_reach_on
);

async fn identity_by_customer_id_reports_tables_it_cannot_reach_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let x = extract(&mut server.client().await, on(source, "customer_id", "1")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let started = x.started.as_ref().unwrap();
    let mut unreachable: Vec<&str> = started
        .unreachable_tables
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    unreachable.sort();
    assert_eq!(unreachable, vec!["legacy_accounts", "support_tickets"]);
    assert!(
        started
            .unreachable_tables
            .iter()
            .all(|t| t.reason.contains("customer_id"))
    );
    assert_eq!(
        x.manifest
            .as_ref()
            .unwrap()
            .metadata
            .get("unreachable_tables")
            .map(String::as_str),
        Some("support_tickets,legacy_accounts")
    );
    assert_eq!(x.rows("order_items").len(), 5);

    // Asking for an unreachable table by name is an error, not a silent skip.
    let mut req = on(source, "customer_id", "1");
    req.tables = vec!["support_tickets".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(x.message().contains("support_tickets"), "{}", x.message());

    // An identity value that is not a valid customer id is a bad request, and the message does
    // not echo the value.
    let x = extract(
        &mut server.client().await,
        on(source, "customer_id", "not-a-number"),
    )
    .await;
    assert_eq!(x.code(), Code::InvalidArgument, "{}", x.message());
    assert!(!x.message().contains("not-a-number"), "{}", x.message());
    server.stop().await.unwrap();
}

both_stores!(tables_can_be_restricted, tables_can_be_restricted_on);

async fn tables_can_be_restricted_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let mut req = on(source, "email", "alice@example.com");
    req.tables = vec!["order_items".into(), "public.orders".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let plan: Vec<&str> = x
        .started
        .as_ref()
        .unwrap()
        .tables
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    assert_eq!(plan, vec!["orders", "order_items"]);
    assert_eq!(x.rows("order_items").len(), 5);
    assert_eq!(x.manifest.unwrap().row_count, 8);

    let mut req = on(source, "email", "alice@example.com");
    req.tables = vec!["no_such_table".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::NotFound);
    assert!(x.message().contains("no_such_table"));
    // The status carries a google.rpc.ErrorInfo with a stable reason and the names at fault.
    let info = error_info(x.status.as_ref().unwrap());
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("UNKNOWN_TABLE", "dsr-connector")
    );
    assert_eq!(info.metadata.get("table").unwrap(), "no_such_table");
    assert_eq!(info.metadata.get("source").unwrap(), source);

    let mut req = on(source, "email", "alice@example.com");
    req.source = "nowhere".into();
    let x = extract(&mut server.client().await, req).await;
    let info = error_info(x.status.as_ref().unwrap());
    assert_eq!(info.reason, "UNKNOWN_SOURCE");
    assert_eq!(info.metadata.get("source").unwrap(), "nowhere");
    server.stop().await.unwrap();
}

/// The ErrorInfo of a status, which every status of the service carries.
fn error_info(status: &tonic::Status) -> tonic_types::ErrorInfo {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
}

both_stores!(
    a_subject_without_data_gets_a_verified_empty_manifest,
    a_subject_without_data_gets_a_verified_empty_manifest_on
);

async fn a_subject_without_data_gets_a_verified_empty_manifest_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let x = extract(
        &mut server.client().await,
        on(source, "email", "nobody@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert!(x.batches.is_empty());
    let m = x.manifest.unwrap();
    assert_eq!(m.row_count, 0);
    assert_eq!(m.tables.len(), 6);
    assert!(m.tables.iter().all(|t| t.verified && t.row_count == 0));
    assert!(!m.pii_fields.is_empty(), "the fields searched are listed");
    server.stop().await.unwrap();
}

both_stores!(
    sql_in_identity_values_is_only_a_value,
    sql_in_identity_values_is_only_a_value_on
);

async fn sql_in_identity_values_is_only_a_value_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let alice = |x: &Extraction| x.rows("customers").len() + x.rows("orders").len();
    let before = extract(
        &mut server.client().await,
        on(source, "email", "alice@example.com"),
    )
    .await;
    assert_eq!(before.code(), Code::Ok, "{}", before.message());
    assert!(alice(&before) > 0);
    for hostile in [
        "' OR 1=1 --",
        "'; DROP TABLE customers; --",
        "alice@example.com' OR 'a'='a",
        "\") OR true; --",
        "$1",
        "?",
        "alice@example.com\\'; SELECT pg_sleep(10); --",
        "alice@example.com\\' OR SLEEP(10) -- ",
    ] {
        let x = extract(&mut server.client().await, on(source, "email", hostile)).await;
        assert_eq!(x.code(), Code::Ok, "{hostile}: {}", x.message());
        assert!(x.batches.is_empty(), "{hostile} matched rows");
        assert_eq!(x.manifest.unwrap().row_count, 0);
    }
    // The tables are as they were: alice's rows are all still there.
    let after = extract(
        &mut server.client().await,
        on(source, "email", "alice@example.com"),
    )
    .await;
    assert_eq!(alice(&after), alice(&before));
    assert_eq!(
        after.manifest.unwrap().row_count,
        before.manifest.unwrap().row_count
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_the_documented_status() {
    let server = TestServer::demo().await;
    let mut client = server.client().await;

    let mut req = request("email", "alice@example.com");
    req.source = "nope".into();
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::NotFound);
    assert!(x.message().contains("'nope'"), "{}", x.message());

    let x = extract(&mut client, request("phone", "+44")).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(
        x.message().contains("'phone'") && x.message().contains("email"),
        "{}",
        x.message()
    );

    for empty in ["", "   "] {
        let x = extract(&mut client, request("email", empty)).await;
        assert_eq!(x.code(), Code::InvalidArgument);
        assert!(x.message().contains("subject.value"), "{}", x.message());
    }

    let mut req = request("email", "alice@example.com");
    req.batch_size = 10_001;
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(x.message().contains("batch_size"), "{}", x.message());

    let mut req = request("email", "alice@example.com");
    req.batch_size = u32::MAX;
    assert_eq!(
        extract(&mut client, req).await.code(),
        Code::InvalidArgument
    );

    let mut req = request("email", "alice@example.com");
    req.subject = None;
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(x.message().contains("subject"));

    let x = extract(&mut client, request("email", &"a".repeat(100_000))).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(!x.message().contains("aaaa"), "the value is not echoed");

    let x = extract(&mut client, request("email", "a\0b")).await;
    assert_eq!(x.code(), Code::InvalidArgument);

    // None of the failed requests left the server unable to serve.
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn legacy_values_are_coerced_to_utc_and_bad_rows_rejected() {
    let server = TestServer::demo().await;
    let mut req = request("email", "alice@example.com");
    req.tables = vec!["legacy_accounts".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let planned = &x.started.as_ref().unwrap().tables[0];
    let col = |name: &str| planned.columns.iter().position(|c| c.name == name).unwrap();
    assert_eq!(planned.columns[col("signup_date")].coercion, "date");
    assert_eq!(
        planned.columns[col("signup_date")].kind,
        ValueKind::Timestamp as i32
    );
    assert_eq!(
        planned.columns[col("last_login_epoch")].coercion,
        "epoch_seconds"
    );

    let ts = |s: i64| {
        Some(Kind::TimestampValue(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        }))
    };
    let mut got: Vec<(Option<Kind>, Option<Kind>, Option<Kind>)> = x
        .rows("legacy_accounts")
        .iter()
        .map(|r| {
            (
                r[col("id")].kind.clone(),
                r[col("signup_date")].kind.clone(),
                r[col("last_login_epoch")].kind.clone(),
            )
        })
        .collect();
    got.sort_by_key(|(id, _, _)| format!("{id:?}"));
    assert_eq!(
        got,
        vec![
            // '14/03/2009' at London midnight (GMT), epoch 1262304000 = 2010-01-01T00:00Z
            (
                Some(Kind::Int64Value(1)),
                ts(1_236_988_800),
                ts(1_262_304_000)
            ),
            // '19991231' (GMT), epoch -86400 = 1969-12-31T00:00Z
            (Some(Kind::Int64Value(4)), ts(946_598_400), ts(-86_400)),
            // '07-04-76': July 4th 1976 at London midnight, in BST = 1976-07-03T23:00Z
            (
                Some(Kind::Int64Value(5)),
                ts(205_282_800),
                Some(Kind::NullValue(0))
            ),
        ]
    );

    // '31/02/2010' never existed: the row is rejected, counted and reported without its value.
    let done = x
        .completed
        .iter()
        .find(|c| c.table == "legacy_accounts")
        .unwrap();
    assert_eq!((done.row_count, done.rejected_count), (3, 1));
    assert_eq!(done.violations.len(), 1);
    let v = &done.violations[0];
    assert_eq!(
        (
            v.column.as_str(),
            v.primary_key.as_str(),
            v.rule.as_str(),
            v.category.as_str()
        ),
        ("signup_date", "id=3", "date", "unparseable_date")
    );
    assert!(!format!("{v:?}").contains("31/02/2010"));
    let m = x.manifest.unwrap();
    assert_eq!(
        m.metadata.get("rejected_rows").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        m.metadata
            .get("rejected.unparseable_date")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(m.row_count, 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nested_json_pii_is_reported_with_paths() {
    let server = TestServer::demo().await;
    let mut req = request("email", "alice@example.com");
    req.tables = vec!["events".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let done = &x.completed[0];
    let mut fields = done.pii_fields.clone();
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "events.payload.card.holder:name",
            "events.payload.changes[].new.postcode:address",
            "events.payload.changes[].new.street:address",
            "events.payload.contact.email:contact.email",
            "events.payload.contact.phone:contact.phone",
            // the demo matrix adds "device" as a behaviour key
            "events.payload.device:behaviour",
            "events.payload.geo.city:address",
            "events.payload.geo:location",
        ]
    );
    let m = x.manifest.unwrap();
    assert!(
        m.pii_fields
            .contains(&"events.payload.contact.email".to_owned())
    );
    assert!(m.pii_fields.contains(&"events.payload".to_owned()));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_plan_says_in_words_what_tables_and_categories_hold() {
    let server = TestServer::demo().await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let started = x.started.unwrap();
    let customers = started
        .tables
        .iter()
        .find(|t| t.table == "customers")
        .unwrap();
    assert!(customers.description.starts_with("Your customer record"));
    let described: std::collections::BTreeMap<&str, &str> = started
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.description.as_str()))
        .collect();
    let used: std::collections::BTreeSet<&str> = started
        .tables
        .iter()
        .flat_map(|t| t.columns.iter().map(|c| c.category.as_str()))
        .collect();
    assert_eq!(
        described
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        used
    );
    assert_eq!(described["contact.email"], "E-mail addresses.");
    // A refinement takes its parent's words: a configured one and a built-in one.
    assert!(described["financial.loyalty"].starts_with("Money matters"));
    assert_eq!(
        described["identifier.customer_id"],
        described["identifier.order_id"]
    );
    assert!(!described["identifier.customer_id"].is_empty());
    assert_eq!(described["not_pii"], "");
    server.stop().await.unwrap();
}
