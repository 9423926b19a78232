//! Delivery: one `deliver` job per (event, sink), run by the ordinary
//! workers. Each sink kind is one file behind the [`Sink`] trait; the
//! [`Deliver`] handler around them owns what is common: retry schedule,
//! per-envelope order, circuit breaker, per-sink timeouts and concurrency,
//! and the delivery row's bookkeeping.

mod amqp;
mod circuit;
mod handler;
mod nats;
pub mod receiver;
pub mod replay;
mod sqs;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;

use crate::config::{Secret, SinkKind, SinkSettings};
use crate::ids::EventId;

pub use circuit::CircuitState;
pub use handler::{DELIVERY_OUTCOMES, Deliver, SinkCircuits};

/// One event on its way out.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingEvent<'a> {
    pub id: EventId,
    pub event_type: &'a str,
    /// The CloudEvent, serialised once; every attempt sends the same bytes.
    pub body: &'a [u8],
}

/// How a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth another attempt: no connection, a 5xx, a timeout, a broker nack.
    #[error("{message}")]
    Failed { message: String, retry_after: Option<Duration> },
    /// The sink is up but asks us to slow down (429): not held against its circuit.
    #[error("{message}")]
    Throttled { message: String, retry_after: Option<Duration> },
    /// The endpoint is gone for good (a webhook's 410): the sink is disabled.
    #[error("{0}")]
    Gone(String),
}

impl SinkError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed { message: message.into(), retry_after: None }
    }
}

/// A destination for events. Implementations connect lazily (a sink that is
/// down at start-up must not stop the service) and return only once the
/// destination has taken the event: a 2xx, a JetStream ack, a broker confirm.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    async fn deliver(&self, event: &OutgoingEvent<'_>) -> Result<(), SinkError>;
}

/// The sink a `[[sinks]]` entry describes. Nothing is connected yet.
pub fn build_sink(settings: &SinkSettings, timeout: Duration) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match settings.kind {
        SinkKind::Webhook => Box::new(webhook::WebhookSink::new(settings, timeout)?),
        SinkKind::Nats => Box::new(nats::NatsSink::new(settings, timeout)),
        SinkKind::Amqp => Box::new(amqp::AmqpSink::new(settings)?),
        SinkKind::Sqs => Box::new(sqs::SqsSink::new(settings, timeout)?),
    })
}

/// Removes credentials from an error message before it is logged or stored:
/// client libraries like to repeat the URL they could not reach.
fn scrub(message: impl std::fmt::Display, url: &str, secret: Option<&Secret>) -> String {
    let mut message = message.to_string();
    if let Ok(parsed) = url::Url::parse(url)
        && let Some(password) = parsed.password()
        && !password.is_empty()
    {
        message = message.replace(password, "[redacted]");
        if let Ok(decoded) = urlencoding_decode(password) {
            message = message.replace(&decoded, "[redacted]");
        }
    }
    if let Some(secret) = secret
        && !secret.expose().is_empty()
    {
        message = message.replace(secret.expose(), "[redacted]");
    }
    message
}

fn urlencoding_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_passwords_and_tokens_from_messages() {
        let url = "amqp://guest:s%40cret@127.0.0.1:5672/%2f";
        let message = "cannot connect to amqp://guest:s%40cret@127.0.0.1 (password s@cret), token tok123";
        let scrubbed = scrub(message, url, Some(&Secret::new("tok123")));
        assert!(!scrubbed.contains("s%40cret") && !scrubbed.contains("s@cret") && !scrubbed.contains("tok123"));
    }
}
