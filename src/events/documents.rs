//! `GET /documents/{envelope}/{file}`: the stored documents, for the
//! consumers of events. A request is let in by a sink's bearer token (and
//! then only for envelopes that sink received events of) or by a signed
//! link that has not expired (see [`super::links`]). Anything else is 401,
//! and a document the caller may not see is indistinguishable from one
//! that does not exist (404).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::links::{DocumentLinks, LinkError};
use crate::config::{Secret, Settings};
use crate::documents::DocumentStore;
use crate::error::HttpError;
use crate::ids::EnvelopeId;
use crate::live::Live;
use crate::store::Store;

/// What the route needs: where documents are, and who may read them.
#[derive(Debug, Clone)]
pub struct DocumentAccess {
    store: Arc<dyn Store>,
    documents: DocumentStore,
    links: DocumentLinks,
    /// (sink name, bearer token) of every sink in force that has a token.
    tokens: Live<Vec<(String, Secret)>>,
}

impl DocumentAccess {
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        documents: DocumentStore,
        tokens: Live<Vec<(String, Secret)>>,
    ) -> anyhow::Result<Self> {
        Ok(Self { store, documents, links: DocumentLinks::from_settings(settings)?, tokens })
    }

    /// The sink whose token this is.
    fn sink_of(&self, token: &str) -> Option<String> {
        // Every token is compared, so timing tells nothing about which one matched.
        let mut found = None;
        for (sink, secret) in self.tokens.current().iter() {
            if secret.matches(token) {
                found = Some(sink.clone());
            }
        }
        found
    }
}

pub fn router(access: DocumentAccess) -> Router {
    Router::new().route("/documents/{envelope}/{file}", get(document)).with_state(access)
}

#[derive(Debug, Deserialize)]
struct LinkQuery {
    expires: Option<String>,
    signature: Option<String>,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        _ => "unavailable",
    };
    let error = HttpError::new(status, code, message);
    if status == StatusCode::UNAUTHORIZED { error.with_challenge("Bearer") } else { error }.into_response()
}

fn not_found() -> Response {
    refuse(StatusCode::NOT_FOUND, "no such document")
}

async fn document(
    State(access): State<DocumentAccess>,
    Path((envelope, file)): Path<(String, String)>,
    Query(link): Query<LinkQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(envelope) = EnvelopeId::parse(&envelope) else { return not_found() };
    if let Some(token) = crate::bearer::bearer(&headers) {
        let Some(sink) = access.sink_of(token) else {
            return refuse(StatusCode::UNAUTHORIZED, "unknown token");
        };
        match access.store.envelope_has_sink(envelope, &sink).await {
            Ok(true) => {}
            Ok(false) => return not_found(),
            Err(error) => {
                tracing::warn!(%error, "documents: store unavailable");
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
            }
        }
    } else {
        let checked = access.links.verify(
            envelope,
            &file,
            link.expires.as_deref(),
            link.signature.as_deref(),
            chrono::Utc::now(),
        );
        match checked {
            Ok(()) => {}
            Err(LinkError::Unsigned) => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "send the sink's token as a bearer token, or use a signed link",
                );
            }
            Err(LinkError::Expired) => return refuse(StatusCode::FORBIDDEN, "this link has expired"),
            Err(LinkError::BadSignature) => return refuse(StatusCode::FORBIDDEN, "this link's signature is wrong"),
        }
    }
    let record = match access.store.documents(envelope).await {
        Ok(documents) => documents.into_iter().find(|d| d.file_name == file),
        Err(error) => {
            tracing::warn!(%error, "documents: store unavailable");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
        }
    };
    let Some(record) = record else { return not_found() };
    let Ok(path) = access.documents.path_of(&record.storage_key) else { return not_found() };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(%error, key = %record.storage_key, "documents: a recorded document cannot be read");
            return not_found();
        }
    };
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buffer)), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    });
    let disposition = content_disposition(&record.file_name);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, &record.content_type);
    set(header::CONTENT_LENGTH, &record.size_bytes.to_string());
    set(header::ETAG, &format!("\"{}\"", record.sha256));
    set(header::CONTENT_DISPOSITION, &disposition);
    set(header::CACHE_CONTROL, "private, no-store");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    response
}

/// `attachment` with an ASCII fallback name and the exact name in RFC 5987 form.
fn content_disposition(file_name: &str) -> String {
    let fallback: String = file_name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let mut encoded = String::new();
    for byte in file_name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}
