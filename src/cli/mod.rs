//! The client-side commands of the `dsr-connector` binary: [`extract`] calls a running
//! server and writes a data package for people; [`erase`] previews and erases one subject;
//! [`discover`] drafts a source's data map from its database and writes it into a config.

pub mod discover;
pub mod erase;
pub mod extract;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A channel to the server at `addr` (http:// or https://, with a CA certificate and a client
/// certificate for TLS). Connected on the first call, so that a server that cannot be reached
/// yet is an UNAVAILABLE like any other.
pub(crate) fn channel(
    addr: &str,
    ca_cert: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(addr.to_owned())
        .with_context(|| format!("--addr: '{addr}' is not a URL like http://host:port"))?
        .connect_timeout(Duration::from_secs(10));
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
