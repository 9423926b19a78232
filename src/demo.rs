//! `countersign demo`: the whole pipeline as far as it is built, in one
//! process, on embedded defaults: the DocuSign sandbox, countersign
//! configured against it, consent granted through the consent page the way
//! a user grants it, completed envelopes sent by Connect in JSON and XML, a
//! report of what countersign stored, and the provisioning events a webhook
//! receiver got (signatures verified, documents fetched through the event's
//! links); then the other direction: an HR system asks for an offer letter,
//! countersign sends it from the sandbox's template, the employee signs, and
//! the completion comes back as an event carrying the request. Exit status 0
//! only when every step succeeded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::deliver::receiver::{ReceivedWebhook, WebhookReceiver};
use crate::jobs::{JobKind, ProcessEnvelopeJob};
use crate::sandbox::connect::{ConnectFormat, ConnectSender, NotificationOptions, RetryPolicy};
use crate::sandbox::envelopes::ONBOARDING_TEMPLATE;
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
    // The service's log goes to a file, so that its lines do not break up
    // the tour; the end says how many warnings it holds.
    let log_path = dir.join("countersign.log");
    let warnings = log_to_file(&log_path)?;

    let sandbox = Sandbox::new(SandboxConfig { document_bytes: 60_000, ..SandboxConfig::default() })?;
    let running_sandbox = sandbox.serve("127.0.0.1:0").await?;
    let sandbox_url = running_sandbox.base_url();
    step("DocuSign sandbox", &sandbox_url);

    // The IT system's end: it verifies the signature of every event it gets.
    let webhook_secret = crate::deliver::receiver::random_secret();
    let receiver = WebhookReceiver::spawn(&[&webhook_secret]).await.context("starting the event receiver")?;
    step("event receiver", &format!("{} (verifies every Standard Webhooks signature)", receiver.url()));

    // Bound first: its address is the public URL the events' document links point at.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let countersign_url = format!("http://{}", listener.local_addr()?);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let sinks = sinks_and_rules(receiver.url(), &webhook_secret, &token);
    let settings = settings_for(&sandbox, &sandbox_url, &countersign_url, &dir, &sinks)?;
    grant_consent(&settings).await?;
    step("consent", "granted through the sandbox's consent page");
    let service = Service::build(settings.clone()).await?;
    let store = service.store.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));
    wait_ready(&countersign_url).await?;
    step("countersign", &format!("{countersign_url} (SQLite and documents under {})", dir.display()));

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
    let found = store.reconcile_checkpoint(identity.account_id).await?.map_or(0, |c| c.found_total);
    println!(
        "\nDocuSign calls made by countersign: {} token request(s), {} userinfo, {} envelope, {} combined PDF \
         (notifications that carried documents needed none); reconciliation found {found} envelope(s) Connect \
         missed (envelopes completed within reconcile.grace are left to Connect)",
        calls("token"),
        calls("userinfo"),
        calls("envelope"),
        calls("combined")
    );
    let without_documents = envelopes.len() - envelopes.len().div_ceil(2);
    if calls("combined") as usize != without_documents || found != 0 {
        failures.push(format!(
            "documents were downloaded for {} envelope(s) where {without_documents} notification(s) came without \
             them, and reconciliation found {found}: Connect's embedded documents were fetched again",
            calls("combined")
        ));
    }

    println!("\nProvisioning events received by the webhook receiver (Standard Webhooks signature verified):");
    if let Err(error) = report_events(&receiver, &token, &envelopes).await {
        failures.push(format!("{error:#}"));
    }

    println!("\nThe other direction: an HR system asks for an offer letter ({countersign_url}/api/v1/agreements):");
    if let Err(error) = send_an_agreement(&sandbox, &receiver, &countersign_url).await {
        failures.push(format!("agreement: {error:#}"));
    }

    let _ = stop.send(());
    serving.await.context("countersign task")??;
    let warned = warnings.load(std::sync::atomic::Ordering::Relaxed);
    match &data {
        Some(_) => println!("\ncountersign's log: {} ({warned} warning(s) or error(s))", log_path.display()),
        None => println!("\ncountersign logged {warned} warning(s) or error(s) (run with --data DIR to keep its log)"),
    }
    if failures.is_empty() {
        println!(
            "\nDemo complete: every notification was acknowledged, every envelope's documents stored, and its event \
             delivered; the agreement was sent once, signed, and came back with its request."
        );
        Ok(())
    } else {
        for failure in &failures {
            eprintln!("FAILED {failure}");
        }
        bail!("{} step(s) failed", failures.len())
    }
}

/// Sends the service's log (`COUNTERSIGN_DEMO_LOG`, default `info`) to
/// `path`; the counter holds how many warnings and errors it logged.
fn log_to_file(path: &Path) -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let filter = std::env::var("COUNTERSIGN_DEMO_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into());
    let warnings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = WarningCounter(warnings.clone());
    let writer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(std::sync::Mutex::new(file));
    // Already set (demo run inside a test process): that subscriber stays.
    let _ = tracing_subscriber::registry().with(filter).with(writer).with(counter).try_init();
    Ok(warnings)
}

