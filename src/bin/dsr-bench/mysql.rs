//! `dsr-bench --store mysql`: the service against the `mariadb` command-line client, on a
//! throwaway MariaDB holding the same generated dataset, in the same run.
//!
//! The baseline is what an operator would script: long-lived `mariadb --batch --quick`
//! sessions fed on stdin, one `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` per
//! subject with, per table, its rows written out (and read off the pipe, then dropped) and its
//! COUNT(*). `--quick` streams rows instead of buffering each result.
//!
//! The ceiling beside it: a raw mysql_async reader ([`raw_subject`]) with the service's round
//! trips (the snapshot and every count in the first, then each table's rows) on pooled
//! connections, which takes every row off the socket and every value out of it, and sends
//! nothing anywhere.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use dsr_connector::demo::mariadb::{TempMariaDb, USER};

use super::*;

/// The four tables of a subject, as a hand-written reader would select them (`{}` is the
/// quoted e-mail).
const TABLES: &[(&str, &str)] = &[
    ("customers", "FROM customers WHERE email = {}"),
    (
        "support_tickets",
        "FROM support_tickets WHERE requester_email = {}",
    ),
    (
        "orders",
        "FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email = {})",
    ),
    (
        "events",
        "FROM events WHERE customer_id IN (SELECT id FROM customers WHERE email = {})",
    ),
];

