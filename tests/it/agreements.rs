//! Sending agreements: the requests API (`/api/v1/agreements`) as an IT
//! system uses it, and an agreement's whole life against the sandbox: sent
//! exactly once from its template, signed, declined or voided, with its
//! lifecycle and completion events carrying the request.

use crate::common;

use std::time::Duration;

use common::docusign::{connect_toml, docusign_toml};
use common::{TestApp, TestStore, eventually};
use countersign::deliver::receiver::{ReceivedWebhook, WebhookReceiver, random_secret};
use countersign::domain::AgreementStatus;
use countersign::ids::AgreementId;
use countersign::jobs::{JobKind, JobPayload, SendAgreementJob};
use countersign::sandbox::RunningSandbox;
use countersign::sandbox::envelopes::{NDA_TEMPLATE, ONBOARDING_TEMPLATE};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const HRIS: &str = "hris-token-0123456789";
const CRM: &str = "crm-token-0123456789";

/// Two clients, each with its profile: the HR system sends offer letters
/// from the onboarding template, the CRM sends NDAs.
fn agreements_toml(onboarding_template: &str, sinks: &str) -> String {
    format!(
        r#"
[api]
[[api.clients]]
name = "hris"
token = "{HRIS}"
profiles = ["offer-letter"]
[[api.clients]]
name = "crm"
token = "{CRM}"
profiles = ["nda"]

[[profiles]]
name = "offer-letter"
template_id = "{onboarding_template}"
sinks = [{sinks}]
email_subject = "Your offer letter"
roles.Employee = {{ name = "/employee/name", email = "/employee/email" }}
roles."HR Manager" = {{ name = "/manager/name", email = "/manager/email" }}
tabs.start_date = "/employee/start_date"
tabs.job_title = "/employee/title"
custom_fields.employee_id = "/employee/id"

[[profiles]]
name = "nda"
template_id = "{NDA_TEMPLATE}"
roles.Counterparty = {{ name = "/name", email = "/email" }}
roles.Legal = {{ name = "/legal/name", email = "/legal/email" }}
"#
    )
}

fn offer(employee: &str) -> Value {
    json!({
        "employee": {
            "name": format!("{employee} Lovelace"),
            "email": format!("{}@example.com", employee.to_lowercase()),
            "start_date": "2027-01-04",
            "title": "Engineer",
            "id": 1815,
        },
        "manager": { "name": "Grace Hopper", "email": "grace@example.com" },
    })
}

struct Client {
    base: String,
    token: &'static str,
    http: reqwest::Client,
}

impl Client {
    fn new(app: &TestApp, token: &'static str) -> Self {
        Self { base: format!("{}/api/v1", app.base_url), token, http: reqwest::Client::new() }
    }

    async fn request(&self, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}/agreements", self.base)).bearer_auth(self.token).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(self.token).send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn void(&self, id: &str, body: &Value) -> (StatusCode, Value) {
        let url = format!("{}/agreements/{id}/void", self.base);
        let response = self.http.post(url).bearer_auth(self.token).json(body).send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }
}

fn refused(answer: &(StatusCode, Value), status: StatusCode, error: &str, field: Option<&str>) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], error, "{}", answer.1);
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer.1);
    if let Some(field) = field {
        assert_eq!(answer.1["field"], field, "{}", answer.1);
    }
}

/// countersign with the two clients and no DocuSign access: requests are
/// stored and their send jobs wait.
async fn api_only() -> TestApp {
    TestApp::spawn(common::sqlite().await, &agreements_toml(ONBOARDING_TEMPLATE, "")).await
}

