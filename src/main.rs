//! The `dsr-connector` command: `serve`, `check-config`, `demo`, `extract` (a client),
//! `audit verify` and `dead-letters list`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dsr_connector::config::Config;
#[cfg(feature = "demo")]
use dsr_connector::demo;
use dsr_connector::{api, observability::telemetry};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    version,
    about = "Answers data-subject requests (access and erasure) against PostgreSQL and MariaDB/MySQL over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured sources.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file (syntax, keys, secrets, data map) without serving.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file, for editors (taplo, Even Better TOML).
    ConfigSchema,
    /// Start a throwaway PostgreSQL with demo data and serve it as source `demo`.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the gRPC server listens.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
    /// Call Extract on a running server and write the answer as a data package: one
    /// JSON-lines file per table, manifest.json and a README.txt for the data subject.
    Extract(Box<dsr_connector::cli::extract::ExtractArgs>),
    /// Erase one subject on a running server: preview what each table would lose, confirm by
    /// typing the identity again (or --yes), then erase with the preview's digest.
    Erase(Box<dsr_connector::cli::erase::EraseArgs>),
    /// Draft the data map of a configured source from its live database: tables, identities,
    /// references and a category for every column, each with its evidence. Writes the config
    /// with the draft in place of the source's tables.
    Discover(Box<dsr_connector::cli::discover::DiscoverArgs>),
    /// Propose links between the configured sources ([[links]]): columns of one source's
    /// identity tables whose values are identities that other sources declare, from names,
    /// types and the values they have in common (compared as keyed hashes, never kept).
    DiscoverLinks(Box<dsr_connector::cli::discover::DiscoverLinksArgs>),
    /// Durable requests across sources on a running server: submit, status, wait, approve,
    /// cancel.
    Request {
        #[command(subcommand)]
        command: dsr_connector::cli::request::RequestCommand,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Read the dead-letter queue.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Print dead letters as JSON lines, oldest first.
    List {
        /// The dead-letter file (`[server.dead_letters] path`), or --control-url-env.
        #[arg(required_unless_present = "control_url_env")]
        file: Option<PathBuf>,
        /// Environment variable holding the control database's connection string.
        #[arg(long)]
        control_url_env: Option<String>,
        /// Only those at or after this time (RFC 3339, e.g. 2026-11-28T00:00:00Z).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this category: coercion, schema_drift, integrity, transport, deadline,
        /// authorization, internal.
        #[arg(long)]
        category: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that an audit log is whole: every record in order, unedited, under the key, and
    /// none cut from the end. Exits non-zero and names the first bad record.
    Verify {
        /// The audit log file (or, with --control-url-env, a replica's chain in the control
        /// database).
        #[arg(required_unless_present = "control_url_env")]
        file: Option<PathBuf>,
        /// Environment variable holding the control database's connection string.
        #[arg(long, requires = "replica")]
        control_url_env: Option<String>,
        /// The replica whose chain to verify in the control database.
        #[arg(long)]
        replica: Option<String>,
        /// Environment variable holding the audit key.
        #[arg(long, default_value = dsr_connector::config::DEFAULT_AUDIT_KEY_ENV)]
        key_env: String,
        /// A file holding the audit key (instead of the environment variable).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dsr_connector::store::postgres::tls::install_crypto_provider();

    let result =
        match cli.command {
            Command::ConfigSchema => {
                print!("{}", dsr_connector::config::schema::config_schema());
                Ok(())
            }
            Command::CheckConfig { file } => {
                telemetry::init(None, telemetry::json_logs(None)).and_then(|_| check_config(&file))
            }
            Command::Serve { config } => Config::load(&config)
                .map_err(anyhow::Error::from)
                .and_then(|config| {
                    let threads = config.server.worker_threads;
                    runtime(threads).and_then(|rt| rt.block_on(serve(config)))
                }),
            #[cfg(feature = "demo")]
            Command::Demo { listen } => runtime(None).and_then(|rt| rt.block_on(run_demo(listen))),
            Command::Extract(args) => runtime(None).and_then(|rt| rt.block_on(extract(*args))),
            Command::Erase(args) => runtime(None)
                .and_then(|rt| rt.block_on(dsr_connector::cli::erase::run(*args)))
                .map(|_| ()),
            Command::Request { command } => {
                runtime(None).and_then(|rt| rt.block_on(dsr_connector::cli::request::run(command)))
            }
            Command::Discover(args) => telemetry::init(None, telemetry::json_logs(None))
                .and_then(|_| runtime(None))
                .and_then(|rt| rt.block_on(dsr_connector::cli::discover::run(*args))),
            Command::DiscoverLinks(args) => telemetry::init(None, telemetry::json_logs(None))
                .and_then(|_| runtime(None))
                .and_then(|rt| rt.block_on(dsr_connector::cli::discover::run_links(*args))),
            Command::Audit {
                command:
                    AuditCommand::Verify {
                        file,
                        control_url_env,
                        replica,
                        key_env,
                        key_file,
                    },
            } => audit_verify(
                Log::of(file, control_url_env, replica),
                &key_env,
                key_file.as_deref(),
            ),
            Command::DeadLetters {
                command:
                    DeadLetterCommand::List {
                        file,
                        control_url_env,
                        since,
                        category,
                    },
            } => dead_letters_list(
                Log::of(file, control_url_env, None),
                since,
                category.as_deref(),
            ),
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime: one worker thread per core, or `server.worker_threads`.
fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    Ok(builder.enable_all().build()?)
}

async fn extract(args: dsr_connector::cli::extract::ExtractArgs) -> anyhow::Result<()> {
    let written = dsr_connector::cli::extract::run(args).await?;
    println!(
        "{}: {} row(s) from {} table(s), every count verified (extraction {})",
        written.path.display(),
        written.rows,
        written.tables,
        written.extraction_id
    );
    Ok(())
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let tables: usize = config.sources.iter().map(|s| s.tables.len()).sum();
    println!(
        "{}: ok ({} source(s), {tables} mapped table(s))",
        file.display(),
        config.sources.len()
    );
    if config.server.audit.is_none() {
        println!("warning: no [server.audit]: calls will not be recorded in an audit log");
    }
    for source in &config.sources {
        for table in source.tables_without_erase_policy() {
            println!(
                "warning: source '{}', table '{table}': no erase policy, while other tables of \
                 the source have one; Erase refuses any subject that reaches it",
                source.name
            );
        }
    }
    Ok(())
}

/// Where the command-line tools read records: a file, or the control database.
enum Log {
    File(PathBuf),
    Control {
        url_env: String,
        replica: Option<String>,
    },
}

impl Log {
    fn of(file: Option<PathBuf>, control_url_env: Option<String>, replica: Option<String>) -> Log {
        match (control_url_env, file) {
            (Some(url_env), _) => Log::Control { url_env, replica },
            (None, Some(file)) => Log::File(file),
            (None, None) => unreachable!("clap requires one of them"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Log::File(file) => file.display().to_string(),
            Log::Control { replica, .. } => match replica {
                Some(replica) => format!("control database, replica {replica}"),
                None => "control database".to_owned(),
            },
        }
    }

    /// Connects to the control database and runs `read` on it.
    fn read_control<T>(
        url_env: &str,
        read: impl AsyncFnOnce(&dsr_connector::records::control::ControlClient) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        let url = std::env::var(url_env).map_err(|_| {
            anyhow::anyhow!("environment variable {url_env} (the control database) is not set")
        })?;
        let control =
            dsr_connector::records::control::Control::from_url(&url).map_err(anyhow::Error::msg)?;
        runtime(Some(1))?.block_on(async {
            let client = control.connect().await.map_err(anyhow::Error::msg)?;
            read(&client).await.map_err(anyhow::Error::msg)
        })
    }
}

fn audit_verify(log: Log, key_env: &str, key_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let key = match key_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--key-file {}: {e}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => std::env::var(key_env).map_err(|_| {
            anyhow::anyhow!("environment variable {key_env} (the audit key) is not set")
        })?,
    };
    let verified = match &log {
        Log::File(file) => dsr_connector::records::audit::verify(file, key.as_bytes()),
        Log::Control { url_env, replica } => {
            let replica = replica.clone().unwrap_or_default();
            let (lines, head) =
                Log::read_control(url_env, async |client| client.audit_lines(&replica).await)?;
            dsr_connector::records::audit::verify_control(&lines, head, key.as_bytes())
        }
    };
    let file = log.describe();
    match verified {
        Ok(report) => {
            let segments = match report.segments {
                0 | 1 => String::new(),
                n => format!(" in {n} segments"),
            };
            println!(
                "{file}: ok ({} records{segments}, last hash {})",
                report.records,
                if report.last_hash.is_empty() {
                    "-"
                } else {
                    &report.last_hash
                }
            );
            if report.torn_tail {
                println!(
                    "note: the log ends in a torn line (a write cut short by a crash); the \
                     records before it verify, and the service cuts it off when it starts"
                );
            }
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!("{file}: {error}")),
    }
}

fn dead_letters_list(
    log: Log,
    since: Option<chrono::DateTime<chrono::Utc>>,
    category: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(category) = category
        && !dsr_connector::records::deadletter::CATEGORIES.contains(&category)
    {
        anyhow::bail!(
            "--category: '{category}' is not one of {}",
            dsr_connector::records::deadletter::CATEGORIES.join(", ")
        );
    }
    let letters = match &log {
        Log::File(file) => dsr_connector::records::deadletter::read(file, since, category)
            .map_err(anyhow::Error::msg)?,
        Log::Control { url_env, .. } => {
            let lines =
                Log::read_control(url_env, async |client| client.dead_letter_lines().await)?;
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            dsr_connector::records::deadletter::select(&lines, since, category)
                .map_err(|(i, e)| anyhow::anyhow!("dead letter {}: {e}", i + 1))?
        }
    };
    for letter in &letters {
        println!("{}", serde_json::to_string(letter)?);
    }
    eprintln!("{} dead letter(s)", letters.len());
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let telemetry = telemetry::init(
        telemetry::otlp_endpoint(config.server.otlp_endpoint.as_deref()),
        telemetry::json_logs(config.server.log_format.as_deref()),
    )?;
    let config = Arc::new(config);
    let listener = TcpListener::bind(config.server.listen).await?;
    let served = api::run(config, listener, shutdown_signal()).await;
    telemetry.shutdown().await;
    served
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(feature = "demo")]
async fn run_demo(listen: SocketAddr) -> anyhow::Result<()> {
    let telemetry = telemetry::init(telemetry::otlp_endpoint(None), telemetry::json_logs(None))?;
    eprintln!("starting a throwaway PostgreSQL cluster ...");
    let cluster = tokio::task::spawn_blocking(|| {
        demo::cluster::TempCluster::start(&demo::cluster::ClusterOptions::default())
    })
    .await??;
    eprintln!(
        "PostgreSQL from {} on 127.0.0.1:{}; loading demo data ...",
        cluster.bindir().display(),
        cluster.port()
    );
    demo::load(&cluster, demo::DATABASE).await?;
    // The audit log lives in a temporary directory of its own, removed with the demo.
    let audit_dir = tempfile::Builder::new()
        .prefix("dsr-demo-audit-")
        .tempdir()?;
    let audit_path = audit_dir.path().join("audit.log");
    // Durable requests keep their queue in the cluster's `postgres` database, and access
    // packages in the same temporary directory.
    let text = format!(
        "{}\n[server.audit]\npath = {:?}\n\n[server.control]\nurl_env = \"{}\"\n\n\
         [server.requests]\npackage_dir = {:?}\n",
        demo::config_toml(&cluster, demo::DATABASE, listen),
        audit_path.display().to_string(),
        demo::CONTROL_URL_ENV,
        audit_dir.path().join("packages").display().to_string(),
    );
    let subject_key = uuid::Uuid::new_v4().simple().to_string();
    let config = Arc::new(demo::config(&cluster, &text, &subject_key)?);
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen}: {e} (try --listen 127.0.0.1:0)")
    })?;
    let addr = listener.local_addr()?;
    print_demo_help(addr);
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "dsr-connector".to_owned());
    println!(
        "  # the demo's audit log, one record per call (its key is a throwaway one)\n  \
         DSR_AUDIT_KEY={} {exe} audit verify {}\n",
        demo::audit_key(&subject_key),
        audit_path.display()
    );
    let served = api::run(config, listener, shutdown_signal()).await;
    eprintln!("removing the demo cluster ...");
    drop(cluster);
    drop(audit_dir);
    telemetry.shutdown().await;
    served
}

