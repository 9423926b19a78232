//! The operator's day two: a flagged envelope processed again after a rule
//! fix (`countersign reprocess`, the admin API and page action), and rules
//! tried out before they go live (`countersign rules test`).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::docusign::{connect_toml, docusign_toml, options, sandbox, send_all, sender};
use common::{TestApp, TestStore, eventually};
use countersign::deliver::receiver::{ReceivedWebhook, WebhookReceiver, random_secret};
use countersign::sandbox::connect::{ConnectFormat, NotificationOptions, json_sim_body, xml_body};
use countersign::sandbox::{Envelope, RunningSandbox};
use countersign::store::{EnvelopeStatus, JobState};

const WAIT: Duration = Duration::from_secs(60);

/// A rule every envelope matches, and a badge rule whose field is required
/// (`strict`) or optional: no generated envelope has a badge number.
fn config(sandbox: &RunningSandbox, receiver: &WebhookReceiver, secret: &str, strict: bool) -> String {
    format!(
        "{}{}[queue]\nworkers = 4\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\n[reconcile]\nenabled = false\n\
         [admin]\ntoken = \"admin-token\"\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{secret}\"\n\
         [[rules]]\nname = \"signed\"\nevent_type = \"envelope.signed\"\nsinks = [\"hr\"]\n\
         [[rules]]\nname = \"badges\"\nevent_type = \"facilities.badge.requested\"\nsinks = [\"hr\"]\n\
         [rules.fields]\nbadge = {{ custom_field = \"badge_number\", required = {strict} }}\n",
        connect_toml(sandbox),
        docusign_toml(sandbox, ""),
        receiver.url()
    )
}

async fn wait_status(app: &TestApp, envelope: &Envelope, status: EnvelopeStatus) {
    let id = envelope.envelope_id;
    eventually(WAIT, &format!("envelope {id} {status}"), || async {
        (app.store.envelope(id).await.unwrap()?.status == status).then_some(())
    })
    .await;
}

