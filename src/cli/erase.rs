//! `dsr-connector erase`: erases one subject on a running server, as a person at a terminal
//! should: it previews first and shows what each table would lose, asks for the identity to
//! be typed again, and only then erases, confirmed by the preview's digest (so that rows that
//! changed in between are not erased unseen). `--yes` skips the question, for scripts.

use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use crate::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use crate::pb::{self, erase_response::Event};

/// Arguments of `dsr-connector erase`. Not `Debug`: it holds the identity value.
#[derive(clap::Args)]
pub struct EraseArgs {
    /// The server, source and subject (the token needs the Erase scope).
    #[command(flatten)]
    pub call: super::CallArgs,
    /// Only preview: show what would be erased, and change nothing.
    #[arg(long, conflicts_with = "yes")]
    pub preview: bool,
    /// Erase without asking (for scripts). Without it, the identity must be typed again at a
    /// terminal.
    #[arg(long)]
    pub yes: bool,
    /// How long each call may take.
    #[arg(long, default_value = "2m", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub deadline: Duration,
}

/// Runs `dsr-connector erase`: the preview's receipt, then (unless `--preview`) the
/// erasure's.
pub async fn run(args: EraseArgs) -> anyhow::Result<pb::ErasureReceipt> {
    let value = args.call.value()?;
    let token = args.call.token()?;
    let request_id = args.call.request_id();
    let mut client = DsrConnectorServiceClient::new(args.call.channel()?);
    let mut request = pb::EraseRequest {
        source: args.call.source.clone(),
        subject: Some(pb::Identity {
            kind: args.call.subject.kind.clone(),
            value: value.clone(),
        }),
        request_id: request_id.clone(),
        compliance_tag: args.call.compliance_tag.clone().unwrap_or_default(),
        dry_run: true,
        preview_digest: String::new(),
    };
    let preview = call(&mut client, &request, &request_id, token.as_deref(), &args).await?;
    println!("Preview of erasure {}:", preview.erasure_id);
    show(&preview);
    if args.preview {
        return Ok(preview);
    }
    if preview.rows_deleted + preview.rows_masked == 0 {
        println!("Nothing to erase: no row of this subject is left to delete or mask.");
        if !preview.earlier_erasure_id.is_empty() {
            let at = preview
                .earlier_recorded_at
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default();
            println!(
                "Erased before by erasure {} (request id {}) at {at}.",
                preview.earlier_erasure_id,
                if preview.earlier_request_id.is_empty() {
                    "none"
                } else {
                    &preview.earlier_request_id
                },
            );
        }
        return Ok(preview);
    }
    if !args.yes {
        super::confirm(
            "To erase, type the identity value again: ",
            &value,
            "erased",
        )?;
    }
    request.dry_run = false;
    request.preview_digest = preview.preview_digest.clone();
    let receipt = call(&mut client, &request, &request_id, token.as_deref(), &args).await?;
    println!("Erased (erasure {}):", receipt.erasure_id);
    show(&receipt);
    Ok(receipt)
}

/// One Erase call: its receipt, or the server's status as an error.
async fn call(
    client: &mut DsrConnectorServiceClient<tonic::transport::Channel>,
    request: &pb::EraseRequest,
    request_id: &str,
    token: Option<&str>,
    args: &EraseArgs,
) -> anyhow::Result<pb::ErasureReceipt> {
    let started = Instant::now();
    let mut call = tonic::Request::new(request.clone());
    call.set_timeout(args.deadline);
    super::set_metadata(&mut call, request_id, token)?;
    let answer = async {
        let mut stream = client.erase(call).await?.into_inner();
        let mut receipt = None;
        while let Some(message) = stream.message().await? {
            if let Some(Event::Receipt(r)) = message.event {
                receipt = Some(r);
            }
        }
        Ok::<_, tonic::Status>(receipt)
    }
    .await;
    match answer {
        Ok(Some(receipt)) => Ok(receipt),
        Ok(None) => bail!("the stream ended without a receipt; treat the outcome as unknown"),
        Err(status) => bail!(
            "the server answered {:?} after {:?}: {}{}",
            status.code(),
            started.elapsed(),
            status.message(),
            if request.dry_run {
                ""
            } else {
                " (nothing was erased unless the message says the outcome is unknown)"
            }
        ),
    }
}

/// Prints a receipt for a person, on stdout (the command's result; prompts and errors go to
/// stderr): a line per table, then the totals.
pub(super) fn show(receipt: &pb::ErasureReceipt) {
    for table in &receipt.tables {
        let action = match pb::ErasureAction::try_from(table.action) {
            Ok(pb::ErasureAction::Delete) => "delete",
            Ok(pb::ErasureAction::Mask) => "mask",
            Ok(pb::ErasureAction::Retain) => "retain",
            _ => "?",
        };
        let detail = if !table.masked_columns.is_empty() {
            format!(" ({})", table.masked_columns.join(", "))
        } else if !table.retain_reason.is_empty() {
            format!(" (kept: {})", table.retain_reason)
        } else {
            String::new()
        };
        println!(
            "  {:<24} {action:<6} {} row(s){detail}",
            table.table, table.rows
        );
    }
    println!(
        "  {} deleted, {} masked, {} retained{}",
        receipt.rows_deleted,
        receipt.rows_masked,
        receipt.rows_retained,
        if receipt.dry_run {
            "; a preview: nothing was changed".to_owned()
        } else {
            format!("; receipt sha256 {}", receipt.receipt_sha256)
        }
    );
}