#[cfg(feature = "demo")]
fn print_demo_help(addr: SocketAddr) {
    println!(
        r#"
dsr-connector demo is serving source "demo" on {addr}  (Ctrl-C stops it and removes all data)

  # list services and describe the API (server reflection)
  grpcurl -plaintext {addr} list
  grpcurl -plaintext {addr} describe dsr.v1.DsrConnectorService

  # everything the demo shop holds about alice@example.com, as a stream
  grpcurl -plaintext -max-time 30 -d '{{"source": "demo", "subject": {{"kind": "email", "value": "{subject}"}}, "request_id": "dsr-0001", "compliance_tag": "gdpr-art15"}}' {addr} dsr.v1.DsrConnectorService/Extract

  # only her orders and their items, by customer id, two rows per batch
  grpcurl -plaintext -max-time 30 -d '{{"source": "demo", "subject": {{"kind": "customer_id", "value": "1"}}, "tables": ["orders", "order_items"], "batch_size": 2}}' {addr} dsr.v1.DsrConnectorService/Extract

  # the schema gate table by table, then a dry run for alice (counts and findings, no values)
  grpcurl -plaintext -d '{{"source": "demo"}}' {addr} dsr.v1.DsrConnectorService/Validate
  grpcurl -plaintext -max-time 30 -d '{{"source": "demo", "subject": {{"kind": "email", "value": "{subject}"}}}}' {addr} dsr.v1.DsrConnectorService/Validate

  # one durable request across every source that knows e-mail addresses, then its result
  grpcurl -plaintext -d '{{"request_id": "dsr-0002", "kind": "REQUEST_KIND_ACCESS", "subject": {{"kind": "email", "value": "{subject}"}}}}' {addr} dsr.v1.DsrRequestService/SubmitRequest
  grpcurl -plaintext -max-time 70 -d '{{"name": "requests/dsr-0002", "timeout": "60s"}}' {addr} google.longrunning.Operations/WaitOperation

  # health
  grpcurl -plaintext {addr} grpc.health.v1.Health/Check
"#,
        subject = demo::SUBJECT
    );
}
