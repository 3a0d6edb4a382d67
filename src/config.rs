//! Typed, immutable configuration: the server settings, the sources and their data maps.
//!
//! A config is read from one TOML file, then from environment variables prefixed with
//! `DSR_CONNECTOR_` (`__` separates nesting, so `DSR_CONNECTOR_SERVER__LISTEN=0.0.0.0:50051`
//! overrides `server.listen`). Unknown keys are errors. After parsing, [`Config::validate`]
//! checks every cross-reference of the data map and collects *all* problems, each naming the
//! key it is about, so an operator fixes a config in one round.
//!
//! Secrets (database passwords, the subject-hash key) never live in the file: the file names an
//! environment variable or a file that holds them, and they are read once at load time into
//! [`secrecy`] wrappers that print as `[REDACTED]` in `Debug`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "DSR_CONNECTOR_";

/// The largest `server.max_batch_size` accepted.
pub const MAX_BATCH_SIZE_LIMIT: u32 = 100_000;

/// The category that marks a column as holding no personal data.
pub const NOT_PII: &str = "not_pii";

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key is unknown or has the wrong type.
    /// figment's message names the key and the file.
    #[error(transparent)]
    Parse(#[from] Box<figment::Error>),
    /// One or more semantic problems, each naming its key.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The whole configuration. Immutable once loaded: the server shares it behind an `Arc`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// Categories added to the built-in classification matrix.
    #[serde(default)]
    pub classification: ClassificationConfig,
    pub sources: Vec<SourceConfig>,
    /// The compiled classification matrix, built by [`Config::validate`].
    #[serde(skip)]
    matrix: Option<std::sync::Arc<crate::pii::Matrix>>,
}

/// Listener and request limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Environment variable that holds the key for subject hashes (at least 16 bytes).
    pub subject_key_env: Option<String>,
    /// File that holds the key for subject hashes. Takes the place of `subject_key_env`.
    pub subject_key_file: Option<PathBuf>,
    /// Rows per batch when a request says 0.
    pub default_batch_size: u32,
    /// The largest batch_size a request may ask for.
    pub max_batch_size: u32,
    /// A batch is cut once its encoded size reaches this many bytes.
    pub max_batch_bytes: usize,
    /// Batches buffered between the database reader and the gRPC stream, per request.
    pub stream_buffer: usize,
    /// How long running streams may go on after a shutdown signal before they are cancelled.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// OTLP/gRPC endpoint for traces, e.g. `http://jaeger:4317`; else `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// no tracing when neither is set.
    pub otlp_endpoint: Option<String>,
    /// `"json"` for one JSON object per log line; text otherwise (or `DSR_LOG_FORMAT`).
    pub log_format: Option<String>,
    /// Address of the Prometheus `/metrics` listener; none when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// `"none"` serves without authentication, on any address. Unset: bearer tokens when
    /// `[[server.tokens]]` are configured; otherwise unauthenticated, and loopback only.
    pub auth: Option<AuthMode>,
    /// Callers that authenticate with a bearer token.
    pub tokens: Vec<TokenConfig>,
    /// TLS for the gRPC listener, and client certificates (mutual TLS).
    pub tls: Option<ServerTlsConfig>,
    /// Callers that authenticate with a client certificate (needs `tls.client_ca_file`).
    pub clients: Vec<ClientCertConfig>,
    /// Health checks and server reflection without authentication.
    pub open_health: bool,
    /// The deadline of a call that sends none (`grpc-timeout`).
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    /// Longer deadlines are cut to this.
    #[serde(with = "humantime_serde")]
    pub max_deadline: Duration,
    /// Refuse calls without a deadline (INVALID_ARGUMENT) instead of applying the default.
    pub require_deadline: bool,
    /// A stream whose client has not taken a message for this long is cancelled: its query
    /// is cancelled on PostgreSQL and its connection and snapshot are released.
    #[serde(with = "humantime_serde")]
    pub send_stall_timeout: Duration,
    /// Runtime worker threads; default one per core. Fewer threads mean fewer cross-thread
    /// wake-ups, which matters when the service shares a small machine with PostgreSQL.
    pub worker_threads: Option<usize>,
    /// The key itself, resolved from `subject_key_env`/`subject_key_file` by [`Config::load`].
    #[serde(skip)]
    pub subject_key: Option<SubjectKey>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            subject_key_env: None,
            subject_key_file: None,
            default_batch_size: 500,
            max_batch_size: 10_000,
            max_batch_bytes: 1024 * 1024,
            stream_buffer: 4,
            shutdown_grace: Duration::from_secs(30),
            worker_threads: None,
            metrics_listen: None,
            otlp_endpoint: None,
            log_format: None,
            auth: None,
            tokens: Vec::new(),
            tls: None,
            clients: Vec::new(),
            open_health: true,
            default_deadline: Duration::from_secs(300),
            max_deadline: Duration::from_secs(3600),
            require_deadline: false,
            send_stall_timeout: Duration::from_secs(30),
            subject_key: None,
        }
    }
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No authentication, on any address: an explicit choice.
    None,
    /// Bearer tokens, checked against `[[server.tokens]]`.
    Tokens,
}

