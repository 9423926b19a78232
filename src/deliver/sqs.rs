//! The `sqs` sink: Amazon SQS `SendMessage`, over the JSON protocol
//! (`POST /`, `X-Amz-Target: AmazonSQS.SendMessage`) that AWS and its
//! emulators accept, signed with SigV4.
//!
//! There is no AWS SDK here: its crates cost minutes of cold build. Signing
//! is object_store's `AwsAuthorizer` (already built for the S3 document
//! store), and credentials come from the sink's `access_key_id` and
//! `secret` or, without them, from object_store's AWS chain (environment,
//! web identity, ECS/EKS container credentials, instance metadata), which
//! caches and renews what it fetched.
//!
//! The message body is the CloudEvent, byte for byte what the other sinks
//! send (structured mode). Message attributes repeat the attributes a
//! consumer or a subscription filter routes on, named as the CloudEvents
//! HTTP binding names its headers (`ce-id`, `ce-type`, `ce-source`,
//! `ce-subject`, `ce-time`, `ce-specversion`) plus `content-type`
//! (`application/cloudevents+json`, saying the body is the whole event):
//! SQS attribute names allow `-` but not the AMQP binding's `:`, and stay
//! well under SQS's limit of ten. A FIFO queue (name ending in `.fifo`)
//! gets `MessageGroupId` = the envelope id, so one envelope's events stay
//! in order while envelopes are consumed in parallel (an agreement event
//! without an envelope: the event's subject, its agreement id), and
//! `MessageDeduplicationId` = the event id, so SQS drops a repeat within
//! its five-minute window.
//!
//! Answers: 2xx delivered; throttling is `Throttled` (the queue is up);
//! everything else, a missing queue, refused credentials and invalid
//! parameters included, is `Failed`: retried on `delivery.schedule`, then a
//! dead letter, as a webhook's 4xx and an AMQP message no queue is bound
//! for. Only a webhook's explicit 410 disables a sink; a queue created or
//! a policy fixed later lets the next retry through. The error names the
//! queue and what to fix.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::StaticCredentialProvider;
use object_store::aws::{AmazonS3Builder, AwsAuthorizer, AwsCredential, AwsCredentialProvider};
use object_store::client::HttpRequestBody;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{OutgoingEvent, Sink, SinkError};
use crate::config::{Secret, SinkSettings};
use crate::events::CLOUDEVENTS_JSON;

const TARGET: &str = "AmazonSQS.SendMessage";
const JSON_1_0: &str = "application/x-amz-json-1.0";
const SERVICE: &str = "sqs";
/// Signing region when neither the sink, the queue URL nor the environment names one.
const DEFAULT_REGION: &str = "us-east-1";
/// How much of an error answer is kept in the delivery's last error.
const ERROR_BODY_BYTES: usize = 1024;
/// SQS's limit on `MessageGroupId`.
const GROUP_ID_CHARS: usize = 128;

pub struct SqsSink {
    name: String,
    queue_url: String,
    /// The URL's scheme, host and port: where `SendMessage` is posted.
    endpoint: String,
    region: String,
    fifo: bool,
    credentials: AwsCredentialProvider,
    /// The configured secret access key, kept to scrub it from messages.
    secret: Option<Secret>,
    client: reqwest::Client,
}

impl std::fmt::Debug for SqsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSink")
            .field("name", &self.name)
            .field("queue_url", &self.queue_url)
            .field("region", &self.region)
            .field("fifo", &self.fifo)
            .finish_non_exhaustive()
    }
}

