//! The interceptor stack: bearer tokens and their scopes, open health, request ids, and the
//! deadline policy. Every call goes through a real server and a real tonic client.

mod support;

use dsr_connector::config::Config;
use dsr_connector::demo;
use dsr_connector::pb::ValidateRequest;
use support::{TestServer, config_text, config_with_tokens, request, with_token};
use tonic::Code;
use tonic::metadata::MetadataValue;

const ORCHESTRATOR: &str = "token-of-the-orchestrator-0123456789";
const AUDITOR: &str = "token-of-the-auditor-0123456789";

/// The demo config with two callers: the orchestrator may extract from `demo`; the auditor may
/// only validate, any source.
fn token_config(extra_server: &str) -> Config {
    config_with_tokens(
        &config_text("").replace("[server]\n", &format!("[server]\n{extra_server}\n")),
        &[
            ("orchestrator", ORCHESTRATOR, "sources = [\"demo\"]"),
            (
                "auditor",
                AUDITOR,
                "sources = [\"*\"]\nrpcs = [\"Validate\"]",
            ),
        ],
    )
}

async fn extract_code(
    server: &TestServer,
    request: tonic::Request<dsr_connector::pb::ExtractRequest>,
) -> (Code, String) {
    let (code, message, _) = extract_status(server, request).await;
    (code, message)
}

/// The call's code, message, and the reason of its ErrorInfo ("" when OK).
async fn extract_status(
    server: &TestServer,
    request: tonic::Request<dsr_connector::pb::ExtractRequest>,
) -> (Code, String, String) {
    use tonic_types::StatusExt;
    let ended = |status: tonic::Status| {
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
        (status.code(), status.message().to_owned(), reason)
    };
    let mut client = server.client().await;
    match client.extract(request).await {
        Err(status) => ended(status),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return (Code::Ok, String::new(), String::new()),
                    Err(status) => return ended(status),
                }
            }
        }
    }
}

#[tokio::test]
async fn tokens_and_scopes_decide_who_may_call_what() {
    let server = TestServer::start(token_config("")).await;
    let alice = || request("email", "alice@example.com");

    let (code, message, reason) = extract_status(&server, tonic::Request::new(alice())).await;
    assert_eq!(
        (code, reason.as_str()),
        (Code::Unauthenticated, "MISSING_TOKEN")
    );
    assert!(message.contains("Bearer"), "{message}");

    let (code, message, reason) =
        extract_status(&server, with_token(alice(), "not-a-known-token")).await;
    assert_eq!(
        (code, reason.as_str()),
        (Code::Unauthenticated, "UNKNOWN_TOKEN")
    );
    assert!(
        !message.contains("not-a-known-token"),
        "the token is not echoed: {message}"
    );

    let mut basic = tonic::Request::new(alice());
    basic
        .metadata_mut()
        .insert("authorization", MetadataValue::from_static("Basic abc"));
    assert_eq!(extract_code(&server, basic).await.0, Code::Unauthenticated);

    assert_eq!(
        extract_code(&server, with_token(alice(), ORCHESTRATOR))
            .await
            .0,
        Code::Ok
    );

    // The auditor may validate but not extract.
    let (code, message) = extract_code(&server, with_token(alice(), AUDITOR)).await;
    assert_eq!(code, Code::PermissionDenied);
    assert!(
        message.contains("'auditor'") && message.contains("Extract"),
        "{message}"
    );
    let mut client = server.client().await;
    let validation = client
        .validate(with_token(
            ValidateRequest {
                source: "demo".into(),
                ..Default::default()
            },
            AUDITOR,
        ))
        .await;
    assert!(validation.is_ok(), "{validation:?}");
    let denied = client
        .validate(with_token(
            ValidateRequest {
                source: "demo".into(),
                ..Default::default()
            },
            "nope",
        ))
        .await;
    assert_eq!(denied.err().unwrap().code(), Code::Unauthenticated);

    // Health stays open for probes.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(serving.is_ok(), "{serving:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_source_outside_the_scope_is_permission_denied() {
    // The orchestrator's scope is ["demo"]; a second source it may not read.
    let extra = config_text("");
    let second = extra[extra.find("[[sources]]").unwrap()..].replacen(
        "name = \"demo\"",
        "name = \"other\"",
        1,
    );
    let text = format!("{}\n{second}", config_text(""));
    let config = config_with_tokens(
        &text,
        &[("orchestrator", ORCHESTRATOR, "sources = [\"demo\"]")],
    );
    let server = TestServer::start(config).await;
    let mut other = request("email", "alice@example.com");
    other.source = "other".into();
    let (code, message) = extract_code(&server, with_token(other, ORCHESTRATOR)).await;
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("'other'"), "{message}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = TestServer::demo().await;
    let mut client = server.client().await;
    let mut req = tonic::Request::new(request("email", "alice@example.com"));
    req.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("dsr-4242"));
    let response = client.extract(req).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "dsr-4242");

    let response = client
        .extract(request("email", "alice@example.com"))
        .await
        .unwrap();
    let generated = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    // Errors carry it too.
    let mut req = tonic::Request::new(request("email", ""));
    req.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("dsr-bad"));
    let status = client.extract(req).await.err().unwrap();
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "dsr-bad");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_required_deadline_must_be_sent() {
    let server = TestServer::start(token_config("require_deadline = true")).await;
    let (code, message) = extract_code(
        &server,
        with_token(request("email", "alice@example.com"), ORCHESTRATOR),
    )
    .await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("deadline"), "{message}");
    let mut req = with_token(request("email", "alice@example.com"), ORCHESTRATOR);
    req.set_timeout(std::time::Duration::from_secs(30));
    assert_eq!(extract_code(&server, req).await.0, Code::Ok);
    server.stop().await.unwrap();
}

