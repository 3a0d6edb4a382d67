//! Only the subject's rows, on shapes like the public sample databases' (a rental shop with a
//! store, its manager and clerks, a payment table partitioned by month, a household's shared
//! address; a music shop with support reps and a reporting line), each subject's rows
//! written out by hand in `EXPECTED`. Access must return exactly those rows, the customer's
//! own address included; a staff member, a rep or a manager never gets a customer.
//! Erasure must change exactly the subject's rows (every other row byte-identical), and never
//! a looked-up row that another person's row points at. A map that follows every key, as
//! the first drafts did, is refused with the path named; a hub reached by lookup, or a key
//! shared by two rows, is refused in the snapshot before any row leaves.

mod mariadb;
#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use dsr_connector::demo;
use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::{EraseRequest, Identity};
use support::{SUBJECT_KEY, TestServer, cluster, extract, request};
use tonic::Code;
use tonic::transport::Channel;

const SHAPES_SQL: &str = include_str!("../data/reach_shapes.sql");

/// Every table of the shapes with its key column.
const TABLES: [(&str, &str); 10] = [
    ("address", "address_id"),
    ("staff", "staff_id"),
    ("store", "store_id"),
    ("customer", "customer_id"),
    ("inventory", "inventory_id"),
    ("rental", "rental_id"),
    ("payment", "payment_id"),
    ("employee", "employee_id"),
    ("client", "client_id"),
    ("invoice", "invoice_id"),
];

/// The data map as a person writes it under the reach rule: customers and staff look their
/// address up; rentals and payments are owned by their customer, not their clerk; a support
/// rep, a manager and a store are never followed.
const SAFE_MAP: &str = r#"
[[sources.tables]]
name = "rs.customer"
identity = { kind = "email", column = "email" }
reference = { column = "address_id", table = "rs.address", to = "address_id", reach = "lookup" }
columns = { customer_id = "identifier.customer_id", store_id = "not_pii", first_name = "name", email = "contact.email", address_id = "not_pii" }
erase = { action = "delete" }

[[sources.tables]]
name = "rs.staff"
identity = { kind = "email", column = "email" }
reference = { column = "address_id", table = "rs.address", to = "address_id", reach = "lookup" }
columns = { staff_id = "identifier.staff_id", first_name = "name", email = "contact.email", address_id = "not_pii", store_id = "not_pii", picture = "photo" }
erase = { action = "mask", mask = { first_name = "redact", email = "redact", picture = "null", staff_id = { retain = "the key rentals and payments hold" }, address_id = { retain = "the key of a looked-up address" } } }

[[sources.tables]]
name = "rs.address"
columns = { address_id = "not_pii", address = "address", address2 = "address", postal_code = "address", phone = "contact.phone" }
erase = { action = "mask", mask = { address = "redact", address2 = "null", postal_code = "redact", phone = "redact" } }

[[sources.tables]]
name = "rs.rental"
reference = [
    { column = "customer_id", table = "rs.customer", to = "customer_id", reach = "owned" },
    { column = "staff_id", table = "rs.staff", to = "staff_id", reach = "none" },
]
columns = { rental_id = "not_pii", inventory_id = "not_pii", customer_id = "identifier.customer_id", staff_id = "identifier.staff_id" }
erase = { action = "delete" }

[[sources.tables]]
name = "rs.payment"
reference = [
    { column = "customer_id", table = "rs.customer", to = "customer_id", reach = "owned" },
    { column = "rental_id", table = "rs.rental", to = "rental_id", reach = "owned" },
    { column = "staff_id", table = "rs.staff", to = "staff_id", reach = "none" },
]
columns = { payment_id = "not_pii", customer_id = "identifier.customer_id", staff_id = "identifier.staff_id", rental_id = "not_pii", amount = "financial", paid_at = "financial" }
erase = { action = "delete" }

