//! `POST /docusign/connect`: verified, durable, deduplicated, streaming.

use crate::common;

use std::time::Duration;

use chrono::Utc;
use common::TestApp;
use countersign::config::Settings;
use countersign::ids::NotificationId;
use countersign::ingest::ConnectAuth;
use countersign::sandbox::connect::{
    ConnectFormat, ConnectSender, NotificationOptions, RetryPolicy, json_sim_body, signature_headers, xml_body,
};
use countersign::sandbox::{Envelope, Sandbox, SandboxConfig, pdf};
use countersign::store::{Disposition, EnvelopeStatus};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sandbox(document_bytes: usize) -> Sandbox {
    Sandbox::new(SandboxConfig { document_bytes, ..SandboxConfig::default() }).unwrap()
}

fn keys_toml(sandbox: &Sandbox) -> String {
    let keys: Vec<String> = sandbox.identity().hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    format!("[connect]\nhmac_keys = [{}]\n", keys.join(", "))
}

async fn app(sandbox: &Sandbox) -> TestApp {
    TestApp::spawn(common::sqlite().await, &keys_toml(sandbox)).await
}

/// Posts `body` with the given headers; returns the status and the JSON answer.
async fn post(app: &TestApp, body: Vec<u8>, content_type: &str, headers: &[(String, String)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(app.connect_url()).header("content-type", content_type).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn json_body(envelope: &Envelope, options: &NotificationOptions, retry: u32) -> Vec<u8> {
    let generated = envelope.completed_at + chrono::Duration::seconds(3);
    json_sim_body(envelope, options, retry, generated)
}

async fn post_signed(app: &TestApp, sandbox: &Sandbox, body: Vec<u8>, content_type: &str) -> (u16, Value) {
    let mut headers = signature_headers(&body, &sandbox.identity().hmac_keys);
    // As Connect does when it signs.
    headers.push(("X-DocuSign-AccountId".into(), sandbox.identity().account_id.to_string()));
    post(app, body, content_type, &headers).await
}

/// `process_envelope` jobs in any state: workers may already have taken them.
async fn jobs(app: &TestApp) -> u64 {
    let stats = app.store.queue_stats().await.unwrap();
    stats.iter().filter(|s| s.kind == "process_envelope").map(|s| s.count).sum()
}

#[tokio::test]
async fn json_and_xml_notifications_are_stored_with_a_job_before_the_200() {
    let sandbox = sandbox(5_000);
    let app = app(&sandbox).await;
    let envelopes = sandbox.complete_envelopes(2);

    let (status, answer) =
        post_signed(&app, &sandbox, json_body(&envelopes[0], &NotificationOptions::default(), 0), "application/json")
            .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let body = xml_body(&envelopes[1], &NotificationOptions::default(), -7);
    // Recognised by content: a wrong Content-Type does not matter.
    let (status, answer) = post_signed(&app, &sandbox, body, "application/octet-stream").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");

    for (envelope, format) in envelopes.iter().zip(["json", "xml"]) {
        let notifications = app.store.enqueued_notifications(envelope.envelope_id).await.unwrap();
        assert_eq!(notifications.len(), 1);
        let n = &notifications[0].new;
        assert_eq!((n.format.as_str(), n.event.as_str()), (format, "envelope-completed"));
        assert_eq!(n.account_id, sandbox.identity().account_id);
        assert_eq!(n.disposition, Disposition::Enqueued);
        let record = app.store.envelope(envelope.envelope_id).await.unwrap().unwrap();
        assert_eq!(record.status, EnvelopeStatus::Received);
        assert_eq!(record.subject.as_deref(), Some(envelope.subject.as_str()));
    }
    assert_eq!(jobs(&app).await, 2, "one process_envelope job per envelope");
}

#[tokio::test]
async fn embedded_documents_are_stored_byte_identical() {
    let sandbox = sandbox(30_000);
    let app = app(&sandbox).await;
    let envelopes = sandbox.complete_envelopes(2);
    let options = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    let json = json_body(&envelopes[0], &options, 0);
    assert_eq!(post_signed(&app, &sandbox, json, "application/json").await.0, 200);
    let xml = xml_body(&envelopes[1], &options, -8);
    assert_eq!(post_signed(&app, &sandbox, xml, "text/xml").await.0, 200);

    for envelope in &envelopes {
        let stored = app.store.documents(envelope.envelope_id).await.unwrap();
        assert_eq!(stored.len(), envelope.documents.len() + 1, "every document and the certificate");
        for record in &stored {
            let expected = if record.document_id == "certificate" {
                pdf::certificate_pdf(envelope)
            } else {
                let doc = envelope.documents.iter().find(|d| d.document_id == record.document_id).unwrap();
                pdf::document_pdf(envelope, doc)
            };
            assert_eq!(record.sha256, hex::encode(Sha256::digest(&expected)));
            assert_eq!(record.size_bytes, expected.len() as u64);
            let on_disk = std::fs::read(app.documents_dir.path().join(&record.storage_key)).unwrap();
            assert!(on_disk == expected, "{} is byte-identical", record.storage_key);
            assert!(record.storage_key.starts_with(&format!("{}/{}/", envelope.account_id, envelope.envelope_id)));
        }
    }
}

#[tokio::test]
async fn a_redelivery_is_answered_200_and_enqueues_nothing_new() {
    let sandbox = sandbox(5_000);
    let app = app(&sandbox).await;
    let envelope = sandbox.complete_envelopes(1).remove(0);
    let options = NotificationOptions::default();
    assert_eq!(
        post_signed(&app, &sandbox, json_body(&envelope, &options, 0), "application/json").await.1["status"],
        "accepted"
    );
    // Connect's retry: same message, retryCount 1, so a different body.
    let (status, answer) = post_signed(&app, &sandbox, json_body(&envelope, &options, 1), "application/json").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));
    // A byte-identical replay.
    let (status, answer) = post_signed(&app, &sandbox, json_body(&envelope, &options, 0), "application/json").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));

    assert_eq!(app.store.enqueued_notifications(envelope.envelope_id).await.unwrap().len(), 1);
    assert_eq!(jobs(&app).await, 1);
}