/// One caller with a bearer token. The config holds only the token's SHA-256, read from an
/// environment variable or a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The caller's name, as logs (and audit records) show it. Never the token.
    pub name: String,
    /// Environment variable holding the hex SHA-256 of the token.
    pub sha256_env: Option<String>,
    /// File holding the hex SHA-256 of the token.
    pub sha256_file: Option<PathBuf>,
    /// Sources this caller may read, or `["*"]`.
    pub sources: Vec<String>,
    /// RPCs this caller may call (`Extract`, `Validate`), or `["*"]`.
    #[serde(default = "default_rpcs")]
    pub rpcs: Vec<String>,
    /// The digest, resolved by [`Config::load`].
    #[serde(skip)]
    pub sha256: Option<[u8; 32]>,
}

/// The gRPC listener's TLS (rustls).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA certificate(s) that sign client certificates; enables mutual TLS. Clients
    /// without a certificate may still use a bearer token.
    pub client_ca_file: Option<PathBuf>,
}

/// One caller identified by its client certificate's common name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// The caller's name, as logs show it.
    pub name: String,
    /// The subject common name (CN) of the client certificate.
    pub common_name: String,
    /// Sources this caller may read, or `["*"]`.
    pub sources: Vec<String>,
    /// RPCs this caller may call, or `["*"]`.
    #[serde(default = "default_rpcs")]
    pub rpcs: Vec<String>,
}

fn default_rpcs() -> Vec<String> {
    vec!["Extract".to_owned(), "Validate".to_owned()]
}

/// The secret key of the subject hash. `Debug` prints it redacted.
pub type SubjectKey = SecretBox<Vec<u8>>;

/// The environment variable read for the subject key when the config names none.
pub const DEFAULT_SUBJECT_KEY_ENV: &str = "DSR_SUBJECT_KEY";

/// libpq's `sslmode`, with libpq's meanings. tokio-postgres knows only three of these, so
/// [`crate::db::tls`] maps each mode to a rustls configuration:
///
/// - `disable`: plaintext only.
/// - `prefer`: TLS when the server offers it, plaintext otherwise; the certificate is not
///   verified (as in libpq), unless `root_cert` is set, in which case it is verified as in
///   `verify-ca`.
/// - `require`: TLS or fail; the certificate is not verified unless `root_cert` is set (then as
///   `verify-ca`, again as in libpq).
/// - `verify-ca`: TLS, and the server certificate must chain to `root_cert`.
/// - `verify-full`: as `verify-ca`, and the certificate must also name `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// One PostgreSQL database and its data map.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The name callers use in `ExtractRequest.source`.
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Environment variable that holds the password.
    pub password_env: Option<String>,
    /// File that holds the password (a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// Present only to reject inline passwords with a precise message.
    #[serde(default, rename = "password")]
    password_inline: Option<toml_value::Ignored>,
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
    pub connect_timeout: Duration,
    #[serde(default = "default_application_name")]
    pub application_name: String,
    /// The identity kinds callers may ask by, for example `["email", "customer_id"]`.
    pub identity_kinds: Vec<String>,
    /// Time zone of `timestamp without time zone` columns (IANA name). Default UTC.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Live columns missing from the data map: `fail` (default) or `warn`.
    #[serde(default)]
    pub unmapped_columns: UnmappedPolicy,
    /// Values that fail their coercion rule: `fail` (default) or `reject_row`.
    #[serde(default)]
    pub on_coercion_error: CoercionPolicy,
    /// How long a passed schema check is trusted before the catalog is read again.
    #[serde(default = "default_schema_refresh", with = "humantime_serde")]
    pub schema_refresh: Duration,
    /// The data map: every table that holds data about subjects.
    pub tables: Vec<TableConfig>,
    /// The password, resolved from `password_env`/`password_file` by [`Config::load`].
    #[serde(skip)]
    pub password: Option<SecretString>,
}

