//! `countersign demo`: the whole pipeline as far as it is built, in one
//! process, on embedded defaults: the DocuSign sandbox, countersign
//! configured against it, consent granted through the consent page the way
//! a user grants it, completed envelopes sent by Connect in JSON and XML,
//! and a report of what countersign stored. Exit status 0 only when every
//! step succeeded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::deliver::receiver::WebhookReceiver;
use crate::sandbox::connect::{ConnectFormat, ConnectSender, NotificationOptions, RetryPolicy};
use crate::sandbox::{Envelope, Sandbox, SandboxConfig, pdf};
use crate::service::Service;

/// Envelopes sent per format.
const PER_FORMAT: usize = 2;

/// Runs the tour; `data` keeps its files (a temporary directory otherwise).
pub async fn run(data: Option<PathBuf>) -> anyhow::Result<()> {
    let temporary = match &data {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary directory")?),
    };
    let dir = data.as_deref().or(temporary.as_ref().map(|t| t.path())).context("no data directory")?.to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("countersign demo (data in {})\n", dir.display());

    let sandbox = Sandbox::new(SandboxConfig { document_bytes: 60_000, ..SandboxConfig::default() })?;
    let running_sandbox = sandbox.serve("127.0.0.1:0").await?;
    let sandbox_url = running_sandbox.base_url();
    step("DocuSign sandbox", &sandbox_url);

    // The IT system's end: it verifies the signature of every event it gets.
    let webhook_secret = crate::deliver::receiver::random_secret();
    let receiver = WebhookReceiver::spawn(&[&webhook_secret]).await.context("starting the event receiver")?;
    step("event receiver", &format!("{} (verifies every Standard Webhooks signature)", receiver.url()));

    let settings = settings_for(&sandbox, &sandbox_url, &dir, &format_sink(receiver.url(), &webhook_secret))?;
    let service = Service::build(settings.clone()).await?;
    let store = service.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let countersign_url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));
    wait_ready(&countersign_url).await?;
    step("countersign", &format!("{countersign_url} (SQLite and documents under {})", dir.display()));

    grant_consent(&settings).await?;
    step("consent", "granted through the sandbox's consent page");

    let identity = sandbox.identity();

    let sender = ConnectSender::new(
        format!("{countersign_url}/docusign/connect"),
        identity.hmac_keys.clone(),
        RetryPolicy { max_retries: 3, interval: Duration::from_millis(500), timeout: Duration::from_secs(30) },
    );
    let envelopes = sandbox.complete_envelopes(PER_FORMAT * 2);
    let mut failures = Vec::new();
    println!("\nConnect notifications (signed with the account's HMAC key):");
    for (i, envelope) in envelopes.iter().enumerate() {
        let format = if i < PER_FORMAT { ConnectFormat::Json } else { ConnectFormat::Xml };
        // Every other notification carries the documents, as "Include Documents" would.
        let options = NotificationOptions { include_documents: i % 2 == 0, ..NotificationOptions::default() };
        let report = sender.send(envelope, format, &options).await;
        let label = if format == ConnectFormat::Json { "JSON SIM" } else { "legacy XML" };
        let with = if options.include_documents { "with documents" } else { "without documents" };
        println!(
            "  {} {label:<10} {with:<17} → {}",
            envelope.envelope_id,
            report.last_status.map_or_else(|| report.last_error.clone().unwrap_or_default(), |s| s.to_string())
        );
        if !report.delivered {
            failures.push(format!("{}: not acknowledged ({:?})", envelope.envelope_id, report.last_error));
        }
    }

    if let Err(error) = wait_processed(&*store, &envelopes).await {
        failures.push(format!("{error:#}"));
    }
    println!("\nWhat countersign stored (documents compared with the sandbox's own bytes):");
    for envelope in &envelopes {
        if let Err(error) = report_envelope(&*store, envelope).await {
            failures.push(format!("{}: {error:#}", envelope.envelope_id));
        }
    }
    let counters = sandbox.counters();
    let calls = |route: &str| counters.routes.get(route).copied().unwrap_or(0);
    println!(
        "\nDocuSign calls made by countersign: {} token request(s), {} userinfo, {} envelope, {} combined PDF \
         (notifications that carried documents needed none)",
        calls("token"),
        calls("userinfo"),
        calls("envelope"),
        calls("combined")
    );

    let _ = stop.send(());
    serving.await.context("countersign task")??;
    println!("\nNot yet in this build: provisioning events and their delivery.");
    if failures.is_empty() {
        println!("\nDemo complete: every notification was acknowledged, and every envelope's documents stored.");
        Ok(())
    } else {
        for failure in &failures {
            eprintln!("FAILED {failure}");
        }
        bail!("{} step(s) failed", failures.len())
    }
}

