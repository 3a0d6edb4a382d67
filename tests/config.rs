//! Configuration: every bad config fails start-up with a message that names the key, secrets
//! never show in `Debug` or in error messages, and `check-config` reports both ways.

use std::io::Write;
use std::process::Command;

use dsr_connector::config::{Config, ConfigError};

const PASSWORD: &str = "pa55-w0rd-that-must-not-leak";
const KEY: &str = "subject-key-that-must-not-leak";

fn source(extra: &str, tables: &str) -> String {
    format!(
        r#"
[[sources]]
name = "shop"
host = "db.internal"
database = "shop"
user = "dsr_reader"
password_env = "SHOP_DB_PASSWORD"
identity_kinds = ["email"]
{extra}
{tables}
"#
    )
}

const TABLES: &str = r#"
[[sources.tables]]
name = "public.customers"
identity = { kind = "email", column = "email" }
columns = { id = "not_pii", email = "contact.email" }

[[sources.tables]]
name = "orders"
reference = { column = "customer_id", table = "public.customers", to = "id", reach = "owned" }
columns = { id = "not_pii", customer_id = "identifier.customer_id" }
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "SHOP_DB_PASSWORD" => Some(PASSWORD.into()),
        "DSR_SUBJECT_KEY" => Some(KEY.into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, env)
}

fn error(text: &str) -> String {
    let e = load(text).expect_err("this config must be rejected");
    let message = e.to_string();
    assert!(
        !message.contains(PASSWORD) && !message.contains(KEY),
        "{message}"
    );
    message
}

#[test]
fn a_good_config_loads_with_defaults() {
    let config = load(&source("", TABLES)).unwrap();
    let s = &config.sources[0];
    assert_eq!(s.port(), 5432);
    assert_eq!(s.max_connections, 10);
    assert_eq!(s.min_idle, 2);
    assert_eq!(s.connect_timeout, std::time::Duration::from_secs(5));
    assert_eq!(s.application_name, "dsr-connector");
    assert_eq!(s.ssl_mode, dsr_connector::config::SslMode::Prefer);
    assert_eq!(config.server.default_batch_size, 500);
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:50051");
}

#[test]
fn debug_output_holds_no_secret() {
    let config = load(&source("", TABLES)).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(
        debug.contains("SHOP_DB_PASSWORD"),
        "the env var name may show"
    );
    let pretty = format!("{config:#?}");
    assert!(!pretty.contains(PASSWORD) && !pretty.contains(KEY));
}

#[test]
fn unknown_keys_are_named() {
    let message = error(&source("hots = \"x\"", TABLES));
    assert!(message.contains("hots"), "{message}");
    let message = error(&format!(
        "[server]\nlisten_addr = \"x\"\n{}",
        source("", TABLES)
    ));
    assert!(message.contains("listen_addr"), "{message}");
    let message = error(&source(
        "",
        &TABLES.replace("columns = { id", "colums = { id"),
    ));
    assert!(message.contains("colums"), "{message}");
}

#[test]
fn a_missing_password_env_var_is_named() {
    let text = source("", TABLES).replace("SHOP_DB_PASSWORD", "NOT_SET_ANYWHERE");
    let message = error(&text);
    assert!(message.contains("sources[0].password_env"), "{message}");
    assert!(message.contains("NOT_SET_ANYWHERE"), "{message}");
}

