//! One source: the database, its pool and TLS settings, and its policies.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::datamap::validate_column;
use super::{MAX_DURATION, MAX_TIMEOUT, QualifiedName, ReachRule, TableConfig};

/// libpq's `sslmode`, with libpq's meanings. tokio-postgres knows only three of these, so
/// [`crate::store::postgres::tls`] maps each mode to a rustls configuration:
///
/// - `disable`: plaintext only.
/// - `prefer`: TLS when the server offers it, plaintext otherwise; the certificate is not
///   verified (as in libpq), unless `root_cert` is set, in which case it is verified as in
///   `verify-ca`.
/// - `require`: TLS or fail; the certificate is not verified unless `root_cert` is set (then as
///   `verify-ca`, again as in libpq).
/// - `verify-ca`: TLS, and the server certificate must chain to `root_cert`.
/// - `verify-full`: as `verify-ca`, and the certificate must also name `host`.
///
/// A `mysql` source takes the same modes by MySQL's names too (`disabled`, `preferred`,
/// `required`, `verify_ca`, `verify_identity`), with MySQL's meanings, which match libpq's
/// mode for mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(with = "super::schema::SslModeNames")]
pub enum SslMode {
    #[serde(alias = "disabled")]
    Disable,
    #[default]
    #[serde(alias = "preferred")]
    Prefer,
    #[serde(alias = "required")]
    Require,
    #[serde(alias = "verify_ca")]
    VerifyCa,
    #[serde(alias = "verify_identity")]
    VerifyFull,
}

/// The kind of database a source is: `kind = "postgres"` (the default) or `kind = "mysql"`
/// (MySQL or MariaDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(with = "super::schema::DatabaseKindNames")]
pub enum DatabaseKind {
    #[default]
    Postgres,
    #[serde(alias = "mariadb")]
    Mysql,
}

impl DatabaseKind {
    pub fn name(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::Mysql => "mysql",
        }
    }
}

/// One database (PostgreSQL, or MySQL and MariaDB) and its data map. `Debug` is derived: the password is a
/// `SecretString`, which prints redacted, so a new field can never leak it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The name callers use in `ExtractRequest.source`.
    pub name: String,
    /// The kind of database: `postgres` (default) or `mysql` (MySQL and MariaDB).
    #[serde(default)]
    pub kind: DatabaseKind,
    pub host: String,
    /// Default 5432 for PostgreSQL, 3306 for MySQL.
    #[serde(default, rename = "port")]
    port_set: Option<u16>,
    pub database: String,
    pub user: String,
    /// Environment variable that holds the password.
    pub password_env: Option<String>,
    /// File that holds the password (a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// Present only to reject inline passwords with a precise message.
    #[serde(default, rename = "password")]
    #[schemars(skip)]
    pub(super) password_inline: Option<toml_value::Ignored>,
    #[serde(default)]
    pub ssl_mode: SslMode,
    /// PEM file with the CA certificate(s) that sign the server's certificate.
    pub root_cert: Option<PathBuf>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_min_idle")]
    pub min_idle: u32,
    /// The most calls one caller may run on this source at once; default half of
    /// `max_connections`, rounded up, so that one caller cannot take the whole pool.
    pub max_per_caller: Option<u32>,
    /// Time allowed to open a connection, and the longest wait for a pooled one.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub connect_timeout: Duration,
    #[serde(default = "default_application_name")]
    pub application_name: String,
    /// The identity kinds callers may ask by, for example `["email", "customer_id"]`.
    pub identity_kinds: Vec<String>,
    /// How each kind's values are normalised (`[sources.identities.email]`); kinds not listed
    /// get their defaults (see [`crate::subject::normalize::default_steps`]).
    #[serde(default)]
    pub identities:
        std::collections::BTreeMap<String, crate::subject::normalize::IdentityKindConfig>,
    /// Time zone of `timestamp without time zone` columns (IANA name). Default UTC.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Live columns missing from the data map: `fail` (default) or `warn`.
    #[serde(default)]
    pub unmapped_columns: UnmappedPolicy,
    /// Values that fail their coercion rule: `fail` (default) or `reject_row`.
    #[serde(default)]
    pub on_coercion_error: CoercionPolicy,
    /// The most rows an identity may match in each of `person_tables`: a shared address
    /// such as `info@company.com` is not one person. Erase always refuses above it; Extract
    /// as `shared_identity` says. Default 1.
    #[serde(default = "default_max_identity_rows")]
    pub max_identity_rows: u64,
    /// The tables in which one row is one person: `max_identity_rows` guards the identity's
    /// matches there, and, like every table with an identity column, a row of one is only
    /// reached by the identity matching it, never through another row. Default: each table
    /// with an identity column that another mapped table references (a customer, a staff
    /// member; not the many tickets one person may file). Formerly `identity_tables`, which
    /// is still read.
    #[serde(default, alias = "identity_tables")]
    pub person_tables: Vec<String>,
    /// The most rows one subject may reach in a table reached by `lookup` (a hub guard,
    /// checked in the snapshot before any row leaves or changes). Default 1000; a table may
    /// set its own.
    #[serde(default = "default_max_reached_rows")]
    pub max_reached_rows: u64,
    /// What Extract does when the identity matches more than `max_identity_rows` rows of an
    /// identity table: `report` (default: the manifest names the table) or `refuse`
    /// (FAILED_PRECONDITION before any row leaves: a second person's data is a breach).
    #[serde(default)]
    pub shared_identity: SharedIdentityPolicy,
    /// The source's circuit breaker.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// Retries of transient failures before anything was sent.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How long a passed schema check is trusted before the catalog is read again.
    #[serde(default = "default_schema_refresh", with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub schema_refresh: Duration,
    /// The data map: every table that holds data about subjects. Required, but may be left
    /// out of a config read to draft it (`discover`).
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// How `Erase` behaves on this source (`[sources.erasure]`).
    #[serde(default)]
    pub erasure: super::erasure::ErasureSettings,
    /// Read to draft its data map: the data-map checks that an empty map fails are skipped.
    #[serde(skip)]
    pub drafting: bool,
    /// The password, resolved from `password_env`/`password_file` by [`Config::load`].
    #[serde(skip)]
    pub password: Option<SecretString>,
}

