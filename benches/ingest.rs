//! Connect ingest: acknowledged notifications per second (2 KB JSON, 64
//! connections) on SQLite and PostgreSQL next to a bare axum handler that
//! reads the body and answers 200, all in the same run; p99 latency at half
//! the peak rate; the same with no job following each notification (the
//! listener alone); and the peak RSS of a separate `countersign serve` process
//! ingesting 10 MB and 200 MB XML notifications with embedded documents.
//!
//! Run by hand: `cargo bench --bench ingest` (PostgreSQL at POSTGRES_URL).
//! `SECONDS=10` sets the length of each throughput run; `SKIP_RSS=1` skips
//! the large-body part.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::post;
use countersign::sandbox::connect::{NotificationOptions, json_sim_body, signature_headers, xml_body};
use countersign::sandbox::{Sandbox, SandboxConfig};
// `cargo bench` passes --bench; the re-run as a bare server gets --bare-server PORT.

#[path = "support/mod.rs"]
mod support;

const CONNECTIONS: usize = 64;
const BODY_BYTES: usize = 2048;

struct Body {
    bytes: bytes::Bytes,
    signature: String,
}

/// Distinct, signed ~2 KB JSON SIM notifications (distinct, so none is a duplicate).
fn bodies(sandbox: &Sandbox, n: usize) -> Vec<Body> {
    let key = &sandbox.identity().hmac_keys;
    sandbox
        .complete_envelopes(n)
        .iter()
        .map(|envelope| {
            let options = NotificationOptions { include_summary: false, ..NotificationOptions::default() };
            let body = json_sim_body(envelope, &options, 0, chrono::Utc::now());
            let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let pad = BODY_BYTES.saturating_sub(body.len() + 20);
            value["configurationName"] = serde_json::Value::String("x".repeat(pad));
            let bytes = serde_json::to_vec(&value).unwrap();
            let signature = signature_headers(&bytes, key).remove(0).1;
            Body { bytes: bytes.into(), signature }
        })
        .collect()
}

