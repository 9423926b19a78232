//! An agreement: an IT system's request that countersign send an envelope
//! from a DocuSign template, followed to its end. The request's data travels
//! with every event of the envelope, so a consumer provisions from what it
//! asked for, not from custom fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AgreementId, EnvelopeId};

/// Where an agreement is. Connect's news may arrive out of order, so a
/// status only ever moves forward ([`AgreementStatus::rank`]); the four
/// final ones never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgreementStatus {
    /// Stored with its send job; no envelope yet.
    Requested,
    /// DocuSign created the envelope and sent it to its recipients.
    Sent,
    /// A recipient opened it.
    Delivered,
    /// Every signer signed.
    Completed,
    /// A recipient declined to sign.
    Declined,
    /// Voided, by request here or in DocuSign.
    Voided,
    /// DocuSign refused the request for good (its error code is kept).
    Failed,
}

impl AgreementStatus {
    pub const ALL: &[Self] =
        &[Self::Requested, Self::Sent, Self::Delivered, Self::Completed, Self::Declined, Self::Voided, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Completed => "completed",
            Self::Declined => "declined",
            Self::Voided => "voided",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Declined | Self::Voided | Self::Failed)
    }

    fn rank(self) -> u8 {
        match self {
            Self::Requested => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            _ => 3,
        }
    }

    /// Whether news of `next` moves an agreement on from this status.
    pub fn advances_to(self, next: Self) -> bool {
        next.rank() > self.rank()
    }

    /// The statuses an agreement may be in for news of this one to apply.
    pub fn preceding(self) -> Vec<Self> {
        Self::ALL.iter().copied().filter(|s| s.advances_to(self)).collect()
    }

    /// Whether an agreement in this status has gone out to its recipients.
    pub fn was_sent(self) -> bool {
        matches!(self, Self::Sent | Self::Delivered | Self::Completed | Self::Declined)
    }

    /// What a Connect event says about the envelope's agreement, if anything.
    pub fn from_connect_event(event: &str) -> Option<Self> {
        Some(match event {
            "envelope-sent" => Self::Sent,
            "envelope-delivered" => Self::Delivered,
            "envelope-completed" => Self::Completed,
            "envelope-declined" | "recipient-declined" => Self::Declined,
            "envelope-voided" => Self::Voided,
            _ => return None,
        })
    }
}

impl std::fmt::Display for AgreementStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agreement as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Agreement {
    pub id: AgreementId,
    /// The API client that asked.
    pub client: String,
    pub profile: String,
    /// The request's data, as the client sent it.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub status: AgreementStatus,
    /// The account it is sent from, once known.
    pub account_id: Option<AccountId>,
    /// DocuSign's envelope, once created.
    pub envelope_id: Option<EnvelopeId>,
    /// DocuSign's error code when it refused the request (status `failed`).
    pub error_code: Option<String>,
    /// The last thing that went wrong (a refusal, a bounced email, a void DocuSign refused).
    pub last_error: Option<String>,
    /// Why the client asked to void it, once it did.
    pub void_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// When a send first asked DocuSign to create the envelope (committed
    /// before the call): from then on the envelope may exist whatever the
    /// answer was, so a send searches before it creates.
    pub send_attempted_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Agreement {
    /// The request as every event of its envelope carries it (`data.agreement`).
    pub fn request(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_string(),
            "profile": self.profile,
            "client": self.client,
            "data": self.data,
        })
    }
}

/// How the agreement's request is told apart from another: the client's
/// idempotency key, and a digest of what it asked (the same key with
/// another body is a mistake to refuse, not a repeat to answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub client: String,
    pub idempotency_key: String,
    /// SHA-256 of the request's profile and data, hex.
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_only_moves_forward_and_final_ones_stay() {
        use AgreementStatus::*;
        assert!(Requested.advances_to(Sent));
        assert!(Sent.advances_to(Completed));
        assert!(!Delivered.advances_to(Sent));
        assert!(!Completed.advances_to(Voided));
        assert!(!Declined.advances_to(Completed));
        for status in AgreementStatus::ALL {
            assert_eq!(AgreementStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(AgreementStatus::from_connect_event("recipient-declined"), Some(Declined));
        assert_eq!(AgreementStatus::from_connect_event("recipient-completed"), None);
    }
}
