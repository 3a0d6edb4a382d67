//! `dsr-connector request`: durable requests on a running server, from a terminal or a
//! script. `submit` files one (and with `--wait`, follows it), `status` shows where it stands
//! per source, `wait` follows it to its end with a line per source, `approve` shows an
//! erasure's previews and approves them, `cancel` stops it. `--out` copies a finished access
//! request's package from the package store, checking every file against its manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use super::ServerArgs;
use crate::pb::dsr_request_service_client::DsrRequestServiceClient;
use crate::pb::google::longrunning::operations_client::OperationsClient;
use crate::pb::google::longrunning::{
    CancelOperationRequest, GetOperationRequest, Operation, WaitOperationRequest, operation,
};
use crate::pb::{self, RequestKind, RequestProgress, RequestResult, RequestState};

/// `dsr-connector request ...`.
#[derive(clap::Subcommand)]
pub enum RequestCommand {
    /// Submit a request across sources; prints its operation name (requests/ID).
    Submit(Box<SubmitArgs>),
    /// Show where a request stands, per source.
    Status(OperationArgs),
    /// Follow a request to its end, a line per source; exits non-zero unless it succeeded.
    Wait(WaitArgs),
    /// Show an erasure request's previews and approve them (the digests shown).
    Approve(ApproveArgs),
    /// Cancel a request: its running work stops, and nothing half-done is kept.
    Cancel(OperationArgs),
}

/// Arguments of `request submit`. Not `Debug`: it holds the identity value.
#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The request's id (its idempotency key): submitting it again returns the same request.
    #[arg(long)]
    pub id: String,
    /// An erasure request (it waits for `request approve`); an access request otherwise.
    #[arg(long)]
    pub erasure: bool,
    #[command(flatten)]
    pub subject: super::SubjectArgs,
    /// A source to ask (repeatable); by default every source that declares the kind.
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// When the request is due (RFC 3339); by default the server's setting for the kind.
    #[arg(long)]
    pub due: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long)]
    pub compliance_tag: Option<String>,
    /// Follow the request to its end, as `request wait` does.
    #[arg(long)]
    pub wait: bool,
    /// With --wait, on an access request: copy its package here.
    #[arg(long, requires = "wait")]
    pub out: Option<PathBuf>,
    /// With --out: an age identity file that decrypts a sealed package as it is copied.
    #[arg(long, requires = "out")]
    pub identity: Option<PathBuf>,
}

/// A request named by its id.
#[derive(clap::Args)]
pub struct OperationArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The request's id.
    #[arg(long)]
    pub id: String,
}

#[derive(clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub operation: OperationArgs,
    /// How long to wait before giving up (the request goes on).
    #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub timeout: Duration,
    /// For an access request: copy its package here (a directory that must not exist).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --out: an age identity file (`AGE-SECRET-KEY-1...`) that decrypts a sealed
    /// package as it is copied.
    #[arg(long, requires = "out")]
    pub identity: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub operation: OperationArgs,
    /// Approve without asking (for scripts). Without it, the request id must be typed again
    /// at a terminal.
    #[arg(long)]
    pub yes: bool,
}

/// The clients of one server.
struct Clients {
    service: DsrRequestServiceClient<Channel>,
    operations: OperationsClient<Channel>,
    token: Option<String>,
}

impl Clients {
    fn new(server: &ServerArgs) -> anyhow::Result<Clients> {
        let channel = server.channel()?;
        Ok(Clients {
            service: DsrRequestServiceClient::new(channel.clone()),
            operations: OperationsClient::new(channel),
            token: server.token()?,
        })
    }

    fn call<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut call = tonic::Request::new(message);
        super::set_metadata(
            &mut call,
            &format!("cli-{}", uuid::Uuid::new_v4()),
            self.token.as_deref(),
        )?;
        Ok(call)
    }

    async fn get(&mut self, id: &str) -> anyhow::Result<Operation> {
        let call = self.call(GetOperationRequest { name: name(id) })?;
        Ok(self
            .operations
            .get_operation(call)
            .await
            .map_err(refused)?
            .into_inner())
    }
}

fn name(id: &str) -> String {
    format!("requests/{id}")
}

fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the server answered {:?}: {}",
        status.code(),
        status.message()
    )
}

