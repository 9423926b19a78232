//! What a legacy `DocuSignEnvelopeInformation` message says, collected
//! element by element while the reader walks it, and turned into a
//! notification once the whole document (and its trailing
//! `TimeZoneOffset`) has been read.

use super::embedded::Begin;
use super::xml::AccountHints;
use super::xml_paths::{Slot, Tag, Tag as T};
use super::{FormatError, LocalTime, clip, invalid, non_empty};
use crate::domain::{
    ConnectNotification, DocumentKind, EmbeddedDocument, Format, ListedDocument, Party, Recipient, TabValue,
};
use crate::ids::{AccountId, EnvelopeId};

#[derive(Debug, Default)]
struct XmlRecipient {
    recipient_id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    email: Option<String>,
    role: Option<String>,
    routing_order: Option<u32>,
    status: Option<String>,
    signed: Option<LocalTime>,
    declined_reason: Option<String>,
    tabs: Vec<TabValue>,
}

#[derive(Debug, Default)]
struct Pair {
    first: Option<String>,
    second: Option<String>,
}

/// One `DocumentPDF`. Its children may come in any order, and DocuSign puts
/// `DocumentID`/`DocumentType` after `PDFBytes`, so the sink is started with
/// a guess ([`Envelope::provisional_begin`]) and the returned
/// [`EmbeddedDocument`] is corrected when the element closes.
#[derive(Debug, Default)]
struct XmlPdf {
    name: Option<String>,
    document_id: Option<String>,
    kind: Option<DocumentKind>,
    embedded: Option<EmbeddedDocument>,
    bytes_seen: bool,
}

#[derive(Debug, Default)]
pub(super) struct Envelope {
    envelope_id: Option<String>,
    time_generated: Option<LocalTime>,
    subject: Option<String>,
    sender_name: Option<String>,
    sender_email: Option<String>,
    status: Option<String>,
    completed: Option<LocalTime>,
    recipients: Vec<XmlRecipient>,
    custom_fields: Vec<(String, String)>,
    listed: Vec<ListedDocument>,
    embedded: Vec<EmbeddedDocument>,
    offset_minutes: Option<i32>,
    recipient: Option<XmlRecipient>,
    tab: Option<Pair>,
    field: Option<Pair>,
    listed_doc: Option<Pair>,
    pdf: Option<XmlPdf>,
}

impl Envelope {
    /// A container element opened.
    pub(super) fn open(&mut self, path: &[Tag]) {
        match path {
            [T::Root, T::EnvelopeStatus, T::RecipientStatuses, T::RecipientStatus] => {
                self.recipient = Some(XmlRecipient::default());
            }
            [T::Root, T::EnvelopeStatus, T::RecipientStatuses, T::RecipientStatus, T::TabStatuses, T::TabStatus] => {
                self.tab = Some(Pair::default());
            }
            [T::Root, T::EnvelopeStatus, T::CustomFields, T::CustomField] => self.field = Some(Pair::default()),
            [T::Root, T::EnvelopeStatus, T::DocumentStatuses, T::DocumentStatus] => {
                self.listed_doc = Some(Pair::default());
            }
            [T::Root, T::DocumentPdfs, T::DocumentPdf] => self.pdf = Some(XmlPdf::default()),
            _ => {}
        }
    }

    /// A container element closed (the path still includes it).
    pub(super) fn close(&mut self, path: &[Tag]) {
        match path {
            [T::Root, T::EnvelopeStatus, T::RecipientStatuses, T::RecipientStatus] => {
                self.recipients.extend(self.recipient.take());
            }
            [T::Root, T::EnvelopeStatus, T::RecipientStatuses, T::RecipientStatus, T::TabStatuses, T::TabStatus] => {
                // A tab without a TabValue element (as opposed to an empty
                // one) has nothing to report.
                if let (Some(Pair { first: Some(label), second: Some(value) }), Some(recipient)) =
                    (self.tab.take(), self.recipient.as_mut())
                {
                    recipient.tabs.push(TabValue { label, value });
                }
            }
            [T::Root, T::EnvelopeStatus, T::CustomFields, T::CustomField] => {
                if let Some(Pair { first: Some(name), second }) = self.field.take() {
                    self.custom_fields.push((name, second.unwrap_or_default()));
                }
            }
            [T::Root, T::EnvelopeStatus, T::DocumentStatuses, T::DocumentStatus] => {
                if let Some(Pair { first: Some(document_id), second }) = self.listed_doc.take() {
                    let name = second.unwrap_or_default();
                    self.listed.push(ListedDocument { document_id, name, kind: DocumentKind::Content });
                }
            }
            [T::Root, T::DocumentPdfs, T::DocumentPdf] => {
                if let Some(pdf) = self.pdf.take() {
                    self.embedded.extend(pdf.finish());
                }
            }
            _ => {}
        }
    }

