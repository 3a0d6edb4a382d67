//! The Validate RPC: the schema gate table by table, an optional dry-run extraction for one
//! subject, and an optional manifest check.
//!
//! - Without a subject: one `TableCheck` per mapped table (ok, missing, missing columns, type
//!   mismatch, unmapped columns, and the identity kinds it cannot be reached from), then a
//!   verdict.
//! - With a subject: when the schema passes, the subject is extracted in one snapshot as a dry
//!   run: every value is read, coerced and scanned and every count verified, but no value is
//!   returned. Each table's check carries its row count, rejected rows, violations and the PII
//!   fields found in JSON; the verdict carries the manifest the extraction would produce.
//! - With a manifest: every violation of the manifest rules.
//!
//! Problems with the data or the schema are findings (verdict `ok = false`), not errors. Bad
//! requests and an unreachable database are gRPC errors.

use std::collections::BTreeMap;

use secrecy::SecretString;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::Status;

use crate::engine::extract::manifest;
use crate::engine::{Engine, ExtractError, ExtractParams};
use crate::pb::{
    Manifest, TableCheck, TableStatus, ValidateRequest, ValidateResponse, ValidationVerdict,
    extract_response::Event, validate_response,
};
use crate::schema::PlanError;

use super::status::to_status;

/// Runs one validation and returns the messages of the response stream.
pub async fn run(
    engine: &Engine,
    request: ValidateRequest,
    caller: &str,
    call_id: &str,
    deadline: Option<Instant>,
) -> Result<Vec<ValidateResponse>, Status> {
    let mut messages = Vec::new();
    let mut verdict = ValidationVerdict {
        ok: true,
        ..Default::default()
    };
    if let Some(manifest) = &request.manifest {
        let problems = manifest::violations(manifest);
        engine
            .metrics()
            .manifest_violations
            .get_or_create(&crate::observability::metrics::source_labels(
                &engine.metrics().source_label(&request.source),
            ))
            .inc_by(problems.len() as u64);
        verdict
            .violations
            .extend(problems.into_iter().map(|p| format!("manifest: {p}")));
    }
    if request.source.is_empty() {
        if request.manifest.is_none() {
            return Err(super::status::refusal(
                tonic::Code::InvalidArgument,
                "INVALID_ARGUMENT",
                "source: required unless only a manifest is validated",
            ));
        }
        verdict.ok = verdict.violations.is_empty();
        messages.push(verdict_message(verdict));
        return Ok(messages);
    }

    let report = engine
        .schema_report(&request.source, caller, deadline)
        .await
        .map_err(|e| to_status(&e))?;
    let mut checks: Vec<TableCheck> = report
        .tables
        .iter()
        .map(|t| TableCheck {
            table: t.table.clone(),
            status: t.status as i32,
            problems: t.problems.clone(),
            warnings: t.warnings.clone(),
            unreachable_from: report
                .map
                .as_ref()
                .map(|m| m.unreachable_from(&t.table))
                .unwrap_or_default(),
            ..Default::default()
        })
        .collect();
    verdict.violations.extend(report.problems());
    verdict.warnings.extend(report.warnings());

    if let (Some(subject), true) = (request.subject, report.map.is_some()) {
        dry_run(
            engine,
            &request.source,
            (caller, call_id),
            subject,
            deadline,
            &mut checks,
            &mut verdict,
        )
        .await?;
    }
    verdict.ok = verdict.violations.is_empty();
    messages.extend(checks.into_iter().map(|c| ValidateResponse {
        event: Some(validate_response::Event::Table(c)),
    }));
    messages.push(verdict_message(verdict));
    Ok(messages)
}

