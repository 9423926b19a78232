//! What is known about countersign's access to DocuSign, per impersonated
//! user: shown by `/readyz`, `countersign check` and the logs. The consent
//! URL is logged once when consent goes missing, not once per job.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::token::GrantError;
use crate::ids::UserId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UserAccess {
    Granted,
    ConsentRequired { message: String },
    Misconfigured { message: String },
}

#[derive(Debug, Default)]
pub struct AccessStatus {
    users: Mutex<BTreeMap<UserId, UserAccess>>,
    /// Set when a user's access came back after a refusal: parked jobs can run.
    recovered: AtomicBool,
}

impl AccessStatus {
    fn set(&self, user: UserId, access: UserAccess) -> Option<UserAccess> {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).insert(user, access)
    }

    pub(super) fn granted(&self, user: UserId) {
        match self.set(user, UserAccess::Granted) {
            Some(UserAccess::Granted) | None => {}
            Some(_) => {
                tracing::info!(%user, "DocuSign access restored; jobs waiting for it resume");
                self.recovered.store(true, Ordering::SeqCst);
            }
        }
    }

    pub(super) fn refused(&self, user: UserId, error: &GrantError) {
        let access = match error {
            GrantError::ConsentRequired { .. } => UserAccess::ConsentRequired { message: error.to_string() },
            GrantError::Configuration { .. } => UserAccess::Misconfigured { message: error.to_string() },
            GrantError::Transient(_) => return,
        };
        let previous = self.set(user, access.clone());
        if previous.as_ref() != Some(&access) {
            tracing::error!(%user, error = %error, "DocuSign access refused; jobs needing it wait until it is fixed");
        }
    }

    /// True once after access came back; the caller wakes parked jobs.
    pub fn take_recovered(&self) -> bool {
        self.recovered.swap(false, Ordering::SeqCst)
    }

    /// A configuration problem that makes the service not ready, if any.
    pub fn misconfiguration(&self) -> Option<String> {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).values().find_map(|access| match access {
            UserAccess::Misconfigured { message } => Some(message.clone()),
            _ => None,
        })
    }

    pub fn snapshot(&self) -> BTreeMap<UserId, UserAccess> {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
