//! The eSignature REST calls countersign makes, under
//! `{base_uri}/restapi/v2.1/accounts/{accountId}/`: one envelope with its
//! recipients, tabs, custom fields and document list, and document bodies
//! streamed into the document store. Every answer's limit headers are read;
//! a 401 drops the token and repeats the call once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use serde::Deserialize;

use super::limits::Verdict;
use super::{AccessToken, DocuSign, GrantError, UserInfoError};
use crate::documents::{DocumentError, DocumentStore, Staged};
use crate::ids::{AccountId, EnvelopeId, UserId};

/// What `include=` asks of `GET …/envelopes/{id}`: all the data events need, in one call.
const ENVELOPE_INCLUDE: &str = "recipients,tabs,custom_fields,documents";

/// Error bodies are short JSON; more than this is not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("DocuSign calls for account {account} are paused until {until} (API limits)")]
    Paused { account: AccountId, until: DateTime<Utc> },
    #[error("envelope {envelope} is over DocuSign's per-envelope call limit until {until}")]
    EnvelopePaused { envelope: EnvelopeId, until: DateTime<Utc> },
    /// Worth retrying: a 5xx, a timeout, a broken or truncated answer.
    #[error("{0}")]
    Transient(String),
    #[error("DocuSign refused {what}: HTTP {status} {code}: {message}")]
    Refused { what: String, status: u16, code: String, message: String },
    #[error(transparent)]
    Access(UserInfoError),
    #[error("the document store failed: {0}")]
    Documents(#[from] DocumentError),
}

impl From<UserInfoError> for ApiError {
    fn from(error: UserInfoError) -> Self {
        match error {
            UserInfoError::Transient(message) => Self::Transient(message),
            UserInfoError::Unauthorized => Self::Transient("userinfo refused a fresh access token".into()),
            other => Self::Access(other),
        }
    }
}

impl ApiError {
    /// DocuSign's errorCode, for refusals.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) error_code: String,
    #[serde(default)]
    pub(super) message: String,
}

/// A document body now staged in the document store.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub staged: Staged,
    /// The name from `Content-Disposition`, if DocuSign gave one.
    pub file_name: Option<String>,
    pub content_type: String,
}

/// One page of `GET …/envelopes?from_date=…&status=completed`.
#[derive(Debug, Clone)]
pub struct EnvelopePage {
    /// The envelope objects as listed (without recipients or custom fields).
    pub envelopes: Vec<serde_json::Value>,
    /// How many envelopes match in all (`totalSetSize`).
    pub total: u64,
}

/// One call's target.
pub(super) struct Call<'a> {
    pub(super) user: UserId,
    pub(super) account: AccountId,
    /// The envelope the call is about (for DocuSign's per-envelope limits).
    pub(super) envelope: Option<EnvelopeId>,
    /// The route's name in metrics.
    pub(super) route: &'static str,
    pub(super) what: &'a str,
    pub(super) path: String,
    pub(super) query: &'a [(&'a str, &'a str)],
    pub(super) method: reqwest::Method,
    /// A JSON body, for the calls that change something.
    pub(super) body: Option<&'a serde_json::Value>,
}

impl<'a> Call<'a> {
    /// A GET of `path` under the account.
    pub(super) fn get(user: UserId, account: AccountId, route: &'static str, what: &'a str, path: String) -> Self {
        Self { user, account, envelope: None, route, what, path, query: &[], method: reqwest::Method::GET, body: None }
    }
}

