//! `countersign rules test`: the rules applied to one envelope (stored, or a
//! Connect message in a file) exactly as processing would apply them, with
//! nothing written and nobody called. What processing would still fetch
//! from DocuSign (templates, role names, data a listing lacked) is said,
//! not fetched.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::{ConfigArg, load};
use crate::config::Settings;
use crate::domain::{ConnectNotification, DocumentKind, DocumentSink, EmbeddedDocument, Format};
use crate::events::{Plan, Planner};
use crate::formats;
use crate::ids::EnvelopeId;
use crate::ingest::{ConnectAuth, embedded_record};
use crate::store::{self, DocumentRecord};

/// Exit status when the envelope would be flagged.
const FLAGGED: u8 = 1;
/// Exit status when nothing could be tested (bad input, unknown envelope).
const CANNOT_TEST: u8 = 2;

pub(super) async fn test(arg: &ConfigArg, envelope: Option<&str>, file: Option<&Path>) -> ExitCode {
    match run(arg, envelope, file).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(CANNOT_TEST)
        }
    }
}

async fn run(arg: &ConfigArg, envelope: Option<&str>, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = load(arg)?;
    let planner = Planner::from_settings(&settings)?;
    let (notification, documents, origin) = match (envelope, file) {
        (_, Some(path)) => from_file(&settings, path)?,
        (Some(id), None) => from_store(&settings, id).await?,
        (None, None) => anyhow::bail!("give an envelope id or --file NOTIFICATION"),
    };
    let plan = planner.plan(&notification, &documents, &[], Utc::now());
    let mut out = std::io::stdout().lock();
    report(&mut out, &settings, &planner, &notification, &documents, &origin, &plan)?;
    Ok(if plan.needs_operator() { ExitCode::from(FLAGGED) } else { ExitCode::SUCCESS })
}

/// The latest notification that enqueued the envelope's processing, and its stored documents.
async fn from_store(
    settings: &Settings,
    id: &str,
) -> anyhow::Result<(ConnectNotification, Vec<DocumentRecord>, String)> {
    let envelope = EnvelopeId::parse(id).with_context(|| format!("{id:?} is not an envelope id (a GUID)"))?;
    let url = settings.store.connection_url();
    // The dry run reads a store; it never creates one (a mistyped path would).
    if let Some(path) = url.expose().strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p)) {
        anyhow::ensure!(std::path::Path::new(path).exists(), "there is no store at {path} (store.url)");
    }
    let store = store::open(url.expose(), 1).await?;
    let notifications = store.enqueued_notifications(envelope).await?;
    let latest = notifications.into_iter().max_by_key(|n| n.received_at).with_context(|| {
        format!("envelope {envelope} is not in the store (no notification enqueued its processing)")
    })?;
    let notification: ConnectNotification =
        serde_json::from_value(latest.new.summary).context("the stored notification cannot be read")?;
    let documents = store.documents(envelope).await?;
    let origin = format!(
        "stored envelope, from notification {} ({}, {}, received {})",
        latest.new.id,
        latest.new.origin,
        latest.new.format,
        latest.received_at.to_rfc3339()
    );
    Ok((notification, documents, origin))
}

/// A Connect message read from a file: embedded documents are hashed, not kept.
fn from_file(settings: &Settings, path: &Path) -> anyhow::Result<(ConnectNotification, Vec<DocumentRecord>, String)> {
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let format = formats::detect(&body).context("the file is neither a JSON nor an XML Connect message")?;
    let mut sink = HashingSink::default();
    let notification = match format {
        Format::Json => formats::parse_json_bytes(&body, &mut sink),
        Format::Xml => {
            let hints = ConnectAuth::from_settings(settings).account_hints(None);
            formats::parse_xml(body.as_slice(), &hints, &mut sink)
        }
    }
    .with_context(|| format!("{} is not a Connect message countersign accepts", path.display()))?;
    let documents = notification.embedded.iter().map(|d| embedded_record(d, &notification, String::new())).collect();
    Ok((notification, documents, format!("{} ({} message)", path.display(), format.as_str())))
}

