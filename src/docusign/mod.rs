//! Talking to DocuSign as a user: the JWT Grant (impersonation) with a
//! token cache, userinfo, the eSignature REST calls countersign needs (the
//! envelope, its documents), and the API limits read from every answer.

pub mod api;
pub mod consent;
pub mod jwt;
pub mod limits;
pub mod sending;
pub mod status;
pub mod token;
pub mod userinfo;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub use api::{ApiError, Downloaded, EnvelopePage};
pub use status::{AccessStatus, UserAccess};
pub use token::{AccessToken, GrantError};
pub use userinfo::{UserAccount, UserInfoError};

use crate::config::{ConfigError, Settings};
use crate::ids::{AccountId, UserId};

/// Which user countersign acts as for an envelope: the notification's own
/// user when allowed, else the account's user, else the default user.
#[derive(Debug, Clone, Default)]
pub struct Impersonation {
    default: Option<UserId>,
    accounts: HashMap<AccountId, UserId>,
    allowed: HashSet<UserId>,
}

impl Impersonation {
    pub fn from_settings(settings: &Settings) -> Self {
        let ds = &settings.docusign;
        Self {
            default: ds.user_id,
            accounts: ds.accounts.iter().map(|a| (a.account_id, a.user_id)).collect(),
            allowed: ds.allowed_users.iter().copied().collect(),
        }
    }

    pub fn user_for(&self, account: AccountId, named: Option<UserId>) -> Option<UserId> {
        named
            .filter(|user| self.allowed.contains(user))
            .or_else(|| self.accounts.get(&account).copied())
            .or(self.default)
    }

    /// Every user countersign may act as (for `countersign check`).
    pub fn users(&self) -> Vec<UserId> {
        let mut users: Vec<UserId> = self.default.iter().chain(self.accounts.values()).copied().collect();
        users.sort();
        users.dedup();
        users
    }
}

/// The consent URL DocuSign documents for individual consent to the JWT Grant.
pub fn consent_url(settings: &Settings) -> Result<String, ConfigError> {
    Ok(consent::ConsentLink::from_settings(settings)?.url())
}

fn not_set(key: &str) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: "is not set".into() }
}

/// Everything that talks to DocuSign, shared by all jobs.
#[derive(Debug)]
pub struct DocuSign {
    pub(crate) http: reqwest::Client,
    pub(crate) tokens: token::TokenCache,
    pub(crate) userinfo: userinfo::UserInfoCache,
    pub(crate) limits: limits::RateLimits,
    status: Arc<AccessStatus>,
    impersonation: Impersonation,
}

impl DocuSign {
    /// `None` when DocuSign access is not configured at all (then only
    /// notifications that carry everything can be processed); an error when
    /// it is configured halfway.
    pub fn from_settings(settings: &Settings) -> Result<Option<Self>, ConfigError> {
        let ds = &settings.docusign;
        let (Some(integration_key), Some(private_key)) = (&ds.integration_key, &ds.private_key) else {
            if ds.integration_key.is_some() {
                return Err(not_set("docusign.private_key_file"));
            }
            if ds.private_key.is_some() {
                return Err(not_set("docusign.integration_key"));
            }
            return Ok(None);
        };
        let impersonation = Impersonation::from_settings(settings);
        let Some(first_user) = impersonation.users().first().copied() else {
            return Err(not_set("docusign.user_id"));
        };
        let grant = jwt::JwtGrant::new(integration_key, first_user, &ds.auth_server, private_key.expose())
            .map_err(|e| ConfigError::Invalid { key: "docusign.private_key".into(), reason: e.to_string() })?;
        let http = reqwest::Client::builder()
            .timeout(ds.request_timeout)
            .connect_timeout(ds.request_timeout.min(std::time::Duration::from_secs(10)))
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid { key: "docusign".into(), reason: format!("HTTP client: {e}") })?;
        let status = Arc::new(AccessStatus::default());
        let base = ds.auth_base_url();
        Ok(Some(Self {
            tokens: token::TokenCache::new(
                http.clone(),
                &base,
                grant,
                ds.token_margin,
                consent::ConsentLink::from_settings(settings).ok(),
                status.clone(),
            ),
            userinfo: userinfo::UserInfoCache::new(http.clone(), &base),
            limits: limits::RateLimits::new(ds.hourly_reserve, ds.burst_reserve, ds.burst_window),
            http,
            status,
            impersonation,
        }))
    }

    pub fn status(&self) -> &Arc<AccessStatus> {
        &self.status
    }

    pub fn impersonation(&self) -> &Impersonation {
        &self.impersonation
    }

    pub async fn token(&self, user: UserId) -> Result<Arc<AccessToken>, GrantError> {
        self.tokens.token(user).await
    }

    /// The user's default account, from the cached userinfo.
    pub async fn default_account(&self, user: UserId) -> Result<UserAccount, ApiError> {
        let token = self.tokens.token(user).await?;
        match self.userinfo.account(user, token.bearer(), None).await {
            Err(UserInfoError::Unauthorized) => {
                self.tokens.invalidate(user, &token).await;
                let token = self.tokens.token(user).await?;
                Ok(self.userinfo.account(user, token.bearer(), None).await?)
            }
            other => Ok(other?),
        }
    }

    /// The user's accounts, fetched now (for `countersign check`).
    pub async fn accounts(&self, user: UserId) -> Result<Vec<UserAccount>, ApiError> {
        let token = self.tokens.token(user).await?;
        Ok(self.userinfo.fetch(token.bearer()).await?)
    }
}
