//! Traces over OTLP: the real binary exports to an in-process OTLP/gRPC receiver (the protocol
//! Jaeger receives on 4317). The server span of an Extract is the child of the caller's
//! `traceparent`, every compliance hook is its own span, and no identity or extracted value is
//! in any span.

mod support;

use opentelemetry_proto::tonic::trace::v1::Span;
use support::otlp::attribute;
use support::{ServeProcess, extract, request};
use tonic::Code;
use tonic::metadata::MetadataValue;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN_ID: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_spans_reach_an_otlp_receiver_as_children_of_the_caller() {
    let (receiver, otlp_addr) = support::otlp::start().await;
    let endpoint = format!("http://{otlp_addr}");
    let server = ServeProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "dsr-connector-test"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let mut client = server.client().await;
    let mut req = tonic::Request::new(request("email", "alice@example.com"));
    req.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")).unwrap(),
    );
    let mut stream = client.extract(req).await.unwrap().into_inner();
    let mut manifest = None;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(dsr_connector::pb::extract_response::Event::Manifest(m)) = message.event {
            manifest = Some(m);
        }
    }
    assert_eq!(manifest.unwrap().row_count, 18);
    let bad = extract(&mut client, request("customer_id", "not-a-number")).await;
    assert_eq!(bad.code(), Code::InvalidArgument);
    drop(client);

    // SIGTERM flushes the batched spans.
    let (exit, lines) = server.terminate().await;
    let log = lines.join("\n");
    assert!(exit.success(), "{log}");

    // Log lines inside the call carry its request id and trace id.
    let finished = log
        .lines()
        .find(|l| l.contains("extraction finished") && l.contains(TRACE_ID))
        .unwrap_or_else(|| panic!("no log line with the trace id:\n{log}"));
    assert!(finished.contains("request_id="), "{finished}");

    let spans = receiver.spans.lock().unwrap().clone();
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let server = spans
        .iter()
        .find(|s| s.name == "dsr.v1.DsrConnectorService/Extract" && s.trace_id == trace_id)
        .unwrap_or_else(|| {
            panic!(
                "no server span in the caller's trace; got {:?}\n{log}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(server.parent_span_id, hex::decode(PARENT_SPAN_ID).unwrap());
    assert_eq!(
        attribute(server, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert!(
        attribute(server, "dsr.subject_id")
            .unwrap()
            .starts_with("hmac-sha256:")
    );

    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id && s.parent_span_id == server.span_id)
        .collect();
    let named = |name: &str| children.iter().filter(|s| s.name == name).count();
    assert_eq!(named("compliance.extraction_start"), 1);
    assert_eq!(named("compliance.circuit_breaker"), 1);
    assert_eq!(named("compliance.row_count_verify"), 6);
    assert_eq!(named("compliance.pii_mapping_validate"), 1);
    assert_eq!(named("compliance.extraction_end"), 1);
    let queries: Vec<&&Span> = children
        .iter()
        .filter(|s| s.name.starts_with("SELECT "))
        .collect();
    assert_eq!(queries.len(), 6, "one db.query span per table");
    let items = queries
        .iter()
        .find(|s| attribute(s, "db.collection.name").as_deref() == Some("order_items"))
        .unwrap();
    assert_eq!(
        attribute(items, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(attribute(items, "db.namespace").as_deref(), Some("shop"));
    assert_eq!(
        attribute(items, "db.operation.name").as_deref(),
        Some("SELECT")
    );
    assert_eq!(
        attribute(items, "db.response.returned_rows").as_deref(),
        Some("5")
    );
    assert!(attribute(items, "db.query.text").unwrap().contains("$1"));
    // legacy_accounts returns 4 rows, of which one is rejected by its coercion rule: the query
    // span says what the database returned, and the rejected row apart.
    let legacy = queries
        .iter()
        .find(|s| attribute(s, "db.collection.name").as_deref() == Some("legacy_accounts"))
        .unwrap();
    assert_eq!(
        attribute(legacy, "db.response.returned_rows").as_deref(),
        Some("4")
    );
    assert_eq!(attribute(legacy, "dsr.rows.rejected").as_deref(), Some("1"));
    let verify = children
        .iter()
        .find(|s| {
            s.name == "compliance.row_count_verify"
                && attribute(s, "dsr.table").as_deref() == Some("events")
        })
        .unwrap();
    assert_eq!(attribute(verify, "dsr.ok").as_deref(), Some("true"));
    let end = children
        .iter()
        .find(|s| s.name == "compliance.extraction_end")
        .unwrap();
    assert_eq!(attribute(end, "dsr.rows").as_deref(), Some("18"));

    // The failed call has its own server span with its status.
    let failed = spans
        .iter()
        .find(|s| s.name == "dsr.v1.DsrConnectorService/Extract" && s.trace_id != trace_id)
        .expect("a span for the failed call");
    assert_eq!(
        attribute(failed, "rpc.grpc.status_code").as_deref(),
        Some("3")
    );

    let all = format!("{spans:?}");
    for value in [
        "alice@example.com",
        "Alice Liddell",
        "not-a-number",
        "Rabbit Hole",
    ] {
        assert!(!all.contains(value), "a span holds '{value}'");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_spans_name_each_table_and_its_verification_and_hold_no_value() {
    let (receiver, otlp_addr) = support::otlp::start().await;
    let endpoint = format!("http://{otlp_addr}");
    let server = ServeProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "dsr-connector-test"),
    ])
    .await;
    let mut client = server.client().await;
    // A preview: the whole erasure, rolled back, so the other tests' rows stay.
    let mut stream = client
        .erase(dsr_connector::pb::EraseRequest {
            source: "demo".into(),
            subject: Some(dsr_connector::pb::Identity {
                kind: "email".into(),
                value: "alice@example.com".into(),
            }),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    drop(client);
    let (exit, lines) = server.terminate().await;
    assert!(exit.success(), "{}", lines.join("\n"));

    let spans = receiver.spans.lock().unwrap().clone();
    let server = spans
        .iter()
        .find(|s| s.name == "dsr.v1.DsrConnectorService/Erase")
        .expect("a server span for Erase");
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == server.trace_id && s.parent_span_id == server.span_id)
        .collect();
    let hooks: Vec<&&Span> = children
        .iter()
        .filter(|s| s.name == "compliance.erase")
        .collect();
    assert_eq!(hooks.len(), 6, "{children:#?}");
    let customers = hooks
        .iter()
        .find(|s| attribute(s, "dsr.table").as_deref() == Some("customers"))
        .unwrap();
    assert_eq!(
        attribute(customers, "dsr.action").as_deref(),
        Some("delete")
    );
    assert_eq!(
        attribute(customers, "dsr.rows.changed").as_deref(),
        Some("1")
    );
    let delete = spans
        .iter()
        .find(|s| s.name == "DELETE customers" && s.parent_span_id == customers.span_id)
        .expect("the DELETE's client span under its hook");
    assert_eq!(
        attribute(delete, "db.operation.name").as_deref(),
        Some("DELETE")
    );
    let verified: Vec<&&Span> = children
        .iter()
        .filter(|s| s.name == "compliance.erase_verify")
        .collect();
    assert_eq!(verified.len(), 6);
    assert!(
        verified
            .iter()
            .all(|s| attribute(s, "dsr.ok").as_deref() == Some("true"))
    );
    let all = format!("{spans:?}");
    for value in ["alice@example.com", "Alice Liddell", "Rabbit Hole"] {
        assert!(!all.contains(value), "a span holds '{value}'");
    }
}
