//! What an empty answer may have missed: for a subject no table holds, how many rows a looser
//! match of the identity columns would find (case-insensitive, and trimmed). Counts only, from
//! one read-only snapshot, never a value.

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::error::breaker_outcome;
use super::{Engine, ExtractError, pass_breaker, settle};
use crate::datamap::Looser;
use crate::db::DbError;
use crate::pb;

/// The longest a looser count may run when the call has no deadline: these matches may not
/// have an index, so they can scan whole tables.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Engine {
    /// Counts, table by table, what each looser match of `kind` finds for `value` (as the
    /// kind's normalisation makes it) in the tables of the kind's plan.
    pub async fn looser_counts(
        &self,
        source_name: &str,
        caller: &str,
        kind: &str,
        value: &SecretString,
        deadline: Option<Instant>,
    ) -> Result<Vec<pb::LooserMatch>, ExtractError> {
        let source = self.source(source_name)?;
        let cfg = &self.config.sources[source.index];
        let value = cfg
            .normalizer(kind)
            .apply(value.expose_secret())
            .map_err(|e| ExtractError::InvalidArgument(format!("subject.value: {e}")))?;
        let map = self.data_map(source, deadline).await?;
        let plan = map.plan(kind, &[])?;
        let plans: Vec<_> = Looser::ALL
            .iter()
            .map(|looser| (*looser, map.looser_plan(&plan, *looser)))
            .collect();
        let pass = pass_breaker(source)?;
        let _permit = source.slots.admit(caller, deadline).await?;
        let db =
            |e: tokio_postgres::Error| ExtractError::from(DbError::from_pg_bound(source_name, &e));
        let counted = async {
            let mut conn = source.pool.checkout(deadline).await?;
            let (client, _) = conn.parts();
            let txn = crate::db::read_only_snapshot(client).await.map_err(db)?;
            let timeout = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(DEFAULT_TIMEOUT)
                .min(DEFAULT_TIMEOUT)
                .as_millis()
                .max(1)
                .to_string();
            txn.query(
                "SELECT set_config('statement_timeout', $1, true)",
                &[&timeout],
            )
            .await
            .map_err(db)?;
            let mut matches = Vec::new();
            for (looser, plan) in &plans {
                let mut found = pb::LooserMatch {
                    r#match: looser.name().to_owned(),
                    ..Default::default()
                };
                for table in &plan.tables {
                    let n: i64 = txn
                        .query_one(&table.count_sql, &[&value])
                        .await
                        .map_err(db)?
                        .get(0);
                    found.row_count += n.max(0) as u64;
                    found.tables.push(pb::TableRowCount {
                        table: table.table.display.clone(),
                        row_count: n.max(0) as u64,
                    });
                }
                matches.push(found);
            }
            txn.commit().await.map_err(db)?;
            Ok::<_, ExtractError>(matches)
        }
        .await;
        settle(source, pass, breaker_outcome(counted.as_ref().err()));
        counted
    }
}
