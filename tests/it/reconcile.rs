//! Reconciliation against the sandbox: completed envelopes that Connect never
//! delivered are found by listing the account, and processed once.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, eventually};
use countersign::sandbox::connect::{ConnectFormat, ConnectSender, NotificationOptions, RetryPolicy};
use countersign::sandbox::{Envelope, RunningSandbox, Sandbox, SandboxConfig};
use countersign::store::{EnvelopeStatus, NotificationOrigin, Store};

const WAIT: Duration = Duration::from_secs(60);

async fn sandbox(config: SandboxConfig) -> RunningSandbox {
    let running =
        Sandbox::new(SandboxConfig { document_bytes: 4_000, ..config }).unwrap().serve("127.0.0.1:0").await.unwrap();
    running.sandbox.grant_consent(running.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    running
}

fn config(sandbox: &RunningSandbox, extra: &str) -> String {
    let id = sandbox.sandbox.identity();
    let keys: Vec<String> = id.hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "\n[connect]\nhmac_keys = [{keys}]\n\
         [docusign]\nauth_server = \"{aud}\"\nauth_url = \"{url}\"\nintegration_key = \"{ik}\"\nuser_id = \"{user}\"\n\
         redirect_uri = \"{redirect}\"\nprivate_key = '''\n{pem}'''\n{extra}\n\
         [queue]\nworkers = 4\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\n",
        keys = keys.join(", "),
        aud = sandbox.sandbox.config().auth_host,
        url = sandbox.base_url(),
        ik = id.integration_key,
        user = id.user.user_id,
        redirect = id.redirect_uri,
        pem = id.private_key_pem,
    )
}

/// countersign reconciling every second, two envelopes per listing page,
/// with no grace: an envelope completed a moment ago counts as missed.
async fn countersign(sandbox: &RunningSandbox, db: Arc<common::TestStore>, docusign_extra: &str) -> TestApp {
    countersign_with_grace(sandbox, db, docusign_extra, "0s").await
}

async fn countersign_with_grace(
    sandbox: &RunningSandbox,
    db: Arc<common::TestStore>,
    docusign_extra: &str,
    grace: &str,
) -> TestApp {
    let toml = format!(
        "{}[reconcile]\ninterval = \"1s\"\npage_size = 2\ngrace = \"{grace}\"\n",
        config(sandbox, docusign_extra)
    );
    TestApp::spawn_shared(db, &toml).await
}

async fn send_by_connect(
    app: &TestApp,
    sandbox: &RunningSandbox,
    envelopes: &[Envelope],
    options: &NotificationOptions,
) {
    let sender = ConnectSender::new(
        app.connect_url(),
        sandbox.sandbox.identity().hmac_keys.clone(),
        RetryPolicy { max_retries: 0, interval: Duration::from_millis(100), timeout: Duration::from_secs(30) },
    );
    for envelope in envelopes {
        let report = sender.send(envelope, ConnectFormat::Json, options).await;
        assert!(report.delivered, "{report:?}");
    }
}

async fn wait_processed(store: &dyn Store, envelopes: &[Envelope]) {
    wait_processed_within(WAIT, store, envelopes).await;
}

async fn wait_processed_within(wait: Duration, store: &dyn Store, envelopes: &[Envelope]) {
    for envelope in envelopes {
        let id = envelope.envelope_id;
        eventually(wait, &format!("{id} processed"), || async {
            let record = store.envelope(id).await.unwrap()?;
            (record.status == EnvelopeStatus::Processed).then_some(())
        })
        .await;
    }
}

fn route(sandbox: &RunningSandbox, name: &str) -> u64 {
    sandbox.sandbox.counters().routes.get(name).copied().unwrap_or(0)
}

/// `countersign reconcile --config c.toml --since SINCE`, run in `dir`.
fn reconcile_by_hand(dir: &std::path::Path, since: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["reconcile", "--config", "c.toml", "--since", since])
        .current_dir(dir)
        .output()
        .unwrap()
}

