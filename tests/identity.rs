//! Identities as people type them. The value is normalised per kind before it is bound and
//! hashed, so the typed forms of one address (or one phone number) are one subject with the
//! same rows. Columns stored in mixed case match with `match = "case_insensitive"`, and the
//! schema gate names the index such a match needs. An empty answer says it is empty, and a
//! dry run for it counts what looser matches would find, without a value.

mod support;

use std::sync::OnceLock;

use dsr_connector::pb::ValidateRequest;
use support::{SUBJECT_KEY, TestServer, config, config_text, extract, request, sql, validate};
use tonic::Code;

const SETUP_SQL: &str = "
CREATE TABLE phone_book (id bigint PRIMARY KEY, phone text NOT NULL, note text NOT NULL);
CREATE INDEX phone_book_phone ON phone_book (phone);
INSERT INTO phone_book VALUES (1, '+442079460958', 'stored as E.164'), (2, '+442079460959', 'someone else');
CREATE TABLE mixed_unindexed (id bigint PRIMARY KEY, email text NOT NULL);
INSERT INTO mixed_unindexed VALUES (1, 'Carol.Mixed@Example.COM'), (2, 'other@example.com');
CREATE TABLE mixed_indexed (id bigint PRIMARY KEY, email varchar(200) NOT NULL);
INSERT INTO mixed_indexed SELECT i, 'filler' || i || '@Example.com' FROM generate_series(100, 5000) AS i;
INSERT INTO mixed_indexed VALUES (1, 'CAROL.MIXED@example.com');
CREATE INDEX mixed_indexed_lower ON mixed_indexed (lower(email));
ANALYZE mixed_indexed;
CREATE TABLE legacy_emails (id bigint PRIMARY KEY, email text NOT NULL);
CREATE INDEX legacy_emails_email ON legacy_emails (email);
INSERT INTO legacy_emails VALUES
    (1, 'Bob.Legacy@Example.com'), (2, ' bob.legacy@example.com'), (3, 'BOB.LEGACY@EXAMPLE.COM');
";

const TABLES: &str = r#"
[[sources.tables]]
name = "phone_book"
identity = { kind = "phone", column = "phone" }
columns = { id = "not_pii", phone = "contact.phone", note = "not_pii" }
erase = { action = "delete" }

[[sources.tables]]
name = "mixed_unindexed"
identity = { kind = "email", column = "email", match = "case_insensitive" }
columns = { id = "not_pii", email = "contact.email" }
erase = { action = "delete" }

[[sources.tables]]
name = "mixed_indexed"
identity = { kind = "email", column = "email", match = "case_insensitive" }
columns = { id = "not_pii", email = "contact.email" }
erase = { action = "delete" }

[[sources.tables]]
name = "legacy_emails"
identity = { kind = "email", column = "email" }
columns = { id = "not_pii", email = "contact.email" }
erase = { action = "delete" }
"#;

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| support::run_sql_blocking(SETUP_SQL));
}

/// The demo source with a phone kind (default region GB) and the tables above.
fn identity_config() -> dsr_connector::config::Config {
    setup();
    let text = config_text(TABLES)
        .replace(
            r#"identity_kinds = ["email", "customer_id"]"#,
            r#"identity_kinds = ["email", "customer_id", "phone"]"#,
        )
        .replace(
            "[sources.identities.email]",
            "[sources.identities.phone]\ndefault_region = \"GB\"\n\n[sources.identities.email]",
        );
    config(&text)
}

fn expected_subject_id(kind: &str, normalized: &str) -> String {
    dsr_connector::subject::subject_id(SUBJECT_KEY.as_bytes(), kind, normalized)
}

both_stores!(
    an_address_as_people_type_it_is_one_subject,
    an_address_as_people_type_it_is_one_subject_on
);

async fn an_address_as_people_type_it_is_one_subject_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let mut seen = Vec::new();
    for typed in [
        "alice@example.com",
        "ALICE@example.com",
        " alice@example.com",
        "Alice@Example.com ",
    ] {
        let x = extract(
            &mut server.client().await,
            support::mariadb::on(source, "email", typed),
        )
        .await;
        assert_eq!(x.code(), Code::Ok, "{typed:?}: {}", x.message());
        let manifest = x.manifest.unwrap();
        assert_eq!(manifest.row_count, 18, "{typed:?}");
        assert_eq!(manifest.metadata["subject_found"], "true");
        assert_eq!(
            manifest.metadata["identity_normalization"],
            "trim, nfc, lowercase"
        );
        seen.push(manifest.subject_id);
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "one subject: {seen:?}");
    assert_eq!(seen[0], expected_subject_id("email", "alice@example.com"));
    server.stop().await.unwrap();
}

