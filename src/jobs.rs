//! Every kind of job countersign runs, each with its typed payload and its
//! unique key, in one place. The code that enqueues a job and the handler
//! that runs it share the payload type; the store sees only the kind's name,
//! the key and the payload as JSON, so its queue stays generic. This module
//! sits below the store (it imports only ids), so the store can bind a kind
//! in SQL and stages can name their jobs.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AgreementId, EnvelopeId, EventId, NotificationId};
use chrono::{DateTime, Utc};

/// The kinds of job, as stored in `jobs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Takes a completed envelope to stored documents and planned events.
    ProcessEnvelope,
    /// Delivers one event to one sink.
    Deliver,
    /// One reconciliation pass over one account's completed envelopes.
    ReconcileAccount,
    /// Creates an agreement's envelope in DocuSign, exactly once.
    SendAgreement,
    /// Voids an agreement's envelope.
    VoidAgreement,
    /// Applies one Connect notification to the agreement its envelope belongs to.
    AgreementLifecycle,
}

impl JobKind {
    pub const ALL: [Self; 6] = [
        Self::ProcessEnvelope,
        Self::Deliver,
        Self::ReconcileAccount,
        Self::SendAgreement,
        Self::VoidAgreement,
        Self::AgreementLifecycle,
    ];

    /// The name stored in `jobs.kind` (and shown by the admin API and CLI).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ProcessEnvelope => "process_envelope",
            Self::Deliver => "deliver",
            Self::ReconcileAccount => "reconcile_account",
            Self::SendAgreement => "send_agreement",
            Self::VoidAgreement => "void_agreement",
            Self::AgreementLifecycle => "agreement_lifecycle",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<JobKind> for String {
    fn eq(&self, kind: &JobKind) -> bool {
        self == kind.as_str()
    }
}

/// A job's payload: what its handler needs, typed.
pub trait JobPayload: Serialize + DeserializeOwned {
    const KIND: JobKind;

    /// At most one job of this kind with this key exists until it is pruned,
    /// so enqueueing the same work twice adds nothing.
    fn unique_key(&self) -> Option<String>;

    /// The job to enqueue, due now.
    fn job(&self, max_attempts: u32) -> NewJob {
        // A payload of ids and strings always serialises.
        let payload = serde_json::to_value(self).unwrap_or_default();
        let job = NewJob::new(Self::KIND.as_str(), payload, max_attempts);
        match self.unique_key() {
            Some(key) => job.unique(key),
            None => job,
        }
    }

    /// Reads the payload of a stored job (its `kind` and `payload` columns).
    fn read(kind: &str, payload: &serde_json::Value) -> Result<Self, PayloadError> {
        if kind != Self::KIND.as_str() {
            return Err(PayloadError { kind: Self::KIND, message: format!("the job is a {kind} job") });
        }
        serde_json::from_value(payload.clone())
            .map_err(|error| PayloadError { kind: Self::KIND, message: error.to_string() })
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    /// At most one job per (kind, unique key) exists until it is pruned.
    pub unique_key: Option<String>,
    pub payload: serde_json::Value,
    /// Not before this time; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: u32,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: serde_json::Value, max_attempts: u32) -> Self {
        Self { kind: kind.into(), unique_key: None, payload, run_at: None, max_attempts }
    }

    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    pub fn at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }
}

/// A stored payload that does not read as its kind's type.
#[derive(Debug, thiserror::Error)]
#[error("malformed {kind} payload: {message}")]
pub struct PayloadError {
    kind: JobKind,
    message: String,
}

/// Processes an envelope after the notification that enqueued it; one job
/// per envelope, however many notifications (from Connect or from
/// reconciliation) arrive for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEnvelopeJob {
    pub notification_id: NotificationId,
    pub account_id: AccountId,
    pub envelope_id: EnvelopeId,
}

impl JobPayload for ProcessEnvelopeJob {
    const KIND: JobKind = JobKind::ProcessEnvelope;

    fn unique_key(&self) -> Option<String> {
        Some(Self::key(self.envelope_id))
    }
}

impl ProcessEnvelopeJob {
    /// The unique key of an envelope's job, to look it up.
    pub fn key(envelope: EnvelopeId) -> String {
        envelope.to_string()
    }
}

/// Delivers one event to one sink; one job per delivery, whatever reruns
/// enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub event_id: EventId,
    pub sink: String,
}

impl JobPayload for DeliveryJob {
    const KIND: JobKind = JobKind::Deliver;

    fn unique_key(&self) -> Option<String> {
        Some(Self::key(self.event_id, &self.sink))
    }
}

impl DeliveryJob {
    /// The unique key of the delivery of `event` to `sink`, to look it up.
    /// The stores join a `deliveries` row to its job by this key, spelt in
    /// SQL as `event_id || '/' || sink`: change both together.
    pub fn key(event: EventId, sink: &str) -> String {
        format!("{event}/{sink}")
    }
}

/// One reconciliation pass over an account; one armed job per account, run
/// again at every interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileAccountJob {
    /// `None`: the default account of the configured user.
    pub account_id: Option<AccountId>,
}

impl JobPayload for ReconcileAccountJob {
    const KIND: JobKind = JobKind::ReconcileAccount;

    fn unique_key(&self) -> Option<String> {
        Some(self.account_id.map_or_else(|| "default".to_string(), |a| a.to_string()))
    }
}

/// Sends an agreement: one job per agreement, for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAgreementJob {
    pub agreement_id: AgreementId,
}

impl JobPayload for SendAgreementJob {
    const KIND: JobKind = JobKind::SendAgreement;

    fn unique_key(&self) -> Option<String> {
        Some(self.agreement_id.to_string())
    }
}

/// Voids an agreement's envelope: one job per agreement, however often the
/// client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidAgreementJob {
    pub agreement_id: AgreementId,
}

impl JobPayload for VoidAgreementJob {
    const KIND: JobKind = JobKind::VoidAgreement;

    fn unique_key(&self) -> Option<String> {
        Some(self.agreement_id.to_string())
    }
}

/// Applies one notification about an envelope countersign sent to its
/// agreement; one job per notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementLifecycleJob {
    pub notification_id: NotificationId,
    pub agreement_id: AgreementId,
}

impl JobPayload for AgreementLifecycleJob {
    const KIND: JobKind = JobKind::AgreementLifecycle;

    fn unique_key(&self) -> Option<String> {
        Some(self.notification_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_kind_reads_back_from_its_name() {
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(JobKind::parse("Deliver"), None);
    }

    #[test]
    fn a_payload_is_read_only_from_a_job_of_its_kind() {
        let delivery = DeliveryJob { event_id: EventId::new(), sink: "hr".into() };
        let new = delivery.job(5);
        assert_eq!((new.kind.as_str(), new.unique_key.clone()), ("deliver", Some(format!("{}/hr", delivery.event_id))));
        assert_eq!(DeliveryJob::read("deliver", &new.payload).unwrap(), delivery);
        let wrong_kind = DeliveryJob::read("process_envelope", &new.payload).unwrap_err();
        assert!(wrong_kind.to_string().contains("process_envelope job"), "{wrong_kind}");
        let malformed = DeliveryJob::read("deliver", &serde_json::json!({ "sink": 1 })).unwrap_err();
        assert!(malformed.to_string().starts_with("malformed deliver payload"), "{malformed}");
        let old = ReconcileAccountJob::read("reconcile_account", &serde_json::json!({})).unwrap();
        assert_eq!(old.account_id, None);
    }
}
