//! Shared test support: real stores on a fresh database each, and the
//! running service on a random port.

pub mod balancer;
pub mod connect_listener;
pub mod docusign;
pub mod envelopes;
pub mod moto;
pub mod pipeline;
pub mod process;
pub mod schema;
pub mod servers;

use std::sync::Arc;
use std::time::Duration;

use countersign::store::{self, Store};
use sqlx::Connection;

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store on a database nobody else uses; the database goes away with it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub url: String,
    _cleanup: Cleanup,
}

enum Cleanup {
    /// Held, not read: the directory is removed when the store is dropped.
    Dir(#[expect(dead_code, reason = "held for its Drop")] tempfile::TempDir),
    Postgres {
        name: String,
    },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Cleanup::Postgres { name } = self {
            let name = name.clone();
            // Drop runs outside any runtime the test may still be inside.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("countersign.db").display());
    let store = store::open(&url, 4).await.unwrap();
    TestStore { store, url, _cleanup: Cleanup::Dir(dir) }
}

/// Creates `countersign_test_<random>` on the local server and opens a store on it.
pub async fn postgres() -> TestStore {
    let name = fresh_postgres_database().await;
    let url = postgres_url_for(&name);
    let store = store::open(&url, 10).await.unwrap();
    TestStore { store, url, _cleanup: Cleanup::Postgres { name } }
}

/// A second store handle on the same database, as another replica would hold.
pub async fn reopen(test: &TestStore) -> Arc<dyn Store> {
    store::open(&test.url, 10).await.unwrap()
}

pub async fn fresh_postgres_database() -> String {
    let admin = postgres_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => conn,
        Err(error) => panic!(
            "PostgreSQL is not reachable at {admin} ({error}). Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
             or point POSTGRES_URL at a server where the test user may create databases."
        ),
    };
    let name = format!("countersign_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.unwrap();
    name
}

pub fn postgres_url_for(database: &str) -> String {
    let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
    url.set_path(database);
    url.to_string()
}

/// In a Prometheus scrape, the value of the sample of `name` whose labels include all of `labels`, summed over the rest.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter(|(series, _)| labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// countersign serving on a random port, stopped when dropped.
pub struct TestApp {
    pub base_url: String,
    pub store: Arc<dyn Store>,
    pub keys: countersign::ingest::KeyRing,
    /// Held so that the database outlives the service using it.
    _db: Arc<TestStore>,
    pub documents_dir: tempfile::TempDir,
    pub settings: countersign::config::Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts the service on `db` with `extra` TOML appended to a minimal configuration.
    pub async fn spawn(db: TestStore, extra: &str) -> Self {
        Self::spawn_shared(Arc::new(db), extra).await
    }

    /// Like [`TestApp::spawn`] on a database that outlives this service (a restart).
    pub async fn spawn_shared(db: Arc<TestStore>, extra: &str) -> Self {
        let documents_dir = tempfile::tempdir().unwrap();
        let settings = countersign::config::Settings::from_toml(&Self::toml(&db, &documents_dir, extra)).unwrap();
        Self::start(db, documents_dir, settings).await
    }

    /// Like [`TestApp::spawn`], with TOML that needs the service's own base
    /// URL (a Connect URL DocuSign is told to post to).
    pub async fn spawn_knowing_url(db: TestStore, extra: impl FnOnce(&str) -> String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let documents_dir = tempfile::tempdir().unwrap();
        let toml = Self::toml(&db, &documents_dir, &extra(&base_url));
        let settings = countersign::config::Settings::from_toml(&toml).unwrap();
        Self::start_on(listener, Arc::new(db), documents_dir, settings).await
    }

    /// Like [`TestApp::spawn`], with the configuration written to `config`
    /// and loaded from there (the environment too), as `serve --config`
    /// does: a reload reads that file again.
    pub async fn spawn_from_file(db: TestStore, extra: &str, config: &std::path::Path) -> Self {
        let documents_dir = tempfile::tempdir().unwrap();
        std::fs::write(config, Self::toml(&db, &documents_dir, extra)).unwrap();
        let settings = countersign::config::Settings::load(Some(config)).unwrap();
        Self::start(Arc::new(db), documents_dir, settings).await
    }

    fn toml(db: &TestStore, documents_dir: &tempfile::TempDir, extra: &str) -> String {
        format!(
            "[store]\nurl = \"{}\"\n[documents]\nurl = \"file://{}\"\n{extra}",
            db.url,
            documents_dir.path().display()
        )
    }

    async fn start(
        db: Arc<TestStore>,
        documents_dir: tempfile::TempDir,
        settings: countersign::config::Settings,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, db, documents_dir, settings).await
    }

    async fn start_on(
        listener: tokio::net::TcpListener,
        db: Arc<TestStore>,
        documents_dir: tempfile::TempDir,
        mut settings: countersign::config::Settings,
    ) -> Self {
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        // Document links in events point where this service really listens,
        // unless the test configured a public URL of its own.
        if settings.server.public_url == countersign::config::ServerSettings::default().public_url {
            settings.server.public_url.clone_from(&base_url);
        }
        let service = countersign::service::Service::build(settings.clone()).await.unwrap();
        let store = service.store.clone();
        let keys = service.keys.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run(listener, async {
            let _ = stopped.await;
        }));
        Self { base_url, store, keys, _db: db, documents_dir, settings, stop: Some(stop), task: Some(task) }
    }

    pub fn connect_url(&self) -> String {
        format!("{}/docusign/connect", self.base_url)
    }

    /// Stops the service and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs schemathesis (PyPI; scripts/test.sh installs it) against the OpenAPI
/// description at `url` with every check, a fixed seed (the same requests on
/// every run, so CI repeats itself) and `args`; fails the test on any
/// difference and returns its report.
pub async fn schemathesis(url: &str, args: &[&str]) -> String {
    let version = std::process::Command::new("schemathesis").arg("--version").output();
    assert!(
        version.is_ok_and(|out| out.status.success()),
        "schemathesis is not installed: python3 -m pip install 'schemathesis>=4,<5' (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("schemathesis");
    // A generous request timeout: the largest requests the descriptions
    // allow (100,000 sandbox envelopes at once) take seconds on a busy 2-core
    // machine, and a timeout is no difference from the description.
    command
        .args(["run", url, "--checks", "all", "--seed", "20261203", "--request-timeout", "120"])
        .args(args)
        .current_dir(dir.path());
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "schemathesis found differences:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
