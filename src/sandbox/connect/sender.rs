//! Delivery: posts one notification, signed, and retries it the way Connect
//! retries a configuration that requires acknowledgement
//! (`docs/DOCUSIGN.md` §3), with the day between retries compressed.

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use super::json_sim::SimMessage;
use super::{ConnectFormat, NotificationOptions, signature_headers, xml_body_at};
use crate::sandbox::envelopes::Envelope;

/// When a delivery counts as failed and how often it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; DocuSign gives up after 10.
    pub max_retries: u32,
    /// The wait before each retry; DocuSign's is about a day.
    pub interval: Duration,
    /// How long a receiver has to answer 2xx; DocuSign waits 100 s.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 10, interval: Duration::from_secs(1), timeout: Duration::from_secs(100) }
    }
}

/// How one notification's delivery went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Requests made, the first one included.
    pub attempts: u32,
    /// Whether some attempt was answered 2xx in time.
    pub delivered: bool,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// Posts Connect notifications to one listener URL, as one Connect
/// configuration with its HMAC keys (and optional basic auth) would.
#[derive(Clone)]
pub struct ConnectSender {
    url: String,
    hmac_keys: Vec<String>,
    policy: RetryPolicy,
    basic_auth: Option<(String, String)>,
    time_zone_offset_hours: i32,
    /// Building the client can fail (TLS setup); the error is reported by
    /// every send instead of making construction fallible.
    client: Result<reqwest::Client, String>,
}

impl fmt::Debug for ConnectSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys and the password stay out of logs.
        f.debug_struct("ConnectSender")
            .field("url", &self.url)
            .field("hmac_keys", &self.hmac_keys.len())
            .field("policy", &self.policy)
            .field("basic_auth", &self.basic_auth.as_ref().map(|(user, _)| user))
            .field("time_zone_offset_hours", &self.time_zone_offset_hours)
            .finish_non_exhaustive()
    }
}

impl ConnectSender {
    /// A sender to `url`, signing with every key in `hmac_keys` (none: unsigned).
    pub fn new(url: impl Into<String>, hmac_keys: Vec<String>, policy: RetryPolicy) -> Self {
        let client = reqwest::Client::builder()
            // Connect's success is a 2xx from the configured URL itself, so a
            // redirect is an answer, not a place to go.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| crate::telemetry::error_chain(&error));
        Self {
            url: url.into(),
            hmac_keys,
            policy,
            basic_auth: None,
            // The sample messages' account is on Pacific time.
            time_zone_offset_hours: -8,
            client,
        }
    }

    /// Sends `Authorization: Basic …`, as "Include Basic Authentication Header" does.
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    /// The account time zone that legacy XML times are local to.
    pub fn with_time_zone_offset(mut self, hours: i32) -> Self {
        self.time_zone_offset_hours = hours;
        self
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Delivers the notification for `options.event` on `envelope`, retrying
    /// until a 2xx or `max_retries` retries. Every attempt is the same message
    /// generated at the same time; JSON SIM counts the attempt in `retryCount`.
    pub async fn send(
        &self,
        envelope: &Envelope,
        format: ConnectFormat,
        options: &NotificationOptions,
    ) -> DeliveryReport {
        let generated_at = Utc::now();
        let account_id = envelope.account_id.to_string();
        match format {
            ConnectFormat::Json => {
                let mut message = SimMessage::new(envelope, options, generated_at);
                self.deliver(|retry| message.body(retry), format.content_type(), &account_id).await
            }
            ConnectFormat::Xml => {
                let body = xml_body_at(envelope, options, self.time_zone_offset_hours, generated_at);
                self.deliver(|_| body.clone(), format.content_type(), &account_id).await
            }
        }
    }

    /// Delivers `body` exactly as given, signed and retried like [`ConnectSender::send`];
    /// for bodies no envelope would produce.
    pub async fn send_body(&self, body: impl Into<Vec<u8>>, content_type: &str, account_id: &str) -> DeliveryReport {
        let body = body.into();
        self.deliver(|_| body.clone(), content_type, account_id).await
    }

    async fn deliver(
        &self,
        mut body_for_retry: impl FnMut(u32) -> Vec<u8>,
        content_type: &str,
        account_id: &str,
    ) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        let client = match &self.client {
            Ok(client) => client,
            Err(error) => {
                report.last_error = Some(format!("cannot build the HTTP client: {error}"));
                return report;
            }
        };
        for retry in 0..=self.policy.max_retries {
            if retry > 0 {
                tokio::time::sleep(self.policy.interval).await;
            }
            report.attempts += 1;
            let outcome = self.attempt(client, body_for_retry(retry), content_type, account_id).await;
            match outcome {
                Ok(status) if (200..300).contains(&status) => {
                    report.last_status = Some(status);
                    report.last_error = None;
                    report.delivered = true;
                    return report;
                }
                Ok(status) => {
                    report.last_status = Some(status);
                    report.last_error = Some(format!("the listener answered HTTP {status}"));
                }
                Err(error) => {
                    report.last_status = None;
                    report.last_error = Some(error);
                }
            }
            tracing::debug!(url = %self.url, attempt = report.attempts, error = ?report.last_error, "Connect delivery failed");
        }
        report
    }

