//! A Connect listener for the sandbox tests: answers 200 and keeps every
//! request, so a test can check what the sandbox's Connect sent and how it
//! signed it; stops when dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;

pub struct ConnectListener {
    pub url: String,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectListener {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        let app = axum::Router::new()
            .route(
                "/connect",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let kept = kept.clone();
                    async move {
                        kept.lock().unwrap().push((headers, body));
                        axum::http::StatusCode::OK
                    }
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/connect", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, received, task }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived.
    pub async fn wait_for_count(&self, count: usize) -> Vec<(HeaderMap, Bytes)> {
        super::eventually(Duration::from_secs(30), "the Connect notifications", || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }

    /// The JSON messages so far, with their headers.
    pub fn messages(&self) -> Vec<(HeaderMap, Bytes, Value)> {
        self.received().into_iter().map(|(h, b)| (h, b.clone(), serde_json::from_slice(&b).unwrap())).collect()
    }

    /// The `event` of each JSON message so far.
    pub fn events(&self) -> Vec<String> {
        self.messages().iter().map(|(_, _, m)| m["event"].as_str().unwrap().to_string()).collect()
    }

    /// Waits until the message for `event` has arrived and returns it.
    pub async fn wait_for(&self, event: &str) -> (HeaderMap, Bytes, Value) {
        super::eventually(Duration::from_secs(30), event, || async {
            self.messages().into_iter().find(|(_, _, m)| m["event"] == event)
        })
        .await
    }
}

impl Drop for ConnectListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Base64 HMAC-SHA256 of `body`, computed here rather than by the sandbox's own code.
pub fn hmac_base64(key: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