/// A deserialize target that accepts any value and keeps nothing of it.
mod toml_value {
    #[derive(Debug)]
    pub struct Ignored;
    impl<'de> serde::Deserialize<'de> for Ignored {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
        }
    }
}

fn default_max_connections() -> u32 {
    10
}

fn default_min_idle() -> u32 {
    2
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// What Extract does with an identity that matches more rows than `max_identity_rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharedIdentityPolicy {
    #[default]
    Report,
    Refuse,
}

fn default_max_identity_rows() -> u64 {
    1
}

fn default_max_reached_rows() -> u64 {
    1000
}

fn default_schema_refresh() -> Duration {
    Duration::from_secs(60)
}

fn default_application_name() -> String {
    "dsr-connector".to_owned()
}

impl SourceConfig {
    /// The port: as set, or the kind's usual one.
    pub fn port(&self) -> u16 {
        self.port_set.unwrap_or(match self.kind {
            DatabaseKind::Postgres => 5432,
            DatabaseKind::Mysql => 3306,
        })
    }

    /// How values of `kind` are normalised. The configuration was validated at load.
    pub fn normalizer(&self, kind: &str) -> crate::subject::normalize::Normalizer {
        crate::subject::normalize::Normalizer::new(kind, self.identities.get(kind))
            .expect("identity settings are checked when the config is loaded")
    }

    /// The mapped tables without an erase policy, when some table of the source has one (the
    /// source means to erase, and `Erase` refuses it until every reached table has one).
    pub fn tables_without_erase_policy(&self) -> Vec<&str> {
        if self.tables.iter().all(|t| t.erase.is_none()) {
            return Vec::new();
        }
        self.tables
            .iter()
            .filter(|t| t.erase.is_none())
            .map(|t| t.name.as_str())
            .collect()
    }

    /// The most calls one caller may run on this source at once.
    pub fn caller_share(&self) -> u32 {
        self.max_per_caller
            .unwrap_or(self.max_connections.div_ceil(2))
            .clamp(1, self.max_connections.max(1))
    }

