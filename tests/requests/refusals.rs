//! What a request may not do, and what it does when its ground moves: bad submissions are
//! refused with a status that names the problem (and recorded); each caller sees only the
//! requests its scopes could have submitted; a server without a control database says what
//! it needs; a preview that no longer holds is shown again for approval; an erasure that an
//! earlier attempt committed is not committed twice.

use super::*;
use dsr_connector::pb::google::longrunning::{DeleteOperationRequest, ListOperationsRequest};
use support::{TestServer, with_token};

const ORCHESTRATOR: &str = "token-orchestrator";
const ERASER: &str = "token-eraser";
const APPROVER: &str = "token-approver";
const CRM: &str = "token-crm";
const READER: &str = "token-reader";
const STAR: &str = "token-star";

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_refused_with_their_reason_and_shown_only_to_callers_with_their_scopes() {
    let world = World::open("req_scopes").await;
    let config = world.config(
        "",
        &[
            (
                "orchestrator",
                ORCHESTRATOR,
                "sources = [\"*\"]\nrpcs = [\"SubmitRequest\"]",
            ),
            (
                "eraser",
                ERASER,
                "sources = [\"*\"]\nrpcs = [\"SubmitRequest\", \"Erase\"]",
            ),
            (
                "approver",
                APPROVER,
                "sources = [\"*\"]\nrpcs = [\"ApproveRequest\", \"Erase\"]",
            ),
            (
                "crm",
                CRM,
                "sources = [\"mariadb\"]\nrpcs = [\"SubmitRequest\"]",
            ),
            ("reader", READER, "sources = [\"*\"]\nrpcs = [\"Extract\"]"),
            ("star", STAR, "sources = [\"*\"]\nrpcs = [\"*\"]"),
        ],
    );
    let server = TestServer::start(config).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    let submit = |request: SubmitRequestRequest, token: &str| with_token(request, token);

    let refused = |request: SubmitRequestRequest| request;
    let mut cases: Vec<(SubmitRequestRequest, &str, Code, &str)> = Vec::new();
    let mut bad_id = submission("../etc", RequestKind::Access);
    bad_id.request_id = "../etc".into();
    cases.push((bad_id, ORCHESTRATOR, Code::InvalidArgument, "request_id"));
    let mut no_kind = submission("r-1", RequestKind::Access);
    no_kind.kind = 0;
    cases.push((no_kind, ORCHESTRATOR, Code::InvalidArgument, "kind"));
    let mut unknown = submission("r-2", RequestKind::Access);
    unknown.sources = vec!["nowhere".into()];
    cases.push((unknown, ORCHESTRATOR, Code::NotFound, "nowhere"));
    let mut phone = submission("r-3", RequestKind::Access);
    phone.subject.as_mut().unwrap().kind = "phone".into();
    cases.push((phone, ORCHESTRATOR, Code::InvalidArgument, "phone"));
    let mut past = submission("r-4", RequestKind::Access);
    past.due_time = Some(prost_types::Timestamp {
        seconds: 1_000_000_000,
        nanos: 0,
    });
    cases.push((past, ORCHESTRATOR, Code::InvalidArgument, "due_time"));
    cases.push((
        submission("r-5", RequestKind::Erasure),
        ORCHESTRATOR,
        Code::PermissionDenied,
        "Erase scope",
    ));
    // Every source that knows e-mail addresses: the CRM caller may not read PostgreSQL's.
    cases.push((
        submission("r-6", RequestKind::Access),
        CRM,
        Code::PermissionDenied,
        "'demo'",
    ));
    cases.push((
        submission("r-7", RequestKind::Access),
        READER,
        Code::PermissionDenied,
        "SubmitRequest",
    ));
    for (request, token, code, named) in cases {
        let id = request.request_id.clone();
        let status = client
            .submit_request(submit(refused(request), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{id}: {status:?}");
        assert!(status.message().contains(named), "{id}: {status:?}");
        assert!(!status.message().contains(ALICE), "{id}: {status:?}");
        assert!(!reason(&status).is_empty(), "{id}: {status:?}");
    }
    let stored: i64 = world
        .control
        .query_one("SELECT count(*) FROM dsr_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "a refused request was stored");

    // SQL in the identity is a value like any other: the request runs and finds no one.
    let mut hostile = submission("hostile-1", RequestKind::Access);
    hostile.subject.as_mut().unwrap().value = "x' OR '1'='1".into();
    client
        .submit_request(submit(hostile, ORCHESTRATOR))
        .await
        .unwrap();
    let mut crm = submission("crm-1", RequestKind::Access);
    crm.sources = vec!["mariadb".into()];
    client.submit_request(submit(crm, CRM)).await.unwrap();
    let op = loop {
        let op = ops
            .wait_operation(with_token(
                WaitOperationRequest {
                    name: "requests/hostile-1".into(),
                    timeout: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                },
                ORCHESTRATOR,
            ))
            .await
            .unwrap()
            .into_inner();
        if op.done {
            break op;
        }
    };
    let found = result(&op);
    for source in &found.sources {
        let Some(pb::source_result::Result::Manifest(manifest)) = &source.result else {
            panic!("no manifest");
        };
        assert_eq!(manifest.row_count, 0, "{}", source.source);
    }

    // Each caller sees the requests its scopes could have submitted, and no other: the CRM
    // caller does not learn that hostile-1 exists.
    let hidden = ops
        .get_operation(with_token(
            GetOperationRequest {
                name: "requests/hostile-1".into(),
            },
            CRM,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    let listed = |token: &'static str| {
        let mut ops = ops.clone();
        async move {
            ops.list_operations(with_token(
                ListOperationsRequest {
                    name: "requests".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .operations
            .into_iter()
            .map(|o| o.name)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(ORCHESTRATOR).await,
        ["requests/crm-1", "requests/hostile-1"]
    );
    assert_eq!(listed(CRM).await, ["requests/crm-1"]);
    // An access request cannot be approved; the approval scope is not in "*"; an open
    // request cannot be deleted.
    let not_waiting = client
        .approve_request(with_token(
            ApproveRequestRequest {
                name: "requests/hostile-1".into(),
                digests: BTreeMap::new(),
            },
            APPROVER,
        ))
        .await
        .unwrap_err();
    // The approver may not see access requests at all (it holds no SubmitRequest scope).
    assert_eq!(not_waiting.code(), Code::NotFound, "{not_waiting:?}");
    let starred = client
        .approve_request(with_token(
            ApproveRequestRequest {
                name: "requests/hostile-1".into(),
                digests: BTreeMap::new(),
            },
            STAR,
        ))
        .await
        .unwrap_err();
    assert_eq!(starred.code(), Code::PermissionDenied, "{starred:?}");

    // Deleting a finished request removes its package, and records it.
    let path = result(&op).package_path;
    assert!(Path::new(&path).exists());
    ops.delete_operation(with_token(
        DeleteOperationRequest {
            name: "requests/hostile-1".into(),
        },
        ORCHESTRATOR,
    ))
    .await
    .unwrap();
    assert!(!Path::new(&path).exists());
    let gone = ops
        .get_operation(with_token(
            GetOperationRequest {
                name: "requests/hostile-1".into(),
            },
            ORCHESTRATOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // The refusals and the steps are in the audit log, without the identity.
    server.stop().await.unwrap();
    let lines: Vec<String> = world
        .control
        .query("SELECT line FROM dsr_audit", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let text = lines.join("\n");
    assert!(!text.contains(ALICE) && !text.contains("x' OR"));
    assert!(text.contains("\"rpc\":\"SubmitRequest\"") && text.contains("PERMISSION_DENIED"));
    assert!(text.contains("\"rpc\":\"DeleteOperation\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_a_control_database_says_what_durable_requests_need() {
    let server = TestServer::demo().await;
    let mut client = requests_client(server.addr).await;
    let status = client
        .submit_request(submission("r-1", RequestKind::Access))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "NO_CONTROL_DATABASE");
    assert!(status.message().contains("[server.control]"), "{status:?}");
    let mut ops = operations(server.addr).await;
    let status = get_status(&mut ops, "requests/r-1").await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    server.stop().await.unwrap();
}

async fn get_status(ops: &mut OperationsClient<Channel>, name: &str) -> tonic::Status {
    ops.get_operation(GetOperationRequest { name: name.into() })
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_that_no_longer_holds_waits_again_and_an_earlier_commit_is_not_repeated() {
    let world = World::open("req_changed").await;
    let server = TestServer::start(world.config("", &[])).await;
    let mut client = requests_client(server.addr).await;
    let mut connector = server.client().await;
    let mut ops = operations(server.addr).await;
    client
        .submit_request(submission("changed-1", RequestKind::Erasure))
        .await
        .unwrap();
    let waiting = until(&mut ops, "changed-1", |op| {
        progress(op).state() == RequestState::AwaitingApproval
    })
    .await;
    let digests = digests(&progress(&waiting));

    // Alice orders again on PostgreSQL after the preview; the approval that follows approved
    // what the preview showed, not this.
    world
        .pg
        .exec(
            "INSERT INTO orders (id, customer_id, placed_at, status, total, shipping_address) \
             SELECT 9001, customer_id, placed_at, status, total, shipping_address FROM orders \
             WHERE customer_id = 1 LIMIT 1",
            "",
        )
        .await;
    // On MariaDB, an erasure of the same request committed outside the queue (as an attempt
    // whose replica died before it could settle would have).
    let mut direct = support::shop::erase_request("mariadb", false, &digests["mariadb"]);
    direct.request_id = "changed-1".into();
    let receipt = support::erase_receipt(&mut connector, direct)
        .await
        .unwrap();
    assert!(receipt.rows_deleted > 0);

    client
        .approve_request(ApproveRequestRequest {
            name: "requests/changed-1".into(),
            digests: digests.clone(),
        })
        .await
        .unwrap();
    // PostgreSQL's source is previewed again and waits, with a new digest; MariaDB's is done,
    // pointing to the erasure that was committed.
    let again = until(&mut ops, "changed-1", |op| {
        progress(op).state() == RequestState::AwaitingApproval
            && source_state(op, "mariadb") == RequestState::Succeeded
    })
    .await;
    let demo = progress(&again)
        .sources
        .into_iter()
        .find(|s| s.source == "demo")
        .unwrap();
    assert_ne!(demo.preview_digest, digests["demo"]);
    let preview = demo.preview.unwrap();
    let orders = preview.tables.iter().find(|t| t.table == "orders").unwrap();
    assert_eq!(orders.rows, 4, "the new preview shows the new order");
    client
        .approve_request(ApproveRequestRequest {
            name: "requests/changed-1".into(),
            digests: [("demo".to_owned(), demo.preview_digest.clone())].into(),
        })
        .await
        .unwrap();
    let op = done(&mut ops, "changed-1").await;
    assert_eq!(progress(&op).state(), RequestState::Succeeded);
    let results = result(&op).sources;
    let mariadb = results.iter().find(|s| s.source == "mariadb").unwrap();
    let Some(pb::source_result::Result::Receipt(pointer)) = &mariadb.result else {
        panic!("no receipt");
    };
    assert_eq!(pointer.rows_deleted, 0);
    assert_eq!(pointer.earlier_erasure_id, receipt.erasure_id);
    server.stop().await.unwrap();
    for source in ["demo", "mariadb"] {
        assert_eq!(
            world.committed_erasures("changed-1", source).await,
            1,
            "{source}"
        );
    }
}

#[test]
fn request_settings_and_source_names_are_checked_at_start_up() {
    let text = support::config_text("");
    let load = |text: &str| {
        dsr_connector::config::Config::from_toml_str(text, |_| Some("0123456789abcdef0123".into()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let refused = load(&format!(
        "{text}\n[server.requests]\npackage_dir = \"packages\"\nlease = \"100ms\"\n\
         poll = \"1h\"\nworkers = 1000\nretry_first = \"10m\"\nretry_max = \"1m\"\n\
         access_due_after = \"1h\"\n"
    ));
    for key in [
        "server.requests.lease",
        "server.requests.poll",
        "server.requests.workers",
        "server.requests.retry_first",
        "server.requests.access_due_after",
        "server.requests.package_dir: durable requests need [server.control]",
    ] {
        assert!(refused.contains(key), "{key}: {refused}");
    }
    // Links must name a mapped identity table's column, and a kind another source declares.
    let refused = load(&format!(
        "{text}\n[[links]]\nfrom = {{ source = \"demo\", table = \"orders\", column = \"nope\" }}\n\
         kind = \"shop_customer_id\"\n"
    ));
    for problem in [
        "links[0].from.column: table 'orders' maps no column 'nope'",
        "links[0].from.table: 'orders' has no identity column",
        "links[0].kind: no other source declares the identity kind 'shop_customer_id'",
    ] {
        assert!(refused.contains(problem), "{problem}: {refused}");
    }
    // A source's name names a folder of every package: nothing that leaves it.
    let refused = load(&text.replacen("name = \"demo\"", "name = \"../demo\"", 1));
    assert!(refused.contains("sources[0].name: '../demo'"), "{refused}");
}
