//! Erase on both stores, from one body each: the demo shop in a database of the test's own on
//! PostgreSQL (source `demo`) and on a real MariaDB (source `mariadb`), erased through a real
//! server and a real tonic client, and read back with each store's own SQL. Every other
//! subject's rows stay byte-identical; a refused, stopped or killed erasure changes nothing.
//! What only PostgreSQL has (partitions, triggers that keep rows back, JSON deeper than the
//! scan walks, its commit status) is tested in erase.rs and erase_exact.rs; what only MariaDB has (a table
//! without a key) at the end of this file.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use dsr_connector::config::Config;
use dsr_connector::demo::{self, mariadb::TempMariaDb};
use dsr_connector::pb::{EraseRequest, ErasureAction, Identity};
use dsr_connector::store::mysql::MySqlPool;
use mysql_async::prelude::Queryable;
use support::{SUBJECT_KEY, TestServer, cluster};
use support::{erase_events as erase, erased_table as table};
use tonic::Code;

const ALICE: &str = "alice@example.com";

/// The demo tables, each with its primary key `id` first.
const TABLES: [&str; 6] = [
    "customers",
    "orders",
    "order_items",
    "events",
    "support_tickets",
    "legacy_accounts",
];

/// The databases of the tests, one per test, on both stores.
const DATABASES: [&str; 9] = [
    "erase_policies",
    "erase_shared",
    "erase_cascade",
    "erase_pseudonym",
    "erase_cancel",
    "erase_kill",
    "erase_locked",
    "erase_undone",
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

/// The shop of one test on one store: its database, and SQL on it.
struct Shop {
    store: &'static str,
    name: &'static str,
    pg: Option<tokio_postgres::Client>,
    my: Option<mysql_async::Pool>,
}

impl Shop {
    /// The demo shop in database `name` of `store` (`demo` or `mariadb`).
    async fn open(store: &'static str, name: &'static str) -> Shop {
        if store == "demo" {
            return Shop {
                store,
                name,
                pg: Some(support::demo_database(name).await),
                my: None,
            };
        }
        let server = mariadb();
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(server.host())
            .tcp_port(server.port())
            .user(Some(demo::mariadb::USER))
            .pass(Some(server.password()))
            .db_name(Some(name))
            .prefer_socket(false);
        Shop {
            store,
            name,
            pg: None,
            my: Some(mysql_async::Pool::new(opts)),
        }
    }

    /// Runs `pg` on PostgreSQL or `my` on MariaDB (statements separated by `;`).
    async fn exec(&self, pg: &str, my: &str) {
        match (&self.pg, &self.my) {
            (Some(db), _) => db.batch_execute(pg).await.unwrap(),
            (_, Some(pool)) => {
                let mut conn = pool.get_conn().await.unwrap();
                for statement in my.split(';').filter(|s| !s.trim().is_empty()) {
                    conn.query_drop(statement).await.unwrap();
                }
            }
            _ => unreachable!(),
        }
    }

    /// One integer of `sql` (written so that both stores read it alike).
    async fn integer(&self, sql: &str) -> i64 {
        match (&self.pg, &self.my) {
            (Some(db), _) => db.query_one(sql, &[]).await.unwrap().get(0),
            (_, Some(pool)) => {
                let mut conn = pool.get_conn().await.unwrap();
                conn.query_first::<i64, _>(sql).await.unwrap().unwrap()
            }
            _ => unreachable!(),
        }
    }

    /// The first column of each row of `sql`, as text.
    async fn texts(&self, sql: &str) -> Vec<String> {
        match (&self.pg, &self.my) {
            (Some(db), _) => db
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
            (_, Some(pool)) => {
                let mut conn = pool.get_conn().await.unwrap();
                conn.query::<String, _>(sql).await.unwrap()
            }
            _ => unreachable!(),
        }
    }

    /// Every row of every demo table as text (as its store renders it), by table and id.
    async fn rows(&self) -> BTreeMap<(String, i64), String> {
        let mut all = BTreeMap::new();
        for table in TABLES {
            match (&self.pg, &self.my) {
                (Some(db), _) => {
                    let sql = format!("SELECT id::bigint, t::text FROM {table} t ORDER BY id");
                    for row in db.query(&sql, &[]).await.unwrap() {
                        all.insert((table.to_owned(), row.get(0)), row.get(1));
                    }
                }
                (_, Some(pool)) => {
                    let mut conn = pool.get_conn().await.unwrap();
                    let sql = format!("SELECT * FROM {table} ORDER BY id");
                    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap();
                    for row in rows {
                        let values = row.unwrap();
                        let id = match &values[0] {
                            mysql_async::Value::Int(n) => *n,
                            mysql_async::Value::UInt(n) => *n as i64,
                            mysql_async::Value::Bytes(b) => {
                                String::from_utf8_lossy(b).parse().unwrap()
                            }
                            other => panic!("an id {other:?}"),
                        };
                        let text: Vec<String> = values
                            .iter()
                            .map(|v| match v {
                                mysql_async::Value::Bytes(b) => {
                                    String::from_utf8_lossy(b).into_owned()
                                }
                                other => format!("{other:?}"),
                            })
                            .collect();
                        all.insert((table.to_owned(), id), text.join("|"));
                    }
                }
                _ => unreachable!(),
            }
        }
        all
    }

    /// The ids of alice's rows, by table.
    async fn alice_rows(&self) -> Vec<(String, i64)> {
        let queries = [
            (
                "customers",
                "SELECT id FROM customers WHERE email = 'alice@example.com'",
            ),
            (
                "orders",
                "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id \
                 WHERE c.email = 'alice@example.com'",
            ),
            (
                "order_items",
                "SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id \
                 JOIN customers c ON c.id = o.customer_id WHERE c.email = 'alice@example.com'",
            ),
            (
                "events",
                "SELECT e.id FROM events e JOIN customers c ON c.id = e.customer_id \
                 WHERE c.email = 'alice@example.com'",
            ),
            (
                "support_tickets",
                "SELECT id FROM support_tickets WHERE requester_email = 'alice@example.com'",
            ),
            (
                "legacy_accounts",
                "SELECT id FROM legacy_accounts WHERE email = 'alice@example.com'",
            ),
        ];
        let mut ids = Vec::new();
        for (table, sql) in queries {
            let found: Vec<i64> = match (&self.pg, &self.my) {
                (Some(db), _) => db
                    .query(&format!("SELECT x.id::bigint FROM ({sql}) AS x"), &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
                (_, Some(pool)) => {
                    let mut conn = pool.get_conn().await.unwrap();
                    conn.query(sql).await.unwrap()
                }
                _ => unreachable!(),
            };
            ids.extend(found.into_iter().map(|id| (table.to_owned(), id)));
        }
        ids
    }

    /// A session of its own that holds alice's customer row (`SELECT ... FOR UPDATE` in an
    /// open transaction) until it is released.
    async fn hold_alice(&self) -> Holder {
        self.hold("SELECT * FROM customers WHERE id = 1 FOR UPDATE")
            .await
    }

    /// A session of its own that runs `lock` in a transaction it keeps open until released.
    async fn hold(&self, lock: &str) -> Holder {
        match self.store {
            "demo" => {
                let db = demo::connect(cluster(), self.name).await.unwrap();
                db.batch_execute(&format!("BEGIN; {lock}")).await.unwrap();
                Holder::Pg(db)
            }
            _ => {
                let mut conn = self.my.as_ref().unwrap().get_conn().await.unwrap();
                conn.query_drop("START TRANSACTION").await.unwrap();
                conn.query_drop(lock).await.unwrap();
                Holder::My(conn)
            }
        }
    }

    /// Makes every DELETE of a customer wait for row 1 of a table `lockme` (a trigger locks
    /// it): an erasure that deletes alice waits there, after it has deleted her orders, items
    /// and events (children first).
    async fn customers_wait_for_lockme(&self) {
        self.exec(
            "CREATE TABLE lockme (id int PRIMARY KEY); INSERT INTO lockme VALUES (1); \
             CREATE FUNCTION wait_for_lockme() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM 1 FROM lockme WHERE id = 1 FOR UPDATE; RETURN OLD; END $$; \
             CREATE TRIGGER customers_wait BEFORE DELETE ON customers \
             FOR EACH ROW EXECUTE FUNCTION wait_for_lockme()",
            "CREATE TABLE lockme (id INT PRIMARY KEY) ENGINE = InnoDB; \
             INSERT INTO lockme VALUES (1); \
             CREATE TRIGGER customers_wait BEFORE DELETE ON customers FOR EACH ROW \
             SELECT id INTO @waited FROM lockme WHERE id = 1 FOR UPDATE",
        )
        .await;
    }

    /// Whether a transaction of the service waits on a row lock (with `deleting`, in a
    /// DELETE of a customer, on `lockme`), polled a bounded number of times.
    async fn erasure_waits_in(&self, deleting: bool) -> bool {
        let sql = match (self.store, deleting) {
            ("demo", deleting) => format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
                 AND wait_event_type = 'Lock' AND query LIKE '{}'",
                self.name,
                if deleting { "DELETE%" } else { "%" }
            ),
            // MariaDB shows the statement the trigger runs.
            (_, deleting) => format!(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX \
                 WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '{}'",
                if deleting { "%FROM lockme%" } else { "%" }
            ),
        };
        support::eventually(200, || async { self.integer(&sql).await > 0 }).await
    }

    async fn erasure_waits(&self) -> bool {
        self.erasure_waits_in(false).await
    }

    /// Asserts that the erasure stopped waiting (its statement stopped on the server) while
    /// `holder` still holds the row, `after` what should stop it; then, once the row is
    /// released, that no transaction of it is left and every row is as `before`.
    async fn assert_stopped(
        &self,
        holder: Holder,
        before: &BTreeMap<(String, i64), String>,
        after: &str,
    ) {
        assert!(
            self.no_erasure_waits().await,
            "the erasure still waits after {after}"
        );
        holder.release().await;
        assert!(
            self.settled().await,
            "the erasure's transaction was left open after {after}"
        );
        same(
            &self.rows().await,
            before,
            &format!("an erasure stopped by {after} changed data"),
        );
    }

    /// Whether no transaction of the service waits on a row lock any more, polled a bounded
    /// number of times (the holder's own transaction waits on nothing).
    async fn no_erasure_waits(&self) -> bool {
        let sql = match self.store {
            "demo" => format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
                 AND wait_event_type = 'Lock'",
                self.name
            ),
            _ => "SELECT COUNT(*) FROM information_schema.INNODB_TRX \
                  WHERE trx_state = 'LOCK WAIT'"
                .to_owned(),
        };
        support::eventually(200, || async { self.integer(&sql).await == 0 }).await
    }

    /// Whether no transaction of the service is left open on the database (the holder
    /// released), polled a bounded number of times.
    async fn settled(&self) -> bool {
        support::eventually(200, || async {
            match self.store {
                "demo" => {
                    self.integer(&format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
                         AND pid <> pg_backend_pid() \
                         AND (state = 'active' OR state LIKE 'idle in transaction%')",
                        self.name
                    ))
                    .await
                        == 0
                }
                _ => watch_pool(self.name).open_transactions().await.unwrap() == 0,
            }
        })
        .await
    }
}

