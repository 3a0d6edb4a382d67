//! The circuit breaker end to end, against a real PostgreSQL that is stopped and started
//! again: the source's breaker opens after repeated failures, calls then fail fast with
//! UNAVAILABLE and a retry pushback, the source's health turns NOT_SERVING while the server's
//! stays SERVING; once PostgreSQL is back, a probe after the cool-down closes the breaker.
//! The timings are printed, never asserted.

mod support;

use std::time::{Duration, Instant};

use dsr_connector::demo;
use dsr_connector::demo::cluster::{ClusterOptions, TempCluster};
use support::{SUBJECT_KEY, TestServer, extract, request};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A cluster of this test's own, which it may stop.
async fn own_cluster() -> TempCluster {
    let cluster = tokio::task::spawn_blocking(|| {
        dsr_connector::store::postgres::tls::install_crypto_provider();
        TempCluster::start(&ClusterOptions::default()).expect("a PostgreSQL cluster")
    })
    .await
    .unwrap();
    demo::load(&cluster, demo::DATABASE).await.unwrap();
    cluster
}

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_while_postgres_is_down_fails_fast_and_closes_when_it_is_back() {
    let cluster = own_cluster().await;
    let text = demo::config_toml(&cluster, demo::DATABASE, "127.0.0.1:0".parse().unwrap()).replace(
        "min_idle = 1",
        "min_idle = 0\nconnect_timeout = \"1s\"\n\
             circuit_breaker = { min_calls = 5, cool_down = \"2s\" }",
    );
    let config = demo::config(&cluster, &text, SUBJECT_KEY).unwrap();
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let source_health = "dsr.v1.DsrConnectorService/demo";

    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    assert_eq!(health(&server, source_health).await, ServingStatus::Serving);

    // PostgreSQL goes away: calls fail with UNAVAILABLE until the breaker opens.
    tokio::task::block_in_place(|| cluster.pause()).unwrap();
    let down = Instant::now();
    let mut failures = 0;
    let open = loop {
        let x = extract(&mut client, request("email", "alice@example.com")).await;
        assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
        if x.message().contains("circuit breaker is open") {
            break x;
        }
        failures += 1;
        assert!(failures <= 2, "still closed after {failures} failures");
    };
    println!(
        "opened after {failures} failed calls, {:?} after PostgreSQL stopped",
        down.elapsed()
    );
    // min_calls = 5, and each failed attempt counts: the window holds the first success, the
    // first failed call's three attempts, and the second call's first attempt (4 failures in
    // 5, above 2%). The breaker opens there and that call tries no more.
    assert_eq!(failures, 2);
    assert!(open.manifest.is_none());

    // Open: calls fail fast, with a retry pushback, and the source reports NOT_SERVING while
    // the server itself stays SERVING.
    let asked = Instant::now();
    let fast = client
        .extract(request("email", "alice@example.com"))
        .await
        .expect_err("refused while open");
    println!("fail-fast while open: {:?}", asked.elapsed());
    assert_eq!(fast.code(), Code::Unavailable);
    let pushback: u64 = fast
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a retry pushback")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0 && pushback <= 2000, "{pushback}");
    assert_eq!(
        health(&server, source_health).await,
        ServingStatus::NotServing
    );
    assert_eq!(health(&server, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&server, "dsr.v1.DsrConnectorService").await,
        ServingStatus::Serving
    );

    // PostgreSQL is back: after the cool-down a probe goes through and closes the breaker.
    tokio::task::block_in_place(|| cluster.resume()).unwrap();
    let back = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let x = extract(&mut client, request("email", "alice@example.com")).await;
        if x.code() == Code::Ok {
            assert_eq!(x.manifest.unwrap().row_count, 18);
            break;
        }
        assert_eq!(x.code(), Code::Unavailable, "{}", x.message());
        assert!(attempts < 100, "never closed again: {}", x.message());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "closed {:?} after PostgreSQL was back ({attempts} attempts)",
        back.elapsed()
    );
    assert_eq!(health(&server, source_health).await, ServingStatus::Serving);
    server.stop().await.unwrap();
}

