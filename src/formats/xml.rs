//! Legacy Connect XML (`DocuSignEnvelopeInformation`), read as a stream of
//! events. Hostile input is refused early: any DOCTYPE (so no entity can
//! ever be defined, let alone expanded), undefined entity references,
//! nesting beyond [`MAX_XML_DEPTH`]. `PDFBytes` text bypasses quick-xml and
//! is read straight from the underlying reader in buffer-sized pieces, so a
//! document of any size passes through a fixed amount of memory.

use std::io::BufRead;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;

use super::embedded::EmbeddedWriter;
use super::xml_envelope::Envelope;
use super::xml_paths::{Slot, Tag, is_pdf_bytes, slot_for};
use super::{FormatError, clip, clip_message};
use crate::domain::{ConnectNotification, DocumentSink};
use std::collections::BTreeMap;

use crate::ids::AccountId;

/// How deep elements may nest. DocuSign's deepest path
/// (`…/RecipientStatus/FormData/xfdf/fields/field/value`) is 9 levels.
pub const MAX_XML_DEPTH: usize = 32;

const DOCUSIGN_NAMESPACE: &str = "http://www.docusign.net/API/3.0";
const ROOT: &str = "DocuSignEnvelopeInformation";
const PDF_FIELD: &str = "DocumentPDF/PDFBytes";

/// What says which account a legacy XML message is for when its body names
/// no account GUID.
#[derive(Debug, Clone, Default)]
pub struct AccountHints {
    /// The `X-DocuSign-AccountId` header.
    pub header: Option<AccountId>,
    /// DocuSign account numbers (what the body's `AccountId` field holds)
    /// and their GUIDs: `account_number` in `[[connect.accounts]]`.
    pub by_number: BTreeMap<String, AccountId>,
    /// The account, when the configuration names exactly one.
    pub only: Option<AccountId>,
}

impl From<Option<AccountId>> for AccountHints {
    fn from(header: Option<AccountId>) -> Self {
        Self { header, ..Self::default() }
    }
}

