//! The README's benchmark commands, run as written but at a small scale (1% of the dataset,
//! 50 subjects, one repetition; results in a directory of this test rather than
//! `bench-results/`): each builds the release binaries, generates its shape's dataset, and
//! measures the service against psql and raw PostgreSQL. The full-scale run is the README's
//! command itself, for people measuring. Nothing here asserts a time; the test checks the
//! report's shape and that every scenario ran and produced its figures.

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
                format!(
                    "--scale 0.01 --subjects 50 --repeat 1 --out {}",
                    out_dir.path().display()
                ),
            )],
            &[],
        );
        let table = String::from_utf8_lossy(&output.stdout);
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out_dir.path().join("bench.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["scale"], 0.01);
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
