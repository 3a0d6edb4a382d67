//! Erase on both stores, from one body each: the demo shop in a database of the test's own on
//! PostgreSQL (source `demo`) and on a real MariaDB (source `mariadb`), erased through a real
//! server and a real tonic client, and read back with each store's own SQL
//! ([`support::shop`]): what an erasure deletes, masks and keeps, and what it refuses. Every
//! other subject's rows stay byte-identical; a refused erasure changes nothing. Erasures that
//! are stopped, locked out or killed are in erase_stopped.rs. What only PostgreSQL has
//! (partitions, triggers that keep rows back, JSON deeper than the scan walks, its commit
//! status) is tested in erase/ and erase_exact.rs; what only MariaDB has (a table without a
//! key) at the end of this file.

mod support;

use dsr_connector::demo::mariadb::TempMariaDb;
use dsr_connector::pb::ErasureAction;
use support::TestServer;
use support::shop::{ALICE, PSEUDONYM_KEY, Shop, config, config_text, erase_request, same};
use support::{erase_events as erase, erased_table as table};
use tonic::Code;

/// The databases of the tests, one per test, on both stores.
const DATABASES: [&str; 5] = [
    "erase_policies",
    "erase_shared",
    "erase_cascade",
    "erase_pseudonym",
    "erase_json",
];

/// This binary's MariaDB, with the demo shop in each test's database, and one more whose
/// support tickets have no key.
fn mariadb() -> &'static TempMariaDb {
    let mut databases: Vec<(&str, &str)> = DATABASES.iter().map(|d| (*d, "")).collect();
    databases.push((
        "erase_keyless",
        "ALTER TABLE support_tickets DROP PRIMARY KEY;",
    ));
    support::mariadb::server(&databases)
}

both_stores!(
    a_preview_changes_nothing_then_the_erasure_deletes_masks_and_retains_as_declared,
    policies,
    multi_thread
);

