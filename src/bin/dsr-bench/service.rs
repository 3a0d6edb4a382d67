//! The service under test: the release binary started as a separate process, and the
//! Rust tonic client that drives it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dsr_connector::demo::cluster::{SUPERUSER, TempCluster};
use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::{ExtractRequest, Identity, extract_response::Event};
use prost::Message;
use tonic::transport::Channel;

use super::*;

/// Runs `job` for every subject with `concurrency` in flight. Returns subjects/s and each
/// subject's latency in ms.
pub(crate) async fn many<F, Fut>(
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
/// (a client slower than the database). Returns rows, time to first batch, seconds.
pub(crate) async fn extract_one(
    channel: Channel,
    email: &str,
    pause: Option<Duration>,
) -> anyhow::Result<(u64, Duration, f64)> {
    extract_accepting(channel, email, pause, None).await
}

/// [`extract_one`], accepting the stream compressed with `accept`. Every message is decoded,
/// as a client would; nothing else is done with it, so that the client's own work is only
/// what any client does.
pub(crate) async fn extract_accepting(
    channel: Channel,
    email: &str,
    pause: Option<Duration>,
    accept: Option<tonic::codec::CompressionEncoding>,
) -> anyhow::Result<(u64, Duration, f64)> {
    let started = Instant::now();
    let mut stream = extract_call(channel, email, accept).await?;
    let mut rows = 0u64;
    let mut first = None;
    let mut manifest = false;
    while let Some(message) = stream.message().await? {
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
        first.unwrap_or_default(),
        started.elapsed().as_secs_f64(),
    ))
}

/// The heavy subject's rows per second for a client that accepts gzip and nothing else, as
/// grpcio's and grpc-js's do by default ([`crate::DEFAULT_CLIENT_ROW`]).
pub(crate) async fn default_client_rate(channel: Channel) -> anyhow::Result<f64> {
    let gzip = Some(tonic::codec::CompressionEncoding::Gzip);
    let (rows, _, secs) = extract_accepting(channel, crate::HEAVY, None, gzip).await?;
    Ok(rows as f64 / secs)
}

/// `subjects` extracted through `channel`, `concurrency` at a time, each stream read to its
/// end: the rate (subjects per second) and every subject's latency.
pub(crate) async fn extract_many(
    channel: &Channel,
    subjects: &[String],
    concurrency: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    many(subjects, concurrency, |s| {
        let channel = channel.clone();
        async move { extract_one(channel, &s, None).await.map(|_| ()) }
    })
    .await
}

/// Warms a server's pool as a server that has run for a while has it: its connections open,
/// each with the plan's statements prepared on it. Ordinary subjects, as many streams at once
/// as the pool has connections, four rounds' worth, so that each connection is very likely
/// used; then the heavy subject's first batch does not wait for a new connection's
/// preparations.
pub(crate) async fn warm_pool(channel: &Channel, subjects: &[String]) -> anyhow::Result<()> {
    let warm_up = &subjects[..subjects.len().min(POOL * 4)];
    extract_many(channel, warm_up, POOL).await?;
    Ok(())
}

/// The encoded bytes of one subject's stream (one extraction, untimed: measuring every
/// message would be the benchmark's work, not a client's).
pub(crate) async fn stream_bytes(channel: Channel, email: &str) -> anyhow::Result<usize> {
    let mut stream = extract_call(channel, email, None).await?;
    let mut bytes = 0;
    while let Some(message) = stream.message().await? {
        bytes += message.encoded_len();
    }
    Ok(bytes)
}

