//! Webhook delivery over real HTTP on 127.0.0.1: the service's workers
//! deliver what the outbox holds to local Standard Webhooks receivers that
//! verify every signature.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use common::envelopes::{NEW_SECRET, SECRET, new_envelope_id, offer_letter, publish, publish_many};
use countersign::deliver::receiver::{ReceivedWebhook, Reply, WebhookReceiver};
use countersign::events::Planner;
use countersign::ids::EventId;
use countersign::store::{DeliveryState, Store};

/// Generous: these wait for work to happen, they do not time it.
const WAIT: Duration = Duration::from_secs(60);

/// Retries within milliseconds, so tests need not wait out a real schedule.
const FAST: &str = "[queue]\nworkers = 4\n\
    [delivery]\nschedule = [\"50ms\", \"50ms\", \"50ms\", \"50ms\"]\ntimeout = \"10s\"\n\
    suspend_after = \"1h\"\nprobe_every = \"200ms\"\n";

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[[sinks]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n")
}

async fn start(config: &str) -> (common::TestApp, Planner) {
    let app = common::TestApp::spawn(common::sqlite().await, config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    (app, planner)
}

fn event_id_of(request: &ReceivedWebhook) -> String {
    request.event().unwrap()["id"].as_str().unwrap().to_string()
}

async fn delivery_state(store: &dyn Store, event: EventId, sink: &str) -> (DeliveryState, u32, Option<String>) {
    let row = store.deliveries_for(event).await.unwrap().into_iter().find(|d| d.sink == sink).unwrap();
    (row.state, row.attempts, row.last_error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_the_receiver_once_signed_and_verifiable() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let (app, planner) = start(&format!("{FAST}{}", webhook("hr", receiver.url(), ""))).await;
    let plans = publish_many(&*app.store, &planner, 20).await;

    let delivered = receiver.wait_for_delivered(20, WAIT).await.unwrap();
    let expected: HashSet<String> = plans.iter().map(|p| p.events[0].event.id.to_string()).collect();
    let received: HashSet<String> = delivered.iter().map(event_id_of).collect();
    assert_eq!(received, expected);
    for request in &delivered {
        assert_eq!(request.webhook_id.as_deref(), Some(event_id_of(request).as_str()), "webhook-id is the event id");
        assert_eq!(request.content_type.as_deref(), Some("application/cloudevents+json"));
        assert_eq!(request.event().unwrap()["type"], "envelope.completed");
    }
    for plan in &plans {
        let event = plan.events[0].event.id;
        let state = common::eventually(WAIT, "the delivery row to say delivered", || async {
            let state = delivery_state(&*app.store, event, "hr").await;
            (state.0 == DeliveryState::Delivered).then_some(state)
        })
        .await;
        assert_eq!(state, (DeliveryState::Delivered, 1, None));
    }
    assert_eq!(receiver.requests().len(), 20, "exactly once each: no request failed, none was repeated");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn during_a_secret_rotation_receivers_on_either_secret_verify_every_request() {
    let old_side = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let new_side = WebhookReceiver::spawn(&[NEW_SECRET]).await.unwrap();
    let rotating = format!("secrets = [\"{NEW_SECRET}\"]");
    let config =
        format!("{FAST}{}{}", webhook("old", old_side.url(), &rotating), webhook("new", new_side.url(), &rotating));
    let (app, planner) = start(&config).await;
    publish_many(&*app.store, &planner, 3).await;

    for receiver in [&old_side, &new_side] {
        let delivered = receiver.wait_for_delivered(3, WAIT).await.unwrap();
        for request in delivered {
            let signatures = request.signature.unwrap();
            assert_eq!(signatures.split(' ').count(), 2, "one signature per secret: {signatures}");
            assert!(signatures.split(' ').all(|s| s.starts_with("v1,")));
        }
        assert!(receiver.requests().iter().all(ReceivedWebhook::verified));
    }

    // A receiver that knows neither secret verifies nothing, and the delivery is retried.
    let stranger = WebhookReceiver::spawn(&["whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoQ="]).await.unwrap();
    let (other, planner) = start(&format!("{FAST}{}", webhook("hr", stranger.url(), ""))).await;
    publish_many(&*other.store, &planner, 1).await;
    let refused = stranger.wait_until(WAIT, |r| r.len() >= 2).await.unwrap();
    assert!(refused.iter().all(|r| !r.verified() && r.status == 401));
    assert_eq!(refused[0].webhook_id, refused[1].webhook_id, "the retry carries the same webhook-id");
    app.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_answering_500_then_recovering_gets_everything_with_stable_webhook_ids() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    receiver.reply_next([
        Reply::status(500),
        Reply::status(502),
        Reply::status(503).retry_after(1),
        Reply::status(429),
    ]);
    let (app, planner) = start(&format!("{FAST}{}", webhook("hr", receiver.url(), ""))).await;
    let plan = publish_many(&*app.store, &planner, 1).await.remove(0);
    let event = plan.events[0].event.id;

    let delivered = receiver.wait_for_delivered(1, WAIT).await.unwrap();
    assert_eq!(event_id_of(&delivered[0]), event.to_string());
    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 502, 503, 429, 204]);
    assert!(
        requests.iter().all(|r| r.webhook_id.as_deref() == Some(event.to_string().as_str())),
        "same webhook-id on every retry"
    );
    assert!(requests.iter().all(ReceivedWebhook::verified), "every retry is signed afresh");
    let state = common::eventually(WAIT, "the delivery row to say delivered", || async {
        let state = delivery_state(&*app.store, event, "hr").await;
        (state.0 == DeliveryState::Delivered).then_some(state)
    })
    .await;
    assert_eq!(state, (DeliveryState::Delivered, 5, None));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_out_of_attempts_becomes_a_dead_letter_with_its_last_error() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    receiver.set_default_reply(Reply::status(500));
    let (app, planner) = start(&format!("{FAST}{}", webhook("hr", receiver.url(), ""))).await;
    let event = publish_many(&*app.store, &planner, 1).await.remove(0).events[0].event.id;
    let dead = common::eventually(WAIT, "a dead delivery", || async {
        app.store.dead_deliveries(&Default::default(), 10).await.unwrap().into_iter().next()
    })
    .await;
    assert_eq!((dead.event_id, dead.sink.as_str(), dead.attempts), (event, "hr", 5), "one try and four retries");
    assert!(dead.last_error.unwrap().contains("HTTP 500"));
    assert_eq!(receiver.requests().len(), 5);
    let (state, attempts, error) = delivery_state(&*app.store, event, "hr").await;
    assert_eq!((state, attempts), (DeliveryState::Dead, 5));
    assert!(error.unwrap().contains("answered HTTP 500 Internal Server Error"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_410_disables_the_sink_and_leaves_other_sinks_alone() {
    let gone = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    gone.set_default_reply(Reply::status(410));
    let healthy = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let config = format!("{FAST}{}{}", webhook("hr", gone.url(), ""), webhook("crm", healthy.url(), ""));
    let (app, planner) = start(&config).await;
    let first = publish_many(&*app.store, &planner, 1).await.remove(0).events[0].event.id;
    let disabled = common::eventually(WAIT, "the sink to be disabled", || async {
        app.store.disabled_sinks().await.unwrap().into_iter().next()
    })
    .await;
    assert_eq!(disabled.sink, "hr");
    assert!(disabled.reason.contains("410"), "{}", disabled.reason);
    let dead = common::eventually(WAIT, "the delivery to be dead", || async {
        let state = delivery_state(&*app.store, first, "hr").await;
        (state.0 == DeliveryState::Dead).then_some(state)
    })
    .await;
    assert_eq!(dead.1, 1, "410 is not retried");

    let later = publish_many(&*app.store, &planner, 2).await;
    healthy.wait_for_delivered(3, WAIT).await.unwrap();
    for plan in &later {
        let event = plan.events[0].event.id;
        let (state, _, error) = common::eventually(WAIT, "later deliveries to a disabled sink to be dead", || async {
            let state = delivery_state(&*app.store, event, "hr").await;
            (state.0 == DeliveryState::Dead).then_some(state)
        })
        .await;
        assert_eq!(state, DeliveryState::Dead);
        assert!(error.unwrap().contains("is disabled"));
    }
    assert_eq!(gone.requests().len(), 1, "a disabled sink gets no more requests");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_sink_does_not_hold_back_a_healthy_one() {
    let hanging = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    hanging.hold();
    let healthy = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let config = format!(
        "{FAST}{}{}",
        webhook("slow", hanging.url(), "timeout = \"10m\"\nmax_in_flight = 2"),
        webhook("fast", healthy.url(), "")
    );
    let (app, planner) = start(&config).await;
    let plans = publish_many(&*app.store, &planner, 12).await;

    // Every event reaches the healthy sink while the hanging one still sits on its requests.
    healthy.wait_for_delivered(12, WAIT).await.unwrap();
    common::eventually(WAIT, "the hanging sink to hold two requests", || async {
        (hanging.waiting() == 2).then_some(())
    })
    .await;
    assert!(hanging.requests().is_empty(), "nothing was answered by the hanging sink");
    assert_eq!(hanging.waiting(), 2, "the hanging sink holds no more than its max_in_flight workers");

    hanging.release();
    let delivered = hanging.wait_for_delivered(12, WAIT).await.unwrap();
    let expected: HashSet<String> = plans.iter().map(|p| p.events[0].event.id.to_string()).collect();
    assert_eq!(delivered.iter().map(event_id_of).collect::<HashSet<_>>(), expected);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_one_envelope_reach_each_sink_in_the_order_they_were_created() {
    let flaky = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    flaky.reply_next([Reply::status(500), Reply::status(500), Reply::status(500)]);
    let steady = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let rules: String = ["first", "second", "third", "fourth"]
        .iter()
        .map(|r| format!("[[rules]]\nname = \"{r}\"\nevent_type = \"employee.{r}\"\nsinks = [\"hr\", \"crm\"]\n"))
        .collect();
    let config = format!("{FAST}{}{}{rules}", webhook("hr", flaky.url(), ""), webhook("crm", steady.url(), ""));
    let (app, planner) = start(&config).await;
    let envelopes: Vec<_> = (0..3).map(|_| offer_letter(new_envelope_id())).collect();
    let mut created: HashMap<String, (usize, usize)> = HashMap::new();
    for (e, envelope) in envelopes.iter().enumerate() {
        let plan = publish(&*app.store, &planner, envelope, &[], Utc::now()).await;
        for (i, planned) in plan.events.iter().enumerate() {
            created.insert(planned.event.id.to_string(), (e, i));
        }
    }

    for receiver in [&flaky, &steady] {
        receiver.wait_for_delivered(12, WAIT).await.unwrap();
        // Per envelope, the order requests arrived in never runs ahead of the creation order.
        let mut delivered_upto: HashMap<usize, usize> = HashMap::new();
        for request in receiver.requests() {
            let (envelope, position) = created[&event_id_of(&request)];
            let next = delivered_upto.entry(envelope).or_insert(0);
            assert_eq!(
                position, *next,
                "envelope {envelope}: event {position} arrived before event {next} was delivered"
            );
            if request.delivered() {
                *next += 1;
            }
        }
        assert!(delivered_upto.values().all(|n| *n == 4));
    }
    assert_eq!(flaky.requests().len(), 15, "three failed attempts, then twelve deliveries");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_failing_everything_is_suspended_and_probed_then_resumes() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    receiver.set_default_reply(Reply::status(500));
    let config = format!(
        "[queue]\nworkers = 4\n[delivery]\nschedule = [\"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]\n\
         suspend_after = \"1ms\"\nprobe_every = \"300ms\"\n{}",
        webhook("hr", receiver.url(), "")
    );
    let (app, planner) = start(&config).await;
    let plans = publish_many(&*app.store, &planner, 6).await;

    // Suspended: deliveries wait without using up attempts.
    let deferred = common::eventually(WAIT, "a delivery deferred by the open circuit", || async {
        for plan in &plans {
            let key = countersign::jobs::DeliveryJob::key(plan.events[0].event.id, "hr");
            let job = app.store.job_by_key("deliver", &key).await.unwrap().unwrap();
            if job.last_error.as_deref().is_some_and(|e| e.contains("suspended")) {
                return Some(job);
            }
        }
        None
    })
    .await;
    let attempts = app.store.job_attempts(deferred.id).await.unwrap();
    assert!(attempts.iter().any(|a| a.outcome == Some(countersign::store::AttemptOutcome::Deferred)));

    receiver.set_default_reply(Reply::OK);
    let delivered = receiver.wait_for_delivered(6, WAIT).await.unwrap();
    assert_eq!(delivered.len(), 6, "a successful probe closes the circuit and everything goes out");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_refusing_connections_for_a_while_gets_everything_once_it_is_back() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let receiver_port: u16 = receiver.url().rsplit(':').next().unwrap().trim_end_matches("/hooks").parse().unwrap();
    // Nothing listens here until the sink comes back.
    let port = common::process::free_port();
    let config = format!(
        "[queue]\nworkers = 4\n[delivery]\nschedule = [\"100ms\", \"200ms\", \"400ms\", \"800ms\", \"1s\", \"1s\", \"1s\", \"1s\"]\n\
         timeout = \"10s\"\nsuspend_after = \"1s\"\nprobe_every = \"300ms\"\n{}",
        webhook("hr", &format!("http://127.0.0.1:{port}/hooks"), "")
    );
    let (app, planner) = start(&config).await;
    let plans = publish_many(&*app.store, &planner, 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.requests().is_empty());
    let _back = common::balancer::Balancer::spawn_on(port, vec![receiver_port]).await;

    let delivered = receiver.wait_for_delivered(20, WAIT).await.unwrap();
    let ids: HashSet<String> = delivered.iter().map(event_id_of).collect();
    let expected: HashSet<String> = plans.iter().map(|p| p.events[0].event.id.to_string()).collect();
    assert_eq!(ids, expected, "every event arrives once the sink is back");
    let mut retried = 0;
    for plan in &plans {
        let event = plan.events[0].event.id;
        let (state, attempts, _) = common::eventually(WAIT, "the delivery row to say delivered", || async {
            let state = delivery_state(&*app.store, event, "hr").await;
            (state.0 == DeliveryState::Delivered).then_some(state)
        })
        .await;
        assert_eq!(state, DeliveryState::Delivered);
        retried += usize::from(attempts > 1);
    }
    assert!(retried > 0, "refused connections were failed attempts");
    assert!(app.store.dead_jobs(10).await.unwrap().is_empty(), "no dead letter");
    app.shutdown().await;
}
