//! The README's benchmark commands, at a small scale: each command's `dsr-bench` arguments
//! (its shape, its store) are run with 1% of the dataset, 50 subjects and one repetition,
//! results in a directory of this test rather than `bench-results/`. The suite checks the
//! report's shape and that every scenario ran against its baselines (psql and raw
//! PostgreSQL, or the `mariadb` client on a throwaway MariaDB); it runs the binaries the test
//! build made, so that it compiles nothing in release mode. The full-scale run, in release
//! mode, is the README's command itself, for people measuring. Nothing here asserts a time.

mod support;

use std::process::Command;

#[test]
fn the_readme_benchmark_commands_run_every_scenario_on_both_shapes_and_both_stores() {
    let commands = support::readme_commands_with("--bin dsr-bench");
    assert_eq!(commands.len(), 3, "{commands:?}");
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
        shapes.push(format!("{store} {}", report["shape"].as_str().unwrap()));
        let results = report["results"].as_array().unwrap();
        let measures: &[&str] = if store == "mysql" {
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
        };
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
    assert_eq!(shapes, ["postgres narrow", "postgres wide", "mysql narrow"]);
}

/// What a PostgreSQL run reports.
const POSTGRES_MEASURES: [&str; 10] = [
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
];