[[sources.tables]]
name = "rs.employee"
identity = { kind = "email", column = "email" }
reference = { column = "reports_to", table = "rs.employee", to = "employee_id", reach = "none" }
columns = { employee_id = "identifier.employee_id", last_name = "name", title = "account", reports_to = "identifier.employee_id", email = "contact.email" }
erase = { action = "mask", mask = { last_name = "redact", title = "null", email = "redact", employee_id = { retain = "the key the reporting line and clients hold" }, reports_to = { retain = "the reporting line, whose other end is another person" } } }

[[sources.tables]]
name = "rs.client"
identity = { kind = "email", column = "email" }
reference = { column = "support_rep_id", table = "rs.employee", to = "employee_id", reach = "none" }
columns = { client_id = "identifier.client_id", last_name = "name", email = "contact.email", phone = "contact.phone", support_rep_id = "identifier.employee_id" }
erase = { action = "delete" }

[[sources.tables]]
name = "rs.invoice"
reference = { column = "client_id", table = "rs.client", to = "client_id", reach = "owned" }
columns = { invoice_id = "not_pii", client_id = "identifier.client_id", total = "financial" }
erase = { action = "delete" }

[[sources.tables]]
name = "rs.invoice_line"
reference = { column = "invoice_id", table = "rs.invoice", to = "invoice_id", reach = "owned" }
columns = { invoice_line_id = "not_pii", invoice_id = "not_pii", track = "commerce" }
erase = { action = "delete" }
"#;

/// A subject's rows: (table, keys) for each table that holds some.
type Rows = &'static [(&'static str, &'static [i64])];

/// Each subject's rows, by table and key, written out by hand from `reach_shapes.sql`.
const EXPECTED: [(&str, Rows); 9] = [
    (
        "alice@shop.test",
        &[
            ("rs.customer", &[1]),
            ("rs.address", &[1]),
            ("rs.rental", &[1, 2]),
            ("rs.payment", &[1, 2]),
        ],
    ),
    (
        "bob@shop.test",
        &[
            ("rs.customer", &[2]),
            ("rs.address", &[1]),
            ("rs.rental", &[3]),
            ("rs.payment", &[3]),
        ],
    ),
    (
        "carol@shop.test",
        &[
            ("rs.customer", &[3]),
            ("rs.address", &[2]),
            ("rs.rental", &[4]),
            ("rs.payment", &[4]),
        ],
    ),
    // The store's manager: their own row and address, no store, customer or rental.
    ("sam@shop.test", &[("rs.staff", &[1]), ("rs.address", &[3])]),
    // A clerk on two rentals and two payments: none of them is hers.
    ("mia@shop.test", &[("rs.staff", &[2]), ("rs.address", &[5])]),
    // Managers and a support rep: their own row only.
    ("andrew@music.test", &[("rs.employee", &[1])]),
    ("jane@music.test", &[("rs.employee", &[2])]),
    ("steve@music.test", &[("rs.employee", &[3])]),
    (
        "luis@client.test",
        &[
            ("rs.client", &[1]),
            ("rs.invoice", &[1, 2]),
            ("rs.invoice_line", &[1, 2, 3]),
        ],
    ),
];

/// The shapes, loaded into a fresh database `name` of the test cluster.
async fn database(name: &str) -> tokio_postgres::Client {
    let db = support::empty_database(name).await;
    db.batch_execute(SHAPES_SQL).await.unwrap();
    db
}

/// The demo's source settings on database `name`, with the tables `map` and `settings`.
fn config_text(name: &str, map: &str, settings: &str) -> String {
    let demo = demo::config_toml(cluster(), name, "127.0.0.1:0".parse().unwrap());
    let head = &demo[..demo.find("[[sources.tables]]").unwrap()];
    let head = head.replace(
        "identity_kinds = [\"email\", \"customer_id\"]",
        &format!("identity_kinds = [\"email\"]\n{settings}"),
    );
    format!("{head}{map}")
}

