//! The Discover RPC: the draft data map of a source, one message per proposed table, then a
//! summary.

use tokio::time::Instant;
use tonic::Status;

use crate::config::CoerceRule;
use crate::engine::Engine;
use crate::engine::discover::propose::CoerceProposal;
use crate::engine::discover::{Filter, MAX_SAMPLE, Options, Proposal, render};
use crate::pb::{
    DiscoverRequest, DiscoverResponse, DiscoverySummary, MatchMode, ProposedColumn,
    ProposedIdentity, ProposedReference, ProposedTable, Rule, UnreachableTable, discover_response,
};

use super::status::to_status;

/// Runs one discovery and returns the messages of the response stream.
pub async fn run(
    engine: &Engine,
    request: DiscoverRequest,
    caller: &str,
    deadline: Instant,
) -> Result<Vec<DiscoverResponse>, Status> {
    if request.sample_rows > MAX_SAMPLE {
        return Err(super::status::refusal(
            tonic::Code::InvalidArgument,
            "INVALID_ARGUMENT",
            format!("sample_rows: at most {MAX_SAMPLE} rows per table"),
        ));
    }
    if !(0.0..=1.0).contains(&request.free_text_share) {
        return Err(super::status::refusal(
            tonic::Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "free_text_share: a share between 0 and 1".to_owned(),
        ));
    }
    let options = Options {
        sample: match (request.catalog_only, request.sample_rows) {
            (true, _) => 0,
            (false, 0) => crate::engine::discover::DEFAULT_SAMPLE,
            (false, n) => n,
        },
        filter: Filter {
            schemas: request.schemas,
            exclude: request.exclude_tables,
        },
        free_text_share: request.free_text_share,
        ..Options::default()
    };
    // The engine ends at the deadline itself, leaving no query running behind it.
    let proposal = engine
        .discover(&request.source, caller, &options, Some(deadline))
        .await
        .map_err(|e| to_status(&e))?;
    Ok(messages(&proposal))
}

fn messages(proposal: &Proposal) -> Vec<DiscoverResponse> {
    let mut out: Vec<DiscoverResponse> = proposal
        .tables
        .iter()
        .map(|t| DiscoverResponse {
            event: Some(discover_response::Event::Table(ProposedTable {
                table: t.name.clone(),
                estimated_rows: t.estimated_rows,
                sampled_rows: t.sampled_rows,
                sample_error: t.sample_error.clone().unwrap_or_default(),
                erase_action: t.erase.action.clone(),
                erase_evidence: t.erase.evidence.clone(),
                identities: t
                    .identities
                    .iter()
                    .map(|i| ProposedIdentity {
                        kind: i.kind.clone(),
                        column: i.column.clone(),
                        r#match: i.matching.name().to_owned(),
                        evidence: i.evidence.clone(),
                        match_mode: match i.matching {
                            crate::config::MatchMode::Exact => MatchMode::Exact,
                            crate::config::MatchMode::CaseInsensitive => MatchMode::CaseInsensitive,
                            crate::config::MatchMode::Digits => MatchMode::Digits,
                        }
                        .into(),
                    })
                    .collect(),
                references: t
                    .references
                    .iter()
                    .map(|r| ProposedReference {
                        column: r.column.clone(),
                        table: r.table.clone(),
                        to: r.to.clone(),
                        inferred: r.inferred,
                        evidence: r.evidence.clone(),
                    })
                    .collect(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| ProposedColumn {
                        name: c.name.clone(),
                        r#type: c.type_name.clone(),
                        category: c.category.clone(),
                        evidence: c.evidence.clone(),
                        no_evidence: c.no_evidence,
                        scan_json: c.scan_json,
                        coerce: match &c.coerce {
                            None => String::new(),
                            Some(CoerceProposal::Date { .. }) => "date".to_owned(),
                            Some(CoerceProposal::Epoch(rule)) => rule.name().to_owned(),
                        },
                        formats: match &c.coerce {
                            Some(CoerceProposal::Date { formats }) => formats.clone(),
                            _ => Vec::new(),
                        },
                        coerce_rule: match &c.coerce {
                            None => Rule::Unspecified,
                            Some(CoerceProposal::Date { .. }) => Rule::Date,
                            Some(CoerceProposal::Epoch(rule)) => match rule {
                                CoerceRule::EpochSeconds => Rule::EpochSeconds,
                                CoerceRule::EpochMilliseconds => Rule::EpochMilliseconds,
                                CoerceRule::EpochMicroseconds => Rule::EpochMicroseconds,
                                CoerceRule::Date => Rule::Date,
                            },
                        }
                        .into(),
                    })
                    .collect(),
                notes: t.notes.clone(),
                toml: render::fragment(t),
            })),
        })
        .collect();
    out.push(DiscoverResponse {
        event: Some(discover_response::Event::Summary(DiscoverySummary {
            tables: proposal.tables.len() as u32,
            unreachable: proposal
                .unreachable
                .iter()
                .map(|u| UnreachableTable {
                    table: u.table.clone(),
                    reason: u.reason.clone(),
                })
                .collect(),
            kinds_without_identity: proposal.kinds_without_identity.clone(),
        })),
    });
    out
}
