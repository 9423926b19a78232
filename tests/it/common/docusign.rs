//! countersign wired to a running DocuSign sandbox: the TOML that points it
//! there, and Connect notifications sent by the sandbox's own sender.

use std::collections::BTreeMap;
use std::time::Duration;

use countersign::sandbox::connect::{ConnectFormat, ConnectSender, NotificationOptions, RetryPolicy};
use countersign::sandbox::{Envelope, RunningSandbox, Sandbox, SandboxConfig};

use super::TestApp;

pub async fn sandbox_with(config: SandboxConfig) -> RunningSandbox {
    Sandbox::new(SandboxConfig { document_bytes: 6_000, ..config }).unwrap().serve("127.0.0.1:0").await.unwrap()
}

pub async fn sandbox() -> RunningSandbox {
    sandbox_with(SandboxConfig::default()).await
}

/// The `[docusign]` table pointing countersign at `sandbox`; `overrides`
/// are `key = value` lines that replace or add keys.
pub fn docusign_toml(sandbox: &RunningSandbox, overrides: &str) -> String {
    let id = sandbox.sandbox.identity();
    let mut keys: BTreeMap<String, String> = [
        ("auth_server", format!("{:?}", sandbox.sandbox.config().auth_host)),
        ("auth_url", format!("{:?}", sandbox.base_url())),
        ("integration_key", format!("\"{}\"", id.integration_key)),
        ("user_id", format!("\"{}\"", id.user.user_id)),
        ("redirect_uri", format!("{:?}", id.redirect_uri)),
        ("private_key", format!("'''\n{}'''", id.private_key_pem)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut lines = overrides.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let mut value = value.trim().to_string();
        // A multi-line literal string runs to its closing quotes.
        if value.starts_with("'''") && !value[3..].contains("'''") {
            for next in lines.by_ref() {
                value.push('\n');
                value.push_str(next);
                if next.contains("'''") {
                    break;
                }
            }
        }
        keys.insert(key.trim().to_string(), value);
    }
    let body: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!("[docusign]\n{body}")
}

pub fn connect_toml(sandbox: &RunningSandbox) -> String {
    let keys: Vec<String> = sandbox.sandbox.identity().hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    format!("[connect]\nhmac_keys = [{}]\n", keys.join(", "))
}

/// countersign on SQLite, configured for `sandbox`. `documents` holds keys of
/// the `[documents]` table, `docusign` overrides of the `[docusign]` table.
/// Reconciliation is off: its first pass would find the test's envelopes
/// itself and race the notifications the test sends.
pub async fn countersign(sandbox: &RunningSandbox, docusign: &str, documents: &str) -> TestApp {
    countersign_with(sandbox, docusign, documents, "").await
}

/// [`countersign`] with more tables after the others (`[[sinks]]`, `[[rules]]`).
pub async fn countersign_with(sandbox: &RunningSandbox, docusign: &str, documents: &str, tables: &str) -> TestApp {
    // TestApp opens a [documents] table last, so these keys land in it.
    let toml = format!(
        "{documents}\n{}{}[queue]\nworkers = 8\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\n\
         [reconcile]\nenabled = false\n{tables}",
        connect_toml(sandbox),
        docusign_toml(sandbox, docusign)
    );
    TestApp::spawn(super::sqlite().await, &toml).await
}

pub fn sender(app: &TestApp, sandbox: &RunningSandbox) -> ConnectSender {
    ConnectSender::new(
        app.connect_url(),
        sandbox.sandbox.identity().hmac_keys.clone(),
        RetryPolicy { max_retries: 0, interval: Duration::from_millis(100), timeout: Duration::from_secs(30) },
    )
}

pub fn options(summary: bool, documents: bool) -> NotificationOptions {
    NotificationOptions { include_summary: summary, include_documents: documents, ..NotificationOptions::default() }
}

pub async fn send_all(
    sender: &ConnectSender,
    envelopes: &[Envelope],
    format: ConnectFormat,
    opts: &NotificationOptions,
) {
    for envelope in envelopes {
        let report = sender.send(envelope, format, opts).await;
        assert!(report.delivered, "{}: {:?} {:?}", envelope.envelope_id, report.last_status, report.last_error);
    }
}
