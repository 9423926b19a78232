//! `[connect]`: the Connect listener's keys, per account or for all, and its limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use crate::ids::AccountId;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectSettings {
    /// Keys accepted for every account.
    pub hmac_keys: Vec<Secret>,
    /// One key per line; reread when keys are reloaded.
    pub hmac_keys_file: Option<PathBuf>,
    /// Keys for one DocuSign account each (picked by `X-DocuSign-AccountId`),
    /// and its account number.
    pub accounts: Vec<ConnectAccountSettings>,
    /// Only an explicit `false` accepts unsigned notifications (start-up warns).
    pub verify_hmac: bool,
    /// Optional HTTP Basic credentials Connect must send as well.
    pub basic_auth_user: Option<String>,
    pub basic_auth_password: Option<Secret>,
    pub basic_auth_password_file: Option<PathBuf>,
    pub max_body_bytes: u64,
    /// A body must arrive completely within this time (a slow sender is cut off).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Events that start processing; others are recorded and answered 200.
    pub process_events: Vec<String>,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self {
            hmac_keys: Vec::new(),
            hmac_keys_file: None,
            accounts: Vec::new(),
            verify_hmac: true,
            basic_auth_user: None,
            basic_auth_password: None,
            basic_auth_password_file: None,
            max_body_bytes: 100 * 1024 * 1024,
            body_timeout: Duration::from_secs(60),
            process_events: vec!["envelope-completed".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectAccountSettings {
    pub account_id: AccountId,
    /// DocuSign's short account number ("4197223"): legacy XML names the
    /// account by it, and without an `X-DocuSign-AccountId` header (Basic
    /// authentication only) it is how a message finds its account.
    #[serde(default)]
    pub account_number: Option<String>,
    #[serde(default)]
    pub hmac_keys: Vec<Secret>,
    #[serde(default)]
    pub hmac_keys_file: Option<PathBuf>,
}