/// A session holding a row lock.
enum Holder {
    Pg(tokio_postgres::Client),
    My(mysql_async::Conn),
}

impl Holder {
    async fn release(self) {
        match self {
            Holder::Pg(db) => db.batch_execute("ROLLBACK").await.unwrap(),
            Holder::My(mut conn) => conn.query_drop("ROLLBACK").await.unwrap(),
        }
    }
}

/// A pool on MariaDB database `name`, for watching its transactions.
fn watch_pool(name: &str) -> MySqlPool {
    let text = support::mariadb::config_text(mariadb(), name, "");
    let config = support::mariadb::config(mariadb(), &text);
    let source = config.sources.iter().find(|s| s.name == "mariadb").unwrap();
    MySqlPool::for_source(source).unwrap()
}

/// The config text of both stores on each one's database `name`, with `settings` added to
/// both sources (after their identity kinds) and `edit` applied.
fn config_text(name: &str, settings: &str, edit: impl Fn(String) -> String) -> String {
    let text = format!(
        "{}\n{}\n",
        demo::config_toml(cluster(), name, "127.0.0.1:0".parse().unwrap()),
        demo::mariadb::source_toml("mariadb", mariadb().host(), mariadb().port(), name)
    );
    const KINDS: &str = "identity_kinds = [\"email\", \"customer_id\"]";
    edit(text.replace(KINDS, &format!("{KINDS}\n{settings}")))
}