    pub(super) fn validate(
        &self,
        at: &str,
        matrix: Option<&crate::classify::Matrix>,
        problems: &mut Vec<String>,
    ) {
        for (key, value) in [
            ("host", &self.host),
            ("database", &self.database),
            ("user", &self.user),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{at}.{key}: must not be empty"));
            }
        }
        if self.max_connections == 0 {
            problems.push(format!("{at}.max_connections: must be at least 1"));
        }
        if self.min_idle > self.max_connections {
            problems.push(format!(
                "{at}.min_idle: {} is above max_connections ({})",
                self.min_idle, self.max_connections
            ));
        }
        if let Some(share) = self.max_per_caller
            && (share == 0 || share > self.max_connections)
        {
            problems.push(format!(
                "{at}.max_per_caller: {share} is not between 1 and max_connections ({})",
                self.max_connections
            ));
        }
        if self.connect_timeout.is_zero() || self.connect_timeout > MAX_TIMEOUT {
            problems.push(format!(
                "{at}.connect_timeout: must be above zero and at most {}",
                humantime_serde::re::humantime::format_duration(MAX_TIMEOUT)
            ));
        }
        self.circuit_breaker.validate(at, problems);
        self.retry.validate(at, problems);
        if self.schema_refresh > MAX_DURATION {
            problems.push(format!(
                "{at}.schema_refresh: at most {}",
                humantime_serde::re::humantime::format_duration(MAX_DURATION)
            ));
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(format!(
                "{at}.timezone: '{}' is not an IANA time zone name (for example \"Europe/London\")",
                self.timezone
            ));
        }
        match (&self.root_cert, self.ssl_mode) {
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => problems.push(format!(
                "{at}.root_cert: required when ssl_mode is {}",
                // Each store's own names for the two modes.
                match self.kind {
                    DatabaseKind::Mysql => "verify_ca or verify_identity",
                    DatabaseKind::Postgres => "verify-ca or verify-full",
                }
            )),
            (Some(path), _) if !path.is_file() => problems.push(format!(
                "{at}.root_cert: {} is not a readable file",
                path.display()
            )),
            _ => {}
        }

        let mut kinds = HashSet::new();
        for kind in &self.identity_kinds {
            if kind.trim().is_empty() {
                problems.push(format!("{at}.identity_kinds: empty identity kind"));
            } else if !kinds.insert(kind.as_str()) {
                problems.push(format!("{at}.identity_kinds: duplicate kind '{kind}'"));
            }
        }
        if self.identity_kinds.is_empty() {
            problems.push(format!(
                "{at}.identity_kinds: declare at least one identity kind callers may ask by"
            ));
        }
        for (kind, identity) in &self.identities {
            if !kinds.contains(kind.as_str()) {
                problems.push(format!(
                    "{at}.identities.{kind}: '{kind}' is not in {at}.identity_kinds"
                ));
            }
            if let Err(problem) = crate::subject::normalize::Normalizer::new(kind, Some(identity)) {
                problems.push(format!("{at}.identities.{kind}.{problem}"));
            }
        }
        if self.tables.is_empty() && !self.drafting {
            problems.push(format!("{at}.tables: at least one table is required"));
        }

        let mut by_name: HashMap<QualifiedName, &TableConfig> = HashMap::new();
        for (j, table) in self.tables.iter().enumerate() {
            match QualifiedName::parse(&table.name) {
                None => problems.push(format!(
                    "{at}.tables[{j}].name: '{}' is not 'table' or 'schema.table'",
                    table.name
                )),
                Some(qn) if self.kind == DatabaseKind::Mysql && table.name.contains('.') => {
                    problems.push(format!(
                        "{at}.tables[{j}].name: '{}': a mysql source's tables are named without \
                         a schema; they are read from its database '{}'",
                        table.name, self.database
                    ));
                    by_name.insert(qn, table);
                }
                Some(qn) => {
                    if by_name.insert(qn, table).is_some() {
                        problems.push(format!(
                            "{at}.tables[{j}].name: table '{}' is mapped twice",
                            table.name
                        ));
                    }
                }
            }
        }

        for name in &self.person_tables {
            if !QualifiedName::parse(name).is_some_and(|q| by_name.contains_key(&q)) {
                problems.push(format!(
                    "{at}.person_tables: '{name}' is not a mapped table of this source"
                ));
            }
        }

