//! The operator page under `/admin/`: server-rendered HTML (maud escapes
//! every value it interpolates, which matters because envelope subjects,
//! error messages and names come from outside), no JavaScript.
//!
//! A login form takes the admin token and sets a session cookie
//! (`HttpOnly`, `SameSite=Strict`, path `/admin`). Forms that change
//! something carry a CSRF token tied to the session and must come from this
//! origin; the Content-Security-Policy allows no script at all.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use chrono::{DateTime, Utc};
use maud::html;

use super::queries::{self, JobHistory, STATUSES};
use super::{Admin, AdminError, auth};
use crate::ids::{EnvelopeId, JobId};
use crate::store::{EnvelopeQuery, EnvelopeStatus};

mod timeline;
mod views;

/// Envelopes per page of the table.
const PAGE_SIZE: u32 = 50;

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(overview))
        .route("/admin/style.css", get(style))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/envelopes", get(envelopes))
        .route("/admin/envelopes/{envelope_id}", get(envelope))
        .route("/admin/envelopes/{envelope_id}/reprocess", post(reprocess))
        .route("/admin/dead-letters", get(dead_letters))
        .route("/admin/dead-letters/replay", post(replay))
        .layer(middleware::map_response(harden))
        .with_state(admin)
}

/// Headers every page answer carries: no script, no framing, no caching of
/// what an operator saw.
async fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("page/style.css"))
}

/// The session cookie's value, if the request carries a current one.
fn session(admin: &Admin, headers: &HeaderMap) -> Option<String> {
    let value = auth::session_cookie(headers)?;
    auth::session_valid(&admin.inner.token, value, Utc::now().timestamp()).then(|| value.to_string())
}

/// Whether a form post comes from this origin. Browsers send `Origin` on
/// every POST; when it is there it must name the host the page was served
/// from. The CSRF token is checked as well; this is the second lock.
fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    // HTTP/2 carries the host as the request's authority, not a Host header.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    url::Url::parse(origin).ok().is_some_and(|url| {
        let origin_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return false,
        };
        origin_host.eq_ignore_ascii_case(host)
    })
}

fn to_login() -> Response {
    Redirect::to("/admin/login").into_response()
}

fn secure(admin: &Admin) -> bool {
    admin.settings().server.public_url.starts_with("https://")
}

/// An error shown as a page rather than JSON.
fn error_page(error: &AdminError, csrf: &str) -> Response {
    let body = views::layout("Error", Some(csrf), html! { p.error { (error.message()) } });
    (error.status(), body).into_response()
}

async fn login_form(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if session(&admin, &headers).is_some() {
        return Redirect::to("/admin/").into_response();
    }
    views::login(None).into_response()
}

