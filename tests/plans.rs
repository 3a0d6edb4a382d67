//! The compiled queries use indexes, path by path. With sequential scans, merge joins and hash
//! joins disabled (so that only index access in nested loops is cheap), `EXPLAIN`
//! of every query of the demo's map, the benchmark's map and a map written for this test
//! (a table reached by two paths, and a table below it) must show no sequential scan, and
//! an index condition on every index it reads: a path that an index cannot serve (as an `OR`
//! of paths cannot be) shows up as a sequential scan or a whole-index read. And a row reached
//! by several paths streams exactly once, as `OR` would select it.

mod support;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use dsr_connector::config::Config;
use dsr_connector::schema::DataMap;
use support::{TestServer, config, config_text, extract, request, sql};
use tonic::Code;

const MULTI_PATH_SQL: &str = "
CREATE TABLE mp_tickets (id bigint PRIMARY KEY, requester_email text, customer_id bigint,
                         body text NOT NULL);
CREATE INDEX mp_tickets_requester_email ON mp_tickets (requester_email);
CREATE INDEX mp_tickets_customer_id ON mp_tickets (customer_id);
CREATE TABLE mp_replies (id bigint PRIMARY KEY, ticket_id bigint NOT NULL, body text NOT NULL);
CREATE INDEX mp_replies_ticket_id ON mp_replies (ticket_id);
INSERT INTO mp_tickets VALUES
    (1, 'alice@example.com', 1, 'every path'),
    (2, 'alice@example.com', NULL, 'by e-mail; its customer_id path is NULL'),
    (3, 'typo@example.com', 1, 'by customer id only'),
    (4, 'someone@example.com', NULL, 'not alice'),
    (5, NULL, NULL, 'nobody');
INSERT INTO mp_tickets
    SELECT i, 'filler' || i || '@example.com', 1000000 + i, 'filler'
    FROM generate_series(100, 20000) AS i;
INSERT INTO mp_replies VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c'), (4, 3, 'd'), (5, 4, 'e');
INSERT INTO mp_replies SELECT i, 100 + i % 19900, 'filler' FROM generate_series(100, 20000) AS i;
ANALYZE mp_tickets;
ANALYZE mp_replies;
";

const MULTI_PATH_MAP: &str = r#"
[[sources.tables]]
name = "mp_tickets"
reference = [
    { column = "requester_email", table = "customers", to = "email", reach = "owned" },
    { column = "customer_id", table = "customers", to = "id", reach = "owned" },
]
columns = { id = "not_pii", requester_email = "contact.email", customer_id = "identifier.customer_id", body = "support.message" }

[[sources.tables]]
name = "mp_replies"
reference = { column = "ticket_id", table = "mp_tickets", to = "id", reach = "owned" }
columns = { id = "not_pii", ticket_id = "not_pii", body = "support.message" }
"#;

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| support::run_sql_blocking(MULTI_PATH_SQL));
}

/// The demo source's header with other tables: the benchmark's map runs on the demo schema.
fn with_tables(tables: &str) -> Config {
    let demo = config_text("");
    let head = demo[..demo.find("[[sources.tables]]").unwrap()].replace(
        r#"identity_kinds = ["email", "customer_id"]"#,
        r#"identity_kinds = ["email"]"#,
    );
    config(&format!("{head}{tables}"))
}

