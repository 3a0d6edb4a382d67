//! Test support: one throwaway PostgreSQL cluster per test binary, loaded with the demo data,
//! and in-process servers that tests start and stop with their own configs.
//!
//! If PostgreSQL cannot be found, every test fails with the message of
//! [`ClusterError::BinariesNotFound`]: tests never skip.
#![allow(dead_code)]

mod erasing;
pub mod mariadb;
pub mod otlp;
mod proxy;
mod serve;
pub mod shop;

#[allow(unused_imports)]
pub use erasing::{erase_events, erase_receipt, erased_table};
#[allow(unused_imports)]
pub use proxy::{CommitCutter, HoldProxy, MYSQL_COMMIT};
#[allow(unused_imports)]
pub use serve::ServeProcess;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use dsr_connector::config::Config;
use dsr_connector::demo::cluster::{ClusterOptions, TempCluster};
use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use dsr_connector::pb::{
    ExtractRequest, ExtractionStarted, Identity, Manifest, RowBatch, TableCompleted, Value,
    extract_response::Event, value::Kind,
};
use dsr_connector::{api, demo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// The subject key every test server uses, so tests can recompute subject ids.
pub const SUBJECT_KEY: &str = "test-subject-key-0123456789";

/// The cluster of this test binary, with the demo data in database `shop`.
pub fn cluster() -> &'static TempCluster {
    static CLUSTER: OnceLock<TempCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // Loading needs a runtime of its own: the caller may be inside a test's runtime.
        std::thread::spawn(|| {
            dsr_connector::store::postgres::tls::install_crypto_provider();
            let cluster = TempCluster::start(&ClusterOptions::default())
                .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL cluster: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(demo::load(&cluster, demo::DATABASE))
                .unwrap_or_else(|e| panic!("cannot load the demo data: {e:#}"));
            cluster
        })
        .join()
        .expect("cluster setup panicked")
    })
}

/// A plain SQL connection to the demo database of this binary's cluster.
pub async fn sql() -> tokio_postgres::Client {
    demo::connect(cluster(), demo::DATABASE).await.unwrap()
}

/// The demo config text for this binary's cluster, with `extra` TOML appended (extra
/// `[[sources.tables]]` entries join the demo source).
pub fn config_text(extra: &str) -> String {
    let mut text = demo::config_toml(cluster(), demo::DATABASE, "127.0.0.1:0".parse().unwrap());
    text.push('\n');
    text.push_str(extra);
    text
}

