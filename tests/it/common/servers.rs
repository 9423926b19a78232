//! Servers of our own, started and stopped by a fault test without
//! disturbing the shared ones other tests run against: a PostgreSQL cluster,
//! a NATS server with JetStream and a RabbitMQ node, each on a free port
//! with its data in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::free_port;

/// A PostgreSQL cluster of its own (initdb), run as the `postgres` user.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn postgres_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PG_BIN") {
        return PathBuf::from(bin);
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").unwrap_or_else(|e| {
        panic!("no PostgreSQL server binaries in /usr/lib/postgresql ({e}); install postgresql or set PG_BIN")
    });
    let mut bins: Vec<PathBuf> = versions.filter_map(|v| v.ok()).map(|v| v.path().join("bin")).collect();
    bins.sort();
    bins.pop().expect("a PostgreSQL version under /usr/lib/postgresql")
}

/// Runs `program args` as the postgres user (initdb and the server refuse root).
fn as_postgres(bin: &Path, program: &str, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} through runuser ({e}); the fault tests need root"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().unwrap();
        assert!(status.success(), "chown of the cluster's directory");
        let data = dir.path().join("data");
        as_postgres(&bin, "initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        let server = Self { bin, dir, port: free_port() };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server again on the same data and port.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &options, "-w", "start"],
        );
    }

    /// Stops the server the hard way: no checkpoint, clients cut off.
    pub fn crash(&self) {
        let data = self.dir.path().join("data");
        as_postgres(&self.bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A NATS server with JetStream of its own.
pub struct PrivateNats {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> Self {
        let mut server = Self { dir: tempfile::tempdir().unwrap(), port: free_port(), child: None };
        server.resume().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same store directory and port, and waits until it accepts clients.
    pub async fn resume(&mut self) {
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} ({e}); install nats-server or set NATS_SERVER"));
        self.child = Some(child);
        for _ in 0..100 {
            if async_nats::connect(self.url()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{binary} did not accept clients on port {} within 10 s", self.port);
    }

    /// SIGKILL: the server dies without a goodbye to its clients.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.crash();
    }
}

/// A RabbitMQ node of its own (its own node name, port, config and data),
/// beside the machine's; rabbitmq-server runs it as the `rabbitmq` user.
pub struct PrivateRabbitMq {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRabbitMq {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("plugins"), "[].\n").unwrap();
        std::fs::write(dir.path().join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
        let status = Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(dir.path()).status().unwrap();
        assert!(status.success(), "chown of the node's directory to rabbitmq");
        let mut server = Self { dir, port, child: None };
        server.resume().await;
        server
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node again on the same data and port, and waits until it accepts clients.
    pub async fn resume(&mut self) {
        let path = |name: &str| self.dir.path().join(name);
        let node = format!("countersign-{}@localhost", self.port);
        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            // The machine's rabbitmq-env.conf names the shared node; this one must not read it.
            .env("RABBITMQ_CONF_ENV_FILE", path("no-env.conf"))
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("plugins"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rabbitmq-server ({e}); install rabbitmq-server"));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if amqp_connect(&self.url()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("RabbitMQ node {node} did not accept clients on port {} within 30 s", self.port);
    }

    /// SIGKILL to the node's Erlang VM: it dies without closing its connections.
    pub fn crash(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("pid"));
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        self.crash();
    }
}

/// An AMQP connection, or why not within 5 s. lapin's connect has no
/// deadline of its own: once a connection to a node that was still booting
/// waited for the handshake forever and hung a test for good.
pub async fn amqp_connect(url: &str) -> Result<lapin::Connection, String> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no AMQP handshake within 5 s".into()),
    }
}
