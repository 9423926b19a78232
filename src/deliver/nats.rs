//! The `nats` sink: a JetStream publish, awaited until the stream acks it.
//!
//! The subject is the event type, under `subject_prefix` when one is set; a
//! stream whose subjects cover it must exist (the operator's choice of
//! retention and replicas). `Nats-Msg-Id` is the event id, so JetStream
//! drops a repeated publish within the stream's duplicate window; such a
//! publish is acked as a duplicate and counts as delivered.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::ContextBuilder;
use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{OutgoingEvent, Sink, SinkError, scrub};
use crate::config::{Secret, SinkSettings};
use crate::events::CLOUDEVENTS_JSON;

#[derive(Debug)]
pub struct NatsSink {
    name: String,
    url: String,
    token: Option<Secret>,
    subject_prefix: Option<String>,
    timeout: Duration,
    /// Connected on first use; the client reconnects by itself afterwards.
    context: OnceCell<jetstream::Context>,
}

impl NatsSink {
    pub fn new(settings: &SinkSettings, timeout: Duration) -> Self {
        Self {
            name: settings.name.clone(),
            url: settings.url.clone(),
            token: settings.secret.clone(),
            subject_prefix: settings.subject_prefix.clone(),
            timeout,
            context: OnceCell::new(),
        }
    }

    pub fn subject(&self, event_type: &str) -> String {
        match &self.subject_prefix {
            Some(prefix) => format!("{prefix}.{event_type}"),
            None => event_type.to_string(),
        }
    }

    async fn context(&self) -> Result<&jetstream::Context, SinkError> {
        self.context
            .get_or_try_init(|| async {
                let mut options = async_nats::ConnectOptions::new()
                    .name("countersign")
                    .connection_timeout(self.timeout)
                    .max_reconnects(None);
                if let Some(token) = &self.token {
                    options = options.token(token.expose().to_string());
                }
                let client = options.connect(self.url.as_str()).await.map_err(|e| {
                    SinkError::failed(format!("cannot connect sink {} to NATS: {}", self.name, self.scrub(e)))
                })?;
                Ok(ContextBuilder::new().timeout(self.timeout).build(client))
            })
            .await
    }

    fn scrub(&self, message: impl std::fmt::Display) -> String {
        scrub(message, &self.url, self.token.as_ref())
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn deliver(&self, event: &OutgoingEvent<'_>) -> Result<(), SinkError> {
        let context = self.context().await?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.to_string().as_str());
        headers.insert("Content-Type", CLOUDEVENTS_JSON);
        let subject = self.subject(event.event_type);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            SinkError::failed(format!(
                "JetStream {what} on {subject:?} for sink {} failed: {}",
                self.name,
                self.scrub(e)
            ))
        };
        let ack = context
            .publish_with_headers(subject.clone(), headers, bytes::Bytes::copy_from_slice(event.body))
            .await
            .map_err(|e| failed("publish", &e))?;
        let ack = ack.await.map_err(|e| failed("ack", &e))?;
        if ack.duplicate {
            tracing::debug!(stream = %ack.stream, sequence = ack.sequence, "JetStream already had this event");
        }
        Ok(())
    }
}
