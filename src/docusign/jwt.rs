//! The JWT Grant assertion: an RS256 JWT with exactly the claims DocuSign's
//! SDKs send (iss, sub, aud, iat, exp, scope), signed with the integration
//! key's RSA private key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::ids::UserId;

/// The scopes countersign asks for; the consent must cover both.
pub const SCOPES: &str = "signature impersonation";

/// DocuSign rejects assertions that live longer than an hour.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the DocuSign private key is not a usable RSA key in PEM form (PKCS#1 or PKCS#8): {0}")]
    Key(jsonwebtoken::errors::Error),
    #[error("cannot sign the JWT assertion: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    iat: i64,
    exp: i64,
    scope: &'a str,
}

/// Everything needed to mint assertions for one (integration key, user).
#[derive(Clone)]
pub struct JwtGrant {
    integration_key: String,
    user: UserId,
    audience: String,
    key: EncodingKey,
}

impl std::fmt::Debug for JwtGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtGrant")
            .field("integration_key", &self.integration_key)
            .field("user", &self.user)
            .field("audience", &self.audience)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl JwtGrant {
    /// `audience` is the auth host, bare (`account-d.docusign.com`).
    pub fn new(integration_key: &str, user: UserId, audience: &str, private_key_pem: &str) -> Result<Self, JwtError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(JwtError::Key)?;
        Ok(Self { integration_key: integration_key.to_string(), user, audience: audience.to_string(), key })
    }

    pub fn user(&self) -> UserId {
        self.user
    }

    /// The same integration key and private key, impersonating `user`.
    pub fn for_user(&self, user: UserId) -> Self {
        Self { user, ..self.clone() }
    }

    /// An assertion issued at `now`, valid for `lifetime` (at most an hour).
    pub fn assertion(&self, now: DateTime<Utc>, lifetime: Duration) -> Result<String, JwtError> {
        let lifetime = lifetime.min(MAX_LIFETIME).as_secs() as i64;
        let claims = Claims {
            iss: &self.integration_key,
            sub: self.user.to_string(),
            aud: &self.audience,
            iat: now.timestamp(),
            exp: now.timestamp() + lifetime,
            scope: SCOPES,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map_err(JwtError::Sign)
    }
}
