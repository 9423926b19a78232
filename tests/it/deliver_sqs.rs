//! Delivery to Amazon SQS, against moto's SQS: a moto server of the test's
//! own on a free loopback port (so it can be stopped and started without
//! disturbing other tests), countersign's `sqs` sink pointed at its queue
//! URLs. Queues are made and read back with boto3, an independent client
//! (see `common::moto`).

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::envelopes::publish_many;
use common::eventually;
use common::moto::Moto;
use countersign::deliver::{OutgoingEvent, build_sink};
use countersign::events::Planner;
use countersign::ids::EventId;
use countersign::store::{DeliveryFilter, DeliveryState, Store};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const FAST: &str = "[delivery]\nschedule = [\"50ms\", \"50ms\", \"50ms\"]\ntimeout = \"10s\"\n";
/// Static credentials for moto without authentication: it reads neither.
const KEYS: &str = "access_key_id = \"AKIAMOTOTESTING00001\"\nsecret = \"moto-ignores-this-secret-key\"\n";

fn sqs_sink(name: &str, url: &str, credentials: &str) -> String {
    format!("[[sinks]]\nname = \"{name}\"\nkind = \"sqs\"\nurl = \"{url}\"\n{credentials}")
}

/// The body the sinks send for `event`: the stored CloudEvent, serialised.
async fn sent_body(store: &dyn Store, event: EventId) -> String {
    let record = store.event(event).await.unwrap().unwrap();
    String::from_utf8(serde_json::to_vec(&record.body).unwrap()).unwrap()
}

