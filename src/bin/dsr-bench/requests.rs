//! `--requests N`: durable requests under load. Two replicas of the release binary share a
//! control database (in the bench cluster) and a package directory; N access requests, one
//! per subject, are submitted to the first replica (32 in flight), and the run waits until
//! every one has ended. Reports the time to submit them all and to finish them all, the
//! throughput, each request's time from submission to its end (p50, p99, max), and each
//! replica's CPU and peak RSS; then checks that every request succeeded and that every
//! package's manifest has the SHA-256 its request recorded.

use std::time::{Duration, Instant};

use dsr_connector::pb::dsr_request_service_client::DsrRequestServiceClient;
use dsr_connector::pb::{Identity, RequestKind, SubmitRequestRequest};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::*;

/// Submissions in flight at once.
const IN_FLIGHT: usize = 32;
/// Workers per replica.
const WORKERS: usize = 4;

pub(crate) async fn run(
    args: &Args,
    binary: &PathBuf,
    cluster: &TempCluster,
    count: usize,
) -> anyhow::Result<()> {
    let customers = ((100_000.0 * args.scale) as i64).max(count as i64);
    generate(
        cluster,
        args.shape,
        customers,
        (1_000_000.0 * args.scale) as i64,
    )
    .await?;
    let admin = demo::connect(cluster, "postgres").await?;
    // Each its own statement: neither runs inside a transaction block.
    admin
        .batch_execute("DROP DATABASE IF EXISTS bench_control")
        .await?;
    admin.batch_execute("CREATE DATABASE bench_control").await?;
    let control = demo::connect(cluster, "bench_control").await?;
    let dir = tempfile::tempdir()?;
    let url_file = dir.path().join("control.url");
    std::fs::write(&url_file, cluster.connection_string("bench_control"))?;
    let packages = dir.path().join("packages");
    let settings = format!(
        "{}\n[server.control]\nurl_file = {:?}\n\n[server.requests]\npackage_dir = {:?}\n\
         workers = {WORKERS}\npoll = \"50ms\"\n",
        bench_datamap(args.shape, args.single_path, args.scan_json),
        url_file.display().to_string(),
        packages.display().to_string(),
    );
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(start_server(
            binary,
            &postgres_source(cluster),
            cluster.password(),
            args.server_threads,
            settings.clone(),
            false,
        )?);
    }
    let mut client = DsrRequestServiceClient::new(connect(&replicas[0].1).await?);

    eprintln!("submitting {count} access requests to the first of two replicas ...");
    let started = Instant::now();
    let step = (customers / count as i64).max(1);
    let submitted: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..count)
        .map(|i| {
            let mut client = client.clone();
            async move {
                client
                    .submit_request(SubmitRequestRequest {
                        request_id: format!("bench-{i}"),
                        kind: RequestKind::Access as i32,
                        subject: Some(Identity {
                            kind: "email".into(),
                            value: format!("user{}@bench.example", 1 + i as i64 * step),
                        }),
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    submitted.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let all_submitted = started.elapsed();
    client = DsrRequestServiceClient::new(connect(&replicas[1].1).await?);
    drop(client);

    let ended = loop {
        let row = control
            .query_one(
                "SELECT count(*) FILTER (WHERE finished IS NOT NULL), \
                 count(*) FILTER (WHERE state = 'succeeded') FROM dsr_requests",
                &[],
            )
            .await?;
        let (finished, _): (i64, i64) = (row.get(0), row.get(1));
        if finished as usize >= count {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "{finished} of {count} requests ended in an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rss: Vec<u64> = replicas.iter().map(|(c, _)| peak_rss_kib(c.id())).collect();
    let cpu: Vec<f64> = replicas.iter().map(|(c, _)| cpu_ms(c.id())).collect();

    // The same subjects through Extract, with as many calls in flight as the workers run,
    // spread over both replicas, each stream decoded and dropped: what the requests add
    // (the queue, the leases, the package on disk) is the difference.
    let channels = [
        connect(&replicas[0].1).await?,
        connect(&replicas[1].1).await?,
    ];
    let subjects: Vec<String> = (0..count)
        .map(|i| format!("{i}:user{}@bench.example", 1 + i as i64 * step))
        .collect();
    let (direct_rate, _) = many(&subjects, 2 * WORKERS, |tagged| {
        let (i, email) = tagged.split_once(':').unwrap_or(("0", ""));
        let channel = channels[i.parse::<usize>().unwrap_or(0) % 2].clone();
        let email = email.to_owned();
        async move { extract_one(channel, &email, None).await.map(|_| ()) }
    })
    .await?;

    let rows = control
        .query(
            "SELECT id, state, extract(epoch FROM finished - created)::float8, package_path, \
             package_sha256 FROM dsr_requests ORDER BY id",
            &[],
        )
        .await?;
    let mut latencies = Vec::new();
    let mut succeeded = 0;
    let mut verified = 0;
    for row in &rows {
        let state: String = row.get(1);
        latencies.push(row.get::<_, f64>(2));
        if state == "succeeded" {
            succeeded += 1;
            let path: String = row.get(3);
            let sha: String = row.get(4);
            let manifest = std::fs::read(std::path::Path::new(&path).join("manifest.json"))?;
            if hex::encode(Sha256::digest(&manifest)) == sha {
                verified += 1;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let tasks = control
        .query_one("SELECT sum(attempts)::bigint FROM dsr_request_tasks", &[])
        .await?
        .get::<_, i64>(0);

    println!(
        "\n| durable requests, 2 replicas, {WORKERS} workers each | value |\n|---|---|\n\
         | requests submitted (to one replica, {IN_FLIGHT} in flight) | {count} in {:.1} s |\n\
         | all ended | {:.1} s after the first submission |\n\
         | throughput | {:.1} requests/s (the same subjects through Extract, {} in flight, \
         nothing written: {direct_rate:.1}/s) |\n\
         | submission to end, p50 / p99 / max | {:.2} s / {:.2} s / {:.2} s |\n\
         | succeeded, packages verified (SHA-256 of the manifest) | {succeeded} / {verified} of {count} |\n\
         | attempts (one per request when nothing failed) | {tasks} |\n\
         | replica 1: CPU, peak RSS | {:.1} s, {:.1} MiB |\n\
         | replica 2: CPU, peak RSS | {:.1} s, {:.1} MiB |",
        all_submitted.as_secs_f64(),
        ended.as_secs_f64(),
        count as f64 / ended.as_secs_f64(),
        2 * WORKERS,
        at(0.5),
        at(0.99),
        at(1.0),
        cpu[0] / 1000.0,
        rss[0] as f64 / 1024.0,
        cpu[1] / 1000.0,
        rss[1] as f64 / 1024.0,
    );
    println!(
        "\npostgres, {} shape, scale {}, {customers} customers, {} cores",
        args.shape.name(),
        args.scale,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (mut child, _) in replicas {
        stop_server(&mut child);
    }
    anyhow::ensure!(
        succeeded == count && verified == count,
        "{succeeded} of {count} requests succeeded, {verified} packages verified"
    );
    Ok(())
}
