//! Links between sources: the shop on PostgreSQL knows a person by e-mail, and its
//! `customers.id` is the `shop_customer_id` a CRM on MariaDB knows them by. A request by
//! e-mail alone reaches the CRM through the link, with the path in the package's manifest
//! and the operation, never the value; a linked value that many CRM records share is refused,
//! the path named.

use super::*;
use support::TestServer;

/// The CRM on MariaDB, keyed by the shop's customer id: alice (customer 1) has one contact
/// and two notes; customer 2's id is shared by 40 contacts (a hub).
const CRM_SQL: &str = "\
    CREATE TABLE crm_contacts (id INT PRIMARY KEY, shop_customer_id BIGINT NOT NULL, \
      full_name VARCHAR(100) NOT NULL) ENGINE = InnoDB; \
    CREATE TABLE crm_notes (id INT PRIMARY KEY, contact_id INT NOT NULL, \
      body VARCHAR(200) NOT NULL, FOREIGN KEY (contact_id) REFERENCES crm_contacts (id)) \
      ENGINE = InnoDB; \
    INSERT INTO crm_contacts VALUES (1, 1, 'Alice in the CRM'), (2, 3, 'Carol in the CRM'); \
    INSERT INTO crm_notes VALUES (1, 1, 'called about her order'), (2, 1, 'prefers e-mail'), \
      (3, 2, 'not alice'); \
    INSERT INTO crm_contacts SELECT 100 + seq, 2, CONCAT('Shared ', seq) FROM seq_1_to_40;";

fn crm_config(database: &str) -> String {
    crm_config_with(database, "")
}

