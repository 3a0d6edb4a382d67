//! The client-side commands of the `dsr-connector` binary: [`extract`] calls a running
//! server and writes a data package for people; [`erase`] previews and erases one subject;
//! [`discover`] drafts a source's data map from its database and writes it into a config;
//! [`request`] submits and follows durable requests across sources.

pub mod discover;
pub mod erase;
pub mod extract;
pub mod request;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How to reach the server, and who calls it.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The server: http://HOST:PORT, or https://HOST:PORT for TLS.
    #[arg(long)]
    pub addr: String,
    /// An environment variable holding the bearer token, when the server asks for one.
    #[arg(long)]
    pub token_env: Option<String>,
    /// With https: the CA certificate (PEM) that signed the server's certificate.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// With https: a client certificate (PEM), for servers that identify callers by it.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// With --cert: its private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ServerArgs {
    /// The bearer token, when --token-env names one.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        self.token_env
            .as_ref()
            .map(|var| {
                std::env::var(var)
                    .with_context(|| format!("--token-env: environment variable {var} is not set"))
            })
            .transpose()
    }

    /// A channel to the server, connected on the first call.
    pub fn channel(&self) -> anyhow::Result<Channel> {
        channel(&self.addr, &self.ca_cert, &self.cert, &self.key)
    }
}

/// What every client command needs to call the server about one subject. Not `Debug`: it
/// holds the identity value.
#[derive(clap::Args)]
pub struct CallArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The source, as configured on the server.
    #[arg(long)]
    pub source: String,
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Your own id for this request, sent as x-request-id and kept in the manifest or receipt.
    #[arg(long)]
    pub request_id: Option<String>,
    /// A compliance tag for the manifest or receipt, for example gdpr-art15 or gdpr-art17.
    #[arg(long)]
    pub compliance_tag: Option<String>,
}

/// Who a client command is about. Not `Debug`: it holds the identity value.
#[derive(clap::Args)]
pub struct SubjectArgs {
    /// The identity kind, for example email or customer_id.
    #[arg(long)]
    pub kind: String,
    /// The identity value. Other users of this machine can see it in the process list;
    /// --value-env keeps it out of there.
    #[arg(
        long,
        required_unless_present = "value_env",
        conflicts_with = "value_env"
    )]
    pub value: Option<String>,
    /// An environment variable holding the identity value.
    #[arg(long)]
    pub value_env: Option<String>,
    /// Another identity of the same person, as KIND=VALUE (for example phone=+4915112345678),
    /// asked in the same snapshot; repeatable. Visible in the process list, as --value is.
    #[arg(long = "also", value_name = "KIND=VALUE")]
    pub also: Vec<String>,
    /// Another identity of the same person, as KIND=VARIABLE: its value is read from the
    /// environment variable; repeatable.
    #[arg(long = "also-env", value_name = "KIND=VARIABLE")]
    pub also_env: Vec<String>,
}

impl SubjectArgs {
    /// The identity value, from --value or the variable --value-env names; never empty.
    pub fn value(&self) -> anyhow::Result<String> {
        let value = match (&self.value, &self.value_env) {
            (Some(value), _) => value.clone(),
            (None, Some(var)) => std::env::var(var)
                .with_context(|| format!("--value-env: environment variable {var} is not set"))?,
            (None, None) => bail!("give the identity with --value or --value-env"),
        };
        if value.trim().is_empty() {
            bail!("the identity value is empty");
        }
        Ok(value)
    }

    /// The other identities of --also and --also-env, in that order.
    pub fn more_identities(&self) -> anyhow::Result<Vec<crate::pb::Identity>> {
        let split = |flag: &str, text: &str| -> anyhow::Result<(String, String)> {
            let (kind, rest) = text
                .split_once('=')
                .filter(|(kind, rest)| !kind.is_empty() && !rest.is_empty())
                .with_context(|| format!("{flag}: expected KIND=..., for example phone=..."))?;
            Ok((kind.to_owned(), rest.to_owned()))
        };
        let mut more = Vec::new();
        for text in &self.also {
            let (kind, value) = split("--also", text)?;
            more.push(crate::pb::Identity { kind, value });
        }
        for text in &self.also_env {
            let (kind, var) = split("--also-env", text)?;
            let value = std::env::var(&var)
                .with_context(|| format!("--also-env: environment variable {var} is not set"))?;
            more.push(crate::pb::Identity { kind, value });
        }
        Ok(more)
    }
}

impl CallArgs {
    /// The identity value, from --value or --value-env; never empty.
    pub fn value(&self) -> anyhow::Result<String> {
        self.subject.value()
    }

    /// The bearer token, when --token-env names one.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        self.server.token()
    }

    /// --request-id, or a fresh `cli-<uuid>`.
    pub fn request_id(&self) -> String {
        self.request_id
            .clone()
            .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4()))
    }

    /// A channel to the server, connected on the first call.
    pub fn channel(&self) -> anyhow::Result<Channel> {
        self.server.channel()
    }
}

/// A channel to the server at `addr` (http:// or https://, with a CA certificate and a client
/// certificate for TLS). Connected on the first call, so that a server that cannot be reached
/// yet is an UNAVAILABLE like any other.
fn channel(
    addr: &str,
    ca_cert: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(addr.to_owned())
        .with_context(|| format!("--addr: '{addr}' is not a URL like http://host:port"))?
        .connect_timeout(Duration::from_secs(10))
        // Receive windows that grow with the link (BDP), as gRPC's C core and grpc-go do by
        // default: a fixed 64 KiB window allows one window of rows per round trip, which caps
        // a 50 ms link at about 1.3 MB/s. Over loopback they cost about a tenth of the rate
        // (see docs/performance.md); a link between machines is what this command meets.
        .http2_adaptive_window(true);
    if addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("--ca-cert {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (cert, key) {
            let cert_pem =
                std::fs::read(cert).with_context(|| format!("--cert {}", cert.display()))?;
            let key_pem = std::fs::read(key).with_context(|| format!("--key {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    } else if ca_cert.is_some() || cert.is_some() {
        bail!("--ca-cert and --cert need an https:// address");
    }
    Ok(endpoint.connect_lazy())
}

/// Asks the person at the terminal to type `expected` again before something that cannot be
/// undone (`what`: "erased", "approved"); without a terminal, or with anything else typed,
/// nothing is done.
pub(crate) fn confirm(prompt: &str, expected: &str, what: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("not {what}: confirm at a terminal, or pass --yes; nothing was {what}");
    }
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut typed = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut typed)
        .context("reading the confirmation")?;
    if typed.trim() != expected.trim() {
        bail!("what was typed does not match; nothing was {what}");
    }
    Ok(())
}

/// Sets a call's `x-request-id` and, when given, its bearer token.
pub(crate) fn set_metadata<T>(
    call: &mut tonic::Request<T>,
    request_id: &str,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let metadata = call.metadata_mut();
    metadata.insert(
        "x-request-id",
        request_id
            .parse()
            .context("--request-id: not a valid header value")?,
    );
    if let Some(token) = token {
        metadata.insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?,
        );
    }
    Ok(())
}
