//! The baselines: a careful hand-written tokio-postgres reader, and psql sessions.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use dsr_connector::demo::cluster::{SUPERUSER, TempCluster};

use super::*;

/// What a careful hand-written reader does: pooled connections with statements prepared once,
/// one REPEATABLE READ snapshot, a portal per table in batches of 500, every cell read, and
/// COUNT(*) per table. It sends nothing anywhere.
pub(crate) async fn raw_subject(cluster: &TempCluster, email: &str) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let pooled = RAW_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let (mut client, mut statements) = match pooled {
        Some(c) => c,
        None => (tls::connect(cluster, DATABASE).await?, Default::default()),
    };
    let mut rows = 0u64;
    {
        let txn = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        for (_, sql) in TABLES {
            let stmt =
                dsr_connector::store::postgres::prepare_cached(&mut statements, &txn, sql).await?;
            let portal = txn.bind(&stmt, &[&email]).await?;
            loop {
                let batch = txn.query_portal(&portal, 500).await?;
                for row in &batch {
                    for i in 0..row.len() {
                        let _cell: dsr_connector::store::postgres::RawCell = row.try_get(i)?;
                    }
                }
                rows += batch.len() as u64;
                if batch.len() < 500 {
                    break;
                }
            }
            let count_sql = format!("SELECT count(*) FROM ({sql}) AS t");
            let count =
                dsr_connector::store::postgres::prepare_cached(&mut statements, &txn, &count_sql)
                    .await?;
            let _: i64 = txn.query_one(&count, &[&email]).await?.get(0);
        }
        txn.commit().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    RAW_POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((client, statements));
    Ok((rows, secs))
}

/// The raw reader's connections with their prepared statements, reused as the service reuses
/// its pooled connections and statements.
pub(crate) type RawConn = (
    tokio_postgres::Client,
    dsr_connector::store::postgres::StatementCache,
);
pub(crate) static RAW_POOL: std::sync::Mutex<Vec<RawConn>> = std::sync::Mutex::new(Vec::new());

pub(crate) fn psql_installed() -> bool {
    Command::new("psql").arg("--version").output().is_ok()
}

/// The heavy subject through one psql session (started before the clock), when psql is
/// installed. Returns rows and seconds.
pub(crate) fn psql_copy(cluster: &TempCluster, email: &str) -> anyhow::Result<Option<(u64, f64)>> {
    if !psql_installed() {
        return Ok(None);
    }
    let mut session = PsqlSession::start(cluster.host(), cluster.port(), cluster.password())?;
    let started = Instant::now();
    let rows = session.subject(email)?;
    Ok(Some((rows, started.elapsed().as_secs_f64())))
}

/// A long-lived psql process fed on stdin, as a careful operator would script it: per
/// subject, one REPEATABLE READ read-only transaction with, per table,
/// `\copy (...) TO '/dev/null' (FORMAT binary)` and its COUNT(*).
pub(crate) struct PsqlSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

pub(crate) const PSQL_DONE: &str = "dsr-bench-subject-done";

impl PsqlSession {
    pub(crate) fn start(host: &str, port: u16, password: &str) -> anyhow::Result<PsqlSession> {
        let mut child = Command::new("psql")
            .args([
                "-h",
                host,
                "-p",
                &port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                DATABASE,
                "-X",
                "-q",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .env("PGPASSWORD", password)
            .envs(tls::psql_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(PsqlSession {
            child,
            stdin,
            stdout,
        })
    }

    /// Reads one subject; returns the rows counted.
    pub(crate) fn subject(&mut self, email: &str) -> anyhow::Result<u64> {
        use std::io::Write;
        let literal = format!("'{}'", email.replace('\'', "''"));
        let mut script = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n");
        for (_, sql) in TABLES {
            let query = sql.replace("$1", &literal);
            script.push_str(&format!(
                "\\copy ({query}) TO '/dev/null' (FORMAT binary)\nSELECT count(*) FROM ({query}) t;\n"
            ));
        }
        script.push_str(&format!("COMMIT;\n\\echo {PSQL_DONE}\n"));
        self.stdin.write_all(script.as_bytes())?;
        self.stdin.flush()?;
        let mut rows = 0;
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(
                self.stdout.read_line(&mut line)? > 0,
                "psql ended early: {:?}",
                self.child.try_wait()
            );
            if line.trim() == PSQL_DONE {
                return Ok(rows);
            }
            rows += line.trim().parse::<u64>().unwrap_or(0);
        }
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The psql sessions of the sequential and concurrent runs, reused as the raw reader reuses
/// its connections.
pub(crate) static PSQL_POOL: std::sync::Mutex<Vec<PsqlSession>> = std::sync::Mutex::new(Vec::new());

/// One subject through a pooled psql session; returns the rows counted.
pub(crate) fn psql_subject(
    host: &str,
    port: u16,
    password: &str,
    email: &str,
) -> anyhow::Result<u64> {
    let pooled = PSQL_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut session = match pooled {
        Some(s) => s,
        None => PsqlSession::start(host, port, password)?,
    };
    let rows = session.subject(email)?;
    PSQL_POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(session);
    Ok(rows)
}

/// The hand-written erasure of one subject in psql: one REPEATABLE READ transaction with a
/// DELETE per table, children first, rolled back (as the service's preview is) so that the
/// next round finds the same rows. Returns the rows deleted and seconds, or `None` without
/// psql.
pub(crate) fn psql_delete(
    cluster: &TempCluster,
    email: &str,
) -> anyhow::Result<Option<(u64, f64)>> {
    if !psql_installed() {
        return Ok(None);
    }
    let script = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ;\n\
         DELETE FROM support_tickets WHERE requester_email = '{email}';\n\
         DELETE FROM events WHERE customer_id IN (SELECT id FROM customers WHERE email = '{email}');\n\
         DELETE FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email = '{email}');\n\
         DELETE FROM customers WHERE email = '{email}';\n\
         ROLLBACK;\n"
    );
    let started = Instant::now();
    let out = Command::new("psql")
        .args([
            "-h",
            cluster.host(),
            "-p",
            &cluster.port().to_string(),
            "-U",
            SUPERUSER,
            "-d",
            DATABASE,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &script,
        ])
        .env("PGPASSWORD", cluster.password())
        .envs(tls::psql_env())
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("DELETE "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    Ok(Some((rows, secs)))
}