async fn origins(store: &dyn Store, envelope: &Envelope) -> Vec<NotificationOrigin> {
    store.enqueued_notifications(envelope.envelope_id).await.unwrap().iter().map(|n| n.new.origin).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envelopes_connect_never_delivered_are_found_and_every_envelope_is_processed_once() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let db = Arc::new(common::sqlite().await);
    let app = countersign(&sandbox, db.clone(), "").await;
    let account = sandbox.sandbox.identity().account_id;
    eventually(WAIT, "the first pass sets the checkpoint", || async {
        app.store.reconcile_checkpoint(account).await.unwrap()
    })
    .await;

    // Five envelopes complete; Connect delivers two of them, the listener never hears of three.
    let envelopes = sandbox.sandbox.complete_envelopes(5);
    let (delivered, missed) = envelopes.split_at(2);
    // Of one missed envelope Connect delivered only `envelope-sent`, an event
    // countersign records and ignores: that is not its completion received.
    let sent = NotificationOptions { event: "envelope-sent".into(), ..NotificationOptions::default() };
    send_by_connect(&app, &sandbox, &missed[..1], &sent).await;
    send_by_connect(&app, &sandbox, delivered, &NotificationOptions::default()).await;
    wait_processed(&*app.store, &envelopes).await;

    for envelope in missed {
        assert_eq!(origins(&*app.store, envelope).await, [NotificationOrigin::Reconciliation]);
    }
    for envelope in delivered {
        assert!(origins(&*app.store, envelope).await.contains(&NotificationOrigin::Connect));
    }
    // Connect delivers a missed envelope late: recorded, but no second job.
    send_by_connect(&app, &sandbox, &missed[..1], &NotificationOptions::default()).await;
    assert_eq!(origins(&*app.store, &missed[0]).await.len(), 2);
    let jobs: u64 =
        app.store.queue_stats().await.unwrap().iter().filter(|s| s.kind == "process_envelope").map(|s| s.count).sum();
    assert_eq!(jobs, 5, "one process_envelope job per envelope, whoever told countersign first");
    assert_eq!(route(&sandbox, "combined"), 5, "each envelope's documents were fetched once");
    // A listed envelope carries no recipients or custom fields: those are fetched, once.
    let mut from_listing = 0;
    for envelope in &envelopes {
        let job = app.store.job_by_key("process_envelope", &envelope.envelope_id.to_string()).await.unwrap().unwrap();
        let notification_id = job.payload["notification_id"].as_str().unwrap().to_string();
        let notifications = app.store.enqueued_notifications(envelope.envelope_id).await.unwrap();
        let first = notifications.iter().find(|n| n.new.id.to_string() == notification_id).unwrap();
        from_listing += u64::from(first.new.origin == NotificationOrigin::Reconciliation);
    }
    assert!(from_listing >= 3);
    assert_eq!(route(&sandbox, "envelope"), from_listing);
    let checkpoint = app.store.reconcile_checkpoint(account).await.unwrap().unwrap();
    assert!(checkpoint.found_total >= 3, "{checkpoint:?}");
    assert!(route(&sandbox, "listing") >= 3, "five envelopes at two per page take three pages");
    assert!(app.store.dead_jobs(10).await.unwrap().is_empty());
}

/// Connect slower than a pass, but inside `reconcile.grace`: passes go by
/// and do not take the envelope for a missed one; Connect's notification,
/// documents embedded, is then the only one and nothing is downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_envelope_completed_within_the_grace_is_left_to_connect() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let app = countersign_with_grace(&sandbox, Arc::new(common::sqlite().await), "", "1h").await;
    let account = sandbox.sandbox.identity().account_id;
    eventually(WAIT, "the first pass sets the checkpoint", || async {
        app.store.reconcile_checkpoint(account).await.unwrap()
    })
    .await;
    let envelopes = sandbox.sandbox.complete_envelopes(2);
    let listings = route(&sandbox, "listing");
    eventually(WAIT, "two more passes", || async { (route(&sandbox, "listing") >= listings + 2).then_some(()) }).await;
    for envelope in &envelopes {
        let job = app.store.job_by_key("process_envelope", &envelope.envelope_id.to_string()).await.unwrap();
        assert!(job.is_none(), "{} is not taken for missed within the grace", envelope.envelope_id);
    }

    let embedded = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    send_by_connect(&app, &sandbox, &envelopes, &embedded).await;
    wait_processed(&*app.store, &envelopes).await;
    for envelope in &envelopes {
        assert_eq!(origins(&*app.store, envelope).await, [NotificationOrigin::Connect]);
    }
    assert_eq!(app.store.reconcile_checkpoint(account).await.unwrap().unwrap().found_total, 0);
    assert_eq!(route(&sandbox, "combined") + route(&sandbox, "envelope"), 0, "the embedded documents were enough");
}

