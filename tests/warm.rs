//! A new PostgreSQL connection prepares the data map's statements before its first call, so
//! that the first call on it prepares nothing; a table locked by a migration leaves its
//! statements to be prepared when first used, and the connection's lock timeout is its own
//! again.

mod support;

use std::collections::BTreeSet;

use dsr_connector::demo;
use dsr_connector::schema::DataMap;
use dsr_connector::store::Backend;
use dsr_connector::store::postgres::SourcePool;

/// The SQL texts prepared on a pooled connection's own session.
async fn prepared(client: &tokio_postgres::Client) -> BTreeSet<String> {
    client
        .query("SELECT statement FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn lock_timeout(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SHOW lock_timeout", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_prepare_the_maps_statements_and_skip_a_locked_table() {
    let database = "warm_connections";
    let admin = support::demo_database(database).await;
    let text = demo::config_toml(support::cluster(), database, "127.0.0.1:0".parse().unwrap());
    let config = support::config(&text);
    let source = &config.sources[0];

    // Before the map is known, a connection prepares nothing.
    let pool = SourcePool::new(source).unwrap();
    let map = DataMap::load(source, &config.matrix(), &pool, None)
        .await
        .unwrap();
    let statements = map.statements();
    assert!(statements.len() >= 4, "{statements:?}");
    assert!(
        statements.iter().any(|sql| sql.contains("\"orders\"")),
        "{statements:?}"
    );
    let cold = pool.checkout(None).await.unwrap();
    let before = prepared(&cold.client).await;
    assert!(
        statements.iter().all(|sql| !before.contains(sql)),
        "{before:?}"
    );
    drop(cold);

    // A new pool told the statements: its connections have them all, before any call.
    let pool = SourcePool::new(source).unwrap();
    pool.prepare_on_connect(statements.clone());
    let warm = pool.checkout(None).await.unwrap();
    let ready = prepared(&warm.client).await;
    for sql in &statements {
        assert!(ready.contains(sql), "not prepared: {sql}");
    }
    assert_eq!(lock_timeout(&warm.client).await, "0");
    drop(warm);

    // A migration holds `orders`: a new connection still opens, with every statement that
    // does not read `orders`, and its lock timeout back to the session's.
    let locker = demo::connect(support::cluster(), database).await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let pool = SourcePool::new(source).unwrap();
    pool.prepare_on_connect(statements.clone());
    let conn = pool.checkout(None).await.unwrap();
    let partly = prepared(&conn.client).await;
    let reads_orders = |sql: &str| sql.contains("\"orders\"");
    for sql in &statements {
        assert_eq!(
            partly.contains(sql),
            !reads_orders(sql),
            "prepared while its table was locked, or not prepared though free: {sql}"
        );
    }
    assert_eq!(lock_timeout(&conn.client).await, "0");
    locker.batch_execute("COMMIT").await.unwrap();
    // The connection works, and prepares the rest when used.
    let orders: i64 = conn
        .client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(orders > 0);
    drop(conn);
    drop(admin);
}