/// Runs the subject's extraction as a dry run and folds its results into the table checks.
async fn dry_run(
    engine: &Engine,
    source: &str,
    (caller, call_id): (&str, &str),
    subject: crate::pb::Identity,
    deadline: Option<Instant>,
    checks: &mut [TableCheck],
    verdict: &mut ValidationVerdict,
) -> Result<(), Status> {
    let value = SecretString::from(subject.value);
    let params = ExtractParams {
        source: source.to_owned(),
        kind: subject.kind.clone(),
        value: value.clone(),
        batch_size: 0,
        request_id: String::new(),
        compliance_tag: String::new(),
        tables: Vec::new(),
        deadline,
        dry_run: true,
        caller: caller.to_owned(),
        call_id: call_id.to_owned(),
        span: tracing::Span::current(),
        links: Default::default(),
        more_identities: Vec::new(),
    };
    let mut stream = engine.extract(params).await.map_err(|e| to_status(&e))?;
    let mut planned: BTreeMap<String, bool> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    while let Some(item) = stream.next().await {
        match item {
            // A dry run sends no batches.
            Ok(crate::pb::ExtractFrame::Batch(_)) => {}
            Ok(crate::pb::ExtractFrame::Message(message)) => match message.event {
                Some(Event::Started(started)) => {
                    for t in &started.tables {
                        planned.insert(t.table.clone(), false);
                    }
                    for u in &started.unreachable_tables {
                        if let Some(check) = checks.iter_mut().find(|c| c.table == u.table) {
                            check.status = TableStatus::Unreachable as i32;
                        }
                    }
                }
                Some(Event::TableCompleted(done)) => {
                    planned.insert(done.table.clone(), true);
                    if let Some(check) = checks.iter_mut().find(|c| c.table == done.table) {
                        check.row_count = done.row_count;
                        check.rejected_count = done.rejected_count;
                        check.pii_fields = done.pii_fields.clone();
                        check.found_fields = done.found_fields.clone();
                        for found in &done.text_findings {
                            check.warnings.push(format!(
                                "column '{}' is classified not_pii, and the dry run found {} \
                                 inside {} of its values: check its category",
                                found.column, found.category, found.values
                            ));
                        }
                        for v in &done.violations {
                            verdict.violations.push(format!(
                                "table '{}', column '{}', row {}: {} ({}){}",
                                v.table,
                                v.column,
                                if v.primary_key.is_empty() {
                                    "-"
                                } else {
                                    &v.primary_key
                                },
                                v.category,
                                v.rule,
                                if v.detail.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", v.detail)
                                }
                            ));
                        }
                        if done.violations_truncated {
                            verdict.violations.push(format!(
                                "table '{}': more violations than listed",
                                done.table
                            ));
                        }
                        check.violations = done.violations;
                    }
                }
                Some(Event::Manifest(m)) => manifest = Some(m),
                Some(Event::Batch(_) | Event::TableStarted(_)) | None => {}
            },
            Err(error) => {
                if !is_finding(&error) {
                    return Err(to_status(&error));
                }
                verdict.violations.push(error.to_string());
                for (table, done) in &planned {
                    if !done && let Some(check) = checks.iter_mut().find(|c| &c.table == table) {
                        check.status = TableStatus::ExtractionFailed as i32;
                        check.problems.push(error.to_string());
                        break;
                    }
                }
            }
        }
    }
    // An empty answer: say what a looser match would have found, in counts.
    let empty = manifest
        .as_ref()
        .and_then(|m| m.metadata.get("subject_found"))
        .is_some_and(|found| found == "false");
    verdict.manifest = manifest;
    if empty {
        let matches = engine
            .looser_counts(source, caller, &subject.kind, &value, deadline)
            .await
            .map_err(|e| to_status(&e))?;
        let mut words = Vec::new();
        for m in &matches {
            let tables: Vec<String> = m
                .tables
                .iter()
                .filter(|t| t.row_count > 0)
                .map(|t| format!("{} {}", t.table, t.row_count))
                .collect();
            words.push(if tables.is_empty() {
                format!("{}: none", m.r#match)
            } else {
                format!(
                    "{}: {} rows ({})",
                    m.r#match,
                    m.row_count,
                    tables.join(", ")
                )
            });
        }
        verdict.warnings.push(format!(
            "no table holds a row for this subject; looser matches of the identity columns \
             would find {}",
            words.join("; ")
        ));
        verdict.looser_matches = matches;
    }
    Ok(())
}

/// Errors that describe the data or the schema, reported as findings of the validation.
fn is_finding(error: &ExtractError) -> bool {
    matches!(
        error,
        ExtractError::CountMismatch { .. }
            | ExtractError::Coercion(_)
            | ExtractError::RowTooLarge { .. }
            | ExtractError::Decode { .. }
            | ExtractError::InvalidManifest(_)
            | ExtractError::Plan(PlanError::SchemaDrift { .. })
    )
}

fn verdict_message(verdict: ValidationVerdict) -> ValidateResponse {
    ValidateResponse {
        event: Some(validate_response::Event::Verdict(verdict)),
    }
}
