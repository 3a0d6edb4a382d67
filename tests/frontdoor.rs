//! The README's front door, walked as a newcomer walks it: `scripts/demo.sh` itself (which
//! builds and runs the release binary), every grpcurl command of the README's "Calling it
//! with grpcurl" block as written, the data-package commands of "A data package for one
//! request" and "Clients in other languages" as written, then Ctrl-C. Afterwards the throwaway cluster, its
//! temporary directory and every process the demo started must be gone.

mod support;

use std::io::{BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::venv_tool;

/// The address the README's commands are written for.
const README_ADDR: &str = "127.0.0.1:50051";
/// The demo script builds the release binary on first use; a cold build on two cores takes
/// a few minutes.
const START_LIMIT: Duration = Duration::from_secs(25 * 60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shell commands of the first `sh` block of a README section.
fn readme_commands(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("the README has a '{heading}' section"));
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section has a sh code block");
    support::shell_commands(block)
}

/// Runs one shell command with the test virtual environment's tools first on PATH.
fn shell(command: &str) -> std::process::Output {
    let venv_bin = venv_tool("grpcurl").parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv_bin];
    paths.extend(std::env::split_paths(&path));
    support::without_test_cargo_env(&mut Command::new("sh"))
        .arg("-c")
        .arg(command)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .output()
        .unwrap()
}

/// Collects a child's output on a thread, so the pipe never fills.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(&mut pipe).read_to_string(&mut text);
        text
    })
}

/// Every live process whose working directory or command line lies under `dir`, or that is
/// in process group `pgid`: PostgreSQL's processes run in their data directory, and the
/// cluster's watchdog names the directory on its command line.
fn processes_of(dir: &Path, pgid: Option<u32>) -> Vec<String> {
    let dir_text = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = entry.path();
        let cwd = std::fs::read_link(proc_dir.join("cwd")).unwrap_or_default();
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        // Fields after the command name (which is in parentheses): state ppid pgrp ...
        let group = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<u32>().ok());
        let zombie = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("Z");
        if zombie {
            continue;
        }
        if cwd.starts_with(dir) || cmdline.contains(&dir_text) || (pgid.is_some() && group == pgid)
        {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Sends `signal` to every process of group `pgid`.
fn signal_group(signal: &str, pgid: u32) {
    let status = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success() || signal == "KILL",
        "kill -s {signal} -{pgid} failed"
    );
}

