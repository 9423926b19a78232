//! `/admin/api/...`: JSON over HTTP behind `Authorization: Bearer <admin.token>`.
//! Each handler is annotated for utoipa and registered through
//! `utoipa_axum::routes!`, so a route cannot exist without its description
//! in `/admin/api/openapi.json`.
//!
//! Query strings and bodies are read by hand rather than by axum's
//! extractors, whose refusals are plain text: a bad value must come back as
//! a JSON error naming the field.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::BearerScheme;

use super::error::ErrorBody;
use super::queries::{
    self, Consent, DeadLetters, EnvelopeDetail, EnvelopeReprocessed, JobReplayed, MAX_PAGE, Overview, STATUSES,
    SinkStatus,
};
use super::{Admin, AdminError};
use crate::deliver::replay::Replayed;
use crate::ids::{EnvelopeId, EventId, JobId};
use crate::reload::Reloaded;
use crate::store::{DeliveryFilter, EnvelopeQuery, EnvelopeRecord, EnvelopeStatus};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "countersign admin API",
        description = "Inspect envelopes and their processing, replay dead letters, check DocuSign consent, \
                       suspend and resume sinks, reload Connect HMAC keys. Every request needs \
                       `Authorization: Bearer <admin.token>`; without `admin.token` the API does not exist (404)."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "envelopes", description = "Envelopes and everything that happened to them"),
        (name = "dead letters", description = "What ran out of attempts, and replaying it"),
        (name = "sinks", description = "Delivery targets"),
        (name = "docusign", description = "DocuSign access and Connect keys"),
    )
)]
struct ApiDoc;

/// The routes, relative to `/admin/api`.
fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(list_envelopes))
        .routes(routes!(get_envelope))
        .routes(routes!(reprocess_envelope))
        .routes(routes!(dead_letters))
        .routes(routes!(replay_job))
        .routes(routes!(replay_deliveries))
        .routes(routes!(consent))
        .routes(routes!(list_sinks))
        .routes(routes!(suspend_sink))
        .routes(routes!(resume_sink))
        .routes(routes!(reload))
        .routes(routes!(reload_keys))
}

/// The OpenAPI description as JSON.
pub fn openapi_json() -> String {
    let (_, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/admin/api", routes()).split_for_parts();
    crate::openapi::to_json(&openapi)
}

pub fn router(admin: Admin) -> axum::Router {
    let (routes, _) = routes().split_for_parts();
    let api = routes
        .route("/openapi.json", crate::openapi::description_route(&admin.inner.openapi))
        .fallback(|| async { AdminError::not_found("no such admin API route") })
        .layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .with_state(admin);
    axum::Router::new().nest("/admin/api", api)
}

/// Refuses any request without the admin token, before anything is read.
async fn require_token(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    match crate::bearer::bearer(request.headers()) {
        Some(given) if admin.inner.token.matches(given) => next.run(request).await,
        _ => AdminError::unauthorized().into_response(),
    }
}

/// The query string's parameters; any other parameter is an error, so a
/// misspelt filter does not silently list everything.
fn params(raw: Option<String>, allowed: &[&str]) -> Result<BTreeMap<String, String>, AdminError> {
    let mut params = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            return Err(AdminError::invalid(
                name,
                format!("unknown parameter; expected one of {}", allowed.join(", ")),
            ));
        }
        params.insert(name.into_owned(), value.into_owned());
    }
    Ok(params)
}

fn number<T: std::str::FromStr>(params: &BTreeMap<String, String>, name: &str) -> Result<Option<T>, AdminError> {
    params
        .get(name)
        .map(|text| text.parse().map_err(|_| AdminError::invalid(name, format!("{text:?} is not a whole number"))))
        .transpose()
}

