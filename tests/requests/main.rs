//! Durable requests, end to end: two real `serve` replicas share a control database (their
//! audit chains too) and a package directory, and serve two sources, the demo shop on
//! PostgreSQL (`demo`) and on MariaDB (`mariadb`). Requests are submitted to one replica and
//! followed on the other through `google.longrunning.Operations`; replicas are killed with
//! SIGKILL mid-request, sources stopped, locks held.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod flows;
mod identities;
mod links;
mod refusals;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dsr_connector::config::Config;
use dsr_connector::demo::{self, mariadb::TempMariaDb};
use dsr_connector::pb::dsr_request_service_client::DsrRequestServiceClient;
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
const DATABASES: [&str; 18] = [
    "req_access",
    "req_links_both",
    "req_links_found",
    "req_both_access",
    "req_both_erase",
    "req_links_erase",
    "req_links_bound",
    "req_links",
    "req_sigterm",
    "req_sealed",
    "req_cli",
    "req_python",
    "req_scopes",
    "req_changed",
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
    /// Edits the config text of both shops (a test's own identity kinds, say).
    edit: fn(String) -> String,
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
            edit: |text| text,
        }
    }

    fn config_text(&self, replica: &str, extra: &str) -> String {
        let text = support::shop::config_text(mariadb(), self.name, "", self.edit).replace(
            &format!("port = {}", mariadb().port()),
            &format!("port = {}", self.mariadb_port),
        );
        // Short leases and retries, unless `extra` sets its own.
        let settings: String = [
            ("lease", "\"3s\""),
            ("poll", "\"100ms\""),
            ("retry_first", "\"200ms\""),
            ("retry_max", "\"1s\""),
        ]
        .iter()
        .filter(|(key, _)| !extra.contains(&format!("{key} =")))
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
        format!(
            "{text}\n[server.control]\nurl_env = \"CONTROL_URL\"\n\n\
             [server.audit]\nstore = \"control\"\nreplica = \"{replica}\"\n\n\
             [server.requests]\npackage_dir = {:?}\n{settings}{extra}\n",
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

    /// The config of an in-process replica, with callers that hold bearer tokens, each
    /// `(name, token, extra TOML of its [[server.tokens]] entry)`.
    fn config(&self, extra: &str, tokens: &[(&str, &str, &str)]) -> Config {
        let mut block = String::new();
        for (i, (name, _, more)) in tokens.iter().enumerate() {
            block.push_str(&format!(
                "[[server.tokens]]\nname = \"{name}\"\nsha256_env = \"TOKEN_SHA_{i}\"\n{more}\n\n"
            ));
        }
        let text = support::with_server_block(&self.config_text("local", extra), &block);
        let digests: Vec<String> = tokens.iter().map(|(_, t, _)| support::digest(t)).collect();
        Config::from_toml_str(&text, |var| match var {
            demo::PASSWORD_ENV => Some(support::cluster().password().to_owned()),
            demo::mariadb::PASSWORD_ENV => Some(mariadb().password().to_owned()),
            "DSR_SUBJECT_KEY" => Some(support::SUBJECT_KEY.to_owned()),
            "DSR_AUDIT_KEY" => Some(demo::audit_key(support::SUBJECT_KEY)),
            "CONTROL_URL" => Some(self.control_url.clone()),
            other => other
                .strip_prefix("TOKEN_SHA_")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| digests.get(i).cloned()),
        })
        .unwrap_or_else(|e| panic!("{e}"))
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

    /// How many erasures of `request_id` on `source` committed changes, by the audit log.
    async fn committed_erasures(&self, request_id: &str, source: &str) -> usize {
        let records = self.audit(request_id).await;
        records
            .iter()
            .filter(|r| {
                r["rpc"] == "Erase"
                    && r["source"] == source
                    && r["outcome"] == "ok"
                    && r["dry_run"] != true
                    && r["row_count"].as_u64().unwrap_or(0) > 0
            })
            .count()
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

async fn requests_client(addr: impl std::fmt::Display) -> DsrRequestServiceClient<Channel> {
    DsrRequestServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn operations(addr: impl std::fmt::Display) -> OperationsClient<Channel> {
    OperationsClient::connect(format!("http://{addr}"))
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
        more_identities: Vec::new(),
    }
}

/// Each waiting task's preview digest, by its folder: what ApproveRequest takes.
fn digests(shown: &RequestProgress) -> BTreeMap<String, String> {
    shown
        .sources
        .iter()
        .map(|s| (s.folder.clone(), s.preview_digest.clone()))
        .collect()
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
    same_as_extract_in(&server.addr, Path::new(&result.package_path), source);
}

/// [`same_as_extract`], for a package in `package` of the server at `addr`.
fn same_as_extract_in(addr: &str, package: &Path, source: &str) {
    let extracted = extract_files(addr, source);
    let packaged = table_files(&package.join(source));
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

/// The table files `dsr-connector extract` writes for alice by e-mail from `source`.
fn extract_files(addr: &str, source: &str) -> BTreeMap<String, Vec<u8>> {
    let out = tempfile::tempdir().unwrap();
    let dir: PathBuf = out.path().join(source);
    let status = support::without_test_cargo_env(&mut std::process::Command::new(env!(
        "CARGO_BIN_EXE_dsr-connector"
    )))
    .args(["extract", "--quiet", "--kind", "email", "--value", ALICE])
    .args(["--addr", &format!("http://{addr}")])
    .args(["--source", source])
    .arg("--out")
    .arg(&dir)
    .status()
    .unwrap();
    assert!(status.success());
    table_files(&dir)
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
