//! Requests for agreements from a message bus (`[[api.sources]]`), against
//! the real brokers on this machine: NATS JetStream at 127.0.0.1:4222 and
//! RabbitMQ at 127.0.0.1:5672 (guest/guest). Each test makes its own stream
//! or queues and removes them afterwards. No DocuSign access is configured:
//! a taken request's send job just waits.

use crate::common;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use common::servers::{PrivateNats, PrivateRabbitMq};
use common::{TestApp, eventually};
use countersign::domain::Agreement;
use countersign::jobs::JobKind;
use countersign::sandbox::envelopes::ONBOARDING_TEMPLATE;
use countersign::store::AgreementQuery;
use futures_util::StreamExt;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const HRIS: &str = "hris-token-0123456789";

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn jetstream() -> jetstream::Context {
    let url = nats_url();
    match async_nats::connect(url.as_str()).await {
        Ok(client) => jetstream::new(client),
        Err(error) => panic!(
            "NATS is not reachable at {url} ({error}). Start it with JetStream on: \
             `start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js \
             -sd /var/lib/nats-server`, or point NATS_URL at one"
        ),
    }
}

async fn rabbitmq() -> Channel {
    let url = amqp_url();
    match common::servers::amqp_connect(&url).await {
        Ok(connection) => connection.create_channel().await.unwrap(),
        Err(error) => panic!(
            "RabbitMQ is not reachable at AMQP_URL (default 127.0.0.1:5672 as guest) ({error}). Start it with \
             `rabbitmq-server -detached`"
        ),
    }
}

/// The HR system's client with its offer-letter profile, and `source`
/// (one `[[api.sources]]` table) reading requests on its behalf.
fn config(source: &str) -> String {
    format!(
        r#"
[api]
[[api.clients]]
name = "hris"
token = "{HRIS}"
profiles = ["offer-letter"]
{source}
[[profiles]]
name = "offer-letter"
template_id = "{ONBOARDING_TEMPLATE}"
roles.Employee = {{ name = "/employee/name", email = "/employee/email" }}
roles."HR Manager" = {{ name = "/manager/name", email = "/manager/email" }}
tabs.start_date = "/employee/start_date"
"#
    )
}

fn offer(employee: &str) -> Value {
    json!({
        "employee": {
            "name": format!("{employee} Lovelace"),
            "email": format!("{}@example.com", employee.to_lowercase()),
            "start_date": "2027-01-04",
        },
        "manager": { "name": "Grace Hopper", "email": "grace@example.com" },
    })
}

fn request(employee: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "profile": "offer-letter", "data": offer(employee) })).unwrap()
}

/// The messages that can never become a request, by message id (`None`:
/// no id), with what their dead letter's reason says. `hire-1` must have
/// been taken before `reused` comes.
fn invalid_messages() -> Vec<(Option<&'static str>, Vec<u8>, &'static str)> {
    let mut no_email = offer("Cleo");
    no_email["employee"].as_object_mut().unwrap().remove("email");
    vec![
        (Some("bad-json"), b"{\"profile\": ".to_vec(), "not valid JSON"),
        (
            Some("unknown-profile"),
            serde_json::to_vec(&json!({ "profile": "nda", "data": offer("Cleo") })).unwrap(),
            "profile `nda` is not one this client may use",
        ),
        (
            Some("no-email"),
            serde_json::to_vec(&json!({ "profile": "offer-letter", "data": no_email })).unwrap(),
            "data/employee/email",
        ),
        (Some("hire-1"), request("Bob"), "was used for agreement"),
        (None, request("Dan"), "no message id"),
    ]
}

/// The client's agreements as the requests API lists them.
async fn listed(app: &TestApp) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/agreements", app.base_url))
        .bearer_auth(HRIS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().await.unwrap()
}

async fn all_agreements(app: &TestApp) -> Vec<Agreement> {
    let query = AgreementQuery { client: None, status: None, profile: None, limit: 100, offset: 0 };
    app.store.list_agreements(&query).await.unwrap().agreements
}

