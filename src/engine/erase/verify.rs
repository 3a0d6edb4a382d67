//! The verification before COMMIT: no deleted row of the subject left, and no kept row with
//! an unmasked value, a value equal to the identity, or (in masked JSON) anything left to mask.

use tokio_postgres::types::{ToSql, Type};

use super::direct::DeleteCheck;
use super::ids::{Captured, captured, in_ids, masked};
use super::policy::Step;
use super::{ErasureRefusal, Run};
use crate::config::erasure::{EraseAction, MaskMethod};
use crate::engine::ExtractError;
use crate::schema::{is_text_type, quote_ident};

impl Run<'_> {
    /// Checks a changed table inside the transaction, by the row ids captured before anything
    /// changed: a deleted table has none of its captured rows left; a masked table's masked
    /// rows hold only masks, retained columns, and no value equal to the identity.
    pub(super) async fn verify(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        i: usize,
        step: &Step,
        deleted: DeleteCheck<'_>,
        masked_ids: &Captured,
    ) -> Result<(), ExtractError> {
        let table = step.planned.table.display.as_str();
        let db = |e: tokio_postgres::Error| self.db(&e, Some(table));
        let quoted = step.planned.table.quoted();
        let unverified = |detail: String| -> ExtractError {
            ErasureRefusal::Unverified {
                table: table.to_owned(),
                detail,
            }
            .into()
        };
        match step.action {
            EraseAction::Retain => Ok(()),
            // The DELETE's count equals the rows captured, and a row is deleted once; none of
            // the captured rows may be left.
            // Deleted by its plan, in its turn, while nothing it reads had changed: checked
            // then (`Run::delete_direct`), by the plan run again at once or by the catalog's
            // proof that nothing kept a row back; run again now, after its parents changed, the
            // plan would prove nothing.
            EraseAction::Delete if !matches!(deleted, DeleteCheck::Captured(_)) => Ok(()),
            EraseAction::Delete => {
                let mut found = 0i64;
                let rels = match deleted {
                    DeleteCheck::Captured(ids) => ids.rels.as_slice(),
                    _ => &[],
                };
                for &(rel, _) in rels {
                    let sql = format!(
                        "SELECT count(*) FROM {} WHERE {}",
                        step.planned.from,
                        in_ids(&captured(i), rel)
                    );
                    found += txn.query_one(&sql, &[]).await.map_err(db)?.get::<_, i64>(0);
                }
                if found != 0 {
                    return Err(unverified(format!(
                        "{found} captured rows of the subject still there"
                    )));
                }
                Ok(())
            }
            EraseAction::Mask => {
                let params: [&(dyn ToSql + Sync); 2] = [&self.value, &self.cfg.erasure.redaction];
                let mut masked_as_told = Vec::new();
                for (column, method) in &step.masks {
                    let c = format!("t0.{}", quote_ident(column));
                    masked_as_told.push(match method {
                        MaskMethod::Null => format!("{c} IS NULL"),
                        MaskMethod::Redact => format!("{c}::text IS NOT DISTINCT FROM $2"),
                        // A token is 32 hex digits; NULL stays NULL.
                        MaskMethod::Pseudonym => {
                            format!("({c} IS NULL OR {c}::text ~ '^[0-9a-f]{{32}}$')")
                        }
                    });
                }
                // Each condition is TRUE or FALSE, never NULL: a NULL column (a "null" mask, or
                // a value that was never there) holds no identity, and must not read as one
                // under the fail-closed `IS NOT FALSE` below.
                let holds_identity: Vec<String> = step
                    .planned
                    .table
                    .columns
                    .iter()
                    .filter(|c| is_text_type(&c.typname))
                    .map(|c| format!("coalesce(t0.{}::text = $1, false)", quote_ident(&c.name)))
                    .collect();
                let mut bad = Vec::new();
                if !masked_as_told.is_empty() {
                    bad.push(format!("NOT ({})", masked_as_told.join(" AND ")));
                }
                bad.extend(holds_identity);
                // Nothing to look for in SQL when only JSON paths are masked in a table without
                // text columns: the JSON check below is the whole verification then.
                if !bad.is_empty() {
                    let sql = format!(
                        "SELECT count(*) FROM {quoted} AS t0 WHERE ({}) AND (({}) IS NOT FALSE)",
                        masked_ids.condition(&masked(i)),
                        bad.join(" OR ")
                    );
                    // Both parameters are declared: a table may use neither the identity (no
                    // text column) nor the redaction (no redact mask).
                    let statement = txn
                        .prepare_typed(&sql, &[Type::TEXT, Type::TEXT])
                        .await
                        .map_err(db)?;
                    let wrong: i64 = txn.query_one(&statement, &params).await.map_err(db)?.get(0);
                    if wrong != 0 {
                        return Err(unverified(format!(
                            "{wrong} kept rows with an unmasked value or a value equal to the \
                             identity"
                        )));
                    }
                }
                if !step.json_masks.is_empty() {
                    self.verify_json(txn, i, step).await?;
                }
                Ok(())
            }
        }
    }
}
