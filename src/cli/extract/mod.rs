//! `dsr-connector extract`: a client for one-off requests. It calls `Extract` on a running
//! server and writes the answer as a data package (see [`package`]), with a progress bar per
//! table on a terminal.
//!
//! It behaves as the proto asks of every client: it sets a deadline, sends `x-request-id` and
//! a bearer token, retries UNAVAILABLE with backoff (waiting at least what
//! `grpc-retry-pushback-ms` asks), and stops on every other error, leaving nothing behind.

pub mod package;
pub mod render;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use crate::pb::{self, extract_response::Event};
use package::{Package, Written};

/// Arguments of `dsr-connector extract`. Not `Debug`: it holds the identity value.
#[derive(clap::Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub call: super::CallArgs,
    /// The package directory to create. It must not exist.
    #[arg(long)]
    pub out: PathBuf,
    /// Only this table (repeatable). By default every table the identity reaches.
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// How long the whole request may take, retries included.
    #[arg(long, default_value = "10m", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub deadline: Duration,
    /// Attempts in all when the server answers UNAVAILABLE.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts: u32,
    /// No progress or per-table lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Ask for the stream compressed (`gzip` or `zstd`), for a slow or metered link. The
    /// server compresses when it offers the encoding (`server.compression`).
    #[arg(long, value_enum)]
    pub compress: Option<crate::config::Compression>,
}

/// Why an attempt failed.
enum Failure {
    /// The server said UNAVAILABLE: worth another attempt, after at least this long.
    Retryable(tonic::Status, Duration),
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Fatal(e)
    }
}

/// Runs `dsr-connector extract`.
pub async fn run(args: ExtractArgs) -> anyhow::Result<Written> {
    let value = args.call.value()?;
    let token = args.call.token()?;
    if args.out.exists() {
        bail!(
            "{} already exists; choose a new directory for the package",
            args.out.display()
        );
    }
    let request_id = args.call.request_id();
    let request = pb::ExtractRequest {
        source: args.call.source.clone(),
        subject: Some(pb::Identity {
            kind: args.call.subject.kind.clone(),
            value,
        }),
        batch_size: 0,
        request_id: request_id.clone(),
        compliance_tag: args.call.compliance_tag.clone().unwrap_or_default(),
        tables: args.tables.clone(),
        more_identities: args.call.subject.more_identities()?,
    };
    let channel = args.call.channel()?;
    let mut client = DsrConnectorServiceClient::new(channel);
    if let Some(compression) = args.compress {
        client = client.accept_compressed(compression.encoding());
    }
    let deadline = Instant::now() + args.deadline;
    let progress = Progress::new(args.quiet);
    // Exponential backoff with jitter (backon, as the server's own retries), from 0.5 s to
    // 30 s, and never shorter than the server's pushback.
    let mut delays = crate::resilience::retry::RetryPolicy {
        attempts: args.attempts,
        min_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
    }
    .delays();
    for attempt in 1..=args.attempts {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(left);
        super::set_metadata(&mut call, &request_id, token.as_deref())?;
        match attempt_once(&mut client, call, &args, &progress).await {
            Ok(written) => return Ok(written),
            Err(Failure::Retryable(status, pushback)) if attempt < args.attempts => {
                let Some(backoff) = delays.next_before(None) else {
                    return Err(status_error(&status));
                };
                let wait = backoff.max(pushback);
                if Instant::now() + wait >= deadline {
                    return Err(status_error(&status));
                }
                progress.note(&format!(
                    "attempt {attempt} of {}: {}; trying again in {} ms",
                    args.attempts,
                    status_line(&status),
                    wait.as_millis()
                ));
                tokio::time::sleep(wait).await;
            }
            Err(Failure::Retryable(status, _)) => return Err(status_error(&status)),
            Err(Failure::Fatal(e)) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

/// One call: the stream, written to a fresh package.
async fn attempt_once(
    client: &mut DsrConnectorServiceClient<Channel>,
    call: tonic::Request<pb::ExtractRequest>,
    args: &ExtractArgs,
    progress: &Progress,
) -> Result<Written, Failure> {
    let mut package = Package::create(&args.out)?;
    let mut stream = client.extract(call).await.map_err(classify)?.into_inner();
    let mut bar: Option<ProgressBar> = None;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "the stream ended without a manifest; nothing was written"
                )));
            }
            Err(status) => {
                if let Some(bar) = bar.take() {
                    bar.abandon();
                }
                return Err(classify(status));
            }
        };
        let contract = |e: anyhow::Error| {
            Failure::Fatal(e.context("the server's stream broke the contract; nothing was written"))
        };
        match message.event {
            Some(Event::Started(started)) => package.start(&started).map_err(contract)?,
            Some(Event::TableStarted(table)) => {
                let expected = package.table_started(&table).map_err(contract)?;
                bar = Some(progress.table(&table.table, expected));
            }
            Some(Event::Batch(batch)) => {
                let rows = package.batch(&batch).map_err(contract)?;
                if let Some(bar) = &bar {
                    bar.inc(rows);
                }
            }
            Some(Event::TableCompleted(done)) => {
                package.table_completed(&done).map_err(contract)?;
                if let Some(bar) = bar.take() {
                    bar.finish();
                }
                progress.completed(&done);
            }
            Some(Event::Manifest(manifest)) => {
                return package.finish(&manifest).map_err(contract);
            }
            None => {
                return Err(contract(anyhow::anyhow!(
                    "a message of a kind this client does not know; upgrade it"
                )));
            }
        }
    }
}

/// UNAVAILABLE is retried; everything else stops the command.
fn classify(status: tonic::Status) -> Failure {
    if status.code() == tonic::Code::Unavailable {
        let pushback = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        Failure::Retryable(status, pushback)
    } else {
        Failure::Fatal(status_error(&status))
    }
}

fn status_line(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn status_error(status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the server answered {}; nothing was written",
        status_line(status)
    )
}

/// What the command shows while it runs: bars on a terminal, a line per table otherwise.
struct Progress {
    bars: Option<MultiProgress>,
    lines: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            bars: (!quiet && terminal)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            lines: !quiet && !terminal,
        }
    }

    fn table(&self, table: &str, expected: u64) -> ProgressBar {
        let Some(bars) = &self.bars else {
            return ProgressBar::hidden();
        };
        let bar = bars.add(ProgressBar::new(expected));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} rows {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(table.to_owned());
        bar
    }

    fn completed(&self, done: &pb::TableCompleted) {
        if self.lines {
            eprintln!(
                "{}: {} row(s){}, count verified",
                done.table,
                done.row_count,
                if done.rejected_count > 0 {
                    format!(" ({} left out)", done.rejected_count)
                } else {
                    String::new()
                }
            );
        }
    }

    fn note(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}