#[tokio::test]
async fn an_event_not_processed_is_recorded_and_answered_200() {
    let sandbox = sandbox(5_000);
    let app = app(&sandbox).await;
    let envelope = sandbox.complete_envelopes(1).remove(0);
    let options = NotificationOptions { event: "recipient-completed".into(), ..NotificationOptions::default() };
    let (status, answer) = post_signed(&app, &sandbox, json_body(&envelope, &options, 0), "application/json").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")));
    let id =
        NotificationId::parse(answer["notification_id"].as_str().expect("the answer names the notification")).unwrap();
    let recorded = app.store.notification(id).await.unwrap().expect("the ignored notification is recorded");
    assert_eq!(recorded.new.disposition, Disposition::Ignored);
    assert_eq!(recorded.new.recipient_id.as_deref(), Some(envelope.signers.last().unwrap().recipient_id.as_str()));
    // Not listed with the envelope's processing (nor counted as received by reconciliation).
    assert!(app.store.enqueued_notifications(envelope.envelope_id).await.unwrap().is_empty());
    // Recorded all the same: Connect's retry of it is a duplicate.
    let (status, answer) = post_signed(&app, &sandbox, json_body(&envelope, &options, 1), "application/json").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(jobs(&app).await, 0);
    assert!(app.store.envelope(envelope.envelope_id).await.unwrap().is_none());
}

fn signature(key: &str, body: &[u8]) -> String {
    signature_headers(body, &[key.to_string()]).remove(0).1
}

