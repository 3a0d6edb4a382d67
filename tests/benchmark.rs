//! The README's benchmark commands, run as written (their results go to a directory of this
//! test rather than `bench-results/`): each builds the release binaries, generates the
//! full-scale dataset of its shape, and measures the service against psql and raw PostgreSQL. Nothing here asserts
//! a time; the test checks that every scenario ran and produced its figures.

mod support;

#[test]
fn the_readme_benchmark_commands_run_every_scenario_on_both_shapes() {
    let commands = support::readme_commands_with("--bin dsr-bench");
    assert_eq!(commands.len(), 2, "{commands:?}");
    let mut shapes = Vec::new();
    for command in &commands {
        let out_dir = tempfile::tempdir().unwrap();
        let output = support::run_readme_command(
            command,
            &[(
                "--scale 1.0",
                format!("--scale 1.0 --out {}", out_dir.path().display()),
            )],
            &[],
        );
        let table = String::from_utf8_lossy(&output.stdout);
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out_dir.path().join("bench.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["scale"], 1.0);
        shapes.push(report["shape"].as_str().unwrap().to_owned());
        let results = report["results"].as_array().unwrap();
        for measure in [
            "heavy: dsr-connector (rows/s)",
            "heavy: psql \\copy binary (rows/s)",
            "sequential: dsr-connector (subjects/s)",
            "concurrent: dsr-connector (subjects/s)",
            "concurrent: psql \\copy binary, pooled psql sessions (subjects/s)",
            "heavy: service peak RSS (MiB)",
        ] {
            let row = results
                .iter()
                .find(|r| r["name"] == measure)
                .unwrap_or_else(|| panic!("no {measure} in {report:#}\n{table}"));
            assert!(
                row["median"].as_f64().is_some_and(|m| m > 0.0),
                "{measure}: {row}"
            );
        }
    }
    assert_eq!(shapes, ["narrow", "wide"]);
}
