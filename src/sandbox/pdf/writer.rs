//! A small PDF 1.7 writer: just enough of ISO 32000-1 for text pages in the
//! standard Helvetica fonts plus one raw image per document. Objects are
//! written straight into one buffer; the cross-reference table records where
//! each one starts.

use std::io::Write as _;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// US Letter in points, DocuSign's default page size for US accounts.
pub(super) const PAGE_WIDTH: u32 = 612;
pub(super) const PAGE_HEIGHT: u32 = 792;

/// The two standard 14 fonts every page may use. Standard fonts need no
/// embedding, which keeps a one-page document at a few kilobytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Font {
    Regular,
    Bold,
}

impl Font {
    fn resource(self) -> &'static str {
        match self {
            Font::Regular => "F1",
            Font::Bold => "F2",
        }
    }
}

/// One page's content stream.
#[derive(Debug, Default, Clone)]
pub(super) struct Content {
    bytes: Vec<u8>,
}

impl Content {
    /// Shows `text` with its baseline starting at (`x`, `y`).
    pub(super) fn text(&mut self, x: u32, y: u32, font: Font, size: u32, text: &str) {
        // One BT/ET pair per line: text extractors end a line at ET, so
        // every line comes out whole and on its own.
        put(&mut self.bytes, format_args!("BT /{} {size} Tf {x} {y} Td ", font.resource()));
        literal(&mut self.bytes, text);
        self.bytes.extend_from_slice(b" Tj ET\n");
    }

    /// A thin horizontal rule, as DocuSign draws under section headings.
    pub(super) fn rule(&mut self, x1: u32, x2: u32, y: u32) {
        put(&mut self.bytes, format_args!("0.5 w {x1} {y} m {x2} {y} l S\n"));
    }
}

/// A raw 8-bit grayscale image that stands in for the scans that make real
/// signed documents large. It is listed in the page's resources but never
/// painted, so it costs viewers nothing to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scan {
    width: u32,
    height: u32,
    seed: u64,
}

impl Scan {
    /// Scanners deliver rows of at most this many pixels (8.5 in at 300 dpi).
    const MAX_WIDTH: usize = 2550;

    /// The image closest to `bytes` of pixel data without exceeding it, or
    /// None when there is no room for a single pixel.
    pub(super) fn of_about(bytes: usize, seed: u64) -> Option<Scan> {
        if bytes == 0 {
            return None;
        }
        // Rows as wide as possible, then the width trimmed so that
        // width × height ≤ bytes: the shortfall is under one row count.
        let height = bytes.div_ceil(Self::MAX_WIDTH);
        let width = bytes / height;
        Some(Scan { width: u32::try_from(width).ok()?, height: u32::try_from(height).ok()?, seed })
    }

    fn len(self) -> usize {
        (self.width as usize).saturating_mul(self.height as usize)
    }

    /// Appends the pixels: pseudo-random noise, because real scans arrive
    /// already compressed, and noise keeps the file as incompressible as they are.
    fn write_pixels(self, out: &mut Vec<u8>) {
        let len = self.len();
        out.reserve(len);
        // xorshift64 must not start at zero.
        let mut state = self.seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        };
        let mut chunk = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            for word in chunk.chunks_exact_mut(8) {
                word.copy_from_slice(&next());
            }
            let take = left.min(chunk.len());
            out.extend_from_slice(&chunk[..take]);
            left -= take;
        }
    }
}

/// A page to write: its content and, for a document's first page, its scan.
#[derive(Debug, Clone)]
pub(super) struct Page {
    pub(super) content: Content,
    pub(super) scan: Option<Scan>,
}

/// The document information dictionary and the seed of the file identifier.
#[derive(Debug, Clone, Copy)]
pub(super) struct Info<'a> {
    pub(super) title: &'a str,
    pub(super) subject: &'a str,
    pub(super) author: &'a str,
    /// Stands in for "now", so that the same envelope always gives the same bytes.
    pub(super) created: DateTime<Utc>,
    /// Hashed into the trailer's /ID; distinct per file kind and envelope.
    pub(super) id_seed: &'a str,
}

