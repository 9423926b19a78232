//! The Connect listener, `POST /docusign/connect`: verified (Basic auth,
//! HMAC over the exact bytes), streamed (bounded memory, spooled to disk
//! when large), parsed by content, deduplicated, and acknowledged with 200
//! only after the notification and its `process_envelope` job are committed.

pub mod auth;
mod committer;
mod spool;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;

pub use auth::{ConnectAuth, KeyRing};
pub use committer::{Committer, Outcome, write as write_records};

use crate::config::Settings;
use crate::documents::DocumentStore;
use crate::domain::{ConnectNotification, Format};
use crate::error::HttpError;
use crate::formats::{self, AccountHints};
use crate::ids::{AccountId, NotificationId};
use crate::jobs::{AgreementLifecycleJob, JobPayload, ProcessEnvelopeJob};
use crate::store::{
    Disposition, DocumentRecord, EnvelopeStatus, EnvelopeUpsert, NewNotification, NotificationOrigin,
    NotificationRecord, Store,
};
use auth::KeyScope;
use spool::SpoolError;

/// Bodies up to this size are parsed on the request's own task.
const INLINE_PARSE_BYTES: u64 = 16 * 1024;

/// Everything the listener needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    keys: KeyRing,
    store: Arc<dyn Store>,
    committer: Committer,
    documents: DocumentStore,
    max_body_bytes: u64,
    body_timeout: Duration,
    process_events: Arc<HashSet<String>>,
    max_attempts: u32,
    /// Agreements are configured: a notification carrying the agreement
    /// field also enqueues its agreement's lifecycle job.
    track_agreements: bool,
    spill_dir: PathBuf,
}

impl Ingest {
    pub fn new(settings: &Settings, store: Arc<dyn Store>, documents: DocumentStore, keys: KeyRing) -> Self {
        Self {
            keys,
            committer: Committer::spawn(store.clone()),
            store,
            documents,
            max_body_bytes: settings.connect.max_body_bytes,
            body_timeout: settings.connect.body_timeout,
            process_events: Arc::new(settings.connect.process_events.iter().cloned().collect()),
            max_attempts: settings.queue.max_attempts,
            track_agreements: !settings.profiles.is_empty(),
            spill_dir: std::env::temp_dir(),
        }
    }
}

pub fn router(ingest: Ingest) -> Router {
    Router::new().route("/docusign/connect", post(receive)).with_state(ingest)
}

fn reject(status: StatusCode, error: &'static str, message: impl Into<String>) -> Response {
    let message = message.into();
    metrics::counter!("countersign_notifications_total", "event" => "unknown", "outcome" => error.to_string())
        .increment(1);
    tracing::warn!(status = status.as_u16(), error, %message, "notification refused");
    HttpError::new(status, error, message).into_response()
}

fn header_account(headers: &HeaderMap) -> Option<AccountId> {
    headers.get("x-docusign-accountid").and_then(|v| v.to_str().ok()).and_then(|v| AccountId::parse(v).ok())
}