impl SqsSink {
    pub fn new(settings: &SinkSettings, timeout: Duration) -> anyhow::Result<Self> {
        let name = &settings.name;
        let queue = settings.sqs_queue().map_err(|reason| anyhow::anyhow!("sinks {name}: url {reason}"))?;
        let region = match settings.region.clone().or(queue.region.clone()) {
            Some(region) => region,
            None => region_from_env(|key| std::env::var(key).ok()).map_err(|e| anyhow::anyhow!("sinks {name}: {e}"))?,
        };
        // The signer puts the region into a header and panics on one that
        // cannot be: settings built without validation must not reach it.
        anyhow::ensure!(
            SinkSettings::is_aws_region(&region),
            "sinks {name}: region {region:?} is not an AWS region name"
        );
        let credentials: AwsCredentialProvider = match (&settings.access_key_id, &settings.secret) {
            (Some(key_id), Some(secret)) => Arc::new(StaticCredentialProvider::new(AwsCredential {
                key_id: key_id.clone(),
                secret_key: secret.expose().to_string(),
                token: None,
            })),
            // The builder insists on a bucket and is otherwise unused: only
            // its credential chain is taken. S3 Express would swap in S3
            // session credentials, so it stays off whatever AWS_S3_EXPRESS says.
            _ => AmazonS3Builder::from_env()
                .with_bucket_name("countersign-sqs-credentials")
                .with_region(&region)
                .with_s3_express(false)
                .build()
                .map_err(|e| anyhow::anyhow!("sinks {name}: setting up the AWS credential chain: {e}"))?
                .credentials()
                .clone(),
        };
        // A client per sink, as for webhooks: its own connection pool.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            name: name.clone(),
            queue_url: settings.url.clone(),
            endpoint: queue.endpoint.clone(),
            region,
            fifo: queue.fifo(),
            credentials,
            secret: settings.secret.clone(),
            client,
        })
    }

    /// The `SendMessage` request for one event.
    fn request(&self, event: &OutgoingEvent<'_>) -> Result<Bytes, SinkError> {
        let body = std::str::from_utf8(event.body)
            .map_err(|_| SinkError::failed(format!("sink {}: the event body is not UTF-8", self.name)))?;
        // Only read for attributes: the body itself is sent untouched.
        let cloud: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let text = |key: &str| cloud.get(key).and_then(Value::as_str).filter(|v| !v.is_empty());
        let id = event.id.to_string();
        let mut attributes = Map::new();
        let mut put = |name: &str, value: &str| {
            attributes.insert(name.to_string(), json!({ "DataType": "String", "StringValue": value }));
        };
        put("content-type", CLOUDEVENTS_JSON);
        put("ce-specversion", text("specversion").unwrap_or("1.0"));
        put("ce-id", &id);
        put("ce-type", event.event_type);
        for (attribute, name) in [("source", "ce-source"), ("subject", "ce-subject"), ("time", "ce-time")] {
            if let Some(value) = text(attribute) {
                put(name, value);
            }
        }
        let mut request = json!({
            "QueueUrl": self.queue_url,
            "MessageBody": body,
            "MessageAttributes": attributes,
        });
        if self.fifo {
            let envelope = cloud.pointer("/data/envelope_id").and_then(Value::as_str).filter(|v| !v.is_empty());
            let group = envelope.or_else(|| text("subject")).unwrap_or(&id);
            request["MessageGroupId"] = Value::String(group_id(group));
            request["MessageDeduplicationId"] = Value::String(id);
        }
        serde_json::to_vec(&request)
            .map(Bytes::from)
            .map_err(|e| SinkError::failed(format!("sink {}: encoding the SendMessage request: {e}", self.name)))
    }

    /// The request's headers with its SigV4 signature.
    fn sign(&self, credential: &AwsCredential, body: &Bytes) -> Result<HeaderMap, SinkError> {
        // The authorizer unwraps header values it makes from the credential:
        // a credential that cannot be a header value is refused here instead.
        let header_safe = |text: &str| HeaderValue::from_str(text).is_ok();
        if !header_safe(&credential.key_id) || credential.token.as_deref().is_some_and(|token| !header_safe(token)) {
            return Err(SinkError::failed(format!(
                "sink {}: the AWS credentials hold characters no HTTP header can carry",
                self.name
            )));
        }
        let mut request = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(self.endpoint.as_str())
            .header(hyper::header::CONTENT_TYPE, JSON_1_0)
            .header("x-amz-target", TARGET)
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| SinkError::failed(format!("sink {}: building the request: {e}", self.name)))?;
        AwsAuthorizer::new(credential, SERVICE, &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| SinkError::failed(format!("sink {}: signing the request: {e}", self.name)))?;
        Ok(request.into_parts().0.headers)
    }

    /// `message` without any secret this attempt used: the secret key, a
    /// session token, the signature.
    fn scrub(&self, message: impl std::fmt::Display, credential: Option<&AwsCredential>, signature: &str) -> String {
        let mut message = super::scrub(message, &self.queue_url, self.secret.as_ref());
        let hidden = credential.into_iter().flat_map(|c| [Some(c.secret_key.as_str()), c.token.as_deref()]).flatten();
        for value in hidden.chain([signature]) {
            if !value.is_empty() {
                message = message.replace(value, "[redacted]");
            }
        }
        message
    }
}

