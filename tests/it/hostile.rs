//! Hostile requests to `POST /docusign/connect`: each gets the status the
//! README documents, with a JSON error naming the problem where the request
//! reached countersign, and none of them stores anything: no notification, no
//! job, no document, no staged file.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestApp;
use countersign::sandbox::connect::{NotificationOptions, json_sim_body, signature_headers, xml_body};
use countersign::sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The limits the hostile requests run into; the README documents the defaults.
const MAX_BODY_BYTES: usize = 20_000;

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig { document_bytes: 5_000, ..SandboxConfig::default() }).unwrap()
}

async fn app(sandbox: &Sandbox) -> TestApp {
    let keys: Vec<String> = sandbox.identity().hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    let toml = format!(
        "[connect]\nhmac_keys = [{}]\nmax_body_bytes = {MAX_BODY_BYTES}\nbody_timeout = \"1s\"\n",
        keys.join(", ")
    );
    TestApp::spawn(common::sqlite().await, &toml).await
}

fn signature(key: &str, body: &[u8]) -> String {
    signature_headers(body, &[key.to_string()]).remove(0).1
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.store.count_notifications().await.unwrap(), 0, "no notification stored");
    assert!(app.store.queue_stats().await.unwrap().is_empty(), "nothing enqueued");
    assert_eq!(files_under(app.documents_dir.path()), Vec::<PathBuf>::new(), "no document, no staged file");
}

/// One hostile request and the status it must get.
struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    headers: Vec<(String, String)>,
    body: reqwest::Body,
    status: u16,
}

impl Case {
    fn new(name: &'static str, body: Vec<u8>, headers: Vec<(String, String)>, status: u16) -> Self {
        Self { name, content_type: Some("application/json"), headers, body: body.into(), status }
    }

    fn content_type(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }
}

/// The envelope-completed JSON notification with `subject` spliced in raw, so tests can put any bytes there.
fn json_with_subject(subject: &[u8]) -> Vec<u8> {
    let mut body = br#"{"event":"envelope-completed","apiVersion":"v2.1","uri":"/restapi/v2.1/accounts/f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b/envelopes/93be49ab-afa0-4adf-933c-f752070d71ec","retryCount":0,"configurationId":10418,"generatedDateTime":"2022-09-22T15:22:53.4580747Z","data":{"accountId":"f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b","userId":"0b1c2d3e-4f50-4a61-8b72-9c0d1e2f3a4b","envelopeId":"93be49ab-afa0-4adf-933c-f752070d71ec","envelopeSummary":{"status":"completed","emailSubject":""#.to_vec();
    body.extend_from_slice(subject);
    body.extend_from_slice(br#""}}}"#);
    body
}

fn xml_notification(envelope_id: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><DocuSignEnvelopeInformation xmlns="http://www.docusign.net/API/3.0"><EnvelopeStatus><EnvelopeID>{envelope_id}</EnvelopeID><Status>Completed</Status></EnvelopeStatus></DocuSignEnvelopeInformation>"#
    )
    .into_bytes()
}

