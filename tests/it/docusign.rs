//! DocuSign access, end to end: countersign serving on loopback, the
//! sandbox playing DocuSign (its request counters are the witness), Connect
//! notifications sent by the sandbox's sender, and `process_envelope` jobs
//! taking each envelope to stored documents.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::docusign::{connect_toml, countersign, docusign_toml, options, sandbox, sandbox_with, send_all, sender};
use common::{TestApp, eventually, metric};
use countersign::config::Settings;
use countersign::docusign::{ApiError, DocuSign, GrantError};
use countersign::ids::EnvelopeId;
use countersign::sandbox::connect::ConnectFormat;
use countersign::sandbox::{Envelope, Fault, RunningSandbox, Sandbox, SandboxConfig, pdf};
use countersign::store::{AttemptOutcome, EnvelopeStatus, JobState};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(60);

async fn wait_processed(app: &TestApp, envelopes: &[Envelope]) {
    for envelope in envelopes {
        let id = envelope.envelope_id;
        eventually(WAIT, &format!("envelope {id} processed"), || async {
            let record = app.store.envelope(id).await.unwrap()?;
            (record.status == EnvelopeStatus::Processed).then_some(())
        })
        .await;
    }
}

/// REST calls (everything but the account server) counted by the sandbox.
fn rest_calls(counters: &countersign::sandbox::Counters) -> u64 {
    counters.routes.iter().filter(|(route, _)| !matches!(route.as_str(), "token" | "userinfo")).map(|(_, n)| n).sum()
}

fn route(sandbox: &RunningSandbox, name: &str) -> u64 {
    sandbox.sandbox.counters().routes.get(name).copied().unwrap_or(0)
}

/// The stored bytes of `document_id` of `envelope`, read back from disk.
async fn stored_bytes(app: &TestApp, envelope: EnvelopeId, document_id: &str) -> Vec<u8> {
    let documents = app.store.documents(envelope).await.unwrap();
    let record = documents.iter().find(|d| d.document_id == document_id).unwrap_or_else(|| {
        panic!("no {document_id} stored for {envelope}: {documents:?}");
    });
    let bytes = std::fs::read(app.documents_dir.path().join(&record.storage_key)).unwrap();
    assert_eq!(bytes.len() as u64, record.size_bytes);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), record.sha256, "the recorded SHA-256 is the file's");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_envelopes_need_one_token_and_get_byte_identical_documents() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let app = countersign(&sandbox, "", "").await;
    let envelopes = sandbox.sandbox.complete_envelopes(100);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    wait_processed(&app, &envelopes).await;

    assert_eq!(route(&sandbox, "token"), 1, "one token serves every envelope");
    assert_eq!(route(&sandbox, "userinfo"), 1, "userinfo is cached");
    assert_eq!(route(&sandbox, "combined"), 100, "one download per envelope");
    assert_eq!(rest_calls(&sandbox.sandbox.counters()), 100, "and no other call");
    for envelope in &envelopes {
        let stored = stored_bytes(&app, envelope.envelope_id, "combined").await;
        assert!(stored == pdf::combined_pdf(envelope, true), "{} differs from DocuSign's", envelope.envelope_id);
        let file = &app.store.documents(envelope.envelope_id).await.unwrap()[0];
        assert_eq!(file.storage_key, format!("{}/{}/Combined.pdf", envelope.account_id, envelope.envelope_id));
    }
}

