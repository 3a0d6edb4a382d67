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
//!
//! The parts: [`server`] (listener, callers, deadlines), [`source`] (a database, its pool and
//! policies), [`datamap`] (tables, columns, identities and references) and [`secrets`]
//! (resolving the secrets a config points at).

mod datamap;
pub mod erasure;
mod links;
mod reach;
pub mod schema;
mod secrets;
mod server;
mod source;

/// The category that marks a column as holding no personal data (owned by [`crate::classify`]).
pub use crate::classify::NOT_PII;
pub use datamap::*;
pub use links::{LinkConfig, LinkFrom};
pub use server::*;
pub use source::*;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::ExposeSecret;
use serde::Deserialize;

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "DSR_CONNECTOR_";

/// The largest `server.max_batch_size` accepted.
pub const MAX_BATCH_SIZE_LIMIT: u32 = 100_000;

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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// Categories added to the built-in classification matrix.
    #[serde(default)]
    pub classification: ClassificationConfig,
    pub sources: Vec<SourceConfig>,
    /// Links between sources: identities one source's rows yield for the others
    /// (`[[links]]`), followed by durable requests.
    #[serde(default)]
    pub links: Vec<LinkConfig>,
    /// The compiled classification matrix, built by [`Config::validate`].
    #[serde(skip)]
    matrix: Option<std::sync::Arc<crate::classify::Matrix>>,
}

/// The longest deadline, refresh or deadline default a config may set.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest connect timeout, grace period or stall timeout a config may set.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The smallest segment of an audit log or dead-letter file.
const MIN_SEGMENT_BYTES: u64 = 4096;

/// The longest a segment may stay open, or a closed one be kept: 100 years.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The longest source name: it names folders, health services and metric labels.
const MAX_SOURCE_NAME_BYTES: usize = 128;

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
        if !matches!(
            rpc.as_str(),
            "*" | "Extract"
                | "Validate"
                | "Discover"
                | "Erase"
                | "SubmitRequest"
                | "ApproveRequest"
        ) {
            problems.push(format!(
                "{at}.rpcs: unknown RPC '{rpc}' (Extract, Validate, Discover, Erase, \
                 SubmitRequest, ApproveRequest, or * for every RPC but Erase and \
                 ApproveRequest)"
            ));
        }
    }
}

impl Config {
    /// Reads `path`, applies environment overrides, resolves secrets and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(Box::new)?;
        config.finish(|name| std::env::var(name).ok())
    }

    /// Reads `path` as [`Config::load`] does, for drafting the data map of `source`: that
    /// source's tables are dropped (a draft replaces them) and the checks an empty data map
    /// fails are skipped. Everything else is checked as for serving.
    pub fn load_for_discovery(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let mut config: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(Box::new)?;
        let known: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
        let Some(entry) = config.sources.iter_mut().find(|s| s.name == source) else {
            return Err(ConfigError::Invalid(vec![format!(
                "sources: no source named '{source}' (known: {})",
                known.join(", ")
            )]));
        };
        entry.tables.clear();
        entry.drafting = true;
        config.finish(|name| std::env::var(name).ok())
    }

    /// Resolves the secrets and validates, reporting the problems of both at once.
    fn finish(mut self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        for step in [self.resolve_secrets(env), self.validate()] {
            match step {
                Ok(()) => {}
                Err(ConfigError::Invalid(mut more)) => problems.append(&mut more),
                Err(other) => return Err(other),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        self.matrix = Some(std::sync::Arc::new(self.build_matrix()?));
        Ok(self)
    }

    /// Parses a config from TOML text without reading the environment. For tests and tools.
    pub fn from_toml_str(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let config: Config = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.finish(env)
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
        if server.anonymous_erase && !server.listen.ip().is_loopback() {
            problems.push(format!(
                "server.anonymous_erase: an unauthenticated caller may erase only on a loopback \
                 listener, and this one is {}; give erasing callers a token that names \
                 \"Erase\"",
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
        let stores = [
            (
                "server.audit",
                server.audit.as_ref().map(|a| (a.store, a.path.is_some())),
            ),
            (
                "server.dead_letters",
                server
                    .dead_letters
                    .as_ref()
                    .map(|d| (d.store, d.path.is_some())),
            ),
        ];
        for (at, store) in stores {
            match store {
                Some((StoreKind::File, false)) => {
                    problems.push(format!("{at}.path: required for store = \"file\""));
                }
                Some((StoreKind::Control, true)) => problems.push(format!(
                    "{at}.path: not used with store = \"control\" (the records go to the \
                     control database)"
                )),
                Some((StoreKind::Control, false)) if server.control.is_none() => problems.push(
                    format!("{at}.store: \"control\" needs a [server.control] database"),
                ),
                _ => {}
            }
        }
        let segments = [
            (
                "server.audit",
                server
                    .audit
                    .as_ref()
                    .map(|a| (a.segment_bytes, a.segment_age)),
            ),
            (
                "server.dead_letters",
                server
                    .dead_letters
                    .as_ref()
                    .map(|d| (d.segment_bytes, d.segment_age)),
            ),
        ];
        for (at, segments) in segments {
            let Some((bytes, age)) = segments else {
                continue;
            };
            if bytes != 0 && bytes < MIN_SEGMENT_BYTES {
                problems.push(format!(
                    "{at}.segment_bytes: at least {MIN_SEGMENT_BYTES}, or 0 for no limit by size"
                ));
            }
            if age.is_some_and(|age| age < Duration::from_secs(1) || age > MAX_RETENTION) {
                problems.push(format!(
                    "{at}.segment_age: between 1s and {}",
                    humantime_serde::re::humantime::format_duration(MAX_RETENTION)
                ));
            }
        }
        if let Some(retention) = server.dead_letters.as_ref().and_then(|d| d.retention)
            && (retention < Duration::from_secs(60) || retention > MAX_RETENTION)
        {
            problems.push(format!(
                "server.dead_letters.retention: between 1m and {}",
                humantime_serde::re::humantime::format_duration(MAX_RETENTION)
            ));
        }
        if let Some(control) = &server.control
            && control.root_cert.is_none()
            && matches!(control.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull)
        {
            problems.push(
                "server.control.root_cert: required when ssl_mode is verify-ca or verify-full"
                    .to_owned(),
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
        server
            .requests
            .check(server.control.is_some(), &mut problems);
        links::check(&self.links, &self.sources, &mut problems);
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
            } else if source.name.starts_with('.')
                || source.name.len() > MAX_SOURCE_NAME_BYTES
                || !source
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                // A source's name names its folder in a request's package, its health service
                // and its metric labels.
                problems.push(format!(
                    "{at}.name: '{}': use A-Z, a-z, 0-9, '.', '_' and '-' (not first), at most \
                     {} bytes",
                    source.name, MAX_SOURCE_NAME_BYTES
                ));
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

    fn build_matrix(&self) -> Result<crate::classify::Matrix, ConfigError> {
        crate::classify::Matrix::new(&self.classification.categories)
            .map_err(|e| ConfigError::Invalid(vec![e.0]))
    }

    /// The classification matrix (built-in categories plus the configured ones).
    pub fn matrix(&self) -> std::sync::Arc<crate::classify::Matrix> {
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
