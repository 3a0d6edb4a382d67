//! The verification before COMMIT: no deleted row of the subject left, and no kept row with
//! an unmasked value, a value equal to the identity, or (in masked JSON) anything left to mask.

use super::direct::DeleteCheck;
use super::policy::Step;
use super::{ErasureRefusal, Run};
use crate::config::erasure::EraseAction;
use crate::engine::ExtractError;
use crate::store::erase::{Captured, EraseTxn, MaskCheck};

impl Run<'_> {
    /// Checks a changed table inside the transaction, by the rows captured before anything
    /// changed: a deleted table has none of its captured rows left; a masked table's masked
    /// rows hold only masks, retained columns, and no value equal to the identity.
    pub(super) async fn verify<T: EraseTxn>(
        &self,
        txn: &mut T,
        i: usize,
        step: &Step,
        deleted: DeleteCheck<'_>,
        masked_ids: &Captured,
    ) -> Result<(), ExtractError> {
        let table = step.planned.table.display.as_str();
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
            EraseAction::Delete => {
                let DeleteCheck::Captured(ids) = deleted else {
                    // Deleted by its plan, in its turn, while nothing it reads had changed:
                    // checked then (`Run::delete_direct`), by the plan run again at once or by
                    // the catalog's proof that nothing kept a row back; run again now, after
                    // its parents changed, the plan would prove nothing.
                    return Ok(());
                };
                let found = txn
                    .left(self.target(i), ids)
                    .await
                    .map_err(|e| self.db(e))?;
                if found != 0 {
                    return Err(unverified(format!(
                        "{found} captured rows of the subject still there"
                    )));
                }
                Ok(())
            }
            EraseAction::Mask => {
                let masks: Vec<MaskCheck<'_>> = step
                    .masks
                    .iter()
                    .map(|(column, method)| MaskCheck {
                        column,
                        method: *method,
                    })
                    .collect();
                let text_columns: Vec<&str> = step
                    .planned
                    .table
                    .columns
                    .iter()
                    .filter(|c| c.is_text())
                    .map(|c| c.name.as_str())
                    .collect();
                // Nothing to look for when only JSON paths are masked in a table without text
                // columns: the JSON check below is the whole verification then.
                let wrong = txn
                    .unmasked(
                        self.target(i),
                        masked_ids,
                        &masks,
                        &text_columns,
                        &self.cfg.erasure.redaction,
                    )
                    .await
                    .map_err(|e| self.db(e))?;
                if wrong != 0 {
                    return Err(unverified(format!(
                        "{wrong} kept rows with an unmasked value or a value equal to the identity"
                    )));
                }
                if !step.json_masks.is_empty() {
                    self.verify_json(txn, i, step).await?;
                }
                Ok(())
            }
        }
    }
}
