//! The whole pipeline through its real interfaces: the sandbox completes
//! envelopes and sends Connect notifications, countersign processes them
//! (documents, rules, outbox) and a Standard Webhooks receiver on loopback
//! verifies what arrives, as an IT system would.

use crate::common;

use std::time::Duration;

use common::docusign::{countersign_with, options, sandbox, send_all, sender};
use common::{TestApp, eventually, metric};
use countersign::deliver::receiver::{ReceivedWebhook, Reply, WebhookReceiver, random_secret};
use countersign::sandbox::connect::ConnectFormat;
use countersign::sandbox::{Envelope, RunningSandbox};
use countersign::store::{EnvelopeStatus, JobState};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const SINK_TOKEN: &str = "pipeline-test-token";

/// One webhook sink at `receiver`, the onboarding rule (fields by custom
/// field, by tab of a role and by signer role) and `more` rules.
fn tables(receiver: &WebhookReceiver, secret: &str, more: &str) -> String {
    format!(
        "[[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{secret}\"\ntoken = \"{SINK_TOKEN}\"\n\
         [[rules]]\nname = \"onboarding\"\nevent_type = \"employee.onboarding.signed\"\nsinks = [\"hr\"]\n\
         [rules.match]\nsubject = \"offer LETTER*\"\n\
         [rules.fields]\nemployee_id = {{ custom_field = \"employee_id\", required = true }}\n\
         start_date = {{ tab = \"start_date\", role = \"Employee\" }}\n\
         employee = {{ signer = \"Employee\" }}\n\
         badge = {{ custom_field = \"badge_number\" }}\n{more}",
        receiver.url()
    )
}

async fn consented_sandbox() -> RunningSandbox {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    sandbox
}

fn is_offer_letter(envelope: &Envelope) -> bool {
    envelope.subject.starts_with("Offer letter")
}

fn custom_field<'a>(envelope: &'a Envelope, name: &str) -> &'a str {
    envelope.custom_fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap()
}

/// The event the receiver got for `envelope` (exactly one is expected).
fn event_for(delivered: &[ReceivedWebhook], envelope: &Envelope) -> (Value, Option<String>) {
    let subject = envelope.envelope_id.to_string();
    let found: Vec<(Value, Option<String>)> = delivered
        .iter()
        .filter_map(|r| r.event().map(|e| (e, r.webhook_id.clone())))
        .filter(|(event, _)| event["subject"] == subject.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one event for {subject}: {found:?}");
    found.into_iter().next().unwrap()
}

/// Every document the event lists is served at its URL with the sink's
/// token, byte for byte what its sha256 says.
async fn fetch_documents(event: &Value) -> usize {
    let client = reqwest::Client::new();
    let documents = event["data"]["documents"].as_array().unwrap();
    for document in documents {
        let url = document["url"].as_str().unwrap();
        let response = client.get(url).bearer_auth(SINK_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(document["size_bytes"], bytes.len() as u64, "{url}");
        assert_eq!(document["sha256"], hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)), "{url}");
    }
    documents.len()
}

