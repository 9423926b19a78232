//! The admin API's one error type: a stable JSON body that names the field
//! at fault, and never the internals (those are logged).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `unauthorized`, `invalid_input`, `not_found`, `conflict`, `unavailable`, `internal`.
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    body: ErrorBody,
}

impl AdminError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { error, message: message.into(), field: None } }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid admin token is required (Authorization: Bearer …)")
    }

    /// Bad input in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let mut error = Self::new(StatusCode::BAD_REQUEST, "invalid_input", format!("{field}: {}", message.into()));
        error.body.field = Some(field);
        error
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The configuration could not be read again; `key` is the key at fault.
    pub fn configuration(key: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_configuration", message);
        error.body.field = Some(key.to_string());
        error
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.body.message
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "admin: store error");
        match error {
            StoreError::Database(_) | StoreError::Open { .. } | StoreError::NotMigrated { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable; try again")
            }
            StoreError::Corrupt(_) | StoreError::Migrate(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the store holds a row it cannot read")
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"countersign-admin\""),
            );
        }
        response
    }
}
