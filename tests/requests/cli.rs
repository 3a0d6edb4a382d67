//! `dsr-connector request`, the real binary, against a server: submit and follow an access
//! request and copy its package (checked file by file), then an erasure request that waits,
//! is approved with `--yes`, and is followed to its end.

use super::*;
use support::TestServer;

/// Runs `command` to its end off the runtime: its exit code, stdout and stderr.
async fn output(mut command: std::process::Command) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Runs `dsr-connector request` with `args`: whether it succeeded, stdout and stderr.
async fn request(args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dsr-connector"));
    support::without_test_cargo_env(&mut command)
        .arg("request")
        .args(args);
    let (code, stdout, stderr) = output(command).await;
    (code == Some(0), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_command_submits_follows_approves_and_copies_a_checked_package() {
    let world = World::open("req_cli").await;
    let server = TestServer::start(world.config("", &[])).await;
    let addr = format!("http://{}", server.addr);
    let out = tempfile::tempdir().unwrap();
    let package = out.path().join("alice");
    let (ok, stdout, stderr) = request(&[
        "submit",
        "--addr",
        &addr,
        "--id",
        "cli-1",
        "--kind",
        "email",
        "--value",
        ALICE,
        "--wait",
        "--out",
        package.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.starts_with("requests/cli-1\n"), "{stdout}");
    assert!(stdout.contains("ACCESS SUCCEEDED"), "{stdout}");
    // A line per source as it moved, on stderr.
    assert!(
        stderr.contains("demo") && stderr.contains("mariadb"),
        "{stderr}"
    );
    let mut ops = operations(server.addr).await;
    let op = get(&mut ops, "cli-1").await;
    let copied = RequestResult {
        package_path: package.display().to_string(),
        ..result(&op)
    };
    assert_eq!(verify_package(&copied), ["demo", "mariadb"]);

    let (ok, stdout, stderr) = request(&[
        "submit",
        "--addr",
        &addr,
        "--id",
        "cli-2",
        "--erasure",
        "--kind",
        "email",
        "--value",
        ALICE,
        "--wait",
    ])
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("ERASURE AWAITING_APPROVAL"), "{stdout}");
    // Without a terminal, approval needs --yes.
    let (ok, _, stderr) = request(&["approve", "--addr", &addr, "--id", "cli-2"]).await;
    assert!(!ok);
    assert!(stderr.contains("--yes"), "{stderr}");
    let (ok, stdout, stderr) =
        request(&["approve", "--addr", &addr, "--id", "cli-2", "--yes"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("delete"),
        "the previews are shown: {stdout}"
    );
    let (ok, stdout, stderr) = request(&["wait", "--addr", &addr, "--id", "cli-2"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("ERASURE SUCCEEDED"), "{stdout}");
    let (ok, _, stderr) = request(&["status", "--addr", &addr, "--id", "nobody"]).await;
    assert!(!ok);
    assert!(stderr.contains("NotFound"), "{stderr}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_follows_requests_with_google_api_cores_operations_client() {
    let world = World::open("req_python").await;
    let server = TestServer::start(world.config("", &[])).await;
    let addr = server.addr.to_string();
    let run = |args: Vec<String>| {
        let mut command = std::process::Command::new(support::venv_tool("python"));
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/dsr_request.py"))
            .args(args);
        output(command)
    };
    let args = |more: &[&str]| -> Vec<String> {
        ["--addr", addr.as_str(), "--kind", "email", "--value", ALICE]
            .iter()
            .chain(more)
            .map(|s| s.to_string())
            .collect()
    };
    let (code, stdout, stderr) = run(args(&["--id", "py-1"])).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("demo: 18 row(s)"), "{stdout}");
    assert!(stdout.contains("mariadb: 18 row(s)"), "{stdout}");
    let mut ops = operations(server.addr).await;
    let package = result(&get(&mut ops, "py-1").await).package_sha256;
    assert!(stdout.contains(&package), "{stdout}");
    // Submitted again after a crash of the orchestrator, say: the same request, done.
    let (code, again, _) = run(args(&["--id", "py-1"])).await;
    assert_eq!(code, Some(0));
    assert!(again.contains(&package), "{again}");

    let (code, stdout, stderr) = run(args(&["--id", "py-2", "--erase", "--approve"])).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("preview demo:"), "{stdout}");
    assert!(
        stdout.contains("mariadb: ") && stdout.contains("deleted"),
        "{stdout}"
    );
    assert_eq!(
        progress(&get(&mut ops, "py-2").await).state(),
        RequestState::Succeeded
    );
    // Refused: the exit status says so.
    let (code, _, stderr) = run(args(&["--id", "../bad"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_package_holds_nothing_in_the_clear_and_its_identity_opens_it() {
    use secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let world = World::open("req_sealed").await;
    let config = world.config(
        &format!("package_recipients = [\"{}\"]", identity.to_public()),
        &[],
    );
    let server = TestServer::start(config).await;
    let addr = format!("http://{}", server.addr);
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("key.txt");
    std::fs::write(&key_file, identity.to_string().expose_secret()).unwrap();
    let opened = keys.path().join("opened");
    let (ok, stdout, stderr) = request(&[
        "submit",
        "--addr",
        &addr,
        "--id",
        "sealed-1",
        "--kind",
        "email",
        "--value",
        ALICE,
        "--wait",
        "--out",
        opened.to_str().unwrap(),
        "--identity",
        key_file.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{stdout}\n{stderr}");

    // On the package store: every file of every source is an age file, and no byte of the
    // subject's is in the clear; the manifest still verifies every file.
    let mut ops = operations(server.addr).await;
    let result = result(&get(&mut ops, "sealed-1").await);
    assert_eq!(verify_package(&result), ["demo", "mariadb"]);
    let mut stored = Vec::new();
    files_under(
        Path::new(&result.package_path),
        Path::new(&result.package_path),
        &mut stored,
    );
    for file in &stored {
        let bytes = std::fs::read(Path::new(&result.package_path).join(file)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("alice") && !text.contains("Alice"),
            "{file} holds her data"
        );
        if file.contains('/') {
            assert!(file.ends_with(".age"), "{file} is not sealed");
            assert!(text.starts_with("age-encryption.org/v1"), "{file}");
        }
    }
    // Opened with the identity: the same rows as the extract command's, byte for byte.
    for source in ["demo", "mariadb"] {
        same_as_extract_in(&server.addr.to_string(), &opened, source);
        assert!(opened.join(source).join("manifest.json").exists());
    }
    // Without the identity the copy stays sealed.
    let (ok, _, stderr) = request(&[
        "wait",
        "--addr",
        &addr,
        "--id",
        "sealed-1",
        "--out",
        keys.path().join("still-sealed").to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(
        keys.path()
            .join("still-sealed/demo/customers.jsonl.age")
            .exists()
    );
    // A recipient that is not a key is refused at start-up, named.
    let refused = dsr_connector::config::Config::from_toml_str(
        &world.config_text("x", "package_recipients = [\"age1nope\"]"),
        |_| Some("0123456789abcdef0123".into()),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        refused.contains("server.requests.package_recipients[0]"),
        "{refused}"
    );
    server.stop().await.unwrap();
}
