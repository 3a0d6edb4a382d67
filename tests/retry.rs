//! Retries, with a real fault, on both stores from one body each: the service's connection is
//! ended from the database's side (`pg_terminate_backend`, MariaDB's `KILL CONNECTION`) while
//! a slow table is read. Before any of the snapshot's data has left, the extraction is
//! retried on a new connection and succeeds; after a batch (or the table's count) has left,
//! the stream ends with UNAVAILABLE and no manifest, and the orchestrator's retry with the
//! same request id succeeds. A failed attempt counts with the breaker.

mod support;

use std::sync::OnceLock;

use dsr_connector::pb::extract_response::Event;
use mysql_async::prelude::Queryable;
use support::{config, config_text, eventually, request, sql};
use tonic::Code;

/// 100 rows in the slow view, 20 ms each: reading them all takes about 2 s.
const SUBJECT: &str = "retry@example.com";

/// The MariaDB databases of these tests, one per test (a test ends its own connections).
const MARIADB: [&str; 4] = [
    "retry_before",
    "retry_after",
    "retry_started",
    "retry_breaker",
];

/// The slow view in MariaDB: 100 rows of 1 KB for the subject, each waiting 20 ms.
const MARIADB_SLOW: &str = "INSERT INTO customers (id, email, full_name, created_at) \
       VALUES (800001, 'retry@example.com', 'Retry', NOW()); \
     CREATE TABLE retry_rows (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, \
       note TEXT NOT NULL, INDEX (customer_id)) ENGINE = InnoDB; \
     INSERT INTO retry_rows SELECT seq, 800001, REPEAT('x', 1000) FROM seq_1_to_100; \
     CREATE VIEW retry_events AS \
       SELECT id, customer_id, note FROM retry_rows WHERE SLEEP(0.02 + 0 * id) = 0;";

const RETRY_TABLE: &str = r#"
[[sources.tables]]
name = "retry_events"
reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }
columns = { id = "not_pii", customer_id = "identifier.customer_id", note = "not_pii" }
"#;

/// One test's slow table on one store: the config that maps it, and what ends the service's
/// connection there.
struct Fault {
    source: &'static str,
    text: String,
    ender: Ender,
}

enum Ender {
    /// The test's sessions are told apart by `application_name`.
    Postgres {
        db: tokio_postgres::Client,
        app: &'static str,
    },
    /// The test's connections are those to its own database.
    MariaDb {
        pool: mysql_async::Pool,
        database: &'static str,
    },
}

impl Fault {
    /// The slow table of `store` (`demo` or `mariadb`) for the test `app`, whose MariaDB
    /// database is `database`, with `setting` added to the source's keys.
    async fn of(
        store: &'static str,
        app: &'static str,
        database: &'static str,
        setting: &str,
    ) -> Fault {
        if store == "demo" {
            return Fault {
                source: store,
                text: with_setting(&retry_config_text(app), setting, false),
                ender: Ender::Postgres {
                    db: sql().await,
                    app,
                },
            };
        }
        let server = support::mariadb::server(&MARIADB.map(|d| (d, MARIADB_SLOW)));
        let text = support::mariadb::config_text(server, database, RETRY_TABLE);
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(server.host())
            .tcp_port(server.port())
            .user(Some(dsr_connector::demo::mariadb::USER))
            .pass(Some(server.password()))
            .db_name(Some(database))
            .prefer_socket(false);
        Fault {
            source: store,
            text: with_setting(&text, setting, true),
            ender: Ender::MariaDb {
                pool: mysql_async::Pool::new(opts),
                database,
            },
        }
    }

    fn config(&self) -> dsr_connector::config::Config {
        if self.source == "demo" {
            config(&self.text)
        } else {
            support::mariadb::config(support::mariadb::server(&[]), &self.text)
        }
    }

    fn request(&self, batch_size: u32) -> dsr_connector::pb::ExtractRequest {
        let mut req = request("email", SUBJECT);
        req.source = self.source.into();
        req.tables = vec!["retry_events".into()];
        req.batch_size = batch_size;
        req.request_id = "dsr-retry-1".into();
        req
    }