/// Runs one `request` command.
pub async fn run(command: RequestCommand) -> anyhow::Result<()> {
    match command {
        RequestCommand::Submit(args) => submit(*args).await,
        RequestCommand::Status(args) => {
            let op = Clients::new(&args.server)?.get(&args.id).await?;
            show(&op);
            Ok(())
        }
        RequestCommand::Wait(args) => {
            let mut clients = Clients::new(&args.operation.server)?;
            let copy = args
                .out
                .as_deref()
                .map(|out| (out, args.identity.as_deref()));
            follow(&mut clients, &args.operation.id, args.timeout, copy).await
        }
        RequestCommand::Approve(args) => approve(args).await,
        RequestCommand::Cancel(args) => {
            let mut clients = Clients::new(&args.server)?;
            let call = clients.call(CancelOperationRequest {
                name: name(&args.id),
            })?;
            clients
                .operations
                .cancel_operation(call)
                .await
                .map_err(refused)?;
            show(&clients.get(&args.id).await?);
            Ok(())
        }
    }
}

async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let value = args.subject.value()?;
    let mut clients = Clients::new(&args.server)?;
    let call = clients.call(pb::SubmitRequestRequest {
        request_id: args.id.clone(),
        kind: if args.erasure {
            RequestKind::Erasure
        } else {
            RequestKind::Access
        } as i32,
        subject: Some(pb::Identity {
            kind: args.subject.kind.clone(),
            value,
        }),
        sources: args.sources.clone(),
        due_time: args.due.map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }),
        compliance_tag: args.compliance_tag.clone().unwrap_or_default(),
        more_identities: args.subject.more_identities()?,
    })?;
    let op = clients
        .service
        .submit_request(call)
        .await
        .map_err(refused)?
        .into_inner();
    println!("{}", op.name);
    if args.wait {
        let copy = args
            .out
            .as_deref()
            .map(|out| (out, args.identity.as_deref()));
        follow(&mut clients, &args.id, Duration::from_secs(24 * 3600), copy).await?;
    }
    Ok(())
}

/// Follows a request to its end (or `timeout`), a line per source whenever one moves.
async fn follow(
    clients: &mut Clients,
    id: &str,
    timeout: Duration,
    copy: Option<(&Path, Option<&Path>)>,
) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + timeout;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let op = loop {
        let call = clients.call(WaitOperationRequest {
            name: name(id),
            timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
        })?;
        let op = clients
            .operations
            .wait_operation(call)
            .await
            .map_err(refused)?
            .into_inner();
        for source in progress(&op).sources {
            let line = source_line(&source);
            if shown.get(&source.source) != Some(&line) {
                eprintln!("{line}");
                shown.insert(source.source.clone(), line);
            }
        }
        if op.done || progress(&op).state() == RequestState::AwaitingApproval {
            break op;
        }
        if tokio::time::Instant::now() >= until {
            bail!("request {id} has not ended after {timeout:?}; it goes on");
        }
    };
    show(&op);
    match &op.result {
        Some(operation::Result::Response(any)) => {
            if let Some((out, identity)) = copy {
                let result = RequestResult::decode(any.value.as_slice())?;
                let identities = identity.map(read_identities).transpose()?;
                copy_package(&result, out, identities.as_deref())?;
                println!("package copied to {} and checked", out.display());
            }
            Ok(())
        }
        Some(operation::Result::Error(status)) => bail!(
            "request {id} ended {:?}: {}",
            tonic::Code::from_i32(status.code),
            status.message
        ),
        None => {
            println!("request {id} waits for approval: dsr-connector request approve --id {id}");
            Ok(())
        }
    }
}

fn progress(op: &Operation) -> RequestProgress {
    op.metadata
        .as_ref()
        .and_then(|m| RequestProgress::decode(m.value.as_slice()).ok())
        .unwrap_or_default()
}

fn state_name(state: i32) -> &'static str {
    RequestState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("REQUEST_STATE_"))
        .unwrap_or("?")
}

fn source_line(source: &pb::SourceProgress) -> String {
    let mut line = format!(
        "  {:<20} {:<18} attempt {:<3} {} row(s) in {} table(s)",
        source.source,
        state_name(source.state),
        source.attempts,
        source.rows,
        source.tables
    );
    if !source.last_reason.is_empty() {
        line.push_str(&format!("; last failure {}", source.last_reason));
    }
    line
}

