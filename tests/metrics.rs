//! Prometheus metrics on their own listener: what an SRE scrapes after some traffic, and that
//! no identity or extracted value is ever a label.

mod support;

use support::{TestServer, config, config_text, extract, request, scrape};
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
    let server = TestServer::start_with_metrics(config(&config_text(""))).await;
    let metrics_addr = server.metrics_addr.unwrap();
    let mut client = server.client().await;

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
    server.stop().await.unwrap();
}
