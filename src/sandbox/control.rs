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