    /// Ends the service's connection while it runs a statement on the slow view that matches
    /// `pattern` (a LIKE pattern, lower case), tried until it ends one.
    async fn end_connection(&self, pattern: &str) {
        let ended = eventually(200, || async {
            match &self.ender {
                // Finding and terminating are one statement, so the backend cannot finish
                // between the two.
                Ender::Postgres { db, app } => {
                    db.query_one(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) \
                         FROM pg_stat_activity WHERE application_name = $1 \
                         AND state = 'active' AND lower(query) LIKE $2) t",
                        &[app, &pattern],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
                        == 1
                }
                // The statement runs for seconds: one found is still running when killed.
                Ender::MariaDb { pool, database } => {
                    let mut conn = pool.get_conn().await.unwrap();
                    let found: Option<u64> = conn
                        .exec_first(
                            "SELECT ID FROM information_schema.PROCESSLIST \
                             WHERE DB = ? AND ID <> CONNECTION_ID() \
                             AND COMMAND IN ('Query', 'Execute') AND LOWER(INFO) LIKE ?",
                            (database, pattern),
                        )
                        .await
                        .unwrap();
                    match found {
                        Some(id) => conn
                            .query_drop(format!("KILL CONNECTION {id}"))
                            .await
                            .is_ok(),
                        None => false,
                    }
                }
            }
        })
        .await;
        assert!(ended, "no query like {pattern} ran to be ended");
    }
}

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        support::run_sql_blocking(&support::slow_view_sql(
            "retry_events",
            "retry_rows",
            800001,
            SUBJECT,
            100,
        ));
        // Rows of 1 KB: PostgreSQL sends rows in 8 KiB chunks, so that a batch of 10 leaves
        // while the query still runs.
        support::run_sql_blocking(
            "CREATE OR REPLACE VIEW retry_events AS
                 SELECT id, customer_id, repeat('x', 1000) AS note FROM retry_rows
                 WHERE slow_pass(id);",
        );
    });
}

both_stores!(
    a_connection_lost_before_any_data_left_is_retried_and_the_call_succeeds,
    before_data
);

async fn before_data(store: &'static str) {
    let fault = Fault::of(store, "t-retry-before-data", "retry_before", "").await;
    let server = support::TestServer::start(fault.config()).await;
    let mut client = server.client().await;
    let stream = client
        .extract(fault.request(500))
        .await
        .unwrap()
        .into_inner();
    let reading = tokio::spawn(read_all(stream));
    // While the table's COUNT runs (on MariaDB, in the snapshot's first round trip): before
    // its table_started, so before any data left.
    fault.end_connection("%count(*)%retry_events%").await;
    let (rows, started, manifest, failed) = reading.await.unwrap();
    assert!(
        failed.is_none(),
        "the retry should have succeeded: {failed:?}"
    );
    let manifest = manifest.expect("a manifest after the retry");
    assert_eq!(rows, 100);
    assert_eq!(started, 1, "a retry does not start the stream again");
    assert_eq!(
        manifest.metadata.get("attempts").map(String::as_str),
        Some("2")
    );
    server.stop().await.unwrap();
}

both_stores!(
    a_connection_lost_after_a_batch_left_ends_unavailable_and_the_callers_retry_succeeds,
    after_data
);

