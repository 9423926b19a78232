//! `/api/v1/agreements`: the requests API for IT systems. Each configured
//! client has its own bearer token and may use only its profiles; without a
//! configured client the routes do not exist. Every handler is described for
//! utoipa and registered through `utoipa_axum::routes!`, so the description
//! at `/api/v1/openapi.json` lists exactly what is served.
//!
//! Bodies and query strings are read by hand, as the admin API does, so
//! that every refusal is the one JSON error body naming its field.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::BearerScheme;

use super::Profiles;
use super::intake::{Intake, Refusal};
use crate::bearer::bearer;
use crate::config::{Secret, Settings};
use crate::domain::{Agreement, AgreementStatus};
use crate::error::{ErrorBody, HttpError};
use crate::ids::AgreementId;
use crate::jobs::{JobPayload, VoidAgreementJob};
use crate::store::{AgreementChange, AgreementPage, AgreementQuery, Enqueued, Store};

/// Longest idempotency key taken (Stripe's limit, which clients know).
const MAX_KEY_CHARS: usize = 255;
/// Largest request body taken.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest void reason DocuSign keeps.
const MAX_REASON_CHARS: usize = 200;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "countersign requests API",
        description = "IT systems ask countersign to send an agreement from a DocuSign template and follow it. \
                       Every request needs `Authorization: Bearer <token>` of a client configured under \
                       `[[api.clients]]`; a client sees only its own agreements and uses only its profiles."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags((name = "agreements", description = "Agreements sent from templates"))
)]
struct ApiDoc;

#[derive(Debug)]
struct Client {
    name: String,
    token: Secret,
    profiles: Vec<String>,
}

/// What the routes share.
#[derive(Debug, Clone)]
pub struct AgreementsApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    intake: Intake,
    clients: Vec<Client>,
    max_page: u32,
    max_attempts: u32,
    openapi: String,
}

/// The client a request authenticated as.
#[derive(Debug, Clone)]
struct Caller(Arc<str>);

impl AgreementsApi {
    /// `None` when no client is configured: the API does not exist.
    pub fn new(settings: &Settings, store: Arc<dyn Store>) -> Option<Self> {
        if settings.api.clients.is_empty() {
            return None;
        }
        let clients = settings
            .api
            .clients
            .iter()
            .filter_map(|c| {
                Some(Client { name: c.name.clone(), token: c.token.clone()?, profiles: c.profiles.clone() })
            })
            .collect();
        Some(Self {
            inner: Arc::new(Inner {
                intake: Intake::new(store.clone(), Profiles::from_settings(settings), settings.queue.max_attempts),
                store,
                clients,
                max_page: settings.api.max_page,
                max_attempts: settings.queue.max_attempts,
                openapi: openapi_json(),
            }),
        })
    }

    fn client(&self, name: &str) -> Option<&Client> {
        self.inner.clients.iter().find(|c| c.name == name)
    }
}

fn routes() -> OpenApiRouter<AgreementsApi> {
    OpenApiRouter::new()
        .routes(routes!(create_agreement, list_agreements))
        .routes(routes!(get_agreement))
        .routes(routes!(void_agreement))
}

/// The OpenAPI description as JSON.
pub fn openapi_json() -> String {
    let (_, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", routes()).split_for_parts();
    crate::openapi::to_json(&openapi)
}

pub fn router(api: AgreementsApi) -> axum::Router {
    let (routes, _) = routes().split_for_parts();
    let description = crate::openapi::description_route(&api.inner.openapi);
    let routes = routes
        .fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(api.clone(), require_client))
        .with_state(api)
        .route("/openapi.json", description);
    axum::Router::new().nest("/api/v1", routes)
}

/// Finds the client whose token the request carries. Every client's token
/// is compared, in constant time each, so the answer's timing says nothing
/// about which came close.
async fn require_client(State(api): State<AgreementsApi>, mut request: Request, next: Next) -> Response {
    let given = bearer(request.headers()).unwrap_or_default().to_string();
    let mut found = None;
    for client in &api.inner.clients {
        if client.token.matches(&given) && !given.is_empty() {
            found = Some(client.name.clone());
        }
    }
    match found {
        Some(name) => {
            request.extensions_mut().insert(Caller(name.into()));
            next.run(request).await
        }
        None => HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a client's bearer token is needed")
            .with_challenge("Bearer")
            .into_response(),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, "bad_request", message).with_field(field)
}

fn store_failed(error: crate::store::StoreError) -> HttpError {
    tracing::error!(%error, "the requests API could not reach the store");
    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store cannot be reached; try again")
}

