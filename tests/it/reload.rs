//! Reloading the configuration without a restart: rules, sinks and Connect
//! keys go into force together, under traffic and with nothing lost; a
//! configuration that does not load changes nothing; deliveries queued for
//! a removed sink stay visible as dead letters naming it.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::docusign::{connect_toml, docusign_toml, options, sandbox};
use common::{TestApp, eventually};
use countersign::deliver::receiver::{ReceivedWebhook, Reply, WebhookReceiver, random_secret};
use countersign::sandbox::RunningSandbox;
use countersign::sandbox::connect::{ConnectFormat, ConnectSender, RetryPolicy};
use countersign::store::EnvelopeStatus;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "reload-admin-token-0123456789";

/// A webhook sink and the verifying receiver behind it.
struct Sink {
    name: &'static str,
    receiver: WebhookReceiver,
    secret: String,
}

async fn sink(name: &'static str) -> Sink {
    let secret = random_secret();
    Sink { name, receiver: WebhookReceiver::spawn(&[&secret]).await.unwrap(), secret }
}

/// The configuration: `sinks`, and per rule its name and the sinks it names.
fn config(sandbox: &RunningSandbox, sinks: &[&Sink], rules: &[(&str, &[&str])]) -> String {
    let mut toml = format!(
        "{}{}[admin]\ntoken = \"{TOKEN}\"\n[queue]\nworkers = 4\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\n\
         [reconcile]\nenabled = false\n[delivery]\nschedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]\n",
        connect_toml(sandbox),
        docusign_toml(sandbox, ""),
    );
    for sink in sinks {
        toml.push_str(&format!(
            "[[sinks]]\nname = \"{}\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{}\"\n",
            sink.name,
            sink.receiver.url(),
            sink.secret
        ));
    }
    for (rule, targets) in rules {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        toml.push_str(&format!(
            "[[rules]]\nname = \"{rule}\"\nevent_type = \"test.{rule}\"\nsinks = [{}]\n",
            targets.join(", ")
        ));
    }
    toml
}

/// Writes the configuration where the service reads it; `TestApp` adds the store and documents tables.
fn rewrite(path: &std::path::Path, body: &str) {
    let current = std::fs::read_to_string(path).unwrap();
    let head = &current[..current.find("[connect]").unwrap()];
    std::fs::write(path, format!("{head}{body}")).unwrap();
}

async fn reload(app: &TestApp) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{}/admin/api/reload", app.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap_or(Value::Null))
}

fn connect(app: &TestApp, sandbox: &RunningSandbox) -> ConnectSender {
    ConnectSender::new(
        app.connect_url(),
        sandbox.sandbox.identity().hmac_keys.clone(),
        RetryPolicy { max_retries: 20, interval: Duration::from_millis(100), timeout: Duration::from_secs(30) },
    )
}

fn subjects(delivered: &[ReceivedWebhook]) -> Vec<String> {
    delivered.iter().filter_map(ReceivedWebhook::event).map(|e| e["subject"].as_str().unwrap().to_string()).collect()
}

