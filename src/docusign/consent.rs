//! Consent without the wait: the consent URL carries a signed, expiring
//! `state`, and countersign can serve the redirect URI DocuSign sends the
//! user back to (`GET /docusign/consent/callback`). There it checks the
//! state, asks for a token for that user at once, and wakes the parked jobs,
//! instead of leaving them to their growing rechecks.
//!
//! The state is `{expiry}.{user or -}.{HMAC-SHA256}`, keyed by a hash of
//! the integration key's private key: every replica holds that key, so any
//! replica accepts a callback, and nothing needs storing. A forged or
//! expired state changes nothing. DocuSign's `code` is not used: access
//! comes from the JWT Grant, not from the authorization code.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{DocuSign, jwt};
use crate::config::{ConfigError, Settings};
use crate::ids::UserId;
use crate::store::Store;

/// The path countersign serves as the redirect URI.
pub const CALLBACK_PATH: &str = "/docusign/consent/callback";

/// How long a consent URL's state is accepted: long enough for a link sent
/// to a colleague and opened the next day.
pub const STATE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Signs and checks the `state` of consent URLs.
#[derive(Clone)]
pub struct StateKey([u8; 32]);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

/// Why a callback's state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the consent link carries no state")]
    Missing,
    #[error("the consent link's state is not one countersign issued")]
    Forged,
    #[error("the consent link expired (it is accepted for 24 hours)")]
    Expired,
}

impl StateKey {
    /// Derived from the private key, when one is configured.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let private_key = settings.docusign.private_key.as_ref()?;
        let mut hasher = Sha256::new();
        hasher.update(b"countersign consent state\0");
        hasher.update(private_key.expose().as_bytes());
        Some(Self(hasher.finalize().into()))
    }

    /// HMAC takes keys of any length, so this is never `None` in practice.
    fn mac(&self, text: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).ok()?;
        mac.update(text.as_bytes());
        Some(mac)
    }

    /// A state for `user` (every configured user when `None`) issued at `issued`.
    pub fn sign(&self, user: Option<UserId>, issued: DateTime<Utc>) -> String {
        let expires = issued.timestamp() + STATE_LIFETIME.as_secs() as i64;
        let user = user.map_or_else(|| "-".to_string(), |u| u.to_string());
        let text = format!("{expires}.{user}");
        let tag = self.mac(&text).map(|mac| URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())).unwrap_or_default();
        format!("{text}.{tag}")
    }

    /// The user a state names (`None`: every configured user), if it is
    /// genuine and not expired at `now`.
    pub fn verify(&self, state: &str, now: DateTime<Utc>) -> Result<Option<UserId>, StateError> {
        let mut parts = state.splitn(3, '.');
        let (Some(expires), Some(user), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(StateError::Forged);
        };
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| StateError::Forged)?;
        let mac = self.mac(&format!("{expires}.{user}")).ok_or(StateError::Forged)?;
        mac.verify_slice(&tag).map_err(|_| StateError::Forged)?;
        let expires: i64 = expires.parse().map_err(|_| StateError::Forged)?;
        if now.timestamp() > expires {
            return Err(StateError::Expired);
        }
        match user {
            "-" => Ok(None),
            id => UserId::parse(id).map(Some).map_err(|_| StateError::Forged),
        }
    }
}

/// The consent URL of the configured integration key, without its state.
fn base_url(settings: &Settings) -> Result<url::Url, ConfigError> {
    let ds = &settings.docusign;
    let not_set = |key: &str| ConfigError::Invalid { key: key.into(), reason: "is not set".into() };
    let client_id = ds.integration_key.as_deref().ok_or_else(|| not_set("docusign.integration_key"))?;
    let redirect = ds.redirect_uri.as_deref().ok_or_else(|| not_set("docusign.redirect_uri"))?;
    let mut url = url::Url::parse(&format!("{}/oauth/auth", ds.auth_base_url()))
        .map_err(|_| ConfigError::Invalid { key: "docusign.auth_server".into(), reason: "not a host name".into() })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("scope", jwt::SCOPES)
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect);
    Ok(url)
}

/// Makes consent URLs, each with a fresh state.
#[derive(Debug, Clone)]
pub struct ConsentLink {
    base: url::Url,
    key: Option<StateKey>,
    user: Option<UserId>,
}

