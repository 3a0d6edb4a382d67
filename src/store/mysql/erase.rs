//! An erasure's transaction on MariaDB and MySQL.

use tokio::time::Instant;

use super::MySqlPool;
use crate::store::erase::{Erase, EraseError, EraseOptions};

impl Erase for MySqlPool {
    type Txn = crate::store::postgres::PgErase;

    async fn begin_erasure(&self, _options: EraseOptions<'_>) -> Result<Self::Txn, EraseError> {
        Err(EraseError::Unsupported {
            table: String::new(),
            column: String::new(),
            detail: "erasure is not available for mysql sources yet".into(),
        })
    }

    async fn commit_outcome(&self, _transaction: &str, _deadline: Option<Instant>) -> Option<bool> {
        None
    }
}