#[async_trait]
impl Sink for SqsSink {
    async fn deliver(&self, event: &OutgoingEvent<'_>) -> Result<(), SinkError> {
        let credential = self.credentials.get_credential().await.map_err(|e| {
            SinkError::failed(format!(
                "sink {}: no AWS credentials for SQS: {}",
                self.name,
                self.scrub(error_chain(&e), None, "")
            ))
        })?;
        let body = self.request(event)?;
        let headers = self.sign(&credential, &body)?;
        let signature = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once("Signature="))
            .map(|(_, signature)| signature.to_string())
            .unwrap_or_default();
        let response = self.client.post(&self.endpoint).headers(headers).body(body).send().await.map_err(|e| {
            SinkError::failed(format!(
                "SendMessage to {} for sink {} failed: {}",
                self.queue_url,
                self.name,
                self.scrub(error_chain(&e), Some(&credential), &signature)
            ))
        })?;
        let status = response.status();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let request_id = header("x-amzn-requestid");
        let query_error = header("x-amzn-query-error");
        let error_type = header("x-amzn-errortype");
        let answer = read_limited(response).await;
        if status.is_success() {
            let message_id = serde_json::from_slice::<Value>(&answer)
                .ok()
                .and_then(|v| v.get("MessageId").and_then(Value::as_str).map(str::to_string));
            tracing::debug!(sink = %self.name, message_id, "SQS took the event");
            return Ok(());
        }
        let error = AwsError::read(&answer, query_error.as_deref(), error_type.as_deref());
        let verdict = classify(status.as_u16(), &error);
        let mut message = format!("sink {}: SQS answered HTTP {status}", self.name);
        for part in [&error.code, &error.query_code].into_iter().flatten() {
            message.push_str(&format!(" {part}"));
        }
        message.push_str(&format!(" for queue {}", self.queue_url));
        if let Some(text) = &error.message {
            message.push_str(&format!(": {text}"));
        }
        if let Some(id) = request_id {
            message.push_str(&format!(" (request id {id})"));
        }
        if let Verdict::Operator(hint) = verdict {
            message.push_str(&format!("; {hint}"));
        }
        let message = self.scrub(message, Some(&credential), &signature);
        Err(match verdict {
            Verdict::Throttled => SinkError::Throttled { message, retry_after: None },
            Verdict::Retry | Verdict::Operator(_) => SinkError::failed(message),
        })
    }
}

/// The signing region without a configured one: `AWS_REGION`, then
/// `AWS_DEFAULT_REGION`, then us-east-1, as the AWS tools do.
fn region_from_env(var: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    for key in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Some(value) = var(key).filter(|v| !v.trim().is_empty()) {
            let value = value.trim().to_string();
            // It is part of the signed scope and the Authorization header.
            if !crate::config::SinkSettings::is_aws_region(&value) {
                return Err(format!("{key}={value:?} is not an AWS region name; set the sink's region instead"));
            }
            return Ok(value);
        }
    }
    Ok(DEFAULT_REGION.to_string())
}

/// A `MessageGroupId`: the id itself when SQS takes it (1–128 printable
/// ASCII characters), else its SHA-256, so the same input keeps one group.
fn group_id(id: &str) -> String {
    if !id.is_empty() && id.len() <= GROUP_ID_CHARS && id.chars().all(|c| c.is_ascii_graphic()) {
        id.to_string()
    } else {
        hex::encode(Sha256::digest(id.as_bytes()))
    }
}

/// An SQS error answer: the JSON protocol's `__type` and `message`, and
/// the query protocol's code from `x-amzn-query-error`.
#[derive(Debug, Default, PartialEq, Eq)]
struct AwsError {
    /// `QueueDoesNotExist`, `AccessDenied`, …
    code: Option<String>,
    /// `AWS.SimpleQueueService.NonExistentQueue`, …
    query_code: Option<String>,
    message: Option<String>,
}