async fn wait_status(app: &TestApp, envelope: &Envelope, status: EnvelopeStatus) {
    let id = envelope.envelope_id;
    eventually(WAIT, &format!("envelope {id} {status}"), || async {
        let record = app.store.envelope(id).await.unwrap()?;
        (record.status == status).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_envelopes_reach_the_webhook_as_verified_events_with_the_rules_fields() {
    let sandbox = consented_sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let app = countersign_with(&sandbox, "", "", &tables(&receiver, &secret, "")).await;
    let sender = sender(&app, &sandbox);
    let envelopes = sandbox.sandbox.complete_envelopes(8);
    assert!(envelopes.iter().any(is_offer_letter) && !envelopes.iter().all(is_offer_letter), "both kinds in the mix");

    // JSON with the envelope summary, and legacy XML, which carries tabs but
    // no role names: the role-based fields need DocuSign's envelope answer.
    for (i, envelope) in envelopes.iter().enumerate() {
        let format = if i % 2 == 0 { ConnectFormat::Json } else { ConnectFormat::Xml };
        send_all(&sender, std::slice::from_ref(envelope), format, &options(true, i % 4 < 2)).await;
    }
    let delivered = receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap();

    for envelope in &envelopes {
        let (event, webhook_id) = event_for(&delivered, envelope);
        assert_eq!(webhook_id.as_deref(), event["id"].as_str(), "webhook-id is the event id");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], format!("urn:docusign:account:{}", envelope.account_id));
        let data = &event["data"];
        assert_eq!(data["envelope_id"], envelope.envelope_id.to_string());
        assert_eq!(data["subject"], envelope.subject.as_str());
        let signers: Vec<&str> =
            data["signers"].as_array().unwrap().iter().map(|s| s["email"].as_str().unwrap()).collect();
        let expected: Vec<&str> = envelope.signers.iter().map(|s| s.person.email.as_str()).collect();
        assert_eq!(signers, expected, "every signer in routing order, no carbon copies");
        if is_offer_letter(envelope) {
            let employee = envelope.signers.iter().find(|s| s.role_name == "Employee").unwrap();
            let start_date = employee.tabs.iter().find(|t| t.label == "start_date").unwrap();
            assert_eq!(event["type"], "employee.onboarding.signed");
            assert_eq!(data["rule"], "onboarding");
            assert_eq!(data["fields"]["employee_id"], custom_field(envelope, "employee_id"));
            assert_eq!(data["fields"]["start_date"], start_date.value.as_str(), "{}", envelope.envelope_id);
            assert_eq!(data["fields"]["employee"]["email"], employee.person.email.as_str());
            assert_eq!(data["fields"]["employee"]["role"], "Employee");
            assert_eq!(data["missing"], serde_json::json!(["badge"]), "an optional field the envelope lacks");
        } else {
            assert_eq!(event["type"], "envelope.completed", "no rule matched: the default event");
            assert_eq!(data["rule"], "default");
        }
        let stored = app.store.documents(envelope.envelope_id).await.unwrap();
        assert_eq!(fetch_documents(&event).await, stored.len(), "every stored document is listed");
        assert_eq!(app.store.envelope(envelope.envelope_id).await.unwrap().unwrap().status, EnvelopeStatus::Processed);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_notification_makes_no_second_event() {
    let sandbox = consented_sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let app = countersign_with(&sandbox, "", "", &tables(&receiver, &secret, "")).await;
    let sender = sender(&app, &sandbox);
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    send_all(&sender, &envelopes, ConnectFormat::Json, &options(true, false)).await;
    receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap();

    // DocuSign retries, and the same envelope arrives in the other format too.
    send_all(&sender, &envelopes, ConnectFormat::Json, &options(true, false)).await;
    send_all(&sender, &envelopes, ConnectFormat::Xml, &options(true, false)).await;
    // Whatever the redeliveries queued has run before anything is counted.
    eventually(WAIT, "an idle queue", || async {
        let stats = app.store.queue_stats().await.unwrap();
        stats.iter().all(|s| matches!(s.state, JobState::Done) || s.count == 0).then_some(())
    })
    .await;
    for envelope in &envelopes {
        let events = app.store.events_for(envelope.envelope_id).await.unwrap();
        assert_eq!(events.len(), 1, "{}: one event, whatever arrives again", envelope.envelope_id);
        let deliveries = app.store.deliveries_for(events[0].id).await.unwrap();
        assert_eq!(deliveries.len(), 1, "one delivery per (event, sink)");
    }
    let received = receiver.requests();
    assert_eq!(received.len(), envelopes.len(), "each event was sent once: {received:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_required_field_flags_the_envelope_and_holds_its_event_back() {
    let sandbox = consented_sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    // Every envelope matches; none has a badge number.
    let strict = "[[rules]]\nname = \"badges\"\nevent_type = \"facilities.badge.requested\"\nsinks = [\"hr\"]\n\
                  [rules.fields]\nbadge = { custom_field = \"badge_number\", required = true }\n";
    let app = countersign_with(&sandbox, "", "", &tables(&receiver, &secret, strict)).await;
    let sender = sender(&app, &sandbox);
    let envelopes = sandbox.sandbox.complete_envelopes(4);
    send_all(&sender, &envelopes, ConnectFormat::Json, &options(true, false)).await;

    for envelope in &envelopes {
        wait_status(&app, envelope, EnvelopeStatus::Flagged).await;
        let events = app.store.events_for(envelope.envelope_id).await.unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert!(!types.contains(&"facilities.badge.requested"), "no event with a required field missing: {types:?}");
        // The other rule still yields its event for offer letters; nothing falls back to the default.
        let expected: Vec<&str> =
            if is_offer_letter(envelope) { vec!["employee.onboarding.signed"] } else { Vec::new() };
        assert_eq!(types, expected, "{}", envelope.subject);
    }
    let offers = envelopes.iter().filter(|e| is_offer_letter(e)).count();
    receiver.wait_for_delivered(offers, WAIT).await.unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_on_template_ids_matches_by_the_templates_docusign_reports() {
    let sandbox = consented_sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let envelopes = sandbox.sandbox.complete_envelopes(6);
    let template = envelopes[0].template_id;
    assert!(envelopes.iter().any(|e| e.template_id != template), "the mix has other templates too");
    let by_template = format!(
        "[[rules]]\nname = \"by-template\"\nevent_type = \"template.signed\"\nsinks = [\"hr\"]\n\
         [rules.match]\ntemplate_ids = [\"{}\"]\n",
        template.to_string().to_uppercase()
    );
    let app = countersign_with(&sandbox, "", "", &tables(&receiver, &secret, &by_template)).await;
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, true)).await;
    // An envelope gets one event per rule it matches, the default event when none.
    let expected = |envelope: &Envelope| {
        let mut types = Vec::new();
        if envelope.template_id == template {
            types.push("template.signed");
        }
        if is_offer_letter(envelope) {
            types.push("employee.onboarding.signed");
        }
        if types.is_empty() {
            types.push("envelope.completed");
        }
        types
    };
    let total = envelopes.iter().map(|e| expected(e).len()).sum();
    let delivered = receiver.wait_for_delivered(total, WAIT).await.unwrap();

    for envelope in &envelopes {
        let subject = envelope.envelope_id.to_string();
        let mut types: Vec<String> = delivered
            .iter()
            .filter_map(ReceivedWebhook::event)
            .filter(|event| event["subject"] == subject.as_str())
            .map(|event| event["type"].as_str().unwrap().to_string())
            .collect();
        types.sort();
        let mut wanted = expected(envelope);
        wanted.sort_unstable();
        assert_eq!(types, wanted, "{}", envelope.subject);
    }
    let asked = sandbox.sandbox.counters().routes.get("templates").copied().unwrap_or(0);
    assert_eq!(asked, envelopes.len() as u64, "one templates call per envelope, none more");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_deliveries_by_sink_and_outcome_and_show_a_disabled_sink() {
    let sandbox = consented_sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let fast = "[delivery]\nschedule = [\"50ms\", \"50ms\", \"50ms\"]\n";
    let app = countersign_with(&sandbox, "", "", &format!("{fast}{}", tables(&receiver, &secret, ""))).await;
    let scrape = || async { reqwest::get(format!("{}/metrics", app.base_url)).await.unwrap().text().await.unwrap() };
    let before = scrape().await;
    receiver.reply_next([Reply::status(500)]);
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap();
    let after = scrape().await;
    let moved = |name: &str, labels: &[(&str, &str)]| metric(&after, name, labels) - metric(&before, name, labels);
    assert!(moved("countersign_deliveries_total", &[("sink", "hr"), ("outcome", "delivered")]) >= 3.0, "{after}");
    assert!(moved("countersign_deliveries_total", &[("sink", "hr"), ("outcome", "failed")]) >= 1.0, "{after}");
    assert!(moved("countersign_delivery_duration_seconds_count", &[("sink", "hr")]) >= 4.0);
    assert!(moved("countersign_event_delivery_latency_seconds_count", &[("sink", "hr")]) >= 3.0);
    assert_eq!(metric(&after, "countersign_sink_disabled", &[("sink", "hr")]), 0.0);

    // The endpoint is gone: the sink is disabled, and the gauge says so.
    receiver.set_default_reply(Reply::status(410));
    let more = sandbox.sandbox.complete_envelopes(1);
    send_all(&sender(&app, &sandbox), &more, ConnectFormat::Json, &options(true, false)).await;
    eventually(WAIT, "the sink reported disabled", || async {
        let text = scrape().await;
        (metric(&text, "countersign_sink_disabled", &[("sink", "hr")]) == 1.0).then_some(())
    })
    .await;
    app.shutdown().await;
}
