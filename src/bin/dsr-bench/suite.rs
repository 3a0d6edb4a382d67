//! `--suite`: every configuration the performance targets need, one run each, and one summary.
//!
//! Each configuration runs this same binary again, with its own throwaway database, one after
//! the other (never side by side: they would share the cores). Each writes its `bench.json`
//! under `<out>/<configuration>/`. The summary then reads them and prints one line per
//! target: the ratio of medians, the ratios of each round (the two sides of a round are
//! measured at the same moment), and whether the target is met. It is written to
//! `<out>/suite.json` as well.

use std::collections::BTreeMap;
use std::path::Path;

use crate::Args;
use crate::report::median;

/// One configuration of the suite: its name and the arguments it adds.
const RUNS: [(&str, &[&str]); 5] = [
    ("narrow", &["--against-single-path"]),
    ("wide", &["--shape", "wide", "--skip-erasure"]),
    (
        "wide-scan",
        &["--shape", "wide", "--scan-json", "--skip-erasure"],
    ),
    ("wide-tls", &["--shape", "wide", "--tls", "--skip-erasure"]),
    ("mariadb", &["--store", "mysql"]),
];

/// One target: what it compares, in which run, and the ratio it must reach.
struct Target {
    measure: &'static str,
    run: &'static str,
    /// The row measured, and the row it is compared with (both in `run`).
    row: &'static str,
    baseline: &'static str,
    /// The least ratio that meets the target.
    target: f64,
}

const fn faster(
    measure: &'static str,
    run: &'static str,
    row: &'static str,
    baseline: &'static str,
    target: f64,
) -> Target {
    Target {
        measure,
        run,
        row,
        baseline,
        target,
    }
}

const TARGETS: &[Target] = &[
    faster(
        "heavy subject, wide rows, against psql `\\copy` binary",
        "wide",
        "heavy: dsr-connector (rows/s)",
        "heavy: psql \\copy binary (rows/s)",
        1.0,
    ),
    faster(
        "heavy subject, narrow rows, against psql `\\copy` binary",
        "narrow",
        "heavy: dsr-connector (rows/s)",
        "heavy: psql \\copy binary (rows/s)",
        0.9,
    ),
    faster(
        "heavy subject, narrow rows, against the raw tokio-postgres reader",
        "narrow",
        "heavy: dsr-connector (rows/s)",
        "heavy: raw tokio-postgres portal (rows/s)",
        0.9,
    ),
    faster(
        "heavy subject, wide rows, against the raw tokio-postgres reader",
        "wide",
        "heavy: dsr-connector (rows/s)",
        "heavy: raw tokio-postgres portal (rows/s)",
        0.9,
    ),
    faster(
        "JSON scan on / off (personal data in every document)",
        "wide-scan",
        "heavy: dsr-connector, JSON scan on (rows/s)",
        "heavy: dsr-connector, JSON scan off (rows/s)",
        0.8,
    ),
    faster(
        "two paths / one, one subject at a time",
        "narrow",
        "sequential: dsr-connector (subjects/s)",
        "sequential: one path to support_tickets (subjects/s)",
        0.9,
    ),
    faster(
        "two paths / one, 16-way",
        "narrow",
        "concurrent: dsr-connector (subjects/s)",
        "concurrent: one path to support_tickets (subjects/s)",
        0.9,
    ),
    faster(
        "16-way against 16 psql sessions doing the same work",
        "narrow",
        "concurrent: dsr-connector (subjects/s)",
        "concurrent: psql \\copy binary, pooled psql sessions (subjects/s)",
        1.2,
    ),
    faster(
        "16-way against the raw tokio-postgres reader",
        "narrow",
        "concurrent: dsr-connector (subjects/s)",
        "concurrent: raw tokio-postgres (subjects/s)",
        0.8,
    ),
    faster(
        "one subject at a time against the raw tokio-postgres reader",
        "narrow",
        "sequential: dsr-connector (subjects/s)",
        "sequential: raw tokio-postgres (subjects/s)",
        0.8,
    ),
    faster(
        "heavy over `verify-full` TLS against psql over the same TLS",
        "wide-tls",
        "heavy: dsr-connector (rows/s)",
        "heavy: psql \\copy binary (rows/s)",
        1.0,
    ),
    faster(
        "heavy, a default grpcio client (gzip only) / a plain client, PostgreSQL",
        "narrow",
        crate::DEFAULT_CLIENT_ROW,
        "heavy: dsr-connector (rows/s)",
        0.9,
    ),
    faster(
        "heavy on MariaDB against `mariadb --batch --quick`",
        "mariadb",
        "heavy: dsr-connector (rows/s)",
        "heavy: mariadb --batch --quick (rows/s)",
        0.9,
    ),
    faster(
        "heavy on MariaDB against the raw mysql_async reader",
        "mariadb",
        "heavy: dsr-connector (rows/s)",
        "heavy: raw mysql_async reader (rows/s)",
        0.9,
    ),
    faster(
        "heavy on MariaDB, a default grpcio client (gzip only) / a plain client",
        "mariadb",
        crate::DEFAULT_CLIENT_ROW,
        "heavy: dsr-connector (rows/s)",
        0.8,
    ),
    faster(
        "16-way on MariaDB against the raw mysql_async reader",
        "mariadb",
        "concurrent: dsr-connector (subjects/s)",
        "concurrent: raw mysql_async reader (subjects/s)",
        0.8,
    ),
];

