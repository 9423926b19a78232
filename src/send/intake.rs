//! Taking a request for an agreement, however it arrives (the requests
//! API, a bus message): checked against the client's profiles and the
//! profile's needs, then stored with its send job in one commit. A client's
//! idempotency key (a message id on a bus) names one request for good.

use std::sync::Arc;

use serde_json::Value;

use super::{DataError, Profiles, check_data, request_digest};
use crate::domain::{Agreement, RequestKey};
use crate::ids::AgreementId;
use crate::jobs::{JobPayload, SendAgreementJob};
use crate::store::{AgreementInsert, NewAgreement, Store, StoreError};

/// A request, as its client sent it.
#[derive(Debug, Clone)]
pub struct AgreementRequest {
    pub client: String,
    pub idempotency_key: String,
    pub profile: String,
    pub data: Value,
}

/// Why a request was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("profile `{0}` is not one this client may use")]
    ProfileNotAllowed(String),
    #[error("the data cannot fill the profile: {0}")]
    Data(#[from] DataError),
    #[error("the idempotency key was used for agreement {0} with a different request")]
    KeyReused(AgreementId),
    /// Nothing is wrong with the request: try again.
    #[error("the store cannot be reached: {0}")]
    Store(#[from] StoreError),
}

/// A request taken: the agreement it is, and whether this request stored it
/// (`false` for a repeat of a stored request under its key).
#[derive(Debug, Clone)]
pub struct Taken {
    pub agreement: Agreement,
    pub new: bool,
}

/// What taking requests needs.
#[derive(Debug, Clone)]
pub struct Intake {
    store: Arc<dyn Store>,
    profiles: Profiles,
    max_attempts: u32,
}

impl Intake {
    pub fn new(store: Arc<dyn Store>, profiles: Profiles, max_attempts: u32) -> Self {
        Self { store, profiles, max_attempts }
    }

    /// Stores `request` (or finds it stored under its key) if `allowed`
    /// lists its profile; answers the agreement it is.
    pub async fn take(&self, request: AgreementRequest, allowed: &[String]) -> Result<Taken, Refusal> {
        let profile = self
            .profiles
            .get(&request.profile)
            .filter(|_| allowed.contains(&request.profile))
            .ok_or_else(|| Refusal::ProfileNotAllowed(request.profile.clone()))?;
        check_data(profile, &request.data)?;
        let new = NewAgreement {
            id: AgreementId::new(),
            key: RequestKey {
                client: request.client,
                idempotency_key: request.idempotency_key,
                digest: request_digest(&request.profile, &request.data),
            },
            account_id: profile.account_id,
            profile: request.profile,
            data: request.data,
        };
        let send = SendAgreementJob { agreement_id: new.id }.job(self.max_attempts);
        match self.store.insert_agreement(&new, &send).await? {
            AgreementInsert::Created(agreement) => {
                tracing::info!(agreement_id = %agreement.id, client = %agreement.client,
                    profile = %agreement.profile, "agreement requested");
                Ok(Taken { agreement, new: true })
            }
            AgreementInsert::Existing { agreement, digest } if digest == new.key.digest => {
                Ok(Taken { agreement, new: false })
            }
            AgreementInsert::Existing { agreement, .. } => Err(Refusal::KeyReused(agreement.id)),
        }
    }
}
