//! `[docusign]`: the integration, the users countersign acts as, and the API budget it keeps.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use crate::ids::{AccountId, UserId};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocusignSettings {
    /// Host name only: `account-d.docusign.com` (demo) or `account.docusign.com`.
    /// It is also the JWT `aud`.
    pub auth_server: String,
    /// Where the auth server's endpoints are reached, when not at
    /// `https://{auth_server}` (the sandbox, a proxy).
    pub auth_url: Option<String>,
    pub integration_key: Option<String>,
    pub user_id: Option<UserId>,
    pub redirect_uri: Option<String>,
    pub private_key: Option<Secret>,
    pub private_key_file: Option<PathBuf>,
    /// Accounts whose envelopes are read as another user than `user_id`.
    pub accounts: Vec<DocusignAccountSettings>,
    /// Users that may be impersonated when a notification names them (`data.userId`).
    pub allowed_users: Vec<UserId>,
    /// An access token is replaced this long before it expires.
    #[serde(with = "humantime_serde")]
    pub token_margin: Duration,
    /// Longest wait for one DocuSign answer (a document body included).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A job waiting for consent or a configuration fix checks again after
    /// this, then ever more rarely up to `recheck_cap`.
    #[serde(with = "humantime_serde")]
    pub recheck_base: Duration,
    #[serde(with = "humantime_serde")]
    pub recheck_cap: Duration,
    /// Calls left unused in each hourly window (the limit is shared by every
    /// application on the account): at this many, calls pause until the reset.
    pub hourly_reserve: u32,
    /// The same for the burst window.
    pub burst_reserve: u32,
    /// Length of DocuSign's burst window (30 s); change it only for a simulator.
    #[serde(with = "humantime_serde")]
    pub burst_window: Duration,
}

impl Default for DocusignSettings {
    fn default() -> Self {
        Self {
            auth_server: "account-d.docusign.com".into(),
            auth_url: None,
            integration_key: None,
            user_id: None,
            redirect_uri: None,
            private_key: None,
            private_key_file: None,
            accounts: Vec::new(),
            allowed_users: Vec::new(),
            token_margin: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
            recheck_base: Duration::from_secs(30),
            recheck_cap: Duration::from_secs(900),
            hourly_reserve: 50,
            burst_reserve: 5,
            burst_window: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocusignAccountSettings {
    pub account_id: AccountId,
    /// The user impersonated for this account's envelopes.
    pub user_id: UserId,
}

impl DocusignSettings {
    /// The base URL of the auth server's endpoints, without a trailing slash.
    pub fn auth_base_url(&self) -> String {
        match &self.auth_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("https://{}", self.auth_server),
        }
    }
}
