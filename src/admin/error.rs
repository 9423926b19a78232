//! The admin API's one error type: the service's error body
//! ([`crate::error::ErrorBody`]), naming the field at fault, never the
//! internals (those are logged).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::HttpError;
use crate::store::StoreError;

pub use crate::error::ErrorBody;

/// An admin answer that is not a success: the service's [`HttpError`].
#[derive(Debug)]
pub struct AdminError(HttpError);

impl AdminError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self(HttpError::new(status, error, message))
    }

    pub fn unauthorized() -> Self {
        let error = HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required (Authorization: Bearer …)",
        );
        Self(error.with_challenge("Bearer realm=\"countersign-admin\""))
    }

    /// Bad input in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        Self(HttpError::new(StatusCode::BAD_REQUEST, "invalid_input", message).with_field(field))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The configuration could not be read again; `key` is the key at fault.
    pub fn configuration(key: &str, message: impl Into<String>) -> Self {
        Self(HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_configuration", message).with_field(key))
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn message(&self) -> &str {
        &self.0.body.message
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
        self.0.into_response()
    }
}
