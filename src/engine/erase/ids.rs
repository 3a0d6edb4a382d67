//! The erasure's row ids, held in PostgreSQL: per step, the rows captured before anything
//! changed and the masked rows' new ids, and the conditions that select them.

/// The temporary table of the erasure's row ids: per step, its captured rows (`masked`
/// false) and its masked rows' new ids (`masked` true), one row per relation that holds
/// them, its ids sorted.
pub(super) const IDS: &str = "pg_temp.dsr_erase_ids";

/// The captured row ids of step `i`, as a FROM item `(rel, tids)`.
pub(super) fn captured(i: usize) -> String {
    format!("(SELECT rel, tids FROM {IDS} WHERE step = {i} AND NOT masked) AS ids")
}

/// The masked rows' new row ids of step `i`, likewise.
pub(super) fn masked(i: usize) -> String {
    format!("(SELECT rel, tids FROM {IDS} WHERE step = {i} AND masked) AS ids")
}

/// A condition on `t0`: the row is one that `ids` (a FROM item of [`captured`] or [`masked`])
/// holds for relation `rel`.
/// A row id names a row only within its relation, hence the relation; the ids are read as
/// one array, which PostgreSQL looks up by row id (a TID scan).
pub(super) fn in_ids(ids: &str, rel: u32) -> String {
    format!(
        "t0.tableoid = {rel}::oid AND t0.ctid = ANY((SELECT tids FROM {ids} WHERE rel = {rel}::oid)::tid[])"
    )
}

/// Rows held by row id in one of the temporary tables above, as the statement that wrote
/// them returned: per relation, its oid and how many rows.
#[derive(Debug, Clone, Default)]
pub(super) struct Captured {
    pub rels: Vec<(u32, u64)>,
}

impl Captured {
    /// From the `RETURNING rel, cardinality(tids)::bigint` of a statement that wrote them.
    pub fn from_rows(rows: &[tokio_postgres::Row]) -> Captured {
        Captured {
            rels: rows
                .iter()
                .map(|r| (r.get::<_, u32>(0), r.get::<_, i64>(1).max(0) as u64))
                .collect(),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rels.iter().map(|(_, rows)| rows).sum()
    }

    /// A condition on `t0` selecting exactly these rows, held in `ids` (a FROM item of
    /// [`captured`] or [`masked`]; `false` when there are none).
    pub fn condition(&self, ids: &str) -> String {
        if self.rels.is_empty() {
            return "false".to_owned();
        }
        self.rels
            .iter()
            .map(|&(rel, _)| format!("({})", in_ids(ids, rel)))
            .collect::<Vec<_>>()
            .join(" OR ")
    }
}
