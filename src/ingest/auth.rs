//! Who may post notifications: HMAC-SHA256 signatures over the exact body
//! (`X-DocuSign-Signature-1..N`, any header matching any key), optionally
//! HTTP Basic credentials on top. Keys rotate without a restart: the key
//! ring is replaced as a whole on reload.

use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{Secret, Settings};
use crate::formats::AccountHints;
use crate::ids::AccountId;

/// DocuSign sends at most this many signature headers (one per active key).
pub const MAX_SIGNATURE_HEADERS: usize = 100;

/// Which notifications a key may vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    Any,
    Account(AccountId),
}

#[derive(Clone)]
struct Key {
    secret: Secret,
    scope: KeyScope,
}

/// The keys and credentials in force.
#[derive(Clone)]
pub struct ConnectAuth {
    keys: Vec<Key>,
    verify_hmac: bool,
    basic: Option<(String, Secret)>,
    /// What names the account of a legacy XML message without a GUID in it
    /// (the header is filled in per request).
    accounts: AccountHints,
}

impl std::fmt::Debug for ConnectAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectAuth")
            .field("keys", &self.keys.len())
            .field("verify_hmac", &self.verify_hmac)
            .field("basic", &self.basic.is_some())
            .finish()
    }
}

impl ConnectAuth {
    pub fn from_settings(all: &Settings) -> Self {
        let settings = &all.connect;
        let mut keys: Vec<Key> =
            settings.hmac_keys.iter().map(|secret| Key { secret: secret.clone(), scope: KeyScope::Any }).collect();
        for account in &settings.accounts {
            let scope = KeyScope::Account(account.account_id);
            keys.extend(account.hmac_keys.iter().map(|s| Key { secret: s.clone(), scope }));
        }
        let basic = settings.basic_auth_user.clone().zip(settings.basic_auth_password.clone());
        let by_number = settings
            .accounts
            .iter()
            .filter_map(|a| a.account_number.clone().map(|number| (number, a.account_id)))
            .collect();
        let mut configured: Vec<AccountId> = settings.accounts.iter().map(|a| a.account_id).collect();
        configured.extend(all.docusign.accounts.iter().map(|a| a.account_id));
        configured.sort();
        configured.dedup();
        let only = match configured.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        Self {
            keys,
            verify_hmac: settings.verify_hmac,
            basic,
            accounts: AccountHints { header: None, by_number, only },
        }
    }

    /// The hints for one message that came with `header`.
    pub fn account_hints(&self, header: Option<AccountId>) -> AccountHints {
        AccountHints { header, ..self.accounts.clone() }
    }

    pub fn verifies_hmac(&self) -> bool {
        self.verify_hmac
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks HTTP Basic credentials when they are configured.
    pub fn basic_ok(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = &self.basic else { return true };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| STANDARD.decode(v.trim()).ok())
        else {
            return false;
        };
        let expected = format!("{user}:{}", password.expose());
        bool::from(given.ct_eq(expected.as_bytes()))
    }

    /// Starts HMACs over the body for every key that may vouch for
    /// `account` (global keys, and that account's own).
    pub fn verifier(&self, account: Option<AccountId>) -> Verifier {
        let macs = self
            .keys
            .iter()
            .filter(|key| match key.scope {
                KeyScope::Any => true,
                KeyScope::Account(id) => Some(id) == account,
            })
            .filter_map(|key| {
                Hmac::<Sha256>::new_from_slice(key.secret.expose().as_bytes()).ok().map(|mac| (mac, key.scope))
            })
            .collect();
        Verifier { macs }
    }
}

/// HMACs being computed while the body streams in.
pub struct Verifier {
    macs: Vec<(Hmac<Sha256>, KeyScope)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("keys", &self.macs.len()).finish()
    }
}

impl Verifier {
    pub fn update(&mut self, chunk: &[u8]) {
        for (mac, _) in &mut self.macs {
            mac.update(chunk);
        }
    }

    /// The scope of a key whose HMAC equals one of `signatures`, if any.
    /// Every comparison is constant-time.
    pub fn matching_scope(self, signatures: &[Vec<u8>]) -> Option<KeyScope> {
        let mut found = None;
        for (mac, scope) in self.macs {
            let digest = mac.finalize().into_bytes();
            for signature in signatures {
                if bool::from(digest.as_slice().ct_eq(signature)) && found.is_none() {
                    found = Some(scope);
                }
            }
        }
        found
    }
}

/// The decoded `X-DocuSign-Signature-N` values (N from 1 to 100);
/// undecodable values are skipped, they cannot match anyway.
pub fn signatures(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .iter()
        .filter(|(name, _)| {
            name.as_str()
                .strip_prefix("x-docusign-signature-")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| (1..=MAX_SIGNATURE_HEADERS).contains(&n))
        })
        .take(MAX_SIGNATURE_HEADERS)
        .filter_map(|(_, value)| value.to_str().ok().and_then(|v| STANDARD.decode(v.trim()).ok()))
        .collect()
}

/// The current key ring, replaceable at run time (SIGHUP, admin API).
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Arc<RwLock<Arc<ConnectAuth>>>,
}

impl KeyRing {
    pub fn new(auth: ConnectAuth) -> Self {
        Self { current: Arc::new(RwLock::new(Arc::new(auth))) }
    }

    pub fn current(&self) -> Arc<ConnectAuth> {
        self.current.read().map(|guard| guard.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub fn replace(&self, auth: ConnectAuth) {
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(auth),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(auth),
        }
    }
}
