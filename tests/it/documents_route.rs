//! `GET /documents/{envelope}/{file}` over real HTTP, fetched the way an
//! event's consumer fetches it: from the URL in the event data, with the
//! sink's bearer token or through the signed link.

use crate::common;

use chrono::{Duration, Utc};
use common::envelopes::{ACCOUNT, SECRET, new_envelope_id, offer_letter, publish};
use countersign::deliver::receiver::WebhookReceiver;
use countersign::events::Planner;
use countersign::ids::EnvelopeId;
use countersign::store::DocumentRecord;
use sha2::Digest;

const HR_TOKEN: &str = "hr-token-0123456789abcdef";
const CRM_TOKEN: &str = "crm-token-0123456789abcdef";

struct Fixture {
    app: common::TestApp,
    planner: Planner,
    _receiver: WebhookReceiver,
    client: reqwest::Client,
}

async fn fixture() -> Fixture {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let config = format!(
        "[server]\npublic_url = \"https://cs.example.com/\"\n[events]\nlink_key = \"a link key of some length\"\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntoken = \"{HR_TOKEN}\"\n\
         [[sinks]]\nname = \"crm\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntoken = \"{CRM_TOKEN}\"\n\
         [[rules]]\nname = \"onboarding\"\nevent_type = \"employee.onboarding.signed\"\nsinks = [\"hr\"]\n",
        url = receiver.url()
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    Fixture { app, planner, _receiver: receiver, client: reqwest::Client::new() }
}

/// Stores a PDF for a new envelope and publishes its event as of `now`;
/// returns the envelope, the bytes and the document URL the event carries,
/// pointed at the test server.
async fn envelope_with_document(f: &Fixture, now: chrono::DateTime<Utc>) -> (EnvelopeId, Vec<u8>, url::Url) {
    let envelope = offer_letter(new_envelope_id());
    let id = envelope.envelope.envelope_id;
    let bytes = format!("%PDF-1.7 offer letter of {id}\n%%EOF\n").into_bytes();
    let key = format!("{ACCOUNT}/{id}/1-Offer letter.pdf");
    let path = f.app.documents_dir.path().join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let document = DocumentRecord {
        account_id: countersign::ids::AccountId::parse(ACCOUNT).unwrap(),
        envelope_id: id,
        document_id: "1".into(),
        name: "Offer letter.pdf".into(),
        file_name: "1-Offer letter.pdf".into(),
        content_type: "application/pdf".into(),
        size_bytes: bytes.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        storage_key: key,
        stored_at: now,
    };
    let plan = publish(&*f.app.store, &f.planner, &envelope, &[document], now).await;
    let link = plan.events[0].event.body["data"]["documents"][0]["url"].as_str().unwrap().to_string();
    let link = url::Url::parse(&link).unwrap();
    assert_eq!(link.host_str(), Some("cs.example.com"), "links start with server.public_url");
    let local = url::Url::parse(&format!("{}{}?{}", f.app.base_url, link.path(), link.query().unwrap())).unwrap();
    (id, bytes, local)
}

fn without_query(url: &url::Url) -> url::Url {
    let mut plain = url.clone();
    plain.set_query(None);
    plain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_link_from_the_event_fetches_the_document() {
    let f = fixture().await;
    let (_, bytes, link) = envelope_with_document(&f, Utc::now()).await;
    let response = f.client.get(link).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    assert_eq!(headers["etag"], format!("\"{}\"", hex::encode(sha2::Sha256::digest(&bytes))).as_str());
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment; filename=\"1-Offer letter.pdf\""), "{disposition}");
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_token_reads_only_the_documents_of_envelopes_that_sink_received() {
    let f = fixture().await;
    let (_, bytes, link) = envelope_with_document(&f, Utc::now()).await;
    let plain = without_query(&link);
    let get = |token: Option<&'static str>| {
        let request = f.client.get(plain.clone());
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    let response = get(Some(HR_TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(get(Some(CRM_TOKEN)).await.status(), 404, "crm received no event of this envelope");
    assert_eq!(get(Some("not-a-token-of-any-sink")).await.status(), 401);
    let anonymous = get(None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");

    let mut missing = plain.clone();
    missing.path_segments_mut().unwrap().pop().push("2-Other.pdf");
    let response = f.client.get(missing).bearer_auth(HR_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let escape = format!(
        "{}/documents/{}/..%2F..%2F..%2Fetc%2Fpasswd",
        f.app.base_url,
        link.path_segments().unwrap().nth(1).unwrap()
    );
    assert_eq!(f.client.get(escape).bearer_auth(HR_TOKEN).send().await.unwrap().status(), 404);
    let bad_envelope = format!("{}/documents/not-an-envelope/x.pdf", f.app.base_url);
    assert_eq!(f.client.get(bad_envelope).bearer_auth(HR_TOKEN).send().await.unwrap().status(), 404);
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_expired_link_is_refused() {
    let f = fixture().await;
    let (_, _, link) = envelope_with_document(&f, Utc::now()).await;
    let query: Vec<(String, String)> = link.query_pairs().into_owned().collect();
    let mut later = without_query(&link);
    for (key, value) in &query {
        let value = if key == "expires" { (value.parse::<i64>().unwrap() + 3600).to_string() } else { value.clone() };
        later.query_pairs_mut().append_pair(key, &value);
    }
    assert_eq!(f.client.get(later).send().await.unwrap().status(), 403, "a pushed-out expiry breaks the signature");

    let (_, _, other) = envelope_with_document(&f, Utc::now()).await;
    let mut borrowed = without_query(&other);
    borrowed.set_query(link.query());
    assert_eq!(f.client.get(borrowed).send().await.unwrap().status(), 403, "a signature is for one document");

    let (_, _, old) = envelope_with_document(&f, Utc::now() - Duration::days(8)).await;
    let response = f.client.get(old.clone()).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!((body["error"].as_str(), body["message"].as_str()), (Some("forbidden"), Some("this link has expired")));
    let response = f.client.get(without_query(&old)).bearer_auth(HR_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200, "the sink's token still works after the link expired");
    f.app.shutdown().await;
}

/// Every route answers an error with the same body: a stable `error` code,
/// a `message`, and `field` only when a request field is at fault. Here the
/// Connect listener, the documents route and the admin API, each refusing.
#[tokio::test]
async fn every_route_refuses_with_the_same_error_body() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let config = format!(
        "[admin]\ntoken = \"admin-token-0123456789\"\n[connect]\nhmac_keys = [\"a connect key\"]\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntoken = \"{HR_TOKEN}\"\n",
        url = receiver.url()
    );
    let app = common::TestApp::spawn(common::sqlite().await, &config).await;
    let client = reqwest::Client::new();
    let envelope = new_envelope_id();
    let refusals = [
        (client.post(app.connect_url()).body("{}"), 401, "unauthorized"),
        (client.get(format!("{}/documents/{envelope}/x.pdf", app.base_url)), 401, "unauthorized"),
        (client.get(format!("{}/documents/{envelope}/x.pdf", app.base_url)).bearer_auth(HR_TOKEN), 404, "not_found"),
        (client.get(format!("{}/admin/api/overview", app.base_url)), 401, "unauthorized"),
        (
            client.get(format!("{}/admin/api/envelopes?limit=0", app.base_url)).bearer_auth("admin-token-0123456789"),
            400,
            "invalid_input",
        ),
    ];
    for (request, status, code) in refusals {
        let response = request.send().await.unwrap();
        let url = response.url().path().to_string();
        assert_eq!(response.status(), status, "{url}");
        let body: serde_json::Value = response.json().await.unwrap();
        let object = body.as_object().unwrap();
        assert_eq!(body["error"], code, "{url}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{url}: {body}");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let expected: &[&str] =
            if code == "invalid_input" { &["error", "field", "message"] } else { &["error", "message"] };
        assert_eq!(keys, expected, "{url}: {body}");
    }
    app.shutdown().await;
}
