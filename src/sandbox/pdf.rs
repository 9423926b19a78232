//! Real, valid PDFs for the sandbox's documents: each envelope document, the
//! certificate of completion (listing the signers), the combined PDF and the
//! archive (a zip). Deterministic: the same envelope gives the same bytes, so
//! a test can compare what countersign stored with what the sandbox served.

mod writer;

use std::collections::HashSet;
use std::io::{Cursor, Write as _};

use chrono::{DateTime, Datelike, Timelike, Utc};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use self::writer::{Content, Font, Info, PAGE_WIDTH, Page, Scan};
use super::envelopes::{Document, Envelope, Signer};

/// A bound on generated pages, so that a bad page count cannot exhaust memory.
const MAX_PAGES: u32 = 2_000;
/// A bound on padding, ten times DocuSign's 25 MB limit per document, so that
/// a mistyped size in the sandbox configuration cannot ask for terabytes.
const MAX_TARGET_BYTES: usize = 256 * 1024 * 1024;

const LEFT: u32 = 72;
const TEXT_WIDTH: u32 = PAGE_WIDTH - 2 * LEFT;
const TOP: u32 = 730;
const BOTTOM: u32 = 60;
const FOOTER: u32 = 36;

/// One envelope document, padded to about `document.target_bytes`.
pub fn document_pdf(envelope: &Envelope, document: &Document) -> Vec<u8> {
    let id_seed = document_id_seed(envelope, document);
    writer::write(&document_pages(envelope, document), &document_info(envelope, document, &id_seed))
}

/// The certificate of completion: envelope id, subject, and every signer with
/// their email, role, IP address and signing time.
pub fn certificate_pdf(envelope: &Envelope) -> Vec<u8> {
    let id_seed = format!("certificate {}", envelope.envelope_id);
    writer::write(&certificate_pages(envelope), &certificate_info(envelope, &id_seed))
}

/// All documents in one PDF, with the certificate last when `certificate` is true.
pub fn combined_pdf(envelope: &Envelope, certificate: bool) -> Vec<u8> {
    let mut pages: Vec<Page> = envelope.documents.iter().flat_map(|d| document_pages(envelope, d)).collect();
    if certificate {
        pages.extend(certificate_pages(envelope));
    }
    let id_seed = format!("combined {} {certificate}", envelope.envelope_id);
    let info = Info {
        title: &envelope.subject,
        subject: &envelope.subject,
        author: &envelope.sender.name,
        created: envelope.status_changed_at(),
        id_seed: &id_seed,
    };
    writer::write(&pages, &info)
}

/// A zip of every document PDF plus the certificate.
pub fn archive_zip(envelope: &Envelope) -> Vec<u8> {
    match write_archive(envelope) {
        Ok(bytes) => bytes,
        Err(error) => {
            // Only reachable if the zip crate rejects an entry; an empty body
            // is a broken download a test will notice, not a crashed sandbox.
            tracing::error!(%error, envelope_id = %envelope.envelope_id, "cannot build the envelope archive");
            Vec::new()
        }
    }
}

// ---------------------------------------------------------------------------
// Documents

fn document_id_seed(envelope: &Envelope, document: &Document) -> String {
    format!("document {} {}", envelope.envelope_id, document.document_id_guid)
}

fn document_info<'a>(envelope: &'a Envelope, document: &'a Document, id_seed: &'a str) -> Info<'a> {
    Info {
        title: &document.name,
        subject: &envelope.subject,
        author: &envelope.sender.name,
        created: envelope.status_changed_at(),
        id_seed,
    }
}

/// The pages of one document, the first carrying the scan that brings the
/// standalone file to its target size. The combined PDF reuses these pages,
/// so it weighs about the sum of its documents, as DocuSign's does.
fn document_pages(envelope: &Envelope, document: &Document) -> Vec<Page> {
    let count = document.pages.clamp(1, MAX_PAGES);
    let mut pages: Vec<Page> =
        (1..=count).map(|n| Page { content: document_page(envelope, document, n, count), scan: None }).collect();

    let (high, low) = document.document_id_guid.as_u64_pair();
    let seed = high ^ low;
    let id_seed = document_id_seed(envelope, document);
    let info = document_info(envelope, document, &id_seed);
    let Some(first) = pages.first_mut() else { return pages };
    // A file with a one-pixel scan already holds all of the scan's overhead,
    // so every further byte of target is one more pixel. The text pages are
    // small, so writing them once more to measure costs little.
    first.scan = Scan::of_about(1, seed);
    let with_one_pixel = writer::write(&pages, &info).len();
    let room = document.target_bytes.min(MAX_TARGET_BYTES).saturating_sub(with_one_pixel.saturating_sub(1));
    if let Some(first) = pages.first_mut() {
        first.scan = Scan::of_about(room, seed);
    }
    pages
}

/// Boilerplate that reads like an agreement; pages rotate through it.
const PARAGRAPHS: &[&str] = &[
    "This document sets out the terms agreed between the parties named in the envelope. Each party \
     confirms that it has read the document in full, that it had the opportunity to ask questions, and \
     that it signs of its own free will.",
    "The parties agree that electronic signatures applied through the signing service have the same \
     effect as handwritten signatures, and that the certificate of completion attached to the envelope \
     is evidence of who signed, when, and from which network address.",
    "Information exchanged under this document is confidential. Neither party will disclose it to a \
     third party without the other party's written consent, except where the law requires disclosure \
     or the information is already public through no fault of the receiving party.",
    "Equipment, accounts and access granted under this document remain the property of the company. \
     They are provided for business use, may be audited at any time, and must be returned or revoked \
     when the relationship described here ends.",
    "Either party may end this arrangement with written notice. Obligations that by their nature \
     survive termination, including confidentiality and the return of property, continue after it ends.",
    "This document is governed by the laws of the jurisdiction in which the company is registered. It \
     is the entire agreement on its subject and replaces any earlier discussions, drafts or promises.",
];