fn config(text: &str) -> dsr_connector::config::Config {
    demo::config(cluster(), text, SUBJECT_KEY).unwrap_or_else(|e| panic!("{e}"))
}

/// The rows of every table streamed for `email`, by table, as sorted keys.
async fn streamed(
    client: &mut DsrConnectorServiceClient<Channel>,
    email: &str,
) -> BTreeMap<String, Vec<i64>> {
    streamed_from(client, "demo", email).await
}

/// The rows of every table streamed for `email` by `source`, by table (as PostgreSQL's
/// source names it: `rs.` before a MariaDB table's name), as sorted keys.
async fn streamed_from(
    client: &mut DsrConnectorServiceClient<Channel>,
    source: &str,
    email: &str,
) -> BTreeMap<String, Vec<i64>> {
    let mut req = request("email", email);
    req.source = source.into();
    let x = extract(client, req).await;
    assert_eq!(x.code(), Code::Ok, "{email}: {}", x.message());
    let mut all = BTreeMap::new();
    for table in &x.manifest.as_ref().unwrap().tables {
        let key = TABLES
            .iter()
            .chain(&[("invoice_line", "invoice_line_id")])
            .find(|(t, _)| format!("rs.{t}") == table.table || *t == table.table)
            .map(|(_, k)| *k)
            .unwrap_or_else(|| panic!("{email}: an unexpected table {}", table.table));
        let mut keys: Vec<i64> = x
            .column(&table.table, key)
            .iter()
            .map(|k| match k {
                dsr_connector::pb::value::Kind::Int64Value(i) => *i,
                other => panic!("{other:?}"),
            })
            .collect();
        keys.sort();
        if !keys.is_empty() {
            let name = match table.table.starts_with("rs.") {
                true => table.table.clone(),
                false => format!("rs.{}", table.table),
            };
            all.insert(name, keys);
        }
    }
    all
}

fn expected(rows: &[(&str, &[i64])]) -> BTreeMap<String, Vec<i64>> {
    rows.iter()
        .map(|(t, keys)| (t.to_string(), keys.to_vec()))
        .collect()
}

/// Every row of every table of the shapes as text, by table and key.
async fn snapshot(db: &tokio_postgres::Client) -> BTreeMap<(String, i64), String> {
    let mut all = BTreeMap::new();
    for (table, key) in TABLES.iter().chain(&[("invoice_line", "invoice_line_id")]) {
        for row in db
            .query(
                &format!("SELECT {key}::bigint, t::text FROM rs.{table} t"),
                &[],
            )
            .await
            .unwrap()
        {
            all.insert((format!("rs.{table}"), row.get(0)), row.get(1));
        }
    }
    all
}

async fn erase(
    client: &mut DsrConnectorServiceClient<Channel>,
    email: &str,
) -> Result<dsr_connector::pb::ErasureReceipt, tonic::Status> {
    let request = EraseRequest {
        source: "demo".into(),
        subject: Some(Identity {
            kind: "email".into(),
            value: email.into(),
        }),
        request_id: format!("reach-{email}"),
        compliance_tag: "gdpr-art17".into(),
        ..Default::default()
    };
    support::erase_receipt(client, request).await
}