/// A JSON object body (an empty body counts as `{}`) holding only `allowed` keys.
fn object(body: &Bytes, allowed: &[&str]) -> Result<Map<String, Value>, AdminError> {
    // No body at all is no filter; anything else must be JSON.
    if body.is_empty() {
        return Ok(Map::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| AdminError::invalid("body", format!("not valid JSON: {e}")))?;
    let map = match value {
        Value::Object(map) => map,
        // The description allows `null` where the body is optional: the same as no body.
        Value::Null => Map::new(),
        _ => return Err(AdminError::invalid("body", "must be a JSON object")),
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(AdminError::invalid(key.clone(), format!("unknown field; expected one of {}", allowed.join(", "))));
    }
    Ok(map)
}

fn text(map: &Map<String, Value>, name: &str) -> Result<Option<String>, AdminError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(AdminError::invalid(name, "must be a string")),
    }
}

/// Envelopes per status, queue depth, dead letters and disabled sinks at a glance.
#[utoipa::path(get, path = "/overview", tag = "envelopes",
    responses(
        (status = 200, description = "Counts of envelopes, queue depth, dead letters, disabled sinks", body = Overview),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
async fn overview(State(admin): State<Admin>) -> Result<Json<Overview>, AdminError> {
    Ok(Json(queries::overview(&admin).await?))
}

/// A page of envelopes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EnvelopeList {
    /// Envelopes matching the filter, in all.
    total: u64,
    limit: u32,
    offset: u64,
    /// Where the next page starts, if there is one.
    next_offset: Option<u64>,
    envelopes: Vec<EnvelopeRecord>,
}

/// Envelopes, most recently changed first, optionally of one status, a page at a time.
#[utoipa::path(get, path = "/envelopes", tag = "envelopes",
    params(
        ("status" = Option<EnvelopeStatus>, Query, description = "Only envelopes in this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Envelopes per page, 1–500 (default 50)"),
        ("offset" = Option<i64>, Query, minimum = 0, description = "How many to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "Most recently changed first", body = EnvelopeList),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
async fn list_envelopes(State(admin): State<Admin>, RawQuery(raw): RawQuery) -> Result<Json<EnvelopeList>, AdminError> {
    let params = params(raw, &["status", "limit", "offset"])?;
    let status = params
        .get("status")
        .map(|text| {
            EnvelopeStatus::parse(text).ok_or_else(|| {
                let expected: Vec<&str> = STATUSES.iter().map(|s| s.as_str()).collect();
                AdminError::invalid("status", format!("{text:?} is not one of {}", expected.join(", ")))
            })
        })
        .transpose()?;
    let limit = number::<u32>(&params, "limit")?.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::invalid("limit", format!("must be between 1 and {MAX_PAGE}")));
    }
    // The description says int64, as the stores count: larger is refused, not wrapped.
    let offset = number::<i64>(&params, "offset")?.unwrap_or(0);
    let offset = u64::try_from(offset).map_err(|_| AdminError::invalid("offset", "must be 0 or more"))?;
    let page = queries::envelopes(&admin, &EnvelopeQuery { status, limit, offset }).await?;
    let next = offset.saturating_add(page.envelopes.len() as u64);
    let next_offset = (next < page.total && !page.envelopes.is_empty()).then_some(next);
    Ok(Json(EnvelopeList { total: page.total, limit, offset, next_offset, envelopes: page.envelopes }))
}

/// One envelope and everything that happened to it.
#[utoipa::path(get, path = "/envelopes/{envelope_id}", tag = "envelopes",
    params(("envelope_id" = String, Path, format = Uuid, description = "The DocuSign envelope id (a GUID)")),
    responses(
        (status = 200, description = "The envelope, the notifications that enqueued its processing, its processing job with every attempt, \
            its documents, and its events with each delivery and its job", body = EnvelopeDetail),
        (status = 400, description = "Not a GUID", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such envelope is recorded", body = ErrorBody),
    ))]
