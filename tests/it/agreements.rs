//! Sending agreements: the requests API (`/api/v1/agreements`) as an IT
//! system uses it, and an agreement's whole life against the sandbox: sent
//! exactly once from its template, signed, declined or voided, with its
//! lifecycle and completion events carrying the request.

use crate::common;

use std::time::Duration;

use common::docusign::{connect_toml, docusign_toml, sandbox};
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