/// Signers named on a document's last page; the certificate lists them all.
const SIGNATURE_LINES: usize = 8;

fn document_page(envelope: &Envelope, document: &Document, number: u32, count: u32) -> Content {
    let mut sheet = Sheet::new();
    // DocuSign stamps every page of a signed document with the envelope id
    // ("envelope id stamping"), upper case, in the top left corner.
    sheet.content.text(36, 770, Font::Regular, 8, &format!("Docusign Envelope ID: {}", stamp_id(envelope)));

    let title = document.name.strip_suffix(".pdf").unwrap_or(&document.name);
    sheet.paragraph(LEFT, TEXT_WIDTH, Font::Bold, 18, title, 2);
    sheet.skip(4);
    let of = envelope.documents.len();
    let header = [
        format!("Document: {} (document {} of {of})", document.name, document.document_id),
        format!("Envelope: {}", envelope.envelope_id),
        format!("Subject: {}", envelope.subject),
        format!("Page {number} of {count}"),
    ];
    for line in &header {
        sheet.paragraph(LEFT, TEXT_WIDTH, Font::Regular, 10, line, 3);
    }
    sheet.rule();

    if number == 1 {
        let recipient = envelope.signers.first().map_or("the recipient", |s| s.person.name.as_str());
        let prepared = format!(
            "Prepared for {recipient} by {} <{}> on {}.",
            envelope.sender.name,
            envelope.sender.email,
            envelope.created_at.format("%B %-d, %Y")
        );
        sheet.paragraph(LEFT, TEXT_WIDTH, Font::Regular, 10, &prepared, 3);
        sheet.skip(6);
        let fields = envelope
            .signers
            .iter()
            .flat_map(|s| &s.tabs)
            .filter(|t| t.document_id == document.document_id && t.page == number);
        for tab in fields {
            let line = format!("{}: {}", field_label(&tab.label), tab.value);
            sheet.paragraph(LEFT + 18, TEXT_WIDTH - 18, Font::Regular, 10, &line, 2);
        }
        sheet.skip(6);
    }

    // The last page keeps room for the signature lines.
    let signatures = if number == count { 40 + 30 * envelope.signers.len().min(SIGNATURE_LINES) } else { 0 };
    let reserve = u32::try_from(signatures).unwrap_or(u32::MAX);
    let start = usize::try_from(number).unwrap_or(0);
    for i in 0..PARAGRAPHS.len() {
        let text = PARAGRAPHS[(start + i) % PARAGRAPHS.len()];
        let lines = u32::try_from(wrap(text, chars_in(TEXT_WIDTH, 10), usize::MAX).len()).unwrap_or(u32::MAX);
        if sheet.room() < lines.saturating_mul(leading(10)).saturating_add(8).saturating_add(reserve) {
            break;
        }
        sheet.paragraph(LEFT, TEXT_WIDTH, Font::Regular, 10, text, usize::MAX);
        sheet.skip(8);
    }

    if number == count {
        sheet.paragraph(LEFT, TEXT_WIDTH, Font::Bold, 11, "Signatures", 1);
        for (i, signer) in envelope.signers.iter().enumerate() {
            let signed = match (signer.signed_time(), signer.declined_time()) {
                (Some(at), _) => {
                    format!("{} ({}), signed electronically on {}", signer.person.name, signer.role_name, timestamp(at))
                }
                (None, Some(at)) => {
                    format!("{} ({}), declined to sign on {}", signer.person.name, signer.role_name, timestamp(at))
                }
                (None, None) => format!("{} ({}), awaiting signature", signer.person.name, signer.role_name),
            };
            let fits = if i < SIGNATURE_LINES {
                sheet.paragraph(LEFT, TEXT_WIDTH, Font::Regular, 10, &signed, 1)
                    && sheet.paragraph(LEFT + 18, TEXT_WIDTH - 18, Font::Regular, 9, &signer.person.email, 1)
            } else {
                false
            };
            if !fits {
                let rest = envelope.signers.len() - i;
                let more = format!("and {rest} more; see the Certificate of Completion.");
                sheet.paragraph(LEFT, TEXT_WIDTH, Font::Regular, 10, &more, 1);
                break;
            }
            sheet.skip(4);
        }
    }

    sheet.content.text(LEFT, FOOTER, Font::Regular, 8, &document.name);
    sheet.content.text(PAGE_WIDTH - LEFT - 60, FOOTER, Font::Regular, 8, &format!("Page {number} of {count}"));
    sheet.content
}