pub(crate) async fn run(args: &Args, binary: &PathBuf) -> anyhow::Result<()> {
    eprintln!("starting MariaDB ...");
    let db = tokio::task::spawn_blocking(TempMariaDb::start).await??;
    db.execute(
        "mysql",
        "SET GLOBAL innodb_buffer_pool_size = 1073741824; \
         CREATE DATABASE bench CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;",
    )?;
    let customers = ((100_000.0 * args.scale) as i64).max(args.subjects as i64);
    let heavy_events = (1_000_000.0 * args.scale) as i64;
    let started = Instant::now();
    db.execute(DATABASE, &generate(args.shape, customers, heavy_events))?;
    eprintln!(
        "dataset ({}): {customers} customers, heavy subject with {heavy_events} events ({:.0} s)",
        args.shape.name(),
        started.elapsed().as_secs_f64()
    );
    let source = format!(
        r#"[[sources]]
name = "bench"
kind = "mysql"
host = "{host}"
port = {port}
database = "{DATABASE}"
user = "{USER}"
password_env = "DSR_BENCH_PASSWORD"
ssl_mode = "disabled"
max_connections = 20
max_per_caller = 20
# The 256-stream scenario queues calls beyond the pool on purpose: a queued call waits
# for its slot as long as a patient orchestrator would, however loaded the machine is.
connect_timeout = "120s"
identity_kinds = ["email"]
"#,
        host = db.host(),
        port = db.port(),
    );
    let tables = bench_datamap(args.shape, args.single_path, args.scan_json);
    let (mut server, addr) = start_server(
        binary,
        &source,
        db.password(),
        args.server_threads,
        tables,
        false,
    )?;
    let channel = connect(&addr).await?;
    let subjects: Vec<String> = (0..args.subjects as i64)
        .map(|i| {
            format!(
                "user{}@bench.example",
                1 + i * (customers / args.subjects as i64)
            )
        })
        .collect();

    // One call before the clock: the schema gate reads the catalog on a source's first call,
    // as the baseline's session is started before its clock; the raw reader's pool is opened
    // before its clock too.
    extract_one(channel.clone(), &subjects[0], None).await?;
    let raw = raw_pool(&db, 2 * args.concurrency);
    raw_subject(&raw, &subjects[0]).await?;
    let mut results = Vec::new();
    let (mut service, mut cli, mut mbps, mut ttfb) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut raw_heavy = Vec::new();
    let mut default_client = Vec::new();
    let bytes = stream_bytes(channel.clone(), HEAVY).await?;
    for round in 0..args.repeat {
        eprintln!("heavy, round {} ...", round + 1);
        let (rows, first, secs) = extract_one(channel.clone(), HEAVY, None).await?;
        service.push(rows as f64 / secs);
        mbps.push(bytes as f64 / secs / 1e6);
        ttfb.push(first.as_secs_f64() * 1e3);
        default_client.push(default_client_rate(channel.clone()).await?);
        let (raw_rows, raw_secs) = raw_subject(&raw, HEAVY).await?;
        raw_heavy.push(raw_rows as f64 / raw_secs);
        anyhow::ensure!(
            raw_rows == rows,
            "the raw reader read {raw_rows} rows, the service {rows}"
        );
        let mut session = CliSession::start(&db)?;
        let started = Instant::now();
        let cli_rows = session.subject(HEAVY)?;
        cli.push(cli_rows as f64 / started.elapsed().as_secs_f64());
        anyhow::ensure!(
            cli_rows == rows,
            "the client read {cli_rows} rows, the service {rows}"
        );
    }
    let rss = peak_rss_kib(server.id());
    results.push(Row::new(
        "heavy: dsr-connector (rows/s)",
        &service,
        Some(&cli),
        "mariadb --batch --quick",
    ));
    results.push(Row::new(
        "heavy: dsr-connector against the raw mysql_async reader (rows/s)",
        &service,
        Some(&raw_heavy),
        "raw mysql_async",
    ));
    results.push(Row::new(
        "heavy: raw mysql_async reader (rows/s)",
        &raw_heavy,
        None,
        "",
    ));
    results.push(Row::new(
        "heavy: mariadb --batch --quick (rows/s)",
        &cli,
        None,
        "",
    ));
    results.push(Row::new(
        crate::DEFAULT_CLIENT_ROW,
        &default_client,
        Some(&service),
        "a client accepting no encoding",
    ));
    results.push(Row::new("heavy: dsr-connector MB/s", &mbps, None, ""));
    results.push(Row::new("heavy: time to first batch (ms)", &ttfb, None, ""));
    results.push(Row::new(
        "heavy: service peak RSS (MiB)",
        &[rss as f64 / 1024.0],
        None,
        "",
    ));

    for (name, concurrency) in [("sequential", 1), ("concurrent", args.concurrency)] {
        let (mut service, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cli, mut cli_p50, mut cli_p99) = (Vec::new(), Vec::new(), Vec::new());
        let (mut raw_rate, mut raw_p99, mut raw_db_cpu) = (Vec::new(), Vec::new(), Vec::new());
        let (mut p999, mut raw_p999) = (Vec::new(), Vec::new());
        // MariaDB's CPU per subject, for each side, and the service's own.
        let (mut db_cpu, mut cli_db_cpu, mut service_cpu) = (Vec::new(), Vec::new(), Vec::new());
        let db_pid = db.pid().unwrap_or_default();
        let per_subject = |before: f64, after: f64| (after - before) / subjects.len() as f64;
        for round in 0..args.repeat {
            eprintln!("{name}, round {} ...", round + 1);
            let (db_before, service_before) = (cpu_ms(db_pid), cpu_ms(server.id()));
            let (rate, lat) = extract_many(&channel, &subjects, concurrency).await?;
            db_cpu.push(per_subject(db_before, cpu_ms(db_pid)));
            service_cpu.push(per_subject(service_before, cpu_ms(server.id())));
            service.push(rate);
            p50.push(percentile(&lat, 0.50));
            p99.push(percentile(&lat, 0.99));
            p999.push(percentile(&lat, 0.999));
            let db_before = cpu_ms(db_pid);
            let (rate, lat) = many(&subjects, concurrency, |s| {
                let raw = raw.clone();
                async move { raw_subject(&raw, &s).await.map(|_| ()) }
            })
            .await?;
            raw_db_cpu.push(per_subject(db_before, cpu_ms(db_pid)));
            raw_rate.push(rate);
            raw_p99.push(percentile(&lat, 0.99));
            raw_p999.push(percentile(&lat, 0.999));
            let db_before = cpu_ms(db_pid);
            let db = &db;
            let (rate, lat) = many(&subjects, concurrency, |s| async move {
                let mut session = pooled(db)?;
                // Blocking pipe reads, on a thread of their own as the psql baseline's are.
                let (session, read) = tokio::task::spawn_blocking(move || {
                    let read = session.subject(&s);
                    (session, read)
                })
                .await?;
                read?;
                POOL.lock().unwrap_or_else(|e| e.into_inner()).push(session);
                Ok(())
            })
            .await?;
            cli_db_cpu.push(per_subject(db_before, cpu_ms(db_pid)));
            cli.push(rate);
            cli_p50.push(percentile(&lat, 0.50));
            cli_p99.push(percentile(&lat, 0.99));
        }
        results.push(Row::new(
            &format!("{name}: dsr-connector (subjects/s)"),
            &service,
            Some(&cli),
            "mariadb sessions",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector against the raw mysql_async reader (subjects/s)"),
            &service,
            Some(&raw_rate),
            "raw mysql_async",
        ));
        results.push(Row::new(
            &format!("{name}: raw mysql_async reader (subjects/s)"),
            &raw_rate,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: raw mysql_async reader p99 (ms)"),
            &raw_p99,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector p99.9 (ms)"),
            &p999,
            Some(&raw_p999),
            "raw p99.9",
        ));
        results.push(Row::new(
            &format!("{name}: raw mysql_async reader p99.9 (ms)"),
            &raw_p999,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: MariaDB CPU per subject, serving the raw reader (ms)"),
            &raw_db_cpu,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: mariadb --batch --quick sessions (subjects/s)"),
            &cli,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector p50 (ms)"),
            &p50,
            Some(&cli_p50),
            "mariadb p50",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector p99 (ms)"),
            &p99,
            Some(&cli_p99),
            "mariadb p99",
        ));
        results.push(Row::new(
            &format!("{name}: mariadb sessions p99 (ms)"),
            &cli_p99,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: MariaDB CPU per subject, serving dsr-connector (ms)"),
            &db_cpu,
            Some(&cli_db_cpu),
            "serving mariadb sessions",
        ));
        results.push(Row::new(
            &format!("{name}: MariaDB CPU per subject, serving mariadb sessions (ms)"),
            &cli_db_cpu,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector CPU per subject (ms)"),
            &service_cpu,
            None,
            "",
        ));
    }
    stop_server(&mut server);
    POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let _ = raw.disconnect().await;
    report(args, "mysql", &results)
}