/// The whole file: catalog, page tree, information dictionary, the two
/// fonts, and for each page its dictionary, content stream and scan.
pub(super) fn write(pages: &[Page], info: &Info<'_>) -> Vec<u8> {
    let payload: usize = pages
        .iter()
        .map(|p| p.content.bytes.len().saturating_add(p.scan.map_or(0, Scan::len)))
        .fold(0, usize::saturating_add);
    // Dictionaries, object headers and xref entries take well under 400 bytes a page.
    let capacity = payload.saturating_add(pages.len().saturating_mul(400)).saturating_add(2048);
    let mut file = File::new(capacity);

    let catalog = file.reserve();
    let tree = file.reserve();
    let info_id = file.reserve();
    let regular = file.reserve();
    let bold = file.reserve();
    let ids: Vec<PageIds> = pages
        .iter()
        .map(|page| PageIds { page: file.reserve(), content: file.reserve(), scan: page.scan.map(|_| file.reserve()) })
        .collect();

    file.object(catalog, format_args!("<< /Type /Catalog /Pages {tree} >>"));
    let mut kids = Vec::with_capacity(ids.len().saturating_mul(12));
    for id in &ids {
        put(&mut kids, format_args!(" {}", id.page));
    }
    file.object(
        tree,
        format_args!("<< /Type /Pages /Kids [{}] /Count {} >>", String::from_utf8_lossy(&kids), ids.len()),
    );
    file.info(info_id, info);
    for (id, name) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        file.object(id, format_args!("<< /Type /Font /Subtype /Type1 /BaseFont /{name} /Encoding /WinAnsiEncoding >>"));
    }

    for (page, id) in pages.iter().zip(&ids) {
        let scan = match id.scan {
            Some(scan) => format!(" /XObject << /Im0 {scan} >>"),
            None => String::new(),
        };
        file.object(
            id.page,
            format_args!(
                "<< /Type /Page /Parent {tree} /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
                 /Resources << /Font << /F1 {regular} /F2 {bold} >>{scan} >> /Contents {} >>",
                id.content
            ),
        );
        file.stream(id.content, "", &page.content.bytes);
        if let (Some(scan_id), Some(scan)) = (id.scan, page.scan) {
            file.scan(scan_id, scan);
        }
    }
    file.finish(catalog, info_id, &file_id(info.id_seed))
}

/// Object numbers given to one page.
#[derive(Debug)]
struct PageIds {
    page: Ref,
    content: Ref,
    scan: Option<Ref>,
}

/// An indirect object number; prints as a reference (`7 0 R`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ref(usize);

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} 0 R", self.0)
    }
}

/// The file being written and where each object starts in it.
#[derive(Debug)]
struct File {
    buf: Vec<u8>,
    /// Offset of object n at index n - 1; None until it is written.
    offsets: Vec<Option<usize>>,
}

impl File {
    fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        // The comment of four bytes above 127 tells transfer tools the file is binary.
        buf.extend_from_slice(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
        Self { buf, offsets: Vec::new() }
    }

    fn reserve(&mut self) -> Ref {
        self.offsets.push(None);
        Ref(self.offsets.len())
    }

    /// Records that object `id` starts here and writes its header.
    fn begin(&mut self, id: Ref) {
        if let Some(slot) = id.0.checked_sub(1).and_then(|i| self.offsets.get_mut(i)) {
            *slot = Some(self.buf.len());
        }
        put(&mut self.buf, format_args!("{} 0 obj\n", id.0));
    }

    fn object(&mut self, id: Ref, body: std::fmt::Arguments<'_>) {
        self.begin(id);
        put(&mut self.buf, body);
        self.buf.extend_from_slice(b"\nendobj\n");
    }

    fn stream(&mut self, id: Ref, dictionary: &str, data: &[u8]) {
        self.begin(id);
        put(&mut self.buf, format_args!("<<{dictionary} /Length {} >>\nstream\n", data.len()));
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\nendstream\nendobj\n");
    }

    /// Like [`File::stream`], but the pixels go straight into the file, so a
    /// 25 MB scan is never held twice.
    fn scan(&mut self, id: Ref, scan: Scan) {
        self.begin(id);
        put(
            &mut self.buf,
            format_args!(
                "<< /Type /XObject /Subtype /Image /Width {} /Height {} /ColorSpace /DeviceGray \
                 /BitsPerComponent 8 /Length {} >>\nstream\n",
                scan.width,
                scan.height,
                scan.len()
            ),
        );
        scan.write_pixels(&mut self.buf);
        self.buf.extend_from_slice(b"\nendstream\nendobj\n");
    }

    fn info(&mut self, id: Ref, info: &Info<'_>) {
        self.begin(id);
        let date = info.created.format("D:%Y%m%d%H%M%SZ").to_string();
        let entries = [
            ("Title", info.title),
            ("Subject", info.subject),
            ("Author", info.author),
            ("Creator", "countersign sandbox"),
            ("Producer", "countersign sandbox"),
            ("CreationDate", date.as_str()),
            ("ModDate", date.as_str()),
        ];
        self.buf.extend_from_slice(b"<<");
        for (key, value) in entries {
            put(&mut self.buf, format_args!(" /{key} "));
            text_string(&mut self.buf, value);
        }
        self.buf.extend_from_slice(b" >>\nendobj\n");
    }

