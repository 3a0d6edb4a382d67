//! Mutual TLS on the gRPC listener: a client certificate signed by the configured CA and named
//! in the config identifies the caller; any other client is refused.

mod support;

use dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::{TestServer, config, config_text, extract, request};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate and key (PEM) named `cn`, for `dns` names, signed by `issuer`.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str, dns: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn client(
    server: &TestServer,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<DsrConnectorServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(DsrConnectorServiceClient::new(channel))
}

#[tokio::test]
async fn client_certificates_identify_callers() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca("dsr test CA");
    let server_cert = leaf(&authority, "localhost", &["localhost"]);
    let orchestrator = leaf(&authority, "orchestrator.prod", &[]);
    let stranger = leaf(&authority, "stranger", &[]);
    let rogue = leaf(&ca("rogue CA"), "orchestrator.prod", &[]);
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let cert_file = write("server.crt", &server_cert.0);
    let key_file = write("server.key", &server_cert.1);
    let ca_file = write("ca.crt", &authority.pem());

    let text = config_text("");
    let at = text.find("[[classification.categories]]").unwrap();
    let text = format!(
        "{}[server.tls]\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\nclient_ca_file = {ca_file:?}\n\n\
         [[server.clients]]\nname = \"orchestrator\"\ncommon_name = \"orchestrator.prod\"\nsources = [\"demo\"]\n\n{}",
        &text[..at],
        &text[at..]
    );
    let server = TestServer::start(config(&text)).await;
    let ca_pem = authority.pem();

    let mut good = client(&server, &ca_pem, Some(&orchestrator)).await.unwrap();
    let x = extract(&mut good, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.manifest.unwrap().row_count, 18);

    // Signed by the CA, but not a configured caller.
    let mut unknown = client(&server, &ca_pem, Some(&stranger)).await.unwrap();
    let x = extract(&mut unknown, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Unauthenticated, "{}", x.message());

    // No certificate: TLS 1.3 lets the connection open; the call itself is refused.
    match client(&server, &ca_pem, None).await {
        Ok(mut anonymous) => {
            let x = extract(&mut anonymous, request("email", "alice@example.com")).await;
            assert_eq!(x.code(), Code::Unauthenticated, "{}", x.message());
        }
        Err(e) => panic!("a client without a certificate should connect: {e}"),
    }

    // A certificate from another CA never completes a call.
    let refused = match client(&server, &ca_pem, Some(&rogue)).await {
        Err(_) => true,
        Ok(mut rogue) => {
            extract(&mut rogue, request("email", "alice@example.com"))
                .await
                .code()
                != Code::Ok
        }
    };
    assert!(refused, "a certificate from an unknown CA was accepted");
    server.stop().await.unwrap();
}
