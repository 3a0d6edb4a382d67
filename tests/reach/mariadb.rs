//! The reach rule on MariaDB: each subject gets exactly their rows, and a MariaDB draft
//! passes check-config.

use super::*;

/// This binary's MariaDB, with the shapes in database `rs`.
fn mariadb() -> &'static dsr_connector::demo::mariadb::TempMariaDb {
    static SERVER: std::sync::OnceLock<dsr_connector::demo::mariadb::TempMariaDb> =
        std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let server = dsr_connector::demo::mariadb::TempMariaDb::start()
            .unwrap_or_else(|e| panic!("cannot start the test MariaDB: {e}"));
        server.load_demo("rs").unwrap();
        server
            .execute("rs", include_str!("../data/reach_shapes.mariadb.sql"))
            .unwrap_or_else(|e| panic!("cannot load the shapes: {e}"));
        server
    })
}

#[tokio::test]
async fn on_mariadb_each_subject_gets_exactly_their_rows_too() {
    let server = mariadb();
    // The same map, named as MySQL names tables, and without erase policies (erasure is not
    // available for mysql sources yet).
    let map: String = SAFE_MAP
        .replace("\"rs.", "\"")
        .lines()
        .filter(|l| !l.starts_with("erase = "))
        .collect::<Vec<_>>()
        .join("\n");
    let head =
        dsr_connector::demo::mariadb::source_toml("shapes", server.host(), server.port(), "rs");
    let head = head[..head.find("[[sources.tables]]").unwrap()].replace(
        "identity_kinds = [\"email\", \"customer_id\"]",
        "identity_kinds = [\"email\"]",
    );
    let text = format!(
        "{}\n{head}\n{map}",
        config_text("reach_mariadb", SAFE_MAP, "")
    );
    let config = dsr_connector::config::Config::from_toml_str(&text, |name| match name {
        dsr_connector::demo::mariadb::PASSWORD_ENV => Some(server.password().to_owned()),
        demo::PASSWORD_ENV => Some(cluster().password().to_owned()),
        dsr_connector::config::DEFAULT_SUBJECT_KEY_ENV => Some(SUBJECT_KEY.to_owned()),
        dsr_connector::config::DEFAULT_AUDIT_KEY_ENV => Some(demo::audit_key(SUBJECT_KEY)),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    database("reach_mariadb").await;
    let service = TestServer::start(config).await;
    let mut client = service.client().await;
    for (email, rows) in EXPECTED {
        assert_eq!(
            streamed_from(&mut client, "shapes", email).await,
            expected(rows),
            "{email}: the rows MariaDB streamed"
        );
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_mariadb_draft_passes_check_config_and_reads_pascal_case_as_snake_case() {
    let server = mariadb();
    let head =
        dsr_connector::demo::mariadb::source_toml("shapes", server.host(), server.port(), "rs");
    let head = head[..head.find("[[sources.tables]]").unwrap()].replace(
        "identity_kinds = [\"email\", \"customer_id\"]",
        "identity_kinds = [\"email\", \"member_id\"]",
    );
    database("reach_mariadb_draft").await;
    let text = format!(
        "{}\n{head}\n",
        config_text("reach_mariadb_draft", SAFE_MAP, "")
    );
    let dir = tempfile::tempdir().unwrap();
    let (input, draft) = (dir.path().join("in.toml"), dir.path().join("draft.toml"));
    std::fs::write(&input, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["discover", "--config", input.to_str().unwrap()])
        .args(["--source", "shapes", "--out", draft.to_str().unwrap()])
        .env("DSR_DEMO_PASSWORD", cluster().password())
        .env(
            dsr_connector::demo::mariadb::PASSWORD_ENV,
            server.password(),
        )
        .env("DSR_SUBJECT_KEY", SUBJECT_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drafted = std::fs::read_to_string(&draft).unwrap();
    assert!(
        drafted.contains(
            "identity = [{ kind = \"member_id\", column = \"MemberId\" }, { kind = \"email\", \
             column = \"Email\" }]"
        ),
        "{drafted}"
    );
    // Erase policies are proposed for a mysql source as for any, and the draft is safe as
    // drafted: only the columns it marks "check" wait for a person.
    assert!(drafted.contains("erase = { action = "), "{drafted}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["check-config", draft.to_str().unwrap()])
        .env("DSR_DEMO_PASSWORD", cluster().password())
        .env(
            dsr_connector::demo::mariadb::PASSWORD_ENV,
            server.password(),
        )
        .env("DSR_SUBJECT_KEY", SUBJECT_KEY)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    let problems: Vec<&str> = said.lines().filter(|l| l.starts_with("  - ")).collect();
    assert!(
        !problems.is_empty() && problems.iter().all(|p| p.contains("category \"check\"")),
        "{said}\n{drafted}"
    );
}
