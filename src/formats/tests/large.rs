//! A 30 MB document streams through the XML parser in small writes. The
//! body is generated on the fly, so the test itself never holds it either.

use std::io::{BufReader, Read};

use super::*;

const DOCUMENT_BYTES: usize = 30 * 1024 * 1024;
/// Raw bytes per generated block; a multiple of 3 and of 57 so blocks encode
/// to whole 76-column lines without padding.
const BLOCK: usize = 57 * 3 * 64;

/// The document's bytes, block by block, from a fixed seed.
struct Blocks {
    state: u64,
    left: usize,
}

impl Blocks {
    fn new(len: usize) -> Self {
        Self { state: 0x2545_f491_4f6c_dd1d, left: len }
    }
}

impl Iterator for Blocks {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        let len = self.left.min(BLOCK);
        self.left -= len;
        let mut block = Vec::with_capacity(len + 8);
        while block.len() < len {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            block.extend_from_slice(&self.state.to_le_bytes());
        }
        block.truncate(len);
        Some(block)
    }
}

/// head, then the document as wrapped base64, then tail.
struct Body {
    head: std::io::Cursor<Vec<u8>>,
    blocks: Blocks,
    pending: std::io::Cursor<Vec<u8>>,
    tail: std::io::Cursor<Vec<u8>>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        loop {
            let n = self.pending.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match self.blocks.next() {
                Some(block) => self.pending = std::io::Cursor::new(base64_wrapped(&block).into_bytes()),
                None => return self.tail.read(buf),
            }
        }
    }
}

#[test]
fn thirty_megabytes_of_pdf_bytes_stream_with_bounded_writes() {
    let message = super::xml::with_document_pdfs(&["<DocumentPDF><Name>Offer letter</Name><PDFBytes>SPLIT</PDFBytes>\
         <DocumentID>1</DocumentID><DocumentType>CONTENT</DocumentType></DocumentPDF>"
        .to_owned()]);
    let (head, tail) = message.split_once("SPLIT").unwrap();
    let body = Body {
        head: std::io::Cursor::new(head.as_bytes().to_vec()),
        blocks: Blocks::new(DOCUMENT_BYTES),
        pending: std::io::Cursor::new(Vec::new()),
        tail: std::io::Cursor::new(tail.as_bytes().to_vec()),
    };
    let mut sink = MemorySink::discarding();
    let n = parse_xml(BufReader::with_capacity(8 * 1024, body), &Some(account()).into(), &mut sink).unwrap();

    let mut expected = Sha256::new();
    Blocks::new(DOCUMENT_BYTES).for_each(|block| expected.update(&block));
    let expected = hex::encode(expected.finalize());

    assert_eq!(n.embedded.len(), 1);
    assert_eq!(n.embedded[0].size_bytes, DOCUMENT_BYTES as u64);
    assert_eq!(n.embedded[0].sha256, expected);
    assert_eq!(n.embedded[0].document_id, "1");
    assert!(sink.largest_write <= 64 * 1024, "largest write {} bytes", sink.largest_write);
    assert!(sink.largest_write <= MAX_SINK_WRITE);
    assert_eq!(n.envelope.recipients.len(), 2, "the XML after the document is still read");
}
