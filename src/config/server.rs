//! The server's settings: listener, TLS, callers and their scopes, deadlines and limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretBox;
use serde::Deserialize;

use super::SslMode;

/// Listener and request limits.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
    #[schemars(with = "super::schema::DurationText")]
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
    /// Lets an unauthenticated caller (no `[[server.tokens]]`, or `auth = "none"`) call
    /// `Erase`. Off by default: an erasure cannot be undone, so it is granted by name. Only
    /// on a loopback listener (the demo sets it); where callers authenticate, it does nothing.
    pub anonymous_erase: bool,
    /// The deadline of a call that sends none (`grpc-timeout`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub default_deadline: Duration,
    /// Longer deadlines are cut to this.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub max_deadline: Duration,
    /// Refuse calls without a deadline (INVALID_ARGUMENT) instead of applying the default.
    pub require_deadline: bool,
    /// A stream whose client has not taken a message for this long is cancelled: its query
    /// is cancelled on PostgreSQL and its connection and snapshot are released.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub send_stall_timeout: Duration,
    /// The encodings responses may be compressed with, for a client that accepts one
    /// (`grpc-accept-encoding`, in the client's order of preference); `[]` sends every
    /// response uncompressed. Requests may arrive in the same encodings. The default offers
    /// zstd alone: gzip costs several times the CPU of the rows it carries, and grpcio and
    /// grpc-js accept it by default, so offering it makes a default client on the same network
    /// slower; offer it (`["zstd", "gzip"]`) where a slow link is the limit.
    pub compression: Vec<Compression>,
    /// Runtime worker threads; default one per core. Fewer threads mean fewer cross-thread
    /// wake-ups, which matters when the service shares a small machine with PostgreSQL.
    pub worker_threads: Option<usize>,
    /// The audit log (`[server.audit]`); without it no call is recorded.
    pub audit: Option<AuditConfig>,
    /// The dead-letter queue (`[server.dead_letters]`); without it dead letters are only
    /// counted.
    pub dead_letters: Option<DeadLetterConfig>,
    /// The shared control database (`[server.control]`).
    pub control: Option<ControlConfig>,
    /// Durable data-subject requests (`[server.requests]`), kept in `[server.control]`.
    pub requests: RequestsConfig,
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
            anonymous_erase: false,
            default_deadline: Duration::from_secs(300),
            max_deadline: Duration::from_secs(3600),
            require_deadline: false,
            send_stall_timeout: Duration::from_secs(30),
            compression: vec![Compression::Zstd],
            audit: None,
            dead_letters: None,
            control: None,
            requests: RequestsConfig::default(),
            subject_key: None,
        }
    }
}

/// A gRPC message compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip (level 6): every gRPC client decodes it.
    Gzip,
    /// zstd (level 3): smaller and several times cheaper to compress than gzip, where the
    /// client supports it.
    Zstd,
}

impl Compression {
    /// The encoding's name in `grpc-encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The encoding as tonic names it.
    pub fn encoding(self) -> tonic::codec::CompressionEncoding {
        match self {
            Compression::Gzip => tonic::codec::CompressionEncoding::Gzip,
            Compression::Zstd => tonic::codec::CompressionEncoding::Zstd,
        }
    }
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No authentication, on any address: an explicit choice.
    None,
    /// Bearer tokens, checked against `[[server.tokens]]`.
    Tokens,
}

/// One caller with a bearer token. The config holds only the token's SHA-256, read from an
/// environment variable or a file.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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

/// The environment variable read for the audit key when `[server.audit]` names none.
pub const DEFAULT_AUDIT_KEY_ENV: &str = "DSR_AUDIT_KEY";

/// Where a store keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// An append-only JSON-lines file (`path`), fsynced per batch: one machine.
    #[default]
    File,
    /// A table of the `[server.control]` PostgreSQL database, committed per batch: several
    /// replicas share it.
    Control,
}