impl AwsError {
    fn read(body: &[u8], query_error: Option<&str>, error_type: Option<&str>) -> Self {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = String::from_utf8_lossy(body);
        // Some answers (an authentication failure, a proxy) are the query
        // protocol's XML even to a JSON request.
        let xml = |element: &str| {
            let start = text.find(&format!("<{element}>"))? + element.len() + 2;
            let end = start + text.get(start..)?.find(&format!("</{element}>"))?;
            text.get(start..end).map(str::trim).filter(|t| !t.is_empty())
        };
        // `com.amazonaws.sqs#QueueDoesNotExist`, sometimes with `:` and a URL after it.
        let short = |full: &str| {
            let code = full.rsplit('#').next().unwrap_or(full);
            code.split(':').next().unwrap_or(code).trim().to_string()
        };
        let code = json
            .get("__type")
            .and_then(Value::as_str)
            .or_else(|| xml("Code"))
            .or(error_type)
            .map(short)
            .filter(|c| !c.is_empty());
        let query_code = query_error
            .and_then(|q| q.split(';').next())
            .map(str::trim)
            .filter(|q| !q.is_empty() && Some(*q) != code.as_deref())
            .map(str::to_string);
        let message = ["message", "Message"]
            .iter()
            .find_map(|key| json.get(*key).and_then(Value::as_str))
            .or_else(|| xml("Message"))
            .map(str::to_string)
            .or_else(|| {
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                (!text.is_empty() && json.is_null()).then_some(text)
            });
        Self { code, query_code, message }
    }