    /// The text of a [`Slot`] element, complete.
    pub(super) fn set(&mut self, slot: Slot, text: String) -> Result<(), FormatError> {
        match slot {
            Slot::Envelope(tag) => {
                let text = non_empty(Some(text));
                match tag {
                    T::TimeGenerated => {
                        self.time_generated =
                            text.map(|t| LocalTime::parse("EnvelopeStatus/TimeGenerated", &t)).transpose()?;
                    }
                    T::EnvelopeId => self.envelope_id = text,
                    T::Subject => self.subject = text,
                    T::UserName => self.sender_name = text,
                    T::Email => self.sender_email = text,
                    T::Status => self.status = text,
                    T::Completed => {
                        self.completed = text.map(|t| LocalTime::parse("EnvelopeStatus/Completed", &t)).transpose()?;
                    }
                    _ => {}
                }
            }
            Slot::Recipient(tag) => {
                let Some(recipient) = self.recipient.as_mut() else { return Ok(()) };
                let text = non_empty(Some(text));
                match tag {
                    T::Type => recipient.kind = text.map(|t| t.trim().to_ascii_lowercase()),
                    T::Email => recipient.email = text,
                    T::UserName => recipient.name = text,
                    T::RoutingOrder => {
                        recipient.routing_order = text
                            .map(|t| {
                                t.trim().parse::<u32>().map_err(|_| {
                                    invalid(
                                        "RecipientStatus/RoutingOrder",
                                        format!("not a routing order: {}", clip(&t)),
                                    )
                                })
                            })
                            .transpose()?;
                    }
                    T::Status => recipient.status = text.map(|t| t.trim().to_ascii_lowercase()),
                    T::Signed => {
                        recipient.signed = text.map(|t| LocalTime::parse("RecipientStatus/Signed", &t)).transpose()?;
                    }
                    T::DeclineReason => recipient.declined_reason = text,
                    T::RecipientId => recipient.recipient_id = text.map(|t| t.trim().to_owned()),
                    T::RoleName => recipient.role = text,
                    _ => {}
                }
            }
            // Values keep their exact text: an empty tab value or custom
            // field value is a value.
            Slot::Tab(tag) => {
                if let Some(tab) = self.tab.as_mut() {
                    if tag == T::TabLabel { tab.first = non_empty(Some(text)) } else { tab.second = Some(text) }
                }
            }
            Slot::CustomField(tag) => {
                if let Some(field) = self.field.as_mut() {
                    if tag == T::Name { field.first = non_empty(Some(text)) } else { field.second = Some(text) }
                }
            }
            Slot::Listed(tag) => {
                if let Some(doc) = self.listed_doc.as_mut() {
                    if tag == T::Id {
                        doc.first = non_empty(Some(text)).map(|t| t.trim().to_owned())
                    } else {
                        doc.second = Some(text)
                    }
                }
            }
            Slot::Pdf(tag) => {
                let Some(pdf) = self.pdf.as_mut() else { return Ok(()) };
                match tag {
                    T::Name => pdf.name = Some(text),
                    T::DocumentId => pdf.document_id = non_empty(Some(text)).map(|t| t.trim().to_owned()),
                    T::DocumentType => {
                        pdf.kind = match text.trim() {
                            t if t.eq_ignore_ascii_case("SUMMARY") => Some(DocumentKind::Summary),
                            t if t.eq_ignore_ascii_case("CONTENT") => Some(DocumentKind::Content),
                            _ => None,
                        };
                    }
                    _ => {}
                }
            }
            Slot::TimeZoneOffset => {
                self.offset_minutes = non_empty(Some(text)).map(|t| parse_offset(&t)).transpose()?
            }
        }
        Ok(())
    }