struct Run {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Sends bodies over `CONNECTIONS` connections for `seconds`; `rate` (per
/// second, all connections together) paces an open-loop run.
async fn load(url: &str, bodies: Arc<Vec<Body>>, seconds: u64, rate: Option<f64>, wrap: bool) -> Run {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONNECTIONS {
        let (client, bodies, next, url) = (client.clone(), bodies.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let interval = rate.map(|r| Duration::from_secs_f64(CONNECTIONS as f64 / r));
            let mut due =
                Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(worker as f64 / CONNECTIONS as f64));
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(due.into()).await;
                    due += interval;
                }
                let mut i = next.fetch_add(1, Ordering::Relaxed);
                if wrap {
                    i %= bodies.len();
                }
                let Some(body) = bodies.get(i) else { break };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-DocuSign-Signature-1", &body.signature)
                    .body(body.bytes.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    Run { per_second: latencies.len() as f64 / elapsed, p50_ms: pick(0.5), p99_ms: pick(0.99) }
}

/// A child process serving on `port`, killed when dropped.
struct Server {
    child: std::process::Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_for(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

/// The baseline: this benchmark binary re-run as a bare axum server in its
/// own process, so that it and countersign are measured alike.
async fn bare_handler() -> (String, Server) {
    let port = free_port();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--bare-server", &port.to_string()])
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    wait_for(&format!("http://127.0.0.1:{port}/healthz")).await;
    (url, Server { child })
}

fn serve_bare(port: u16) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let app = axum::Router::new()
            .route("/", post(|body: bytes::Bytes| async move { drop(body) }))
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// `countersign serve` in its own process, as it runs in production.
/// Without `jobs`, `envelope-completed` is not among the processed events:
/// each notification is recorded and answered, and no job follows it.
async fn countersign(store_url: &str, dir: &std::path::Path, sandbox: &Sandbox, jobs: bool) -> (String, Server) {
    let port = free_port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    // SERVE_LOG_DIR keeps each server's output, for SERVE_LOG's debug timings.
    let log_to = |suffix: &str, otherwise: fn() -> std::process::Stdio| match std::env::var("SERVE_LOG_DIR") {
        Ok(dir) => std::fs::File::create(format!("{dir}/serve-{port}.{suffix}")).unwrap().into(),
        Err(_) => otherwise(),
    };
    if !jobs {
        command.env("COUNTERSIGN_CONNECT__PROCESS_EVENTS", r#"["recipient-completed"]"#);
    }
    let child = command
        .arg("serve")
        .current_dir(dir)
        .env("COUNTERSIGN_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("COUNTERSIGN_STORE__URL", store_url)
        .env("COUNTERSIGN_CONNECT__HMAC_KEYS", format!("[{:?}]", sandbox.identity().hmac_keys[0]))
        .env("COUNTERSIGN_LOG__FILTER", std::env::var("SERVE_LOG").unwrap_or_else(|_| "error".into()))
        .stdout(log_to("log", std::process::Stdio::null))
        .stderr(log_to("err", std::process::Stdio::inherit))
        .spawn()
        .unwrap();
    wait_for(&format!("http://127.0.0.1:{port}/healthz")).await;
    (format!("http://127.0.0.1:{port}/docusign/connect"), Server { child })
}

fn report(name: &str, run: &Run, baseline: f64) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.1} | {:.1} |",
        run.per_second,
        run.per_second / baseline,
        run.p50_ms,
        run.p99_ms
    );
}

/// Peak RSS (VmHWM) of a `countersign serve` process after it ingests one
/// XML notification whose documents add up to about `document_bytes` × n.
async fn peak_rss(document_bytes: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(SandboxConfig { document_bytes, max_documents: 3, ..SandboxConfig::default() }).unwrap();
    let envelope = loop {
        let envelope = sandbox.complete_envelopes(1).remove(0);
        if envelope.documents.len() == 3 {
            break envelope;
        }
    };
    let body =
        xml_body(&envelope, &NotificationOptions { include_documents: true, ..NotificationOptions::default() }, 0);
    let signature = signature_headers(&body, &sandbox.identity().hmac_keys).remove(0).1;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("serve")
        .current_dir(dir.path())
        .env("COUNTERSIGN_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("COUNTERSIGN_CONNECT__HMAC_KEYS", format!("[{:?}]", sandbox.identity().hmac_keys[0]))
        .env("COUNTERSIGN_CONNECT__MAX_BODY_BYTES", "400000000")
        .env("COUNTERSIGN_LOG__FILTER", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let response = client
        .post(format!("http://127.0.0.1:{port}/docusign/connect"))
        .header("content-type", "text/xml")
        .header("X-DocuSign-Signature-1", signature)
        .header("X-DocuSign-AccountId", envelope.account_id.to_string())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    (body.len() as f64 / 1e6, hwm_kb / 1024.0, body.len() as f64 / 1e6 / elapsed)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-server") {
        serve_bare(args[i + 1].parse().unwrap());
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    let seconds: u64 = std::env::var("SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    println!("generating notifications…");
    let mut chunks = bodies(&sandbox, 280_000).into_iter();
    let mut take = |n: usize| Arc::new(chunks.by_ref().take(n).collect::<Vec<_>>());

    println!("\n| target | acknowledged/s | × bare handler | p50 ms | p99 ms |\n|---|---|---|---|---|");
    let (bare_url, _bare) = bare_handler().await;
    let bare = load(&bare_url, take(5_000), seconds, None, true).await;
    report("bare axum handler (reads the body, answers 200)", &bare, bare.per_second);

    // The listener's own ceiling: the same notifications recorded, but no
    // job for the workers to claim and park at once. First, while no other
    // server's workers are still working off a backlog.
    let alone_dir = tempfile::tempdir().unwrap();
    let alone_url = format!("sqlite://{}", alone_dir.path().join("bench.db").display());
    let (alone, alone_server) = countersign(&alone_url, alone_dir.path(), &sandbox, false).await;
    let run = load(&alone, take(80_000), seconds, None, false).await;
    report("countersign, SQLite, no job follows", &run, bare.per_second);
    drop(alone_server);
    let (alone_pg_url, alone_pg_name) = support::fresh_postgres().await;
    let (alone, alone_server) = countersign(&alone_pg_url, alone_dir.path(), &sandbox, false).await;
    let run = load(&alone, take(100_000), seconds, None, false).await;
    report("countersign, PostgreSQL, no job follows", &run, bare.per_second);
    drop(alone_server);
    support::drop_postgres(&alone_pg_name).await;

    // Each store's peak and half-peak runs, then its server stops: its
    // workers are still working off the parked backlog, and must not slow
    // the next one.
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (sqlite, sqlite_server) = countersign(&sqlite_url, dir.path(), &sandbox, true).await;
    let on_sqlite = load(&sqlite, take(35_000), seconds, None, false).await;
    report("countersign, SQLite", &on_sqlite, bare.per_second);
    let sqlite_paced = load(&sqlite, take(15_000), seconds, Some(on_sqlite.per_second / 2.0), false).await;
    drop(sqlite_server);

    let (pg_url, pg_name) = support::fresh_postgres().await;
    let pg_dir = tempfile::tempdir().unwrap();
    let (pg, pg_server) = countersign(&pg_url, pg_dir.path(), &sandbox, true).await;
    let on_pg = load(&pg, take(30_000), seconds, None, false).await;
    report("countersign, PostgreSQL", &on_pg, bare.per_second);
    let pg_paced = load(&pg, take(15_000), seconds, Some(on_pg.per_second / 2.0), false).await;
    drop(pg_server);
    support::drop_postgres(&pg_name).await;

    println!("\nAt half the peak rate (open loop):\n\n| target | rate/s | p50 ms | p99 ms |\n|---|---|---|---|");
    for (name, paced) in [("SQLite", sqlite_paced), ("PostgreSQL", pg_paced)] {
        println!("| countersign, {name} | {:.0} | {:.1} | {:.1} |", paced.per_second, paced.p50_ms, paced.p99_ms);
    }

    if std::env::var("SKIP_RSS").is_err() {
        println!("\nPeak RSS of `countersign serve` ingesting one XML notification with embedded documents:\n");
        println!("| body MB | peak RSS MB | MB/s |\n|---|---|---|");
        for document_bytes in [2_500_000, 50_000_000] {
            let (mb, rss, rate) = peak_rss(document_bytes).await;
            println!("| {mb:.0} | {rss:.1} | {rate:.0} |");
        }
    }
}