/// Parses config text with both stores' passwords and a pseudonym key.
fn config(text: &str) -> Config {
    Config::from_toml_str(text, |name| match name {
        demo::mariadb::PASSWORD_ENV => Some(mariadb().password().to_owned()),
        demo::PASSWORD_ENV => Some(cluster().password().to_owned()),
        dsr_connector::config::DEFAULT_SUBJECT_KEY_ENV => Some(SUBJECT_KEY.to_owned()),
        dsr_connector::config::DEFAULT_AUDIT_KEY_ENV => Some(demo::audit_key(SUBJECT_KEY)),
        "PSEUDONYM_KEY" => Some(PSEUDONYM_KEY.to_owned()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

const PSEUDONYM_KEY: &str = "pseudonym-key-0123456789abcdef";

/// An erasure (or its preview) of alice on `source`.
fn erase_request(source: &str, dry_run: bool, digest: &str) -> EraseRequest {
    EraseRequest {
        source: source.into(),
        subject: Some(Identity {
            kind: "email".into(),
            value: ALICE.into(),
        }),
        request_id: "dsr-erase-1".into(),
        compliance_tag: "gdpr-art17".into(),
        dry_run,
        preview_digest: digest.into(),
    }
}

/// Asserts that `now` holds exactly the rows of `then`, naming the first that differ.
fn same(now: &BTreeMap<(String, i64), String>, then: &BTreeMap<(String, i64), String>, what: &str) {
    let differ: Vec<_> = then
        .iter()
        .filter(|(key, text)| now.get(*key) != Some(*text))
        .map(|(key, _)| key)
        .chain(now.keys().filter(|key| !then.contains_key(*key)))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} rows then, {} now; differing: {differ:?}",
        then.len(),
        now.len()
    );
}

both_stores!(
    a_preview_changes_nothing_then_the_erasure_deletes_masks_and_retains_as_declared,
    policies,
    multi_thread
);

async fn policies(store: &'static str) {
    let shop = Shop::open(store, "erase_policies").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let text = config_text("erase_policies", "", |text| {
        format!(
            "{text}\n[server.audit]\npath = {:?}\nreplica = \"replica-erase\"\n",
            log.display().to_string()
        )
    });
    let server = TestServer::start(config(&text)).await;
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
    let shop = Shop::open(store, "erase_shared").await;
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
        "erase_shared",
        "erasure = { require_preview = false }",
        |t| t,
    );
    let server = TestServer::start(config(&text)).await;
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
    let shop = Shop::open(store, "erase_cascade").await;
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
    let server = TestServer::start(config(&config_text("erase_cascade", "", |t| t))).await;
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
    let server = TestServer::start(config(&text)).await;
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
    let shop = Shop::open(store, "erase_pseudonym").await;
    let text = config_text(
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
    let server = TestServer::start(config(&text)).await;
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
    let shop = Shop::open(store, "erase_json").await;
    // Alice's preferences: one document naming her, and 3,000 of 2 kB each (over 6 MB, more
    // than one page); bob's one, which must stay as it is.
    shop.exec(
        "CREATE TABLE prefs (id bigint PRIMARY KEY, customer_id bigint NOT NULL, settings jsonb); \
         INSERT INTO prefs VALUES (1, 1, '{\"theme\": \"dark\", \"email\": \"alice@example.com\"}'), \
           (2, 2, '{\"theme\": \"light\", \"email\": \"bob@example.com\"}'), (3, 1, NULL); \
         INSERT INTO prefs SELECT 100 + i, 1, jsonb_build_object('i', i, 'pad', repeat('x', 2000), \
           'by', jsonb_build_object('email', 'alice@example.com')) FROM generate_series(1, 3000) AS i",
        "CREATE TABLE prefs (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, settings JSON) \
           ENGINE = InnoDB; \
         INSERT INTO prefs VALUES (1, 1, '{\"theme\": \"dark\", \"email\": \"alice@example.com\"}'), \
           (2, 2, '{\"theme\": \"light\", \"email\": \"bob@example.com\"}'), (3, 1, NULL); \
         INSERT INTO prefs SELECT 100 + seq, 1, JSON_OBJECT('i', seq, 'pad', REPEAT('x', 2000), \
           'by', JSON_OBJECT('email', 'alice@example.com')) FROM seq_1_to_3000",
    )
    .await;
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
        "erase_json",
        "erasure = { require_preview = false }",
        |text| {
            let mariadb = text.rfind("\n[[sources]]").unwrap();
            format!("{}{prefs}{}{prefs}", &text[..mariadb], &text[mariadb..])
        },
    );
    let server = TestServer::start(config(&text)).await;
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
             AND CAST(settings AS CHAR(1000)) LIKE '%dark%' \
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
}

both_stores!(
    a_client_that_goes_away_mid_erasure_leaves_the_data_as_it_was,
    client_gone,
    multi_thread
);

async fn client_gone(store: &'static str) {
    let shop = Shop::open(store, "erase_cancel").await;
    let before = shop.rows().await;
    let text = config_text(
        "erase_cancel",
        "erasure = { require_preview = false, lock_timeout = \"60s\" }",
        |t| t,
    );
    let server = TestServer::start(config(&text)).await;
    // Another session holds alice's customer row: the erasure waits for it.
    let holder = shop.hold_alice().await;
    let mut client = server.client().await;
    let call =
        tokio::spawn(async move { erase(&mut client, erase_request(store, false, "")).await });
    assert!(shop.erasure_waits().await, "the erasure never waited");
    call.abort();
    shop.assert_stopped(holder, &before, "its client left")
        .await;

    server.stop().await.unwrap();

    // A deadline that passes while the erasure waits: DEADLINE_EXCEEDED, and the same. The
    // server cuts every call to 2 s; the client's own timer (tonic applies `grpc-timeout` on
    // the client too) is far longer, so that it never fires first on a loaded machine.
    let mut config = config(&text);
    config.server.max_deadline = Duration::from_secs(2);
    config.server.default_deadline = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let holder = shop.hold_alice().await;
    let mut client = server.client().await;
    let mut request = tonic::Request::new(erase_request(store, false, ""));
    request.set_timeout(Duration::from_secs(120));
    let late = async {
        let mut stream = client.erase(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await
    .unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    shop.assert_stopped(holder, &before, "its deadline").await;
    server.stop().await.unwrap();
}

both_stores!(
    a_server_killed_mid_erasure_leaves_the_data_as_it_was,
    killed,
    multi_thread
);

async fn killed(store: &'static str) {
    let shop = Shop::open(store, "erase_kill").await;
    shop.customers_wait_for_lockme().await;
    let before = shop.rows().await;
    let text = config_text(
        "erase_kill",
        "erasure = { require_preview = false, lock_timeout = \"60s\" }",
        |t| t,
    );
    let server = support::ServeProcess::start_with(
        &text,
        &[(demo::mariadb::PASSWORD_ENV, mariadb().password())],
    )
    .await;
    let holder = shop
        .hold("SELECT * FROM lockme WHERE id = 1 FOR UPDATE")
        .await;
    let mut client = server.client().await;
    let call =
        tokio::spawn(async move { erase(&mut client, erase_request(store, false, "")).await });
    // Alice's orders, items and events are deleted inside the open transaction (children
    // first), and it waits in the DELETE of her customer row; the server dies.
    assert!(
        shop.erasure_waits_in(true).await,
        "the erasure never waited in its DELETE"
    );
    std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    let (status, _) = server.wait().await;
    assert!(!status.success());
    assert!(call.await.unwrap().is_err());
    holder.release().await;
    assert!(
        shop.settled().await,
        "the killed server's transaction was left open"
    );
    same(&shop.rows().await, &before, "a killed erasure changed data");
}

both_stores!(
    a_lock_held_past_the_lock_timeout_is_retried_then_unavailable_with_nothing_changed,
    locked,
    multi_thread
);

async fn locked(store: &'static str) {
    let shop = Shop::open(store, "erase_locked").await;
    let before = shop.rows().await;
    let text = config_text(
        "erase_locked",
        "retry = { attempts = 2, min_delay = \"50ms\", max_delay = \"100ms\" }\n\
         erasure = { require_preview = false, lock_timeout = \"1s\" }",
        |t| t,
    );
    let server = TestServer::start(config(&text)).await;
    let holder = shop.hold_alice().await;
    let mut client = server.client().await;
    let locked = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap_err();
    println!("{store}: {:?}: {}", locked.code(), locked.message());
    assert_eq!(locked.code(), Code::Unavailable, "{locked:?}");
    assert!(
        locked.message().to_lowercase().contains("lock"),
        "{locked:?}"
    );
    holder.release().await;
    same(
        &shop.rows().await,
        &before,
        "a timed-out erasure changed data",
    );
    // Once the lock is gone, the same erasure goes through.
    let (_, receipt) = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap();
    assert_eq!(table(&receipt, "customers").rows, 1);
    assert_eq!(receipt.attempts, 1);
    server.stop().await.unwrap();
}

both_stores!(
    a_trigger_that_undoes_a_mask_fails_the_verification_and_nothing_changes,
    undone,
    multi_thread
);

async fn undone(store: &'static str) {
    let shop = Shop::open(store, "erase_undone").await;
    // The UPDATE matches every ticket and counts them, but the requester stays.
    shop.exec(
        "CREATE FUNCTION keep_requester() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN NEW.requester_email := OLD.requester_email; RETURN NEW; END $$; \
         CREATE TRIGGER tickets_keep BEFORE UPDATE ON support_tickets \
         FOR EACH ROW EXECUTE FUNCTION keep_requester()",
        "CREATE TRIGGER tickets_keep BEFORE UPDATE ON support_tickets FOR EACH ROW \
         SET NEW.requester_email = OLD.requester_email",
    )
    .await;
    let before = shop.rows().await;
    let text = config_text(
        "erase_undone",
        "erasure = { require_preview = false }",
        |t| t,
    );
    let server = TestServer::start(config(&text)).await;
    let mut client = server.client().await;
    let unverified = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap_err();
    println!("{store}: {}", unverified.message());
    assert!(
        unverified.message().contains("support_tickets")
            && unverified.message().contains("verification before commit"),
        "{unverified:?}"
    );
    assert!(!unverified.message().contains(ALICE));
    server.stop().await.unwrap();
    same(
        &shop.rows().await,
        &before,
        "an unverified erasure changed data",
    );
}

/// MariaDB finds a changed table's rows again by its key: a table without one (no primary
/// key, no unique key of NOT NULL columns) cannot be masked or deleted, and is refused by
/// name; nothing changes.
#[tokio::test]
async fn on_mariadb_a_table_without_a_key_is_refused_by_name() {
    let shop = Shop::open("mariadb", "erase_keyless").await;
    let before = shop.rows().await;
    let text = config_text("erase_keyless", "", |t| t);
    let server = TestServer::start(config(&text)).await;
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

/// A MariaDB killed while an erasure waits, with alice's orders, items and events already
/// deleted in its open transaction: the call ends UNAVAILABLE, and the server, started again,
/// has every row (InnoDB rolls the transaction back as it recovers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mariadb_a_database_killed_mid_erasure_comes_back_whole() {
    let mut own = tokio::task::spawn_blocking(|| {
        let server = TempMariaDb::start().unwrap();
        server.load_demo("shop").unwrap();
        // The test servers flush their redo log once a second: flushed at a commit from here
        // on, and this commit's flush carries every change before it, so that what the shop
        // holds survives the kill below.
        server
            .execute(
                "shop",
                "SET GLOBAL innodb_flush_log_at_trx_commit = 1; \
                 CREATE TABLE flushed (x INT PRIMARY KEY); INSERT INTO flushed VALUES (1);",
            )
            .unwrap();
        server
    })
    .await
    .unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(own.host())
        .tcp_port(own.port())
        .user(Some(demo::mariadb::USER))
        .pass(Some(own.password()))
        .db_name(Some("shop"))
        .prefer_socket(false);
    let shop = Shop {
        store: "mariadb",
        name: "shop",
        pg: None,
        my: Some(mysql_async::Pool::new(opts.clone())),
    };
    shop.customers_wait_for_lockme().await;
    let before = shop.rows().await;
    const KINDS: &str = "identity_kinds = [\"email\", \"customer_id\"]";
    let text = support::mariadb::config_text(&own, "shop", "").replace(
        KINDS,
        &format!(
            "{KINDS}\nerasure = {{ require_preview = false, lock_timeout = \"60s\" }}\n\
             retry = {{ attempts = 1 }}"
        ),
    );
    let server = TestServer::start(support::mariadb::config(&own, &text)).await;
    let holder = shop
        .hold("SELECT * FROM lockme WHERE id = 1 FOR UPDATE")
        .await;
    let mut client = server.client().await;
    let call =
        tokio::spawn(async move { erase(&mut client, erase_request("mariadb", false, "")).await });
    assert!(
        shop.erasure_waits_in(true).await,
        "the erasure never waited in its DELETE"
    );
    // Killed while the holder still holds the row: released first, the erasure could go on
    // to its COMMIT before the kill lands.
    own = tokio::task::spawn_blocking(move || {
        own.kill();
        own
    })
    .await
    .unwrap();
    drop(holder);
    let pool = shop.my.as_ref().unwrap().clone();
    tokio::time::timeout(Duration::from_secs(10), pool.disconnect())
        .await
        .ok();
    let failed = call.await.unwrap().unwrap_err();
    println!("{:?}: {}", failed.code(), failed.message());
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    server.stop().await.unwrap();
    let own = tokio::task::spawn_blocking(move || {
        own.restart().unwrap();
        own
    })
    .await
    .unwrap();
    let shop = Shop {
        my: Some(mysql_async::Pool::new(opts)),
        ..shop
    };
    same(
        &shop.rows().await,
        &before,
        "a killed database lost or kept a change",
    );
    drop(own);
}
