//! JSON SIM ("Connect 2.0") messages, deserialised straight from the reader:
//! no `serde_json::Value` tree, so a 25 MB body is never duplicated. The
//! parts that carry documents (`data.envelopeSummary.envelopeDocuments`)
//! are walked with seeds that hand `PDFBytes` to the sink as each document
//! object is read.

use std::fmt;
use std::io::{BufReader, Read};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::embedded::{Begin, EmbeddedWriter};
use super::json_model::{RawCustomFields, RawParty, RawRecipients, Scalar, text};
use super::json_screen::{Rejected, screen, screen_slice};
use super::{FormatError, clip, clip_message, invalid, parse_utc};
use crate::domain::{
    ConnectNotification, DocumentKind, DocumentSink, EmbeddedDocument, Envelope, Format, ListedDocument, NoDocuments,
    Party,
};
use crate::ids::{AccountId, EnvelopeId, UserId};

const PDF_FIELD: &str = "envelopeDocuments.PDFBytes";

/// Parses one JSON SIM message, pushing any embedded `PDFBytes` into `sink`.
pub fn parse_json(reader: impl Read, sink: &mut dyn DocumentSink) -> Result<ConnectNotification, FormatError> {
    let reader = screen(reader).map_err(FormatError::Read)?;
    // serde_json reads byte by byte; buffering here keeps that off the socket.
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, reader));
    parse_from(&mut de, sink)
}

/// [`parse_json`] for a body already in memory: the same screen and the
/// same parse, but serde_json reads the slice directly instead of a byte at
/// a time through `io::Read`, which was most of a small body's parse.
pub fn parse_json_bytes(body: &[u8], sink: &mut dyn DocumentSink) -> Result<ConnectNotification, FormatError> {
    let body = screen_slice(body).map_err(|rejected| FormatError::Malformed(format!("malformed JSON: {rejected}")))?;
    parse_from(&mut serde_json::Deserializer::from_slice(body), sink)
}

fn parse_from<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    sink: &mut dyn DocumentSink,
) -> Result<ConnectNotification, FormatError> {
    let mut ctx = Ctx { sink, failure: None, embedded: Vec::new() };
    let parsed = MessageSeed(&mut ctx).deserialize(&mut *de).and_then(|raw| de.end().map(|()| raw));
    let raw = match parsed {
        Ok(raw) => raw,
        // A sink or base64 failure travels through serde as an opaque error;
        // the real one waits in the context.
        Err(e) => return Err(ctx.failure.take().unwrap_or_else(|| json_error(e))),
    };
    build(raw, ctx.embedded)
}

fn json_error(error: serde_json::Error) -> FormatError {
    if error.is_io() {
        let error = std::io::Error::from(error);
        if let Some(rejected) = error.get_ref().and_then(|e| e.downcast_ref::<Rejected>()) {
            return FormatError::Malformed(format!("malformed JSON: {rejected}"));
        }
        return FormatError::Read(error);
    }
    // serde_json appends " at line L column C"; it is put in front instead.
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message);
    let what = if error.is_eof() { "truncated JSON" } else { "malformed JSON" };
    FormatError::Malformed(format!(
        "{what} at line {} column {}: {}",
        error.line(),
        error.column(),
        clip_message(message)
    ))
}

struct Ctx<'s> {
    sink: &'s mut dyn DocumentSink,
    failure: Option<FormatError>,
    embedded: Vec<EmbeddedDocument>,
}

impl Ctx<'_> {
    /// Parks the real error and gives serde one that unwinds the parse.
    fn fail<E: de::Error>(&mut self, error: FormatError) -> E {
        self.failure = Some(error);
        E::custom("embedded document rejected")
    }
}

#[derive(Default)]
struct RawMessage {
    event: Option<Scalar>,
    generated: Option<Scalar>,
    data: Option<RawData>,
}

#[derive(Default)]
struct RawData {
    account_id: Option<Scalar>,
    user_id: Option<Scalar>,
    envelope_id: Option<Scalar>,
    recipient_id: Option<Scalar>,
    summary: Option<RawSummary>,
}

