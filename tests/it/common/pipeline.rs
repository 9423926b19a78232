//! The whole pipeline with `countersign serve` running as its own process:
//! a DocuSign sandbox, a verifying webhook receiver, and the config file that
//! points the service at both. Shared by the crash, replica and fault tests,
//! which then check what an operator would: every acknowledged envelope's
//! documents stored with DocuSign's bytes and its event delivered under one
//! stable id, and no dead letter.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use countersign::deliver::receiver::{ReceivedWebhook, WebhookReceiver, random_secret};
use countersign::sandbox::connect::{ConnectSender, RetryPolicy};
use countersign::sandbox::{Envelope, RunningSandbox, Sandbox, SandboxConfig, pdf};
use countersign::store::Store;
use sha2::{Digest, Sha256};

use super::docusign::{connect_toml, docusign_toml};
use super::process::write_config;

pub struct Pipeline {
    pub sandbox: RunningSandbox,
    pub receiver: WebhookReceiver,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Pipeline {
    /// `extra` holds more tables (`[[sinks]]`, overrides) appended to the config.
    pub async fn new(store_url: &str, extra: &str) -> Self {
        Self::with_docusign(store_url, "", extra).await
    }

    /// [`Pipeline::new`] with `key = value` lines that override the `[docusign]` table.
    pub async fn with_docusign(store_url: &str, docusign: &str, extra: &str) -> Self {
        // DocuSign's rate limits (3,000 calls an hour, 200 per 30 s on demo accounts) would make long runs
        // wait on the account instead of on what they test; tests/it/docusign.rs proves the limits are honoured.
        let sandbox = Sandbox::new(SandboxConfig {
            document_bytes: 4_000,
            hourly_limit: u32::MAX,
            burst_limit: u32::MAX,
            ..SandboxConfig::default()
        })
        .unwrap()
        .serve("127.0.0.1:0")
        .await
        .unwrap();
        let identity = sandbox.sandbox.identity().clone();
        sandbox.sandbox.grant_consent(identity.user.user_id, &["signature", "impersonation"]);
        let secret = random_secret();
        let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The retry schedule outlasts a broker's restart (about 9 s of retries
        // was not enough for RabbitMQ on a slow machine), and a job's attempts
        // outlast DocuSign's faults (12 attempts at backoff 100 ms..1 s ran out
        // inside 9 s of faults once claims got faster): these tests expect
        // every job and delivery to succeed once the fault is gone, never a
        // dead letter.
        let config = format!(
            "[server]\nshutdown_grace = \"1s\"\n[store]\nurl = \"{store_url}\"\n\
             [documents]\nurl = \"file://{docs}\"\n[log]\nformat = \"json\"\nfilter = \"warn\"\n\
             {connect}{docusign}[queue]\nworkers = 8\nmax_attempts = 30\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\nlease = \"3s\"\n\
             [reconcile]\nenabled = false\n[delivery]\nschedule = [\"100ms\", \"200ms\", \"500ms\", \"1s\", \"2s\", \"5s\", \"10s\", \"10s\", \"10s\", \"10s\"]\n\
             [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{hook}\"\nsecret = \"{secret}\"\n{extra}",
            docs = dir.path().join("documents").display(),
            connect = connect_toml(&sandbox),
            docusign = docusign_toml(&sandbox, docusign),
            hook = receiver.url(),
        );
        let config = write_config(dir.path(), &config);
        Self { sandbox, receiver, dir, config }
    }

    /// A Connect sender to `base_url` that keeps retrying what is not acknowledged, as Connect does;
    /// a restart or a store outage takes a few seconds.
    pub fn sender(&self, base_url: &str) -> ConnectSender {
        ConnectSender::new(
            format!("{base_url}/docusign/connect"),
            self.sandbox.sandbox.identity().hmac_keys.clone(),
            RetryPolicy { max_retries: 120, interval: Duration::from_millis(250), timeout: Duration::from_secs(20) },
        )
    }

    /// Waits until an event of every one of `envelopes` was delivered; panics with `logs()` otherwise.
    /// Checks each envelope's events all carry the one stable id of (envelope, default rule) and
    /// returns the requests the receiver saw.
    pub async fn wait_for_events(
        &self,
        envelopes: &[Envelope],
        timeout: Duration,
        logs: impl Fn() -> String,
    ) -> Vec<ReceivedWebhook> {
        let done =
            self.receiver.wait_until(timeout, |requests| delivered_subjects(requests).len() >= envelopes.len()).await;
        let requests = done.unwrap_or_else(|requests| {
            panic!("only {} requests reached the receiver; the last logs:\n{}", requests.len(), logs())
        });
        let mut ids_by_envelope: HashMap<String, HashSet<String>> = HashMap::new();
        for request in requests.iter().filter(|r| r.delivered()) {
            let event = request.event().unwrap();
            ids_by_envelope
                .entry(event["subject"].as_str().unwrap().to_string())
                .or_default()
                .insert(request.webhook_id.clone().unwrap());
        }
        for envelope in envelopes {
            let ids = &ids_by_envelope[&envelope.envelope_id.to_string()];
            let expected = countersign::events::event_id(envelope.envelope_id, "default").to_string();
            assert_eq!(ids, &HashSet::from([expected]), "one stable event id for {}", envelope.envelope_id);
        }
        requests
    }

    /// No dead letter, and every envelope's documents stored byte-identical to DocuSign's.
    pub async fn assert_nothing_lost(&self, store: &dyn Store, envelopes: &[Envelope]) {
        let dead = store.dead_jobs(100).await.unwrap();
        assert!(dead.is_empty(), "no dead letters: {dead:?}");
        for envelope in envelopes {
            let documents = store.documents(envelope.envelope_id).await.unwrap();
            assert!(!documents.is_empty(), "{} has documents", envelope.envelope_id);
            for document in documents {
                let expected = docusign_bytes(envelope, &document.document_id);
                assert_eq!(document.sha256, hex::encode(Sha256::digest(&expected)), "{document:?}");
                let stored = std::fs::read(self.dir.path().join("documents").join(&document.storage_key)).unwrap();
                assert!(stored == expected, "{} is byte-identical to DocuSign's", document.storage_key);
            }
        }
    }
}

/// The envelopes (event subjects) the receiver got a delivered event of.
pub fn delivered_subjects(requests: &[ReceivedWebhook]) -> HashSet<String> {
    requests
        .iter()
        .filter(|r| r.delivered())
        .filter_map(ReceivedWebhook::event)
        .filter_map(|e| e["subject"].as_str().map(str::to_string))
        .collect()
}

/// What DocuSign holds for `document_id` of `envelope`: the bytes every stored copy must equal.
pub fn docusign_bytes(envelope: &Envelope, document_id: &str) -> Vec<u8> {
    match document_id {
        "certificate" => pdf::certificate_pdf(envelope),
        "combined" => pdf::combined_pdf(envelope, true),
        id => pdf::document_pdf(envelope, envelope.documents.iter().find(|d| d.document_id == id).unwrap()),
    }
}
