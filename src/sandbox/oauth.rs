//! The account server: `POST /oauth/token` (JWT Grant), the consent page at
//! `/oauth/auth`, and `GET /oauth/userinfo`.
//!
//! Error answers follow DocuSign: HTTP 400 with `{"error", "error_description"}`.
//! Where DocuSign's exact answer is not documented the choice is noted:
//! an `exp` more than an hour after `iat`, a JWT that does not parse, and a
//! bad signature answer `invalid_grant` / `no_valid_keys_or_signatures`; an
//! assertion whose `scope` lacks `signature` answers `invalid_scope`.

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sandbox;
use crate::ids::UserId;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/auth", get(consent_page).post(consent_submit))
        .route("/oauth/userinfo", get(userinfo))
}

fn oauth_error(error: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error, "error_description": description }))).into_response()
}

fn invalid_grant(description: &str) -> Response {
    oauth_error("invalid_grant", description)
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    assertion: Option<String>,
}

/// The claims, read before the signature is checked (to find the key by `iss`).
fn unverified_claims(assertion: &str) -> Option<Value> {
    let mut parts = assertion.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?).ok()
}

async fn token(State(sandbox): State<Sandbox>, Form(form): Form<TokenForm>) -> Response {
    if let Some(failure) = super::faults::before_answer(&sandbox.fault("token")).await {
        return failure;
    }
    let claims_user = form
        .assertion
        .as_deref()
        .and_then(unverified_claims)
        .and_then(|c| c.get("sub").and_then(Value::as_str).and_then(|s| UserId::parse(s).ok()));
    sandbox.count("token", claims_user);

    if form.grant_type.as_deref() != Some(JWT_BEARER) {
        return oauth_error("unsupported_grant_type", "unsupported_grant_type");
    }
    let Some(assertion) = form.assertion else { return invalid_grant("no_valid_keys_or_signatures") };
    let Some(claims) = unverified_claims(&assertion) else { return invalid_grant("no_valid_keys_or_signatures") };
    let identity = sandbox.identity();
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);

    if text("iss").and_then(|iss| uuid::Uuid::try_parse(&iss).ok()) != Some(identity.integration_key) {
        return invalid_grant("issuer_not_found");
    }
    let aud = text("aud").unwrap_or_default();
    if aud.contains("://") || aud.ends_with('/') || aud.is_empty() {
        return invalid_grant("no_valid_keys_or_signatures");
    }
    if aud != sandbox.config().auth_host {
        return invalid_grant("issuer_not_found");
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let key = DecodingKey::from_rsa_der(&identity.public_key_der);
    if jsonwebtoken::decode::<Value>(&assertion, &key, &validation).is_err() {
        return invalid_grant("no_valid_keys_or_signatures");
    }
    let now = sandbox.now_timestamp();
    let Some(exp) = number("exp") else { return invalid_grant("no_valid_keys_or_signatures") };
    if exp <= now {
        return invalid_grant("expired_grant");
    }
    let iat = number("iat").unwrap_or(now);
    if exp - iat > 3600 {
        return invalid_grant("no_valid_keys_or_signatures");
    }
    if number("nbf").is_some_and(|nbf| nbf > now) {
        return invalid_grant("no_valid_keys_or_signatures");
    }
    let Some(user) = text("sub").and_then(|sub| UserId::parse(&sub).ok()).filter(|u| *u == identity.user.user_id)
    else {
        return invalid_grant("user_not_found");
    };
    let scopes = text("scope").unwrap_or_default();
    if !scopes.split(' ').any(|s| s == "signature") {
        return oauth_error("invalid_scope", "The requested scope is invalid, unknown, or malformed.");
    }
    if !sandbox.has_consent(user) {
        return oauth_error("consent_required", "consent_required");
    }
    let (access_token, expires_in) = sandbox.issue_token(user);
    Json(json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": expires_in })).into_response()
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

/// The named inputs of a form in `html`, as a browser would submit them;
/// for driving the consent page without a browser (the demo, tests).
pub fn form_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input ")
        .skip(1)
        .filter_map(|tag| {
            let attr = |name: &str| {
                let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
                let value = tag[start..].split('"').next()?;
                Some(value.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
            };
            Some((attr("name")?, attr("value")?))
        })
        .collect()
}

/// Opens a consent URL and presses "Allow Access", as the user would in a
/// browser; for the demo and tests. Returns where DocuSign sends the
/// browser next: the redirect URI with `code` and `state`.
pub async fn allow_through_consent_page(consent_url: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let page = client.get(consent_url).send().await?;
    anyhow::ensure!(page.status().is_success(), "the consent page answered {}", page.status());
    let html = page.text().await?;
    let mut form = form_fields(&html);
    form.push(("decision".into(), "allow".into()));
    let mut action = url::Url::parse(consent_url)?;
    action.set_query(None);
    let answer = client.post(action).form(&form).send().await?;
    anyhow::ensure!(answer.status().is_redirection(), "consent was not granted ({})", answer.status());
    let location = answer.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
    Ok(location.unwrap_or_default().to_string())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Checks the consent request; `Err` is the error page to show.
fn check_consent_request(sandbox: &Sandbox, params: &HashMap<String, String>) -> Result<(), Response> {
    let identity = sandbox.identity();
    let client_ok = params
        .get("client_id")
        .and_then(|c| uuid::Uuid::try_parse(c).ok())
        .is_some_and(|c| c == identity.integration_key);
    if !client_ok {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Error",
            "<p>The client id is not a registered integration key.</p>",
        ));
    }
    if params.get("redirect_uri") != Some(&identity.redirect_uri) {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Error",
            "<p>The redirect URI is not registered for this integration key.</p>",
        ));
    }
    if params.get("response_type").map(String::as_str) != Some("code") {
        return Err(page(StatusCode::BAD_REQUEST, "Error", "<p>Unsupported response_type.</p>"));
    }
    Ok(())
}

