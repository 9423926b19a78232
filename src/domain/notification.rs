//! One Connect notification, whichever format it arrived in: the event, when
//! DocuSign generated it, and the envelope it describes. Everything DocuSign
//! sends as a string ("true", "1", zone-less XML times) is parsed at the
//! edge (`formats`) into these typed values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DocumentKind, Envelope};
use crate::ids::UserId;

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

/// The notification is stored (as the `summary` of its row) in this shape,
/// with the envelope's fields beside its own (`flatten`): rows written
/// before the envelope became a type of its own read the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectNotification {
    pub format: Format,
    /// The JSON SIM event name (`envelope-completed`); legacy XML statuses
    /// are mapped onto the same names.
    pub event: String,
    /// The user the message concerns (JSON `data.userId`).
    pub user_id: Option<UserId>,
    /// Set on recipient-* events.
    pub recipient_id: Option<String>,
    pub generated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub envelope: Envelope,
    /// Not kept in the stored summary: the documents table records them.
    #[serde(default)]
    pub embedded: Vec<EmbeddedDocument>,
    /// True when the envelope's data (recipients, tabs, custom fields) came
    /// with the notification, so it need not be fetched.
    pub has_envelope_data: bool,
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

impl EmbeddedDocument {
    /// The id a document is recorded under when the message gave none:
    /// legacy XML's certificate is `certificate`, a content document its name.
    pub fn id_or_default(document_id: Option<String>, kind: DocumentKind, name: &str) -> String {
        document_id.unwrap_or_else(|| match kind {
            DocumentKind::Summary => "certificate".into(),
            DocumentKind::Content => name.to_string(),
        })
    }
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

/// A sink for descriptions that never carry document bytes (DocuSign's REST
/// answers and listings): any bytes are an error.
#[derive(Debug)]
pub struct NoDocuments;

impl DocumentSink for NoDocuments {
    fn begin(&mut self, _: Option<&str>, _: &str, _: DocumentKind) -> std::io::Result<()> {
        Err(std::io::Error::other("an envelope description carried document bytes"))
    }
    fn write(&mut self, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("an envelope description carried document bytes"))
    }
    fn finish(&mut self) -> std::io::Result<EmbeddedDocument> {
        Err(std::io::Error::other("an envelope description carried document bytes"))
    }
}
