//! Compression on the wire (`--wire`): the heavy subject plain, gzip and zstd, over loopback
//! and over a shaped link.
//!
//! The shaped link is a veth pair into a network namespace that this benchmark makes and
//! removes itself, each end limited to 100 Mbit/s by `tc` (tbf), and a relay here that holds
//! every chunk 25 ms in each direction (50 ms round trip): this kernel has no netem. A second
//! server runs inside the namespace and reaches PostgreSQL through its Unix socket, so that
//! only the gRPC stream crosses the shaped link. Bytes on the wire are the veth's own
//! counters (IP and TCP headers included); CPU is the server's, from /proc.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use dsr_connector::demo::cluster::TempCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use super::*;

/// The namespace's address, and the link's shape.
const INSIDE: &str = "10.77.0.2";
const DELAY: Duration = Duration::from_millis(25);
const RATE: &str = "100mbit";

/// A network namespace joined to this one by a shaped veth pair; removed on drop.
struct ShapedLink {
    netns: String,
    outside: String,
}

impl ShapedLink {
    fn create() -> anyhow::Result<ShapedLink> {
        let id = std::process::id() % 100_000;
        let link = ShapedLink {
            netns: format!("dsrbench{id}"),
            outside: format!("dsrb{id}a"),
        };
        let inside = format!("dsrb{id}b");
        let ns = link.netns.as_str();
        let shape = ["tbf", "rate", RATE, "burst", "64kb", "latency", "100ms"];
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", ns],
            vec![
                "ip",
                "link",
                "add",
                &link.outside,
                "type",
                "veth",
                "peer",
                "name",
                &inside,
                "netns",
                ns,
            ],
            vec!["ip", "addr", "add", "10.77.0.1/24", "dev", &link.outside],
            vec!["ip", "link", "set", &link.outside, "up"],
            vec![
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                &inside,
            ],
            vec!["ip", "-n", ns, "link", "set", &inside, "up"],
            vec!["ip", "-n", ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            run(&step)?;
        }
        let mut outside_shape = vec!["tc", "qdisc", "add", "dev", &link.outside, "root"];
        outside_shape.extend(shape);
        run(&outside_shape)?;
        let mut inside_shape = vec![
            "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", &inside, "root",
        ];
        inside_shape.extend(shape);
        run(&inside_shape)?;
        Ok(link)
    }

    /// Bytes received on this side of the link so far.
    fn received(&self) -> u64 {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/rx_bytes",
            self.outside
        ))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it this end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.outside])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(args[0]).args(&args[1..]).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// A TCP relay to `target` that holds every chunk for [`DELAY`] in each direction before
/// passing it on, keeping the order and the throughput.
async fn delaying_relay(target: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (from_client, to_client) = client.into_split();
            let (from_server, to_server) = server.into_split();
            delay(from_client, to_server);
            delay(from_server, to_client);
        }
    });
    Ok(addr)
}

/// One direction of [`delaying_relay`]: a reader that stamps chunks with when they are due,
/// and a writer that passes each on when it is. At most 1,024 chunks wait (what 100 Mbit/s
/// brings in 25 ms is about 300 KiB).
fn delay(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    tokio::spawn(async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n) = from.read(&mut buffer).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + DELAY, buffer[..n].to_vec()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
}

/// A client channel as a long link needs: HTTP/2 windows that grow with the link's
/// bandwidth-delay product (the default 64 KiB window allows one window per round trip).
async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .http2_adaptive_window(true)
        .connect()
        .await?)
}

const ENCODINGS: [(&str, Option<CompressionEncoding>); 3] = [
    ("plain", None),
    ("gzip", Some(CompressionEncoding::Gzip)),
    ("zstd", Some(CompressionEncoding::Zstd)),
];

/// One encoding's repetitions.
#[derive(Default)]
struct Measured {
    wire: Vec<f64>,
    local_rate: Vec<f64>,
    local_cpu: Vec<f64>,
    shaped_rate: Vec<f64>,
    shaped_cpu: Vec<f64>,
}

/// The heavy subject under each encoding, over loopback (the running server at `addr`, pid
/// `pid`) and over the shaped link.
pub(crate) async fn compression_rows(
    args: &Args,
    binary: &std::path::PathBuf,
    cluster: &TempCluster,
    (pid, addr): (u32, &str),
    results: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let link = ShapedLink::create()?;
    let socket = cluster
        .socket_dir()
        .ok_or_else(|| anyhow::anyhow!("the cluster has no socket directory"))?;
    let source = postgres_source(cluster).replace(
        &format!("host = \"{}\"", cluster.host()),
        &format!("host = \"{}\"", socket.display()),
    );
    let (mut shaped_server, shaped_addr) = start_server_at(
        binary,
        &source,
        cluster.password(),
        args.server_threads,
        bench_datamap(args.shape, args.single_path, args.scan_json),
        Some((&link.netns, INSIDE)),
        true,
    )?;
    let outcome = async {
        let loopback = channel(addr).await?;
        let shaped = channel(&delaying_relay(shaped_addr.parse()?).await?.to_string()).await?;
        let mut measured = Vec::new();
        for (name, accept) in ENCODINGS {
            let mut m = Measured::default();
            for round in 0..args.repeat {
                eprintln!("wire, {name}, round {} ...", round + 1);
                let cpu = cpu_ms(pid);
                let (rows, _, secs) =
                    extract_accepting(loopback.clone(), HEAVY, None, accept).await?;
                m.local_rate.push(rows as f64 / secs);
                m.local_cpu.push((cpu_ms(pid) - cpu) * 1e3 / rows as f64);

                let (cpu, received) = (cpu_ms(shaped_server.id()), link.received());
                let (rows, _, secs) =
                    extract_accepting(shaped.clone(), HEAVY, None, accept).await?;
                m.shaped_rate.push(rows as f64 / secs);
                m.shaped_cpu
                    .push((cpu_ms(shaped_server.id()) - cpu) * 1e3 / rows as f64);
                m.wire
                    .push((link.received() - received) as f64 / rows as f64);
            }
            measured.push((name, m));
        }
        let plain = &measured[0].1;
        for (name, m) in &measured {
            let rows = [
                ("bytes on the wire per row", &m.wire, &plain.wire),
                ("loopback (rows/s)", &m.local_rate, &plain.local_rate),
                (
                    "loopback: server CPU per row (µs)",
                    &m.local_cpu,
                    &plain.local_cpu,
                ),
                (
                    "50 ms RTT, 100 Mbit/s (rows/s)",
                    &m.shaped_rate,
                    &plain.shaped_rate,
                ),
                (
                    "shaped link: server CPU per row (µs)",
                    &m.shaped_cpu,
                    &plain.shaped_cpu,
                ),
            ];
            for (measure, values, baseline) in rows {
                results.push(Row::new(
                    &format!("wire, {name}: {measure}"),
                    values,
                    (*name != "plain").then_some(baseline.as_slice()),
                    "plain",
                ));
            }
        }
        anyhow::Ok(())
    }
    .await;
    stop_server(&mut shaped_server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(link);
    outcome
}