async fn receive(State(ingest): State<Ingest>, headers: HeaderMap, body: Body) -> Response {
    let auth = ingest.keys.current();
    if !auth.basic_ok(&headers) {
        return reject(StatusCode::UNAUTHORIZED, "unauthorized", "HTTP Basic credentials are missing or wrong");
    }
    let signatures = auth::signatures(&headers);
    if auth.verifies_hmac() && signatures.is_empty() {
        metrics::counter!("countersign_hmac_failures_total").increment(1);
        return reject(StatusCode::UNAUTHORIZED, "unauthorized", "no X-DocuSign-Signature-N header");
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > ingest.max_body_bytes) {
        return too_large(ingest.max_body_bytes);
    }
    let account_hint = header_account(&headers);
    let mut verifier = auth.verifier(account_hint);
    let spooled = match tokio::time::timeout(
        ingest.body_timeout,
        spool::spool(body, ingest.max_body_bytes, &mut verifier, &ingest.spill_dir),
    )
    .await
    {
        Err(_) => return reject(StatusCode::REQUEST_TIMEOUT, "timeout", "the body did not arrive in time"),
        Ok(Err(SpoolError::TooLarge(max))) => return too_large(max),
        Ok(Err(SpoolError::Read(error))) => {
            return reject(StatusCode::BAD_REQUEST, "bad_request", format!("the body could not be read: {error}"));
        }
        Ok(Err(SpoolError::Io(error))) => {
            tracing::error!(%error, "cannot spool a notification body");
            return reject(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the body could not be stored; try again");
        }
        Ok(Ok(spooled)) => spooled,
    };
    let scope = if auth.verifies_hmac() {
        match verifier.matching_scope(&signatures) {
            Some(scope) => Some(scope),
            None => {
                metrics::counter!("countersign_hmac_failures_total").increment(1);
                return reject(StatusCode::UNAUTHORIZED, "unauthorized", "no signature matches a configured key");
            }
        }
    } else {
        None
    };
    let Some(format) = formats::detect(&spooled.prefix) else {
        return reject(StatusCode::BAD_REQUEST, "bad_request", "unknown format: the body is neither JSON nor XML");
    };
    // A key of one account vouches for that account, like the header.
    let signed_for = match scope {
        Some(KeyScope::Account(account)) => Some(account),
        _ => None,
    };
    let hints = auth.account_hints(account_hint.or(signed_for));
    let body_sha256 = spooled.sha256.clone();
    let body_len = spooled.len;
    // A small body parses in microseconds: handing it to the blocking pool
    // and back would cost more in thread switches than the parse itself.
    // Large ones (and their embedded documents, written to staging files)
    // stay off the async threads.
    let parsed = if spooled.is_small(INLINE_PARSE_BYTES) {
        Ok(ingest.parse_and_stage(spooled, format, &hints, scope))
    } else {
        let worker = ingest.clone();
        tokio::task::spawn_blocking(move || worker.parse_and_stage(spooled, format, &hints, scope)).await
    };
    let notification = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(refusal)) => return refusal.into_response(),
        Err(error) => {
            tracing::error!(%error, "the parser task failed");
            return reject(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the notification could not be processed");
        }
    };
    let process = ingest.process_events.contains(&notification.event);
    // Embedded documents reach the document store before the commit: make
    // sure first that the envelope is not another account's. (Without
    // documents, the commit's own check is enough.)
    if process && !notification.embedded.is_empty() {
        match ingest.store.envelope(notification.envelope.envelope_id).await {
            Ok(Some(envelope)) if envelope.account_id != notification.envelope.account_id => {
                ingest.discard_embedded(&notification);
                return other_account(&notification);
            }
            Ok(_) => {}
            Err(error) => {
                ingest.discard_embedded(&notification);
                tracing::error!(%error, "cannot look the envelope up; answering 503 so Connect retries");
                return reject(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store could not be read; try again",
                );
            }
        }
    }
    let documents = if process {
        match ingest.publish_embedded(&notification).await {
            Ok(documents) => documents,
            Err(refusal) => return refusal.into_response(),
        }
    } else {
        Vec::new()
    };
    let published: Vec<String> = documents.iter().map(|d| d.storage_key.clone()).collect();
    let record = ingest.record(&notification, documents, body_sha256, process);
    let id = record.notification.id;
    match ingest.committer.commit(record).await {
        Ok(Outcome::OtherAccount) => {
            // A race with the check above: the documents just published are
            // referenced by no row; remove them.
            for key in &published {
                ingest.documents.remove(key).await;
            }
            other_account(&notification)
        }
        Ok(Outcome::Duplicate) => {
            count_notification(&notification.event, "duplicate");
            tracing::info!(envelope_id = %notification.envelope.envelope_id, event = %notification.event, "duplicate notification; nothing new");
            (StatusCode::OK, Json(json!({ "status": "duplicate" }))).into_response()
        }
        Ok(Outcome::Recorded) => {
            let status = if process { "accepted" } else { "ignored" };
            count_notification(&notification.event, status);
            tracing::info!(
                envelope_id = %notification.envelope.envelope_id,
                event = %notification.event,
                format = notification.format.as_str(),
                bytes = body_len,
                embedded = notification.embedded.len(),
                notification_id = %id,
                status,
                "notification recorded"
            );
            // Connect keeps the listener's answer in its logs: the id ties a
            // delivery there to the record here.
            (StatusCode::OK, Json(json!({ "status": status, "notification_id": id }))).into_response()
        }
        Err(error) => {
            tracing::error!(%error, envelope_id = %notification.envelope.envelope_id, "notification not stored; answering 503 so Connect retries");
            reject(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the notification could not be stored; try again")
        }
    }
}

fn count_notification(event: &str, outcome: &'static str) {
    metrics::counter!("countersign_notifications_total", "event" => event.to_string(), "outcome" => outcome)
        .increment(1);
}

/// A notification signed for one account that names an envelope of
/// another: 403, since the sender proved who it is but may not act on that
/// envelope. Nothing is stored, and Connect's retries are refused alike.
fn other_account(notification: &ConnectNotification) -> Response {
    count_notification(&notification.event, "other_account");
    let message = format!(
        "envelope {} belongs to another account than {}, which this notification names; nothing was stored",
        notification.envelope.envelope_id, notification.envelope.account_id
    );
    tracing::warn!(status = 403, error = "forbidden", %message, "notification refused");
    HttpError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

fn too_large(max: u64) -> Response {
    reject(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body exceeds {max} bytes"))
}

/// A refusal decided while parsing.
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        reject(self.0, self.1, self.2)
    }
}

impl Ingest {
    /// Parses the body (blocking), stages embedded documents, and checks that
    /// a per-account key vouched for the right account. The staged documents
    /// of an event that will not be processed are discarded here.
    fn parse_and_stage(
        &self,
        spooled: spool::Spooled,
        format: Format,
        hints: &AccountHints,
        scope: Option<KeyScope>,
    ) -> Result<ConnectNotification, Refusal> {
        let mut sink = self.documents.staging_sink();
        let parsed = match (format, spooled.in_memory()) {
            (Format::Json, Some(body)) => formats::parse_json_bytes(body, &mut sink),
            (Format::Json, None) => formats::parse_json(spooled.into_reader(), &mut sink),
            (Format::Xml, _) => formats::parse_xml(spooled.into_reader(), hints, &mut sink),
        };
        let discard = |sink: &crate::documents::StagingSink| {
            for key in sink.staged_keys() {
                self.documents.discard(key);
            }
        };
        let notification = match parsed {
            Ok(notification) => notification,
            Err(formats::FormatError::Sink(error)) => {
                discard(&sink);
                tracing::error!(%error, "cannot stage an embedded document");
                return Err(Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "documents could not be stored".into(),
                ));
            }
            Err(error) => {
                discard(&sink);
                return Err(Refusal(StatusCode::BAD_REQUEST, "bad_request", error.to_string()));
            }
        };
        // PostgreSQL cannot store NUL in text or jsonb; refuse it for both
        // stores so that a notification behaves the same on either.
        if serde_json::to_string(&notification).is_ok_and(|text| text.contains("\\u0000")) {
            discard(&sink);
            return Err(Refusal(StatusCode::BAD_REQUEST, "bad_request", "a value contains a NUL character".into()));
        }
        if let Some(KeyScope::Account(account)) = scope
            && account != notification.envelope.account_id
        {
            discard(&sink);
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the signing key belongs to another account".into(),
            ));
        }
        if !self.process_events.contains(&notification.event) {
            discard(&sink);
        }
        Ok(notification)
    }

    /// Publishes the staged embedded documents of a notification that will
    /// be processed. It runs before the notification is committed, so a 200
    /// is only ever sent for documents that are stored; on failure the rest
    /// is discarded and Connect, answered 503, sends everything again.
    /// Drops the staged embedded documents of a notification that will not be recorded.
    fn discard_embedded(&self, notification: &ConnectNotification) {
        for document in &notification.embedded {
            self.documents.discard(&document.storage_key);
        }
    }

    async fn publish_embedded(&self, notification: &ConnectNotification) -> Result<Vec<DocumentRecord>, Refusal> {
        let mut records = Vec::with_capacity(notification.embedded.len());
        for document in &notification.embedded {
            let file_name = document_file_name(document, notification);
            let published = self
                .documents
                .publish(
                    &document.storage_key,
                    notification.envelope.account_id,
                    notification.envelope.envelope_id,
                    &file_name,
                )
                .await;
            let key = match published {
                Ok(key) => key,
                Err(error) => {
                    tracing::error!(%error, "cannot publish an embedded document");
                    self.discard_embedded(notification);
                    return Err(Refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "documents could not be stored".into(),
                    ));
                }
            };
            records.push(embedded_record(document, notification, key));
        }
        Ok(records)
    }

    fn record(
        &self,
        notification: &ConnectNotification,
        documents: Vec<DocumentRecord>,
        body_sha256: String,
        process: bool,
    ) -> NotificationRecord {
        let origin = NotificationOrigin::Connect;
        record_for(notification, documents, body_sha256, process, origin, self.max_attempts, self.track_agreements)
    }
}

