//! Durable requests, end to end: two real `serve` replicas share a control database (their
//! audit chains too) and a package directory, and serve two sources, the demo shop on
//! PostgreSQL (`demo`) and on MariaDB (`mariadb`). Requests are submitted to one replica and
//! followed on the other through `google.longrunning.Operations`; replicas are killed with
//! SIGKILL mid-request, sources stopped, locks held.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dsr_connector::demo::{self, mariadb::TempMariaDb};
use dsr_connector::pb::google::longrunning::operations_client::OperationsClient;
use dsr_connector::pb::google::longrunning::{
    CancelOperationRequest, GetOperationRequest, Operation, WaitOperationRequest, operation,
};
use dsr_connector::pb::{
    self, ApproveRequestRequest, Identity, RequestKind, RequestProgress, RequestResult,
    RequestState, SubmitRequestRequest,
};
use mysql_async::prelude::Queryable;
use prost::Message;
use sha2::{Digest, Sha256};
use support::ServeProcess;
use support::shop::{ALICE, Shop};
use tonic::Code;
use tonic::transport::Channel;

/// The databases of the tests: each test's shop on both stores, and its control database.
const DATABASES: [&str; 5] = [
    "req_access",
    "req_killed",
    "req_erase",
    "req_cancel",
    "req_stopped",
];

fn mariadb() -> &'static TempMariaDb {
    let databases: Vec<(&str, &str)> = DATABASES.iter().map(|d| (*d, "")).collect();
    support::mariadb::server(&databases)
}

/// One test's world: its shop on both stores, its control database and package directory.
struct World {
    name: &'static str,
    pg: Shop,
    my: Shop,
    control: tokio_postgres::Client,
    control_url: String,
    packages: tempfile::TempDir,
    /// Where the `mariadb` source connects (a gate in front of MariaDB, for some tests).
    mariadb_port: u16,
}

impl World {
    async fn open(name: &'static str) -> World {
        let control_db = format!("{name}_control");
        let control = support::empty_database(&control_db).await;
        World {
            name,
            pg: Shop::open(mariadb(), "demo", name).await,
            my: Shop::open(mariadb(), "mariadb", name).await,
            control,
            control_url: support::cluster().connection_string(&control_db),
            packages: tempfile::tempdir().unwrap(),
            mariadb_port: mariadb().port(),
        }
    }

    fn config_text(&self, replica: &str, extra: &str) -> String {
        let text = support::shop::config_text(mariadb(), self.name, "", |t| t).replace(
            &format!("port = {}", mariadb().port()),
            &format!("port = {}", self.mariadb_port),
        );
        format!(
            "{text}\n[server.control]\nurl_env = \"CONTROL_URL\"\n\n\
             [server.audit]\nstore = \"control\"\nreplica = \"{replica}\"\n\n\
             [server.requests]\npackage_dir = {:?}\nlease = \"3s\"\npoll = \"100ms\"\n\
             retry_first = \"200ms\"\nretry_max = \"1s\"\n{extra}\n",
            self.packages.path().display().to_string()
        )
    }

    /// A replica named `replica`.
    async fn replica(&self, replica: &str) -> ServeProcess {
        self.replica_with(replica, "").await
    }

    async fn replica_with(&self, replica: &str, extra: &str) -> ServeProcess {
        ServeProcess::start_with(
            &self.config_text(replica, extra),
            &[
                ("CONTROL_URL", self.control_url.as_str()),
                (demo::mariadb::PASSWORD_ENV, mariadb().password()),
                ("DSR_AUDIT_KEY", &demo::audit_key(support::SUBJECT_KEY)),
            ],
        )
        .await
    }

    /// The process id of the replica that holds `source`'s task of `request`, if one does.
    async fn holder_pid(&self, request: &str, source: &str) -> Option<u32> {
        let row = self
            .control
            .query_opt(
                "SELECT lease_owner FROM dsr_request_tasks WHERE request_id = $1 \
                 AND source = $2 AND state = 'running'",
                &[&request, &source],
            )
            .await
            .unwrap()?;
        let owner: Option<String> = row.get(0);
        owner?.split('-').next()?.parse().ok()
    }

