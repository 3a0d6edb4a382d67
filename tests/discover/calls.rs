//! Discover as callers meet it: the RPC and its scope, refusals, a table that cannot be
//! sampled in time, the README's new-source commands, a deadline, and a map replaced.

use super::*;

#[tokio::test]
async fn the_discover_rpc_streams_the_same_proposal_and_needs_its_own_scope() {
    create_crm_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let (drafted, _) = discover(dir.path(), &crm_config(), "crm", &["--schema", "crm"]);

    // Served from a config whose crm map is the draft, by callers with and without the scope.
    let server = TestServer::start(support::config_with_tokens(
        &decided(
            &drafted,
            &[("filename", "not_pii"), ("ledger_code", "not_pii")],
        ),
        &[
            (
                "onboarding",
                "onboarding-token",
                "sources = [\"crm\"]\nrpcs = [\"Discover\"]",
            ),
            (
                "orchestrator",
                "orchestrator-token",
                "sources = [\"crm\"]\nrpcs = [\"Extract\", \"Validate\"]",
            ),
        ],
    ))
    .await;
    let mut client = server.client().await;
    let ask = || DiscoverRequest {
        source: "crm".into(),
        schemas: vec!["crm".into()],
        ..Default::default()
    };

    let refused = client
        .discover(support::with_token(ask(), "orchestrator-token"))
        .await
        .expect_err("a caller without the Discover scope is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    let mut stream = client
        .discover(support::with_token(ask(), "onboarding-token"))
        .await
        .unwrap()
        .into_inner();
    let mut tables = Vec::new();
    let mut summary = None;
    let mut everything = String::new();
    while let Some(message) = stream.message().await.unwrap() {
        everything.push_str(&format!("{message:?}\n"));
        match message.event.unwrap() {
            Event::Table(t) => tables.push(t),
            Event::Summary(s) => summary = Some(s),
        }
    }
    assert_no_values("the Discover stream", &everything);
    let summary = summary.expect("a summary ends the stream");
    assert_eq!(summary.tables as usize, tables.len());
    assert_eq!(summary.unreachable.len(), 1);
    assert_eq!(summary.unreachable[0].table, "crm.audit_trail");
    let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["crm.attachments", "crm.members", "crm.messages"]);
    // The same proposal as the command's: each table's TOML is in the draft as written.
    for table in &tables {
        let fragment = table.toml.trim_end();
        assert!(
            drafted.contains(fragment),
            "{}: the RPC's TOML is not the command's:\n{fragment}\n--- draft:\n{drafted}",
            table.table
        );
    }
    let messages = tables.iter().find(|t| t.table == "crm.messages").unwrap();
    assert!(
        messages
            .references
            .iter()
            .any(|r| r.inferred && r.column == "sender")
    );
    let sent = messages
        .columns
        .iter()
        .find(|c| c.name == "sent_epoch")
        .unwrap();
    assert_eq!(sent.coerce, "epoch_seconds");

    // Leaving a table out: what only it linked becomes unreachable, and says why.
    let mut stream = client
        .discover(support::with_token(
            DiscoverRequest {
                exclude_tables: vec!["crm.mess*".into()],
                ..ask()
            },
            "onboarding-token",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut unreachable = Vec::new();
    let mut proposed = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        match message.event.unwrap() {
            Event::Table(t) => proposed.push(t.table),
            Event::Summary(s) => unreachable = s.unreachable,
        }
    }
    assert_eq!(proposed, ["crm.members"]);
    let attachments = unreachable
        .iter()
        .find(|u| u.table == "crm.attachments")
        .expect("attachments are unreachable without messages");
    assert!(
        attachments
            .reason
            .contains("a foreign key to a table outside the selection"),
        "{}",
        attachments.reason
    );

    // From the catalog alone: no row is read, and names still carry the proposal.
    let mut stream = client
        .discover(support::with_token(
            DiscoverRequest {
                catalog_only: true,
                ..ask()
            },
            "onboarding-token",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut named = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(Event::Table(t)) = message.event {
            assert_eq!(t.sampled_rows, 0, "{}", t.table);
            named.push(t);
        }
    }
    let members = named.iter().find(|t| t.table == "crm.members").unwrap();
    assert!(
        members
            .identities
            .iter()
            .any(|i| i.kind == "email" && i.column == "email"),
        "{members:?}"
    );
    assert!(
        named
            .iter()
            .all(|t| t.references.iter().all(|r| !r.inferred)),
        "no values, no inferred links"
    );

    let bad = client
        .discover(support::with_token(
            DiscoverRequest {
                sample_rows: 1_000_000,
                ..ask()
            },
            "onboarding-token",
        ))
        .await
        .expect_err("too large a sample is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("sample_rows"), "{}", bad.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn discover_refuses_an_unknown_source_and_an_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("demo.toml");
    std::fs::write(&input, demo_without_map()).unwrap();
    let output = run(&[
        "discover",
        "--config",
        input.to_str().unwrap(),
        "--source",
        "nope",
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("no source named 'nope' (known: demo)"),
        "{}",
        text(&output.stderr)
    );
    let output = run(&[
        "discover",
        "--config",
        input.to_str().unwrap(),
        "--source",
        "demo",
        "--out",
        input.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("exists"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        demo_without_map(),
        "the config was not touched"
    );
}

#[tokio::test]
async fn a_table_that_cannot_be_sampled_in_time_is_drafted_from_its_names() {
    let sql = support::sql().await;
    sql.batch_execute(
        "CREATE SCHEMA slow;
         CREATE TABLE slow.locked (id bigint PRIMARY KEY, email text UNIQUE, note text);
         CREATE TABLE slow.open (id bigint PRIMARY KEY, contact_email text, note text);
         INSERT INTO slow.locked VALUES (1, 'mina@whitby.example', 'ledger-77');
         INSERT INTO slow.open VALUES (1, 'mina@whitby.example', 'ledger-77');",
    )
    .await
    .unwrap();
    // Another session holds the table: sampling it (and looking links up in it) waits for the
    // lock until the statement timeout cancels it.
    let holder = support::sql().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE slow.locked IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let config = crm_config()
        .replace("name = \"crm\"", "name = \"slow\"")
        .replace("[\"email\", \"member_id\"]", "[\"email\"]");
    let dir = tempfile::tempdir().unwrap();
    let (drafted, printed) = discover(
        dir.path(),
        &config,
        "slow",
        &["--schema", "slow", "--statement-timeout", "1s"],
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_no_values("the draft", &drafted);
    assert_no_values("the command's output", &printed);
    assert!(
        drafted.contains("# slow.locked: never analysed, 0 sampled")
            && drafted.contains("sampling stopped (SQLSTATE 57014"),
        "{drafted}"
    );
    // From its name alone, the locked table's e-mail column is still the identity.
    assert!(
        drafted.contains(r#"identity = [{ kind = "email", column = "email" }]"#),
        "{drafted}"
    );
    // The open table was sampled in the same snapshot, and the link into the locked table
    // could not be checked, so it is not proposed.
    assert!(
        drafted.contains("# slow.open: never analysed, 1 sampled"),
        "{drafted}"
    );
    assert!(!drafted.contains("inferred, check"), "{drafted}");
}

#[tokio::test]
async fn the_readme_new_source_commands_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, demo_without_map()).unwrap();
    let draft = dir.path().join("draft.toml");
    let replacements = [
        ("dsr.toml", config.display().to_string()),
        ("dsr.draft.toml", draft.display().to_string()),
        ("--source shop", "--source demo".to_owned()),
    ];
    let env = [
        ("DSR_DEMO_PASSWORD", cluster().password().to_owned()),
        ("DSR_SUBJECT_KEY", support::SUBJECT_KEY.to_owned()),
    ];
    let commands = support::readme_commands_with("dsr.draft.toml");
    assert_eq!(commands.len(), 2, "{commands:#?}");
    let applicable = |command: &str| -> Vec<(&str, String)> {
        replacements
            .iter()
            .filter(|(from, _)| command.contains(from))
            .cloned()
            .collect()
    };
    let out = support::run_readme_command(&commands[0], &applicable(&commands[0]), &env);
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_no_values("a README command's output", &printed);
    // check-config refuses the draft for its "check" columns alone, naming each ...
    let out = support::run_readme_command_as_is(&commands[1], &applicable(&commands[1]), &env);
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_no_values("a README command's output", &printed);
    let drafted = std::fs::read_to_string(&draft).unwrap();
    let marked: Vec<&str> = drafted
        .lines()
        .filter_map(|l| l.strip_suffix(" = \"check\""))
        .collect();
    assert!(!out.status.success() && !marked.is_empty(), "{printed}");
    for column in &marked {
        assert!(
            printed.contains(&format!("columns.{column}: category \"check\"")),
            "{column}: {printed}"
        );
    }
    // ... and takes it once a person decided them.
    std::fs::write(
        &draft,
        drafted.replace(" = \"check\"\n", " = \"not_pii\"\n"),
    )
    .unwrap();
    support::run_readme_command(&commands[1], &applicable(&commands[1]), &env);
    assert!(
        std::fs::read_to_string(&draft)
            .unwrap()
            .contains("[[sources.tables]]")
    );
}

#[tokio::test]
async fn a_discovery_cut_off_by_its_deadline_leaves_no_query_behind() {
    let sql = support::sql().await;
    sql.batch_execute(
        "CREATE SCHEMA held;
         CREATE TABLE held.accounts (id bigint PRIMARY KEY, email text UNIQUE);
         INSERT INTO held.accounts VALUES (1, 'mina@whitby.example');",
    )
    .await
    .unwrap();
    let holder = support::sql().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE held.accounts IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    // The server gives the call its deadline (the client sets none, so that the answer is
    // the server's).
    let text = config_text("")
        .replacen("[server]\n", "[server]\ndefault_deadline = \"1s\"\n", 1)
        .replace(
            "max_connections = 10",
            "max_connections = 10\napplication_name = \"t-discover-deadline\"",
        );
    let server = TestServer::start(config(&text)).await;
    let mut client = server.client().await;
    let ask = || DiscoverRequest {
        source: "demo".into(),
        schemas: vec!["held".into()],
        ..Default::default()
    };
    let status = client
        .discover(ask())
        .await
        .expect_err("the locked table outlasts the deadline");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

    // The sampling statement ended with the call: nothing of the service still waits on the
    // lock, and once it is released the same discovery succeeds.
    let waiting = support::eventually(50, || async {
        sql.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND application_name = 't-discover-deadline'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 0
    })
    .await;
    assert!(
        waiting,
        "a query of the cut-off discovery still waits on the lock"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    let mut stream = client.discover(ask()).await.unwrap().into_inner();
    let mut tables = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(Event::Table(t)) = message.event {
            tables.push(t.table);
        }
    }
    assert_eq!(tables, ["held.accounts"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_source_that_has_a_map_gets_it_replaced_not_extended() {
    let dir = tempfile::tempdir().unwrap();
    let full = config_text("");
    let (drafted, _) = discover(
        dir.path(),
        &full,
        "demo",
        &["--sample", "20", "--schema", "public"],
    );
    assert_eq!(
        drafted.matches("[[sources.tables]]").count(),
        6,
        "one entry per demo table:\n{drafted}"
    );
    // The hand-written map's own comments went with it; the rest of the file stayed.
    assert!(drafted.contains("Legacy values that fail"), "{drafted}");
    assert!(
        !drafted.contains("VARCHAR dates in three historical formats"),
        "{drafted}"
    );
    let before_sources = &full[..full.find("[[sources]]").unwrap()];
    assert!(drafted.starts_with(before_sources), "{drafted}");
}