#[test]
fn no_auth_on_a_public_address_is_refused_unless_explicit() {
    let public = config_text("").replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:50051\"");
    let cluster = support::cluster();
    let env = |name: &str| match name {
        demo::PASSWORD_ENV => Some(cluster.password().to_owned()),
        "DSR_SUBJECT_KEY" => Some(support::SUBJECT_KEY.to_owned()),
        _ => None,
    };
    let error = Config::from_toml_str(&public, env).unwrap_err().to_string();
    assert!(
        error.contains("server.auth") && error.contains("0.0.0.0:50051"),
        "{error}"
    );
    let explicit = public.replace("[server]\n", "[server]\nauth = \"none\"\n");
    // An unauthenticated caller may erase only on loopback.
    let error = Config::from_toml_str(&explicit, env)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "server.anonymous_erase: an unauthenticated caller may erase only on a \
                        loopback listener, and this one is 0.0.0.0:50051"
        ),
        "{error}"
    );
    let explicit = explicit.replace("anonymous_erase = true\n", "");
    assert!(Config::from_toml_str(&explicit, env).is_ok());
    let empty_tokens = config_text("").replace("[server]\n", "[server]\nauth = \"tokens\"\n");
    let error = Config::from_toml_str(&empty_tokens, env)
        .unwrap_err()
        .to_string();
    assert!(error.contains("server.auth"), "{error}");
}

#[tokio::test]
async fn a_dry_run_for_a_subject_needs_the_extract_scope() {
    let server = TestServer::start(token_config("")).await;
    let mut client = server.client().await;
    let dry_run = || ValidateRequest {
        source: "demo".into(),
        subject: Some(dsr_connector::pb::Identity {
            kind: "email".into(),
            value: "alice@example.com".into(),
        }),
        ..Default::default()
    };
    // A Validate-only caller may check the schema, but may not ask about a person.
    let denied = client.validate(with_token(dry_run(), AUDITOR)).await;
    let Err(status) = denied else {
        panic!("the dry run is refused")
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("'auditor'") && status.message().contains("Extract"),
        "{}",
        status.message()
    );
    // A caller with Extract and Validate may.
    let allowed = client.validate(with_token(dry_run(), ORCHESTRATOR)).await;
    let mut stream = allowed.expect("the orchestrator may dry-run").into_inner();
    let (mut verdict, mut counted) = (None, 0);
    while let Some(message) = stream.message().await.unwrap() {
        match message.event {
            Some(dsr_connector::pb::validate_response::Event::Verdict(v)) => verdict = Some(v),
            Some(dsr_connector::pb::validate_response::Event::Table(t)) => counted += t.row_count,
            None => {}
        }
    }
    assert!(verdict.is_some(), "the dry run ends with a verdict");
    assert_eq!(counted, 18, "the dry run counted alice's rows");
    server.stop().await.unwrap();
}

