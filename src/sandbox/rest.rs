//! The eSignature REST endpoints countersign reads, under
//! `/restapi/v2.1/accounts/{accountId}/`. Every answer carries DocuSign's
//! rate-limit headers; past a limit the answer is 429 with DocuSign's body.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::envelopes::Envelope;
use super::faults::{self, Verdict};
use super::json::{self as ds, Include};
use super::{LimitKind, RateLimit, Sandbox, pdf};
use crate::ids::{AccountId, EnvelopeId, UserId};

const BASE: &str = "/restapi/v2.1/accounts/{account}";

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route(&format!("{BASE}/envelopes"), get(listing))
        .route(&format!("{BASE}/envelopes/{{envelope}}"), get(envelope))
        .route(&format!("{BASE}/envelopes/{{envelope}}/recipients"), get(recipients))
        .route(&format!("{BASE}/envelopes/{{envelope}}/custom_fields"), get(custom_fields))
        .route(&format!("{BASE}/envelopes/{{envelope}}/templates"), get(templates))
        .route(&format!("{BASE}/envelopes/{{envelope}}/documents"), get(documents))
        .route(&format!("{BASE}/envelopes/{{envelope}}/documents/{{document}}"), get(document))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "errorCode": code, "message": message }))).into_response()
}

fn with_limits(mut response: Response, limits: &RateLimit) -> Response {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("X-RateLimit-Limit", limits.hourly_limit.to_string());
    set("X-RateLimit-Remaining", limits.hourly_remaining.to_string());
    set("X-RateLimit-Reset", limits.reset.to_string());
    set("X-BurstLimit-Limit", limits.burst_limit.to_string());
    set("X-BurstLimit-Remaining", limits.burst_remaining.to_string());
    response
}

/// Authentication, account membership, counting, rate limits and faults,
/// in that order; `Ok` carries what the handler needs to answer.
struct Call {
    limits: RateLimit,
    fault: super::Fault,
}

async fn admit(sandbox: &Sandbox, route: &str, headers: &HeaderMap, account: &str) -> Result<(Call, UserId), Response> {
    let user = super::oauth::bearer(headers).and_then(|t| sandbox.token_user(t));
    sandbox.count(route, user);
    let Some(user) = user else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AUTHORIZATION_INVALID_TOKEN",
            "The access token provided is expired, revoked or malformed.",
        ));
    };
    if AccountId::parse(account).ok() != Some(sandbox.identity().account_id) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "USER_LACKS_MEMBERSHIP",
            "The UserID does not have a valid membership in this Account.",
        ));
    }
    let limits = sandbox.take_rate_limit();
    match limits.exceeded {
        Some(LimitKind::Hourly) => {
            let message = format!(
                "The maximum number of hourly API invocations has been exceeded. The hourly limit is {}.",
                limits.hourly_limit
            );
            return Err(with_limits(
                error(StatusCode::TOO_MANY_REQUESTS, "HOURLY_APIINVOCATION_LIMIT_EXCEEDED", &message),
                &limits,
            ));
        }
        Some(LimitKind::Burst) => {
            let message = format!(
                "The maximum number of burst API invocations has been exceeded. The burst limit is {}.",
                limits.burst_limit
            );
            return Err(with_limits(
                error(StatusCode::TOO_MANY_REQUESTS, "BURST_APIINVOCATION_LIMIT_EXCEEDED", &message),
                &limits,
            ));
        }
        None => {}
    }
    let fault = sandbox.fault(route);
    fault.delay().await;
    Ok((Call { limits, fault }, user))
}

/// Applies the route's fault verdict to a finished answer.
fn answer(call: &Call, response: Response, body: Option<Bytes>) -> Response {
    let response = match call.fault.roll() {
        Verdict::Answer => response,
        Verdict::Error(status) => faults::server_error(status),
        Verdict::Reset => return faults::broken(None),
        Verdict::Truncate => {
            let body = match body {
                Some(body) => body,
                None => return faults::broken(None),
            };
            faults::broken(Some((body, response)))
        }
    };
    with_limits(response, &call.limits)
}

fn json_answer(call: &Call, value: Value) -> Response {
    let body = Bytes::from(value.to_string());
    let response = ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body.clone()).into_response();
    answer(call, response, Some(body))
}

fn find(sandbox: &Sandbox, envelope: &str) -> Result<Envelope, Response> {
    EnvelopeId::parse(envelope).ok().and_then(|id| sandbox.envelope(id)).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "ENVELOPE_DOES_NOT_EXIST",
            "The envelope specified either does not exist or you have no rights to it.",
        )
    })
}

macro_rules! admitted {
    ($expr:expr) => {
        match $expr {
            Ok(value) => value,
            Err(response) => return response,
        }
    };
}

async fn envelope(
    State(sandbox): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "envelope", &headers, &account).await);
    let envelope = admitted!(find(&sandbox, &id));
    let include = query.get("include").map(|i| Include::parse(i)).unwrap_or_default();
    json_answer(&call, ds::envelope_json(&envelope, include))
}

