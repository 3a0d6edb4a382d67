//! Requests that run to their end on two replicas: an access request's package, a replica
//! killed mid-request, an erasure approved and killed before its commit, a cancel, and a
//! source that stops and returns.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_access_request_across_both_stores_is_one_verified_package_equal_to_each_extract() {
    let world = World::open("req_access").await;
    let a = world.replica("a").await;
    let b = world.replica("b").await;
    let mut client = requests_client(&a.addr).await;
    let submitted = client
        .submit_request(submission("access-1", RequestKind::Access))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.name, "requests/access-1");
    assert!(!submitted.done);

    // Followed on the other replica.
    let mut ops = operations(&b.addr).await;
    let op = done(&mut ops, "access-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    assert_eq!(shown.kind(), RequestKind::Access);
    let result = result(&op);
    assert_eq!(verify_package(&result), ["demo", "mariadb"]);
    for source in ["demo", "mariadb"] {
        same_as_extract(&a, &result, source);
        let found = result.sources.iter().find(|s| s.source == source).unwrap();
        let Some(pb::source_result::Result::Manifest(manifest)) = &found.result else {
            panic!("{source}: no manifest");
        };
        assert!(manifest.row_count > 0);
        assert!(manifest.tables.iter().all(|t| t.verified));
        assert_eq!(manifest.request_id, "access-1");
    }

    // The same id again, on either replica: the same operation, not a second request.
    let again = requests_client(&b.addr)
        .await
        .submit_request(submission("access-1", RequestKind::Access))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.name, op.name);
    assert!(again.done);
    assert_eq!(progress(&again).create_time, shown.create_time);
    let count: i64 = world
        .control
        .query_one("SELECT count(*) FROM dsr_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    // The same id with another subject is refused, and names no value.
    let mut other = submission("access-1", RequestKind::Access);
    other.subject.as_mut().unwrap().value = "bob@example.com".into();
    let refused = client.submit_request(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(!refused.message().contains("bob@"));

    // The identity was forgotten when the request ended; the audit log names the request's
    // steps and its extractions, never the identity.
    let kept: Option<String> = world
        .control
        .query_one(
            "SELECT identity_value FROM dsr_requests WHERE id = 'access-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, None);
    let records = world.audit("access-1").await;
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(ALICE));
    for rpc in ["SubmitRequest", "Extract", "Request"] {
        assert!(
            records.iter().any(|r| r["rpc"] == rpc),
            "no {rpc} record in {text}"
        );
    }
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_request_is_finished_by_the_other_with_nothing_twice() {
    let world = World::open("req_killed").await;
    // PostgreSQL's customers table is locked: the demo source's extraction waits in it.
    let holder = world
        .pg
        .hold("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .await;
    let a = world.replica("a").await;
    let mut client = requests_client(&a.addr).await;
    client
        .submit_request(submission("killed-1", RequestKind::Access))
        .await
        .unwrap();
    let mut ops_a = operations(&a.addr).await;
    until(&mut ops_a, "killed-1", |op| {
        source_state(op, "mariadb") == RequestState::Succeeded
            && source_state(op, "demo") == RequestState::Running
    })
    .await;
    assert!(
        world.pg.erasure_waits().await,
        "the extraction never waited on the lock"
    );
    let pid = world.holder_pid("killed-1", "demo").await.unwrap();
    assert_eq!(pid, a.pid());
    sigkill(a.pid());
    let _ = a.wait().await;
    holder.release().await;

    // The other replica takes the task once the dead one's lease has run out.
    let b = world.replica("b").await;
    let mut ops = operations(&b.addr).await;
    let op = done(&mut ops, "killed-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    let demo = shown.sources.iter().find(|s| s.source == "demo").unwrap();
    assert_eq!(demo.attempts, 2, "{shown:?}");
    let mariadb = shown
        .sources
        .iter()
        .find(|s| s.source == "mariadb")
        .unwrap();
    assert_eq!(mariadb.attempts, 1, "{shown:?}");
    let result = result(&op);
    verify_package(&result);
    for source in ["demo", "mariadb"] {
        same_as_extract(&b, &result, source);
    }
    // Every row once: each table file has as many lines as the manifest counts.
    for found in &result.sources {
        let Some(pb::source_result::Result::Manifest(manifest)) = &found.result else {
            panic!("no manifest");
        };
        let files = table_files(&Path::new(&result.package_path).join(&found.source));
        let lines: u64 = files
            .values()
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .sum();
        assert_eq!(lines, manifest.row_count, "{}", found.source);
    }
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_request_waits_for_approval_and_erases_each_source_once_across_a_kill() {
    let world = World::open("req_erase").await;
    world.pg.customers_wait_for_lockme().await;
    let a = world.replica("a").await;
    let b = world.replica("b").await;
    let mut client = requests_client(&a.addr).await;
    client
        .submit_request(submission("erase-1", RequestKind::Erasure))
        .await
        .unwrap();
    let mut ops = operations(&b.addr).await;
    let waiting = until(&mut ops, "erase-1", |op| {
        progress(op).state() == RequestState::AwaitingApproval
    })
    .await;
    assert!(!waiting.done);
    // Nothing was erased by the previews.
    assert!(!world.pg.alice_rows().await.is_empty());
    assert!(!world.my.alice_rows().await.is_empty());
    let digests: BTreeMap<String, String> = progress(&waiting)
        .sources
        .iter()
        .map(|s| {
            let preview = s.preview.as_ref().expect("a preview per source");
            assert!(preview.dry_run);
            assert!(preview.rows_deleted > 0);
            (s.folder.clone(), s.preview_digest.clone())
        })
        .collect();
    assert_eq!(digests.len(), 2);

    // A digest that is not the preview's is refused, and nothing moves.
    let mut wrong = digests.clone();
    wrong.insert("demo".into(), "1.00".into());
    let refused = client
        .approve_request(ApproveRequestRequest {
            name: "requests/erase-1".into(),
            digests: wrong,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Approved: PostgreSQL's erasure waits in its DELETE of alice, and the replica that runs
    // it is killed there; the other finishes it.
    let holder = world
        .pg
        .hold("SELECT * FROM lockme WHERE id = 1 FOR UPDATE")
        .await;
    client
        .approve_request(ApproveRequestRequest {
            name: "requests/erase-1".into(),
            digests,
        })
        .await
        .unwrap();
    assert!(
        world.pg.erasure_waits_in(true).await,
        "the erasure never waited in its DELETE"
    );
    let pid = world.holder_pid("erase-1", "demo").await.unwrap();
    let (killed, survivor) = if pid == a.pid() { (a, b) } else { (b, a) };
    sigkill(killed.pid());
    let _ = killed.wait().await;
    holder.release().await;

    let mut ops = operations(&survivor.addr).await;
    let op = done(&mut ops, "erase-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    for found in result(&op).sources {
        let Some(pb::source_result::Result::Receipt(receipt)) = &found.result else {
            panic!("{}: no receipt", found.source);
        };
        assert!(!receipt.dry_run);
        assert!(receipt.rows_deleted > 0, "{receipt:?}");
        assert!(receipt.committed_at.is_some());
    }
    // What the policy deletes or masks is gone; her legacy account is retained by law.
    for shop in [&world.pg, &world.my] {
        let left = shop.alice_rows().await;
        assert!(
            left.iter().all(|(table, _)| table == "legacy_accounts"),
            "{}: {left:?}",
            shop.store
        );
    }
    // One committed erasure per source in the audit log, whatever was killed.
    for source in ["demo", "mariadb"] {
        assert_eq!(
            world.committed_erasures("erase-1", source).await,
            1,
            "{source}"
        );
    }
    survivor.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_request_stops_its_queries_on_both_stores_and_leaves_no_package() {
    let world = World::open("req_cancel").await;
    let pg_holder = world
        .pg
        .hold("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .await;
    // A table lock outlives a transaction on MariaDB: a session of its own holds it.
    let mut my_holder = world.my.my.as_ref().unwrap().get_conn().await.unwrap();
    my_holder
        .query_drop("LOCK TABLES customers WRITE")
        .await
        .unwrap();
    let a = world.replica("a").await;
    let mut client = requests_client(&a.addr).await;
    client
        .submit_request(submission("cancel-1", RequestKind::Access))
        .await
        .unwrap();
    let mut ops = operations(&a.addr).await;
    until(&mut ops, "cancel-1", |op| {
        source_state(op, "demo") == RequestState::Running
            && source_state(op, "mariadb") == RequestState::Running
    })
    .await;
    assert!(
        world.pg.erasure_waits().await,
        "PostgreSQL's read never waited"
    );
    assert!(
        mariadb_waits(&world, true).await,
        "MariaDB's read never waited"
    );
    ops.cancel_operation(CancelOperationRequest {
        name: "requests/cancel-1".into(),
    })
    .await
    .unwrap();
    let op = get(&mut ops, "cancel-1").await;
    assert!(op.done);
    match &op.result {
        Some(operation::Result::Error(status)) => {
            assert_eq!(status.code, Code::Cancelled as i32)
        }
        other => panic!("not cancelled: {other:?}"),
    }
    // The reads stop on both databases while the locks are still held.
    assert!(
        world.pg.no_erasure_waits().await,
        "PostgreSQL still runs the cancelled read"
    );
    assert!(
        mariadb_waits(&world, false).await,
        "MariaDB still runs the cancelled read"
    );
    pg_holder.release().await;
    my_holder.query_drop("UNLOCK TABLES").await.unwrap();
    drop(my_holder);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!world.packages.path().join("cancel-1").exists());
    let shown = progress(&get(&mut ops, "cancel-1").await);
    assert_eq!(shown.state(), RequestState::Cancelled);
    a.terminate().await;
}

/// Whether a session of the service waits for a table lock on this test's MariaDB database
/// (`waiting`), or none does any more (`!waiting`), polled a bounded number of times.
async fn mariadb_waits(world: &World, waiting: bool) -> bool {
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}' \
         AND STATE LIKE 'Waiting for table%'",
        world.name
    );
    support::eventually(200, || async {
        (world.my.integer(&sql).await > 0) == waiting
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_source_keeps_its_task_waiting_and_the_request_finishes_when_it_returns() {
    let mut world = World::open("req_stopped").await;
    let gate = Gate::start(mariadb().port()).await;
    world.mariadb_port = gate.port;
    gate.close();
    let a = world.replica("a").await;
    let mut client = requests_client(&a.addr).await;
    client
        .submit_request(submission("stopped-1", RequestKind::Access))
        .await
        .unwrap();
    let mut ops = operations(&a.addr).await;
    // MariaDB cannot be reached: its task is tried, waits, is tried again; the request stays
    // open, and PostgreSQL's part is done.
    let waiting = until(&mut ops, "stopped-1", |op| {
        let p = progress(op);
        let my = p.sources.iter().find(|s| s.source == "mariadb").unwrap();
        source_state(op, "demo") == RequestState::Succeeded && my.attempts >= 2
    })
    .await;
    assert!(!waiting.done);
    let my = progress(&waiting)
        .sources
        .into_iter()
        .find(|s| s.source == "mariadb")
        .unwrap();
    assert!(!my.last_reason.is_empty(), "{my:?}");
    gate.open();
    let op = done(&mut ops, "stopped-1").await;
    assert_eq!(progress(&op).state(), RequestState::Succeeded);
    let result = result(&op);
    verify_package(&result);
    same_as_extract(&a, &result, "mariadb");
    a.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_stopped_with_sigterm_hands_its_running_task_back_at_once() {
    let world = World::open("req_sigterm").await;
    let holder = world
        .pg
        .hold("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .await;
    // A lease far longer than the test: only a hand-back lets another replica run the task.
    let a = world.replica_with("a", "lease = \"10m\"").await;
    let mut client = requests_client(&a.addr).await;
    let mut demo_only = submission("sigterm-1", RequestKind::Access);
    demo_only.sources = vec!["demo".into()];
    client.submit_request(demo_only).await.unwrap();
    let mut ops = operations(&a.addr).await;
    until(&mut ops, "sigterm-1", |op| {
        source_state(op, "demo") == RequestState::Running
    })
    .await;
    assert!(world.pg.erasure_waits().await, "the read never waited");
    // SIGTERM: the replica drains; after its grace period the attempt is cancelled and its
    // task goes back to the queue, and the process exits cleanly.
    let (status, _) = a.terminate().await;
    assert!(status.success(), "{status}");
    let row = world
        .control
        .query_one(
            "SELECT state, last_reason, lease_owner FROM dsr_request_tasks \
             WHERE request_id = 'sigterm-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "queued");
    assert_eq!(row.get::<_, String>(1), "SHUTTING_DOWN");
    assert_eq!(row.get::<_, Option<String>>(2), None);
    holder.release().await;
    let b = world.replica_with("b", "lease = \"10m\"").await;
    let mut ops = operations(&b.addr).await;
    let op = done(&mut ops, "sigterm-1").await;
    assert_eq!(progress(&op).state(), RequestState::Succeeded);
    verify_package(&result(&op));
    b.terminate().await;
}
