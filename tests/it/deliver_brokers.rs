//! Delivery to the real brokers on this machine: NATS JetStream at
//! 127.0.0.1:4222 and RabbitMQ at 127.0.0.1:5672 (guest/guest). Each test
//! makes its own stream or exchange and removes it afterwards.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::envelopes::publish_many;
use countersign::deliver::{OutgoingEvent, build_sink};
use countersign::events::Planner;
use countersign::store::DeliveryState;
use futures_util::StreamExt;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;

const WAIT: Duration = Duration::from_secs(60);
/// NATS_URL and AMQP_URL point the tests elsewhere.
fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
const FAST: &str = "[delivery]\nschedule = [\"50ms\", \"50ms\", \"50ms\"]\ntimeout = \"10s\"\n";

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn jetstream() -> async_nats::jetstream::Context {
    let url = nats_url();
    match async_nats::connect(url.as_str()).await {
        Ok(client) => async_nats::jetstream::new(client),
        Err(error) => panic!(
            "NATS is not reachable at {url} ({error}). Start it with JetStream on: \
             `start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js \
             -sd /var/lib/nats-server`, or point NATS_URL at one"
        ),
    }
}

async fn rabbitmq() -> lapin::Channel {
    let url = amqp_url();
    match common::servers::amqp_connect(&url).await {
        Ok(connection) => connection.create_channel().await.unwrap(),
        Err(error) => panic!(
            "RabbitMQ is not reachable at AMQP_URL (default 127.0.0.1:5672 as guest) ({error}). Start it with \
             `rabbitmq-server -detached`"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_receives_each_event_under_its_id_and_drops_a_repeated_publish() {
    let js = jetstream().await;
    let prefix = unique("cstest");
    let stream_name = unique("countersign-test-");
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("cannot create a JetStream stream ({e}); is the server running with -js?"));
    let nats = nats_url();
    let config = format!(
        "{FAST}[[sinks]]\nname = \"identity\"\nkind = \"nats\"\nurl = \"{nats}\"\nsubject_prefix = \"{prefix}\"\n"
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let plans = publish_many(&*app.store, &planner, 3).await;
    let expected: HashSet<String> = plans.iter().map(|p| p.events[0].event.id.to_string()).collect();

    for plan in &plans {
        let event = plan.events[0].event.id;
        common::eventually(WAIT, "the JetStream delivery to be recorded", || async {
            let rows = app.store.deliveries_for(event).await.unwrap();
            (rows[0].state == DeliveryState::Delivered).then_some(())
        })
        .await;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config { durable_name: None, ..Default::default() })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(10).expires(Duration::from_secs(1)).messages().await.unwrap();
    let mut seen = HashSet::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).unwrap().to_string();
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body["id"], id.as_str(), "Nats-Msg-Id is the event id");
        assert_eq!(message.subject.as_str(), format!("{prefix}.envelope.completed"), "the subject is the event type");
        seen.insert(id);
    }
    assert_eq!(seen, expected);

    // The same event published again, through the sink itself: JetStream drops it.
    let event = app.store.event(plans[0].events[0].event.id).await.unwrap().unwrap();
    let body = serde_json::to_vec(&event.body).unwrap();
    let sink = build_sink(&app.settings.sinks[0], Duration::from_secs(10)).unwrap();
    sink.deliver(&OutgoingEvent { id: event.id, event_type: &event.event_type, body: &body })
        .await
        .expect("a duplicate publish is acked");
    let mut stream = js.get_stream(&stream_name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3, "the repeated publish was dropped");
    app.shutdown().await;
    js.delete_stream(&stream_name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_confirms_persistent_messages_keyed_by_event_type_with_the_event_id() {
    let channel = rabbitmq().await;
    let exchange = unique("countersign-test-");
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(exchange.as_str().into(), lapin::ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .unwrap();
    let queue = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.as_str().into(),
            "envelope.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let unbound = unique("countersign-test-unbound-");
    let amqp = amqp_url();
    let config = format!(
        "{FAST}[[sinks]]\nname = \"erp\"\nkind = \"amqp\"\nurl = \"amqp://guest@127.0.0.1:5672/%2f\"\nsecret = \"guest\"\n\
         exchange = \"{exchange}\"\n\
         [[sinks]]\nname = \"nowhere\"\nkind = \"amqp\"\nurl = \"{amqp}\"\nexchange = \"{unbound}\"\n"
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let plans = publish_many(&*app.store, &planner, 3).await;
    let expected: HashSet<String> = plans.iter().map(|p| p.events[0].event.id.to_string()).collect();

    for plan in &plans {
        let event = plan.events[0].event.id;
        common::eventually(WAIT, "the AMQP delivery to be confirmed", || async {
            let rows = app.store.deliveries_for(event).await.unwrap();
            rows.iter().any(|d| d.sink == "erp" && d.state == DeliveryState::Delivered).then_some(())
        })
        .await;
    }
    let mut seen = HashSet::new();
    while let Some(message) = channel.basic_get(queue.name().clone(), BasicGetOptions { no_ack: true }).await.unwrap() {
        let properties = &message.delivery.properties;
        let id = properties.message_id().as_ref().unwrap().to_string();
        let body: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
        assert_eq!(body["id"], id.as_str(), "message_id is the event id");
        assert_eq!(message.delivery.routing_key.as_str(), "envelope.completed", "the routing key is the event type");
        assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
        assert_eq!(properties.content_type().as_ref().map(|c| c.as_str()), Some("application/cloudevents+json"));
        assert_eq!(properties.kind().as_ref().map(|t| t.as_str()), Some("envelope.completed"));
        seen.insert(id);
    }
    assert_eq!(seen, expected);

    // No queue is bound to the other exchange: the broker returns the message, which is no delivery.
    let event = plans[0].events[0].event.id;
    let error = common::eventually(WAIT, "the unroutable delivery to fail", || async {
        let rows = app.store.deliveries_for(event).await.unwrap();
        rows.into_iter().find(|d| d.sink == "nowhere").and_then(|d| d.last_error)
    })
    .await;
    assert!(error.contains("no queue is bound"), "{error}");
    assert!(!error.contains("guest@"), "{error}");
    app.shutdown().await;
    for name in [exchange, unbound] {
        let _ = channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
}