#[derive(Default)]
struct RawSummary {
    status: Option<Scalar>,
    email_subject: Option<Scalar>,
    completed: Option<Scalar>,
    sender: Option<RawParty>,
    recipients: Option<RawRecipients>,
    custom_fields: Option<RawCustomFields>,
    documents: Vec<ListedDocument>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum MessageKey {
    Event,
    GeneratedDateTime,
    Data,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum DataKey {
    AccountId,
    UserId,
    EnvelopeId,
    RecipientId,
    EnvelopeSummary,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum SummaryKey {
    Status,
    EmailSubject,
    CompletedDateTime,
    Sender,
    Recipients,
    CustomFields,
    EnvelopeDocuments,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum DocumentKey {
    DocumentId,
    Name,
    Type,
    #[serde(rename = "PDFBytes")]
    PdfBytes,
    #[serde(other)]
    Other,
}

/// `null` where an object or array is expected means "absent".
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a value")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

/// Declares a seed that walks one JSON object with a visitor body.
macro_rules! object_seed {
    ($seed:ident, $value:ty, $expecting:literal, |$ctx:ident, $map:ident| $body:block) => {
        struct $seed<'c, 's>(&'c mut Ctx<'s>);

        impl<'de> DeserializeSeed<'de> for $seed<'_, '_> {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<$value, D::Error> {
                deserializer.deserialize_map(self)
            }
        }

        impl<'de> Visitor<'de> for $seed<'_, '_> {
            type Value = $value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($expecting)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<$value, A::Error> {
                let $ctx = self.0;
                $body
            }
        }
    };
}

object_seed!(MessageSeed, RawMessage, "a Connect JSON SIM message (an object)", |ctx, map| {
    let mut raw = RawMessage::default();
    while let Some(key) = map.next_key::<MessageKey>()? {
        match key {
            MessageKey::Event => raw.event = map.next_value()?,
            MessageKey::GeneratedDateTime => raw.generated = map.next_value()?,
            MessageKey::Data => {
                if raw.data.is_some() {
                    return Err(de::Error::duplicate_field("data"));
                }
                raw.data = map.next_value_seed(Nullable(DataSeed(&mut *ctx)))?;
            }
            MessageKey::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(raw)
});

object_seed!(DataSeed, RawData, "the data object", |ctx, map| {
    let mut raw = RawData::default();
    while let Some(key) = map.next_key::<DataKey>()? {
        match key {
            DataKey::AccountId => raw.account_id = map.next_value()?,
            DataKey::UserId => raw.user_id = map.next_value()?,
            DataKey::EnvelopeId => raw.envelope_id = map.next_value()?,
            DataKey::RecipientId => raw.recipient_id = map.next_value()?,
            DataKey::EnvelopeSummary => {
                if raw.summary.is_some() {
                    return Err(de::Error::duplicate_field("envelopeSummary"));
                }
                raw.summary = map.next_value_seed(Nullable(SummarySeed(&mut *ctx)))?;
            }
            DataKey::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(raw)
});

object_seed!(SummarySeed, RawSummary, "the envelopeSummary object", |ctx, map| {
    let mut raw = RawSummary::default();
    let mut documents_seen = false;
    while let Some(key) = map.next_key::<SummaryKey>()? {
        match key {
            SummaryKey::Status => raw.status = map.next_value()?,
            SummaryKey::EmailSubject => raw.email_subject = map.next_value()?,
            SummaryKey::CompletedDateTime => raw.completed = map.next_value()?,
            SummaryKey::Sender => raw.sender = map.next_value()?,
            SummaryKey::Recipients => raw.recipients = map.next_value()?,
            SummaryKey::CustomFields => raw.custom_fields = map.next_value()?,
            SummaryKey::EnvelopeDocuments => {
                if documents_seen {
                    return Err(de::Error::duplicate_field("envelopeDocuments"));
                }
                documents_seen = true;
                raw.documents = map.next_value_seed(Nullable(DocumentsSeed(&mut *ctx)))?.unwrap_or_default();
            }
            SummaryKey::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(raw)
});

struct DocumentsSeed<'c, 's>(&'c mut Ctx<'s>);

impl<'de> DeserializeSeed<'de> for DocumentsSeed<'_, '_> {
    type Value = Vec<ListedDocument>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for DocumentsSeed<'_, '_> {
    type Value = Vec<ListedDocument>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the envelopeDocuments array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ctx = self.0;
        let mut listed = Vec::new();
        while let Some(document) = seq.next_element_seed(DocumentSeed(&mut *ctx))? {
            listed.extend(document);
        }
        Ok(listed)
    }
}

enum Pdf {
    Absent,
    /// Base64 that came before the document's id, name or type. Holding one
    /// document's base64 is the price of telling the sink the right name and
    /// kind at `begin`; serde_json has buffered the whole string anyway.
    Deferred(String),
    Streamed(Option<EmbeddedDocument>),
}

object_seed!(DocumentSeed, Option<ListedDocument>, "an envelopeDocuments entry", |ctx, map| {
    let (mut id, mut name, mut kind) = (None::<Scalar>, None::<Scalar>, None::<Scalar>);
    let mut pdf = Pdf::Absent;
    while let Some(key) = map.next_key::<DocumentKey>()? {
        match key {
            DocumentKey::DocumentId => id = map.next_value()?,
            DocumentKey::Name => name = map.next_value()?,
            DocumentKey::Type => kind = map.next_value()?,
            DocumentKey::PdfBytes => {
                if !matches!(pdf, Pdf::Absent) {
                    return Err(de::Error::duplicate_field("PDFBytes"));
                }
                pdf = match (&id, &name, &kind) {
                    // DocuSign's own order puts the metadata first: decode
                    // straight out of serde_json's buffer.
                    (Some(id), Some(name), Some(kind)) => {
                        let begin = Begin {
                            document_id: Some(id.0.clone()),
                            name: name.0.clone(),
                            kind: document_kind(Some(&kind.0), Some(&id.0)),
                        };
                        Pdf::Streamed(map.next_value_seed(PdfSeed { ctx: &mut *ctx, begin })?)
                    }
                    _ => map.next_value::<Option<String>>()?.map_or(Pdf::Absent, Pdf::Deferred),
                };
            }
            DocumentKey::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    let id = text(id);
    let name = text(name).unwrap_or_default();
    let kind = document_kind(text(kind).as_deref(), id.as_deref());
    match pdf {
        Pdf::Absent | Pdf::Streamed(None) => {}
        Pdf::Streamed(Some(document)) => ctx.embedded.push(document),
        Pdf::Deferred(base64) => {
            let begin = Begin { document_id: id.clone(), name: name.clone(), kind };
            let mut writer = EmbeddedWriter::new(&mut *ctx.sink, begin, PDF_FIELD);
            match writer.feed(base64.as_bytes()).and_then(|()| writer.finish()) {
                Ok(document) => ctx.embedded.extend(document),
                Err(e) => return Err(ctx.fail(e)),
            }
        }
    }
    Ok(id.map(|document_id| ListedDocument { document_id, name, kind }))
});

/// "summary" is the certificate of completion; so is id "certificate" when
/// `type` is missing.
fn document_kind(kind: Option<&str>, id: Option<&str>) -> DocumentKind {
    match kind.map(str::trim) {
        Some(k) if k.eq_ignore_ascii_case("summary") => DocumentKind::Summary,
        Some(k) if k.eq_ignore_ascii_case("content") => DocumentKind::Content,
        _ if id.is_some_and(|id| id.trim().eq_ignore_ascii_case("certificate")) => DocumentKind::Summary,
        _ => DocumentKind::Content,
    }
}

/// Decodes a `PDFBytes` string while serde_json still holds it.
struct PdfSeed<'c, 's> {
    ctx: &'c mut Ctx<'s>,
    begin: Begin,
}

impl<'de> DeserializeSeed<'de> for PdfSeed<'_, '_> {
    type Value = Option<EmbeddedDocument>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PdfSeed<'_, '_> {
    type Value = Option<EmbeddedDocument>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("base64 PDFBytes")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        let mut writer = EmbeddedWriter::new(&mut *self.ctx.sink, self.begin, PDF_FIELD);
        writer.feed(value.as_bytes()).and_then(|()| writer.finish()).map_err(|e| self.ctx.fail(e))
    }
}

fn build(raw: RawMessage, embedded: Vec<EmbeddedDocument>) -> Result<ConnectNotification, FormatError> {
    let event = text(raw.event).ok_or(FormatError::MissingField("event"))?;
    let event = event.trim();
    if event.len() > 64 || !event.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("event", format!("not an event name: {}", clip(event))));
    }
    let generated = text(raw.generated).ok_or(FormatError::MissingField("generatedDateTime"))?;
    let generated_at = parse_utc("generatedDateTime", &generated)?;
    let data = raw.data.ok_or(FormatError::MissingField("data"))?;
    let account_id = text(data.account_id).ok_or(FormatError::MissingField("data.accountId"))?;
    let account_id = AccountId::parse(&account_id).map_err(|e| invalid("data.accountId", e.to_string()))?;
    let envelope_id = text(data.envelope_id).ok_or(FormatError::MissingField("data.envelopeId"))?;
    let envelope_id = EnvelopeId::parse(&envelope_id).map_err(|e| invalid("data.envelopeId", e.to_string()))?;
    let user_id = text(data.user_id)
        .map(|id| UserId::parse(&id).map_err(|e| invalid("data.userId", e.to_string())))
        .transpose()?;

    let (envelope, has_envelope_data) = match data.summary {
        Some(summary) => envelope_of(account_id, envelope_id, summary)?,
        None => (Envelope::new(account_id, envelope_id), false),
    };
    Ok(ConnectNotification {
        format: Format::Json,
        event: event.to_owned(),
        user_id,
        recipient_id: text(data.recipient_id),
        generated_at,
        envelope,
        embedded,
        has_envelope_data,
    })
}

/// The envelope an `envelopeSummary` describes, and whether it carried the
/// envelope's data (recipients or custom fields).
fn envelope_of(
    account_id: AccountId,
    envelope_id: EnvelopeId,
    summary: RawSummary,
) -> Result<(Envelope, bool), FormatError> {
    let has_envelope_data = summary.recipients.is_some() || summary.custom_fields.is_some();
    let envelope = Envelope {
        account_id,
        envelope_id,
        status: text(summary.status).map(|s| s.trim().to_ascii_lowercase()),
        subject: text(summary.email_subject),
        completed_at: text(summary.completed)
            .map(|t| parse_utc("envelopeSummary.completedDateTime", &t))
            .transpose()?,
        sender: summary
            .sender
            .map(|s| Party { name: text(s.user_name), email: text(s.email) })
            .filter(|p| p.name.is_some() || p.email.is_some()),
        recipients: summary.recipients.map(RawRecipients::into_recipients).transpose()?.unwrap_or_default(),
        custom_fields: summary.custom_fields.map(RawCustomFields::into_pairs).unwrap_or_default(),
        documents: summary.documents,
    };
    Ok((envelope, has_envelope_data))
}

/// An envelope as DocuSign's REST API describes it: the envelope GET (with
/// recipients, tabs and custom fields) or one envelope of a listing.
/// Connect's `envelopeSummary` is that same object, so the same reader that
/// reads notifications reads it; a description that carries document bytes
/// is refused.
pub fn parse_rest_envelope(
    account_id: AccountId,
    envelope_id: EnvelopeId,
    answer: &serde_json::Value,
) -> Result<Envelope, FormatError> {
    let mut sink = NoDocuments;
    let mut ctx = Ctx { sink: &mut sink, failure: None, embedded: Vec::new() };
    let summary = SummarySeed(&mut ctx).deserialize(answer);
    if let Some(failure) = ctx.failure {
        return Err(failure);
    }
    let summary = summary
        .map_err(|e| FormatError::Malformed(format!("the envelope answer: {}", clip_message(&e.to_string()))))?;
    envelope_of(account_id, envelope_id, summary).map(|(envelope, _)| envelope)
}