#[test]
fn a_missing_subject_key_is_named() {
    let e = Config::from_toml_str(&source("", TABLES), |n| {
        (n == "SHOP_DB_PASSWORD").then(|| PASSWORD.to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("server.subject_key_env") && e.contains("DSR_SUBJECT_KEY"),
        "{e}"
    );
}

#[test]
fn inline_passwords_are_refused_without_echoing_them() {
    let text = source("password = \"hunter2-inline\"", TABLES);
    let message = error(&text);
    assert!(message.contains("sources[0].password"), "{message}");
    assert!(message.contains("password_env"), "{message}");
    assert!(!message.contains("hunter2-inline"), "{message}");
}

#[test]
fn bad_values_are_named() {
    for (extra, key) in [
        ("ssl_mode = \"sometimes\"", "ssl_mode"),
        (
            "ssl_mode = \"verify-full\"",
            "sources[0].root_cert: required when ssl_mode is verify-ca or verify-full",
        ),
        // A MySQL source is told its own mode names.
        (
            "kind = \"mysql\"\nssl_mode = \"verify_ca\"",
            "sources[0].root_cert: required when ssl_mode is verify_ca or verify_identity",
        ),
        (
            "kind = \"mariadb\"\nssl_mode = \"verify_identity\"",
            "verify_ca or verify_identity",
        ),
        ("max_connections = 0", "sources[0].max_connections"),
        ("min_idle = 50", "sources[0].min_idle"),
        ("connect_timeout = \"soon\"", "connect_timeout"),
        ("port = 70000", "port"),
        // Durations that would overflow a clock reading are refused, not a panic later.
        (
            "connect_timeout = \"100years\"",
            "sources[0].connect_timeout",
        ),
        ("schema_refresh = \"100years\"", "sources[0].schema_refresh"),
        ("max_per_caller = 11", "sources[0].max_per_caller"),
        ("max_per_caller = 0", "sources[0].max_per_caller"),
    ] {
        let message = error(&source(extra, TABLES));
        assert!(message.contains(key), "{extra}: {message}");
    }
    let message = error(&format!(
        "[server]\nmax_batch_size = 10\ndefault_batch_size = 20\n{}",
        source("", TABLES)
    ));
    assert!(message.contains("server.default_batch_size"), "{message}");
    for (server, key) in [
        ("max_deadline = \"100years\"", "server.max_deadline"),
        ("send_stall_timeout = \"0s\"", "server.send_stall_timeout"),
        ("shutdown_grace = \"100years\"", "server.shutdown_grace"),
    ] {
        let message = error(&format!("[server]\n{server}\n{}", source("", TABLES)));
        assert!(message.contains(key), "{server}: {message}");
    }
}

#[test]
fn record_stores_name_what_they_lack() {
    for (server, key) in [
        (
            "[server.audit]\n",
            "server.audit.path: required for store = \"file\"",
        ),
        (
            "[server.audit]\nstore = \"control\"\n",
            "server.audit.store: \"control\" needs a [server.control] database",
        ),
        (
            "[server.dead_letters]\nstore = \"control\"\npath = \"x\"\n",
            "server.dead_letters.path: not used with store = \"control\"",
        ),
        (
            "[server.control]\nurl_env = \"NOT_SET_ANYWHERE\"\n",
            "server.control.url_env: environment variable NOT_SET_ANYWHERE is not set",
        ),
    ] {
        let message = error(&format!("{server}\n{}", source("", TABLES)));
        assert!(message.contains(key), "{server}: {message}");
    }
}

#[test]
fn client_certificate_callers_are_checked_like_tokens() {
    let text = format!(
        "[server]\n\n[[server.clients]]\nname = \"orchestrator\"\ncommon_name = \"\"\n\
         sources = [\"nowhere\"]\nrpcs = [\"Extract\", \"Delete\"]\n\n{}",
        source("", TABLES)
    );
    let message = error(&text);
    for expected in [
        "server.clients[0].sources: unknown source 'nowhere'",
        "server.clients[0].rpcs: unknown RPC 'Delete'",
        "server.clients[0].common_name",
        "server.tls.client_ca_file",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
}

#[test]
fn data_map_mistakes_are_named() {
    let cases = [
        (
            TABLES.replace(
                "table = \"public.customers\"",
                "table = \"public.custmers\"",
            ),
            "sources[0].tables.orders.reference.table",
        ),
        (
            TABLES.replace(
                "identity = { kind = \"email\", column = \"email\" }",
                "identity = { kind = \"email\", column = \"mail\" }",
            ),
            "sources[0].tables.public.customers.identity.column",
        ),
        (
            TABLES.replace("kind = \"email\"", "kind = \"phone\""),
            "'phone' is not in sources[0].identity_kinds",
        ),
        (
            TABLES.replace("to = \"id\"", "to = \"uid\""),
            "sources[0].tables.orders.reference.to",
        ),
        (
            TABLES.replace("email = \"contact.email\"", "email = \"  \""),
            "sources[0].tables.public.customers.columns.email",
        ),
        (
            format!(
                "{TABLES}\n[[sources.tables]]\nname = \"orders\"\nidentity = {{ kind = \"email\", column = \"e\" }}\ncolumns = {{ e = \"x\" }}\n"
            ),
            "mapped twice",
        ),
        (
            format!(
                "{TABLES}\n[[sources.tables]]\nname = \"a.b.c\"\nidentity = {{ kind = \"email\", column = \"e\" }}\ncolumns = {{ e = \"x\" }}\n"
            ),
            "sources[0].tables[2].name",
        ),
        (
            format!("{TABLES}\n[[sources.tables]]\nname = \"lonely\"\ncolumns = {{ e = \"x\" }}\n"),
            "no subject can reach it",
        ),
    ];
    for (tables, key) in cases {
        let message = error(&source("", &tables));
        assert!(message.contains(key), "expected '{key}' in: {message}");
    }
}

/// The reach rule, checked before any catalog is read: every reference says which rows it
/// reaches, no followed reference leads into a person table, and a looked-up row is never
/// deleted.
#[test]
fn reach_rules_are_named() {
    let shop = r#"
[[sources.tables]]
name = "customers"
identity = { kind = "email", column = "email" }
reference = [
    { column = "address_id", table = "addresses", to = "id", reach = "lookup" },
    { column = "rep_id", table = "staff", to = "id", reach = "none" },
]
columns = { id = "not_pii", email = "contact.email", address_id = "not_pii", rep_id = "not_pii" }

[[sources.tables]]
name = "addresses"
columns = { id = "not_pii", street = "address" }
erase = { action = "mask", mask = { street = "redact" } }

[[sources.tables]]
name = "staff"
identity = { kind = "email", column = "email" }
columns = { id = "not_pii", email = "contact.email" }

[[sources.tables]]
name = "rentals"
reference = [
    { column = "customer_id", table = "customers", to = "id", reach = "owned" },
    { column = "staff_id", table = "staff", to = "id", reach = "none" },
]
columns = { id = "not_pii", customer_id = "not_pii", staff_id = "not_pii" }
"#;
    // The shapes of a rental shop, declared safely, load.
    let config = load(&source("", shop)).unwrap_or_else(|e| panic!("{e}"));
    let src = &config.sources[0];
    let name = |n: &str| dsr_connector::config::QualifiedName::parse(n).unwrap();
    assert!(src.is_person_table(&name("customers")));
    assert!(src.is_person_table(&name("staff")));
    assert!(
        !src.is_person_table(&name("addresses")),
        "looked up, no identity"
    );
    assert!(!src.is_person_table(&name("rentals")));

    let cases = [
        (
            shop.replace(", reach = \"owned\"", ""),
            "sources[0].tables.rentals.reference (customer_id -> customers.id): say which rows \
             it reaches: reach = \"owned\"",
        ),
        (
            // A support rep's customers: a person table reached from another person's row.
            shop.replace(
                "{ column = \"rep_id\", table = \"staff\", to = \"id\", reach = \"none\" }",
                "{ column = \"rep_id\", table = \"staff\", to = \"id\", reach = \"owned\" }",
            ),
            "reach = \"owned\" would reach rows of 'customers', a person table (it has an \
             identity column, or person_tables names it), through another \
             table's row (staff.id <- customers.rep_id)",
        ),
        (
            // The staff member who handled a rental is another person.
            shop.replace(
                "{ column = \"staff_id\", table = \"staff\", to = \"id\", reach = \"none\" }",
                "{ column = \"staff_id\", table = \"staff\", to = \"id\", reach = \"lookup\" }",
            ),
            "reach = \"lookup\" would read the row of 'staff', a person table",
        ),
        (
            shop.replace(
                "erase = { action = \"mask\", mask = { street = \"redact\" } }",
                "erase = { action = \"delete\" }",
            ),
            "sources[0].tables.addresses.erase: its rows are reached by lookup",
        ),
        (
            shop.replace("reach = \"none\" }", "reach = \"sideways\" }"),
            "sideways",
        ),
    ];
    for (tables, expected) in cases {
        let message = error(&source("", &tables));
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {message}"
        );
    }
    // A table the map names as a person table is one too, whatever its columns.
    let named = source("person_tables = [\"addresses\"]", shop);
    let message = error(&named);
    assert!(
        message.contains("reach = \"lookup\" would read the row of 'addresses', a person table"),
        "{message}"
    );
    // A table with an identity column is not reached through another table's row.
    let message = error(&source(
        "",
        &shop.replace(
            "name = \"rentals\"\n",
            "name = \"rentals\"\nidentity = { kind = \"email\", column = \"staff_id\" }\n",
        ),
    ));
    assert!(
        message
            .contains("would reach rows of 'rentals', a person table (it has an identity column"),
        "{message}"
    );
}

#[test]
fn reference_cycles_are_refused() {
    let tables = r#"
[[sources.tables]]
name = "a"
identity = { kind = "email", column = "email" }
reference = { column = "b_id", table = "b", to = "id", reach = "owned" }
columns = { id = "not_pii", email = "contact.email", b_id = "not_pii" }

[[sources.tables]]
name = "b"
reference = { column = "a_id", table = "a", to = "id", reach = "owned" }
columns = { id = "not_pii", a_id = "not_pii" }
"#;
    let message = error(&source("", tables));
    assert!(message.contains("cycle"), "{message}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = source(
        "max_connections = 0",
        &TABLES.replace("to = \"id\"", "to = \"uid\""),
    )
    .replace("SHOP_DB_PASSWORD", "NOT_SET_ANYWHERE");
    // Secrets are resolved first; fix that, then both data problems show together.
    assert!(error(&text).contains("NOT_SET_ANYWHERE"));
    let text = source(
        "max_connections = 0",
        &TABLES.replace("to = \"id\"", "to = \"uid\""),
    );
    let message = error(&text);
    assert!(
        message.contains("max_connections") && message.contains("reference.to"),
        "{message}"
    );
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn check_config(file: &std::path::Path, envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsr-connector"));
    cmd.arg("check-config")
        .arg(file)
        .env_remove("DSR_SUBJECT_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn check_config_command_reports_both_ways() {
    let file = write_config(&source("", TABLES));
    let ok = check_config(
        file.path(),
        &[("SHOP_DB_PASSWORD", PASSWORD), ("DSR_SUBJECT_KEY", KEY)],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (1 source(s), 2 mapped table(s))"));

    let missing = check_config(file.path(), &[("DSR_SUBJECT_KEY", KEY)]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("SHOP_DB_PASSWORD"), "{stderr}");

    // Environment overrides apply, and a bad one is named.
    let bad = check_config(
        file.path(),
        &[
            ("SHOP_DB_PASSWORD", PASSWORD),
            ("DSR_SUBJECT_KEY", KEY),
            ("DSR_CONNECTOR_SERVER__LISTEN", "not-an-address"),
        ],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.to_lowercase().contains("server.listen"), "{stderr}");
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains(KEY),
        "{stderr}"
    );

    let nowhere = check_config(std::path::Path::new("does/not/exist.toml"), &[]);
    assert!(!nowhere.status.success());
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("does/not/exist.toml"));
}

#[test]
fn password_files_are_read_and_trimmed() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret, "{PASSWORD}").unwrap();
    let text = source("", TABLES).replace(
        "password_env = \"SHOP_DB_PASSWORD\"",
        &format!("password_file = {:?}", secret.path().display().to_string()),
    );
    let config = load(&text).unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(
        config.sources[0].password.as_ref().unwrap().expose_secret(),
        PASSWORD
    );

    let text = source("", TABLES).replace(
        "password_env = \"SHOP_DB_PASSWORD\"",
        "password_file = \"/nonexistent/secret\"",
    );
    let message = error(&text);
    assert!(
        message.contains("sources[0].password_file") && message.contains("/nonexistent/secret")
    );
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
    let digest = "0".repeat(64);
    let env = [
        ("SHOP_DB_PASSWORD", PASSWORD),
        ("DSR_SUBJECT_KEY", KEY),
        ("DSR_ORCHESTRATOR_TOKEN_SHA256", digest.as_str()),
        ("DSR_AUDIT_KEY", KEY),
    ];
    let out = check_config(&path, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("warning"),
        "the example records calls in an audit log"
    );
    // As deployed: on all interfaces, which the tokens make acceptable.
    let mut deployed = env.to_vec();
    deployed.push(("DSR_CONNECTOR_SERVER__LISTEN", "0.0.0.0:50051"));
    let out = check_config(&path, &deployed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn descriptions_are_bounded_and_named_when_wrong() {
    let long = "x".repeat(501);
    let tables = TABLES.replace(
        "name = \"orders\"",
        &format!("name = \"orders\"\ndescription = \"{long}\""),
    );
    let message = error(&source("", &tables));
    assert!(
        message.contains("sources[0].tables.orders.description: longer than 500"),
        "{message}"
    );
    let category =
        "[[classification.categories]]\nname = \"loyalty\"\ndescription = \"a\\u0007b\"\n";
    let message = error(&format!("{category}{}", source("", TABLES)));
    assert!(
        message.contains("classification.categories[0].description: control characters"),
        "{message}"
    );
    let fine = "[[classification.categories]]\nname = \"loyalty\"\ndescription = \"Points.\\nAnd more.\"\n";
    load(&format!("{fine}{}", source("", TABLES))).expect("a described category loads");
}

/// The configuration page's example (docs/configuration.md) loads as written (its
/// certificate path replaced by a file that exists), erase policies and identity guard
/// included.
#[test]
fn the_readme_configuration_example_loads() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let block = page
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the configuration page opens with a toml block");
    let ca = tempfile::NamedTempFile::new().unwrap();
    let text = block.replace("/etc/dsr/shop-ca.pem", &ca.path().display().to_string());
    let config = Config::from_toml_str(&text, |var| match var {
        "SHOP_DB_PASSWORD" => Some(PASSWORD.to_owned()),
        "DSR_SUBJECT_KEY" => Some(KEY.to_owned()),
        "DSR_ORCHESTRATOR_TOKEN_SHA256" => Some("ab".repeat(32)),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("the README's configuration example: {e}"));
    let shop = &config.sources[0];
    assert_eq!(shop.max_identity_rows, 1);
    assert!(shop.erasure.require_preview);
    assert!(shop.tables.iter().all(|t| t.erase.is_some()));

    // Each commented setting, uncommented as a reader would, still parses: it may contradict
    // another setting (a check names that), but is never a TOML error. A commented table
    // (`# [server.tls]` and the lines under it) is uncommented whole.
    let lines: Vec<&str> = text.lines().collect();
    let setting = |line: &str| -> Option<String> {
        let rest = line.strip_prefix("# ")?;
        let header = rest.starts_with('[');
        let key = rest.split(" = ").next().unwrap_or_default();
        (header || (rest.contains(" = ") && !key.contains(' '))).then(|| rest.to_owned())
    };
    let mut n = 0;
    while n < lines.len() {
        let Some(first) = setting(lines[n]) else {
            n += 1;
            continue;
        };
        let mut group = vec![n];
        if first.starts_with('[') {
            while group.last().unwrap() + 1 < lines.len()
                && setting(lines[group.last().unwrap() + 1]).is_some_and(|s| !s.starts_with('['))
            {
                group.push(group.last().unwrap() + 1);
            }
        }
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for &i in &group {
            edited[i] = setting(lines[i]).unwrap();
        }
        if let Err(dsr_connector::config::ConfigError::Parse(e)) =
            Config::from_toml_str(&edited.join("\n"), |_| Some("x".repeat(64)))
        {
            panic!("the README's commented setting `{first}` does not parse: {e}");
        }
        n = group.last().unwrap() + 1;
    }
}

/// A kept row must stay answerable: a mask that its column's coercion rule cannot read would
/// fail every later access request for the row.
#[test]
fn a_mask_that_the_columns_rule_cannot_read_is_refused() {
    let tables = r#"
[[sources.tables]]
name = "legacy"
identity = { kind = "email", column = "email" }
columns = { email = "contact.email", signup = { category = "birth_date", coerce = "date", formats = ["%d/%m/%Y"] }, seen = { category = "identifier", coerce = "epoch_seconds" } }
erase = { action = "mask", mask = { email = "redact", signup = "redact", seen = "pseudonym" } }
"#;
    let message = error(&source("", tables));
    for expected in [
        "sources[0].tables.legacy.erase.mask.signup: \"redact\" writes text that the column's \
         rule (coerce = \"date\") cannot read",
        "sources[0].tables.legacy.erase.mask.seen: \"pseudonym\" writes text that the column's \
         rule (coerce = \"epoch_seconds\") cannot read",
    ] {
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {message}"
        );
    }
    let nulls = tables
        .replace("signup = \"redact\"", "signup = \"null\"")
        .replace("seen = \"pseudonym\"", "seen = \"null\"");
    load(&source("", &nulls)).unwrap_or_else(|e| panic!("{e}"));
}

/// A retained table that an erasure leaves with no path from the identity: its rows are still
/// the person's, and a later access request could not find them. Read from the map alone.
#[test]
fn retained_rows_an_erasure_would_cut_off_are_found_from_the_map() {
    let shop = |customers_erase: &str, invoices_extra: &str| {
        format!(
            r#"
[[sources.tables]]
name = "customers"
identity = {{ kind = "email", column = "email" }}
reference = {{ column = "address_id", table = "addresses", to = "id", reach = "lookup" }}
columns = {{ id = "not_pii", email = "contact.email", address_id = "not_pii" }}
erase = {customers_erase}

[[sources.tables]]
name = "addresses"
columns = {{ id = "not_pii", street = "address" }}
erase = {{ action = "retain", reason = "delivery records" }}

[[sources.tables]]
name = "invoices"
reference = {{ column = "customer_id", table = "customers", to = "id", reach = "owned" }}
columns = {{ id = "not_pii", customer_id = "not_pii", total = "financial.account" {invoices_extra} }}
erase = {{ action = "retain", reason = "tax law" }}

[[sources.tables]]
name = "lines"
reference = {{ column = "invoice_id", table = "invoices", to = "id", reach = "owned" }}
columns = {{ id = "not_pii", invoice_id = "not_pii" }}
erase = {{ action = "retain", reason = "tax law" }}
"#
        )
    };
    let cut_off = |text: String| -> Vec<(String, Vec<String>)> {
        let config = load(&source("", &text)).unwrap_or_else(|e| panic!("{e}"));
        config.sources[0]
            .kept_unreachable_after_erasure()
            .into_iter()
            .map(|k| (k.table, k.broken_by))
            .collect()
    };
    // The customer deleted: its address and invoices are cut off, and the invoices' lines
    // with them.
    assert_eq!(
        cut_off(shop(r#"{ action = "delete" }"#, "")),
        [
            ("addresses".to_owned(), vec!["customers".to_owned()]),
            ("invoices".to_owned(), vec!["customers".to_owned()]),
            (
                "lines".to_owned(),
                vec!["invoices (itself no longer reached)".to_owned()]
            ),
        ]
    );
    // Masked with its key kept: every path stays.
    assert_eq!(
        cut_off(shop(
            r#"{ action = "mask", mask = { email = { retain = "the key of kept rows" }, id = { retain = "k" }, address_id = { retain = "k" } } }"#,
            ""
        )),
        []
    );
    // Masking the key the invoices are found by cuts them (and their lines) off; an identity
    // column of their own keeps them reachable.
    let masked_key = r#"{ action = "mask", mask = { id = "null", email = { retain = "k" }, address_id = { retain = "k" } } }"#;
    assert_eq!(
        cut_off(shop(masked_key, ""))
            .into_iter()
            .map(|(t, by)| (t, by.join(", ")))
            .collect::<Vec<_>>(),
        [
            ("invoices".to_owned(), "customers.id".to_owned()),
            (
                "lines".to_owned(),
                "invoices (itself no longer reached)".to_owned()
            ),
        ]
    );
    let own_identity = shop(masked_key, ", email = \"contact.email\"")
        .replace(
            "name = \"invoices\"\n",
            "name = \"invoices\"\nidentity = { kind = \"email\", column = \"email\" }\n",
        )
        .replace(
            "table = \"customers\", to = \"id\", reach = \"owned\"",
            "table = \"customers\", to = \"id\", reach = \"none\"",
        );
    assert_eq!(cut_off(own_identity), []);
}

#[test]
fn segments_and_retention_are_checked_and_named() {
    let records = |audit: &str, letters: &str| {
        format!(
            "[server.audit]\npath = \"audit.log\"\n{audit}\n\n\
             [server.dead_letters]\npath = \"letters.jsonl\"\n{letters}\n{}",
            source("", TABLES)
        )
    };
    // The audit key is read from the default variable.
    let load = |text: &str| {
        Config::from_toml_str(text, |name| match name {
            "DSR_AUDIT_KEY" => Some("audit-key-0123456789abcdef".into()),
            other => env(other),
        })
    };
    let config = load(&records("", "")).unwrap();
    let audit = config.server.audit.as_ref().unwrap();
    assert_eq!(audit.segment_bytes, 256 * 1024 * 1024);
    let letters = config.server.dead_letters.as_ref().unwrap();
    assert_eq!(
        (letters.segment_bytes, letters.retention),
        (64 * 1024 * 1024, None)
    );
    let config = load(&records(
        "segment_bytes = 0\nsegment_age = \"7d\"",
        "retention = \"400d\"",
    ))
    .unwrap();
    assert_eq!(
        config.server.audit.as_ref().unwrap().segment_age,
        Some(std::time::Duration::from_secs(7 * 86400))
    );
    let message = load(&records(
        "segment_bytes = 100",
        "segment_age = \"0s\"\nretention = \"1s\"",
    ))
    .unwrap_err()
    .to_string();
    for key in [
        "server.audit.segment_bytes",
        "server.dead_letters.segment_age",
        "server.dead_letters.retention",
    ] {
        assert!(message.contains(key), "{key}: {message}");
    }
}