/// The rows one notification becomes: the notification itself and, when it
/// is processed, the envelope (`received`), its embedded documents and its
/// `process_envelope` job (one per envelope, so the envelope is processed
/// once however many notifications arrive for it, from Connect or from
/// reconciliation).
pub fn record_for(
    notification: &ConnectNotification,
    documents: Vec<DocumentRecord>,
    body_sha256: String,
    process: bool,
    origin: NotificationOrigin,
    max_attempts: u32,
    track_agreements: bool,
) -> NotificationRecord {
    let id = NotificationId::new();
    let mut summary = serde_json::to_value(notification).unwrap_or_default();
    if let Some(object) = summary.as_object_mut() {
        object.remove("embedded");
    }
    let new = NewNotification {
        id,
        account_id: notification.envelope.account_id,
        envelope_id: notification.envelope.envelope_id,
        event: notification.event.clone(),
        recipient_id: notification.recipient_id.clone(),
        generated_at: notification.generated_at,
        format: notification.format.as_str().into(),
        origin,
        body_sha256,
        disposition: if process { Disposition::Enqueued } else { Disposition::Ignored },
        summary,
    };
    let (envelope, mut jobs) = if process {
        let envelope = EnvelopeUpsert {
            envelope_id: notification.envelope.envelope_id,
            account_id: notification.envelope.account_id,
            status: EnvelopeStatus::Received,
            subject: notification.envelope.subject.clone(),
            completed_at: notification.envelope.completed_at,
        };
        let job = ProcessEnvelopeJob {
            notification_id: id,
            account_id: notification.envelope.account_id,
            envelope_id: notification.envelope.envelope_id,
        }
        .job(max_attempts);
        (Some(envelope), vec![job])
    } else {
        (None, Vec::new())
    };
    if track_agreements && let Some(agreement_id) = notification.envelope.agreement_id() {
        jobs.push(AgreementLifecycleJob { notification_id: id, agreement_id }.job(max_attempts));
    }
    NotificationRecord { notification: new, envelope, documents, jobs }
}

