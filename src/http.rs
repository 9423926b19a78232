//! The HTTP surface shared by every role: probes now; Connect, documents,
//! metrics and admin routes join here as they are built.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
}

pub fn router(state: AppState, ingest: crate::ingest::Ingest) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(crate::ingest::router(ingest))
}

/// Alive: the process answers. Says nothing about dependencies on purpose, so
/// an orchestrator does not restart a healthy process because PostgreSQL blinked.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: the store answers and its schema is current.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.check_ready().await {
        Ok(()) => Json(json!({ "status": "ready", "store": state.store.backend() })).into_response(),
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