/// Every PostgreSQL process is frozen (SIGSTOP): its connections stay open and nothing
/// answers. A call with a 5 s deadline ends at its deadline, health still answers, and calls
/// work again once PostgreSQL is woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_ends_calls_at_their_deadline_and_health_still_answers() {
    let cluster = own_cluster().await;
    let text = demo::config_toml(&cluster, demo::DATABASE, "127.0.0.1:0".parse().unwrap())
        .replace("min_idle = 1", "min_idle = 1\nconnect_timeout = \"2s\"");
    let config = demo::config(&cluster, &text, SUBJECT_KEY).unwrap();
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());

    cluster.freeze().unwrap();
    let asked = Instant::now();
    let mut frozen = tonic::Request::new(request("email", "alice@example.com"));
    frozen.set_timeout(Duration::from_secs(5));
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        support::failure(client.extract(frozen).await, "a call to a frozen database"),
    )
    .await
    .expect("the call ends while the database is frozen");
    let took = asked.elapsed();
    println!(
        "a 5 s call against a frozen database ended in {took:?}: {:?} {}",
        outcome.code(),
        outcome.message()
    );
    assert!(
        matches!(
            outcome.code(),
            Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled
        ),
        "{outcome:?}"
    );
    let asked = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), health(&server, ""))
        .await
        .expect("health answers while the database is frozen");
    println!("health answered in {:?} while frozen", asked.elapsed());
    assert_eq!(status, ServingStatus::Serving);

    cluster.thaw().unwrap();
    let woken = Instant::now();
    let served = support::eventually(60, || {
        let mut client = client.clone();
        async move {
            extract(&mut client, request("email", "alice@example.com"))
                .await
                .code()
                == Code::Ok
        }
    })
    .await;
    println!("served again {:?} after SIGCONT", woken.elapsed());
    assert!(served, "no call succeeded after the database woke");
    server.stop().await.unwrap();
}

/// The schema gate's catalog read is held (by a proxy between the service and PostgreSQL)
/// when a source's data map is due for its reload. The caller that reloads waits for it; every
/// other caller is served the old map meanwhile, rather than queueing behind the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_served_the_old_data_map_while_one_reload_waits_on_the_catalog() {
    use std::sync::atomic::Ordering;
    let cluster = support::cluster();
    let proxy = support::HoldProxy::start(cluster.port(), b"pg_catalog.pg_attribute").await;
    let text = support::config_text("")
        .replace(
            &format!("port = {}", cluster.port()),
            &format!("port = {}", proxy.port),
        )
        .replace("ssl_mode = \"prefer\"", "ssl_mode = \"disable\"")
        .replace("min_idle = 1", "min_idle = 1\nschema_refresh = \"1s\"");
    let server = TestServer::start(support::config(&text)).await;
    let client = server.client().await;
    let x = extract(&mut client.clone(), request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok, "{}", x.message());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    proxy.hold.send_replace(true);
    let reloading = {
        let mut client = client.clone();
        tokio::spawn(
            async move { extract(&mut client, request("email", "alice@example.com")).await },
        )
    };
    let waiting =
        support::eventually(100, || async { proxy.held.load(Ordering::SeqCst) > 0 }).await;
    assert!(waiting, "the reload never read the catalog");

    let asked = Instant::now();
    let served = tokio::time::timeout(
        Duration::from_secs(30),
        extract(&mut client.clone(), request("email", "bob@example.com")),
    )
    .await
    .expect("another caller is served while the reload waits");
    println!(
        "served the old map in {:?} while the reload waited",
        asked.elapsed()
    );
    assert_eq!(served.code(), Code::Ok, "{}", served.message());
    assert!(!served.batches.is_empty());
    assert!(
        !reloading.is_finished(),
        "the reload finished while its catalog read was held"
    );

    proxy.hold.send_replace(false);
    let reloaded = reloading.await.unwrap();
    assert_eq!(reloaded.code(), Code::Ok, "{}", reloaded.message());
    server.stop().await.unwrap();
}