#[tokio::test]
async fn any_signature_header_matching_any_key_passes() {
    let sandbox = sandbox(5_000);
    let key = sandbox.identity().hmac_keys[0].clone();
    // Two keys during a rotation: the old one (the sandbox's) and a new one.
    let app = TestApp::spawn(common::sqlite().await, &format!("[connect]\nhmac_keys = [\"new-key\", {key:?}]\n")).await;
    let envelopes = sandbox.complete_envelopes(4);
    let body = |n: usize| json_body(&envelopes[n], &NotificationOptions::default(), 0);

    let one = vec![("X-DocuSign-Signature-1".to_string(), signature(&key, &body(0)))];
    assert_eq!(post(&app, body(0), "application/json", &one).await.0, 200, "one header");

    let two = vec![
        ("X-DocuSign-Signature-1".to_string(), signature("new-key", &body(1))),
        ("X-DocuSign-Signature-2".to_string(), signature("retired-key", &body(1))),
    ];
    assert_eq!(post(&app, body(1), "application/json", &two).await.0, 200, "two headers, one matching");

    let mut hundred: Vec<(String, String)> =
        (1..100).map(|n| (format!("X-DocuSign-Signature-{n}"), signature(&format!("junk-{n}"), &body(2)))).collect();
    hundred.push(("x-docusign-signature-100".into(), signature(&key, &body(2))));
    assert_eq!(post(&app, body(2), "application/json", &hundred).await.0, 200, "the 100th header matches");

    let wrong = vec![("X-DocuSign-Signature-1".to_string(), signature("not-a-key", &body(3)))];
    assert_eq!(post(&app, body(3), "application/json", &wrong).await.0, 401);
    assert_eq!(app.store.count_notifications().await.unwrap(), 3);
}

#[tokio::test]
async fn a_reloaded_key_ring_takes_effect_without_a_restart() {
    let sandbox = sandbox(5_000);
    let app = app(&sandbox).await;
    let envelopes = sandbox.complete_envelopes(2);
    let body = json_body(&envelopes[0], &NotificationOptions::default(), 0);

    let rotated = Settings::from_toml("[connect]\nhmac_keys = [\"rotated-key\"]\n").unwrap();
    app.keys.replace(ConnectAuth::from_settings(&rotated));
    assert_eq!(post_signed(&app, &sandbox, body.clone(), "application/json").await.0, 401, "the old key is gone");
    let headers = vec![("X-DocuSign-Signature-1".to_string(), signature("rotated-key", &body))];
    assert_eq!(post(&app, body, "application/json", &headers).await.0, 200, "the new key works");
}

#[tokio::test]
async fn per_account_keys_vouch_only_for_their_account() {
    let sandbox = sandbox(5_000);
    let account = sandbox.identity().account_id;
    let other = uuid::Uuid::new_v4().to_string();
    let toml = format!(
        "[[connect.accounts]]\naccount_id = \"{account}\"\nhmac_keys = [\"account-key\"]\n\
         [[connect.accounts]]\naccount_id = \"{other}\"\nhmac_keys = [\"other-key\"]\n"
    );
    let app = TestApp::spawn(common::sqlite().await, &toml).await;
    let envelopes = sandbox.complete_envelopes(2);
    let body = json_body(&envelopes[0], &NotificationOptions::default(), 0);
    let headers = vec![
        ("X-DocuSign-Signature-1".to_string(), signature("account-key", &body)),
        ("X-DocuSign-AccountId".to_string(), account.to_string()),
    ];
    assert_eq!(post(&app, body, "application/json", &headers).await.0, 200);

    // Another account's key cannot vouch for this account's envelope, whatever the header claims.
    let body = json_body(&envelopes[1], &NotificationOptions::default(), 0);
    let headers = vec![
        ("X-DocuSign-Signature-1".to_string(), signature("other-key", &body)),
        ("X-DocuSign-AccountId".to_string(), other),
    ];
    assert_eq!(post(&app, body, "application/json", &headers).await.0, 401);
    assert_eq!(app.store.count_notifications().await.unwrap(), 1);
}