    fn is(&self, codes: &[&str]) -> bool {
        [&self.code, &self.query_code].into_iter().flatten().any(|code| codes.contains(&code.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// SQS asks us to slow down.
    Throttled,
    /// A passing fault on AWS's side.
    Retry,
    /// Retrying alone will not help: the hint says what an operator must fix.
    Operator(&'static str),
}

fn classify(status: u16, error: &AwsError) -> Verdict {
    const THROTTLED: &[&str] = &[
        "ThrottlingException",
        "Throttling",
        "RequestThrottled",
        "TooManyRequestsException",
        "KmsThrottled",
        "KMS.ThrottlingException",
    ];
    const MISSING: &[&str] = &["QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"];
    const REFUSED: &[&str] = &[
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "KmsAccessDenied",
        "KMS.AccessDeniedException",
    ];
    if status == 429 || error.is(THROTTLED) {
        Verdict::Throttled
    } else if error.is(MISSING) {
        Verdict::Operator("create the queue, or correct the sink's url")
    } else if status == 401 || status == 403 || error.is(REFUSED) {
        Verdict::Operator(
            "check the sink's access_key_id and secret (or the AWS credential chain), its region, and that the \
             identity may sqs:SendMessage to this queue",
        )
    } else if status >= 500 {
        Verdict::Retry
    } else {
        Verdict::Operator("SQS refused the message as sent: check the queue's settings against the sink's")
    }
}

/// An error with its causes, which is where reqwest and object_store say
/// what went wrong (refused, timed out, DNS).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The start of an answer's body; the rest is not needed. Read well past
/// what is kept, so that a secret an answer echoes is scrubbed whole before
/// the message is cut.
async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < 8 * ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(8 * ERROR_BODY_BYTES);
    body
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Settings;
    use crate::ids::EventId;

    fn settings(sink: &str) -> SinkSettings {
        let toml = format!("[[sinks]]\nname = \"queue\"\nkind = \"sqs\"\n{sink}");
        Settings::from_toml(&toml).unwrap().sinks.remove(0)
    }

    fn sink(sink: &str) -> SqsSink {
        SqsSink::new(&settings(sink), Duration::from_secs(5)).unwrap()
    }

    const EVENT: &str = r#"{"specversion":"1.0","id":"8ee147a7-0ed7-58e7-9889-43baad4c75d2","source":"urn:docusign:account:f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b","type":"envelope.completed","subject":"93be49ab-afa0-4adf-933c-f752070d71ec","time":"2026-11-20T10:04:00Z","data":{"envelope_id":"93be49ab-afa0-4adf-933c-f752070d71ec"}}"#;

    fn event_id() -> EventId {
        serde_json::from_value(json!("8ee147a7-0ed7-58e7-9889-43baad4c75d2")).unwrap()
    }

    fn request(sink: &SqsSink, body: &str) -> Value {
        let event = OutgoingEvent { id: event_id(), event_type: "envelope.completed", body: body.as_bytes() };
        serde_json::from_slice(&sink.request(&event).unwrap()).unwrap()
    }

    const STATIC: &str = "access_key_id = \"AKIDEXAMPLE\"\nsecret = \"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"\n";

    #[test]
    fn a_message_carries_the_event_as_body_and_its_attributes() {
        let sink = sink(&format!("url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/events\"\n{STATIC}"));
        assert_eq!(sink.region, "eu-west-1");
        let request = request(&sink, EVENT);
        assert_eq!(request["QueueUrl"], "https://sqs.eu-west-1.amazonaws.com/123456789012/events");
        assert_eq!(request["MessageBody"], EVENT, "the body is the CloudEvent exactly");
        let attribute = |name: &str| request["MessageAttributes"][name]["StringValue"].as_str().unwrap().to_string();
        assert_eq!(attribute("ce-id"), "8ee147a7-0ed7-58e7-9889-43baad4c75d2");
        assert_eq!(attribute("ce-type"), "envelope.completed");
        assert_eq!(attribute("ce-source"), "urn:docusign:account:f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b");
        assert_eq!(attribute("ce-subject"), "93be49ab-afa0-4adf-933c-f752070d71ec");
        assert_eq!(attribute("ce-time"), "2026-11-20T10:04:00Z");
        assert_eq!(attribute("ce-specversion"), "1.0");
        assert_eq!(attribute("content-type"), "application/cloudevents+json");
        assert!(request.get("MessageGroupId").is_none() && request.get("MessageDeduplicationId").is_none());
    }

    #[test]
    fn a_fifo_queue_groups_by_envelope_and_deduplicates_by_event() {
        let sink = sink(&format!("url = \"http://127.0.0.1:5000/123456789012/events.fifo\"\n{STATIC}"));
        let request = request(&sink, EVENT);
        assert_eq!(request["MessageGroupId"], "93be49ab-afa0-4adf-933c-f752070d71ec");
        assert_eq!(request["MessageDeduplicationId"], "8ee147a7-0ed7-58e7-9889-43baad4c75d2");
        // An agreement that never had an envelope: its subject (the agreement id).
        let failed = r#"{"id":"x","subject":"01a241d9-a55d-73e4-ada5-629b55a7b7b7","data":{"envelope_id":null}}"#;
        assert_eq!(request_group(&sink, failed), "01a241d9-a55d-73e4-ada5-629b55a7b7b7");
        assert_eq!(group_id(&"x".repeat(200)).len(), 64, "too long for SQS: hashed");
        assert_eq!(group_id("a b"), hex::encode(Sha256::digest(b"a b")));
    }

    fn request_group(sink: &SqsSink, body: &str) -> String {
        request(sink, body)["MessageGroupId"].as_str().unwrap().to_string()
    }

    #[test]
    fn requests_are_signed_for_sqs_in_the_queues_region_without_leaking_the_key() {
        let sink = sink(&format!("url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/events\"\n{STATIC}"));
        let credential = AwsCredential {
            key_id: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            token: Some("session-token".into()),
        };
        let body = Bytes::from_static(b"{}");
        // The signing date is the day the request is signed: either side of a midnight.
        let before = chrono::Utc::now().format("%Y%m%d").to_string();
        let headers = sink.sign(&credential, &body).unwrap();
        let authorization = headers.get("authorization").unwrap().to_str().unwrap();
        let today = chrono::Utc::now().format("%Y%m%d").to_string();
        let today = if authorization.contains(&format!("/{before}/")) { before } else { today };
        assert!(
            authorization.starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{today}/eu-west-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token;x-amz-target, Signature="
            )),
            "{authorization}"
        );
        assert_eq!(headers.get("x-amz-target").unwrap(), TARGET);
        assert_eq!(headers.get("x-amz-security-token").unwrap(), "session-token");
        assert_eq!(headers.get("x-amz-content-sha256").unwrap().to_str().unwrap(), hex::encode(Sha256::digest(b"{}")));
        assert!(!authorization.contains("wJalr"));
        let (_, signature) = authorization.rsplit_once("Signature=").unwrap();
        let scrubbed = sink.scrub(
            format!("{signature} wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY session-token"),
            Some(&credential),
            signature,
        );
        assert_eq!(scrubbed, "[redacted] [redacted] [redacted]");
        let bad = AwsCredential { key_id: "AKID\n".into(), secret_key: "s".into(), token: None };
        assert!(sink.sign(&bad, &body).is_err(), "refused, not a panic");
    }

    #[test]
    fn the_region_comes_from_the_sink_the_url_or_the_environment() {
        let sink = sink(&format!(
            "url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/q\"\nregion = \"eu-north-1\"\n{STATIC}"
        ));
        assert_eq!(sink.region, "eu-north-1", "the setting wins");
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
        };
        assert_eq!(region_from_env(env(&[])).unwrap(), "us-east-1");
        assert_eq!(region_from_env(env(&[("AWS_DEFAULT_REGION", "ap-south-1")])).unwrap(), "ap-south-1");
        let both = env(&[("AWS_DEFAULT_REGION", "ap-south-1"), ("AWS_REGION", "sa-east-1")]);
        assert_eq!(region_from_env(both).unwrap(), "sa-east-1");
        assert!(region_from_env(env(&[("AWS_REGION", "eu west")])).unwrap_err().contains("AWS_REGION"));
    }

