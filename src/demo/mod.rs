//! The built-in demo: a throwaway PostgreSQL with a small shop's data, served as source `demo`.
//!
//! The same pieces serve the tests and the benchmark: [`load`] creates a database in a
//! [`TempCluster`] and fills it, and [`config_toml`] writes the config that maps it.
//! [`mariadb::TempMariaDb`] is the same shop in a throwaway MariaDB.

pub mod cluster;
pub mod mariadb;

use std::net::SocketAddr;

use crate::config::{Config, ConfigError};
use crate::demo::cluster::{SUPERUSER, TempCluster};

/// The demo's schema and data.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");
/// The demo's data map, with `{host}`, `{port}`, `{database}` and `{user}` placeholders.
pub const DATAMAP_TEMPLATE: &str = include_str!("datamap.toml");
/// The database the demo data lives in.
pub const DATABASE: &str = "shop";
/// A subject with rows in every demo table.
pub const SUBJECT: &str = "alice@example.com";
/// The environment variable name the demo config reads the password from.
pub const PASSWORD_ENV: &str = "DSR_DEMO_PASSWORD";

/// Creates `database` in the cluster, loads the demo schema and data, and runs VACUUM ANALYZE
/// so that the planner uses the indexes on a freshly loaded database.
pub async fn load(cluster: &TempCluster, database: &str) -> anyhow::Result<()> {
    let admin = connect(cluster, "postgres").await?;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {}",
            crate::store::postgres::quote_ident(database)
        ))
        .await?;
    let db = connect(cluster, database).await?;
    db.batch_execute(SCHEMA_SQL).await?;
    db.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

/// Opens a plain connection to the cluster, as the superuser.
pub async fn connect(
    cluster: &TempCluster,
    database: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&cluster.connection_string(database), tokio_postgres::NoTls)
            .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The variable a demo config names for its control database: the demo cluster's
/// `postgres` database.
pub const CONTROL_URL_ENV: &str = "DSR_DEMO_CONTROL_URL";

/// The config text for the demo data in `database`, served on `listen`.
pub fn config_toml(cluster: &TempCluster, database: &str, listen: SocketAddr) -> String {
    let datamap = DATAMAP_TEMPLATE
        .replace("{host}", cluster.host())
        .replace("{port}", &cluster.port().to_string())
        .replace("{database}", database)
        .replace("{user}", SUPERUSER);
    // The demo erases from the documented commands, without tokens, on loopback.
    format!(
        "[server]\nlisten = \"{listen}\"\nshutdown_grace = \"5s\"\nanonymous_erase = true\n\n{datamap}"
    )
}

/// Parses demo config text with the cluster's password and the given subject key. When the
/// text configures an audit log, its key is [`audit_key`] of the subject key.
pub fn config(cluster: &TempCluster, text: &str, subject_key: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, |name| match name {
        PASSWORD_ENV => Some(cluster.password().to_owned()),
        crate::config::DEFAULT_SUBJECT_KEY_ENV => Some(subject_key.to_owned()),
        crate::config::DEFAULT_AUDIT_KEY_ENV => Some(audit_key(subject_key)),
        CONTROL_URL_ENV => Some(cluster.connection_string("postgres")),
        _ => None,
    })
}

/// The audit key of a demo or test config: derived from its subject key, so that tests can
/// verify the logs they make.
pub fn audit_key(subject_key: &str) -> String {
    format!("audit-{subject_key}")
}