    fn finish(mut self, root: Ref, info: Ref, id: &str) -> Vec<u8> {
        // Every reserved number is written above; should one ever be
        // missed, a null object keeps the cross-reference table truthful.
        for n in 1..=self.offsets.len() {
            if self.offsets.get(n - 1).is_some_and(Option::is_none) {
                self.object(Ref(n), format_args!("null"));
            }
        }
        let xref = self.buf.len();
        let size = self.offsets.len() + 1;
        put(&mut self.buf, format_args!("xref\n0 {size}\n0000000000 65535 f \n"));
        for offset in &self.offsets {
            // Each entry is exactly 20 bytes: 10-digit offset, generation, type, two-byte end of line.
            put(&mut self.buf, format_args!("{:010} 00000 n \n", offset.unwrap_or(0)));
        }
        put(
            &mut self.buf,
            format_args!(
                "trailer\n<< /Size {size} /Root {root} /Info {info} /ID [<{id}> <{id}>] >>\nstartxref\n{xref}\n%%EOF\n"
            ),
        );
        self.buf
    }
}

/// The trailer's file identifier: derived from the content's identity rather
/// than the clock, so it is stable across downloads of the same document.
fn file_id(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    hex::encode(digest.get(..16).unwrap_or_default())
}

/// Appends formatted text to a byte buffer.
fn put(buf: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    // Writing into a Vec cannot fail, and the values formatted here (numbers
    // and strings) have infallible Display impls, so there is no error to pass on.
    let _ = buf.write_fmt(args);
}

/// `text` as a PDF literal string in WinAnsiEncoding, the encoding the
/// page fonts declare.
fn literal(out: &mut Vec<u8>, text: &str) {
    out.push(b'(');
    for c in text.chars() {
        let byte = win_ansi(c);
        if matches!(byte, b'(' | b')' | b'\\') {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out.push(b')');
}

/// A text string for the information dictionary. Those are not drawn with
/// the page fonts, so anything beyond ASCII goes in full as UTF-16BE with a
/// byte order mark, which every reader accepts.
fn text_string(out: &mut Vec<u8>, text: &str) {
    if text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        literal(out, text);
        return;
    }
    out.extend_from_slice(b"<FEFF");
    for unit in text.encode_utf16() {
        put(out, format_args!("{unit:04X}"));
    }
    out.push(b'>');
}

/// The WinAnsiEncoding byte that shows `c`, or '?' for characters the
/// standard fonts cannot show (and for control characters, which would
/// otherwise end or garble the line).
fn win_ansi(c: char) -> u8 {
    match c {
        ' '..='~' | '\u{A0}'..='\u{FF}' => u8::try_from(c).unwrap_or(b'?'),
        // WinAnsi puts typographic characters where Latin-1 has C1 controls.
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => 0x85,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8A,
        '‹' => 0x8B,
        'Œ' => 0x8C,
        'Ž' => 0x8E,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9A,
        '›' => 0x9B,
        'œ' => 0x9C,
        'ž' => 0x9E,
        'Ÿ' => 0x9F,
        _ => b'?',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_delimiters_and_replace_what_win_ansi_cannot_show() {
        let mut out = Vec::new();
        literal(&mut out, "a(b)c\\d é € 日\n");
        assert_eq!(out, b"(a\\(b\\)c\\\\d \xE9 \x80 ??)");
    }

    #[test]
    fn info_strings_beyond_ascii_are_utf16_with_a_byte_order_mark() {
        let mut out = Vec::new();
        text_string(&mut out, "Zoë");
        assert_eq!(out, b"<FEFF005A006F00EB>");
        out.clear();
        text_string(&mut out, "Offer (1)");
        assert_eq!(out, b"(Offer \\(1\\))");
    }

    #[test]
    fn a_scan_never_exceeds_the_bytes_it_is_given_and_comes_close() {
        assert_eq!(Scan::of_about(0, 1), None);
        for bytes in [1, 7, 2549, 2550, 2551, 20_000, 1_000_003, 25_000_000] {
            let scan = Scan::of_about(bytes, 1).unwrap();
            assert!(scan.len() <= bytes && bytes - scan.len() < bytes / 1000 + 1, "{bytes} → {scan:?}");
            let mut pixels = Vec::new();
            scan.write_pixels(&mut pixels);
            assert_eq!(pixels.len(), scan.len());
        }
    }
}
