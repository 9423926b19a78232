//! Shared test helpers: an in-memory sink that records what the parsers
//! push, fixtures, and small builders for documents with known bytes.

mod hostile;
mod json;
mod large;
mod xml;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::*;
use crate::domain::{DocumentKind, DocumentSink, EmbeddedDocument, Format};
use crate::ids::AccountId;

pub(super) const ACCOUNT: &str = "0b7f5c1e-4a7d-4c1e-9e0a-3d2f6b8a9c41";
pub(super) const USER: &str = "5e2d9a47-1c3b-4f8e-a6d0-7b9c2e4f1a85";
pub(super) const ENVELOPE: &str = "c3a1e8f2-6b4d-4e9a-8f17-2d5c9b0a7e63";

pub(super) fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/connect/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

pub(super) fn account() -> AccountId {
    AccountId::parse(ACCOUNT).unwrap()
}

/// What `begin` was told, and what arrived after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    pub document_id: Option<String>,
    pub name: String,
    pub kind: DocumentKind,
    pub bytes: Vec<u8>,
    pub size: u64,
    pub finished: bool,
}

#[derive(Debug, Default)]
pub(super) struct MemorySink {
    pub documents: Vec<Recorded>,
    pub largest_write: usize,
    /// Count and hash only, for documents too large to keep.
    pub discard_bytes: bool,
    pub fail_writes: bool,
    hasher: Option<Sha256>,
}

impl MemorySink {
    pub(super) fn discarding() -> Self {
        Self { discard_bytes: true, ..Self::default() }
    }

    fn open(&mut self) -> std::io::Result<&mut Recorded> {
        match self.documents.last_mut() {
            Some(document) if !document.finished => Ok(document),
            _ => Err(std::io::Error::other("no document begun")),
        }
    }
}

impl DocumentSink for MemorySink {
    fn begin(&mut self, document_id: Option<&str>, name: &str, kind: DocumentKind) -> std::io::Result<()> {
        assert!(self.documents.last().is_none_or(|d| d.finished), "begin while a document is open");
        self.documents.push(Recorded {
            document_id: document_id.map(str::to_owned),
            name: name.to_owned(),
            kind,
            bytes: Vec::new(),
            size: 0,
            finished: false,
        });
        self.hasher = Some(Sha256::new());
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.largest_write = self.largest_write.max(bytes.len());
        if self.fail_writes {
            return Err(std::io::Error::other("disk full"));
        }
        let keep = !self.discard_bytes;
        let document = self.open()?;
        document.size += bytes.len() as u64;
        if keep {
            document.bytes.extend_from_slice(bytes);
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(bytes);
        }
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<EmbeddedDocument> {
        let index = self.documents.len();
        let sha256 = hex::encode(self.hasher.take().unwrap_or_default().finalize());
        let document = self.open()?;
        document.finished = true;
        Ok(EmbeddedDocument {
            document_id: document.document_id.clone().unwrap_or_default(),
            name: document.name.clone(),
            kind: document.kind,
            size_bytes: document.size,
            sha256,
            storage_key: format!("memory/{index}"),
        })
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic bytes that start like a PDF and contain every byte value,
/// so any base64 slip shows.
pub(super) fn pdf_like(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut state = seed | 1;
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

pub(super) fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Base64 broken into 76-column lines, as MIME-minded encoders write it.
pub(super) fn base64_wrapped(bytes: &[u8]) -> String {
    let flat = base64(bytes);
    flat.as_bytes().chunks(76).map(|line| std::str::from_utf8(line).unwrap()).collect::<Vec<_>>().join("\r\n")
}

#[test]
fn detect_goes_by_content_after_bom_and_whitespace() {
    assert_eq!(detect(b"{\"event\":1}"), Some(Format::Json));
    assert_eq!(detect(b"\xEF\xBB\xBF \r\n\t{"), Some(Format::Json));
    assert_eq!(detect(b"<?xml version=\"1.0\"?>"), Some(Format::Xml));
    assert_eq!(detect(b"\xEF\xBB\xBF\n  <DocuSignEnvelopeInformation"), Some(Format::Xml));
    assert_eq!(detect(b""), None);
    assert_eq!(detect(b"   \n"), None);
    assert_eq!(detect(b"\xEF\xBB\xBF"), None);
    assert_eq!(detect(b"event=envelope-sent"), None);
    assert_eq!(detect(b"[{}]"), None);
}

#[test]
fn clipped_values_are_short_and_escaped() {
    let long = "x".repeat(500);
    assert!(clip(&long).chars().count() < 60);
    assert_eq!(clip("a\u{1b}[31mb"), "\"a\\u{1b}[31mb\"");
    assert!(!clip_message("line\nbreak\u{7}").contains(['\n', '\u{7}']));
}

#[test]
fn times_parse_with_any_fraction() {
    assert_eq!(parse_utc("t", "2022-09-22T15:22:53.4580747Z").unwrap(), utc("2022-09-22T15:22:53.4580747Z"));
    assert_eq!(parse_utc("t", "2022-09-22T15:22:53Z").unwrap(), utc("2022-09-22T15:22:53Z"));
    assert_eq!(parse_utc("t", "2022-09-22T15:22:53.1").unwrap(), utc("2022-09-22T15:22:53.1Z"));
    let local = LocalTime::parse("t", "2020-03-28T23:57:15").unwrap();
    assert_eq!(local.to_utc("t", -7 * 60).unwrap(), utc("2020-03-29T06:57:15Z"));
    let zoned = LocalTime::parse("t", "2020-03-28T23:57:15.5+02:00").unwrap();
    assert_eq!(zoned.to_utc("t", -7 * 60).unwrap(), utc("2020-03-28T21:57:15.5Z"));
    let err = parse_utc("generatedDateTime", "yesterday").unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "generatedDateTime", .. }), "{err}");
}

/// Two parses of one body gave the same notification, or the same error.
/// serde_json may place an error one column apart when it reads a slice
/// rather than a reader, so positions are left out of the comparison.
pub(super) fn assert_same(
    a: &Result<crate::domain::ConnectNotification, FormatError>,
    b: &Result<crate::domain::ConnectNotification, FormatError>,
) {
    fn without_position(text: String) -> String {
        match (text.find(" at line "), text.find(": ")) {
            (Some(at), Some(colon)) if at < colon => format!("{}{}", &text[..at], &text[colon..]),
            _ => text,
        }
    }
    let (a, b) = (without_position(format!("{a:?}")), without_position(format!("{b:?}")));
    assert_eq!(a, b, "the streaming and in-memory parsers disagree");
}
