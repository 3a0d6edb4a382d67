//! gRPC compression of responses, negotiated: a client that accepts an encoding the server
//! offers (`grpc-accept-encoding`) gets its stream compressed, a client that accepts none
//! gets it plain, and `server.compression = []` turns it off. By default only zstd is
//! offered, so that a default grpcio or grpc-js client (which accepts gzip) is served plain. What crosses the wire is counted by a
//! relay between client and server, so that each client is shown to have decoded a stream
//! that really was compressed: the Rust client, `dsr-connector extract --compress`, and the
//! Python and Node examples, and grpcurl with `-H 'grpc-accept-encoding: gzip'`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::extract_response::Event;
use support::{Relay, TestServer, config, config_text, request, venv_tool, with_server_block};
use tonic::codec::CompressionEncoding;

/// Rows of the subject below: enough JSON that compression shows.
const ROWS: usize = 2000;
const SUBJECT: &str = "wire@example.com";

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        support::run_sql_blocking(&format!(
            r#"
            CREATE TABLE wire_events (id int PRIMARY KEY, owner text NOT NULL, payload jsonb);
            CREATE INDEX ON wire_events (owner);
            INSERT INTO wire_events
              SELECT g, '{SUBJECT}', jsonb_build_object(
                  'page', '/products/' || (g % 300) || '/details', 'session', md5(g::text),
                  'device', jsonb_build_object('os', 'Android 14', 'browser', 'Chrome 131.0'),
                  'cart', jsonb_build_object('items', g % 7, 'currency', 'GBP'))
              FROM generate_series(1, {ROWS}) g;
            ANALYZE wire_events;
            "#
        ));
    });
}

const TABLE: &str = r#"
[[sources.tables]]
name = "wire_events"
identity = { kind = "email", column = "owner" }
columns = { id = "not_pii", owner = "contact.email", payload = "not_pii" }
"#;

/// A server with the wire table, and `server_block` added to `[server]`.
async fn start_server(server_block: &str) -> TestServer {
    setup();
    TestServer::start(config(&with_server_block(
        &config_text(TABLE),
        server_block,
    )))
    .await
}

/// One Extract of the subject through `relay`, accepting `accept`: the response's
/// `grpc-encoding`, the rows received, and the bytes the server sent.
async fn extract_through(
    relay: &Relay,
    accept: &[CompressionEncoding],
) -> (Option<String>, usize, u64) {
    relay.take_bytes_down();
    let mut client = DsrConnectorServiceClient::connect(format!("http://{}", relay.addr))
        .await
        .unwrap();
    for encoding in accept {
        client = client.accept_compressed(*encoding);
    }
    let response = client
        .extract(request("email", SUBJECT))
        .await
        .expect("the call is accepted");
    let encoding = response
        .metadata()
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut stream = response.into_inner();
    let (mut rows, mut manifest) = (0, None);
    while let Some(message) = stream.message().await.expect("the stream decodes") {
        match message.event {
            Some(Event::Batch(batch)) if batch.table == "wire_events" => rows += batch.rows.len(),
            Some(Event::Manifest(m)) => manifest = Some(m),
            _ => {}
        }
    }
    assert!(manifest.is_some(), "the stream ends with its manifest");
    drop(stream);
    drop(client);
    (encoding, rows, relay.take_bytes_down())
}

/// Both encodings offered.
const BOTH: &str = r#"compression = ["zstd", "gzip"]"#;

