//! dsr-bench: the service against raw PostgreSQL, on the same data, in the same run.
//!
//! `cargo build --release && cargo run --release --bin dsr-bench -- [--scale 1.0]`
//!
//! Starts a throwaway PostgreSQL, generates a dataset (at scale 1: 100,000 customers with 10
//! orders, 50 events and 2 support tickets each, plus one heavy subject with 1,000,000 events
//! and 100,000 orders), starts the release `dsr-connector` binary as a separate process, and
//! measures these scenarios, each repeated:
//!
//! - heavy: the heavy subject through Extract, decoded by a Rust tonic client; against
//!   `psql \copy (...) TO STDOUT (FORMAT binary)` and a raw tokio-postgres portal reader.
//! - sequential: ordinary subjects one at a time; against the raw reader doing the same
//!   snapshot, queries and counts, and against pooled psql sessions scripted with `\copy`.
//! - concurrent: the same subjects over 16 concurrent streams; against 16 raw readers and
//!   16 psql sessions.
//!
//! - erasure: the heavy subject's erasure as a preview (rolled back) against psql's DELETEs
//!   rolled back, and a committed erasure with delete, mask and retain policies against the
//!   same transaction by hand (see `erasure.rs`).
//!
//! `--store mysql` runs the heavy, sequential and concurrent scenarios on a throwaway MariaDB
//! instead, against the `mariadb` command-line client (see `mysql.rs`).
//!
//! `--requests N` measures durable requests instead: N access requests over two replicas that
//! share a control database (see `requests.rs`).
//!
//! `--tls` reads PostgreSQL over TLS, verified, from every reader (see `tls.rs`).
//!
//! `--wire` measures compression: the heavy subject plain, gzip and zstd, over loopback and
//! over a shaped link (see `wire.rs`).
//!
//! `--shape wide` generates wider rows (JSONB addresses, legacy VARCHAR dates, epochs, numeric
//! amounts, timestamps without a zone, ~300-byte payloads; see `generate_wide`).
//!
//! Prints a Markdown table and writes `bench-results/bench.json`. Nothing is asserted.

mod baseline;
mod data;
mod erasure;
mod fresh;
mod mysql;
mod report;
mod requests;
mod service;
mod suite;
mod tls;
mod wire;

use baseline::*;
use data::*;
use report::*;
use service::*;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use dsr_connector::demo;
use dsr_connector::demo::cluster::{ClusterOptions, TempCluster};
use dsr_connector::store::postgres::tls::install_crypto_provider;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Benchmark dsr-connector against raw PostgreSQL in the same run")]
pub(crate) struct Args {
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
    /// Also measure, in the same rounds, a second server whose map reaches support_tickets by
    /// one path only: the cost of the second path, as a ratio.
    #[arg(long)]
    against_single_path: bool,
    /// Leave out the erasure scenarios (the suite measures them in one of its runs only).
    #[arg(long)]
    skip_erasure: bool,
    /// Run the whole suite: one run per configuration (narrow, wide, wide with the JSON scan,
    /// wide over TLS, MariaDB), each on a database of its own, one after the other, and then
    /// a summary of every target of the performance work, from those runs (see `suite.rs`).
    #[arg(long)]
    suite: bool,
    /// Run the service with its audit log on, as it is deployed on one machine: a file,
    /// fsynced per batch, with a record before and after every call. Off by default, so that
    /// figures compare with runs from before the log existed.
    #[arg(long)]
    audit: bool,
    /// Scan JSON for nested personal data (off by default), to measure the scan:
    /// `events.payload`, and in the wide shape `customers.address` too.
    #[arg(long)]
    scan_json: bool,
    /// The dataset's shape: `narrow` (the demo schema) or `wide` (JSONB addresses, legacy
    /// VARCHAR dates, epochs, numeric amounts, timestamps without a zone, ~300-byte payloads).
    #[arg(long, value_enum, default_value_t = Shape::Narrow)]
    shape: Shape,
    /// Also measure compression on the wire: the heavy subject plain, gzip and zstd, over
    /// loopback and over a veth pair shaped to 50 ms RTT and 100 Mbit/s (made and removed
    /// here; needs root for `ip netns` and `tc`).
    #[arg(long)]
    wire: bool,
    /// Read PostgreSQL over TLS, verified (`verify-full`), from every reader: the service,
    /// psql and the raw reader (a CA and a server certificate are made for the run).
    #[arg(long)]
    tls: bool,
    /// The store: `postgres` (against psql and a raw tokio-postgres reader) or `mysql` (a
    /// throwaway MariaDB, against the `mariadb` command-line client).
    #[arg(long, value_enum, default_value_t = StoreArg::Postgres)]
    store: StoreArg,
    /// Measure only the committed erasure (on its own dataset), not the extraction scenarios.
    #[arg(long)]
    erase_only: bool,
    /// Another build of the service (an earlier commit's `dsr-connector`), started beside
    /// this one and measured in the same rounds (heavy, sequential, concurrent, and the
    /// committed erasure): a change's cost, before and after, on the same data at the same
    /// moment.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Measure durable requests instead: this many access requests over two replicas that
    /// share a control database (see `requests.rs`).
    #[arg(long)]
    requests: Option<usize>,
    /// Where bench.json goes.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreArg {
    Postgres,
    Mysql,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shape {
    Narrow,
    Wide,
}

impl Shape {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Narrow => "narrow",
            Shape::Wide => "wide",
        }
    }
}

