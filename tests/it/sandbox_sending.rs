//! The sandbox's sending side behaves as `docs/DOCUSIGN.md` §6 says DocuSign
//! does: templates read over REST, envelopes created from them, found by
//! custom field, voided, signed or declined by their recipients (through
//! `/control`), and their lifecycle announced by Connect. All over real HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use countersign::ids::EnvelopeId;
use countersign::sandbox::envelopes::{EQUIPMENT_TEMPLATE, NDA_TEMPLATE, ONBOARDING_TEMPLATE};
use countersign::sandbox::{EnvelopeStatus, LifecycleError, RunningSandbox, Sandbox, SandboxConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common;
use common::connect_listener::{ConnectListener as Listener, hmac_base64};

async fn start() -> RunningSandbox {
    Sandbox::new(SandboxConfig { document_bytes: 6_000, ..SandboxConfig::default() })
        .unwrap()
        .serve("127.0.0.1:0")
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// An access token through the JWT Grant, as countersign gets one.
async fn token(running: &RunningSandbox) -> String {
    let sandbox = &running.sandbox;
    let id = sandbox.identity();
    sandbox.grant_consent(id.user.user_id, &["signature", "impersonation"]);
    let now = Utc::now().timestamp();
    let claims = json!({
        "iss": id.integration_key.to_string(), "sub": id.user.user_id.to_string(),
        "aud": sandbox.config().auth_host, "iat": now, "exp": now + 3600, "scope": "signature impersonation",
    });
    let key = EncodingKey::from_rsa_pem(id.private_key_pem.as_bytes()).unwrap();
    let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
    let answer: Value = client()
        .post(format!("{}/oauth/token", running.base_url()))
        .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string()
}

fn api(running: &RunningSandbox, path: &str) -> String {
    format!("{}/restapi/v2.1/accounts/{}{path}", running.base_url(), running.sandbox.identity().account_id)
}

/// One REST call; the status and the JSON body (`null` when there is none).
async fn rest(running: &RunningSandbox, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, api(running, path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn control(running: &RunningSandbox, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, format!("{}{path}", running.base_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// An onboarding envelope for Jane Doe as countersign sends one: the
/// agreement id in a hidden custom field, the job title prefilled.
fn onboarding(agreement: &str) -> Value {
    json!({
        "templateId": ONBOARDING_TEMPLATE,
        "status": "sent",
        "templateRoles": [
            {
                "roleName": "Employee", "name": "Jane Doe", "email": "jane.doe@example.com",
                "tabs": {
                    "textTabs": [
                        { "tabLabel": "job_title", "value": "Site Reliability Engineer" },
                        { "tabLabel": "not_a_tab", "value": "ignored" },
                    ],
                    "dateTabs": [{ "tabLabel": "start_date", "value": "2026-12-01" }],
                },
            },
            { "roleName": "HR Manager", "name": "Hal Manager", "email": "hal@example.com" },
        ],
        "customFields": {
            "textCustomFields": [
                { "name": "countersign_agreement_id", "value": agreement, "show": "false", "required": "false" },
                { "name": "department", "value": "Engineering", "show": "true" },
            ],
        },
    })
}

async fn create(running: &RunningSandbox, token: &str, definition: Value) -> String {
    let (status, answer) = rest(running, token, Method::POST, "/envelopes", Some(definition)).await;
    assert_eq!(status, 201, "{answer}");
    answer["envelopeId"].as_str().unwrap().to_string()
}

fn text_tabs(signer: &Value, list: &str) -> BTreeMap<String, String> {
    signer["tabs"][list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} of {signer}"))
        .iter()
        .map(|t| (t["tabLabel"].as_str().unwrap().to_string(), t["value"].as_str().unwrap().to_string()))
        .collect()
}

fn from_date() -> String {
    let date = (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    url::form_urlencoded::byte_serialize(date.as_bytes()).collect()
}

fn listed_ids(page: &Value) -> Vec<String> {
    page["envelopes"].as_array().unwrap().iter().map(|e| e["envelopeId"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn templates_are_listed_and_read_with_their_roles_and_tabs() {
    let running = start().await;
    let token = token(&running).await;

    let (status, list) = rest(&running, &token, Method::GET, "/templates", None).await;
    assert_eq!(status, 200, "{list}");
    for (key, value) in [("resultSetSize", "3"), ("startPosition", "0"), ("endPosition", "2"), ("totalSetSize", "3")] {
        assert_eq!(list[key], value, "{key}: counts are strings");
    }
    let ids: Vec<&str> =
        list["envelopeTemplates"].as_array().unwrap().iter().map(|t| t["templateId"].as_str().unwrap()).collect();
    assert_eq!(ids, [ONBOARDING_TEMPLATE, NDA_TEMPLATE, EQUIPMENT_TEMPLATE]);
    let first = &list["envelopeTemplates"][0];
    assert_eq!(first["name"], "Employee Onboarding");
    assert!(first["lastModified"].as_str().unwrap().ends_with("0Z"), "{first}");
    assert!(first.get("recipients").is_none(), "recipients only when asked for");

    let (status, template) =
        rest(&running, &token, Method::GET, &format!("/templates/{ONBOARDING_TEMPLATE}?include=recipients,tabs"), None)
            .await;
    assert_eq!(status, 200, "{template}");
    assert_eq!(template["templateId"], ONBOARDING_TEMPLATE);
    let signers = template["recipients"]["signers"].as_array().unwrap();
    let roles: Vec<(&str, &str, &str)> = signers
        .iter()
        .map(|s| {
            (s["roleName"].as_str().unwrap(), s["recipientId"].as_str().unwrap(), s["routingOrder"].as_str().unwrap())
        })
        .collect();
    assert_eq!(roles, [("Employee", "1", "1"), ("HR Manager", "2", "2")]);
    let required = |list: &str| -> BTreeMap<String, String> {
        signers[0]["tabs"][list]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["tabLabel"].as_str().unwrap().to_string(), t["required"].as_str().unwrap().to_string()))
            .collect()
    };
    let text = required("textTabs");
    assert_eq!(text["first_name"], "true");
    assert_eq!(text["laptop_model"], "false", "the employee may leave the laptop to IT");
    assert_eq!(required("dateTabs")["start_date"], "true");
    assert_eq!(template["recipients"]["carbonCopies"], json!([]));
    assert!(signers[1]["tabs"]["textTabs"].as_array().unwrap().is_empty(), "HR only signs");

    // Tabs only with include=tabs, as DocuSign's Templates: get answers.
    let (_, bare) = rest(&running, &token, Method::GET, &format!("/templates/{NDA_TEMPLATE}"), None).await;
    assert_eq!(bare["recipients"]["signers"][0]["roleName"], "Counterparty");
    assert!(bare["recipients"]["signers"][0].get("tabs").is_none(), "{bare}");

    let (status, unknown) =
        rest(&running, &token, Method::GET, &format!("/templates/{}", uuid::Uuid::new_v4()), None).await;
    assert_eq!((status, unknown["errorCode"].as_str()), (400, Some("TEMPLATE_ID_INVALID")), "{unknown}");

    // The control API says the same, per role.
    let (status, described) = control(&running, Method::GET, "/control/templates", None).await;
    assert_eq!(status, 200, "{described}");
    let equipment = described.as_array().unwrap().iter().find(|t| t["scenario"] == "equipment").unwrap();
    assert_eq!(equipment["template_id"], EQUIPMENT_TEMPLATE);
    assert_eq!(equipment["roles"][1]["role_name"], "IT Approver");
    assert_eq!(equipment["roles"][1]["required"], true);
    let labels: Vec<&str> =
        equipment["roles"][0]["tabs"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["laptop_model", "monitor_count", "delivery_address"]);

    let counters = running.sandbox.counters();
    assert_eq!((counters.routes["template_list"], counters.routes["template"]), (1, 3));
}

#[tokio::test]
async fn an_envelope_created_from_a_template_is_sent_and_found_by_its_custom_field() {
    let running = start().await;
    let token = token(&running).await;
    let generated = running.sandbox.complete_envelopes(2);

    let (status, created) = rest(&running, &token, Method::POST, "/envelopes", Some(onboarding("agr-1"))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "sent");
    let id = created["envelopeId"].as_str().unwrap().to_string();
    assert_eq!(created["uri"], format!("/envelopes/{id}"));
    assert!(created["statusDateTime"].as_str().unwrap().ends_with("0Z"));
    let other = create(&running, &token, onboarding("agr-2")).await;
    assert_ne!(id, other, "a fresh id for every envelope");

    let (status, envelope) = rest(
        &running,
        &token,
        Method::GET,
        &format!("/envelopes/{id}?include=recipients,tabs,custom_fields,documents"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{envelope}");
    assert_eq!(envelope["status"], "sent");
    assert_eq!(envelope["emailSubject"], "Offer letter and onboarding forms for Jane Doe");
    assert!(envelope["sentDateTime"].is_string() && envelope.get("completedDateTime").is_none(), "{envelope}");
    let signers = envelope["recipients"]["signers"].as_array().unwrap();
    let people: Vec<(&str, &str, &str)> = signers
        .iter()
        .map(|s| (s["email"].as_str().unwrap(), s["roleName"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        people,
        [("jane.doe@example.com", "Employee", "sent"), ("hal@example.com", "HR Manager", "created")],
        "routed in order: HR gets it once Jane has signed"
    );
    assert_eq!(text_tabs(&signers[0], "textTabs")["job_title"], "Site Reliability Engineer");
    assert_eq!(text_tabs(&signers[0], "textTabs")["first_name"], "", "not filled in yet");
    assert_eq!(text_tabs(&signers[0], "dateTabs")["start_date"], "2026-12-01");
    let fields = envelope["customFields"]["textCustomFields"].as_array().unwrap();
    assert_eq!(fields[0]["name"], "countersign_agreement_id");
    assert_eq!((fields[0]["value"].as_str(), fields[0]["show"].as_str()), (Some("agr-1"), Some("false")));
    let documents = envelope["envelopeDocuments"].as_array().unwrap();
    assert_eq!(documents.len(), 4, "the template's three documents and the certificate");

    let (_, custom_fields) = rest(&running, &token, Method::GET, &format!("/envelopes/{id}/custom_fields"), None).await;
    assert_eq!(custom_fields["textCustomFields"][0]["value"], "agr-1");
    let (_, templates) = rest(&running, &token, Method::GET, &format!("/envelopes/{id}/templates"), None).await;
    assert_eq!(templates["templates"][0]["templateId"], ONBOARDING_TEMPLATE);

    let from = from_date();
    let (status, found) = rest(
        &running,
        &token,
        Method::GET,
        &format!(
            "/envelopes?from_date={from}&custom_field=countersign_agreement_id=agr-1&include=custom_fields,recipients"
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(listed_ids(&found), std::slice::from_ref(&id), "exactly the envelope with that value");
    assert_eq!(found["totalSetSize"], "1");
    assert_eq!(found["envelopes"][0]["status"], "sent");
    assert_eq!(found["envelopes"][0]["customFields"]["textCustomFields"][0]["value"], "agr-1");
    assert_eq!(found["envelopes"][0]["recipients"]["signers"][0]["email"], "jane.doe@example.com");

    let (_, any) = rest(&running, &token, Method::GET, &format!("/envelopes?from_date={from}&status=any"), None).await;
    assert_eq!(any["totalSetSize"], "4", "the created and the generated ones");
    let (_, completed) =
        rest(&running, &token, Method::GET, &format!("/envelopes?from_date={from}&status=completed"), None).await;
    let mut expected: Vec<String> = generated.iter().map(|e| e.envelope_id.to_string()).collect();
    let mut listed = listed_ids(&completed);
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected, "reconciliation's listing still sees only completed envelopes");
    let (_, by_id) = rest(&running, &token, Method::GET, &format!("/envelopes?envelope_ids={other}"), None).await;
    assert_eq!(listed_ids(&by_id), std::slice::from_ref(&other), "envelope_ids needs no from_date");

    let sent = running.sandbox.sent_envelopes();
    assert_eq!(sent.iter().map(|e| e.envelope_id.to_string()).collect::<Vec<_>>(), [id, other]);
    assert!(sent.iter().all(|e| e.state == EnvelopeStatus::Sent));
    assert_eq!(running.sandbox.counters().routes["create"], 2);
}

#[tokio::test]
async fn a_lost_answer_leaves_the_envelope_created_for_a_retry_to_duplicate() {
    let running = start().await;
    let token = token(&running).await;
    let (status, _) =
        control(&running, Method::PUT, "/control/faults/create", Some(json!({ "lost_answers": 1 }))).await;
    assert_eq!(status, 204);

    let attempt =
        client().post(api(&running, "/envelopes")).bearer_auth(&token).json(&onboarding("agr-lost")).send().await;
    let failed = match attempt {
        Err(_) => true,
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(failed, "the client sees the connection drop without an answer");

    let path = format!("/envelopes?from_date={}&custom_field=countersign_agreement_id=agr-lost", from_date());
    let (status, found) = rest(&running, &token, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["totalSetSize"], "1", "the envelope was created all the same: {found}");
    assert_eq!(found["envelopes"][0]["status"], "sent");

    // The knob counted down: a blind retry succeeds, and there are now two.
    let (_, knobs) = control(&running, Method::GET, "/control/faults", None).await;
    assert_eq!(knobs["create"]["lost_answers"], 0, "{knobs}");
    create(&running, &token, onboarding("agr-lost")).await;
    let (_, found) = rest(&running, &token, Method::GET, &path, None).await;
    assert_eq!(found["totalSetSize"], "2");
    assert_eq!(running.sandbox.counters().routes["create"], 2, "both attempts are counted");
}

#[tokio::test]
async fn only_an_envelope_in_process_can_be_voided() {
    let running = start().await;
    let token = token(&running).await;
    let id = create(&running, &token, onboarding("agr-void")).await;
    let path = format!("/envelopes/{id}");

    let (status, refused) = rest(&running, &token, Method::PUT, &path, Some(json!({ "status": "voided" }))).await;
    assert_eq!((status, refused["errorCode"].as_str()), (400, Some("INVALID_REQUEST_PARAMETER")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("voidedReason"), "{refused}");

    let void = json!({ "status": "voided", "voidedReason": "The offer was withdrawn." });
    let (status, answer) = rest(&running, &token, Method::PUT, &path, Some(void.clone())).await;
    assert_eq!((status, answer), (200, json!({ "envelopeId": id })));
    let (_, envelope) = rest(&running, &token, Method::GET, &path, None).await;
    assert_eq!(envelope["status"], "voided");
    assert_eq!(envelope["voidedReason"], "The offer was withdrawn.");
    assert!(envelope["voidedDateTime"].is_string(), "{envelope}");

    let completed = running.sandbox.complete_envelopes(1).remove(0).envelope_id;
    for (what, target) in [("voided already", id.clone()), ("completed", completed.to_string())] {
        let (status, refused) =
            rest(&running, &token, Method::PUT, &format!("/envelopes/{target}"), Some(void.clone())).await;
        assert_eq!(status, 400, "{what}: {refused}");
        assert_eq!(refused["errorCode"], "ENVELOPE_CANNOT_VOID_INVALID_STATE", "{what}");
        assert_eq!(refused["message"], "Only envelopes in the 'Sent' or 'Delivered' states may be voided.");
    }
    let (status, unknown) =
        rest(&running, &token, Method::PUT, &format!("/envelopes/{}", uuid::Uuid::new_v4()), Some(void)).await;
    assert_eq!((status, unknown["errorCode"].as_str()), (400, Some("ENVELOPE_DOES_NOT_EXIST")));
    assert_eq!(running.sandbox.counters().routes["void"], 5);
}

fn pages(bytes: &[u8]) -> usize {
    lopdf::Document::load_mem(bytes).expect("a valid PDF").get_pages().len()
}

#[tokio::test]
async fn signing_completes_the_envelope_and_its_documents_download_as_pdfs() {
    let running = start().await;
    let token = token(&running).await;
    let id = create(&running, &token, onboarding("agr-sign")).await;
    let sign = format!("/control/envelopes/{id}/sign");

    // Jane signs first, choosing her laptop; HR's turn comes next.
    let request = json!({ "recipient_id": "1", "tabs": { "laptop_model": "ThinkPad X1 Carbon" } });
    let (status, answer) = control(&running, Method::POST, &sign, Some(request)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "delivered");
    let statuses: Vec<&str> =
        answer["signers"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "sent"]);
    let (status, refused) = control(&running, Method::POST, &sign, Some(json!({ "recipient_id": "1" }))).await;
    assert_eq!((status, refused["field"].as_str()), (409, Some("recipient_id")), "{refused}");

    let (status, answer) = control(&running, Method::POST, &sign, None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("completed")), "{answer}");

    let (_, envelope) =
        rest(&running, &token, Method::GET, &format!("/envelopes/{id}?include=recipients,tabs"), None).await;
    assert_eq!(envelope["status"], "completed");
    assert!(envelope["completedDateTime"].is_string(), "{envelope}");
    let employee = &envelope["recipients"]["signers"][0];
    assert!(employee["signedDateTime"].is_string());
    let tabs = text_tabs(employee, "textTabs");
    assert_eq!(tabs["laptop_model"], "ThinkPad X1 Carbon");
    assert_eq!(tabs["first_name"], "Jane", "a required tab the signer filled in");
    assert_eq!(tabs["job_title"], "Site Reliability Engineer", "the sender's value stays");
    assert_eq!(employee["tabs"]["signHereTabs"][0]["status"], "signed");

    let download = |path: String| {
        let token = token.clone();
        let url = api(&running, &path);
        async move {
            let response = client().get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.headers()["content-type"], "application/pdf");
            response.bytes().await.unwrap()
        }
    };
    let certificate = download(format!("/envelopes/{id}/documents/certificate")).await;
    let text = lopdf::Document::load_mem(&certificate).unwrap().extract_text(&[1]).unwrap();
    assert!(text.contains("Jane Doe") && text.contains("Hal Manager"), "the certificate lists both signers");
    let combined = download(format!("/envelopes/{id}/documents/combined")).await;
    assert_eq!(pages(&combined), 2 + 1 + 1 + pages(&certificate), "the template's pages, then the certificate");
    assert_eq!(pages(&download(format!("/envelopes/{id}/documents/1")).await), 2);

    let (_, listed) = rest(
        &running,
        &token,
        Method::GET,
        &format!(
            "/envelopes?from_date={}&status=completed&custom_field=countersign_agreement_id=agr-sign",
            from_date()
        ),
        None,
    )
    .await;
    assert_eq!(listed_ids(&listed), std::slice::from_ref(&id));

    let (status, refused) = control(&running, Method::POST, &sign, None).await;
    assert_eq!((status, refused["error"].as_str()), (409, Some("conflict")), "{refused}");
    let (status, _) =
        control(&running, Method::POST, &format!("/control/envelopes/{}/sign", uuid::Uuid::new_v4()), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn declining_ends_the_envelope() {
    let running = start().await;
    let token = token(&running).await;
    let id = create(&running, &token, onboarding("agr-decline")).await;

    let request = json!({ "reason": "The start date does not work for me." });
    let (status, answer) =
        control(&running, Method::POST, &format!("/control/envelopes/{id}/decline"), Some(request)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "declined");
    assert_eq!(answer["signers"][0]["status"], "declined");

    let (_, envelope) = rest(&running, &token, Method::GET, &format!("/envelopes/{id}?include=recipients"), None).await;
    assert_eq!(envelope["status"], "declined");
    assert!(envelope["declinedDateTime"].is_string() && envelope.get("completedDateTime").is_none(), "{envelope}");
    let employee = &envelope["recipients"]["signers"][0];
    assert_eq!(employee["declinedReason"], "The start date does not work for me.");
    assert!(employee.get("signedDateTime").is_none());

    let (status, _) = control(&running, Method::POST, &format!("/control/envelopes/{id}/sign"), None).await;
    assert_eq!(status, 409, "a declined envelope cannot be signed");
    let void = json!({ "status": "voided", "voidedReason": "too late" });
    let (_, refused) = rest(&running, &token, Method::PUT, &format!("/envelopes/{id}"), Some(void)).await;
    assert_eq!(refused["errorCode"], "ENVELOPE_CANNOT_VOID_INVALID_STATE");
}

#[tokio::test]
async fn refused_definitions_carry_docusigns_error_codes_and_create_nothing() {
    let running = start().await;
    let token = token(&running).await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut definition = onboarding("agr-refused");
        change(&mut definition);
        definition
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown template",
            with(&|d| d["templateId"] = json!(uuid::Uuid::new_v4().to_string())),
            "TEMPLATE_ID_INVALID",
        ),
        (
            "no template",
            with(&|d| {
                d.as_object_mut().unwrap().remove("templateId");
            }),
            "ENVELOPE_IS_INCOMPLETE",
        ),
        ("missing role", with(&|d| d["templateRoles"].as_array_mut().unwrap().truncate(1)), "ENVELOPE_IS_INCOMPLETE"),
        (
            "role of another case",
            with(&|d| d["templateRoles"][1]["roleName"] = json!("hr manager")),
            "INVALID_REQUEST_PARAMETER",
        ),
        (
            "role of no template",
            with(&|d| d["templateRoles"][1]["roleName"] = json!("CEO")),
            "INVALID_REQUEST_PARAMETER",
        ),
        (
            "bad email",
            with(&|d| d["templateRoles"][0]["email"] = json!("jane.doe@")),
            "INVALID_EMAIL_ADDRESS_FOR_RECIPIENT",
        ),
        (
            "long custom field",
            with(&|d| d["customFields"]["textCustomFields"][0]["value"] = json!("x".repeat(101))),
            "INVALID_REQUEST_PARAMETER",
        ),
        ("status", with(&|d| d["status"] = json!("completed")), "INVALID_REQUEST_PARAMETER"),
    ];
    for (what, definition, code) in cases {
        let (status, refused) = rest(&running, &token, Method::POST, "/envelopes", Some(definition)).await;
        assert_eq!((status, refused["errorCode"].as_str()), (400, Some(code)), "{what}: {refused}");
        assert!(!refused["message"].as_str().unwrap_or_default().is_empty(), "{what}");
    }
    for body in ["{\"templateId\": ", "[1, 2]", ""] {
        let response = client()
            .post(api(&running, "/envelopes"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body:?}");
        assert_eq!(response.json::<Value>().await.unwrap()["errorCode"], "INVALID_REQUEST_BODY", "{body:?}");
    }
    assert!(running.sandbox.sent_envelopes().is_empty(), "nothing was created");
    assert_eq!(running.sandbox.counters().routes["create"], 11);

    let anonymous = client().post(api(&running, "/envelopes")).json(&onboarding("x")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the same bearer token check as every route");
}

#[tokio::test]
async fn a_draft_stays_a_draft() {
    let running = start().await;
    let token = token(&running).await;
    let mut definition = onboarding("agr-draft");
    definition["status"] = json!("created");
    let (status, created) = rest(&running, &token, Method::POST, "/envelopes", Some(definition)).await;
    assert_eq!((status, created["status"].as_str()), (201, Some("created")), "{created}");
    let id = EnvelopeId::parse(created["envelopeId"].as_str().unwrap()).unwrap();

    let (_, envelope) = rest(&running, &token, Method::GET, &format!("/envelopes/{id}?include=recipients"), None).await;
    assert_eq!(envelope["status"], "created");
    assert!(envelope.get("sentDateTime").is_none(), "{envelope}");
    assert_eq!(envelope["recipients"]["signers"][0]["status"], "created");
    assert!(matches!(
        running.sandbox.sign(id),
        Err(LifecycleError::NotInProcess { status: EnvelopeStatus::Created, .. })
    ));
    assert!(running.sandbox.void(id, "never sent").is_err(), "a draft cannot be voided");
}

#[tokio::test]
async fn the_rust_api_drives_the_same_lifecycle() {
    let running = start().await;
    let sandbox = &running.sandbox;
    let envelope = sandbox.create_envelope(&onboarding("agr-rust")).unwrap();
    assert_eq!(envelope.state, EnvelopeStatus::Sent);
    assert_eq!(envelope.custom_field("countersign_agreement_id"), Some("agr-rust"));
    let refused = sandbox.create_envelope(&json!({ "templateId": "nope", "status": "sent" })).unwrap_err();
    assert_eq!(refused.error_code, "TEMPLATE_ID_INVALID");

    let id = envelope.envelope_id;
    let values = BTreeMap::from([("laptop_model".to_string(), "Framework 13".to_string())]);
    assert!(matches!(
        sandbox.sign_as(id, Some("1"), &BTreeMap::from([("no_such_tab".into(), "x".into())])),
        Err(LifecycleError::UnknownTab { .. })
    ));
    assert_eq!(sandbox.sign_as(id, Some("1"), &values).unwrap().state, EnvelopeStatus::Delivered);
    assert!(matches!(sandbox.sign_as(id, Some("9"), &values), Err(LifecycleError::UnknownRecipient { .. })));
    let completed = sandbox.sign(id).unwrap();
    assert_eq!(completed.state, EnvelopeStatus::Completed);
    assert!(completed.completed_time().is_some());
    assert_eq!(sandbox.envelope(id).unwrap(), completed);

    let other = sandbox.create_envelope(&onboarding("agr-rust-2")).unwrap().envelope_id;
    let declined = sandbox.decline(other, "No thanks").unwrap();
    assert_eq!(declined.state, EnvelopeStatus::Declined);
    assert_eq!(declined.signers[0].declined_reason.as_deref(), Some("No thanks"));
    assert!(matches!(
        sandbox.decline(EnvelopeId::from_uuid(uuid::Uuid::new_v4()), "x"),
        Err(LifecycleError::UnknownEnvelope(_))
    ));
    assert_eq!(sandbox.sent_envelopes().len(), 2);
}

#[tokio::test]
async fn connect_announces_sent_and_completed_to_the_envelopes_own_listener_signed() {
    let running = start().await;
    let token = token(&running).await;
    let listener = Listener::start().await;
    let (_, identity) = control(&running, Method::GET, "/control/identity", None).await;
    let key = identity["hmac_keys"][0].as_str().unwrap().to_string();

    let mut definition = onboarding("agr-connect");
    definition["eventNotification"] = json!({
        "url": listener.url,
        "requireAcknowledgment": "true",
        "loggingEnabled": "true",
        "includeHMAC": "true",
        "events": ["envelope-sent", "envelope-completed"],
        "eventData": { "version": "restv2.1", "format": "json", "includeData": ["custom_fields", "recipients", "tabs"] },
    });
    let id = create(&running, &token, definition).await;

    let (headers, body, sent) = listener.wait_for("envelope-sent").await;
    let signature = headers.get("X-DocuSign-Signature-1").expect("signed").to_str().unwrap();
    assert_eq!(signature, hmac_base64(&key, &body));
    assert_eq!(sent["data"]["envelopeId"], id);
    assert_eq!(sent["uri"], format!("/restapi/v2.1/accounts/{}/envelopes/{id}", running.sandbox.identity().account_id));
    let summary = &sent["data"]["envelopeSummary"];
    assert_eq!(summary["status"], "sent");
    assert_eq!(summary["customFields"]["textCustomFields"][0]["name"], "countersign_agreement_id");
    assert_eq!(summary["customFields"]["textCustomFields"][0]["value"], "agr-connect");
    assert_eq!(summary["recipients"]["signers"][0]["email"], "jane.doe@example.com");
    assert_eq!(summary["recipients"]["signers"][0]["status"], "sent");

    running.sandbox.sign(EnvelopeId::parse(&id).unwrap()).unwrap();
    let (headers, body, completed) = listener.wait_for("envelope-completed").await;
    assert_eq!(headers["X-DocuSign-Signature-1"].to_str().unwrap(), hmac_base64(&key, &body));
    let summary = &completed["data"]["envelopeSummary"];
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["customFields"]["textCustomFields"][0]["value"], "agr-connect");
    assert_eq!(summary["recipients"]["signers"][1]["status"], "completed");
    assert_eq!(text_tabs(&summary["recipients"]["signers"][0], "textTabs")["first_name"], "Jane");

    // Connect delivered them in order, and only the events the envelope asked for.
    let deliveries = common::eventually(Duration::from_secs(30), "both deliveries recorded", || async {
        let done = running.sandbox.lifecycle_deliveries();
        (done.len() >= 2).then_some(done)
    })
    .await;
    assert!(deliveries.iter().all(|d| d.report.delivered && d.url == listener.url), "{deliveries:?}");
    assert_eq!(listener.events(), ["envelope-sent", "envelope-completed"]);
}

#[tokio::test]
async fn the_accounts_listener_hears_every_change_once_even_when_an_envelope_names_it_too() {
    let running = start().await;
    let token = token(&running).await;
    let account = Listener::start().await;
    let own = Listener::start().await;
    running.sandbox.set_connect_url(Some(account.url.clone()));
    let key = running.sandbox.identity().hmac_keys[0].clone();

    // One envelope notifies its own listener unsigned, and the account's listener as well.
    let mut definition = onboarding("agr-both");
    definition["eventNotification"] = json!({
        "url": own.url, "includeHMAC": "false", "eventData": { "version": "restv2.1", "format": "json" },
    });
    let first = create(&running, &token, definition).await;
    running.sandbox.decline(EnvelopeId::parse(&first).unwrap(), "Wrong role").unwrap();
    // Another names the account's own listener: each event still arrives once.
    let mut definition = onboarding("agr-same");
    definition["eventNotification"] = json!({
        "url": account.url, "includeHMAC": "true", "events": ["envelope-sent", "envelope-voided"],
        "eventData": { "version": "restv2.1", "format": "json" },
    });
    let second = create(&running, &token, definition).await;
    let void = json!({ "status": "voided", "voidedReason": "Sent by mistake" });
    assert_eq!(rest(&running, &token, Method::PUT, &format!("/envelopes/{second}"), Some(void)).await.0, 200);

    let (_, _, voided) = account.wait_for("envelope-voided").await;
    assert_eq!(voided["data"]["envelopeSummary"]["voidedReason"], "Sent by mistake");
    let (_, _, declined) = own.wait_for("envelope-declined").await;
    assert_eq!(declined["data"]["envelopeSummary"]["recipients"]["signers"][0]["declinedReason"], "Wrong role");
    assert!(own.messages().iter().all(|(headers, _, _)| headers.get("X-DocuSign-Signature-1").is_none()));
    assert_eq!(own.events(), ["envelope-sent", "recipient-declined", "envelope-declined"]);

    let heard: Vec<(String, String)> = account
        .messages()
        .into_iter()
        .map(|(headers, body, message)| {
            assert_eq!(headers["X-DocuSign-Signature-1"].to_str().unwrap(), hmac_base64(&key, &body));
            (
                message["data"]["envelopeId"].as_str().unwrap().to_string(),
                message["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        (&first, "envelope-sent"),
        (&first, "recipient-declined"),
        (&first, "envelope-declined"),
        (&second, "envelope-sent"),
        (&second, "envelope-voided"),
    ]
    .into_iter()
    .map(|(id, event)| (id.clone(), event.to_string()))
    .collect();
    let mut heard_sorted = heard.clone();
    heard_sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(heard_sorted, expected_sorted, "every change once: {heard:?}");
    let recipient = account.messages().into_iter().find(|(_, _, m)| m["event"] == "recipient-declined").unwrap().2;
    assert_eq!(recipient["data"]["recipientId"], "1");
}

/// The new control routes are described (so schemathesis checks them in the
/// suite's run too), and answer as their description says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_sending_control_routes_as_described() {
    let running = start().await;
    let (_, description) = control(&running, Method::GET, "/control/openapi.json", None).await;
    for (method, path) in [
        ("get", "/control/templates"),
        ("post", "/control/envelopes/{envelope}/sign"),
        ("post", "/control/envelopes/{envelope}/decline"),
    ] {
        assert!(description["paths"][path][method].is_object(), "{method} {path} is described");
    }
    let url = format!("{}/control/openapi.json", running.base_url());
    let stdout = common::schemathesis(
        &url,
        &[
            "--max-examples",
            "30",
            "--include-path-regex",
            "^/control/(templates|envelopes/\\{envelope\\}/(sign|decline))$",
        ],
    )
    .await;
    assert!(stdout.contains("Tested: 3"), "the three sending operations were tested:\n{stdout}");
}
