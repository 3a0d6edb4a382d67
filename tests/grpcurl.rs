//! grpcurl 1.8.6, the real binary, against a running server: reflection (v1alpha), describe,
//! a streaming Extract, health, and an error status.

mod support;

use std::process::{Command, Output};

use support::{TestServer, venv_tool};

async fn grpcurl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(venv_tool("grpcurl"))
            .args(&args)
            .output()
            .expect("grpcurl runs")
    })
    .await
    .unwrap()
}

/// grpcurl's arguments: `-plaintext`, the flags before "@", the server address, then the
/// words after "@".
fn args(server: &TestServer, rest: &[&str]) -> Vec<String> {
    let mut all = vec!["-plaintext".to_owned()];
    all.extend(
        rest.iter()
            .take_while(|a| **a != "@")
            .map(|a| a.to_string()),
    );
    all.push(server.addr.to_string());
    all.extend(
        rest.iter()
            .skip_while(|a| **a != "@")
            .skip(1)
            .map(|a| a.to_string()),
    );
    all
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "grpcurl failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn grpcurl_lists_and_describes_the_service_through_reflection() {
    let server = TestServer::demo().await;
    let list = stdout(&grpcurl(args(&server, &["@", "list"])).await);
    assert!(
        list.lines().any(|l| l == "dsr.v1.DsrConnectorService"),
        "{list}"
    );
    assert!(list.lines().any(|l| l == "grpc.health.v1.Health"), "{list}");
    // Both reflections are served, and listed.
    for reflection in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(list.lines().any(|l| l == reflection), "{list}");
    }

    let describe = stdout(
        &grpcurl(args(
            &server,
            &["@", "describe", "dsr.v1.DsrConnectorService"],
        ))
        .await,
    );
    assert!(
        describe.contains(
            "rpc Extract ( .dsr.v1.ExtractRequest ) returns ( stream .dsr.v1.ExtractResponse )"
        ),
        "{describe}"
    );
    assert!(describe.contains("rpc Validate"), "{describe}");

    let message = stdout(&grpcurl(args(&server, &["@", "describe", "dsr.v1.Value"])).await);
    assert!(
        message.contains("decimal_value") && message.contains("timestamp_value"),
        "{message}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpcurl_streams_an_extraction() {
    let server = TestServer::demo().await;
    let request = r#"{"source": "demo", "subject": {"kind": "email", "value": "alice@example.com"}, "request_id": "grpcurl-1", "batch_size": 2}"#;
    let out = stdout(
        &grpcurl(args(
            &server,
            &[
                "-max-time",
                "60",
                "-d",
                request,
                "@",
                "dsr.v1.DsrConnectorService/Extract",
            ],
        ))
        .await,
    );
    let messages: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("grpcurl prints one JSON object per message");
    assert!(messages.first().unwrap().get("started").is_some());
    let manifest = messages
        .last()
        .unwrap()
        .get("manifest")
        .expect("manifest last");
    assert_eq!(manifest["rowCount"], "18");
    assert_eq!(manifest["requestId"], "grpcurl-1");
    let batches = messages.iter().filter(|m| m.get("batch").is_some()).count();
    assert!(
        batches >= 8,
        "batch_size 2 gives many batches, got {batches}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpcurl_sees_health_and_error_statuses() {
    let server = TestServer::demo().await;
    let health = stdout(&grpcurl(args(&server, &["@", "grpc.health.v1.Health/Check"])).await);
    assert!(health.contains("SERVING"), "{health}");

    let request = r#"{"source": "nope", "subject": {"kind": "email", "value": "a@b.c"}}"#;
    let out = grpcurl(args(
        &server,
        &[
            "-max-time",
            "30",
            "-d",
            request,
            "@",
            "dsr.v1.DsrConnectorService/Extract",
        ],
    ))
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NotFound") && stderr.contains("unknown source 'nope'"),
        "{stderr}"
    );
    server.stop().await.unwrap();
}