/// A JSON object body holding only `allowed` keys, read up to the limit.
async fn object(body: Body, allowed: &[&str]) -> Result<Map<String, Value>, HttpError> {
    let body: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| invalid("body", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else { return Err(invalid("body", "must be a JSON object")) };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(key, format!("unknown field; expected one of {}", allowed.join(", "))));
    }
    Ok(map)
}

/// A request for an agreement.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AgreementRequestBody {
    /// A profile this client may use.
    profile: String,
    /// The data the profile's JSON Pointers read.
    #[schema(value_type = Object)]
    data: Value,
}

/// Asks for an agreement. Stored with its send job before the answer;
/// the same `Idempotency-Key` with the same body answers the same
/// agreement, with another body 409.
#[utoipa::path(post, path = "/agreements", tag = "agreements",
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "The client's key for this request: 1–255 visible ASCII characters")),
    request_body(content = AgreementRequestBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored; it is sent in the background", body = Agreement),
        (status = 400, description = "No idempotency key, or a malformed body; `field` names it", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The profile is not one this client may use", body = ErrorBody),
        (status = 409, description = "The key was used for a different request", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 422, description = "The data does not fill the profile; `field` is its JSON Pointer", body = ErrorBody),
        (status = 503, description = "The store cannot be reached; nothing was stored, try again", body = ErrorBody),
    ))]
async fn create_agreement(
    State(api): State<AgreementsApi>,
    axum::Extension(Caller(client)): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Agreement>), HttpError> {
    let key = idempotency_key(&headers)?;
    let map = object(body, &["profile", "data"]).await?;
    let profile_name = match map.get("profile") {
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(invalid("profile", "must be a string")),
        None => return Err(invalid("profile", "is required")),
    };
    let data = match map.get("data") {
        Some(data @ Value::Object(_)) => data.clone(),
        Some(_) => return Err(invalid("data", "must be a JSON object")),
        None => return Err(invalid("data", "is required")),
    };
    let allowed = api.client(&client).map(|c| c.profiles.clone()).unwrap_or_default();
    let request = super::intake::AgreementRequest {
        client: client.to_string(),
        idempotency_key: key,
        profile: profile_name,
        data,
    };
    match api.inner.intake.take(request, &allowed).await {
        Ok(taken) => Ok((StatusCode::ACCEPTED, Json(taken.agreement))),
        Err(error @ Refusal::ProfileNotAllowed(_)) => {
            Err(HttpError::new(StatusCode::FORBIDDEN, "forbidden", error.to_string()).with_field("profile"))
        }
        Err(Refusal::Data(error)) => {
            Err(HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", error.to_string())
                .with_field(format!("data{}", error.pointer)))
        }
        Err(error @ Refusal::KeyReused(_)) => {
            Err(HttpError::new(StatusCode::CONFLICT, "conflict", error.to_string()).with_field("Idempotency-Key"))
        }
        Err(Refusal::Store(error)) => Err(store_failed(error)),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, HttpError> {
    let field = "Idempotency-Key";
    let value = headers.get(field).ok_or_else(|| invalid(field, "is required: the client's key for this request"))?;
    let key = value.to_str().map_err(|_| invalid(field, "must be visible ASCII"))?.trim();
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(field, format!("must be 1–{MAX_KEY_CHARS} visible ASCII characters")));
    }
    Ok(key.to_string())
}

/// A page of agreements.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AgreementList {
    total: u64,
    limit: u32,
    offset: u64,
    /// Where the next page starts, if there is one.
    next_offset: Option<u64>,
    agreements: Vec<Agreement>,
}