/// Parses config text with this cluster's password and the test subject key.
pub fn config(text: &str) -> Config {
    demo::config(cluster(), text, SUBJECT_KEY).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A server running in this test's runtime. Dropping it does not stop it; call `stop`.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The Prometheus listener, when started with [`TestServer::start_with_metrics`].
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Starts a server for `config` on a free loopback port.
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_on(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Starts a server for `config` on `listener`.
    pub fn start_on(config: Config, listener: TcpListener) -> TestServer {
        dsr_connector::store::postgres::tls::install_crypto_provider();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(api::run(Arc::new(config), listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            metrics_addr: None,
            shutdown: Some(tx),
            handle,
        }
    }

    /// Starts a server for `config` with its metrics on a listener of their own.
    pub async fn start_with_metrics(config: Config) -> TestServer {
        dsr_connector::store::postgres::tls::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(api::run_with(
            Arc::new(config),
            listener,
            Some(metrics_listener),
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            metrics_addr: Some(metrics_addr),
            shutdown: Some(tx),
            handle,
        }
    }

    /// Starts a server with the demo config.
    pub async fn demo() -> TestServer {
        TestServer::start(config(&config_text(""))).await
    }

    pub async fn client(&self) -> DsrConnectorServiceClient<Channel> {
        DsrConnectorServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Sends the shutdown signal and waits for the server to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.await.unwrap()
    }

    /// Sends the shutdown signal without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(self) -> anyhow::Result<()> {
        self.handle.await.unwrap()
    }
}

/// An Extract request for the demo source.
pub fn request(kind: &str, value: &str) -> ExtractRequest {
    ExtractRequest {
        source: "demo".into(),
        subject: Some(Identity {
            kind: kind.into(),
            value: value.into(),
        }),
        request_id: "test-dsr-1".into(),
        compliance_tag: "gdpr-art15".into(),
        ..Default::default()
    }
}

/// Everything a client saw of one Extract stream.
#[derive(Debug, Default)]
pub struct Extraction {
    pub started: Option<ExtractionStarted>,
    pub batches: Vec<RowBatch>,
    pub completed: Vec<TableCompleted>,
    pub table_started: Vec<dsr_connector::pb::TableStarted>,
    pub manifest: Option<Manifest>,
    /// The final non-OK status, if the stream failed (at the call or mid-stream).
    pub status: Option<tonic::Status>,
    /// Event kinds in arrival order: "started", "table_started", "batch", "completed",
    /// "manifest".
    pub order: Vec<&'static str>,
    /// The per-table events in arrival order, with their table.
    pub table_events: Vec<(&'static str, String)>,
}

impl Extraction {
    /// The rows of one table, over all its batches.
    pub fn rows(&self, table: &str) -> Vec<&Vec<Value>> {
        self.batches
            .iter()
            .filter(|b| b.table == table)
            .flat_map(|b| b.rows.iter().map(|r| &r.values))
            .collect()
    }

    /// Every value of one column of a table, over all its batches, located by the column
    /// descriptors of the plan.
    pub fn column(&self, table: &str, column: &str) -> Vec<Kind> {
        let planned = self
            .started
            .as_ref()
            .expect("a started event")
            .tables
            .iter()
            .find(|t| t.table == table)
            .unwrap_or_else(|| panic!("table {table} is not in the plan"));
        let i = planned
            .columns
            .iter()
            .position(|c| c.name == column)
            .unwrap_or_else(|| panic!("{table} has no column {column}"));
        self.rows(table)
            .iter()
            .map(|r| r[i].kind.clone().expect("a value with a kind"))
            .collect()
    }

    /// The status code, OK when the stream ended well.
    pub fn code(&self) -> tonic::Code {
        self.status
            .as_ref()
            .map(|s| s.code())
            .unwrap_or(tonic::Code::Ok)
    }

    pub fn message(&self) -> String {
        self.status
            .as_ref()
            .map(|s| s.message().to_owned())
            .unwrap_or_default()
    }

    /// The message with every error it came from (a transport error's cause, for example).
    pub fn message_and_sources(&self) -> String {
        let mut text = self.message();
        let mut source = self
            .status
            .as_ref()
            .and_then(|s| std::error::Error::source(s));
        while let Some(error) = source {
            text.push_str(&format!(" <- {error:?}"));
            source = error.source();
        }
        text
    }
}

/// The status a streaming call ends with: its refusal, or the error that ends its stream.
/// Panics, naming `what`, if the stream ends OK.
pub async fn failure<T>(
    call: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    what: &str,
) -> tonic::Status {
    let mut stream = match call {
        Err(status) => return status,
        Ok(response) => response.into_inner(),
    };
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{what} ended OK"),
            Err(status) => return status,
        }
    }
}

/// Runs one Extract and collects the whole stream.
pub async fn extract(
    client: &mut DsrConnectorServiceClient<Channel>,
    req: ExtractRequest,
) -> Extraction {
    let mut out = Extraction::default();
    let mut stream = match client.extract(req).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            out.status = Some(status);
            return out;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => match message.event {
                Some(Event::Started(s)) => {
                    out.order.push("started");
                    out.started = Some(s);
                }
                Some(Event::TableStarted(t)) => {
                    out.order.push("table_started");
                    out.table_events.push(("table_started", t.table.clone()));
                    out.table_started.push(t);
                }
                Some(Event::Batch(b)) => {
                    out.order.push("batch");
                    out.table_events.push(("batch", b.table.clone()));
                    out.batches.push(b);
                }
                Some(Event::TableCompleted(c)) => {
                    out.order.push("completed");
                    out.table_events.push(("completed", c.table.clone()));
                    out.completed.push(c);
                }
                Some(Event::Manifest(m)) => {
                    out.order.push("manifest");
                    out.manifest = Some(m);
                }
                None => panic!("a message without an event"),
            },
            Ok(None) => return out,
            Err(status) => {
                out.status = Some(status);
                return out;
            }
        }
    }
}