#[tokio::test]
async fn by_default_zstd_alone_is_offered_so_a_gzip_client_is_served_plain() {
    let server = start_server("").await;
    let relay = Relay::start(server.addr).await;
    let (_, _, plain) = extract_through(&relay, &[]).await;
    let (encoding, rows, bytes) = extract_through(&relay, &[CompressionEncoding::Gzip]).await;
    assert_eq!(encoding, None, "gzip is not offered by default");
    assert_eq!(rows, ROWS);
    assert!(
        bytes * 10 > plain * 9,
        "{bytes} bytes against {plain} plain"
    );
    let accept = [CompressionEncoding::Gzip, CompressionEncoding::Zstd];
    let (encoding, rows, bytes) = extract_through(&relay, &accept).await;
    assert_eq!(encoding.as_deref(), Some("zstd"));
    assert_eq!(rows, ROWS);
    assert!(
        bytes * 3 < plain,
        "zstd: {bytes} bytes against {plain} plain"
    );

    // The Python example, as grpcio is by default (accepting gzip): served plain.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("python");
    let mut command = Command::new(venv_tool("python"));
    command.arg(root().join("examples/python/dsr_extract.py"));
    example_args(&mut command, &relay.addr.to_string(), &out);
    run(command).await;
    let bytes = relay.take_bytes_down();
    assert_eq!(package_rows(&out), ROWS);
    assert!(bytes * 10 > plain * 9, "python: {bytes} of {plain}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn compression_is_negotiated_and_off_when_a_client_does_not_accept_it() {
    let server = start_server(BOTH).await;
    let relay = Relay::start(server.addr).await;
    let (encoding, rows, plain) = extract_through(&relay, &[]).await;
    assert_eq!(
        encoding, None,
        "a client that accepts nothing gets it plain"
    );
    assert_eq!(rows, ROWS);
    for (accept, expected) in [
        (vec![CompressionEncoding::Gzip], "gzip"),
        (vec![CompressionEncoding::Zstd], "zstd"),
    ] {
        let (encoding, rows, bytes) = extract_through(&relay, &accept).await;
        assert_eq!(encoding.as_deref(), Some(expected));
        assert_eq!(rows, ROWS, "{expected}: every row decoded");
        assert!(
            bytes * 3 < plain,
            "{expected}: {bytes} bytes on the wire against {plain} plain"
        );
    }
    server.stop().await.unwrap();

    // Turned off: a client that accepts both still gets it plain.
    let server = start_server("compression = []").await;
    let relay = Relay::start(server.addr).await;
    let accept = [CompressionEncoding::Gzip, CompressionEncoding::Zstd];
    let (encoding, rows, bytes) = extract_through(&relay, &accept).await;
    assert_eq!(encoding, None, "compression = [] sends it plain");
    assert_eq!(rows, ROWS);
    assert!(
        bytes * 10 > plain * 9,
        "{bytes} bytes against {plain} plain"
    );
    server.stop().await.unwrap();

    // Only gzip offered: a client that accepts only zstd gets it plain.
    let server = start_server(r#"compression = ["gzip"]"#).await;
    let relay = Relay::start(server.addr).await;
    let (encoding, _, _) = extract_through(&relay, &[CompressionEncoding::Zstd]).await;
    assert_eq!(encoding, None);
    let (encoding, _, _) = extract_through(&relay, &accept).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    server.stop().await.unwrap();
}

#[test]
fn an_unknown_compression_is_refused_by_name() {
    let text = with_server_block(&config_text(""), r#"compression = ["brotli"]"#);
    let error = dsr_connector::demo::config(support::cluster(), &text, support::SUBJECT_KEY)
        .expect_err("refused")
        .to_string();
    assert!(error.contains("brotli"), "{error}");
    assert!(error.contains("compression"), "{error}");
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

async fn run(mut command: Command) -> Output {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The arguments every example client takes, for the subject.
fn example_args(command: &mut Command, addr: &str, out: &Path) {
    command
        .args(["--addr", addr, "--source", "demo", "--kind", "email"])
        .args(["--value", SUBJECT])
        .arg("--out")
        .arg(out);
}

/// The rows of `wire_events` in a written package.
fn package_rows(out: &Path) -> usize {
    std::fs::read_to_string(out.join("wire_events.jsonl"))
        .unwrap()
        .lines()
        .count()
}

#[tokio::test]
async fn every_client_decodes_a_compressed_stream() {
    let server = start_server(BOTH).await;
    let relay = Relay::start(server.addr).await;
    let (_, _, plain) = extract_through(&relay, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = relay.addr.to_string();

    // The service's own client, asking for each encoding.
    for compress in ["gzip", "zstd"] {
        let out = dir.path().join(format!("rust-{compress}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_dsr-connector"));
        command.arg("extract");
        example_args(&mut command, &format!("http://{addr}"), &out);
        command.args(["--compress", compress, "--quiet"]);
        run(command).await;
        let bytes = relay.take_bytes_down();
        assert_eq!(package_rows(&out), ROWS, "{compress}");
        assert!(
            bytes * 3 < plain,
            "extract --compress {compress}: {bytes} of {plain}"
        );
    }

    // The Python and Node examples accept gzip as their gRPC libraries do by default, and
    // are served it where the server offers it.
    let python = {
        let mut c = Command::new(venv_tool("python"));
        c.arg(root().join("examples/python/dsr_extract.py"));
        ("python", c)
    };
    assert!(
        root()
            .join("examples/node/node_modules/@grpc/grpc-js")
            .exists(),
        "the Node example's packages are missing: run scripts/prereqs.sh --clients"
    );
    let node = {
        let mut c = Command::new("node");
        c.arg(root().join("examples/node/dsr_extract.js"));
        ("node", c)
    };
    for (name, mut command) in [python, node] {
        let out = dir.path().join(name);
        example_args(&mut command, &addr, &out);
        run(command).await;
        let bytes = relay.take_bytes_down();
        assert_eq!(package_rows(&out), ROWS, "{name}");
        assert!(bytes * 3 < plain, "{name}: {bytes} of {plain}");
    }

    // grpcurl asks for no encoding by itself (and is served plain); with the header set by
    // hand it is served gzip, and decodes it.
    let mut command = Command::new(venv_tool("grpcurl"));
    command
        .args(["-plaintext", "-H", "grpc-accept-encoding: gzip", "-d"])
        .arg(format!(
            r#"{{"source": "demo", "subject": {{"kind": "email", "value": "{SUBJECT}"}}}}"#
        ))
        .arg(&addr)
        .arg("dsr.v1.DsrConnectorService/Extract");
    let output = run(command).await;
    let bytes = relay.take_bytes_down();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("\"jsonValue\"").count(), ROWS);
    assert!(bytes * 3 < plain, "grpcurl: {bytes} of {plain}");
    server.stop().await.unwrap();
}
