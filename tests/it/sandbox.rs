//! The DocuSign sandbox behaves as `docs/DOCUSIGN.md` says DocuSign does.

use crate::common;
use common::connect_listener::{ConnectListener as Listener, hmac_base64};

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

/// Every control route as (method, path): the description must list these, no more, no fewer.
const CONTROL_ROUTES: &[(&str, &str)] = &[
    ("get", "/control/openapi.json"),
    ("get", "/control/identity"),
    ("post", "/control/consent"),
    ("delete", "/control/consent"),
    ("post", "/control/envelopes"),
    ("get", "/control/envelopes/{envelope}/checksums"),
    ("get", "/control/faults"),
    ("delete", "/control/faults"),
    ("put", "/control/faults/{route}"),
    ("post", "/control/tokens/expire"),
    ("put", "/control/tokens/lifetime"),
    ("put", "/control/rate-limits"),
    ("get", "/control/counters"),
    ("post", "/control/connect"),
    ("get", "/control/templates"),
    ("post", "/control/envelopes/{envelope}/sign"),
    ("post", "/control/envelopes/{envelope}/decline"),
];

async fn control(running: &RunningSandbox, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, format!("{}{path}", running.base_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test]
async fn the_control_api_describes_every_route_it_serves() {
    let running = start().await;
    let (status, description) = control(&running, reqwest::Method::GET, "/control/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(description["openapi"].as_str().unwrap().starts_with("3."), "{description}");
    let mut described: Vec<(String, String)> = Vec::new();
    for (path, item) in description["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let said = operation["summary"].as_str().or(operation["description"].as_str()).unwrap_or("");
            assert!(!said.is_empty(), "{method} {path} says what it does");
            described.push((method.clone(), path.clone()));
        }
    }
    described.sort();
    let mut expected: Vec<(String, String)> =
        CONTROL_ROUTES.iter().map(|(m, p)| ((*m).to_string(), (*p).to_string())).collect();
    expected.sort();
    assert_eq!(described, expected);
    for schema in ["CompleteRequest", "ConnectRequest"] {
        // The property (its description, wherever utoipa puts it beside the enum's reference).
        let said = description["components"]["schemas"][schema]["properties"]["scenario"].to_string();
        let values = description["components"]["schemas"]["ScenarioName"]["enum"].to_string();
        for name in countersign::sandbox::envelopes::scenario_names() {
            assert!(said.contains(&format!("`{name}`")), "{schema}.scenario names {name}: {said}");
            assert!(values.contains(&format!("\"{name}\"")), "the schema lists {name}: {values}");
        }
    }

    // Each described route is served: a body with an unknown field is refused
    // by name where the route reads a body, and harmlessly ignored elsewhere.
    let envelope = running.sandbox.complete_envelopes(1).remove(0).envelope_id.to_string();
    for (method, path) in CONTROL_ROUTES {
        let path = path.replace("{envelope}", &envelope).replace("{route}", "envelope");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = (method != reqwest::Method::GET).then(|| json!({ "probe": 1 }));
        let (status, answer) = control(&running, method.clone(), &path, body).await;
        assert!(
            (200..300).contains(&status) || (status == 400 && answer["field"] == "probe"),
            "{method} {path}: {status} {answer}"
        );
    }

    // Bad input is a 400 whose JSON names the field.
    let cases = [
        ("/control/envelopes", json!({ "count": "two" }), "count"),
        ("/control/envelopes", json!({ "scenario": "payroll" }), "scenario"),
        ("/control/connect", json!({ "url": "ftp://example.com/x" }), "url"),
        ("/control/connect", json!({ "url": "http://127.0.0.1:9/x", "format": "yaml" }), "format"),
        ("/control/connect", json!({ "url": "http://127.0.0.1:9/x", "count": 0 }), "count"),
        ("/control/connect", json!({ "url": "http://127.0.0.1:9/x", "envelope_ids": ["nope"] }), "envelope_ids"),
        ("/control/consent", json!({ "user_id": "someone" }), "user_id"),
    ];
    for (path, body, field) in cases {
        let (status, answer) = control(&running, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!((status, answer["field"].as_str()), (400, Some(field)), "{path} {body}: {answer}");
        assert_eq!(answer["error"], "invalid_input");
        assert!(answer["message"].as_str().unwrap().starts_with(&format!("{field}: ")), "{answer}");
    }
    // Well formed, but this sandbox has no listener: 409, naming the field.
    for (path, body, field) in [
        ("/control/envelopes", json!({ "notify": true }), "notify"),
        ("/control/connect", json!({ "count": 1 }), "url"),
    ] {
        let (status, answer) = control(&running, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!((status, answer["field"].as_str()), (409, Some(field)), "{path} {body}: {answer}");
        assert_eq!(answer["error"], "no_listener");
    }
    let (status, answer) =
        control(&running, reqwest::Method::PUT, "/control/rate-limits", Some(json!({ "hourly": 10 }))).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("burst")), "{answer}");
    let (status, answer) =
        control(&running, reqwest::Method::PUT, "/control/faults/envelope", Some(json!({ "error_rate": 2 }))).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("error_rate")), "{answer}");
}

