//! The admin API and the operator page over real HTTP on 127.0.0.1, against
//! stores holding what the pipeline really wrote: envelopes processed from
//! the DocuSign sandbox's Connect notifications, deliveries that died at a
//! failing webhook receiver.

use crate::common;

use std::time::Duration;

use chrono::Utc;
use common::envelopes::{SECRET, new_envelope_id, offer_letter, publish, publish_many};
use common::{TestApp, TestStore, eventually};
use countersign::deliver::receiver::{Reply, WebhookReceiver};
use countersign::events::Planner;
use countersign::sandbox::connect::{ConnectFormat, NotificationOptions, json_sim_body, signature_headers};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "admin-test-token-0123456789abcdef";

/// Retries within milliseconds, so a delivery dies quickly.
const FAST: &str = "[queue]\nworkers = 4\n\
    [delivery]\nschedule = [\"50ms\", \"50ms\"]\ntimeout = \"10s\"\nsuspend_after = \"1h\"\nprobe_every = \"200ms\"\n";

fn admin() -> String {
    format!("[admin]\ntoken = \"{TOKEN}\"\n")
}

fn webhook(name: &str, url: &str) -> String {
    format!("[[sinks]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n")
}

/// A client of the admin API with the token.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(app: &TestApp) -> Self {
        Self { base: app.base_url.clone(), client: reqwest::Client::new() }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth(TOKEN).send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let request = self.client.post(format!("{}{path}", self.base)).bearer_auth(TOKEN);
        let request = if body.is_null() { request } else { request.json(&body) };
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }
}

/// A browser of the page: no redirects followed, the session cookie kept by hand.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: app.base_url.clone(), client, cookie: None }
    }

    async fn log_in(&mut self, token: &str) -> reqwest::Response {
        let response =
            self.client.post(format!("{}/admin/login", self.base)).form(&[("token", token)]).send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap().to_string();
            self.cookie = Some(set.split(';').next().unwrap().to_string());
        }
        response
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.unwrap()
    }
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#).unwrap();
    re.captures(html).expect("a form with a CSRF token")[1].to_string()
}

