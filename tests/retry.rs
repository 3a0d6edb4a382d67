//! Retries, with a real fault: the service's PostgreSQL backend is terminated with
//! `pg_terminate_backend` while a table is read. Before any of the snapshot's data has left,
//! the extraction is retried on a new connection and succeeds; after a batch has left, the
//! stream ends with UNAVAILABLE and no manifest, and the orchestrator's retry with the same
//! request id succeeds.

mod support;

use std::sync::OnceLock;

use dsr_connector::pb::extract_response::Event;
use support::{config, config_text, eventually, request, sql};
use tonic::Code;

/// 100 rows in the slow view, 20 ms each: reading them all takes about 2 s.
const SUBJECT: &str = "retry@example.com";

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

fn retry_config(app: &str) -> dsr_connector::config::Config {
    config(&retry_config_text(app))
}

fn slow_request(batch_size: u32) -> dsr_connector::pb::ExtractRequest {
    let mut req = request("email", SUBJECT);
    req.tables = vec!["retry_events".into()];
    req.batch_size = batch_size;
    req.request_id = "dsr-retry-1".into();
    req
}

/// Terminates the service's backend while it runs a query on the slow view that matches
/// `pattern` (a LIKE pattern). Finding and terminating are one statement, tried until it
/// terminates one, so the backend cannot finish between the two.
async fn terminate_reader(db: &tokio_postgres::Client, app: &str, pattern: &str) {
    let terminate = || async {
        db.query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active' AND query LIKE $2) t",
            &[&app, &pattern],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    };
    assert!(
        eventually(200, terminate).await,
        "no query like {pattern} ran to be terminated"
    );
}

#[tokio::test]
async fn a_connection_lost_before_any_data_left_is_retried_and_the_call_succeeds() {
    let app = "t-retry-before-data";
    let server = support::TestServer::start(retry_config(app)).await;
    let db = sql().await;
    let mut client = server.client().await;
    let mut stream = client
        .extract(slow_request(500))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Started(_))));

    // While the table's COUNT runs: before its table_started, so before any data left.
    terminate_reader(&db, app, "SELECT count(*)%retry_events%").await;
    let mut rows = 0;
    let mut started = 1;
    let mut manifest = None;
    loop {
        match stream.message().await {
            Ok(Some(message)) => match message.event {
                Some(Event::Batch(b)) => rows += b.rows.len(),
                Some(Event::Started(_)) => started += 1,
                Some(Event::Manifest(m)) => manifest = Some(m),
                _ => {}
            },
            Ok(None) => break,
            Err(status) => panic!("the retry should have succeeded: {status:?}"),
        }
    }
    let manifest = manifest.expect("a manifest after the retry");
    assert_eq!(rows, 100);
    assert_eq!(started, 1, "a retry does not start the stream again");
    assert_eq!(
        manifest.metadata.get("attempts").map(String::as_str),
        Some("2")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_lost_after_a_batch_left_ends_unavailable_and_the_callers_retry_succeeds() {
    let app = "t-retry-after-data";
    let server = support::TestServer::start(retry_config(app)).await;
    let db = sql().await;
    let mut client = server.client().await;
    let mut stream = client.extract(slow_request(10)).await.unwrap().into_inner();
    // Wait for the first batch, then cut the connection.
    loop {
        let message = stream.message().await.unwrap().unwrap();
        if matches!(message.event, Some(Event::Batch(_))) {
            break;
        }
    }
    terminate_reader(&db, app, "%retry_events%").await;
    let status = loop {
        match stream.message().await {
            Ok(Some(message)) => assert!(!matches!(message.event, Some(Event::Manifest(_)))),
            Ok(None) => panic!("the stream ended OK after losing its connection"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The orchestrator retries the call with the same request id.
    let x = support::extract(&mut client, slow_request(500)).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("retry_events").len(), 100);
    assert_eq!(x.manifest.unwrap().request_id, "dsr-retry-1");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_lost_after_table_started_is_not_retried_because_its_count_left() {
    // `table_started` carries the table's COUNT(*) from the snapshot: once it has left, a
    // retry would read another snapshot behind it, so the stream ends with UNAVAILABLE and
    // no manifest, and the caller retries the whole call.
    let app = "t-retry-after-table-started";
    let server = support::TestServer::start(retry_config(app)).await;
    let db = sql().await;
    let mut client = server.client().await;
    let mut stream = client
        .extract(slow_request(500))
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
    terminate_reader(&db, app, "%retry_events%").await;
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
    let x = support::extract(&mut client, slow_request(500)).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.rows("retry_events").len(), 100);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_attempt_counts_with_the_circuit_breaker_though_the_retry_succeeds() {
    // A breaker that judges from two outcomes: the lost connection (a failure of the source)
    // and the retry's success make 1 failure in 2, above the ratio. Counting calls instead of
    // attempts saw one success and kept the breaker closed.
    let app = "t-retry-breaker";
    let text = toml_edit_source(
        &retry_config_text(app),
        "circuit_breaker = { min_calls = 2 }",
    );
    let server = support::TestServer::start(config(&text)).await;
    let db = sql().await;
    let mut client = server.client().await;
    let mut stream = client
        .extract(slow_request(500))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    terminate_reader(&db, app, "SELECT count(*)%retry_events%").await;
    let mut manifest = None;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(Event::Manifest(m)) = message.event {
            manifest = Some(m);
        }
    }
    let manifest = manifest.expect("the retry succeeded");
    assert_eq!(
        manifest.metadata.get("attempts").map(String::as_str),
        Some("2")
    );
    let x = support::extract(&mut client, slow_request(500)).await;
    assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
    assert!(
        x.message().contains("circuit breaker is open"),
        "{}",
        x.message()
    );
    server.stop().await.unwrap();
}

/// The retry test's config text, before it is parsed.
fn retry_config_text(app: &str) -> String {
    setup();
    config_text(
        r#"
[[sources.tables]]
name = "retry_events"
reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }
columns = { id = "not_pii", customer_id = "identifier.customer_id", note = "not_pii" }
"#,
    )
    .replace(
        "max_connections = 10",
        &format!("max_connections = 10\napplication_name = \"{app}\""),
    )
}

/// `setting` added to the source's keys (they end where its first table begins).
fn toml_edit_source(text: &str, setting: &str) -> String {
    text.replacen(
        "max_connections = 10",
        &format!("max_connections = 10\n{setting}"),
        1,
    )
}