fn settings_for(sandbox: &RunningSandbox, overrides: &str) -> Settings {
    Settings::from_toml(&docusign_toml(sandbox, overrides)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_jobs_on_a_cold_cache_share_one_token_request() {
    let sandbox = sandbox().await;
    let user = sandbox.sandbox.identity().user.user_id;
    sandbox.sandbox.grant_consent(user, &["signature", "impersonation"]);
    // A slow token endpoint, so that every caller arrives while the first request is in flight.
    sandbox.sandbox.set_fault("token", Fault { latency_ms: 300, ..Fault::default() });
    let docusign = Arc::new(DocuSign::from_settings(&settings_for(&sandbox, "")).unwrap().unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let docusign = docusign.clone();
        tasks.spawn(async move { docusign.token(user).await.map(|t| t.bearer().to_string()) });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(result) = tasks.join_next().await {
        tokens.insert(result.unwrap().unwrap());
    }
    assert_eq!(tokens.len(), 1, "every job got the same token");
    assert_eq!(route(&sandbox, "token"), 1, "and DocuSign was asked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_token_is_replaced_exactly_once() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let app = countersign(&sandbox, "", "").await;
    let sender = sender(&app, &sandbox);
    let first = sandbox.sandbox.complete_envelopes(1);
    send_all(&sender, &first, ConnectFormat::Json, &options(true, false)).await;
    wait_processed(&app, &first).await;
    assert_eq!(route(&sandbox, "token"), 1);

    // DocuSign ends the token early: the REST API answers 401 to it.
    sandbox.sandbox.expire_tokens();
    let more = sandbox.sandbox.complete_envelopes(30);
    send_all(&sender, &more, ConnectFormat::Json, &options(true, false)).await;
    wait_processed(&app, &more).await;
    assert_eq!(route(&sandbox, "token"), 2, "one refresh, however many jobs saw the 401");
    assert!(app.store.dead_jobs(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_is_renewed_before_it_expires() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    // A four-second token is used for half its life, then replaced ahead of expiry.
    sandbox.sandbox.set_token_lifetime(Duration::from_secs(4));
    let docusign = DocuSign::from_settings(&settings_for(&sandbox, "")).unwrap().unwrap();
    let user = sandbox.sandbox.identity().user.user_id;
    let first = docusign.token(user).await.unwrap();
    let again = docusign.token(user).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "reused while fresh");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let renewed = docusign.token(user).await.unwrap();
    assert_ne!(renewed.bearer(), first.bearer());
    assert_eq!(route(&sandbox, "token"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_wait_parked_for_consent_and_finish_once_it_is_granted_on_the_consent_page() {
    let sandbox = sandbox().await;
    let app = countersign(&sandbox, "recheck_base = \"500ms\"\nrecheck_cap = \"2s\"", "").await;
    let envelopes = sandbox.sandbox.complete_envelopes(5);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;

    eventually(WAIT, "every job parked for consent", || async {
        let jobs = app.store.queue_stats().await.unwrap();
        jobs.iter().any(|s| s.kind == "process_envelope" && s.state == JobState::Parked && s.count == 5).then_some(())
    })
    .await;
    let dead = app.store.dead_jobs(10).await.unwrap();
    assert!(dead.is_empty(), "waiting for consent burns no attempts: {dead:?}");
    let ready = reqwest::get(format!("{}/readyz", app.base_url)).await.unwrap();
    assert_eq!(ready.status(), 200, "missing consent is not a reason to stop taking notifications");
    let body: serde_json::Value = ready.json().await.unwrap();
    let user = sandbox.sandbox.identity().user.user_id.to_string();
    assert_eq!(body["docusign"][&user]["state"], "consent_required", "{body}");
    let message = body["docusign"][&user]["message"].as_str().unwrap();
    let settings = Settings::from_toml(&docusign_toml(&sandbox, "")).unwrap();
    let consent_url = countersign::cli::consent_url(&settings).unwrap();
    // Each consent URL carries a fresh state; the rest is the same.
    let without_state = consent_url.split("&state=").next().unwrap();
    assert!(message.contains(without_state), "the consent URL is shown: {message}");
    let tokens_while_parked = route(&sandbox, "token");

    // The user opens the consent URL and allows access; nothing else is done.
    countersign::sandbox::allow_through_consent_page(&consent_url).await.unwrap();
    wait_processed(&app, &envelopes).await;
    assert!(tokens_while_parked >= 1);
    for envelope in &envelopes {
        let job = app.store.job_attempts(job_of(&app, envelope.envelope_id).await).await.unwrap();
        assert!(job.iter().any(|a| a.outcome == Some(AttemptOutcome::Deferred)), "{job:?}");
        assert_eq!(job.last().unwrap().outcome, Some(AttemptOutcome::Succeeded));
    }
}

/// The id of the process_envelope job of `envelope`.
async fn job_of(app: &TestApp, envelope: EnvelopeId) -> countersign::ids::JobId {
    app.store.job_by_key("process_envelope", &envelope.to_string()).await.unwrap().expect("a job").id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_refused_grant_is_reported_with_what_to_fix_and_makes_the_service_not_ready() {
    let other_key = Sandbox::new(SandboxConfig::default()).unwrap().identity().private_key_pem.clone();
    type Breakage = Box<dyn Fn(&RunningSandbox) -> String>;
    let cases: Vec<(&str, Breakage, &str)> = vec![
        ("user_not_found", Box::new(|_| format!("user_id = \"{}\"", uuid::Uuid::new_v4())), "not an active user"),
        (
            "issuer_not_found",
            Box::new(|_| format!("integration_key = \"{}\"", uuid::Uuid::new_v4())),
            "docusign.auth_server",
        ),
        (
            "no_valid_keys_or_signatures",
            Box::new(move |_| format!("private_key = '''\n{other_key}'''")),
            "private key does not match",
        ),
        (
            "expired_grant",
            Box::new(|sandbox| {
                sandbox.sandbox.set_clock_skew(2 * 3600);
                String::new()
            }),
            "clock",
        ),
    ];
    for (code, break_it, advice) in cases {
        let sandbox = sandbox().await;
        sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
        let overrides = break_it(&sandbox);
        let toml = format!("{}{}[queue]\nworkers = 2\n", connect_toml(&sandbox), docusign_toml(&sandbox, &overrides));
        let app = TestApp::spawn(common::sqlite().await, &toml).await;
        let envelopes = sandbox.sandbox.complete_envelopes(1);
        send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
        let body = eventually(WAIT, &format!("{code}: not ready"), || async {
            let response = reqwest::get(format!("{}/readyz", app.base_url)).await.unwrap();
            (response.status() == 503).then_some(())?;
            Some(response.json::<serde_json::Value>().await.unwrap())
        })
        .await;
        let reason = body["reason"].as_str().unwrap();
        assert!(reason.contains(code), "{code}: {reason}");
        assert!(reason.contains(advice), "{code}: the advice says what to fix: {reason}");
        // Readiness flips when the grant is refused; the job is parked a moment later, when its attempt closes.
        let key = envelopes[0].envelope_id.to_string();
        let job = eventually(WAIT, &format!("{code}: the job parked"), || async {
            let job = app.store.job_by_key("process_envelope", &key).await.unwrap()?;
            (job.state == JobState::Parked).then_some(job)
        })
        .await;
        assert_eq!(job.attempts, 0, "{code}: the job waits rather than burning attempts");
        app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_429s_is_waited_out_without_a_dead_letter() {
    let sandbox = sandbox_with(SandboxConfig {
        burst_limit: 4,
        burst_window: Duration::from_secs(2),
        ..SandboxConfig::default()
    })
    .await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let app = countersign(&sandbox, "burst_reserve = 0\nburst_window = \"2s\"", "").await;
    let envelopes = sandbox.sandbox.complete_envelopes(12);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    wait_processed(&app, &envelopes).await;
    assert!(app.store.dead_jobs(10).await.unwrap().is_empty());
    let mut paused = 0;
    for envelope in &envelopes {
        let attempts = app.store.job_attempts(job_of(&app, envelope.envelope_id).await).await.unwrap();
        assert!(attempts.iter().all(|a| a.outcome != Some(AttemptOutcome::Failed)), "{attempts:?}");
        paused += attempts.iter().filter(|a| a.outcome == Some(AttemptOutcome::Deferred)).count();
    }
    assert!(paused > 0, "some jobs were paused by the burst limit");
    assert!(route(&sandbox, "combined") >= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncated_download_is_retried_and_never_stored_short() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    sandbox.sandbox.set_fault("combined", Fault { truncate_rate: 1.0, ..Fault::default() });
    let app = countersign(&sandbox, "", "").await;
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    for envelope in &envelopes {
        let id = envelope.envelope_id.to_string();
        eventually(WAIT, "a failed download attempt", || async {
            let job = app.store.job_by_key("process_envelope", &id).await.unwrap()?;
            let attempts = app.store.job_attempts(job.id).await.unwrap();
            attempts.iter().any(|a| a.outcome == Some(AttemptOutcome::Failed)).then_some(())
        })
        .await;
        assert!(app.store.documents(envelope.envelope_id).await.unwrap().is_empty(), "nothing recorded");
    }
    let published = walk(app.documents_dir.path());
    assert!(published.is_empty(), "no truncated file was published: {published:?}");

    sandbox.sandbox.set_fault("combined", Fault::default());
    wait_processed(&app, &envelopes).await;
    for envelope in &envelopes {
        let stored = stored_bytes(&app, envelope.envelope_id, "combined").await;
        assert!(stored == pdf::combined_pdf(envelope, true), "byte-identical to DocuSign's");
        let attempts = app.store.job_attempts(job_of(&app, envelope.envelope_id).await).await.unwrap();
        let failed = attempts.iter().find(|a| a.outcome == Some(AttemptOutcome::Failed)).unwrap();
        assert!(failed.error.as_deref().unwrap().contains("document combined"), "{failed:?}");
    }
}

/// Files under `dir`, staging excluded.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_name() == ".incoming" {
            continue;
        }
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docusign_calls_per_envelope_follow_what_the_notification_carried() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let app = countersign(&sandbox, "", "").await;
    let sender = sender(&app, &sandbox);
    let cases = [
        ("JSON with documents and summary", ConnectFormat::Json, options(true, true), 0),
        ("XML with DocumentPDFs", ConnectFormat::Xml, options(true, true), 0),
        ("JSON with the envelope summary", ConnectFormat::Json, options(true, false), 1),
        ("XML without documents", ConnectFormat::Xml, options(true, false), 1),
        ("JSON without the summary", ConnectFormat::Json, options(false, false), 2),
    ];
    for (what, format, opts, expected) in cases {
        let before = rest_calls(&sandbox.sandbox.counters());
        let envelopes = sandbox.sandbox.complete_envelopes(1);
        send_all(&sender, &envelopes, format, &opts).await;
        wait_processed(&app, &envelopes).await;
        let calls = rest_calls(&sandbox.sandbox.counters()) - before;
        assert_eq!(calls, expected, "{what}: {:?}", sandbox.sandbox.counters().routes);
        let documents = app.store.documents(envelopes[0].envelope_id).await.unwrap();
        assert!(!documents.is_empty(), "{what}: documents stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn separate_and_archive_downloads_store_what_docusign_serves() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    for (mode, expected_calls) in [("separate", None), ("archive", Some(1))] {
        let app = countersign(&sandbox, "", &format!("download = \"{mode}\"")).await;
        let envelopes = sandbox.sandbox.complete_envelopes(1);
        let envelope = &envelopes[0];
        let before = rest_calls(&sandbox.sandbox.counters());
        send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
        wait_processed(&app, &envelopes).await;
        let calls = rest_calls(&sandbox.sandbox.counters()) - before;
        let stored: BTreeMap<String, String> = app
            .store
            .documents(envelope.envelope_id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.document_id, d.file_name))
            .collect();
        if mode == "archive" {
            assert_eq!(calls, expected_calls.unwrap());
            let bytes = stored_bytes(&app, envelope.envelope_id, "archive").await;
            assert!(bytes == pdf::archive_zip(envelope), "the archive is DocuSign's");
        } else {
            assert_eq!(calls as usize, envelope.documents.len() + 1, "each document and the certificate");
            for document in &envelope.documents {
                let bytes = stored_bytes(&app, envelope.envelope_id, &document.document_id).await;
                assert!(bytes == pdf::document_pdf(envelope, document), "document {}", document.document_id);
                assert_eq!(stored[&document.document_id], format!("{}-{}", document.document_id, document.name));
            }
            let certificate = stored_bytes(&app, envelope.envelope_id, "certificate").await;
            assert!(certificate == pdf::certificate_pdf(envelope));
        }
        app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pkcs1_private_key_works_like_a_pkcs8_one() {
    let sandbox = sandbox().await;
    let user = sandbox.sandbox.identity().user.user_id;
    sandbox.sandbox.grant_consent(user, &["signature", "impersonation"]);
    let pkcs1 = pkcs1_pem(&sandbox.sandbox.identity().private_key_pem);
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let settings = settings_for(&sandbox, &format!("private_key = '''\n{pkcs1}'''"));
    let docusign = DocuSign::from_settings(&settings).unwrap().unwrap();
    let accounts = docusign.accounts(user).await.unwrap();
    assert_eq!(accounts[0].account_id, sandbox.sandbox.identity().account_id);
    assert_eq!(accounts[0].api_base, format!("{}/restapi", sandbox.base_url()));
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 PEM: the last OCTET STRING
/// of the PrivateKeyInfo sequence.
fn pkcs1_pem(pkcs8_pem: &str) -> String {
    use base64::Engine;
    let body: String = pkcs8_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    // SEQUENCE { INTEGER 0, SEQUENCE { OID, NULL }, OCTET STRING { RSAPrivateKey } }
    let (_, inner) = der_item(&der);
    let (version_len, _) = der_item(inner);
    let (algorithm_len, _) = der_item(&inner[version_len..]);
    let octets_at = version_len + algorithm_len;
    let (_, key) = der_item(&inner[octets_at..]);
    countersign::sandbox::identity::pem("RSA PRIVATE KEY", key)
}

/// One DER item at the start of `bytes`: its total length and its contents.
fn der_item(bytes: &[u8]) -> (usize, &[u8]) {
    let first = bytes[1] as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        (bytes[2..2 + n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), 2 + n)
    };
    (header + len, &bytes[header..header + len])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_gets_a_token_and_lists_the_accounts_or_prints_the_consent_url() {
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[store]\nurl = \"sqlite://cs.db\"\n{}", docusign_toml(&sandbox, ""));
    std::fs::write(dir.path().join("c.toml"), toml).unwrap();
    let run = || async {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
                .args(["check", "--config", "c.toml"])
                .current_dir(dir)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let out = run().await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("CONSENT REQUIRED"), "{stdout}");
    assert!(stdout.contains("/oauth/auth?response_type=code&scope=signature%20impersonation"), "{stdout}");

    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let out = run().await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("token ok; 1 account(s)"), "{stdout}");
    assert!(stdout.contains(&sandbox.sandbox.identity().account_id.to_string()), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_errors_name_the_refusal() {
    let sandbox = sandbox().await;
    let user = sandbox.sandbox.identity().user.user_id;
    let docusign = DocuSign::from_settings(&settings_for(&sandbox, "")).unwrap().unwrap();
    match docusign.accounts(user).await {
        Err(ApiError::Grant(GrantError::ConsentRequired { how, .. })) => assert!(how.contains("/oauth/auth?")),
        other => panic!("expected consent_required, got {other:?}"),
    }
    sandbox.sandbox.grant_consent(user, &["signature", "impersonation"]);
    // A fresh client, with no token cached.
    let docusign = DocuSign::from_settings(&settings_for(&sandbox, "")).unwrap().unwrap();
    let missing = EnvelopeId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let error = docusign.envelope(user, sandbox.sandbox.identity().account_id, missing).await.unwrap_err();
    assert_eq!(error.code(), Some("ENVELOPE_DOES_NOT_EXIST"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_the_pipeline_at_work() {
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let app = countersign(&sandbox, "", "").await;
    let scrape = || async { reqwest::get(format!("{}/metrics", app.base_url)).await.unwrap().text().await.unwrap() };
    let before = scrape().await;
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    wait_processed(&app, &envelopes).await;
    let refused = reqwest::Client::new()
        .post(app.connect_url())
        .header("X-DocuSign-Signature-1", "bm90IGEgc2lnbmF0dXJl")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let after = scrape().await;

    let moved = |name: &str, labels: &[(&str, &str)]| metric(&after, name, labels) - metric(&before, name, labels);
    let accepted = [("event", "envelope-completed"), ("outcome", "accepted")];
    // The recorder is the process's: other tests running beside this one count too.
    assert!(moved("countersign_notifications_total", &accepted) >= 3.0, "{after}");
    assert!(moved("countersign_hmac_failures_total", &[]) >= 1.0);
    assert!(moved("countersign_docusign_requests_total", &[("route", "document"), ("status", "200")]) >= 3.0);
    let succeeded = [("kind", "process_envelope"), ("outcome", "succeeded")];
    assert!(moved("countersign_job_runs_total", &succeeded) >= 3.0);
    assert!(moved("countersign_job_duration_seconds_count", &succeeded) >= 3.0, "job durations are a histogram");
    assert!(metric(&after, "countersign_docusign_token_requests_total", &[("outcome", "issued")]) >= 1.0);
    assert_eq!(metric(&after, "countersign_jobs", &[("kind", "process_envelope"), ("state", "done")]), 3.0);
    let account = sandbox.sandbox.identity().account_id.to_string();
    let remaining =
        metric(&after, "countersign_docusign_rate_limit_remaining", &[("account", &account), ("window", "hourly")]);
    assert!(remaining > 0.0 && remaining < 3000.0, "{remaining}");
    assert!(after.contains("# HELP countersign_notifications_total"), "metrics are described");
}