/// The one agreement there is, once there is one, with its send job.
async fn the_one_agreement(app: &TestApp, employee: &str) -> Agreement {
    let agreement =
        eventually(WAIT, "the request to be stored", || async { all_agreements(app).await.into_iter().next() }).await;
    assert_eq!(agreement.client, "hris");
    assert_eq!(agreement.profile, "offer-letter");
    assert_eq!(agreement.data, offer(employee));
    let job = app.store.job_by_key(JobKind::SendAgreement.as_str(), &agreement.id.to_string()).await.unwrap();
    assert!(job.is_some(), "the send job is committed with the request");
    agreement
}

async fn source_count(app: &TestApp, source: &str, outcome: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.base_url)).await.unwrap().text().await.unwrap();
    common::metric(&text, "countersign_source_messages_total", &[("source", source), ("outcome", outcome)])
}

// ---- NATS JetStream ----

/// Streams of this test's own: one taking the requests on
/// `{prefix}.requests`, and one keeping the dead letters on `{prefix}.dead`
/// (or the same stream keeping both). A message id is a duplicate to the
/// requests' stream for only 100 ms, so a test can put the same id in twice.
struct NatsBus {
    js: jetstream::Context,
    stream: String,
    dead_stream: String,
    prefix: String,
    source: String,
}

impl NatsBus {
    async fn new() -> Self {
        Self::create(false).await
    }

    /// Dead letters kept in the requests' own stream.
    async fn sharing_one_stream() -> Self {
        Self::create(true).await
    }

    async fn create(one_stream: bool) -> Self {
        let js = jetstream().await;
        let prefix = unique("cstest");
        let stream = unique("countersign-test-");
        let dead_stream = if one_stream { stream.clone() } else { unique("countersign-test-dead-") };
        let requests = format!("{prefix}.requests");
        let dead = format!("{prefix}.dead");
        let streams = if one_stream {
            vec![(stream.clone(), vec![requests, dead])]
        } else {
            vec![(stream.clone(), vec![requests]), (dead_stream.clone(), vec![dead])]
        };
        for (name, subjects) in streams {
            js.create_stream(stream::Config {
                name,
                subjects,
                duplicate_window: Duration::from_millis(100),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("cannot create a JetStream stream ({e}); is the server running with -js?"));
        }
        Self { js, stream, dead_stream, prefix, source: unique("hr-db-") }
    }

    fn requests(&self) -> String {
        format!("{}.requests", self.prefix)
    }

    fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    fn source_toml(&self, dead_letter: &str) -> String {
        format!(
            "[[api.sources]]\nname = \"{}\"\nkind = \"nats\"\nurl = \"{}\"\nclient = \"hris\"\nstream = \"{}\"\n\
             subject = \"{}\"\ndead_letter = \"{dead_letter}\"\n",
            self.source,
            nats_url(),
            self.stream,
            self.requests(),
        )
    }

    async fn spawn(&self) -> TestApp {
        TestApp::spawn(common::sqlite().await, &config(&self.source_toml(&self.dead()))).await
    }

    /// Publishes until the stream holds it: a publish inside the duplicate
    /// window is dropped and publishing again is the way to get it in.
    async fn publish(&self, id: Option<&str>, body: &[u8]) {
        eventually(WAIT, "JetStream to take the message", || async {
            let mut headers = HeaderMap::new();
            if let Some(id) = id {
                headers.insert("Nats-Msg-Id", id);
            }
            let ack = self.js.publish_with_headers(self.requests(), headers, body.to_vec().into()).await.unwrap();
            (!ack.await.unwrap().duplicate).then_some(())
        })
        .await;
    }

    /// Waits until countersign's durable consumer has acknowledged `count` messages and holds none.
    async fn all_acked(&self, count: u64) {
        let stream = self.js.get_stream(&self.stream).await.unwrap();
        let durable = format!("countersign-{}", self.source);
        eventually(WAIT, "every message to be acknowledged", || async {
            let info = stream.consumer_info(&durable).await.ok()?;
            (info.ack_floor.stream_sequence >= count && info.num_ack_pending == 0 && info.num_pending == 0)
                .then_some(())
        })
        .await;
    }

    /// The dead letters, read by a consumer of the test's own.
    async fn dead_letters(&self, expected: usize) -> Vec<jetstream::Message> {
        let stream = self.js.get_stream(&self.dead_stream).await.unwrap();
        let reader = stream
            .create_consumer(consumer::pull::Config { filter_subject: self.dead(), ..Default::default() })
            .await
            .unwrap();
        let mut batch =
            reader.fetch().max_messages(expected + 1).expires(Duration::from_secs(2)).messages().await.unwrap();
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.unwrap());
        }
        messages
    }

    async fn delete(self) {
        self.js.delete_stream(&self.stream).await.unwrap();
        if self.dead_stream != self.stream {
            self.js.delete_stream(&self.dead_stream).await.unwrap();
        }
    }
}

