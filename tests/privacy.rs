//! Invariant 4: no personal data sideways. The real binary runs `serve` with every log level
//! switched on (`RUST_LOG=trace`), serves extractions, and its whole log output is searched for
//! the identity value and for extracted values. SIGTERM then stops it cleanly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{cluster, config_text, extract, request};
use tonic::Code;

/// Values that the extraction returns and that must never appear in a log line.
const PERSONAL: &[&str] = &[
    "alice@example.com",
    "Alice Liddell",
    "+44 20 7946 0958",
    "1 Rabbit Hole",
    "Where is my clock?",
    "a1b2c3d4-0000-4000-8000-000000000001",
    "not-a-number-123",
    "31/02/2010",
    "14/03/2009",
    "203.0.113.7",
];

#[tokio::test]
async fn logs_hold_no_identity_or_extracted_value_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config_text("")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env(
            "RUST_LOG",
            "trace,tokio_postgres=trace,tokio_postgres::query=trace,tokio_postgres::prepare=trace",
        )
        .env("DSR_DEMO_PASSWORD", cluster().password())
        .env("DSR_SUBJECT_KEY", support::SUBJECT_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Read the log on a thread; learn the port from the "listening" line.
    let stderr = child.stderr.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains("dsr-connector listening") {
                let addr = line.rsplit("local=").next().unwrap().trim().to_owned();
                let _ = port_tx.send(addr);
                sent = true;
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let addr =
        tokio::task::spawn_blocking(move || port_rx.recv().expect("the server never listened"))
            .await
            .unwrap();
    let addr = addr
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_owned();

    let mut client = dsr_connector::pb::dsr_connector_client::DsrConnectorClient::connect(format!(
        "http://{addr}"
    ))
    .await
    .unwrap();
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.manifest.as_ref().unwrap().row_count, 18);
    // Failures are logged too; they must not carry the value either.
    let x = extract(&mut client, request("customer_id", "not-a-number-123")).await;
    assert_eq!(x.code(), Code::InvalidArgument);
    let mut req = request("email", "alice@example.com");
    req.source = "nope".into();
    assert_eq!(extract(&mut client, req).await.code(), Code::NotFound);
    // A dry run walks every value, coerces legacy dates (one is rejected) and scans JSON.
    let mut stream = client
        .validate(dsr_connector::pb::ValidateRequest {
            source: "demo".into(),
            subject: Some(dsr_connector::pb::Identity {
                kind: "email".into(),
                value: "alice@example.com".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    drop(client);

    // Wait off the runtime, so that the client's connection task keeps running.
    let (exit, log) = tokio::task::spawn_blocking(move || {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        (child.wait().unwrap(), reader.join().unwrap())
    })
    .await
    .unwrap();
    assert!(
        exit.success(),
        "SIGTERM ends the server cleanly: {exit:?}\n{log}"
    );
    assert!(log.contains("server stopped"), "{log}");
    assert!(
        log.contains("extraction finished"),
        "the extraction was logged: {log}"
    );
    assert!(
        log.contains("hmac-sha256:"),
        "the subject is logged as its keyed hash"
    );
    assert!(log.lines().count() > 50, "trace logging was on");
    for value in PERSONAL {
        assert!(!log.contains(value), "the log holds '{value}'");
    }
    assert!(
        !log.contains(cluster().password()),
        "the log holds the database password"
    );
    assert!(
        !log.contains(support::SUBJECT_KEY),
        "the log holds the subject key"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_call_context() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config_text("")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("DSR_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("DSR_DEMO_PASSWORD", cluster().password())
        .env("DSR_SUBJECT_KEY", support::SUBJECT_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if value["fields"]["message"] == "dsr-connector listening" {
                let _ = addr_tx.send(value["fields"]["local"].as_str().unwrap().to_owned());
            }
            lines.push(value);
        }
        lines
    });
    let addr =
        tokio::task::spawn_blocking(move || addr_rx.recv().expect("the server never listened"))
            .await
            .unwrap();
    let mut client = dsr_connector::pb::dsr_connector_client::DsrConnectorClient::connect(format!(
        "http://{addr}"
    ))
    .await
    .unwrap();
    let mut req = tonic::Request::new(request("email", "alice@example.com"));
    req.metadata_mut().insert(
        "x-request-id",
        tonic::metadata::MetadataValue::from_static("dsr-json-1"),
    );
    let mut stream = client.extract(req).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    drop(client);
    let (exit, lines) = tokio::task::spawn_blocking(move || {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        (child.wait().unwrap(), reader.join().unwrap())
    })
    .await
    .unwrap();
    assert!(exit.success());
    let finished = lines
        .iter()
        .find(|l| l["fields"]["message"] == "extraction finished")
        .expect("the extraction was logged");
    assert_eq!(finished["span"]["request_id"], "dsr-json-1", "{finished}");
    assert_eq!(finished["span"]["caller"], "anonymous", "{finished}");
    let all = serde_json::to_string(&lines).unwrap();
    for value in PERSONAL {
        assert!(!all.contains(value), "the log holds '{value}'");
    }
}
