//! `--tls`: PostgreSQL over TLS for every reader, verified as `verify-full` against a CA made
//! here: the cluster serves a certificate that CA signed for `localhost` and `127.0.0.1`; the
//! service's source, psql (`PGSSLMODE`, `PGSSLROOTCERT`) and the raw reader all verify it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dsr_connector::demo::cluster::TempCluster;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// The CA file every reader verifies against, once `--tls` made it.
static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Makes the CA and the server's certificate; returns the certificate and key (PEM) for the
/// cluster. The CA's file lives in `dir`.
pub(crate) fn make(dir: &Path) -> anyhow::Result<(String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "dsr-bench CA");
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer)?;
    let root = dir.join("bench-ca.pem");
    std::fs::write(&root, issuer.pem())?;
    ROOT.set(root)
        .map_err(|_| anyhow::anyhow!("the TLS root was made twice"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The source settings that verify the cluster, under `--tls`.
pub(crate) fn source_settings() -> String {
    ROOT.get()
        .map(|root| {
            format!(
                "ssl_mode = \"verify-full\"\nroot_cert = \"{}\"\n",
                root.display()
            )
        })
        .unwrap_or_default()
}

/// psql's environment for `verify-full`, under `--tls`.
pub(crate) fn psql_env() -> Vec<(&'static str, String)> {
    ROOT.get()
        .map(|root| {
            vec![
                ("PGSSLMODE", "verify-full".to_owned()),
                ("PGSSLROOTCERT", root.display().to_string()),
            ]
        })
        .unwrap_or_default()
}

/// A raw reader's connection: over TLS, verified, under `--tls`.
pub(crate) async fn connect(
    cluster: &TempCluster,
    database: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    let Some(root) = ROOT.get() else {
        return dsr_connector::demo::connect(cluster, database).await;
    };
    let tls = dsr_connector::store::postgres::tls::source_tls(
        dsr_connector::config::SslMode::VerifyFull,
        Some(root),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let mut config: tokio_postgres::Config = cluster.connection_string(database).parse()?;
    config.ssl_mode(tls.pg_mode);
    let (client, connection) = config.connect(tls.connector).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
