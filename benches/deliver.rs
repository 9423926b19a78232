//! Webhook delivery: events delivered per second to one local receiver with
//! 64 deliveries in flight, against the receiver's own rate when 64 clients
//! post to it directly (the ceiling of this machine); and the latency from
//! the outbox commit to the receiver at a steady 200 events per second; and
//! the whole pipeline at 200 envelopes per second: from the Connect
//! notification's POST to its event at the receiver, through the listener,
//! `process_envelope` (one combined-PDF download from the in-process DocuSign
//! sandbox per envelope), the rules and the outbox.
//!
//! Run by hand: `cargo bench --bench deliver` (PostgreSQL at POSTGRES_URL,
//! default postgres://postgres@127.0.0.1:5432/test). EVENTS=2000 to change size,
//! ENVELOPES=2000 the number of envelopes sent at 200/s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use countersign::config::Settings;
use countersign::deliver::receiver::WebhookReceiver;
use countersign::domain::{ConnectNotification, Envelope, Format};
use countersign::events::{Plan, Planner};
use countersign::ids::{AccountId, EnvelopeId};
use countersign::pipeline::write_outbox;
use countersign::sandbox::connect::{NotificationOptions, json_sim_body, signature_headers};
use countersign::sandbox::{Sandbox, SandboxConfig};
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
        user_id: None,
        recipient_id: None,
        generated_at: Utc::now(),
        envelope: Envelope {
            account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
            envelope_id: EnvelopeId::from_uuid(uuid::Uuid::new_v4()),
            status: Some("completed".into()),
            subject: Some("Offer letter".into()),
            sender: None,
            completed_at: Some(Utc::now()),
            recipients: Vec::new(),
            custom_fields: vec![("Employee ID".into(), "E-1".into())],
            documents: Vec::new(),
        },
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
        envelope_id: envelope.envelope.envelope_id,
        account_id: envelope.envelope.account_id,
        status: EnvelopeStatus::Processed,
        subject: envelope.envelope.subject.clone(),
        completed_at: envelope.envelope.completed_at,
    })
    .await
    .unwrap();
    write_outbox(&mut *tx, &plan.events, plan.max_attempts).await.unwrap();
    tx.commit().await.unwrap();
    plan
}

fn settings_toml(store_url: &str, documents: &std::path::Path, receiver: &str) -> String {
    format!(
        "[store]\nurl = \"{store_url}\"\nmax_connections = 32\n[documents]\nurl = \"file://{}\"\n\
         [queue]\nworkers = {IN_FLIGHT}\n[log]\nfilter = \"error\"\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{receiver}\"\nsecret = \"{SECRET}\"\nmax_in_flight = {IN_FLIGHT}\n",
        documents.display()
    )
}

fn settings(store_url: &str, documents: &std::path::Path, receiver: &str) -> Settings {
    Settings::from_toml(&settings_toml(store_url, documents, receiver)).unwrap()
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

/// Connect notification → event at the receiver, `n` envelopes sent at 200/s.
async fn pipeline(store_url: &str, n: usize) -> Run {
    // With DocuSign's own limits (200 calls per 30 s on demo accounts) the account, not countersign, sets the
    // pace: about 6.7 downloads a second. Lifted here to measure countersign.
    let sandbox = Sandbox::new(SandboxConfig {
        document_bytes: 20_000,
        hourly_limit: u32::MAX,
        burst_limit: u32::MAX,
        ..SandboxConfig::default()
    })
    .unwrap();
    let running = sandbox.serve("127.0.0.1:0").await.unwrap();
    let identity = sandbox.identity().clone();
    sandbox.grant_consent(identity.user.user_id, &["signature", "impersonation"]);
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let documents = tempfile::tempdir().unwrap();
    let mut toml = settings_toml(store_url, documents.path(), receiver.url());
    toml.push_str(&format!(
        "[connect]\nhmac_keys = [{:?}]\n[reconcile]\nenabled = false\n\
         [docusign]\nauth_server = {:?}\nauth_url = {:?}\nintegration_key = \"{}\"\nuser_id = \"{}\"\n\
         redirect_uri = {:?}\nprivate_key = '''\n{}'''\n",
        identity.hmac_keys[0],
        sandbox.config().auth_host,
        running.base_url(),
        identity.integration_key,
        identity.user.user_id,
        identity.redirect_uri,
        identity.private_key_pem
    ));
    let service = Service::build(Settings::from_toml(&toml).unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connect = format!("http://{}/docusign/connect", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));

    // Signed JSON SIM notifications with the envelope summary and no documents, as most accounts send them.
    let options = NotificationOptions { include_summary: true, include_documents: false, ..Default::default() };
    let bodies: Vec<(String, Vec<u8>, String)> = sandbox
        .complete_envelopes(n)
        .iter()
        .map(|envelope| {
            let body = json_sim_body(envelope, &options, 0, Utc::now());
            let signature = signature_headers(&body, &identity.hmac_keys).remove(0).1;
            (envelope.envelope_id.to_string(), body, signature)
        })
        .collect();
    let client = reqwest::Client::new();
    let mut sent = std::collections::HashMap::new();
    let mut posts = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for (envelope, body, signature) in bodies {
        tick.tick().await;
        sent.insert(envelope, Utc::now());
        let request = client
            .post(&connect)
            .header("content-type", "application/json")
            .header("x-docusign-signature-1", signature)
            .body(body);
        posts.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    }
    while let Some(answer) = posts.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), 200, "every notification acknowledged");
    }
    let delivered = receiver.wait_for_delivered(n, Duration::from_secs(600)).await.unwrap();
    let last = delivered.iter().map(|r| r.received_at).max().unwrap();
    let first = sent.values().min().copied().unwrap();
    let mut latencies: Vec<f64> = delivered
        .iter()
        .filter_map(|r| {
            let event = r.event()?;
            let at = sent.get(event["subject"].as_str()?)?;
            Some((r.received_at - *at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    assert_eq!(latencies.len(), n, "one event per envelope");
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let seconds = (last - first).num_milliseconds() as f64 / 1000.0;
    let result = Run { per_second: n as f64 / seconds, p50_ms: quantile(0.5), p99_ms: quantile(0.99) };
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

    let envelopes: usize = std::env::var("ENVELOPES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    println!("\n| store | envelopes at 200/s | events/s at the receiver | notification → event p50 | p99 |");
    println!("|---|---|---|---|---|");
    let sqlite = format!("sqlite://{}", dir.path().join("pipeline.db").display());
    let (postgres, name) = fresh_postgres().await;
    for (label, url) in [("sqlite", sqlite.as_str()), ("postgres", postgres.as_str())] {
        let r = pipeline(url, envelopes).await;
        println!("| {label} | {envelopes} | {:.0} | {:.1} ms | {:.1} ms |", r.per_second, r.p50_ms, r.p99_ms);
    }
    drop_postgres(&name).await;
}
