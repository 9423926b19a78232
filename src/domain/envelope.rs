//! An envelope as DocuSign describes it, whichever way the description came:
//! inside a Connect notification, from the envelope GET, or in a listing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AgreementId, EnvelopeId};

/// The hidden envelope custom field that carries the agreement id on every
/// envelope countersign creates: a lost answer is found again by it, and
/// Connect's notifications are tied back to their agreement by it.
pub const AGREEMENT_FIELD: &str = "countersign_agreement_id";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub account_id: AccountId,
    pub envelope_id: EnvelopeId,
    /// The envelope status, lowercase ("completed").
    pub status: Option<String>,
    pub subject: Option<String>,
    pub sender: Option<Party>,
    pub completed_at: Option<DateTime<Utc>>,
    pub recipients: Vec<Recipient>,
    pub custom_fields: Vec<(String, String)>,
    pub documents: Vec<ListedDocument>,
}

impl Envelope {
    /// An envelope known only by its ids.
    pub fn new(account_id: AccountId, envelope_id: EnvelopeId) -> Self {
        Self {
            account_id,
            envelope_id,
            status: None,
            subject: None,
            sender: None,
            completed_at: None,
            recipients: Vec::new(),
            custom_fields: Vec::new(),
            documents: Vec::new(),
        }
    }

    /// The agreement countersign sent this envelope for, by the hidden
    /// custom field it puts on every envelope it creates.
    pub fn agreement_id(&self) -> Option<AgreementId> {
        self.custom_fields
            .iter()
            .find(|(name, _)| name == AGREEMENT_FIELD)
            .and_then(|(_, value)| uuid::Uuid::try_parse(value.trim()).ok())
            .map(AgreementId)
    }

    /// Takes in a fuller description of the same envelope (DocuSign's REST
    /// answer): its recipients and custom fields replace these, its other
    /// values fill in or replace what it has, and what it lacks is kept.
    pub fn update_from(&mut self, fetched: Envelope) {
        self.status = fetched.status.or(self.status.take());
        self.subject = fetched.subject.or(self.subject.take());
        self.sender = fetched.sender.or(self.sender.take());
        self.completed_at = fetched.completed_at.or(self.completed_at);
        self.recipients = fetched.recipients;
        self.custom_fields = fetched.custom_fields;
        if !fetched.documents.is_empty() {
            self.documents = fetched.documents;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabValue {
    pub label: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub recipient_id: Option<String>,
    /// DocuSign's recipient type, lowercase: "signer", "carboncopy", …
    pub kind: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub routing_order: Option<u32>,
    /// Lowercase: "completed", "sent", …
    pub status: Option<String>,
    pub signed_at: Option<DateTime<Utc>>,
    /// Why the recipient declined, when they did.
    #[serde(default)]
    pub declined_reason: Option<String>,
    pub tabs: Vec<TabValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// An envelope document.
    Content,
    /// The certificate of completion.
    Summary,
}

/// A document of the envelope, by DocuSign's id (its bytes are elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedDocument {
    /// "1", "2", … or "certificate".
    pub document_id: String,
    pub name: String,
    pub kind: DocumentKind,
}