async fn policies(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_policies").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let text = config_text(mariadb(), "erase_policies", "", |text| {
        format!(
            "{text}\n[server.audit]\npath = {:?}\nreplica = \"replica-erase\"\n",
            log.display().to_string()
        )
    });
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    let before = shop.rows().await;
    let alice = shop.alice_rows().await;
    assert_eq!(alice.len(), 19, "{alice:?}");

    // The preview: counts per table, a digest, and nothing changed.
    let (streamed, preview) = erase(&mut client, erase_request(store, true, ""))
        .await
        .unwrap();
    assert!(preview.dry_run && preview.committed_at.is_none());
    assert_eq!(streamed, preview.tables);
    same(&shop.rows().await, &before, "a preview changed data");
    // Children before parents, then what is kept.
    let order: Vec<&str> = preview.tables.iter().map(|t| t.table.as_str()).collect();
    let at = |name: &str| order.iter().position(|t| *t == name).unwrap();
    assert!(at("order_items") < at("orders") && at("orders") < at("customers"));
    assert!(at("events") < at("customers"));
    let counts: Vec<(&str, u64)> = ["customers", "orders", "order_items", "support_tickets"]
        .iter()
        .map(|t| (*t, table(&preview, t).rows))
        .collect();
    assert_eq!(
        counts,
        [
            ("customers", 1),
            ("orders", 3),
            ("order_items", 5),
            ("support_tickets", 2)
        ]
    );
    let legacy = table(&preview, "legacy_accounts");
    assert_eq!(legacy.action, ErasureAction::Retain as i32);
    assert_eq!(
        preview.rows_deleted + preview.rows_masked + preview.rows_retained,
        alice.len() as u64
    );

    // The erasure, with the preview's digest.
    let (_, receipt) = erase(
        &mut client,
        erase_request(store, false, &preview.preview_digest),
    )
    .await
    .unwrap();
    assert!(receipt.committed_at.is_some());
    assert_eq!(receipt.rows_deleted, preview.rows_deleted);
    assert_eq!(receipt.rows_masked, 2);
    assert!(receipt.tables.iter().all(|t| t.verified));

    // Deleted, masked, retained; every other row byte-identical.
    let after = shop.rows().await;
    for (key, text) in &before {
        match (alice.contains(key), key.0.as_str(), after.get(key)) {
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

    // Erasing again finds nothing left to change, and points to the erasure that did.
    let (_, repeat) = erase(&mut client, erase_request(store, true, ""))
        .await
        .unwrap();
    let (_, again) = erase(
        &mut client,
        erase_request(store, false, &repeat.preview_digest),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(again.rows_deleted + again.rows_masked, 0);
    assert_eq!(again.earlier_erasure_id, receipt.erasure_id, "{again:?}");
    same(&shop.rows().await, &after, "a repeat changed data");
    server.stop().await.unwrap();

    // A record before COMMIT and one after, naming the transaction, never a value.
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
    assert_eq!(outcomes, ["erasing", "ok", "erasing", "ok"], "{records:#?}");
    let transaction = records[0]["transaction"].as_str().unwrap();
    assert!(!transaction.is_empty(), "{records:#?}");
    assert_eq!(records[1]["transaction"], transaction);
}

both_stores!(
    an_identity_shared_by_two_customers_is_refused_and_nothing_changes,
    shared,
    multi_thread
);

async fn shared(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_shared").await;
    shop.exec(
        "ALTER TABLE customers DROP CONSTRAINT customers_email_key; \
         INSERT INTO customers VALUES (4, 'alice@example.com', 'Another Alice', NULL, NULL, 0, \
         false, now())",
        "ALTER TABLE customers DROP INDEX email; \
         INSERT INTO customers VALUES (4, 'alice@example.com', 'Another Alice', NULL, NULL, 0, \
         false, NOW())",
    )
    .await;
    let before = shop.rows().await;
    let text = config_text(
        mariadb(),
        "erase_shared",
        "erasure = { require_preview = false }",
        |t| t,
    );
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    for dry_run in [true, false] {
        let refused = erase(&mut client, erase_request(store, dry_run, ""))
            .await
            .unwrap_err();
        println!("{store}: {}", refused.message());
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused.message().contains("matches 2 rows") && refused.message().contains("customers"),
            "{refused:?}"
        );
        assert!(!refused.message().contains(ALICE));
    }
    server.stop().await.unwrap();
    same(
        &shop.rows().await,
        &before,
        "a refused erasure changed data",
    );
}

both_stores!(
    a_cascading_key_from_an_unmapped_table_or_onto_kept_rows_is_refused,
    cascades,
    multi_thread
);

async fn cascades(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_cascade").await;
    // A table outside the data map cascades from customers.
    shop.exec(
        "CREATE TABLE wishlists (id bigint PRIMARY KEY, \
           customer_id bigint REFERENCES customers (id) ON DELETE CASCADE, sku text); \
         INSERT INTO wishlists VALUES (1, 1, 'CLOCK-1')",
        "CREATE TABLE wishlists (id BIGINT PRIMARY KEY, customer_id BIGINT, sku TEXT, \
           CONSTRAINT wishlists_customer FOREIGN KEY (customer_id) REFERENCES customers (id) \
           ON DELETE CASCADE) ENGINE = InnoDB; \
         INSERT INTO wishlists VALUES (1, 1, 'CLOCK-1')",
    )
    .await;
    let before = shop.rows().await;
    let server = TestServer::start(config(
        mariadb(),
        &config_text(mariadb(), "erase_cascade", "", |t| t),
    ))
    .await;
    let mut client = server.client().await;
    let cascade = erase(&mut client, erase_request(store, true, ""))
        .await
        .unwrap_err();
    println!("{store}: {}", cascade.message());
    assert_eq!(cascade.code(), Code::FailedPrecondition, "{cascade:?}");
    assert!(
        cascade.message().contains("wishlists") && cascade.message().contains("ON DELETE CASCADE"),
        "{cascade:?}"
    );
    server.stop().await.unwrap();

    // Mapped, with its rows kept: the key would delete a row the erasure keeps.
    let wishlists = "\n[[sources.tables]]\nname = \"wishlists\"\n\
        reference = { column = \"customer_id\", table = \"customers\", to = \"id\", reach = \"owned\" }\n\
        columns = { id = \"not_pii\", customer_id = \"identifier.customer_id\", sku = \"commerce.product\" }\n\
        erase = { action = \"retain\", reason = \"kept for the test\" }\n";
    let text = config_text(
        mariadb(),
        "erase_cascade",
        "erasure = { require_preview = false }",
        |text| {
            // After each source's last table: PostgreSQL's ends where MariaDB's begins.
            let mariadb = text.rfind("\n[[sources]]").unwrap();
            format!(
                "{}{wishlists}{}{wishlists}",
                &text[..mariadb],
                &text[mariadb..]
            )
        },
    );
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    let kept = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap_err();
    println!("{store}: {}", kept.message());
    assert_eq!(kept.code(), Code::FailedPrecondition, "{kept:?}");
    assert!(
        kept.message().contains("wishlists")
            && kept.message().contains("not rows this erasure deletes"),
        "{kept:?}"
    );
    server.stop().await.unwrap();
    same(
        &shop.rows().await,
        &before,
        "a refused erasure changed data",
    );
    assert_eq!(shop.integer("SELECT count(*) FROM wishlists").await, 1);
}

both_stores!(
    a_pseudonym_is_the_same_token_for_the_same_value_on_every_store,
    pseudonym,
    multi_thread
);

async fn pseudonym(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_pseudonym").await;
    let text = config_text(
        mariadb(),
        "erase_pseudonym",
        "erasure = { require_preview = false, pseudonym_key_env = \"PSEUDONYM_KEY\" }",
        |text| {
            text.replace(
                "requester_email = \"redact\", subject = \"redact\", body = \"redact\"",
                "requester_email = \"pseudonym\", subject = \"redact\", body = \"null\"",
            )
        },
    );
    // The body must be nullable for a null mask.
    shop.exec(
        "ALTER TABLE support_tickets ALTER COLUMN body DROP NOT NULL",
        "ALTER TABLE support_tickets MODIFY body TEXT NULL",
    )
    .await;
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    let (_, receipt) = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(table(&receipt, "support_tickets").rows, 2);
    let tokens = shop
        .texts("SELECT requester_email FROM support_tickets WHERE id IN (1, 2) ORDER BY id")
        .await;
    // HMAC-SHA256 under the key, its first 128 bits: the same on every store.
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(PSEUDONYM_KEY.as_bytes()).unwrap();
    mac.update(ALICE.as_bytes());
    let expected = hex::encode(&mac.finalize().into_bytes()[..16]);
    assert_eq!(tokens, [expected.clone(), expected]);
    let bodies = shop
        .integer("SELECT count(*) FROM support_tickets WHERE id IN (1, 2) AND body IS NULL")
        .await;
    assert_eq!(bodies, 2);
    server.stop().await.unwrap();
}

both_stores!(
    personal_data_inside_json_is_masked_in_place_page_by_page,
    json_pages,
    multi_thread
);

async fn json_pages(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_json").await;
    // Alice's preferences: one document naming her, and 3,000 of 2 kB each (over 6 MB, more
    // than one page); bob's one, which must stay as it is.
    shop.exec(
        "CREATE TABLE prefs (id bigint PRIMARY KEY, customer_id bigint NOT NULL, settings jsonb); \
         INSERT INTO prefs VALUES (1, 1, '{\"theme\": \"dark ✓\", \"email\": \"alice@example.com\"}'), \
           (2, 2, '{\"theme\": \"light\", \"email\": \"bob@example.com\"}'), (3, 1, NULL); \
         INSERT INTO prefs SELECT 100 + i, 1, jsonb_build_object('i', i, 'pad', repeat('x', 2000), \
           'by', jsonb_build_object('email', 'alice@example.com')) FROM generate_series(1, 3000) AS i",
        "CREATE TABLE prefs (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, settings JSON) \
           ENGINE = InnoDB; \
         INSERT INTO prefs VALUES (1, 1, '{\"theme\": \"dark ✓\", \"email\": \"alice@example.com\"}'), \
           (2, 2, '{\"theme\": \"light\", \"email\": \"bob@example.com\"}'), (3, 1, NULL); \
         INSERT INTO prefs SELECT 100 + seq, 1, JSON_OBJECT('i', seq, 'pad', REPEAT('x', 2000), \
           'by', JSON_OBJECT('email', 'alice@example.com')) FROM seq_1_to_3000",
    )
    .await;
    if store == "mariadb" {
        // A server that steps AUTO_INCREMENT by 3 (as Galera does) and a database whose
        // default character set is latin1: the pages are numbered and the masked documents
        // kept as UTF-8 all the same.
        shop.exec(
            "",
            "SET GLOBAL auto_increment_increment = 3; \
             ALTER DATABASE erase_json CHARACTER SET latin1 COLLATE latin1_swedish_ci",
        )
        .await;
    }
    let bob = shop
        .texts("SELECT CAST(settings AS CHAR) FROM prefs WHERE id = 2")
        .await;
    let prefs = "\n[[sources.tables]]\nname = \"prefs\"\n\
        reference = { column = \"customer_id\", table = \"customers\", to = \"id\", reach = \"owned\" }\n\
        columns = { id = \"not_pii\", customer_id = \"identifier.customer_id\", \
          settings = { category = \"behaviour.payload\", scan_json = true } }\n\
        erase = { action = \"mask\", mask = { settings = { json = \"redact\" }, \
          customer_id = { retain = \"kept for the test\" } } }\n";
    let text = config_text(
        mariadb(),
        "erase_json",
        "erasure = { require_preview = false }",
        |text| {
            let mariadb = text.rfind("\n[[sources]]").unwrap();
            format!("{}{prefs}{}{prefs}", &text[..mariadb], &text[mariadb..])
        },
    );
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    let (_, receipt) = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap_or_else(|e| panic!("{store}: {e:?}"));
    let masked = table(&receipt, "prefs");
    assert_eq!(masked.rows, 3002, "{masked:?}");
    assert!(masked.verified, "{masked:?}");
    assert!(
        masked
            .masked_columns
            .contains(&"settings:json:redact".to_owned()),
        "{masked:?}"
    );
    // Every page masked, and only what is personal.
    let left = shop
        .integer(
            "SELECT count(*) FROM prefs WHERE customer_id = 1 AND settings IS NOT NULL \
             AND (CAST(settings AS CHAR(10000)) LIKE '%example.com%' \
               OR (id > 100 AND CAST(settings AS CHAR(10000)) NOT LIKE '%xxxxxxxxxx%'))",
        )
        .await;
    assert_eq!(
        left, 0,
        "{store}: a document was left unmasked, or lost its padding"
    );
    let theme = shop
        .integer(
            "SELECT count(*) FROM prefs WHERE id = 1 \
             AND CAST(settings AS CHAR(1000)) LIKE '%dark ✓%' \
             AND CAST(settings AS CHAR(1000)) LIKE '%[redacted]%'",
        )
        .await;
    assert_eq!(theme, 1, "the rest of a document is kept");
    assert_eq!(
        shop.integer("SELECT count(*) FROM prefs WHERE id = 3 AND settings IS NULL")
            .await,
        1,
        "a NULL document stays NULL"
    );
    assert_eq!(
        shop.texts("SELECT CAST(settings AS CHAR) FROM prefs WHERE id = 2")
            .await,
        bob,
        "another subject's document is kept as it was"
    );
    server.stop().await.unwrap();
    if store == "mariadb" {
        shop.exec("", "SET GLOBAL auto_increment_increment = 1")
            .await;
    }
}

/// MariaDB finds a changed table's rows again by its key: a table without one (no primary
/// key, no unique key of NOT NULL columns) cannot be masked or deleted, and is refused by
/// name; nothing changes.
#[tokio::test]
async fn on_mariadb_a_table_without_a_key_is_refused_by_name() {
    let shop = Shop::open(mariadb(), "mariadb", "erase_keyless").await;
    let before = shop.rows().await;
    let text = config_text(mariadb(), "erase_keyless", "", |t| t);
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    let refused = erase(&mut client, erase_request("mariadb", true, ""))
        .await
        .unwrap_err();
    println!("{}", refused.message());
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("support_tickets")
            && refused.message().contains("no primary key"),
        "{refused:?}"
    );
    server.stop().await.unwrap();
    same(
        &shop.rows().await,
        &before,
        "a refused erasure changed data",
    );
}