/// Every node of an `EXPLAIN (FORMAT JSON)` plan.
fn nodes(plan: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    out.push(plan.clone());
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

/// Explains every query of every plan of `config`'s source, for `value` of each kind, with
/// sequential scans disabled; returns the problems found.
async fn check_plans(config: &Config, values: &[(&str, &str)]) -> (Vec<String>, usize) {
    let source = &config.sources[0];
    let db = sql().await;
    // Only index access, and only nested loops: whatever the statistics, a path that an
    // index can serve then shows an index condition, and one that cannot (an OR of paths)
    // shows a sequential scan or a whole-index read.
    db.batch_execute(
        "SET enable_seqscan = off; SET enable_mergejoin = off; SET enable_hashjoin = off",
    )
    .await
    .unwrap();
    let pool = dsr_connector::store::postgres::SourcePool::new(source).unwrap();
    let map = DataMap::load(source, &config.matrix(), &pool, None)
        .await
        .unwrap_or_else(|e| panic!("the data map loads: {e}"));
    let mut problems = Vec::new();
    let mut checked = 0;
    for (kind, value) in values {
        let plan = map.plan(kind, &[]).unwrap();
        for table in &plan.tables {
            for query in [&table.select_sql, &table.count_sql] {
                let explained: serde_json::Value = db
                    .query_one(&format!("EXPLAIN (FORMAT JSON) {query}"), &[value])
                    .await
                    .unwrap()
                    .get(0);
                let mut all = Vec::new();
                nodes(&explained[0]["Plan"], &mut all);
                checked += 1;
                for node in &all {
                    let kind_of = node["Node Type"].as_str().unwrap_or_default();
                    let relation = node["Relation Name"].as_str().unwrap_or_default();
                    if kind_of == "Seq Scan" {
                        problems.push(format!(
                            "{}: a sequential scan of {relation} for {kind}: {query}",
                            table.table.display
                        ));
                    }
                    if kind_of.contains("Index") && node.get("Index Cond").is_none() {
                        problems.push(format!(
                            "{}: {kind_of} of {relation} without an index condition for {kind}: \
                             {query}\n{explained:#}",
                            table.table.display
                        ));
                    }
                }
            }
        }
    }
    (problems, checked)
}

#[tokio::test]
async fn every_demo_query_reads_through_indexes() {
    let (problems, checked) = check_plans(
        &config(&config_text("")),
        &[("email", "alice@example.com"), ("customer_id", "1")],
    )
    .await;
    assert!(checked >= 12, "{checked}");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn every_benchmark_query_reads_through_indexes_including_its_multi_path_table() {
    let map = include_str!("../src/bin/dsr-bench/datamap.toml");
    assert!(map.contains("# second path"));
    let config = with_tables(map);
    let (problems, checked) = check_plans(&config, &[("email", "alice@example.com")]).await;
    assert_eq!(checked, 8);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn a_table_reached_by_two_paths_uses_an_index_for_each_and_streams_each_row_once() {
    setup();
    let text = config_text(MULTI_PATH_MAP);
    let (problems, checked) = check_plans(
        &config(&text),
        &[("email", "alice@example.com"), ("customer_id", "1")],
    )
    .await;
    assert!(checked >= 16, "{checked}");
    assert!(problems.is_empty(), "{problems:#?}");

    // What OR would select, each row once.
    let db = sql().await;
    let or_ids = |kind: &'static str, value: &'static str| {
        let db = &db;
        async move {
            let condition = if kind == "email" {
                "requester_email IN (SELECT email FROM customers WHERE email = $1) \
                 OR customer_id IN (SELECT id FROM customers WHERE email = $1)"
            } else {
                "requester_email IN (SELECT email FROM customers WHERE id = $1::text::bigint) \
                 OR customer_id IN (SELECT id FROM customers WHERE id = $1::text::bigint)"
            };
            db.query(
                &format!("SELECT id FROM mp_tickets WHERE {condition}"),
                &[&value],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<BTreeSet<i64>>()
        }
    };
    let server = TestServer::start(config(&text)).await;
    for (kind, value, tickets, replies) in [
        (
            "email",
            "alice@example.com",
            vec![1, 2, 3],
            vec![1, 2, 3, 4],
        ),
        ("customer_id", "1", vec![1, 2, 3], vec![1, 2, 3, 4]),
    ] {
        let mut req = request(kind, value);
        req.tables = vec!["mp_tickets".into(), "mp_replies".into()];
        let x = extract(&mut server.client().await, req).await;
        assert_eq!(x.code(), Code::Ok, "{kind}: {}", x.message());
        let ids = |table: &str| -> Vec<i64> {
            let mut ids: Vec<i64> = x
                .column(table, "id")
                .iter()
                .map(|k| match k {
                    dsr_connector::pb::value::Kind::Int64Value(i) => *i,
                    other => panic!("{other:?}"),
                })
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids("mp_tickets"), tickets, "{kind}: each ticket once");
        assert_eq!(
            ids("mp_tickets").into_iter().collect::<BTreeSet<_>>(),
            or_ids(kind, value).await,
            "{kind}: the rows OR selects"
        );
        assert_eq!(ids("mp_replies"), replies, "{kind}");
        let manifest = x.manifest.unwrap();
        assert!(manifest.tables.iter().all(|t| t.verified));
        let planned = x.started.unwrap();
        let via = &planned
            .tables
            .iter()
            .find(|t| t.table == "mp_tickets")
            .unwrap()
            .reached_via;
        assert_eq!(via.matches(" | ").count() + 1, 2, "{via}");
    }
    server.stop().await.unwrap();
}
