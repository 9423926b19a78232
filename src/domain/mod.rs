//! What countersign is about, apart from how it arrives: an envelope (its
//! account, subject, sender, recipients with their tabs, custom fields and
//! documents), the Connect notification about it, and the agreement an IT
//! system asked countersign to send. Every edge parses into
//! these types (Connect's JSON and XML, DocuSign's REST answers); every
//! stage works on them. This module imports only ids.

mod agreement;
mod envelope;
mod notification;

pub use agreement::{Agreement, AgreementStatus, RequestKey};
pub use envelope::{AGREEMENT_FIELD, DocumentKind, Envelope, ListedDocument, Party, Recipient, TabValue};
pub use notification::{ConnectNotification, DocumentSink, EmbeddedDocument, Format, NoDocuments};
