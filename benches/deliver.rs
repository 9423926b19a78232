//! Webhook delivery: events delivered per second to one local receiver with
//! 64 deliveries in flight, against the receiver's own rate when 64 clients
//! post to it directly (the ceiling of this machine); and the latency from
//! the outbox commit to the receiver at a steady 200 events per second.
//!
//! Run by hand: `cargo bench --bench deliver` (PostgreSQL at POSTGRES_URL,
//! default postgres://postgres@127.0.0.1:5432/test). EVENTS=2000 to change size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use countersign::config::Settings;
use countersign::deliver::receiver::WebhookReceiver;
use countersign::events::{Plan, Planner, write_outbox};
use countersign::ids::{AccountId, EnvelopeId};
use countersign::ingest::notification::{ConnectNotification, Format};
use countersign::service::Service;
use countersign::store::{EnvelopeStatus, EnvelopeUpsert, Store};

#[path = "support/mod.rs"]
mod support;
use support::{drop_postgres, fresh_postgres};

const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const IN_FLIGHT: usize = 64;

fn envelope() -> ConnectNotification {
    ConnectNotification {
        format: Format::Json,
        event: "envelope-completed".into(),
        account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
        envelope_id: EnvelopeId::from_uuid(uuid::Uuid::new_v4()),
        user_id: None,
        recipient_id: None,
        status: Some("completed".into()),
        generated_at: Utc::now(),
        subject: Some("Offer letter".into()),
        sender: None,
        completed_at: Some(Utc::now()),
        recipients: Vec::new(),
        custom_fields: vec![("Employee ID".into(), "E-1".into())],
        documents: Vec::new(),
        embedded: Vec::new(),
        has_envelope_data: true,
    }
}

/// One envelope's events through the outbox, as `process_envelope` writes them.
async fn publish(store: &dyn Store, planner: &Planner) -> Plan {
    let envelope = envelope();
    let plan = planner.plan(&envelope, &[], &[], Utc::now());
    let mut tx = store.begin().await.unwrap();
    tx.upsert_envelope(&EnvelopeUpsert {
        envelope_id: envelope.envelope_id,
        account_id: envelope.account_id,
        status: EnvelopeStatus::Processed,
        subject: envelope.subject.clone(),
        completed_at: envelope.completed_at,
    })
    .await
    .unwrap();
    write_outbox(&mut *tx, &plan).await.unwrap();
    tx.commit().await.unwrap();
    plan
}

fn settings(store_url: &str, documents: &std::path::Path, receiver: &str) -> Settings {
    Settings::from_toml(&format!(
        "[store]\nurl = \"{store_url}\"\nmax_connections = 32\n[documents]\nurl = \"file://{}\"\n\
         [queue]\nworkers = {IN_FLIGHT}\n[log]\nfilter = \"error\"\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{receiver}\"\nsecret = \"{SECRET}\"\nmax_in_flight = {IN_FLIGHT}\n",
        documents.display()
    ))
    .unwrap()
}

/// Signed POSTs straight to the receiver from `IN_FLIGHT` tasks: what the receiver and loopback allow.
async fn receiver_ceiling(n: usize) -> f64 {
    let receiver = Arc::new(WebhookReceiver::spawn(&[SECRET]).await.unwrap());
    let key = countersign::deliver::webhook::secret_key(SECRET).unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let (client, key, url) = (client.clone(), key.clone(), receiver.url().to_string());
        tasks.spawn(async move {
            for i in (worker..n).step_by(IN_FLIGHT) {
                let id = format!("evt-{i}");
                let body = format!("{{\"id\":\"{id}\"}}");
                let timestamp = Utc::now().timestamp();
                let signature = countersign::deliver::webhook::sign(&key, &id, timestamp, body.as_bytes());
                let response = client
                    .post(&url)
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    n as f64 / started.elapsed().as_secs_f64()
}

struct Run {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run(store_url: &str, n: usize) -> Run {
    let documents = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let settings = settings(store_url, documents.path(), receiver.url());
    let planner = Planner::from_settings(&settings).unwrap();
    let service = Service::build(settings).await.unwrap();
    let store = service.store.clone();
    // Throughput: a backlog of n events, then the workers start.
    for _ in 0..n {
        publish(&*store, &planner).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let serving = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));
    receiver.wait_for_delivered(n, Duration::from_secs(600)).await.unwrap();
    let per_second = n as f64 / started.elapsed().as_secs_f64();

    // Latency: 200 events per second for five seconds, commit to receiver.
    let mut committed = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..1000 {
        tick.tick().await;
        let plan = publish(&*store, &planner).await;
        committed.insert(plan.events[0].event.id.to_string(), Utc::now());
    }
    let delivered = receiver.wait_for_delivered(n + 1000, Duration::from_secs(600)).await.unwrap();
    let mut latencies: Vec<f64> = delivered
        .iter()
        .filter_map(|r| {
            let at = committed.get(r.webhook_id.as_deref()?)?;
            Some((r.received_at - *at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let result = Run { per_second, p50_ms: quantile(0.5), p99_ms: quantile(0.99) };
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    result
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let ceiling = receiver_ceiling(n).await;
    println!("receiver ceiling: {ceiling:.0} signed POSTs/s from {IN_FLIGHT} clients\n");
    println!("| store | events | delivered/s | / ceiling | commit → receiver p50 | p99 (200/s) |");
    println!("|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (postgres, name) = fresh_postgres().await;
    for (label, url) in [("sqlite", sqlite.as_str()), ("postgres", postgres.as_str())] {
        let r = run(url, n).await;
        println!(
            "| {label} | {n} | {:.0} | {:.2} | {:.1} ms | {:.1} ms |",
            r.per_second,
            r.per_second / ceiling,
            r.p50_ms,
            r.p99_ms
        );
    }
    drop_postgres(&name).await;
}