/// The request carries a signature made with `key` over exactly its body.
fn assert_signed(headers: &axum::http::HeaderMap, body: &[u8], key: &str) {
    let signature = headers.get("X-DocuSign-Signature-1").expect("X-DocuSign-Signature-1").to_str().unwrap();
    assert_eq!(signature, hmac_base64(key, body));
    assert_eq!(headers["X-Authorization-Digest"], "HMACSHA256");
}

#[tokio::test]
async fn one_control_call_completes_envelopes_and_posts_signed_xml_with_documents() {
    let running = start().await;
    let listener = Listener::start().await;
    let (_, identity) = control(&running, reqwest::Method::GET, "/control/identity", None).await;
    let key = identity["hmac_keys"][0].as_str().unwrap().to_string();

    let request = json!({
        "url": listener.url,
        "count": 2,
        "scenario": "equipment",
        "format": "xml",
        "include_documents": true,
        "retries": 0,
    });
    let (status, answer) = control(&running, reqwest::Method::POST, "/control/connect", Some(request)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["url"].as_str(), answer["format"].as_str()), (Some(listener.url.as_str()), Some("xml")));
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries.iter().all(|d| d["report"]["delivered"] == true && d["report"]["attempts"] == 1), "{answer}");

    let received = listener.wait_for_count(2).await;
    assert_eq!(received.len(), 2, "one POST per envelope");
    for ((headers, body), delivery) in received.iter().zip(deliveries) {
        assert_signed(headers, body, &key);
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/xml"));
        let xml = std::str::from_utf8(body).unwrap();
        let id = delivery["envelope_id"].as_str().unwrap();
        assert!(xml.contains(&format!("<EnvelopeID>{id}</EnvelopeID>")), "the notification is about {id}");
        assert!(xml.contains("<DocumentPDFs>") && xml.contains("<PDFBytes>"), "the documents are embedded");
        let envelope = running.sandbox.envelope(countersign::ids::EnvelopeId::parse(id).unwrap()).unwrap();
        assert_eq!(envelope.template_id.to_string(), countersign::sandbox::envelopes::EQUIPMENT_TEMPLATE);
    }

    // The same envelopes again, by id: Connect delivers at least once.
    let ids: Vec<&Value> = deliveries.iter().map(|d| &d["envelope_id"]).collect();
    let again = json!({ "url": listener.url, "envelope_ids": ids, "retries": 0 });
    let (status, answer) = control(&running, reqwest::Method::POST, "/control/connect", Some(again)).await;
    assert_eq!((status, answer["format"].as_str()), (200, Some("json")), "{answer}");
    let received = listener.wait_for_count(4).await;
    for (headers, body) in &received[2..] {
        assert_signed(headers, body, &key);
        let message: Value = serde_json::from_slice(body).unwrap();
        assert!(ids.contains(&&message["data"]["envelopeId"]), "{message}");
    }
}

