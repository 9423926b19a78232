//! The DocuSign sandbox behaves as `docs/DOCUSIGN.md` says DocuSign does.

use std::time::{Duration, Instant};

use chrono::Utc;
use countersign::docusign::jwt::JwtGrant;
use countersign::sandbox::{Fault, RunningSandbox, Sandbox, SandboxConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

async fn start() -> RunningSandbox {
    start_with(SandboxConfig { document_bytes: 8_000, ..SandboxConfig::default() }).await
}

async fn start_with(config: SandboxConfig) -> RunningSandbox {
    Sandbox::new(config).unwrap().serve("127.0.0.1:0").await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Claims as DocuSign's SDKs build them: iss, sub, aud, iat, exp, scope.
fn sdk_claims(sandbox: &Sandbox) -> Value {
    let id = sandbox.identity();
    let now = Utc::now().timestamp();
    json!({
        "iss": id.integration_key.to_string(),
        "sub": id.user.user_id.to_string(),
        "aud": "account-d.docusign.com",
        "iat": now,
        "exp": now + 3600,
        "scope": "signature",
    })
}

fn sign(claims: &Value, pem: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap())
        .unwrap()
}

async fn request_token(running: &RunningSandbox, assertion: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{}/oauth/token", running.base_url()))
        .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion)])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn token(running: &RunningSandbox) -> String {
    let sandbox = &running.sandbox;
    sandbox.grant_consent(sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let (status, body) = request_token(running, &sign(&sdk_claims(sandbox), &sandbox.identity().private_key_pem)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_token_endpoint_accepts_an_sdk_style_assertion_and_countersigns_own() {
    let running = start().await;
    let sandbox = &running.sandbox;
    let id = sandbox.identity().clone();
    sandbox.grant_consent(id.user.user_id, &["signature", "impersonation"]);

    let (status, body) = request_token(&running, &sign(&sdk_claims(sandbox), &id.private_key_pem)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    let grant =
        JwtGrant::new(&id.integration_key.to_string(), id.user.user_id, "account-d.docusign.com", &id.private_key_pem)
            .unwrap();
    let assertion = grant.assertion(Utc::now(), Duration::from_secs(600)).unwrap();
    let (status, body) = request_token(&running, &assertion).await;
    assert_eq!(status, 200, "countersign's own assertion: {body}");
}

#[tokio::test]
async fn the_token_endpoint_rejects_each_broken_claim_as_docusign_does() {
    let running = start().await;
    let sandbox = &running.sandbox;
    let id = sandbox.identity().clone();
    sandbox.grant_consent(id.user.user_id, &["signature", "impersonation"]);
    let other_key = Sandbox::new(SandboxConfig::default()).unwrap().identity().private_key_pem.clone();
    let now = Utc::now().timestamp();

    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation, &str, &str)> = vec![
        ("signed with another key", Box::new(|_| {}), "invalid_grant", "no_valid_keys_or_signatures"),
        (
            "unknown integration key",
            Box::new(|c| c["iss"] = json!(uuid::Uuid::new_v4().to_string())),
            "invalid_grant",
            "issuer_not_found",
        ),
        (
            "unknown user",
            Box::new(|c| c["sub"] = json!(uuid::Uuid::new_v4().to_string())),
            "invalid_grant",
            "user_not_found",
        ),
        (
            "aud with https://",
            Box::new(|c| c["aud"] = json!("https://account-d.docusign.com")),
            "invalid_grant",
            "no_valid_keys_or_signatures",
        ),
        (
            "aud of production",
            Box::new(|c| c["aud"] = json!("account.docusign.com")),
            "invalid_grant",
            "issuer_not_found",
        ),
        (
            "no exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "invalid_grant",
            "no_valid_keys_or_signatures",
        ),
        (
            "exp two hours out",
            Box::new(move |c| c["exp"] = json!(now + 7200)),
            "invalid_grant",
            "no_valid_keys_or_signatures",
        ),
        (
            "expired",
            Box::new(move |c| {
                c["iat"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            }),
            "invalid_grant",
            "expired_grant",
        ),
        (
            "nbf in the future",
            Box::new(move |c| c["nbf"] = json!(now + 600)),
            "invalid_grant",
            "no_valid_keys_or_signatures",
        ),
        (
            "no scope",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("scope");
            }),
            "invalid_scope",
            "",
        ),
    ];
    for (name, mutate, error, description) in cases {
        let mut claims = sdk_claims(sandbox);
        mutate(&mut claims);
        let key = if name == "signed with another key" { &other_key } else { &id.private_key_pem };
        let (status, body) = request_token(&running, &sign(&claims, key)).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"], error, "{name}: {body}");
        if !description.is_empty() {
            assert_eq!(body["error_description"], description, "{name}: {body}");
        }
    }

    // A past nbf is fine.
    let mut claims = sdk_claims(sandbox);
    claims["nbf"] = json!(now - 60);
    assert_eq!(request_token(&running, &sign(&claims, &id.private_key_pem)).await.0, 200);

    sandbox.revoke_consent(id.user.user_id);
    let (status, body) = request_token(&running, &sign(&sdk_claims(sandbox), &id.private_key_pem)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("consent_required")));
}

#[tokio::test]
async fn consent_granted_through_the_page_lets_a_token_be_issued() {
    let running = start().await;
    let sandbox = &running.sandbox;
    let id = sandbox.identity().clone();
    let assertion = sign(&sdk_claims(sandbox), &id.private_key_pem);
    assert_eq!(request_token(&running, &assertion).await.1["error"], "consent_required");

    let base = running.base_url();
    let url = format!(
        "{base}/oauth/auth?response_type=code&scope=signature%20impersonation&client_id={}&redirect_uri={}",
        id.integration_key,
        url::form_urlencoded::byte_serialize(id.redirect_uri.as_bytes()).collect::<String>()
    );
    let page = client().get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Allow Access") && html.contains("signature impersonation"));
    let mut fields = countersign::sandbox::form_fields(&html);
    fields.push(("decision".into(), "allow".into()));
    let answer = client().post(format!("{base}/oauth/auth")).form(&fields).send().await.unwrap();
    assert!(answer.status().is_redirection());
    let location = answer.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&id.redirect_uri) && location.contains("code="), "{location}");

    assert_eq!(request_token(&running, &assertion).await.0, 200);

    let wrong = url.replace("redirect_uri=", "redirect_uri=https%3A%2F%2Fevil.example%2F&x=");
    let page = client().get(&wrong).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("redirect URI is not registered"));
}