/// The stored file name: the certificate is named as DocuSign names it in
/// legacy XML (JSON SIM calls it "Summary"); a content document's name is
/// prefixed with its document id, because DocuSign allows two documents of
/// one envelope to share a name; every name ends in `.pdf`.
/// The record of an embedded document stored under `storage_key`.
pub fn embedded_record(
    document: &crate::domain::EmbeddedDocument,
    notification: &ConnectNotification,
    storage_key: String,
) -> DocumentRecord {
    DocumentRecord {
        account_id: notification.envelope.account_id,
        envelope_id: notification.envelope.envelope_id,
        document_id: document.document_id.clone(),
        name: document.name.clone(),
        file_name: crate::documents::sanitise_file_name(&document_file_name(document, notification)),
        content_type: "application/pdf".into(),
        size_bytes: document.size_bytes,
        sha256: document.sha256.clone(),
        storage_key,
        stored_at: Utc::now(),
    }
}

fn document_file_name(document: &crate::domain::EmbeddedDocument, notification: &ConnectNotification) -> String {
    let name = match document.kind {
        crate::domain::DocumentKind::Summary => {
            format!("CertificateOfCompletion_{}.pdf", notification.envelope.envelope_id)
        }
        crate::domain::DocumentKind::Content => {
            let id = crate::documents::sanitise_file_name(&document.document_id);
            if document.name.trim().is_empty() {
                format!("{id}-document.pdf")
            } else {
                format!("{id}-{}", crate::documents::sanitise_file_name(&document.name))
            }
        }
    };
    if name.to_ascii_lowercase().ends_with(".pdf") { name } else { format!("{name}.pdf") }
}
