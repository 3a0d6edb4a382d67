//! Several identities of one subject in one Extract: alice by e-mail and by phone number, in
//! one snapshot, on both stores. A row that both reach streams once, the manifest counts per
//! table what each identity reaches alone, and never shows a value; the guards hold for all
//! of them together; a bad one is refused by its field.

mod support;

use std::collections::BTreeSet;

use dsr_connector::pb::{ExtractRequest, Identity};
use support::{SUBJECT_KEY, extract};
use tonic::Code;

/// Both demo shops, with a third identity kind: the customer's phone number, compared by its
/// digits (the demo stores numbers as typed, "+44 20 7946 0958").
async fn server() -> support::TestServer {
    let mariadb = support::mariadb::server(&[("shop", "")]);
    let text = support::shop::with_phone(support::mariadb::config_text(mariadb, "shop", ""));
    support::TestServer::start(support::mariadb::config(mariadb, &text)).await
}

fn asking(source: &str, subject: (&str, &str), more: &[(&str, &str)]) -> ExtractRequest {
    ExtractRequest {
        more_identities: more
            .iter()
            .map(|(kind, value)| Identity {
                kind: (*kind).into(),
                value: (*value).into(),
            })
            .collect(),
        ..support::mariadb::on(source, subject.0, subject.1)
    }
}

fn subject_id(kind: &str, normalized: &str) -> String {
    dsr_connector::subject::subject_id(SUBJECT_KEY.as_bytes(), kind, normalized)
}

/// Every streamed row of every table, as text, with its table.
fn rows(x: &support::Extraction) -> Vec<String> {
    x.batches
        .iter()
        .flat_map(|b| {
            b.rows
                .iter()
                .map(move |r| format!("{}: {:?}", b.table, r.values))
        })
        .collect()
}

both_stores!(
    email_and_phone_stream_each_row_once,
    email_and_phone_stream_each_row_once_on
);

async fn email_and_phone_stream_each_row_once_on(source: &'static str) {
    let server = server().await;
    let alice_email = ("email", "alice@example.com");
    let alice_phone = ("phone", "+44 20 7946 0958");
    let by_email = extract(&mut server.client().await, asking(source, alice_email, &[])).await;
    assert_eq!(by_email.code(), Code::Ok, "{}", by_email.message());
    let by_phone = extract(&mut server.client().await, asking(source, alice_phone, &[])).await;
    assert_eq!(by_phone.code(), Code::Ok, "{}", by_phone.message());

    let both = extract(
        &mut server.client().await,
        asking(source, alice_email, &[alice_phone]),
    )
    .await;
    assert_eq!(both.code(), Code::Ok, "{}", both.message());
    let streamed = rows(&both);
    let distinct: BTreeSet<&String> = streamed.iter().collect();
    assert_eq!(distinct.len(), streamed.len(), "a row streamed twice");
    let union: BTreeSet<String> = rows(&by_email).into_iter().chain(rows(&by_phone)).collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<_>>(),
        union,
        "both identities reach what each reaches, no more"
    );
    let manifest = both.manifest.clone().unwrap();
    assert_eq!(manifest.row_count, streamed.len() as u64);
    assert_eq!(manifest.row_count, 18, "alice's rows, once");

    // Who was asked: by kind and keyed hash, the subject first.
    let email_id = subject_id("email", "alice@example.com");
    let phone_id = subject_id("phone", "+442079460958");
    let asked: Vec<(String, String)> = manifest
        .identities
        .iter()
        .map(|i| (i.kind.clone(), i.subject_id.clone()))
        .collect();
    assert_eq!(
        asked,
        [
            ("email".to_owned(), email_id.clone()),
            ("phone".to_owned(), phone_id.clone())
        ]
    );
    assert_eq!(manifest.subject_id, email_id);
    assert_eq!(manifest.subject_kind, "email");
    assert_eq!(
        both.started.as_ref().unwrap().identities,
        manifest.identities
    );
    // Per table, what each identity reaches alone: what its own extraction read (rows
    // streamed, and rows a coercion rule left out).
    let alone = |x: &support::Extraction, table: &str| {
        x.completed
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.row_count + t.rejected_count)
            .unwrap_or(0)
    };
    for table in &manifest.tables {
        let counts: Vec<(&str, u64)> = table
            .identity_rows
            .iter()
            .map(|i| (i.kind.as_str(), i.row_count))
            .collect();
        assert_eq!(
            counts,
            [
                ("email", alone(&by_email, &table.table)),
                ("phone", alone(&by_phone, &table.table))
            ],
            "{}",
            table.table
        );
        assert_eq!(table.identity_rows[0].subject_id, email_id);
    }
    let customers = manifest
        .tables
        .iter()
        .find(|t| t.table == "customers")
        .unwrap();
    assert_eq!(customers.row_count, 1, "one row, reached by both");
    assert_eq!(
        customers
            .identity_rows
            .iter()
            .map(|i| i.row_count)
            .collect::<Vec<_>>(),
        [1, 1]
    );
    // The paths name both; no value anywhere outside the rows.
    let planned = &both.started.as_ref().unwrap().tables;
    let customers_plan = planned.iter().find(|t| t.table == "customers").unwrap();
    assert!(
        customers_plan
            .reached_via
            .contains("email -> customers.email")
            && customers_plan
                .reached_via
                .contains("phone -> customers.phone (digits)"),
        "{}",
        customers_plan.reached_via
    );
    let shown = format!("{:?}{:?}", both.started, both.manifest);
    for value in ["alice@example.com", "7946", "442079460958"] {
        assert!(!shown.contains(value), "{value} in started or manifest");
    }
    server.stop().await.unwrap();
}

