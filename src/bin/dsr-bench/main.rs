//! dsr-bench: the service against raw PostgreSQL, on the same data, in the same run.
//!
//! `cargo build --release && cargo run --release --bin dsr-bench -- [--scale 1.0]`
//!
//! Starts a throwaway PostgreSQL, generates a dataset (at scale 1: 100,000 customers with 10
//! orders, 50 events and 2 support tickets each, plus one heavy subject with 1,000,000 events
//! and 100,000 orders), starts the release `dsr-connector` binary as a separate process, and
//! measures three scenarios, each repeated:
//!
//! - heavy: the heavy subject through Extract, decoded by a Rust tonic client; against
//!   `psql \copy (...) TO STDOUT (FORMAT binary)` and a raw tokio-postgres portal reader.
//! - sequential: ordinary subjects one at a time; against the raw reader doing the same
//!   snapshot, queries and counts, and against pooled psql sessions scripted with `\copy`.
//! - concurrent: the same subjects over 16 concurrent streams; against 16 raw readers and
//!   16 psql sessions.
//!
//! `--shape wide` generates wider rows (JSONB addresses, legacy VARCHAR dates, epochs, numeric
//! amounts, timestamps without a zone, ~300-byte payloads; see `generate_wide`).
//!
//! Prints a Markdown table and writes `bench-results/bench.json`. Nothing is asserted.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use dsr_connector::demo::cluster::{ClusterOptions, SUPERUSER, TempCluster};
use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::{ExtractRequest, Identity, extract_response::Event};
use dsr_connector::store::postgres::tls::install_crypto_provider;
use dsr_connector::{demo, schema::quote_ident};
use prost::Message;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Benchmark dsr-connector against raw PostgreSQL in the same run")]
struct Args {
    /// Dataset scale: 1.0 is 100,000 customers and a 1,000,000-event heavy subject.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Ordinary subjects per sequential/concurrent run.
    #[arg(long, default_value_t = 1000)]
    subjects: usize,
    /// Concurrent streams in the concurrent scenario.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Repetitions of each scenario.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// The service's `server.worker_threads` (default: one per core).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Reach support_tickets by e-mail only (by default it has a second path, through
    /// customers.email), to compare multi-path plans with single-path ones.
    #[arg(long)]
    single_path: bool,
    /// Scan JSON for nested personal data (off by default), to measure the scan:
    /// `events.payload`, and in the wide shape `customers.address` too.
    #[arg(long)]
    scan_json: bool,
    /// The dataset's shape: `narrow` (the demo schema) or `wide` (JSONB addresses, legacy
    /// VARCHAR dates, epochs, numeric amounts, timestamps without a zone, ~300-byte payloads).
    #[arg(long, value_enum, default_value_t = Shape::Narrow)]
    shape: Shape,
    /// Where bench.json goes.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shape {
    Narrow,
    Wide,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Narrow => "narrow",
            Shape::Wide => "wide",
        }
    }
}

const DATABASE: &str = "bench";
const HEAVY: &str = "heavy@bench.example";

