//! TLS to PostgreSQL: libpq's sslmodes, each against a real server with `ssl = on` and a
//! certificate for `localhost` signed by a test CA, and `require` against a server without TLS.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

use dsr_connector::demo;
use dsr_connector::demo::cluster::{ClusterOptions, TempCluster};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::{TestServer, extract, request};
use tonic::Code;

struct TlsFixture {
    cluster: TempCluster,
    ca_file: tempfile::NamedTempFile,
    other_ca_file: tempfile::NamedTempFile,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pem_file(pem: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
    std::fs::write(file.path(), pem).unwrap();
    file
}

/// A cluster with `ssl = on` serving this certificate and key, loaded with the demo data.
fn tls_cluster(cert_pem: String, key_pem: String) -> TempCluster {
    let options = ClusterOptions {
        tls: Some((cert_pem, key_pem)),
        ..Default::default()
    };
    let cluster = TempCluster::start(&options).expect("TLS cluster");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(demo::load(&cluster, demo::DATABASE))
        .unwrap();
    cluster
}

/// A TLS-enabled cluster with the demo data, and two CA files: the one that signed the
/// server's certificate and an unrelated one.
fn fixture() -> &'static TlsFixture {
    static FIXTURE: OnceLock<TlsFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::thread::spawn(|| {
            let issuer = ca("dsr-connector test CA");
            let leaf_key = KeyPair::generate().unwrap();
            let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            leaf.distinguished_name
                .push(DnType::CommonName, "localhost");
            let cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
            TlsFixture {
                cluster: tls_cluster(cert.pem(), leaf_key.serialize_pem()),
                ca_file: pem_file(&issuer.pem()),
                other_ca_file: pem_file(&ca("some other CA").pem()),
            }
        })
        .join()
        .unwrap()
    })
}

/// The demo config for `cluster`, connecting with these TLS settings.
fn tls_config(
    cluster: &TempCluster,
    host: &str,
    ssl_mode: &str,
    root_cert: Option<&PathBuf>,
    app: &str,
) -> dsr_connector::config::Config {
    let mut tls = format!(
        "ssl_mode = \"{ssl_mode}\"\nconnect_timeout = \"2s\"\napplication_name = \"{app}\""
    );
    if let Some(path) = root_cert {
        tls.push_str(&format!("\nroot_cert = {:?}", path.display().to_string()));
    }
    let text = demo::config_toml(cluster, demo::DATABASE, "127.0.0.1:0".parse().unwrap())
        .replace("host = \"127.0.0.1\"", &format!("host = \"{host}\""))
        .replace("ssl_mode = \"prefer\"", &tls)
        .replace("min_idle = 1", "min_idle = 0");
    demo::config(cluster, &text, support::SUBJECT_KEY).unwrap()
}

/// Runs Alice's extraction through a server whose source connects with these TLS settings.
async fn extract_with(
    cluster: &TempCluster,
    host: &str,
    ssl_mode: &str,
    root_cert: Option<&PathBuf>,
    app: &str,
) -> support::Extraction {
    let server = TestServer::start(tls_config(cluster, host, ssl_mode, root_cert, app)).await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    server.stop().await.unwrap();
    x
}

