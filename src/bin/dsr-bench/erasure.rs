//! The committed erasure: a subject's events deleted, their orders kept with the address
//! masked, the customer row masked, and the support tickets retained, verified and committed,
//! against the same transaction written by hand and sent as psql's `-c` sends it (one simple
//! query, on a connection opened before the clock). Each round erases subjects of its own,
//! generated alike, so that every erasure finds the rows it would find on a fresh copy.

use std::path::Path;
use std::time::Instant;

use dsr_connector::demo;
use dsr_connector::demo::cluster::TempCluster;
use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::{EraseRequest, Identity};
use dsr_connector::store::postgres::quote_ident;

use super::*;

/// The erasure's own database: the demo schema, background customers and the subjects.
const ERASE_DATABASE: &str = "bench_erase";

/// The data map of the erasure: delete, mask and retain, as a DSR team declares them. The
/// e-mail address is unique, so it is masked by a pseudonym (by hand: its MD5, about as
/// costly), not one redaction shared by every erased customer.
const ERASE_MAP: &str = r#"
[[sources.tables]]
name = "customers"
identity = { kind = "email", column = "email" }
columns = { id = "identifier", email = "contact.email", full_name = "name", phone = "contact.phone", birth_date = "birth_date", loyalty_points = "financial.account", marketing_opt_in = "not_pii", created_at = "not_pii" }
erase = { action = "mask", mask = { email = "pseudonym", full_name = "redact", phone = "null", birth_date = "null", id = { retain = "the key of the kept orders" }, loyalty_points = { retain = "an open balance, kept for accounting" } } }

[[sources.tables]]
name = "orders"
reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }
columns = { id = "identifier", customer_id = "identifier", placed_at = "not_pii", status = "not_pii", total = "financial.account", shipping_address = "address" }
erase = { action = "mask", mask = { shipping_address = "redact", id = { retain = "invoiced orders are kept for tax law" }, customer_id = { retain = "joins the kept customer row" }, total = { retain = "tax law" } } }

[[sources.tables]]
name = "events"
reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }
columns = { id = "not_pii", customer_id = "identifier", occurred_at = "not_pii", kind = "not_pii", ip = "network.ip", payload = "not_pii" }
erase = { action = "delete" }

[[sources.tables]]
name = "support_tickets"
identity = { kind = "email", column = "requester_email" }
columns = { id = "not_pii", requester_email = "contact.email", subject = "not_pii", body = "not_pii", opened_at = "not_pii", tags = "not_pii" }
erase = { action = "retain", reason = "support records are kept two years" }
"#;

/// The subject erased by side `side` (0 the service, 1 the hand-written transaction, 2 the
/// `--compare` build) in round `round`.
fn subject(round: usize, side: usize) -> String {
    format!("erase-{round}-{side}@bench.example")
}

