//! Invariant 10: audited before answered. Every call leaves a record in a hash-chained log
//! (extractions with their verified counts and the manifest's hash; refused and failed calls
//! with their status); `dsr-connector audit verify`, the real binary, proves the log whole and
//! names the first bad record; a store that cannot be written withholds the manifest; and a
//! server killed with SIGKILL mid-stream leaves a log that verifies and holds every manifest
//! that left.

mod segments;
#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dsr_connector::demo;
use dsr_connector::pb::{ExtractRequest, ValidateRequest, extract_response::Event};
use support::{
    SUBJECT_KEY, ServeProcess, TestServer, config, config_text, config_with_tokens, extract,
    request, with_token,
};
use tonic::Code;

const TOKEN: &str = "token-of-the-orchestrator-0123456789";

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        support::run_sql_blocking(
            "CREATE TABLE bulk_rows (id int PRIMARY KEY, owner text NOT NULL, note text);
             CREATE INDEX ON bulk_rows (owner);
             INSERT INTO bulk_rows SELECT g, 'bulk' || (g % 10) || '@example.com', repeat('x', 100)
               FROM generate_series(1, 300000) g;
             ANALYZE bulk_rows;",
        );
    });
}

const BULK: &str = r#"
[[sources.tables]]
name = "bulk_rows"
identity = { kind = "email", column = "owner" }
columns = { id = "not_pii", owner = "contact.email", note = "not_pii" }
"#;

/// The demo config with an audit log at `path` (and `extra` TOML appended).
fn audited_text(path: &Path, extra: &str) -> String {
    setup();
    format!(
        "{}\n[server.audit]\npath = {:?}\nreplica = \"replica-test\"\n",
        config_text(&format!("{BULK}\n{extra}")),
        path.display().to_string()
    )
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `dsr-connector audit verify` with the test audit key.
fn verify(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["audit", "verify"])
        .arg(path)
        .env("DSR_AUDIT_KEY", demo::audit_key(SUBJECT_KEY))
        .output()
        .unwrap()
}

fn with_token_config(path: &Path) -> dsr_connector::config::Config {
    config_with_tokens(
        &audited_text(path, ""),
        &[("orchestrator", TOKEN, "sources = [\"demo\"]")],
    )
}

