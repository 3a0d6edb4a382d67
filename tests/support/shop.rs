//! The demo shop as the erasure tests on both stores see it: one test's database on
//! PostgreSQL (source `demo`) or MariaDB (source `mariadb`), SQL on it in each store's own
//! dialect, its rows as text for byte-for-byte comparisons, sessions that hold a row lock, and
//! the config that serves both stores on a test's database.

use std::collections::BTreeMap;

use dsr_connector::config::Config;
use dsr_connector::demo::{self, mariadb::TempMariaDb};
use dsr_connector::pb::{EraseRequest, Identity};
use dsr_connector::store::mysql::MySqlPool;
use mysql_async::prelude::Queryable;

use super::{SUBJECT_KEY, cluster};

pub const ALICE: &str = "alice@example.com";

/// The demo tables, each with its primary key `id` first.
pub const TABLES: [&str; 6] = [
    "customers",
    "orders",
    "order_items",
    "events",
    "support_tickets",
    "legacy_accounts",
];

/// The shop of one test on one store: its database, and SQL on it.
pub struct Shop {
    pub store: &'static str,
    pub name: &'static str,
    pub pg: Option<tokio_postgres::Client>,
    pub my: Option<mysql_async::Pool>,
    /// The service's own pool on the MariaDB database, for watching its transactions.
    pub watch: Option<MySqlPool>,
}

impl Shop {
    /// The demo shop in database `name` of `store` (`demo` or `mariadb`).
    pub async fn open(server: &TempMariaDb, store: &'static str, name: &'static str) -> Shop {
        if store == "demo" {
            return Shop {
                store,
                name,
                pg: Some(super::demo_database(name).await),
                my: None,
                watch: None,
            };
        }
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
            watch: Some(watch_pool(server, name)),
        }
    }

    /// Runs `pg` on PostgreSQL or `my` on MariaDB (statements separated by `;`).
    pub async fn exec(&self, pg: &str, my: &str) {
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
    pub async fn integer(&self, sql: &str) -> i64 {
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
    pub async fn texts(&self, sql: &str) -> Vec<String> {
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
    pub async fn rows(&self) -> BTreeMap<(String, i64), String> {
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
    pub async fn alice_rows(&self) -> Vec<(String, i64)> {
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
    pub async fn hold_alice(&self) -> Holder {
        self.hold("SELECT * FROM customers WHERE id = 1 FOR UPDATE")
            .await
    }

    /// A session of its own that runs `lock` in a transaction it keeps open until released.
    pub async fn hold(&self, lock: &str) -> Holder {
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
    pub async fn customers_wait_for_lockme(&self) {
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
    pub async fn erasure_waits_in(&self, deleting: bool) -> bool {
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
        super::eventually(200, || async { self.integer(&sql).await > 0 }).await
    }

    pub async fn erasure_waits(&self) -> bool {
        self.erasure_waits_in(false).await
    }

    /// Asserts that the erasure stopped waiting (its statement stopped on the server) while
    /// `holder` still holds the row, `after` what should stop it; then, once the row is
    /// released, that no transaction of it is left and every row is as `before`.
    pub async fn assert_stopped(
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
    pub async fn no_erasure_waits(&self) -> bool {
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
        super::eventually(200, || async { self.integer(&sql).await == 0 }).await
    }

    /// Whether no transaction of the service is left open on the database (the holder
    /// released), polled a bounded number of times.
    pub async fn settled(&self) -> bool {
        super::eventually(200, || async {
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
                _ => {
                    self.watch
                        .as_ref()
                        .expect("a MariaDB shop")
                        .open_transactions()
                        .await
                        .unwrap()
                        == 0
                }
            }
        })
        .await
    }
}

/// A session holding a row lock.
pub enum Holder {
    Pg(tokio_postgres::Client),
    My(mysql_async::Conn),
}

impl Holder {
    pub async fn release(self) {
        match self {
            Holder::Pg(db) => db.batch_execute("ROLLBACK").await.unwrap(),
            Holder::My(mut conn) => conn.query_drop("ROLLBACK").await.unwrap(),
        }
    }
}

/// The service's pool on MariaDB database `name`, for watching its transactions.
fn watch_pool(server: &TempMariaDb, name: &str) -> MySqlPool {
    let text = super::mariadb::config_text(server, name, "");
    let config = super::mariadb::config(server, &text);
    let source = config.sources.iter().find(|s| s.name == "mariadb").unwrap();
    MySqlPool::for_source(source).unwrap()
}

/// The config text of both stores on each one's database `name`, with `settings` added to
/// both sources (after their identity kinds) and `edit` applied.
pub fn config_text(
    server: &TempMariaDb,
    name: &str,
    settings: &str,
    edit: impl Fn(String) -> String,
) -> String {
    let text = format!(
        "{}\n{}\n",
        demo::config_toml(cluster(), name, "127.0.0.1:0".parse().unwrap()),
        demo::mariadb::source_toml("mariadb", server.host(), server.port(), name)
    );
    const KINDS: &str = "identity_kinds = [\"email\", \"customer_id\"]";
    edit(text.replace(KINDS, &format!("{KINDS}\n{settings}")))
}

/// `text` with both demo shops given a third identity kind: the customer's phone number,
/// compared by its digits (the demo stores numbers as typed, "+44 20 7946 0958"), read as
/// GB numbers when they have no country code.
pub fn with_phone(text: String) -> String {
    text.replace(
        r#"identity_kinds = ["email", "customer_id"]"#,
        r#"identity_kinds = ["email", "customer_id", "phone"]"#,
    )
    .replace(
        r#"identity = [{ kind = "email", column = "email" }, { kind = "customer_id", column = "id" }]"#,
        r#"identity = [{ kind = "email", column = "email" }, { kind = "customer_id", column = "id" }, { kind = "phone", column = "phone", match = "digits" }]"#,
    )
    .replace(
        "[sources.identities.email]",
        "[sources.identities.phone]\ndefault_region = \"GB\"\n\n[sources.identities.email]",
    )
}

/// Parses config text with both stores' passwords and a pseudonym key.
pub fn config(server: &TempMariaDb, text: &str) -> Config {
    Config::from_toml_str(text, |name| match name {
        demo::mariadb::PASSWORD_ENV => Some(server.password().to_owned()),
        demo::PASSWORD_ENV => Some(cluster().password().to_owned()),
        dsr_connector::config::DEFAULT_SUBJECT_KEY_ENV => Some(SUBJECT_KEY.to_owned()),
        dsr_connector::config::DEFAULT_AUDIT_KEY_ENV => Some(demo::audit_key(SUBJECT_KEY)),
        "PSEUDONYM_KEY" => Some(PSEUDONYM_KEY.to_owned()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

pub const PSEUDONYM_KEY: &str = "pseudonym-key-0123456789abcdef";

/// An erasure (or its preview) of alice on `source`.
pub fn erase_request(source: &str, dry_run: bool, digest: &str) -> EraseRequest {
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
pub fn same(
    now: &BTreeMap<(String, i64), String>,
    then: &BTreeMap<(String, i64), String>,
    what: &str,
) {
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
