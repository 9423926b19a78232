//! A webhook consumer on 127.0.0.1, as an IT system would run one: it
//! verifies every request as Standard Webhooks 1.0 says (signature over
//! `{webhook-id}.{webhook-timestamp}.{body}` with any of its secrets,
//! timestamp within five minutes) and answers 401 to what does not verify.
//! `countersign demo` and the tests start one; tests also script its
//! answers (500 then 200, 410, 429 with `Retry-After`) and can hold
//! requests unanswered to play a hanging endpoint.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{oneshot, watch};

use super::webhook::secret_key;

/// A fresh Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes.
pub fn random_secret() -> String {
    use rand::RngExt;
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// How far a `webhook-timestamp` may be from the receiver's clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a request did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than five minutes away from now")]
    OutsideTolerance,
    #[error("no signature matches any of the receiver's secrets")]
    NoMatchingSignature,
}

/// Checks a request as a Standard Webhooks consumer must: returns its
/// `webhook-id` and timestamp. `keys` are the decoded secrets (see
/// [`secret_key`]); `now` is Unix seconds.
pub fn verify(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(String, i64), VerifyError> {
    let header =
        |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or(VerifyError::MissingHeader(name));
    let id = header("webhook-id")?;
    let timestamp_text = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;
    let timestamp: i64 = timestamp_text.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(VerifyError::OutsideTolerance);
    }
    for signature in signatures.split(' ') {
        let Some(encoded) = signature.strip_prefix("v1,") else { continue };
        let Ok(given) = STANDARD.decode(encoded) else { continue };
        for key in keys {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else { continue };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp_text.as_bytes());
            mac.update(b".");
            mac.update(body);
            // verify_slice compares in constant time.
            if mac.verify_slice(&given).is_ok() {
                return Ok((id.to_string(), timestamp));
            }
        }
    }
    Err(VerifyError::NoMatchingSignature)
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Reply {
    pub const OK: Reply = Reply { status: 204, retry_after: None };

    pub fn status(status: u16) -> Self {
        Self { status, retry_after: None }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    pub webhook_id: Option<String>,
    pub timestamp: Option<i64>,
    /// `None` when the signature verified; why not otherwise.
    pub rejected: Option<VerifyError>,
    pub content_type: Option<String>,
    pub signature: Option<String>,
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
    /// When its answer was decided (after any hold).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl ReceivedWebhook {
    pub fn verified(&self) -> bool {
        self.rejected.is_none()
    }

    /// Verified and answered 2xx: the sender counts it as delivered.
    pub fn delivered(&self) -> bool {
        self.verified() && (200..300).contains(&self.status)
    }

    /// The CloudEvent it carried.
    pub fn event(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Debug)]
struct Shared {
    keys: Mutex<Vec<Vec<u8>>>,
    replies: Mutex<VecDeque<Reply>>,
    default_reply: Mutex<Reply>,
    log: Mutex<Vec<ReceivedWebhook>>,
    /// Bumped on every request answered, for waiters.
    answered: watch::Sender<u64>,
    held: watch::Sender<bool>,
    waiting: Mutex<usize>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl WebhookReceiver {
    /// Starts a receiver on a free port of 127.0.0.1 that accepts requests
    /// signed with any of `secrets` (`whsec_...`). Secrets that are not
    /// Standard Webhooks secrets verify nothing.
    pub async fn spawn(secrets: &[&str]) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            keys: Mutex::new(secrets.iter().filter_map(|s| secret_key(s)).collect()),
            replies: Mutex::default(),
            default_reply: Mutex::new(Reply::OK),
            log: Mutex::default(),
            answered: watch::channel(0).0,
            held: watch::channel(false).0,
            waiting: Mutex::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let app = axum::Router::new().fallback(receive).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::warn!(%error, "webhook receiver stopped");
            }
        });
        Ok(Self { url, shared, stop: Some(stop) })
    }

    /// Where to point a webhook sink.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the secrets requests are verified with (a consumer's side of a rotation).
    pub fn set_secrets(&self, secrets: &[&str]) {
        *lock(&self.shared.keys) = secrets.iter().filter_map(|s| secret_key(s)).collect();
    }

    /// Answers the next verified requests with these, in order, then with the default.
    pub fn reply_next(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.replies).extend(replies);
    }

    /// Answers every verified request with `reply` once scripted replies run out.
    pub fn set_default_reply(&self, reply: Reply) {
        *lock(&self.shared.default_reply) = reply;
    }

    /// Leaves requests unanswered until [`WebhookReceiver::release`]: a hanging endpoint.
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Requests waiting for an answer while held.
    pub fn waiting(&self) -> usize {
        *lock(&self.shared.waiting)
    }

    /// Every request answered so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedWebhook> {
        lock(&self.shared.log).clone()
    }

    /// Verified requests answered 2xx.
    pub fn delivered(&self) -> Vec<ReceivedWebhook> {
        self.requests().into_iter().filter(ReceivedWebhook::delivered).collect()
    }

    /// Waits until `done` holds for the requests answered so far, or `timeout` passes.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedWebhook]) -> bool,
    ) -> Result<Vec<ReceivedWebhook>, Vec<ReceivedWebhook>> {
        let mut answered = self.shared.answered.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            answered.borrow_and_update();
            let requests = self.requests();
            if done(&requests) {
                return Ok(requests);
            }
            if tokio::time::timeout_at(deadline, answered.changed()).await.is_err() {
                return Err(requests);
            }
        }
    }

    /// Waits until `count` requests were delivered (verified and answered 2xx).
    pub async fn wait_for_delivered(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<ReceivedWebhook>> {
        match self.wait_until(timeout, |r| r.iter().filter(|r| r.delivered()).count() >= count).await {
            Ok(requests) => Ok(requests.into_iter().filter(ReceivedWebhook::delivered).collect()),
            Err(requests) => anyhow::bail!(
                "{} of {count} events delivered to the receiver within {timeout:?} ({} requests in all)",
                requests.iter().filter(|r| r.delivered()).count(),
                requests.len()
            ),
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut held = shared.held.subscribe();
    if *held.borrow_and_update() {
        *lock(&shared.waiting) += 1;
        let _ = held.wait_for(|held| !*held).await;
        *lock(&shared.waiting) -= 1;
    }
    let now = chrono::Utc::now().timestamp();
    let keys = lock(&shared.keys).clone();
    let verified = verify(&keys, &headers, &body, now);
    let reply = match verified {
        Ok(_) => lock(&shared.replies).pop_front().unwrap_or(*lock(&shared.default_reply)),
        Err(_) => Reply::status(401),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    lock(&shared.log).push(ReceivedWebhook {
        webhook_id: header("webhook-id"),
        timestamp: header("webhook-timestamp").and_then(|t| t.parse().ok()),
        rejected: verified.err(),
        content_type: header("content-type"),
        signature: header("webhook-signature"),
        body,
        status: reply.status,
        received_at: chrono::Utc::now(),
    });
    shared.answered.send_modify(|n| *n += 1);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.retry_after {
        Some(seconds) => (status, [("retry-after", seconds.to_string())]).into_response(),
        None => status.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::webhook::sign;

    fn headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    #[test]
    fn verification_accepts_any_listed_signature_within_five_minutes_only() {
        let old = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = vec![7u8; 32];
        let now = 1_800_000_000;
        let body = b"{}";
        let both = format!("{} {}", sign(&old, "evt", now, body), sign(&new, "evt", now, body));
        assert_eq!(verify(std::slice::from_ref(&new), &headers("evt", now, &both), body, now), Ok(("evt".into(), now)));
        assert_eq!(
            verify(std::slice::from_ref(&old), &headers("evt", now, &both), body, now + 299),
            Ok(("evt".into(), now))
        );
        assert_eq!(
            verify(std::slice::from_ref(&old), &headers("evt", now, &both), body, now + 301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            verify(std::slice::from_ref(&old), &headers("evt", now, &both), b"{ }", now),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify(&[vec![1u8; 32]], &headers("evt", now, &both), body, now),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(verify(&[old], &HeaderMap::new(), body, now), Err(VerifyError::MissingHeader("webhook-id")));
    }
}
