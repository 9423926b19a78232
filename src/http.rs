//! The HTTP surface shared by every role: the probes (`/healthz`,
//! `/readyz`), `/metrics` and the Connect listener; `service` adds the
//! documents route and the admin API.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::store::{Store, StoreError};

/// Headers accepted per request. hyper's default of 100 in all is too few:
/// DocuSign may send up to 100 `X-DocuSign-Signature-N` headers besides the
/// ordinary ones.
const MAX_HEADERS: usize = 256;

/// The most a request's head (request line and headers) may take: 100
/// signature headers need about 7 KB, so 64 KiB leaves room for proxies'
/// headers while a client cannot make us buffer hyper's default ~400 KB.
/// Larger heads get 431. Also the largest read buffer per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long a client may take to send its request headers (slow-header attacks).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// DocuSign access per user, when DocuSign is configured.
    pub access: Option<Arc<crate::docusign::AccessStatus>>,
}

pub fn router(state: AppState, ingest: crate::ingest::Ingest) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .with_state(state)
        .merge(crate::ingest::router(ingest))
}

async fn metrics_route(State(state): State<AppState>) -> Response {
    crate::metrics::render(State(state.store.clone())).await
}

/// Alive: the process answers. Says nothing about dependencies on purpose, so
/// an orchestrator does not restart a healthy process because PostgreSQL blinked.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: the store answers and its schema is current.
async fn readyz(State(state): State<AppState>) -> Response {
    let docusign = state.access.as_ref().map(|access| access.snapshot());
    if let Some(problem) = state.access.as_ref().and_then(|access| access.misconfiguration()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": problem, "docusign": docusign })),
        )
            .into_response();
    }
    match state.store.check_ready().await {
        Ok(()) => {
            Json(json!({ "status": "ready", "store": state.store.backend(), "docusign": docusign })).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "not ready");
            let reason = match error {
                StoreError::NotMigrated { .. } => "store migrations are not applied",
                _ => "store unreachable",
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not_ready", "reason": reason }))).into_response()
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open
/// connections to finish their requests (the caller bounds that wait).
/// Like `axum::serve`, with limits that suit Connect.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: impl std::future::Future<Output = ()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
