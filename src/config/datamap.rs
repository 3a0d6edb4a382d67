//! The data map as configured: tables, their identity columns and references, and the
//! classification and rules of every column.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::classify::NOT_PII;

/// One mapped table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `table` (schema `public`) or `schema.table`.
    pub name: String,
    /// What the table holds, in words for the data subject (shown in `started` and in data
    /// packages).
    #[serde(default)]
    pub description: Option<String>,
    /// Identity columns: the table is reached directly when the request's kind matches.
    #[serde(default)]
    pub identity: OneOrMany<IdentityColumn>,
    /// References: the table is reached through another mapped table.
    #[serde(default)]
    pub reference: OneOrMany<Reference>,
    /// Every column: its data category (or `not_pii`), or a table with the category and a
    /// coercion rule or JSON scanning.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// The most rows this table may hold for one subject when it is reached by `lookup`
    /// (overrides the source's `max_reached_rows`).
    pub max_reached_rows: Option<u64>,
    /// What `Erase` does to the subject's rows: `{ action = "delete" }`,
    /// `{ action = "mask", mask = { column = "null" | "redact" | "pseudonym" | { retain = "..." } } }`
    /// or `{ action = "retain", reason = "..." }`. Without it, the table cannot be erased.
    pub erase: Option<super::erasure::TableErasure>,
}

/// One column of the data map: `email = "contact.email"`, or
/// `signup = { category = "account.signup_date", coerce = "date", formats = ["%d/%m/%Y"] }`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ColumnSpec {
    Category(String),
    Rule(ColumnRule),
}

impl ColumnSpec {
    /// The data category, trimmed and lower-cased.
    pub fn category(&self) -> String {
        match self {
            ColumnSpec::Category(c) => c,
            ColumnSpec::Rule(r) => &r.category,
        }
        .trim()
        .to_lowercase()
    }

    /// The column's rule, when it has more than a category.
    pub fn rule(&self) -> Option<&ColumnRule> {
        match self {
            ColumnSpec::Category(_) => None,
            ColumnSpec::Rule(r) => Some(r),
        }
    }
}

/// A column with a coercion rule or JSON scanning.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    /// The data category, or `not_pii`.
    pub category: String,
    /// How values are turned into timestamps: `epoch_seconds`, `epoch_milliseconds`,
    /// `epoch_microseconds` (integer columns) or `date` (text columns, with `formats`).
    pub coerce: Option<CoerceRule>,
    /// For `coerce = "date"`: chrono/strftime formats tried in order, e.g. `%d/%m/%Y`.
    #[serde(default)]
    pub formats: Vec<String>,
    /// Time zone of `timestamp without time zone` values or of parsed dates; overrides the
    /// source's `timezone`.
    pub timezone: Option<String>,
    /// For `%y` in `formats`: two-digit years below the pivot are 20yy, the others 19yy.
    /// Default 69 (00-68 -> 2000-2068, 69-99 -> 1969-1999).
    pub century_pivot: Option<u8>,
    /// Walk json/jsonb values for nested personal data.
    #[serde(default)]
    pub scan_json: bool,
}

/// A coercion rule name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CoerceRule {
    EpochSeconds,
    EpochMilliseconds,
    EpochMicroseconds,
    Date,
}

impl CoerceRule {
    pub fn name(&self) -> &'static str {
        match self {
            CoerceRule::EpochSeconds => "epoch_seconds",
            CoerceRule::EpochMilliseconds => "epoch_milliseconds",
            CoerceRule::EpochMicroseconds => "epoch_microseconds",
            CoerceRule::Date => "date",
        }
    }
}

/// Extra categories for the classification matrix.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassificationConfig {
    #[serde(default)]
    pub categories: Vec<crate::classify::CategoryConfig>,
}

/// `identity = { kind = "email", column = "email" }`, or with
/// `match = "case_insensitive"` for a column whose values are stored in mixed case.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityColumn {
    pub kind: String,
    pub column: String,
    /// How the column is compared with the (normalised) identity value.
    #[serde(default, rename = "match")]
    pub matching: MatchMode,
}

/// How an identity column is compared with the identity value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// `column = value` (the default).
    #[default]
    Exact,
    /// `lower(column) = lower(value)`, or `column = value` on a `citext` column. Needs an
    /// index on `lower(column)` to be fast; the schema gate says when one is missing.
    CaseInsensitive,
    /// The digits of the column equal the digits of the value, whatever else either holds:
    /// for phone numbers stored as typed (`(503) 555-9831`). Needs an index on the column's
    /// digits to be fast (`regexp_replace(column, '[^0-9]', '', 'g')`).
    Digits,
}

impl MatchMode {
    pub fn name(self) -> &'static str {
        match self {
            MatchMode::Exact => "exact",
            MatchMode::CaseInsensitive => "case_insensitive",
            MatchMode::Digits => "digits",
        }
    }
}

/// `reference = { column = "customer_id", table = "customers", to = "id", reach = "owned" }`:
/// this table's `column` holds `to` of a row in `table`, and `reach` says which way the
/// subject's rows follow it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub column: String,
    pub table: String,
    pub to: String,
    /// Required: there is no safe default, since the wrong one hands over other people's rows
    /// or leaves the subject's own out. [`Config::validate`](super::Config) names a reference
    /// without it, or with a word it does not know.
    pub reach: Option<ReachValue>,
}