    /// One POST; the status it got, or why it got none in time.
    async fn attempt(
        &self,
        client: &reqwest::Client,
        body: Vec<u8>,
        content_type: &str,
        account_id: &str,
    ) -> Result<u16, String> {
        let mut request =
            client.post(&self.url).timeout(self.policy.timeout).header(reqwest::header::CONTENT_TYPE, content_type);
        let signatures = signature_headers(&body, &self.hmac_keys);
        // Connect names the account in a header only when it signs (so that
        // a listener can pick the account's key); Basic alone goes without.
        if !signatures.is_empty() {
            request = request.header("X-Authorization-Digest", "HMACSHA256").header("X-DocuSign-AccountId", account_id);
        }
        for (name, value) in signatures {
            request = request.header(name, value);
        }
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        match request.body(body).send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(error) if error.is_timeout() => {
                Err(format!("no answer within {:?} ({})", self.policy.timeout, crate::telemetry::error_chain(&error)))
            }
            Err(error) => Err(crate::telemetry::error_chain(&error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::{HeaderMap, StatusCode};
    use base64::Engine;
    use bytes::Bytes;
    use serde_json::Value;

    use super::super::tests::{envelope, independent_hmac};
    use super::super::xml::tests::parse;
    use super::*;

    /// What the receiver saw of one request.
    #[derive(Debug, Clone)]
    struct Received {
        headers: HeaderMap,
        body: Bytes,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    #[derive(Clone, Default)]
    struct Script {
        received: Arc<Mutex<Vec<Received>>>,
        /// Per request in turn: the status and how long to wait before answering; then 200 at once.
        answers: Arc<Mutex<VecDeque<(u16, Duration)>>>,
    }

    /// A listener on 127.0.0.1 that records every request; stops when dropped.
    struct Receiver {
        url: String,
        script: Script,
        task: tokio::task::JoinHandle<()>,
    }

    impl Receiver {
        async fn start(answers: &[(u16, Duration)]) -> Self {
            let script =
                Script { answers: Arc::new(Mutex::new(answers.iter().copied().collect())), ..Script::default() };
            let app = Router::new()
                .route("/connect", axum::routing::post(record))
                .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
                .with_state(script.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/connect", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Self { url, script, task }
        }

        fn received(&self) -> Vec<Received> {
            self.script.received.lock().unwrap().clone()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn record(State(script): State<Script>, headers: HeaderMap, body: Bytes) -> StatusCode {
        script.received.lock().unwrap().push(Received { headers, body });
        let (status, delay) = script.answers.lock().unwrap().pop_front().unwrap_or((200, Duration::ZERO));
        tokio::time::sleep(delay).await;
        StatusCode::from_u16(status).unwrap()
    }

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy { max_retries, interval: Duration::from_millis(20), timeout: Duration::from_secs(10) }
    }

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_string()).collect()
    }

    #[tokio::test]
    async fn every_signature_header_verifies_with_its_own_key() {
        let receiver = Receiver::start(&[]).await;
        let sender = ConnectSender::new(&receiver.url, keys(&["old secret", "new secret"]), policy(0));
        let report = sender.send(&envelope(), ConnectFormat::Json, &NotificationOptions::default()).await;
        assert_eq!(report, DeliveryReport { attempts: 1, delivered: true, last_status: Some(200), last_error: None });

        let received = receiver.received();
        assert_eq!(received.len(), 1);
        let request = &received[0];
        let first = request.header("X-DocuSign-Signature-1").unwrap();
        let second = request.header("x-docusign-signature-2").unwrap();
        assert_eq!(first, independent_hmac("old secret", &request.body));
        assert_eq!(second, independent_hmac("new secret", &request.body));
        assert_ne!(first, independent_hmac("new secret", &request.body));
        assert!(request.header("X-DocuSign-Signature-3").is_none());
        assert_eq!(request.header("X-Authorization-Digest"), Some("HMACSHA256"));
    }

    #[tokio::test]
    async fn notifications_carry_the_account_content_type_and_basic_auth() {
        let receiver = Receiver::start(&[]).await;
        let envelope = envelope();
        let sender = ConnectSender::new(&receiver.url, keys(&["secret"]), policy(0)).with_basic_auth("connect", "p@ss");
        assert!(sender.send(&envelope, ConnectFormat::Json, &NotificationOptions::default()).await.delivered);
        assert!(sender.send(&envelope, ConnectFormat::Xml, &NotificationOptions::default()).await.delivered);

        let received = receiver.received();
        assert_eq!(received[0].header("Content-Type"), Some("application/json"));
        assert_eq!(received[1].header("Content-Type"), Some("text/xml; charset=utf-8"));
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("connect:p@ss"));
        for request in &received {
            assert_eq!(request.header("X-DocuSign-AccountId"), Some(envelope.account_id.to_string().as_str()));
            assert_eq!(request.header("Authorization"), Some(basic.as_str()));
        }
        assert_eq!(received[0].json()["data"]["envelopeId"], envelope.envelope_id.to_string());
        let root = parse(&received[1].body);
        assert_eq!(root.child("EnvelopeStatus").child("EnvelopeID").text, envelope.envelope_id.to_string());
        assert_eq!(root.child("TimeZoneOffset").text, "-8");

        // Basic authentication alone: Connect names no account in a header.
        let unsigned = ConnectSender::new(&receiver.url, Vec::new(), policy(0)).with_basic_auth("connect", "p@ss");
        assert!(unsigned.send(&envelope, ConnectFormat::Xml, &NotificationOptions::default()).await.delivered);
        let last = receiver.received().pop().unwrap();
        assert_eq!(last.header("X-DocuSign-AccountId"), None);
        assert_eq!(last.header("X-DocuSign-Signature-1"), None);
    }

    #[tokio::test]
    async fn without_keys_nothing_claims_a_signature() {
        let receiver = Receiver::start(&[]).await;
        let sender = ConnectSender::new(&receiver.url, Vec::new(), policy(0));
        assert!(sender.send(&envelope(), ConnectFormat::Json, &NotificationOptions::default()).await.delivered);
        let request = &receiver.received()[0];
        assert!(request.header("X-DocuSign-Signature-1").is_none());
        assert!(request.header("X-Authorization-Digest").is_none());
        assert!(request.header("Authorization").is_none());
    }

    #[tokio::test]
    async fn failed_deliveries_are_retried_with_a_rising_retry_count() {
        let receiver = Receiver::start(&[(500, Duration::ZERO), (500, Duration::ZERO)]).await;
        let sender = ConnectSender::new(&receiver.url, keys(&["secret"]), policy(10));
        let report = sender.send(&envelope(), ConnectFormat::Json, &NotificationOptions::default()).await;
        assert_eq!(report, DeliveryReport { attempts: 3, delivered: true, last_status: Some(200), last_error: None });

        let received = receiver.received();
        assert_eq!(received.len(), 3);
        let messages: Vec<Value> = received.iter().map(Received::json).collect();
        let counts: Vec<&Value> = messages.iter().map(|m| &m["retryCount"]).collect();
        assert_eq!(counts, [0, 1, 2]);
        assert!(messages.iter().all(|m| m["generatedDateTime"] == messages[0]["generatedDateTime"]));
        // A new body each time, each signed afresh.
        for request in &received {
            assert_eq!(request.header("X-DocuSign-Signature-1").unwrap(), independent_hmac("secret", &request.body));
        }
        assert_ne!(received[0].header("X-DocuSign-Signature-1"), received[1].header("X-DocuSign-Signature-1"));
    }

    #[tokio::test]
    async fn xml_retries_repeat_the_same_bytes() {
        let receiver = Receiver::start(&[(503, Duration::ZERO)]).await;
        let sender = ConnectSender::new(&receiver.url, keys(&["secret"]), policy(3)).with_time_zone_offset(-5);
        let report = sender.send(&envelope(), ConnectFormat::Xml, &NotificationOptions::default()).await;
        assert_eq!((report.attempts, report.delivered), (2, true));
        let received = receiver.received();
        assert_eq!(received[0].body, received[1].body);
        assert_eq!(parse(&received[0].body).child("TimeZoneOffset").text, "-5");
    }

    #[tokio::test]
    async fn a_receiver_slower_than_the_timeout_gets_a_retry() {
        let receiver = Receiver::start(&[(200, Duration::from_secs(3))]).await;
        let policy = RetryPolicy { timeout: Duration::from_millis(300), ..policy(2) };
        let sender = ConnectSender::new(&receiver.url, keys(&["secret"]), policy);
        let report = sender.send(&envelope(), ConnectFormat::Json, &NotificationOptions::default()).await;
        assert_eq!(report, DeliveryReport { attempts: 2, delivered: true, last_status: Some(200), last_error: None });
        let counts: Vec<Value> = receiver.received().iter().map(|r| r.json()["retryCount"].clone()).collect();
        assert_eq!(counts, [0, 1]);
    }

    #[tokio::test]
    async fn exhausted_retries_report_the_failure() {
        let receiver = Receiver::start(&[(500, Duration::ZERO); 4]).await;
        let sender = ConnectSender::new(&receiver.url, keys(&["secret"]), policy(3));
        let report = sender.send(&envelope(), ConnectFormat::Json, &NotificationOptions::default()).await;
        assert_eq!(report.attempts, 4);
        assert!(!report.delivered);
        assert_eq!(report.last_status, Some(500));
        assert!(report.last_error.unwrap().contains("500"));
        assert_eq!(receiver.received().len(), 4);
    }

    #[tokio::test]
    async fn a_redirect_is_not_a_delivery() {
        let receiver = Receiver::start(&[(302, Duration::ZERO)]).await;
        let sender = ConnectSender::new(&receiver.url, Vec::new(), policy(0));
        let report = sender.send(&envelope(), ConnectFormat::Json, &NotificationOptions::default()).await;
        assert_eq!((report.delivered, report.last_status), (false, Some(302)));
    }

    #[tokio::test]
    async fn an_unreachable_listener_is_reported_not_raised() {
        // A port that was just free and is closed again.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/connect", listener.local_addr().unwrap());
        drop(listener);
        let sender = ConnectSender::new(url, keys(&["secret"]), policy(1));
        let report = sender.send(&envelope(), ConnectFormat::Json, &NotificationOptions::default()).await;
        assert_eq!((report.attempts, report.delivered, report.last_status), (2, false, None));
        assert!(report.last_error.is_some());

        let report =
            ConnectSender::new("not a url", Vec::new(), policy(0)).send_body("{}", "application/json", "x").await;
        assert_eq!((report.attempts, report.delivered), (1, false));
        assert!(report.last_error.is_some());
    }

    #[tokio::test]
    async fn raw_bodies_are_sent_and_signed_byte_for_byte() {
        let receiver = Receiver::start(&[]).await;
        let sender = ConnectSender::new(&receiver.url, keys(&["secret"]), policy(0));
        let hostile: Vec<u8> =
            b"{\"event\":\"envelope-completed\",\xff\x00<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
                .to_vec();
        let report = sender.send_body(hostile.clone(), "application/json", "not-a-guid").await;
        assert!(report.delivered);
        let request = &receiver.received()[0];
        assert_eq!(request.body.as_ref(), hostile.as_slice());
        assert_eq!(request.header("X-DocuSign-AccountId"), Some("not-a-guid"));
        assert_eq!(request.header("X-DocuSign-Signature-1").unwrap(), independent_hmac("secret", &hostile));

        // A header value HTTP cannot carry fails the attempt, not the process.
        let report = sender.send_body("{}", "application/json", "bad\nvalue").await;
        assert!(!report.delivered && report.last_error.is_some());
    }

    #[tokio::test]
    async fn documents_travel_in_the_sent_message() {
        let receiver = Receiver::start(&[]).await;
        let envelope = envelope();
        let sender = ConnectSender::new(&receiver.url, keys(&["secret"]), policy(0));
        let options = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
        assert!(sender.send(&envelope, ConnectFormat::Json, &options).await.delivered);
        let message = receiver.received()[0].json();
        let entries = message["data"]["envelopeSummary"]["envelopeDocuments"].as_array().unwrap().clone();
        let certificate = entries.iter().find(|e| e["documentId"] == "certificate").unwrap();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(certificate["PDFBytes"].as_str().unwrap()).unwrap();
        assert_eq!(bytes, crate::sandbox::pdf::certificate_pdf(&envelope));
    }
}