/// A value in a text form that direct SQL can produce too (see `sql_text_expr`).
pub fn value_text(value: &Value) -> Option<String> {
    Some(match value.kind.as_ref().expect("a value without a kind") {
        Kind::NullValue(_) => return None,
        Kind::BoolValue(b) => b.to_string(),
        Kind::Int64Value(i) => i.to_string(),
        Kind::DoubleValue(d) => d.to_string(),
        Kind::StringValue(s)
        | Kind::DecimalValue(s)
        | Kind::JsonValue(s)
        | Kind::DateValue(s)
        | Kind::TimestampText(s) => s.clone(),
        Kind::BytesValue(b) => format!("\\x{}", hex::encode(b)),
        Kind::TimestampValue(t) => (t.seconds * 1_000_000 + i64::from(t.nanos) / 1000).to_string(),
    })
}

/// The SQL expression that renders column `c` of type `pg_type` like [`value_text`].
pub fn sql_text_expr(column: &str, pg_type: &str) -> String {
    let c = format!("\"{column}\"");
    if pg_type.starts_with("timestamp") {
        format!("(extract(epoch from {c}) * 1000000)::bigint::text")
    } else if pg_type.ends_with("[]") {
        format!("to_jsonb({c})::text")
    } else if pg_type == "inet" {
        // As psql shows it: a host without its /32.
        format!("abbrev({c})")
    } else {
        format!("{c}::text")
    }
}

/// Polls `check` up to `tries` times, 100 ms apart, until it returns true. Counts tries, not
/// time, so a slow machine only makes it slower, never flaky.
pub async fn eventually<F, Fut>(tries: u32, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// The sessions a server opened with `application_name = app`: (state, query) pairs.
pub async fn service_sessions(sql: &tokio_postgres::Client, app: &str) -> Vec<(String, String)> {
    sql.query(
        "SELECT coalesce(state, ''), query FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
        &[&app],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A fresh, empty database `name` of this binary's cluster (one of that name is dropped,
/// its connections ended), and a connection to it.
pub async fn empty_database(name: &str) -> tokio_postgres::Client {
    let admin = demo::connect(cluster(), "postgres").await.unwrap();
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    demo::connect(cluster(), name).await.unwrap()
}

/// A fresh database `name` of this binary's cluster with the demo shop loaded (one of that
/// name is dropped, its connections ended), and a connection to it.
pub async fn demo_database(name: &str) -> tokio_postgres::Client {
    let admin = demo::connect(cluster(), "postgres").await.unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    demo::load(cluster(), name).await.unwrap();
    demo::connect(cluster(), name).await.unwrap()
}

/// Runs SQL on the demo database from a thread of its own (usable inside `OnceLock` init).
pub fn run_sql_blocking(statements: &str) {
    let statements = statements.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let db = demo::connect(cluster(), demo::DATABASE).await.unwrap();
                db.batch_execute(&statements).await.unwrap();
            })
    })
    .join()
    .expect("SQL setup panicked");
}

/// Takes the variables that `cargo test` sets for a test binary out of a child's
/// environment, so that a child which builds (`scripts/demo.sh` runs `cargo run`) sees what a
/// shell would: a build script that tracks one of them (`ring`'s tracks `CARGO_MANIFEST_DIR`)
/// would otherwise rebuild, and with it every crate above it, on each switch between the
/// suite and a shell. Settings a user gives cargo (`CARGO_HOME`, `CARGO_TARGET_DIR`,
/// `CARGO_INCREMENTAL`, ...) stay.
pub fn without_test_cargo_env(command: &mut std::process::Command) -> &mut std::process::Command {
    const SET_FOR_TESTS: [&str; 8] = [
        "CARGO_PKG_",
        "CARGO_BIN_EXE_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_TARGET_TMPDIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "CARGO" || SET_FOR_TESTS.iter().any(|p| name.starts_with(p)) {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// What PostgreSQL says became of transaction `xid` (`pg_xact_status`): "committed",
/// "aborted" or "in progress".
pub async fn xact_status(db: &tokio_postgres::Client, xid: &str) -> String {
    db.query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])
        .await
        .unwrap()
        .get(0)
}