impl ConsentLink {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self { base: base_url(settings)?, key: StateKey::from_settings(settings), user: settings.docusign.user_id })
    }

    /// The URL a user opens to grant consent, valid for [`STATE_LIFETIME`]
    /// when the private key is configured to sign its state.
    pub fn url_at(&self, now: DateTime<Utc>) -> String {
        let mut url = self.base.clone();
        if let Some(key) = &self.key {
            url.query_pairs_mut().append_pair("state", &key.sign(self.user, now));
        }
        // DocuSign's documentation writes the space in the scope as %20.
        url.as_str().replace("scope=signature+impersonation", "scope=signature%20impersonation")
    }

    pub fn url(&self) -> String {
        self.url_at(Utc::now())
    }
}

/// What the callback needs.
#[derive(Debug, Clone)]
pub struct ConsentCallback {
    pub docusign: Option<Arc<DocuSign>>,
    pub store: Arc<dyn Store>,
    pub key: Option<StateKey>,
}

pub fn router(callback: ConsentCallback) -> Router {
    Router::new().route(CALLBACK_PATH, get(callback_page)).with_state(callback)
}

/// DocuSign's redirect: `code` and `state` after consent, `error` (and the
/// state) when the user declined. Read as a map, so that any query string
/// reaches the checks below rather than axum's plain-text refusal.
async fn callback_page(
    State(callback): State<ConsentCallback>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(key) = &callback.key else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "DocuSign access is not configured",
            "countersign has no integration key and private key (docusign.integration_key, \
             docusign.private_key_file), so it cannot check this link or act for anyone.",
        );
    };
    let verified =
        query.get("state").map(String::as_str).ok_or(StateError::Missing).and_then(|s| key.verify(s, Utc::now()));
    let named = match verified {
        Ok(user) => user,
        Err(error) => {
            tracing::warn!(%error, "consent callback refused");
            return page(
                StatusCode::BAD_REQUEST,
                "This consent link cannot be used",
                &format!(
                    "{error}. Nothing was changed. Ask the operator for a fresh link (`countersign consent-url`)."
                ),
            );
        }
    };
    if let Some(error) = query.get("error") {
        return page(
            StatusCode::OK,
            "Access was not granted",
            &format!(
                "DocuSign reports {error:?}: consent was declined. countersign cannot act for this user until it \
                 is granted; open the consent link again and choose Allow Access."
            ),
        );
    }
    let Some(docusign) = &callback.docusign else {
        return page(StatusCode::SERVICE_UNAVAILABLE, "DocuSign access is not configured", "Nothing was changed.");
    };
    let users = match named {
        Some(user) => vec![user],
        None => docusign.impersonation().users().to_vec(),
    };
    let mut granted = Vec::new();
    let mut refused = Vec::new();
    for user in users {
        match docusign.tokens.token_now(user).await {
            Ok(_) => granted.push(user),
            Err(error) => refused.push((user, error.to_string())),
        }
    }
    let woken = if granted.is_empty() {
        0
    } else {
        match callback.store.wake_parked().await {
            Ok(woken) => woken,
            Err(error) => {
                tracing::warn!(%error, "consent callback: could not wake parked jobs; they recheck on their own");
                0
            }
        }
    };
    tracing::info!(granted = granted.len(), refused = refused.len(), woken, "consent callback");
    if refused.is_empty() {
        let users: Vec<String> = granted.iter().map(ToString::to_string).collect();
        page(
            StatusCode::OK,
            "Access works",
            &format!(
                "countersign can now act for DocuSign user {}. {woken} waiting job(s) were woken and run now. \
                 You can close this page.",
                users.join(", ")
            ),
        )
    } else {
        let reasons: Vec<String> = refused.iter().map(|(user, error)| format!("user {user}: {error}")).collect();
        page(
            StatusCode::FORBIDDEN,
            "DocuSign still refuses access",
            &format!(
                "{}. If consent was just granted by another user, the user countersign acts for \
                 (docusign.user_id) must grant it, or an administrator for the organisation. \
                 Jobs keep waiting and recheck on their own.",
                reasons.join("; ")
            ),
        )
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "countersign: " (title) } }
            body { h1 { (title) } p #message { (message) } }
        }
    };
    (status, Html(body.into_string())).into_response()
}