/// `[server.control]`: a PostgreSQL database that several replicas share for their audit
/// logs (one chain per replica) and their dead letters. The service creates its tables.
/// `Debug` is derived: the connection string is a `SecretString`, which prints redacted.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Environment variable holding a libpq-style connection string (it may hold a password,
    /// so it never lives in the file).
    pub url_env: Option<String>,
    /// Or a file holding it.
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub ssl_mode: SslMode,
    pub root_cert: Option<PathBuf>,
    /// The connection string, resolved by [`super::Config::load`].
    #[serde(skip)]
    pub url: Option<secrecy::SecretString>,
}

/// `[server.requests]`: durable data-subject requests (`SubmitRequest`), their tasks and
/// leases in `[server.control]`, and access packages in a directory. Without
/// `[server.control]`, `SubmitRequest` is refused.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RequestsConfig {
    /// Where access requests' packages are written, one folder per request; replicas that
    /// share a control database must share this directory too (a shared volume). Without it,
    /// access requests are refused.
    pub package_dir: Option<PathBuf>,
    /// Public keys (age X25519, `age1...`) that every file of a package is encrypted to, as it
    /// is written: whoever holds one of their identities decrypts it (`age -d -i key.txt`, or
    /// `dsr-connector request wait --out DIR --identity key.txt`). Empty: packages are written
    /// in the clear, readable only by the service's user.
    pub package_recipients: Vec<String>,
    /// Tasks this replica runs at once (0: this replica runs none, and only serves the API).
    pub workers: usize,
    /// How long a claimed task is held without renewal; a replica that dies loses its tasks
    /// after this, and another replica resumes them. Renewed every third of it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub lease: Duration,
    /// How often an idle worker looks for work.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub poll: Duration,
    /// One attempt at a source may take this long.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub attempt_timeout: Duration,
    /// The first retry's wait after a passing failure (a source down, its breaker open);
    /// doubled per attempt, with jitter, up to `retry_max`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub retry_first: Duration,
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub retry_max: Duration,
    /// A source that keeps failing for passing reasons waits, without failing the request,
    /// until this long before the request is due.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub give_up_before_due: Duration,
    /// The due date of an access request that names none: GDPR's one month.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub access_due_after: Duration,
    /// The due date of an erasure request that names none.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub erasure_due_after: Duration,
    /// The most identities `[[links]]` may add to one request (beyond those submitted); a
    /// request whose links find more fails, naming the link: a value shared by many people
    /// (a household's, a shop's) is not one person's.
    pub max_linked_identities: usize,
    /// How many links may follow one another from a submitted identity (1: only links from
    /// the sources asked with a submitted identity).
    pub max_link_hops: u32,
    /// A finished access request's package is deleted this long after it was made (and
    /// the deletion recorded in the audit log).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::schema::DurationText")]
    pub package_retention: Duration,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        RequestsConfig {
            package_dir: None,
            package_recipients: Vec::new(),
            workers: 2,
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(3600),
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            give_up_before_due: Duration::from_secs(DAY),
            access_due_after: Duration::from_secs(30 * DAY),
            erasure_due_after: Duration::from_secs(30 * DAY),
            package_retention: Duration::from_secs(30 * DAY),
            max_linked_identities: 16,
            max_link_hops: 2,
        }
    }
}

