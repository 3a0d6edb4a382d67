//! Links between sources (`[[links]]`): a column of a source's identity table whose values, on
//! the rows a request's identity matches there, are identities of another kind, asked of every
//! source that declares that kind. The shop knows a person by e-mail; its `customers.id` is the
//! `shop_customer_id` the CRM knows them by.

use serde::Deserialize;

use super::SourceConfig;

/// One link: `{ from = { source = "shop", table = "customers", column = "id" }, kind =
/// "shop_customer_id" }`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Where the values come from: a mapped table of a source that the identity matches
    /// directly (an identity table), and one of its columns.
    pub from: LinkFrom,
    /// The identity kind the values are, declared by the sources that are asked with them.
    pub kind: String,
}

/// The column a link reads.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkFrom {
    pub source: String,
    /// The table as the source's data map names it.
    pub table: String,
    pub column: String,
}

impl LinkConfig {
    /// Where the values come from, for manifests and messages: `shop.customers.id`.
    pub fn origin(&self) -> String {
        format!(
            "{}.{}.{}",
            self.from.source, self.from.table, self.from.column
        )
    }
}

/// Checks every link against the sources: its column exists in a mapped identity table, and
/// another source declares its kind.
pub(super) fn check(links: &[LinkConfig], sources: &[SourceConfig], problems: &mut Vec<String>) {
    for (i, link) in links.iter().enumerate() {
        let at = format!("links[{i}]");
        let Some(source) = sources.iter().find(|s| s.name == link.from.source) else {
            problems.push(format!(
                "{at}.from.source: no source named '{}'",
                link.from.source
            ));
            continue;
        };
        match source.tables.iter().find(|t| t.name == link.from.table) {
            None => problems.push(format!(
                "{at}.from.table: source '{}' maps no table '{}'",
                source.name, link.from.table
            )),
            Some(table) => {
                if !table.columns.contains_key(&link.from.column) {
                    problems.push(format!(
                        "{at}.from.column: table '{}' maps no column '{}'",
                        table.name, link.from.column
                    ));
                }
                if table.identity.as_slice().is_empty() {
                    problems.push(format!(
                        "{at}.from.table: '{}' has no identity column: a link reads only the \
                         rows an identity matches directly",
                        table.name
                    ));
                }
            }
        }
        if link.kind.trim().is_empty() {
            problems.push(format!("{at}.kind: must not be empty"));
        } else if !sources
            .iter()
            .any(|s| s.name != source.name && s.identity_kinds.contains(&link.kind))
        {
            problems.push(format!(
                "{at}.kind: no other source declares the identity kind '{}'",
                link.kind
            ));
        }
    }
}