/// Account A's key cannot touch account B's envelope: a notification signed
/// for A that names B's envelope (with other PDF bytes) is refused with 403
/// and stores nothing: no notification, no change to the envelope, its
/// documents or its job, no file.
#[tokio::test]
async fn a_notification_naming_another_accounts_envelope_is_refused_and_stores_nothing_on_sqlite() {
    another_accounts_envelope(common::sqlite().await).await;
}

#[tokio::test]
async fn a_notification_naming_another_accounts_envelope_is_refused_and_stores_nothing_on_postgres() {
    another_accounts_envelope(common::postgres().await).await;
}

async fn another_accounts_envelope(db: common::TestStore) {
    let sandbox = sandbox(5_000);
    let owner = sandbox.identity().account_id;
    let intruder = countersign::ids::AccountId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let toml = format!(
        "[[connect.accounts]]\naccount_id = \"{owner}\"\nhmac_keys = [\"owner-key\"]\n\
         [[connect.accounts]]\naccount_id = \"{intruder}\"\nhmac_keys = [\"intruder-key\"]\n"
    );
    let app = TestApp::spawn(db, &toml).await;
    let envelopes = sandbox.complete_envelopes(2);
    let with_documents = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    let signed = |key: &str, account: &str, body: &[u8]| {
        vec![
            ("X-DocuSign-Signature-1".to_string(), signature(key, body)),
            ("X-DocuSign-AccountId".to_string(), account.to_string()),
        ]
    };
    let body = json_body(&envelopes[0], &with_documents, 0);
    let (status, answer) =
        post(&app, body.clone(), "application/json", &signed("owner-key", &owner.to_string(), &body)).await;
    assert_eq!(status, 200, "{answer}");
    let id = envelopes[0].envelope_id;
    let envelope_before = app.store.envelope(id).await.unwrap().unwrap();
    let documents_before = app.store.documents(id).await.unwrap();
    assert!(!documents_before.is_empty());
    let jobs_before = jobs(&app).await;

    // The second envelope's documents, renamed as the first envelope of the
    // intruder's account, with and without embedded documents.
    let mut forged = envelopes[1].clone();
    forged.envelope_id = id;
    forged.account_id = intruder;
    for options in [with_documents, NotificationOptions::default()] {
        let body = json_body(&forged, &options, 0);
        let (status, answer) =
            post(&app, body.clone(), "application/json", &signed("intruder-key", &intruder.to_string(), &body)).await;
        assert_eq!((status, answer["error"].as_str()), (403, Some("forbidden")), "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("another account"), "{answer}");
    }

    assert_eq!(app.store.count_notifications().await.unwrap(), 1, "no notification row");
    let envelope = app.store.envelope(id).await.unwrap().unwrap();
    assert_eq!((envelope.account_id, &envelope.subject), (owner, &envelope_before.subject), "the envelope row");
    assert_eq!(app.store.documents(id).await.unwrap(), documents_before, "the document rows");
    assert_eq!(jobs(&app).await, jobs_before, "no job");
    // The only files are the owner's documents: none under the intruder's
    // account, none left in staging.
    let mut files = Vec::new();
    let mut dirs = vec![app.documents_dir.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    let owner_dir = app.documents_dir.path().join(owner.to_string());
    assert!(files.iter().all(|f| f.starts_with(&owner_dir)), "{files:?}");
    assert_eq!(files.len(), documents_before.len(), "{files:?}");
}

#[tokio::test]
async fn basic_auth_is_checked_on_top_of_the_signature() {
    let sandbox = sandbox(5_000);
    let toml = format!("{}basic_auth_user = \"docusign\"\nbasic_auth_password = \"s3cret\"\n", keys_toml(&sandbox));
    let app = TestApp::spawn(common::sqlite().await, &toml).await;
    let envelopes = sandbox.complete_envelopes(2);
    let keys = sandbox.identity().hmac_keys.clone();
    let policy = RetryPolicy { max_retries: 0, interval: Duration::from_millis(10), timeout: Duration::from_secs(10) };

    let without = ConnectSender::new(app.connect_url(), keys.clone(), policy);
    let report = without.send(&envelopes[0], ConnectFormat::Json, &NotificationOptions::default()).await;
    assert_eq!(report.last_status, Some(401));
    let with = ConnectSender::new(app.connect_url(), keys, policy).with_basic_auth("docusign", "s3cret");
    let report = with.send(&envelopes[1], ConnectFormat::Json, &NotificationOptions::default()).await;
    assert!(report.delivered, "{report:?}");
}

/// An account set up with Basic authentication only: Connect signs nothing
/// and sends no `X-DocuSign-AccountId`; legacy XML names the account by its
/// number. The configuration maps the number, or names one account only.
#[tokio::test]
async fn legacy_xml_without_the_account_header_finds_its_account_by_number_or_is_refused() {
    let sandbox = sandbox(5_000);
    let account = sandbox.identity().account_id;
    let number = countersign::sandbox::identity::account_number(account);
    let basic = "[connect]\nverify_hmac = false\nbasic_auth_user = \"docusign\"\nbasic_auth_password = \"s3cret\"\n";
    let other = "0b1c2d3e-4f50-4a61-8b72-9c0d1e2f3a4b";
    let policy = RetryPolicy { max_retries: 0, interval: Duration::from_millis(10), timeout: Duration::from_secs(10) };
    let send = |app: &TestApp, envelope: &Envelope| {
        let sender = ConnectSender::new(app.connect_url(), Vec::new(), policy).with_basic_auth("docusign", "s3cret");
        let envelope = envelope.clone();
        async move { sender.send(&envelope, ConnectFormat::Xml, &NotificationOptions::default()).await }
    };
    let envelopes = sandbox.complete_envelopes(3);

    // Two accounts configured and neither mapped: refused, naming the setting.
    let unmapped = format!(
        "{basic}[[connect.accounts]]\naccount_id = \"{account}\"\nhmac_keys = [\"k1\"]\n\
         [[connect.accounts]]\naccount_id = \"{other}\"\nhmac_keys = [\"k2\"]\n"
    );
    let app = TestApp::spawn(common::sqlite().await, &unmapped).await;
    let body = xml_body(&envelopes[0], &NotificationOptions::default(), 0);
    let (status, answer) = post(&app, body, "text/xml", &[basic_header()]).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("account_number") && message.contains(&number), "{message}");
    assert!(app.store.enqueued_notifications(envelopes[0].envelope_id).await.unwrap().is_empty());
    app.shutdown().await;

    // The number mapped to the account's GUID.
    let mapped = unmapped.replacen("hmac_keys = [\"k1\"]", &format!("account_number = \"{number}\""), 1);
    let app = TestApp::spawn(common::sqlite().await, &mapped).await;
    let report = send(&app, &envelopes[1]).await;
    assert!(report.delivered, "{report:?}");
    let stored = app.store.enqueued_notifications(envelopes[1].envelope_id).await.unwrap();
    assert_eq!(stored[0].new.account_id, account);
    app.shutdown().await;

    // One account configured (here under docusign.accounts): it is that one.
    let user = sandbox.identity().user.user_id;
    let only = format!("{basic}[[docusign.accounts]]\naccount_id = \"{account}\"\nuser_id = \"{user}\"\n");
    let app = TestApp::spawn(common::sqlite().await, &only).await;
    assert!(send(&app, &envelopes[2]).await.delivered);
    let stored = app.store.enqueued_notifications(envelopes[2].envelope_id).await.unwrap();
    assert_eq!(stored[0].new.account_id, account);
    app.shutdown().await;
}

fn basic_header() -> (String, String) {
    use base64::Engine as _;
    ("Authorization".into(), format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("docusign:s3cret")))
}

