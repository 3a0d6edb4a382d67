//! Several replicas, one control database: two servers keep their audit chains (one per
//! replica) and their dead letters in PostgreSQL tables the service creates; `audit verify`
//! and `dead-letters list`, the real binary, read them back from the database, and a record
//! edited or cut in the table is found.

mod support;

use std::process::Command;

use dsr_connector::config::Config;
use dsr_connector::demo;
use support::{SUBJECT_KEY, TestServer, config_text, extract, request};
use tonic::Code;

fn control_url() -> String {
    support::cluster().connection_string("postgres")
}

fn replica_config(replica: &str) -> Config {
    control_config(&control_url(), replica, "", true)
}

/// The demo config with its records in the control database at `url`, under `replica`:
/// the audit log, and the dead letters too when `dead_letters`. `control` adds keys to
/// `[server.control]`.
fn control_config(url: &str, replica: &str, control: &str, dead_letters: bool) -> Config {
    let text = format!(
        "{}\n[server.control]\nurl_env = \"CONTROL_URL\"\n{control}\n\n\
         [server.audit]\nstore = \"control\"\nreplica = \"{replica}\"\n\n{}",
        config_text(""),
        if dead_letters {
            "[server.dead_letters]\nstore = \"control\"\n"
        } else {
            ""
        }
    );
    control_env(&text, url)
}

