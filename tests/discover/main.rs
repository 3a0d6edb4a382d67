//! `discover` and the Discover RPC against real PostgreSQL: the draft of the demo schema
//! matches the hand-written map, a schema written for this test (links without foreign keys,
//! nested contact data in JSONB, legacy dates, epochs) is found, drafts pass `check-config`
//! unchanged and extract what the hand-written map extracts, and no sampled value appears in a
//! draft, a proposal or the logs.

mod calls;
mod recall;
#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use dsr_connector::config::{Config, SourceConfig};
use dsr_connector::pb::{DiscoverRequest, discover_response::Event};
use support::{TestServer, cluster, config, config_text, extract, request};

/// Values of the demo data and of the test schema: none may appear in a draft or a log.
const SAMPLED_VALUES: &[&str] = &[
    "alice@example.com",
    "bob@example.com",
    "Alice Liddell",
    "+44 20 7946 0958",
    "Rabbit Hole",
    "OX1 1AA",
    "203.0.113.7",
    "2001:db8::1",
    "4242",
    "Oxford",
    "user1001@example.net",
    "14/03/2009",
    "19991231",
    "1262304000",
    "a1b2c3d4",
    "TEA-EARLGREY",
    "Where is my clock",
    "Mina Harker",
    "mina@whitby.example",
    "Jonathan@Exeter.example",
    "+44 1947 600100",
    "Carfax Abbey",
    "25.05.1897",
    "1700000000000",
    "ledger-77",
];

/// Runs the binary with the test cluster's secrets in the environment.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsr-connector"))
        .args(args)
        .env("DSR_DEMO_PASSWORD", cluster().password())
        .env("DSR_SUBJECT_KEY", support::SUBJECT_KEY)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Drafts `source` of the config `text` with the binary; returns the draft and everything the
/// command printed.
fn discover(dir: &Path, config: &str, source: &str, extra: &[&str]) -> (String, String) {
    let input = dir.join(format!("{source}.toml"));
    let draft = dir.join(format!("{source}.draft.toml"));
    std::fs::write(&input, config).unwrap();
    let mut args = vec![
        "discover",
        "--config",
        input.to_str().unwrap(),
        "--source",
        source,
        "--out",
        draft.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = run(&args);
    let printed = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "discover failed:\n{printed}");
    let drafted = std::fs::read_to_string(&draft).unwrap();

    // check-config takes the draft unchanged, or refuses only the columns marked "check" for
    // a person to decide.
    let check = run(&["check-config", draft.to_str().unwrap()]);
    let said = format!("{}{}", text(&check.stdout), text(&check.stderr));
    let problems: Vec<&str> = said.lines().filter(|l| l.starts_with("  - ")).collect();
    assert!(
        check.status.success() || problems.iter().all(|p| p.contains("category \"check\"")),
        "check-config refused the draft for more than its \"check\" columns:\n{said}\n--- draft:\n{drafted}"
    );
    assert_eq!(
        problems.len(),
        drafted.matches(" = \"check\"").count(),
        "{said}"
    );
    (drafted, printed)
}

/// The draft once a person decided each column marked "check": `decisions` must name exactly
/// those columns, as (column, category).
fn decided(drafted: &str, decisions: &[(&str, &str)]) -> String {
    let mut text = drafted.to_owned();
    for (column, category) in decisions {
        let marked = format!("\n{column} = \"check\"\n");
        assert!(
            text.contains(&marked),
            "{column} is not marked check:\n{drafted}"
        );
        text = text.replacen(&marked, &format!("\n{column} = \"{category}\"\n"), 1);
    }
    assert!(
        !text.contains(" = \"check\""),
        "undecided columns left:\n{text}"
    );
    text
}

fn assert_no_values(what: &str, output: &str) {
    assert_no_values_beyond(what, output, "");
}

/// No sampled value appears in `output` more often than in `input` (the config the draft was
/// made from, whose comments may quote an example).
fn assert_no_values_beyond(what: &str, output: &str, input: &str) {
    let (output, input) = (output.to_lowercase(), input.to_lowercase());
    for value in SAMPLED_VALUES {
        let value = value.to_lowercase();
        assert!(
            output.matches(&value).count() <= input.matches(&value).count(),
            "{what} holds the sampled value '{value}':\n{output}"
        );
    }
}

