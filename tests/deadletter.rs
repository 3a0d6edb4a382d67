//! The dead-letter queue: a row rejected under `reject_row` and an extraction that failed on
//! the data's side each leave a record with its category, table, column, primary key, rule
//! and ids, never a value; the caller's own mistakes leave none; `dsr-connector dead-letters
//! list` reads them back by category and time.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use support::{config, config_text, eventually, extract, request};
use tonic::Code;

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Rows of this view pass only in the first statement that reads them (the COUNT), so
        // the streamed rows never match the count: an integrity failure.
        support::run_sql_blocking(support::SHIFTING_VIEW_SQL);
    });
}

fn list(path: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["dead-letters", "list"])
        .arg(path)
        .args(args)
        .output()
        .unwrap()
}

fn letters(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn rejected_rows_and_failed_extractions_become_dead_letters_without_values() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead-letters.jsonl");
    let text = format!(
        "{}\n[server.dead_letters]\npath = {:?}\n",
        config_text(
            r#"
[[sources.tables]]
name = "shifting_events"
reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }
columns = { id = "not_pii", customer_id = "identifier.customer_id" }
"#
        ),
        path.display().to_string()
    );
    let server = support::TestServer::start(config(&text)).await;
    let mut client = server.client().await;

    // alice has one legacy row with an impossible date: left out under reject_row.
    let mut req = request("email", "alice@example.com");
    req.tables = vec!["legacy_accounts".into()];
    req.request_id = "dsr-dl-1".into();
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let manifest = x.manifest.unwrap();

    // A count mismatch: an integrity failure.
    let mut req = request("email", "alice@example.com");
    req.tables = vec!["shifting_events".into()];
    assert_eq!(extract(&mut client, req).await.code(), Code::DataLoss);

    // The caller's own mistake is not a dead letter.
    let mut req = request("email", "alice@example.com");
    req.source = "nope".into();
    assert_eq!(extract(&mut client, req).await.code(), Code::NotFound);

    assert!(eventually(50, || async { letters(&path).len() >= 2 }).await);
    server.stop().await.unwrap();
    let all = letters(&path);
    assert_eq!(all.len(), 2, "{all:#?}");
    let coercion = &all[0];
    assert_eq!(coercion["category"], "coercion");
    assert_eq!(coercion["table"], "legacy_accounts");
    assert_eq!(coercion["column"], "signup_date");
    assert_eq!(coercion["rule"], "date");
    assert!(
        coercion["detail"]
            .as_str()
            .unwrap()
            .contains("unparseable_date")
    );
    assert!(coercion["primary_key"].as_str().unwrap().starts_with("id="));
    assert_eq!(coercion["request_id"], "dsr-dl-1");
    assert_eq!(coercion["extraction_id"], manifest.extraction_id.as_str());
    assert_eq!(coercion["subject_id"], manifest.subject_id.as_str());
    let integrity = &all[1];
    assert_eq!(integrity["category"], "integrity");
    assert_eq!(integrity["rule"], "count_mismatch");
    let text = std::fs::read_to_string(&path).unwrap();
    for value in ["31/02/2010", "alice@example.com", "Alice Liddell"] {
        assert!(!text.contains(value), "{value} in the dead letters");
    }

    let out = list(&path, &["--category", "coercion"]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(printed.contains("legacy_accounts"));
    let out = list(&path, &["--since", "2999-01-01T00:00:00Z"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 0);
    let out = list(&path, &["--category", "misc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("coercion"));
    // The README's command, with this queue for the deployment's.
    for command in support::readme_commands_with("dead-letters list /var/lib") {
        let out = support::run_readme_command(
            &command,
            &[(
                "/var/lib/dsr-connector/dead-letters.jsonl",
                path.display().to_string(),
            )],
            &[],
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(printed.lines().count(), 1, "{printed}");
        assert!(printed.contains("legacy_accounts"));
    }
}