#[tokio::test]
async fn every_call_is_recorded_and_the_log_verifies_until_a_byte_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let server = TestServer::start(with_token_config(&path)).await;
    let mut client = server.client().await;

    let mut alice = request("email", "alice@example.com");
    alice.request_id = "dsr-audit-1".into();
    let mut stream = client
        .extract(with_token(alice, TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut manifest = None;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(Event::Manifest(m)) = message.event {
            manifest = Some(m);
        }
    }
    let manifest = manifest.expect("a manifest");

    // A wrong token, an unknown source, and a schema check.
    let refused = client
        .extract(with_token(request("email", "alice@example.com"), "wrong"))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let mut unknown = request("email", "alice@example.com");
    unknown.source = "nope".into();
    let failed = client.extract(with_token(unknown, TOKEN)).await;
    assert_eq!(failed.unwrap_err().code(), Code::PermissionDenied);
    let checked = client
        .validate(with_token(
            ValidateRequest {
                source: "demo".into(),
                ..Default::default()
            },
            TOKEN,
        ))
        .await;
    assert!(checked.is_ok());
    server.stop().await.unwrap();

    let all = records(&path);
    let by = |outcome: &str, status: &str| {
        all.iter()
            .find(|r| r["outcome"] == outcome && r["status"] == status)
            .unwrap_or_else(|| panic!("no {outcome}/{status} record in {all:#?}"))
    };
    let ok = by("ok", "OK");
    assert_eq!(ok["rpc"], "Extract");
    assert_eq!(ok["caller"], "orchestrator");
    assert_eq!(ok["request_id"], "dsr-audit-1");
    assert_eq!(ok["extraction_id"], manifest.extraction_id.as_str());
    assert_eq!(ok["subject_id"], manifest.subject_id.as_str());
    assert_eq!(ok["row_count"], 18);
    assert_eq!(ok["replica"], "replica-test");
    assert!(
        ok["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["verified"] == true)
    );
    assert_eq!(
        ok["manifest_sha256"],
        dsr_connector::records::audit::message_sha256(&manifest).as_str(),
        "the record holds the hash of the manifest as the client received it"
    );
    assert_eq!(by("refused", "UNAUTHENTICATED")["rpc"], "Extract");
    assert_eq!(by("failed", "PERMISSION_DENIED")["source"], "nope");
    // The extraction's first record, durable before anything left, then its completion.
    let started = all
        .iter()
        .find(|r| r["outcome"] == "started")
        .unwrap_or_else(|| panic!("no started record in {all:#?}"));
    assert_eq!(started["seq"], 1);
    assert_eq!(started["extraction_id"], manifest.extraction_id.as_str());
    assert_eq!(started["subject_id"], manifest.subject_id.as_str());
    assert_eq!(started["caller"], "orchestrator");
    assert_eq!(by("ok", "OK")["seq"], 2);
    assert!(
        all.iter()
            .any(|r| r["rpc"] == "Validate" && r["status"] == "OK")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("alice@example.com"),
        "no identity in the log"
    );
    assert!(
        !text.contains("Alice Liddell"),
        "no extracted value in the log"
    );

    let out = verify(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ok ({} records", all.len())),
        "{stdout}"
    );
    // The README's command, with this log and key for the deployment's.
    for command in support::readme_commands_with("audit verify /var/lib") {
        let out = support::run_readme_command(
            &command,
            &[
                (
                    "DSR_AUDIT_KEY=...",
                    format!("DSR_AUDIT_KEY={}", demo::audit_key(SUBJECT_KEY)),
                ),
                (
                    "/var/lib/dsr-connector/audit.log",
                    path.display().to_string(),
                ),
            ],
            &[],
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
    }

    // One changed byte in the second record: verify fails and names it.
    let edited = text.replacen("\"replica-test\"", "\"replica-tesT\"", 2);
    let first_len = text.find('\n').unwrap() + 1;
    let edited = format!("{}{}", &text[..first_len], &edited[first_len..]);
    std::fs::write(&path, edited).unwrap();
    let out = verify(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("record 2 (line 2)"), "{stderr}");
}

#[tokio::test]
async fn a_store_that_cannot_be_written_withholds_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let server = TestServer::start(config(&audited_text(&path, ""))).await;
    let mut client = server.client().await;
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());

    // The head file can no longer be replaced (a directory stands in its place, and a file
    // is not renamed over a directory): every append fails from now on.
    let blocker = PathBuf::from(format!("{}.head", path.display()));
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
    assert!(
        x.message().contains("audit log cannot be written"),
        "{}",
        x.message()
    );
    assert!(x.manifest.is_none(), "no manifest without its audit record");
    // Audited before any row leaves: a call that cannot be recorded sends nothing at all.
    assert!(
        x.started.is_none() && x.rows("customers").is_empty(),
        "something left before its call was recorded"
    );

    // The store recovers; the failed batch left nothing behind.
    std::fs::remove_dir(&blocker).unwrap();
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    server.stop().await.unwrap();
    let out = verify(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_twenty_extractions_leaves_every_manifest_recorded_and_a_log_that_verifies()
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let audit_key = demo::audit_key(SUBJECT_KEY);
    // Slots for all twenty calls at once: the paused bulk calls below must not hold the
    // quick ones back.
    let text = audited_text(&path, "").replace(
        "max_connections = 10",
        "max_connections = 20\nmax_per_caller = 20",
    );
    assert!(text.contains("max_per_caller = 20"));
    let server = ServeProcess::start_with(&text, &[("DSR_AUDIT_KEY", &audit_key)]).await;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    // The bulk calls stop reading after their first message until the server is killed, so
    // that they are certainly mid-stream when it dies (their 30,000 rows cannot fit in the
    // server's channel and the HTTP/2 window).
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let mut calls = Vec::new();
    for i in 0..20 {
        let mut client = server.client().await;
        let done = done_tx.clone();
        let mut killed = killed_rx.clone();
        calls.push(tokio::spawn(async move {
            // Half are quick, half stream 30,000 rows.
            let bulk = i % 2 == 1;
            let subject = if bulk {
                format!("bulk{}@example.com", i % 10)
            } else {
                "alice@example.com".to_owned()
            };
            let req = ExtractRequest {
                batch_size: 500,
                ..request("email", &subject)
            };
            let mut manifest_id = None;
            if let Ok(response) = client.extract(req).await {
                let mut stream = response.into_inner();
                let mut first = true;
                while let Ok(Some(message)) = stream.message().await {
                    if let Some(Event::Manifest(m)) = message.event {
                        manifest_id = Some(m.extraction_id);
                        let _ = done.send(());
                    }
                    if bulk && std::mem::take(&mut first) {
                        let _ = killed.wait_for(|k| *k).await;
                    }
                }
            }
            (bulk, manifest_id)
        }));
    }
    // Once some calls got their manifest, the server is killed mid-stream.
    for _ in 0..5 {
        done_rx.recv().await.unwrap();
    }
    let pid = server.pid();
    let killed = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    killed_tx.send(true).unwrap();
    let mut manifests = Vec::new();
    for call in calls {
        let (bulk, manifest) = call.await.unwrap();
        assert!(
            !(bulk && manifest.is_some()),
            "a bulk call that stopped reading got its manifest"
        );
        manifests.extend(manifest);
    }
    let (status, _) = server.wait().await;
    assert!(!status.success(), "the server was killed");
    assert!(
        (5..=10).contains(&manifests.len()),
        "{} manifests",
        manifests.len()
    );
    println!(
        "{} of 20 calls got a manifest before SIGKILL",
        manifests.len()
    );

    let out = verify(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let recorded: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for id in &manifests {
        assert!(
            recorded
                .iter()
                .any(|r| r["extraction_id"] == id.as_str() && r["outcome"] == "ok"),
            "the manifest of {id} left without its audit record"
        );
    }
}

#[tokio::test]
async fn a_validate_dry_run_is_one_record_and_a_refused_caller_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let config = config_with_tokens(
        &audited_text(&path, ""),
        &[
            ("orchestrator", TOKEN, "sources = [\"demo\"]"),
            (
                "schema-checker",
                "token-of-the-schema-checker-0123456789",
                "sources = [\"demo\"]\nrpcs = [\"Validate\"]",
            ),
        ],
    );
    let server = TestServer::start(config).await;
    let mut client = server.client().await;

    // A dry run for alice, under the caller's own request id.
    let mut dry_run = with_token(
        ValidateRequest {
            source: "demo".into(),
            subject: Some(dsr_connector::pb::Identity {
                kind: "email".into(),
                value: "Alice@Example.com ".into(),
            }),
            ..Default::default()
        },
        TOKEN,
    );
    dry_run
        .metadata_mut()
        .insert("x-request-id", "validate-call-2".parse().unwrap());
    let mut stream = client.validate(dry_run).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}

    // A caller whose token may only Validate calls Extract.
    let refused = client
        .extract(with_token(
            request("email", "alice@example.com"),
            "token-of-the-schema-checker-0123456789",
        ))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    server.stop().await.unwrap();

    let all = records(&path);
    let of_call: Vec<_> = all
        .iter()
        .filter(|r| r["call_id"] == "validate-call-2")
        .collect();
    assert_eq!(of_call.len(), 1, "one record per call: {of_call:#?}");
    let record = of_call[0];
    assert_eq!(record["rpc"], "Validate");
    assert_eq!(record["status"], "OK");
    assert_eq!(record["dry_run"], true);
    // The subject as the dry run normalised it: the same id as alice's extractions.
    assert_eq!(
        record["subject_id"],
        dsr_connector::subject::subject_id(SUBJECT_KEY.as_bytes(), "email", "alice@example.com")
    );
    assert!(
        all.iter()
            .all(|r| r["rpc"] != "Validate" || r["call_id"] != ""),
        "a Validate record without its call id: {all:#?}"
    );
    let denied = all
        .iter()
        .find(|r| r["status"] == "PERMISSION_DENIED")
        .unwrap_or_else(|| panic!("no PERMISSION_DENIED record in {all:#?}"));
    assert_eq!(denied["caller"], "schema-checker");
    assert_eq!(denied["outcome"], "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_producer_ends_the_call_as_internal_with_its_record() {
    // The debug build's fault hook: the producer panics while it reads legacy_accounts.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let audit_key = demo::audit_key(SUBJECT_KEY);
    let server = ServeProcess::start_with(
        &audited_text(&path, ""),
        &[
            ("DSR_AUDIT_KEY", &audit_key),
            ("DSR_DEBUG_PANIC_AT_TABLE", "legacy_accounts"),
        ],
    )
    .await;
    let mut client = server.client().await;
    let mut req = request("email", "alice@example.com");
    req.request_id = "dsr-panic-1".into();
    let x = extract(&mut client, req).await;
    assert_eq!(x.code(), Code::Internal, "{}", x.message());
    assert!(x.manifest.is_none());
    // The server goes on serving: a call that does not reach the table succeeds.
    let mut orders = request("email", "alice@example.com");
    orders.tables = vec!["orders".into()];
    let x = extract(&mut client, orders).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let (status, log) = server.terminate().await;
    assert!(status.success(), "{}", log.join("\n"));

    let all = records(&path);
    let failed = all
        .iter()
        .find(|r| r["request_id"] == "dsr-panic-1" && r["outcome"] != "started")
        .unwrap_or_else(|| panic!("no record of the call that panicked: {all:#?}"));
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["status"], "INTERNAL");
    assert!(verify(&path).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_storm_is_counted_not_written_record_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let server = TestServer::start_with_metrics(with_token_config(&path)).await;
    let mut client = server.client().await;
    const STORM: usize = 300;
    for _ in 0..STORM {
        let refused = client
            .extract(with_token(request("email", "alice@example.com"), "wrong"))
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    }
    let metrics = support::scrape(server.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains(&format!(
            "dsr_refused_calls_total{{code=\"UNAUTHENTICATED\"}} {STORM}"
        )),
        "{metrics}"
    );
    server.stop().await.unwrap();

    // The storm is a handful of records (one per caller, RPC and status each interval, and
    // the rest at the stop) that account for every refused call.
    let all = records(&path);
    let refused: Vec<_> = all.iter().filter(|r| r["outcome"] == "refused").collect();
    assert!(
        !refused.is_empty() && refused.len() <= 3,
        "{} refusal records: {refused:#?}",
        refused.len()
    );
    let counted: u64 = refused.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, STORM as u64);
    assert!(
        refused
            .iter()
            .all(|r| r["status"] == "UNAUTHENTICATED" && r["rpc"] == "Extract")
    );
    assert!(verify(&path).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_log_is_verified_and_reopened_in_bounded_memory() {
    use dsr_connector::records::audit::AuditLog;
    // About 40 MB of records, written through the service's own log in group commits.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = demo::audit_key(SUBJECT_KEY);
    let log = AuditLog::open(&path, key.as_bytes(), "replica-big").unwrap();
    append_bulk(&log, 0..60_000, 2_000).await;
    drop(log);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 40 * 1024 * 1024, "{size} bytes");

    // The same binary on a log of 100 records: what the process holds whatever the log (its
    // code, its runtime), which differs between builds.
    let small_dir = tempfile::tempdir().unwrap();
    let small = small_dir.path().join("audit.log");
    let log = AuditLog::open(&small, key.as_bytes(), "replica-small").unwrap();
    append_bulk(&log, 0..100, 100).await;
    drop(log);
    let baseline = measured_verify(&small, &key);
    assert!(baseline.ok, "{baseline:?}");

    let verified = measured_verify(&path, &key);
    assert!(verified.ok, "{verified:?}");
    let peak_kib = verified.peak_kib;
    println!(
        "audit verify of {size} bytes: peak RSS {} MiB; of 100 records: {} MiB",
        peak_kib / 1024,
        baseline.peak_kib / 1024
    );
    assert!(verified.said.contains("ok (60000 records"), "{verified:?}");
    // Read line by line: the large log adds a few MiB at most, never its size.
    assert!(
        peak_kib < baseline.peak_kib + 8 * 1024,
        "audit verify held {peak_kib} KiB for a {size}-byte log, {} KiB for 100 records",
        baseline.peak_kib
    );

    // The service reopens it from its last line, and goes on with the chain.
    let log = AuditLog::open(&path, key.as_bytes(), "replica-big").unwrap();
    log.append(bulk_entry(60_000)).await.unwrap();
    drop(log);
    assert!(verify(&path).status.success());
}

/// The real binary under a flood of refused calls (wrong tokens and none, on 16 connections at
/// once): its memory stays bounded, and the log holds a few aggregated records that account for
/// every refused call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_flood_on_the_real_binary_stays_in_bounded_memory_and_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let text = support::with_server_block(
        &audited_text(&path, ""),
        "[[server.tokens]]\nname = \"orchestrator\"\nsha256_env = \"TOKEN_SHA\"\nsources = [\"demo\"]\n",
    );
    let digest = support::digest(TOKEN);
    let server = support::ServeProcess::start_with(
        &text,
        &[
            ("TOKEN_SHA", digest.as_str()),
            ("DSR_AUDIT_KEY", &demo::audit_key(SUBJECT_KEY)),
        ],
    )
    .await;
    let idle_kib = server.peak_rss_kib();
    const TASKS: usize = 16;
    const EACH: usize = 1_250;
    let flood: Vec<_> = (0..TASKS)
        .map(|task| {
            let addr = server.addr.clone();
            tokio::spawn(async move {
                let mut client =
                    dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient::connect(
                        format!("http://{addr}"),
                    )
                    .await
                    .unwrap();
                for i in 0..EACH {
                    let alice = request("email", "alice@example.com");
                    let call = if task % 4 == 0 {
                        tonic::Request::new(alice)
                    } else {
                        with_token(alice, &format!("wrong-token-{task}-{i}"))
                    };
                    let refused = client.extract(call).await.unwrap_err();
                    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
                }
            })
        })
        .collect();
    for task in flood {
        task.await.unwrap();
    }
    let peak_kib = server.peak_rss_kib();
    let (status, _) = server.terminate().await;
    assert!(status.success(), "{status}");

    let all = records(&path);
    let refused: Vec<_> = all.iter().filter(|r| r["outcome"] == "refused").collect();
    let counted: u64 = refused.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    println!(
        "{} refused calls: {} audit records (of {} in the log) counting {counted}; \
         peak RSS {} MiB (idle {} MiB)",
        TASKS * EACH,
        refused.len(),
        all.len(),
        peak_kib / 1024,
        idle_kib / 1024
    );
    assert_eq!(
        counted,
        (TASKS * EACH) as u64,
        "every refused call is counted"
    );
    assert!(refused.len() <= 20, "{} refusal records", refused.len());
    assert!(
        peak_kib < 128 * 1024,
        "peak RSS {} MiB under a refusal flood",
        peak_kib / 1024
    );
    assert!(verify(&path).status.success());
}