fn report(
    out: &mut impl std::io::Write,
    settings: &Settings,
    planner: &Planner,
    notification: &ConnectNotification,
    documents: &[DocumentRecord],
    origin: &str,
    plan: &Plan,
) -> std::io::Result<()> {
    let envelope = &notification.envelope;
    writeln!(out, "envelope {} (account {})", envelope.envelope_id, envelope.account_id)?;
    writeln!(out, "  subject: {}", envelope.subject.as_deref().unwrap_or("(none)"))?;
    writeln!(out, "  from: {origin}")?;
    writeln!(out, "  event: {}; {} document(s) stored or embedded", notification.event, documents.len())?;
    if !settings.connect.process_events.contains(&notification.event) {
        writeln!(
            out,
            "  note: {:?} is not in connect.process_events: a notification of it would be recorded, not processed",
            notification.event
        )?;
    }

    writeln!(out, "\nrules:")?;
    if settings.rules.is_empty() {
        writeln!(out, "  (none configured)")?;
    }
    for rule in &settings.rules {
        let verdict = if plan.matched.contains(&rule.name) { "matches" } else { "does not match" };
        writeln!(out, "  {:<24} {verdict}", rule.name)?;
    }
    if plan.matched.is_empty() {
        match plan.events.first() {
            Some(default) => {
                writeln!(out, "  no rule matches: the default event {} is made", default.event.event_type)?
            }
            None => writeln!(out, "  no rule matches and events.default_event is off: no event")?,
        }
    }

    writeln!(out, "\nevents ({}), each as it would be delivered:", plan.events.len())?;
    for planned in &plan.events {
        let sinks = if planned.sinks.is_empty() { "no sink".to_string() } else { planned.sinks.join(", ") };
        writeln!(out, "  {} from rule {:?} → {sinks}", planned.event.event_type, planned.event.rule)?;
        let body = serde_json::to_string_pretty(&planned.event.body).unwrap_or_default();
        for line in body.lines() {
            writeln!(out, "    {line}")?;
        }
    }

    writeln!(out, "\nmissing:")?;
    let mut anything = false;
    for flag in &plan.flags {
        writeln!(out, "  {flag}: the envelope would be flagged, and this rule makes no event")?;
        anything = true;
    }
    for planned in &plan.events {
        let optional = planned.event.body["data"]["missing"].as_array().cloned().unwrap_or_default();
        for key in optional.iter().filter_map(|k| k.as_str()) {
            writeln!(
                out,
                "  rule {:?}: optional field {key:?} is missing; the event lists it under data.missing",
                planned.event.rule
            )?;
            anything = true;
        }
    }
    if !anything {
        writeln!(out, "  nothing")?;
    }

    // What processing would fetch first, and a dry run does not.
    let mut caveats = Vec::new();
    if planner.needs_templates() {
        caveats.push("a rule matches on template ids, which processing asks DocuSign for; here no template is known");
    }
    if planner.needs_roles(notification, &[]) {
        caveats.push("signers came without role names: processing fetches the envelope to learn them");
    }
    if !notification.has_envelope_data {
        caveats.push("the notification carries no recipients or custom fields: processing fetches them from DocuSign");
    }
    if !caveats.is_empty() {
        writeln!(out, "\nnot fetched in a dry run (processing would, and the result may differ):")?;
        for caveat in caveats {
            writeln!(out, "  {caveat}")?;
        }
    }
    writeln!(
        out,
        "\nverdict: {}",
        if plan.needs_operator() {
            "the envelope would be flagged for an operator"
        } else {
            "the envelope would be processed"
        }
    )?;
    out.flush()
}

/// Embedded documents measured and hashed as they are decoded, then dropped.
#[derive(Default)]
struct HashingSink {
    current: Option<(Option<String>, String, DocumentKind, Sha256, u64)>,
}

impl DocumentSink for HashingSink {
    fn begin(&mut self, document_id: Option<&str>, name: &str, kind: DocumentKind) -> std::io::Result<()> {
        self.current = Some((document_id.map(str::to_string), name.to_string(), kind, Sha256::new(), 0));
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let (_, _, _, hasher, size) =
            self.current.as_mut().ok_or_else(|| std::io::Error::other("no document begun"))?;
        hasher.update(bytes);
        *size += bytes.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<EmbeddedDocument> {
        let (document_id, name, kind, hasher, size_bytes) =
            self.current.take().ok_or_else(|| std::io::Error::other("no document begun"))?;
        Ok(EmbeddedDocument {
            document_id: EmbeddedDocument::id_or_default(document_id, kind, &name),
            name,
            kind,
            size_bytes,
            sha256: hex::encode(hasher.finalize()),
            storage_key: String::new(),
        })
    }
}