both_stores!(
    another_persons_phone_is_caught_by_the_guards,
    another_persons_phone_is_caught_by_the_guards_on
);

/// Alice's e-mail with bob's phone number: two customers where one row is one person. The
/// shared-identity guard counts what all identities match together, so it holds for each:
/// the manifest names the table (the demo reports rather than refuses), and the counts show
/// which identity reached which row.
async fn another_persons_phone_is_caught_by_the_guards_on(source: &'static str) {
    let server = server().await;
    let x = extract(
        &mut server.client().await,
        asking(
            source,
            ("email", "alice@example.com"),
            &[("phone", "+1 415 555 0100")],
        ),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let manifest = x.manifest.unwrap();
    assert_eq!(manifest.metadata["shared_identity"], "customers");
    assert_eq!(
        manifest.metadata["identity_rows"].split(',').next(),
        Some("customers=2")
    );
    server.stop().await.unwrap();
}

both_stores!(
    a_bad_identity_is_refused_by_its_field,
    a_bad_identity_is_refused_by_its_field_on
);

async fn a_bad_identity_is_refused_by_its_field_on(source: &'static str) {
    let server = server().await;
    let alice = ("email", "alice@example.com");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("fax", "123")],
            "more_identities[0].kind: 'fax' is not an identity kind",
        ),
        (
            vec![("phone", " ")],
            "more_identities[0].value: must not be empty",
        ),
        (
            vec![
                ("phone", "+44 20 7946 0958"),
                ("customer_id", "1'; DROP TABLE customers; --"),
            ],
            "more_identities[1].value: not a valid",
        ),
        (vec![("phone", "not a number")], "more_identities[0].value:"),
        (
            vec![("email", "x@example.com"); 8],
            "more_identities: at most 7",
        ),
    ];
    for (more, expected) in cases {
        let x = extract(&mut server.client().await, asking(source, alice, &more)).await;
        assert_eq!(x.code(), Code::InvalidArgument, "{more:?}: {}", x.message());
        assert!(x.message().contains(expected), "{more:?}: {}", x.message());
        assert!(!x.message().contains("DROP TABLE"), "{}", x.message());
    }
    // The same identity twice is asked once.
    let x = extract(
        &mut server.client().await,
        asking(source, alice, &[("email", " Alice@Example.com")]),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let manifest = x.manifest.unwrap();
    assert!(manifest.identities.is_empty(), "{:?}", manifest.identities);
    assert_eq!(manifest.row_count, 18);
    server.stop().await.unwrap();
}
