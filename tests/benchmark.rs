//! The README's benchmark commands, at a small scale: each command's `dsr-bench` arguments
//! (its shape, its store, the JSON scan, compression on the wire, TLS) are run with 1% of the dataset, 50 subjects and one repetition,
//! results in a directory of this test rather than `bench-results/`. The suite checks the
//! report's shape and that every scenario ran against its baselines (psql and raw
//! PostgreSQL, or the `mariadb` client on a throwaway MariaDB); it runs the binaries the test
//! build made, so that it compiles nothing in release mode. The full-scale run, in release
//! mode, is the README's command itself, for people measuring. Nothing here asserts a time.

mod support;

use std::process::Command;

#[test]
fn the_readme_benchmark_commands_run_every_scenario_on_both_shapes_and_both_stores() {
    let commands: Vec<String> = support::readme_commands_with("--bin dsr-bench")
        .into_iter()
        .filter(|c| !c.contains("--suite"))
        .collect();
    assert_eq!(commands.len(), 5, "{commands:?}");
    let mut shapes = Vec::new();
    for command in &commands {
        let (build, args) = command
            .split_once(" -- ")
            .unwrap_or_else(|| panic!("no dsr-bench arguments in: {command}"));
        assert_eq!(
            build, "cargo build --release && cargo run --release --bin dsr-bench",
            "the README's benchmark command changed; update this test"
        );
        let args: Vec<&str> = args.split_whitespace().collect();
        assert_eq!(args[..2], ["--scale", "1.0"], "{command}");
        let out_dir = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_dsr-bench"))
            .args(&args[2..])
            .args(["--scale", "0.01", "--subjects", "50", "--repeat", "1"])
            .arg("--out")
            .arg(out_dir.path())
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{command}\n{table}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out_dir.path().join("bench.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["scale"], 0.01);
        let store = report["store"].as_str().unwrap().to_owned();
        let mut run = format!("{store} {}", report["shape"].as_str().unwrap());
        let results = report["results"].as_array().unwrap();
        let mut measures: Vec<&str> = Vec::new();
        if report["scan_json"] == true {
            run.push_str(" scanned");
            measures.extend(SCAN_MEASURES);
        }
        if args.contains(&"--wire") {
            run.push_str(" wire");
            measures.extend(WIRE_MEASURES);
        }
        if report["tls"] == true {
            run.push_str(" tls");
        }
        shapes.push(run);
        measures.extend_from_slice(if store == "mysql" {
            &[
                "heavy: dsr-connector (rows/s)",
                "heavy: mariadb --batch --quick (rows/s)",
                "heavy: service peak RSS (MiB)",
                "sequential: dsr-connector (subjects/s)",
                "sequential: mariadb --batch --quick sessions (subjects/s)",
                "concurrent: dsr-connector (subjects/s)",
                "concurrent: mariadb --batch --quick sessions (subjects/s)",
                "concurrent: dsr-connector p99 (ms)",
            ]
        } else {
            &POSTGRES_MEASURES
        });
        for measure in measures {
            let row = results
                .iter()
                .find(|r| r["name"] == *measure)
                .unwrap_or_else(|| panic!("no {measure} in {report:#}\n{table}"));
            assert!(
                row["median"].as_f64().is_some_and(|m| m > 0.0),
                "{measure}: {row}"
            );
        }
    }
    assert_eq!(
        shapes,
        [
            "postgres narrow",
            "postgres wide",
            "mysql narrow",
            "postgres wide scanned wire",
            "postgres wide tls"
        ]
    );
}

/// The suite's command: every configuration, one after the other, and a summary in which every
/// target of the performance work is measured (a ratio from rows of one run), with each
/// round's ratio and the concurrent latencies of both stores.
#[test]
fn the_suite_command_measures_every_target_in_one_run() {
    let commands = support::readme_commands_with("--suite");
    assert_eq!(commands.len(), 1, "{commands:?}");
    let (build, args) = commands[0].split_once(" -- ").unwrap();
    assert_eq!(
        build,
        "cargo build --release && cargo run --release --bin dsr-bench"
    );
    let args: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(args, ["--scale", "1.0", "--suite"]);
    let out_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dsr-bench"))
        .args([
            "--suite",
            "--scale",
            "0.01",
            "--subjects",
            "50",
            "--repeat",
            "1",
        ])
        .args(["--concurrency", "4", "--audit"])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{table}\n{log}");
    assert!(!log.contains("run failed"), "{log}");
    let suite: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("suite.json")).unwrap())
            .unwrap();
    assert_eq!(suite["audit"], true, "{suite:#}");
    let targets = suite["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 16, "{suite:#}");
    for target in targets {
        assert!(
            target["ratio"].as_f64().is_some_and(|r| r > 0.0),
            "not measured: {target}\n{table}"
        );
        assert_eq!(
            target["rounds"].as_array().map(Vec::len),
            Some(1),
            "{target}"
        );
    }
    for latency in suite["latencies"].as_array().unwrap() {
        assert!(
            latency["ratio"].as_f64().is_some_and(|r| r > 0.0),
            "{latency}"
        );
    }
    for run in ["narrow", "wide", "wide-scan", "wide-tls", "mariadb"] {
        let path = out_dir.path().join(run).join("bench.json");
        let bench: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(bench["audit"], true, "{run}: the audit log was not on");
    }
}

/// What `--scan-json` adds: the heavy subject with the scan on and off, in the same rounds.
const SCAN_MEASURES: [&str; 2] = [
    "heavy: dsr-connector, JSON scan on (rows/s)",
    "heavy: dsr-connector, JSON scan off (rows/s)",
];

/// What `--wire` adds: each encoding over loopback and over the shaped link.
const WIRE_MEASURES: [&str; 6] = [
    "wire, plain: bytes on the wire per row",
    "wire, gzip: bytes on the wire per row",
    "wire, zstd: bytes on the wire per row",
    "wire, plain: 50 ms RTT, 100 Mbit/s (rows/s)",
    "wire, zstd: 50 ms RTT, 100 Mbit/s (rows/s)",
    "wire, gzip: loopback: server CPU per row (µs)",
];

/// What a PostgreSQL run reports.
const POSTGRES_MEASURES: [&str; 13] = [
    "256 streams at once: service peak RSS (MiB)",
    "heavy: dsr-connector (rows/s)",
    "heavy: psql \\copy binary (rows/s)",
    "heavy: raw tokio-postgres portal (rows/s)",
    "sequential: dsr-connector (subjects/s)",
    "sequential: raw tokio-postgres (subjects/s)",
    "concurrent: dsr-connector (subjects/s)",
    "concurrent: psql \\copy binary, pooled psql sessions (subjects/s)",
    "heavy: service peak RSS (MiB)",
    "erase heavy, verified, rolled back: dsr-connector (rows/s)",
    "erase heavy: psql DELETE per table, rolled back (rows/s)",
    "erase committed (delete, mask, retain), verified: dsr-connector (rows/s)",
    "erase committed: the same transaction by hand, one simple query (rows/s)",
];
