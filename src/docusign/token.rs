//! Access tokens from the JWT Grant, cached per user of one integration key.
//!
//! A token is reused until `token_margin` before it expires (at most half
//! its life), and only one token request per user is ever in flight: every
//! job that needs a token for that user waits on the same request. A
//! refusal answers the callers that were waiting while it was asked for
//! (jobs waking together ask once), never a caller that came later: a
//! refusal is not remembered past its request, so consent granted a moment
//! ago (on this replica or another) is seen by the next job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Deserialize;

use super::jwt::{JwtGrant, MAX_LIFETIME};
use super::status::AccessStatus;
use crate::config::Secret;
use crate::ids::UserId;

/// The grant type of the JWT Bearer flow (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The `outcome` label of `countersign_docusign_token_requests_total`.
pub const GRANT_OUTCOMES: [&str; 4] = ["issued", "consent_required", "refused", "failed"];

/// Lifetime of the assertions sent; DocuSign's samples use ten minutes.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// A bearer token for the eSignature REST API.
#[derive(Debug)]
pub struct AccessToken {
    value: Secret,
    refresh_at: Instant,
}

impl AccessToken {
    pub fn bearer(&self) -> &str {
        self.value.expose()
    }

    fn fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrantError {
    /// The user has not consented to `signature impersonation` for this
    /// integration key: only the user (or an administrator) can fix it.
    #[error(
        "DocuSign consent is missing: user {user} has not granted the integration key `signature impersonation`; {how}"
    )]
    ConsentRequired { user: UserId, how: String },
    /// Any other refused grant: the configuration is wrong and retrying
    /// cannot help until it is fixed.
    #[error("DocuSign refused the JWT grant for user {user} ({error}: {description}): {advice}")]
    Configuration { user: UserId, error: String, description: String, advice: String },
    /// The token endpoint could not be reached or failed; worth retrying.
    #[error("DocuSign token request failed: {0}")]
    Transient(String),
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Debug, Default)]
struct Slot {
    token: Option<Arc<AccessToken>>,
    /// The last refusal, and the request it came from.
    refused: Option<(GrantError, u64)>,
}

/// One user's token and the requests for it.
#[derive(Debug, Default)]
struct UserTokens {
    /// How many token requests for this user have finished.
    requests: std::sync::atomic::AtomicU64,
    slot: tokio::sync::Mutex<Slot>,
}

/// Tokens for the users of one integration key.
#[derive(Debug)]
pub struct TokenCache {
    http: reqwest::Client,
    token_url: String,
    grant: JwtGrant,
    margin: Duration,
    consent: Option<super::consent::ConsentLink>,
    slots: Mutex<HashMap<UserId, Arc<UserTokens>>>,
    status: Arc<AccessStatus>,
}

impl TokenCache {
    pub fn new(
        http: reqwest::Client,
        auth_base_url: &str,
        grant: JwtGrant,
        margin: Duration,
        consent: Option<super::consent::ConsentLink>,
        status: Arc<AccessStatus>,
    ) -> Self {
        Self {
            http,
            token_url: format!("{auth_base_url}/oauth/token"),
            grant,
            margin,
            consent,
            slots: Mutex::new(HashMap::new()),
            status,
        }
    }