#[tokio::test]
async fn a_fifty_megabyte_xml_notification_is_accepted_and_its_documents_stored_whole() {
    let sandbox = Sandbox::new(SandboxConfig {
        document_bytes: 13_000_000,
        max_documents: 3,
        seed: 7,
        ..SandboxConfig::default()
    })
    .unwrap();
    let app = app(&sandbox).await;
    let envelope = loop {
        let envelope = sandbox.complete_envelopes(1).remove(0);
        if envelope.documents.len() == 3 {
            break envelope;
        }
    };
    let options = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    let body = xml_body(&envelope, &options, -5);
    assert!(body.len() > 50_000_000, "the body is {} bytes", body.len());
    let (status, answer) = post_signed(&app, &sandbox, body, "text/xml").await;
    assert_eq!(status, 200, "{answer}");
    let stored = app.store.documents(envelope.envelope_id).await.unwrap();
    assert_eq!(stored.len(), 4);
    for document in &envelope.documents {
        let record = stored.iter().find(|r| r.document_id == document.document_id).unwrap();
        let expected = pdf::document_pdf(&envelope, document);
        assert_eq!(record.sha256, hex::encode(Sha256::digest(&expected)));
    }
}

async fn many_notifications_over_many_connections(db: common::TestStore) {
    let sandbox = sandbox(5_000);
    let app = TestApp::spawn(db, &keys_toml(&sandbox)).await;
    let envelopes = sandbox.complete_envelopes(2000);
    let keys = sandbox.identity().hmac_keys.clone();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(envelopes.clone()));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (queue, client, keys, url) = (queue.clone(), client.clone(), keys.clone(), app.connect_url());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(envelope) = queue.lock().await.pop() else { return };
                let options = NotificationOptions { include_summary: false, ..NotificationOptions::default() };
                let body = json_sim_body(&envelope, &options, 0, Utc::now());
                let mut request = client.post(&url).header("content-type", "application/json").body(body.clone());
                for (name, value) in signature_headers(&body, &keys) {
                    request = request.header(name, value);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(app.store.count_notifications().await.unwrap(), 2000);
    assert_eq!(jobs(&app).await, 2000);
    for envelope in envelopes.iter().step_by(97) {
        assert_eq!(app.store.enqueued_notifications(envelope.envelope_id).await.unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_notifications_over_64_connections_are_stored_once_on_sqlite() {
    many_notifications_over_many_connections(common::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_notifications_over_64_connections_are_stored_once_on_postgres() {
    many_notifications_over_many_connections(common::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_gets_503_never_200() {
    let sandbox = sandbox(5_000);
    let db = common::postgres().await;
    let database = db.url.rsplit('/').next().unwrap().to_string();
    let app = TestApp::spawn(db, &keys_toml(&sandbox)).await;
    let envelopes = sandbox.complete_envelopes(2);
    let body = json_body(&envelopes[0], &NotificationOptions::default(), 0);
    assert_eq!(post_signed(&app, &sandbox, body, "application/json").await.0, 200);

    // The database disappears under the running service.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&common::postgres_admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE \"{database}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
    let body = json_body(&envelopes[1], &NotificationOptions::default(), 0);
    let (status, answer) = post_signed(&app, &sandbox, body, "application/json").await;
    assert_eq!(status, 503, "{answer}");
}

#[tokio::test]
async fn unsigned_notifications_pass_only_when_hmac_is_switched_off_explicitly() {
    let sandbox = sandbox(5_000);
    let envelopes = sandbox.complete_envelopes(2);
    let signed_only = app(&sandbox).await;
    let body = json_body(&envelopes[0], &NotificationOptions::default(), 0);
    assert_eq!(post(&signed_only, body.clone(), "application/json", &[]).await.0, 401);

    let open = TestApp::spawn(common::sqlite().await, "[connect]\nverify_hmac = false\n").await;
    assert_eq!(post(&open, body, "application/json", &[]).await.0, 200);
}