struct WarningCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WarningCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn step(what: &str, detail: &str) {
    println!("  ✓ {what:<17} {detail}");
}

/// The demo's one sink (the local receiver, with a token to fetch documents)
/// and two rules for the sandbox's scenarios; other envelopes get the default event.
fn sinks_and_rules(url: &str, secret: &str, token: &str) -> String {
    let agreements = format!(
        "[[api.clients]]\nname = \"hris\"\ntoken = \"{HRIS_TOKEN}\"\nprofiles = [\"offer-letter\"]\n\
         [[profiles]]\nname = \"offer-letter\"\ntemplate_id = \"{ONBOARDING_TEMPLATE}\"\nsinks = [\"demo-receiver\"]\n\
         roles.Employee = {{ name = \"/employee/name\", email = \"/employee/email\" }}\n\
         roles.\"HR Manager\" = {{ name = \"/manager/name\", email = \"/manager/email\" }}\n\
         tabs.start_date = \"/employee/start_date\"\ntabs.job_title = \"/employee/title\"\n\
         custom_fields.employee_id = \"/employee/id\"\n"
    );
    agreements
        + &format!(
            "[[sinks]]\nname = \"demo-receiver\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{secret}\"\ntoken = \"{token}\"\n\
         [[rules]]\nname = \"onboarding\"\nevent_type = \"employee.onboarding.signed\"\nsinks = [\"demo-receiver\"]\n\
         [rules.match]\nsubject = \"Offer letter*\"\n\
         [rules.fields]\nemployee_id = {{ custom_field = \"employee_id\", required = true }}\n\
         department = {{ custom_field = \"department\" }}\n\
         start_date = {{ tab = \"start_date\", role = \"Employee\" }}\n\
         job_title = {{ tab = \"job_title\", role = \"Employee\" }}\n\
         employee = {{ signer = \"Employee\" }}\n\
         [[rules]]\nname = \"equipment\"\nevent_type = \"it.equipment.requested\"\nsinks = [\"demo-receiver\"]\n\
         [rules.match]\nsubject = \"Equipment request*\"\n\
         [rules.fields]\nlaptop_model = {{ tab = \"laptop_model\" }}\nmonitor_count = {{ tab = \"monitor_count\" }}\n\
         employee = {{ signer = \"Employee\" }}\n"
        )
}

