//! Writes the seed corpora under fuzz/seeds/: the Connect fixtures and
//! bodies from the sandbox's Connect sender, each behind the control byte
//! the parser targets read first (see countersign_fuzz::Control), and a few
//! hand-made header sets for signature_headers.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (or
//! scripts/fuzz.sh --seeds). Output is deterministic apart from the
//! sandbox's GUIDs and times, so regenerated seeds differ in those only.

use std::path::{Path, PathBuf};

use countersign::sandbox::connect::{NotificationOptions, json_sim_body, xml_body};
use countersign::sandbox::{Sandbox, SandboxConfig};

/// Whole-body reads, a working sink, no account hint.
const PLAIN: u8 = 0x00;
/// Three bytes per read, so the seeds also start with bodies cut mid-token.
const SMALL_READS: u8 = 0x03;
/// XML: the `X-DocuSign-AccountId` hint that legacy messages rely on.
const WITH_HINT: u8 = 0x20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = fuzz_dir.join("../fixtures/connect");
    let seeds = fuzz_dir.join("seeds");

    let json = seeds.join("json_notification");
    let xml = seeds.join("xml_notification");
    for dir in [&json, &xml, &seeds.join("signature_headers")] {
        std::fs::create_dir_all(dir)?;
    }
    for entry in std::fs::read_dir(&fixtures)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let body = std::fs::read(&path)?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => write(&json.join(name), PLAIN, &body)?,
            Some("xml") => write(&xml.join(name), WITH_HINT, &body)?,
            _ => {}
        }
    }

    // Small documents: the seeds stay small enough to commit and to mutate
    // quickly, and one of each format still carries PDFBytes.
    let sandbox = Sandbox::new(SandboxConfig { document_bytes: 1_500, max_documents: 1, ..SandboxConfig::default() })?;
    let envelopes = sandbox.complete_envelopes(2);
    let summary = NotificationOptions::default();
    let bare = NotificationOptions { include_summary: false, ..NotificationOptions::default() };
    let recipient = NotificationOptions { event: "recipient-completed".into(), ..NotificationOptions::default() };
    let documents = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    let (first, second) = (&envelopes[0], &envelopes[1]);
    let generated = first.completed_at;
    write(&json.join("sandbox-summary.json"), PLAIN, &json_sim_body(first, &summary, 0, generated))?;
    write(&json.join("sandbox-bare.json"), PLAIN, &json_sim_body(first, &bare, 2, generated))?;
    write(&json.join("sandbox-recipient.json"), PLAIN, &json_sim_body(second, &recipient, 0, generated))?;
    write(&json.join("sandbox-documents.json"), PLAIN, &json_sim_body(first, &documents, 0, generated))?;
    write(&json.join("sandbox-documents-small-reads.json"), SMALL_READS, &json_sim_body(second, &documents, 0, generated))?;
    write(&xml.join("sandbox-summary.xml"), WITH_HINT, &xml_body(first, &summary, -7))?;
    write(&xml.join("sandbox-no-hint.xml"), PLAIN, &xml_body(second, &summary, 0))?;
    write(&xml.join("sandbox-documents.xml"), WITH_HINT, &xml_body(first, &documents, 5))?;
    write(&xml.join("sandbox-documents-small-reads.xml"), WITH_HINT | SMALL_READS, &xml_body(second, &documents, -8))?;

    // signature_headers: position and flags bytes, key material, body, headers.
    let account = first.account_id;
    let headers = [
        ("global-key", [0x00, 0x00], "content-type: application/json\n".to_owned()),
        (
            "account-key",
            [0x81, 0x01],
            format!("x-docusign-accountid: {account}\nx-docusign-signature-2: bm90IGEgc2lnbmF0dXJl\n"),
        ),
        (
            "many-signatures",
            [0x05, 0x02],
            (2..=8).map(|n| format!("X-DocuSign-Signature-{n}: AAAA\n")).collect::<String>()
                + "authorization: Basic Y29ubmVjdDprZXk=\n",
        ),
    ];
    for (name, control, lines) in headers {
        let mut input = control.to_vec();
        input.extend_from_slice(b"key\n<DocuSignEnvelopeInformation/>\n");
        input.extend_from_slice(lines.as_bytes());
        std::fs::write(seeds.join("signature_headers").join(name), input)?;
    }
    Ok(())
}

fn write(path: &Path, control: u8, body: &[u8]) -> std::io::Result<()> {
    let mut input = Vec::with_capacity(body.len() + 1);
    input.push(control);
    input.extend_from_slice(body);
    std::fs::write(path, input)
}