/// The generated dataset in MariaDB's SQL: the same rows as the PostgreSQL bench generates.
fn generate(shape: Shape, customers: i64, heavy_events: i64) -> String {
    let heavy_orders = heavy_events / 10;
    let c = customers;
    match shape {
        Shape::Narrow => {
            let schema = dsr_connector::demo::mariadb::DEMO_SCHEMA;
            let ddl = &schema[..schema.find("-- Alice has rows").unwrap_or(schema.len())];
            format!(
                "SET SESSION foreign_key_checks = 0; SET SESSION time_zone = '+00:00';
                 {ddl}
                 INSERT INTO customers (id, email, full_name, phone, birth_date, loyalty_points, created_at)
                 SELECT seq, CONCAT('user', seq, '@bench.example'), CONCAT('User ', seq),
                        CONCAT('+1 555 01', LPAD(seq % 100, 2, '0')),
                        DATE_ADD('1970-01-01', INTERVAL seq % 15000 DAY), (seq % 1000) + 0.5,
                        TIMESTAMPADD(MINUTE, seq, '2020-01-01')
                 FROM seq_1_to_{c};
                 INSERT INTO customers (id, email, full_name, created_at)
                 VALUES (0, '{HEAVY}', 'Heavy User', NOW());
                 INSERT INTO orders (id, customer_id, placed_at, status, total, shipping_address)
                 SELECT seq, 1 + (seq - 1) DIV 10, TIMESTAMPADD(MINUTE, seq, '2023-01-01'), 'delivered',
                        (seq % 500) + 0.99, CONCAT(seq, ' Bench Street')
                 FROM seq_1_to_{orders};
                 INSERT INTO orders (id, customer_id, placed_at, status, total)
                 SELECT {orders} + seq, 0, TIMESTAMPADD(SECOND, seq, '2023-01-01'), 'delivered', 9.99
                 FROM seq_1_to_{heavy_orders};
                 INSERT INTO events (id, customer_id, occurred_at, kind, ip, payload)
                 SELECT seq, 1 + (seq - 1) DIV 50, TIMESTAMPADD(SECOND, seq, '2023-01-01'), 'page_view',
                        '203.0.113.7', JSON_OBJECT('page', CONCAT('/p/', seq % 300), 'session', MD5(seq))
                 FROM seq_1_to_{events};
                 INSERT INTO events (id, customer_id, occurred_at, kind, ip, payload)
                 SELECT {events} + seq, 0, TIMESTAMPADD(SECOND, seq, '2023-01-01'), 'page_view',
                        '203.0.113.7', JSON_OBJECT('page', CONCAT('/p/', seq % 300), 'session', MD5(seq))
                 FROM seq_1_to_{heavy_events};
                 INSERT INTO support_tickets (id, requester_email, subject, body, opened_at, tags)
                 SELECT seq, CONCAT('user', 1 + (seq - 1) DIV 2, '@bench.example'), CONCAT('Question ', seq),
                        CONCAT('Body of ticket ', seq), TIMESTAMPADD(HOUR, seq, '2024-01-01'), '[]'
                 FROM seq_1_to_{tickets};
                 ANALYZE TABLE customers, orders, events, support_tickets;",
                orders = c * 10,
                events = c * 50,
                tickets = c * 2,
            )
        }
        Shape::Wide => {
            // The PostgreSQL wide shape's payload (see `generate_wide`).
            let payload = "JSON_OBJECT(
                'page', CONCAT('/products/', seq % 300, '/details'), 'session', MD5(seq),
                'visitor', JSON_OBJECT(
                    'email', CONCAT('visitor', seq % 5000, '@mail.example'),
                    'ip', CONCAT('198.51.100.', seq % 250),
                    'user_agent', 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile',
                    'geo', JSON_OBJECT('city', 'Springfield', 'country', 'GB',
                                       'lat', 51.5 + (seq % 100) / 1000.0,
                                       'lon', -0.1 - (seq % 100) / 1000.0)),
                'cart', JSON_OBJECT('items', seq % 7, 'value', CAST((seq % 5000) / 100.0 AS CHAR),
                                    'currency', 'GBP'))";
            format!(
                "SET SESSION time_zone = '+00:00';
                 CREATE TABLE customers (
                    id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE,
                    full_name VARCHAR(255) NOT NULL, phone VARCHAR(64), address JSON,
                    signup_date VARCHAR(10), last_login_epoch BIGINT,
                    loyalty_points DECIMAL(12, 2) NOT NULL DEFAULT 0, created_at TIMESTAMP(6) NOT NULL);
                 CREATE TABLE orders (
                    id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, placed_at DATETIME(6) NOT NULL,
                    status VARCHAR(32) NOT NULL, subtotal DECIMAL(12, 2) NOT NULL,
                    tax DECIMAL(12, 2) NOT NULL, total DECIMAL(12, 2) NOT NULL,
                    currency VARCHAR(3) NOT NULL, shipping_address TEXT, notes TEXT,
                    INDEX orders_customer_id (customer_id));
                 CREATE TABLE events (
                    id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL,
                    occurred_at TIMESTAMP(6) NOT NULL, kind VARCHAR(32) NOT NULL, ip VARCHAR(45),
                    user_agent TEXT, payload JSON NOT NULL, INDEX events_customer_id (customer_id));
                 CREATE TABLE support_tickets (
                    id BIGINT PRIMARY KEY, requester_email VARCHAR(255) NOT NULL, subject TEXT NOT NULL,
                    body TEXT NOT NULL, opened_at DATETIME(6) NOT NULL, tags JSON NOT NULL,
                    INDEX support_tickets_requester_email (requester_email));
                 INSERT INTO customers
                 SELECT seq, CONCAT('user', seq, '@bench.example'), CONCAT('User ', seq),
                        CONCAT('+1 555 01', LPAD(seq % 100, 2, '0')),
                        JSON_OBJECT('street', CONCAT(seq, ' Bench Street'), 'city', 'Springfield',
                                    'postcode', CONCAT('SP', seq % 90 + 10, ' ', seq % 9, 'AB'),
                                    'country', 'GB',
                                    'lines', JSON_ARRAY(CONCAT('Flat ', seq % 40), CONCAT('Building ', seq % 7))),
                        DATE_FORMAT(DATE_ADD('2000-01-01', INTERVAL seq % 8000 DAY), '%d/%m/%Y'),
                        1500000000 + seq * 60, (seq % 1000) + 0.5, TIMESTAMPADD(MINUTE, seq, '2020-01-01')
                 FROM seq_0_to_{c};
                 UPDATE customers SET email = '{HEAVY}', full_name = 'Heavy User' WHERE id = 0;
                 INSERT INTO orders
                 SELECT seq, 1 + (seq - 1) DIV 10, TIMESTAMPADD(MINUTE, seq, '2023-01-01'), 'delivered',
                        (seq % 500) + 0.99, ((seq % 500) + 0.99) * 0.2, ((seq % 500) + 0.99) * 1.2, 'GBP',
                        CONCAT(seq, ' Bench Street, Springfield'), 'Leave at the door'
                 FROM seq_1_to_{orders};
                 INSERT INTO orders
                 SELECT {orders} + seq, 0, TIMESTAMPADD(SECOND, seq, '2023-01-01'), 'delivered',
                        9.99, 2.00, 11.99, 'GBP', '1 Heavy Road, Springfield', NULL
                 FROM seq_1_to_{heavy_orders};
                 INSERT INTO events
                 SELECT seq, 1 + (seq - 1) DIV 20, TIMESTAMPADD(SECOND, seq, '2023-01-01'), 'page_view',
                        '203.0.113.7', 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile', {payload}
                 FROM seq_1_to_{events};
                 INSERT INTO events
                 SELECT {events} + seq, 0, TIMESTAMPADD(SECOND, seq, '2023-01-01'), 'page_view',
                        '203.0.113.7', 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile', {payload}
                 FROM seq_1_to_{heavy_events};
                 INSERT INTO support_tickets
                 SELECT seq, CONCAT('user', 1 + (seq - 1) DIV 2, '@bench.example'), CONCAT('Question ', seq),
                        CONCAT('Body of ticket ', seq, ': the parcel has not arrived, please advise.'),
                        TIMESTAMPADD(HOUR, seq, '2024-01-01'), JSON_ARRAY('shipping', CONCAT('tier-', seq % 3))
                 FROM seq_1_to_{tickets};
                 ANALYZE TABLE customers, orders, events, support_tickets;",
                orders = c * 10,
                events = c * 20,
                tickets = c * 2,
            )
        }
    }
}

