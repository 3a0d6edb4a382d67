//! Maps libpq's five `sslmode`s onto tokio-postgres and rustls.
//!
//! tokio-postgres only knows `disable`/`prefer`/`require` and leaves certificate checks to the
//! TLS connector, and rustls always verifies the chain and the host name. The meaning of each
//! mode is therefore decided here, once:
//!
//! | mode | tokio-postgres | certificate check |
//! |---|---|---|
//! | disable | disable | none (no TLS) |
//! | prefer | prefer | none; as verify-ca when `root_cert` is set |
//! | require | require | none; as verify-ca when `root_cert` is set |
//! | verify-ca | require | chain to `root_cert`, any host name |
//! | verify-full | require | chain to `root_cert`, and the certificate names `host` |
//!
//! "None" still checks the handshake signature with the certificate's key, so the session is
//! encrypted and bound to the certificate presented; only the certificate's identity goes
//! unchecked, exactly as with libpq.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::SslMode;

/// The TLS setup of one source: what tokio-postgres is told, and the connector it uses.
pub struct SourceTls {
    pub pg_mode: PgSslMode,
    pub connector: MakeRustlsConnect,
}

/// Builds the TLS setup for `mode`, reading `root_cert` when given.
pub fn source_tls(mode: SslMode, root_cert: Option<&Path>) -> Result<SourceTls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (roots, root_certs) = match root_cert {
        Some(path) => {
            let (store, certs) = load_roots(path)?;
            (Some(Arc::new(store)), certs)
        }
        None => (None, Vec::new()),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => Arc::new(SelfSignedRoot {
            inner: WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("root_cert: {e}"))?,
            roots: root_certs,
            check_name: true,
        }),
        (SslMode::VerifyFull | SslMode::VerifyCa, None) => {
            return Err("root_cert: required when ssl_mode is verify-ca or verify-full".into());
        }
        (_, Some(roots)) => Arc::new(ChainOnly {
            inner: Arc::new(SelfSignedRoot {
                inner: WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("root_cert: {e}"))?,
                roots: root_certs,
                check_name: false,
            }),
        }),
        (_, None) => Arc::new(EncryptOnly {
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let pg_mode = match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    };
    Ok(SourceTls {
        pg_mode,
        connector: MakeRustlsConnect::new(config),
    })
}

fn load_roots(path: &Path) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("root_cert: cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("root_cert: {} is not PEM: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(format!(
            "root_cert: {} holds no usable CA certificate",
            path.display()
        ));
    }
    Ok((roots, certs))
}

/// The chain to a root of `root_cert`, as WebPKI checks it; and, as libpq accepts, a server
/// certificate that is itself one of those roots (a self-signed certificate, as
/// `openssl req -x509` makes, given as its own root), provided it is valid now and, for
/// verify-full, names the host. WebPKI alone refuses it as a CA used as an end entity.
#[derive(Debug)]
struct SelfSignedRoot {
    inner: Arc<WebPkiServerVerifier>,
    roots: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl SelfSignedRoot {
    fn accepts_itself(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        use x509_cert::der::Decode;
        let cert = x509_cert::Certificate::from_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let validity = &cert.tbs_certificate.validity;
        let now = std::time::Duration::from_secs(now.as_secs());
        if now < validity.not_before.to_unix_duration() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        if now > validity.not_after.to_unix_duration() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        if self.check_name {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
        }
        Ok(())
    }
}

impl ServerCertVerifier for SelfSignedRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // WebPKI refuses a root as an end entity; libpq accepts the configured root
            // itself.
            Err(_)
                if self
                    .roots
                    .iter()
                    .any(|root| root.as_ref() == end_entity.as_ref()) =>
            {
                self.accepts_itself(end_entity, server_name, now)
                    .map(|()| ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// verify-ca: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<SelfSignedRoot>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// prefer/require without a root certificate: encryption without certificate identity checks.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Installs ring as the process-wide rustls provider. Idempotent; call it before any TLS use.
pub fn install_crypto_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}
