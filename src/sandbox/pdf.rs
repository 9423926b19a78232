//! Real, valid PDFs for the sandbox's documents: each envelope document, the
//! certificate of completion (listing the signers), the combined PDF and the
//! archive (a zip). Deterministic: the same envelope gives the same bytes.
//!
//! PLACEHOLDER SIGNATURES: the bodies are being written.

use super::envelopes::{Document, Envelope};

/// One envelope document, padded to about `document.target_bytes`.
pub fn document_pdf(envelope: &Envelope, document: &Document) -> Vec<u8> {
    let _ = (envelope, document);
    Vec::new()
}

/// The certificate of completion: envelope id, subject, and every signer with
/// their email, role, IP address and signing time.
pub fn certificate_pdf(envelope: &Envelope) -> Vec<u8> {
    let _ = envelope;
    Vec::new()
}

/// All documents in one PDF, with the certificate last when `certificate` is true.
pub fn combined_pdf(envelope: &Envelope, certificate: bool) -> Vec<u8> {
    let _ = (envelope, certificate);
    Vec::new()
}

/// A zip of every document PDF plus the certificate.
pub fn archive_zip(envelope: &Envelope) -> Vec<u8> {
    let _ = envelope;
    Vec::new()
}