fn types_for(delivered: &[ReceivedWebhook], envelope: &Envelope) -> Vec<String> {
    let subject = envelope.envelope_id.to_string();
    let mut types: Vec<String> = delivered
        .iter()
        .filter_map(ReceivedWebhook::event)
        .filter(|event| event["subject"] == subject.as_str())
        .map(|event| event["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    types
}

/// `countersign ARGS --config FILE` in `dir`: exit code and stdout.
async fn countersign_cli(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_countersign")).args(&args).current_dir(dir).output().unwrap()
    })
    .await
    .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

async fn reprocess_after_a_rule_fix(db: TestStore) {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let db = Arc::new(db);
    let app = TestApp::spawn_shared(db.clone(), &config(&sandbox, &receiver, &secret, true)).await;
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    // Summary and documents embedded: processing needs no DocuSign call.
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, true)).await;
    for envelope in &envelopes {
        wait_status(&app, envelope, EnvelopeStatus::Flagged).await;
    }
    let before = receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap();
    for envelope in &envelopes {
        assert_eq!(types_for(&before, envelope), ["envelope.signed"]);
    }
    app.shutdown().await;

    // The rule is fixed (the badge becomes optional) and the service restarted with it.
    let app = TestApp::spawn_shared(db.clone(), &config(&sandbox, &receiver, &secret, false)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), format!("[store]\nurl = \"{}\"\n", db.url)).unwrap();
    let (code, stdout, stderr) = countersign_cli(dir.path(), &["reprocess", "--flagged", "--config", "c.toml"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for envelope in &envelopes {
        assert!(stdout.contains(&format!("queued {}", envelope.envelope_id)), "{stdout}");
        wait_status(&app, envelope, EnvelopeStatus::Processed).await;
    }
    let after = receiver.wait_for_delivered(envelopes.len() * 2, WAIT).await.unwrap();
    for envelope in &envelopes {
        assert_eq!(
            types_for(&after, envelope),
            ["envelope.signed", "facilities.badge.requested"],
            "the new event once, the old one not again"
        );
    }
    assert_eq!(receiver.requests().len(), envelopes.len() * 2, "nothing was sent twice");
    let calls = sandbox.sandbox.counters().routes;
    assert_eq!(calls.get("combined").copied().unwrap_or(0), 0, "no document was downloaded: {calls:?}");
    assert_eq!(calls.get("envelope").copied().unwrap_or(0), 0, "{calls:?}");

    // A processed envelope reprocessed by id: its job runs again and adds nothing.
    let envelope = &envelopes[0];
    let key = envelope.envelope_id.to_string();
    let runs = app.store.job_by_key("process_envelope", &key).await.unwrap().unwrap().attempts;
    let (code, stdout, _) = countersign_cli(dir.path(), &["reprocess", &key, "--config", "c.toml"]).await;
    assert_eq!(code, 0, "{stdout}");
    eventually(WAIT, "the job ran again", || async {
        let job = app.store.job_by_key("process_envelope", &key).await.unwrap()?;
        (job.state == JobState::Done && job.attempts > runs).then_some(())
    })
    .await;
    let events = app.store.events_for(envelope.envelope_id).await.unwrap();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(app.store.deliveries_for(event.id).await.unwrap().len(), 1, "one delivery per event and sink");
    }
    let history = app.store.job_by_key("process_envelope", &key).await.unwrap().unwrap();
    assert!(history.attempts >= 3, "the attempt history is kept: {history:?}");

    // An envelope nobody told countersign about: said, and the exit status says so.
    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, stdout, _) = countersign_cli(dir.path(), &["reprocess", &unknown, "--config", "c.toml"]).await;
    assert_eq!(code, 1);
    assert!(stdout.contains(&format!("unknown {unknown}")), "{stdout}");
    let (code, _, stderr) = countersign_cli(dir.path(), &["reprocess", "not-a-guid", "--config", "c.toml"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("\"not-a-guid\" is not an envelope id"), "{stderr}");

    // The admin API does the same for one envelope.
    let client = reqwest::Client::new();
    let url = |id: &str| format!("{}/admin/api/envelopes/{id}/reprocess", app.base_url);
    let answer = client.post(url(&key)).bearer_auth("admin-token").send().await.unwrap();
    assert_eq!(answer.status(), 202);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
    let answer = client.post(url(&unknown)).bearer_auth("admin-token").send().await.unwrap();
    assert_eq!(answer.status(), 404);
    let answer = client.post(url("nope")).bearer_auth("admin-token").send().await.unwrap();
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["field"], "envelope_id");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flagged_envelope_is_processed_again_after_its_rule_is_fixed_on_sqlite() {
    reprocess_after_a_rule_fix(common::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flagged_envelope_is_processed_again_after_its_rule_is_fixed_on_postgres() {
    reprocess_after_a_rule_fix(common::postgres().await).await;
}

const RULES: &str = "[[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hr\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
    [[rules]]\nname = \"signed\"\nevent_type = \"envelope.signed\"\nsinks = [\"hr\"]\n\
    [rules.fields]\ndepartment = { custom_field = \"department\" }\nnickname = { custom_field = \"nickname\" }\n\
    [[rules]]\nname = \"badges\"\nevent_type = \"facilities.badge.requested\"\nsinks = [\"hr\"]\n\
    [rules.fields]\nbadge = { custom_field = \"badge_number\", required = true }\n\
    [[rules]]\nname = \"never\"\nevent_type = \"never.seen\"\nsinks = [\"hr\"]\n[rules.match]\nsubject = \"No such subject*\"\n";

/// A Connect message in a file, JSON or XML: which rules match, the events
/// as they would go out, what is missing; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_test_reads_a_connect_message_from_a_file_and_writes_nothing() {
    let sandbox = sandbox().await;
    let envelope = sandbox.sandbox.complete_envelopes(1).remove(0);
    let dir = tempfile::tempdir().unwrap();
    let account = envelope.account_id;
    // XML names the account by number: the configuration maps it.
    let number = countersign::sandbox::identity::account_number(account);
    let accounts = format!("[[connect.accounts]]\naccount_id = \"{account}\"\naccount_number = \"{number}\"\n");
    std::fs::write(dir.path().join("strict.toml"), format!("{accounts}{RULES}")).unwrap();
    let lenient = RULES.replace("required = true", "required = false");
    std::fs::write(dir.path().join("lenient.toml"), format!("{accounts}{lenient}")).unwrap();
    let with_documents = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    std::fs::write(dir.path().join("n.json"), json_sim_body(&envelope, &with_documents, 0, chrono::Utc::now()))
        .unwrap();
    std::fs::write(dir.path().join("n.xml"), xml_body(&envelope, &with_documents, 0)).unwrap();

    for file in ["n.json", "n.xml"] {
        let (code, stdout, stderr) =
            countersign_cli(dir.path(), &["rules", "test", "--file", file, "--config", "strict.toml"]).await;
        assert_eq!(code, 1, "flagged: a required field is missing\n{stdout}{stderr}");
        assert!(stdout.contains(&format!("envelope {}", envelope.envelope_id)), "{stdout}");
        let line =
            |rule: &str| stdout.lines().find(|l| l.trim_start().starts_with(rule)).unwrap_or_default().to_string();
        assert!(line("signed").ends_with("matches"), "{stdout}");
        assert!(line("badges").ends_with("matches"), "{stdout}");
        assert!(line("never").ends_with("does not match"), "{stdout}");
        assert!(stdout.contains("required field \"badge\""), "{stdout}");
        assert!(stdout.contains("optional field \"nickname\" is missing"), "{stdout}");
        // The event as it would be delivered: a CloudEvent with the envelope as subject.
        assert!(stdout.contains("\"type\": \"envelope.signed\""), "{stdout}");
        assert!(stdout.contains(&format!("\"subject\": \"{}\"", envelope.envelope_id)), "{stdout}");
        assert!(!stdout.contains("facilities.badge.requested\","), "no event for the flagged rule: {stdout}");
        assert!(stdout.contains("verdict: the envelope would be flagged"), "{stdout}");

        let (code, stdout, _) =
            countersign_cli(dir.path(), &["rules", "test", "--file", file, "--config", "lenient.toml"]).await;
        assert_eq!(code, 0, "{stdout}");
        assert!(stdout.contains("\"type\": \"facilities.badge.requested\""), "{stdout}");
        assert!(stdout.contains("verdict: the envelope would be processed"), "{stdout}");
    }
    assert!(!dir.path().join("data").exists(), "no store was created or written");

    std::fs::write(dir.path().join("bad.json"), b"{\"event\": 1}").unwrap();
    let (code, _, stderr) =
        countersign_cli(dir.path(), &["rules", "test", "--file", "bad.json", "--config", "strict.toml"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.json is not a Connect message"), "{stderr}");
}

/// A stored envelope: tested against the rules of a configuration that is
/// not live yet; the store is not changed and DocuSign is not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_test_reads_a_stored_envelope_and_calls_no_one() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let db = Arc::new(common::sqlite().await);
    let app = TestApp::spawn_shared(db.clone(), &config(&sandbox, &receiver, &secret, true)).await;
    let envelope = sandbox.sandbox.complete_envelopes(1).remove(0);
    send_all(&sender(&app, &sandbox), std::slice::from_ref(&envelope), ConnectFormat::Json, &options(true, true)).await;
    wait_status(&app, &envelope, EnvelopeStatus::Flagged).await;
    let calls = sandbox.sandbox.counters().routes.values().sum::<u64>();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), format!("[store]\nurl = \"{}\"\n{RULES}", db.url)).unwrap();
    let id = envelope.envelope_id.to_string();
    let (code, stdout, stderr) = countersign_cli(dir.path(), &["rules", "test", &id, "--config", "c.toml"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("stored envelope, from notification"), "{stdout}");
    assert!(stdout.contains("\"documents\""), "{stdout}");
    assert!(stdout.contains("/documents/"), "stored documents are linked as the event would link them: {stdout}");
    assert_eq!(app.store.envelope(envelope.envelope_id).await.unwrap().unwrap().status, EnvelopeStatus::Flagged);
    assert_eq!(sandbox.sandbox.counters().routes.values().sum::<u64>(), calls, "no DocuSign call");

    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, _, stderr) = countersign_cli(dir.path(), &["rules", "test", &unknown, "--config", "c.toml"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("is not in the store"), "{stderr}");
    // A store that is not there is said, not created.
    std::fs::write(
        dir.path().join("typo.toml"),
        format!("[store]\nurl = \"sqlite://{}/nope.db\"\n{RULES}", dir.path().display()),
    )
    .unwrap();
    let (code, _, stderr) = countersign_cli(dir.path(), &["rules", "test", &id, "--config", "typo.toml"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("there is no store at"), "{stderr}");
    assert!(!dir.path().join("nope.db").exists());
    app.shutdown().await;
}
