//! How the service reaches MariaDB: TLS modes as MySQL clients name them, a database down
//! before any row, and wall-clock columns read in the source's zone on both stores.

use super::*;

/// A MariaDB serving TLS with a certificate for `localhost` signed by a test CA, refusing
/// plaintext clients; the CA's file and an unrelated CA's.
pub(crate) struct TlsMariaDb {
    server: TempMariaDb,
    ca: tempfile::NamedTempFile,
    other_ca: tempfile::NamedTempFile,
}

pub(crate) fn tls_mariadb() -> &'static TlsMariaDb {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    static SERVER: OnceLock<TlsMariaDb> = OnceLock::new();
    SERVER.get_or_init(|| {
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let pem_file = |pem: &str| {
            let file = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
            std::fs::write(file.path(), pem).unwrap();
            file
        };
        let issuer = ca("dsr-connector test CA");
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let server = TempMariaDb::start_with_tls(Some((&cert.pem(), &key.serialize_pem(), true)))
            .unwrap_or_else(|e| panic!("cannot start the TLS MariaDB: {e}"));
        server.load_demo("shop").unwrap();
        TlsMariaDb {
            server,
            ca: pem_file(&issuer.pem()),
            other_ca: pem_file(&ca("some other CA").pem()),
        }
    })
}

#[tokio::test]
async fn mariadb_tls_modes_verify_as_mysql_clients_name_them() {
    let tls = tls_mariadb();
    let source = |name: &str, host: &str, mode: &str, ca: Option<&tempfile::NamedTempFile>| {
        let root = ca
            .map(|f| format!("\nroot_cert = \"{}\"", f.path().display()))
            .unwrap_or_default();
        demo::mariadb::source_toml(name, host, tls.server.port(), "shop").replace(
            "ssl_mode = \"preferred\"",
            &format!("ssl_mode = \"{mode}\"{root}\nconnect_timeout = \"2s\""),
        )
    };
    let cases = [
        // (source, host, mode, CA, connects)
        (
            "identity",
            "localhost",
            "verify_identity",
            Some(&tls.ca),
            true,
        ),
        ("ca", "localhost", "verify_ca", Some(&tls.ca), true),
        ("required", "127.0.0.1", "required", None, true),
        ("preferred", "127.0.0.1", "preferred", None, true),
        (
            "other_ca",
            "localhost",
            "verify_identity",
            Some(&tls.other_ca),
            false,
        ),
        (
            "wrong_host",
            "127.0.0.1",
            "verify_identity",
            Some(&tls.ca),
            false,
        ),
        // MySQL's VERIFY_CA would accept this one; the driver checks the name over rustls
        // too (blackbeam/mysql_async#404), so it is refused: stricter, never looser.
        (
            "ca_wrong_host",
            "127.0.0.1",
            "verify_ca",
            Some(&tls.ca),
            false,
        ),
        // The server refuses plaintext clients.
        ("disabled", "127.0.0.1", "disabled", None, false),
    ];
    let text = cases
        .iter()
        .map(|(name, host, mode, ca, _)| source(name, host, mode, *ca))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{}\n{text}", support::config_text(""));
    let config = config_with(&text, tls.server.password());
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    for (name, host, mode, _, connects) in cases {
        let x = extract(&mut client, on(name, "email", ALICE)).await;
        println!("{mode} to {host}: {:?} {}", x.code(), x.message());
        if connects {
            assert_eq!(x.code(), Code::Ok, "{mode} to {host}: {}", x.message());
            assert_eq!(x.manifest.unwrap().row_count, 18);
        } else {
            assert_eq!(
                x.code(),
                Code::Unavailable,
                "{mode} to {host}: {}",
                x.message()
            );
            assert!(x.manifest.is_none());
            assert!(!x.message().contains(tls.server.password()));
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_meets_mariadb_down_before_any_row_is_retried_until_it_is_back() {
    let _alone = killing().await;
    let db = std::sync::Arc::new(std::sync::Mutex::new(durable_mariadb()));
    let (host, port, password) = {
        let db = db.lock().unwrap();
        (db.host(), db.port(), db.password().to_owned())
    };
    let text = format!(
        "{}\n{}",
        support::config_text(""),
        demo::mariadb::source_toml("mariadb", host, port, "shop").replace(
            "min_idle = 1",
            "min_idle = 1\nconnect_timeout = \"1s\"\n\
             retry = { attempts = 10, min_delay = \"200ms\", max_delay = \"2s\" }"
        )
    );
    let config = config_with(&text, &password);
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let x = extract(&mut client, on("mariadb", "email", ALICE)).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(x.manifest.unwrap().metadata["attempts"], "1");

    // MariaDB dies; it is started again half a second later, while the next call retries.
    db.lock().unwrap().kill();
    let restarter = {
        let db = db.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            db.lock().unwrap().restart()
        })
    };
    let mut req = tonic::Request::new(on("mariadb", "email", ALICE));
    req.set_timeout(Duration::from_secs(60));
    let mut stream = client.extract(req).await.unwrap().into_inner();
    let mut x = support::Extraction::default();
    while let Some(message) = stream.message().await.unwrap() {
        match message.event {
            Some(pb::extract_response::Event::Manifest(m)) => x.manifest = Some(m),
            Some(pb::extract_response::Event::Batch(b)) => x.batches.push(b),
            _ => {}
        }
    }
    restarter.join().unwrap().unwrap();
    let manifest = x.manifest.expect("a manifest after the retries");
    let attempts: u32 = manifest.metadata["attempts"].parse().unwrap();
    println!("served after {attempts} attempts");
    assert!(attempts >= 2, "{attempts}");
    assert_eq!(manifest.row_count, 18);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_wall_clock_column_is_read_in_the_sources_zone_on_both_stores() {
    // support_tickets.opened_at holds a date and time without a zone: PostgreSQL's timestamp,
    // MariaDB's DATETIME. In Europe/London, 2024-07-10 14:30 is 13:30 UTC.
    let text = config_text("shop", "")
        .replace(
            "name = \"demo\"\n",
            "name = \"demo\"\ntimezone = \"Europe/London\"\n",
        )
        .replace(
            "name = \"mariadb\"\nkind = \"mysql\"\n",
            "name = \"mariadb\"\nkind = \"mysql\"\ntimezone = \"Europe/London\"\n",
        );
    assert!(text.contains("name = \"demo\"\ntimezone = \"Europe/London\""));
    assert!(text.contains("kind = \"mysql\"\ntimezone = \"Europe/London\""));
    let server = TestServer::start(config(&text)).await;
    let mut client = server.client().await;
    let mut opened = Vec::new();
    for source in ["demo", "mariadb"] {
        let x = extract(&mut client, on(source, "email", ALICE)).await;
        assert_eq!(x.code(), Code::Ok, "{source}: {}", x.message());
        let mut times: Vec<i64> = x
            .column("support_tickets", "opened_at")
            .into_iter()
            .map(|k| match k {
                Kind::TimestampValue(t) => t.seconds,
                other => panic!("{source}: {other:?}"),
            })
            .collect();
        times.sort();
        opened.push(times);
    }
    // 2024-07-10 13:30 UTC and 2024-08-01 08:00 UTC.
    assert_eq!(opened[0], [1_720_618_200, 1_722_499_200]);
    assert_eq!(opened[0], opened[1], "the same instants from both stores");
    server.stop().await.unwrap();
}