    fn user(&self, user: UserId) -> Arc<UserTokens> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(user).or_default().clone()
    }

    /// A token for `user`: the cached one while fresh, else a new one.
    pub async fn token(&self, user: UserId) -> Result<Arc<AccessToken>, GrantError> {
        use std::sync::atomic::Ordering;
        let tokens = self.user(user);
        let arrived = tokens.requests.load(Ordering::Acquire);
        // Held across the request on purpose: this is the single flight.
        let mut slot = tokens.slot.lock().await;
        if let Some(token) = slot.token.as_ref().filter(|t| t.fresh()) {
            return Ok(token.clone());
        }
        // Refused by a request that ran while this caller waited: the same answer.
        if let Some((error, request)) = &slot.refused
            && *request >= arrived
        {
            return Err(error.clone());
        }
        let result = self.request(user).await;
        let request = tokens.requests.fetch_add(1, Ordering::AcqRel);
        // One of GRANT_OUTCOMES.
        let outcome = match &result {
            Ok(_) => "issued",
            Err(GrantError::ConsentRequired { .. }) => "consent_required",
            Err(GrantError::Configuration { .. }) => "refused",
            Err(GrantError::Transient(_)) => "failed",
        };
        metrics::counter!("countersign_docusign_token_requests_total", "outcome" => outcome).increment(1);
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                slot.token = Some(token.clone());
                slot.refused = None;
                self.status.granted(user);
                Ok(token)
            }
            Err(error) => {
                if !matches!(error, GrantError::Transient(_)) {
                    slot.refused = Some((error.clone(), request));
                    slot.token = None;
                }
                self.status.refused(user, &error);
                Err(error)
            }
        }
    }

    /// A token for `user` asked for now, whatever refusal was remembered:
    /// consent was just granted.
    pub async fn token_now(&self, user: UserId) -> Result<Arc<AccessToken>, GrantError> {
        self.user(user).slot.lock().await.refused = None;
        self.token(user).await
    }

    /// Forgets `token` after the API refused it (401), unless a newer one
    /// already replaced it.
    pub async fn invalidate(&self, user: UserId, token: &Arc<AccessToken>) {
        let tokens = self.user(user);
        let mut slot = tokens.slot.lock().await;
        if slot.token.as_ref().is_some_and(|current| Arc::ptr_eq(current, token)) {
            slot.token = None;
        }
    }

    async fn request(&self, user: UserId) -> Result<AccessToken, GrantError> {
        let assertion = self
            .grant
            .for_user(user)
            .assertion(Utc::now(), ASSERTION_LIFETIME)
            .map_err(|e| GrantError::Transient(e.to_string()))?;
        let response = self
            .http
            .post(&self.token_url)
            .form(&[("grant_type", JWT_BEARER), ("assertion", assertion.as_str())])
            .send()
            .await
            .map_err(|e| GrantError::Transient(format!("{}: {e}", self.token_url)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| GrantError::Transient(e.to_string()))?;
        if status.is_success() {
            let answer: TokenAnswer = serde_json::from_slice(&body)
                .map_err(|e| GrantError::Transient(format!("unreadable token answer: {e}")))?;
            let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(MAX_LIFETIME.as_secs()));
            // A short-lived token is still used for half its life.
            let keep = lifetime.saturating_sub(self.margin.min(lifetime / 2));
            tracing::info!(%user, expires_in = lifetime.as_secs(), "DocuSign access token issued");
            return Ok(AccessToken { value: Secret::new(answer.access_token), refresh_at: Instant::now() + keep });
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(GrantError::Transient(format!("the token endpoint answered {status}")));
        }
        let refusal: OAuthError = serde_json::from_slice(&body).unwrap_or_default();
        Err(self.classify(user, status, refusal))
    }

    fn classify(&self, user: UserId, status: reqwest::StatusCode, refusal: OAuthError) -> GrantError {
        if refusal.error == "consent_required" {
            let how = match &self.consent {
                Some(link) => format!("the user must open {} and allow access", link.url()),
                None => "set docusign.redirect_uri to get the consent URL (`countersign consent-url`)".into(),
            };
            return GrantError::ConsentRequired { user, how };
        }
        let reason =
            if refusal.error_description.is_empty() { refusal.error.as_str() } else { &refusal.error_description };
        let advice = match reason {
            "user_not_found" | "invalid_subject" => {
                "docusign.user_id (or the account's user) is not an active user's GUID in this DocuSign environment"
            }
            "issuer_not_found" => {
                "docusign.integration_key is unknown to this auth server: check docusign.auth_server (demo \
                 account-d.docusign.com, production account.docusign.com)"
            }
            "no_valid_keys_or_signatures" => {
                "the private key does not match an RSA key registered on the integration key (Apps and Keys), \
                 or it belongs to the other environment"
            }
            "expired_grant" => "the assertion had expired when DocuSign read it: check this machine's clock",
            _ => "check docusign.integration_key, docusign.user_id and docusign.private_key",
        };
        let error = if refusal.error.is_empty() { format!("HTTP {status}") } else { refusal.error };
        GrantError::Configuration { user, error, description: refusal.error_description, advice: advice.into() }
    }
}