        let mut used_kinds = HashSet::new();
        for (j, table) in self.tables.iter().enumerate() {
            // Tables are named by name: an index means nothing to someone reading a long map.
            let tat = match QualifiedName::parse(&table.name) {
                Some(_) => format!("{at}.tables.{}", table.name),
                None => format!("{at}.tables[{j}]"),
            };
            if let Some(problem) = table
                .description
                .as_deref()
                .and_then(crate::classify::description_problem)
            {
                problems.push(format!("{tat}.description: {problem}"));
            }
            if table.columns.is_empty() {
                problems.push(format!("{tat}.columns: at least one column is required"));
            }
            for (column, spec) in &table.columns {
                if column.is_empty() {
                    problems.push(format!("{tat}.columns: empty column name"));
                }
                validate_column(&format!("{tat}.columns.{column}"), spec, matrix, problems);
            }
            let looked_up = QualifiedName::parse(&table.name).is_some_and(|name| {
                self.tables.iter().any(|t| {
                    t.reference.as_slice().iter().any(|r| {
                        r.rule() == Some(ReachRule::Lookup)
                            && QualifiedName::parse(&r.table).as_ref() == Some(&name)
                    })
                })
            });
            let reaching = table
                .reference
                .as_slice()
                .iter()
                .any(|r| r.rule() != Some(ReachRule::None));
            if table.identity.as_slice().is_empty() && !reaching && !looked_up {
                problems.push(format!(
                    "{tat}: table '{}' has no identity, no reference it is reached by, and no \
                     lookup into it, so no subject can reach it",
                    table.name
                ));
            }
            for identity in table.identity.as_slice() {
                used_kinds.insert(identity.kind.as_str());
                if !kinds.contains(identity.kind.as_str()) {
                    problems.push(format!(
                        "{tat}.identity.kind: '{}' is not in {at}.identity_kinds",
                        identity.kind
                    ));
                }
                if !table.columns.contains_key(&identity.column) {
                    problems.push(format!(
                        "{tat}.identity.column: '{}' is not in the table's columns (classify it)",
                        identity.column
                    ));
                }
            }
            if let Some(erase) = &table.erase {
                // A kept row must account for every personal column, and for the columns
                // that tie it to the subject.
                let mut personal: Vec<String> = table
                    .columns
                    .iter()
                    .filter(|(_, spec)| spec.category() != crate::classify::NOT_PII)
                    .map(|(name, _)| name.clone())
                    .chain(table.identity.as_slice().iter().map(|i| i.column.clone()))
                    .chain(table.reference.as_slice().iter().map(|r| r.column.clone()))
                    .collect();
                personal.sort();
                personal.dedup();
                erase.validate(&tat, &table.columns, &personal, problems);
                if erase.uses_pseudonyms()
                    && self.erasure.pseudonym_key_env.is_none()
                    && self.erasure.pseudonym_key_file.is_none()
                {
                    problems.push(format!(
                        "{tat}.erase: a pseudonym mask needs {at}.erasure.pseudonym_key_env or \
                         pseudonym_key_file"
                    ));
                }
            }
            self.validate_reach(&tat, table, problems);
            for reference in table.reference.as_slice() {
                if !table.columns.contains_key(&reference.column) {
                    problems.push(format!(
                        "{tat}.reference.column: '{}' is not in the table's columns (classify it)",
                        reference.column
                    ));
                }
                let parent = QualifiedName::parse(&reference.table).and_then(|q| by_name.get(&q));
                match parent {
                    // A key that is never followed may name a table the map leaves out (a
                    // store nobody's request reaches): it records the decision.
                    None if reference.rule() == Some(ReachRule::None) => {}
                    None => problems.push(format!(
                        "{tat}.reference.table: '{}' is not a mapped table of this source",
                        reference.table
                    )),
                    Some(parent) if !parent.columns.contains_key(&reference.to) => {
                        problems.push(format!(
                            "{tat}.reference.to: '{}' is not in the columns of '{}'",
                            reference.to, reference.table
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        for kind in &self.identity_kinds {
            if !used_kinds.contains(kind.as_str()) && !self.drafting {
                problems.push(format!(
                    "{at}.identity_kinds: no table has an identity column of kind '{kind}'"
                ));
            }
        }
        if let Some(cycle) = self.reference_cycle() {
            problems.push(format!(
                "{at}.tables: references form a cycle: {}",
                cycle.join(" -> ")
            ));
        } else {
            self.validate_owners(at, problems);
        }
    }
}

/// What to do with live columns that the data map does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedPolicy {
    /// Refuse to extract (FAILED_PRECONDITION) until the column is classified.
    #[default]
    Fail,
    /// Extract the mapped columns, and report the unmapped ones as warnings.
    Warn,
}

/// What to do with a value that fails its coercion rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CoercionPolicy {
    /// End the extraction with FAILED_PRECONDITION, naming the violation.
    #[default]
    Fail,
    /// Leave the row out, count it as rejected, and report the violation.
    RejectRow,
}

/// `[sources.circuit_breaker]`: when the source's breaker opens, and for how long.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Opens when the share of infrastructure failures in the window is above this.
    pub failure_ratio: f64,
    /// ... and the window holds at least this many calls.
    pub min_calls: u32,
    /// How far back calls are counted.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub window: Duration,
    /// How long it stays open before probe calls are let through.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub cool_down: Duration,
    /// Probe calls let through at once while half-open.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        let d = crate::resilience::breaker::BreakerSettings::default();
        BreakerConfig {
            failure_ratio: d.failure_ratio,
            min_calls: d.min_calls,
            window: d.window,
            cool_down: d.cool_down,
            probes: d.probes,
        }
    }
}

impl BreakerConfig {
    /// The breaker's settings.
    pub fn settings(&self) -> crate::resilience::breaker::BreakerSettings {
        crate::resilience::breaker::BreakerSettings {
            failure_ratio: self.failure_ratio,
            min_calls: self.min_calls,
            window: self.window,
            cool_down: self.cool_down,
            probes: self.probes,
        }
    }

