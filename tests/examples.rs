//! The client examples, run as a user runs them: `examples/python` (grpcio, stubs generated from
//! the proto) and `examples/node` (@grpc/grpc-js with @grpc/proto-loader), beside the
//! `dsr-connector extract` command. All three send a bearer token, a deadline and
//! x-request-id, write the same data package, stop on a refusal without leaving anything,
//! and retry UNAVAILABLE until the server is there.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{TestServer, config_text, config_with_tokens, venv_tool};

const TOKEN: &str = "token-of-the-example-clients-0123456789";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn server_config() -> dsr_connector::config::Config {
    config_with_tokens(
        &config_text(""),
        &[("orchestrator", TOKEN, "sources = [\"demo\"]")],
    )
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Rust,
    Python,
    Node,
}

const CLIENTS: [Client; 3] = [Client::Rust, Client::Python, Client::Node];

impl Client {
    /// The command that runs this client, with the arguments all three share.
    fn command(self, addr: &str, value: &str, out: &Path, extra: &[&str]) -> Command {
        let mut command = match self {
            Client::Rust => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_dsr-connector"));
                c.arg("extract");
                c
            }
            Client::Python => {
                let mut c = Command::new(venv_tool("python"));
                c.arg(root().join("examples/python/dsr_extract.py"));
                c
            }
            Client::Node => {
                assert!(
                    root()
                        .join("examples/node/node_modules/@grpc/grpc-js")
                        .exists(),
                    "the Node example's packages are missing: run scripts/prereqs.sh --clients"
                );
                let mut c = Command::new("node");
                c.arg(root().join("examples/node/dsr_extract.js"));
                c
            }
        };
        let addr = match self {
            Client::Rust => format!("http://{addr}"),
            _ => addr.to_owned(),
        };
        command
            .args(["--addr", &addr, "--source", "demo", "--kind", "email"])
            .args(["--value", value])
            .arg("--out")
            .arg(out)
            .args(extra);
        command
    }

    async fn run(self, addr: &str, value: &str, out: &Path, extra: &[&str]) -> Output {
        let mut command = self.command(addr, value, out, extra);
        command.env("EXAMPLE_TOKEN", TOKEN);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A package's tables as parsed JSON lines, by file name, and its manifest.
fn read_package(dir: &Path) -> (BTreeMap<String, Vec<serde_json::Value>>, serde_json::Value) {
    let mut tables = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(table) = name.strip_suffix(".jsonl") {
            let rows = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
                .collect();
            tables.insert(table.to_owned(), rows);
        }
    }
    let manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    (tables, manifest)
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn every_client_writes_the_same_package() {
    let server = TestServer::start(server_config()).await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut packages = Vec::new();
    for client in CLIENTS {
        let out = dir.path().join(format!("{client:?}"));
        let output = client
            .run(
                &addr,
                "alice@example.com",
                &out,
                &[
                    "--token-env",
                    "EXAMPLE_TOKEN",
                    "--request-id",
                    "dsr-example-1",
                    "--compliance-tag",
                    "gdpr-art15",
                ],
            )
            .await;
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{client:?}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("every count verified"),
            "{client:?}: {stdout}"
        );
        assert!(
            !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
            "{client:?} printed the token"
        );
        let readme = std::fs::read_to_string(out.join("README.txt")).unwrap();
        assert!(readme.contains("E-mail addresses."), "{client:?}: {readme}");
        packages.push((client, read_package(&out)));
    }
    let (_, (reference_tables, reference_manifest)) = &packages[0];
    assert_eq!(reference_manifest["rowCount"], "18");
    assert_eq!(reference_tables.values().map(Vec::len).sum::<usize>(), 18);
    for (client, (tables, manifest)) in &packages[1..] {
        assert_eq!(
            tables, reference_tables,
            "{client:?}: rows differ from the Rust client's"
        );
        for key in [
            "subjectId",
            "rowCount",
            "piiFields",
            "tables",
            "requestId",
            "complianceTag",
            "subjectKind",
            "source",
        ] {
            assert_eq!(
                manifest[key], reference_manifest[key],
                "{client:?}: manifest {key}"
            );
        }
        assert_eq!(
            manifest.as_object().unwrap().keys().collect::<Vec<_>>(),
            reference_manifest
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            "{client:?}: the same manifest fields"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_call_stops_at_once_and_leaves_nothing() {
    let server = TestServer::start(server_config()).await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    for client in CLIENTS {
        let out = dir.path().join(format!("{client:?}"));
        // No token: UNAUTHENTICATED is not retried.
        let output = client.run(&addr, "alice@example.com", &out, &[]).await;
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{client:?}");
        if !matches!(client, Client::Rust) {
            assert_eq!(output.status.code(), Some(2), "{client:?}: {stderr}");
        }
        assert!(
            stderr.to_lowercase().contains("unauthenticated"),
            "{client:?}: {stderr}"
        );
        assert!(!stderr.contains("attempt"), "{client:?} retried: {stderr}");
        assert!(!stderr.contains("alice@"), "{client:?}: {stderr}");
        assert!(
            leftovers(dir.path()).is_empty(),
            "{client:?}: {:?}",
            leftovers(dir.path())
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unavailable_is_retried_until_the_server_is_there() {
    use std::io::{BufRead, BufReader, Read};
    // A port that nothing listens on yet: bound but not listening, so connections to it are
    // refused until the server listens on this same socket, and no other test can take it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (retrying_tx, retrying_rx) = std::sync::mpsc::channel();
    let mut running = Vec::new();
    for client in CLIENTS {
        let out = dir.path().join(format!("{client:?}"));
        let mut command = client.command(
            &addr,
            "alice@example.com",
            &out,
            &[
                "--token-env",
                "EXAMPLE_TOKEN",
                "--attempts",
                "10",
                "--deadline",
                "2m",
            ],
        );
        command.env("EXAMPLE_TOKEN", TOKEN);
        command.stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx = retrying_tx.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("attempt 1") {
                    let _ = tx.send(client);
                }
                lines.push(line);
            }
            lines.join("\n")
        });
        running.push((client, out, child, reader));
    }
    // Start the server only once every client has failed once and said it will try again.
    let waited = tokio::task::spawn_blocking(move || {
        (0..CLIENTS.len())
            .map(|_| retrying_rx.recv_timeout(std::time::Duration::from_secs(60)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .unwrap();
    assert!(
        waited.is_ok(),
        "a client never reported a retry: {waited:?}"
    );
    let listener = socket.listen(1024).unwrap();
    let server = TestServer::start_on(server_config(), listener);
    for (client, out, mut child, reader) in running {
        let (status, stderr, stdout) = tokio::task::spawn_blocking(move || {
            let mut stdout = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut stdout)
                .unwrap();
            (child.wait().unwrap(), reader.join().unwrap(), stdout)
        })
        .await
        .unwrap();
        assert!(status.success(), "{client:?}: {stdout}\n{stderr}");
        assert!(
            stderr.to_lowercase().contains("unavailable"),
            "{client:?}: {stderr}"
        );
        assert_eq!(read_package(&out).1["rowCount"], "18", "{client:?}");
    }
    server.stop().await.unwrap();
}
