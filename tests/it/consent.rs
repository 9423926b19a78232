//! The consent callback: the consent URL carries a signed, expiring state;
//! DocuSign's redirect lands on `GET /docusign/consent/callback`, which asks
//! for a token at once and wakes the parked jobs, on whichever replica it
//! reaches. A forged, expired or missing state changes nothing.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::docusign::{connect_toml, docusign_toml, options, sandbox, send_all, sender};
use common::{TestApp, eventually};
use countersign::docusign::consent::StateKey;
use countersign::sandbox::connect::ConnectFormat;
use countersign::sandbox::{Envelope, RunningSandbox};
use countersign::store::{EnvelopeStatus, JobState};

const WAIT: Duration = Duration::from_secs(60);

/// Jobs that wait for consent recheck only after ten minutes: anything
/// sooner is the callback's doing.
fn config(sandbox: &RunningSandbox) -> String {
    format!(
        "{}{}[queue]\nworkers = 4\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\n[reconcile]\nenabled = false\n",
        connect_toml(sandbox),
        docusign_toml(sandbox, "recheck_base = \"10m\"\nrecheck_cap = \"10m\"")
    )
}

async fn wait_parked(app: &TestApp, count: u64) {
    eventually(WAIT, "every job parked for consent", || async {
        let stats = app.store.queue_stats().await.unwrap();
        let parked: u64 =
            stats.iter().filter(|s| s.kind == "process_envelope" && s.state == JobState::Parked).map(|s| s.count).sum();
        (parked == count).then_some(())
    })
    .await;
}

async fn wait_processed(app: &TestApp, envelopes: &[Envelope]) {
    for envelope in envelopes {
        let id = envelope.envelope_id;
        eventually(WAIT, &format!("{id} processed"), || async {
            (app.store.envelope(id).await.unwrap()?.status == EnvelopeStatus::Processed).then_some(())
        })
        .await;
    }
}

/// GETs the callback on `app` with `query`; status and page text.
async fn callback(app: &TestApp, query: &str) -> (u16, String) {
    let answer = reqwest::get(format!("{}/docusign/consent/callback?{query}", app.base_url)).await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

fn tokens(sandbox: &RunningSandbox) -> u64 {
    sandbox.sandbox.counters().routes.get("token").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_callback_on_another_replica_wakes_the_parked_jobs_at_once() {
    let sandbox = sandbox().await;
    let db = Arc::new(common::postgres().await);
    let first = TestApp::spawn_shared(db.clone(), &config(&sandbox)).await;
    let second = TestApp::spawn_shared(db.clone(), &config(&sandbox)).await;
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    send_all(&sender(&first, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    wait_parked(&first, 3).await;

    // The user opens the consent URL `consent-url` prints and allows access;
    // DocuSign sends the browser to the redirect URI, here the second replica.
    let consent_url = countersign::docusign::consent_url(&first.settings).unwrap();
    assert!(consent_url.contains("&state="), "{consent_url}");
    let redirect = countersign::sandbox::allow_through_consent_page(&consent_url).await.unwrap();
    let query = url::Url::parse(&redirect).unwrap().query().unwrap().to_string();
    assert!(query.contains("code=") && query.contains("state="), "{redirect}");
    let (status, page) = callback(&second, &query).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Access works"), "{page}");
    assert!(page.contains(&sandbox.sandbox.identity().user.user_id.to_string()), "{page}");

    // Minutes before any recheck was due.
    wait_processed(&first, &envelopes).await;
    assert!(first.store.dead_jobs(10).await.unwrap().is_empty());
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_expired_or_missing_state_is_refused_and_changes_nothing() {
    let sandbox = sandbox().await;
    let app = TestApp::spawn(common::sqlite().await, &config(&sandbox)).await;
    let envelopes = sandbox.sandbox.complete_envelopes(2);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    wait_parked(&app, 2).await;
    // Consent is granted, but nobody has told countersign yet.
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let asked = tokens(&sandbox);

    let key = StateKey::from_settings(&app.settings).unwrap();
    let user = sandbox.sandbox.identity().user.user_id;
    let genuine = key.sign(Some(user), chrono::Utc::now());
    let mut forged = genuine.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let expired = key.sign(Some(user), chrono::Utc::now() - chrono::Duration::hours(25));
    let other_key = genuine.replacen(&user.to_string(), &uuid::Uuid::new_v4().to_string(), 1);
    for (query, why) in [
        (format!("code=x&state={forged}"), "not one countersign issued"),
        (format!("code=x&state={other_key}"), "not one countersign issued"),
        (format!("code=x&state={expired}"), "expired"),
        ("code=x".to_string(), "carries no state"),
        ("state=%ff%fe".to_string(), "not one countersign issued"),
    ] {
        let (status, page) = callback(&app, &query).await;
        assert_eq!(status, 400, "{query}: {page}");
        assert!(page.contains(why), "{query}: {page}");
        assert!(page.contains("Nothing was changed"), "{page}");
    }
    // The user declined: said, and nothing is asked.
    let (status, page) = callback(&app, &format!("error=access_denied&state={genuine}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Access was not granted"), "{page}");
    assert_eq!(tokens(&sandbox), asked, "no token was asked for");
    wait_parked(&app, 2).await;

    // The genuine state: access works and the jobs run now.
    let (status, page) = callback(&app, &format!("code=x&state={genuine}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("2 waiting job(s) were woken"), "{page}");
    wait_processed(&app, &envelopes).await;
    app.shutdown().await;
}

/// The callback before consent is really granted (the user opened the link
/// but another user allowed access): DocuSign still refuses, and the page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_while_docusign_still_refuses_says_what_to_do() {
    let sandbox = sandbox().await;
    let app = TestApp::spawn(common::sqlite().await, &config(&sandbox)).await;
    let key = StateKey::from_settings(&app.settings).unwrap();
    let state = key.sign(None, chrono::Utc::now());
    let (status, page) = callback(&app, &format!("code=x&state={state}")).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("DocuSign still refuses access"), "{page}");
    assert!(page.contains("consent"), "{page}");
    app.shutdown().await;
}