/// The erasure's database: `customers` background customers with 10 orders and 50 events
/// each, and `sides` subjects per round with `events` events, a tenth as many orders and two
/// tickets each.
async fn generate(
    cluster: &TempCluster,
    customers: i64,
    events: i64,
    rounds: usize,
    sides: usize,
) -> anyhow::Result<()> {
    let admin = demo::connect(cluster, "postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(ERASE_DATABASE)))
        .await?;
    let db = demo::connect(cluster, ERASE_DATABASE).await?;
    let schema = demo::SCHEMA_SQL;
    let ddl_end = schema.find("-- Alice has rows").unwrap_or(schema.len());
    db.batch_execute(&schema[..ddl_end]).await?;
    let subjects = (rounds * sides) as i64;
    let orders = (events / 10).max(1);
    db.batch_execute(&format!(
        "INSERT INTO customers (id, email, full_name, phone, birth_date, loyalty_points, created_at)
         SELECT i, CASE WHEN i <= {subjects} THEN 'erase-' || ((i - 1) / {sides}) || '-' || ((i - 1) % {sides})
                    ELSE 'user' || i END || '@bench.example',
                'User ' || i, '+1 555 01' || lpad((i % 100)::text, 2, '0'),
                date '1970-01-01' + (i % 15000), (i % 1000) + 0.5, timestamptz '2020-01-01' + i * interval '1 minute'
         FROM generate_series(1, {subjects} + {customers}) AS i;
         INSERT INTO orders (id, customer_id, placed_at, status, total, shipping_address)
         SELECT i, CASE WHEN i <= {subjects} * {orders} THEN 1 + (i - 1) / {orders}
                    ELSE {subjects} + 1 + (i - {subjects} * {orders} - 1) / 10 END,
                timestamptz '2023-01-01' + i * interval '1 minute', 'delivered', (i % 500) + 0.99,
                i || ' Bench Street'
         FROM generate_series(1, {subjects} * {orders} + {customers} * 10) AS i;
         INSERT INTO events (id, customer_id, occurred_at, kind, ip, payload)
         SELECT i, CASE WHEN i <= {subjects} * {events} THEN 1 + (i - 1) / {events}
                    ELSE {subjects} + 1 + (i - {subjects} * {events} - 1) / 50 END,
                timestamptz '2023-01-01' + i * interval '1 second', 'page_view', '203.0.113.7',
                jsonb_build_object('page', '/p/' || (i % 300), 'session', md5(i::text))
         FROM generate_series(1, {subjects} * {events} + {customers} * 50) AS i;
         INSERT INTO support_tickets (id, requester_email, subject, body, opened_at)
         SELECT i, c.email, 'Question ' || i, 'Body of ticket ' || i, timestamp '2024-01-01' + i * interval '1 hour'
         FROM generate_series(1, ({subjects} + {customers}) * 2) AS i
         JOIN customers c ON c.id = 1 + (i - 1) / 2;"
    ))
    .await?;
    db.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

/// The hand-written erasure of `email`, committed: the rows it changed and its seconds.
async fn by_hand(db: &tokio_postgres::Client, email: &str) -> anyhow::Result<(u64, f64)> {
    let script = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ;
         DELETE FROM events WHERE customer_id IN (SELECT id FROM customers WHERE email = '{email}');
         UPDATE orders SET shipping_address = '[redacted]'
           WHERE customer_id IN (SELECT id FROM customers WHERE email = '{email}');
         UPDATE customers SET email = md5(email), full_name = '[redacted]', phone = NULL,
           birth_date = NULL WHERE email = '{email}';
         COMMIT;"
    );
    let started = Instant::now();
    let messages = db.simple_query(&script).await?;
    let secs = started.elapsed().as_secs_f64();
    let rows = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .sum();
    Ok((rows, secs))
}

/// The service's erasure of `email`, committed (no preview asked for): the rows it deleted
/// and masked, and its seconds from the call to the receipt.
async fn by_service(channel: Channel, email: &str) -> anyhow::Result<(u64, f64)> {
    let mut client = DsrConnectorServiceClient::new(channel);
    let started = Instant::now();
    let mut stream = client
        .erase(EraseRequest {
            source: "bench".into(),
            subject: Some(Identity {
                kind: "email".into(),
                value: email.into(),
            }),
            request_id: "bench-erase-committed".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut changed = None;
    while let Some(message) = stream.message().await? {
        if let Some(dsr_connector::pb::erase_response::Event::Receipt(r)) = message.event {
            anyhow::ensure!(r.committed_at.is_some(), "the erasure did not commit");
            changed = Some(r.rows_deleted + r.rows_masked);
        }
    }
    let changed = changed.ok_or_else(|| anyhow::anyhow!("the erasure sent no receipt"))?;
    Ok((changed, started.elapsed().as_secs_f64()))
}

/// The committed erasure, `repeat` rounds of each side, alternating which goes first; each
/// side starts from vacuumed tables, outside the timing.
pub(crate) async fn committed(
    args: &Args,
    binary: &Path,
    cluster: &TempCluster,
) -> anyhow::Result<Vec<Row>> {
    let customers = ((10_000.0 * args.scale) as i64).max(100);
    let events = ((100_000.0 * args.scale) as i64).max(10);
    // The service, the hand-written transaction, and the --compare build when there is one.
    let sides = if args.compare.is_some() { 3 } else { 2 };
    let started = Instant::now();
    generate(cluster, customers, events, args.repeat, sides).await?;
    eprintln!(
        "erasure dataset: {customers} customers, {} subjects with {events} events and {} orders \
         each ({:.0} s)",
        args.repeat * sides,
        (events / 10).max(1),
        started.elapsed().as_secs_f64()
    );
    let source = postgres_source(cluster)
        .replace(
            &format!("database = \"{DATABASE}\""),
            &format!("database = \"{ERASE_DATABASE}\""),
        )
        .replacen(
            "identity_kinds = [\"email\"]",
            "identity_kinds = [\"email\"]\nerasure = { require_preview = false, \
             pseudonym_key_env = \"DSR_BENCH_PSEUDONYM_KEY\" }",
            1,
        );
    let (mut server, addr) = start_server(
        &binary.to_path_buf(),
        &source,
        cluster.password(),
        args.server_threads,
        ERASE_MAP.to_owned(),
        false,
    )?;
    let mut compared = match &args.compare {
        Some(build) => Some(start_server(
            build,
            &source,
            cluster.password(),
            args.server_threads,
            ERASE_MAP.to_owned(),
            false,
        )?),
        None => None,
    };
    let measured = async {
        let channel = connect(&addr).await?;
        let compare_channel = match &compared {
            Some((_, addr)) => Some(connect(addr).await?),
            None => None,
        };
        let db = demo::connect(cluster, ERASE_DATABASE).await?;
        // The first call reads the data map from the catalog: a preview of nobody, untimed.
        erase_preview(channel.clone(), "nobody@bench.example").await?;
        if let Some(other) = &compare_channel {
            erase_preview(other.clone(), "nobody@bench.example").await?;
        }
        let (mut service, mut hand, mut other) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.repeat {
            eprintln!("erase committed, round {} ...", round + 1);
            // Each side goes first in turn.
            for side in (0..sides).map(|k| (round + k) % sides) {
                db.batch_execute("VACUUM").await?;
                let email = subject(round, side);
                let (rows, secs) = match (side, &compare_channel) {
                    (0, _) => by_service(channel.clone(), &email).await?,
                    (2, Some(other)) => by_service(other.clone(), &email).await?,
                    _ => by_hand(&db, &email).await?,
                };
                let expected = (events + (events / 10).max(1) + 1) as u64;
                anyhow::ensure!(
                    rows == expected,
                    "{} changed {rows} rows of {email}, not {expected}",
                    [
                        "the service",
                        "the hand-written erasure",
                        "the --compare build"
                    ][side]
                );
                match side {
                    0 => service.push(rows as f64 / secs),
                    1 => hand.push(rows as f64 / secs),
                    _ => other.push(rows as f64 / secs),
                }
            }
        }
        let mut rows = vec![
            Row::new(
                "erase committed (delete, mask, retain), verified: dsr-connector (rows/s)",
                &service,
                Some(&hand),
                "the same transaction by hand",
            ),
            Row::new(
                "erase committed: the same transaction by hand, one simple query (rows/s)",
                &hand,
                None,
                "",
            ),
        ];
        if compare_channel.is_some() {
            rows.push(Row::new(
                "erase committed: dsr-connector against the --compare build (rows/s)",
                &service,
                Some(&other),
                "the --compare build",
            ));
        }
        anyhow::Ok(rows)
    }
    .await;
    stop_server(&mut server);
    if let Some((other, _)) = &mut compared {
        stop_server(other);
    }
    measured
}
