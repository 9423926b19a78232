//! Requests from a message bus (`[[api.sources]]`): a NATS JetStream stream
//! read by a durable pull consumer, or a RabbitMQ queue. Each message is a
//! request of the source's client, `{"profile", "data"}`, named by its
//! message id (the idempotency key), and goes through the same [`Intake`]
//! as the requests API.
//!
//! A message is acknowledged only once its request is committed (or found
//! committed with the same body: a redelivery), so a crash in between
//! brings it back rather than losing it. One that can never become a
//! request is published to the source's dead letter with the reason, then
//! acknowledged; a store failure sends it back to the bus to be tried again.

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::intake::{AgreementRequest, Intake, Refusal};
use crate::config::{Secret, Settings, SourceKind};

/// Largest message body taken, as for the requests API.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest message id taken, as for an `Idempotency-Key`.
const MAX_ID_CHARS: usize = 255;
/// How long JetStream waits for an ack before delivering again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages handed to countersign ahead of the one it works on.
const PREFETCH: u16 = 32;
/// How long a message the store could not take stays away (NATS).
const NAK_DELAY: Duration = Duration::from_secs(5);
/// Wait before handing such a message back (AMQP, which has no delay of its own).
const REQUEUE_PAUSE: Duration = Duration::from_secs(2);
/// Connecting, or asking the broker something, takes at most this long.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an AMQP connection to close on the way out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A dead letter's reason is cut to this many characters.
const MAX_REASON_CHARS: usize = 1000;
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Every `outcome` of `countersign_source_messages_total`.
pub const SOURCE_OUTCOMES: [&str; 4] = ["taken", "duplicate", "dead_lettered", "retried"];

pub const NATS_REASON_HEADER: &str = "Countersign-Reason";
pub const NATS_SOURCE_HEADER: &str = "Countersign-Source";
/// The original message id, also where `Nats-Msg-Id` could not keep it.
pub const NATS_ORIGINAL_ID_HEADER: &str = "Countersign-Msg-Id";
pub const AMQP_REASON_HEADER: &str = "countersign-reason";
pub const AMQP_SOURCE_HEADER: &str = "countersign-source";

/// The configured sources, each read by its own task once running.
pub struct Sources {
    sources: Vec<Source>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.sources.iter().map(|s| &s.name)).finish()
    }
}

/// One `[[api.sources]]` entry, with what reading it needs.
struct Source {
    /// Its place in `api.sources`, for naming its keys in logs.
    index: usize,
    name: String,
    kind: SourceKind,
    /// As configured: it may carry a password, so it is logged redacted only.
    url: String,
    client: String,
    secret: Option<Secret>,
    stream: Option<String>,
    subject: Option<String>,
    durable: Option<String>,
    queue: Option<String>,
    dead_letter: String,
    /// The profiles of `client`.
    allowed: Vec<String>,
    intake: Intake,
}

/// What became of one message.
#[derive(Debug)]
enum Verdict {
    Taken,
    /// Its request was stored already, with the same body.
    Duplicate,
    /// It can never become a request, for this reason.
    DeadLetter(String),
    /// Nothing is wrong with it, but it could not be stored now.
    Retry(String),
}

/// Why a source stopped reading: logged, then it connects again.
#[derive(Debug)]
struct Failure {
    message: String,
    /// The configuration key at fault, when it is one.
    key: Option<String>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), key: None }
    }

    fn at(key: String, message: impl Into<String>) -> Self {
        Self { message: message.into(), key: Some(key) }
    }
}

