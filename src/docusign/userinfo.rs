//! `GET /oauth/userinfo`, cached per user: which accounts the user can act
//! in, and each account's API host (`base_uri`). DocuSign limits userinfo
//! calls per hour, and the answer rarely changes, so it is fetched again
//! only when an account is missing from it (at most once a minute) or once
//! a day.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::ids::{AccountId, UserId};

const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const MISSING_ACCOUNT_REFRESH: Duration = Duration::from_secs(60);

/// One account of the user, as userinfo lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccount {
    pub account_id: AccountId,
    pub name: String,
    pub is_default: bool,
    /// `base_uri + /restapi`, without a trailing slash.
    pub api_base: String,
}

#[derive(Debug, Deserialize)]
struct RawUserInfo {
    #[serde(default)]
    accounts: Vec<RawAccount>,
}

#[derive(Debug, Deserialize)]
struct RawAccount {
    account_id: String,
    #[serde(default, deserialize_with = "lenient_bool")]
    is_default: bool,
    #[serde(default)]
    account_name: String,
    base_uri: String,
}

/// `is_default` is a JSON boolean, but some SDKs type it as the string "true".
fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::String(s) => Ok(s.eq_ignore_ascii_case("true")),
        serde_json::Value::Null => Ok(false),
        other => Err(de::Error::custom(format!("is_default: expected a boolean, found {other}"))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserInfoError {
    #[error("userinfo: {0}")]
    Transient(String),
    /// The access token was refused: get a new one and ask again.
    #[error("userinfo refused the access token")]
    Unauthorized,
    #[error(
        "user {user} has no access to DocuSign account {account} (the accounts userinfo lists: {listed}); \
         impersonate a member of that account (docusign.accounts)"
    )]
    NoAccess { user: UserId, account: AccountId, listed: String },
    #[error("user {user} has no DocuSign account at all")]
    NoAccounts { user: UserId },
}

#[derive(Debug, Default)]
struct Entry {
    accounts: Vec<UserAccount>,
    fetched: Option<Instant>,
}

#[derive(Debug)]
pub struct UserInfoCache {
    http: reqwest::Client,
    url: String,
    entries: Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<Entry>>>>,
}

impl UserInfoCache {
    pub fn new(http: reqwest::Client, auth_base_url: &str) -> Self {
        Self { http, url: format!("{auth_base_url}/oauth/userinfo"), entries: Mutex::new(HashMap::new()) }
    }

    /// The account to call for `user`: `account` if given, else the user's default account.
    pub async fn account(
        &self,
        user: UserId,
        bearer: &str,
        account: Option<AccountId>,
    ) -> Result<UserAccount, UserInfoError> {
        let entry = self.entries.lock().unwrap_or_else(|p| p.into_inner()).entry(user).or_default().clone();
        let mut entry = entry.lock().await;
        let pick = |entry: &Entry| match account {
            Some(id) => entry.accounts.iter().find(|a| a.account_id == id).cloned(),
            None => entry.accounts.iter().find(|a| a.is_default).or(entry.accounts.first()).cloned(),
        };
        let age = entry.fetched.map(|at| at.elapsed());
        let stale = age.is_none_or(|age| age > MAX_AGE);
        let found = pick(&entry);
        let refresh = stale || (found.is_none() && age.is_none_or(|age| age > MISSING_ACCOUNT_REFRESH));
        if !refresh && let Some(found) = found {
            return Ok(found);
        }
        if refresh {
            entry.accounts = self.fetch(bearer).await?;
            entry.fetched = Some(Instant::now());
        }
        pick(&entry).ok_or_else(|| match account {
            Some(account) => UserInfoError::NoAccess {
                user,
                account,
                listed: entry.accounts.iter().map(|a| a.account_id.to_string()).collect::<Vec<_>>().join(", "),
            },
            None => UserInfoError::NoAccounts { user },
        })
    }

    /// Every account of `user`, fetched now (for `countersign check`).
    pub async fn fetch(&self, bearer: &str) -> Result<Vec<UserAccount>, UserInfoError> {
        let response = self
            .http
            .get(&self.url)
            .bearer_auth(bearer)
            .send()
            .await
            .map_err(|e| UserInfoError::Transient(e.to_string()))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(UserInfoError::Unauthorized);
        }
        if !response.status().is_success() {
            return Err(UserInfoError::Transient(format!("answered {}", response.status())));
        }
        let raw: RawUserInfo =
            response.json().await.map_err(|e| UserInfoError::Transient(format!("unreadable answer: {e}")))?;
        let accounts = raw
            .accounts
            .into_iter()
            .filter_map(|a| {
                let account_id = AccountId::parse(&a.account_id).ok()?;
                Some(UserAccount {
                    account_id,
                    name: a.account_name,
                    is_default: a.is_default,
                    api_base: format!("{}/restapi", a.base_uri.trim_end_matches('/')),
                })
            })
            .collect();
        Ok(accounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_default_is_read_as_a_boolean_or_a_string() {
        let raw: RawUserInfo = serde_json::from_str(
            r#"{"accounts":[
                {"account_id":"f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b","is_default":"true","base_uri":"https://demo.docusign.net"},
                {"account_id":"a2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b","is_default":false,"base_uri":"https://na3.docusign.net/"}]}"#,
        )
        .unwrap();
        assert!(raw.accounts[0].is_default);
        assert!(!raw.accounts[1].is_default);
    }
}