#[tokio::test]
async fn each_subject_gets_exactly_their_rows_and_a_staff_member_or_rep_no_customer() {
    let name = "reach_access";
    database(name).await;
    let server = TestServer::start(config(&config_text(name, SAFE_MAP, ""))).await;
    let mut client = server.client().await;
    for (email, rows) in EXPECTED {
        assert_eq!(
            streamed(&mut client, email).await,
            expected(rows),
            "{email}: the rows streamed"
        );
    }
    // The manifest names the path of each table; the address is a lookup.
    let x = extract(&mut client, request("email", "alice@shop.test")).await;
    let planned = x.started.unwrap();
    let via = |table: &str| {
        planned
            .tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.reached_via.clone())
            .unwrap()
    };
    assert_eq!(
        via("rs.address"),
        "rs.customer.address_id -> rs.address.address_id (lookup) | \
         rs.staff.address_id -> rs.address.address_id (lookup)"
    );
    assert_eq!(
        via("rs.payment"),
        "rs.customer.customer_id <- rs.payment.customer_id | \
         rs.rental.rental_id <- rs.payment.rental_id"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_map_that_follows_every_key_is_refused_with_the_path_named() {
    // As the first drafts proposed: every foreign key owned, downwards from its target.
    let naive = SAFE_MAP
        .replace(
            "to = \"staff_id\", reach = \"none\"",
            "to = \"staff_id\", reach = \"owned\"",
        )
        .replace(
            "column = \"support_rep_id\", table = \"rs.employee\", to = \"employee_id\", \
             reach = \"none\"",
            "column = \"support_rep_id\", table = \"rs.employee\", to = \"employee_id\", \
             reach = \"owned\"",
        )
        .replace(
            "erase = { action = \"mask\", mask = { address = \"redact\", address2 = \"null\", \
             postal_code = \"redact\", phone = \"redact\" } }",
            "erase = { action = \"delete\" }",
        );
    let text = config_text("reach_naive", &naive, "");
    let problems = dsr_connector::config::Config::from_toml_str(&text, |_| {
        Some("a-secret-that-is-long-enough-for-any-key".to_owned())
    })
    .expect_err("the naive map is refused")
    .to_string();
    for expected in [
        // A clerk's rentals and payments, a rep's customers, a manager's reports.
        "sources[0].tables.rs.rental: its rows are owned through 2 person tables \
         (rs.customer <- rs.rental.customer_id; rs.staff <- rs.rental.staff_id)",
        "sources[0].tables.rs.payment: its rows are owned through 2 person tables",
        "rs.employee.employee_id <- rs.client.support_rep_id",
        // A looked-up address is never deleted.
        "sources[0].tables.rs.address.erase: its rows are reached by lookup",
    ] {
        assert!(
            problems.contains(expected),
            "expected '{expected}' in: {problems}"
        );
    }
}

#[tokio::test]
async fn a_hub_reached_by_lookup_or_a_key_two_rows_share_is_refused_before_any_row_leaves() {
    let name = "reach_guards";
    let db = database(name).await;
    // A lookup that reaches more rows than the table allows: a hub.
    let hub = SAFE_MAP.replace(
        "name = \"rs.address\"\n",
        "name = \"rs.address\"\nmax_reached_rows = 0\n",
    );
    let server = TestServer::start(config(&config_text(name, &hub, ""))).await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@shop.test"),
    )
    .await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    assert!(
        x.message().contains(
            "table 'rs.address' is reached by lookup (rs.customer.address_id -> \
             rs.address.address_id (lookup) | rs.staff.address_id -> rs.address.address_id \
             (lookup)) with 1 rows for this subject, above max_reached_rows = 0"
        ),
        "{}",
        x.message()
    );
    assert!(x.started.is_none() || x.rows("rs.customer").is_empty());
    assert!(!x.message().contains("alice"), "{}", x.message());
    server.stop().await.unwrap();

    // A lookup into a column that is not unique: two rows for one key.
    db.batch_execute(
        "CREATE TABLE rs.region (code text NOT NULL, label text NOT NULL);
         INSERT INTO rs.region VALUES ('EU', 'Europe'), ('EU', 'European Union'), ('NA', 'N. America');
         ALTER TABLE rs.client ADD COLUMN region text;
         UPDATE rs.client SET region = 'EU';",
    )
    .await
    .unwrap();
    let regions = SAFE_MAP
        .replace(
            "reference = { column = \"support_rep_id\", table = \"rs.employee\", to = \
             \"employee_id\", reach = \"none\" }",
            "reference = [{ column = \"support_rep_id\", table = \"rs.employee\", to = \
             \"employee_id\", reach = \"none\" }, { column = \"region\", table = \"rs.region\", \
             to = \"code\", reach = \"lookup\" }]",
        )
        .replace(
            "support_rep_id = \"identifier.employee_id\" }",
            "support_rep_id = \"identifier.employee_id\", region = \"location\" }",
        )
        + "\n[[sources.tables]]\nname = \"rs.region\"\ncolumns = { code = \"location\", label = \"location\" }\nerase = { action = \"retain\", reason = \"reference data\" }\n";
    let server = TestServer::start(config(&config_text(name, &regions, ""))).await;
    let x = extract(
        &mut server.client().await,
        request("email", "luis@client.test"),
    )
    .await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    assert!(
        x.message().contains(
            "table 'rs.region': the key followed by rs.client.region -> rs.region.code \
             (lookup) is not unique: 1 more rows share the subject's keys"
        ),
        "{}",
        x.message()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn erasure_changes_only_the_subjects_rows_and_never_a_shared_address() {
    let name = "reach_erase";
    let db = database(name).await;
    let server = TestServer::start(config(&config_text(
        name,
        SAFE_MAP,
        "erasure = { require_preview = false }",
    )))
    .await;
    let mut client = server.client().await;

    // Alice's address is her household's: the erasure is refused, and nothing changes.
    let before = snapshot(&db).await;
    let refused = erase(&mut client, "alice@shop.test")
        .await
        .expect_err("a shared address is not masked");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(
            "table 'rs.address': a row the subject's rows look up is shared: 1 rows of \
             'rs.customer' that are not the subject's point at it"
        ),
        "{}",
        refused.message()
    );
    assert_eq!(snapshot(&db).await, before, "nothing changed");

    // Carol's address is hers alone: her rows go (a payment in each partition holds a row
    // at the same place as another customer's), her address is masked, nothing else moves.
    let receipt = erase(&mut client, "carol@shop.test").await.unwrap();
    assert!(receipt.committed_at.is_some());
    let after = snapshot(&db).await;
    let carols: BTreeSet<(String, i64)> = [
        ("rs.customer", 3),
        ("rs.rental", 4),
        ("rs.payment", 4),
        ("rs.address", 2),
    ]
    .iter()
    .map(|(t, k)| (t.to_string(), *k))
    .collect();
    for (key, row) in &before {
        if carols.contains(key) {
            continue;
        }
        assert_eq!(after.get(key), Some(row), "{key:?} changed");
    }
    for gone in ["rs.customer", "rs.rental", "rs.payment"] {
        assert!(
            !after
                .keys()
                .any(|(t, k)| t == gone && carols.contains(&(t.clone(), *k))),
            "{gone}: carol's row is left"
        );
    }
    let address = &after[&("rs.address".to_owned(), 2)];
    assert!(
        !address.contains("Hanoi") && !address.contains("35200") && !address.contains("555-0102"),
        "{address}"
    );
    assert_eq!(after.len(), before.len() - 3, "three rows deleted, no more");

    // A manager's erasure masks their row and their address; the store they manage, its
    // customers, and the rentals they handed over stay as they were.
    let before = snapshot(&db).await;
    erase(&mut client, "sam@shop.test").await.unwrap();
    let after = snapshot(&db).await;
    for (key, row) in &before {
        let sams = key == &("rs.staff".to_owned(), 1) || key == &("rs.address".to_owned(), 3);
        assert_eq!(after.get(key) == Some(row), !sams, "{key:?}");
    }
    server.stop().await.unwrap();
}

/// Runs the binary with the test cluster's secrets in the environment.
fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(args)
        .env("DSR_DEMO_PASSWORD", cluster().password())
        .env("DSR_SUBJECT_KEY", SUBJECT_KEY)
        .output()
        .unwrap()
}

