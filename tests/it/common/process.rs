//! `countersign serve` as a separate process, the way it runs in production:
//! started from a config file, its logs read as they come (a full pipe would
//! stall it), stopped with SIGTERM or killed outright.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct ServeProcess {
    child: Child,
    pub base_url: String,
    logs: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl ServeProcess {
    /// Starts `countersign serve --config CONFIG` in `dir`, listening on
    /// `port`, and waits until `/readyz` answers 200.
    pub async fn start(dir: &Path, config: &Path, port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .current_dir(dir)
            .env("COUNTERSIGN_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let pipes: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for mut pipe in pipes {
            let logs = logs.clone();
            readers.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 16 * 1024];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    logs.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }));
        }
        let base_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let ready = format!("{base_url}/readyz");
        let mut process = Self { child, base_url, logs, readers };
        for _ in 0..600 {
            if let Ok(answer) = client.get(&ready).send().await
                && answer.status().is_success()
            {
                return process;
            }
            if let Some(exit) = process.child.try_wait().unwrap() {
                panic!("countersign serve exited ({exit}) before it was ready:\n{}", process.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("countersign serve was not ready within 30 s:\n{}", process.logs())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// SIGKILL: no drain, no goodbye; returns the logs.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.finish()
    }

    /// SIGTERM and the exit status; returns the logs. A process still
    /// running a minute later fails the test (and is killed) rather than
    /// hanging it.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("countersign serve did not exit within 60 s of SIGTERM:\n{}", self.finish());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (exit, self.finish())
    }

    fn finish(&mut self) -> String {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.logs()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `toml` to `dir/countersign.toml` and returns the path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("countersign.toml");
    std::fs::write(&path, toml).unwrap();
    path
}
