//! Prometheus metrics on their own listener: what an SRE scrapes after some traffic, and that
//! no identity or extracted value is ever a label.

mod support;

use std::sync::Arc;

use dsr_connector::grpc;
use support::{config, config_text, extract, request, scrape};
use tokio::net::TcpListener;
use tonic::Code;

/// The value of the sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_calls_rows_and_pools_without_personal_data() {
    dsr_connector::db::tls::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grpc::run_with(
        Arc::new(config(&config_text(""))),
        listener,
        Some(metrics_listener),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut client =
        dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();

    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok);
    let mut unknown = request("email", "alice@example.com");
    unknown.source = "made-up-source-name".into();
    assert_eq!(extract(&mut client, unknown).await.code(), Code::NotFound);
    assert_eq!(
        extract(&mut client, request("email", "")).await.code(),
        Code::InvalidArgument
    );

    let text = scrape(metrics_addr).await;
    assert_eq!(
        sample(
            &text,
            r#"dsr_requests_total{rpc="Extract",source="demo",code="OK"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"dsr_requests_total{rpc="Extract",source="unknown",code="NOT_FOUND"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"dsr_requests_total{rpc="Extract",source="demo",code="INVALID_ARGUMENT"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"dsr_rows_streamed_total{source="demo",table="order_items"}"#
        ),
        5.0
    );
    assert_eq!(
        sample(
            &text,
            r#"dsr_rows_streamed_total{source="demo",table="customers"}"#
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            r#"dsr_bytes_streamed_total{source="demo",table="events"}"#
        ) > 0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"dsr_extraction_duration_seconds_count{source="demo"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"dsr_time_to_first_batch_seconds_count{source="demo"}"#
        ),
        1.0
    );
    assert!(sample(&text, r#"dsr_pool_connections{source="demo"}"#) >= 1.0);
    assert_eq!(
        sample(&text, r#"dsr_pool_max_connections{source="demo"}"#),
        10.0
    );
    assert_eq!(
        sample(&text, r#"dsr_circuit_breaker_state{source="demo"}"#),
        0.0
    );
    for value in [
        "alice",
        "Alice Liddell",
        "made-up-source-name",
        "Rabbit Hole",
    ] {
        assert!(!text.contains(value), "the metrics hold '{value}'");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