impl Sources {
    pub fn new(settings: &Settings, intake: Intake) -> Self {
        let sources = settings
            .api
            .sources
            .iter()
            .enumerate()
            .map(|(index, source)| Source {
                index,
                name: source.name.clone(),
                kind: source.kind,
                url: source.url.clone(),
                client: source.client.clone(),
                secret: source.secret.clone(),
                stream: source.stream.clone(),
                subject: source.subject.clone(),
                durable: source.durable.clone(),
                queue: source.queue.clone(),
                dead_letter: source.dead_letter.clone(),
                allowed: settings
                    .api
                    .clients
                    .iter()
                    .find(|c| c.name == source.client)
                    .map(|c| c.profiles.clone())
                    .unwrap_or_default(),
                intake: intake.clone(),
            })
            .collect();
        Self { sources }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Reads every source until `stop`; a message being handled when it
    /// comes is finished first, those not yet handled stay on the bus.
    pub async fn run(self, stop: CancellationToken) {
        metrics::describe_counter!(
            "countersign_source_messages_total",
            "Messages read from [[api.sources]], by source and outcome"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for source in self.sources {
            for outcome in SOURCE_OUTCOMES {
                source.count(outcome, 0);
            }
            tasks.spawn(source.run(stop.clone()));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a bus source's task ended abnormally");
            }
        }
    }
}

impl Source {
    fn key(&self, field: &str) -> String {
        format!("api.sources[{}].{field}", self.index)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn count(&self, outcome: &'static str, by: u64) {
        metrics::counter!("countersign_source_messages_total", "source" => self.name.clone(), "outcome" => outcome)
            .increment(by);
    }

    /// Client libraries like to repeat the URL they could not reach.
    fn scrub(&self, message: impl std::fmt::Display) -> String {
        scrub(message, &self.url, self.secret.as_ref())
    }

    async fn run(self, stop: CancellationToken) {
        if let Some(reason) = self.loops_back() {
            tracing::error!(source = %self.name(), key = %self.key("dead_letter"), "{reason}; the source is off");
            return;
        }
        let mut backoff = Backoff::default();
        while !stop.is_cancelled() {
            let ended = match self.kind {
                SourceKind::Nats => Box::pin(self.read_nats(&stop, &mut backoff)).await,
                SourceKind::Amqp => Box::pin(self.read_amqp(&stop, &mut backoff)).await,
            };
            let Err(failure) = ended else { break };
            let wait = backoff.step();
            let url = crate::store::redact_url(&self.url);
            match &failure.key {
                Some(key) => tracing::error!(source = %self.name(), %url, %key, retry_in_secs = wait.as_secs(),
                    "bus source cannot read: {}", failure.message),
                None => tracing::warn!(source = %self.name(), %url, retry_in_secs = wait.as_secs(),
                    "bus source cannot read: {}", failure.message),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(source = %self.name(), "bus source stopped");
    }

    /// A dead letter that the source itself would read again would go round for ever.
    fn loops_back(&self) -> Option<String> {
        let own = match self.kind {
            SourceKind::Nats => self.subject.as_deref().is_some_and(|s| subject_matches(s, &self.dead_letter)),
            SourceKind::Amqp => self.queue.as_deref() == Some(self.dead_letter.as_str()),
        };
        own.then(|| format!("dead letters to {:?} would come back to this source", self.dead_letter))
    }

    /// Decides about one message, storing its request if it is one.
    async fn judge(&self, id: Option<&str>, body: &[u8]) -> Verdict {
        let key = match message_key(id) {
            Ok(key) => key,
            Err(reason) => return Verdict::DeadLetter(reason),
        };
        let (profile, data) = match read_body(body) {
            Ok(request) => request,
            Err(reason) => return Verdict::DeadLetter(reason),
        };
        let request = AgreementRequest { client: self.client.clone(), idempotency_key: key, profile, data };
        match self.intake.take(request, &self.allowed).await {
            Ok(taken) if taken.new => Verdict::Taken,
            Ok(_) => Verdict::Duplicate,
            Err(Refusal::Store(error)) => Verdict::Retry(error.to_string()),
            Err(refusal) => Verdict::DeadLetter(refusal.to_string()),
        }
    }

    fn judged(&self, id: Option<&str>, verdict: &Verdict) {
        let id = id.unwrap_or("(none)");
        match verdict {
            Verdict::Taken => tracing::debug!(source = %self.name(), message_id = %id, "request taken from the bus"),
            Verdict::Duplicate => {
                tracing::debug!(source = %self.name(), message_id = %id, "request already taken; acknowledged again")
            }
            Verdict::DeadLetter(reason) => tracing::warn!(source = %self.name(), message_id = %id,
                dead_letter = %self.dead_letter, %reason, "message can never become a request; dead-lettered"),
            Verdict::Retry(error) => tracing::warn!(source = %self.name(), message_id = %id, %error,
                "the store cannot take the request now; the message goes back to the bus"),
        }
    }

    // ---- NATS JetStream ----

    /// Reads until `stop` (`Ok`) or until the bus fails (`Err`).
    async fn read_nats(&self, stop: &CancellationToken, backoff: &mut Backoff) -> Result<(), Failure> {
        let (Some(stream_name), Some(subject)) = (self.stream.as_deref(), self.subject.as_deref()) else {
            return Err(Failure::at(self.key("stream"), "a nats source needs stream and subject"));
        };
        let mut options = async_nats::ConnectOptions::new()
            .name("countersign")
            .connection_timeout(BROKER_TIMEOUT)
            .max_reconnects(None);
        if let Some(token) = &self.secret {
            options = options.token(token.expose().to_string());
        }
        let Some(client) = unless_stopped(stop, options.connect(self.url.as_str())).await else { return Ok(()) };
        let client = client.map_err(|e| Failure::new(format!("cannot connect to NATS: {}", self.scrub(e))))?;
        let js = jetstream::ContextBuilder::new().timeout(BROKER_TIMEOUT).build(client.clone());

        let Some(stream) = unless_stopped(stop, js.get_stream(stream_name)).await else { return Ok(()) };
        let stream = stream.map_err(|error| match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Failure::at(
                    self.key("stream"),
                    format!("the JetStream stream {stream_name:?} does not exist; it is the bus owner's to create"),
                )
            }
            _ => Failure::new(format!("cannot look up stream {stream_name:?}: {}", self.scrub(error))),
        })?;
        let durable = self.durable.clone().unwrap_or_else(|| format!("countersign-{}", self.name));
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!("countersign: agreement requests of source {}", self.name)),
            filter_subject: subject.to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            ..Default::default()
        };
        // Create or update: a changed subject or ack wait is put in force.
        let Some(created) = unless_stopped(stop, stream.create_consumer(config)).await else { return Ok(()) };
        let consumer = created.map_err(|e| {
            Failure::at(
                self.key("durable"),
                format!("cannot create or update consumer {durable:?} on {stream_name:?}: {}", self.scrub(e)),
            )
        })?;
        let Some(messages) =
            unless_stopped(stop, consumer.stream().max_messages_per_batch(usize::from(PREFETCH)).messages()).await
        else {
            return Ok(());
        };
        let mut messages =
            messages.map_err(|e| Failure::new(format!("cannot pull from {durable:?}: {}", self.scrub(e))))?;
        backoff.reset();
        tracing::info!(source = %self.name, stream = %stream_name, %subject, %durable, "reading agreement requests from NATS");

        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) if error.kind() == consumer::pull::MessagesErrorKind::MissingHeartbeat => {
                    // Not the end: the client reconnects and pulls again by itself.
                    tracing::warn!(source = %self.name, "no heartbeat from NATS; waiting for the connection");
                    continue;
                }
                Some(Err(error)) => return Err(Failure::new(format!("pulling failed: {}", self.scrub(error)))),
                None => return Err(Failure::new("the consumer's message stream ended")),
            };
            self.handle_nats(&client, &js, &message).await?;
        }
    }

    async fn handle_nats(
        &self,
        client: &async_nats::Client,
        js: &jetstream::Context,
        message: &jetstream::Message,
    ) -> Result<(), Failure> {
        let id = message.headers.as_ref().and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID)).map(|v| v.as_str());
        let verdict = self.judge(id, &message.payload).await;
        self.judged(id, &verdict);
        let failed = |what: &str, e: &dyn std::fmt::Display| Failure::new(format!("{what} failed: {}", self.scrub(e)));
        match verdict {
            Verdict::Taken | Verdict::Duplicate => {
                // A double ack: the stream has the ack before the next message is looked at.
                message.double_ack().await.map_err(|e| failed("ack", &e))?;
                self.count(if matches!(verdict, Verdict::Taken) { "taken" } else { "duplicate" }, 1);
            }
            Verdict::DeadLetter(reason) => {
                if let Err(error) = self.dead_letter_nats(client, js, id, &reason, message).await {
                    let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                    self.count("retried", 1);
                    return Err(error);
                }
                message.double_ack().await.map_err(|e| failed("ack", &e))?;
                self.count("dead_lettered", 1);
            }
            Verdict::Retry(_) => {
                message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await.map_err(|e| failed("nak", &e))?;
                self.count("retried", 1);
            }
        }
        Ok(())
    }

    /// Publishes the message, body unchanged, to the dead-letter subject:
    /// through JetStream (awaiting its ack) when a stream keeps that
    /// subject, else as a core publish flushed to the server.
    ///
    /// The dead letter carries the original `Nats-Msg-Id`, which JetStream
    /// also takes for its duplicate check: a stream that has seen that id
    /// within its duplicate window (the source's own stream keeping the
    /// dead-letter subject, or an earlier message that reused the id) acks
    /// the dead letter as a duplicate and drops it. It is then published
    /// again under an id of its own, so that it is never lost; the original
    /// id is always in `Countersign-Msg-Id` as well.
    async fn dead_letter_nats(
        &self,
        client: &async_nats::Client,
        js: &jetstream::Context,
        id: Option<&str>,
        reason: &str,
        message: &jetstream::Message,
    ) -> Result<(), Failure> {
        let subject = self.dead_letter.as_str();
        let mut headers = HeaderMap::new();
        headers.insert(NATS_REASON_HEADER, header_text(reason));
        headers.insert(NATS_SOURCE_HEADER, header_text(self.name()));
        if let Some(id) = id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
            headers.insert(NATS_ORIGINAL_ID_HEADER, id);
        }
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Failure::new(format!("dead-lettering to {subject:?}: {what} failed: {}", self.scrub(e)))
        };
        let publish = |headers: HeaderMap| async {
            let ack = js
                .publish_with_headers(subject.to_string(), headers, message.payload.clone())
                .await
                .map_err(|e| failed("JetStream publish", &e))?;
            ack.await.map_err(|e| failed("JetStream ack", &e))
        };
        match js.stream_by_subject(subject).await {
            Ok(_) => {
                let ack = publish(headers.clone()).await?;
                if ack.duplicate && id.is_some() {
                    // Its own id names this stream message, so a redelivery
                    // of it is still dead-lettered only once.
                    let own = match message.info() {
                        Ok(info) => format!("countersign-dead-letter/{}/{}", info.stream, info.stream_sequence),
                        Err(_) => format!("countersign-dead-letter/{}", uuid::Uuid::new_v4()),
                    };
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, own.as_str());
                    publish(headers).await?;
                }
            }
            Err(error) if error.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {
                client
                    .publish_with_headers(subject.to_string(), headers, message.payload.clone())
                    .await
                    .map_err(|e| failed("publish", &e))?;
                client.flush().await.map_err(|e| failed("flush", &e))?;
            }
            Err(error) if error.kind() == jetstream::context::GetStreamByNameErrorKind::InvalidSubject => {
                return Err(Failure::at(self.key("dead_letter"), format!("{subject:?} is not a NATS subject")));
            }
            Err(error) => return Err(failed("looking up its stream", &error)),
        }
        Ok(())
    }

    // ---- AMQP ----

    /// Reads until `stop` (`Ok`) or until the broker fails (`Err`).
    async fn read_amqp(&self, stop: &CancellationToken, backoff: &mut Backoff) -> Result<(), Failure> {
        let uri = self.amqp_uri()?;
        let connect = tokio::time::timeout(BROKER_TIMEOUT, Connection::connect(&uri, ConnectionProperties::default()));
        let Some(connected) = unless_stopped(stop, connect).await else { return Ok(()) };
        let connection = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(Failure::new(format!("cannot connect to AMQP: {}", self.scrub(error)))),
            Err(_) => return Err(Failure::new(format!("no AMQP handshake within {BROKER_TIMEOUT:?}"))),
        };
        let read = self.consume_amqp(&connection, stop, backoff).await;
        // Closing hands every message not yet acknowledged back to the queue.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "countersign is done reading".into())).await;
        read
    }

    async fn consume_amqp(
        &self,
        connection: &Connection,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), Failure> {
        let Some(queue) = self.queue.as_deref() else {
            return Err(Failure::at(self.key("queue"), "an amqp source needs a queue"));
        };
        let queue_name = ShortString::try_new(queue)
            .map_err(|_| Failure::at(self.key("queue"), "is longer than AMQP's 255 bytes"))?;
        let dead_letter = ShortString::try_new(self.dead_letter.as_str())
            .map_err(|_| Failure::at(self.key("dead_letter"), "is longer than AMQP's 255 bytes"))?;
        let failed = |what: &str, e: lapin::Error| Failure::new(format!("{what} failed: {}", self.scrub(e)));
        let setup = async {
            self.declare_queue(connection, &dead_letter, "dead_letter").await?;
            self.declare_queue(connection, &queue_name, "queue").await?;
            let publisher = connection.create_channel().await.map_err(|e| failed("opening a channel", e))?;
            publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| failed("confirm.select", e))?;
            let channel = connection.create_channel().await.map_err(|e| failed("opening a channel", e))?;
            channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| failed("basic.qos", e))?;
            let consumer = channel
                .basic_consume(queue_name.clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await
                .map_err(|e| {
                    Failure::at(self.key("queue"), format!("consuming {queue:?} failed: {}", self.scrub(e)))
                })?;
            Ok::<_, Failure>((publisher, consumer))
        };
        let Some(ready) = unless_stopped(stop, tokio::time::timeout(BROKER_TIMEOUT, setup)).await else {
            return Ok(());
        };
        let (publisher, mut consumer) =
            ready.map_err(|_| Failure::new(format!("the broker did not answer within {BROKER_TIMEOUT:?}")))??;
        backoff.reset();
        tracing::info!(source = %self.name, %queue, "reading agreement requests from AMQP");

        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(failed("consuming", error)),
                None => return Err(Failure::new(format!("the broker cancelled the consumer of {queue:?}"))),
            };
            self.handle_amqp(&publisher, &dead_letter, &delivery, stop).await?;
        }
    }

    /// Declares `name` durable. A queue that exists with other arguments
    /// (a quorum queue, a length limit) is refused as a 406 and used as it
    /// is: the bus owner's settings win.
    async fn declare_queue(&self, connection: &Connection, name: &ShortString, field: &str) -> Result<(), Failure> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Failure::new(format!("opening a channel failed: {}", self.scrub(e))))?;
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        match channel.queue_declare(name.clone(), durable, FieldTable::default()).await {
            Ok(_) => {
                let _ = channel.close(200, "declared".into()).await;
                Ok(())
            }
            Err(error) if is_precondition_failed(&error) => {
                tracing::info!(source = %self.name(), queue = %name, "queue exists with other arguments; used as it is");
                Ok(())
            }
            Err(error) => Err(Failure::at(
                self.key(field),
                format!("declaring queue {:?} failed: {}", name.as_str(), self.scrub(error)),
            )),
        }
    }

    async fn handle_amqp(
        &self,
        publisher: &Channel,
        dead_letter: &ShortString,
        delivery: &Delivery,
        stop: &CancellationToken,
    ) -> Result<(), Failure> {
        let id = delivery.properties.message_id().as_ref().map(ShortString::as_str);
        let verdict = self.judge(id, &delivery.data).await;
        self.judged(id, &verdict);
        let failed = |what: &str, e: lapin::Error| Failure::new(format!("{what} failed: {}", self.scrub(e)));
        let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
        match verdict {
            Verdict::Taken | Verdict::Duplicate => {
                delivery.acker.ack(BasicAckOptions::default()).await.map_err(|e| failed("basic.ack", e))?;
                self.count(if matches!(verdict, Verdict::Taken) { "taken" } else { "duplicate" }, 1);
            }
            Verdict::DeadLetter(reason) => {
                if let Err(error) = self.dead_letter_amqp(publisher, dead_letter, &reason, delivery).await {
                    let _ = delivery.acker.nack(requeue).await;
                    self.count("retried", 1);
                    return Err(error);
                }
                delivery.acker.ack(BasicAckOptions::default()).await.map_err(|e| failed("basic.ack", e))?;
                self.count("dead_lettered", 1);
            }
            Verdict::Retry(_) => {
                // The pause keeps a store outage from spinning the message
                // through the queue; it ends early when the service stops.
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(REQUEUE_PAUSE) => {}
                }
                delivery.acker.nack(requeue).await.map_err(|e| failed("basic.nack", e))?;
                self.count("retried", 1);
            }
        }
        Ok(())
    }

    /// Publishes the message, body unchanged, to the dead-letter queue
    /// through the default exchange: persistent, mandatory (a missing queue
    /// is a failure, not a silent drop), confirmed by the broker.
    async fn dead_letter_amqp(
        &self,
        publisher: &Channel,
        dead_letter: &ShortString,
        reason: &str,
        delivery: &Delivery,
    ) -> Result<(), Failure> {
        let original = &delivery.properties;
        let mut headers = original.headers().clone().unwrap_or_default();
        headers.insert(AMQP_REASON_HEADER.into(), AMQPValue::LongString(truncated(reason).into()));
        headers.insert(AMQP_SOURCE_HEADER.into(), AMQPValue::LongString(self.name().into()));
        let mut properties = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(PERSISTENT)
            .with_app_id("countersign".into());
        if let Some(id) = original.message_id() {
            properties = properties.with_message_id(id.clone());
        }
        if let Some(content_type) = original.content_type() {
            properties = properties.with_content_type(content_type.clone());
        }
        if let Some(correlation_id) = original.correlation_id() {
            properties = properties.with_correlation_id(correlation_id.clone());
        }
        let failed = |e: lapin::Error| {
            Failure::new(format!("dead-lettering to queue {:?} failed: {}", dead_letter.as_str(), self.scrub(e)))
        };
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = publisher
            .basic_publish("".into(), dead_letter.clone(), options, &delivery.data, properties)
            .await
            .map_err(failed)?;
        match tokio::time::timeout(BROKER_TIMEOUT, confirm).await {
            Err(_) => Err(Failure::new("the broker did not confirm the dead letter in time")),
            Ok(Err(error)) => Err(failed(error)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(Failure::new(format!(
                "dead-letter queue {:?} is gone; the broker returned the message",
                dead_letter.as_str()
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(Failure::new("the broker refused the dead letter (nack)")),
            Ok(Ok(Confirmation::NotRequested)) => Err(Failure::new("the dead-letter channel is not in confirm mode")),
        }
    }

    /// The URL to connect to, with `secret` as its password when given.
    fn amqp_uri(&self) -> Result<String, Failure> {
        let mut uri =
            url::Url::parse(&self.url).map_err(|e| Failure::at(self.key("url"), format!("is not a URL: {e}")))?;
        if let Some(password) = &self.secret {
            uri.set_password(Some(password.expose()))
                .map_err(|()| Failure::at(self.key("url"), "cannot carry a password"))?;
        }
        Ok(uri.to_string())
    }
}

/// The idempotency key a message id makes: 1–255 visible ASCII characters.
fn message_key(id: Option<&str>) -> Result<String, String> {
    let Some(id) = id.map(str::trim).filter(|id| !id.is_empty()) else {
        return Err("the message has no message id (the request's idempotency key)".into());
    };
    if id.chars().count() > MAX_ID_CHARS || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("the message id must be 1–{MAX_ID_CHARS} visible ASCII characters"));
    }
    Ok(id.to_string())
}

/// The profile and data of a body `{"profile": "…", "data": {…}}`.
fn read_body(body: &[u8]) -> Result<(String, Value), String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("the body is over {MAX_BODY_BYTES} bytes"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(mut map) = value else { return Err("the body must be a JSON object".into()) };
    if let Some(key) = map.keys().find(|k| !["profile", "data"].contains(&k.as_str())) {
        return Err(format!("the body has an unknown field {key:?}; a request has only profile and data"));
    }
    let profile = match map.remove("profile") {
        Some(Value::String(profile)) => profile,
        Some(_) => return Err("profile must be a string".into()),
        None => return Err("profile is required".into()),
    };
    match map.remove("data") {
        Some(data @ Value::Object(_)) => Ok((profile, data)),
        Some(_) => Err("data must be a JSON object".into()),
        None => Err("data is required".into()),
    }
}

/// Whether NATS subject `filter` (with `*` and `>` wildcards) takes `subject`.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut wanted = filter.split('.');
    let mut given = subject.split('.');
    loop {
        match (wanted.next(), given.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(w), Some(g)) if w == g => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(MAX_REASON_CHARS).collect()
}

/// A header value holds one line: control characters would end it early.
fn header_text(text: &str) -> String {
    truncated(text).chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406)
}

