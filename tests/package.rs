//! `dsr-connector extract`, the real binary, against a real server: the data package holds
//! exactly what the stream held, says in words what it holds, carries no identity value
//! outside the rows, and is never left half-written.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::{TestServer, config, config_text, config_with_tokens, extract, request};
use tonic::Code;

const SLOW_SUBJECT: &str = "slow-package@example.com";
const TOKEN: &str = "token-of-the-package-test-0123456789";

fn setup_slow() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        support::run_sql_blocking(&support::slow_view_sql(
            "slow_events",
            "slow_rows",
            700101,
            SLOW_SUBJECT,
            200,
        ));
    });
}

const SLOW_TABLES: &str = r#"
[[sources.tables]]
name = "slow_events"
reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }
columns = { id = "not_pii", customer_id = "identifier.customer_id" }
"#;

/// Runs `dsr-connector extract` off the runtime (the server runs on it).
async fn run(args: Vec<String>, envs: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
            .arg("extract")
            .args(args)
            .envs(envs)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The command's arguments; `value` goes in `--value` unless `extra` gives `--value-env`.
fn args(server: &TestServer, value: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let addr = format!("http://{}", server.addr);
    let mut args = vec![
        "--addr",
        &addr,
        "--source",
        "demo",
        "--kind",
        "email",
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--value-env") {
        args.extend(["--value", value]);
    }
    args.extend(extra);
    args.into_iter().map(str::to_owned).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The names in a directory.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_package_holds_what_the_stream_held_and_says_what_it_means() {
    let server = TestServer::demo().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alice");
    let output = run(
        args(
            &server,
            "alice@example.com",
            &out,
            &[
                "--request-id",
                "dsr-pkg-1",
                "--compliance-tag",
                "gdpr-art15",
            ],
        ),
        vec![],
    )
    .await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("every count verified"), "{stdout}");
    // Not a terminal: one line per table instead of bars, and never the identity.
    assert!(
        stderr.contains("customers: 1 row(s), count verified"),
        "{stderr}"
    );
    assert!(!stdout.contains("alice@") && !stderr.contains("alice@"));

    // The same request through the Rust client, to compare with.
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok);
    let started = x.started.as_ref().unwrap();
    let mut expected_files: Vec<String> = started
        .tables
        .iter()
        .map(|t| format!("{}.jsonl", t.table))
        .collect();
    expected_files.extend(["README.txt".to_owned(), "manifest.json".to_owned()]);
    expected_files.sort();
    assert_eq!(entries(&out), expected_files);
    assert_eq!(
        entries(dir.path()),
        vec!["alice"],
        "no partial directory left"
    );

    // Files hold personal data: only their owner may read them, or list the directory.
    use std::os::unix::fs::PermissionsExt;
    let dir_mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(
        dir_mode & 0o777,
        0o700,
        "the package directory is {dir_mode:o}"
    );
    for name in entries(&out) {
        let mode = std::fs::metadata(out.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is readable by others");
    }

    // Every table: one JSON object per row, the same count and the same values.
    for planned in &started.tables {
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(out.join(format!("{}.jsonl", planned.table)))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        let rows = x.rows(&planned.table);
        assert_eq!(lines.len(), rows.len(), "table {}", planned.table);
        for (line, row) in lines.iter().zip(&rows) {
            let object = line.as_object().unwrap();
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut names: Vec<&str> = planned.columns.iter().map(|c| c.name.as_str()).collect();
            names.sort();
            let mut keys_sorted = keys.clone();
            keys_sorted.sort();
            assert_eq!(keys_sorted, names);
            for (column, value) in planned.columns.iter().zip(row.iter()) {
                let json = &object[&column.name];
                match support::value_text(value) {
                    None => assert!(json.is_null()),
                    Some(_) if column.kind == dsr_connector::pb::ValueKind::Timestamp as i32 => {
                        assert!(json.as_str().unwrap().ends_with('Z'), "{json}")
                    }
                    Some(_) if column.kind == dsr_connector::pb::ValueKind::Json as i32 => {
                        let sent: serde_json::Value = match &value.kind {
                            Some(dsr_connector::pb::value::Kind::JsonValue(t)) => {
                                serde_json::from_str(t).unwrap()
                            }
                            other => panic!("{other:?}"),
                        };
                        assert_eq!(json, &sent);
                    }
                    Some(text) => {
                        let rendered = match json {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        assert_eq!(rendered, text, "{}.{}", planned.table, column.name);
                    }
                }
            }
        }
    }
    // Typed: a number stays a number, an exact decimal stays exact text.
    let customer: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("customers.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(customer["id"], 1);
    assert_eq!(customer["loyalty_points"], "1250.50");
    assert_eq!(customer["email"], "alice@example.com");

    // manifest.json is the manifest, in protobuf's JSON form.
    let manifest = x.manifest.as_ref().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(json["subjectId"], manifest.subject_id.as_str());
    assert_eq!(json["rowCount"], manifest.row_count.to_string());
    assert_eq!(json["requestId"], "dsr-pkg-1");
    assert_eq!(json["complianceTag"], "gdpr-art15");
    assert_eq!(
        json["piiFields"].as_array().unwrap().len(),
        manifest.pii_fields.len()
    );
    let counts: BTreeMap<String, String> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["verified"], true);
            (
                t["table"].as_str().unwrap().to_owned(),
                t["rowCount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for t in &manifest.tables {
        assert_eq!(counts[&t.table], t.row_count.to_string());
    }

    // README.txt explains, for the data subject, and holds no identity value.
    let readme = std::fs::read_to_string(out.join("README.txt")).unwrap();
    for planned in &started.tables {
        assert!(
            readme.contains(&format!("{}.jsonl", planned.table)),
            "{readme}"
        );
        assert!(readme.contains(&planned.description), "{readme}");
    }
    assert!(
        readme.contains("contact.email: E-mail addresses."),
        "{readme}"
    );
    assert!(
        readme.contains("events.payload.contact.email  contact.email"),
        "{readme}"
    );
    assert!(
        readme.contains("could not be read as declared"),
        "rejected legacy rows: {readme}"
    );
    assert!(readme.contains(json["extractionId"].as_str().unwrap()));
    assert!(
        !readme.contains("alice@") && !readme.contains("Alice"),
        "{readme}"
    );

    // A package is never overwritten.
    let again = run(args(&server, "alice@example.com", &out, &[]), vec![]).await;
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(entries(&out), expected_files);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_extraction_leaves_nothing_behind() {
    setup_slow();
    let server = TestServer::start(config(&config_text(SLOW_TABLES))).await;
    let dir = tempfile::tempdir().unwrap();

    // Mid-stream: the deadline passes while the slow table is read (200 rows at 20 ms),
    // after the plan and the table's files were written.
    let out = dir.path().join("slow");
    let output = run(
        args(&server, SLOW_SUBJECT, &out, &["--deadline", "1s"]),
        vec![],
    )
    .await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("DeadlineExceeded"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!stderr.contains(SLOW_SUBJECT), "{stderr}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    // At the call: an unknown source.
    let mut bad = args(&server, "alice@example.com", &out, &[]);
    assert_eq!(bad[2], "--source");
    bad[3] = "nope".into();
    let output = run(bad, vec![]).await;
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("NotFound"),
        "{}",
        text(&output.stderr)
    );
    assert!(entries(dir.path()).is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_token_comes_from_the_environment() {
    let server = TestServer::start(config_with_tokens(
        &config_text(""),
        &[("orchestrator", TOKEN, "sources = [\"demo\"]")],
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pkg");

    let refused = run(args(&server, "bob@example.com", &out, &[]), vec![]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("Unauthenticated"),
        "{}",
        text(&refused.stderr)
    );
    assert!(entries(dir.path()).is_empty());

    let output = run(
        args(
            &server,
            "",
            &out,
            &[
                "--token-env",
                "PKG_TOKEN",
                "--value-env",
                "PKG_VALUE",
                "--quiet",
            ],
        ),
        vec![
            ("PKG_TOKEN", TOKEN.to_owned()),
            ("PKG_VALUE", "bob@example.com".to_owned()),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        output.stderr.is_empty(),
        "--quiet: {}",
        text(&output.stderr)
    );
    assert!(!text(&output.stdout).contains(TOKEN));
    assert!(out.join("manifest.json").exists());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn on_a_terminal_each_table_gets_a_progress_bar_against_its_count() {
    let server = TestServer::demo().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tty");
    // `script` runs the command on a pseudo-terminal, as an operator's shell would.
    let command = std::iter::once(env!("CARGO_BIN_EXE_dsr-connector").to_owned())
        .chain(std::iter::once("extract".to_owned()))
        .chain(args(&server, "alice@example.com", &out, &[]))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qefc", &command, "/dev/null"])
            .env("TERM", "xterm")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = text(&output.stdout);
    assert!(output.status.success(), "{shown}");
    for (table, rows) in [("customers", 1), ("order_items", 5), ("events", 4)] {
        assert!(
            shown.contains(table) && shown.contains(&format!("{rows}/{rows} rows")),
            "no finished bar for {table}: {shown:?}"
        );
    }
    // Bars, not the plain lines a pipe gets.
    assert!(!shown.contains("customers: 1 row(s)"), "{shown:?}");
    assert!(out.join("manifest.json").exists());
    server.stop().await.unwrap();
}