    /// What to tell the sink when `PDFBytes` starts, before `DocumentID`
    /// and `DocumentType` have been read. The name is looked up among the
    /// `DocumentStatuses` read earlier: one match gives the id of a content
    /// document; a name DocuSign did not list (or its
    /// `CertificateOfCompletion_…` naming) means the certificate. `None`
    /// when this `PDFBytes` is not the first in its `DocumentPDF`.
    pub(super) fn provisional_begin(&mut self) -> Option<Begin> {
        let pdf = self.pdf.as_mut()?;
        if std::mem::replace(&mut pdf.bytes_seen, true) {
            return None;
        }
        let name = pdf.name.clone().unwrap_or_default();
        let (kind, listed_id) = if name.is_empty() {
            (DocumentKind::Content, None)
        } else {
            let mut same_name = self.listed.iter().filter(|d| d.name == name);
            let (first, second) = (same_name.next(), same_name.next());
            let unlisted = first.is_none() && !self.listed.is_empty();
            let certificate = name.starts_with("CertificateOfCompletion") || unlisted;
            let kind = if certificate { DocumentKind::Summary } else { DocumentKind::Content };
            (kind, first.filter(|_| second.is_none() && !certificate).map(|d| d.document_id.clone()))
        };
        let kind = pdf.kind.unwrap_or(kind);
        let document_id = pdf.document_id.clone().or(listed_id);
        Some(Begin { document_id, name, kind })
    }

    pub(super) fn pdf_written(&mut self, embedded: Option<EmbeddedDocument>) {
        if let Some(pdf) = self.pdf.as_mut() {
            pdf.embedded = embedded;
        }
    }