#[tokio::test]
async fn consent_without_impersonation_is_not_enough() {
    let running = start().await;
    let sandbox = &running.sandbox;
    sandbox.grant_consent(sandbox.identity().user.user_id, &["signature"]);
    let (status, body) =
        request_token(&running, &sign(&sdk_claims(sandbox), &sandbox.identity().private_key_pem)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("consent_required")));
}

#[tokio::test]
async fn userinfo_names_the_account_and_points_back_at_the_sandbox() {
    let running = start().await;
    let token = token(&running).await;
    let info: Value = client()
        .get(format!("{}/oauth/userinfo", running.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = running.sandbox.identity();
    assert_eq!(info["sub"], id.user.user_id.to_string());
    assert_eq!(info["accounts"][0]["account_id"], id.account_id.to_string());
    assert_eq!(info["accounts"][0]["is_default"], true);
    assert_eq!(info["accounts"][0]["base_uri"], running.base_url());
}

fn api(running: &RunningSandbox, path: &str) -> String {
    format!("{}/restapi/v2.1/accounts/{}{path}", running.base_url(), running.sandbox.identity().account_id)
}

#[tokio::test]
async fn the_envelope_api_needs_a_live_token_and_answers_like_docusign() {
    let running = start().await;
    let envelope = running.sandbox.complete_envelopes(1).remove(0);
    let url =
        api(&running, &format!("/envelopes/{}?include=recipients,custom_fields,tabs,documents", envelope.envelope_id));

    let anonymous = client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["errorCode"], "AUTHORIZATION_INVALID_TOKEN");

    let token = token(&running).await;
    let body: Value = client().get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["envelopeId"], envelope.envelope_id.to_string());
    assert_eq!(body["status"], "completed");
    assert_eq!(body["emailSubject"], envelope.subject);
    let signer = &body["recipients"]["signers"][0];
    assert_eq!(signer["routingOrder"], "1", "scalars are strings");
    assert_eq!(signer["email"], envelope.signers[0].person.email);
    let text_tabs: Vec<(String, String)> = signer["tabs"]["textTabs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tabLabel"].as_str().unwrap().to_string(), t["value"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> = envelope.signers[0]
        .tabs
        .iter()
        .filter(|t| t.tab_type == "text")
        .map(|t| (t.label.clone(), t.value.clone()))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(text_tabs, expected, "every text tab with its value");
    assert_eq!(body["customFields"]["textCustomFields"][1]["name"], "employee_id");
    let docs = body["envelopeDocuments"].as_array().unwrap();
    assert_eq!(docs.last().unwrap()["documentId"], "certificate");
    assert!(body["completedDateTime"].as_str().unwrap().ends_with("0Z"));

    let recipients: Value = client()
        .get(api(&running, &format!("/envelopes/{}/recipients?include_tabs=true", envelope.envelope_id)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recipients["signers"].as_array().unwrap().len(), envelope.signers.len());

    let missing = client()
        .get(api(&running, &format!("/envelopes/{}", uuid::Uuid::new_v4())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(missing.json::<Value>().await.unwrap()["errorCode"], "ENVELOPE_DOES_NOT_EXIST");

    running.sandbox.expire_tokens();
    assert_eq!(client().get(&url).bearer_auth(&token).send().await.unwrap().status(), 401, "an expired token");
}

#[tokio::test]
async fn rate_limit_headers_count_down_and_past_the_limit_come_429s() {
    let running = start().await;
    let envelope = running.sandbox.complete_envelopes(1).remove(0);
    let token = token(&running).await;
    running.sandbox.set_rate_limits(1000, 3);
    let url = api(&running, &format!("/envelopes/{}", envelope.envelope_id));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = client().get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let header = |name: &str| response.headers()[name].to_str().unwrap().parse::<i64>().unwrap();
        assert_eq!(header("X-RateLimit-Limit"), 1000);
        assert_eq!(header("X-BurstLimit-Limit"), 3);
        assert!(header("X-RateLimit-Reset") > Utc::now().timestamp());
        remaining.push((header("X-BurstLimit-Remaining"), header("X-RateLimit-Remaining")));
    }
    assert_eq!(remaining, [(2, 999), (1, 998), (0, 997)]);
    let refused = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["X-BurstLimit-Remaining"], "0");
    assert_eq!(refused.json::<Value>().await.unwrap()["errorCode"], "BURST_APIINVOCATION_LIMIT_EXCEEDED");

    running.sandbox.set_rate_limits(3, 1000);
    let refused = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errorCode"], "HOURLY_APIINVOCATION_LIMIT_EXCEEDED");
    assert!(body["message"].as_str().unwrap().contains("hourly limit is 3"));
}

#[tokio::test]
async fn fault_knobs_add_latency_errors_truncation_and_resets() {
    let running = start().await;
    let envelope = running.sandbox.complete_envelopes(1).remove(0);
    let token = token(&running).await;
    let url = api(&running, &format!("/envelopes/{}", envelope.envelope_id));
    let get = || client().get(&url).bearer_auth(&token).send();

    running.sandbox.set_fault("envelope", Fault { error_rate: 1.0, error_status: Some(500), ..Fault::default() });
    assert_eq!(get().await.unwrap().status(), 500);
    running.sandbox.set_fault("envelope", Fault { error_rate: 1.0, ..Fault::default() });
    assert_eq!(get().await.unwrap().status(), 503);

    running.sandbox.set_fault("envelope", Fault { latency_ms: 300, ..Fault::default() });
    let started = Instant::now();
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    running.sandbox.set_fault("envelope", Fault { truncate_rate: 1.0, ..Fault::default() });
    let response = get().await.unwrap();
    assert_eq!(response.status(), 200, "the headers arrive");
    assert!(response.bytes().await.is_err(), "but the body stops short");

    running.sandbox.set_fault("envelope", Fault { reset_rate: 1.0, ..Fault::default() });
    let outcome = get().await;
    assert!(outcome.is_err() || outcome.unwrap().bytes().await.is_err(), "the connection drops");

    // Knobs are per route, and can be switched through the control endpoint too.
    let other = api(&running, &format!("/envelopes/{}/recipients", envelope.envelope_id));
    assert_eq!(client().get(&other).bearer_auth(&token).send().await.unwrap().status(), 200);
    let cleared = client().delete(format!("{}/control/faults", running.base_url())).send().await.unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(get().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_listing_filters_by_completion_time_and_pages() {
    let running = start().await;
    let before = Utc::now() - chrono::Duration::seconds(1);
    let envelopes = running.sandbox.complete_envelopes(7);
    let token = token(&running).await;
    let from = url::form_urlencoded::byte_serialize(before.to_rfc3339().as_bytes()).collect::<String>();
    let mut url = api(&running, &format!("/envelopes?from_date={from}&status=completed&count=3"));
    let mut seen = Vec::new();
    loop {
        let page: Value = client().get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["totalSetSize"], "7");
        for envelope in page["envelopes"].as_array().unwrap() {
            seen.push(envelope["envelopeId"].as_str().unwrap().to_string());
        }
        match page["nextUri"].as_str() {
            Some(next) => url = api(&running, next),
            None => break,
        }
    }
    let mut expected: Vec<String> = envelopes.iter().map(|e| e.envelope_id.to_string()).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);

    let later =
        url::form_urlencoded::byte_serialize((Utc::now() + chrono::Duration::seconds(5)).to_rfc3339().as_bytes())
            .collect::<String>();
    let none: Value = client()
        .get(api(&running, &format!("/envelopes?from_date={later}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["totalSetSize"], "0");
    let missing = client().get(api(&running, "/envelopes")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(missing.status(), 400);
}

#[tokio::test]
async fn requests_are_counted_per_route_and_user() {
    let running = start().await;
    let envelope = running.sandbox.complete_envelopes(1).remove(0);
    let token = token(&running).await;
    for _ in 0..2 {
        client()
            .get(api(&running, &format!("/envelopes/{}", envelope.envelope_id)))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    let counters: Value =
        client().get(format!("{}/control/counters", running.base_url())).send().await.unwrap().json().await.unwrap();
    let user = running.sandbox.identity().user.user_id.to_string();
    assert_eq!(counters["routes"]["token"], 1);
    assert_eq!(counters["routes"]["envelope"], 2);
    assert_eq!(counters["users"][&user]["envelope"], 2);
}

async fn download(running: &RunningSandbox, token: &str, path: &str) -> reqwest::Response {
    let response = client().get(api(running, path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response
}

fn pages(bytes: &[u8]) -> usize {
    lopdf::Document::load_mem(bytes).expect("a valid PDF").get_pages().len()
}

#[tokio::test]
async fn documents_are_real_pdfs_with_docusign_headers() {
    let running = start().await;
    let envelope = running.sandbox.complete_envelopes(1).remove(0);
    let token = token(&running).await;
    let id = envelope.envelope_id;

    let mut content_pages = 0;
    for document in &envelope.documents {
        let response = download(&running, &token, &format!("/envelopes/{id}/documents/{}", document.document_id)).await;
        assert_eq!(response.headers()["content-type"], "application/pdf");
        let disposition = response.headers()["content-disposition"].to_str().unwrap().to_string();
        assert_eq!(
            disposition,
            format!("file; filename=\"{}\"; documentid=\"{}\"", document.name, document.document_id)
        );
        let bytes = response.bytes().await.unwrap();
        assert_eq!(pages(&bytes), document.pages as usize);
        content_pages += document.pages as usize;
    }

    let certificate = download(&running, &token, &format!("/envelopes/{id}/documents/certificate")).await;
    let certificate = certificate.bytes().await.unwrap();
    let certificate_pages = pages(&certificate);
    let text = lopdf::Document::load_mem(&certificate).unwrap().extract_text(&[1]).unwrap();
    for signer in &envelope.signers {
        assert!(text.contains(&signer.person.name), "the certificate lists {}", signer.person.name);
    }

    let with = download(&running, &token, &format!("/envelopes/{id}/documents/combined")).await.bytes().await.unwrap();
    assert_eq!(pages(&with), content_pages + certificate_pages, "combined includes the certificate by default");
    let without = download(&running, &token, &format!("/envelopes/{id}/documents/combined?certificate=false"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(pages(&without), content_pages);

    let archive = download(&running, &token, &format!("/envelopes/{id}/documents/archive")).await;
    assert_eq!(archive.headers()["content-type"], "application/zip");
    let archive = archive.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive.to_vec())).unwrap();
    assert_eq!(zip.len(), envelope.documents.len() + 1);
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        assert!(pages(&bytes) >= 1, "{:?} is a PDF", entry.name());
    }

    let listed: Value = download(&running, &token, &format!("/envelopes/{id}/documents")).await.json().await.unwrap();
    assert_eq!(listed["envelopeDocuments"].as_array().unwrap().len(), envelope.documents.len() + 1);

    let checksums: Value = client()
        .get(format!("{}/control/envelopes/{id}/checksums", running.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sha = |bytes: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    assert_eq!(checksums["certificate"], sha(&certificate));
    assert_eq!(checksums["combined"], sha(&with));
}