/// `Some(result)`, or `None` when `stop` comes first.
async fn unless_stopped<T>(stop: &CancellationToken, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        out = work => Some(out),
    }
}

/// Removes the URL's password and the secret from a client library's message.
fn scrub(message: impl std::fmt::Display, url: &str, secret: Option<&Secret>) -> String {
    let mut message = message.to_string();
    if let Ok(parsed) = url::Url::parse(url)
        && let Some(password) = parsed.password().filter(|p| !p.is_empty())
    {
        message = message.replace(password, "[redacted]");
        let decoded: String =
            url::form_urlencoded::parse(format!("x={password}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
        if !decoded.is_empty() {
            message = message.replace(&decoded, "[redacted]");
        }
    }
    if let Some(secret) = secret.filter(|s| !s.expose().is_empty()) {
        message = message.replace(secret.expose(), "[redacted]");
    }
    message
}

/// Waits between connection attempts: doubling up to a cap, from the start
/// again once a connection reads.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_FIRST }
    }
}

impl Backoff {
    fn step(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(BACKOFF_CAP);
        wait
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_body_is_a_profile_and_an_object_of_data_and_nothing_else() {
        let (profile, data) = read_body(br#"{"profile": "offer", "data": {"a": 1}}"#).unwrap();
        assert_eq!((profile.as_str(), data), ("offer", serde_json::json!({"a": 1})));
        for bad in [
            &b"{\"profile\": "[..],
            b"[1]",
            br#"{"profile": "offer"}"#,
            br#"{"data": {}}"#,
            br#"{"profile": 1, "data": {}}"#,
            br#"{"profile": "offer", "data": [1]}"#,
            br#"{"profile": "offer", "data": {}, "priority": 1}"#,
        ] {
            assert!(read_body(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(read_body(&vec![b' '; MAX_BODY_BYTES + 1]).unwrap_err().contains("over"));
    }

    #[test]
    fn a_message_id_is_an_idempotency_key() {
        assert_eq!(message_key(Some(" hire-1815 ")).unwrap(), "hire-1815");
        for bad in [None, Some(""), Some("  "), Some("a b"), Some("é")] {
            assert!(message_key(bad).is_err(), "{bad:?}");
        }
        assert!(message_key(Some(&"k".repeat(256))).is_err());
    }

    #[test]
    fn subjects_match_with_wildcards() {
        assert!(subject_matches("hr.requests", "hr.requests"));
        assert!(subject_matches("hr.*", "hr.requests"));
        assert!(subject_matches("hr.>", "hr.requests.dead"));
        assert!(!subject_matches("hr.*", "hr.requests.dead"));
        assert!(!subject_matches("hr.requests", "hr.dead"));
        assert!(!subject_matches("hr.>", "hr"));
    }

    #[test]
    fn reasons_fit_in_one_header_line() {
        assert_eq!(header_text("a\r\nb"), "a  b");
        assert_eq!(header_text(&"x".repeat(5000)).len(), MAX_REASON_CHARS);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_again() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| backoff.step().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.step(), BACKOFF_FIRST);
    }

    #[test]
    fn passwords_and_tokens_are_scrubbed() {
        let scrubbed =
            scrub("no route to amqp://u:s%40cret@h (s@cret) tok", "amqp://u:s%40cret@h", Some(&Secret::new("tok")));
        assert!(
            !scrubbed.contains("s%40cret") && !scrubbed.contains("s@cret") && !scrubbed.contains("tok"),
            "{scrubbed}"
        );
    }
}