/// `Debug` by hand, so that the password's presence, never its value, is shown.
impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("password", &self.password)
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .field("max_connections", &self.max_connections)
            .field("min_idle", &self.min_idle)
            .field("max_per_caller", &self.max_per_caller)
            .field("connect_timeout", &self.connect_timeout)
            .field("application_name", &self.application_name)
            .field("identity_kinds", &self.identity_kinds)
            .field("timezone", &self.timezone)
            .field("unmapped_columns", &self.unmapped_columns)
            .field("on_coercion_error", &self.on_coercion_error)
            .field("schema_refresh", &self.schema_refresh)
            .field("tables", &self.tables)
            .finish()
    }
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

/// The longest deadline, refresh or deadline default a config may set.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest connect timeout, grace period or stall timeout a config may set.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Checks a caller's scopes: known sources (or `*`) and known RPCs.
fn check_scopes(
    at: &str,
    sources: &[String],
    rpcs: &[String],
    known: &[SourceConfig],
    problems: &mut Vec<String>,
) {
    for source in sources {
        if source != "*" && !known.iter().any(|s| &s.name == source) {
            problems.push(format!("{at}.sources: unknown source '{source}'"));
        }
    }
    for rpc in rpcs {
        if !matches!(rpc.as_str(), "*" | "Extract" | "Validate") {
            problems.push(format!(
                "{at}.rpcs: unknown RPC '{rpc}' (Extract, Validate or *)"
            ));
        }
    }
}

fn default_port() -> u16 {
    5432
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
fn default_schema_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_application_name() -> String {
    "dsr-connector".to_owned()
}

/// One mapped table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `table` (schema `public`) or `schema.table`.
    pub name: String,
    /// Identity columns: the table is reached directly when the request's kind matches.
    #[serde(default)]
    pub identity: OneOrMany<IdentityColumn>,
    /// References: the table is reached through another mapped table.
    #[serde(default)]
    pub reference: OneOrMany<Reference>,
    /// Every column: its data category (or `not_pii`), or a table with the category and a
    /// coercion rule or JSON scanning.
    pub columns: BTreeMap<String, ColumnSpec>,
}

/// One column of the data map: `email = "contact.email"`, or
/// `signup = { category = "account.signup_date", coerce = "date", formats = ["%d/%m/%Y"] }`.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

/// What to do with live columns that the data map does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedPolicy {
    /// Refuse to extract (FAILED_PRECONDITION) until the column is classified.
    #[default]
    Fail,
    /// Extract the mapped columns, and report the unmapped ones as warnings.
    Warn,
}

/// What to do with a value that fails its coercion rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CoercionPolicy {
    /// End the extraction with FAILED_PRECONDITION, naming the violation.
    #[default]
    Fail,
    /// Leave the row out, count it as rejected, and report the violation.
    RejectRow,
}

/// Extra categories for the classification matrix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationConfig {
    #[serde(default)]
    pub categories: Vec<crate::pii::CategoryConfig>,
}

/// `identity = { kind = "email", column = "email" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityColumn {
    pub kind: String,
    pub column: String,
}

/// `reference = { column = "customer_id", table = "customers", to = "id" }`: rows of this table
/// whose `column` equals `to` of a subject's row in `table`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub column: String,
    pub table: String,
    pub to: String,
}

/// Accepts either one inline table or an array of them.
#[derive(Debug, Clone, Deserialize)]
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