/// Config text with this cluster's password, the test keys and `url` as `CONTROL_URL`.
fn control_env(text: &str, url: &str) -> Config {
    let cluster = support::cluster();
    Config::from_toml_str(text, |name| match name {
        demo::PASSWORD_ENV => Some(cluster.password().to_owned()),
        "DSR_SUBJECT_KEY" => Some(SUBJECT_KEY.to_owned()),
        "DSR_AUDIT_KEY" => Some(demo::audit_key(SUBJECT_KEY)),
        "CONTROL_URL" => Some(url.to_owned()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A connection string to database `dbname` of this cluster through a proxy on `port`.
fn url_via(port: u16, dbname: &str) -> String {
    let cluster = support::cluster();
    format!(
        "host=127.0.0.1 port={port} user={} password={} dbname={dbname} sslmode=disable",
        dsr_connector::demo::cluster::SUPERUSER,
        cluster.password()
    )
}

/// `dsr-connector audit verify`, the real binary, of `replica`'s chain in the control
/// database at `url`: it must verify.
fn verify_chain(url: &str, replica: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(["audit", "verify", "--control-url-env", "CONTROL_URL"])
        .args(["--replica", replica])
        .env("CONTROL_URL", url)
        .env("DSR_AUDIT_KEY", demo::audit_key(SUBJECT_KEY))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(args)
        .env("CONTROL_URL", control_url())
        .env("DSR_AUDIT_KEY", demo::audit_key(SUBJECT_KEY))
        .output()
        .unwrap()
}

fn verify(replica: &str) -> std::process::Output {
    cli(&[
        "audit",
        "verify",
        "--control-url-env",
        "CONTROL_URL",
        "--replica",
        replica,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_their_chains_and_dead_letters_in_the_control_database() {
    let a = TestServer::start(replica_config("replica-a")).await;
    let b = TestServer::start(replica_config("replica-b")).await;
    let mut calls = Vec::new();
    for server in [&a, &b] {
        for _ in 0..5 {
            let mut client = server.client().await;
            calls.push(tokio::spawn(async move {
                // alice's legacy row with an impossible date is a dead letter each time.
                extract(&mut client, request("email", "alice@example.com")).await
            }));
        }
    }
    for call in calls {
        let x = call.await.unwrap();
        assert_eq!(x.code(), Code::Ok, "{}", x.message());
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    for replica in ["replica-a", "replica-b"] {
        let out = verify(replica);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Each of the five extractions: its start, then its completion.
        assert!(stdout.contains("ok (10 records"), "{stdout}");
    }
    let out = cli(&[
        "dead-letters",
        "list",
        "--control-url-env",
        "CONTROL_URL",
        "--category",
        "coercion",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let letters = String::from_utf8_lossy(&out.stdout);
    assert_eq!(letters.lines().count(), 10, "{letters}");
    assert!(letters.contains("legacy_accounts") && !letters.contains("31/02/2010"));
    // The README's commands, with this control database and replica for the deployment's.
    for command in support::readme_commands_with("--control-url-env DSR_CONTROL_URL") {
        let mut replacements = Vec::new();
        if command.contains("audit verify") {
            replacements.push((
                "DSR_AUDIT_KEY=...",
                format!("DSR_AUDIT_KEY={}", demo::audit_key(SUBJECT_KEY)),
            ));
            replacements.push(("dsr-connector-0", "replica-b".to_owned()));
        }
        let out = support::run_readme_command(
            &command,
            &replacements,
            &[("DSR_CONTROL_URL", control_url())],
        );
        if command.contains("audit verify") {
            assert!(String::from_utf8_lossy(&out.stdout).contains("ok (10 records"));
        }
    }

    // A record edited in the table is found and named.
    let db = demo::connect(support::cluster(), "postgres").await.unwrap();
    let completed: i64 = db
        .query_one(
            "SELECT min(seq) FROM dsr_audit WHERE replica = 'replica-a' \
             AND line LIKE '%\"row_count\":18%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "UPDATE dsr_audit SET line = replace(line, '\"row_count\":18', '\"row_count\":17') \
         WHERE replica = 'replica-a' AND seq = $1",
        &[&completed],
    )
    .await
    .unwrap();
    let out = verify("replica-a");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("record {completed}")), "{stderr}");

    // Records cut from the end of a chain are noticed through its head, and the service
    // refuses to go on writing it.
    db.execute(
        "DELETE FROM dsr_audit WHERE replica = 'replica-b' AND seq = 10",
        &[],
    )
    .await
    .unwrap();
    let out = verify("replica-b");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut from the end"));
    let cut = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = dsr_connector::api::run(
        std::sync::Arc::new(replica_config("replica-b")),
        cut,
        async {},
    )
    .await;
    let message = format!("{:#}", refused.expect_err("a cut chain is not written on"));
    assert!(message.contains("cut from the end"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_fresh_control_database_all_open_it() {
    // Replicas that start together create the control tables at the same moment; without a
    // lock, PostgreSQL's CREATE TABLE IF NOT EXISTS fails for all but one of them.
    for round in 0..10 {
        let database = format!("control_fresh_{round}");
        support::empty_database(&database).await;
        let url = support::cluster().connection_string(&database);
        let control = dsr_connector::records::control::Control::from_url(&url).unwrap();
        let opened = futures_util::future::join_all((0..8).map(|_| {
            let control = control.clone();
            async move { control.connect().await.map(drop) }
        }))
        .await;
        for result in opened {
            assert!(result.is_ok(), "round {round}: {}", result.unwrap_err());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_waits_for_its_dead_letters_and_is_withheld_when_they_cannot_be_written() {
    // A control database of this test's own, whose dead-letter table it can break.
    support::empty_database("control_letters").await;
    let url = support::cluster().connection_string("control_letters");
    let config = control_config(&url, "replica-letters", "", true);
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let control = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map(|(client, connection)| {
            tokio::spawn(connection);
            client
        })
        .unwrap();

    // alice's legacy row with an impossible date is left out under reject_row: its letter is
    // in the table when the manifest arrives.
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    let extraction_id = x.manifest.as_ref().unwrap().extraction_id.clone();
    let letters: i64 = control
        .query_one(
            "SELECT count(*) FROM dsr_dead_letters WHERE letter->>'extraction_id' = $1",
            &[&extraction_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(letters, 1);

    // The queue cannot be written: the call fails, and no manifest claims a complete answer.
    control
        .batch_execute("ALTER TABLE dsr_dead_letters RENAME TO dsr_dead_letters_away")
        .await
        .unwrap();
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
    assert!(x.message().contains("dead-letter queue"), "{}", x.message());
    assert!(x.manifest.is_none());
    assert!(
        !x.rows("legacy_accounts").is_empty() || !x.rows("customers").is_empty(),
        "rows streamed before the manifest was withheld"
    );

    // Once it can be written again, so can the answer.
    control
        .batch_execute("ALTER TABLE dsr_dead_letters_away RENAME TO dsr_dead_letters")
        .await
        .unwrap();
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_does_not_stop_the_audit_chain() {
    support::empty_database("control_commit").await;
    let cluster = support::cluster();
    let cutter = support::CommitCutter::start(cluster.port()).await;
    let url = url_via(cutter.addr.port(), "control_commit");
    let config = control_config(&url, "replica-commit", "ssl_mode = \"disable\"", false);
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());

    // The next batch's COMMIT goes through, but its answer is lost: that call fails.
    cutter
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
    assert_eq!(
        cutter.cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "{}",
        x.message()
    );

    // The chain goes on from what the database holds: the calls after it are recorded.
    for _ in 0..3 {
        let x = extract(&mut client, request("email", "alice@example.com")).await;
        assert_eq!(x.code(), Code::Ok, "{}", x.message());
    }
    server.stop().await.unwrap();
    verify_chain(
        &cluster.connection_string("control_commit"),
        "replica-commit",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_database_restarts_under_load_and_the_chain_goes_on() {
    // A control database of its own, stopped and started while calls are running, under the
    // real binary in a process of its own: what it does is the server's alone.
    let control = tokio::task::spawn_blocking(|| {
        dsr_connector::demo::cluster::TempCluster::start(&Default::default()).unwrap()
    })
    .await
    .unwrap();
    let url = control.connection_string("postgres");
    let text = format!(
        "{}\n[server.control]\nurl_env = \"CONTROL_URL\"\n\n\
         [server.audit]\nstore = \"control\"\nreplica = \"replica-restart\"\n",
        config_text("")
    );
    let audit_key = demo::audit_key(SUBJECT_KEY);
    let server = support::ServeProcess::start_with(
        &text,
        &[("DSR_AUDIT_KEY", &audit_key), ("CONTROL_URL", &url)],
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut client = server.client().await;
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let x = extract(&mut client, request("email", "alice@example.com")).await;
                match x.code() {
                    Code::Ok => ok += 1,
                    // The audit log cannot be written while the control database is down.
                    Code::Unavailable => failed += 1,
                    other => return Err(format!("{other:?}: {}", x.message_and_sources())),
                }
            }
            Ok((ok, failed))
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| control.pause()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| control.resume()).unwrap();
    // Once it is back, calls are recorded again.
    let mut recovered = false;
    if let Ok(mut client) =
        dsr_connector::pb::dsr_connector_service_client::DsrConnectorServiceClient::connect(
            format!("http://{}", server.addr),
        )
        .await
    {
        for _ in 0..100 {
            let x = extract(&mut client, request("email", "alice@example.com")).await;
            if x.code() == Code::Ok {
                recovered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for task in load {
        outcomes.push(task.await.unwrap());
    }
    let (status, log) = server.terminate().await;
    let log = log.join("\n");
    assert!(
        recovered,
        "calls were not recorded again after the restart; the server said:\n{log}"
    );
    let (mut ok, mut failed) = (0, 0);
    for outcome in outcomes {
        let (o, f) = outcome.unwrap_or_else(|e| panic!("{e}; the server said:\n{log}"));
        ok += o;
        failed += f;
    }
    println!("under load: {ok} calls recorded, {failed} refused while the database was down");
    assert!(ok > 0);
    assert!(status.success(), "{status}; the server said:\n{log}");
    verify_chain(&url, "replica-restart");
}

/// The erasure's `erasing` record is durable before COMMIT, and its write races the deadline
/// and the client like every statement before it: held by the control database past the
/// deadline, it ends the call with DEADLINE_EXCEEDED, and the erasure never commits, even
/// once the record gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_whose_record_waits_past_its_deadline_commits_nothing() {
    use std::sync::atomic::Ordering;
    let cluster = support::cluster();
    support::empty_database("control_erase_records").await;
    support::demo_database("control_erase_data").await;
    let data = demo::connect(cluster, "control_erase_data").await.unwrap();
    let proxy = support::HoldProxy::start(cluster.port(), b"INSERT INTO dsr_audit ").await;
    let url = url_via(proxy.port, "control_erase_records");
    let text =
        format!(
        "{}\n[server.control]\nurl_env = \"CONTROL_URL\"\nssl_mode = \"disable\"\n\n\
         [server.audit]\nstore = \"control\"\nreplica = \"replica-erase-hold\"\n",
        demo::config_toml(cluster, "control_erase_data", "127.0.0.1:0".parse().unwrap()).replace(
            "identity_kinds = [\"email\", \"customer_id\"]",
            "identity_kinds = [\"email\", \"customer_id\"]\nerasure = { require_preview = false }",
        )
    );
    let mut config = control_env(&text, &url);
    // The server's deadline, far shorter than the client's own timer: the status checked is
    // the server's, whatever the load.
    config.server.max_deadline = std::time::Duration::from_secs(3);
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let bob = "SELECT count(*) FROM customers WHERE email = 'bob@example.com'";
    let count = |sql: &'static str| {
        let data = &data;
        async move { data.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count(bob).await, 1);

    proxy.hold.send_replace(true);
    let mut request = tonic::Request::new(dsr_connector::pb::EraseRequest {
        source: "demo".into(),
        subject: Some(dsr_connector::pb::Identity {
            kind: "email".into(),
            value: "bob@example.com".into(),
        }),
        request_id: "erase-held".into(),
        ..Default::default()
    });
    request.set_timeout(std::time::Duration::from_secs(120));
    let call = tokio::spawn(async move {
        match client.erase(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => panic!("the erasure ended without a status"),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        }
    });
    // Past the deadline, with the erasing record held: then the records get through (the
    // call's status waits for its own `failed` record).
    assert!(
        support::eventually(100, || async { proxy.held.load(Ordering::SeqCst) > 0 }).await,
        "the erasing record was never sent"
    );
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    proxy.hold.send_replace(false);
    let refused = call.await.unwrap();
    assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
    assert_eq!(count(bob).await, 1, "nothing was erased");
    let records = demo::connect(cluster, "control_erase_records")
        .await
        .unwrap();
    let outcomes: Vec<String> = records
        .query(
            "SELECT line FROM dsr_audit WHERE replica = 'replica-erase-hold' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let line: String = r.get(0);
            let record: serde_json::Value = serde_json::from_str(&line).unwrap();
            record["outcome"].as_str().unwrap_or_default().to_owned()
        })
        .filter(|o| o == "erasing" || o == "failed" || o == "ok")
        .collect();
    assert_eq!(
        outcomes,
        ["erasing", "failed"],
        "the erasure is recorded as not done"
    );
    server.stop().await.unwrap();
}

/// More dead letters than the queue holds, from calls whose letters the control database is
/// slow to take (a proxy holds them): a letter the queue cannot take fails its call with
/// DEAD_LETTERS_UNAVAILABLE and no manifest, and every call that answers with a manifest has
/// every one of its letters in the database. None is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_dead_letters_against_a_slow_queue_loses_none() {
    use std::sync::atomic::Ordering;
    // Calls at once, each holding up to 257 letters in flight: more than the queue's 4,096.
    const CALLS: usize = 40;
    const BAD_ROWS: i64 = 300;
    let cluster = support::cluster();
    support::empty_database("control_flood_records").await;
    support::demo_database("control_flood_data").await;
    // Alice gets 300 more legacy rows, each with an impossible date: 300 rejected rows, 300
    // letters, per call.
    demo::connect(cluster, "control_flood_data")
        .await
        .unwrap()
        .batch_execute(&format!(
            "INSERT INTO legacy_accounts (id, email, signup_date, legacy_ref) \
             SELECT 100000 + i, 'alice@example.com', '31/02/2010', md5(i::text)::uuid FROM generate_series(1, {BAD_ROWS}) AS i"
        ))
        .await
        .unwrap();
    let proxy = support::HoldProxy::start(cluster.port(), b"INSERT INTO dsr_dead_letters").await;
    let url = url_via(proxy.port, "control_flood_records");
    let text = format!(
        "{}\n[server.control]\nurl_env = \"CONTROL_URL\"\nssl_mode = \"disable\"\n\n\
         [server.dead_letters]\nstore = \"control\"\n",
        demo::config_toml(
            cluster,
            "control_flood_data",
            "127.0.0.1:0".parse().unwrap()
        )
        .replace(
            "max_connections = 10",
            "max_connections = 40\nmax_per_caller = 40"
        )
    );
    let config = control_env(&text, &url);
    let server = TestServer::start(config).await;
    // The control database answers the first letters; then it holds them.
    let warm = extract(
        &mut server.client().await,
        request("email", "carol@example.org"),
    )
    .await;
    assert_eq!(warm.code(), Code::Ok, "{}", warm.message());
    proxy.hold.send_replace(true);

    let mut calls = Vec::new();
    for n in 0..CALLS {
        let mut client = server.client().await;
        calls.push(tokio::spawn(async move {
            let mut req = request("email", "alice@example.com");
            req.request_id = format!("flood-{n}");
            req.tables = vec!["legacy_accounts".into()];
            extract(&mut client, req).await
        }));
    }
    // Every call is writing letters or has failed; then the database takes them.
    let letters_sent = || proxy.held.load(Ordering::SeqCst);
    assert!(
        support::eventually(100, || async { letters_sent() > 0 }).await,
        "no letter reached the control database"
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    proxy.hold.send_replace(false);
    let mut answered = Vec::new();
    let mut unavailable = 0;
    for call in calls {
        let x = call.await.unwrap();
        match x.code() {
            Code::Ok => {
                assert!(x.manifest.is_some());
                assert_eq!(x.rows("legacy_accounts").len(), 3, "alice's good rows");
                answered.push(x.manifest.unwrap().extraction_id);
            }
            Code::Unavailable => {
                assert!(x.manifest.is_none(), "no manifest without its letters");
                assert!(
                    x.message().contains("records wait for the writer already"),
                    "{}",
                    x.message()
                );
                unavailable += 1;
            }
            other => panic!("{other:?}: {}", x.message()),
        }
    }
    assert!(
        unavailable > 0,
        "{CALLS} calls of {BAD_ROWS} letters each filled the queue: some had to fail"
    );
    let records = demo::connect(cluster, "control_flood_records")
        .await
        .unwrap();
    for id in &answered {
        let letters: i64 = records
            .query_one(
                "SELECT count(*) FROM dsr_dead_letters WHERE letter::jsonb->>'extraction_id' = $1",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(letters, BAD_ROWS + 1, "every letter of an answered call");
    }
    server.stop().await.unwrap();
}

/// The control connection dropped while idle (its backend terminated, as a proxy or a
/// failover would), unnoticed until it is used: the next call's record is written on a new
/// connection, and the caller sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_connection_dropped_while_idle_recovers_on_the_next_call() {
    let cluster = support::cluster();
    support::empty_database("control_idle").await;
    let admin = demo::connect(cluster, "postgres").await.unwrap();
    let config = control_config(
        &cluster.connection_string("control_idle"),
        "replica-idle",
        "",
        true,
    );
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    for _ in 0..3 {
        let ended: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = 'control_idle'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ended >= 1, "the control connections were terminated");
        let x = extract(&mut client, request("email", "alice@example.com")).await;
        assert_eq!(x.code(), Code::Ok, "{}", x.message());
    }
    server.stop().await.unwrap();
    verify_chain(&cluster.connection_string("control_idle"), "replica-idle");
}

/// An erasure whose COMMIT's outcome was unknown is found by the next erasure of its subject
/// until a `settled` record names it, among every replica's records in the control database,
/// through the list of those records kept beside the chain (written with them).
#[tokio::test]
async fn an_unknown_erasure_is_found_in_the_control_database_until_a_record_settles_it() {
    use dsr_connector::records::audit::{AuditLog, Entry};
    let db = support::empty_database("control_unsettled").await;
    let url = support::cluster().connection_string("control_unsettled");
    let control = dsr_connector::records::control::Control::from_url(&url).unwrap();
    let key = b"audit-key-0123456789abcdef";
    let erasure = |outcome: &str, id: &str, subject: &str| Entry {
        rpc: "Erase".into(),
        source: "shop".into(),
        subject_id: subject.into(),
        extraction_id: id.into(),
        outcome: outcome.into(),
        transaction: "4711".into(),
        ..Entry::default()
    };
    let one = AuditLog::open_control(&control, key, "replica-one")
        .await
        .unwrap();
    let two = AuditLog::open_control(&control, key, "replica-two")
        .await
        .unwrap();
    one.append(erasure("erasing", "e-1", "subject-a"))
        .await
        .unwrap();
    one.append(erasure("unknown", "e-1", "subject-a"))
        .await
        .unwrap();
    one.append(erasure("unknown", "e-9", "subject-b"))
        .await
        .unwrap();
    // Another replica asks.
    let found = two
        .unsettled_erasure("shop", "subject-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.erasure_id.as_str(), found.transaction.as_str()),
        ("e-1", "4711")
    );
    assert!(
        two.unsettled_erasure("other", "subject-a")
            .await
            .unwrap()
            .is_none()
    );
    let settled = Entry {
        settles: "e-1".into(),
        settlement: "nothing_left".into(),
        ..erasure("settled", "e-2", "subject-a")
    };
    two.append(settled).await.unwrap();
    assert!(
        one.unsettled_erasure("shop", "subject-a")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        one.unsettled_erasure("shop", "subject-b")
            .await
            .unwrap()
            .unwrap()
            .erasure_id,
        "e-9"
    );

    // Only the unknown and settled records are listed beside the chain.
    let listed: i64 = db
        .query_one("SELECT count(*) FROM dsr_audit_unsettling", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listed, 3);
}