    #[test]
    fn errors_are_read_from_the_json_and_query_protocols() {
        let missing = AwsError::read(
            br#"{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist."}"#,
            Some("AWS.SimpleQueueService.NonExistentQueue;Sender"),
            None,
        );
        assert_eq!(missing.code.as_deref(), Some("QueueDoesNotExist"));
        assert_eq!(missing.query_code.as_deref(), Some("AWS.SimpleQueueService.NonExistentQueue"));
        assert_eq!(missing.message.as_deref(), Some("The specified queue does not exist."));
        assert!(matches!(classify(400, &missing), Verdict::Operator(hint) if hint.contains("create the queue")));

        let throttled = AwsError::read(br#"{"__type":"com.amazonaws.sqs#RequestThrottled"}"#, None, None);
        assert_eq!(classify(400, &throttled), Verdict::Throttled);
        assert_eq!(classify(429, &AwsError::default()), Verdict::Throttled);
        let denied =
            AwsError::read(br#"{"__type":"AccessDeniedException:http://internal","Message":"no"}"#, None, None);
        assert_eq!(denied.code.as_deref(), Some("AccessDeniedException"));
        assert!(matches!(classify(400, &denied), Verdict::Operator(hint) if hint.contains("access_key_id")));
        let invalid = AwsError::read(br#"{"__type":"com.amazonaws.sqs#InvalidParameterValue"}"#, None, None);
        assert!(matches!(classify(400, &invalid), Verdict::Operator(_)));
        let xml = AwsError::read(
            b"<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we \
              calculated does not match</Message></Error></Errors></ErrorResponse>",
            None,
            None,
        );
        assert_eq!(xml.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(xml.message.as_deref(), Some("The request signature we calculated does not match"));
        assert!(matches!(classify(403, &xml), Verdict::Operator(hint) if hint.contains("secret")));
        let html = AwsError::read(b"<html>Bad Gateway</html>", None, Some("InternalError"));
        assert_eq!(
            (html.code.as_deref(), html.message.as_deref()),
            (Some("InternalError"), Some("<html>Bad Gateway</html>"))
        );
        assert_eq!(classify(502, &html), Verdict::Retry);
        assert_eq!(classify(503, &AwsError::default()), Verdict::Retry);
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let url = "url = \"https://sqs.us-east-1.amazonaws.com/123456789012/q\"\n";
        let error = |sink: &str| {
            let toml = format!("[[sinks]]\nname = \"queue\"\n{sink}");
            Settings::from_toml(&toml).unwrap_err().to_string()
        };
        let cases = [
            (format!("kind = \"sqs\"\n{url}access_key_id = \"AKID\"\n"), "sinks[0].secret"),
            (format!("kind = \"sqs\"\n{url}secret = \"s3cr3t\"\n"), "sinks[0].access_key_id"),
            (format!("kind = \"sqs\"\n{url}access_key_id = \"AK ID\"\nsecret = \"s\"\n"), "sinks[0].access_key_id"),
            (format!("kind = \"sqs\"\n{url}region = \"EU\"\n"), "sinks[0].region"),
            ("kind = \"sqs\"\nurl = \"https://sqs.us-east-1.amazonaws.com/q\"\n".to_string(), "sinks[0].url"),
            ("kind = \"sqs\"\nurl = \"nats://127.0.0.1/123456789012/q\"\n".to_string(), "sinks[0].url"),
            (format!("kind = \"sqs\"\n{url}secrets = [\"x\"]\n"), "sinks[0].secrets"),
            ("kind = \"nats\"\nurl = \"nats://127.0.0.1\"\nregion = \"us-east-1\"\n".to_string(), "sinks[0].region"),
            ("kind = \"amqp\"\nurl = \"amqp://h\"\naccess_key_id = \"AKID\"\n".to_string(), "sinks[0].access_key_id"),
        ];
        for (sink, key) in cases {
            let message = error(&sink);
            assert!(message.contains(key), "{sink:?}: {message}");
        }
        let settings = settings(&format!("{url}{STATIC}region = \"us-east-2\"\n"));
        let printed = format!("{settings:?}");
        assert!(!printed.contains("AKIDEXAMPLE") && !printed.contains("wJalr"), "{printed}");
        assert!(printed.contains("us-east-2"), "{printed}");
    }
}
