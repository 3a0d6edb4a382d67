//! Invariant 1: all tables of one extraction come from one snapshot. Rows committed or deleted
//! by others while the stream runs are not seen, and the verified counts match the snapshot.

mod support;

use std::collections::HashSet;

use dsr_connector::pb::{extract_response::Event, value::Kind};
use support::{TestServer, request, sql};
use tonic::Code;

const EVENTS: i64 = 20_000;

#[tokio::test]
async fn concurrent_commits_do_not_leak_into_a_running_extraction() {
    let db = sql().await;
    db.batch_execute(&format!(
        "INSERT INTO customers (id, email, full_name, created_at)
             VALUES (500001, 'snapshot@example.com', 'Snap Shot', now());
         INSERT INTO orders (id, customer_id, placed_at, status, total)
             VALUES (500001, 500001, now(), 'new', 1.00);
         INSERT INTO events (id, customer_id, occurred_at, kind, payload)
             SELECT 5000000 + i, 500001, now(), 'view', jsonb_build_object('n', i)
             FROM generate_series(1, {EVENTS}) AS i;
         ANALYZE events;"
    ))
    .await
    .unwrap();

    let server = TestServer::demo().await;
    let mut client = server.client().await;

    // A second session locks `events`, so the extraction's read of that table must wait
    // until this session has committed its changes: the ordering is certain, not a race.
    let mut locker = sql().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut req = request("email", "snapshot@example.com");
    req.batch_size = 500;
    let mut stream = client.extract(req).await.unwrap().into_inner();

    // The snapshot is taken before `started` is sent.
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Started(_))));
    assert!(
        support::eventually(300, || async {
            db.query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'dsr-connector' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                == 1
        })
        .await,
        "the extraction never waited for the lock on events"
    );

    // While it waits, the other session changes the subject's data and commits: deletes 100
    // events that exist in the snapshot, adds 50 new ones and a new order, and renames the
    // customer.
    lock.batch_execute(
        "DELETE FROM events WHERE id BETWEEN 5000001 AND 5000100;
         INSERT INTO events (id, customer_id, occurred_at, kind, payload)
             SELECT 6000000 + i, 500001, now(), 'late', '{}' FROM generate_series(1, 50) AS i;
         INSERT INTO orders (id, customer_id, placed_at, status, total)
             VALUES (500002, 500001, now(), 'late', 2.00);
         UPDATE customers SET full_name = 'Changed Later' WHERE id = 500001;",
    )
    .await
    .unwrap();
    lock.commit().await.unwrap();
    let live: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE customer_id = 500001",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, EVENTS - 50);

    let mut event_ids = HashSet::new();
    let mut orders = 0;
    let mut names = Vec::new();
    let mut manifest = None;
    let mut completed = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        match message.event.unwrap() {
            Event::Batch(b) if b.table == "events" => {
                let id = b.columns.iter().position(|c| c.name == "id").unwrap();
                for row in &b.rows {
                    let Some(Kind::Int64Value(v)) = row.values[id].kind else {
                        panic!()
                    };
                    assert!(event_ids.insert(v), "event {v} streamed twice");
                }
            }
            Event::Batch(b) if b.table == "orders" => orders += b.rows.len(),
            Event::Batch(b) if b.table == "customers" => {
                let n = b
                    .columns
                    .iter()
                    .position(|c| c.name == "full_name")
                    .unwrap();
                names.extend(b.rows.iter().map(|r| r.values[n].kind.clone()));
            }
            Event::TableCompleted(c) => completed.push((c.table, c.row_count)),
            Event::Manifest(m) => manifest = Some(m),
            _ => {}
        }
    }
    assert_eq!(
        event_ids.len() as i64,
        EVENTS,
        "the snapshot's events, all of them"
    );
    assert!(
        event_ids.contains(&5000001),
        "deleted later, but in the snapshot"
    );
    assert!(
        !event_ids.contains(&6000001),
        "committed later, not in the snapshot"
    );
    assert_eq!(orders, 1);
    assert_eq!(names, vec![Some(Kind::StringValue("Snap Shot".into()))]);
    assert!(completed.contains(&("events".to_owned(), EVENTS as u64)));
    let manifest = manifest.expect("a verified manifest");
    assert!(manifest.tables.iter().all(|t| t.verified));
    assert_eq!(manifest.row_count as i64, EVENTS + 1 + 1);

    // A new extraction sees the new state.
    let x = support::extract(&mut client, request("email", "snapshot@example.com")).await;
    assert_eq!(x.code(), Code::Ok);
    assert_eq!(x.rows("events").len() as i64, EVENTS - 50);
    assert_eq!(x.rows("orders").len(), 2);
    server.stop().await.unwrap();
}
