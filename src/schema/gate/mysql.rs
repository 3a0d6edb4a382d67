//! The schema gate's catalog on MySQL and MariaDB: `information_schema` read for each mapped
//! table, its types described as the gate's checks expect them.

use super::{IndexKey, LiveColumn, LiveTable};
use crate::config::{QualifiedName, SourceConfig};
use crate::schema::{ColumnDecoder, PlanError};
use crate::store::mysql::{ColumnInfo, MyDecoder, MySqlPool, table_info};

/// The table as `information_schema` describes it.
pub(super) async fn live_table(
    source: &SourceConfig,
    pool: &MySqlPool,
    name: &QualifiedName,
) -> Result<LiveTable, PlanError> {
    let info = table_info(pool, &name.table)
        .await
        .map_err(|e| PlanError::Catalog {
            source_name: source.name.clone(),
            cause: e.to_string(),
        })?;
    Ok(LiveTable {
        indexable: info.base_table,
        spans_relations: false,
        base_table: info.base_table,
        columns: info.columns.into_iter().map(live_column).collect(),
        primary_key: info.primary_key,
        // MariaDB has no index on an expression; a `_ci` collation folds case instead.
        index_keys: info
            .index_leads
            .into_iter()
            .map(|(column, unique)| IndexKey {
                column: Some(column),
                lower_of: None,
                unique,
            })
            .collect(),
    })
}

fn live_column(column: ColumnInfo) -> LiveColumn {
    let data_type = column.data_type.to_ascii_lowercase();
    LiveColumn {
        category: type_category(column.decoder).to_owned(),
        base_type: data_type.clone(),
        typname: data_type,
        pg_type: column.column_type,
        not_null: !column.nullable,
        max_chars: column.max_chars.and_then(|n| i32::try_from(n).ok()),
        decoder: ColumnDecoder::MySql(column.decoder),
        folds_case: column
            .collation
            .is_some_and(|c| c.to_ascii_lowercase().ends_with("_ci")),
        name: column.name,
    }
}

/// The category PostgreSQL would give the type (`pg_type.typcategory`), by which the gate
/// compares a reference with its target and checks that a category's values fit: `S` text,
/// `N` numbers, `D` dates and times, `B` booleans, `U` the rest.
fn type_category(decoder: MyDecoder) -> &'static str {
    match decoder {
        MyDecoder::Text => "S",
        MyDecoder::Bool => "B",
        MyDecoder::Int
        | MyDecoder::BigUnsigned
        | MyDecoder::Bit { .. }
        | MyDecoder::Float
        | MyDecoder::Decimal => "N",
        MyDecoder::Date | MyDecoder::DateTime | MyDecoder::Timestamp | MyDecoder::Time { .. } => {
            "D"
        }
        MyDecoder::Bytes | MyDecoder::Json => "U",
    }
}