fn step(what: &str, detail: &str) {
    println!("  ✓ {what:<17} {detail}");
}

/// The demo's one sink: the local receiver, with a token to fetch documents.
fn format_sink(url: &str, secret: &str) -> String {
    let token = uuid::Uuid::new_v4().simple();
    format!(
        "[[sinks]]\nname = \"demo-receiver\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{secret}\"\ntoken = \"{token}\"\n"
    )
}

fn settings_for(sandbox: &Sandbox, sandbox_url: &str, dir: &Path, sinks: &str) -> anyhow::Result<Settings> {
    let identity = sandbox.identity();
    let key_path = dir.join("sandbox-private-key.pem");
    std::fs::write(&key_path, &identity.private_key_pem)?;
    let keys: Vec<String> = identity.hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    let toml = format!(
        "[store]\nurl = \"sqlite://{db}\"\n[documents]\nurl = \"file://{docs}\"\n\
         [connect]\nhmac_keys = [{keys}]\n\
         [docusign]\nauth_server = \"{aud}\"\nauth_url = \"{sandbox_url}\"\nintegration_key = \"{ik}\"\n\
         user_id = \"{user}\"\nredirect_uri = \"{redirect}\"\nprivate_key_file = \"{key}\"\nrecheck_base = \"1s\"\nrecheck_cap = \"5s\"\n\
         [log]\nformat = \"human\"\nfilter = \"warn\"\n{sinks}",
        db = dir.join("countersign.db").display(),
        docs = dir.join("documents").display(),
        keys = keys.join(", "),
        aud = sandbox.config().auth_host,
        ik = identity.integration_key,
        user = identity.user.user_id,
        redirect = identity.redirect_uri,
        key = key_path.display(),
    );
    Ok(Settings::from_toml(&toml)?)
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("countersign did not become ready at {base}")
}

/// Opens the consent URL countersign prints and presses "Allow Access".
async fn grant_consent(settings: &Settings) -> anyhow::Result<()> {
    crate::sandbox::allow_through_consent_page(&crate::cli::consent_url(settings)?).await
}

/// Waits until the `process_envelope` job of every envelope has finished.
async fn wait_processed(store: &dyn crate::store::Store, envelopes: &[Envelope]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for envelope in envelopes {
        loop {
            let record = store.envelope(envelope.envelope_id).await?;
            if record.is_some_and(|r| r.status != crate::store::EnvelopeStatus::Received) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let job =
                    store.job_by_key(crate::pipeline::PROCESS_ENVELOPE, &envelope.envelope_id.to_string()).await?;
                let error = job.and_then(|j| j.last_error).unwrap_or_else(|| "no error recorded".into());
                bail!("{} was not processed within a minute: {error}", envelope.envelope_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn report_envelope(store: &dyn crate::store::Store, envelope: &Envelope) -> anyhow::Result<()> {
    let notifications = store.notifications_for(envelope.envelope_id).await?;
    ensure!(!notifications.is_empty(), "no notification recorded");
    let record = store.envelope(envelope.envelope_id).await?.context("no envelope recorded")?;
    println!("  {} {:?}: {} ({})", envelope.envelope_id, envelope.subject, record.status, notifications[0].new.format);
    let documents = store.documents(envelope.envelope_id).await?;
    ensure!(!documents.is_empty(), "no documents were stored");
    for document in &documents {
        let expected = match document.document_id.as_str() {
            "certificate" => pdf::certificate_pdf(envelope),
            "combined" => pdf::combined_pdf(envelope, true),
            "archive" => pdf::archive_zip(envelope),
            id => match envelope.documents.iter().find(|d| d.document_id == id) {
                Some(d) => pdf::document_pdf(envelope, d),
                None => bail!("unexpected document {id}"),
            },
        };
        let same = hex::encode(Sha256::digest(&expected)) == document.sha256;
        println!(
            "      {:<66} {:>9} bytes  sha256 {}…  {}",
            document.file_name,
            document.size_bytes,
            &document.sha256[..16],
            if same { "matches DocuSign's" } else { "DIFFERS" }
        );
        ensure!(same, "{} differs from what the sandbox sent", document.file_name);
    }
    Ok(())
}