/// Prints a request for a person: its state and due date, then a line per source.
fn show(op: &Operation) {
    let p = progress(op);
    let due = p
        .due_time
        .map(|t| {
            chrono::DateTime::from_timestamp(t.seconds, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    println!(
        "{}: {} {}, due {due}",
        op.name,
        RequestKind::try_from(p.kind)
            .map(|k| k.as_str_name().trim_start_matches("REQUEST_KIND_"))
            .unwrap_or("?"),
        state_name(p.state),
    );
    for source in &p.sources {
        println!("{}", source_line(source));
    }
    if let Some(operation::Result::Response(any)) = &op.result
        && let Ok(result) = RequestResult::decode(any.value.as_slice())
        && !result.package_path.is_empty()
    {
        println!(
            "  package {} (sha256 {})",
            result.package_path, result.package_sha256
        );
    }
}

async fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let id = &args.operation.id;
    let mut clients = Clients::new(&args.operation.server)?;
    let op = clients.get(id).await?;
    let p = progress(&op);
    if p.state() != RequestState::AwaitingApproval {
        bail!(
            "request {id} is {}, not awaiting approval",
            state_name(p.state)
        );
    }
    let mut digests = BTreeMap::new();
    for source in &p.sources {
        if source.state() != RequestState::AwaitingApproval {
            continue;
        }
        println!(
            "Source {} ({} {}):",
            source.source, source.identity_kind, source.identity_path
        );
        if let Some(preview) = &source.preview {
            super::erase::show(preview);
        }
        digests.insert(source.folder.clone(), source.preview_digest.clone());
    }
    if !args.yes {
        super::confirm(
            "To erase what these previews show, type the request id again: ",
            id,
            "approved",
        )?;
    }
    let call = clients.call(pb::ApproveRequestRequest {
        name: name(id),
        digests,
    })?;
    let op = clients
        .service
        .approve_request(call)
        .await
        .map_err(refused)?
        .into_inner();
    show(&op);
    Ok(())
}

/// The identities of an age identity file.
fn read_identities(path: &Path) -> anyhow::Result<Vec<Box<dyn age::Identity>>> {
    age::IdentityFile::from_file(path.display().to_string())
        .with_context(|| format!("--identity {}", path.display()))?
        .into_identities()
        .map_err(|e| anyhow::anyhow!("--identity {}: {e}", path.display()))
}

/// A sealed file's plaintext.
fn decrypt(bytes: &[u8], identities: &[Box<dyn age::Identity>]) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let decryptor = age::Decryptor::new_buffered(bytes)?;
    let mut reader = decryptor.decrypt(identities.iter().map(|i| i.as_ref()))?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain)?;
    Ok(plain)
}

/// Copies a package from the package store (this machine must see it: the same machine, or
/// the shared volume) to `out`, checking every file against the manifest's SHA-256 and the
/// manifest against the request's; with `identities`, sealed files are decrypted as they are
/// copied (and lose their `.age`).
fn copy_package(
    result: &RequestResult,
    out: &Path,
    identities: Option<&[Box<dyn age::Identity>]>,
) -> anyhow::Result<()> {
    let from = Path::new(&result.package_path);
    anyhow::ensure!(!out.exists(), "{} already exists", out.display());
    let manifest = std::fs::read(from.join("manifest.json")).with_context(|| {
        format!(
            "the package store is not visible from here ({}); copy the package from the \
             service's package directory",
            from.display()
        )
    })?;
    anyhow::ensure!(
        hex::encode(Sha256::digest(&manifest)) == result.package_sha256,
        "the package's manifest is not the one the request recorded"
    );
    let listed: serde_json::Value = serde_json::from_slice(&manifest)?;
    std::fs::create_dir_all(out)?;
    for file in ["manifest.json", "README.txt"] {
        std::fs::copy(from.join(file), out.join(file))?;
    }
    for source in listed["sources"].as_array().into_iter().flatten() {
        for file in source["files"].as_array().into_iter().flatten() {
            let path = file["path"].as_str().unwrap_or_default();
            anyhow::ensure!(
                !path.split('/').any(|part| part == ".." || part.is_empty()),
                "the manifest names a path outside the package: {path}"
            );
            let bytes = std::fs::read(from.join(path))?;
            anyhow::ensure!(
                Some(hex::encode(Sha256::digest(&bytes)).as_str()) == file["sha256"].as_str(),
                "{path} is not what the manifest says"
            );
            let sealed = path.strip_suffix(crate::cli::extract::package::SEALED_SUFFIX);
            let (to, bytes) = match (sealed, identities) {
                (Some(plain), Some(identities)) => (
                    out.join(plain),
                    decrypt(&bytes, identities).with_context(|| format!("decrypting {path}"))?,
                ),
                _ => (out.join(path), bytes),
            };
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&to, bytes)?;
        }
    }
    Ok(())
}