/// "job_title" → "Job title".
fn field_label(label: &str) -> String {
    let spaced = label.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

// ---------------------------------------------------------------------------
// Certificate of completion

fn certificate_info<'a>(envelope: &'a Envelope, id_seed: &'a str) -> Info<'a> {
    Info {
        title: "Certificate Of Completion",
        subject: &envelope.subject,
        author: &envelope.sender.name,
        created: envelope.status_changed_at(),
        id_seed,
    }
}

fn certificate_pages(envelope: &Envelope) -> Vec<Page> {
    // The first page prints the page count, which is only known after
    // layout; the count takes one line whatever its value, so a second
    // layout with the right count never changes the page breaks.
    let first = certificate_layout(envelope, 1);
    let sheets = if first.len() == 1 { first } else { certificate_layout(envelope, first.len()) };
    let total = sheets.len();
    sheets
        .into_iter()
        .enumerate()
        .map(|(i, sheet)| {
            let mut content = sheet.content;
            let footer = format!("Certificate Of Completion - Page {} of {total}", i + 1);
            content.text(LEFT, FOOTER, Font::Regular, 8, &footer);
            Page { content, scan: None }
        })
        .collect()
}

/// Where the certificate's three columns start and how wide they are.
const COLUMNS: [(u32, u32); 3] = [(LEFT, 210), (288, 130), (424, 156)];
const BODY: u32 = 8;

fn certificate_layout(envelope: &Envelope, certificate_pages: usize) -> Vec<Sheet> {
    let mut flow = Flow::new();
    flow.sheet.paragraph(LEFT, TEXT_WIDTH, Font::Bold, 16, "Certificate Of Completion", 1);
    flow.sheet.skip(6);

    let id = format!("Envelope Id: {}", certificate_id(envelope));
    let status = format!("Status: {}", envelope.state.legacy());
    flow.row([vec![(Font::Regular, id)], vec![], vec![(Font::Regular, status)]]);
    flow.full_width(&format!("Subject: {}", envelope.subject), 4);
    let document_pages = envelope.documents.iter().map(|d| d.pages.clamp(1, MAX_PAGES)).fold(0, u32::saturating_add);
    flow.row([
        plain([
            "Source Envelope:".into(),
            format!("Document Pages: {document_pages}"),
            format!("Certificate Pages: {certificate_pages}"),
            "AutoNav: Enabled".into(),
            "EnvelopeId Stamping: Enabled".into(),
            "Time Zone: (UTC) Coordinated Universal Time".into(),
        ]),
        plain([String::new(), format!("Signatures: {}", envelope.signers.len()), "Initials: 0".into()]),
        plain(["Envelope Originator:".into(), envelope.sender.name.clone(), envelope.sender.email.clone()]),
    ]);

    flow.heading(["Record Tracking", "", ""]);
    flow.row([
        plain(["Status: Original".into(), timestamp(envelope.created_at)]),
        plain([format!("Holder: {}", envelope.sender.name), envelope.sender.email.clone()]),
        plain(["Location: DocuSign".into()]),
    ]);

    flow.heading(["Signer Events", "Signature", "Timestamp"]);
    let mut signers: Vec<&Signer> = envelope.signers.iter().collect();
    signers.sort_by_key(|s| s.routing_order);
    for signer in signers {
        flow.row([
            vec![
                (Font::Bold, signer.person.name.clone()),
                (Font::Regular, signer.person.email.clone()),
                (Font::Regular, signer.role_name.clone()),
                (Font::Regular, "Security Level: Email, Account Authentication (None)".into()),
            ],
            plain([
                "Signature Adoption: Pre-selected Style".into(),
                format!("Using IP Address: {}", signer.ip_address),
            ]),
            signer_times(signer),
        ]);
    }

    flow.heading(["Carbon Copy Events", "Status", "Timestamp"]);
    for person in &envelope.carbon_copies {
        flow.row([
            vec![
                (Font::Bold, person.name.clone()),
                (Font::Regular, person.email.clone()),
                (Font::Regular, "Security Level: Email, Account Authentication (None)".into()),
            ],
            plain([if envelope.completed_time().is_some() { "COPIED" } else { "PENDING" }.into()]),
            plain([envelope.completed_time().map(|at| format!("Sent: {}", timestamp(at))).unwrap_or_default()]),
        ]);
    }

    flow.heading(["Envelope Summary Events", "Status", "Timestamps"]);
    let latest = |time: fn(&Signer) -> Option<DateTime<Utc>>| envelope.signers.iter().filter_map(time).max();
    let (delivered, signed) = match envelope.completed_time() {
        Some(completed) => (
            Some(envelope.signers.iter().map(|s| s.delivered_at).max().unwrap_or(envelope.sent_at)),
            Some(envelope.signers.iter().map(|s| s.signed_at).max().unwrap_or(completed)),
        ),
        None => (latest(Signer::delivered_time), None),
    };
    let events = [
        ("Envelope Sent", "Hashed/Encrypted", envelope.sent_time()),
        ("Certified Delivered", "Security Checked", delivered),
        ("Signing Complete", "Security Checked", signed),
        ("Completed", "Security Checked", envelope.completed_time()),
        ("Envelope Declined", "Security Checked", envelope.declined_time()),
        ("Envelope Voided", "Security Checked", envelope.voided_time()),
    ];
    for (event, status, at) in events {
        if let Some(at) = at {
            flow.row([plain([event.into()]), plain([status.into()]), plain([timestamp(at)])]);
        }
    }
    flow.finish()
}

/// A signer's steps so far, as the certificate's timestamp column lists them.
fn signer_times(signer: &Signer) -> Vec<(Font, String)> {
    let steps = [
        ("Sent", signer.sent_time()),
        ("Viewed", signer.delivered_time()),
        ("Signed", signer.signed_time()),
        ("Declined", signer.declined_time()),
    ];
    steps
        .into_iter()
        .filter_map(|(step, at)| at.map(|at| (Font::Regular, format!("{step}: {}", timestamp(at)))))
        .collect()
}

fn plain<const N: usize>(lines: [String; N]) -> Vec<(Font, String)> {
    lines.into_iter().map(|line| (Font::Regular, line)).collect()
}

/// DocuSign prints envelope ids upper case; the certificate without hyphens.
fn certificate_id(envelope: &Envelope) -> String {
    envelope.envelope_id.as_uuid().simple().to_string().to_uppercase()
}

fn stamp_id(envelope: &Envelope) -> String {
    envelope.envelope_id.to_string().to_uppercase()
}

/// The certificate's timestamp style, in UTC (the time zone it declares).
fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%-m/%-d/%Y | %I:%M:%S %p").to_string()
}

