//! What the parser fuzz targets share: the leading control byte, a reader
//! that hands the body over in pieces, and a document sink that holds the
//! parsers to the `DocumentSink` contract.

use std::io::Read;

use countersign::formats::MAX_SINK_WRITE;
use countersign::domain::{DocumentKind, DocumentSink, EmbeddedDocument};

/// How a parser target reads one input: the first byte steers the harness,
/// the rest is the body. Keeping the steering in one byte lets libFuzzer
/// pair any body with any read size or a failing sink.
#[derive(Debug, Clone, Copy)]
pub struct Control(u8);

impl Control {
    pub fn split(data: &[u8]) -> Option<(Self, &[u8])> {
        let (&first, body) = data.split_first()?;
        Some((Self(first), body))
    }

    /// Bytes per read (bits 0-4): 0 reads everything at once, 1-31 cut the
    /// body into that many bytes per read. Real bodies arrive in 64 KiB
    /// reads, so any UTF-8 sequence, token or base64 quad can straddle two.
    pub fn read_size(self) -> Option<usize> {
        match usize::from(self.0 & 0x1f) {
            0 => None,
            n => Some(n),
        }
    }

    /// Bit 5: the target's own use (the XML target's account hint).
    pub fn flag(self) -> bool {
        self.0 & 0x20 != 0
    }

    /// Bits 6-7 both set: the sink refuses the first write, as a full disk
    /// would. One input in four, so the success paths keep most of the time.
    pub fn sink_fails(self) -> bool {
        self.0 & 0xc0 == 0xc0
    }
}

/// Reads at most `size` bytes per call, like a socket or a file read in
/// small buffers would.
#[derive(Debug)]
pub struct Pieces<'a> {
    rest: &'a [u8],
    size: usize,
}

impl<'a> Pieces<'a> {
    pub fn new(body: &'a [u8], size: Option<usize>) -> Self {
        Self { rest: body, size: size.unwrap_or(usize::MAX) }
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rest.len().min(buf.len()).min(self.size);
        let (head, tail) = self.rest.split_at(n);
        buf[..n].copy_from_slice(head);
        self.rest = tail;
        Ok(n)
    }
}

/// Keeps this many bytes of each document: enough to look at in a crash
/// report, and the memory a 64 KiB input can cost stays flat.
const KEPT_BYTES: usize = 256;

#[derive(Debug)]
struct Open {
    document_id: Option<String>,
    name: String,
    kind: DocumentKind,
    size: u64,
    head: Vec<u8>,
}

/// An in-memory sink that panics (a fuzz finding) when a parser breaks the
/// contract the real sinks rely on: `begin`, then writes of at most
/// `MAX_SINK_WRITE` bytes, then `finish`, one document at a time.
#[derive(Debug)]
pub struct CheckingSink {
    open: Option<Open>,
    fail_writes: bool,
    finished: usize,
}

impl CheckingSink {
    pub fn new(fail_writes: bool) -> Self {
        Self { open: None, fail_writes, finished: 0 }
    }

    /// After a successful parse: nothing left open, and the notification
    /// lists every document the sink stored, no more and no fewer (a stored
    /// but unlisted document would never be published or cleaned up).
    pub fn check_complete(&self, embedded: &[EmbeddedDocument]) {
        assert!(self.open.is_none(), "parse succeeded with a document still open");
        assert_eq!(embedded.len(), self.finished, "embedded documents listed vs. finished in the sink");
    }
}

impl DocumentSink for CheckingSink {
    fn begin(&mut self, document_id: Option<&str>, name: &str, kind: DocumentKind) -> std::io::Result<()> {
        assert!(self.open.is_none(), "begin while a document is open");
        self.open = Some(Open {
            document_id: document_id.map(str::to_owned),
            name: name.to_owned(),
            kind,
            size: 0,
            head: Vec::new(),
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        assert!(bytes.len() <= MAX_SINK_WRITE, "a write of {} bytes, above MAX_SINK_WRITE", bytes.len());
        let Some(open) = self.open.as_mut() else { panic!("write before begin") };
        if self.fail_writes {
            return Err(std::io::Error::other("the fuzz sink refuses writes"));
        }
        open.size += bytes.len() as u64;
        let room = KEPT_BYTES.saturating_sub(open.head.len());
        open.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<EmbeddedDocument> {
        let Some(open) = self.open.take() else { panic!("finish before begin") };
        self.finished += 1;
        Ok(EmbeddedDocument {
            document_id: open.document_id.unwrap_or_default(),
            name: open.name,
            kind: open.kind,
            size_bytes: open.size,
            sha256: String::new(),
            storage_key: format!("fuzz/{}", self.finished),
        })
    }
}
