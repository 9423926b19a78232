//! `[[sinks]]`: where events go, one table per sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Webhook,
    Nats,
    Amqp,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    pub name: String,
    pub kind: SinkKind,
    /// May carry credentials (`amqp://user:password@host`): printed redacted.
    pub url: String,
    /// webhook: the signing secret (`whsec_...`); nats: an auth token;
    /// amqp: the password, replacing any in `url`.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// webhook: more signing secrets, used together with `secret` while a
    /// secret is rotated (every request carries one signature per secret).
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The bearer token this sink's consumers fetch documents with.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Overrides `delivery.timeout` for this sink.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Deliveries to this sink running at once in this process; the rest
    /// wait, so a slow sink cannot take every worker. Default: half of `queue.workers`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// nats: subjects are `{subject_prefix}.{event type}` (just the type without it).
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// amqp: the topic exchange published to (declared durable); the routing key is the event type.
    #[serde(default)]
    pub exchange: Option<String>,
}

impl std::fmt::Debug for SinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &crate::store::redact_url(&self.url))
            .field("secrets", &self.signing_secrets().len())
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("subject_prefix", &self.subject_prefix)
            .field("exchange", &self.exchange)
            .finish()
    }
}