#[tokio::test]
async fn a_request_is_stored_once_per_idempotency_key_with_its_send_job() {
    let app = api_only().await;
    let hris = Client::new(&app, HRIS);
    let body = json!({ "profile": "offer-letter", "data": offer("Ada") });

    let (status, first) = hris.request(Some("hire-1815"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["status"], "requested");
    assert_eq!(first["client"], "hris");
    assert_eq!(first["data"], offer("Ada"));
    let id = AgreementId::parse(first["id"].as_str().unwrap()).unwrap();
    let job = app.store.job_by_key(JobKind::SendAgreement.as_str(), &id.to_string()).await.unwrap();
    let job = job.expect("the send job is committed with the request");
    assert_eq!(SendAgreementJob::read(&job.kind, &job.payload).unwrap().agreement_id, id);

    // The same request again (keys reordered): the same agreement, nothing new.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"data": {}, "profile": "offer-letter"}}"#,
        serde_json::to_string(&offer("Ada")).unwrap()
    ))
    .unwrap();
    let (status, again) = hris.request(Some("hire-1815"), &reordered).await;
    assert_eq!((status, &again["id"]), (StatusCode::ACCEPTED, &first["id"]), "{again}");

    // The same key for another request is a client's mistake.
    let other = json!({ "profile": "offer-letter", "data": offer("Bob") });
    refused(&hris.request(Some("hire-1815"), &other).await, StatusCode::CONFLICT, "conflict", Some("Idempotency-Key"));
    refused(&hris.request(None, &body).await, StatusCode::BAD_REQUEST, "bad_request", Some("Idempotency-Key"));

    let (status, list) = hris.get("/agreements").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    let (status, one) = hris.get(&format!("/agreements/{id}")).await;
    assert_eq!((status, &one["id"], &one["envelope_id"]), (StatusCode::OK, &first["id"], &Value::Null), "{one}");

    // Another client sees none of it, and may not use this profile.
    let crm = Client::new(&app, CRM);
    refused(&crm.get(&format!("/agreements/{id}")).await, StatusCode::NOT_FOUND, "not_found", None);
    assert_eq!(crm.get("/agreements").await.1["total"], 0);
    refused(&crm.request(Some("hire-1815"), &body).await, StatusCode::FORBIDDEN, "forbidden", Some("profile"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_that_cannot_become_an_envelope_is_refused_naming_its_field_and_stores_nothing() {
    let app = api_only().await;
    let hris = Client::new(&app, HRIS);
    let mut no_email = offer("Ada");
    no_email["employee"].as_object_mut().unwrap().remove("email");
    let mut bad_email = offer("Ada");
    bad_email["employee"]["email"] = json!("ada at example");
    let mut no_tab = offer("Ada");
    no_tab["employee"]["start_date"] = json!("");
    let mut long_field = offer("Ada");
    long_field["employee"]["id"] = json!("7".repeat(101));
    for (data, pointer) in [
        (no_email, "data/employee/email"),
        (bad_email, "data/employee/email"),
        (no_tab, "data/employee/start_date"),
        (long_field, "data/employee/id"),
    ] {
        let answer = hris.request(Some("k"), &json!({ "profile": "offer-letter", "data": data })).await;
        refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", Some(pointer));
    }
    let bad = |body: Value, field: &'static str| (body, field);
    for (body, field) in [
        bad(json!({ "profile": "offer-letter" }), "data"),
        bad(json!({ "data": offer("Ada") }), "profile"),
        bad(json!({ "profile": "offer-letter", "data": [1] }), "data"),
        bad(json!({ "profile": "offer-letter", "data": offer("Ada"), "priority": 1 }), "priority"),
        bad(json!(["profile"]), "body"),
    ] {
        refused(&hris.request(Some("k"), &body).await, StatusCode::BAD_REQUEST, "bad_request", Some(field));
    }
    let unknown = json!({ "profile": "no-such-profile", "data": offer("Ada") });
    refused(&hris.request(Some("k"), &unknown).await, StatusCode::FORBIDDEN, "forbidden", Some("profile"));
    let long_key = "k".repeat(256);
    let answer = hris.request(Some(&long_key), &json!({ "profile": "offer-letter", "data": offer("Ada") })).await;
    refused(&answer, StatusCode::BAD_REQUEST, "bad_request", Some("Idempotency-Key"));

    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/agreements", app.base_url);
    for token in [None, Some("wrong-token"), Some("")] {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    let huge = json!({ "profile": "offer-letter", "data": { "blob": "x".repeat(2 * 1024 * 1024) } });
    refused(&hris.request(Some("k"), &huge).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    let malformed = http
        .post(&url)
        .bearer_auth(HRIS)
        .header("Idempotency-Key", "k")
        .header("content-type", "application/json")
        .body("{\"profile\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    assert_eq!(hris.get("/agreements").await.1["total"], 0, "nothing was stored");
    assert!(app.store.job_by_key(JobKind::SendAgreement.as_str(), "k").await.unwrap().is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_configured_client_the_requests_api_does_not_exist() {
    let app = TestApp::spawn(common::sqlite().await, "").await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/agreements", app.base_url))
        .bearer_auth(HRIS)
        .header("Idempotency-Key", "k")
        .json(&json!({ "profile": "offer-letter", "data": offer("Ada") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    app.shutdown().await;
}

#[tokio::test]
async fn the_requests_api_is_described_by_its_openapi_document() {
    let app = api_only().await;
    let description: Value =
        reqwest::get(format!("{}/api/v1/openapi.json", app.base_url)).await.unwrap().json().await.unwrap();
    let paths: Vec<&String> = description["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/api/v1/agreements", "/api/v1/agreements/{id}", "/api/v1/agreements/{id}/void"]);
    assert!(description["paths"]["/api/v1/agreements"]["post"]["responses"]["409"].is_object());
    app.shutdown().await;
}

/// A sandbox whose user consented to countersign acting as them.
async fn sandbox() -> RunningSandbox {
    let sandbox = common::docusign::sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    sandbox
}

/// countersign sending through `sandbox`: the onboarding profile's events go
/// to `receiver` (sink `hr`), as does the completion rule's, and every
/// envelope carries its own Connect subscription back to this service.
async fn sending_app(db: TestStore, sandbox: &RunningSandbox, receiver: &WebhookReceiver, secret: &str) -> TestApp {
    sending_app_with(db, sandbox, receiver, secret, ONBOARDING_TEMPLATE, true).await
}

/// [`sending_app`] from `template`; without `connect_back`, envelopes carry
/// no Connect subscription, so nothing but countersign's own calls tells it
/// about them.
async fn sending_app_with(
    db: TestStore,
    sandbox: &RunningSandbox,
    receiver: &WebhookReceiver,
    secret: &str,
    template: &str,
    connect_back: bool,
) -> TestApp {
    let tables = format!(
        "{}{}[queue]\nworkers = 4\nbackoff_base = \"100ms\"\nbackoff_cap = \"500ms\"\n[reconcile]\nenabled = false\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{secret}\"\n\
         [[rules]]\nname = \"onboarding\"\nevent_type = \"employee.onboarding.signed\"\nsinks = [\"hr\"]\n{}",
        connect_toml(sandbox),
        // A short timeout: a send whose answer was lost searches once this has passed.
        docusign_toml(sandbox, "request_timeout = \"3s\""),
        receiver.url(),
        agreements_toml(template, "\"hr\""),
    );
    TestApp::spawn_knowing_url(db, |base| {
        if !connect_back {
            return tables;
        }
        // [api] opens agreements_toml's tables: its connect_url goes right under it.
        tables.replacen("[api]\n", &format!("[api]\nconnect_url = \"{base}/docusign/connect\"\n"), 1)
    })
    .await
}

async fn agreement_in(client: &Client, id: &str, status: AgreementStatus) -> Value {
    eventually(WAIT, &format!("agreement {id} {status}"), || async {
        let (_, agreement) = client.get(&format!("/agreements/{id}")).await;
        (agreement["status"] == status.as_str()).then_some(agreement)
    })
    .await
}

fn events_of(requests: &[ReceivedWebhook], event_type: &str) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.delivered())
        .filter_map(ReceivedWebhook::event)
        .filter(|e| e["type"] == event_type)
        .collect()
}

/// The first `event_type` event of `agreement` at the receiver, once it
/// arrives; it must match docs/event.schema.json.
async fn wait_for_event(receiver: &WebhookReceiver, event_type: &str, agreement: &str) -> Value {
    let found = receiver
        .wait_until(WAIT, |requests| {
            events_of(requests, event_type).iter().any(|e| e["data"]["agreement"]["id"] == agreement)
        })
        .await
        .unwrap_or_else(|requests| panic!("no {event_type} for {agreement} among {} requests", requests.len()));
    let event = events_of(&found, event_type).into_iter().find(|e| e["data"]["agreement"]["id"] == agreement).unwrap();
    let schema: Value = serde_json::from_str(&std::fs::read_to_string("docs/event.schema.json").unwrap()).unwrap();
    let errors = common::schema::validate(&schema, &event);
    assert!(errors.is_empty(), "the event breaks docs/event.schema.json: {errors:#?}\n{event:#}");
    event
}

async fn an_agreement_is_sent_once_signed_and_its_events_carry_the_request(db: TestStore) {
    let sandbox = sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let app = sending_app(db, &sandbox, &receiver, &secret).await;
    let hris = Client::new(&app, HRIS);

    let (status, requested) =
        hris.request(Some("hire-1815"), &json!({ "profile": "offer-letter", "data": offer("Ada") })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{requested}");
    let id = requested["id"].as_str().unwrap().to_string();
    let sent = agreement_in(&hris, &id, AgreementStatus::Sent).await;
    let envelope_id = sent["envelope_id"].as_str().expect("a sent agreement names its envelope").to_string();

    // DocuSign holds one envelope, from the template, for the people the data named.
    let envelopes = sandbox.sandbox.sent_envelopes();
    assert_eq!(envelopes.len(), 1);
    let envelope = &envelopes[0];
    assert_eq!(envelope.envelope_id.to_string(), envelope_id);
    assert_eq!(envelope.template_id.to_string(), ONBOARDING_TEMPLATE);
    assert!(envelope.custom_fields.contains(&("countersign_agreement_id".to_string(), id.clone())));
    assert!(envelope.custom_fields.contains(&("employee_id".to_string(), "1815".to_string())));
    let employee = envelope.signers.iter().find(|s| s.role_name == "Employee").unwrap();
    assert_eq!(employee.person.email, "ada@example.com");
    assert!(employee.tabs.iter().any(|t| t.label == "start_date" && t.value == "2027-01-04"), "{:?}", employee.tabs);

    let sent_event = wait_for_event(&receiver, "agreement.sent", &id).await;
    assert_eq!(sent_event["subject"], envelope_id.as_str());
    assert_eq!(sent_event["data"]["agreement"]["data"], offer("Ada"));
    assert_eq!(sent_event["data"]["agreement"]["profile"], "offer-letter");
    assert_eq!(sent_event["data"]["agreement"]["client"], "hris");

    sandbox.sandbox.sign(envelope.envelope_id).unwrap();
    let completed = agreement_in(&hris, &id, AgreementStatus::Completed).await;
    assert!(completed["finished_at"].is_string());
    let signed = wait_for_event(&receiver, "employee.onboarding.signed", &id).await;
    assert_eq!(signed["subject"], envelope_id.as_str());
    assert_eq!(signed["data"]["agreement"]["data"], offer("Ada"), "the completion carries the request");
    assert!(!signed["data"]["documents"].as_array().unwrap().is_empty());

    // The sending reached the sink before the completion, and each once.
    let delivered: Vec<Value> = receiver.delivered().iter().filter_map(ReceivedWebhook::event).collect();
    let types: Vec<&str> = delivered.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["agreement.sent", "employee.onboarding.signed"], "{delivered:?}");
    assert_eq!(sandbox.sandbox.counters().routes.get("create").copied(), Some(1));
    app.shutdown().await;
}

#[tokio::test]
async fn an_agreement_is_sent_once_signed_and_its_events_carry_the_request_on_sqlite() {
    an_agreement_is_sent_once_signed_and_its_events_carry_the_request(common::sqlite().await).await;
}

#[tokio::test]
async fn an_agreement_is_sent_once_signed_and_its_events_carry_the_request_on_postgres() {
    an_agreement_is_sent_once_signed_and_its_events_carry_the_request(common::postgres().await).await;
}

#[tokio::test]
async fn an_envelope_whose_creation_answer_was_lost_is_found_again_not_sent_twice() {
    let sandbox = sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    // The first creation is carried out, then its answer is lost.
    let fault = countersign::sandbox::Fault { lost_answers: 1, ..Default::default() };
    sandbox.sandbox.set_fault("create", fault);
    // No Connect news about the envelope: only the search can find it.
    let app = sending_app_with(common::sqlite().await, &sandbox, &receiver, &secret, ONBOARDING_TEMPLATE, false).await;
    let hris = Client::new(&app, HRIS);
    let (_, requested) =
        hris.request(Some("hire-7"), &json!({ "profile": "offer-letter", "data": offer("Bob") })).await;
    let id = requested["id"].as_str().unwrap().to_string();
    let sent = agreement_in(&hris, &id, AgreementStatus::Sent).await;

    let envelopes = sandbox.sandbox.sent_envelopes();
    assert_eq!(envelopes.len(), 1, "Bob got one envelope, not two");
    assert_eq!(sent["envelope_id"].as_str(), Some(envelopes[0].envelope_id.to_string().as_str()));
    let counters = sandbox.sandbox.counters();
    assert_eq!(counters.routes.get("create").copied(), Some(1), "{counters:?}");
    assert!(counters.routes.get("listing").copied().unwrap_or(0) >= 1, "the retry looked first: {counters:?}");
    let job = app.store.job_by_key(JobKind::SendAgreement.as_str(), &id).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2);
    wait_for_event(&receiver, "agreement.sent", &id).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_declined_or_voided_agreement_tells_the_profiles_sinks_why() {
    let sandbox = sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let app = sending_app(common::sqlite().await, &sandbox, &receiver, &secret).await;
    let hris = Client::new(&app, HRIS);
    let mut ids = Vec::new();
    for (key, who) in [("decline-me", "Cleo"), ("void-me", "Dan")] {
        let (_, requested) = hris.request(Some(key), &json!({ "profile": "offer-letter", "data": offer(who) })).await;
        ids.push(requested["id"].as_str().unwrap().to_string());
    }
    let declining = agreement_in(&hris, &ids[0], AgreementStatus::Sent).await;
    let envelope = countersign::ids::EnvelopeId::parse(declining["envelope_id"].as_str().unwrap()).unwrap();
    sandbox.sandbox.decline(envelope, "I accepted another offer").unwrap();
    agreement_in(&hris, &ids[0], AgreementStatus::Declined).await;
    let declined = wait_for_event(&receiver, "agreement.declined", &ids[0]).await;
    assert_eq!(declined["data"]["status"], "declined");
    assert_eq!(declined["data"]["reason"], "I accepted another offer");
    assert_eq!(declined["data"]["agreement"]["data"], offer("Cleo"));

    agreement_in(&hris, &ids[1], AgreementStatus::Sent).await;
    let (status, voiding) = hris.void(&ids[1], &json!({ "reason": "Position closed" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{voiding}");
    assert_eq!(voiding["void_reason"], "Position closed");
    let voided = agreement_in(&hris, &ids[1], AgreementStatus::Voided).await;
    let envelope = countersign::ids::EnvelopeId::parse(voided["envelope_id"].as_str().unwrap()).unwrap();
    assert_eq!(sandbox.sandbox.envelope(envelope).unwrap().status(), "voided");
    let event = wait_for_event(&receiver, "agreement.voided", &ids[1]).await;
    assert_eq!(event["data"]["reason"], "Position closed");

    refused(&hris.void(&ids[1], &json!({ "reason": "again" })).await, StatusCode::CONFLICT, "conflict", None);
    refused(&hris.void(&ids[0], &json!({ "reason": "too late" })).await, StatusCode::CONFLICT, "conflict", None);
    refused(&hris.void(&ids[0], &json!({})).await, StatusCode::BAD_REQUEST, "bad_request", Some("reason"));
    assert_eq!(sandbox.sandbox.counters().routes.get("create").copied(), Some(2));
    app.shutdown().await;
}

#[tokio::test]
async fn an_agreement_docusign_refuses_fails_with_its_error_code_and_is_not_retried() {
    let sandbox = sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let unknown_template = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a";
    let app = sending_app_with(common::sqlite().await, &sandbox, &receiver, &secret, unknown_template, true).await;
    let hris = Client::new(&app, HRIS);
    let (_, requested) =
        hris.request(Some("hire-9"), &json!({ "profile": "offer-letter", "data": offer("Eve") })).await;
    let id = requested["id"].as_str().unwrap().to_string();
    let failed = agreement_in(&hris, &id, AgreementStatus::Failed).await;
    assert_eq!(failed["error_code"], "TEMPLATE_ID_INVALID", "{failed}");
    assert_eq!(failed["envelope_id"], Value::Null);
    let event = wait_for_event(&receiver, "agreement.failed", &id).await;
    assert_eq!(event["data"]["error"]["code"], "TEMPLATE_ID_INVALID");
    assert_eq!(event["subject"], id.as_str(), "an agreement without an envelope is its own subject");
    let counters = sandbox.sandbox.counters();
    assert_eq!(counters.routes.get("create").copied(), None, "the template was refused first");
    assert_eq!(counters.routes.get("template").copied(), Some(1), "a refusal is not asked again: {counters:?}");
    assert!(sandbox.sandbox.sent_envelopes().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn check_confirms_each_profiles_template_roles_and_tabs_with_one_call_per_template() {
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    // A second profile on the same template names a role and a tab the template lacks.
    let wrong = format!(
        "[[profiles]]\nname = \"wrong\"\ntemplate_id = \"{ONBOARDING_TEMPLATE}\"\n\
         roles.Employee = {{ name = \"/n\", email = \"/e\" }}\nroles.Intern = {{ name = \"/n\", email = \"/e\" }}\n\
         tabs.shoe_size = \"/s\"\n"
    );
    let config = format!(
        "[store]\nurl = \"sqlite://{}/cs.db\"\n{}{}{}{wrong}",
        dir.path().display(),
        connect_toml(&sandbox),
        docusign_toml(&sandbox, ""),
        agreements_toml(ONBOARDING_TEMPLATE, "")
    );
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["check", "--config", "c.toml"])
            .current_dir(path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("profile offer-letter: ok (template "), "{stdout}");
    assert!(stdout.contains("profile nda: ok (template "), "{stdout}");
    assert!(stdout.contains("profile wrong: FAILED"), "{stdout}");
    assert!(stdout.contains("roles.Intern: the template has no such role"), "{stdout}");
    assert!(stdout.contains("the template's role `HR Manager` gets no recipient"), "{stdout}");
    assert!(stdout.contains("tabs.shoe_size: no tab of the template has this label"), "{stdout}");
    let calls = sandbox.sandbox.counters().routes.get("template").copied();
    assert_eq!(calls, Some(2), "one call per template, not per profile");
}

/// schemathesis sends what the description allows (and what it does not)
/// to every route: each answer must match the description, none a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_difference_between_the_requests_api_and_its_description() {
    let app = api_only().await;
    let url = format!("{}/api/v1/openapi.json", app.base_url);
    let bearer = format!("Authorization: Bearer {HRIS}");
    let stdout = common::schemathesis(&url, &["--max-examples", "60", "--header", &bearer]).await;
    assert!(stdout.contains("Tested: 4"), "every operation was tested:\n{stdout}");
    app.shutdown().await;
}

#[tokio::test]
async fn an_agreement_waits_for_consent_and_is_sent_once_it_is_granted() {
    // No consent yet: the send must wait, not fail.
    let sandbox = common::docusign::sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    let app = sending_app(common::sqlite().await, &sandbox, &receiver, &secret).await;
    let hris = Client::new(&app, HRIS);
    let (_, requested) =
        hris.request(Some("hire-42"), &json!({ "profile": "offer-letter", "data": offer("Fay") })).await;
    let id = requested["id"].as_str().unwrap().to_string();
    let job = eventually(WAIT, "the send job parked on consent", || async {
        let job = app.store.job_by_key(JobKind::SendAgreement.as_str(), &id).await.unwrap()?;
        (job.state == countersign::store::JobState::Parked).then_some(job)
    })
    .await;
    assert!(job.last_error.unwrap_or_default().contains("consent"));
    assert_eq!(hris.get(&format!("/agreements/{id}")).await.1["status"], "requested");
    assert!(sandbox.sandbox.sent_envelopes().is_empty());

    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    // What the consent callback does once the user allowed access.
    app.store.wake_parked().await.unwrap();
    agreement_in(&hris, &id, AgreementStatus::Sent).await;
    assert_eq!(sandbox.sandbox.sent_envelopes().len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_second_envelope_for_one_agreement_is_voided_and_the_first_kept() {
    let sandbox = sandbox().await;
    let secret = random_secret();
    let receiver = WebhookReceiver::spawn(&[&secret]).await.unwrap();
    // The first creation's answer is lost; before the send looks again, a
    // second envelope carrying the same agreement id appears (what two
    // workers overlapping on one send would leave).
    sandbox.sandbox.set_fault("create", countersign::sandbox::Fault { lost_answers: 1, ..Default::default() });
    let app = sending_app_with(common::sqlite().await, &sandbox, &receiver, &secret, ONBOARDING_TEMPLATE, false).await;
    let hris = Client::new(&app, HRIS);
    let (_, requested) =
        hris.request(Some("hire-2x"), &json!({ "profile": "offer-letter", "data": offer("Gus") })).await;
    let id = requested["id"].as_str().unwrap().to_string();
    let first =
        eventually(WAIT, "the first envelope", || async { sandbox.sandbox.sent_envelopes().first().cloned() }).await;
    let duplicate = json!({
        "templateId": ONBOARDING_TEMPLATE,
        "status": "sent",
        "templateRoles": [
            { "roleName": "Employee", "name": "Gus Lovelace", "email": "gus@example.com" },
            { "roleName": "HR Manager", "name": "Grace Hopper", "email": "grace@example.com" },
        ],
        "customFields": { "textCustomFields": [{ "name": "countersign_agreement_id", "value": id, "show": "false" }] },
    });
    let second = sandbox.sandbox.create_envelope(&duplicate).unwrap();

    let sent = agreement_in(&hris, &id, AgreementStatus::Sent).await;
    assert_eq!(sent["envelope_id"].as_str(), Some(first.envelope_id.to_string().as_str()), "the first is kept");
    let second = sandbox.sandbox.envelope(second.envelope_id).unwrap();
    assert_eq!(second.status(), "voided");
    assert!(second.voided_reason.as_deref().unwrap_or_default().contains(&first.envelope_id.to_string()));
    assert_eq!(sandbox.sandbox.envelope(first.envelope_id).unwrap().status(), "sent");
    app.shutdown().await;
}