fn header<'a>(message: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_a_request_message_becomes_one_agreement_and_is_acked() {
    let bus = NatsBus::new().await;
    let app = bus.spawn().await;
    bus.publish(Some("hire-1815"), &request("Ada")).await;

    let agreement = the_one_agreement(&app, "Ada").await;
    bus.all_acked(1).await;
    let list = listed(&app).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["agreements"][0]["id"], agreement.id.to_string());
    assert_eq!(list["agreements"][0]["status"], "requested");
    let (stored, _) = app.store.agreement_by_key("hris", "hire-1815").await.unwrap().unwrap();
    assert_eq!(stored.id, agreement.id, "the message id is the idempotency key");
    assert_eq!(source_count(&app, &bus.source, "taken").await, 1.0);
    assert!(bus.dead_letters(0).await.is_empty(), "nothing was dead-lettered");
    app.shutdown().await;
    bus.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_a_message_id_seen_twice_makes_one_agreement() {
    let bus = NatsBus::new().await;
    let app = bus.spawn().await;
    // Keys in another order: the same request all the same.
    let reordered = serde_json::to_vec(&json!({ "data": offer("Ada"), "profile": "offer-letter" })).unwrap();
    bus.publish(Some("hire-1815"), &request("Ada")).await;
    bus.publish(Some("hire-1815"), &reordered).await;

    bus.all_acked(2).await;
    let agreement = the_one_agreement(&app, "Ada").await;
    assert_eq!(all_agreements(&app).await.len(), 1, "one agreement for one message id");
    assert_eq!(listed(&app).await["total"], 1);
    assert_eq!(agreement.data, offer("Ada"));
    assert_eq!(source_count(&app, &bus.source, "taken").await, 1.0);
    assert_eq!(source_count(&app, &bus.source, "duplicate").await, 1.0);
    assert!(bus.dead_letters(0).await.is_empty(), "a redelivery is no dead letter");
    app.shutdown().await;
    bus.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_messages_that_cannot_become_requests_are_dead_lettered_with_the_reason() {
    nats_dead_letters(NatsBus::new().await, true).await;
}

/// JetStream takes a dead letter with its original's `Nats-Msg-Id` for a
/// duplicate of that original when one stream keeps both: it is published
/// under an id of its own instead of being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_dead_letters_kept_in_the_requests_own_stream_are_not_lost_to_its_duplicate_check() {
    nats_dead_letters(NatsBus::sharing_one_stream().await, false).await;
}