async fn extract_call(
    channel: Channel,
    email: &str,
    accept: Option<tonic::codec::CompressionEncoding>,
) -> anyhow::Result<tonic::Streaming<dsr_connector::pb::ExtractResponse>> {
    let mut client = DsrConnectorServiceClient::new(channel);
    if let Some(encoding) = accept {
        client = client.accept_compressed(encoding);
    }
    Ok(client
        .extract(ExtractRequest {
            source: "bench".into(),
            subject: Some(Identity {
                kind: "email".into(),
                value: email.into(),
            }),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// A channel to the service at `addr`. Its HTTP/2 windows stay fixed (64 KiB): windows that
/// grow with the link (`http2_adaptive_window`, which `--wire` needs for its 50 ms link) cost
/// the heavy subject about a tenth of its rate over loopback.
pub(crate) async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The CPU time a process has used so far (user and system), in milliseconds.
pub(crate) fn cpu_ms(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The fields after the command name (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    // The kernel counts in clock ticks of 1/100 s on Linux.
    ticks as f64 * 10.0
}

/// The `[[sources]]` block of the bench database in the PostgreSQL cluster.
pub(crate) fn postgres_source(cluster: &TempCluster) -> String {
    format!(
        r#"[[sources]]
name = "bench"
host = "{host}"
port = {port}
database = "{DATABASE}"
user = "{SUPERUSER}"
password_env = "DSR_BENCH_PASSWORD"
max_connections = {POOL}
max_per_caller = {POOL}
# The 256-stream scenario queues calls beyond the pool on purpose: a queued call waits
# for its slot as long as a patient orchestrator would, however loaded the machine is.
connect_timeout = "120s"
min_idle = 16
identity_kinds = ["email"]
{tls}"#,
        tls = tls::source_settings(),
        host = cluster.host(),
        port = cluster.port(),
    )
}

/// Starts the release binary with a config for the bench source `source` (its `[[sources]]`
/// block, whose password is `password`) and the data map `tables`. It offers the default
/// encodings (zstd), and gzip too with `gzip` (for `--wire`).
pub(crate) fn start_server(
    binary: &PathBuf,
    source: &str,
    password: &str,
    threads: Option<usize>,
    tables: String,
    gzip: bool,
) -> anyhow::Result<(std::process::Child, String)> {
    start_server_at(binary, source, password, threads, tables, None, gzip)
}

/// [`start_server`], in the network namespace `netns` (listening on its address) when given.
pub(crate) fn start_server_at(
    binary: &PathBuf,
    source: &str,
    password: &str,
    threads: Option<usize>,
    tables: String,
    netns: Option<(&str, &str)>,
    gzip: bool,
) -> anyhow::Result<(std::process::Child, String)> {
    let dir = tempfile::tempdir()?.keep();
    // The erasure is measured without a token, which only a loopback listener allows. With
    // `gzip` both encodings are offered, so that `--wire` measures each (a client that asks for
    // none, as every other scenario's, is served plain either way); otherwise the default,
    // which serves a client that accepts only gzip (grpcio's, grpc-js's default) plain.
    let config = format!(
        "[server]\nlisten = \"{listen}:0\"\nauth = \"none\"\n{compression}\
         {erase}{threads}\n{audit}\n{source}\n{tables}\n",
        audit = if AUDIT.load(std::sync::atomic::Ordering::Relaxed) {
            format!("[server.audit]\npath = {:?}\n", dir.join("audit.jsonl"))
        } else {
            String::new()
        },
        compression = if gzip {
            "compression = [\"zstd\", \"gzip\"]\n"
        } else {
            ""
        },
        listen = netns.map_or("127.0.0.1", |(_, address)| address),
        erase = if netns.is_none() {
            "anonymous_erase = true\n"
        } else {
            ""
        },
        threads = threads
            .map(|n| format!("worker_threads = {n}"))
            .unwrap_or_default(),
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, config)?;
    let mut command = match netns {
        // `ip netns exec` execs the binary: the child's pid is the server's.
        Some((name, _)) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", name]).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let mut child = command
        .args(["serve", "--config"])
        .arg(&path)
        .env("DSR_BENCH_PASSWORD", password)
        .env("DSR_SUBJECT_KEY", "bench-subject-key-0123456789")
        .env("DSR_BENCH_PSEUDONYM_KEY", "bench-pseudonym-key-0123456789")
        .env("DSR_AUDIT_KEY", "bench-audit-key-0123456789")
        .env("RUST_LOG", "warn,dsr_connector::api=info")
        // Not this process's stdout: a caller reading it to the end would wait for a server
        // that outlived the benchmark.
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    RUNNING.lock().unwrap().push(child.id());
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

/// The servers started and not yet stopped, by process id.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Whether servers are started with their audit log on (`--audit`).
pub(crate) static AUDIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stops, when dropped, every server still running: a benchmark that fails half-way leaves
/// none behind.
pub(crate) struct StopLeftovers;

impl Drop for StopLeftovers {
    fn drop(&mut self) {
        for pid in RUNNING
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
        {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// Stops a server started by [`start_server`] as an operator would (SIGTERM), and waits for it.
pub(crate) fn stop_server(server: &mut std::process::Child) {
    if let Ok(mut running) = RUNNING.lock() {
        running.retain(|pid| *pid != server.id());
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
}

/// Previews erasing one subject through the service: the whole erasure (rows captured,
/// deleted, counted and verified) in one transaction that is then rolled back, so that the
/// next round finds the same rows. Returns the rows it deleted and seconds.
pub(crate) async fn erase_preview(channel: Channel, email: &str) -> anyhow::Result<(u64, f64)> {
    let mut client = DsrConnectorServiceClient::new(channel);
    let started = Instant::now();
    let mut stream = client
        .erase(dsr_connector::pb::EraseRequest {
            source: "bench".into(),
            subject: Some(Identity {
                kind: "email".into(),
                value: email.into(),
            }),
            request_id: "bench-erase".into(),
            dry_run: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut deleted = None;
    while let Some(message) = stream.message().await? {
        if let Some(dsr_connector::pb::erase_response::Event::Receipt(r)) = message.event {
            deleted = Some(r.rows_deleted);
        }
    }
    let deleted = deleted.ok_or_else(|| anyhow::anyhow!("the erasure sent no receipt"))?;
    Ok((deleted, started.elapsed().as_secs_f64()))
}
