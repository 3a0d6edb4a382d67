//! What operators deploy beside the service, checked with the real tools: the alert rules with
//! `promtool` (syntax, and unit tests of every alert), a real Prometheus scraping a running
//! server with those rules loaded, the Grafana dashboard's every query run against that
//! Prometheus, and the Kubernetes manifests against the Kubernetes API schemas.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{config, config_text, extract, request, scrape, venv_tool};
use tonic::Code;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is missing: run scripts/prereqs.sh --clients (Debian package prometheus)")
    })
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_are_valid_and_every_alert_fires_when_it_should() {
    let dir = root().join("deploy/prometheus");
    let checked = run_ok(
        Command::new(tool("promtool"))
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dir),
    );
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    let tested = run_ok(
        Command::new(tool("promtool"))
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(&dir),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
    run_ok(
        Command::new(tool("promtool"))
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&dir),
    );
}

#[test]
fn the_kubernetes_manifests_match_the_api_schemas() {
    let validate = venv_tool("kubernetes-validate");
    let manifest = root().join("deploy/kubernetes/deployment.yaml");
    let out = run_ok(
        Command::new(&validate)
            .args(["--strict", "-k", "1.33.0"])
            .arg(&manifest),
    );
    for kind in [
        "statefulset/dsr-connector",
        "service/dsr-connector-headless",
        "service/dsr-connector",
        "horizontalpodautoscaler/dsr-connector",
        "poddisruptionbudget/dsr-connector",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{out}"
        );
    }
    // The check can fail: a misspelt field is refused.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("minReplicas: 2", "minReplica: 2");
    let broken = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(broken.path(), text).unwrap();
    let out = Command::new(&validate)
        .args(["--strict", "-k", "1.33.0"])
        .arg(broken.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field passed the check");
}

/// A Prometheus server on a free port, killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus on a free port. A port is free when probed, and another process may
    /// take it before Prometheus binds it: Prometheus then exits, and another port is tried.
    /// It counts as started once its own log says it serves, so the test never talks to a
    /// stranger on that port.
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: dsr-connector\n    static_configs:\n      - targets: [\"{target}\"]\n",
            root().join("deploy/prometheus/alerts.yml").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log_path = dir.path().join(format!("prometheus-{attempt}.log"));
            let mut child = Command::new(tool("prometheus"))
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).unwrap())
                .spawn()
                .unwrap();
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken: try another
                }
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Server is ready to receive web requests") {
                    return Prometheus {
                        child,
                        addr: format!("127.0.0.1:{port}"),
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "Prometheus did not start on port {port}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        panic!("Prometheus did not start in 5 tries");
    }

    /// GET an API path; the JSON answer, or None while the server is not up.
    async fn get(&self, path_and_query: &str) -> Option<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
        // HTTP/1.0: the answer is not chunked and ends when the connection closes.
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    async fn query(&self, promql: &str) -> serde_json::Value {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        for _ in 0..100 {
            if let Some(answer) = self.get(&format!("/api/v1/query?query={encoded}")).await {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("Prometheus never answered at {}", self.addr);
    }
}

/// The `dsr_*` metric names an expression uses, without histogram suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\bdsr_[a-z_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let name = m.as_str();
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_service_and_every_dashboard_query_runs() {
    let server = support::TestServer::start_with_metrics(config(&config_text(""))).await;
    let metrics_addr = server.metrics_addr.unwrap();
    let mut client = server.client().await;
    let x = extract(&mut client, request("email", "alice@example.com")).await;
    assert_eq!(x.code(), Code::Ok);
    let exposed = scrape(metrics_addr).await;

    let prometheus = Prometheus::start(metrics_addr);
    // The rows counter, through PromQL, once the first scrape is in.
    let mut rows = None;
    for _ in 0..100 {
        let answer = prometheus
            .query(r#"sum(dsr_rows_streamed_total{source="demo"})"#)
            .await;
        if let Some(value) = answer["data"]["result"][0]["value"][1].as_str() {
            rows = Some(value.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        rows.as_deref(),
        Some("18"),
        "the rows counter through PromQL"
    );

    // The alert rules are loaded and evaluate without error against real series.
    let mut healthy = Vec::new();
    for _ in 0..100 {
        let rules = prometheus.get("/api/v1/rules").await.unwrap_or_default();
        healthy = rules["data"]["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").to_owned(),
                    r["health"].clone(),
                )
            })
            .collect::<Vec<_>>();
        if healthy.len() == 9 && healthy.iter().all(|(_, h)| h == "ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        healthy.len() == 9 && healthy.iter().all(|(_, h)| h == "ok"),
        "{healthy:?}"
    );
    let firing = prometheus.get("/api/v1/alerts").await.unwrap();
    assert_eq!(
        firing["data"]["alerts"].as_array().map(Vec::len),
        Some(0),
        "a healthy service fires no alert: {firing}"
    );

    // Every query of the dashboard runs, and names only metrics the service exposes.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dsr-connector.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    for expr in &exprs {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$source", ".*");
        let answer = prometheus.query(&promql).await;
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
    }
    exprs.push(alerts);
    let mut names: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 12, "{names:?}");
    for name in &names {
        assert!(
            exposed.contains(&format!("\n{name}"))
                || exposed.contains(&format!(
                    "# TYPE {} ",
                    name.strip_suffix("_total").unwrap_or(name)
                )),
            "the dashboard or the alerts use {name}, which the service does not expose"
        );
    }

    drop(prometheus);
    server.stop().await.unwrap();
}
