//! One normalised Connect notification, whichever format it arrived in.
//! Everything DocuSign sends as a string ("true", "1", zone-less XML times)
//! is parsed here, at the edge, into typed values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, EnvelopeId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON SIM (REST v2.1, "Connect 2.0").
    Json,
    /// Legacy `DocuSignEnvelopeInformation`.
    Xml,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Xml => "xml",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// An envelope document.
    Content,
    /// The certificate of completion.
    Summary,
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
    pub tabs: Vec<TabValue>,
}

/// A document the notification lists (with or without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedDocument {
    /// "1", "2", … or "certificate".
    pub document_id: String,
    pub name: String,
    pub kind: DocumentKind,
}

/// A document whose bytes came inside the notification and were written
/// to a [`DocumentSink`] while parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddedDocument {
    pub document_id: String,
    pub name: String,
    pub kind: DocumentKind,
    pub size_bytes: u64,
    /// SHA-256 of the decoded bytes, hex.
    pub sha256: String,
    /// Where the sink put the bytes.
    pub storage_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectNotification {
    pub format: Format,
    /// The JSON SIM event name (`envelope-completed`); legacy XML statuses
    /// are mapped onto the same names.
    pub event: String,
    pub account_id: AccountId,
    pub envelope_id: EnvelopeId,
    /// The user the message concerns (JSON `data.userId`).
    pub user_id: Option<UserId>,
    /// Set on recipient-* events.
    pub recipient_id: Option<String>,
    /// The envelope status, lowercase ("completed").
    pub status: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub subject: Option<String>,
    pub sender: Option<Party>,
    pub completed_at: Option<DateTime<Utc>>,
    pub recipients: Vec<Recipient>,
    pub custom_fields: Vec<(String, String)>,
    pub documents: Vec<ListedDocument>,
    /// Not kept in the stored summary: the documents table records them.
    #[serde(default)]
    pub embedded: Vec<EmbeddedDocument>,
    /// True when the envelope's data (recipients, tabs, custom fields) came
    /// with the notification, so it need not be fetched.
    pub has_envelope_data: bool,
}

/// Where embedded documents go while a notification is parsed: bytes are
/// pushed as they are decoded, so no document is ever held whole in memory
/// by the parser.
pub trait DocumentSink {
    /// Starts a document. `document_id` is `None` for a certificate that
    /// carries no id (legacy XML).
    fn begin(&mut self, document_id: Option<&str>, name: &str, kind: DocumentKind) -> std::io::Result<()>;
    /// Appends decoded bytes to the current document.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Finishes the current document.
    fn finish(&mut self) -> std::io::Result<EmbeddedDocument>;
}
