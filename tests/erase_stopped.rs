//! Erasures on both stores that do not end as they began, from one body each: a client that
//! goes away, a passed deadline, the server killed mid-erasure, a lock held past
//! `lock_timeout`, a trigger that undoes a mask; and on MariaDB, the database killed
//! mid-erasure. Each leaves the data whole ([`support::shop`] compares every row) and no
//! transaction open. Last, a MariaDB COMMIT whose answer is lost: recorded as unknown, and
//! settled by the next erasure of the subject.

mod support;

use std::time::Duration;

use dsr_connector::demo::{self, mariadb::TempMariaDb};
use support::TestServer;
use support::shop::{ALICE, Shop, config, config_text, erase_request, same};
use support::{erase_events as erase, erased_table as table};
use tonic::Code;

/// The databases of the tests, one per test, on both stores.
const DATABASES: [&str; 5] = [
    "erase_cancel",
    "erase_kill",
    "erase_locked",
    "erase_undone",
    "erase_lost",
];

/// This binary's MariaDB, with the demo shop in each test's database.
fn mariadb() -> &'static TempMariaDb {
    let databases: Vec<(&str, &str)> = DATABASES.iter().map(|d| (*d, "")).collect();
    support::mariadb::server(&databases)
}

both_stores!(
    a_client_that_goes_away_mid_erasure_leaves_the_data_as_it_was,
    client_gone,
    multi_thread
);