/// The demo config without its data map.
fn demo_without_map() -> String {
    let full = config_text("");
    let at = full
        .find("[[sources.tables]]")
        .expect("the demo map has tables");
    full[..at].to_owned()
}

fn source<'a>(config: &'a Config, name: &str) -> &'a SourceConfig {
    config.sources.iter().find(|s| s.name == name).unwrap()
}

type Paths = (
    BTreeSet<(String, String)>,
    BTreeSet<(String, String, String)>,
);

/// Each table's identities (kind, column) and references (column, table, to).
fn paths(source: &SourceConfig) -> BTreeMap<String, Paths> {
    source
        .tables
        .iter()
        .map(|t| {
            let identities = t
                .identity
                .as_slice()
                .iter()
                .map(|i| (i.kind.clone(), i.column.clone()))
                .collect();
            let references = t
                .reference
                .as_slice()
                .iter()
                .map(|r| (r.column.clone(), r.table.clone(), r.to.clone()))
                .collect();
            (t.name.clone(), (identities, references))
        })
        .collect()
}

/// The rows of every table, as text, with the named columns left out.
fn rows_by_table(
    extraction: &support::Extraction,
    skip: &[(&str, &str)],
) -> BTreeMap<String, BTreeSet<Vec<Option<String>>>> {
    let started = extraction.started.as_ref().expect("a started event");
    started
        .tables
        .iter()
        .map(|t| {
            let keep: Vec<bool> = t
                .columns
                .iter()
                .map(|c| !skip.contains(&(t.table.as_str(), c.name.as_str())))
                .collect();
            let rows = extraction
                .rows(&t.table)
                .into_iter()
                .map(|r| {
                    r.iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(v, _)| support::value_text(v))
                        .collect()
                })
                .collect();
            (t.table.clone(), rows)
        })
        .collect()
}

#[tokio::test]
async fn the_demo_schema_drafts_the_hand_written_map_and_extracts_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    // Only the demo's schema: other tests of this binary add schemas of their own.
    let (drafted, printed) = discover(
        dir.path(),
        &demo_without_map(),
        "demo",
        &["--schema", "public"],
    );
    assert_no_values_beyond("the draft", &drafted, &demo_without_map());
    assert_no_values("the command's output", &printed);

    // A product's code and a ticket's subject: text with no evidence either way, which a
    // person decides.
    let drafted = decided(
        &drafted,
        &[("sku", "not_pii"), ("subject", "support.message")],
    );
    let hand = config(&config_text(""));
    let draft = config(&drafted);
    let hand_paths = paths(source(&hand, "demo"));
    let draft_paths = paths(source(&draft, "demo"));
    for (table, (identities, references)) in &hand_paths {
        let (drafted_identities, drafted_references) = draft_paths
            .get(table)
            .unwrap_or_else(|| panic!("the draft does not reach {table}:\n{drafted}"));
        assert_eq!(
            identities, drafted_identities,
            "{table}: the identities differ:\n{drafted}"
        );
        assert!(
            references.is_subset(drafted_references),
            "{table}: the draft lacks a reference of the hand-written map:\n{drafted}"
        );
    }
    // Beyond the hand-written map: the tickets' and legacy accounts' e-mail columns hold
    // customers' addresses, which the draft offers as links to check.
    let (_, ticket_refs) = &draft_paths["support_tickets"];
    assert!(ticket_refs.contains(&("requester_email".into(), "customers".into(), "email".into())));
    assert!(drafted.contains("inferred, check"), "{drafted}");
    // Every drafted table has an erase policy to check, so that the draft can erase at all.
    let demo = source(&draft, "demo");
    assert!(demo.tables.iter().all(|t| {
        t.erase
            .as_ref()
            .is_some_and(|e| e.action == dsr_connector::config::erasure::EraseAction::Delete)
    }));
    assert!(
        drafted.contains("# erase: proposed delete")
            && drafted.contains("need { action = \"retain\""),
        "{drafted}"
    );
    // Evidence for every column, and the rules the legacy table needs.
    assert!(
        drafted.contains("email (text): identity of kind email"),
        "{drafted}"
    );
    assert!(
        drafted.contains(
            r#"signup_date = { category = "not_pii", coerce = "date", formats = ["%d/%m/%Y", "%Y%m%d", "%m-%d-%y"] }"#
        ),
        "{drafted}"
    );
    assert!(
        drafted
            .contains(r#"last_login_epoch = { category = "not_pii", coerce = "epoch_seconds" }"#),
        "{drafted}"
    );
    assert!(drafted.contains("scan_json = true"), "{drafted}");
    assert!(
        drafted.contains("# loyalty_points (numeric): no evidence in the name or"),
        "{drafted}"
    );
    // The rest of the config is as it was.
    assert!(drafted.contains("[sources.identities.email]"), "{drafted}");
    assert!(drafted.starts_with("[server]"), "{drafted}");

    // One subject through both maps: the same rows, value for value. The legacy sign-up
    // date is read as London midnight by the hand-written map and as UTC by the draft (the
    // source's zone): that one column is compared by its rows only.
    let hand_server = TestServer::start(hand).await;
    let draft_server = TestServer::start(draft).await;
    for (kind, value) in [("email", "alice@example.com"), ("customer_id", "1")] {
        let by_hand = extract(&mut hand_server.client().await, request(kind, value)).await;
        let by_draft = extract(&mut draft_server.client().await, request(kind, value)).await;
        assert_eq!(by_hand.code(), tonic::Code::Ok, "{}", by_hand.message());
        assert_eq!(by_draft.code(), tonic::Code::Ok, "{}", by_draft.message());
        let skip = [("legacy_accounts", "signup_date")];
        let hand_rows = rows_by_table(&by_hand, &skip);
        let draft_rows = rows_by_table(&by_draft, &skip);
        for (table, rows) in &hand_rows {
            assert!(
                !rows.is_empty() || kind == "customer_id",
                "{table}: no rows"
            );
            assert_eq!(
                Some(rows),
                draft_rows.get(table),
                "{kind}: {table} streams other rows through the draft"
            );
        }
    }
    hand_server.stop().await.unwrap();
    draft_server.stop().await.unwrap();
}