/// Parses one legacy XML message; `hints` say its account when the body
/// names no account GUID.
pub fn parse_xml(
    reader: impl BufRead,
    hints: &AccountHints,
    sink: &mut dyn DocumentSink,
) -> Result<ConnectNotification, FormatError> {
    let mut xml = NsReader::from_reader(reader);
    let mut walk = Walk::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let (namespace, event) = match xml.read_resolved_event_into(&mut buf) {
            Ok(read) => read,
            Err(e) => return Err(xml_error(&e, xml.error_position() + walk.raw_bytes)),
        };
        match event {
            Event::Start(start) => {
                let tag = walk.tag(&namespace, start.local_name().as_ref())?;
                walk.open(tag)?;
                if is_pdf_bytes(&walk.path) {
                    stream_pdf_bytes(&mut xml, &mut walk, &mut *sink)?;
                }
            }
            Event::Empty(start) => {
                let tag = walk.tag(&namespace, start.local_name().as_ref())?;
                walk.open(tag)?;
                walk.close()?;
            }
            Event::End(_) => walk.close()?,
            Event::Text(text) => walk.text(&text.xml10_content())?,
            Event::CData(data) => walk.text(&data.xml10_content())?,
            Event::GeneralRef(reference) => walk.reference(&reference)?,
            Event::DocType(_) => return Err(FormatError::DocTypeRefused),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !walk.path.is_empty() {
        return Err(FormatError::Malformed("truncated XML: the document ends inside an element".into()));
    }
    if !walk.root_closed {
        return Err(FormatError::Malformed("malformed XML: no root element".into()));
    }
    walk.envelope.build(hints)
}

fn xml_error(error: &quick_xml::Error, position: u64) -> FormatError {
    match error {
        quick_xml::Error::Io(e) => FormatError::Read(std::io::Error::new(e.kind(), clip_message(&e.to_string()))),
        other => {
            FormatError::Malformed(format!("malformed XML at byte {position}: {}", clip_message(&other.to_string())))
        }
    }
}

/// Where the reader is in the document and what it has collected.
#[derive(Debug, Default)]
struct Walk {
    path: Vec<Tag>,
    /// The root used DocuSign's namespace (rather than none); its children
    /// must use the same to count.
    root_bound: bool,
    root_closed: bool,
    /// The element whose text is being collected, with its depth: text of
    /// elements nested inside it is not part of its value.
    capture: Option<(Slot, usize)>,
    text: String,
    /// Bytes consumed behind quick-xml's back (PDFBytes), so error
    /// positions still point at the right byte.
    raw_bytes: u64,
    envelope: Envelope,
}

impl Walk {
    fn tag(&mut self, namespace: &ResolveResult, local_name: &str) -> Result<Tag, FormatError> {
        if self.path.is_empty() {
            if self.root_closed {
                return Err(FormatError::Malformed("malformed XML: more than one root element".into()));
            }
            // A root without any namespace is taken too: some relays strip it.
            let namespace_ok = match namespace {
                ResolveResult::Unbound => true,
                ResolveResult::Bound(Namespace(ns)) => *ns == DOCUSIGN_NAMESPACE,
                ResolveResult::Unknown(_) => false,
            };
            if local_name != ROOT || !namespace_ok {
                let mut found = clip(local_name);
                if let ResolveResult::Bound(Namespace(ns)) = namespace
                    && *ns != DOCUSIGN_NAMESPACE
                {
                    found = format!("{found} in namespace {}", clip(ns));
                }
                return Err(FormatError::UnexpectedRoot { found });
            }
            self.root_bound = matches!(namespace, ResolveResult::Bound(_));
            return Ok(Tag::Root);
        }
        let same_namespace = match namespace {
            ResolveResult::Unbound => !self.root_bound,
            ResolveResult::Bound(Namespace(ns)) => self.root_bound && *ns == DOCUSIGN_NAMESPACE,
            ResolveResult::Unknown(_) => false,
        };
        Ok(if same_namespace { Tag::from_local_name(local_name) } else { Tag::Other })
    }

    fn open(&mut self, tag: Tag) -> Result<(), FormatError> {
        if self.path.len() >= MAX_XML_DEPTH {
            return Err(FormatError::TooDeep);
        }
        self.path.push(tag);
        self.envelope.open(&self.path);
        if let Some(slot) = slot_for(&self.path) {
            self.capture = Some((slot, self.path.len()));
            self.text.clear();
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), FormatError> {
        let depth = self.path.len();
        if let Some((slot, at)) = self.capture
            && at == depth
        {
            self.capture = None;
            self.envelope.set(slot, std::mem::take(&mut self.text))?;
        }
        self.envelope.close(&self.path);
        if self.path.pop().is_none() {
            return Err(FormatError::Malformed("malformed XML: unexpected closing tag".into()));
        }
        if self.path.is_empty() {
            self.root_closed = true;
        }
        Ok(())
    }

    fn capturing(&self) -> bool {
        self.capture.is_some_and(|(_, at)| at == self.path.len())
    }

    fn text(&mut self, text: &str) -> Result<(), FormatError> {
        if self.path.is_empty() {
            if text.trim().is_empty() {
                return Ok(());
            }
            return Err(FormatError::Malformed("malformed XML: text outside the root element".into()));
        }
        if self.capturing() {
            self.text.push_str(text);
        }
        Ok(())
    }

    /// Only character references and XML's five predefined entities exist
    /// here; anything else (`&xxe;`) would need a DTD, which is refused, so
    /// it is an error rather than silently empty text.
    fn reference(&mut self, reference: &BytesRef) -> Result<(), FormatError> {
        let name: &str = reference;
        let resolved = if reference.is_char_ref() {
            match reference.resolve_char_ref() {
                Ok(Some(c)) => c.to_string(),
                _ => {
                    return Err(FormatError::Malformed(format!(
                        "malformed XML: bad character reference {}",
                        clip(name)
                    )));
                }
            }
        } else if let Some(text) = resolve_predefined_entity(name) {
            text.to_owned()
        } else {
            return Err(FormatError::Malformed(format!("malformed XML: undefined entity {}", clip(name))));
        };
        self.text(&resolved)
    }
}

/// Decodes the text of the `PDFBytes` element just opened into the sink,
/// reading it from under quick-xml up to each `<`, and consumes the
/// element's end tag.
fn stream_pdf_bytes<R: BufRead>(
    xml: &mut NsReader<R>,
    walk: &mut Walk,
    sink: &mut dyn DocumentSink,
) -> Result<(), FormatError> {
    let Some(begin) = walk.envelope.provisional_begin() else {
        return Err(FormatError::Malformed("malformed XML: a DocumentPDF with more than one PDFBytes".into()));
    };
    let mut writer = EmbeddedWriter::new(sink, begin, PDF_FIELD);
    let mut buf = Vec::new();
    loop {
        let source = xml.get_mut();
        loop {
            let chunk = source.fill_buf().map_err(FormatError::Read)?;
            if chunk.is_empty() {
                return Err(FormatError::Malformed("truncated XML: the document ends inside PDFBytes".into()));
            }
            let markup = chunk.iter().position(|&b| b == b'<');
            let length = markup.unwrap_or(chunk.len());
            writer.feed(&chunk[..length])?;
            source.consume(length);
            walk.raw_bytes += length as u64;
            if markup.is_some() {
                break;
            }
        }
        buf.clear();
        match xml.read_event_into(&mut buf) {
            Ok(Event::End(_)) => break,
            Ok(Event::Comment(_)) => {}
            // Never sent by DocuSign, but legal; quick-xml holds the section.
            Ok(Event::CData(data)) => writer.feed(data.xml10_content().as_bytes())?,
            Ok(Event::DocType(_)) => return Err(FormatError::DocTypeRefused),
            Ok(Event::Eof) => {
                return Err(FormatError::Malformed("truncated XML: the document ends inside PDFBytes".into()));
            }
            Ok(_) => return Err(FormatError::Malformed("malformed XML: markup inside PDFBytes".into())),
            Err(e) => return Err(xml_error(&e, xml.error_position() + walk.raw_bytes)),
        }
    }
    walk.envelope.pdf_written(writer.finish()?);
    walk.close()
}