/// A record as the large-log tests write them: about 700 bytes, no two alike.
fn bulk_entry(i: usize) -> dsr_connector::records::audit::Entry {
    use dsr_connector::records::audit::{Entry, TableEntry};
    Entry {
        rpc: "Extract".into(),
        caller: "orchestrator".into(),
        source: "demo".into(),
        subject_id: format!("hmac-sha256:{:064x}", i),
        request_id: format!("dsr-{i}"),
        extraction_id: format!("{i:036}"),
        outcome: "ok".into(),
        status: "OK".into(),
        tables: (0..6)
            .map(|t| TableEntry {
                table: format!("table_number_{t}"),
                rows: t,
                verified: true,
                ..Default::default()
            })
            .collect(),
        manifest_sha256: format!("{:064x}", i * 7),
        ..Default::default()
    }
}

/// Appends `bulk_entry` records numbered `range` to `log`, `chunk` at a time (each chunk's
/// appends waited for together, so that they commit in groups).
async fn append_bulk(
    log: &dsr_connector::records::audit::AuditLog,
    range: std::ops::Range<usize>,
    chunk: usize,
) {
    for numbers in range.collect::<Vec<_>>().chunks(chunk) {
        let appends = numbers.iter().map(|i| log.append(bulk_entry(*i)));
        for appended in futures_util::future::join_all(appends).await {
            appended.unwrap();
        }
    }
}

/// What `audit verify` of one log did: whether it succeeded, its peak resident set size, its
/// seconds, and what it printed.
#[derive(Debug)]
struct MeasuredVerify {
    ok: bool,
    peak_kib: u64,
    secs: f64,
    said: String,
}

/// Runs `audit verify`, the real binary, on `path` under a Python parent that reports its
/// child's peak resident set size and time.
fn measured_verify(path: &Path, key: &str) -> MeasuredVerify {
    let measure = r#"
import resource, subprocess, sys, time
t = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, round(time.monotonic() - t, 2), done.stdout.strip(), done.stderr.strip())
"#;
    let out = Command::new(support::venv_tool("python"))
        .args([
            "-c",
            measure,
            env!("CARGO_BIN_EXE_dsr-connector"),
            "audit",
            "verify",
        ])
        .arg(path)
        .env("DSR_AUDIT_KEY", key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut fields = text.splitn(4, ' ');
    let code = fields.next().unwrap_or_default();
    let peak_kib = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    let secs = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
    MeasuredVerify {
        ok: out.status.success() && code == "0",
        peak_kib,
        secs,
        said: fields.next().unwrap_or_default().trim().to_owned(),
    }
}