/// This client's agreements, newest first, a page at a time.
#[utoipa::path(get, path = "/agreements", tag = "agreements",
    params(
        ("status" = Option<AgreementStatus>, Query, description = "Only agreements in this status"),
        ("profile" = Option<String>, Query, description = "Only agreements of this profile"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Per page (default 50, at most `api.max_page`)"),
        ("offset" = Option<i64>, Query, minimum = 0, description = "How many to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "Newest first", body = AgreementList),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
async fn list_agreements(
    State(api): State<AgreementsApi>,
    axum::Extension(Caller(client)): axum::Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AgreementList>, HttpError> {
    let mut params = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !["status", "profile", "limit", "offset"].contains(&name.as_ref()) {
            return Err(invalid(&name, "unknown parameter; expected one of status, profile, limit, offset"));
        }
        params.insert(name.into_owned(), value.into_owned());
    }
    let status = params
        .get("status")
        .map(|s| {
            AgreementStatus::parse(s).ok_or_else(|| {
                let known: Vec<&str> = AgreementStatus::ALL.iter().map(|s| s.as_str()).collect();
                invalid("status", format!("{s:?} is not a status; expected one of {}", known.join(", ")))
            })
        })
        .transpose()?;
    let number = |name: &str| -> Result<Option<u64>, HttpError> {
        params
            .get(name)
            .map(|t| t.parse::<u64>().map_err(|_| invalid(name, format!("{t:?} is not a whole number"))))
            .transpose()
    };
    let max = api.inner.max_page.min(500);
    let limit = number("limit")?.unwrap_or(u64::from(max.min(50)));
    if limit == 0 || limit > u64::from(max) {
        return Err(invalid("limit", format!("must be 1–{max}")));
    }
    let limit = u32::try_from(limit).unwrap_or(max);
    let offset = number("offset")?.unwrap_or(0);
    if i64::try_from(offset).is_err() {
        return Err(invalid("offset", "is too large"));
    }
    let query = AgreementQuery {
        client: Some(client.to_string()),
        status,
        profile: params.get("profile").cloned(),
        limit,
        offset,
    };
    let AgreementPage { total, agreements } = api.inner.store.list_agreements(&query).await.map_err(store_failed)?;
    let next = offset + agreements.len() as u64;
    Ok(Json(AgreementList { total, limit, offset, next_offset: (next < total).then_some(next), agreements }))
}

/// One of this client's agreements.
#[utoipa::path(get, path = "/agreements/{id}", tag = "agreements",
    params(("id" = AgreementId, Path, description = "The agreement's id")),
    responses(
        (status = 200, description = "The agreement", body = Agreement),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No agreement of this client has that id", body = ErrorBody),
    ))]
async fn get_agreement(
    State(api): State<AgreementsApi>,
    axum::Extension(Caller(client)): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Agreement>, HttpError> {
    Ok(Json(own_agreement(&api, &client, &id).await?))
}

async fn own_agreement(api: &AgreementsApi, client: &str, id: &str) -> Result<Agreement, HttpError> {
    let id = AgreementId::parse(id).map_err(|_| invalid("id", "is not a UUID"))?;
    api.inner
        .store
        .agreement(id)
        .await
        .map_err(store_failed)?
        .filter(|a| a.client == client)
        .ok_or_else(|| HttpError::new(StatusCode::NOT_FOUND, "not_found", format!("no agreement {id}")))
}

/// Why to void.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct VoidRequest {
    /// Shown to the recipients (1–200 characters).
    #[schema(min_length = 1, max_length = 200)]
    reason: String,
}

/// Voids the agreement's envelope, unless it is already completed, declined,
/// voided or failed. An agreement not yet sent is never sent.
#[utoipa::path(post, path = "/agreements/{id}/void", tag = "agreements",
    params(("id" = AgreementId, Path, description = "The agreement's id")),
    request_body(content = VoidRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "The void is under way", body = Agreement),
        (status = 400, description = "A malformed body or id; `field` names it", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No agreement of this client has that id", body = ErrorBody),
        (status = 409, description = "The agreement has ended already", body = ErrorBody),
        (status = 503, description = "The store cannot be reached; try again", body = ErrorBody),
    ))]
async fn void_agreement(
    State(api): State<AgreementsApi>,
    axum::Extension(Caller(client)): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Agreement>), HttpError> {
    let agreement = own_agreement(&api, &client, &id).await?;
    let map = object(body, &["reason"]).await?;
    let reason = match map.get("reason") {
        Some(Value::String(reason)) if !reason.trim().is_empty() && reason.chars().count() <= MAX_REASON_CHARS => {
            reason.trim().to_string()
        }
        Some(_) => return Err(invalid("reason", format!("must be a text of 1–{MAX_REASON_CHARS} characters"))),
        None => return Err(invalid("reason", "is required")),
    };
    let ended =
        || HttpError::new(StatusCode::CONFLICT, "conflict", format!("the agreement is {} already", agreement.status));
    if agreement.status.is_final() {
        return Err(ended());
    }
    let store = &api.inner.store;
    let job = VoidAgreementJob { agreement_id: agreement.id }.job(api.inner.max_attempts);
    let mut tx = store.begin().await.map_err(store_failed)?;
    let change = AgreementChange { void_reason: Some(reason), open_only: true, ..Default::default() };
    if !tx.update_agreement(agreement.id, &change).await.map_err(store_failed)? {
        // It ended between the read above and this write.
        return Err(ended());
    }
    let enqueued = tx.enqueue(&job).await.map_err(store_failed)?;
    tx.commit().await.map_err(store_failed)?;
    if enqueued == Enqueued::Duplicate {
        // An earlier void ran (DocuSign may have refused it): run it again.
        store.rearm_job(&job).await.map_err(store_failed)?;
    }
    let agreement = store.agreement(agreement.id).await.map_err(store_failed)?.ok_or_else(ended)?;
    tracing::info!(agreement_id = %agreement.id, "void requested");
    Ok((StatusCode::ACCEPTED, Json(agreement)))
}