impl Config {
    /// Reads `path`, applies environment overrides, resolves secrets and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(Box::new)?;
        config.resolve_secrets(|name| std::env::var(name).ok())?;
        config.validate()?;
        config.matrix = Some(std::sync::Arc::new(config.build_matrix()?));
        Ok(config)
    }

    /// Parses a config from TOML text without reading the environment. For tests and tools.
    pub fn from_toml_str(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.resolve_secrets(env)?;
        config.validate()?;
        config.matrix = Some(std::sync::Arc::new(config.build_matrix()?));
        Ok(config)
    }

    /// Reads every secret the config points at. Collects all failures.
    fn resolve_secrets(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut problems = Vec::new();

        if self.server.subject_key.is_none() {
            let key = match (&self.server.subject_key_env, &self.server.subject_key_file) {
                (Some(_), Some(_)) => Err(
                    "server.subject_key_env: set either subject_key_env or subject_key_file, not both"
                        .to_owned(),
                ),
                (None, Some(file)) => read_secret_file(file)
                    .map(String::into_bytes)
                    .map_err(|e| format!("server.subject_key_file: {e}")),
                (var, None) => {
                    let var = var.as_deref().unwrap_or(DEFAULT_SUBJECT_KEY_ENV);
                    env(var).map(String::into_bytes).ok_or_else(|| {
                        format!(
                            "server.subject_key_env: environment variable {var} is not set \
                             (it holds the secret key for subject hashes, at least 16 bytes)"
                        )
                    })
                }
            };
            match key {
                Ok(key) if key.len() < 16 => problems.push(
                    "server.subject_key_env: the subject key must be at least 16 bytes long"
                        .to_owned(),
                ),
                Ok(key) => self.server.subject_key = Some(SecretBox::new(Box::new(key))),
                Err(problem) => problems.push(problem),
            }
        }

        for (i, token) in self.server.tokens.iter_mut().enumerate() {
            let at = format!("server.tokens[{i}]");
            let text = match (&token.sha256_env, &token.sha256_file) {
                (Some(var), None) => env(var).ok_or_else(|| {
                    format!("{at}.sha256_env: environment variable {var} is not set")
                }),
                (None, Some(file)) => {
                    read_secret_file(file).map_err(|e| format!("{at}.sha256_file: {e}"))
                }
                _ => Err(format!(
                    "{at}: set exactly one of sha256_env and sha256_file"
                )),
            };
            match text.and_then(|t| {
                let bytes = hex::decode(t.trim())
                    .map_err(|_| format!("{at}: the token digest is not hex"))?;
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| format!("{at}: the token digest must be 32 bytes (SHA-256)"))
            }) {
                Ok(digest) => token.sha256 = Some(digest),
                Err(problem) => problems.push(problem),
            }
        }

        for (i, source) in self.sources.iter_mut().enumerate() {
            let at = format!("sources[{i}]");
            if source.password.is_some() {
                continue; // set programmatically (the demo)
            }
            if source.password_inline.is_some() {
                problems.push(format!(
                    "{at}.password: inline passwords are not allowed; \
                     use password_env or password_file"
                ));
                continue;
            }
            match (&source.password_env, &source.password_file) {
                (Some(_), Some(_)) => problems.push(format!(
                    "{at}.password_env: set either password_env or password_file, not both"
                )),
                (Some(var), None) => match env(var) {
                    Some(value) => source.password = Some(SecretString::from(value)),
                    None => problems.push(format!(
                        "{at}.password_env: environment variable {var} is not set"
                    )),
                },
                (None, Some(file)) => match read_secret_file(file) {
                    Ok(value) => source.password = Some(SecretString::from(value)),
                    Err(e) => problems.push(format!("{at}.password_file: {e}")),
                },
                (None, None) => {} // trust or certificate authentication
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Checks everything that serde cannot: ranges, names, and the data map's cross-references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let server = &self.server;
        if server.default_batch_size == 0 {
            problems.push("server.default_batch_size: must be at least 1".to_owned());
        }
        if server.max_batch_size > MAX_BATCH_SIZE_LIMIT {
            problems.push(format!(
                "server.max_batch_size: at most {MAX_BATCH_SIZE_LIMIT} rows per batch"
            ));
        }
        if server.default_batch_size > server.max_batch_size {
            problems.push(format!(
                "server.default_batch_size: {} is above server.max_batch_size ({})",
                server.default_batch_size, server.max_batch_size
            ));
        }
        if server.max_batch_bytes < 1024 || server.max_batch_bytes > 3 * 1024 * 1024 {
            problems.push(
                "server.max_batch_bytes: must be between 1024 and 3145728 \
                 (gRPC clients refuse messages over 4 MiB)"
                    .to_owned(),
            );
        }
        if server.max_deadline.is_zero() || server.default_deadline.is_zero() {
            problems
                .push("server.default_deadline, server.max_deadline: must be above zero".into());
        }
        for (key, value, max) in [
            ("default_deadline", server.default_deadline, MAX_DURATION),
            ("max_deadline", server.max_deadline, MAX_DURATION),
            ("shutdown_grace", server.shutdown_grace, MAX_TIMEOUT),
            ("send_stall_timeout", server.send_stall_timeout, MAX_TIMEOUT),
        ] {
            if value > max {
                problems.push(format!(
                    "server.{key}: at most {}",
                    humantime_serde::re::humantime::format_duration(max)
                ));
            }
        }
        if server.send_stall_timeout < Duration::from_millis(100) {
            problems.push("server.send_stall_timeout: at least 100ms".to_owned());
        }
        if server.default_deadline > server.max_deadline {
            problems.push("server.default_deadline: above server.max_deadline".to_owned());
        }
        if server.auth == Some(AuthMode::Tokens) && server.tokens.is_empty() {
            problems.push("server.auth: \"tokens\" needs at least one [[server.tokens]]".into());
        }
        if server.auth == Some(AuthMode::None) && !server.tokens.is_empty() {
            problems
                .push("server.auth: \"none\" contradicts the configured [[server.tokens]]".into());
        }
        if self.auth_mode() == AuthMode::None
            && server.auth.is_none()
            && !server.listen.ip().is_loopback()
        {
            problems.push(format!(
                "server.auth: refusing to listen on {} without authentication; configure \
                 [[server.tokens]], or set auth = \"none\" to serve unauthenticated on purpose",
                server.listen
            ));
        }
        let mut token_names = HashSet::new();
        for (i, token) in server.tokens.iter().enumerate() {
            let at = format!("server.tokens[{i}]");
            if token.name.trim().is_empty() || !token_names.insert(token.name.as_str()) {
                problems.push(format!("{at}.name: empty or duplicate caller name"));
            }
            check_scopes(
                &at,
                &token.sources,
                &token.rpcs,
                &self.sources,
                &mut problems,
            );
        }
        let mut client_names = HashSet::new();
        for (i, client) in server.clients.iter().enumerate() {
            let at = format!("server.clients[{i}]");
            if client.name.trim().is_empty()
                || token_names.contains(client.name.as_str())
                || !client_names.insert(client.name.as_str())
            {
                problems.push(format!("{at}.name: empty or duplicate caller name"));
            }
            if client.common_name.trim().is_empty() {
                problems.push(format!("{at}.common_name: must not be empty"));
            }
            check_scopes(
                &at,
                &client.sources,
                &client.rpcs,
                &self.sources,
                &mut problems,
            );
        }
        if !server.clients.is_empty()
            && server
                .tls
                .as_ref()
                .is_none_or(|t| t.client_ca_file.is_none())
        {
            problems.push(
                "server.clients: client certificates need server.tls.client_ca_file".to_owned(),
            );
        }
        if let Some(format) = &server.log_format
            && !matches!(format.as_str(), "json" | "text")
        {
            problems.push(format!(
                "server.log_format: '{format}' is not \"json\" or \"text\""
            ));
        }
        if server.worker_threads == Some(0) {
            problems.push("server.worker_threads: must be at least 1".to_owned());
        }
        if server.stream_buffer == 0 {
            problems.push("server.stream_buffer: must be at least 1".to_owned());
        }
        if self.sources.is_empty() {
            problems.push("sources: at least one source is required".to_owned());
        }
        let matrix = match self.build_matrix() {
            Ok(m) => Some(m),
            Err(ConfigError::Invalid(mut p)) => {
                problems.append(&mut p);
                None
            }
            Err(other) => return Err(other),
        };
        let mut names = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            if source.name.trim().is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(source.name.as_str()) {
                problems.push(format!(
                    "{at}.name: duplicate source name '{}'",
                    source.name
                ));
            }
            source.validate(&at, matrix.as_ref(), &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn build_matrix(&self) -> Result<crate::pii::Matrix, ConfigError> {
        crate::pii::Matrix::new(&self.classification.categories)
            .map_err(|e| ConfigError::Invalid(vec![e.0]))
    }

    /// The classification matrix (built-in categories plus the configured ones).
    pub fn matrix(&self) -> std::sync::Arc<crate::pii::Matrix> {
        self.matrix.clone().unwrap_or_else(|| {
            std::sync::Arc::new(
                self.build_matrix()
                    .expect("a loaded config has a valid classification matrix"),
            )
        })
    }

    /// How callers authenticate, after defaults: tokens when any are configured.
    pub fn auth_mode(&self) -> AuthMode {
        match self.server.auth {
            Some(mode) => mode,
            None if self.server.tokens.is_empty() && self.server.clients.is_empty() => {
                AuthMode::None
            }
            None => AuthMode::Tokens,
        }
    }

    /// The subject key. Present after [`Config::load`]; the demo sets it directly.
    pub fn subject_key(&self) -> &[u8] {
        self.server
            .subject_key
            .as_ref()
            .map(|k| k.expose_secret().as_slice())
            .unwrap_or_default()
    }
}

impl SourceConfig {
    /// The most calls one caller may run on this source at once.
    pub fn caller_share(&self) -> u32 {
        self.max_per_caller
            .unwrap_or(self.max_connections.div_ceil(2))
            .clamp(1, self.max_connections.max(1))
    }

    fn validate(&self, at: &str, matrix: Option<&crate::pii::Matrix>, problems: &mut Vec<String>) {
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
                "{at}.root_cert: required when ssl_mode is verify-ca or verify-full"
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
        if self.tables.is_empty() {
            problems.push(format!("{at}.tables: at least one table is required"));
        }

        let mut by_name: HashMap<QualifiedName, &TableConfig> = HashMap::new();
        for (j, table) in self.tables.iter().enumerate() {
            match QualifiedName::parse(&table.name) {
                None => problems.push(format!(
                    "{at}.tables[{j}].name: '{}' is not 'table' or 'schema.table'",
                    table.name
                )),
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

        let mut used_kinds = HashSet::new();
        for (j, table) in self.tables.iter().enumerate() {
            let tat = format!("{at}.tables[{j}]");
            if table.columns.is_empty() {
                problems.push(format!("{tat}.columns: at least one column is required"));
            }
            for (column, spec) in &table.columns {
                if column.is_empty() {
                    problems.push(format!("{tat}.columns: empty column name"));
                }
                validate_column(&format!("{tat}.columns.{column}"), spec, matrix, problems);
            }
            if table.identity.as_slice().is_empty() && table.reference.as_slice().is_empty() {
                problems.push(format!(
                    "{tat}: table '{}' has neither an identity nor a reference, so no subject can reach it",
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
            for reference in table.reference.as_slice() {
                if !table.columns.contains_key(&reference.column) {
                    problems.push(format!(
                        "{tat}.reference.column: '{}' is not in the table's columns (classify it)",
                        reference.column
                    ));
                }
                let parent = QualifiedName::parse(&reference.table).and_then(|q| by_name.get(&q));
                match parent {
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
            if !used_kinds.contains(kind.as_str()) {
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
        }
    }

    /// Finds a cycle in the reference graph, if there is one.
    fn reference_cycle(&self) -> Option<Vec<String>> {
        let parents: HashMap<String, Vec<String>> = self
            .tables
            .iter()
            .filter_map(|t| {
                let qn = QualifiedName::parse(&t.name)?;
                let ps = t
                    .reference
                    .as_slice()
                    .iter()
                    .filter_map(|r| QualifiedName::parse(&r.table).map(|q| q.display_name()))
                    .collect();
                Some((qn.display_name(), ps))
            })
            .collect();
        fn visit(
            node: &str,
            parents: &HashMap<String, Vec<String>>,
            path: &mut Vec<String>,
            done: &mut HashSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(pos) = path.iter().position(|p| p == node) {
                let mut cycle = path[pos..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_owned());
            for parent in parents.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(parent, parents, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(node.to_owned());
            None
        }
        let mut done = HashSet::new();
        let mut names: Vec<&String> = parents.keys().collect();
        names.sort();
        names
            .into_iter()
            .find_map(|name| visit(name, &parents, &mut Vec::new(), &mut done))
    }
}

/// Checks one column's category and rule.
fn validate_column(
    at: &str,
    spec: &ColumnSpec,
    matrix: Option<&crate::pii::Matrix>,
    problems: &mut Vec<String>,
) {
    let category = spec.category();
    if category.is_empty() {
        problems.push(format!(
            "{at}: empty category (use a data category or \"{NOT_PII}\")"
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
                if let Err(e) = crate::coerce::check_date_format(format) {
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

/// Reads a secret from a file, without its trailing newline.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(trimmed.to_owned())
}