fn settings_for(
    sandbox: &Sandbox,
    sandbox_url: &str,
    public_url: &str,
    dir: &Path,
    sinks: &str,
) -> anyhow::Result<Settings> {
    let identity = sandbox.identity();
    let key_path = dir.join("sandbox-private-key.pem");
    std::fs::write(&key_path, &identity.private_key_pem)?;
    let keys: Vec<String> = identity.hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    let toml = format!(
        "[server]\npublic_url = \"{public_url}\"\n[store]\nurl = \"sqlite://{db}\"\n[documents]\nurl = \"file://{docs}\"\n\
         [connect]\nhmac_keys = [{keys}]\n\
         [docusign]\nauth_server = \"{aud}\"\nauth_url = \"{sandbox_url}\"\nintegration_key = \"{ik}\"\n\
         user_id = \"{user}\"\nredirect_uri = \"{redirect}\"\nprivate_key_file = \"{key}\"\nrecheck_base = \"1s\"\nrecheck_cap = \"5s\"\n\
         [log]\nformat = \"human\"\nfilter = \"warn\"\n[api]\nconnect_url = \"{public_url}/docusign/connect\"\n{sinks}",
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
    crate::sandbox::allow_through_consent_page(&crate::docusign::consent_url(settings)?).await?;
    Ok(())
}

/// The HR system's bearer token in the demo.
const HRIS_TOKEN: &str = "demo-hris-token-0123456789";

/// Asks for an offer letter the way an HR system would, waits until it is
/// sent, lets the employee sign in the sandbox, and shows the completion
/// event carrying the request.
async fn send_an_agreement(sandbox: &Sandbox, receiver: &WebhookReceiver, base: &str) -> anyhow::Result<()> {
    let request = serde_json::json!({
        "profile": "offer-letter",
        "data": {
            "employee": { "name": "Ada Lovelace", "email": "ada@example.com", "start_date": "2027-01-04",
                          "title": "Analyst", "id": "E-1815" },
            "manager": { "name": "Grace Hopper", "email": "grace@example.com" },
        },
    });
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/agreements");
    let post = || client.post(&url).bearer_auth(HRIS_TOKEN).header("Idempotency-Key", "hire-E-1815").json(&request);
    let answer: serde_json::Value = post().send().await?.error_for_status()?.json().await?;
    let id = answer["id"].as_str().context("the answer has no agreement id")?.to_string();
    let again: serde_json::Value = post().send().await?.error_for_status()?.json().await?;
    ensure!(again["id"] == answer["id"], "the same Idempotency-Key made a second agreement");
    step("requested", &format!("agreement {id} (202; asked twice with one Idempotency-Key: one agreement)"));
    let one = format!("{url}/{id}");
    let sent = wait_status(&client, &one, "sent").await?;
    let envelope = crate::ids::EnvelopeId::parse(sent["envelope_id"].as_str().context("no envelope id")?)?;
    ensure!(sandbox.sent_envelopes().len() == 1, "DocuSign holds {} envelopes", sandbox.sent_envelopes().len());
    step("sent", &format!("envelope {envelope} from the onboarding template, to ada@example.com"));
    sandbox.sign(envelope).map_err(|e| anyhow::anyhow!("{e}"))?;
    step("signed", "every recipient signed in the sandbox; Connect told countersign");
    wait_status(&client, &one, "completed").await?;
    let subject = envelope.to_string();
    let delivered = receiver
        .wait_until(Duration::from_secs(60), |requests| {
            requests
                .iter()
                .filter_map(ReceivedWebhook::event)
                .any(|e| e["type"] == "employee.onboarding.signed" && e["subject"] == subject.as_str())
        })
        .await
        .map_err(|_| anyhow::anyhow!("no completion event for the agreement's envelope"))?;
    let events: Vec<serde_json::Value> = delivered
        .iter()
        .filter_map(ReceivedWebhook::event)
        .filter(|e| e["data"]["agreement"]["id"] == id.as_str())
        .collect();
    for event in &events {
        println!(
            "  {} {:<27} data.agreement.data.employee.id = {}",
            event["subject"].as_str().unwrap_or("?"),
            event["type"].as_str().unwrap_or("?"),
            event["data"]["agreement"]["data"]["employee"]["id"]
        );
    }
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    ensure!(types == ["agreement.sent", "employee.onboarding.signed"], "the agreement's events were {types:?}");
    Ok(())
}

/// Polls an agreement until it has `wanted` status, for a minute at most.
async fn wait_status(client: &reqwest::Client, url: &str, wanted: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let agreement: serde_json::Value =
            client.get(url).bearer_auth(HRIS_TOKEN).send().await?.error_for_status()?.json().await?;
        if agreement["status"] == wanted {
            return Ok(agreement);
        }
        ensure!(tokio::time::Instant::now() < deadline, "the agreement is {} after a minute", agreement["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
                let job = store
                    .job_by_key(JobKind::ProcessEnvelope.as_str(), &ProcessEnvelopeJob::key(envelope.envelope_id))
                    .await?;
                let error = job.and_then(|j| j.last_error).unwrap_or_else(|| "no error recorded".into());
                bail!("{} was not processed within a minute: {error}", envelope.envelope_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn report_envelope(store: &dyn crate::store::Store, envelope: &Envelope) -> anyhow::Result<()> {
    let notifications = store.enqueued_notifications(envelope.envelope_id).await?;
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

/// Waits for one verified event per envelope, prints each, and fetches every
/// document through the event's own link with the sink's token, as a consumer would.
async fn report_events(receiver: &WebhookReceiver, token: &str, envelopes: &[Envelope]) -> anyhow::Result<()> {
    let delivered = receiver.wait_for_delivered(envelopes.len(), Duration::from_secs(60)).await?;
    let client = reqwest::Client::new();
    for envelope in envelopes {
        let subject = envelope.envelope_id.to_string();
        let event = delivered
            .iter()
            .filter_map(ReceivedWebhook::event)
            .find(|event| event["subject"] == subject.as_str())
            .with_context(|| format!("no event for envelope {subject}"))?;
        let data = &event["data"];
        let signers = data["signers"].as_array().map_or(0, Vec::len);
        let documents = data["documents"].as_array().cloned().unwrap_or_default();
        println!(
            "  {} {} (event {}): {signers} signer(s), {} document link(s)",
            subject,
            event["type"].as_str().unwrap_or("?"),
            event["id"].as_str().unwrap_or("?"),
            documents.len()
        );
        if let Some(fields) = data["fields"].as_object().filter(|f| !f.is_empty()) {
            let shown: Vec<String> = fields
                .iter()
                .map(|(key, value)| match value {
                    serde_json::Value::String(text) => format!("{key}={text}"),
                    other => format!("{key}={}", other["email"].as_str().unwrap_or("…")),
                })
                .collect();
            println!("      fields: {}", shown.join(", "));
        }
        for document in &documents {
            let url = document["url"].as_str().context("a document without a url")?;
            let bytes = client.get(url).bearer_auth(token).send().await?.error_for_status()?.bytes().await?;
            let same = document["sha256"].as_str() == Some(hex::encode(Sha256::digest(&bytes)).as_str());
            ensure!(same, "{url} does not serve the bytes the event describes");
        }
        if !documents.is_empty() {
            println!("      every document fetched through its link (sink token): the bytes match the event's sha256");
        }
    }
    Ok(())
}
