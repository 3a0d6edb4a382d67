//! A request with several identities of one person: alice's e-mail and her phone number, on
//! both shops, which here declare a phone kind. An access request asks each source once, in
//! one snapshot, so each row is in the package once; an erasure asks each source once per
//! identity, each previewed and approved, and erases her rows and nobody else's.

use super::*;
use support::TestServer;

/// Alice by e-mail, with her phone number as typed.
fn by_email_and_phone(id: &str, kind: RequestKind) -> SubmitRequestRequest {
    SubmitRequestRequest {
        more_identities: vec![Identity {
            kind: "phone".into(),
            value: "+44 20 7946 0958".into(),
        }],
        ..submission(id, kind)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_request_by_email_and_phone_packages_each_row_once() {
    let mut world = World::open("req_both_access").await;
    world.edit = support::shop::with_phone;
    let server = TestServer::start(world.config("", &[])).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    client
        .submit_request(by_email_and_phone("both-1", RequestKind::Access))
        .await
        .unwrap();
    let op = done(&mut ops, "both-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    // One task per source, each asked with both identities.
    let folders: Vec<&str> = shown.sources.iter().map(|s| s.folder.as_str()).collect();
    assert_eq!(folders, ["demo", "mariadb"]);
    let result = result(&op);
    assert_eq!(verify_package(&result), ["demo", "mariadb"]);
    let package = Path::new(&result.package_path);
    for source in ["demo", "mariadb"] {
        // Her rows, each once: the rows an extraction by e-mail alone writes (in another
        // order: the rows come by more paths).
        let extracted = extract_files(&server.addr.to_string(), source);
        let packaged = table_files(&package.join(source));
        assert_eq!(
            packaged.keys().collect::<Vec<_>>(),
            extracted.keys().collect::<Vec<_>>()
        );
        for (name, bytes) in &extracted {
            let lines = |b: &[u8]| {
                let mut lines: Vec<String> = String::from_utf8_lossy(b)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                lines.sort();
                lines
            };
            assert_eq!(lines(&packaged[name]), lines(bytes), "{source}/{name}");
        }
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(package.join(source).join("manifest.json")).unwrap(),
        )
        .unwrap();
        let kinds: Vec<&str> = manifest["identities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["email", "phone"], "{source}");
        let customers = manifest["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "customers")
            .unwrap();
        assert_eq!(customers["rowCount"], "1");
        let counts: Vec<&str> = customers["identityRows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["rowCount"].as_str().unwrap())
            .collect();
        assert_eq!(counts, ["1", "1"], "{source}: {customers}");
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(!text.contains("7946") && !text.contains(ALICE), "{text}");
    }
    // Neither identity is kept once the request ended.
    let kept: i64 = world
        .control
        .query_one(
            "SELECT count(*) FROM dsr_request_tasks \
             WHERE identity_value IS NOT NULL OR more_identities IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);
    let records = world.audit("both-1").await;
    for record in &records {
        let line = record.to_string();
        assert!(!line.contains("7946") && !line.contains(ALICE), "{line}");
    }
    // Each extraction's record names the phone number by its keyed hash.
    let phone = dsr_connector::subject::subject_id(
        support::SUBJECT_KEY.as_bytes(),
        "phone",
        "+442079460958",
    );
    let named = records
        .iter()
        .filter(|r| r["rpc"] == "Extract" && r["outcome"] == "ok")
        .filter(|r| r["more_subject_ids"] == serde_json::json!([phone]))
        .count();
    assert_eq!(named, 2, "{records:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_by_email_and_phone_is_approved_per_identity_and_erases_only_hers() {
    let mut world = World::open("req_both_erase").await;
    world.edit = support::shop::with_phone;
    let server = TestServer::start(world.config("", &[])).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    let shops_before = [world.pg.rows().await, world.my.rows().await];
    let alice = [world.pg.alice_rows().await, world.my.alice_rows().await];
    client
        .submit_request(by_email_and_phone("both-erase", RequestKind::Erasure))
        .await
        .unwrap();
    let waiting = until(&mut ops, "both-erase", |op| {
        progress(op).state() == RequestState::AwaitingApproval
    })
    .await;
    let shown = progress(&waiting);
    let asked: Vec<(&str, &str, &str)> = shown
        .sources
        .iter()
        .map(|s| {
            (
                s.folder.as_str(),
                s.identity_kind.as_str(),
                s.identity_path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        asked,
        [
            ("demo", "email", "submitted"),
            ("demo.2", "phone", "submitted"),
            ("mariadb", "email", "submitted"),
            ("mariadb.2", "phone", "submitted"),
        ]
    );
    // Each identity's preview shows her rows.
    for task in &shown.sources {
        let preview = task.preview.as_ref().unwrap();
        assert!(preview.rows_deleted > 0, "{task:?}");
    }
    let digests = digests(&shown);
    // An approval that leaves out one identity's preview approves nothing.
    let mut partial = digests.clone();
    partial.remove("demo.2");
    let refused = client
        .approve_request(ApproveRequestRequest {
            name: "requests/both-erase".into(),
            digests: partial,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(world.pg.rows().await, shops_before[0], "nothing was erased");

    client
        .approve_request(ApproveRequestRequest {
            name: "requests/both-erase".into(),
            digests,
        })
        .await
        .unwrap();
    let op = done(&mut ops, "both-erase").await;
    assert_eq!(progress(&op).state(), RequestState::Succeeded, "{op:?}");
    for ((shop, before), hers) in [&world.pg, &world.my].iter().zip(&shops_before).zip(&alice) {
        let after = shop.rows().await;
        for (key, text) in before {
            if hers.contains(key) {
                // Her customer record is gone (her legacy account is retained by policy).
                if key.0 == "customers" {
                    assert!(!after.contains_key(key), "{}: {key:?} left", shop.store);
                }
            } else {
                assert_eq!(
                    after.get(key),
                    Some(text),
                    "{}: {key:?} changed",
                    shop.store
                );
            }
        }
    }
    // Per source, one transaction erased her rows; the other identity found nothing left.
    for source in ["demo", "mariadb"] {
        assert_eq!(
            world.committed_erasures("both-erase", source).await,
            1,
            "{source}"
        );
    }
    server.stop().await.unwrap();
}