/// Whether the sessions of `app` used TLS, from `pg_stat_ssl`.
async fn sessions_used_tls(cluster: &TempCluster, app: &str) -> Vec<bool> {
    let db = demo::connect(cluster, "postgres").await.unwrap();
    db.query(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = $1",
        &[&app],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn verify_full_with_the_right_ca_and_host_works() {
    let f = fixture();
    let ca = f.ca_file.path().to_path_buf();
    let x = extract_with(
        &f.cluster,
        "localhost",
        "verify-full",
        Some(&ca),
        "tls-full",
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.manifest.unwrap().row_count, 18);
}

#[tokio::test]
async fn verify_full_fails_when_the_certificate_does_not_name_the_host() {
    let f = fixture();
    let ca = f.ca_file.path().to_path_buf();
    let x = extract_with(
        &f.cluster,
        "127.0.0.1",
        "verify-full",
        Some(&ca),
        "tls-wrong-host",
    )
    .await;
    // A certificate that fails verification is a refusal for good: not retried, and the
    // message says what to change.
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    assert!(x.message().contains("certificate"), "{}", x.message());
    assert!(x.message().contains("root_cert"), "{}", x.message());
    assert!(x.message().contains("source 'demo'"), "{}", x.message());
}

#[tokio::test]
async fn verify_ca_accepts_any_host_name_but_checks_the_chain() {
    let f = fixture();
    let ca = f.ca_file.path().to_path_buf();
    let x = extract_with(&f.cluster, "127.0.0.1", "verify-ca", Some(&ca), "tls-ca").await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());

    let other = f.other_ca_file.path().to_path_buf();
    let x = extract_with(
        &f.cluster,
        "localhost",
        "verify-ca",
        Some(&other),
        "tls-ca-other",
    )
    .await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    assert!(x.message().contains("certificate"), "{}", x.message());
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let f = fixture();
    let app = "tls-require";
    // The certificate names localhost and its CA is not given: only the encryption counts.
    // The server (and its pooled connection) stays up while pg_stat_ssl is read.
    let server = TestServer::start(tls_config(&f.cluster, "127.0.0.1", "require", None, app)).await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let tls = sessions_used_tls(&f.cluster, app).await;
    assert!(!tls.is_empty(), "no session of the service found");
    assert!(tls.iter().all(|ssl| *ssl), "sessions without TLS: {tls:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_really_use_tls() {
    let f = fixture();
    let ca = f.ca_file.path().to_path_buf();
    let app = "tls-check-session";
    // Keep the server (and its pooled connection) alive while pg_stat_ssl is read.
    let server = TestServer::start(tls_config(
        &f.cluster,
        "localhost",
        "verify-full",
        Some(&ca),
        app,
    ))
    .await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let tls = sessions_used_tls(&f.cluster, app).await;
    assert!(!tls.is_empty(), "no session of the service found");
    assert!(tls.iter().all(|ssl| *ssl), "{tls:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_clearly() {
    // This binary's plain cluster (no ssl) from the shared support code.
    let plain = support::cluster();
    let x = extract_with(plain, "127.0.0.1", "require", None, "tls-plain").await;
    assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
    assert!(
        x.message().to_lowercase().contains("tls"),
        "the cause names TLS: {}",
        x.message()
    );
}

/// A cluster whose server certificate is self-signed for `localhost`, as `openssl req -x509`
/// makes one (a CA certificate used as its own server certificate), and that certificate.
fn self_signed_fixture() -> &'static (TempCluster, tempfile::NamedTempFile) {
    static FIXTURE: OnceLock<(TempCluster, tempfile::NamedTempFile)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::thread::spawn(|| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            let cert = params.self_signed(&key).unwrap();
            (
                tls_cluster(cert.pem(), key.serialize_pem()),
                pem_file(&cert.pem()),
            )
        })
        .join()
        .unwrap()
    })
}

#[tokio::test]
async fn a_self_signed_server_certificate_given_as_its_own_root_passes_verify_full() {
    let (cluster, cert) = self_signed_fixture();
    let root = cert.path().to_path_buf();
    let app = "tls-self-signed";
    let server = TestServer::start(tls_config(
        cluster,
        "localhost",
        "verify-full",
        Some(&root),
        app,
    ))
    .await;
    let x = extract(
        &mut server.client().await,
        request("email", "alice@example.com"),
    )
    .await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let tls = sessions_used_tls(cluster, app).await;
    assert!(!tls.is_empty() && tls.iter().all(|ssl| *ssl), "{tls:?}");
    server.stop().await.unwrap();

    // The same certificate does not name 127.0.0.1: verify-full still checks the name.
    let x = extract_with(
        cluster,
        "127.0.0.1",
        "verify-full",
        Some(&root),
        "tls-self-host",
    )
    .await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());

    // Another root: refused at once as a precondition to fix, not retried until the deadline.
    let other = fixture().other_ca_file.path().to_path_buf();
    let x = extract_with(
        cluster,
        "localhost",
        "verify-full",
        Some(&other),
        "tls-self-other",
    )
    .await;
    assert_eq!(x.code(), Code::FailedPrecondition, "{}", x.message());
    assert!(x.message().contains("CA-signed"), "{}", x.message());
}