impl DocuSign {
    /// `GET …/envelopes/{id}?include=recipients,tabs,custom_fields,documents`.
    pub async fn envelope(
        &self,
        user: UserId,
        account: AccountId,
        envelope: EnvelopeId,
    ) -> Result<serde_json::Value, ApiError> {
        let call = Call {
            user,
            account,
            envelope: Some(envelope),
            route: "envelope",
            what: "the envelope",
            path: format!("envelopes/{envelope}"),
            query: &[("include", ENVELOPE_INCLUDE)],
            method: reqwest::Method::GET,
            body: None,
        };
        let response = self.send(&call).await?;
        let bytes = response.bytes().await.map_err(|e| ApiError::Transient(format!("reading the envelope: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Transient(format!("the envelope is not JSON: {e}")))
    }

    /// The ids of the templates `envelope` was created from
    /// (`GET …/envelopes/{id}/templates`), lowercase.
    pub async fn envelope_templates(
        &self,
        user: UserId,
        account: AccountId,
        envelope: EnvelopeId,
    ) -> Result<Vec<String>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Templates {
            #[serde(default)]
            templates: Vec<Template>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Template {
            template_id: Option<String>,
        }
        let call = Call {
            user,
            account,
            envelope: Some(envelope),
            route: "templates",
            what: "the envelope's templates",
            path: format!("envelopes/{envelope}/templates"),
            query: &[],
            method: reqwest::Method::GET,
            body: None,
        };
        let response = self.send(&call).await?;
        let bytes = response.bytes().await.map_err(|e| ApiError::Transient(format!("reading the templates: {e}")))?;
        let answer: Templates = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Transient(format!("the envelope's templates are not the expected JSON: {e}")))?;
        Ok(answer.templates.into_iter().filter_map(|t| t.template_id).map(|id| id.to_ascii_lowercase()).collect())
    }

    /// One page of the envelopes of `account` whose status changed to
    /// completed in `[from, until)`
    /// (`GET …/envelopes?from_date=…&to_date=…&status=completed`). A fixed
    /// window keeps the result set, and so the positions of its pages, stable.
    pub async fn completed_envelopes(
        &self,
        user: UserId,
        account: AccountId,
        (from, until): (DateTime<Utc>, DateTime<Utc>),
        start_position: u64,
        count: usize,
    ) -> Result<EnvelopePage, ApiError> {
        let from = from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (start, count) = (start_position.to_string(), count.to_string());
        let query = [
            ("from_date", from.as_str()),
            ("to_date", until.as_str()),
            ("status", "completed"),
            ("order_by", "status_changed"),
            ("order", "asc"),
            ("start_position", start.as_str()),
            ("count", count.as_str()),
        ];
        let call = Call {
            user,
            account,
            envelope: None,
            route: "listing",
            what: "the envelope listing",
            path: "envelopes".into(),
            query: &query,
            method: reqwest::Method::GET,
            body: None,
        };
        let response = self.send(&call).await?;
        let bytes = response.bytes().await.map_err(|e| ApiError::Transient(format!("reading the listing: {e}")))?;
        let page: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Transient(format!("the envelope listing is not JSON: {e}")))?;
        // DocuSign sends counts as strings ("12"); accept numbers too.
        let number = |key: &str| match &page[key] {
            serde_json::Value::String(text) => text.trim().parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        };
        let envelopes = page["envelopes"].as_array().cloned().unwrap_or_default();
        let total = number("totalSetSize").unwrap_or(start_position + envelopes.len() as u64);
        Ok(EnvelopePage { envelopes, total })
    }

    /// `GET …/envelopes/{id}/documents/{document}` (an id, `combined`,
    /// `certificate` or `archive`), streamed into a staged file. A body that
    /// breaks off or is shorter than its Content-Length is discarded.
    pub async fn download(
        &self,
        user: UserId,
        account: AccountId,
        envelope: EnvelopeId,
        document: &str,
        store: &DocumentStore,
    ) -> Result<Downloaded, ApiError> {
        let what = format!("document {document}");
        let call = Call {
            user,
            account,
            envelope: Some(envelope),
            route: "document",
            what: &what,
            path: format!("envelopes/{envelope}/documents/{document}"),
            query: &[],
            method: reqwest::Method::GET,
            body: None,
        };
        let response = self.send(&call).await?;
        let expected = response.content_length();
        let headers = response.headers();
        let file_name = headers.get(CONTENT_DISPOSITION).and_then(|v| v.to_str().ok()).and_then(disposition_file_name);
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            .unwrap_or_else(|| "application/octet-stream".into());
        let mut upload = store.upload().await?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::Transient(format!("{what} broke off after {} bytes: {e}", upload.size())))?;
            upload.write(&chunk).await?;
        }
        let received = upload.size();
        if expected.is_some_and(|expected| expected != received) || received == 0 {
            // Dropping the upload removes the staged bytes.
            return Err(ApiError::Transient(format!(
                "{what} arrived incomplete: {received} of {} bytes",
                expected.map_or_else(|| "?".to_string(), |e| e.to_string())
            )));
        }
        let staged = upload.finish().await?;
        Ok(Downloaded { staged, file_name, content_type })
    }

    /// Sends one call with a token, the limits checked before and read after.
    pub(super) async fn send(&self, call: &Call<'_>) -> Result<reqwest::Response, ApiError> {
        if let Some(until) = self.limits.paused_until(call.account) {
            return Err(ApiError::Paused { account: call.account, until });
        }
        let mut token = self.tokens.token(call.user).await?;
        let mut renewed = false;
        loop {
            let account = match self.userinfo.account(call.user, token.bearer(), Some(call.account)).await {
                Err(UserInfoError::Unauthorized) if !renewed => {
                    token = self.renew(call.user, &token).await?;
                    renewed = true;
                    continue;
                }
                other => other?,
            };
            let url = format!("{}/v2.1/accounts/{}/{}", account.api_base, call.account, call.path);
            let mut request =
                self.http.request(call.method.clone(), &url).query(call.query).bearer_auth(token.bearer());
            if let Some(body) = call.body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| {
                metrics::counter!("countersign_docusign_requests_total", "route" => call.route, "status" => "error")
                    .increment(1);
                ApiError::Transient(format!("requesting {}: {e}", call.what))
            })?;
            let status = response.status();
            metrics::counter!(
                "countersign_docusign_requests_total",
                "route" => call.route,
                "status" => status.as_u16().to_string()
            )
            .increment(1);
            if status.is_success() {
                self.limits.observe(call.account, status, response.headers(), None);
                return Ok(response);
            }
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            if status == StatusCode::UNAUTHORIZED && !renewed {
                token = self.renew(call.user, &token).await?;
                renewed = true;
                continue;
            }
            match self.limits.observe(call.account, status, &headers, Some(&body.error_code)) {
                Verdict::Exceeded { until } => return Err(ApiError::Paused { account: call.account, until }),
                Verdict::EnvelopeExceeded { until } => {
                    return Err(match call.envelope {
                        Some(envelope) => ApiError::EnvelopePaused { envelope, until },
                        None => ApiError::Paused { account: call.account, until },
                    });
                }
                Verdict::Clear => {}
            }
            if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                return Err(ApiError::Transient(format!("{} answered HTTP {status} {}", call.what, body.error_code)));
            }
            return Err(ApiError::Refused {
                what: call.what.to_string(),
                status: status.as_u16(),
                code: body.error_code,
                message: body.message,
            });
        }
    }

    async fn renew(&self, user: UserId, refused: &Arc<AccessToken>) -> Result<Arc<AccessToken>, ApiError> {
        tracing::info!(%user, "DocuSign refused the access token; getting a new one");
        self.tokens.invalidate(user, refused).await;
        Ok(self.tokens.token(user).await?)
    }
}

pub(super) async fn read_error_body(mut response: reqwest::Response) -> ErrorBody {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_ERROR_BODY {
            break;
        }
    }
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// The `filename` of `Content-Disposition: file; filename="NDA.pdf"; documentid="1"`.
fn disposition_file_name(value: &str) -> Option<String> {
    value
        .split(';')
        .map(str::trim)
        .find_map(|part| {
            let (key, value) = part.split_once('=')?;
            key.trim().eq_ignore_ascii_case("filename").then(|| value.trim().trim_matches('"').to_string())
        })
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_is_read_from_content_disposition() {
        assert_eq!(
            disposition_file_name("file; filename=\"Offer Letter.pdf\"; documentid=\"1\"").as_deref(),
            Some("Offer Letter.pdf")
        );
        assert_eq!(disposition_file_name("attachment; FileName=a.zip").as_deref(), Some("a.zip"));
        assert_eq!(disposition_file_name("file"), None);
        assert_eq!(disposition_file_name("file; filename=\"\""), None);
    }
}
