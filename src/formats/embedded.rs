//! Base64 `PDFBytes` decoded piecewise into a [`DocumentSink`], so memory
//! stays at two small buffers whatever the document's size.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;

use super::{FormatError, invalid};
use crate::domain::{DocumentKind, DocumentSink, EmbeddedDocument};

/// Base64 characters decoded per call; a multiple of 4 so every full stage
/// is whole quads and only the last one may carry padding.
const STAGE: usize = 16 * 1024;

/// The largest single [`DocumentSink::write`] the parsers make.
pub const MAX_SINK_WRITE: usize = STAGE / 4 * 3;

/// What the sink is told at `begin`: the best knowledge at the moment the
/// bytes start, which for XML may be corrected once the rest of the
/// `DocumentPDF` element has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Begin {
    pub document_id: Option<String>,
    pub name: String,
    pub kind: DocumentKind,
}

pub(crate) struct EmbeddedWriter<'a> {
    sink: &'a mut dyn DocumentSink,
    begin: Begin,
    /// Error messages name this field.
    field: &'static str,
    began: bool,
    staged: Vec<u8>,
    decoded: Vec<u8>,
    /// Base64 characters seen so far, for error positions.
    chars: u64,
    padding: u8,
}

impl<'a> EmbeddedWriter<'a> {
    pub(crate) fn new(sink: &'a mut dyn DocumentSink, begin: Begin, field: &'static str) -> Self {
        Self {
            sink,
            begin,
            field,
            began: false,
            staged: Vec::with_capacity(STAGE),
            decoded: vec![0; MAX_SINK_WRITE],
            chars: 0,
            padding: 0,
        }
    }

    /// Takes the next piece of base64 text; line breaks and blanks anywhere
    /// in it are skipped (DocuSign's XML may wrap at 76 columns).
    pub(crate) fn feed(&mut self, text: &[u8]) -> Result<(), FormatError> {
        for &byte in text {
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' => continue,
                b'=' => {
                    self.padding += 1;
                    if self.padding > 2 {
                        return Err(self.bad("more than two padding characters"));
                    }
                }
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => {
                    if self.padding > 0 {
                        return Err(self.bad("data after the padding"));
                    }
                }
                other => {
                    let shown = if other.is_ascii_graphic() {
                        format!("{:?}", other as char)
                    } else {
                        format!("0x{other:02x}")
                    };
                    return Err(self.bad(format!("unexpected character {shown}")));
                }
            }
            self.staged.push(byte);
            self.chars += 1;
            if self.staged.len() == STAGE {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Decodes what is left. `None` when the text held no data at all, so an
    /// empty `PDFBytes` leaves no empty document behind.
    pub(crate) fn finish(mut self) -> Result<Option<EmbeddedDocument>, FormatError> {
        self.flush()?;
        if !self.began {
            return Ok(None);
        }
        let mut document = self.sink.finish().map_err(FormatError::Sink)?;
        // The notification reports what the parser knows, whatever the sink
        // echoes back; the sink contributes size, hash and storage key.
        let Begin { document_id, name, kind } = self.begin;
        if let Some(document_id) = document_id {
            document.document_id = document_id;
        }
        document.name = name;
        document.kind = kind;
        Ok(Some(document))
    }

    fn flush(&mut self) -> Result<(), FormatError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let length = STANDARD_PAD_INDIFFERENT
            .decode_slice(&self.staged, &mut self.decoded)
            .map_err(|e| self.bad(format!("not valid base64 ({e})")))?;
        self.staged.clear();
        if length == 0 {
            return Ok(());
        }
        if !self.began {
            let Begin { document_id, name, kind } = &self.begin;
            self.sink.begin(document_id.as_deref(), name, *kind).map_err(FormatError::Sink)?;
            self.began = true;
        }
        self.sink.write(&self.decoded[..length]).map_err(FormatError::Sink)
    }

    fn bad(&self, what: impl std::fmt::Display) -> FormatError {
        invalid(self.field, format!("{what} near base64 character {}", self.chars))
    }
}
