//! The eSignature REST endpoints countersign reads and sends through, under
//! `/restapi/v2.1/accounts/{accountId}/`. Every answer carries DocuSign's
//! rate-limit headers; past a limit the answer is 429 with DocuSign's body.

use std::collections::{HashMap, HashSet};

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
use super::json::{self as ds, Include, TemplateInclude};
use super::sending::{self, LifecycleError, RestError};
use super::{LimitKind, RateLimit, Sandbox, pdf};
use crate::ids::{AccountId, EnvelopeId, UserId};

const BASE: &str = "/restapi/v2.1/accounts/{account}";

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route(&format!("{BASE}/envelopes"), get(listing).post(create))
        .route(&format!("{BASE}/envelopes/{{envelope}}"), get(envelope).put(update))
        .route(&format!("{BASE}/envelopes/{{envelope}}/recipients"), get(recipients))
        .route(&format!("{BASE}/envelopes/{{envelope}}/custom_fields"), get(custom_fields))
        .route(&format!("{BASE}/envelopes/{{envelope}}/templates"), get(templates))
        .route(&format!("{BASE}/envelopes/{{envelope}}/documents"), get(documents))
        .route(&format!("{BASE}/envelopes/{{envelope}}/documents/{{document}}"), get(document))
        .route(&format!("{BASE}/templates"), get(template_list))
        .route(&format!("{BASE}/templates/{{template}}"), get(template))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "errorCode": code, "message": message }))).into_response()
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.error_code, &self.message)
    }
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

/// The route's faults for a request that changes something, rolled before
/// the change: an error or a reset means nothing happened. `Ok` carries the
/// verdict to apply once the change is made.
fn before_change(call: &Call) -> Result<Verdict, Response> {
    match call.fault.roll() {
        Verdict::Error(status) => Err(with_limits(faults::server_error(status), &call.limits)),
        Verdict::Reset => Err(faults::broken(None)),
        verdict => Ok(verdict),
    }
}

/// The answer to a change that was made: lost when the route's knobs say
/// so (the change stands), truncated when the verdict was to truncate.
fn changed_answer(
    sandbox: &Sandbox,
    route: &str,
    call: &Call,
    verdict: Verdict,
    status: StatusCode,
    value: Value,
) -> Response {
    if sandbox.lose_answer(route) {
        return faults::broken(None);
    }
    let body = Bytes::from(value.to_string());
    let response = (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body.clone()).into_response();
    let response = match verdict {
        Verdict::Truncate => faults::broken(Some((body, response))),
        _ => response,
    };
    with_limits(response, &call.limits)
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
/// changed since `from_date` (or those `envelope_ids` names), optionally of
/// some statuses and with a text custom field's value, paged by
/// `start_position` and `count`.
async fn listing(
    State(sandbox): State<Sandbox>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "listing", &headers, &account).await);
    let ids: Option<HashSet<EnvelopeId>> = query
        .get("envelope_ids")
        .filter(|ids| !ids.trim().is_empty())
        .map(|ids| ids.split(',').filter_map(|id| EnvelopeId::parse(id.trim()).ok()).collect());
    let from = match (query.get("from_date"), &ids) {
        (Some(date), _) => parse_date(date),
        (None, Some(_)) => Some(DateTime::<Utc>::MIN_UTC),
        (None, None) => None,
    };
    let Some(from) = from else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST_PARAMETER",
            "The request contained at least one invalid parameter. A valid from_date or envelope_ids is required.",
        );
    };
    let field = match query.get("custom_field") {
        None => None,
        Some(filter) => match filter.split_once('=') {
            Some((name, value)) if !name.is_empty() => Some((name.to_string(), value.to_string())),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST_PARAMETER",
                    "The request contained at least one invalid parameter. custom_field must be name=value.",
                );
            }
        },
    };
    let to = query.get("to_date").and_then(|d| parse_date(d));
    let statuses: Option<Vec<&str>> = query
        .get("status")
        .map(|wanted| wanted.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>())
        .filter(|wanted| !wanted.is_empty() && !wanted.iter().any(|w| w.eq_ignore_ascii_case("any")));
    let status_ok = |envelope: &Envelope| {
        statuses.as_ref().is_none_or(|wanted| wanted.iter().any(|w| w.eq_ignore_ascii_case(envelope.status())))
    };
    let field_ok = |envelope: &Envelope| {
        field.as_ref().is_none_or(|(name, value)| envelope.custom_field(name) == Some(value.as_str()))
    };
    let matching: Vec<Envelope> = sandbox
        .all_envelopes()
        .into_iter()
        .filter(|e| {
            let changed = e.status_changed_at();
            changed >= from
                && to.is_none_or(|to| changed < to)
                && ids.as_ref().is_none_or(|ids| ids.contains(&e.envelope_id))
                && status_ok(e)
                && field_ok(e)
        })
        .collect();
    let include = query.get("include").map(|i| Include::parse(i)).unwrap_or_default();
    let start: usize = query.get("start_position").and_then(|s| s.parse().ok()).unwrap_or(0);
    let count: usize = query.get("count").and_then(|s| s.parse().ok()).unwrap_or(100).clamp(1, 1000);
    let page: Vec<Value> = matching.iter().skip(start).take(count).map(|e| ds::envelope_json(e, include)).collect();
    let end = start + page.len();
    let mut body = json!({
        "resultSetSize": page.len().to_string(),
        "totalSetSize": matching.len().to_string(),
        "startPosition": start.to_string(),
        "endPosition": end.saturating_sub(1).to_string(),
        "envelopes": page,
    });
    if end < matching.len() {
        body["nextUri"] = Value::String(next_uri("/envelopes", &query, end, count));
    }
    json_answer(&call, body)
}

