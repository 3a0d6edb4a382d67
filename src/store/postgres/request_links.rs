//! The tasks that links add to a request in the control database: the identities a request's
//! tasks were asked with, and a task for each identity a link found (numbered after the
//! source's others, in a folder of its own).

use super::control::{ControlClient, ControlError};

/// A task for an identity that a link found. Not `Debug`: it holds the identity value.
pub struct LinkedTask {
    pub source: String,
    /// The phase it begins in: `extract`, or an erasure's `preview`.
    pub phase: String,
    pub kind: String,
    pub value: String,
    pub path: String,
    pub hops: i32,
}

impl ControlClient {
    /// Inside [`ControlClient::lock_request`]: the identities the request's tasks were asked
    /// with (source, kind, value, hops from a submitted one), to tell a new one from a known
    /// one.
    pub async fn task_identities(
        &self,
        request_id: &str,
    ) -> Result<Vec<(String, String, String, i32)>, ControlError> {
        Ok(self
            .0
            .query(
                "SELECT source, identity_kind, identity_value, hops FROM dsr_request_tasks \
                 WHERE request_id = $1 AND identity_value IS NOT NULL \
                 UNION ALL \
                 SELECT source, m ->> 0, m ->> 1, hops FROM dsr_request_tasks, \
                   jsonb_array_elements(more_identities::jsonb) AS m \
                 WHERE request_id = $1 AND more_identities IS NOT NULL",
                &[&request_id],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Inside [`ControlClient::lock_request`]: adds tasks for identities a link found.
    pub async fn insert_linked_tasks(
        &self,
        request_id: &str,
        tasks: &[LinkedTask],
    ) -> Result<(), ControlError> {
        for task in tasks {
            self.0
                .execute(
                    "INSERT INTO dsr_request_tasks (request_id, source, ordinal, folder, phase, \
                       state, identity_kind, identity_value, path, hops) \
                     SELECT $1, $2, coalesce(max(ordinal), -1) + 1, \
                       CASE WHEN count(*) = 0 THEN $2 ELSE $2 || '.' || (count(*) + 1) END, \
                       $7, 'queued', $3, $4, $5, $6 \
                     FROM dsr_request_tasks WHERE request_id = $1 AND source = $2",
                    &[
                        &request_id,
                        &task.source,
                        &task.kind,
                        &task.value,
                        &task.path,
                        &task.hops,
                        &task.phase,
                    ],
                )
                .await?;
        }
        Ok(())
    }
}