async fn recipients(
    State(sandbox): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "recipients", &headers, &account).await);
    let envelope = admitted!(find(&sandbox, &id));
    let tabs = query.get("include_tabs").is_some_and(|v| v == "true");
    json_answer(&call, ds::recipients_json(&envelope, tabs))
}

async fn custom_fields(
    State(sandbox): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "custom_fields", &headers, &account).await);
    let envelope = admitted!(find(&sandbox, &id));
    json_answer(&call, ds::custom_fields_json(&envelope))
}

async fn templates(
    State(sandbox): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "templates", &headers, &account).await);
    let envelope = admitted!(find(&sandbox, &id));
    json_answer(&call, ds::templates_json(&envelope))
}

async fn documents(
    State(sandbox): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "documents", &headers, &account).await);
    let envelope = admitted!(find(&sandbox, &id));
    json_answer(
        &call,
        json!({ "envelopeId": envelope.envelope_id.to_string(), "envelopeDocuments": ds::documents_json(&envelope) }),
    )
}

/// A file name safe inside a quoted Content-Disposition parameter.
fn quoted(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '"' | '\\' | '\r' | '\n')).collect()
}

async fn document(
    State(sandbox): State<Sandbox>,
    Path((account, id, document)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let route = match document.as_str() {
        "combined" | "certificate" | "archive" => document.as_str(),
        _ => "document",
    };
    let (call, _) = admitted!(admit(&sandbox, route, &headers, &account).await);
    let envelope = admitted!(find(&sandbox, &id));
    let (bytes, content_type, disposition) = match document.as_str() {
        "combined" => {
            // The account setting "attach certificate" is on in the sandbox; certificate=false drops it.
            let certificate = query.get("certificate").is_none_or(|v| v != "false");
            (
                pdf::combined_pdf(&envelope, certificate),
                "application/pdf",
                "file; filename=\"Combined.pdf\"".to_string(),
            )
        }
        "certificate" => (
            pdf::certificate_pdf(&envelope),
            "application/pdf",
            format!("file; filename=\"CertificateOfCompletion_{}.pdf\"", envelope.envelope_id),
        ),
        "archive" => {
            (pdf::archive_zip(&envelope), "application/zip", format!("file; filename=\"{}.zip\"", envelope.envelope_id))
        }
        other => match envelope.documents.iter().find(|d| d.document_id == other) {
            Some(doc) => (
                pdf::document_pdf(&envelope, doc),
                "application/pdf",
                format!("file; filename=\"{}\"; documentid=\"{}\"", quoted(&doc.name), doc.document_id),
            ),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DOCUMENT_DOES_NOT_EXIST",
                    "The document specified was not found.",
                );
            }
        },
    };
    let body = Bytes::from(bytes);
    let response =
        ([(header::CONTENT_TYPE, content_type.to_string()), (header::CONTENT_DISPOSITION, disposition)], body.clone())
            .into_response();
    answer(&call, response, Some(body))
}

/// `GET …/envelopes?from_date=…&status=completed`: envelopes whose status
/// changed since `from_date`, paged by `start_position` and `count`.
async fn listing(
    State(sandbox): State<Sandbox>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "listing", &headers, &account).await);
    let Some(from) = query.get("from_date").and_then(|d| parse_date(d)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST_PARAMETER",
            "The request contained at least one invalid parameter. A valid from_date or envelope_ids is required.",
        );
    };
    let to = query.get("to_date").and_then(|d| parse_date(d));
    let status_ok = |envelope: &Envelope| {
        query.get("status").is_none_or(|wanted| wanted.split(',').any(|s| s.trim() == envelope.status()))
    };
    let matching: Vec<Envelope> = sandbox
        .all_envelopes()
        .into_iter()
        .filter(|e| e.completed_at >= from && to.is_none_or(|to| e.completed_at < to) && status_ok(e))
        .collect();
    let start: usize = query.get("start_position").and_then(|s| s.parse().ok()).unwrap_or(0);
    let count: usize = query.get("count").and_then(|s| s.parse().ok()).unwrap_or(100).clamp(1, 1000);
    let page: Vec<Value> =
        matching.iter().skip(start).take(count).map(|e| ds::envelope_json(e, Include::default())).collect();
    let end = start + page.len();
    let mut body = json!({
        "resultSetSize": page.len().to_string(),
        "totalSetSize": matching.len().to_string(),
        "startPosition": start.to_string(),
        "endPosition": end.saturating_sub(1).to_string(),
        "envelopes": page,
    });
    if end < matching.len() {
        let mut next = format!("/envelopes?start_position={end}&count={count}");
        for (key, value) in &query {
            if key != "start_position" && key != "count" {
                next.push_str(&format!(
                    "&{key}={}",
                    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
                ));
            }
        }
        body["nextUri"] = Value::String(next);
    }
    json_answer(&call, body)
}

fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc()))
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}
