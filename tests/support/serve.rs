//! The real `dsr-connector serve` binary as tests run it.

use super::*;

/// The real `dsr-connector serve` binary, running on this binary's cluster with the demo
/// config, its stderr collected line by line.
pub struct ServeProcess {
    /// Taken when the process is waited for; a process still here when this drops (a test
    /// that failed before it stopped it) is killed, never left running.
    child: Option<std::process::Child>,
    /// The gRPC address it listens on.
    pub addr: String,
    /// The metrics listener's address, when it has one and logs at INFO.
    pub metrics_addr: Option<String>,
    reader: Option<std::thread::JoinHandle<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ServeProcess {
    /// Starts the binary with `env` added, and waits until it listens. Understands text and
    /// JSON log lines.
    pub async fn start(env: &[(&str, &str)]) -> ServeProcess {
        ServeProcess::start_with(&config_text(""), env).await
    }

    /// Starts the binary with the config `text` and `env` added.
    pub async fn start_with(text: &str, env: &[(&str, &str)]) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dsr-connector"));
        command
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("DSR_DEMO_PASSWORD", cluster().password())
            .env("DSR_SUBJECT_KEY", SUBJECT_KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            // The `local` field of a log line, in text or JSON logs.
            let local = |line: &str| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(json) => json["fields"]["local"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                Err(_) => line
                    .rsplit("local=")
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            };
            let mut lines = Vec::new();
            let mut metrics = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The metrics listener is bound and logged before the gRPC listener.
                if line.contains("metrics listening") {
                    metrics = Some(local(&line));
                }
                if line.contains("dsr-connector listening") {
                    let _ = addr_tx.send((local(&line), metrics.clone()));
                }
                lines.push(line);
            }
            lines
        });
        let (addr, metrics_addr) =
            tokio::task::spawn_blocking(move || addr_rx.recv().expect("the server never listened"))
                .await
                .unwrap();
        ServeProcess {
            child: Some(child),
            addr,
            metrics_addr,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// A tonic client for it.
    pub async fn client(&self) -> DsrConnectorServiceClient<Channel> {
        DsrConnectorServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the process to end by itself (or by a signal sent elsewhere). Returns the
    /// exit status and every log line.
    pub async fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let (mut child, reader) = (self.child.take().unwrap(), self.reader.take().unwrap());
        tokio::task::spawn_blocking(move || (child.wait().unwrap(), reader.join().unwrap()))
            .await
            .unwrap()
    }

    /// The process's peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Sends SIGTERM and waits (off the runtime, so clients and receivers keep running).
    /// Returns the exit status and every log line.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let (mut child, reader) = (self.child.take().unwrap(), self.reader.take().unwrap());
        tokio::task::spawn_blocking(move || {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            (child.wait().unwrap(), reader.join().unwrap())
        })
        .await
        .unwrap()
    }
}