/// A CRM schema nobody mapped: members (e-mail in mixed case, legacy dates, epoch
/// milliseconds, contact details nested in JSONB), messages linked to members by an e-mail
/// column without a foreign key, attachments with a foreign key to messages, and an audit
/// trail that nothing links to a person.
const CRM_SCHEMA: &str = r#"
CREATE SCHEMA crm;
CREATE TABLE crm.members (
    id            bigint PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    full_name     text NOT NULL,
    born          varchar(10),
    last_login_at bigint,
    contact       jsonb,
    ledger_code   text
);
CREATE TABLE crm.messages (
    id         bigint PRIMARY KEY,
    sender     text NOT NULL,
    body       text NOT NULL,
    sent_epoch bigint NOT NULL
);
CREATE INDEX messages_sender ON crm.messages (sender);
CREATE TABLE crm.attachments (
    id         bigint PRIMARY KEY,
    message_id bigint NOT NULL REFERENCES crm.messages (id),
    filename   text NOT NULL
);
CREATE TABLE crm.audit_trail (
    id     bigint PRIMARY KEY,
    action text NOT NULL,
    at     timestamptz NOT NULL
);
INSERT INTO crm.members VALUES
    (1, 'mina@whitby.example', 'Mina Harker', '25.05.1897', 1700000000000,
     '{"home": {"phone": "+44 1947 600100", "street": "Carfax Abbey"}}', 'ledger-77'),
    (2, 'Jonathan@Exeter.example', 'Jonathan Harker', '01.02.1890', 1700000100000,
     '{"work": {"email_address": "jonathan@office.example"}}', 'ledger-78'),
    (3, 'lucy@hillingham.example', 'Lucy Westenra', '12.12.1899', 1700000200000,
     '{"prefs": {"newsletter": true}}', 'ledger-79');
INSERT INTO crm.messages VALUES
    (10, 'mina@whitby.example', 'The ship arrived.', 1700000000),
    (11, 'mina@whitby.example', 'Come at once.', 1700000300),
    (12, 'lucy@hillingham.example', 'I feel weak.', 1700000600);
INSERT INTO crm.attachments VALUES (100, 10, 'log.txt'), (101, 12, 'diary.txt');
INSERT INTO crm.audit_trail VALUES (1, 'vacuum', now());
"#;