pub(crate) const DATABASE: &str = "bench";
pub(crate) const HEAVY: &str = "heavy@bench.example";

/// The heavy subject read by a client that accepts gzip and nothing else, as grpcio's and
/// grpc-js's clients do by default: the service, by default offering zstd alone, serves it
/// plain.
pub(crate) const DEFAULT_CLIENT_ROW: &str =
    "heavy: a client accepting gzip only, as grpcio's default (rows/s)";

/// Concurrent calls in the many-streams scenario.
const STREAMS: usize = 256;

/// The bench source's `max_connections`.
pub(crate) const POOL: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _leftovers = service::StopLeftovers;
    install_crypto_provider();
    let args = Args::parse();
    service::AUDIT.store(args.audit, std::sync::atomic::Ordering::Relaxed);
    let binary = std::env::current_exe()?
        .parent()
        .map(|p| p.join("dsr-connector"))
        .filter(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("build the service first: cargo build --release"))?;
    if args.suite {
        return suite::run(&args);
    }
    if args.store == StoreArg::Mysql {
        return mysql::run(&args, &binary).await;
    }

    eprintln!("starting PostgreSQL ...");
    let certificates = tempfile::tempdir()?;
    let server_tls = if args.tls {
        Some(tls::make(certificates.path())?)
    } else {
        None
    };
    let cluster = tokio::task::spawn_blocking(|| {
        TempCluster::start(&ClusterOptions {
            settings: vec![("shared_buffers".into(), "512MB".into())],
            tls: server_tls,
        })
    })
    .await??;
    if args.erase_only {
        let results = erasure::committed(&args, &binary, &cluster).await?;
        return report(&args, "postgres", &results);
    }
    if let Some(count) = args.requests {
        return requests::run(&args, &binary, &cluster, count).await;
    }
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
    let (mut slow_server, _, slow_channel) =
        serve_bench(&args, &binary, &cluster, args.scan_json, args.single_path).await?;
    let (slow_rows, _, slow_secs) =
        extract_one(slow_channel, HEAVY, Some(Duration::from_millis(2))).await?;
    let slow_rss = peak_rss_kib(slow_server.id());
    stop_server(&mut slow_server);

    let (mut server, addr, channel) =
        serve_bench(&args, &binary, &cluster, args.scan_json, args.single_path).await?;
    let subjects: Vec<String> = (0..args.subjects as i64)
        .map(|i| {
            format!(
                "user{}@bench.example",
                1 + i * (customers / args.subjects as i64)
            )
        })
        .collect();

    // With the JSON scan on, a second server with the scan off reads the same heavy subject
    // in the same rounds: the scan's cost as a ratio.
    let unscanned = if args.scan_json {
        let (server, _, channel) =
            serve_bench(&args, &binary, &cluster, false, args.single_path).await?;
        Some((server, channel))
    } else {
        None
    };

    // The build compared against, when one is given.
    let compared = match &args.compare {
        Some(other) => {
            let (server, _, channel) =
                serve_bench(&args, other, &cluster, args.scan_json, args.single_path).await?;
            Some((server, channel))
        }
        None => None,
    };

    // The same map with one path to support_tickets, measured in the same rounds.
    let single = if args.against_single_path {
        let (server, _, channel) =
            serve_bench(&args, &binary, &cluster, args.scan_json, true).await?;
        warm_pool(&channel, &subjects).await?;
        Some((server, channel))
    } else {
        None
    };

    let mut results = Vec::new();
    // heavy
    let mut before = Vec::new();
    let mut service = Vec::new();
    let mut raw = Vec::new();
    let mut copy = Vec::new();
    let mut ttfb = Vec::new();
    let mut mbps = Vec::new();
    let mut scan_off = Vec::new();
    let mut default_client = Vec::new();
    let bytes = stream_bytes(channel.clone(), HEAVY).await?;
    warm_pool(&channel, &subjects).await?;
    if let Some((_, unscanned)) = &unscanned {
        warm_pool(unscanned, &subjects).await?;
    }
    if let Some((_, compared)) = &compared {
        warm_pool(compared, &subjects).await?;
    }
    for round in 0..args.repeat {
        eprintln!("heavy, round {} ...", round + 1);
        let (rows, first, secs) = extract_one(channel.clone(), HEAVY, None).await?;
        service.push(rows as f64 / secs);
        mbps.push(bytes as f64 / secs / 1e6);
        ttfb.push(first.as_secs_f64() * 1e3);
        if !args.wire {
            default_client.push(default_client_rate(channel.clone()).await?);
        }
        if let Some((_, unscanned)) = &unscanned {
            let (rows, _, secs) = extract_one(unscanned.clone(), HEAVY, None).await?;
            scan_off.push(rows as f64 / secs);
        }
        if let Some((_, compared)) = &compared {
            let (rows, _, secs) = extract_one(compared.clone(), HEAVY, None).await?;
            before.push(rows as f64 / secs);
        }
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
    if !default_client.is_empty() {
        results.push(Row::new(
            DEFAULT_CLIENT_ROW,
            &default_client,
            Some(&service),
            "a client accepting no encoding",
        ));
    }
    if let Some((mut server, _)) = unscanned {
        results.push(Row::new(
            "heavy: dsr-connector, JSON scan on (rows/s)",
            &service,
            Some(&scan_off),
            "JSON scan off",
        ));
        results.push(Row::new(
            "heavy: dsr-connector, JSON scan off (rows/s)",
            &scan_off,
            None,
            "",
        ));
        stop_server(&mut server);
    }
    if compared.is_some() {
        results.push(Row::new(
            "heavy: dsr-connector against the --compare build (rows/s)",
            &service,
            Some(&before),
            "the --compare build",
        ));
    }
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

    // Many streams at once, on a server of their own, so that its peak RSS is theirs: every
    // ordinary subject over STREAMS concurrent calls, spread over 8 connections (HTTP/2 caps
    // the streams of one). Calls beyond the pool wait in its queue, as they would.
    {
        eprintln!("{STREAMS} streams ...");
        let (mut many_server, many_addr, first) =
            serve_bench(&args, &binary, &cluster, args.scan_json, args.single_path).await?;
        let mut channels = vec![first];
        for _ in 1..8 {
            channels.push(connect(&many_addr).await?);
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (rate, _) = many(&subjects, STREAMS, |s| {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let channel = channels[i % channels.len()].clone();
            async move { extract_one(channel, &s, None).await.map(|_| ()) }
        })
        .await?;
        let rss = peak_rss_kib(many_server.id());
        stop_server(&mut many_server);
        results.push(Row::new(
            &format!("{STREAMS} streams at once: service peak RSS (MiB)"),
            &[rss as f64 / 1024.0],
            None,
            "",
        ));
        results.push(Row::new(
            &format!("{STREAMS} streams at once: subjects/s"),
            &[rate],
            None,
            "",
        ));
    }

    fresh::new_server_rows(&args, &binary, &cluster, &subjects, &mut results).await?;

    if args.wire {
        wire::compression_rows(&args, &binary, &cluster, (server.id(), &addr), &mut results)
            .await?;
    }

    // sequential and concurrent
    for (name, concurrency) in [("sequential", 1), ("concurrent", args.concurrency)] {
        let mut service = Vec::new();
        let mut raw = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut raw_p99 = Vec::new();
        let mut raw_p50 = Vec::new();
        let (mut p999, mut raw_p999) = (Vec::new(), Vec::new());
        let mut psql = Vec::new();
        let mut psql_p50 = Vec::new();
        let mut psql_p99 = Vec::new();
        let mut before = Vec::new();
        let mut one_path = Vec::new();
        for round in 0..args.repeat {
            eprintln!("{name}, round {} ...", round + 1);
            let (rate, lat) = extract_many(&channel, &subjects, concurrency).await?;
            service.push(rate);
            p50.push(percentile(&lat, 0.50));
            p99.push(percentile(&lat, 0.99));
            p999.push(percentile(&lat, 0.999));
            if let Some((_, compared)) = &compared {
                before.push(extract_many(compared, &subjects, concurrency).await?.0);
            }
            if let Some((_, single)) = &single {
                one_path.push(extract_many(single, &subjects, concurrency).await?.0);
            }
            let cluster = &cluster;
            let (rate, lat) = many(&subjects, concurrency, |s| async move {
                raw_subject(cluster, &s).await.map(|_| ())
            })
            .await?;
            raw.push(rate);
            raw_p50.push(percentile(&lat, 0.50));
            raw_p99.push(percentile(&lat, 0.99));
            raw_p999.push(percentile(&lat, 0.999));
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
        if compared.is_some() {
            results.push(Row::new(
                &format!("{name}: dsr-connector against the --compare build (subjects/s)"),
                &service,
                Some(&before),
                "the --compare build",
            ));
        }
        if single.is_some() {
            results.push(Row::new(
                &format!("{name}: two paths to support_tickets against one (subjects/s)"),
                &service,
                Some(&one_path),
                "one path",
            ));
            results.push(Row::new(
                &format!("{name}: one path to support_tickets (subjects/s)"),
                &one_path,
                None,
                "",
            ));
        }
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
            &format!("{name}: raw tokio-postgres p50 (ms)"),
            &raw_p50,
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
        // Exact percentiles over every subject's latency of a run (a sorted copy: 8 bytes a
        // subject), not a histogram's buckets; p99.9 of 1,000 subjects is the slowest one.
        results.push(Row::new(
            &format!("{name}: dsr-connector p99.9 (ms)"),
            &p999,
            Some(&raw_p999),
            "raw p99.9",
        ));
        results.push(Row::new(
            &format!("{name}: raw tokio-postgres p99.9 (ms)"),
            &raw_p999,
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
    if let Some((mut server, _)) = single {
        stop_server(&mut server);
    }
    if args.skip_erasure {
        stop_server(&mut server);
        if let Some((mut server, _)) = compared {
            stop_server(&mut server);
        }
        return report(&args, "postgres", &results);
    }
    // erasure: the heavy subject's whole erasure, rolled back on both sides. A rolled-back
    // DELETE leaves its pages not all-visible, which a production table (vacuumed, erased
    // once per subject) would not be: each side starts from a vacuumed table, outside the
    // timing.
    let vacuum = demo::connect(&cluster, DATABASE).await?;
    let mut erased = Vec::new();
    let mut deleted = Vec::new();
    for round in 0..args.repeat {
        eprintln!("erase, round {} ...", round + 1);
        vacuum.batch_execute("VACUUM").await?;
        let (rows, secs) = erase_preview(channel.clone(), HEAVY).await?;
        erased.push(rows as f64 / secs);
        vacuum.batch_execute("VACUUM").await?;
        if let Some((rows, secs)) = psql_delete(&cluster, HEAVY)? {
            deleted.push(rows as f64 / secs);
        }
    }
    results.push(Row::new(
        "erase heavy, verified, rolled back: dsr-connector (rows/s)",
        &erased,
        Some(&deleted),
        "psql DELETE per table, rolled back",
    ));
    results.push(Row::new(
        "erase heavy: psql DELETE per table, rolled back (rows/s)",
        &deleted,
        None,
        "",
    ));
    stop_server(&mut server);
    if let Some((mut server, _)) = compared {
        stop_server(&mut server);
    }
    // erasure, committed: delete, mask and retain, on subjects of its own.
    results.extend(erasure::committed(&args, &binary, &cluster).await?);

    report(&args, "postgres", &results)
}

/// A server on the bench database with the benchmark's data map (its JSON scan on or off),
/// and a channel to it: the server, its address and the channel.
async fn serve_bench(
    args: &Args,
    binary: &PathBuf,
    cluster: &TempCluster,
    scan_json: bool,
    single_path: bool,
) -> anyhow::Result<(std::process::Child, String, Channel)> {
    let (server, addr) = start_server(
        binary,
        &postgres_source(cluster),
        cluster.password(),
        args.server_threads,
        bench_datamap(args.shape, single_path, scan_json),
        args.wire,
    )?;
    let channel = connect(&addr).await?;
    Ok((server, addr, channel))
}

/// Prints the Markdown table and writes `bench.json`.
pub(crate) fn report(args: &Args, store: &str, results: &[Row]) -> anyhow::Result<()> {
    println!("\n| measure | median | min-max | ratio to baseline (same run) |\n|---|---|---|---|");
    for r in results {
        println!("{}", r.markdown());
    }
    println!(
        "\n{store}, {} shape, scale {}{}{}{}{}, {} subjects, concurrency {}, {} repetitions, {} cores",
        args.shape.name(),
        args.scale,
        if args.audit { ", audit log on" } else { "" },
        if args.scan_json { ", JSON scanned" } else { "" },
        if args.tls {
            ", PostgreSQL over TLS (verify-full)"
        } else {
            ""
        },
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
        "store": store,
        "scale": args.scale,
        "shape": args.shape.name(),
        "single_path": args.single_path,
        "scan_json": args.scan_json,
        "tls": args.tls,
        "audit": args.audit,
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