/// Drafts the map of schema `rs` of database `name` with the binary, from a config with
/// `kinds`; returns the draft.
fn draft(name: &str, kinds: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.toml");
    let draft = dir.path().join("draft.toml");
    let text = config_text(name, "", "").replace(
        "identity_kinds = [\"email\"]",
        &format!("identity_kinds = {kinds}"),
    );
    std::fs::write(&input, text).unwrap();
    let out = run(&[
        "discover",
        "--config",
        input.to_str().unwrap(),
        "--source",
        "demo",
        "--schema",
        "rs",
        "--out",
        draft.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&draft).unwrap()
}

/// `check-config` on `text`: its problems, or none.
fn check_config(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decided.toml");
    std::fs::write(&path, text).unwrap();
    let check = run(&["check-config", path.to_str().unwrap()]);
    String::from_utf8_lossy(&check.stderr)
        .lines()
        .filter(|l| l.starts_with("  - "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn discover_drafts_a_map_of_the_shapes_that_returns_only_each_subjects_rows() {
    let name = "reach_discover";
    database(name).await;
    let drafted = draft(name, "[\"email\"]");

    // A person decides the one column the draft could not: a track's title is not personal.
    let checks: Vec<&str> = drafted
        .lines()
        .filter(|l| l.ends_with(" = \"check\""))
        .collect();
    assert_eq!(checks, ["track = \"check\""], "{drafted}");
    let drafted = drafted.replace("track = \"check\"", "track = \"not_pii\"");
    let problems = check_config(&drafted);
    assert!(problems.is_empty(), "{problems:#?}\n{drafted}");
    // The store and its stock are hubs, and nobody's: left out, with why.
    for hub in ["rs.store", "rs.inventory"] {
        assert!(
            !drafted.contains(&format!("name = \"{hub}\"")),
            "{hub} is drafted:\n{drafted}"
        );
        assert!(drafted.contains(&format!("#   {hub}: ")), "{drafted}");
    }

    // Recall and precision of personal columns, against the labels.
    let config = config(&drafted);
    let mut flagged = BTreeSet::new();
    for table in &config.sources[0].tables {
        for (column, spec) in &table.columns {
            if spec.category() != "not_pii" {
                flagged.insert(format!("{}.{column}", table.name));
            }
        }
    }
    let personal: BTreeSet<String> = PERSONAL.iter().map(|c| c.to_string()).collect();
    let found = personal.intersection(&flagged).count() as f64;
    let recall = found / personal.len() as f64;
    let precision = found / flagged.len() as f64;
    println!(
        "reach shapes: recall {recall:.2} ({found} of {}), precision {precision:.2} (of {} \
         flagged); missed {:?}, extra {:?}",
        personal.len(),
        flagged.len(),
        personal.difference(&flagged).collect::<Vec<_>>(),
        flagged.difference(&personal).collect::<Vec<_>>()
    );
    assert!(recall >= 0.98 && precision >= 0.9, "{drafted}");

    // Served as drafted, it returns each subject's rows and no one else's.
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    for (email, rows) in EXPECTED {
        assert_eq!(
            streamed(&mut client, email).await,
            expected(rows),
            "{email}: the rows the draft streams\n{drafted}"
        );
    }
    server.stop().await.unwrap();
}

/// The personal columns of the tables a subject reaches, as a privacy engineer labels them:
/// names, contacts, addresses, a photo or a job title, and keys that lead to a person's row.
/// Keys of rows that are not people (an address, a rental), amounts and dates are not.
const PERSONAL: &[&str] = &[
    "rs.address.address",
    "rs.address.address2",
    "rs.address.postal_code",
    "rs.address.phone",
    "rs.client.client_id",
    "rs.client.last_name",
    "rs.client.email",
    "rs.client.phone",
    "rs.client.support_rep_id",
    "rs.customer.customer_id",
    "rs.customer.first_name",
    "rs.customer.email",
    "rs.employee.employee_id",
    "rs.employee.last_name",
    "rs.employee.title",
    "rs.employee.reports_to",
    "rs.employee.email",
    "rs.invoice.client_id",
    "rs.payment.customer_id",
    "rs.payment.staff_id",
    "rs.rental.customer_id",
    "rs.rental.staff_id",
    "rs.staff.staff_id",
    "rs.staff.first_name",
    "rs.staff.email",
    "rs.staff.picture",
];

#[tokio::test]
async fn phones_stored_as_typed_are_compared_by_digits_or_said_never_to_match() {
    let name = "reach_phones";
    let db = database(name).await;
    // Leads keep national numbers as typed: no country code, so no E.164 value is theirs.
    db.batch_execute(
        "CREATE TABLE rs.lead (lead_id integer PRIMARY KEY, full_name text NOT NULL,
                               phone text NOT NULL);
         INSERT INTO rs.lead VALUES (1, 'Ann Lee', '(503) 555-9831'),
             (2, 'Ben Ode', '(503) 555-0102'), (3, 'Cy Twombly', '503.555.7777');",
    )
    .await
    .unwrap();
    let drafted = draft(name, "[\"email\", \"phone\"]");
    // Clients' numbers are typed with their country code: the draft compares their digits.
    assert!(
        drafted.contains(
            "identity = [{ kind = \"email\", column = \"email\" }, { kind = \"phone\", \
             column = \"phone\", match = \"digits\" }]"
        ),
        "{drafted}"
    );
    assert!(
        drafted.contains(
            "3 of 3 sampled values are stored as typed, not as phone values are normalised \
             (trim, e164), but 2 of them match by their digits: compared by digits (match = \
             \"digits\"; index it: CREATE INDEX ON \"rs\".\"client\" \
             ((regexp_replace(\"phone\", '[^0-9]', '', 'g'))))"
        ),
        "{drafted}"
    );
    // Leads' numbers can never match, and the draft says so.
    let never = "3 of 3 sampled values are stored as typed, not as phone values are normalised \
                 (trim, e164), and only 0 match even by their digits: no phone identity can \
                 find these rows";
    assert!(drafted.contains(never), "{drafted}");

    let decided = drafted.replace("track = \"check\"", "track = \"not_pii\"");
    let problems = check_config(&decided);
    assert!(problems.is_empty(), "{problems:#?}\n{decided}");
    let server = TestServer::start(config(&decided)).await;
    let mut client = server.client().await;
    // A number typed as the person gives it finds their rows by digits, and only theirs.
    for typed in ["+55 12 3923-5555", "+551239235555"] {
        let x = extract(&mut client, request("phone", typed)).await;
        assert_eq!(x.code(), Code::Ok, "{}", x.message());
        let mut ids: Vec<String> = x
            .column("rs.client", "client_id")
            .iter()
            .map(|k| format!("{k:?}"))
            .collect();
        ids.sort();
        assert_eq!(ids, ["Int64Value(1)"], "{typed}");
        assert_eq!(x.rows("rs.invoice").len(), 2);
    }
    // Validate says of the configured map what the draft said.
    let checked = support::validate(
        &mut client,
        dsr_connector::pb::ValidateRequest {
            source: "demo".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let lead = checked.table("rs.lead");
    assert!(
        lead.warnings.iter().any(|w| w.contains(
            "identity column 'phone' (kind phone, exact): 3 of 3 sampled values are stored as \
             typed, not as phone values are normalised (trim, e164), and only 0 match even by \
             their digits"
        )),
        "{:?}",
        lead.warnings
    );
    assert!(
        checked
            .table("rs.client")
            .warnings
            .iter()
            .all(|w| !w.contains("stored as typed")),
        "{:?}",
        checked.table("rs.client").warnings
    );
    for value in ["555-9831", "3923-5555", "503.555"] {
        assert!(!checked.text.contains(value), "a sampled value in Validate");
    }
    server.stop().await.unwrap();
}
