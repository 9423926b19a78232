//! Parsing Connect bodies (JSON SIM and legacy XML). Being written; this
//! placeholder refuses every body.

use std::io::{BufRead, Read};

use super::notification::{ConnectNotification, DocumentSink, Format};
use crate::ids::AccountId;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("XML with a DOCTYPE is refused")]
    DocTypeRefused,
    #[error("nesting too deep")]
    TooDeep,
    #[error("storing an embedded document failed: {0}")]
    Sink(std::io::Error),
}

pub fn detect(prefix: &[u8]) -> Option<Format> {
    let text = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Some(Format::Json),
        Some(b'<') => Some(Format::Xml),
        _ => None,
    }
}

pub fn parse_json(reader: impl Read, sink: &mut dyn DocumentSink) -> Result<ConnectNotification, FormatError> {
    let _ = (reader, sink);
    Err(FormatError::Malformed("not implemented".into()))
}

pub fn parse_xml(
    reader: impl BufRead,
    account_hint: Option<AccountId>,
    sink: &mut dyn DocumentSink,
) -> Result<ConnectNotification, FormatError> {
    let _ = (reader, account_hint, sink);
    Err(FormatError::Malformed("not implemented".into()))
}