/// Kills the demo's process group if the test fails before Ctrl-C ended it; the cluster's
/// watchdog then removes the cluster.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            signal_group("KILL", self.0);
        }
    }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn readme_demo_serves_the_readme_commands_and_ctrl_c_removes_everything() {
    let commands = readme_commands("## Calling it with grpcurl");
    assert!(
        commands.len() >= 8 && commands.iter().all(|c| c.starts_with("grpcurl ")),
        "the README's grpcurl block parsed into {commands:#?}"
    );
    let package_commands = [
        readme_commands("## A data package for one request"),
        readme_commands("## Clients in other languages"),
    ]
    .concat();
    assert!(
        package_commands
            .iter()
            .filter(|c| c.contains("--out "))
            .count()
            == 4,
        "the README's package commands parsed into {package_commands:#?}"
    );

    // The demo's temporary files go to a directory of this test, so that leftovers show.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // Port 0: the demo binds a free port itself and prints the address it serves on, so no
    // other test can take the port between a probe and the bind.
    let mut demo = Command::new(root().join("scripts/demo.sh"));
    support::without_test_cargo_env(&mut demo)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(root())
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, as a terminal's foreground job: Ctrl-C signals the group.
        .process_group(0);
    let mut child = demo.spawn().expect("scripts/demo.sh starts");
    let pgid = child.id();
    let _kill_on_failure = KillGroup(pgid);
    // The demo's stdout, line by line as it comes: it prints the audit command once serving.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stdout = {
        use std::io::BufRead;
        let pipe = child.stdout.take().unwrap();
        let printed = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                printed.lock().unwrap().push(line);
            }
            printed.lock().unwrap().join("\n")
        })
    };
    let stderr = collect(child.stderr.take().unwrap());

    // Wait for the address the demo prints, then for SERVING, as a user would with the
    // health check.
    let started = Instant::now();
    let mut addr = String::new();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "scripts/demo.sh exited with {status} before serving:\n{}\n{}",
                stderr.join().unwrap(),
                stdout.join().unwrap()
            );
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "the demo did not serve within {START_LIMIT:?}"
        );
        if addr.is_empty() {
            addr = printed
                .lock()
                .unwrap()
                .iter()
                .find_map(|line| line.split_once("is serving source \"demo\" on "))
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned())
                .unwrap_or_default();
        }
        if !addr.is_empty() {
            let out = shell(&format!(
                "grpcurl -plaintext {addr} grpc.health.v1.Health/Check"
            ));
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SERVING") {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let cluster_dir: PathBuf = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dsr-pg-")
        })
        .expect("the demo's cluster lives in TMPDIR");
    assert!(
        !processes_of(&cluster_dir, None).is_empty(),
        "PostgreSQL runs in the cluster directory"
    );

    // Every README command, as written, pointed at this demo's address.
    let mut outputs = Vec::new();
    for command in &commands {
        let out = shell(&command.replace(README_ADDR, &addr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "README command failed: {command}\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push((command.clone(), text));
    }
    // The data-package commands, as written, with their packages put in a directory of this
    // test: the extract command and the two example clients all write a complete package.
    let packages = tempfile::tempdir().unwrap();
    for command in &package_commands {
        let command = command.replace(README_ADDR, &addr);
        let command = match command.split_once("--out ") {
            Some((head, name)) => {
                let name = name.trim();
                assert!(!name.contains(' '), "--out comes last: {command}");
                format!("{head}--out {}", packages.path().join(name).display())
            }
            None => command,
        };
        let out = shell(&command);
        assert!(
            out.status.success(),
            "README command failed: {command}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if command.contains("--erase") {
            // The examples' erasures: a preview, then rows deleted.
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                said.starts_with("erased: ") && !said.starts_with("erased: 0 deleted"),
                "{command}: {said}"
            );
        }
    }
    let mut written: Vec<String> = std::fs::read_dir(packages.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        ["alice-go", "alice-node", "alice-package", "alice-python"]
    );
    for name in &written {
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(packages.path().join(name).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["rowCount"], "18", "{name}");
        assert!(packages.path().join(name).join("README.txt").exists());
    }

    // The durable requests' block, as written: an access request followed with grpcurl, one
    // with the request command and its package copied, and an erasure approved.
    let request_commands = readme_commands("## One request across every source");
    assert_eq!(request_commands.len(), 6, "{request_commands:#?}");
    let requested = tempfile::tempdir().unwrap();
    let mut said = Vec::new();
    for command in &request_commands {
        let command = command.replace(README_ADDR, &addr);
        let command = match command.split_once("--out ") {
            Some((head, name)) => format!(
                "{head}--out {}",
                requested.path().join(name.trim()).display()
            ),
            None => command,
        };
        let out = shell(&command);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "README command failed: {command}\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said.push(text);
    }
    assert!(
        said[1].contains("\"done\": true") && said[1].contains("\"packageSha256\""),
        "{}",
        said[1]
    );
    assert!(!said[1].contains("alice@example.com"), "{}", said[1]);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(requested.path().join("alice-request/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sources"][0]["rows"], 18, "{manifest}");
    // Asked by e-mail and customer id: both named by their keyed hashes, her rows once.
    let demo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(requested.path().join("alice-request/demo/manifest.json"))
            .unwrap(),
    )
    .unwrap();
    let kinds: Vec<&str> = demo["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["email", "customer_id"], "{demo}");
    assert!(said[3].contains("AWAITING_APPROVAL"), "{}", said[3]);
    assert!(said[5].contains("ERASURE SUCCEEDED"), "{}", said[5]);

    let output_of = |needle: &str, extra: &str| -> &str {
        outputs
            .iter()
            .find(|(c, _)| c.contains(needle) && c.contains(extra))
            .map(|(_, out)| out.as_str())
            .unwrap_or_else(|| panic!("no README command with {needle} and {extra}"))
    };
    let alice = output_of("DsrConnectorService/Extract", "alice@example.com");
    assert!(
        alice.contains("\"started\"") && alice.contains("\"rowCount\": \"18\""),
        "alice's extraction ends with a manifest of 18 rows:\n{alice}"
    );
    let drafted = output_of("DsrConnectorService/Discover", "sample_rows");
    assert!(
        drafted.contains("\"summary\"")
            && drafted.contains("\"table\": \"support_tickets\"")
            && !drafted.contains("alice@example.com"),
        "the draft proposes the demo's tables, with evidence and no value:\n{drafted}"
    );
    let typed = output_of("DsrConnectorService/Extract", " Alice@Example.com");
    assert!(
        typed.contains("\"rowCount\": \"18\"") && typed.contains("\"subject_found\": \"true\""),
        "{typed}"
    );
    let subject_of = |out: &str| {
        out.lines()
            .find(|l| l.contains("\"subjectId\""))
            .map(str::trim)
            .map(str::to_owned)
    };
    assert_eq!(
        subject_of(typed),
        subject_of(alice),
        "one subject however typed"
    );
    let by_id = output_of("DsrConnectorService/Extract", "customer_id");
    assert!(by_id.contains("\"manifest\""), "{by_id}");
    let dry_run = output_of("DsrConnectorService/Validate", "alice@example.com");
    assert!(
        dry_run.contains("\"verdict\"") && !dry_run.contains("alice@example.com"),
        "a dry run reports a verdict and no values:\n{dry_run}"
    );
    let gate = output_of("DsrConnectorService/Validate", "{\"source\": \"demo\"}'");
    assert!(
        gate.contains("\"TABLE_STATUS_OK\"") && gate.contains("\"verdict\""),
        "{gate}"
    );
    assert!(output_of("list", "").contains("dsr.v1.DsrConnectorService"));
    assert!(
        output_of("Health/Check", "DsrConnectorService/demo").contains("SERVING"),
        "the demo source's health is reported"
    );

    // The erasure page's block, as one script (its digest passes from one command to the
    // next): bob is previewed and erased with grpcurl, carol with the erase command.
    let page = std::fs::read_to_string(root().join("docs/erasure.md")).unwrap();
    let erase_block = page
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the erasure page has a sh block");
    let out = shell(&format!(
        "set -e\n{}",
        erase_block.replace(README_ADDR, &addr)
    ));
    let erased = String::from_utf8_lossy(&out.stdout).into_owned();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the erasure block failed:\n{erased}\n{said}"
    );
    assert_eq!(
        erased.matches("\"receipt\"").count(),
        2,
        "a preview and an erasure (the second preview's output is the digest):\n{erased}"
    );
    assert!(erased.contains("\"committedAt\""), "{erased}");
    // The erase command's result is on stdout, as extract's is.
    assert!(erased.contains("Erased (erasure "), "{erased}\n{said}");
    assert!(!said.contains("Erased (erasure "), "{said}");
    assert!(!erased.contains("bob@example.com") && !said.contains("carol@example.org"));
    let bob = shell(&format!(
        "grpcurl -plaintext -max-time 30 -d '{{\"source\": \"demo\", \"subject\": \
         {{\"kind\": \"email\", \"value\": \"bob@example.com\"}}}}' {addr} \
         dsr.v1.DsrConnectorService/Extract"
    ));
    let bob = String::from_utf8_lossy(&bob.stdout);
    assert!(bob.contains("\"subject_found\": \"false\""), "{bob}");

    // The audit log holds a record for each call so far, and verifies, with the command the
    // demo printed.
    let verify = printed
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("audit verify"))
        .cloned()
        .expect("the demo prints how to verify its audit log");
    let out = shell(verify.trim());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{verify}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": ok ("), "{text}");

    // Ctrl-C: SIGINT to the foreground process group.
    signal_group("INT", pgid);
    let exit = wait_for_exit(&mut child, Duration::from_secs(60))
        .expect("the demo stops within a minute of Ctrl-C");
    let stderr = stderr.join().unwrap();
    assert!(
        exit.success(),
        "the demo exits cleanly on Ctrl-C ({exit}):\n{stderr}"
    );
    assert!(
        stderr.contains("removing the demo cluster"),
        "the demo says it removes its cluster:\n{stderr}"
    );

    // Nothing is left: no directory, no PostgreSQL, no watchdog, nothing in the group.
    let until = Instant::now() + Duration::from_secs(15);
    let leftovers = loop {
        let files: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        let procs = processes_of(tmp.path(), Some(pgid));
        if (files.is_empty() && procs.is_empty()) || Instant::now() > until {
            break (files, procs);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        leftovers.0.is_empty() && leftovers.1.is_empty(),
        "left behind after Ctrl-C: files {:?}, processes {:#?}",
        leftovers.0.iter().map(|e| e.path()).collect::<Vec<_>>(),
        leftovers.1
    );
    let _ = stdout.join();
}