fn crm_config() -> String {
    let c = cluster();
    format!(
        r#"[server]
listen = "127.0.0.1:0"

[[sources]]
name = "crm"
host = "{}"
port = {}
database = "{}"
user = "postgres"
password_env = "DSR_DEMO_PASSWORD"
max_connections = 4
min_idle = 0
identity_kinds = ["email", "member_id"]
on_coercion_error = "reject_row"
"#,
        c.host(),
        c.port(),
        dsr_connector::demo::DATABASE
    )
}

async fn create_crm_schema() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        support::sql()
            .await
            .batch_execute(CRM_SCHEMA)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_schema_nobody_mapped_is_found_links_dates_epochs_and_nested_contacts() {
    create_crm_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let (drafted, printed) = discover(dir.path(), &crm_config(), "crm", &["--schema", "crm"]);
    assert_no_values("the draft", &drafted);
    assert_no_values("the command's output", &printed);
    assert!(
        drafted.contains("ledger_code = \"check\"") && drafted.contains("filename = \"check\""),
        "{drafted}"
    );
    let drafted = decided(
        &drafted,
        &[("filename", "not_pii"), ("ledger_code", "not_pii")],
    );

    let draft = config(&drafted);
    let crm = source(&draft, "crm");
    let found = paths(crm);
    let names: BTreeSet<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["crm.attachments", "crm.members", "crm.messages"]),
        "{drafted}"
    );
    let (members_ids, _) = &found["crm.members"];
    assert!(
        members_ids.contains(&("email".into(), "email".into())),
        "{drafted}"
    );
    assert!(
        members_ids.contains(&("member_id".into(), "id".into())),
        "{drafted}"
    );
    // The messages' sender holds members' addresses: an identity by its values, and a link
    // without a foreign key, marked for checking.
    let (message_ids, message_refs) = &found["crm.messages"];
    assert!(
        message_ids.contains(&("email".into(), "sender".into())),
        "{drafted}"
    );
    assert!(
        message_refs.contains(&("sender".into(), "crm.members".into(), "email".into())),
        "{drafted}"
    );
    assert!(
        drafted.contains("reference sender: inferred, check: 2 of 2 distinct sampled values"),
        "{drafted}"
    );
    let (_, attachment_refs) = &found["crm.attachments"];
    assert!(
        attachment_refs.contains(&("message_id".into(), "crm.messages".into(), "id".into())),
        "{drafted}"
    );
    // A member's address is stored in mixed case: the column is matched case-insensitively.
    assert!(
        drafted.contains(r#"{ kind = "email", column = "email", match = "case_insensitive" }"#),
        "{drafted}"
    );
    // Legacy dates, epochs by name and by value, nested contacts.
    assert!(
        drafted.contains(
            r#"born = { category = "not_pii", coerce = "date", formats = ["%d.%m.%Y"] }"#
        ),
        "{drafted}"
    );
    assert!(
        drafted
            .contains(r#"last_login_at = { category = "not_pii", coerce = "epoch_milliseconds" }"#),
        "{drafted}"
    );
    assert!(
        drafted.contains(r#"sent_epoch = { category = "not_pii", coerce = "epoch_seconds" }"#),
        "{drafted}"
    );
    assert!(drafted.contains("scan_json = true"), "{drafted}");
    assert!(
        drafted.contains("nested personal data in 2 of 3 sampled documents"),
        "{drafted}"
    );
    assert!(drafted.contains("full_name = \"name\""), "{drafted}");
    assert!(drafted.contains("ledger_code = \"not_pii\""), "{drafted}");
    // The audit trail is named with the reason, at the end.
    assert!(
        drafted.contains("#   crm.audit_trail: no column is an identity of kind email, member_id"),
        "{drafted}"
    );

    // The draft serves: Mina's messages and their attachment, through the inferred link and
    // the foreign key, by e-mail typed in another case.
    let server = TestServer::start(draft).await;
    let mut client = server.client().await;
    let mut req = request("email", "Mina@Whitby.example");
    req.source = "crm".into();
    let extraction = extract(&mut client, req).await;
    assert_eq!(
        extraction.code(),
        tonic::Code::Ok,
        "{}",
        extraction.message()
    );
    assert_eq!(extraction.rows("crm.members").len(), 1);
    assert_eq!(extraction.rows("crm.messages").len(), 2);
    assert_eq!(extraction.rows("crm.attachments").len(), 1);
    server.stop().await.unwrap();
}