/// A long-lived `mariadb --batch --quick` process fed on stdin: per subject, one consistent
/// read-only snapshot with, per table, its rows and its COUNT(*).
struct CliSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

const CLI_DONE: &str = "dsr-bench-subject-done";

/// The raw reader's pool: plaintext, as the service's bench source is.
fn raw_pool(db: &TempMariaDb, max: usize) -> mysql_async::Pool {
    let options =
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(db.host())
            .tcp_port(db.port())
            .user(Some(USER))
            .pass(Some(db.password()))
            .db_name(Some(DATABASE))
            .pool_opts(mysql_async::PoolOpts::default().with_constraints(
                mysql_async::PoolConstraints::new(1, max.max(1)).expect("1 <= max"),
            ));
    mysql_async::Pool::new(options)
}

/// What a careful hand-written mysql_async reader does for one subject, with the service's
/// own round trips: a pooled connection; one text round trip that starts a consistent
/// read-only snapshot and counts every table in it (the e-mail written in as a literal, as
/// the service folds its counts into its first round trip); then per table its rows streamed
/// off the socket, every value taken out of its row, the e-mail bound as a parameter
/// (prepared statements, cached per connection by the driver). It sends nothing anywhere.
/// Returns the rows and the seconds.
async fn raw_subject(pool: &mysql_async::Pool, email: &str) -> anyhow::Result<(u64, f64)> {
    use futures_util::StreamExt;
    use mysql_async::prelude::Queryable;
    let started = Instant::now();
    let mut conn = pool.get_conn().await?;
    let literal = format!("'{}'", email.replace('\\', "\\\\").replace('\'', "''"));
    let counts: Vec<String> = TABLES
        .iter()
        .map(|(_, from)| format!("(SELECT COUNT(*) {})", from.replace("{}", &literal)))
        .collect();
    let mut first = conn
        .query_iter(format!(
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY; SELECT {}",
            counts.join(", ")
        ))
        .await?;
    while !first.is_empty() {
        let _: Vec<mysql_async::Row> = first.collect().await?;
    }
    drop(first);
    let mut rows = 0u64;
    for (_, from) in TABLES {
        let from = from.replace("{}", "?");
        let mut result = conn.exec_iter(format!("SELECT * {from}"), (email,)).await?;
        if let Some(mut stream) = result.stream::<mysql_async::Row>().await? {
            while let Some(row) = stream.next().await {
                let values = row?.unwrap();
                std::hint::black_box(&values);
                rows += 1;
            }
        }
    }
    conn.query_drop("COMMIT").await?;
    Ok((rows, started.elapsed().as_secs_f64()))
}