#[tokio::test]
async fn envelopes_completed_through_control_go_to_the_default_listener() {
    let running = start().await;
    let listener = Listener::start().await;
    let key = running.sandbox.identity().hmac_keys[0].clone();

    // No default listener: completing announces nothing, as before.
    let (status, answer) =
        control(&running, reqwest::Method::POST, "/control/envelopes", Some(json!({ "count": 1 }))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("deliveries").is_none(), "{answer}");

    running.sandbox.set_connect_url(Some(listener.url.clone()));
    let request = json!({ "count": 2, "scenario": "onboarding" });
    let (status, answer) = control(&running, reqwest::Method::POST, "/control/envelopes", Some(request)).await;
    assert_eq!(status, 200, "{answer}");
    let ids: Vec<&Value> = answer["envelope_ids"].as_array().unwrap().iter().collect();
    assert_eq!(ids.len(), 2);
    let received = listener.wait_for_count(2).await;
    for (headers, body) in &received {
        assert_signed(headers, body, &key);
        let message: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(message["event"], "envelope-completed");
        assert!(ids.contains(&&message["data"]["envelopeId"]), "{message}");
        let id = countersign::ids::EnvelopeId::parse(message["data"]["envelopeId"].as_str().unwrap()).unwrap();
        let template = running.sandbox.envelope(id).unwrap().template_id.to_string();
        assert_eq!(template, countersign::sandbox::envelopes::ONBOARDING_TEMPLATE);
    }

    // Told not to, it does not; and /control/connect needs no url now.
    let (_, answer) =
        control(&running, reqwest::Method::POST, "/control/envelopes", Some(json!({ "notify": false }))).await;
    assert!(answer.get("deliveries").is_none(), "{answer}");
    let (status, answer) = control(&running, reqwest::Method::POST, "/control/connect", None).await;
    assert_eq!((status, answer["url"].as_str()), (200, Some(listener.url.as_str())), "{answer}");
    assert_eq!(listener.wait_for_count(3).await.len(), 3);
}

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_sandbox_command_announces_envelopes_to_its_connect_url() {
    use std::io::BufRead;
    let listener = Listener::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["sandbox", "--listen", "127.0.0.1:0", "--data", "sbx", "--connect-url", &listener.url])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // What it prints ends with the TOML, whose last line names the key file.
    let mut printed = String::new();
    for line in std::io::BufReader::new(child.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("private_key_file") {
            break;
        }
    }
    let base = printed
        .lines()
        .find_map(|l| l.strip_prefix("DocuSign sandbox listening on "))
        .unwrap_or_else(|| panic!("the address is printed:\n{printed}"))
        .to_string();
    let key = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("HMAC key"))
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|| panic!("the HMAC key is printed:\n{printed}"));
    assert!(printed.contains(&format!("GET {base}/control/openapi.json")), "{printed}");
    assert!(printed.contains(&format!("announced to {}", listener.url)), "{printed}");
    assert!(printed.contains(&format!("curl -X POST {base}/control/connect")), "{printed}");

    let answer: Value = client()
        .post(format!("{base}/control/envelopes"))
        .body(r#"{"count": 1}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["envelope_ids"][0].as_str().unwrap_or_else(|| panic!("{answer}")).to_string();
    let received = listener.wait_for_count(1).await;
    let (headers, body) = &received[0];
    assert_signed(headers, body, &key);
    let message: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(message["data"]["envelopeId"], id);
    assert_eq!(answer["deliveries"][0]["report"]["delivered"], true, "{answer}");
    drop(child);
}

/// schemathesis (as for the admin API) against `/control/openapi.json`:
/// answers match the description, allowed requests are accepted, forbidden
/// ones refused, nothing answers 5xx. `POST /control/connect` is left out:
/// it posts to the listener it is given and waits for each answer, so a
/// generated URL that does not answer costs seconds per envelope; its input
/// checks are `the_control_api_describes_every_route_it_serves`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_difference_between_the_control_api_and_its_description() {
    let running = start().await;
    running.sandbox.complete_envelopes(3);
    let url = format!("{}/control/openapi.json", running.base_url());
    let stdout = common::schemathesis(&url, &["--max-examples", "30", "--exclude-path", "/control/connect"]).await;
    assert!(stdout.contains("Tested: 15"), "every other operation was tested:\n{stdout}");
}