#[tokio::test]
async fn without_a_token_the_admin_api_and_page_do_not_exist() {
    let app = TestApp::spawn(common::sqlite().await, "").await;
    let client = reqwest::Client::new();
    for path in ["/admin/api/overview", "/admin/api/openapi.json", "/admin/", "/admin/login"] {
        let response = client.get(format!("{}{path}", app.base_url)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = client.post(format!("{}/admin/api/keys/reload", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), 404, "no route even for a write");
    assert_eq!(client.get(format!("{}/healthz", app.base_url)).send().await.unwrap().status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_with_401_and_a_json_error() {
    let app = TestApp::spawn(common::sqlite().await, &admin()).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", app.base_url);
    for path in ["/admin/api/overview", "/admin/api/openapi.json", "/admin/api/envelopes", "/admin/api/nowhere"] {
        let refusals = [
            client.get(url(path)).send().await.unwrap(),
            client.get(url(path)).bearer_auth("admin-test-token-0123456789abcdeX").send().await.unwrap(),
            client.get(url(path)).bearer_auth(&TOKEN[..10]).send().await.unwrap(),
            client.get(url(path)).basic_auth("admin", Some(TOKEN)).send().await.unwrap(),
            client.get(url(path)).header("authorization", "Bearer ").send().await.unwrap(),
        ];
        for response in refusals {
            assert_eq!(response.status(), 401, "{path}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"countersign-admin\"");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized", "{path}: {body}");
        }
    }
    let refused = client.post(url("/admin/api/keys/reload")).send().await.unwrap();
    assert_eq!(refused.status(), 401, "writes too");

    let api = Api::new(&app);
    assert_eq!(api.get("/admin/api/overview").await.0, 200);
    let (status, body) = api.get("/admin/api/nowhere").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    app.shutdown().await;
}

#[tokio::test]
async fn the_openapi_description_covers_every_endpoint_and_the_bearer_scheme() {
    let app = TestApp::spawn(common::sqlite().await, &admin()).await;
    let (status, description) = Api::new(&app).get("/admin/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(description["openapi"].as_str().unwrap().starts_with("3."));
    let paths = description["paths"].as_object().unwrap();
    for (path, method) in [
        ("/admin/api/overview", "get"),
        ("/admin/api/envelopes", "get"),
        ("/admin/api/envelopes/{envelope_id}", "get"),
        ("/admin/api/dead-letters", "get"),
        ("/admin/api/jobs/{job_id}/replay", "post"),
        ("/admin/api/deliveries/replay", "post"),
        ("/admin/api/consent", "get"),
        ("/admin/api/sinks", "get"),
        ("/admin/api/sinks/{name}/suspend", "post"),
        ("/admin/api/sinks/{name}/resume", "post"),
        ("/admin/api/keys/reload", "post"),
        ("/admin/api/reload", "post"),
        ("/admin/api/envelopes/{envelope_id}/reprocess", "post"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is described");
    }
    assert_eq!(description["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for schema in ["EnvelopeDetail", "DeadDelivery", "SinkStatus", "ErrorBody", "JobState"] {
        assert!(description["components"]["schemas"].get(schema).is_some(), "schema {schema}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envelopes_processed_by_the_pipeline_are_listed_by_status_and_each_shows_its_whole_history() {
    use common::docusign::{countersign_with, options, sandbox, send_all, sender};
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let app = countersign_with(&sandbox, "", "", &format!("{}{}", admin(), webhook("hr", receiver.url()))).await;
    let envelopes = sandbox.sandbox.complete_envelopes(5);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, false)).await;
    receiver.wait_for_delivered(5, WAIT).await.unwrap();
    let api = Api::new(&app);
    let processed = eventually(WAIT, "every delivery recorded", || async {
        let (_, overview) = api.get("/admin/api/overview").await;
        let done = overview["queue"].as_array()?.iter().any(|s| s["kind"] == "deliver" && s["state"] == "done");
        (overview["envelopes"]["processed"] == 5 && done).then_some(overview)
    })
    .await;
    assert_eq!(processed["dead_deliveries"], 0);

    let (status, first) = api.get("/admin/api/envelopes?status=processed&limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((first["total"].as_u64(), first["next_offset"].as_u64()), (Some(5), Some(2)));
    assert_eq!(first["envelopes"].as_array().unwrap().len(), 2);
    let (_, last) = api.get("/admin/api/envelopes?status=processed&limit=2&offset=4").await;
    assert_eq!(last["envelopes"].as_array().unwrap().len(), 1);
    assert!(last["next_offset"].is_null());
    let (_, received) = api.get("/admin/api/envelopes?status=received").await;
    assert_eq!(received["total"], 0);
    let (_, all) = api.get("/admin/api/envelopes").await;
    let mut listed: Vec<String> =
        all["envelopes"].as_array().unwrap().iter().map(|e| e["envelope_id"].as_str().unwrap().to_string()).collect();
    let mut sent: Vec<String> = envelopes.iter().map(|e| e.envelope_id.to_string()).collect();
    listed.sort();
    sent.sort();
    assert_eq!(listed, sent);

    let envelope = &envelopes[0];
    let (status, detail) = api.get(&format!("/admin/api/envelopes/{}", envelope.envelope_id)).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["envelope"]["subject"], envelope.subject.as_str());
    assert_eq!(detail["envelope"]["status"], "processed");
    assert_eq!(detail["notifications"][0]["event"], "envelope-completed");
    assert_eq!(detail["notifications"][0]["origin"], "connect");
    let processing = &detail["processing"];
    assert_eq!(processing["job"]["state"], "done");
    assert_eq!(processing["attempts"].as_array().unwrap().last().unwrap()["outcome"], "succeeded");
    let documents = detail["documents"].as_array().unwrap();
    assert!(!documents.is_empty(), "the downloaded documents are listed");
    assert!(documents.iter().all(|d| d["sha256"].as_str().unwrap().len() == 64));
    let events = detail["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"]["event_type"], "envelope.completed");
    let delivery = &events[0]["deliveries"][0];
    assert_eq!(
        (delivery["delivery"]["sink"].as_str(), delivery["delivery"]["state"].as_str()),
        (Some("hr"), Some("delivered"))
    );
    // The delivery may first have waited its turn (deferred: the sink's
    // max_in_flight was taken by the other envelopes); it never failed and
    // its last attempt delivered.
    let attempts = delivery["job"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["outcome"], "succeeded", "{attempts:?}");
    assert!(attempts[..attempts.len() - 1].iter().all(|a| a["outcome"] == "deferred"), "{attempts:?}");

    // Bad input is refused with the field named.
    for (path, field) in [
        ("/admin/api/envelopes?status=done", "status"),
        ("/admin/api/envelopes?limit=0", "limit"),
        ("/admin/api/envelopes?limit=many", "limit"),
        ("/admin/api/envelopes?offset=-1", "offset"),
        ("/admin/api/envelopes?stauts=processed", "stauts"),
        ("/admin/api/envelopes/not-a-guid", "envelope_id"),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_input")), "{path}");
        assert_eq!(body["field"], field, "{path}: {body}");
    }
    let (status, _) = api.get(&format!("/admin/api/envelopes/{}", new_envelope_id())).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

/// A delivery dies at a receiver answering 500; replaying it through the
/// API queues it again and it arrives once the receiver is back.
async fn replay_through_the_api_requeues_a_dead_delivery(db: TestStore) {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    receiver.set_default_reply(Reply::status(500));
    let app = TestApp::spawn(db, &format!("{}{FAST}{}", admin(), webhook("hr", receiver.url()))).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let event = publish_many(&*app.store, &planner, 1).await.remove(0).events[0].event.id;
    let api = Api::new(&app);
    let dead = eventually(WAIT, "a dead delivery listed", || async {
        let (_, dead) = api.get("/admin/api/dead-letters").await;
        dead["deliveries"].as_array().filter(|d| !d.is_empty()).map(|d| d[0].clone())
    })
    .await;
    assert_eq!(dead["event_id"], event.to_string());
    assert_eq!((dead["sink"].as_str(), dead["attempts"].as_u64()), (Some("hr"), Some(3)));
    assert!(dead["last_error"].as_str().unwrap().contains("HTTP 500"));
    let (_, overview) = api.get("/admin/api/overview").await;
    assert_eq!(overview["dead_deliveries"], 1);
    let (_, sinks) = api.get("/admin/api/sinks").await;
    assert_eq!(sinks[0]["dead_deliveries"], 1);
    assert_eq!(sinks[0]["circuit"]["state"], "failing", "{sinks}");

    receiver.set_default_reply(Reply::OK);
    let job = dead["job_id"].as_str().unwrap();
    let (status, replayed) = api.post(&format!("/admin/api/jobs/{job}/replay"), Value::Null).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["kind"], "deliver");
    assert_eq!(replayed["delivery"]["deliveries"][0]["event_id"], event.to_string());
    receiver.wait_for_delivered(1, WAIT).await.unwrap();
    eventually(WAIT, "the delivery recorded as delivered", || async {
        let row = app.store.deliveries_for(event).await.unwrap().into_iter().next()?;
        (row.state == countersign::store::DeliveryState::Delivered).then_some(())
    })
    .await;
    let (_, after) = api.get("/admin/api/dead-letters").await;
    assert_eq!(after["deliveries"], json!([]));
    let (status, again) = api.post(&format!("/admin/api/jobs/{job}/replay"), Value::Null).await;
    assert_eq!((status, again["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{again}");

    // Bad input names its field; an unknown sink or job is 404.
    for (body, field) in [
        (json!({ "sink": 5 }), "sink"),
        (json!({ "event": "nope" }), "event"),
        (json!({ "since": "yesterday" }), "since"),
        (json!({ "sinks": "hr" }), "sinks"),
        (json!(["hr"]), "body"),
    ] {
        let (status, error) = api.post("/admin/api/deliveries/replay", body).await;
        assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{error}");
    }
    let (status, _) = api.post("/admin/api/deliveries/replay", json!({ "sink": "crm" })).await;
    assert_eq!(status, 404);
    let (status, error) = api.post("/admin/api/jobs/12/replay", Value::Null).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("job_id")));
    let (status, _) = api.post(&format!("/admin/api/jobs/{}/replay", uuid::Uuid::now_v7()), Value::Null).await;
    assert_eq!(status, 404);
    let (status, nothing) = api.post("/admin/api/deliveries/replay", json!({})).await;
    assert_eq!((status, nothing["deliveries"].clone()), (StatusCode::OK, json!([])), "nothing left to replay");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_through_the_api_requeues_a_dead_delivery_on_sqlite() {
    replay_through_the_api_requeues_a_dead_delivery(common::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_through_the_api_requeues_a_dead_delivery_on_postgres() {
    replay_through_the_api_requeues_a_dead_delivery(common::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspended_sink_gets_nothing_until_it_is_resumed_and_then_gets_what_it_missed() {
    let hr = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let crm = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let config = format!("{}{FAST}{}{}", admin(), webhook("hr", hr.url()), webhook("crm", crm.url()));
    let app = TestApp::spawn(common::sqlite().await, &config).await;
    let api = Api::new(&app);
    let (_, sinks) = api.get("/admin/api/sinks").await;
    assert_eq!(sinks.as_array().unwrap().len(), 2);
    assert!(sinks.as_array().unwrap().iter().all(|s| s["circuit"]["state"] == "closed" && s["disabled"].is_null()));
    assert_eq!(sinks[0]["kind"], "webhook");

    let (status, suspended) = api.post("/admin/api/sinks/hr/suspend", json!({ "reason": "HR system migration" })).await;
    assert_eq!(status, 200, "{suspended}");
    assert!(suspended["disabled"]["reason"].as_str().unwrap().contains("HR system migration"));
    let planner = Planner::from_settings(&app.settings).unwrap();
    let event = publish_many(&*app.store, &planner, 1).await.remove(0).events[0].event.id;
    crm.wait_for_delivered(1, WAIT).await.unwrap();
    eventually(WAIT, "the suspended sink's delivery to be dead", || async {
        let (_, dead) = api.get("/admin/api/dead-letters?sink=hr").await;
        (dead["deliveries"][0]["event_id"] == event.to_string()).then_some(())
    })
    .await;
    assert!(hr.requests().is_empty(), "a suspended sink gets no request");

    let (status, resumed) = api.post("/admin/api/sinks/hr/resume", Value::Null).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["enabled_sinks"], json!(["hr"]));
    assert_eq!(resumed["deliveries"][0]["event_id"], event.to_string());
    let delivered = hr.wait_for_delivered(1, WAIT).await.unwrap();
    assert_eq!(delivered[0].event().unwrap()["id"], event.to_string());
    let (_, sink) = api.get("/admin/api/sinks").await;
    assert!(sink[0]["disabled"].is_null());

    let (status, _) = api.post("/admin/api/sinks/payroll/suspend", Value::Null).await;
    assert_eq!(status, 404);
    let (status, error) = api.post("/admin/api/sinks/hr/suspend", json!({ "reason": 3 })).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("reason")));
    app.shutdown().await;
}

#[tokio::test]
async fn consent_shows_the_consent_url_and_each_users_access() {
    let sandbox = common::docusign::sandbox().await;
    let config = format!("{}{}", admin(), common::docusign::docusign_toml(&sandbox, ""));
    let app = TestApp::spawn(common::sqlite().await, &config).await;
    let (status, consent) = Api::new(&app).get("/admin/api/consent").await;
    assert_eq!(status, 200);
    assert_eq!(consent["configured"], true);
    let url = consent["consent_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/oauth/auth?response_type=code", sandbox.base_url())), "{url}");
    let identity = sandbox.sandbox.identity();
    assert!(url.contains(&format!("client_id={}", identity.integration_key)));
    assert_eq!(consent["users"][0]["user_id"], identity.user.user_id.to_string());
    assert_eq!(consent["users"][0]["state"], "unknown", "no token asked for yet");
    app.shutdown().await;

    let bare = TestApp::spawn(common::sqlite().await, &admin()).await;
    let (_, consent) = Api::new(&bare).get("/admin/api/consent").await;
    assert_eq!((consent["configured"].as_bool(), consent["consent_url"].as_str()), (Some(false), None));
    assert!(consent["consent_url_error"].as_str().unwrap().contains("docusign.integration_key"));
    bare.shutdown().await;
}

#[tokio::test]
async fn key_reload_puts_a_new_hmac_key_from_the_config_file_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    let app = TestApp::spawn_from_file(
        common::sqlite().await,
        &format!("{}[connect]\nhmac_keys = [\"first-key\"]\n", admin()),
        &path,
    )
    .await;
    let sandbox = countersign::sandbox::Sandbox::new(Default::default()).unwrap();
    let envelopes = sandbox.complete_envelopes(3);
    let client = reqwest::Client::new();
    let send = |n: usize, key: &str| {
        let body = json_sim_body(&envelopes[n], &NotificationOptions::default(), 0, Utc::now());
        let (name, value) = signature_headers(&body, &[key.to_string()]).remove(0);
        client.post(app.connect_url()).header(name, value).body(body).send()
    };
    assert_eq!(send(0, "second-key").await.unwrap().status(), 401, "not in force yet");

    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, config.replace("\"first-key\"", "\"second-key\"")).unwrap();
    let api = Api::new(&app);
    let (status, reloaded) = api.post("/admin/api/keys/reload", Value::Null).await;
    assert_eq!((status, &reloaded["keys"]), (StatusCode::OK, &json!(1)), "{reloaded}");
    assert_eq!(send(1, "second-key").await.unwrap().status(), 200);
    assert_eq!(send(2, "first-key").await.unwrap().status(), 401, "the old key is no longer accepted");

    // A configuration that no longer loads keeps the keys in force and says which key is wrong.
    std::fs::write(&path, format!("{config}[queue]\nworkers = \"many\"\n")).unwrap();
    let (status, error) = api.post("/admin/api/keys/reload", Value::Null).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["field"], "queue.workers");
    assert_eq!(send(2, "second-key").await.unwrap().status(), 200, "the keys in force are kept");
    app.shutdown().await;
}

#[tokio::test]
async fn the_page_needs_a_login_and_escapes_a_hostile_subject() {
    let app = TestApp::spawn(common::sqlite().await, &admin()).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let id = new_envelope_id();
    let mut envelope = offer_letter(id);
    let hostile = "<script>alert(\"owned\")</script> & <img src=x onerror=alert(1)>";
    envelope.envelope.subject = Some(hostile.into());
    publish(&*app.store, &planner, &envelope, &[], Utc::now()).await;

    let mut browser = Browser::new(&app);
    let (status, _) = browser.get("/admin/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "no session: to the login form");
    let (status, body) = browser.get("/admin/envelopes").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!body.contains("script"), "nothing is shown before logging in");
    assert_eq!(browser.log_in("not-the-admin-token").await.status(), 401);
    assert!(browser.cookie.is_none());

    let response = browser.log_in(TOKEN).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");

    let (status, overview) = browser.get("/admin/").await;
    assert_eq!(status, 200);
    assert!(overview.contains("id=\"count-processed\">1<"), "{overview}");
    for path in ["/admin/envelopes".to_string(), format!("/admin/envelopes/{id}")] {
        let (status, html) = browser.get(&path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            html.contains(
                "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;"
            ),
            "{path}: {html}"
        );
        assert!(!html.contains("<script") && !html.contains("<img"), "{path}: no markup from the subject");
    }
    let response = reqwest::get(format!("{}/admin/envelopes", app.base_url)).await.unwrap();
    let policy = response.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'none'") && !policy.contains("script-src"), "{policy}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_replays_a_dead_letter_only_with_its_csrf_token_from_this_origin() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    receiver.set_default_reply(Reply::status(500));
    let app =
        TestApp::spawn(common::sqlite().await, &format!("{}{FAST}{}", admin(), webhook("hr", receiver.url()))).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let plan = publish_many(&*app.store, &planner, 1).await.remove(0);
    let dead = eventually(WAIT, "a dead delivery", || async {
        app.store.dead_deliveries(&Default::default(), 10).await.unwrap().into_iter().next()
    })
    .await;
    let job = dead.job_id.to_string();

    let mut browser = Browser::new(&app);
    let response = browser.post_form("/admin/dead-letters/replay", &[("job", &job)], None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "no session: to the login form");
    browser.log_in(TOKEN).await;
    let (status, page) = browser.get("/admin/dead-letters").await;
    assert_eq!(status, 200);
    assert!(page.contains(&job) && page.contains(&plan.events[0].event.id.to_string()));
    let csrf = csrf_of(&page);

    let forged = browser.post_form("/admin/dead-letters/replay", &[("job", &job), ("csrf", "00ff")], None).await;
    assert_eq!(forged.status(), 400, "a wrong CSRF token is refused");
    let elsewhere = browser
        .post_form("/admin/dead-letters/replay", &[("job", &job), ("csrf", &csrf)], Some("https://evil.example"))
        .await;
    assert_eq!(elsewhere.status(), 400, "a post from another origin is refused");
    assert_eq!(app.store.job(dead.job_id).await.unwrap().unwrap().state, countersign::store::JobState::Dead);

    receiver.set_default_reply(Reply::OK);
    let origin = app.base_url.clone();
    let replayed =
        browser.post_form("/admin/dead-letters/replay", &[("job", &job), ("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    assert_eq!(replayed.headers()["location"], format!("/admin/dead-letters?replayed={job}"));
    receiver.wait_for_delivered(1, WAIT).await.unwrap();
    let (_, page) = browser.get(&format!("/admin/dead-letters?replayed={job}")).await;
    assert!(page.contains("is queued again") && page.contains("No dead deliveries."), "{page}");

    let logout = browser.post_form("/admin/logout", &[], None).await;
    assert!(logout.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    app.shutdown().await;
}

/// schemathesis (PyPI; scripts/test.sh installs it) generates requests from
/// `/admin/api/openapi.json` against a service holding envelopes the
/// pipeline processed and a dead delivery: every answer must match the
/// description (statuses, bodies, content types), every request the
/// description allows must be accepted and every one it forbids refused,
/// and nothing may answer 5xx. Run by hand with another seed (or
/// `--max-time 300`) to search wider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_difference_between_the_admin_api_and_its_description() {
    use common::docusign::{connect_toml, docusign_toml, options, sandbox, send_all, sender};
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    // The first delivery of each event fails for good: dead letters to look at.
    receiver.reply_next([Reply::status(500), Reply::status(500)]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}{}[reconcile]\nenabled = false\n{FAST}\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        admin(),
        connect_toml(&sandbox),
        docusign_toml(&sandbox, ""),
        receiver.url()
    );
    let app = TestApp::spawn_from_file(common::sqlite().await, &config, &dir.path().join("countersign.toml")).await;
    let envelopes = sandbox.sandbox.complete_envelopes(3);
    send_all(&sender(&app, &sandbox), &envelopes, ConnectFormat::Json, &options(true, true)).await;
    receiver.wait_until(WAIT, |r| r.len() >= 4).await.unwrap();

    let url = format!("{}/admin/api/openapi.json", app.base_url);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let stdout = common::schemathesis(&url, &["--max-examples", "100", "--header", &bearer]).await;
    assert!(stdout.contains("Tested: 13"), "every operation was tested:\n{stdout}");
    app.shutdown().await;
}

/// The envelope page's Reprocess button: a form with the session's CSRF
/// token; the envelope runs again and nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_reprocesses_an_envelope_only_with_its_csrf_token() {
    use common::docusign::{countersign_with, options, sandbox, send_all, sender};
    let sandbox = sandbox().await;
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    let app = countersign_with(&sandbox, "", "", &format!("{}{}", admin(), webhook("hr", receiver.url()))).await;
    let envelope = sandbox.sandbox.complete_envelopes(1).remove(0);
    send_all(&sender(&app, &sandbox), std::slice::from_ref(&envelope), ConnectFormat::Json, &options(true, true)).await;
    receiver.wait_for_delivered(1, WAIT).await.unwrap();
    let id = envelope.envelope_id.to_string();
    let key = || async { app.store.job_by_key("process_envelope", &id).await.unwrap().unwrap() };
    eventually(WAIT, "the first run done", || async {
        (key().await.state == countersign::store::JobState::Done).then_some(())
    })
    .await;

    let mut browser = Browser::new(&app);
    browser.log_in(TOKEN).await;
    let path = format!("/admin/envelopes/{id}");
    let (status, page) = browser.get(&path).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("action=\"/admin/envelopes/{id}/reprocess\"")), "{page}");
    let csrf = csrf_of(&page);
    let action = format!("{path}/reprocess");
    let forged = browser.post_form(&action, &[("csrf", "00ff")], Some(&app.base_url)).await;
    assert_eq!(forged.status(), 400, "a wrong CSRF token is refused");
    assert_eq!(key().await.attempts, 1, "nothing was queued");

    let queued = browser.post_form(&action, &[("csrf", &csrf)], Some(&app.base_url)).await;
    assert_eq!(queued.status(), StatusCode::SEE_OTHER);
    assert_eq!(queued.headers()["location"], format!("{path}?reprocessing"));
    let (_, page) = browser.get(&format!("{path}?reprocessing")).await;
    assert!(page.contains("Queued for processing again"), "{page}");
    eventually(WAIT, "the second run done", || async {
        let job = key().await;
        (job.state == countersign::store::JobState::Done && job.attempts == 2).then_some(())
    })
    .await;
    let events = app.store.events_for(envelope.envelope_id).await.unwrap();
    assert_eq!(events.len(), 1);
    let deliveries = app.store.deliveries_for(events[0].id).await.unwrap();
    assert_eq!(deliveries.len(), 1, "no second delivery");
    assert_eq!(receiver.delivered().len(), 1, "nothing was sent twice");
    app.shutdown().await;
}