/// A client tool from the test virtual environment (`DSR_TEST_VENV`, or `./.venv`), which
/// `scripts/test.sh` installs. Missing tools fail the test: client tests never skip.
pub fn venv_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("DSR_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.is_file(),
        "{} not found: run the tests with scripts/test.sh, which installs grpcurl and Python \
         grpcio into .venv (or run scripts/prereqs.sh --clients first)",
        path.display()
    );
    path
}

/// The hex SHA-256 of a bearer token, as `[[server.tokens]]` digests are written.
pub fn digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Inserts `block` (arrays of tables under [server]) after the [server] keys, before the first
/// top-level table of the data map.
pub fn with_server_block(text: &str, block: &str) -> String {
    let at = text
        .find("[[classification.categories]]")
        .or_else(|| text.find("[[sources]]"))
        .expect("a data map");
    format!("{}{block}\n{}", &text[..at], &text[at..])
}

pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

/// The Prometheus page of a metrics listener, over plain HTTP/1.1.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// A view whose rows pass only in the first statement of a transaction that reads it: the
/// COUNT (which goes out first) sees alice's four events, the SELECT none. A consistent
/// snapshot cannot produce a count mismatch on its own; this view does.
pub const SHIFTING_VIEW_SQL: &str = "
    CREATE FUNCTION first_statement_only() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
    DECLARE first text := current_setting('dsrtest.first_statement', true);
    BEGIN
        IF first IS NULL OR first = '' THEN
            PERFORM set_config('dsrtest.first_statement', statement_timestamp()::text, true);
            RETURN true;
        END IF;
        RETURN first = statement_timestamp()::text;
    END $$;
    CREATE VIEW shifting_events AS
        SELECT id, customer_id FROM events WHERE first_statement_only();";

/// A table `table` of `rows` rows for a new customer `email` (id `customer_id`), read
/// through a view `view` that sleeps 20 ms a row, so that a query is certainly still running when a
/// test acts on it. The view's filter runs after the index condition, so other subjects'
/// rows cost nothing.
pub fn slow_view_sql(view: &str, table: &str, customer_id: i64, email: &str, rows: i64) -> String {
    format!(
        "CREATE FUNCTION slow_pass(id bigint) RETURNS boolean LANGUAGE sql VOLATILE COST 1000
             AS $$ SELECT pg_sleep(0.02); SELECT id IS NOT NULL $$;
         CREATE TABLE {table} (id bigint PRIMARY KEY, customer_id bigint NOT NULL);
         CREATE INDEX ON {table} (customer_id);
         CREATE VIEW {view} AS SELECT id, customer_id FROM {table} WHERE slow_pass(id);
         INSERT INTO customers (id, email, full_name, created_at)
             VALUES ({customer_id}, '{email}', 'Slow Subject', now());
         INSERT INTO {table} SELECT i, {customer_id} FROM generate_series(1, {rows}) AS i;
         ANALYZE {table};"
    )
}