async fn consented() -> RunningSandbox {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    sandbox
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_and_sinks_reload_under_traffic_and_nothing_is_lost() {
    let sandbox = consented().await;
    let (a, b) = (sink("a").await, sink("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    let app =
        TestApp::spawn_from_file(common::sqlite().await, &config(&sandbox, &[&a], &[("signed", &["a"])]), &path).await;

    // Connect keeps sending while the configuration changes; the last
    // third waits for the reload's answer, so some surely come after it.
    let envelopes = sandbox.sandbox.complete_envelopes(24);
    let sender = connect(&app, &sandbox);
    let (reloaded_tx, mut reloaded_rx) = tokio::sync::watch::channel(false);
    let traffic = {
        let envelopes = envelopes.clone();
        tokio::spawn(async move {
            let mut started = Vec::new();
            for (i, envelope) in envelopes.iter().enumerate() {
                if i == 16 {
                    reloaded_rx.wait_for(|done| *done).await.unwrap();
                }
                started.push((envelope.envelope_id.to_string(), std::time::Instant::now()));
                let report = sender.send(envelope, ConnectFormat::Json, &options(true, true)).await;
                assert!(report.delivered, "{report:?}");
            }
            started
        })
    };
    eventually(WAIT, "some envelopes processed under the first configuration", || async {
        (a.receiver.delivered().len() >= 4).then_some(())
    })
    .await;
    rewrite(&path, &config(&sandbox, &[&a, &b], &[("signed", &["a"]), ("copied", &["b"])]));
    let (status, reloaded) = reload(&app).await;
    let reloaded_at = std::time::Instant::now();
    reloaded_tx.send(true).unwrap();
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["rules"], 2);
    assert_eq!(reloaded["sinks"], serde_json::json!(["a", "b"]));
    let started = traffic.await.unwrap();
    let sent_after_reload: Vec<String> =
        started.into_iter().filter(|(_, at)| *at > reloaded_at).map(|(id, _)| id).collect();
    assert!(sent_after_reload.len() >= 8);

    for envelope in &envelopes {
        let id = envelope.envelope_id;
        eventually(WAIT, &format!("{id} processed"), || async {
            (app.store.envelope(id).await.unwrap()?.status == EnvelopeStatus::Processed).then_some(())
        })
        .await;
    }
    // Every envelope's first event reached sink a once; every envelope
    // processed under the new rules has its second event, at sink b once.
    let copied: Vec<String> = {
        let mut copied = Vec::new();
        for envelope in &envelopes {
            let events = app.store.events_for(envelope.envelope_id).await.unwrap();
            if events.iter().any(|e| e.rule == "copied") {
                copied.push(envelope.envelope_id.to_string());
            }
        }
        copied
    };
    for id in &sent_after_reload {
        assert!(copied.contains(id), "{id} was sent after the reload answered, so the new rules processed it");
    }
    let at_a = subjects(&a.receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap());
    let at_b = subjects(&b.receiver.wait_for_delivered(copied.len(), WAIT).await.unwrap());
    assert_eq!(at_a.len(), envelopes.len(), "each envelope's event once at a");
    assert_eq!(at_a.iter().collect::<HashSet<_>>().len(), envelopes.len());
    assert_eq!(at_b.len(), copied.len(), "each new event once at b");
    assert_eq!(at_b.iter().collect::<HashSet<_>>(), copied.iter().collect::<HashSet<_>>());
    assert!(app.store.dead_jobs(10).await.unwrap().is_empty());

    // A configuration that does not load changes nothing, and says which key is wrong.
    rewrite(&path, &config(&sandbox, &[&a], &[("signed", &["a"]), ("copied", &["b"])]));
    let (status, error) = reload(&app).await;
    assert_eq!(status, 422, "{error}");
    assert!(error["field"].as_str().unwrap().starts_with("rules[1].sinks"), "{error}");
    let more = sandbox.sandbox.complete_envelopes(1);
    let report = connect(&app, &sandbox).send(&more[0], ConnectFormat::Json, &options(true, true)).await;
    assert!(report.delivered);
    let subject = more[0].envelope_id.to_string();
    for receiver in [&a.receiver, &b.receiver] {
        eventually(WAIT, "the event under the rules still in force", || async {
            subjects(&receiver.delivered()).contains(&subject).then_some(())
        })
        .await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_queued_for_a_removed_sink_become_dead_letters_naming_it() {
    let sandbox = consented().await;
    let (a, b) = (sink("a").await, sink("b").await);
    // Sink b is down and asks for a pause: its deliveries wait about 2 s
    // between attempts, and outlast the reload by far (11 attempts).
    b.receiver.set_default_reply(Reply::status(503).retry_after(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    let both = config(&sandbox, &[&a, &b], &[("signed", &["a", "b"])]);
    let app = TestApp::spawn_from_file(common::sqlite().await, &both, &path).await;
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    let sender = connect(&app, &sandbox);
    for envelope in &envelopes {
        assert!(sender.send(envelope, ConnectFormat::Json, &options(true, true)).await.delivered);
    }
    a.receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap();
    eventually(WAIT, "sink b refused every delivery at least once", || async {
        (b.receiver.requests().len() >= envelopes.len()).then_some(())
    })
    .await;

    rewrite(&path, &config(&sandbox, &[&a], &[("signed", &["a"])]));
    let (status, reloaded) = reload(&app).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["removed_sinks"], serde_json::json!(["b"]));
    let api = |path: String| reqwest::Client::new().get(format!("{}{path}", app.base_url)).bearer_auth(TOKEN).send();
    let dead = eventually(WAIT, "b's deliveries to be dead letters", || async {
        let dead: Value = api("/admin/api/dead-letters?sink=b".into()).await.unwrap().json().await.unwrap();
        (dead["deliveries"].as_array()?.len() == envelopes.len()).then_some(dead)
    })
    .await;
    for delivery in dead["deliveries"].as_array().unwrap() {
        assert_eq!(delivery["sink"], "b");
        let error = delivery["last_error"].as_str().unwrap();
        assert!(error.contains("sink \"b\" is no longer configured"), "{error}");
    }

    // Sink b back and up: replaying its deliveries sends each one once.
    b.receiver.set_default_reply(Reply::OK);
    rewrite(&path, &both);
    assert_eq!(reload(&app).await.0, 200);
    let replayed = reqwest::Client::new()
        .post(format!("{}/admin/api/deliveries/replay", app.base_url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "sink": "b" }))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200);
    let at_b = subjects(&b.receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap());
    let wanted: HashSet<String> = envelopes.iter().map(|e| e.envelope_id.to_string()).collect();
    assert_eq!(at_b.iter().cloned().collect::<HashSet<_>>(), wanted);
    app.shutdown().await;
}

/// A sink this replica never knew (another replica, already reloaded,
/// planned an event for it): the delivery waits parked, it is not dead;
/// once this replica's configuration has the sink, the reload wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_for_a_sink_this_replica_does_not_know_yet_waits_for_its_reload() {
    use common::envelopes::{new_envelope_id, offer_letter, publish};
    let sandbox = consented().await;
    let (a, b) = (sink("a").await, sink("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    let app =
        TestApp::spawn_from_file(common::sqlite().await, &config(&sandbox, &[&a], &[("signed", &["a"])]), &path).await;

    // The other replica's rules already send to b.
    let newer = config(&sandbox, &[&a, &b], &[("signed", &["a", "b"])]);
    let settings = countersign::config::Settings::from_toml(&newer).unwrap();
    let planner = countersign::events::Planner::from_settings(&settings).unwrap();
    let envelope = offer_letter(new_envelope_id());
    let plan = publish(&*app.store, &planner, &envelope, &[], chrono::Utc::now()).await;
    let event = plan.events[0].event.id;
    a.receiver.wait_for_delivered(1, WAIT).await.unwrap();
    let key = format!("{event}/b");
    eventually(WAIT, "the delivery to b parked", || async {
        let job = app.store.job_by_key("deliver", &key).await.unwrap()?;
        (job.state == countersign::store::JobState::Parked).then_some(job)
    })
    .await;
    assert!(app.store.dead_deliveries(&Default::default(), 10).await.unwrap().is_empty(), "nothing is dead");

    rewrite(&path, &newer);
    assert_eq!(reload(&app).await.0, 200);
    let delivered = b.receiver.wait_for_delivered(1, WAIT).await.unwrap();
    assert_eq!(subjects(&delivered), [envelope.envelope.envelope_id.to_string()]);
    app.shutdown().await;
}