    /// The audit records of every replica that name `request_id`, as JSON.
    async fn audit(&self, request_id: &str) -> Vec<serde_json::Value> {
        self.control
            .query("SELECT line FROM dsr_audit ORDER BY replica, seq", &[])
            .await
            .unwrap()
            .iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(r.get(0)).ok())
            .filter(|v| v["request_id"] == request_id)
            .collect()
    }
}

async fn operations(server: &ServeProcess) -> OperationsClient<Channel> {
    OperationsClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap()
}

fn submission(id: &str, kind: RequestKind) -> SubmitRequestRequest {
    SubmitRequestRequest {
        request_id: id.into(),
        kind: kind as i32,
        subject: Some(Identity {
            kind: "email".into(),
            value: ALICE.into(),
        }),
        sources: Vec::new(),
        due_time: None,
        compliance_tag: "gdpr".into(),
    }
}

fn progress(op: &Operation) -> RequestProgress {
    RequestProgress::decode(op.metadata.as_ref().unwrap().value.as_slice()).unwrap()
}

fn result(op: &Operation) -> RequestResult {
    match &op.result {
        Some(operation::Result::Response(any)) => {
            RequestResult::decode(any.value.as_slice()).unwrap()
        }
        other => panic!("the request did not succeed: {other:?}"),
    }
}

fn source_state(op: &Operation, source: &str) -> RequestState {
    progress(op)
        .sources
        .iter()
        .find(|s| s.source == source)
        .map(|s| s.state())
        .unwrap_or(RequestState::Unspecified)
}