/// The latency rows reported with their spread: (run, service row, raw reader row).
const LATENCIES: &[(&str, &str, &str)] = &[
    (
        "narrow",
        "concurrent: dsr-connector p50 (ms)",
        "concurrent: raw tokio-postgres p50 (ms)",
    ),
    (
        "narrow",
        "concurrent: dsr-connector p99 (ms)",
        "concurrent: raw tokio-postgres p99 (ms)",
    ),
    (
        "narrow",
        "concurrent: dsr-connector p99.9 (ms)",
        "concurrent: raw tokio-postgres p99.9 (ms)",
    ),
    (
        "mariadb",
        "concurrent: dsr-connector p99 (ms)",
        "concurrent: raw mysql_async reader p99 (ms)",
    ),
    (
        "mariadb",
        "concurrent: dsr-connector p99.9 (ms)",
        "concurrent: raw mysql_async reader p99.9 (ms)",
    ),
];

/// Runs every configuration, then prints and writes the summary.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mut common = vec![
        "--scale".to_owned(),
        args.scale.to_string(),
        "--subjects".to_owned(),
        args.subjects.to_string(),
        "--concurrency".to_owned(),
        args.concurrency.to_string(),
        "--repeat".to_owned(),
        args.repeat.to_string(),
    ];
    if args.audit {
        common.push("--audit".to_owned());
    }
    for (name, extra) in RUNS {
        eprintln!("== suite: {name} ==");
        let out = args.out.join(name);
        let status = std::process::Command::new(&me)
            .args(&common)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .status()?;
        // A run that fails is reported and left out of the summary; the others still count.
        if !status.success() {
            eprintln!("== suite: the {name} run failed ({status}); its targets are not measured");
            let _ = std::fs::remove_file(out.join("bench.json"));
        }
    }
    summarise(args, &args.out)
}

/// Each run's rows by name: their repetitions.
type Runs = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn read_runs(out: &Path) -> anyhow::Result<Runs> {
    let mut runs = Runs::new();
    for (name, _) in RUNS {
        let path = out.join(name).join("bench.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let rows = json["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let values = row["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_f64())
                    .collect();
                (row["name"].as_str().unwrap_or_default().to_owned(), values)
            })
            .collect();
        runs.insert(name.to_owned(), rows);
    }
    Ok(runs)
}

/// The ratio of medians, and each round's ratio (rounds measure both sides back to back).
fn ratios(values: &[f64], baseline: &[f64]) -> Option<(f64, Vec<f64>)> {
    if values.is_empty() || baseline.is_empty() {
        return None;
    }
    let rounds = if values.len() == baseline.len() {
        values.iter().zip(baseline).map(|(v, b)| v / b).collect()
    } else {
        Vec::new()
    };
    Some((median(values) / median(baseline), rounds))
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| crate::report::fmt(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summarise(args: &Args, out: &Path) -> anyhow::Result<()> {
    let runs = read_runs(out)?;
    let row = |run: &str, name: &str| -> Vec<f64> {
        runs.get(run)
            .and_then(|rows| rows.get(name))
            .cloned()
            .unwrap_or_default()
    };
    let mut summary = Vec::new();
    println!("\n| target | run | ratio of medians | each round | target | met |");
    println!("|---|---|---|---|---|---|");
    for t in TARGETS {
        let found = ratios(&row(t.run, t.row), &row(t.run, t.baseline));
        let (text, rounds, met) = match &found {
            Some((ratio, rounds)) => {
                let met = *ratio >= t.target;
                let rounds = rounds
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    format!("{ratio:.2}x"),
                    rounds,
                    if met { "yes" } else { "no" },
                )
            }
            None => ("n/a".to_owned(), String::new(), "not measured"),
        };
        println!(
            "| {} | {} | {text} | {rounds} | >= {:.1} | {met} |",
            t.measure, t.run, t.target
        );
        summary.push(serde_json::json!({
            "measure": t.measure,
            "run": t.run,
            "row": t.row,
            "baseline": t.baseline,
            "ratio": found.as_ref().map(|(r, _)| r),
            "rounds": found.as_ref().map(|(_, r)| r),
            "target": t.target,
            "met": met == "yes",
        }));
    }
    println!(
        "\n| latency, concurrent | run | service, each round (ms) | raw reader, each round (ms) | ratio of medians |"
    );
    println!("|---|---|---|---|---|");
    let mut latencies = Vec::new();
    for (run, service, raw) in LATENCIES {
        let (service_values, raw_values) = (row(run, service), row(run, raw));
        let ratio = ratios(&service_values, &raw_values).map(|(r, _)| r);
        println!(
            "| {service} | {run} | {} | {} | {} |",
            list(&service_values),
            list(&raw_values),
            ratio.map(|r| format!("{r:.2}x")).unwrap_or_default()
        );
        latencies.push(serde_json::json!({
            "run": run, "row": service, "values": service_values,
            "raw": raw_values, "ratio": ratio,
        }));
    }
    println!(
        "\nsuite: scale {}, {} subjects, concurrency {}, {} repetitions, {} cores, audit log {}; \
         every run's own table is above and in {}/<run>/bench.json",
        args.scale,
        args.subjects,
        args.concurrency,
        args.repeat,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.audit { "on" } else { "off" },
        out.display()
    );
    let json = serde_json::json!({
        "scale": args.scale,
        "subjects": args.subjects,
        "concurrency": args.concurrency,
        "repeat": args.repeat,
        "audit": args.audit,
        "targets": summary,
        "latencies": latencies,
    });
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("suite.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