/// The four tables of a subject, with the SQL a hand-written reader would use.
const TABLES: &[(&str, &str)] = &[
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    install_crypto_provider();
    let args = Args::parse();
    let binary = std::env::current_exe()?
        .parent()
        .map(|p| p.join("dsr-connector"))
        .filter(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("build the service first: cargo build --release"))?;

    eprintln!("starting PostgreSQL ...");
    let cluster = tokio::task::spawn_blocking(|| {
        TempCluster::start(&ClusterOptions {
            settings: vec![("shared_buffers".into(), "512MB".into())],
            ..Default::default()
        })
    })
    .await??;
    let customers = ((100_000.0 * args.scale) as i64).max(args.subjects as i64);
    let heavy_events = (1_000_000.0 * args.scale) as i64;
    let started = Instant::now();
    generate(&cluster, args.shape, customers, heavy_events).await?;
    eprintln!(
        "dataset ({}): {customers} customers, heavy subject with {heavy_events} events ({:.0} s)",
        args.shape.name(),
        started.elapsed().as_secs_f64()
    );

    // A slow client first, on a server of its own, so that its peak RSS is its own.
    eprintln!("heavy with a slow client ...");
    let (mut slow_server, slow_addr) = start_server(
        &binary,
        &cluster,
        args.server_threads,
        bench_datamap(args.shape, args.single_path, args.scan_json),
    )?;
    let slow_channel = Channel::from_shared(format!("http://{slow_addr}"))?
        .connect()
        .await?;
    let (slow_rows, _, _, slow_secs) =
        extract_one(slow_channel, HEAVY, Some(Duration::from_millis(2))).await?;
    let slow_rss = peak_rss_kib(slow_server.id());
    let _ = Command::new("kill")
        .args(["-TERM", &slow_server.id().to_string()])
        .status();
    let _ = slow_server.wait();

    let (mut server, addr) = start_server(
        &binary,
        &cluster,
        args.server_threads,
        bench_datamap(args.shape, args.single_path, args.scan_json),
    )?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let subjects: Vec<String> = (0..args.subjects as i64)
        .map(|i| {
            format!(
                "user{}@bench.example",
                1 + i * (customers / args.subjects as i64)
            )
        })
        .collect();

    let mut results = Vec::new();
    // heavy
    let mut service = Vec::new();
    let mut raw = Vec::new();
    let mut copy = Vec::new();
    let mut ttfb = Vec::new();
    let mut mbps = Vec::new();
    for round in 0..args.repeat {
        eprintln!("heavy, round {} ...", round + 1);
        let (rows, bytes, first, secs) = extract_one(channel.clone(), HEAVY, None).await?;
        service.push(rows as f64 / secs);
        mbps.push(bytes as f64 / secs / 1e6);
        ttfb.push(first.as_secs_f64() * 1e3);
        let (raw_rows, raw_secs) = raw_subject(&cluster, HEAVY).await?;
        raw.push(raw_rows as f64 / raw_secs);
        if let Some((copy_rows, copy_secs)) = psql_copy(&cluster, HEAVY)? {
            copy.push(copy_rows as f64 / copy_secs);
        }
    }
    let rss = peak_rss_kib(server.id());
    results.push(Row::new(
        "heavy: dsr-connector (rows/s)",
        &service,
        Some(&copy),
        "psql \\copy binary",
    ));
    results.push(Row::new(
        "heavy: raw tokio-postgres portal (rows/s)",
        &raw,
        Some(&copy),
        "psql \\copy binary",
    ));
    results.push(Row::new(
        "heavy: psql \\copy binary (rows/s)",
        &copy,
        None,
        "",
    ));
    results.push(Row::new("heavy: dsr-connector MB/s", &mbps, None, ""));
    results.push(Row::new("heavy: time to first batch (ms)", &ttfb, None, ""));
    results.push(Row::new(
        "heavy: service peak RSS (MiB)",
        &[rss as f64 / 1024.0],
        None,
        "",
    ));
    results.push(Row::new(
        "heavy, client sleeping 2 ms per message: service peak RSS (MiB)",
        &[slow_rss as f64 / 1024.0],
        None,
        "",
    ));
    results.push(Row::new(
        "heavy, client sleeping 2 ms per message: rows/s",
        &[slow_rows as f64 / slow_secs],
        None,
        "",
    ));

    // sequential and concurrent
    for (name, concurrency) in [("sequential", 1), ("concurrent", args.concurrency)] {
        let mut service = Vec::new();
        let mut raw = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut raw_p99 = Vec::new();
        let mut psql = Vec::new();
        let mut psql_p50 = Vec::new();
        let mut psql_p99 = Vec::new();
        for round in 0..args.repeat {
            eprintln!("{name}, round {} ...", round + 1);
            let (rate, lat) = many(&subjects, concurrency, |s| {
                let channel = channel.clone();
                async move { extract_one(channel, &s, None).await.map(|_| ()) }
            })
            .await?;
            service.push(rate);
            p50.push(percentile(&lat, 0.50));
            p99.push(percentile(&lat, 0.99));
            let cluster = &cluster;
            let (rate, lat) = many(&subjects, concurrency, |s| async move {
                raw_subject(cluster, &s).await.map(|_| ())
            })
            .await?;
            raw.push(rate);
            raw_p99.push(percentile(&lat, 0.99));
            if psql_installed() {
                let (rate, lat) = many(&subjects, concurrency, |s| {
                    let (host, port, password) = (
                        cluster.host().to_owned(),
                        cluster.port(),
                        cluster.password().to_owned(),
                    );
                    async move {
                        tokio::task::spawn_blocking(move || {
                            psql_subject(&host, port, &password, &s).map(|_| ())
                        })
                        .await?
                    }
                })
                .await?;
                psql.push(rate);
                psql_p50.push(percentile(&lat, 0.50));
                psql_p99.push(percentile(&lat, 0.99));
            }
        }
        results.push(Row::new(
            &format!("{name}: dsr-connector (subjects/s)"),
            &service,
            Some(&raw),
            "raw tokio-postgres",
        ));
        results.push(Row::new(
            &format!("{name}: raw tokio-postgres (subjects/s)"),
            &raw,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector p50 (ms)"),
            &p50,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector p99 (ms)"),
            &p99,
            Some(&raw_p99),
            "raw p99",
        ));
        results.push(Row::new(
            &format!("{name}: raw tokio-postgres p99 (ms)"),
            &raw_p99,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector against psql (subjects/s)"),
            &service,
            Some(&psql),
            "psql \\copy binary",
        ));
        results.push(Row::new(
            &format!("{name}: psql \\copy binary, pooled psql sessions (subjects/s)"),
            &psql,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: psql \\copy binary p50 (ms)"),
            &psql_p50,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: psql \\copy binary p99 (ms)"),
            &psql_p99,
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{name}: dsr-connector p99 against psql (ms)"),
            &p99,
            Some(&psql_p99),
            "psql p99",
        ));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();

    println!("\n| measure | median | min-max | ratio to baseline (same run) |\n|---|---|---|---|");
    for r in &results {
        println!("{}", r.markdown());
    }
    println!(
        "\n{} shape, scale {}{}{}, {} subjects, concurrency {}, {} repetitions, {} cores",
        args.shape.name(),
        args.scale,
        if args.scan_json { ", JSON scanned" } else { "" },
        if args.single_path {
            ", single path"
        } else {
            ""
        },
        args.subjects,
        args.concurrency,
        args.repeat,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    std::fs::create_dir_all(&args.out)?;
    let json = serde_json::json!({
        "scale": args.scale,
        "shape": args.shape.name(),
        "single_path": args.single_path,
        "scan_json": args.scan_json,
        "subjects": args.subjects,
        "concurrency": args.concurrency,
        "repeat": args.repeat,
        "results": results.iter().map(Row::json).collect::<Vec<_>>(),
    });
    std::fs::write(
        args.out.join("bench.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    eprintln!("wrote {}", args.out.join("bench.json").display());
    Ok(())
}

/// One line of the report: a measure's repetitions and its ratio to a baseline's median.
struct Row {
    name: String,
    values: Vec<f64>,
    ratio: Option<(f64, String)>,
}

impl Row {
    fn new(name: &str, values: &[f64], baseline: Option<&[f64]>, baseline_name: &str) -> Row {
        let ratio = baseline
            .filter(|b| !b.is_empty() && !values.is_empty())
            .map(|b| (median(values) / median(b), baseline_name.to_owned()));
        Row {
            name: name.to_owned(),
            values: values.to_vec(),
            ratio,
        }
    }

    fn markdown(&self) -> String {
        if self.values.is_empty() {
            return format!("| {} | n/a | | |", self.name);
        }
        let min = self.values.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = self
            .values
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        let ratio = self
            .ratio
            .as_ref()
            .map(|(r, b)| format!("{r:.2}x {b}"))
            .unwrap_or_default();
        format!(
            "| {} | {} | {}-{} | {ratio} |",
            self.name,
            fmt(median(&self.values)),
            fmt(min),
            fmt(max)
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "values": self.values,
            "median": if self.values.is_empty() { None } else { Some(median(&self.values)) },
            "ratio": self.ratio.as_ref().map(|(r, _)| r),
            "baseline": self.ratio.as_ref().map(|(_, b)| b),
        })
    }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(latencies_ms: &[f64], p: f64) -> f64 {
    let mut v = latencies_ms.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `job` for every subject with `concurrency` in flight. Returns subjects/s and each
/// subject's latency in ms.
async fn many<F, Fut>(
    subjects: &[String],
    concurrency: usize,
    job: F,
) -> anyhow::Result<(f64, Vec<f64>)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures_util::{StreamExt, TryStreamExt};
    let started = Instant::now();
    let latencies: Vec<f64> = futures_util::stream::iter(subjects.iter().cloned())
        .map(|s| {
            let fut = job(s);
            async move {
                let t = Instant::now();
                fut.await.map(|()| t.elapsed().as_secs_f64() * 1e3)
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok((
        subjects.len() as f64 / started.elapsed().as_secs_f64(),
        latencies,
    ))
}

/// Extracts one subject through the service, sleeping `pause` after every message when given
/// (a client slower than the database). Returns rows, bytes, time to first batch, seconds.
async fn extract_one(
    channel: Channel,
    email: &str,
    pause: Option<Duration>,
) -> anyhow::Result<(u64, usize, Duration, f64)> {
    let mut client = DsrConnectorServiceClient::new(channel);
    let started = Instant::now();
    let mut stream = client
        .extract(ExtractRequest {
            source: "bench".into(),
            subject: Some(Identity {
                kind: "email".into(),
                value: email.into(),
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut rows = 0u64;
    let mut bytes = 0usize;
    let mut first = None;
    let mut manifest = false;
    while let Some(message) = stream.message().await? {
        bytes += message.encoded_len();
        match message.event {
            Some(Event::Batch(b)) => {
                first.get_or_insert_with(|| started.elapsed());
                rows += b.rows.len() as u64;
            }
            Some(Event::Manifest(_)) => manifest = true,
            _ => {}
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    anyhow::ensure!(manifest, "no manifest for {email}");
    Ok((
        rows,
        bytes,
        first.unwrap_or_default(),
        started.elapsed().as_secs_f64(),
    ))
}

/// What a careful hand-written reader does: pooled connections with statements prepared once,
/// one REPEATABLE READ snapshot, a portal per table in batches of 500, every cell read, and
/// COUNT(*) per table. It sends nothing anywhere.
async fn raw_subject(cluster: &TempCluster, email: &str) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let pooled = RAW_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let (mut client, mut statements) = match pooled {
        Some(c) => c,
        None => (demo::connect(cluster, DATABASE).await?, Default::default()),
    };
    let mut rows = 0u64;
    {
        let txn = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        for (_, sql) in TABLES {
            let stmt =
                dsr_connector::store::postgres::prepare_cached(&mut statements, &txn, sql).await?;
            let portal = txn.bind(&stmt, &[&email]).await?;
            loop {
                let batch = txn.query_portal(&portal, 500).await?;
                for row in &batch {
                    for i in 0..row.len() {
                        let _cell: dsr_connector::values::RawCell = row.try_get(i)?;
                    }
                }
                rows += batch.len() as u64;
                if batch.len() < 500 {
                    break;
                }
            }
            let count_sql = format!("SELECT count(*) FROM ({sql}) AS t");
            let count =
                dsr_connector::store::postgres::prepare_cached(&mut statements, &txn, &count_sql)
                    .await?;
            let _: i64 = txn.query_one(&count, &[&email]).await?.get(0);
        }
        txn.commit().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    RAW_POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((client, statements));
    Ok((rows, secs))
}

/// The raw reader's connections with their prepared statements, reused as the service reuses
/// its pooled connections and statements.
type RawConn = (
    tokio_postgres::Client,
    dsr_connector::store::postgres::StatementCache,
);
static RAW_POOL: std::sync::Mutex<Vec<RawConn>> = std::sync::Mutex::new(Vec::new());

fn psql_installed() -> bool {
    Command::new("psql").arg("--version").output().is_ok()
}

/// The heavy subject through one psql session (started before the clock), when psql is
/// installed. Returns rows and seconds.
fn psql_copy(cluster: &TempCluster, email: &str) -> anyhow::Result<Option<(u64, f64)>> {
    if !psql_installed() {
        return Ok(None);
    }
    let mut session = PsqlSession::start(cluster.host(), cluster.port(), cluster.password())?;
    let started = Instant::now();
    let rows = session.subject(email)?;
    Ok(Some((rows, started.elapsed().as_secs_f64())))
}

/// A long-lived psql process fed on stdin, as a careful operator would script it: per
/// subject, one REPEATABLE READ read-only transaction with, per table,
/// `\copy (...) TO '/dev/null' (FORMAT binary)` and its COUNT(*).
struct PsqlSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

const PSQL_DONE: &str = "dsr-bench-subject-done";

impl PsqlSession {
    fn start(host: &str, port: u16, password: &str) -> anyhow::Result<PsqlSession> {
        let mut child = Command::new("psql")
            .args([
                "-h",
                host,
                "-p",
                &port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                DATABASE,
                "-X",
                "-q",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .env("PGPASSWORD", password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(PsqlSession {
            child,
            stdin,
            stdout,
        })
    }

    /// Reads one subject; returns the rows counted.
    fn subject(&mut self, email: &str) -> anyhow::Result<u64> {
        use std::io::Write;
        let literal = format!("'{}'", email.replace('\'', "''"));
        let mut script = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n");
        for (_, sql) in TABLES {
            let query = sql.replace("$1", &literal);
            script.push_str(&format!(
                "\\copy ({query}) TO '/dev/null' (FORMAT binary)\nSELECT count(*) FROM ({query}) t;\n"
            ));
        }
        script.push_str(&format!("COMMIT;\n\\echo {PSQL_DONE}\n"));
        self.stdin.write_all(script.as_bytes())?;
        self.stdin.flush()?;
        let mut rows = 0;
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(
                self.stdout.read_line(&mut line)? > 0,
                "psql ended early: {:?}",
                self.child.try_wait()
            );
            if line.trim() == PSQL_DONE {
                return Ok(rows);
            }
            rows += line.trim().parse::<u64>().unwrap_or(0);
        }
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The psql sessions of the sequential and concurrent runs, reused as the raw reader reuses
/// its connections.
static PSQL_POOL: std::sync::Mutex<Vec<PsqlSession>> = std::sync::Mutex::new(Vec::new());

/// One subject through a pooled psql session; returns the rows counted.
fn psql_subject(host: &str, port: u16, password: &str, email: &str) -> anyhow::Result<u64> {
    let pooled = PSQL_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut session = match pooled {
        Some(s) => s,
        None => PsqlSession::start(host, port, password)?,
    };
    let rows = session.subject(email)?;
    PSQL_POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(session);
    Ok(rows)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Creates the bench database and its generated dataset in the given shape.
async fn generate(
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
async fn generate_narrow(
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
async fn generate_wide(
    db: &tokio_postgres::Client,
    customers: i64,
    heavy_events: i64,
) -> anyhow::Result<()> {
    let heavy_orders = heavy_events / 10;
    // About 300 bytes of JSON text per event.
    let payload = "jsonb_build_object(
            'page', '/products/' || (i % 300) || '/details', 'session', md5(i::text),
            'referrer', 'https://www.example.org/search?q=item' || (i % 97),
            'device', jsonb_build_object('os', 'Android 14', 'browser', 'Chrome 131.0',
                                         'screen', '1080x2400', 'lang', 'en-GB'),
            'utm', jsonb_build_object('source', 'newsletter', 'medium', 'email',
                                      'campaign', 'winter-' || (i % 12)),
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
fn bench_datamap(shape: Shape, single_path: bool, scan_json: bool) -> String {
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

/// Starts the release binary with a config for the bench database and the data map `tables`.
fn start_server(
    binary: &PathBuf,
    cluster: &TempCluster,
    threads: Option<usize>,
    tables: String,
) -> anyhow::Result<(std::process::Child, String)> {
    let dir = tempfile::tempdir()?.keep();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
{threads}

[[sources]]
name = "bench"
host = "{host}"
port = {port}
database = "{DATABASE}"
user = "{SUPERUSER}"
password_env = "DSR_BENCH_PASSWORD"
max_connections = 20
max_per_caller = 20
min_idle = 16
identity_kinds = ["email"]

{tables}
"#,
        host = cluster.host(),
        port = cluster.port(),
        tables = tables,
        threads = threads
            .map(|n| format!("worker_threads = {n}"))
            .unwrap_or_default(),
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, config)?;
    let mut child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(&path)
        .env("DSR_BENCH_PASSWORD", cluster.password())
        .env("DSR_SUBJECT_KEY", "bench-subject-key-0123456789")
        .env("RUST_LOG", "warn,dsr_connector::grpc=info")
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let addr = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the server exited"))??;
        if let Some(rest) = line.split("local=").nth(1) {
            break rest.trim().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, addr))
}