    fn validate(&self, at: &str, problems: &mut Vec<String>) {
        let at = format!("{at}.circuit_breaker");
        if !(self.failure_ratio > 0.0 && self.failure_ratio < 1.0) {
            problems.push(format!(
                "{at}.failure_ratio: must be above 0 and below 1 (0.02 is 2%)"
            ));
        }
        if self.min_calls == 0 {
            problems.push(format!("{at}.min_calls: must be at least 1"));
        }
        if self.probes == 0 {
            problems.push(format!("{at}.probes: must be at least 1"));
        }
        if self.window < Duration::from_secs(1) || self.window > MAX_DURATION {
            problems.push(format!("{at}.window: between 1s and 7 days"));
        }
        if self.cool_down.is_zero() || self.cool_down > MAX_TIMEOUT {
            problems.push(format!("{at}.cool_down: above zero and at most 1 hour"));
        }
    }
}

/// `retry = { ... }` of a source: transient failures before the first message are tried
/// again, with exponential backoff and jitter, inside the call's deadline.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included; 1 turns retries off.
    pub attempts: u32,
    /// The first delay; each next one doubles (with jitter).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub min_delay: Duration,
    /// The longest delay.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let d = crate::resilience::retry::RetryPolicy::default();
        RetryConfig {
            attempts: d.attempts,
            min_delay: d.min_delay,
            max_delay: d.max_delay,
        }
    }
}

impl RetryConfig {
    /// The retry policy.
    pub fn policy(&self) -> crate::resilience::retry::RetryPolicy {
        crate::resilience::retry::RetryPolicy {
            attempts: self.attempts,
            min_delay: self.min_delay,
            max_delay: self.max_delay,
        }
    }

    fn validate(&self, at: &str, problems: &mut Vec<String>) {
        let at = format!("{at}.retry");
        if !(1..=10).contains(&self.attempts) {
            problems.push(format!("{at}.attempts: between 1 and 10"));
        }
        if self.min_delay.is_zero() || self.min_delay > self.max_delay {
            problems.push(format!("{at}.min_delay: above zero and at most max_delay"));
        }
        if self.max_delay > MAX_TIMEOUT {
            problems.push(format!("{at}.max_delay: at most 1 hour"));
        }
    }
}