/// Past the grace, an envelope Connect never delivered is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_envelope_completed_longer_ago_than_the_grace_is_found() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let app = countersign_with_grace(&sandbox, Arc::new(common::sqlite().await), "", "2s").await;
    let missed = sandbox.sandbox.complete_envelopes(1);
    wait_processed(&*app.store, &missed).await;
    assert_eq!(origins(&*app.store, &missed[0]).await, [NotificationOrigin::Reconciliation]);
    let account = sandbox.sandbox.identity().account_id;
    let checkpoint = app.store.reconcile_checkpoint(account).await.unwrap().unwrap();
    assert_eq!(checkpoint.found_total, 1);
    // The pass that found it listed no further than the grace before its own time.
    let job = app.store.job_by_key("process_envelope", &missed[0].envelope_id.to_string()).await.unwrap().unwrap();
    let completed = missed[0].completed_at;
    assert!(job.created_at >= completed + chrono::Duration::seconds(2), "{job:?} for {completed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checkpoint_survives_a_restart() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let db = Arc::new(common::sqlite().await);
    let account = sandbox.sandbox.identity().account_id;
    let app = countersign(&sandbox, db.clone(), "").await;
    let missed = sandbox.sandbox.complete_envelopes(2);
    wait_processed(&*app.store, &missed).await;
    let before = app.store.reconcile_checkpoint(account).await.unwrap().unwrap();
    app.shutdown().await;

    // Found while countersign was down: the next pass starts from the stored checkpoint.
    let missed_while_down = sandbox.sandbox.complete_envelopes(3);
    let app = countersign(&sandbox, db.clone(), "").await;
    let restored = app.store.reconcile_checkpoint(account).await.unwrap().unwrap();
    assert!(restored.listed_until >= before.listed_until, "{restored:?} after {before:?}");
    wait_processed(&*app.store, &missed_while_down).await;
    assert_eq!(route(&sandbox, "combined"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_during_a_pass_resumes_later_without_skipping_anything() {
    // Three calls per two-second window: a pass over four pages runs into the limit.
    let sandbox =
        sandbox(SandboxConfig { burst_limit: 3, burst_window: Duration::from_secs(2), ..SandboxConfig::default() })
            .await;
    let db = Arc::new(common::sqlite().await);
    let app = countersign(&sandbox, db, "burst_reserve = 0\nburst_window = \"2s\"").await;
    let missed = sandbox.sandbox.complete_envelopes(7);
    // At three calls per two seconds, four listing pages and seven
    // envelopes' downloads take this test 40-60 s on its own; beside the
    // other test binaries in CI, more (it once ran out of 60 s).
    wait_processed_within(Duration::from_secs(180), &*app.store, &missed).await;
    for envelope in &missed {
        assert_eq!(origins(&*app.store, envelope).await, [NotificationOrigin::Reconciliation]);
    }
    assert!(app.store.dead_jobs(10).await.unwrap().is_empty());
    let account = sandbox.sandbox.identity().account_id;
    let checkpoint = eventually(WAIT, "the interrupted pass to finish", || async {
        app.store.reconcile_checkpoint(account).await.unwrap().filter(|c| c.found_total >= 7)
    })
    .await;
    assert_eq!(checkpoint.found_total, 7, "every envelope found once, none skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_by_hand_backfills_from_a_time_and_shows_progress() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let missed = sandbox.sandbox.complete_envelopes(3);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cs.db");
    let toml = format!(
        "[store]\nurl = \"sqlite://{}\"\n{}[reconcile]\npage_size = 2\ngrace = \"0s\"\n",
        db.display(),
        config(&sandbox, "")
    );
    std::fs::write(dir.path().join("c.toml"), toml).unwrap();
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || reconcile_by_hand(&cwd, &since)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("page 1: 2 of 3 listed"), "{stdout}");
    assert!(stdout.contains("page 2: 3 of 3 listed"), "{stdout}");
    assert!(stdout.contains("3 were never delivered by Connect and are now queued"), "{stdout}");

    let store = countersign::store::open(&format!("sqlite://{}", db.display()), 1).await.unwrap();
    for envelope in &missed {
        assert_eq!(origins(&*store, envelope).await, [NotificationOrigin::Reconciliation]);
        let job = store.job_by_key("process_envelope", &envelope.envelope_id.to_string()).await.unwrap();
        assert!(job.is_some(), "queued for processing");
    }
    let bad = reconcile_by_hand(dir.path(), "yesterday");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since \"yesterday\""));
    // Within the grace: said, rather than an empty listing.
    let toml = std::fs::read_to_string(dir.path().join("c.toml")).unwrap().replace("grace = \"0s\"", "grace = \"15m\"");
    std::fs::write(dir.path().join("c.toml"), toml).unwrap();
    let recent = reconcile_by_hand(dir.path(), "10m");
    assert!(!recent.status.success());
    assert!(
        String::from_utf8_lossy(&recent.stderr).contains("is within reconcile.grace (15m)"),
        "{}",
        String::from_utf8_lossy(&recent.stderr)
    );
}

/// Reconciliation finds completed envelopes to process them: where the
/// operator does not process completions, it neither runs on its own nor
/// by hand, and no envelope is processed behind the configuration's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_completions_processed_there_is_no_reconciliation() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let missed = sandbox.sandbox.complete_envelopes(2);
    let not_completions = "[connect]\nprocess_events = [\"recipient-completed\"]\n";
    let toml =
        format!("{}[reconcile]\ninterval = \"1s\"\n", config(&sandbox, "").replace("[connect]\n", not_completions));
    let app = TestApp::spawn_shared(Arc::new(common::sqlite().await), &toml).await;
    // Three passes' time: none runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(route(&sandbox, "listing"), 0, "no envelope listing was asked for");
    for envelope in &missed {
        assert!(app.store.job_by_key("process_envelope", &envelope.envelope_id.to_string()).await.unwrap().is_none());
    }
    let account = sandbox.sandbox.identity().account_id;
    assert!(app.store.reconcile_checkpoint(account).await.unwrap().is_none());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), &toml).unwrap();
    let by_hand = reconcile_by_hand(dir.path(), "2026-01-01T00:00:00Z");
    assert!(!by_hand.status.success());
    let stderr = String::from_utf8_lossy(&by_hand.stderr);
    assert!(stderr.contains("connect.process_events does not include envelope-completed"), "{stderr}");
    assert_eq!(route(&sandbox, "listing"), 0);
}
