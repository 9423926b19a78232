//! Fault knobs per route, switchable at run time: added latency, a fraction
//! of 500/503 answers, truncated bodies, connection resets, and answers lost
//! after the request was carried out.
//!
//! On the routes that change something (`create`, `void`), errors and resets
//! strike before the change, so nothing happened; truncation and lost answers
//! strike after it, so the change stands though the client never learns of it.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The routes that take knobs.
pub const ROUTES: &[&str] = &[
    "token",
    "userinfo",
    "listing",
    "envelope",
    "recipients",
    "documents",
    "document",
    "combined",
    "certificate",
    "archive",
    "templates",
    "custom_fields",
    "template_list",
    "template",
    "create",
    "void",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Added before every answer.
    pub latency_ms: u64,
    /// Fraction (0–1) of requests answered with `error_status`.
    pub error_rate: f64,
    /// 500 or 503; 503 when unset.
    pub error_status: Option<u16>,
    /// Fraction of answers whose body stops halfway (Content-Length promises more).
    pub truncate_rate: f64,
    /// Fraction of requests whose connection is dropped without an answer.
    pub reset_rate: f64,
    /// Fraction of requests carried out whose connection is then dropped
    /// without an answer: a client that retries blindly does it twice.
    pub lost_answer_rate: f64,
    /// The next this many requests are carried out and then lose their
    /// answer (counted down as they come), before `lost_answer_rate` applies.
    pub lost_answers: u32,
}

/// What a roll of the knobs decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    Error(StatusCode),
    Truncate,
    Reset,
}

impl Fault {
    pub fn roll(&self) -> Verdict {
        let mut rng = rand::rng();
        if self.reset_rate > 0.0 && rng.random_bool(self.reset_rate.clamp(0.0, 1.0)) {
            return Verdict::Reset;
        }
        if self.error_rate > 0.0 && rng.random_bool(self.error_rate.clamp(0.0, 1.0)) {
            let status =
                StatusCode::from_u16(self.error_status.unwrap_or(503)).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Verdict::Error(status);
        }
        if self.truncate_rate > 0.0 && rng.random_bool(self.truncate_rate.clamp(0.0, 1.0)) {
            return Verdict::Truncate;
        }
        Verdict::Answer
    }

    /// Whether the answer to a request already carried out is lost; takes one of
    /// `lost_answers` when there are any left.
    pub fn lose_answer(&mut self) -> bool {
        if self.lost_answers > 0 {
            self.lost_answers -= 1;
            return true;
        }
        self.lost_answer_rate > 0.0 && rand::rng().random_bool(self.lost_answer_rate.clamp(0.0, 1.0))
    }

    pub async fn delay(&self) {
        if self.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.latency_ms)).await;
        }
    }
}

/// Applies latency, then an error or a reset, for routes whose answers are
/// too small to truncate; `None` means answer normally.
pub async fn before_answer(fault: &Fault) -> Option<Response> {
    fault.delay().await;
    match fault.roll() {
        Verdict::Reset => Some(broken(None)),
        Verdict::Error(status) => Some(server_error(status)),
        Verdict::Answer | Verdict::Truncate => None,
    }
}

/// An answer whose connection breaks: nothing, or half the body, is sent.
pub fn broken(body: Option<(Bytes, Response)>) -> Response {
    let failure = || Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox fault: connection dropped"));
    match body {
        None => Response::new(Body::from_stream(futures_util::stream::iter([failure()]))),
        Some((bytes, template)) => {
            let full = bytes.len();
            let half = bytes.slice(..full / 2);
            let (mut parts, _) = template.into_parts();
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full));
            // A pause after the first half lets it reach the client before
            // the connection breaks, as a real truncation would.
            let cut = async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                failure()
            };
            let stream =
                futures_util::StreamExt::chain(futures_util::stream::iter([Ok(half)]), futures_util::stream::once(cut));
            Response::from_parts(parts, Body::from_stream(stream))
        }
    }
}

/// DocuSign-style body of a 5xx.
pub fn server_error(status: StatusCode) -> Response {
    let body = serde_json::json!({
        "errorCode": if status == StatusCode::SERVICE_UNAVAILABLE { "SERVICE_UNAVAILABLE" } else { "UNSPECIFIED_ERROR" },
        "message": "The sandbox was asked to fail this request.",
    });
    (status, axum::Json(body)).into_response()
}
