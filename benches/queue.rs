//! Queue throughput: jobs enqueued and completed per second, on SQLite and
//! PostgreSQL, with 1 and 4 workers, against the raw commit rate of the same
//! database in the same run (the floor every durable queue pays).
//!
//! Run by hand: `cargo bench --bench queue` (PostgreSQL at POSTGRES_URL,
//! default postgres://postgres@127.0.0.1:5432/test). JOBS=5000 to change size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use countersign::config::QueueSettings;
use countersign::pipeline::{JobContext, JobError, JobHandler, WorkerPool};
use countersign::store::{self, Job, NewJob, Store};
use serde_json::json;
use sqlx::{Connection, Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[path = "support/mod.rs"]
mod support;
use support::{drop_postgres, fresh_postgres};

struct Noop {
    done: AtomicUsize,
    target: usize,
    finished: Notify,
}

#[async_trait]
impl JobHandler for Noop {
    fn kind(&self) -> &'static str {
        "bench"
    }
    async fn run(&self, _job: &Job, _ctx: &JobContext) -> Result<(), JobError> {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.target {
            self.finished.notify_one();
        }
        Ok(())
    }
}

/// Single-row insert transactions per second: what one durable commit costs here.
async fn baseline_commits(url: &str, n: usize) -> f64 {
    let started;
    if url.starts_with("sqlite:") {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .unwrap()
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        conn.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id INTEGER PRIMARY KEY, payload TEXT)").await.unwrap();
        started = Instant::now();
        for i in 0..n {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("INSERT INTO bench_baseline (id, payload) VALUES (?1, '{}')")
                .bind(i as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        conn.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id BIGINT PRIMARY KEY, payload JSONB)").await.unwrap();
        started = Instant::now();
        for i in 0..n {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("INSERT INTO bench_baseline (id, payload) VALUES ($1, '{}')")
                .bind(i as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn run_queue(store: Arc<dyn Store>, workers: usize, n: usize) -> (f64, f64) {
    let started = Instant::now();
    for i in 0..n {
        store.enqueue(&NewJob::new("bench", json!({ "i": i }), 3)).await.unwrap();
    }
    let enqueue_rate = n as f64 / started.elapsed().as_secs_f64();

    let handler = Arc::new(Noop { done: AtomicUsize::new(0), target: n, finished: Notify::new() });
    let pool =
        WorkerPool::new(store.clone(), QueueSettings { workers, ..QueueSettings::default() }, vec![handler.clone()]);
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let started = Instant::now();
    let running = tokio::spawn(pool.run(stop.clone(), abort));
    tokio::time::timeout(Duration::from_secs(600), handler.finished.notified()).await.expect("bench jobs finish");
    let complete_rate = n as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    running.await.unwrap();
    (enqueue_rate, complete_rate)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    println!("{n} jobs per run; a job = enqueue + claim + complete (3 commits)\n");
    println!("| store | workers | raw commits/s | enqueued/s | completed/s | completed / raw commits |");
    println!("|---|---|---|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        for workers in [1, 4] {
            let dir = tempfile::tempdir().unwrap();
            let (url, pg_name) = if backend == "sqlite" {
                (format!("sqlite://{}", dir.path().join("bench.db").display()), None)
            } else {
                let (url, name) = fresh_postgres().await;
                (url, Some(name))
            };
            let store = store::open(&url, 10).await.unwrap();
            let raw = baseline_commits(&url, n).await;
            let (enqueued, completed) = run_queue(store.clone(), workers, n).await;
            drop(store);
            if let Some(name) = pg_name {
                drop_postgres(&name).await;
            }
            println!("| {backend} | {workers} | {raw:.0} | {enqueued:.0} | {completed:.0} | {:.2} |", completed / raw);
        }
    }
}
