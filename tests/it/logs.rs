//! What an operator's log collector receives: `countersign serve` as its own
//! process, logging JSON at debug level, runs the whole pipeline (Connect in
//! JSON and XML, refused requests, DocuSign calls with a token renewal,
//! document downloads, webhook deliveries) and the logs hold none of the
//! configured secrets, no access token and no document bytes.

use crate::common;

use std::time::Duration;

use common::docusign::{options, sandbox};
use common::process::{ServeProcess, free_port, write_config};
use countersign::deliver::receiver::{WebhookReceiver, random_secret};
use countersign::sandbox::connect::{ConnectFormat, ConnectSender, RetryPolicy};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipeline_run_logs_no_secret_no_token_and_no_document_bytes() {
    let sandbox = sandbox().await;
    let identity = sandbox.sandbox.identity().clone();
    sandbox.sandbox.grant_consent(identity.user.user_id, &["signature", "impersonation"]);
    let webhook_secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&webhook_secret]).await.unwrap();
    let sink_token = format!("sink-token-{}", uuid::Uuid::new_v4().simple());
    let admin_token = format!("admin-token-{}", uuid::Uuid::new_v4().simple());
    let basic_password = format!("basic-{}", uuid::Uuid::new_v4().simple());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), &identity.private_key_pem).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let keys: Vec<String> = identity.hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    let config = format!(
        "[server]\npublic_url = \"{base}\"\n\
         [log]\nformat = \"json\"\nfilter = \"debug\"\n\
         [connect]\nhmac_keys = [{keys}]\nbasic_auth_user = \"docusign\"\nbasic_auth_password = \"{basic_password}\"\n\
         [docusign]\nauth_server = {aud:?}\nauth_url = {auth:?}\nintegration_key = \"{ik}\"\nuser_id = \"{user}\"\n\
         redirect_uri = {redirect:?}\nprivate_key_file = \"key.pem\"\n\
         [queue]\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\n[reconcile]\nenabled = false\n\
         [admin]\ntoken = \"{admin_token}\"\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{hook}\"\nsecret = \"{webhook_secret}\"\ntoken = \"{sink_token}\"\n",
        keys = keys.join(", "),
        aud = sandbox.sandbox.config().auth_host,
        auth = sandbox.base_url(),
        ik = identity.integration_key,
        user = identity.user.user_id,
        redirect = identity.redirect_uri,
        hook = receiver.url(),
    );
    let config = write_config(dir.path(), &config);
    let serve = ServeProcess::start(dir.path(), &config, port).await;
    let client = reqwest::Client::new();

    let sender = ConnectSender::new(
        format!("{base}/docusign/connect"),
        identity.hmac_keys.clone(),
        RetryPolicy { max_retries: 0, interval: Duration::from_millis(100), timeout: Duration::from_secs(30) },
    )
    .with_basic_auth("docusign", &basic_password);
    let envelopes = sandbox.sandbox.complete_envelopes(4);
    for (i, envelope) in envelopes.iter().enumerate() {
        if i == 2 {
            // Once a token is in use, DocuSign ends it early: the next call gets 401, the token is renewed.
            receiver.wait_for_delivered(2, WAIT).await.unwrap();
            sandbox.sandbox.expire_tokens();
        }
        let format = if i % 2 == 0 { ConnectFormat::Json } else { ConnectFormat::Xml };
        let report = sender.send(envelope, format, &options(true, i == 0)).await;
        assert!(report.delivered, "{:?} {:?}", report.last_status, report.last_error);
    }
    // Refusals are logged too: a wrong signature, a wrong password, a malformed body.
    let refused = client
        .post(format!("{base}/docusign/connect"))
        .basic_auth("docusign", Some(&basic_password))
        .header("X-DocuSign-Signature-1", "d3Jvbmc=")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = client
        .post(format!("{base}/docusign/connect"))
        .basic_auth("docusign", Some("not-the-password"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    receiver.wait_for_delivered(envelopes.len(), WAIT).await.unwrap();
    // The admin API and page, used rightly and wrongly: a wrong token is logged as a refusal, never echoed.
    let admin = |path: &str| client.get(format!("{base}/admin/api{path}")).bearer_auth(&admin_token).send();
    assert_eq!(admin("/overview").await.unwrap().status(), 200);
    assert_eq!(admin(&format!("/envelopes/{}", envelopes[0].envelope_id)).await.unwrap().status(), 200);
    let reload = client.post(format!("{base}/admin/api/keys/reload")).bearer_auth(&admin_token).send().await.unwrap();
    assert_eq!(reload.status(), 200);
    let wrong = format!("{admin_token}-wrong");
    let refused = client.get(format!("{base}/admin/api/overview")).bearer_auth(&wrong).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let login = |token: String| {
        let page = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let url = format!("{base}/admin/login");
        async move { page.post(url).form(&[("token", token)]).send().await.unwrap() }
    };
    assert_eq!(login(wrong.clone()).await.status(), 401);
    let session = login(admin_token.clone()).await;
    let cookie = session.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let session_value = cookie.split_once('=').unwrap().1.to_string();
    let scrape = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();

    let (exit, logs) = serve.terminate();
    assert!(exit.success(), "serve exits 0 on SIGTERM");

    // The logs are the real thing: JSON lines about these envelopes, at debug level.
    let lines: Vec<serde_json::Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(lines.len() > 20, "JSON log lines were captured:\n{logs}");
    for envelope in &envelopes {
        assert!(logs.contains(&envelope.envelope_id.to_string()), "the logs name envelope {}", envelope.envelope_id);
    }
    assert!(logs.contains("DEBUG"), "debug level was on");

    let tokens = sandbox.sandbox.issued_tokens();
    assert!(tokens.len() >= 2, "a token was renewed: {tokens:?}");
    let pem_body: Vec<&str> = identity.private_key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let webhook_key = webhook_secret.trim_start_matches("whsec_");
    let mut secrets: Vec<(&str, &str)> = vec![
        ("the webhook secret", webhook_key),
        ("the sink token", &sink_token),
        ("the admin token", &admin_token),
        ("a wrong admin token", &wrong),
        ("an admin page session", &session_value),
        ("the Basic auth password", &basic_password),
    ];
    for key in &identity.hmac_keys {
        secrets.push(("a Connect HMAC key", key));
    }
    for line in &pem_body {
        secrets.push(("a line of the private key", line));
    }
    for token in &tokens {
        secrets.push(("an access token", token));
    }
    for (what, secret) in secrets {
        assert!(!logs.contains(secret), "{what} appears in the logs");
        assert!(!scrape.contains(secret), "{what} appears in /metrics");
    }
    // Document bytes, raw or base64 (as in a notification's PDFBytes).
    assert!(!logs.contains("%PDF-") && !logs.contains("JVBERi0"), "document bytes appear in the logs");
}