// ---------------------------------------------------------------------------
// Layout

/// Line spacing for a font size: 1.4 × the size, as word processors default to.
fn leading(size: u32) -> u32 {
    size.saturating_mul(14) / 10
}

/// How many characters fit in `width` points. Helvetica averages about half
/// an em per character; without font metrics that is close enough to keep
/// columns apart.
fn chars_in(width: u32, size: u32) -> usize {
    usize::try_from(width.saturating_mul(2) / size.max(1)).unwrap_or(1).max(1)
}

/// Splits `text` into lines of at most `width` characters, breaking at
/// spaces and, for words longer than a line (emails, ids), inside the word.
/// Past `max_lines`, the last line ends in "..." instead.
fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(4);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    // Stops one line past the limit: enough to know "..." is due, without
    // wrapping the rest of a hostile megabyte-long subject.
    'words: for word in text.split_whitespace() {
        let mut rest = word;
        while lines.len() <= max_lines {
            let len = rest.chars().count();
            let gap = usize::from(used > 0);
            if used + gap + len <= width {
                if gap == 1 {
                    line.push(' ');
                }
                line.push_str(rest);
                used += gap + len;
                continue 'words;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                used = 0;
                continue;
            }
            let (head, tail) = rest.split_at(rest.char_indices().nth(width).map_or(rest.len(), |(i, _)| i));
            lines.push(head.to_string());
            rest = tail;
        }
        break;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            *last = last.chars().take(width - 3).chain("...".chars()).collect();
        }
    }
    lines
}

/// Lines written down one page from the top, never below the bottom margin.
#[derive(Debug)]
struct Sheet {
    content: Content,
    /// The top of the next line, in points from the bottom of the page.
    y: u32,
}

impl Sheet {
    fn new() -> Self {
        Self { content: Content::default(), y: TOP }
    }

    fn room(&self) -> u32 {
        self.y.saturating_sub(BOTTOM)
    }

    fn skip(&mut self, points: u32) {
        self.y = self.y.saturating_sub(points).max(BOTTOM);
    }

    /// Writes `text` wrapped to `width` points, at most `max_lines` lines;
    /// false when the page ran out before the text did.
    fn paragraph(&mut self, x: u32, width: u32, font: Font, size: u32, text: &str, max_lines: usize) -> bool {
        for line in wrap(text, chars_in(width, size), max_lines) {
            if self.room() < leading(size) {
                return false;
            }
            self.content.text(x, self.y - size, font, size, &line);
            self.y -= leading(size);
        }
        true
    }

    fn rule(&mut self) {
        self.skip(4);
        self.content.rule(LEFT, PAGE_WIDTH - LEFT, self.y);
        self.skip(10);
    }
}

/// Rows of three columns over as many pages as they need; a row is never
/// split across pages.
#[derive(Debug)]
struct Flow {
    done: Vec<Sheet>,
    sheet: Sheet,
}

/// Lines a certificate cell may take; longer values end in "...".
const MAX_CELL_LINES: usize = 4;

impl Flow {
    fn new() -> Self {
        Self { done: Vec::new(), sheet: Sheet::new() }
    }

    /// Starts a new page unless `height` points fit on this one.
    fn make_room(&mut self, height: u32) {
        if self.sheet.room() < height {
            self.done.push(std::mem::replace(&mut self.sheet, Sheet::new()));
        }
    }

    fn row(&mut self, columns: [Vec<(Font, String)>; 3]) {
        let wrapped: Vec<Vec<(Font, String)>> = columns
            .iter()
            .zip(COLUMNS)
            .map(|(cells, (_, width))| {
                cells
                    .iter()
                    .flat_map(|(font, text)| {
                        let lines = wrap(text, chars_in(width, BODY), MAX_CELL_LINES);
                        // An empty cell still takes its line, keeping rows aligned.
                        let lines = if lines.is_empty() { vec![String::new()] } else { lines };
                        lines.into_iter().map(|line| (*font, line))
                    })
                    .collect()
            })
            .collect();
        let lines = wrapped.iter().map(Vec::len).max().unwrap_or(0);
        let height = u32::try_from(lines).unwrap_or(u32::MAX).saturating_mul(leading(BODY)).saturating_add(8);
        self.make_room(height);
        let top = self.sheet.y;
        for (cells, (x, _)) in wrapped.iter().zip(COLUMNS) {
            let mut y = top;
            for (font, text) in cells {
                if y < BOTTOM + leading(BODY) {
                    break;
                }
                if !text.is_empty() {
                    self.sheet.content.text(x, y - BODY, *font, BODY, text);
                }
                y -= leading(BODY);
            }
        }
        self.sheet.skip(height);
    }

