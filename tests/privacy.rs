//! Invariant 4: no personal data sideways. The real binary runs `serve` with every log level
//! switched on (`RUST_LOG=trace`), serves extractions, a dry run and a discovery that samples
//! every row, and its whole log output is searched for the identity value and for extracted
//! values. SIGTERM then stops it cleanly.

mod support;

use support::{ServeProcess, cluster, extract, request};
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
    let server = ServeProcess::start(&[(
        "RUST_LOG",
        "trace,tokio_postgres=trace,tokio_postgres::query=trace,tokio_postgres::prepare=trace",
    )])
    .await;
    let mut client = server.client().await;
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
    // Discovery samples every demo row (alice's among them), checks inferred links by looking
    // sampled e-mail addresses up, and walks the JSON payloads.
    let mut stream = client
        .discover(dsr_connector::pb::DiscoverRequest {
            source: "demo".into(),
            sample_rows: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut proposed = 0;
    while let Some(message) = stream.message().await.unwrap() {
        proposed += usize::from(matches!(
            message.event,
            Some(dsr_connector::pb::discover_response::Event::Table(_))
        ));
    }
    assert_eq!(proposed, 6, "every demo table is proposed");
    drop(client);

    let (exit, lines) = server.terminate().await;
    let log = lines.join("\n");
    assert!(
        exit.success(),
        "SIGTERM ends the server cleanly: {exit:?}\n{log}"
    );
    assert!(log.contains("server stopped"), "{log}");
    assert!(
        log.contains("extraction finished") && log.contains("discovery finished"),
        "the extraction and the discovery were logged: {log}"
    );
    assert!(
        log.contains("hmac-sha256:"),
        "the subject is logged as its keyed hash"
    );
    assert!(lines.len() > 50, "trace logging was on");
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
    let server = ServeProcess::start(&[("DSR_LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    let mut client = server.client().await;
    let mut req = tonic::Request::new(request("email", "alice@example.com"));
    req.metadata_mut().insert(
        "x-request-id",
        tonic::metadata::MetadataValue::from_static("dsr-json-1"),
    );
    let mut stream = client.extract(req).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    drop(client);
    let (exit, lines) = server.terminate().await;
    assert!(exit.success());
    let lines: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
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
