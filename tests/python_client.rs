//! A Python grpcio client, with stubs generated from the proto by grpc_tools, against a
//! running server: what an orchestrator written in Python sees.

mod support;

use std::path::Path;
use std::process::Command;

use support::{TestServer, venv_tool};

/// Generates the Python stubs into a temporary directory.
fn generate_stubs() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(venv_tool("python"))
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", root.join("proto").display()))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg(root.join("proto/dsr/v1/dsr.proto"))
        .status()
        .unwrap();
    assert!(status.success(), "grpc_tools.protoc failed");
    out
}

async fn run_client(
    server: &TestServer,
    stubs: &Path,
    source: &str,
    kind: &str,
    value: &str,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/extract.py");
    let mut cmd = Command::new(venv_tool("python"));
    cmd.arg(script)
        .arg(stubs)
        .arg(server.addr.to_string())
        .args([source, kind, value]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn python_grpcio_client_extracts_and_sees_statuses() {
    let stubs = generate_stubs();
    let server = TestServer::demo().await;

    let ok = run_client(&server, stubs.path(), "demo", "email", "alice@example.com").await;
    assert_eq!(ok["code"], "OK", "{ok}");
    assert_eq!(ok["row_count"], 18, "{ok}");
    assert_eq!(ok["verified"], true);
    assert_eq!(ok["typed"], true);
    assert_eq!(ok["tables"]["order_items"], 5);
    assert_eq!(ok["tables"]["events"], 4);
    assert_eq!(ok["order"][0], "started");
    assert_eq!(
        ok["request_id"], "py-request-1",
        "the request id comes back: {ok}"
    );
    assert_eq!(ok["order"].as_array().unwrap().last().unwrap(), "manifest");
    assert_eq!(
        ok["subject_id"],
        dsr_connector::subject::subject_id(
            support::SUBJECT_KEY.as_bytes(),
            "email",
            "alice@example.com"
        )
    );

    let missing = run_client(&server, stubs.path(), "nope", "email", "alice@example.com").await;
    assert_eq!(missing["code"], "NOT_FOUND", "{missing}");

    let bad = run_client(&server, stubs.path(), "demo", "email", "").await;
    assert_eq!(bad["code"], "INVALID_ARGUMENT", "{bad}");
    server.stop().await.unwrap();
}