impl RequestsConfig {
    /// The settings' own problems: a lease too short to be renewed over a slow link, a
    /// worker count or poll that would swamp the control database, and a package directory
    /// without the control database that requests need.
    pub(super) fn check(&self, has_control: bool, problems: &mut Vec<String>) {
        let at = "server.requests";
        if self.lease < Duration::from_secs(1) {
            problems.push(format!("{at}.lease: at least 1s"));
        }
        if self.poll < Duration::from_millis(10) || self.poll > self.lease {
            problems.push(format!("{at}.poll: between 10ms and the lease"));
        }
        if self.max_link_hops > 8 {
            problems.push(format!("{at}.max_link_hops: at most 8"));
        }
        if self.max_linked_identities > 1000 {
            problems.push(format!("{at}.max_linked_identities: at most 1000"));
        }
        if self.workers > 64 {
            problems.push(format!("{at}.workers: at most 64"));
        }
        if self.attempt_timeout < Duration::from_secs(1) {
            problems.push(format!("{at}.attempt_timeout: at least 1s"));
        }
        if self.retry_first.is_zero() || self.retry_first > self.retry_max {
            problems.push(format!(
                "{at}.retry_first: above zero and at most retry_max"
            ));
        }
        for (key, due) in [
            ("access_due_after", self.access_due_after),
            ("erasure_due_after", self.erasure_due_after),
        ] {
            if due <= self.give_up_before_due {
                problems.push(format!(
                    "{at}.{key}: must be longer than give_up_before_due, or a request would \
                     give up as soon as it starts"
                ));
            }
        }
        for (i, key) in self.package_recipients.iter().enumerate() {
            if key.trim().parse::<age::x25519::Recipient>().is_err() {
                problems.push(format!(
                    "{at}.package_recipients[{i}]: not an age X25519 public key (age1...)"
                ));
            }
        }
        if self.package_dir.is_some() && !has_control {
            problems.push(format!(
                "{at}.package_dir: durable requests need [server.control], where their queue \
                 is kept"
            ));
        }
    }
}

/// `[server.dead_letters]`: the dead-letter queue.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// `file` (default) or `control`.
    #[serde(default)]
    pub store: StoreKind,
    /// The JSON-lines file, for `store = "file"`.
    pub path: Option<PathBuf>,
    /// A segment of the file is closed, and a new one begun, once it holds this many bytes
    /// (default 64 MiB; 0: never by size).
    #[serde(default = "default_dead_letter_segment_bytes")]
    pub segment_bytes: u64,
    /// Or once it was begun this long ago.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub segment_age: Option<Duration>,
    /// Closed segments last written longer ago than this are removed (and counted in the
    /// log); without it, every letter is kept.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub retention: Option<Duration>,
}

fn default_dead_letter_segment_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_audit_segment_bytes() -> u64 {
    256 * 1024 * 1024
}

/// `[server.audit]`: the append-only, hash-chained audit log.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `file` (default) or `control`.
    #[serde(default)]
    pub store: StoreKind,
    /// The log file, for `store = "file"` (its head is `<path>.head`).
    pub path: Option<PathBuf>,
    /// Environment variable with the key of the chain's keyed hash (at least 16 bytes);
    /// default `DSR_AUDIT_KEY`.
    pub key_env: Option<String>,
    /// Or a file holding the key.
    pub key_file: Option<PathBuf>,
    /// This replica's name in its records; default the host name.
    pub replica: Option<String>,
    /// A segment of the file is closed, and a new one begun, once it holds this many bytes
    /// (default 256 MiB; 0: never by size). Every segment is kept: archive old ones.
    #[serde(default = "default_audit_segment_bytes")]
    pub segment_bytes: u64,
    /// Or once it was begun this long ago.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub segment_age: Option<Duration>,
    /// The key, resolved by [`super::Config::load`].
    #[serde(skip)]
    pub key: Option<SubjectKey>,
}

impl AuditConfig {
    /// The replica name: configured, or the host name.
    pub fn replica_name(&self) -> String {
        self.replica.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "dsr-connector".to_owned())
        })
    }
}

/// The environment variable read for the subject key when the config names none.
pub const DEFAULT_SUBJECT_KEY_ENV: &str = "DSR_SUBJECT_KEY";

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn the_control_connection_string_never_shows_in_debug() {
        let control = ControlConfig {
            url_env: Some("DSR_CONTROL_URL".into()),
            url_file: None,
            ssl_mode: SslMode::default(),
            root_cert: None,
            url: Some(secrecy::SecretString::from(
                "host=db user=dsr password=hunter2-secret".to_owned(),
            )),
        };
        for text in [format!("{control:?}"), format!("{control:#?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("DSR_CONTROL_URL"), "{text}");
        }
    }
}