async fn client_gone(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_cancel").await;
    let before = shop.rows().await;
    let text = config_text(
        mariadb(),
        "erase_cancel",
        "erasure = { require_preview = false, lock_timeout = \"60s\" }",
        |t| t,
    );
    let server = TestServer::start(config(mariadb(), &text)).await;
    // Another session holds alice's customer row: the erasure waits for it.
    let holder = shop.hold_alice().await;
    let mut client = server.client().await;
    let call =
        tokio::spawn(async move { erase(&mut client, erase_request(store, false, "")).await });
    assert!(shop.erasure_waits().await, "the erasure never waited");
    call.abort();
    shop.assert_stopped(holder, &before, "its client left")
        .await;

    server.stop().await.unwrap();

    // A deadline that passes while the erasure waits: DEADLINE_EXCEEDED, and the same. The
    // server cuts every call to 2 s; the client's own timer (tonic applies `grpc-timeout` on
    // the client too) is far longer, so that it never fires first on a loaded machine.
    let mut config = config(mariadb(), &text);
    config.server.max_deadline = Duration::from_secs(2);
    config.server.default_deadline = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let holder = shop.hold_alice().await;
    let mut client = server.client().await;
    let mut request = tonic::Request::new(erase_request(store, false, ""));
    request.set_timeout(Duration::from_secs(120));
    let late = async {
        let mut stream = client.erase(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await
    .unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    shop.assert_stopped(holder, &before, "its deadline").await;
    server.stop().await.unwrap();
}

both_stores!(
    a_server_killed_mid_erasure_leaves_the_data_as_it_was,
    killed,
    multi_thread
);

async fn killed(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_kill").await;
    shop.customers_wait_for_lockme().await;
    let before = shop.rows().await;
    let text = config_text(
        mariadb(),
        "erase_kill",
        "erasure = { require_preview = false, lock_timeout = \"60s\" }",
        |t| t,
    );
    let server = support::ServeProcess::start_with(
        &text,
        &[(demo::mariadb::PASSWORD_ENV, mariadb().password())],
    )
    .await;
    let holder = shop
        .hold("SELECT * FROM lockme WHERE id = 1 FOR UPDATE")
        .await;
    let mut client = server.client().await;
    let call =
        tokio::spawn(async move { erase(&mut client, erase_request(store, false, "")).await });
    // Alice's orders, items and events are deleted inside the open transaction (children
    // first), and it waits in the DELETE of her customer row; the server dies.
    assert!(
        shop.erasure_waits_in(true).await,
        "the erasure never waited in its DELETE"
    );
    std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    let (status, _) = server.wait().await;
    assert!(!status.success());
    assert!(call.await.unwrap().is_err());
    holder.release().await;
    assert!(
        shop.settled().await,
        "the killed server's transaction was left open"
    );
    same(&shop.rows().await, &before, "a killed erasure changed data");
}

both_stores!(
    a_lock_held_past_the_lock_timeout_is_retried_then_unavailable_with_nothing_changed,
    locked,
    multi_thread
);

async fn locked(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_locked").await;
    let before = shop.rows().await;
    let text = config_text(
        mariadb(),
        "erase_locked",
        "retry = { attempts = 2, min_delay = \"50ms\", max_delay = \"100ms\" }\n\
         erasure = { require_preview = false, lock_timeout = \"1s\" }",
        |t| t,
    );
    let server = TestServer::start(config(mariadb(), &text)).await;
    let holder = shop.hold_alice().await;
    let mut client = server.client().await;
    let locked = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap_err();
    println!("{store}: {:?}: {}", locked.code(), locked.message());
    assert_eq!(locked.code(), Code::Unavailable, "{locked:?}");
    assert!(
        locked.message().to_lowercase().contains("lock"),
        "{locked:?}"
    );
    holder.release().await;
    same(
        &shop.rows().await,
        &before,
        "a timed-out erasure changed data",
    );
    // Once the lock is gone, the same erasure goes through.
    let (_, receipt) = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap();
    assert_eq!(table(&receipt, "customers").rows, 1);
    assert_eq!(receipt.attempts, 1);
    server.stop().await.unwrap();
}

both_stores!(
    a_trigger_that_undoes_a_mask_fails_the_verification_and_nothing_changes,
    undone,
    multi_thread
);

async fn undone(store: &'static str) {
    let shop = Shop::open(mariadb(), store, "erase_undone").await;
    // The UPDATE matches every ticket and counts them, but the requester stays.
    shop.exec(
        "CREATE FUNCTION keep_requester() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN NEW.requester_email := OLD.requester_email; RETURN NEW; END $$; \
         CREATE TRIGGER tickets_keep BEFORE UPDATE ON support_tickets \
         FOR EACH ROW EXECUTE FUNCTION keep_requester()",
        "CREATE TRIGGER tickets_keep BEFORE UPDATE ON support_tickets FOR EACH ROW \
         SET NEW.requester_email = OLD.requester_email",
    )
    .await;
    let before = shop.rows().await;
    let text = config_text(
        mariadb(),
        "erase_undone",
        "erasure = { require_preview = false }",
        |t| t,
    );
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    let unverified = erase(&mut client, erase_request(store, false, ""))
        .await
        .unwrap_err();
    println!("{store}: {}", unverified.message());
    assert!(
        unverified.message().contains("support_tickets")
            && unverified.message().contains("verification before commit"),
        "{unverified:?}"
    );
    assert!(!unverified.message().contains(ALICE));
    server.stop().await.unwrap();
    same(
        &shop.rows().await,
        &before,
        "an unverified erasure changed data",
    );
}

/// A MariaDB killed while an erasure waits, with alice's orders, items and events already
/// deleted in its open transaction: the call ends UNAVAILABLE, and the server, started again,
/// has every row (InnoDB rolls the transaction back as it recovers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mariadb_a_database_killed_mid_erasure_comes_back_whole() {
    let mut own = tokio::task::spawn_blocking(|| {
        let server = TempMariaDb::start().unwrap();
        server.load_demo("shop").unwrap();
        // The test servers flush their redo log once a second: flushed at a commit from here
        // on, and this commit's flush carries every change before it, so that what the shop
        // holds survives the kill below.
        server
            .execute(
                "shop",
                "SET GLOBAL innodb_flush_log_at_trx_commit = 1; \
                 CREATE TABLE flushed (x INT PRIMARY KEY); INSERT INTO flushed VALUES (1);",
            )
            .unwrap();
        server
    })
    .await
    .unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(own.host())
        .tcp_port(own.port())
        .user(Some(demo::mariadb::USER))
        .pass(Some(own.password()))
        .db_name(Some("shop"))
        .prefer_socket(false);
    let shop = Shop {
        store: "mariadb",
        name: "shop",
        pg: None,
        my: Some(mysql_async::Pool::new(opts.clone())),
        watch: None,
    };
    shop.customers_wait_for_lockme().await;
    let before = shop.rows().await;
    const KINDS: &str = "identity_kinds = [\"email\", \"customer_id\"]";
    let text = support::mariadb::config_text(&own, "shop", "").replace(
        KINDS,
        &format!(
            "{KINDS}\nerasure = {{ require_preview = false, lock_timeout = \"60s\" }}\n\
             retry = {{ attempts = 1 }}"
        ),
    );
    let server = TestServer::start(support::mariadb::config(&own, &text)).await;
    let holder = shop
        .hold("SELECT * FROM lockme WHERE id = 1 FOR UPDATE")
        .await;
    let mut client = server.client().await;
    let call =
        tokio::spawn(async move { erase(&mut client, erase_request("mariadb", false, "")).await });
    assert!(
        shop.erasure_waits_in(true).await,
        "the erasure never waited in its DELETE"
    );
    // Killed while the holder still holds the row: released first, the erasure could go on
    // to its COMMIT before the kill lands.
    own = tokio::task::spawn_blocking(move || {
        own.kill();
        own
    })
    .await
    .unwrap();
    drop(holder);
    let pool = shop.my.as_ref().unwrap().clone();
    tokio::time::timeout(Duration::from_secs(10), pool.disconnect())
        .await
        .ok();
    let failed = call.await.unwrap().unwrap_err();
    println!("{:?}: {}", failed.code(), failed.message());
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    server.stop().await.unwrap();
    let own = tokio::task::spawn_blocking(move || {
        own.restart().unwrap();
        own
    })
    .await
    .unwrap();
    let shop = Shop {
        my: Some(mysql_async::Pool::new(opts)),
        ..shop
    };
    same(
        &shop.rows().await,
        &before,
        "a killed database lost or kept a change",
    );
    drop(own);
}

/// A COMMIT whose answer is lost on MariaDB (a proxy passes it on, then cuts the connection):
/// InnoDB keeps no answer for an ended transaction, so the call ends UNKNOWN
/// `COMMIT_OUTCOME_UNKNOWN` and its record's outcome is `unknown` (not `failed`: it may have
/// committed), naming the InnoDB transaction. The next erasure of the subject, which locks
/// every row it finds, finds nothing left and settles it: `nothing_left`, in its receipt and
/// in a `settled` record. A third finds nothing to settle. Another lost COMMIT, and a row of
/// the subject written after it: the next erasure changes that row and settles it as
/// `rows_left`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mariadb_a_commit_whose_answer_is_lost_is_unknown_until_the_next_erasure_settles_it() {
    use std::sync::atomic::Ordering;
    let shop = Shop::open(mariadb(), "mariadb", "erase_lost").await;
    let cutter = support::CommitCutter::start_for(mariadb().port(), support::MYSQL_COMMIT).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let text = config_text(
        mariadb(),
        "erase_lost",
        "erasure = { require_preview = false }",
        |text| {
            let text = text.replace(
                &format!("port = {}", mariadb().port()),
                &format!("port = {}", cutter.addr.port()),
            );
            format!(
                "{text}\n[server.audit]\npath = {:?}\nreplica = \"replica-lost\"\n",
                log.display().to_string()
            )
        },
    );
    let server = TestServer::start(config(mariadb(), &text)).await;
    let mut client = server.client().await;
    // A preview first: the data map is read, and the next COMMIT is the erasure's.
    let (_, preview) = erase(&mut client, erase_request("mariadb", true, ""))
        .await
        .unwrap();
    assert!(preview.rows_deleted > 0);
    cutter.armed.store(true, Ordering::SeqCst);
    let lost = erase(&mut client, erase_request("mariadb", false, ""))
        .await
        .unwrap_err();
    println!("{:?}: {}", lost.code(), lost.message());
    assert_eq!(
        cutter.cuts.load(Ordering::SeqCst),
        1,
        "the COMMIT's answer was cut"
    );
    assert_eq!(lost.code(), Code::Unknown, "{lost:?}");
    assert!(lost.message().contains("COMMIT"), "{lost:?}");
    assert!(
        shop.alice_rows()
            .await
            .iter()
            .all(|(t, _)| t == "legacy_accounts"),
        "the COMMIT went through"
    );

    let records = |log: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &serde_json::Value| r["rpc"] == "Erase" && r["dry_run"] == false)
            .collect()
    };
    let unknown = records(&log);
    let outcomes: Vec<&str> = unknown
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["erasing", "unknown"], "{unknown:#?}");
    assert_eq!(unknown[1]["error"], "commit_outcome_unknown");
    let transaction = unknown[0]["transaction"].as_str().unwrap();
    assert!(!transaction.is_empty());
    assert_eq!(unknown[1]["transaction"], transaction);
    let unknown_id = unknown[1]["extraction_id"].as_str().unwrap().to_owned();

    // The next erasure settles it.
    let (_, settling) = erase(&mut client, erase_request("mariadb", false, ""))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(settling.rows_deleted + settling.rows_masked, 0);
    assert_eq!(settling.settled_erasure_id, unknown_id, "{settling:?}");
    assert_eq!(settling.settled_as, "nothing_left");
    let all = records(&log);
    let outcomes: Vec<&str> = all.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        ["erasing", "unknown", "erasing", "ok", "settled"],
        "{all:#?}"
    );
    assert_eq!(all[4]["settles"], unknown_id.as_str());
    assert_eq!(all[4]["settlement"], "nothing_left");
    assert_eq!(all[4]["extraction_id"], settling.erasure_id.as_str());
    assert_eq!(all[4]["transaction"], transaction);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(ALICE), "a value in the audit log");

    // Settled once: the erasure after finds nothing to settle.
    let (_, after) = erase(&mut client, erase_request("mariadb", false, ""))
        .await
        .unwrap();
    assert!(after.settled_erasure_id.is_empty(), "{after:?}");

    // Another COMMIT lost, then a ticket of alice's written after it: the next erasure
    // changes that row, and says so of the one it settles (`rows_left`).
    cutter.armed.store(true, Ordering::SeqCst);
    let lost = erase(&mut client, erase_request("mariadb", false, ""))
        .await
        .unwrap_err();
    assert_eq!(lost.code(), Code::Unknown, "{lost:?}");
    let second = records(&log);
    let second_id = second.last().unwrap()["extraction_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(second.last().unwrap()["outcome"], "unknown");
    shop.exec(
        "",
        "INSERT INTO support_tickets (id, requester_email, subject, body, opened_at, tags) \
         VALUES (900, 'alice@example.com', 'again', 'a new ticket', NOW(), '[]')",
    )
    .await;
    let (_, settling) = erase(&mut client, erase_request("mariadb", false, ""))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(settling.rows_masked, 1, "{settling:?}");
    assert_eq!(settling.settled_erasure_id, second_id, "{settling:?}");
    assert_eq!(settling.settled_as, "rows_left");
    let last = records(&log);
    assert_eq!(last.last().unwrap()["outcome"], "settled");
    assert_eq!(last.last().unwrap()["settlement"], "rows_left");
    server.stop().await.unwrap();
}