/// `reach` as written: a known rule, or a word that validation names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ReachValue {
    Rule(ReachRule),
    Unknown(String),
}

/// Which rows a reference makes the subject's (see `DESIGN.md`, invariant 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReachRule {
    /// The rows of this table that point at a row of the subject's own are the subject's, and
    /// are followed further in turn: an order's `customer_id`.
    Owned,
    /// The row that one of the subject's rows here points at is read for the subject, and
    /// goes no further down: a customer's `address_id`. Such a row may be shared (a
    /// household's address), so erasure never deletes it.
    Lookup,
    /// Declared, and never followed: a key into a hub (a store, a support rep, a manager)
    /// whose other rows belong to other people.
    None,
}

impl ReachRule {
    pub fn name(self) -> &'static str {
        match self {
            ReachRule::Owned => "owned",
            ReachRule::Lookup => "lookup",
            ReachRule::None => "none",
        }
    }

    /// The words an operator needs to choose one, for the error that asks for it.
    pub const CHOICES: &'static str = "reach = \"owned\" (rows of this table that point at \
        the subject's row are the subject's: an order's customer_id), \"lookup\" (the row \
        the subject's row here points at is read for the subject, and goes no further: a \
        customer's address_id) or \"none\" (never followed: a key into a store, a support \
        rep or a manager, whose other rows are other people's)";
}

impl Reference {
    /// The reach rule, when it is given and known.
    pub fn rule(&self) -> Option<ReachRule> {
        match self.reach {
            Some(ReachValue::Rule(rule)) => Some(rule),
            _ => None,
        }
    }

    /// Whether the reference is followed at all.
    pub fn followed(&self) -> bool {
        matches!(self.rule(), Some(ReachRule::Owned | ReachRule::Lookup))
    }
}

/// Accepts either one inline table or an array of them.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// A table name split into schema and relation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    pub schema: String,
    pub table: String,
}

impl QualifiedName {
    /// Parses `table` or `schema.table`. Returns `None` for anything else.
    pub fn parse(name: &str) -> Option<QualifiedName> {
        let mut parts = name.split('.');
        let (schema, table) = match (parts.next(), parts.next(), parts.next()) {
            (Some(t), None, None) => ("public", t),
            (Some(s), Some(t), None) => (s, t),
            _ => return None,
        };
        if schema.trim().is_empty() || table.trim().is_empty() {
            return None;
        }
        Some(QualifiedName {
            schema: schema.to_owned(),
            table: table.to_owned(),
        })
    }

    /// The name shown to callers: `table` in `public`, `schema.table` elsewhere.
    pub fn display_name(&self) -> String {
        if self.schema == "public" {
            self.table.clone()
        } else {
            format!("{}.{}", self.schema, self.table)
        }
    }
}

/// Checks one column's category and rule.
pub(super) fn validate_column(
    at: &str,
    spec: &ColumnSpec,
    matrix: Option<&crate::classify::Matrix>,
    problems: &mut Vec<String>,
) {
    let category = spec.category();
    if category.is_empty() {
        problems.push(format!(
            "{at}: empty category (use a data category or \"{NOT_PII}\")"
        ));
    } else if category == crate::classify::CHECK {
        problems.push(format!(
            "{at}: category \"{}\": discover found no evidence either way for this text \
             column; a person decides: a data category, or \"{NOT_PII}\"",
            crate::classify::CHECK
        ));
    } else if let Some(matrix) = matrix
        && !matrix.knows(&category)
    {
        problems.push(format!(
            "{at}: category '{category}' is not in the classification matrix \
             (known: {}; add it under [[classification.categories]] or use \"{NOT_PII}\")",
            matrix.names().join(", ")
        ));
    }
    let Some(rule) = spec.rule() else {
        return;
    };
    match rule.coerce {
        Some(CoerceRule::Date) => {
            if rule.formats.is_empty() {
                problems.push(format!(
                    "{at}.formats: coerce = \"date\" needs at least one format, e.g. \"%d/%m/%Y\""
                ));
            }
            for format in &rule.formats {
                if let Err(e) = crate::values::check_date_format(format) {
                    problems.push(format!("{at}.formats: '{format}': {e}"));
                }
            }
        }
        Some(other) => {
            if !rule.formats.is_empty() {
                problems.push(format!(
                    "{at}.formats: only coerce = \"date\" takes formats, not \"{}\"",
                    other.name()
                ));
            }
        }
        None => {
            if !rule.formats.is_empty() {
                problems.push(format!(
                    "{at}.formats: set coerce = \"date\" to use formats"
                ));
            }
        }
    }
    if rule.century_pivot.is_some_and(|p| p > 99) {
        problems.push(format!("{at}.century_pivot: must be between 0 and 99"));
    }
    if rule.century_pivot.is_some() && rule.coerce != Some(CoerceRule::Date) {
        problems.push(format!(
            "{at}.century_pivot: only applies to coerce = \"date\""
        ));
    }
    if let Some(tz) = &rule.timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        problems.push(format!(
            "{at}.timezone: '{tz}' is not an IANA time zone name"
        ));
    }
    if rule.scan_json && rule.coerce.is_some() {
        problems.push(format!(
            "{at}.scan_json: a JSON column takes no coercion rule"
        ));
    }
}
