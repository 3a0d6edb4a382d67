//! The generated dataset, in either shape, and its data map.

use dsr_connector::demo::cluster::TempCluster;
use dsr_connector::{demo, store::postgres::quote_ident};

use super::*;

/// The four tables of a subject, with the SQL a hand-written reader would use.
pub(crate) const TABLES: &[(&str, &str)] = &[
    ("customers", "SELECT * FROM customers WHERE email = $1"),
    (
        "support_tickets",
        "SELECT * FROM support_tickets WHERE requester_email = $1",
    ),
    (
        "orders",
        "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email = $1)",
    ),
    (
        "events",
        "SELECT * FROM events WHERE customer_id IN (SELECT id FROM customers WHERE email = $1)",
    ),
];

/// Creates the bench database and its generated dataset in the given shape.
pub(crate) async fn generate(
    cluster: &TempCluster,
    shape: Shape,
    customers: i64,
    heavy_events: i64,
) -> anyhow::Result<()> {
    let admin = demo::connect(cluster, "postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(DATABASE)))
        .await?;
    let db = demo::connect(cluster, DATABASE).await?;
    match shape {
        Shape::Narrow => generate_narrow(&db, customers, heavy_events).await?,
        Shape::Wide => generate_wide(&db, customers, heavy_events).await?,
    }
    db.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

/// The demo schema (without its data), with narrow generated rows.
pub(crate) async fn generate_narrow(
    db: &tokio_postgres::Client,
    customers: i64,
    heavy_events: i64,
) -> anyhow::Result<()> {
    let schema = demo::SCHEMA_SQL;
    let ddl_end = schema.find("-- Alice has rows").unwrap_or(schema.len());
    db.batch_execute(&schema[..ddl_end]).await?;
    let heavy_orders = heavy_events / 10;
    db.batch_execute(&format!(
        "INSERT INTO customers (id, email, full_name, phone, birth_date, loyalty_points, created_at)
         SELECT i, 'user' || i || '@bench.example', 'User ' || i, '+1 555 01' || lpad((i % 100)::text, 2, '0'),
                date '1970-01-01' + (i % 15000), (i % 1000) + 0.5, timestamptz '2020-01-01' + i * interval '1 minute'
         FROM generate_series(1, {customers}) AS i;
         INSERT INTO customers (id, email, full_name, created_at) VALUES (0, '{HEAVY}', 'Heavy User', now());
         INSERT INTO orders (id, customer_id, placed_at, status, total, shipping_address)
         SELECT i, 1 + (i - 1) / 10, timestamptz '2023-01-01' + i * interval '1 minute', 'delivered',
                (i % 500) + 0.99, i || ' Bench Street'
         FROM generate_series(1, {customers} * 10) AS i;
         INSERT INTO orders (id, customer_id, placed_at, status, total)
         SELECT {customers} * 10 + i, 0, timestamptz '2023-01-01' + i * interval '1 second', 'delivered', 9.99
         FROM generate_series(1, {heavy_orders}) AS i;
         INSERT INTO events (id, customer_id, occurred_at, kind, ip, payload)
         SELECT i, 1 + (i - 1) / 50, timestamptz '2023-01-01' + i * interval '1 second', 'page_view', '203.0.113.7',
                jsonb_build_object('page', '/p/' || (i % 300), 'session', md5(i::text))
         FROM generate_series(1, {customers} * 50) AS i;
         INSERT INTO events (id, customer_id, occurred_at, kind, ip, payload)
         SELECT {customers} * 50 + i, 0, timestamptz '2023-01-01' + i * interval '1 second', 'page_view', '203.0.113.7',
                jsonb_build_object('page', '/p/' || (i % 300), 'session', md5(i::text))
         FROM generate_series(1, {heavy_events}) AS i;
         INSERT INTO support_tickets (id, requester_email, subject, body, opened_at)
         SELECT i, 'user' || (1 + (i - 1) / 2) || '@bench.example', 'Question ' || i, 'Body of ticket ' || i,
                timestamp '2024-01-01' + i * interval '1 hour'
         FROM generate_series(1, {customers} * 2) AS i;"
    ))
    .await?;
    Ok(())
}

/// The wide shape: the same four tables with the columns real sources have. Ordinary
/// subjects have 10 orders, 20 events and 2 tickets each.
pub(crate) async fn generate_wide(
    db: &tokio_postgres::Client,
    customers: i64,
    heavy_events: i64,
) -> anyhow::Result<()> {
    let heavy_orders = heavy_events / 10;
    // About 300 bytes of JSON text per event, and personal data in every document, as real
    // event payloads hold (and why they are scanned): the visitor's e-mail address, IP
    // address and user agent, a session hash and a geo object, nested two levels.
    let payload = "jsonb_build_object(
            'page', '/products/' || (i % 300) || '/details', 'session', md5(i::text),
            'visitor', jsonb_build_object(
                'email', 'visitor' || (i % 5000) || '@mail.example',
                'ip', '198.51.100.' || (i % 250),
                'user_agent', 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile',
                'geo', jsonb_build_object('city', 'Springfield', 'country', 'GB',
                                          'lat', 51.5 + (i % 100) / 1000.0,
                                          'lon', -0.1 - (i % 100) / 1000.0)),
            'cart', jsonb_build_object('items', i % 7, 'value', ((i % 5000) / 100.0)::text,
                                       'currency', 'GBP'))";
    db.batch_execute(&format!(
        "CREATE TABLE customers (
            id bigint PRIMARY KEY, email text NOT NULL UNIQUE, full_name text NOT NULL,
            phone text, address jsonb, signup_date varchar(10), last_login_epoch bigint,
            loyalty_points numeric(12, 2) NOT NULL DEFAULT 0, created_at timestamptz NOT NULL);
         CREATE TABLE orders (
            id bigint PRIMARY KEY, customer_id bigint NOT NULL, placed_at timestamp NOT NULL,
            status text NOT NULL, subtotal numeric(12, 2) NOT NULL, tax numeric(12, 2) NOT NULL,
            total numeric(12, 2) NOT NULL, currency text NOT NULL, shipping_address text,
            notes text);
         CREATE INDEX orders_customer_id ON orders (customer_id);
         CREATE TABLE events (
            id bigint PRIMARY KEY, customer_id bigint NOT NULL, occurred_at timestamptz NOT NULL,
            kind text NOT NULL, ip inet, user_agent text, payload jsonb NOT NULL);
         CREATE INDEX events_customer_id ON events (customer_id);
         CREATE TABLE support_tickets (
            id bigint PRIMARY KEY, requester_email text NOT NULL, subject text NOT NULL,
            body text NOT NULL, opened_at timestamp NOT NULL, tags text[] NOT NULL DEFAULT '{{}}');
         CREATE INDEX support_tickets_requester_email ON support_tickets (requester_email);

         INSERT INTO customers
         SELECT i, 'user' || i || '@bench.example', 'User ' || i, '+1 555 01' || lpad((i % 100)::text, 2, '0'),
                jsonb_build_object('street', i || ' Bench Street', 'city', 'Springfield',
                                   'postcode', 'SP' || (i % 90 + 10) || ' ' || (i % 9) || 'AB',
                                   'country', 'GB',
                                   'lines', jsonb_build_array('Flat ' || (i % 40), 'Building ' || (i % 7))),
                to_char(date '2000-01-01' + (i % 8000), 'DD/MM/YYYY'), 1500000000 + i * 60,
                (i % 1000) + 0.5, timestamptz '2020-01-01' + i * interval '1 minute'
         FROM generate_series(0, {customers}) AS i;
         UPDATE customers SET email = '{HEAVY}', full_name = 'Heavy User' WHERE id = 0;
         INSERT INTO orders
         SELECT i, 1 + (i - 1) / 10, timestamp '2023-01-01' + i * interval '1 minute', 'delivered',
                (i % 500) + 0.99, ((i % 500) + 0.99) * 0.2, ((i % 500) + 0.99) * 1.2, 'GBP',
                i || ' Bench Street, Springfield', 'Leave at the door'
         FROM generate_series(1, {customers} * 10) AS i;
         INSERT INTO orders
         SELECT {customers} * 10 + i, 0, timestamp '2023-01-01' + i * interval '1 second', 'delivered',
                9.99, 2.00, 11.99, 'GBP', '1 Heavy Road, Springfield', NULL
         FROM generate_series(1, {heavy_orders}) AS i;
         INSERT INTO events
         SELECT i, 1 + (i - 1) / 20, timestamptz '2023-01-01' + i * interval '1 second', 'page_view',
                '203.0.113.7', 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile', {payload}
         FROM generate_series(1, {customers} * 20) AS i;
         INSERT INTO events
         SELECT {customers} * 20 + i, 0, timestamptz '2023-01-01' + i * interval '1 second', 'page_view',
                '203.0.113.7', 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile', {payload}
         FROM generate_series(1, {heavy_events}) AS i;
         INSERT INTO support_tickets (id, requester_email, subject, body, opened_at, tags)
         SELECT i, 'user' || (1 + (i - 1) / 2) || '@bench.example', 'Question ' || i,
                'Body of ticket ' || i || ': the parcel has not arrived, please advise.',
                timestamp '2024-01-01' + i * interval '1 hour', ARRAY['shipping', 'tier-' || (i % 3)]
         FROM generate_series(1, {customers} * 2) AS i;"
    ))
    .await?;
    Ok(())
}

/// The benchmark's data map for `shape`; with `single_path`, support_tickets is reached by
/// e-mail only; with `scan_json`, events.payload (and customers.address in the wide shape) is
/// scanned for nested personal data.
pub(crate) fn bench_datamap(shape: Shape, single_path: bool, scan_json: bool) -> String {
    let datamap = match shape {
        Shape::Narrow => include_str!("datamap.toml"),
        Shape::Wide => include_str!("wide.datamap.toml"),
    };
    let mut map = if single_path {
        datamap
            .lines()
            .filter(|l| !l.ends_with("# second path"))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        datamap.to_owned()
    };
    if scan_json {
        map = map
            .replace(
                r#"payload = "not_pii""#,
                r#"payload = { category = "not_pii", scan_json = true }"#,
            )
            .replace(
                "address = \"address\"\n",
                "address = { category = \"address\", scan_json = true }\n",
            );
    }
    map
}