/// Publishes the invalid messages and checks their dead letters; with
/// `original_ids`, each carries its original's id as its `Nats-Msg-Id`.
async fn nats_dead_letters(bus: NatsBus, original_ids: bool) {
    let app = bus.spawn().await;
    bus.publish(Some("hire-1"), &request("Ada")).await;
    let taken = the_one_agreement(&app, "Ada").await;
    let invalid = invalid_messages();
    for (id, body, _) in &invalid {
        bus.publish(*id, body).await;
    }

    bus.all_acked(1 + invalid.len() as u64).await;
    let dead = bus.dead_letters(invalid.len()).await;
    assert_eq!(dead.len(), invalid.len(), "each invalid message is dead-lettered once");
    for ((id, body, reason), letter) in invalid.iter().zip(&dead) {
        assert_eq!(&letter.payload[..], &body[..], "the body is unchanged");
        assert_eq!(header(letter, "Countersign-Msg-Id"), *id, "the message id is kept");
        if original_ids {
            assert_eq!(header(letter, "Nats-Msg-Id"), *id, "the message id is kept");
        }
        assert_eq!(header(letter, "Countersign-Source"), Some(bus.source.as_str()));
        let given = header(letter, "Countersign-Reason").unwrap_or_default();
        assert!(given.contains(reason), "{id:?}: {given:?} should say {reason:?}");
    }
    let agreements = all_agreements(&app).await;
    assert_eq!(agreements.len(), 1, "no invalid message made an agreement");
    assert_eq!(agreements[0].id, taken.id);
    assert_eq!(agreements[0].data, offer("Ada"), "the reused id did not change the request");
    assert_eq!(source_count(&app, &bus.source, "dead_lettered").await, invalid.len() as f64);
    app.shutdown().await;
    bus.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_dead_letters_no_stream_keeps_are_published_on_core_nats() {
    let bus = NatsBus::new().await;
    let subject = unique("cstest-dead-");
    let client = async_nats::connect(nats_url()).await.unwrap();
    let mut letters = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let app = TestApp::spawn(common::sqlite().await, &config(&bus.source_toml(&subject))).await;
    bus.publish(Some("bad-json"), b"not json").await;

    let letter = tokio::time::timeout(WAIT, letters.next()).await.expect("a dead letter").unwrap();
    assert_eq!(&letter.payload[..], b"not json");
    let headers = letter.headers.unwrap();
    assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("bad-json"));
    assert!(headers.get("Countersign-Reason").is_some_and(|r| r.as_str().contains("not valid JSON")));
    bus.all_acked(1).await;
    assert!(all_agreements(&app).await.is_empty());
    app.shutdown().await;
    bus.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_a_source_whose_stream_is_missing_reads_once_the_owner_creates_it() {
    let js = jetstream().await;
    let prefix = unique("cstest");
    let stream_name = unique("countersign-test-");
    let source = unique("hr-db-");
    let toml = format!(
        "[[api.sources]]\nname = \"{source}\"\nkind = \"nats\"\nurl = \"{}\"\nclient = \"hris\"\n\
         stream = \"{stream_name}\"\nsubject = \"{prefix}.requests\"\ndead_letter = \"{prefix}.dead\"\n",
        nats_url()
    );
    let app = TestApp::spawn(common::sqlite().await, &config(&toml)).await;
    // The stream is the bus owner's: the source only looks for it, and
    // looks again with backoff until it is there.
    eventually(WAIT, "the source to be running", || async {
        let text = reqwest::get(format!("{}/metrics", app.base_url)).await.ok()?.text().await.ok()?;
        text.contains(&format!("source=\"{source}\"")).then_some(())
    })
    .await;
    assert!(js.get_stream(&stream_name).await.is_err(), "countersign did not create the stream");

    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.requests")],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "hire-7");
    js.publish_with_headers(format!("{prefix}.requests"), headers, request("Eve").into()).await.unwrap().await.unwrap();
    the_one_agreement(&app, "Eve").await;
    app.shutdown().await;
    js.delete_stream(&stream_name).await.unwrap();
}

// ---- RabbitMQ ----

/// A request queue and a dead-letter queue of this test's own.
struct AmqpBus {
    channel: Channel,
    queue: String,
    dead: String,
    source: String,
}

impl AmqpBus {
    async fn new() -> Self {
        let channel = rabbitmq().await;
        let bus = Self {
            channel,
            queue: unique("countersign-test-requests-"),
            dead: unique("countersign-test-dead-"),
            source: unique("hr-db-"),
        };
        // Declared before anything is published: the default exchange drops
        // what no queue takes.
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        bus.channel.queue_declare(bus.queue.as_str().into(), durable, FieldTable::default()).await.unwrap();
        bus
    }

    async fn spawn(&self) -> TestApp {
        let source = format!(
            "[[api.sources]]\nname = \"{}\"\nkind = \"amqp\"\nurl = \"amqp://guest@127.0.0.1:5672/%2f\"\n\
             secret = \"guest\"\nclient = \"hris\"\nqueue = \"{}\"\ndead_letter = \"{}\"\n",
            self.source, self.queue, self.dead
        );
        TestApp::spawn(common::sqlite().await, &config(&source)).await
    }

    async fn publish(&self, id: Option<&str>, body: &[u8]) {
        let mut properties =
            BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        self.channel
            .basic_publish("".into(), self.queue.as_str().into(), BasicPublishOptions::default(), body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn ready(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        self.channel.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap().message_count()
    }

    /// Once countersign has stopped (and so handed back anything it had not
    /// acknowledged), the request queue is empty only if it acked everything.
    async fn nothing_left_after(&self, app: TestApp) {
        app.shutdown().await;
        assert_eq!(self.ready(&self.queue).await, 0, "every message was acknowledged");
    }

    async fn delete(self) {
        for queue in [&self.queue, &self.dead] {
            let _ = self.channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
    }
}

fn amqp_header(properties: &BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_a_request_message_becomes_one_agreement_and_is_acked() {
    let bus = AmqpBus::new().await;
    let app = bus.spawn().await;
    bus.publish(Some("hire-1815"), &request("Ada")).await;

    let agreement = the_one_agreement(&app, "Ada").await;
    let list = listed(&app).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["agreements"][0]["id"], agreement.id.to_string());
    eventually(WAIT, "the message to be counted as taken", || async {
        (source_count(&app, &bus.source, "taken").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(bus.ready(&bus.queue).await, 0);
    bus.nothing_left_after(app).await;
    assert_eq!(bus.ready(&bus.dead).await, 0, "nothing was dead-lettered");
    bus.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_a_message_id_published_twice_makes_one_agreement() {
    let bus = AmqpBus::new().await;
    let app = bus.spawn().await;
    bus.publish(Some("hire-1815"), &request("Ada")).await;
    bus.publish(Some("hire-1815"), &request("Ada")).await;

    the_one_agreement(&app, "Ada").await;
    eventually(WAIT, "the second message to be taken as a duplicate", || async {
        (source_count(&app, &bus.source, "duplicate").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(all_agreements(&app).await.len(), 1, "one agreement for one message id");
    assert_eq!(listed(&app).await["total"], 1);
    assert_eq!(source_count(&app, &bus.source, "taken").await, 1.0);
    bus.nothing_left_after(app).await;
    assert_eq!(bus.ready(&bus.dead).await, 0, "a redelivery is no dead letter");
    bus.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_messages_that_cannot_become_requests_are_dead_lettered_with_the_reason() {
    let bus = AmqpBus::new().await;
    let app = bus.spawn().await;
    bus.publish(Some("hire-1"), &request("Ada")).await;
    let taken = the_one_agreement(&app, "Ada").await;
    let invalid = invalid_messages();
    for (id, body, _) in &invalid {
        bus.publish(*id, body).await;
    }

    eventually(WAIT, "every invalid message to be dead-lettered", || async {
        (source_count(&app, &bus.source, "dead_lettered").await == invalid.len() as f64).then_some(())
    })
    .await;
    for (id, body, reason) in &invalid {
        let letter = bus
            .channel
            .basic_get(bus.dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a dead letter for each invalid message");
        let properties = &letter.delivery.properties;
        assert_eq!(&letter.delivery.data, body, "the body is unchanged");
        assert_eq!(properties.message_id().as_ref().map(|m| m.as_str()), *id, "the message id is kept");
        assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
        assert_eq!(amqp_header(properties, "countersign-source").as_deref(), Some(bus.source.as_str()));
        let given = amqp_header(properties, "countersign-reason").unwrap_or_default();
        assert!(given.contains(reason), "{id:?}: {given:?} should say {reason:?}");
    }
    let agreements = all_agreements(&app).await;
    assert_eq!(agreements.len(), 1, "no invalid message made an agreement");
    assert_eq!((agreements[0].id, &agreements[0].data), (taken.id, &offer("Ada")));
    bus.nothing_left_after(app).await;
    bus.delete().await;
}

// ---- The bus going away ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_requests_published_after_the_server_came_back_are_taken() {
    let mut nats = PrivateNats::start().await;
    let connect = |url: String| async move { jetstream::new(async_nats::connect(url).await.unwrap()) };
    let js = connect(nats.url()).await;
    js.create_stream(stream::Config {
        name: "requests".into(),
        subjects: vec!["hr.requests".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    drop(js);
    let source = format!(
        "[[api.sources]]\nname = \"hr-db\"\nkind = \"nats\"\nurl = \"{}\"\nclient = \"hris\"\nstream = \"requests\"\n\
         subject = \"hr.requests\"\ndead_letter = \"hr.dead\"\n",
        nats.url()
    );
    let app = TestApp::spawn(common::sqlite().await, &config(&source)).await;
    let publish = |js: jetstream::Context, id: &'static str, employee: &'static str| async move {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        js.publish_with_headers("hr.requests", headers, request(employee).into()).await.unwrap().await.unwrap();
    };
    publish(connect(nats.url()).await, "hire-1", "Ada").await;
    the_one_agreement(&app, "Ada").await;

    nats.crash();
    nats.resume().await;
    publish(connect(nats.url()).await, "hire-2", "Bob").await;
    eventually(WAIT, "the request published after the restart", || async {
        app.store.agreement_by_key("hris", "hire-2").await.unwrap()
    })
    .await;
    assert_eq!(all_agreements(&app).await.len(), 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_requests_published_after_the_broker_came_back_are_taken() {
    let mut rabbitmq = PrivateRabbitMq::start().await;
    let publish = |url: String, id: &'static str, employee: &'static str| async move {
        let connection = common::servers::amqp_connect(&url).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare("requests".into(), durable, FieldTable::default()).await.unwrap();
        let properties = BasicProperties::default().with_delivery_mode(2).with_message_id(id.into());
        channel
            .basic_publish("".into(), "requests".into(), BasicPublishOptions::default(), &request(employee), properties)
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = connection.close(200, "published".into()).await;
    };
    publish(rabbitmq.url(), "hire-1", "Ada").await;
    let url = rabbitmq.url();
    let source = format!(
        "[[api.sources]]\nname = \"hr-db\"\nkind = \"amqp\"\nurl = \"{url}\"\nclient = \"hris\"\nqueue = \"requests\"\n\
         dead_letter = \"requests.dead\"\n"
    );
    let app = TestApp::spawn(common::sqlite().await, &config(&source)).await;
    the_one_agreement(&app, "Ada").await;

    rabbitmq.crash();
    rabbitmq.resume().await;
    publish(rabbitmq.url(), "hire-2", "Bob").await;
    eventually(WAIT, "the request published after the restart", || async {
        app.store.agreement_by_key("hris", "hire-2").await.unwrap()
    })
    .await;
    assert_eq!(all_agreements(&app).await.len(), 2);
    app.shutdown().await;
}