async fn after_data(store: &'static str) {
    let fault = Fault::of(store, "t-retry-after-data", "retry_after", "").await;
    let server = support::TestServer::start(fault.config()).await;
    let mut client = server.client().await;
    let mut stream = client
        .extract(fault.request(10))
        .await
        .unwrap()
        .into_inner();
    // Wait for the first batch, then cut the connection.
    loop {
        let message = stream.message().await.unwrap().unwrap();
        if matches!(message.event, Some(Event::Batch(_))) {
            break;
        }
    }
    fault.end_connection("%retry_events%").await;
    let status = loop {
        match stream.message().await {
            Ok(Some(message)) => assert!(!matches!(message.event, Some(Event::Manifest(_)))),
            Ok(None) => panic!("the stream ended OK after losing its connection"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The orchestrator retries the call with the same request id.
    let x = support::extract(&mut client, fault.request(500)).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("retry_events").len(), 100);
    assert_eq!(x.manifest.unwrap().request_id, "dsr-retry-1");
    server.stop().await.unwrap();
}

both_stores!(
    a_connection_lost_after_table_started_is_not_retried_because_its_count_left,
    after_table_started
);

async fn after_table_started(store: &'static str) {
    // `table_started` carries the table's COUNT(*) from the snapshot: once it has left, a
    // retry would read another snapshot behind it, so the stream ends with UNAVAILABLE and
    // no manifest, and the caller retries the whole call.
    let fault = Fault::of(store, "t-retry-after-table-started", "retry_started", "").await;
    let server = support::TestServer::start(fault.config()).await;
    let mut client = server.client().await;
    let mut stream = client
        .extract(fault.request(500))
        .await
        .unwrap()
        .into_inner();
    loop {
        let message = stream.message().await.unwrap().unwrap();
        match message.event {
            Some(Event::TableStarted(t)) => {
                assert_eq!(t.expected_rows, 100);
                break;
            }
            Some(Event::Batch(_)) => panic!("a batch before table_started"),
            _ => {}
        }
    }
    // The count is done; the table's one fetch of 100 slow rows runs now.
    fault.end_connection("%retry_events%").await;
    let status = loop {
        match stream.message().await {
            Ok(Some(message)) => assert!(
                !matches!(
                    message.event,
                    Some(Event::Manifest(_) | Event::TableStarted(_) | Event::Started(_))
                ),
                "the extraction started again behind a count that had left: {message:?}"
            ),
            Ok(None) => panic!("the stream ended OK after losing its connection"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let x = support::extract(&mut client, fault.request(500)).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("retry_events").len(), 100);
    server.stop().await.unwrap();
}

both_stores!(
    a_failed_attempt_counts_with_the_circuit_breaker_though_the_retry_succeeds,
    breaker
);

async fn breaker(store: &'static str) {
    // A breaker that judges from two outcomes: the lost connection (a failure of the source)
    // and the retry's success make 1 failure in 2, above the ratio. Counting calls instead of
    // attempts saw one success and kept the breaker closed.
    let fault = Fault::of(
        store,
        "t-retry-breaker",
        "retry_breaker",
        "circuit_breaker = { min_calls = 2 }",
    )
    .await;
    let server = support::TestServer::start(fault.config()).await;
    let mut client = server.client().await;
    let stream = client
        .extract(fault.request(500))
        .await
        .unwrap()
        .into_inner();
    let reading = tokio::spawn(read_all(stream));
    fault.end_connection("%count(*)%retry_events%").await;
    let (_, _, manifest, failed) = reading.await.unwrap();
    assert!(
        failed.is_none(),
        "the retry should have succeeded: {failed:?}"
    );
    let manifest = manifest.expect("the retry succeeded");
    assert_eq!(
        manifest.metadata.get("attempts").map(String::as_str),
        Some("2")
    );
    let x = support::extract(&mut client, fault.request(500)).await;
    assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
    assert!(
        x.message().contains("circuit breaker is open"),
        "{}",
        x.message()
    );
    server.stop().await.unwrap();
}

/// Reads a stream to its end: the rows, how many `started` messages, the manifest, and the
/// status it failed with, if it did.
async fn read_all(
    mut stream: tonic::Streaming<dsr_connector::pb::ExtractResponse>,
) -> (
    usize,
    usize,
    Option<dsr_connector::pb::Manifest>,
    Option<tonic::Status>,
) {
    let (mut rows, mut started, mut manifest) = (0, 0, None);
    loop {
        match stream.message().await {
            Ok(Some(message)) => match message.event {
                Some(Event::Batch(b)) => rows += b.rows.len(),
                Some(Event::Started(_)) => started += 1,
                Some(Event::Manifest(m)) => manifest = Some(m),
                _ => {}
            },
            Ok(None) => return (rows, started, manifest, None),
            Err(status) => return (rows, started, manifest, Some(status)),
        }
    }
}

/// The retry test's config text for PostgreSQL, before it is parsed.
fn retry_config_text(app: &str) -> String {
    setup();
    config_text(RETRY_TABLE).replace(
        "max_connections = 10",
        &format!("max_connections = 10\napplication_name = \"{app}\""),
    )
}

/// `setting` added to a source's keys (they end where its first table begins): the first
/// source's, or with `last`, the last one's.
fn with_setting(text: &str, setting: &str, last: bool) -> String {
    const KEY: &str = "max_connections = 10";
    let at = if last {
        text.rfind(KEY)
    } else {
        text.find(KEY)
    }
    .expect("a source's keys");
    format!(
        "{}\n{setting}{}",
        &text[..at + KEY.len()],
        &text[at + KEY.len()..]
    )
}
