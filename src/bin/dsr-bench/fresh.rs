//! Ordinary subjects on a server that has just started: its pool grows under 16 streams from
//! the connections it opened before it knew its data map, so most calls meet a connection new
//! to the plan. Each round starts a server of its own (and one of the `--compare` build), makes
//! one call so that the schema gate has passed, then times the subjects.

use std::path::Path;

use dsr_connector::demo::cluster::TempCluster;

use super::*;

/// Appends the rows of the new-server scenario to `results`.
pub(crate) async fn new_server_rows(
    args: &Args,
    binary: &Path,
    cluster: &TempCluster,
    subjects: &[String],
    results: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut builds = vec![(binary.to_path_buf(), Vec::new(), Vec::new())];
    if let Some(other) = &args.compare {
        builds.push((other.clone(), Vec::new(), Vec::new()));
    }
    for round in 0..args.repeat {
        eprintln!("new server, round {} ...", round + 1);
        for (build, rates, p99s) in &mut builds {
            let (mut server, _, channel) =
                serve_bench(args, build, cluster, args.scan_json, args.single_path).await?;
            extract_one(channel.clone(), &subjects[0], None).await?;
            let (rate, latencies) = extract_many(&channel, subjects, args.concurrency).await?;
            stop_server(&mut server);
            rates.push(rate);
            p99s.push(percentile(&latencies, 0.99));
        }
    }
    let (_, rates, p99s) = &builds[0];
    let compared = builds.get(1);
    results.push(Row::new(
        "concurrent, on a server just started (subjects/s)",
        rates,
        compared.map(|(_, r, _)| r.as_slice()),
        "the --compare build",
    ));
    results.push(Row::new(
        "concurrent, on a server just started: p99 (ms)",
        p99s,
        compared.map(|(_, _, p)| p.as_slice()),
        "the --compare build",
    ));
    Ok(())
}