fn billion_laughs() -> Vec<u8> {
    let mut entities = String::from(r#"<!ENTITY lol0 "lol">"#);
    for level in 1..10 {
        let previous = format!("&lol{};", level - 1);
        entities.push_str(&format!(r#"<!ENTITY lol{level} "{}">"#, previous.repeat(10)));
    }
    let body = xml_notification("&lol9;");
    let (prolog, rest) = body.split_at(body.iter().position(|b| *b == b'>').unwrap() + 1);
    [prolog, format!("<!DOCTYPE lolz [{entities}]>").as_bytes(), rest].concat()
}

#[tokio::test]
async fn hostile_requests_get_their_documented_status_and_store_nothing() {
    let sandbox = sandbox();
    let app = app(&sandbox).await;
    let key = sandbox.identity().hmac_keys[0].clone();
    let signed = |body: &[u8]| vec![("X-DocuSign-Signature-1".to_string(), signature(&key, body))];
    let envelope = sandbox.complete_envelopes(1).remove(0);
    let generated = envelope.completed_at + chrono::Duration::seconds(3);
    let good = json_sim_body(&envelope, &NotificationOptions::default(), 0, generated);
    let with_documents = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    let big = json_sim_body(&envelope, &with_documents, 0, generated);
    assert!(big.len() > MAX_BODY_BYTES);

    let no_envelope = br#"{"event":"envelope-completed","apiVersion":"v2.1","generatedDateTime":"2022-09-22T15:22:53.4580747Z","data":{"accountId":"f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b"}}"#.to_vec();
    let nul = json_with_subject(br"a\u0000b");
    let invalid_utf8_json = json_with_subject(b"caf\xe9 \xff\xfe");
    let mut invalid_utf8_xml = xml_notification("93be49ab-afa0-4adf-933c-f752070d71ec");
    invalid_utf8_xml.splice(60..60, b"\xff\xfe\xc3".iter().copied());
    let deep_json = [&br#"{"event":"envelope-completed","data":"#[..], &b"[".repeat(10_000)].concat();
    let deep_xml = [
        &br#"<?xml version="1.0"?><DocuSignEnvelopeInformation xmlns="http://www.docusign.net/API/3.0">"#[..],
        &b"<a>".repeat(5_000),
    ]
    .concat();
    let external_entity = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><DocuSignEnvelopeInformation xmlns="http://www.docusign.net/API/3.0"><EnvelopeStatus><EnvelopeID>&e;</EnvelopeID></EnvelopeStatus></DocuSignEnvelopeInformation>"#.to_vec();
    let undeclared_entity = xml_notification("&e;");
    let laughs = billion_laughs();
    let form = b"envelopeId=93be49ab-afa0-4adf-933c-f752070d71ec&status=completed".to_vec();

    let hundred_wrong: Vec<(String, String)> =
        (1..=100).map(|n| (format!("X-DocuSign-Signature-{n}"), signature(&format!("wrong-{n}"), &good))).collect();
    let beyond_a_hundred = vec![("X-DocuSign-Signature-101".to_string(), signature(&key, &good))];
    let not_base64 = vec![("X-DocuSign-Signature-1".to_string(), "not base64 at all!".to_string())];
    let huge_signature = vec![("X-DocuSign-Signature-1".to_string(), "A".repeat(16 * 1024))];
    let oversized_chunks = futures_util::stream::iter(
        big.chunks(4096).map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(chunk))).collect::<Vec<_>>(),
    );

    let cases = vec![
        Case::new("no signature header", good.clone(), vec![], 401),
        Case::new(
            "a wrong signature",
            good.clone(),
            vec![("X-DocuSign-Signature-1".into(), signature("nope", &good))],
            401,
        ),
        Case::new("the signature of other bytes", good.clone(), signed(b"other bytes"), 401),
        Case::new("100 signature headers, none right", good.clone(), hundred_wrong, 401),
        Case::new("the right signature in header 101", good.clone(), beyond_a_hundred, 401),
        Case::new("a signature that is not base64", good.clone(), not_base64, 401),
        Case::new("a 16 KB signature header", good.clone(), huge_signature, 401),
        Case::new("an unsigned form post", form.clone(), vec![], 401)
            .content_type(Some("application/x-www-form-urlencoded")),
        Case::new("a signed form post", form.clone(), signed(&form), 400)
            .content_type(Some("application/x-www-form-urlencoded")),
        Case::new("a signed body that is neither JSON nor XML", b"hello".to_vec(), signed(b"hello"), 400)
            .content_type(Some("text/plain")),
        Case::new("no content type and malformed JSON", b"{\"event\": ".to_vec(), signed(b"{\"event\": "), 400)
            .content_type(None),
        Case::new("JSON without an envelope id", no_envelope.clone(), signed(&no_envelope), 400),
        Case::new("JSON with a NUL character", nul.clone(), signed(&nul), 400),
        Case::new("JSON that is not UTF-8", invalid_utf8_json.clone(), signed(&invalid_utf8_json), 400),
        Case::new("JSON nested 10,000 deep", deep_json.clone(), signed(&deep_json), 400),
        Case::new("XML that is not UTF-8", invalid_utf8_xml.clone(), signed(&invalid_utf8_xml), 400)
            .content_type(Some("text/xml")),
        Case::new("XML nested 5,000 deep", deep_xml.clone(), signed(&deep_xml), 400).content_type(Some("text/xml")),
        Case::new("XML with an external entity", external_entity.clone(), signed(&external_entity), 400)
            .content_type(Some("text/xml")),
        Case::new("XML with a billion laughs", laughs.clone(), signed(&laughs), 400).content_type(Some("text/xml")),
        Case::new("XML using an undeclared entity", undeclared_entity.clone(), signed(&undeclared_entity), 400)
            .content_type(Some("text/xml")),
        Case::new("a body over max_body_bytes", big.clone(), signed(&big), 413),
        Case {
            name: "a chunked body over max_body_bytes",
            content_type: Some("application/json"),
            headers: signed(&big),
            body: reqwest::Body::wrap_stream(oversized_chunks),
            status: 413,
        },
    ];
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    for case in cases {
        let mut request = client.post(app.connect_url()).body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &case.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status != case.status || !answer["message"].is_string() {
            failures
                .push(format!("{}: expected {} with a JSON message, got {status} {answer}", case.name, case.status));
        }
    }
    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let status = client.request(method.clone(), app.connect_url()).send().await.unwrap().status();
        if status != 405 {
            failures.push(format!("{method}: expected 405, got {status}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_nothing_stored(&app).await;
}

/// Sends `head` (request line and headers, without the blank line) on a raw
/// connection and returns the status line the server answers with.
async fn raw_status(app: &TestApp, head: String) -> String {
    let address = app.base_url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut read, mut write) = stream.split();
    let request = format!("{head}\r\ncontent-length: 2\r\n\r\n{{}}");
    let (_, answer) = tokio::join!(write.write_all(request.as_bytes()), async {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
        answer
    });
    String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn oversized_headers_are_refused_before_the_handler() {
    let sandbox = sandbox();
    let app = app(&sandbox).await;
    let address = app.base_url.trim_start_matches("http://");
    let start = format!("POST /docusign/connect HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json");

    let many: String = (0..300).map(|n| format!("\r\nx-filler-{n}: {n}")).collect();
    let status = raw_status(&app, format!("{start}{many}")).await;
    assert!(status.starts_with("HTTP/1.1 431"), "300 headers: {status:?}");

    let huge = format!("\r\nx-filler: {}", "A".repeat(100 * 1024));
    let status = raw_status(&app, format!("{start}{huge}")).await;
    assert!(status.starts_with("HTTP/1.1 431"), "a 100 KB header: {status:?}");

    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_sent_byte_by_byte_is_cut_off_without_holding_a_worker() {
    let sandbox = sandbox();
    let app = app(&sandbox).await;
    let envelopes = sandbox.complete_envelopes(2);
    let generated = envelopes[0].completed_at + chrono::Duration::seconds(3);
    let body = json_sim_body(&envelopes[0], &NotificationOptions::default(), 0, generated);
    let slow_signature = signature(&sandbox.identity().hmac_keys[0], &body);

    let address = app.base_url.trim_start_matches("http://").to_string();
    let slow = |mut stream: tokio::net::TcpStream| {
        let (body, signature, address) = (body.clone(), slow_signature.clone(), address.clone());
        async move {
            let head = format!(
                "POST /docusign/connect HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nx-docusign-signature-1: {signature}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let started = std::time::Instant::now();
            let mut answer = Vec::new();
            for byte in body.iter().take(5) {
                if stream.write_all(&[*byte]).await.is_err() {
                    break; // the server has given up on us
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
            (String::from_utf8_lossy(&answer).to_string(), started.elapsed())
        }
    };
    // Many slow senders at once, and a well-behaved notification alongside them.
    let mut slow_senders = tokio::task::JoinSet::new();
    for _ in 0..50 {
        slow_senders.spawn(slow(tokio::net::TcpStream::connect(&address).await.unwrap()));
    }
    let generated = envelopes[1].completed_at + chrono::Duration::seconds(3);
    let good = json_sim_body(&envelopes[1], &NotificationOptions::default(), 0, generated);
    let good_signature = signature(&sandbox.identity().hmac_keys[0], &good);
    let answered = reqwest::Client::new()
        .post(app.connect_url())
        .header("content-type", "application/json")
        .header("x-docusign-signature-1", good_signature)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200, "a good notification is answered while slow senders wait");

    while let Some(done) = slow_senders.join_next().await {
        let (answer, elapsed) = done.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(elapsed < Duration::from_secs(4), "cut off after body_timeout, not later: {elapsed:?}");
    }
    assert_eq!(app.store.count_notifications().await.unwrap(), 1, "only the good notification");
}

#[tokio::test]
async fn hostile_document_names_never_become_paths() {
    let sandbox = sandbox();
    let keys: Vec<String> = sandbox.identity().hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    let app = TestApp::spawn(common::sqlite().await, &format!("[connect]\nhmac_keys = [{}]\n", keys.join(", "))).await;
    let mut envelope = sandbox.complete_envelopes(1).remove(0);
    envelope.documents.truncate(1);
    envelope.documents[0].document_id = "../../../1".into();
    envelope.documents[0].name = "../../etc/passwd".into();
    let with_documents = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    let body = xml_body(&envelope, &with_documents, 0);
    let signature = signature(&sandbox.identity().hmac_keys[0], &body);
    let answer = reqwest::Client::new()
        .post(app.connect_url())
        .header("content-type", "text/xml")
        .header("x-docusign-signature-1", signature)
        .header("x-docusign-accountid", envelope.account_id.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "a genuine notification is accepted whatever its names");

    let stored = app.store.documents(envelope.envelope_id).await.unwrap();
    let names: Vec<&str> = stored.iter().map(|d| d.file_name.as_str()).collect();
    assert!(names.contains(&"1-passwd.pdf"), "{names:?}");
    let envelope_dir = PathBuf::from(envelope.account_id.to_string()).join(envelope.envelope_id.to_string());
    for file in files_under(app.documents_dir.path()) {
        assert!(file.starts_with(&envelope_dir), "{} is outside the envelope's directory", file.display());
        assert!(!file.to_string_lossy().contains(".."), "{}", file.display());
    }
}
