//! Nothing acknowledged is lost across crashes. `countersign serve` runs as
//! its own process while the sandbox's Connect sender sends completed
//! envelopes at a steady rate (retrying what is not acknowledged, as Connect
//! does) and the service is killed with SIGKILL at random moments and
//! started again. Afterwards every acknowledged envelope has its documents
//! stored with DocuSign's bytes and its event delivered at least once under
//! one stable id, and there is no dead letter.
//!
//! CI runs a short version; `scripts/crash.sh` runs the long one
//! (CRASH_ENVELOPES, CRASH_KILLS, CRASH_RATE).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::docusign::{connect_toml, docusign_toml, options};
use common::process::{ServeProcess, free_port, write_config};
use countersign::deliver::receiver::{ReceivedWebhook, WebhookReceiver, random_secret};
use countersign::sandbox::connect::{ConnectFormat, ConnectSender, RetryPolicy};
use countersign::sandbox::{Envelope, Sandbox, SandboxConfig, pdf};
use rand::RngExt;
use sha2::{Digest, Sha256};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What DocuSign holds for `document_id` of `envelope`: the bytes every stored copy must equal.
fn docusign_bytes(envelope: &Envelope, document_id: &str) -> Vec<u8> {
    match document_id {
        "certificate" => pdf::certificate_pdf(envelope),
        "combined" => pdf::combined_pdf(envelope, true),
        id => pdf::document_pdf(envelope, envelope.documents.iter().find(|d| d.document_id == id).unwrap()),
    }
}

async fn crash_run(store_url: &str) {
    let envelopes_total = setting("CRASH_ENVELOPES", 300);
    let kills = setting("CRASH_KILLS", 2);
    let rate = setting("CRASH_RATE", 50);

    let sandbox = Sandbox::new(SandboxConfig { document_bytes: 4_000, ..SandboxConfig::default() })
        .unwrap()
        .serve("127.0.0.1:0")
        .await
        .unwrap();
    let identity = sandbox.sandbox.identity().clone();
    sandbox.sandbox.grant_consent(identity.user.user_id, &["signature", "impersonation"]);
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[server]\nshutdown_grace = \"1s\"\n[store]\nurl = \"{store_url}\"\n\
         [documents]\nurl = \"file://{docs}\"\n[log]\nformat = \"json\"\nfilter = \"warn\"\n\
         {connect}{docusign}[queue]\nworkers = 8\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\nlease = \"3s\"\n\
         [reconcile]\nenabled = false\n[delivery]\nschedule = [\"100ms\", \"200ms\", \"500ms\", \"1s\", \"2s\", \"5s\"]\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{hook}\"\nsecret = \"{secret}\"\n",
        docs = dir.path().join("documents").display(),
        connect = connect_toml(&sandbox),
        docusign = docusign_toml(&sandbox, ""),
        hook = receiver.url(),
    );
    let config = write_config(dir.path(), &config);
    let mut serve = Some(ServeProcess::start(dir.path(), &config, port).await);

    // Connect retries what is not acknowledged; a restart takes a second or two.
    let sender = Arc::new(ConnectSender::new(
        format!("http://127.0.0.1:{port}/docusign/connect"),
        identity.hmac_keys.clone(),
        RetryPolicy { max_retries: 60, interval: Duration::from_millis(250), timeout: Duration::from_secs(20) },
    ));
    let envelopes = sandbox.sandbox.complete_envelopes(envelopes_total);
    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap());
    let mut kill_at: Vec<usize> = {
        let mut rng = rand::rng();
        (0..kills).map(|_| rng.random_range(envelopes_total / 10..envelopes_total * 9 / 10)).collect()
    };
    kill_at.sort_unstable();
    for (i, envelope) in envelopes.iter().enumerate() {
        tick.tick().await;
        while kill_at.first() == Some(&i) {
            kill_at.remove(0);
            serve.take().unwrap().kill();
            serve = Some(ServeProcess::start(dir.path(), &config, port).await);
        }
        let (sender, envelope) = (sender.clone(), envelope.clone());
        // Half carry their documents, half leave them to be downloaded.
        let format = if i % 2 == 0 { ConnectFormat::Json } else { ConnectFormat::Xml };
        let opts = options(true, i % 4 < 2);
        sends.spawn(async move { (envelope.envelope_id, sender.send(&envelope, format, &opts).await) });
    }
    let mut acknowledged = HashSet::new();
    while let Some(sent) = sends.join_next().await {
        let (id, report) = sent.unwrap();
        assert!(report.delivered, "{id} was never acknowledged: {:?} {:?}", report.last_status, report.last_error);
        acknowledged.insert(id);
    }

    // Every acknowledged envelope's event arrives, each under one id.
    let done = receiver
        .wait_until(Duration::from_secs(180), |requests| {
            let subjects: HashSet<String> = requests
                .iter()
                .filter(|r| r.delivered())
                .filter_map(ReceivedWebhook::event)
                .filter_map(|e| e["subject"].as_str().map(str::to_string))
                .collect();
            subjects.len() >= acknowledged.len()
        })
        .await;
    let logs = serve.as_ref().unwrap().logs();
    let requests = done.unwrap_or_else(|requests| {
        panic!("only {} requests reached the receiver; the last logs:\n{logs}", requests.len())
    });
    let mut ids_by_envelope: HashMap<String, HashSet<String>> = HashMap::new();
    for request in requests.iter().filter(|r| r.delivered()) {
        let event = request.event().unwrap();
        ids_by_envelope
            .entry(event["subject"].as_str().unwrap().to_string())
            .or_default()
            .insert(request.webhook_id.clone().unwrap());
    }
    for envelope in &envelopes {
        let ids = &ids_by_envelope[&envelope.envelope_id.to_string()];
        let expected = countersign::events::event_id(envelope.envelope_id, "default").to_string();
        assert_eq!(ids, &HashSet::from([expected]), "one stable event id for {}", envelope.envelope_id);
    }
    let delivered = requests.iter().filter(|r| r.delivered()).count();
    println!(
        "{store_url}: {} envelopes, {kills} SIGKILLs, {} requests to the receiver, {} duplicate deliveries",
        envelopes.len(),
        requests.len(),
        delivered - envelopes.len()
    );

    // Stop it, then look at the store the way an operator would.
    let (exit, _) = serve.take().unwrap().terminate();
    assert!(exit.success());
    let store = countersign::store::open(store_url, 2).await.unwrap();
    let dead = store.dead_jobs(100).await.unwrap();
    assert!(dead.is_empty(), "no dead letters: {dead:?}");
    for envelope in &envelopes {
        let documents = store.documents(envelope.envelope_id).await.unwrap();
        assert!(!documents.is_empty(), "{} has documents", envelope.envelope_id);
        for document in documents {
            let expected = docusign_bytes(envelope, &document.document_id);
            assert_eq!(document.sha256, hex::encode(Sha256::digest(&expected)), "{document:?}");
            let stored = std::fs::read(dir.path().join("documents").join(&document.storage_key)).unwrap();
            assert!(stored == expected, "{} is byte-identical to DocuSign's", document.storage_key);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_on_sqlite() {
    let db = common::sqlite().await;
    crash_run(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_on_postgres() {
    let db = common::postgres().await;
    crash_run(&db.url).await;
}