static POOL: std::sync::Mutex<Vec<CliSession>> = std::sync::Mutex::new(Vec::new());

fn pooled(db: &TempMariaDb) -> anyhow::Result<CliSession> {
    match POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() {
        Some(session) => Ok(session),
        None => CliSession::start(db),
    }
}

impl CliSession {
    fn start(db: &TempMariaDb) -> anyhow::Result<CliSession> {
        let mut child = Command::new("mariadb")
            // --unbuffered: each result is flushed as it ends, not when the pipe's buffer fills.
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "--batch",
                "--quick",
                "--unbuffered",
            ])
            .args(["--skip-column-names", "--default-character-set=utf8mb4"])
            .args(["-h", db.host(), "-P", &db.port().to_string(), "-u", USER])
            .args(["-D", DATABASE])
            .env("MYSQL_PWD", db.password())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(CliSession {
            child,
            stdin,
            stdout,
        })
    }

    /// Reads one subject; returns the rows read (each row is one line in batch mode).
    fn subject(&mut self, email: &str) -> anyhow::Result<u64> {
        let literal = format!("'{}'", email.replace('\'', "''"));
        let mut script = String::from("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;\n");
        for (_, from) in TABLES {
            let from = from.replace("{}", &literal);
            script.push_str(&format!("SELECT * {from};\nSELECT COUNT(*) {from};\n"));
        }
        script.push_str(&format!("COMMIT;\nSELECT '{CLI_DONE}';\n"));
        self.stdin.write_all(script.as_bytes())?;
        self.stdin.flush()?;
        let mut lines = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(
                self.stdout.read_line(&mut line)? > 0,
                "mariadb ended early: {:?}",
                self.child.try_wait()
            );
            if line.trim_end() == CLI_DONE {
                // One line per COUNT(*).
                return Ok(lines - TABLES.len() as u64);
            }
            lines += 1;
        }
    }
}

impl Drop for CliSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
