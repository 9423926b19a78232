//! The `webhook` sink: an HTTP POST of the CloudEvent (structured mode),
//! signed as Standard Webhooks 1.0 says, so consumers verify it with any
//! Standard Webhooks library.
//!
//! Headers: `webhook-id` (the event id, the same on every retry, so it is
//! the consumer's idempotency key), `webhook-timestamp` (Unix seconds of
//! this attempt), `webhook-signature` (`v1,` + base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under the base64-decoded part of the
//! `whsec_` secret; one per secret, space-separated, while a secret is
//! rotated). Answers: 2xx delivered; 410 gone (the sink is disabled); 429
//! and 503 honour `Retry-After`; anything else is retried. Redirects are
//! not followed: a signed request must not be replayed elsewhere.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{OutgoingEvent, Sink, SinkError};
use crate::config::{Secret, SinkSettings};
use crate::events::CLOUDEVENTS_JSON;

/// How much of an error answer is kept in the delivery's last error.
const ERROR_BODY_BYTES: usize = 512;

/// The key bytes of a `whsec_` secret; `None` if it is not one.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix("whsec_")?).ok()
}

/// The `v1,` signature of one message under one key.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else { return String::new() };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[derive(Debug)]
pub struct WebhookSink {
    name: String,
    url: String,
    keys: Vec<Vec<u8>>,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(settings: &SinkSettings, timeout: Duration) -> anyhow::Result<Self> {
        let keys = settings.signing_secrets().into_iter().map(Secret::expose).filter_map(secret_key).collect();
        // A client per sink: its own connection pool, so a sink that holds
        // connections open cannot starve another's.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { name: settings.name.clone(), url: settings.url.clone(), keys, client })
    }
}

#[async_trait]
impl Sink for WebhookSink {
    async fn deliver(&self, event: &OutgoingEvent<'_>) -> Result<(), SinkError> {
        let id = event.id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let signatures: Vec<String> = self.keys.iter().map(|key| sign(key, &id, timestamp, event.body)).collect();
        let response = self
            .client
            .post(&self.url)
            .header("content-type", CLOUDEVENTS_JSON)
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(event.body.to_vec())
            .send()
            .await
            // The URL may carry a token in its query: never repeat it.
            .map_err(|e| SinkError::failed(format!("POST to sink {} failed: {}", self.name, e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(retry_after);
        let message = format!("sink {} answered HTTP {status}{}", self.name, error_excerpt(response).await);
        Err(match status.as_u16() {
            410 => SinkError::Gone(message),
            429 => SinkError::Throttled { message, retry_after },
            503 => SinkError::Failed { message, retry_after },
            _ => SinkError::Failed { message, retry_after: None },
        })
    }
}

/// The start of an error answer's body, for the operator reading the dead letter.
async fn error_excerpt(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_BYTES);
    let text = String::from_utf8_lossy(&body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let parsed = retry_after(&later).unwrap();
        assert!(parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90), "{parsed:?}");
        assert_eq!(retry_after("soon"), None);
    }
}