async fn wait_delivered(store: &dyn Store, events: &[EventId], sink: &str) {
    for event in events {
        common::eventually(WAIT, &format!("event {event} delivered to {sink}"), || async {
            let rows = store.deliveries_for(*event).await.unwrap();
            rows.iter().any(|d| d.sink == sink && d.state == DeliveryState::Delivered).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqs_queues_get_each_event_once_as_its_cloudevent_with_attributes_and_fifo_ids() {
    let moto = Moto::start().await;
    let standard = moto.create_queue("provisioning").await;
    let fifo = moto.create_queue("provisioning.fifo").await;
    // Two rules, so each envelope has two events whose order the FIFO queue keeps.
    let config = format!(
        "{FAST}{}{}[[rules]]\nname = \"hire\"\nevent_type = \"employee.hired\"\nsinks = [\"queue\", \"fifo\"]\n\
         [[rules]]\nname = \"badge\"\nevent_type = \"badge.requested\"\nsinks = [\"queue\", \"fifo\"]\n",
        sqs_sink("queue", &standard, KEYS),
        sqs_sink("fifo", &fifo, KEYS),
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let plans = publish_many(&*app.store, &planner, 3).await;
    let events: Vec<EventId> = plans.iter().flat_map(|p| p.events.iter().map(|e| e.event.id)).collect();
    assert_eq!(events.len(), 6);
    wait_delivered(&*app.store, &events, "queue").await;
    wait_delivered(&*app.store, &events, "fifo").await;

    // An event sent again through the sink, as after a crash between send
    // and record: the FIFO queue drops the repeat (moto, unlike SQS, only
    // while the first is still in the queue), so it is counted below.
    let event = app.store.event(events[0]).await.unwrap().unwrap();
    let body = serde_json::to_vec(&event.body).unwrap();
    let sink = build_sink(&app.settings.sinks[1], Duration::from_secs(10)).unwrap();
    sink.deliver(&OutgoingEvent { id: event.id, event_type: &event.event_type, body: &body }).await.unwrap();

    let mut envelope_of = HashMap::new();
    for plan in &plans {
        for planned in &plan.events {
            envelope_of.insert(planned.event.id.to_string(), plan.envelope_id.to_string());
        }
    }
    for (queue, is_fifo) in [(&standard, false), (&fifo, true)] {
        let messages = moto.drain(queue).await;
        assert_eq!(messages.len(), events.len(), "one message per event in {queue}: {messages:?}");
        let mut seen = HashSet::new();
        for message in &messages {
            let id = message.attributes["ce-id"].clone();
            let event: EventId = serde_json::from_value(json!(id)).unwrap();
            assert_eq!(message.body, sent_body(&*app.store, event).await, "the body is the CloudEvent as sent");
            let body: Value = serde_json::from_str(&message.body).unwrap();
            assert_eq!(body["id"], id.as_str());
            for (attribute, field) in [("ce-type", "type"), ("ce-source", "source"), ("ce-subject", "subject")] {
                assert_eq!(message.attributes[attribute], body[field].as_str().unwrap(), "{attribute}");
            }
            assert_eq!(message.attributes["ce-subject"], envelope_of[&id]);
            assert_eq!(message.attributes["ce-specversion"], "1.0");
            assert_eq!(message.attributes["ce-time"], body["time"].as_str().unwrap());
            assert_eq!(message.attributes["content-type"], "application/cloudevents+json");
            if is_fifo {
                assert_eq!(message.system["MessageGroupId"], envelope_of[&id], "grouped by envelope");
                assert_eq!(message.system["MessageDeduplicationId"], id, "deduplicated by event id");
            } else {
                assert!(!message.system.contains_key("MessageGroupId"));
            }
            seen.insert(id);
        }
        assert_eq!(seen.len(), events.len(), "every event, none twice");
        if is_fifo {
            for plan in &plans {
                let envelope = plan.envelope_id.to_string();
                let order: Vec<&str> = messages
                    .iter()
                    .filter(|m| m.system["MessageGroupId"] == envelope)
                    .map(|m| m.attributes["ce-type"].as_str())
                    .collect();
                assert_eq!(order, ["employee.hired", "badge.requested"], "one envelope's events in order");
            }
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_queue_makes_a_dead_letter_that_names_the_queue() {
    let moto = Moto::start().await;
    let missing = moto.queue_url("countersign-nowhere");
    let config = format!(
        "{FAST}{}",
        sqs_sink("nowhere", &missing, "access_key_id = \"AKIAMOTOTESTING00001\"\nsecret = \"missing-queue-secret\"\n")
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let plans = publish_many(&*app.store, &planner, 1).await;
    let filter = DeliveryFilter { sink: Some("nowhere".into()), ..DeliveryFilter::default() };
    let dead = eventually(WAIT, "the delivery to a missing queue to be dead", || async {
        app.store.dead_deliveries(&filter, 10).await.unwrap().into_iter().next()
    })
    .await;
    assert_eq!(dead.event_id, plans[0].events[0].event.id);
    assert_eq!(dead.attempts, 4, "retried on the schedule, then dead");
    let error = dead.last_error.unwrap();
    assert!(error.contains(&missing), "names the queue: {error}");
    assert!(error.contains("QueueDoesNotExist") && error.contains("create the queue"), "{error}");
    assert!(!error.contains("missing-queue-secret"), "{error}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqs_down_then_back_with_its_queue_recreated_gets_every_event_once() {
    let mut moto = Moto::start().await;
    let queue = moto.create_queue("provisioning").await;
    // About 100 s of retries (the test waits on the deliveries, not on the
    // schedule): moto and the queue take a few seconds to come back on a
    // busy machine. A long timeout, so an answer moto gives late is not
    // taken for a failure and sent twice.
    let schedule = vec!["\"500ms\""; 200].join(", ");
    let config = format!(
        "[delivery]\nschedule = [\"100ms\", \"200ms\", {schedule}]\ntimeout = \"10s\"\n{}",
        sqs_sink("queue", &queue, KEYS)
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let first = publish_many(&*app.store, &planner, 1).await;
    wait_delivered(&*app.store, &[first[0].events[0].event.id], "queue").await;

    moto.stop();
    let plans = publish_many(&*app.store, &planner, 5).await;
    let events: Vec<EventId> = plans.iter().map(|p| p.events[0].event.id).collect();
    let refused = eventually(WAIT, "a delivery to fail while SQS is down", || async {
        for event in &events {
            let rows = app.store.deliveries_for(*event).await.unwrap();
            if let Some(error) = rows.into_iter().find_map(|d| d.last_error) {
                return Some(error);
            }
        }
        None
    })
    .await;
    assert!(refused.contains("SendMessage to") && refused.contains(&queue), "{refused}");

    moto.resume().await;
    moto.create_queue("provisioning").await;
    wait_delivered(&*app.store, &events, "queue").await;
    let mut retried = 0;
    for event in &events {
        let row = app.store.deliveries_for(*event).await.unwrap().remove(0);
        retried += usize::from(row.attempts > 1);
    }
    assert!(retried > 0, "some deliveries waited for SQS");
    let messages = moto.drain(&queue).await;
    let ids: Vec<String> = messages.iter().map(|m| m.attributes["ce-id"].clone()).collect();
    let expected: HashSet<String> = events.iter().map(ToString::to_string).collect();
    assert_eq!(ids.len(), expected.len(), "each event once: {ids:?}");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected);
    eprintln!("{} events, {retried} deliveries retried while SQS was down", events.len());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_carry_a_sigv4_signature_moto_verifies_and_a_wrong_secret_is_refused() {
    let mut moto = Moto::start().await;
    let queue = moto.create_queue("signed").await;
    let (key, secret) = moto.check_signatures().await;
    let config = format!(
        "{FAST}{}{}",
        sqs_sink("signed", &queue, &format!("access_key_id = \"{key}\"\nsecret = \"{secret}\"\n")),
        sqs_sink("forged", &queue, &format!("access_key_id = \"{key}\"\nsecret = \"not-the-secret-access-key\"\n")),
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let plans = publish_many(&*app.store, &planner, 2).await;
    let events: Vec<EventId> = plans.iter().map(|p| p.events[0].event.id).collect();
    wait_delivered(&*app.store, &events, "signed").await;

    let filter = DeliveryFilter { sink: Some("forged".into()), ..DeliveryFilter::default() };
    let dead = eventually(WAIT, "the wrongly signed deliveries to be dead", || async {
        let dead = app.store.dead_deliveries(&filter, 10).await.unwrap();
        (dead.len() == events.len()).then_some(dead)
    })
    .await;
    for delivery in dead {
        let error = delivery.last_error.unwrap();
        assert!(error.contains("SignatureDoesNotMatch") && error.contains("secret"), "{error}");
        assert!(!error.contains("not-the-secret-access-key") && !error.contains(&secret), "{error}");
    }
    let messages = moto.drain(&queue).await;
    let ids: HashSet<String> = messages.iter().map(|m| m.attributes["ce-id"].clone()).collect();
    assert_eq!(messages.len(), events.len());
    assert_eq!(ids, events.iter().map(ToString::to_string).collect::<HashSet<_>>());
    app.shutdown().await;
}