async fn get_envelope(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Json<EnvelopeDetail>, AdminError> {
    let id = EnvelopeId::parse(&id).map_err(|_| AdminError::invalid("envelope_id", "is not a GUID"))?;
    Ok(Json(queries::envelope(&admin, id).await?))
}

/// Processes an envelope again with the rules and sinks in force now, as
/// `countersign reprocess` does: a flagged envelope whose rule was fixed
/// gets its event; events already made are not made or sent again, and
/// stored documents are not downloaded again.
#[utoipa::path(post, path = "/envelopes/{envelope_id}/reprocess", tag = "envelopes",
    params(("envelope_id" = String, Path, format = Uuid, description = "The DocuSign envelope id (a GUID)")),
    responses(
        (status = 202, description = "Queued (`queued`, or `already_queued` when it was waiting anyway); `running` when it is \
            running now with the rules it started with: ask again once it is done", body = EnvelopeReprocessed),
        (status = 400, description = "Not a GUID", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No notification ever queued this envelope for processing", body = ErrorBody),
    ))]
async fn reprocess_envelope(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Response, AdminError> {
    let id = EnvelopeId::parse(&id).map_err(|_| AdminError::invalid("envelope_id", "is not a GUID"))?;
    let reprocessed = queries::reprocess(&admin, id).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(reprocessed)).into_response())
}

/// What ran out of attempts: dead deliveries, other dead jobs, disabled sinks.
#[utoipa::path(get, path = "/dead-letters", tag = "dead letters",
    params(
        ("sink" = Option<String>, Query, description = "Only deliveries to this sink"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many of each kind, 1–500 (default 100)"),
    ),
    responses(
        (status = 200, description = "Dead deliveries, other dead jobs and disabled sinks", body = DeadLetters),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
async fn dead_letters(State(admin): State<Admin>, RawQuery(raw): RawQuery) -> Result<Json<DeadLetters>, AdminError> {
    let params = params(raw, &["sink", "limit"])?;
    let limit = number::<u32>(&params, "limit")?.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::invalid("limit", format!("must be between 1 and {MAX_PAGE}")));
    }
    Ok(Json(queries::dead_letters(&admin, params.get("sink").cloned(), limit).await?))
}

/// Gives one dead job a fresh set of attempts (a delivery: `delivery.schedule`, others: `queue.max_attempts`).
#[utoipa::path(post, path = "/jobs/{job_id}/replay", tag = "dead letters",
    params(("job_id" = String, Path, format = Uuid, description = "A dead job's id, as listed by the dead letters")),
    responses(
        (status = 200, description = "Queued again with a fresh set of attempts; a delivery's sink is enabled", body = JobReplayed),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not dead", body = ErrorBody),
    ))]
async fn replay_job(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Json<JobReplayed>, AdminError> {
    let id = JobId::parse(&id).map_err(|_| AdminError::invalid("job_id", "is not a job id (a UUID)"))?;
    Ok(Json(queries::replay_job(&admin, id).await?))
}

/// Which dead deliveries to replay; every condition given must hold, none means all.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// The dead deliveries of this event.
    event: Option<EventId>,
    /// The dead deliveries to this sink.
    sink: Option<String>,
    /// Only deliveries that died at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
}

impl ReplayRequest {
    fn parse(body: &Bytes) -> Result<Self, AdminError> {
        let map = object(body, &["event", "sink", "since"])?;
        let event = text(&map, "event")?
            .map(|e| EventId::parse(&e).map_err(|_| AdminError::invalid("event", "is not an event id (a UUID)")))
            .transpose()?;
        let since = text(&map, "since")?
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| AdminError::invalid("since", "is not an RFC 3339 time (2026-11-28T09:00:00Z)"))
            })
            .transpose()?;
        Ok(Self { event, sink: text(&map, "sink")?, since })
    }
}

/// Queues dead deliveries again, as `countersign replay --event/--sink/--since` does.
#[utoipa::path(post, path = "/deliveries/replay", tag = "dead letters",
    request_body(content = Option<ReplayRequest>, description = "Filter; an empty object (or no body) replays every dead delivery"),
    responses(
        (status = 200, description = "The deliveries queued again and the sinks enabled", body = Replayed),
        (status = 400, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such sink is configured", body = ErrorBody),
    ))]