/// Reads a whole Extract stream: its final code and message.
async fn drain(
    response: Result<
        tonic::Response<tonic::Streaming<dsr_connector::pb::ExtractResponse>>,
        tonic::Status,
    >,
) -> (Code, String) {
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return (status.code(), status.message().to_owned()),
    };
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return (Code::Ok, String::new()),
            Err(status) => return (status.code(), status.message().to_owned()),
        }
    }
}

/// One caller opens 3,000 Extract streams at once (on 30 connections) against the real binary.
/// It gets at most its share of the pool; the calls beyond are refused as busy, not queued
/// without end; another caller is served meanwhile; and the server's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_streams_from_one_caller_leave_room_for_another() {
    let text = support::with_server_block(
        &config_text(""),
        "[[server.tokens]]\nname = \"orchestrator\"\nsha256_env = \"TOKEN_SHA_0\"\n\
         sources = [\"demo\"]\n\n[[server.tokens]]\nname = \"other\"\n\
         sha256_env = \"TOKEN_SHA_1\"\nsources = [\"demo\"]\n",
    );
    const OTHER: &str = "token-of-another-team-0123456789";
    let (first, second) = (support::digest(ORCHESTRATOR), support::digest(OTHER));
    let server = support::ServeProcess::start_with(
        &text,
        &[
            ("TOKEN_SHA_0", first.as_str()),
            ("TOKEN_SHA_1", second.as_str()),
        ],
    )
    .await;
    let mut channels = Vec::new();
    for _ in 0..30 {
        channels.push(server.client().await);
    }
    let flood: Vec<_> = (0..3_000)
        .map(|i| {
            let mut client = channels[i % channels.len()].clone();
            tokio::spawn(async move {
                let asked = with_token(request("email", "alice@example.com"), ORCHESTRATOR);
                drain(client.extract(asked).await).await
            })
        })
        .collect();
    // The other caller, while the flood runs.
    let other = {
        let mut client = server.client().await;
        let mut asked = with_token(request("email", "bob@example.com"), OTHER);
        asked.set_timeout(std::time::Duration::from_secs(60));
        drain(client.extract(asked).await).await.0
    };
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for call in flood {
        let (code, message) = call.await.unwrap();
        assert!(
            matches!(code, Code::Ok | Code::ResourceExhausted),
            "{code:?}: {message}"
        );
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }
    let peak_kib = server.peak_rss_kib();
    println!(
        "3,000 streams from one caller: {codes:?}; the other caller: {other:?}; \
         peak RSS {} MiB",
        peak_kib / 1024
    );
    assert_eq!(other, Code::Ok, "the other caller was not served");
    assert!(codes.get("Ok").copied().unwrap_or(0) > 0);
    assert!(peak_kib < 96 * 1024, "peak RSS {} MiB", peak_kib / 1024);
    let (status, _) = server.terminate().await;
    assert!(status.success(), "{status}");
}

/// Without authentication anyone may read, but an erasure, which cannot be undone, only
/// where `anonymous_erase` says so (the demo, on loopback).
#[tokio::test]
async fn an_anonymous_caller_erases_only_where_the_server_says_so() {
    let erase = |dry_run| dsr_connector::pb::EraseRequest {
        source: "demo".into(),
        subject: Some(dsr_connector::pb::Identity {
            kind: "email".into(),
            value: "bob@example.com".into(),
        }),
        dry_run,
        ..Default::default()
    };
    let closed = config_text("").replace("anonymous_erase = true\n", "");
    for (text, allowed) in [(closed, false), (config_text(""), true)] {
        let server = TestServer::start(support::config(&text)).await;
        let mut client = server.client().await;
        let outcome = match client.erase(erase(true)).await {
            Err(status) => Err(status),
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
        };
        match (allowed, outcome) {
            (true, Ok(())) => {}
            (false, Err(status)) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(status.message().contains("Erase"), "{}", status.message());
            }
            (allowed, outcome) => panic!("anonymous_erase {allowed}: {outcome:?}"),
        }
        // Reading is open either way.
        let (code, message) = extract_code(
            &server,
            tonic::Request::new(request("email", "bob@example.com")),
        )
        .await;
        assert_eq!(code, Code::Ok, "{message}");
        server.stop().await.unwrap();
    }
}