/// Parses `text` with callers that hold bearer tokens, each `(name, token, extra TOML of its
/// [[server.tokens]] entry)`, and this cluster's secrets (the audit key too).
pub fn config_with_tokens(text: &str, tokens: &[(&str, &str, &str)]) -> Config {
    let mut block = String::new();
    for (i, (name, _, extra)) in tokens.iter().enumerate() {
        block.push_str(&format!(
            "[[server.tokens]]\nname = \"{name}\"\nsha256_env = \"TOKEN_SHA_{i}\"\n{extra}\n\n"
        ));
    }
    let text = with_server_block(text, &block);
    let digests: Vec<String> = tokens.iter().map(|(_, token, _)| digest(token)).collect();
    Config::from_toml_str(&text, |var| match var {
        demo::PASSWORD_ENV => Some(cluster().password().to_owned()),
        "DSR_SUBJECT_KEY" => Some(SUBJECT_KEY.to_owned()),
        "DSR_AUDIT_KEY" => Some(demo::audit_key(SUBJECT_KEY)),
        other => other
            .strip_prefix("TOKEN_SHA_")
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| digests.get(i).cloned()),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every message of a Validate stream.
pub struct Validation {
    pub tables: Vec<dsr_connector::pb::TableCheck>,
    pub verdict: dsr_connector::pb::ValidationVerdict,
    /// The whole response, printed, for searching.
    pub text: String,
}

impl Validation {
    pub fn table(&self, name: &str) -> &dsr_connector::pb::TableCheck {
        self.tables
            .iter()
            .find(|t| t.table == name)
            .unwrap_or_else(|| panic!("no check for {name}: {:?}", self.tables))
    }
}

pub async fn validate(
    client: &mut DsrConnectorServiceClient<Channel>,
    req: dsr_connector::pb::ValidateRequest,
) -> Result<Validation, tonic::Status> {
    let mut stream = client.validate(req).await?.into_inner();
    let mut tables = Vec::new();
    let mut verdict = None;
    let mut text = String::new();
    while let Some(message) = stream.message().await? {
        text.push_str(&format!("{message:?}\n"));
        match message.event.unwrap() {
            dsr_connector::pb::validate_response::Event::Table(t) => tables.push(t),
            dsr_connector::pb::validate_response::Event::Verdict(v) => verdict = Some(v),
        }
    }
    Ok(Validation {
        tables,
        verdict: verdict.expect("a verdict ends the stream"),
        text,
    })
}

/// The shell commands of a `sh` block, as the shell reads them: a command goes on while a
/// line ends with `\` or a single quote is open; comments and blank lines are skipped.
pub fn shell_commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        let quote_open = current.matches('\'').count() % 2 == 1;
        if !quote_open && !line.trim_end().ends_with('\\') {
            commands.push(current.trim_end().to_owned());
            current.clear();
        }
    }
    assert!(
        current.is_empty(),
        "unterminated command in the README: {current}"
    );
    commands
}

/// The README and every page of `docs/`, by path relative to the repository.
pub fn documentation() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![("README.md".to_owned(), root.join("README.md"))];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs.into_iter().map(|p| {
        (
            format!("docs/{}", p.file_name().unwrap().to_string_lossy()),
            p,
        )
    }));
    pages
        .into_iter()
        .map(|(name, path)| (name, std::fs::read_to_string(path).unwrap()))
        .collect()
}

/// Every command of the `sh` blocks of the README and of `docs/` that mentions `needle`.
pub fn readme_commands_with(needle: &str) -> Vec<String> {
    let commands: Vec<String> = documentation()
        .iter()
        .flat_map(|(_, text)| {
            text.split("```sh\n")
                .skip(1)
                .filter_map(|rest| rest.split("\n```").next())
                .flat_map(shell_commands)
                .collect::<Vec<_>>()
        })
        .filter(|c| c.contains(needle))
        .collect();
    assert!(
        !commands.is_empty(),
        "no command of the README or docs/ mentions {needle}"
    );
    commands
}

/// Runs a README command as written, but for `replacements` (a deployment's paths and
/// placeholders for this test's), with `dsr-connector` on PATH as the binary under test.
pub fn run_readme_command(
    command: &str,
    replacements: &[(&str, String)],
    env: &[(&str, String)],
) -> std::process::Output {
    let out = run_readme_command_as_is(command, replacements, env);
    assert!(
        out.status.success(),
        "README command failed: {command}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run_readme_command`], for a command that the README says may fail: its output, whatever
/// its exit status.
pub fn run_readme_command_as_is(
    command: &str,
    replacements: &[(&str, String)],
    env: &[(&str, String)],
) -> std::process::Output {
    let mut command = command.to_owned();
    for (from, to) in replacements {
        assert!(command.contains(from), "{from} is not in: {command}");
        command = command.replace(from, to);
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .parent()
        .unwrap();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// A TCP relay to a server that counts the bytes the server sends: what crosses the wire,
/// compressed or not, whatever the client.
pub struct Relay {
    pub addr: SocketAddr,
    down: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = down.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                tokio::spawn(pump(from_client, to_server, None));
                tokio::spawn(pump(from_server, to_client, Some(counted.clone())));
            }
        });
        Relay { addr, down }
    }

    /// The bytes the server sent through the relay since the last call.
    pub fn take_bytes_down(&self) -> u64 {
        self.down.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies one direction of a relayed connection, counting bytes before they are passed on
/// (so that a client that has read them finds them counted).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: Option<Arc<std::sync::atomic::AtomicU64>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if let Some(counted) = &counted {
            counted.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