async fn replay_deliveries(State(admin): State<Admin>, body: Bytes) -> Result<Json<Replayed>, AdminError> {
    let ReplayRequest { event, sink, since } = ReplayRequest::parse(&body)?;
    Ok(Json(queries::replay_matching(&admin, &DeliveryFilter { event, sink, since }).await?))
}

/// The DocuSign consent URL and what is known of each impersonated user's access.
#[utoipa::path(get, path = "/consent", tag = "docusign",
    responses(
        (status = 200, description = "The consent URL and each impersonated user's access", body = Consent),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
async fn consent(State(admin): State<Admin>) -> Json<Consent> {
    Json(queries::consent(&admin))
}

/// Every configured sink with its stored state, this process's circuit and its dead deliveries.
#[utoipa::path(get, path = "/sinks", tag = "sinks",
    responses(
        (status = 200, description = "Every configured sink: disabled or not, circuit, dead deliveries", body = Vec<SinkStatus>),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
async fn list_sinks(State(admin): State<Admin>) -> Result<Json<Vec<SinkStatus>>, AdminError> {
    Ok(Json(queries::sinks(&admin).await?))
}

/// Why a sink is suspended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SuspendRequest {
    /// Kept with the suspension and shown to other operators.
    reason: Option<String>,
}

/// Suspends a sink on every replica until it is resumed.
#[utoipa::path(post, path = "/sinks/{name}/suspend", tag = "sinks",
    params(("name" = String, Path, description = "The sink's name")),
    request_body(content = Option<SuspendRequest>, description = "Optional; an empty body is fine"),
    responses(
        (status = 200, description = "Suspended on every replica: its deliveries become dead letters until it is resumed", body = SinkStatus),
        (status = 400, description = "A field is invalid", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such sink is configured", body = ErrorBody),
    ))]
async fn suspend_sink(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<SinkStatus>, AdminError> {
    let request = SuspendRequest { reason: text(&object(&body, &["reason"])?, "reason")? };
    Ok(Json(queries::suspend_sink(&admin, &name, request.reason.as_deref()).await?))
}

/// Enables a sink again and replays the deliveries that died meanwhile.
#[utoipa::path(post, path = "/sinks/{name}/resume", tag = "sinks",
    params(("name" = String, Path, description = "The sink's name")),
    responses(
        (status = 200, description = "Enabled again, its dead deliveries queued again", body = Replayed),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such sink is configured", body = ErrorBody),
    ))]
async fn resume_sink(State(admin): State<Admin>, Path(name): Path<String>) -> Result<Json<Replayed>, AdminError> {
    Ok(Json(queries::resume_sink(&admin, &name).await?))
}

/// Reads the configuration again and puts its rules, sinks and Connect keys
/// in force together, as SIGHUP does.
#[utoipa::path(post, path = "/reload", tag = "docusign",
    responses(
        (status = 200, description = "The configuration was read again; its rules, sinks and Connect keys are in force (as on SIGHUP). \
            Deliveries queued for a removed sink become dead letters naming it", body = Reloaded),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 422, description = "The configuration does not load; everything in force is kept. `field` names the key at fault", body = ErrorBody),
    ))]
async fn reload(State(admin): State<Admin>) -> Result<Json<Reloaded>, AdminError> {
    Ok(Json(queries::reload(&admin).await?))
}

/// The same as `POST /reload`, under the name it had when only Connect keys were reloaded.
#[utoipa::path(post, path = "/keys/reload", tag = "docusign",
    responses(
        (status = 200, description = "As `POST /reload`", body = Reloaded),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 422, description = "As `POST /reload`", body = ErrorBody),
    ))]
async fn reload_keys(State(admin): State<Admin>) -> Result<Json<Reloaded>, AdminError> {
    Ok(Json(queries::reload(&admin).await?))
}
