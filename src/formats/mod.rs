//! DocuSign's wire formats, parsed into the domain types: Connect bodies
//! into one [`ConnectNotification`], JSON SIM ([`parse_json`]) and legacy
//! `DocuSignEnvelopeInformation` XML ([`parse_xml`]); REST envelope answers
//! and listings into an [`Envelope`] ([`parse_rest_envelope`], the same
//! reader as JSON SIM's `envelopeSummary`). [`detect`] picks the Connect
//! parser from the body itself, because a Connect configuration's
//! Content-Type says little about what it sends.
//!
//! Both parsers read the body once, as a stream. Embedded PDFs are decoded
//! into a [`DocumentSink`] in small pieces (at most [`MAX_SINK_WRITE`] bytes
//! per write), so a 25 MB notification is never held twice.
//!
//! Errors never quote the body: at most a field name and a short, escaped
//! excerpt of one value, so they can go back to the sender in a 400 answer.
//!
//! [`ConnectNotification`]: crate::domain::ConnectNotification
//! [`Envelope`]: crate::domain::Envelope
//! [`DocumentSink`]: crate::domain::DocumentSink

mod embedded;
mod json;
mod json_model;
mod json_screen;
mod xml;
mod xml_envelope;
mod xml_paths;

#[cfg(test)]
mod tests;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::domain::Format;

pub use embedded::MAX_SINK_WRITE;
pub use json::{parse_json, parse_json_bytes, parse_rest_envelope};
pub use xml::{AccountHints, MAX_XML_DEPTH, parse_xml};

/// Why a body could not be turned into a notification.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not well-formed JSON or XML ("malformed JSON at line 3 column 7: …").
    #[error("{0}")]
    Malformed(String),
    /// A field the notification cannot do without, named by its path in the
    /// message ("data.envelopeId", "EnvelopeStatus/EnvelopeID").
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field that is present but unusable (a non-GUID id, an unparseable time).
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The XML carried a document type declaration; entities are never expanded.
    #[error("XML document type declarations (DOCTYPE) are refused")]
    DocTypeRefused,
    /// The XML nests deeper than [`MAX_XML_DEPTH`] elements.
    #[error("XML nested deeper than {MAX_XML_DEPTH} elements")]
    TooDeep,
    /// The XML is not a `DocuSignEnvelopeInformation` message.
    #[error("unexpected XML root element {found}, expected DocuSignEnvelopeInformation")]
    UnexpectedRoot { found: String },
    /// Reading the body itself failed (a dropped connection, a size limit).
    #[error("reading the body failed: {0}")]
    Read(std::io::Error),
    /// The document sink refused an embedded document.
    #[error("storing an embedded document failed: {0}")]
    Sink(std::io::Error),
}

impl FormatError {
    /// True when the body is at fault (answer 400); false when reading it or
    /// storing its documents failed (answer 5xx so DocuSign retries).
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, Self::Read(_) | Self::Sink(_))
    }
}

/// Tells JSON from XML by the first meaningful byte, after a UTF-8 BOM and
/// whitespace.
pub fn detect(prefix: &[u8]) -> Option<Format> {
    let rest = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    match rest.iter().find(|b| !b.is_ascii_whitespace())? {
        b'{' => Some(Format::Json),
        b'<' => Some(Format::Xml),
        _ => None,
    }
}

const CLIP_CHARS: usize = 48;

/// A value quoted in an error: short, and escaped so control characters or
/// markup cannot reach a log line or a response unaltered.
pub(crate) fn clip(value: &str) -> String {
    let mut chars = value.chars();
    let short: String = chars.by_ref().take(CLIP_CHARS).collect();
    if chars.next().is_some() { format!("{short:?}…") } else { format!("{short:?}") }
}

/// A parser's own message (quick-xml, serde_json) may embed pieces of the
/// input; keep it to one printable line of bounded length.
pub(crate) fn clip_message(message: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = message.chars().take(MAX).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if message.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// Text that is empty once trimmed is DocuSign's way of saying "absent"
/// (`<Completed />`, `"signedDateTime": ""`).
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> FormatError {
    FormatError::InvalidField { field, reason: reason.into() }
}

/// DocuSign's zone-less form, any number of fractional digits.
const NAIVE_TIME: &str = "%Y-%m-%dT%H:%M:%S%.f";

/// JSON SIM times are UTC with seven fractional digits ("…53.4580747Z");
/// a zone-less one is read as UTC rather than refused.
pub(crate) fn parse_utc(field: &'static str, value: &str) -> Result<DateTime<Utc>, FormatError> {
    let value = value.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(value, NAIVE_TIME)
        .map(|naive| naive.and_utc())
        .map_err(|_| invalid(field, format!("not an ISO-8601 time: {}", clip(value))))
}

/// A legacy XML time. XML times carry no zone and are local to the
/// `TimeZoneOffset` that only arrives at the end of the document, so they
/// stay naive until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalTime {
    Naive(NaiveDateTime),
    /// Should DocuSign ever add a zone, it wins over `TimeZoneOffset`.
    Zoned(DateTime<Utc>),
}

impl LocalTime {
    pub(crate) fn parse(field: &'static str, value: &str) -> Result<Self, FormatError> {
        let value = value.trim();
        if let Ok(naive) = NaiveDateTime::parse_from_str(value, NAIVE_TIME) {
            return Ok(Self::Naive(naive));
        }
        DateTime::parse_from_rfc3339(value)
            .map(|time| Self::Zoned(time.with_timezone(&Utc)))
            .map_err(|_| invalid(field, format!("not an ISO-8601 time: {}", clip(value))))
    }

    /// UTC = local − offset (local 23:57 at −7 h is 06:57 UTC the next day).
    pub(crate) fn to_utc(self, field: &'static str, offset_minutes: i32) -> Result<DateTime<Utc>, FormatError> {
        match self {
            Self::Zoned(time) => Ok(time),
            Self::Naive(naive) => naive
                .checked_sub_signed(chrono::Duration::minutes(i64::from(offset_minutes)))
                .map(|utc| utc.and_utc())
                .ok_or_else(|| invalid(field, "out of range once converted to UTC")),
        }
    }
}