    pub(super) fn build(self, hints: &AccountHints) -> Result<ConnectNotification, FormatError> {
        let offset = self.offset_minutes.unwrap_or(0);
        let envelope_id = self.envelope_id.ok_or(FormatError::MissingField("EnvelopeStatus/EnvelopeID"))?;
        let envelope_id =
            EnvelopeId::parse(&envelope_id).map_err(|e| invalid("EnvelopeStatus/EnvelopeID", e.to_string()))?;
        let status = self.status.ok_or(FormatError::MissingField("EnvelopeStatus/Status"))?;
        let status = status_name(&status)?;
        let generated_at = self
            .time_generated
            .ok_or(FormatError::MissingField("EnvelopeStatus/TimeGenerated"))?
            .to_utc("EnvelopeStatus/TimeGenerated", offset)?;
        let account_id = account_id(&self.custom_fields, hints)?;
        let completed_at = self.completed.map(|t| t.to_utc("EnvelopeStatus/Completed", offset)).transpose()?;
        let recipients = self
            .recipients
            .into_iter()
            .map(|r| {
                Ok(Recipient {
                    recipient_id: r.recipient_id,
                    kind: r.kind.unwrap_or_default(),
                    name: r.name,
                    email: r.email,
                    role: r.role,
                    routing_order: r.routing_order,
                    status: r.status,
                    signed_at: r.signed.map(|t| t.to_utc("RecipientStatus/Signed", offset)).transpose()?,
                    declined_reason: r.declined_reason,
                    tabs: r.tabs,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        let has_sender = self.sender_name.is_some() || self.sender_email.is_some();
        let sender = has_sender.then_some(Party { name: self.sender_name, email: self.sender_email });
        Ok(ConnectNotification {
            format: Format::Xml,
            // Every legacy status maps onto the JSON SIM name "envelope-<status>":
            // Sent → envelope-sent, Completed → envelope-completed, and so on.
            // Signed (all signers done, completion pending) has no SIM
            // counterpart and becomes "envelope-signed", so nothing that
            // waits for envelope-completed fires early.
            event: format!("envelope-{status}"),
            user_id: None,
            recipient_id: None,
            generated_at,
            envelope: crate::domain::Envelope {
                account_id,
                envelope_id,
                status: Some(status),
                subject: self.subject,
                sender,
                completed_at,
                recipients,
                custom_fields: self.custom_fields,
                documents: self.listed,
            },
            embedded: self.embedded,
            has_envelope_data: true,
        })
    }
}

impl XmlPdf {
    /// The document as the sink stored it, with what the later elements
    /// said. A certificate has no DocumentID in XML; it takes JSON SIM's id
    /// "certificate" so both formats name it alike.
    fn finish(self) -> Option<EmbeddedDocument> {
        let mut document = self.embedded?;
        if let Some(name) = self.name {
            document.name = name;
        }
        if let Some(kind) = self.kind {
            document.kind = kind;
        }
        document.document_id = match self.document_id {
            Some(id) => id,
            None if document.kind == DocumentKind::Summary => "certificate".to_owned(),
            None => document.document_id,
        };
        Some(document)
    }
}

/// "Completed" → "completed"; refused unless it looks like a status word,
/// since it ends up in the event name.
fn status_name(status: &str) -> Result<String, FormatError> {
    let status = status.trim();
    if status.is_empty() || status.len() > 32 || !status.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("EnvelopeStatus/Status", format!("not an envelope status: {}", clip(status))));
    }
    Ok(status.to_ascii_lowercase())
}

/// The account a legacy message is for. The `AccountId` custom field wins
/// when it is a GUID (only the body is covered by the HMAC). Real messages
/// put the short account number ("4197223") there, which no GUID can be made
/// of; then the `X-DocuSign-AccountId` header (Connect sends it with HMAC) or
/// the number's configured GUID, which must agree when both are there; the
/// configuration's only account stands in only where no number is mapped.
fn account_id(fields: &[(String, String)], hints: &AccountHints) -> Result<AccountId, FormatError> {
    const FIELD: &str = "EnvelopeStatus/CustomFields/CustomField[AccountId]";
    let field = fields.iter().find(|(name, _)| name.trim() == "AccountId").map(|(_, value)| value.trim());
    if let Some(id) = field.and_then(|value| AccountId::parse(value).ok()) {
        return Ok(id);
    }
    let by_number = field.and_then(|number| hints.by_number.get(number)).copied();
    match (hints.header, by_number) {
        (Some(header), Some(mapped)) if header != mapped => {
            return Err(invalid(
                FIELD,
                format!(
                    "account number {} is account {mapped} in connect.accounts, but X-DocuSign-AccountId names {header}",
                    clip(field.unwrap_or_default())
                ),
            ));
        }
        (Some(id), _) | (None, Some(id)) => return Ok(id),
        (None, None) => {}
    }
    // With numbers mapped, an unmapped one is not silently the only account.
    if let Some(only) = hints.only.filter(|_| hints.by_number.is_empty() || field.is_none()) {
        return Ok(only);
    }
    let fix = "set account_number on that account's [[connect.accounts]] entry (or configure one account only)";
    match field {
        Some(value) => Err(invalid(
            FIELD,
            format!(
                "{} is an account number, no X-DocuSign-AccountId header came with it, and connect.accounts maps no \
                 account_number to it: {fix}",
                clip(value)
            ),
        )),
        None => {
            Err(invalid(FIELD, format!("missing, and no X-DocuSign-AccountId header came with the message: {fix}")))
        }
    }
}

/// `TimeZoneOffset` in hours: "-7", "+5.5" (zones on the half or quarter hour).
fn parse_offset(text: &str) -> Result<i32, FormatError> {
    let bad = || invalid("TimeZoneOffset", format!("not an hour offset: {}", clip(text)));
    let hours: f64 = text.trim().parse().map_err(|_| bad())?;
    if !hours.is_finite() || hours.abs() > 14.0 {
        return Err(bad());
    }
    let minutes = (hours * 60.0).round();
    // Within ±840 by the check above, so the cast is exact.
    Ok(minutes as i32)
}