/// The `nextUri` of a paged listing: the same query from `end` on.
fn next_uri(path: &str, query: &HashMap<String, String>, end: usize, count: usize) -> String {
    let mut next = format!("{path}?start_position={end}&count={count}");
    for (key, value) in query {
        if key != "start_position" && key != "count" {
            next.push_str(&format!(
                "&{key}={}",
                url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
            ));
        }
    }
    next
}

/// `POST …/envelopes`: creates an envelope from a template and, with
/// `status: sent`, sends it. Answers 201 with the envelope's id and status.
async fn create(
    State(sandbox): State<Sandbox>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "create", &headers, &account).await);
    let verdict = admitted!(before_change(&call));
    let definition = match sending::parse(&body) {
        Ok(definition) => definition,
        Err(refusal) => return refusal.into_response(),
    };
    let envelope = sandbox.create_from(definition);
    let id = envelope.envelope_id.to_string();
    let value = json!({
        "envelopeId": id,
        "uri": format!("/envelopes/{id}"),
        "statusDateTime": ds::docusign_time(envelope.status_changed_at()),
        "status": envelope.status(),
    });
    changed_answer(&sandbox, "create", &call, verdict, StatusCode::CREATED, value)
}

/// `PUT …/envelopes/{id}` with `{"status": "voided", "voidedReason": …}`: the
/// sender voids an envelope in process. The sandbox's update does nothing else.
async fn update(
    State(sandbox): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "void", &headers, &account).await);
    let verdict = admitted!(before_change(&call));
    let envelope = admitted!(find(&sandbox, &id));
    let request: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(fields)) => Value::Object(fields),
        Ok(_) => {
            return RestError::new(
                "INVALID_REQUEST_BODY",
                "The request body is missing or improperly formatted. It must be a JSON object.",
            )
            .into_response();
        }
        Err(e) => {
            return RestError::new(
                "INVALID_REQUEST_BODY",
                format!("The request body is missing or improperly formatted. {e}"),
            )
            .into_response();
        }
    };
    let status = request.get("status").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if !status.eq_ignore_ascii_case("voided") {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST_PARAMETER",
            "The request contained at least one invalid parameter. The sandbox's envelope update only voids:              'status' must be 'voided'.",
        );
    }
    let reason = request.get("voidedReason").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST_PARAMETER",
            "The request contained at least one invalid parameter. Value for 'voidedReason' must be specified when              voiding an envelope.",
        );
    }
    match sandbox.void(envelope.envelope_id, reason) {
        Ok(voided) => {
            let value = json!({ "envelopeId": voided.envelope_id.to_string() });
            changed_answer(&sandbox, "void", &call, verdict, StatusCode::OK, value)
        }
        Err(LifecycleError::NotInProcess { .. }) => error(
            StatusCode::BAD_REQUEST,
            "ENVELOPE_CANNOT_VOID_INVALID_STATE",
            "Only envelopes in the 'Sent' or 'Delivered' states may be voided.",
        ),
        Err(other) => error(StatusCode::BAD_REQUEST, "ENVELOPE_DOES_NOT_EXIST", &other.to_string()),
    }
}

/// `GET …/templates`: the account's templates, paged, optionally only those
/// whose name contains `search_text`.
async fn template_list(
    State(sandbox): State<Sandbox>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "template_list", &headers, &account).await);
    let include = query.get("include").map(|i| TemplateInclude::parse(i)).unwrap_or_default();
    let search = query.get("search_text").map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty());
    let matching: Vec<_> = sandbox
        .templates()
        .into_iter()
        .filter(|t| search.as_ref().is_none_or(|s| t.name.to_lowercase().contains(s)))
        .collect();
    let start: usize = query.get("start_position").and_then(|s| s.parse().ok()).unwrap_or(0);
    let count: usize = query.get("count").and_then(|s| s.parse().ok()).unwrap_or(100).clamp(1, 2000);
    let owner = &sandbox.identity().user;
    let page: Vec<Value> =
        matching.iter().skip(start).take(count).map(|t| ds::template_json(t, owner, include)).collect();
    let end = start + page.len();
    let mut body = json!({
        "resultSetSize": page.len().to_string(),
        "startPosition": start.to_string(),
        "endPosition": end.saturating_sub(1).to_string(),
        "totalSetSize": matching.len().to_string(),
        "envelopeTemplates": page,
    });
    if end < matching.len() {
        body["nextUri"] = Value::String(next_uri("/templates", &query, end, count));
    }
    json_answer(&call, body)
}

/// `GET …/templates/{id}`: one template with its roles; their tabs with
/// `include=tabs`, its documents with `include=documents`.
async fn template(
    State(sandbox): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (call, _) = admitted!(admit(&sandbox, "template", &headers, &account).await);
    let Some(template) = super::envelopes::template(&id) else {
        return RestError::template_invalid().into_response();
    };
    let mut include = query.get("include").map(|i| TemplateInclude::parse(i)).unwrap_or_default();
    include.recipients = true;
    json_answer(&call, ds::template_json(&template, &sandbox.identity().user, include))
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