async fn get(ops: &mut OperationsClient<Channel>, id: &str) -> Operation {
    ops.get_operation(GetOperationRequest {
        name: format!("requests/{id}"),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Waits (WaitOperation, 5 s at a time, at most two minutes) until the request is done.
async fn done(ops: &mut OperationsClient<Channel>, id: &str) -> Operation {
    for _ in 0..24 {
        let op = ops
            .wait_operation(WaitOperationRequest {
                name: format!("requests/{id}"),
                timeout: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        if op.done {
            return op;
        }
    }
    panic!(
        "request {id} never ended: {:?}",
        progress(&get(ops, id).await)
    );
}

/// Polls the request until `check` holds (at most a minute).
async fn until(
    ops: &mut OperationsClient<Channel>,
    id: &str,
    check: impl Fn(&Operation) -> bool,
) -> Operation {
    for _ in 0..300 {
        let op = get(ops, id).await;
        if check(&op) {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "request {id} never got there: {:?}",
        progress(&get(ops, id).await)
    );
}

fn sigkill(pid: u32) {
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// The package is whole: its manifest lists every file with the SHA-256 it has, the
/// result's SHA-256 is the manifest's, and nothing else lies in it. Returns the listed
/// sources.
fn verify_package(result: &RequestResult) -> Vec<String> {
    let folder = Path::new(&result.package_path);
    let manifest = std::fs::read(folder.join("manifest.json")).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&manifest)),
        result.package_sha256,
        "the package's SHA-256 is not its manifest's"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut listed = vec!["README.txt".to_owned(), "manifest.json".to_owned()];
    let mut sources = Vec::new();
    for source in manifest["sources"].as_array().unwrap() {
        sources.push(source["source"].as_str().unwrap().to_owned());
        for file in source["files"].as_array().unwrap() {
            let path = file["path"].as_str().unwrap();
            let bytes = std::fs::read(folder.join(path)).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                file["sha256"].as_str().unwrap(),
                "{path} is not what the manifest says"
            );
            listed.push(path.to_owned());
        }
    }
    let mut present = Vec::new();
    files_under(folder, folder, &mut present);
    listed.sort();
    present.sort();
    assert_eq!(
        present, listed,
        "the package holds files its manifest does not list"
    );
    sources
}

fn files_under(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(base, &path, out);
        } else {
            out.push(path.strip_prefix(base).unwrap().display().to_string());
        }
    }
}

/// The table files (`*.jsonl`) of a folder, by name.
fn table_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// `source`'s part of the package holds the same tables, byte for byte, as the `extract`
/// command's package of the same subject from the same source.
fn same_as_extract(server: &ServeProcess, result: &RequestResult, source: &str) {
    let out = tempfile::tempdir().unwrap();
    let dir: PathBuf = out.path().join(source);
    let status = support::without_test_cargo_env(&mut std::process::Command::new(env!(
        "CARGO_BIN_EXE_dsr-connector"
    )))
    .args(["extract", "--quiet", "--kind", "email", "--value", ALICE])
    .args(["--addr", &format!("http://{}", server.addr)])
    .args(["--source", source])
    .arg("--out")
    .arg(&dir)
    .status()
    .unwrap();
    assert!(status.success());
    let extracted = table_files(&dir);
    let packaged = table_files(&Path::new(&result.package_path).join(source));
    assert!(!extracted.is_empty());
    assert_eq!(
        packaged.keys().collect::<Vec<_>>(),
        extracted.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &extracted {
        assert!(
            packaged[name] == *bytes,
            "{source}/{name} differs from the extract command's"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_request_across_both_stores_is_one_verified_package_equal_to_each_extract() {
    let world = World::open("req_access").await;
    let a = world.replica("a").await;
    let b = world.replica("b").await;
    let mut client = a.client().await;
    let submitted = client
        .submit_request(submission("access-1", RequestKind::Access))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.name, "requests/access-1");
    assert!(!submitted.done);

    // Followed on the other replica.
    let mut ops = operations(&b).await;
    let op = done(&mut ops, "access-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    assert_eq!(shown.kind(), RequestKind::Access);
    let result = result(&op);
    assert_eq!(verify_package(&result), ["demo", "mariadb"]);
    for source in ["demo", "mariadb"] {
        same_as_extract(&a, &result, source);
        let found = result.sources.iter().find(|s| s.source == source).unwrap();
        let Some(pb::source_result::Result::Manifest(manifest)) = &found.result else {
            panic!("{source}: no manifest");
        };
        assert!(manifest.row_count > 0);
        assert!(manifest.tables.iter().all(|t| t.verified));
        assert_eq!(manifest.request_id, "access-1");
    }

    // The same id again, on either replica: the same operation, not a second request.
    let again = b
        .client()
        .await
        .submit_request(submission("access-1", RequestKind::Access))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.name, op.name);
    assert!(again.done);
    assert_eq!(progress(&again).create_time, shown.create_time);
    let count: i64 = world
        .control
        .query_one("SELECT count(*) FROM dsr_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    // The same id with another subject is refused, and names no value.
    let mut other = submission("access-1", RequestKind::Access);
    other.subject.as_mut().unwrap().value = "bob@example.com".into();
    let refused = client.submit_request(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(!refused.message().contains("bob@"));

    // The identity was forgotten when the request ended; the audit log names the request's
    // steps and its extractions, never the identity.
    let kept: Option<String> = world
        .control
        .query_one(
            "SELECT identity_value FROM dsr_requests WHERE id = 'access-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, None);
    let records = world.audit("access-1").await;
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(ALICE));
    for rpc in ["SubmitRequest", "Extract", "Request"] {
        assert!(
            records.iter().any(|r| r["rpc"] == rpc),
            "no {rpc} record in {text}"
        );
    }
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_request_is_finished_by_the_other_with_nothing_twice() {
    let world = World::open("req_killed").await;
    // PostgreSQL's customers table is locked: the demo source's extraction waits in it.
    let holder = world
        .pg
        .hold("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .await;
    let a = world.replica("a").await;
    let mut client = a.client().await;
    client
        .submit_request(submission("killed-1", RequestKind::Access))
        .await
        .unwrap();
    let mut ops_a = operations(&a).await;
    until(&mut ops_a, "killed-1", |op| {
        source_state(op, "mariadb") == RequestState::Succeeded
            && source_state(op, "demo") == RequestState::Running
    })
    .await;
    assert!(
        world.pg.erasure_waits().await,
        "the extraction never waited on the lock"
    );
    let pid = world.holder_pid("killed-1", "demo").await.unwrap();
    assert_eq!(pid, a.pid());
    sigkill(a.pid());
    let _ = a.wait().await;
    holder.release().await;

    // The other replica takes the task once the dead one's lease has run out.
    let b = world.replica("b").await;
    let mut ops = operations(&b).await;
    let op = done(&mut ops, "killed-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    let demo = shown.sources.iter().find(|s| s.source == "demo").unwrap();
    assert_eq!(demo.attempts, 2, "{shown:?}");
    let mariadb = shown
        .sources
        .iter()
        .find(|s| s.source == "mariadb")
        .unwrap();
    assert_eq!(mariadb.attempts, 1, "{shown:?}");
    let result = result(&op);
    verify_package(&result);
    for source in ["demo", "mariadb"] {
        same_as_extract(&b, &result, source);
    }
    // Every row once: each table file has as many lines as the manifest counts.
    for found in &result.sources {
        let Some(pb::source_result::Result::Manifest(manifest)) = &found.result else {
            panic!("no manifest");
        };
        let files = table_files(&Path::new(&result.package_path).join(&found.source));
        let lines: u64 = files
            .values()
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .sum();
        assert_eq!(lines, manifest.row_count, "{}", found.source);
    }
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_request_waits_for_approval_and_erases_each_source_once_across_a_kill() {
    let world = World::open("req_erase").await;
    world.pg.customers_wait_for_lockme().await;
    let a = world.replica("a").await;
    let b = world.replica("b").await;
    let mut client = a.client().await;
    client
        .submit_request(submission("erase-1", RequestKind::Erasure))
        .await
        .unwrap();
    let mut ops = operations(&b).await;
    let waiting = until(&mut ops, "erase-1", |op| {
        progress(op).state() == RequestState::AwaitingApproval
    })
    .await;
    assert!(!waiting.done);
    // Nothing was erased by the previews.
    assert!(!world.pg.alice_rows().await.is_empty());
    assert!(!world.my.alice_rows().await.is_empty());
    let digests: BTreeMap<String, String> = progress(&waiting)
        .sources
        .iter()
        .map(|s| {
            let preview = s.preview.as_ref().expect("a preview per source");
            assert!(preview.dry_run);
            assert!(preview.rows_deleted > 0);
            (s.source.clone(), s.preview_digest.clone())
        })
        .collect();
    assert_eq!(digests.len(), 2);

    // A digest that is not the preview's is refused, and nothing moves.
    let mut wrong = digests.clone();
    wrong.insert("demo".into(), "1.00".into());
    let refused = client
        .approve_request(ApproveRequestRequest {
            name: "requests/erase-1".into(),
            digests: wrong,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Approved: PostgreSQL's erasure waits in its DELETE of alice, and the replica that runs
    // it is killed there; the other finishes it.
    let holder = world
        .pg
        .hold("SELECT * FROM lockme WHERE id = 1 FOR UPDATE")
        .await;
    client
        .approve_request(ApproveRequestRequest {
            name: "requests/erase-1".into(),
            digests,
        })
        .await
        .unwrap();
    assert!(
        world.pg.erasure_waits_in(true).await,
        "the erasure never waited in its DELETE"
    );
    let pid = world.holder_pid("erase-1", "demo").await.unwrap();
    let (killed, survivor) = if pid == a.pid() { (a, b) } else { (b, a) };
    sigkill(killed.pid());
    let _ = killed.wait().await;
    holder.release().await;

    let mut ops = operations(&survivor).await;
    let op = done(&mut ops, "erase-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    for found in result(&op).sources {
        let Some(pb::source_result::Result::Receipt(receipt)) = &found.result else {
            panic!("{}: no receipt", found.source);
        };
        assert!(!receipt.dry_run);
        assert!(receipt.rows_deleted > 0, "{receipt:?}");
        assert!(receipt.committed_at.is_some());
    }
    // What the policy deletes or masks is gone; her legacy account is retained by law.
    for shop in [&world.pg, &world.my] {
        let left = shop.alice_rows().await;
        assert!(
            left.iter().all(|(table, _)| table == "legacy_accounts"),
            "{}: {left:?}",
            shop.store
        );
    }
    // One committed erasure per source in the audit log, whatever was killed.
    let records = world.audit("erase-1").await;
    for source in ["demo", "mariadb"] {
        let committed = records
            .iter()
            .filter(|r| {
                r["rpc"] == "Erase"
                    && r["source"] == source
                    && r["outcome"] == "ok"
                    && r["dry_run"] != true
            })
            .count();
        assert_eq!(committed, 1, "{source}: {records:#?}");
    }
    survivor.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_request_stops_its_queries_on_both_stores_and_leaves_no_package() {
    let world = World::open("req_cancel").await;
    let pg_holder = world
        .pg
        .hold("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .await;
    // A table lock outlives a transaction on MariaDB: a session of its own holds it.
    let mut my_holder = world.my.my.as_ref().unwrap().get_conn().await.unwrap();
    my_holder
        .query_drop("LOCK TABLES customers WRITE")
        .await
        .unwrap();
    let a = world.replica("a").await;
    let mut client = a.client().await;
    client
        .submit_request(submission("cancel-1", RequestKind::Access))
        .await
        .unwrap();
    let mut ops = operations(&a).await;
    until(&mut ops, "cancel-1", |op| {
        source_state(op, "demo") == RequestState::Running
            && source_state(op, "mariadb") == RequestState::Running
    })
    .await;
    assert!(
        world.pg.erasure_waits().await,
        "PostgreSQL's read never waited"
    );
    assert!(
        mariadb_waits(&world, true).await,
        "MariaDB's read never waited"
    );
    ops.cancel_operation(CancelOperationRequest {
        name: "requests/cancel-1".into(),
    })
    .await
    .unwrap();
    let op = get(&mut ops, "cancel-1").await;
    assert!(op.done);
    match &op.result {
        Some(operation::Result::Error(status)) => {
            assert_eq!(status.code, Code::Cancelled as i32)
        }
        other => panic!("not cancelled: {other:?}"),
    }
    // The reads stop on both databases while the locks are still held.
    assert!(
        world.pg.no_erasure_waits().await,
        "PostgreSQL still runs the cancelled read"
    );
    assert!(
        mariadb_waits(&world, false).await,
        "MariaDB still runs the cancelled read"
    );
    pg_holder.release().await;
    my_holder.query_drop("UNLOCK TABLES").await.unwrap();
    drop(my_holder);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!world.packages.path().join("cancel-1").exists());
    let shown = progress(&get(&mut ops, "cancel-1").await);
    assert_eq!(shown.state(), RequestState::Cancelled);
    a.terminate().await;
}

/// Whether a session of the service waits for a table lock on this test's MariaDB database
/// (`waiting`), or none does any more (`!waiting`), polled a bounded number of times.
async fn mariadb_waits(world: &World, waiting: bool) -> bool {
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}' \
         AND STATE LIKE 'Waiting for table%'",
        world.name
    );
    support::eventually(200, || async {
        (world.my.integer(&sql).await > 0) == waiting
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_source_keeps_its_task_waiting_and_the_request_finishes_when_it_returns() {
    let mut world = World::open("req_stopped").await;
    let gate = Gate::start(mariadb().port()).await;
    world.mariadb_port = gate.port;
    gate.close();
    let a = world.replica("a").await;
    let mut client = a.client().await;
    client
        .submit_request(submission("stopped-1", RequestKind::Access))
        .await
        .unwrap();
    let mut ops = operations(&a).await;
    // MariaDB cannot be reached: its task is tried, waits, is tried again; the request stays
    // open, and PostgreSQL's part is done.
    let waiting = until(&mut ops, "stopped-1", |op| {
        let p = progress(op);
        let my = p.sources.iter().find(|s| s.source == "mariadb").unwrap();
        source_state(op, "demo") == RequestState::Succeeded && my.attempts >= 2
    })
    .await;
    assert!(!waiting.done);
    let my = progress(&waiting)
        .sources
        .into_iter()
        .find(|s| s.source == "mariadb")
        .unwrap();
    assert!(!my.last_reason.is_empty(), "{my:?}");
    gate.open();
    let op = done(&mut ops, "stopped-1").await;
    assert_eq!(progress(&op).state(), RequestState::Succeeded);
    let result = result(&op);
    verify_package(&result);
    same_as_extract(&a, &result, "mariadb");
    a.terminate().await;
}

/// A TCP gate in front of a server: while closed, every connection through it is cut.
struct Gate {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Gate {
    async fn start(target: u16) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (is_open, cut) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let mut cut = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Gate {
            port,
            open,
            generation,
        }
    }

    fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
