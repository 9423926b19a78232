//! The control endpoint under `/control`: what tests, the demo and an
//! operator trying things out use to drive the sandbox. Not part of DocuSign.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Fault, Sandbox, faults, pdf};
use crate::ids::{EnvelopeId, UserId};

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route("/control/identity", get(identity))
        .route("/control/consent", post(grant).delete(revoke))
        .route("/control/envelopes", post(complete_envelopes))
        .route("/control/envelopes/{envelope}/checksums", get(checksums))
        .route("/control/faults", get(list_faults).delete(clear_faults))
        .route("/control/faults/{route}", put(set_fault))
        .route("/control/tokens/expire", post(expire_tokens))
        .route("/control/tokens/lifetime", put(token_lifetime))
        .route("/control/rate-limits", put(rate_limits))
        .route("/control/counters", get(counters))
        .route("/control/connect", post(send_connect))
}

async fn identity(State(sandbox): State<Sandbox>) -> Json<Value> {
    let id = sandbox.identity();
    Json(json!({
        "integration_key": id.integration_key.to_string(),
        "user_id": id.user.user_id.to_string(),
        "account_id": id.account_id.to_string(),
        "auth_host": sandbox.config().auth_host,
        "redirect_uri": id.redirect_uri,
        "hmac_keys": id.hmac_keys,
        "private_key_pem": id.private_key_pem,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConsentRequest {
    user_id: Option<String>,
    scopes: Option<Vec<String>>,
}

fn user_of(sandbox: &Sandbox, given: Option<&str>) -> Result<UserId, Response> {
    match given {
        None => Ok(sandbox.identity().user.user_id),
        Some(text) => UserId::parse(text).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response()),
    }
}

async fn grant(State(sandbox): State<Sandbox>, body: Option<Json<ConsentRequest>>) -> Response {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let user = match user_of(&sandbox, request.user_id.as_deref()) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let scopes = request.scopes.unwrap_or_else(|| vec!["signature".into(), "impersonation".into()]);
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sandbox.grant_consent(user, &scopes);
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke(State(sandbox): State<Sandbox>, body: Option<Json<ConsentRequest>>) -> Response {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    match user_of(&sandbox, request.user_id.as_deref()) {
        Ok(user) => {
            sandbox.revoke_consent(user);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}

#[derive(Debug, Deserialize)]
struct CompleteRequest {
    count: usize,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn complete_envelopes(State(sandbox): State<Sandbox>, Json(request): Json<CompleteRequest>) -> Json<Value> {
    let envelopes = sandbox.complete_envelopes(request.count.min(100_000));
    let ids: Vec<String> = envelopes.iter().map(|e| e.envelope_id.to_string()).collect();
    Json(json!({ "envelope_ids": ids }))
}

/// SHA-256 of every document the REST API serves for the envelope, so a
/// test can check that what countersign stored is what DocuSign sent.
async fn checksums(State(sandbox): State<Sandbox>, Path(envelope): Path<String>) -> Response {
    let Some(envelope) = EnvelopeId::parse(&envelope).ok().and_then(|id| sandbox.envelope(id)) else {
        return (StatusCode::NOT_FOUND, "no such envelope").into_response();
    };
    let mut sums = serde_json::Map::new();
    for document in &envelope.documents {
        sums.insert(document.document_id.clone(), Value::String(sha256_hex(&pdf::document_pdf(&envelope, document))));
    }
    sums.insert("certificate".into(), Value::String(sha256_hex(&pdf::certificate_pdf(&envelope))));
    sums.insert("combined".into(), Value::String(sha256_hex(&pdf::combined_pdf(&envelope, true))));
    Json(Value::Object(sums)).into_response()
}

async fn list_faults(State(sandbox): State<Sandbox>) -> Json<Value> {
    let faults: serde_json::Map<String, Value> = faults::ROUTES
        .iter()
        .map(|route| (route.to_string(), serde_json::to_value(sandbox.fault(route)).unwrap_or(Value::Null)))
        .collect();
    Json(Value::Object(faults))
}

async fn clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    for route in faults::ROUTES {
        sandbox.set_fault(route, Fault::default());
    }
    StatusCode::NO_CONTENT
}

async fn set_fault(State(sandbox): State<Sandbox>, Path(route): Path<String>, Json(fault): Json<Fault>) -> Response {
    if !faults::ROUTES.contains(&route.as_str()) {
        return (StatusCode::NOT_FOUND, format!("unknown route {route:?}; known: {}", faults::ROUTES.join(", ")))
            .into_response();
    }
    sandbox.set_fault(&route, fault);
    StatusCode::NO_CONTENT.into_response()
}

async fn expire_tokens(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.expire_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct Lifetime {
    seconds: u64,
}

async fn token_lifetime(State(sandbox): State<Sandbox>, Json(lifetime): Json<Lifetime>) -> StatusCode {
    sandbox.set_token_lifetime(Duration::from_secs(lifetime.seconds));
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct Limits {
    hourly: u32,
    burst: u32,
}

async fn rate_limits(State(sandbox): State<Sandbox>, Json(limits): Json<Limits>) -> StatusCode {
    sandbox.set_rate_limits(limits.hourly, limits.burst);
    StatusCode::NO_CONTENT
}

async fn counters(State(sandbox): State<Sandbox>) -> Json<super::Counters> {
    Json(sandbox.counters())
}

#[derive(Debug, Deserialize)]
struct ConnectRequest {
    /// The listener, e.g. `http://127.0.0.1:8080/docusign/connect`.
    url: String,
    /// Envelopes to notify about; `count` new completed envelopes when empty.
    #[serde(default)]
    envelope_ids: Vec<String>,
    #[serde(default)]
    count: usize,
    /// "json" (default) or "xml".
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    include_documents: bool,
    #[serde(default = "yes")]
    include_summary: bool,
    #[serde(default)]
    retries: Option<u32>,
}

fn yes() -> bool {
    true
}

/// Plays Connect: posts signed notifications to `url` and reports each delivery.
async fn send_connect(State(sandbox): State<Sandbox>, Json(request): Json<ConnectRequest>) -> Response {
    use super::connect::{ConnectFormat, ConnectSender, NotificationOptions, RetryPolicy};
    let format = match request.format.as_deref() {
        None | Some("json") => ConnectFormat::Json,
        Some("xml") => ConnectFormat::Xml,
        Some(other) => return (StatusCode::BAD_REQUEST, format!("unknown format {other:?}")).into_response(),
    };
    let mut envelopes = Vec::new();
    for id in &request.envelope_ids {
        match EnvelopeId::parse(id).ok().and_then(|id| sandbox.envelope(id)) {
            Some(envelope) => envelopes.push(envelope),
            None => return (StatusCode::NOT_FOUND, format!("no envelope {id}")).into_response(),
        }
    }
    if envelopes.is_empty() {
        envelopes = sandbox.complete_envelopes(request.count.clamp(1, 10_000));
    }
    let options = NotificationOptions {
        event: request.event.unwrap_or_else(|| "envelope-completed".into()),
        include_summary: request.include_summary,
        include_documents: request.include_documents,
        ..NotificationOptions::default()
    };
    let policy = RetryPolicy {
        max_retries: request.retries.unwrap_or(3),
        interval: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let sender = ConnectSender::new(request.url, sandbox.identity().hmac_keys.clone(), policy);
    let mut reports = Vec::with_capacity(envelopes.len());
    for envelope in &envelopes {
        let report = sender.send(envelope, format, &options).await;
        reports.push(json!({ "envelope_id": envelope.envelope_id.to_string(), "report": report }));
    }
    Json(json!({ "deliveries": reports })).into_response()
}