/// [`crm_config`], with `erase` added to both CRM tables.
fn crm_config_with(database: &str, erase: &str) -> String {
    let server = mariadb();
    format!(
        "\n[[sources]]\nname = \"crm\"\nkind = \"mysql\"\nhost = \"{}\"\nport = {}\n\
         database = \"{database}\"\nuser = \"{}\"\npassword_env = \"{}\"\n\
         ssl_mode = \"preferred\"\nidentity_kinds = [\"shop_customer_id\"]\n\
         person_tables = [\"crm_contacts\"]\nshared_identity = \"refuse\"\n\n\
         [[sources.tables]]\nname = \"crm_contacts\"\n\
         identity = {{ kind = \"shop_customer_id\", column = \"shop_customer_id\" }}\n\
         columns = {{ id = \"not_pii\", shop_customer_id = \"identifier.customer_id\", \
         full_name = \"name\" }}\n{erase}\n\n\
         [[sources.tables]]\nname = \"crm_notes\"\n\
         reference = {{ column = \"contact_id\", table = \"crm_contacts\", to = \"id\", \
         reach = \"owned\" }}\n\
         columns = {{ id = \"not_pii\", contact_id = \"not_pii\", body = \"support\" }}\n\
         {erase}\n\n\
         [[links]]\nfrom = {{ source = \"demo\", table = \"customers\", column = \"id\" }}\n\
         kind = \"shop_customer_id\"\n",
        server.host(),
        server.port(),
        demo::mariadb::USER,
        demo::mariadb::PASSWORD_ENV,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_by_email_reaches_the_crm_through_the_shops_customer_id() {
    let world = World::open("req_links").await;
    world.my.exec("", CRM_SQL).await;
    let server = TestServer::start(world.config(&crm_config("req_links"), &[])).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    client
        .submit_request(submission("linked-1", RequestKind::Access))
        .await
        .unwrap();
    let op = done(&mut ops, "linked-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    let crm = shown.sources.iter().find(|s| s.source == "crm").unwrap();
    assert_eq!(crm.identity_kind, "shop_customer_id");
    assert_eq!(
        crm.identity_path,
        "email -> demo.customers.id as shop_customer_id"
    );
    assert_eq!(crm.rows, 3, "her contact and her two notes: {crm:?}");
    let demo_part = shown.sources.iter().find(|s| s.source == "demo").unwrap();
    assert_eq!(demo_part.identity_path, "submitted");

    // The package: a folder per source, the CRM's with her rows only, and the path (never
    // the value) in the top-level manifest.
    let result = result(&op);
    assert_eq!(verify_package(&result), ["crm", "demo", "mariadb"]);
    let folder = Path::new(&result.package_path);
    let contacts = std::fs::read_to_string(folder.join("crm/crm_contacts.jsonl")).unwrap();
    assert!(contacts.contains("Alice in the CRM"), "{contacts}");
    assert_eq!(contacts.lines().count(), 1);
    let notes = std::fs::read_to_string(folder.join("crm/crm_notes.jsonl")).unwrap();
    assert_eq!(notes.lines().count(), 2, "{notes}");
    assert!(!notes.contains("not alice"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let paths: Vec<&str> = manifest["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["identity"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "email -> demo.customers.id as shop_customer_id",
            "submitted",
            "submitted"
        ]
    );
    // Consistency across sources, stated as it is: each source's own snapshot, and when
    // each was read (a real time near the request's, whatever the store's clock precision).
    assert_eq!(
        manifest["consistency"],
        "each source was read from one snapshot of its own, at its read_at; there is no \
         snapshot across databases"
    );
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{v}: not an RFC 3339 time: {e}"))
    };
    let submitted = time(&manifest["submitted_at"]);
    for source in manifest["sources"].as_array().unwrap() {
        let read_at = time(&source["read_at"]);
        let apart = (read_at - submitted).num_seconds().abs();
        assert!(apart < 120, "{source}: read {apart} s from the submission");
    }
    // No identity value left in the control database once the request ended.
    let kept: i64 = world
        .control
        .query_one(
            "SELECT count(*) FROM dsr_request_tasks WHERE identity_value IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);

    // Bob's customer id is shared by 40 CRM contacts: the link reaches a hub, and the request
    // fails with the path named, before any CRM row is read.
    let mut bob = submission("linked-2", RequestKind::Access);
    bob.subject.as_mut().unwrap().value = "bob@example.com".into();
    client.submit_request(bob).await.unwrap();
    let op = done(&mut ops, "linked-2").await;
    let Some(operation::Result::Error(status)) = &op.result else {
        panic!("the hub was not refused: {:?}", progress(&op));
    };
    assert_eq!(status.code, Code::FailedPrecondition as i32, "{status:?}");
    assert!(
        status.message.contains("crm")
            && status
                .message
                .contains("email -> demo.customers.id as shop_customer_id"),
        "{}",
        status.message
    );
    // A source still reading when the request failed stops at its next lease renewal, and
    // removes what it wrote: nothing of the failed request stays on the package store.
    let package = world.packages.path().join("linked-2");
    let mut left = true;
    for _ in 0..300 {
        left = Path::new(&package).exists();
        if !left {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!left, "the failed request's package folder is still there");
    server.stop().await.unwrap();
}

/// Several identities and a link together: alice by e-mail and by phone is one customer of
/// the shop, so the CRM is asked once, through her one customer id, with both kinds named in
/// the path and her rows only in its folder.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_by_email_and_phone_reaches_the_crm_once_with_both_kinds_in_its_path() {
    let mut world = World::open("req_links_both").await;
    world.edit = support::shop::with_phone;
    world.my.exec("", CRM_SQL).await;
    let server = TestServer::start(world.config(&crm_config("req_links_both"), &[])).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    let request = SubmitRequestRequest {
        more_identities: vec![Identity {
            kind: "phone".into(),
            value: "+44 20 7946 0958".into(),
        }],
        ..submission("linked-both", RequestKind::Access)
    };
    client.submit_request(request).await.unwrap();
    let op = done(&mut ops, "linked-both").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    let crm: Vec<_> = shown.sources.iter().filter(|s| s.source == "crm").collect();
    assert_eq!(crm.len(), 1, "the CRM is asked once: {shown:?}");
    assert_eq!(
        crm[0].identity_path,
        "email+phone -> demo.customers.id as shop_customer_id"
    );
    assert_eq!(crm[0].rows, 3, "her contact and her two notes: {crm:?}");
    let result = result(&op);
    assert_eq!(verify_package(&result), ["crm", "demo", "mariadb"]);
    let folder = Path::new(&result.package_path);
    let contacts = std::fs::read_to_string(folder.join("crm/crm_contacts.jsonl")).unwrap();
    assert_eq!(contacts.lines().count(), 1, "{contacts}");
    assert!(contacts.contains("Alice in the CRM"), "{contacts}");
    let manifest = std::fs::read_to_string(folder.join("manifest.json")).unwrap();
    // Neither as typed nor normalised (hashes are hex, so a short run of digits may occur).
    for phone in ["+44 20 7946 0958", "442079460958", "2079460958"] {
        assert!(!manifest.contains(phone), "a phone number in the manifest");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_linked_identity_is_asked_once_and_too_many_fail_the_request_named() {
    let world = World::open("req_links_bound").await;
    world.my.exec("", CRM_SQL).await;
    // Both shops yield the same customer id for alice: the CRM is asked once.
    let both = format!(
        "{}\n[[links]]\nfrom = {{ source = \"mariadb\", table = \"customers\", column = \"id\" }}\n\
         kind = \"shop_customer_id\"\n",
        crm_config("req_links_bound")
    );
    let server = TestServer::start(world.config(&both, &[])).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    client
        .submit_request(submission("bound-1", RequestKind::Access))
        .await
        .unwrap();
    let op = done(&mut ops, "bound-1").await;
    let shown = progress(&op);
    assert_eq!(shown.state(), RequestState::Succeeded, "{shown:?}");
    let asked: Vec<_> = shown.sources.iter().filter(|s| s.source == "crm").collect();
    assert_eq!(asked.len(), 1, "{shown:?}");
    server.stop().await.unwrap();

    // With no linked identity allowed, the first one found fails the request, named.
    let strict = world.config(
        &format!(
            "max_linked_identities = 0\n{}",
            crm_config("req_links_bound")
        ),
        &[],
    );
    let server = TestServer::start(strict).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    client
        .submit_request(submission("bound-2", RequestKind::Access))
        .await
        .unwrap();
    let op = done(&mut ops, "bound-2").await;
    let Some(operation::Result::Error(status)) = &op.result else {
        panic!("not refused: {:?}", progress(&op));
    };
    assert!(
        status.message.contains("max_linked_identities")
            && status
                .message
                .contains("email -> demo.customers.id as shop_customer_id"),
        "{}",
        status.message
    );
    assert!(!progress(&op).sources.iter().any(|s| s.source == "crm"));
    server.stop().await.unwrap();
}

/// The CRM's rows as text, by table and id.
async fn crm_rows(world: &World) -> BTreeMap<(String, i64), String> {
    let mut rows = BTreeMap::new();
    for (table, sql) in [
        (
            "crm_contacts",
            "SELECT CONCAT_WS('|', id, shop_customer_id, full_name) FROM crm_contacts ORDER BY id",
        ),
        (
            "crm_notes",
            "SELECT CONCAT_WS('|', id, contact_id, body) FROM crm_notes ORDER BY id",
        ),
    ] {
        for text in world.my.texts(sql).await {
            let id = text.split('|').next().unwrap().parse().unwrap();
            rows.insert((table.to_owned(), id), text);
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_shows_its_linked_identities_for_approval_and_erases_only_what_was_approved() {
    let world = World::open("req_links_erase").await;
    world.my.exec("", CRM_SQL).await;
    let config = crm_config_with("req_links_erase", "erase = { action = \"delete\" }");
    let server = TestServer::start(world.config(&config, &[])).await;
    let mut client = requests_client(server.addr).await;
    let mut ops = operations(server.addr).await;
    let shops_before = [world.pg.rows().await, world.my.rows().await];
    let alice = [world.pg.alice_rows().await, world.my.alice_rows().await];
    let crm_before = crm_rows(&world).await;
    client
        .submit_request(submission("linked-erase", RequestKind::Erasure))
        .await
        .unwrap();
    let waiting = until(&mut ops, "linked-erase", |op| {
        progress(op).state() == RequestState::AwaitingApproval
    })
    .await;
    let shown = progress(&waiting);
    let crm = shown.sources.iter().find(|s| s.source == "crm").unwrap();
    assert_eq!(
        crm.identity_path,
        "email -> demo.customers.id as shop_customer_id"
    );
    assert_eq!(crm.preview.as_ref().unwrap().rows_deleted, 3, "{crm:?}");
    let digests = digests(&shown);
    assert_eq!(digests.len(), 3);

    // An approval that leaves out the linked identity approves nothing.
    let mut partial = digests.clone();
    partial.remove("crm");
    let refused = client
        .approve_request(ApproveRequestRequest {
            name: "requests/linked-erase".into(),
            digests: partial,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("crm"), "{refused:?}");
    assert_eq!(crm_rows(&world).await, crm_before, "nothing was erased");

    client
        .approve_request(ApproveRequestRequest {
            name: "requests/linked-erase".into(),
            digests,
        })
        .await
        .unwrap();
    let op = done(&mut ops, "linked-erase").await;
    assert_eq!(progress(&op).state(), RequestState::Succeeded);
    // Alice's CRM contact and notes are gone; every other CRM row is as it was.
    let crm_after = crm_rows(&world).await;
    let alices: [(&str, i64); 3] = [("crm_contacts", 1), ("crm_notes", 1), ("crm_notes", 2)];
    for (key, text) in &crm_before {
        let hers = alices.iter().any(|(t, id)| *t == key.0 && *id == key.1);
        if hers {
            assert!(!crm_after.contains_key(key), "{key:?} was not erased");
        } else {
            assert_eq!(crm_after.get(key), Some(text), "{key:?} changed");
        }
    }
    // Both shops: every row of another subject byte-identical.
    for ((shop, before), hers) in [&world.pg, &world.my].iter().zip(&shops_before).zip(&alice) {
        let after = shop.rows().await;
        for (key, text) in before {
            if !hers.contains(key) {
                assert_eq!(
                    after.get(key),
                    Some(text),
                    "{}: {key:?} changed",
                    shop.store
                );
            }
        }
    }
    assert_eq!(world.committed_erasures("linked-erase", "crm").await, 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_links_proposes_the_shops_customer_id_for_the_crm() {
    let world = World::open("req_links_found").await;
    world.my.exec("", CRM_SQL).await;
    // The config without its link: discover-links must find it.
    let config = crm_config("req_links_found");
    let without = &config[..config.find("[[links]]").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, world.config_text("local", without)).unwrap();
    // The real binary, with the secrets the config names in its environment.
    let run = |args: &[&str], path: &Path| {
        support::without_test_cargo_env(&mut std::process::Command::new(env!(
            "CARGO_BIN_EXE_dsr-connector"
        )))
        .args(args)
        .arg(path)
        .env("DSR_DEMO_PASSWORD", support::cluster().password())
        .env("DSR_SUBJECT_KEY", support::SUBJECT_KEY)
        .env("CONTROL_URL", &world.control_url)
        .env(demo::mariadb::PASSWORD_ENV, mariadb().password())
        .env("DSR_AUDIT_KEY", demo::audit_key(support::SUBJECT_KEY))
        .output()
        .unwrap()
    };
    let output = run(&["discover-links", "--config"], &path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The proposals are TOML the config accepts, each with its evidence above it.
    let parsed: toml_edit::DocumentMut = stdout.parse().unwrap();
    let mut proposed: Vec<(String, String, String, String)> = parsed["links"]
        .as_array_of_tables()
        .unwrap()
        .iter()
        .map(|l| {
            let from = l["from"].as_inline_table().unwrap();
            let text = |key: &str| from.get(key).unwrap().as_str().unwrap().to_owned();
            (
                text("source"),
                text("table"),
                text("column"),
                l["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    proposed.sort();
    let expected = [
        ("crm", "crm_contacts", "shop_customer_id", "customer_id"),
        ("demo", "customers", "id", "shop_customer_id"),
        ("mariadb", "customers", "id", "shop_customer_id"),
    ];
    assert_eq!(
        proposed,
        expected.map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into())),
        "{stdout}"
    );
    let comments: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .collect();
    assert!(
        comments.join(" ").contains(
            "names: customers.id names the kind (shop_customer_id); 3 of 2003 distinct \
             values read from demo.customers.id are among the 3 distinct shop_customer_id \
             identities read from crm.crm_contacts.shop_customer_id"
        ),
        "{stdout}"
    );
    // No value of either side in what it printed.
    for value in ["Alice", "alice@example.com", "Shared"] {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "{value}"
        );
    }
    // The file with the proposals added is a config that loads.
    let mut text = world.config_text("local", without);
    text.push('\n');
    text.push_str(&stdout);
    let dir2 = tempfile::tempdir().unwrap();
    let path2 = dir2.path().join("config.toml");
    std::fs::write(&path2, &text).unwrap();
    let checked = run(&["check-config"], &path2);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
