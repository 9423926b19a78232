//! The `amqp` sink: RabbitMQ, with publisher confirms.
//!
//! Events go to a durable topic exchange (`exchange`, default
//! `countersign`, declared on connect) with the event type as routing key,
//! as persistent messages with `message_id` = event id, `type` = event type
//! and `content_type` = `application/cloudevents+json`. Publishes are
//! mandatory: a message no queue is bound for comes back and counts as a
//! failure, instead of vanishing on an ack. Only a confirm counts as delivered.

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::{OutgoingEvent, Sink, SinkError, scrub};
use crate::config::{Secret, SinkSettings};
use crate::events::CLOUDEVENTS_JSON;

/// The exchange used when the sink names none.
pub const DEFAULT_EXCHANGE: &str = "countersign";

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

pub struct AmqpSink {
    name: String,
    /// The URL to connect to, with `secret` as its password when given.
    uri: String,
    password: Option<Secret>,
    exchange: String,
    /// One connection and confirm-mode channel per sink, opened on first
    /// use and again after it broke. Publishes share the channel; the lock
    /// is held only to fetch or open it.
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink").field("name", &self.name).field("exchange", &self.exchange).finish_non_exhaustive()
    }
}

impl AmqpSink {
    pub fn new(settings: &SinkSettings) -> anyhow::Result<Self> {
        let mut uri = url::Url::parse(&settings.url)?;
        if let Some(password) = &settings.secret {
            uri.set_password(Some(password.expose()))
                .map_err(|()| anyhow::anyhow!("sinks {}: the URL cannot carry a password", settings.name))?;
        }
        Ok(Self {
            name: settings.name.clone(),
            uri: uri.to_string(),
            password: settings.secret.clone(),
            exchange: settings.exchange.clone().unwrap_or_else(|| DEFAULT_EXCHANGE.into()),
            channel: Mutex::new(None),
        })
    }

    fn failed(&self, what: &str, error: impl std::fmt::Display) -> SinkError {
        SinkError::failed(format!(
            "AMQP {what} for sink {} failed: {}",
            self.name,
            scrub(error, &self.uri, self.password.as_ref())
        ))
    }

    async fn channel(&self) -> Result<Channel, SinkError> {
        let mut slot = self.channel.lock().await;
        if let Some((connection, channel)) = slot.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *slot = None;
        let connection = Connection::connect(&self.uri, ConnectionProperties::default())
            .await
            .map_err(|e| self.failed("connect", e))?;
        let channel = connection.create_channel().await.map_err(|e| self.failed("channel", e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| self.failed("confirm.select", e))?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(self.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(|e| self.failed(&format!("declaring exchange {:?}", self.exchange), e))?;
        *slot = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Forgets a channel that failed, so the next attempt opens a fresh one.
    async fn forget(&self, broken: &Channel) {
        let mut slot = self.channel.lock().await;
        if slot.as_ref().is_some_and(|(_, channel)| channel.id() == broken.id()) {
            *slot = None;
        }
    }
}

#[async_trait]
impl Sink for AmqpSink {
    async fn deliver(&self, event: &OutgoingEvent<'_>) -> Result<(), SinkError> {
        let channel = self.channel().await?;
        let properties = BasicProperties::default()
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type.into())
            .with_content_type(CLOUDEVENTS_JSON.into())
            .with_delivery_mode(PERSISTENT)
            .with_app_id("countersign".into())
            .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0));
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let routing_key = event.event_type;
        let published = channel
            .basic_publish(self.exchange.as_str().into(), routing_key.into(), options, event.body, properties)
            .await;
        let confirm = match published {
            Ok(confirm) => confirm.await,
            Err(error) => Err(error),
        };
        let confirmation = match confirm {
            Ok(confirmation) => confirmation,
            Err(error) => {
                self.forget(&channel).await;
                return Err(self.failed("publish", error));
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(SinkError::failed(format!(
                "sink {}: no queue is bound to exchange {:?} for routing key {routing_key:?} ({} {}); the broker dropped it",
                self.name, self.exchange, returned.reply_code, returned.reply_text
            ))),
            Confirmation::Nack(_) => {
                Err(SinkError::failed(format!("sink {}: the broker refused the message (nack)", self.name)))
            }
            Confirmation::NotRequested => {
                self.forget(&channel).await;
                Err(SinkError::failed(format!("sink {}: the channel was not in confirm mode", self.name)))
            }
        }
    }
}
