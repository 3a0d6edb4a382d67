//! A quick measurement of one heavy subject, end to end through the real binary.
//!
//! Starts a throwaway PostgreSQL with the demo data, gives one customer `ROWS` events (default
//! 1,000,000; set `DSR_MEASURE_ROWS`), starts `dsr-connector serve` from the release build as
//! a separate process, extracts that subject with a Rust tonic client that decodes every
//! message, and prints rows/s, MB/s, time to first batch and the server's peak RSS (`VmHWM`).
//! As a reference it also reads the same rows with a raw tokio-postgres portal in the same run.
//!
//! Run: `cargo build --release && cargo run --release --example measure_heavy`
//! This is a single run, not the benchmark: no repetitions, no concurrency.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use dsr_connector::demo::cluster::{ClusterOptions, TempCluster};
use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::{ExtractRequest, Identity, extract_response::Event};
use dsr_connector::{demo, store::postgres::tls::install_crypto_provider};
use prost::Message;

const SUBJECT: &str = "heavy@example.com";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    install_crypto_provider();
    let rows: i64 = std::env::var("DSR_MEASURE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("dsr-connector"))
        .filter(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("build the binary first: cargo build --release"))?;

    let cluster =
        tokio::task::spawn_blocking(|| TempCluster::start(&ClusterOptions::default())).await??;
    demo::load(&cluster, demo::DATABASE).await?;
    let db = demo::connect(&cluster, demo::DATABASE).await?;
    eprintln!("loading {rows} events for one subject ...");
    db.batch_execute(&format!(
        "INSERT INTO customers (id, email, full_name, created_at) VALUES (900001, '{SUBJECT}', 'Heavy User', now());
         INSERT INTO events (id, customer_id, occurred_at, kind, ip, payload)
         SELECT 10000000 + i, 900001, timestamptz '2024-01-01' + i * interval '1 second', 'page_view',
                '203.0.113.7', jsonb_build_object('page', '/p/' || (i % 1000), 'session', md5(i::text),
                'contact', jsonb_build_object('email', '{SUBJECT}'))
         FROM generate_series(1, {rows}) AS i;"
    ))
    .await?;
    db.batch_execute("VACUUM ANALYZE").await?;

    // Reference: a raw portal read of the same rows, in the same run.
    let started = Instant::now();
    let mut raw_rows = 0u64;
    {
        let mut client = demo::connect(&cluster, demo::DATABASE).await?;
        let txn = client.transaction().await?;
        let stmt = txn
            .prepare("SELECT id, customer_id, occurred_at, kind, ip::text, payload FROM events WHERE customer_id = 900001")
            .await?;
        let portal = txn.bind(&stmt, &[]).await?;
        loop {
            let batch = txn.query_portal(&portal, 500).await?;
            raw_rows += batch.len() as u64;
            if batch.len() < 500 {
                break;
            }
        }
    }
    let raw_secs = started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        demo::config_toml(&cluster, demo::DATABASE, "127.0.0.1:0".parse()?),
    )?;
    let mut server = Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("DSR_DEMO_PASSWORD", cluster.password())
        .env("DSR_SUBJECT_KEY", "measure-subject-key-0123456789")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(server.stderr.take().expect("piped stderr")).lines();
    let addr = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("server exited"))??;
        if let Some(rest) = line.split("local=").nth(1) {
            break rest.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let mut client = DsrConnectorServiceClient::connect(format!("http://{addr}")).await?;
    let started = Instant::now();
    let mut stream = client
        .extract(ExtractRequest {
            source: "demo".into(),
            subject: Some(Identity {
                kind: "email".into(),
                value: SUBJECT.into(),
            }),
            tables: vec!["events".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut first_batch = None;
    let mut streamed = 0u64;
    let mut bytes = 0usize;
    let mut manifest = None;
    while let Some(message) = stream.message().await? {
        bytes += message.encoded_len();
        match message.event {
            Some(Event::Batch(b)) => {
                first_batch.get_or_insert_with(|| started.elapsed());
                streamed += b.rows.len() as u64;
            }
            Some(Event::Manifest(m)) => manifest = Some(m),
            _ => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id()))?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();

    let manifest = manifest.ok_or_else(|| anyhow::anyhow!("no manifest"))?;
    println!(
        "rows streamed:        {streamed} (manifest row_count {})",
        manifest.row_count
    );
    println!(
        "through gRPC:         {:.0} rows/s, {:.1} MB/s, {secs:.2} s",
        streamed as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    println!(
        "time to first batch:  {:.1} ms",
        first_batch.unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "server peak RSS:      {}",
        hwm.trim_start_matches("VmHWM:").trim()
    );
    println!(
        "raw portal reference: {:.0} rows/s ({raw_rows} rows, {raw_secs:.2} s)",
        raw_rows as f64 / raw_secs
    );
    println!(
        "ratio gRPC / raw:     {:.2}",
        (streamed as f64 / secs) / (raw_rows as f64 / raw_secs)
    );
    Ok(())
}