    fn full_width(&mut self, text: &str, max_lines: usize) {
        let lines = u32::try_from(wrap(text, chars_in(TEXT_WIDTH, BODY), max_lines).len()).unwrap_or(u32::MAX);
        self.make_room(lines.saturating_mul(leading(BODY)).saturating_add(8));
        self.sheet.paragraph(LEFT, TEXT_WIDTH, Font::Regular, BODY, text, max_lines);
        self.sheet.skip(8);
    }

    /// A section's column titles over a rule, kept with the first row below it.
    fn heading(&mut self, titles: [&str; 3]) {
        self.make_room(leading(10) + 14 + 5 * leading(BODY));
        self.sheet.skip(6);
        let top = self.sheet.y;
        for (title, (x, _)) in titles.iter().zip(COLUMNS) {
            if !title.is_empty() {
                self.sheet.content.text(x, top - 10, Font::Bold, 10, title);
            }
        }
        self.sheet.y = top.saturating_sub(leading(10));
        self.sheet.rule();
    }

    fn finish(mut self) -> Vec<Sheet> {
        self.done.push(self.sheet);
        self.done
    }
}

// ---------------------------------------------------------------------------
// Archive

fn write_archive(envelope: &Envelope) -> zip::result::ZipResult<Vec<u8>> {
    let names = archive_names(envelope);
    let capacity = envelope
        .documents
        .iter()
        .map(|d| d.target_bytes.min(MAX_TARGET_BYTES).saturating_add(4096))
        .fold(64 * 1024, usize::saturating_add);
    let mut zip = ZipWriter::new(Cursor::new(Vec::with_capacity(capacity)));
    // Fixed metadata: the entry times come from the envelope, never the
    // clock, so the archive is as reproducible as the PDFs in it.
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(zip_time(envelope.status_changed_at()))
        .system(zip::System::Unix)
        .unix_permissions(0o644);
    // Each PDF goes into the zip as soon as it is made, so only one
    // document is held twice at any time.
    let entries = envelope.documents.iter().zip(names).map(|(d, name)| (name, document_pdf(envelope, d)));
    let certificate = std::iter::once_with(|| ("Summary.pdf".to_string(), certificate_pdf(envelope)));
    for (name, pdf) in entries.chain(certificate) {
        let large = u64::try_from(pdf.len()).unwrap_or(u64::MAX) >= zip::ZIP64_BYTES_THR;
        zip.start_file(name, options.large_file(large))?;
        zip.write_all(&pdf)?;
    }
    Ok(zip.finish()?.into_inner())
}

fn zip_time(at: DateTime<Utc>) -> zip::DateTime {
    let parts = (
        u16::try_from(at.year()),
        u8::try_from(at.month()),
        u8::try_from(at.day()),
        u8::try_from(at.hour()),
        u8::try_from(at.minute()),
        u8::try_from(at.second()),
    );
    match parts {
        (Ok(year), Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) => {
            zip::DateTime::from_date_and_time(year, month, day, hour, minute, second).unwrap_or_default()
        }
        // Zip times cover 1980–2107 only; outside that, the zip epoch.
        _ => zip::DateTime::default(),
    }
}

/// One safe, distinct entry name per document, in document order.
fn archive_names(envelope: &Envelope) -> Vec<String> {
    // Lower case, because names differing only in case clash when unpacked
    // on Windows or macOS. The certificate's name is taken from the start.
    let mut taken: HashSet<String> = HashSet::from(["summary.pdf".to_string()]);
    envelope
        .documents
        .iter()
        .enumerate()
        .map(|(i, document)| {
            let stem = safe_stem(&document.name).unwrap_or_else(|| format!("Document {}", i + 1));
            let mut name = format!("{stem}.pdf");
            let mut copy = 2;
            while !taken.insert(name.to_lowercase()) {
                name = format!("{stem} ({copy}).pdf");
                copy += 1;
            }
            name
        })
        .collect()
}

