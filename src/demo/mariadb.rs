//! A throwaway MariaDB server, for the tests and the benchmark: `mariadb-install-db` into a
//! temporary directory, then `mariadbd` on a free loopback port and a socket of its own, with
//! an account for TCP clients. A watchdog removes it if this process dies without dropping
//! it; dropping the [`TempMariaDb`] stops it at once.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{ClusterError, free_port, running_as_root, spawn_watchdog, step};

/// The account TCP clients use.
pub const USER: &str = "dsr";

/// The demo shop in MariaDB's types: the same tables and rows as the PostgreSQL demo.
pub const DEMO_SCHEMA: &str = include_str!("schema.mariadb.sql");

/// The environment variable the MariaDB demo source reads its password from.
pub const PASSWORD_ENV: &str = "DSR_DEMO_MARIADB_PASSWORD";

/// The demo shop's data map as a `kind = "mysql"` source named `name`, for a MariaDB at
/// `host:port` holding the shop in `database`: the PostgreSQL demo's tables, categories and
/// erase policies.
pub fn source_toml(name: &str, host: &str, port: u16, database: &str) -> String {
    let template = super::DATAMAP_TEMPLATE;
    let sources = &template[template.find("[[sources]]").unwrap_or(0)..];
    sources
        .lines()
        .map(|line| match line {
            "name = \"demo\"" => format!("name = \"{name}\"\nkind = \"mysql\""),
            _ => line
                .replace("{host}", host)
                .replace("{port}", &port.to_string())
                .replace("{database}", database)
                .replace("{user}", USER)
                .replace(super::PASSWORD_ENV, PASSWORD_ENV)
                .replace("ssl_mode = \"prefer\"", "ssl_mode = \"preferred\""),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The demo's classification categories (the data map's text before its source).
pub fn categories_toml() -> &'static str {
    let template = super::DATAMAP_TEMPLATE;
    &template[..template.find("[[sources]]").unwrap_or(0)]
}

/// A running throwaway MariaDB. Dropping it stops the server and removes its files.
pub struct TempMariaDb {
    dir: Option<tempfile::TempDir>,
    server: Option<Child>,
    /// The `mariadbd` program.
    program: PathBuf,
    /// TLS: the certificate and key files, and whether plaintext clients are refused.
    tls: Option<(PathBuf, PathBuf, bool)>,
    port: u16,
    password: String,
}

impl std::fmt::Debug for TempMariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempMariaDb")
            .field("port", &self.port)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

impl TempMariaDb {
    /// Creates and starts a server. Blocks until it accepts connections.
    pub fn start() -> Result<TempMariaDb, ClusterError> {
        TempMariaDb::start_with_tls(None)
    }

    /// Creates and starts a server with TLS: `tls` is its certificate and key (PEM), and
    /// whether it refuses plaintext clients (`require_secure_transport`).
    pub fn start_with_tls(tls: Option<(&str, &str, bool)>) -> Result<TempMariaDb, ClusterError> {
        let install = find("mariadb-install-db").ok_or_else(missing)?;
        let server = find("mariadbd").ok_or_else(missing)?;
        let dir = tempfile::Builder::new()
            .prefix("dsr-mariadb-")
            .tempdir()
            .map_err(|e| step("creating a temporary directory", e))?;
        let data = dir.path().join("data");
        let user = if running_as_root() { "root" } else { "" };
        let mut init = Command::new(&install);
        init.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if !user.is_empty() {
            init.arg(format!("--user={user}"));
        }
        // Seen to fail now and then on a busy machine: a second try, into a fresh directory.
        if run(&mut init, "mariadb-install-db").is_err() {
            let _ = std::fs::remove_dir_all(&data);
            run(&mut init, "mariadb-install-db")?;
        }

        let socket = dir.path().join("mariadb.sock");
        let pid_file = dir.path().join("mariadb.pid");
        spawn_watchdog(dir.path(), &pid_file, "KILL");
        let tls = match tls {
            Some((cert, key, require)) => {
                let (cert_file, key_file) =
                    (dir.path().join("server.crt"), dir.path().join("server.key"));
                std::fs::write(&cert_file, cert).map_err(|e| step("writing the certificate", e))?;
                std::fs::write(&key_file, key).map_err(|e| step("writing the key", e))?;
                Some((cert_file, key_file, require))
            }
            None => None,
        };
        let mut db = TempMariaDb {
            dir: Some(dir),
            server: None,
            program: server,
            tls,
            port: 0,
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        // The port was free when asked for, but another process may take it before the
        // server binds it: then the next free port is tried.
        let mut attempt = 1;
        loop {
            db.port = free_port()?;
            match db.launch()? {
                None => break,
                Some(tail) if attempt < 3 && tail.contains("Bind on TCP/IP port") => attempt += 1,
                Some(tail) => {
                    return Err(ClusterError::Step {
                        step: "starting MariaDB".into(),
                        detail: format!("mariadbd exited\nserver log:\n{tail}"),
                    });
                }
            }
        }
        let password = db.password.clone();
        db.client_over_socket(
            &socket,
            &format!(
                "CREATE USER '{USER}'@'%' IDENTIFIED BY '{password}'; \
                 GRANT ALL ON *.* TO '{USER}'@'%' WITH GRANT OPTION;"
            ),
        )?;
        Ok(db)
    }

    /// Starts `mariadbd` on the server's directory and port, and waits until it answers.
    /// `Some(log)` when it exited instead.
    fn launch(&mut self) -> Result<Option<String>, ClusterError> {
        let dir = self
            .dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        let (socket, log) = (dir.join("mariadb.sock"), dir.join("server.log"));
        let mut command = Command::new(&self.program);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            // Its own temporary files: servers of other tests share this machine's /tmp.
            .arg(format!("--tmpdir={}", dir.display()))
            .args([
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=64M",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_bin",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a test runner's Ctrl-C reaches it through the watchdog.
            .process_group(0);
        if running_as_root() {
            command.arg("--user=root");
        }
        if let Some((cert, key, require)) = &self.tls {
            command
                .arg(format!("--ssl-cert={}", cert.display()))
                .arg(format!("--ssl-key={}", key.display()));
            if *require {
                command.arg("--require-secure-transport=ON");
            }
        }
        self.server = Some(command.spawn().map_err(|e| step("starting mariadbd", e))?);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if self.client_over_socket(&socket, "SELECT 1").is_ok() {
                return Ok(None);
            }
            if let Some(child) = self.server.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.server = None;
                return Ok(Some(std::fs::read_to_string(&log).unwrap_or_default()));
            }
            if Instant::now() > until {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(ClusterError::Step {
                    step: "starting MariaDB".into(),
                    detail: format!("no answer within 60 s\nserver log:\n{tail}"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the server again after [`TempMariaDb::kill`], on the same port, with its data.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        match self.launch()? {
            None => Ok(()),
            Some(tail) => Err(ClusterError::Step {
                step: "restarting MariaDB".into(),
                detail: format!("mariadbd exited\nserver log:\n{tail}"),
            }),
        }
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (for measuring its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The password of [`USER`] (random per server).
    pub fn password(&self) -> &str {
        &self.password
    }

    fn socket(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().join("mariadb.sock"))
            .unwrap_or_default()
    }

    /// Runs `sql` with the `mariadb` client as the server's root, over its socket.
    fn client_over_socket(&self, socket: &Path, sql: &str) -> Result<String, ClusterError> {
        let mut client = Command::new(find("mariadb").ok_or_else(missing)?);
        client
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["--user=root", "--default-character-set=utf8mb4", "--batch"])
            .args(["--init-command=SET time_zone = '+00:00'", "-e", sql]);
        run_output(&mut client, "mariadb")
    }

    /// Runs SQL (several statements, a whole script) in `database` as the server's root, in
    /// the UTC time zone; returns what the client printed.
    pub fn execute(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        self.client_over_socket(&self.socket(), &format!("USE `{database}`;\n{sql}"))
    }

    /// Creates `database` (dropping one of that name) and loads the demo shop into it.
    pub fn load_demo(&self, database: &str) -> Result<(), ClusterError> {
        self.client_over_socket(
            &self.socket(),
            &format!(
                "DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}` \
                 CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
            ),
        )?;
        self.execute(database, DEMO_SCHEMA).map(drop)
    }

    /// Kills the server outright (SIGKILL), for fault tests; its files stay until the drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and removes its files.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for TempMariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

fn missing() -> ClusterError {
    ClusterError::Step {
        step: "finding MariaDB".into(),
        detail: "mariadb-install-db, mariadbd and mariadb were not found on PATH or in \
                 /usr/sbin and /usr/bin; install them, for example with `apt-get install \
                 mariadb-server mariadb-client` (scripts/prereqs.sh does)"
            .into(),
    }
}

/// A program on PATH, or in /usr/sbin or /usr/bin.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn run(command: &mut Command, what: &str) -> Result<(), ClusterError> {
    run_output(command, what).map(drop)
}

fn run_output(command: &mut Command, what: &str) -> Result<String, ClusterError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| step(what, e))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
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
