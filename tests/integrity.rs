//! Invariant 7: truthful endings. When a table's streamed rows differ from `COUNT(*)` in the
//! same snapshot, the stream ends with DATA_LOSS and no manifest.
//!
//! A consistent snapshot cannot produce a mismatch on its own, so the test maps a view whose
//! rows depend on which statement reads them: a volatile gate lets rows through only in the
//! first statement of the transaction that evaluates it (the COUNT, which goes out just ahead
//! of the table's first portal fetch), not in the SELECT.

mod support;

use std::sync::OnceLock;

use support::{TestServer, config, config_text, extract, request};
use tonic::Code;

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        support::run_sql_blocking(support::SHIFTING_VIEW_SQL);
    });
}

#[tokio::test]
async fn a_count_mismatch_ends_with_data_loss_and_no_manifest() {
    setup();
    let text = config_text(
        r#"
[[sources.tables]]
name = "shifting_events"
reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }
columns = { id = "not_pii", customer_id = "identifier.customer_id" }
"#,
    );
    let server = TestServer::start(config(&text)).await;
    let mut req = request("email", "alice@example.com");
    req.tables = vec!["customers".into(), "shifting_events".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::DataLoss, "{}", x.message());
    assert!(
        x.message().contains("shifting_events")
            && x.message().contains("0 rows were streamed")
            && x.message().contains("COUNT(*) in the same snapshot is 4"),
        "{}",
        x.message()
    );
    assert!(x.manifest.is_none(), "no manifest after a count mismatch");
    assert_eq!(x.rows("shifting_events").len(), 0);
    assert!(
        !x.completed.iter().any(|c| c.table == "shifting_events"),
        "the table is never reported complete"
    );

    // The other tables of the same source still extract.
    let mut req = request("email", "alice@example.com");
    req.tables = vec!["customers".into(), "orders".into()];
    let x = extract(&mut server.client().await, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    server.stop().await.unwrap();
}