async fn login(
    State(admin): State<Admin>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !same_origin(&headers, &uri) {
        return (StatusCode::FORBIDDEN, views::login(Some("The form came from another site."))).into_response();
    }
    let given = form.get("token").map(String::as_str).unwrap_or("");
    if !admin.inner.token.matches(given) {
        tracing::warn!("admin page: login with a wrong token");
        return (StatusCode::UNAUTHORIZED, views::login(Some("That is not the admin token."))).into_response();
    }
    let cookie = auth::set_cookie(
        &auth::new_session(&admin.inner.token, Utc::now().timestamp()),
        auth::SESSION_SECONDS,
        secure(&admin),
    );
    let mut response = Redirect::to("/admin/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(admin): State<Admin>) -> Response {
    let mut response = Redirect::to("/admin/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&auth::set_cookie("", 0, secure(&admin))) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn overview(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    let Some(session) = session(&admin, &headers) else { return to_login() };
    let csrf = auth::csrf_token(&admin.inner.token, &session);
    let overview = match queries::overview(&admin).await {
        Ok(overview) => overview,
        Err(error) => return error_page(&error, &csrf),
    };
    let sinks = match queries::sinks(&admin).await {
        Ok(sinks) => sinks,
        Err(error) => return error_page(&error, &csrf),
    };
    let consent = queries::consent(&admin);
    views::overview(&csrf, &overview, &sinks, &consent).into_response()
}

async fn envelopes(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(session) = session(&admin, &headers) else { return to_login() };
    let csrf = auth::csrf_token(&admin.inner.token, &session);
    let status = query.get("status").and_then(|s| EnvelopeStatus::parse(s));
    let offset = query.get("offset").and_then(|o| o.parse::<u64>().ok()).unwrap_or(0);
    match queries::envelopes(&admin, &EnvelopeQuery { status, limit: PAGE_SIZE, offset }).await {
        Ok(page) => views::envelopes(&csrf, status, offset, PAGE_SIZE, &page).into_response(),
        Err(error) => error_page(&error, &csrf),
    }
}

async fn envelope(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(session) = session(&admin, &headers) else { return to_login() };
    let csrf = auth::csrf_token(&admin.inner.token, &session);
    let Ok(id) = EnvelopeId::parse(&id) else {
        return error_page(&AdminError::invalid("envelope_id", "is not a GUID"), &csrf);
    };
    let notice = query.contains_key("reprocessing").then_some("Queued for processing again with today's rules.");
    match queries::envelope(&admin, id).await {
        Ok(detail) => views::envelope(&csrf, &detail, &timeline::of(&detail), notice).into_response(),
        Err(error) => error_page(&error, &csrf),
    }
}

/// A page form's post: a session, this origin and the session's CSRF token.
/// The CSRF token for the answer's page, or the answer that refuses it.
fn checked_form(
    admin: &Admin,
    uri: &Uri,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    action: &str,
) -> Result<String, Response> {
    let Some(session) = session(admin, headers) else { return Err(to_login()) };
    let csrf = auth::csrf_token(&admin.inner.token, &session);
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    if !same_origin(headers, uri) || !auth::csrf_valid(&admin.inner.token, &session, given) {
        tracing::warn!(action, "admin page: form refused, its CSRF token or origin is wrong");
        let error = AdminError::invalid("csrf", "the form is stale or came from another site; reload the page");
        return Err(error_page(&error, &csrf));
    }
    Ok(csrf)
}

async fn reprocess(
    State(admin): State<Admin>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = match checked_form(&admin, &uri, &headers, &form, "reprocess") {
        Ok(csrf) => csrf,
        Err(refused) => return refused,
    };
    let Ok(id) = EnvelopeId::parse(&id) else {
        return error_page(&AdminError::invalid("envelope_id", "is not a GUID"), &csrf);
    };
    match queries::reprocess(&admin, id).await {
        Ok(_) => {
            tracing::info!(envelope_id = %id, "envelope queued for reprocessing from the admin page");
            Redirect::to(&format!("/admin/envelopes/{id}?reprocessing")).into_response()
        }
        Err(error) => error_page(&error, &csrf),
    }
}

async fn dead_letters(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(session) = session(&admin, &headers) else { return to_login() };
    let csrf = auth::csrf_token(&admin.inner.token, &session);
    let notice = query.get("replayed").map(|job| format!("Job {job} is queued again."));
    match queries::dead_letters(&admin, None, 200).await {
        Ok(dead) => views::dead_letters(&csrf, &dead, notice.as_deref()).into_response(),
        Err(error) => error_page(&error, &csrf),
    }
}

async fn replay(
    State(admin): State<Admin>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = match checked_form(&admin, &uri, &headers, &form, "replay") {
        Ok(csrf) => csrf,
        Err(refused) => return refused,
    };
    let Some(id) = form.get("job").and_then(|id| JobId::parse(id).ok()) else {
        return error_page(&AdminError::invalid("job", "is not a job id"), &csrf);
    };
    match queries::replay_job(&admin, id).await {
        Ok(replayed) => {
            tracing::info!(job = %replayed.job_id, kind = %replayed.kind, "dead letter replayed from the admin page");
            Redirect::to(&format!("/admin/dead-letters?replayed={id}")).into_response()
        }
        Err(error) => error_page(&error, &csrf),
    }
}

/// A time as the page shows it.
fn when(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn when_opt(time: Option<DateTime<Utc>>) -> String {
    time.map(when).unwrap_or_default()
}

/// The statuses offered as filters.
fn statuses() -> impl Iterator<Item = EnvelopeStatus> {
    STATUSES.into_iter()
}

/// The last attempt's outcome of a job, for a table cell.
fn last_outcome(history: &JobHistory) -> String {
    history
        .attempts
        .last()
        .and_then(|a| a.outcome)
        .map(|o| o.to_string())
        .unwrap_or_else(|| history.job.state.to_string())
}