async fn consent_page(State(sandbox): State<Sandbox>, Query(params): Query<HashMap<String, String>>) -> Response {
    if let Err(error) = check_consent_request(&sandbox, &params) {
        return error;
    }
    let scope = params.get("scope").cloned().unwrap_or_default();
    let hidden: String = ["client_id", "redirect_uri", "response_type", "scope", "state"]
        .iter()
        .filter_map(|name| {
            params.get(*name).map(|v| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(v)))
        })
        .collect();
    let user = &sandbox.identity().user;
    let body = format!(
        "<p>Signed in as <b>{}</b> ({}).</p><p>The application requests: <b>{}</b></p>\
         <form method=\"post\" action=\"/oauth/auth\">{hidden}\
         <input type=\"hidden\" name=\"user_id\" value=\"{}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow Access</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Decline</button></form>",
        escape(&user.name),
        escape(&user.email),
        escape(&scope),
        user.user_id
    );
    page(StatusCode::OK, "DocuSign sandbox: grant consent", &body)
}

async fn consent_submit(State(sandbox): State<Sandbox>, Form(form): Form<HashMap<String, String>>) -> Response {
    if let Err(error) = check_consent_request(&sandbox, &form) {
        return error;
    }
    let redirect = form.get("redirect_uri").cloned().unwrap_or_default();
    let mut target = match url::Url::parse(&redirect) {
        Ok(url) => url,
        Err(_) => return page(StatusCode::BAD_REQUEST, "Error", "<p>Invalid redirect URI.</p>"),
    };
    if form.get("decision").map(String::as_str) != Some("allow") {
        target.query_pairs_mut().append_pair("error", "access_denied");
        return Redirect::to(target.as_str()).into_response();
    }
    let Some(user) = form.get("user_id").and_then(|u| UserId::parse(u).ok()) else {
        return page(StatusCode::BAD_REQUEST, "Error", "<p>Unknown user.</p>");
    };
    let scopes: Vec<&str> = form.get("scope").map(|s| s.split([' ', '+']).collect()).unwrap_or_default();
    sandbox.grant_consent(user, &scopes);
    let code: [u8; 16] = rand::RngExt::random(&mut rand::rng());
    target.query_pairs_mut().append_pair("code", &hex::encode(code));
    if let Some(state) = form.get("state") {
        target.query_pairs_mut().append_pair("state", state);
    }
    Redirect::to(target.as_str()).into_response()
}

/// The bearer token of a request, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

async fn userinfo(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Response {
    if let Some(failure) = super::faults::before_answer(&sandbox.fault("userinfo")).await {
        return failure;
    }
    let user = bearer(&headers).and_then(|t| sandbox.token_user(t));
    sandbox.count("userinfo", user);
    let Some(user) = user else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_request", "error_description": "The access token is invalid or expired." })),
        )
            .into_response();
    };
    let identity = sandbox.identity();
    let (given, family) = identity.user.name.rsplit_once(' ').unwrap_or((&identity.user.name, ""));
    Json(json!({
        "sub": user.to_string(),
        "name": identity.user.name,
        "given_name": given,
        "family_name": family,
        "created": "2024-01-15T10:00:00.000Z",
        "email": identity.user.email,
        "accounts": [{
            "account_id": identity.account_id.to_string(),
            "is_default": true,
            "account_name": identity.account_name,
            "base_uri": sandbox.base_url(),
        }],
    }))
    .into_response()
}
