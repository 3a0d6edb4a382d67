//! One throwaway MariaDB per test binary that asks for one, loaded with the demo shop, and the
//! demo config serving the same shop from both stores: PostgreSQL as source `demo`, MariaDB
//! as source `mariadb` (`kind = "mysql"`). Suites whose behaviour does not depend on the
//! store run one body on each, through [`both_stores!`](crate::both_stores).

use std::sync::OnceLock;

use dsr_connector::config::Config;
use dsr_connector::demo::{self, mariadb::TempMariaDb};

/// The sources that serve the demo shop, one per store.
pub const STORES: [&str; 2] = ["demo", "mariadb"];

/// This binary's MariaDB, made on first use with `databases` (name, SQL run after the demo
/// shop is loaded into it; the first call's list counts), before any test reads a catalog
/// (MariaDB's `information_schema` may fail while another session drops a database).
pub fn server(databases: &[(&str, &str)]) -> &'static TempMariaDb {
    static SERVER: OnceLock<TempMariaDb> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server =
            TempMariaDb::start().unwrap_or_else(|e| panic!("cannot start the test MariaDB: {e}"));
        // Room for a test's 100 MB value (each statement below is a session of its own).
        server
            .execute("mysql", "SET GLOBAL max_allowed_packet = 268435456;")
            .unwrap_or_else(|e| panic!("cannot raise max_allowed_packet: {e}"));
        for (database, extra) in databases {
            server
                .load_demo(database)
                .unwrap_or_else(|e| panic!("cannot load the demo shop: {e}"));
            if !extra.is_empty() {
                server
                    .execute(database, extra)
                    .unwrap_or_else(|e| panic!("cannot prepare {database}: {e}"));
            }
        }
        server
    })
}

/// The demo config of both stores: PostgreSQL's `demo`, and the shop in `server`'s
/// `database` as source `mariadb`, with `extra` appended.
pub fn config_text(server: &TempMariaDb, database: &str, extra: &str) -> String {
    let mut text = super::config_text("");
    text.push('\n');
    text.push_str(&demo::mariadb::source_toml(
        "mariadb",
        server.host(),
        server.port(),
        database,
    ));
    text.push('\n');
    text.push_str(extra);
    text
}

/// Parses config text with PostgreSQL's password and `server`'s.
pub fn config(server: &TempMariaDb, text: &str) -> Config {
    config_with(text, server.password())
}

/// Parses config text with PostgreSQL's password and this MariaDB password.
pub fn config_with(text: &str, mariadb_password: &str) -> Config {
    Config::from_toml_str(text, |name| match name {
        demo::mariadb::PASSWORD_ENV => Some(mariadb_password.to_owned()),
        demo::PASSWORD_ENV => Some(super::cluster().password().to_owned()),
        dsr_connector::config::DEFAULT_SUBJECT_KEY_ENV => Some(super::SUBJECT_KEY.to_owned()),
        dsr_connector::config::DEFAULT_AUDIT_KEY_ENV => Some(demo::audit_key(super::SUBJECT_KEY)),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A server with the demo shop on both stores: PostgreSQL's `demo` and this binary's
/// MariaDB's `shop` as source `mariadb`.
pub async fn both_stores_server() -> super::TestServer {
    let mariadb = server(&[("shop", "")]);
    let text = config_text(mariadb, "shop", "");
    super::TestServer::start(config(mariadb, &text)).await
}

/// An Extract of `kind` `value` from `source`.
pub fn on(source: &str, kind: &str, value: &str) -> dsr_connector::pb::ExtractRequest {
    dsr_connector::pb::ExtractRequest {
        source: source.into(),
        ..super::request(kind, value)
    }
}

/// One test per store from one body: `both_stores!(name, body)` makes a module `name` with a
/// test `postgresql` that runs `body("demo")` and a test `mariadb` that runs
/// `body("mariadb")`, where `body` is an `async fn(&'static str)`. With `multi_thread` after
/// the body, each runs on a two-thread runtime (for bodies that spawn work and watch it).
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:ident, multi_thread) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgresql() {
                super::$body("demo").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                super::$body("mariadb").await;
            }
        }
    };
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn postgresql() {
                super::$body("demo").await;
            }

            #[tokio::test]
            async fn mariadb() {
                super::$body("mariadb").await;
            }
        }
    };
}