both_stores!(
    a_look_alike_address_never_matches_another_persons_rows,
    a_look_alike_address_never_matches_another_persons_rows_on
);

/// Look-alike spellings of alice's address (a Cyrillic letter, a full-width @, a zero-width
/// space, a ligature) are other people's addresses: none of them matches her rows, and none is
/// folded into her subject id. On both stores: a collation that folded them would match.
async fn a_look_alike_address_never_matches_another_persons_rows_on(source: &'static str) {
    let server = support::mariadb::both_stores_server().await;
    let alice = expected_subject_id("email", "alice@example.com");
    for typed in [
        "alice@ex\u{0430}mple.com",
        "\u{0430}lice@example.com",
        "alice\u{FF20}example.com",
        "ali\u{200B}ce@example.com",
        "alice@example.com\u{200B}",
        "alice@exa\u{FB01}mple.com",
    ] {
        let x = extract(
            &mut server.client().await,
            support::mariadb::on(source, "email", typed),
        )
        .await;
        assert_eq!(x.code(), Code::Ok, "{typed:?}: {}", x.message());
        assert!(x.batches.is_empty(), "{typed:?} matched rows");
        let manifest = x.manifest.unwrap();
        assert_eq!(manifest.row_count, 0, "{typed:?}");
        assert_eq!(manifest.metadata["subject_found"], "false", "{typed:?}");
        assert_ne!(manifest.subject_id, alice, "{typed:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_phone_number_written_three_ways_matches_its_e164_form() {
    let server = TestServer::start(identity_config()).await;
    let mut ids = Vec::new();
    for typed in ["+44 20 7946 0958", "020 7946 0958", "(020) 7946-0958"] {
        let mut req = request("phone", typed);
        req.tables = vec!["phone_book".into()];
        let x = extract(&mut server.client().await, req).await;
        assert_eq!(x.code(), Code::Ok, "{typed}: {}", x.message());
        assert_eq!(x.rows("phone_book").len(), 1, "{typed}");
        ids.push(x.manifest.unwrap().subject_id);
    }
    assert!(
        ids.iter()
            .all(|s| *s == expected_subject_id("phone", "+442079460958"))
    );

    // Not a phone number: a precise refusal that does not echo the value.
    let x = extract(
        &mut server.client().await,
        request("phone", "call me maybe"),
    )
    .await;
    assert_eq!(x.code(), Code::InvalidArgument);
    assert!(
        x.message().contains("not a phone number"),
        "{}",
        x.message()
    );
    assert!(!x.message().contains("call me"), "{}", x.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_case_insensitive_column_matches_and_the_gate_names_the_index_it_needs() {
    let server = TestServer::start(identity_config()).await;
    let mut req = request("email", "carol.mixed@example.com");
    req.tables = vec!["mixed_unindexed".into(), "mixed_indexed".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("mixed_unindexed").len(), 1);
    assert_eq!(x.rows("mixed_indexed").len(), 1);

    // The schema gate: a warning that names the index to create, only where it is missing.
    let checked = validate(
        &mut server.client().await,
        ValidateRequest {
            source: "demo".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let warnings: std::collections::BTreeMap<String, String> = checked
        .tables
        .iter()
        .map(|c| (c.table.clone(), c.warnings.join("\n")))
        .collect();
    assert!(
        warnings["mixed_unindexed"].contains(
            r#"create one: CREATE INDEX ON "public"."mixed_unindexed" (lower("email"));"#
        ),
        "{warnings:#?}"
    );
    assert!(warnings["mixed_unindexed"].contains("case_insensitive"));
    assert_eq!(
        warnings["mixed_indexed"], "",
        "the lower(email) index serves it"
    );
    assert_eq!(warnings["phone_book"], "");
    assert!(warnings["customers"].is_empty());

    // With the index, the compiled query reads through it.
    let config = identity_config();
    let db = sql().await;
    let pool = dsr_connector::store::postgres::SourcePool::new(&config.sources[0]).unwrap();
    let map =
        dsr_connector::schema::DataMap::load(&config.sources[0], &config.matrix(), &pool, None)
            .await
            .unwrap();
    let plan = map.plan("email", &["mixed_indexed".into()]).unwrap();
    let query = &plan.tables[0].select_sql;
    assert!(
        query.contains("lower(t0.\"email\") = lower($1::text)"),
        "{query}"
    );
    db.batch_execute("SET enable_seqscan = off").await.unwrap();
    let explained: serde_json::Value = db
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) {query}"),
            &[&"carol.mixed@example.com"],
        )
        .await
        .unwrap()
        .get(0);
    let text = explained.to_string();
    assert!(
        text.contains("mixed_indexed_lower")
            && text.contains("Index Cond")
            && !text.contains("Seq Scan"),
        "{explained:#}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_empty_answer_says_so_and_a_dry_run_counts_looser_matches_without_values() {
    let server = TestServer::start(identity_config()).await;
    // Stored as "Bob.Legacy@Example.com", " bob.legacy@example.com" and in capitals: the
    // normalised value matches none of them exactly.
    let x = extract(
        &mut server.client().await,
        request("email", "Bob.Legacy@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let manifest = x.manifest.unwrap();
    assert_eq!(manifest.row_count, 0);
    assert_eq!(manifest.metadata["subject_found"], "false");

    let mut client = server.client().await;
    let dry_run = |value: &str| ValidateRequest {
        source: "demo".into(),
        subject: Some(dsr_connector::pb::Identity {
            kind: "email".into(),
            value: value.into(),
        }),
        ..Default::default()
    };
    let checked = validate(&mut client, dry_run("Bob.Legacy@example.com"))
        .await
        .unwrap();
    let everything = checked.text.clone();
    let verdict = checked.verdict;
    type Found = (u64, Vec<(String, u64)>);
    let counts: std::collections::BTreeMap<&str, Found> = verdict
        .looser_matches
        .iter()
        .map(|m| {
            (
                m.r#match.as_str(),
                (
                    m.row_count,
                    m.tables
                        .iter()
                        .filter(|t| t.row_count > 0)
                        .map(|t| (t.table.clone(), t.row_count))
                        .collect(),
                ),
            )
        })
        .collect();
    assert_eq!(
        counts["case_insensitive"],
        (2, vec![("legacy_emails".to_owned(), 2)]),
        "{verdict:#?}"
    );
    assert_eq!(
        counts["trimmed"],
        (1, vec![("legacy_emails".to_owned(), 1)])
    );
    assert!(
        verdict
            .warnings
            .iter()
            .any(|w| w.contains("no table holds a row for this subject")),
        "{:?}",
        verdict.warnings
    );
    let lower = everything.to_lowercase();
    assert!(
        !lower.contains("bob.legacy"),
        "a value in the response: {everything}"
    );

    // A subject that is found gets no looser counts.
    let found = validate(&mut client, dry_run("alice@example.com"))
        .await
        .unwrap()
        .verdict;
    assert!(found.looser_matches.is_empty());
    assert_eq!(found.manifest.unwrap().metadata["subject_found"], "true");
    server.stop().await.unwrap();
}

#[test]
fn identity_settings_are_checked_at_load() {
    let text = config_text("").replace(
        "[sources.identities.email]",
        "[sources.identities.phone]\ndefault_region = \"Narnia\"\n\n[sources.identities.email]",
    );
    let error = dsr_connector::demo::config(support::cluster(), &text, SUBJECT_KEY).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("sources[0].identities.phone: 'phone' is not in"),
        "{message}"
    );
    assert!(message.contains("default_region: 'Narnia'"), "{message}");
}

#[tokio::test]
async fn case_insensitive_matching_on_a_number_column_is_a_named_schema_problem() {
    let text = config_text("").replace(
        r#"{ kind = "customer_id", column = "id" }"#,
        r#"{ kind = "customer_id", column = "id", match = "case_insensitive" }"#,
    );
    assert!(text.contains("case_insensitive"), "the demo map changed");
    let server = TestServer::start(config(&text)).await;
    let x = extract(&mut server.client().await, request("customer_id", "1")).await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    assert!(
        x.message().contains(
            "table 'customers', identity column 'id' (kind customer_id, case_insensitive): \
             case_insensitive matching needs a text column; this one is bigint"
        ),
        "{}",
        x.message()
    );
    server.stop().await.unwrap();
}