/// The README fits on a few screens and maps every page of `docs/`; every link between the
/// pages (and to files of the repository) leads somewhere.
#[test]
fn the_readme_is_short_and_every_page_it_maps_and_links_exists() {
    let pages = support::documentation();
    let readme = &pages[0].1;
    let lines = readme.lines().count();
    assert!(lines <= 250, "the README has {lines} lines");
    for (name, _) in &pages[1..] {
        assert!(
            readme.contains(&format!("]({name})")),
            "the README does not map {name}"
        );
    }
    for (name, text) in &pages {
        let dir = root().join(name).parent().unwrap().to_path_buf();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            assert!(
                dir.join(target).exists(),
                "{name} links to {target}, which does not exist"
            );
        }
    }
}

/// Every command of the README and of `docs/` is run, as written, by a test: the one that
/// runs its section whole, or the one that looks it up by a needle with
/// `support::readme_commands_with`. Each claim names its test, which must still hold the
/// needle; a documented command no test claims fails here until one runs it.
#[test]
fn every_documented_command_is_run_by_a_test() {
    // Whole `sh` blocks, run by this file: (page, the block's section heading, or "" for the
    // page's first block).
    let whole: [(&str, &str); 5] = [
        ("README.md", "## Calling it with grpcurl"),
        ("README.md", "## One request across every source"),
        ("README.md", "## A data package for one request"),
        ("README.md", "## Clients in other languages"),
        ("docs/erasure.md", ""),
    ];
    // Commands looked up by a needle: (needle, the test that runs them).
    let needles: [(&str, &str); 5] = [
        ("audit verify /var/lib", "tests/audit/main.rs"),
        ("--bin dsr-bench", "tests/benchmark.rs"),
        ("--control-url-env DSR_CONTROL_URL", "tests/control.rs"),
        ("dead-letters list /var/lib", "tests/deadletter.rs"),
        ("dsr.draft.toml", "tests/discover/calls.rs"),
    ];
    for (needle, test) in needles {
        let source = std::fs::read_to_string(root().join(test)).unwrap();
        assert!(
            source.contains(&format!("readme_commands_with(\"{needle}\")")),
            "{test} no longer runs the commands with {needle}"
        );
    }
    let block_of = |section: &str| -> String {
        section
            .split("```sh\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .unwrap_or_default()
            .to_owned()
    };
    let mut run_whole: Vec<String> = Vec::new();
    for (page, heading) in whole {
        let text = std::fs::read_to_string(root().join(page)).unwrap();
        let section = if heading.is_empty() {
            text.clone()
        } else {
            text.split(&format!("\n{heading}\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("{page} has no '{heading}'"))
                .to_owned()
        };
        run_whole.extend(support::shell_commands(&block_of(&section)));
    }
    // The two commands of the README's front: demo.sh is this file's, test.sh is CI's.
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test.sh"),
        ".ci/run no longer runs scripts/test.sh"
    );
    let mut unclaimed = Vec::new();
    for (page, text) in support::documentation() {
        for block in text
            .split("```sh\n")
            .skip(1)
            .filter_map(|rest| rest.split("\n```").next())
        {
            for command in support::shell_commands(block) {
                let claimed = run_whole.contains(&command)
                    || needles.iter().any(|(needle, _)| command.contains(needle))
                    || command.starts_with("scripts/demo.sh")
                    || command.starts_with("scripts/test.sh");
                if !claimed {
                    unclaimed.push(format!("{page}: {command}"));
                }
            }
        }
    }
    assert!(
        unclaimed.is_empty(),
        "documented commands that no test runs: {unclaimed:#?}"
    );
}
