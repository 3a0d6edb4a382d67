//! A throwaway PostgreSQL cluster, for the demo, the tests and the benchmark.
//!
//! [`TempCluster::start`] finds the machine's PostgreSQL server binaries, runs `initdb` into a
//! temporary directory (as the `postgres` user when running as root, because PostgreSQL
//! refuses to run as root), and starts a server on a free loopback port with password
//! authentication. A small watchdog process removes the cluster if this process dies without
//! cleaning up (a killed test binary, say); dropping the [`TempCluster`] stops it at once.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What can stop a throwaway cluster from starting.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH, in \
         `pg_config --bindir`, or in /usr/lib/postgresql/*/bin. Install them, for example with \
         `apt-get install postgresql` (Debian/Ubuntu), `dnf install postgresql-server` (Fedora) \
         or `brew install postgresql` (macOS), or put their directory on PATH."
    )]
    BinariesNotFound,
    #[error(
        "running as root, but there is no `postgres` system user to run PostgreSQL as \
         (PostgreSQL refuses to run as root; `apt-get install postgresql` creates the user)"
    )]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Step { step: String, detail: String },
}

/// Settings for a throwaway cluster.
#[derive(Debug, Default, Clone)]
pub struct ClusterOptions {
    /// PEM certificate and key: the server then runs with `ssl = on`.
    pub tls: Option<(String, String)>,
    /// Extra `postgresql.conf` settings.
    pub settings: Vec<(String, String)>,
}

/// A running throwaway cluster. Dropping it stops the server and removes its files.
pub struct TempCluster {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    port: u16,
    password: String,
    bindir: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl std::fmt::Debug for TempCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempCluster")
            .field("data", &self.data)
            .field("port", &self.port)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// The superuser of a throwaway cluster.
pub const SUPERUSER: &str = "postgres";

impl TempCluster {
    /// Creates and starts a cluster. Blocks until the server accepts connections.
    pub fn start(options: &ClusterOptions) -> Result<TempCluster, ClusterError> {
        let bindir = find_bindir().ok_or(ClusterError::BinariesNotFound)?;
        let run_as = if running_as_root() {
            Some(postgres_user().ok_or(ClusterError::NoPostgresUser)?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("dsr-pg-")
            .tempdir()
            .map_err(|e| step("creating a temporary directory", e))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| step("handing the directory to the postgres user", e))?;
        }
        let data = dir.path().join("data");
        let password = uuid::Uuid::new_v4().simple().to_string();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).map_err(|e| step("writing the password file", e))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(|e| step("handing the password file to the postgres user", e))?;
        }

        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(&mut initdb, run_as, "initdb")?;
        let _ = std::fs::remove_file(&pwfile);

        let port = free_port()?;
        let mut conf = String::new();
        let _ = writeln!(conf, "\n# throwaway cluster settings");
        for (key, value) in [
            ("listen_addresses", "'127.0.0.1'".into()),
            (
                "unix_socket_directories",
                format!("'{}'", dir.path().display()),
            ),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("max_connections", "100".into()),
        ] {
            let _ = writeln!(conf, "{key} = {value}");
        }
        if let Some((cert, key)) = &options.tls {
            for (name, pem, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
                let path = data.join(name);
                std::fs::write(&path, pem).map_err(|e| step("writing TLS files", e))?;
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(|e| step("setting TLS file permissions", e))?;
                if let Some((uid, gid)) = run_as {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .map_err(|e| step("handing TLS files to the postgres user", e))?;
                }
            }
            let _ = writeln!(
                conf,
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
            );
        }
        for (key, value) in &options.settings {
            let _ = writeln!(conf, "{key} = {value}");
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing =
            std::fs::read_to_string(&conf_path).map_err(|e| step("reading postgresql.conf", e))?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).map_err(|e| step("writing postgresql.conf", e))?;

        // The port was free when asked for, but another process may take it before the
        // server binds it; then the next free port is tried.
        let log = dir.path().join("server.log");
        let mut port = port;
        let mut attempt = 1;
        loop {
            let mut pg_ctl = Command::new(bindir.join("pg_ctl"));
            pg_ctl
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port}"))
                .arg("start");
            match run(&mut pg_ctl, run_as, "pg_ctl start") {
                Ok(()) => break,
                Err(e) => {
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    if attempt < 3 && tail.contains("could not bind") {
                        attempt += 1;
                        port = free_port()?;
                        continue;
                    }
                    return Err(ClusterError::Step {
                        step: "starting PostgreSQL".into(),
                        detail: format!("{e}\nserver log:\n{tail}"),
                    });
                }
            }
        }
        spawn_watchdog(dir.path(), &data.join("postmaster.pid"), "QUIT");

        Ok(TempCluster {
            dir: Some(dir),
            data,
            port,
            password,
            bindir,
            run_as,
        })
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The directory of the server's Unix socket (`host` for a client that cannot reach the
    /// loopback address, such as one in another network namespace).
    pub fn socket_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (random per cluster).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The directory of the server binaries used.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A libpq-style connection string for `database`, as the superuser.
    pub fn connection_string(&self, database: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} password={} dbname={database}",
            self.host(),
            self.port,
            self.password
        )
    }

    /// Stops the server and keeps its files, so that [`TempCluster::resume`] can start it
    /// again on the same port: a database outage, for fault tests.
    pub fn pause(&self) -> Result<(), ClusterError> {
        let mut pg_ctl = Command::new(self.bindir.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run(&mut pg_ctl, self.run_as, "pg_ctl stop")
    }

    /// Starts a paused server again, on the same port.
    pub fn resume(&self) -> Result<(), ClusterError> {
        let dir = self.dir.as_ref().map(|d| d.path()).unwrap_or(&self.data);
        let mut pg_ctl = Command::new(self.bindir.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start");
        run(&mut pg_ctl, self.run_as, "pg_ctl start")
    }

    /// Freezes every process of the server (SIGSTOP to the postmaster and its children): a
    /// database that holds its connections open and answers nothing, for fault tests.
    pub fn freeze(&self) -> Result<(), ClusterError> {
        self.signal_all("STOP")
    }

    /// Wakes a frozen server (SIGCONT).
    pub fn thaw(&self) -> Result<(), ClusterError> {
        self.signal_all("CONT")
    }

    fn signal_all(&self, name: &str) -> Result<(), ClusterError> {
        let pid = postmaster_pid(&self.data)
            .ok_or_else(|| step("signal the server", "no postmaster.pid"))?;
        let mut pids = vec![pid];
        for entry in std::fs::read_dir("/proc").map_err(|e| step("list processes", e))? {
            let Ok(child) = entry.map(|e| e.file_name()) else {
                continue;
            };
            let Some(child) = child.to_str().and_then(|c| c.parse::<u32>().ok()) else {
                continue;
            };
            // /proc/<pid>/stat: "pid (comm) state ppid ...", with comm in parentheses.
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(child);
            }
        }
        for pid in pids {
            signal(pid, name);
        }
        Ok(())
    }

    /// Stops the server (fast shutdown, then immediate) and removes its files.
    pub fn stop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if let Some(pid) = postmaster_pid(&self.data) {
            signal(pid, "INT");
            let until = Instant::now() + Duration::from_secs(10);
            while self.data.join("postmaster.pid").exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.data.join("postmaster.pid").exists() {
                signal(pid, "QUIT");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = dir.close();
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(super) fn step(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Step {
        step: what.to_owned(),
        detail: e.to_string(),
    }
}

/// Runs a command, as `run_as` when given, and turns failure into a readable error.
fn run(cmd: &mut Command, run_as: Option<(u32, u32)>, what: &str) -> Result<(), ClusterError> {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").stdin(Stdio::null());
    let output = cmd.output().map_err(|e| step(what, e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(ClusterError::Step {
        step: what.to_owned(),
        detail: format!(
            "{}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Finds the directory holding `initdb` and `postgres`.
pub fn find_bindir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let from_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|initdb| initdb.is_file())
            .and_then(|initdb| std::fs::canonicalize(initdb).ok())
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
    });
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort();
    from_path
        .into_iter()
        .chain(from_pg_config)
        .chain(versioned.into_iter().rev().map(|(_, dir)| dir))
        .find(|dir| usable(dir))
}

pub(super) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` user, from the system's user database.
fn postgres_user() -> Option<(u32, u32)> {
    let output = Command::new("getent")
        .args(["passwd", "postgres"])
        .output()
        .ok()?;
    let line = String::from_utf8(output.stdout).ok()?;
    let fields: Vec<&str> = line.trim().split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// Asks the kernel for a free loopback port.
pub(super) fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| step("finding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| step("finding a free port", e))
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Starts a detached shell that waits for this process to end, then signals the server whose
/// process id is the first line of `pid_file` and removes the directory, in case this process
/// dies without dropping the server.
pub(super) fn spawn_watchdog(dir: &Path, pid_file: &Path, signal: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if [ -f '{pid_file}' ]; then kill -{signal} \"$(head -n 1 '{pid_file}')\" 2>/dev/null; sleep 1; fi; \
         rm -rf '{dir}'",
        pid = std::process::id(),
        pid_file = pid_file.display(),
        dir = dir.display(),
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}