/// A document name reduced to a single, harmless path component without
/// its ".pdf", or None when nothing usable is left. Separators, control
/// characters and the characters Windows forbids become '_'; runs of dots
/// collapse to one, so no ".." survives.
fn safe_stem(name: &str) -> Option<String> {
    let stem = match name.len().checked_sub(4) {
        Some(cut) if name.get(cut..).is_some_and(|ext| ext.eq_ignore_ascii_case(".pdf")) => {
            name.get(..cut).unwrap_or(name)
        }
        _ => name,
    };
    let mut safe = String::with_capacity(stem.len());
    for c in stem.chars().take(150) {
        let c =
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') { '_' } else { c };
        if c == '.' && safe.ends_with('.') {
            continue;
        }
        safe.push(c);
    }
    // Leading dots hide files on Unix; trailing dots and spaces vanish on Windows.
    let trimmed = safe.trim_matches(|c: char| c == '.' || c.is_whitespace());
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::ids::{AccountId, UserId};
    use crate::sandbox::envelopes::{EnvelopeGenerator, GeneratorOptions, Person};

    fn options(document_bytes: usize) -> GeneratorOptions {
        GeneratorOptions {
            account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
            sender: Person {
                user_id: UserId::parse("4c0f6a7e-2b3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap(),
                name: "Sam Sender".into(),
                email: "sam@example.com".into(),
            },
            document_bytes,
            max_documents: 3,
        }
    }

    fn envelope(seed: u64, document_bytes: usize) -> Envelope {
        EnvelopeGenerator::new(seed, options(document_bytes)).next_envelope()
    }

    /// An envelope with three documents, whatever the seed would pick.
    fn three_documents(document_bytes: usize) -> Envelope {
        let mut generator = EnvelopeGenerator::new(7, options(document_bytes));
        (0..100).map(|_| generator.next_envelope()).find(|e| e.documents.len() == 3).unwrap()
    }

    fn load(pdf: &[u8]) -> lopdf::Document {
        assert_xref_is_exact(pdf);
        lopdf::Document::load_mem(pdf).unwrap()
    }

    fn all_text(doc: &lopdf::Document) -> String {
        let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
        doc.extract_text(&pages).unwrap()
    }

    /// lopdf repairs a broken cross-reference table silently, so check it by
    /// hand: every entry must point at its object's header.
    fn assert_xref_is_exact(pdf: &[u8]) {
        let tail = String::from_utf8_lossy(&pdf[pdf.len().saturating_sub(64)..]).into_owned();
        let start: usize = tail.split("startxref\n").nth(1).unwrap().lines().next().unwrap().parse().unwrap();
        let xref = String::from_utf8_lossy(&pdf[start..]).into_owned();
        let mut lines = xref.split('\n');
        assert_eq!(lines.next(), Some("xref"));
        let size: usize = lines.next().unwrap().strip_prefix("0 ").unwrap().parse().unwrap();
        let entries = &pdf[start + xref.find("0000000000 65535 f").unwrap()..];
        for n in 1..size {
            let entry = std::str::from_utf8(&entries[20 * n..20 * (n + 1)]).unwrap();
            assert!(entry.ends_with(" 00000 n \n"), "entry {n}: {entry:?}");
            let offset: usize = entry[..10].parse().unwrap();
            assert!(pdf[offset..].starts_with(format!("{n} 0 obj\n").as_bytes()), "object {n} is not at {offset}");
        }
        let trailer = String::from_utf8_lossy(&entries[20 * size..]).into_owned();
        assert!(trailer.starts_with(&format!("trailer\n<< /Size {size} /Root 1 0 R /Info 3 0 R /ID [<")));
        assert!(trailer.ends_with("%%EOF\n"));
    }

    #[test]
    fn every_document_is_a_valid_pdf_with_its_page_count() {
        for seed in 0..12 {
            let envelope = envelope(seed, 20_000);
            for document in &envelope.documents {
                let doc = load(&document_pdf(&envelope, document));
                assert_eq!(doc.get_pages().len(), document.pages as usize, "{}", document.name);
                assert_eq!(doc.version, "1.7");
            }
        }
    }

    #[test]
    fn document_pages_name_the_document_envelope_subject_and_page_number() {
        let envelope = three_documents(20_000);
        for document in &envelope.documents {
            let doc = load(&document_pdf(&envelope, document));
            for page in 1..=document.pages {
                let text = doc.extract_text(&[page]).unwrap();
                assert!(text.contains(&document.name), "{text}");
                assert!(text.contains(&envelope.envelope_id.to_string()), "{text}");
                assert!(text.contains(&stamp_id(&envelope)), "{text}");
                assert!(text.contains(&format!("Subject: {}", envelope.subject)), "{text}");
                assert!(text.contains(&format!("Page {page} of {}", document.pages)), "{text}");
                assert!(text.contains("the parties"), "no body text: {text}");
            }
            let fonts = doc.get_page_fonts(*doc.get_pages().get(&1).unwrap()).unwrap();
            let names: Vec<&[u8]> = fonts.values().map(|f| f.get(b"BaseFont").unwrap().as_name().unwrap()).collect();
            assert_eq!(names, [b"Helvetica".as_slice(), b"Helvetica-Bold"]);
        }
        // The filled-in fields show on the first page of the document they belong to.
        let first = envelope.documents.first().unwrap();
        let text = load(&document_pdf(&envelope, first)).extract_text(&[1]).unwrap();
        for tab in &envelope.signers[0].tabs {
            assert!(text.contains(&format!("{}: {}", field_label(&tab.label), tab.value)), "{text}");
        }
    }

    #[test]
    fn documents_come_within_ten_percent_of_their_target_size() {
        for target in [20_000, 2_000_000] {
            let envelope = three_documents(target);
            for document in &envelope.documents {
                let pdf = document_pdf(&envelope, document);
                let off = pdf.len().abs_diff(target) as f64 / target as f64;
                assert!(off < 0.10, "{} bytes for a target of {target}", pdf.len());
                assert_eq!(load(&pdf).get_pages().len(), document.pages as usize);
            }
        }
    }

    #[test]
    fn a_25_mb_document_is_valid_and_on_target() {
        let envelope = envelope(3, 25 * 1024 * 1024);
        let document = envelope.documents.first().unwrap();
        let started = std::time::Instant::now();
        let pdf = document_pdf(&envelope, document);
        let generated = started.elapsed();
        let doc = load(&pdf);
        eprintln!("25 MiB target: {} bytes in {generated:?}, loaded in {:?}", pdf.len(), started.elapsed() - generated);
        // The scan's rows leave a shortfall under one byte per row: about 0.04%.
        assert!(pdf.len().abs_diff(25 * 1024 * 1024) < 25 * 1024 * 1024 / 1000);
        assert_eq!(doc.get_pages().len(), document.pages as usize);
    }

    #[test]
    fn a_target_below_the_natural_size_gives_the_smallest_valid_pdf() {
        let mut envelope = envelope(4, 0);
        let natural = document_pdf(&envelope, &envelope.documents[0]);
        assert!(!natural.windows(9).any(|w| w == b"/XObject "));
        envelope.documents[0].target_bytes = 100;
        assert_eq!(document_pdf(&envelope, &envelope.documents[0]), natural);
        assert_eq!(load(&natural).get_pages().len(), envelope.documents[0].pages as usize);
        // One byte of room gives a one-pixel scan, and the file grows to the target.
        envelope.documents[0].target_bytes = natural.len() + 500;
        let padded = document_pdf(&envelope, &envelope.documents[0]);
        assert!(padded.len().abs_diff(natural.len() + 500) < 50, "{} vs {}", padded.len(), natural.len());
        load(&padded);
    }

    #[test]
    fn the_certificate_lists_the_envelope_every_signer_and_carbon_copy() {
        for seed in 0..5 {
            let envelope = envelope(seed, 20_000);
            let doc = load(&certificate_pdf(&envelope));
            assert!(!doc.get_pages().is_empty());
            let first = doc.extract_text(&[1]).unwrap();
            assert!(first.contains(&format!("Envelope Id: {}", certificate_id(&envelope))), "{first}");
            assert!(first.contains("Status: Completed"));
            assert!(first.contains(&envelope.sender.name) && first.contains(&envelope.sender.email));
            for signer in &envelope.signers {
                assert!(first.contains(&signer.person.name), "{first}");
                assert!(first.contains(&signer.person.email), "{first}");
                assert!(first.contains(&signer.role_name));
                assert!(first.contains(&format!("Using IP Address: {}", signer.ip_address)));
                assert!(first.contains(&format!("Sent: {}", timestamp(signer.sent_at))));
                assert!(first.contains(&format!("Viewed: {}", timestamp(signer.delivered_at))));
                assert!(first.contains(&format!("Signed: {}", timestamp(signer.signed_at))));
            }
            let text = all_text(&doc);
            assert!(text.contains(&envelope.subject));
            for person in &envelope.carbon_copies {
                assert!(text.contains(&person.name) && text.contains(&person.email), "{text}");
            }
            assert!(text.contains(&format!("Completed\nSecurity Checked\n{}", timestamp(envelope.completed_at))));
        }
    }

    #[test]
    fn a_certificate_with_many_signers_runs_over_several_pages() {
        let mut envelope = envelope(5, 20_000);
        let template = envelope.signers[0].clone();
        for i in 0..40 {
            let mut signer = template.clone();
            signer.person.name = format!("Signer Number{i}");
            signer.person.email = format!("signer{i}@example.com");
            signer.routing_order = 3 + i;
            envelope.signers.push(signer);
        }
        let doc = load(&certificate_pdf(&envelope));
        let pages = doc.get_pages().len();
        assert!(pages > 1);
        let text = all_text(&doc);
        assert!(text.contains(&format!("Certificate Pages: {pages}")));
        assert!(text.contains(&format!("Page {pages} of {pages}")));
        for signer in &envelope.signers {
            assert!(text.contains(&signer.person.email), "{} missing", signer.person.email);
        }
    }

    #[test]
    fn the_combined_pdf_holds_every_document_page_then_the_certificate() {
        let envelope = three_documents(20_000);
        let document_pages: u32 = envelope.documents.iter().map(|d| d.pages).sum();
        let certificate_pages = load(&certificate_pdf(&envelope)).get_pages().len() as u32;

        let with = load(&combined_pdf(&envelope, true));
        assert_eq!(with.get_pages().len() as u32, document_pages + certificate_pages);
        let without = load(&combined_pdf(&envelope, false));
        assert_eq!(without.get_pages().len() as u32, document_pages);

        let mut page = 1;
        for document in &envelope.documents {
            for n in 1..=document.pages {
                let text = with.extract_text(&[page]).unwrap();
                assert!(text.contains(&document.name) && text.contains(&format!("Page {n} of {}", document.pages)));
                page += 1;
            }
        }
        assert!(with.extract_text(&[page]).unwrap().contains("Certificate Of Completion"));
        // Each document brings its scan along, so the combined file weighs about the sum.
        let sum: usize = envelope.documents.iter().map(|d| document_pdf(&envelope, d).len()).sum();
        let combined = combined_pdf(&envelope, false).len();
        assert!(combined.abs_diff(sum) < sum / 10, "{combined} vs {sum}");
    }

    #[test]
    fn the_same_envelope_gives_the_same_bytes() {
        let a = three_documents(50_000);
        let b = three_documents(50_000);
        assert_eq!(document_pdf(&a, &a.documents[1]), document_pdf(&b, &b.documents[1]));
        assert_eq!(certificate_pdf(&a), certificate_pdf(&b));
        assert_eq!(combined_pdf(&a, true), combined_pdf(&b, true));
        assert_eq!(archive_zip(&a), archive_zip(&b));
        let other = envelope(99, 50_000);
        assert_ne!(certificate_pdf(&a), certificate_pdf(&other));
        assert_ne!(document_pdf(&a, &a.documents[0]), document_pdf(&other, &other.documents[0]));
    }

    #[test]
    fn hostile_text_is_escaped_and_limited_to_win_ansi() {
        let mut envelope = envelope(6, 20_000);
        envelope.subject = "Offer (final)) \\ draft\\ — Zoë 日本\n(".into();
        envelope.signers[0].person.name = "Ann (O'Neil) \\".into();
        envelope.documents[0].name = "Terms (v2).pdf".into();
        let shown = "Offer (final)) \\ draft\\ — Zoë ?? (";
        let doc = load(&document_pdf(&envelope, &envelope.documents[0]));
        let text = doc.extract_text(&[1]).unwrap();
        assert!(text.contains(&format!("Subject: {shown}")), "{text}");
        assert!(text.contains("Terms (v2)"), "{text}");
        let certificate = all_text(&load(&certificate_pdf(&envelope)));
        assert!(certificate.contains(shown) && certificate.contains("Ann (O'Neil) \\"), "{certificate}");
        // The information dictionary keeps the subject in full, as UTF-16.
        let info = doc.trailer.get(b"Info").unwrap().as_reference().unwrap();
        let subject = doc.get_object(info).unwrap().as_dict().unwrap().get(b"Subject").unwrap();
        assert_eq!(lopdf::decode_text_string(subject).unwrap(), envelope.subject);
    }

    #[test]
    fn long_values_wrap_instead_of_running_off_the_page() {
        assert_eq!(wrap("one two three four", 9, 9), ["one two", "three", "four"]);
        assert_eq!(wrap("averyveryverylongword", 8, 9), ["averyver", "yverylon", "gword"]);
        assert_eq!(wrap("a b c d e f g h", 4, 2), ["a b", "c..."]);
        assert!(wrap("", 10, 3).is_empty());
        let mut envelope = envelope(8, 20_000);
        envelope.subject = "word ".repeat(200_000);
        let doc = load(&certificate_pdf(&envelope));
        assert!(all_text(&doc).contains("word..."));
    }

    #[test]
    fn odd_envelopes_never_panic() {
        let mut envelope = envelope(9, 20_000);
        envelope.documents[0].pages = 0;
        envelope.documents[0].name = String::new();
        let doc = load(&document_pdf(&envelope, &envelope.documents[0]));
        assert_eq!(doc.get_pages().len(), 1);
        envelope.signers.clear();
        envelope.carbon_copies.clear();
        load(&certificate_pdf(&envelope));
        load(&combined_pdf(&envelope, true));
        envelope.documents.clear();
        assert_eq!(load(&certificate_pdf(&envelope)).get_pages().len(), 1);
        archive_zip(&envelope);
    }

    fn archive(envelope: &Envelope) -> zip::ZipArchive<Cursor<Vec<u8>>> {
        zip::ZipArchive::new(Cursor::new(archive_zip(envelope))).unwrap()
    }

    fn entry(archive: &mut zip::ZipArchive<Cursor<Vec<u8>>>, name: &str) -> Vec<u8> {
        let mut file = archive.by_name(name).unwrap();
        assert_eq!(file.compression(), CompressionMethod::Stored);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_archive_holds_each_document_and_the_certificate_as_summary() {
        let envelope = three_documents(20_000);
        let mut archive = archive(&envelope);
        assert_eq!(archive.len(), envelope.documents.len() + 1);
        for document in &envelope.documents {
            assert_eq!(entry(&mut archive, &document.name), document_pdf(&envelope, document));
        }
        assert_eq!(entry(&mut archive, "Summary.pdf"), certificate_pdf(&envelope));
    }

    #[test]
    fn hostile_document_names_stay_inside_the_archive() {
        let mut envelope = three_documents(5_000);
        let names = [
            "../../etc/passwd",
            "evil\0name.pdf",
            "Summary.pdf",
            "Offer.pdf",
            "offer.PDF",
            "..",
            "C:\\Windows\\system.ini",
            "...hidden...pdf",
        ];
        let template = envelope.documents[0].clone();
        envelope.documents = names
            .iter()
            .enumerate()
            .map(|(i, name)| Document { name: (*name).into(), document_id: (i + 1).to_string(), ..template.clone() })
            .collect();
        let mut archive = archive(&envelope);
        let entries: Vec<String> = archive.file_names().map(|name| name.unwrap().into_owned()).collect();
        assert_eq!(entries.len(), names.len() + 1);
        let distinct: HashSet<String> = entries.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(distinct.len(), entries.len(), "{entries:?}");
        for name in &entries {
            assert!(!name.contains(['/', '\\', '\0']) && !name.contains("..") && !name.starts_with('.'), "{name:?}");
            let enclosed = archive.by_name(name).unwrap().enclosed_name().unwrap();
            assert_eq!(enclosed.components().count(), 1, "{name:?}");
        }
        assert_eq!(entry(&mut archive, "Summary.pdf"), certificate_pdf(&envelope));
        assert_eq!(entry(&mut archive, "Summary (2).pdf"), document_pdf(&envelope, &envelope.documents[2]));
        assert_eq!(entry(&mut archive, "offer (2).pdf"), document_pdf(&envelope, &envelope.documents[4]));
        assert_eq!(entry(&mut archive, "Document 6.pdf"), document_pdf(&envelope, &envelope.documents[5]));
    }
}
