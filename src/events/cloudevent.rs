//! The event body: a CloudEvents 1.0 event in JSON structured mode, whose
//! `data` is the contract in docs/EVENTS.md (schema: docs/event.schema.json).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::links::DocumentLinks;
use super::rules::{is_signer, signer_json};
use crate::domain::ConnectNotification;
use crate::ids::{AccountId, EventId};
use crate::store::DocumentRecord;

/// The media type of a structured-mode CloudEvent in JSON.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// CloudEvents `source` of an account's events.
pub fn source(account: AccountId) -> String {
    format!("urn:docusign:account:{account}")
}

/// RFC 3339 in UTC with a `Z`, as CloudEvents `time` requires.
pub(crate) fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// What goes into one event besides the envelope itself.
pub(crate) struct Parts<'a> {
    pub id: EventId,
    pub event_type: &'a str,
    pub rule: &'a str,
    pub fields: Map<String, Value>,
    pub missing: Vec<String>,
    pub links: &'a DocumentLinks,
    pub now: DateTime<Utc>,
}

pub(crate) fn build(notification: &ConnectNotification, documents: &[DocumentRecord], parts: Parts<'_>) -> Value {
    let mut signers: Vec<_> = notification.envelope.recipients.iter().filter(|r| is_signer(r)).collect();
    // Routing order is the order people signed in; unordered recipients keep their listed order.
    signers.sort_by_key(|r| r.routing_order.unwrap_or(u32::MAX));
    let documents: Vec<Value> = documents
        .iter()
        .map(|d| {
            json!({
                "document_id": d.document_id,
                "name": d.name,
                "file_name": d.file_name,
                "content_type": d.content_type,
                "size_bytes": d.size_bytes,
                "sha256": d.sha256,
                "url": parts.links.url_for(notification.envelope.envelope_id, &d.file_name, parts.now),
            })
        })
        .collect();
    let time = notification.envelope.completed_at.unwrap_or(notification.generated_at);
    json!({
        "specversion": "1.0",
        "id": parts.id.to_string(),
        "source": source(notification.envelope.account_id),
        "type": parts.event_type,
        "subject": notification.envelope.envelope_id.to_string(),
        "time": timestamp(time),
        "datacontenttype": "application/json",
        "data": {
            "envelope_id": notification.envelope.envelope_id.to_string(),
            "account_id": notification.envelope.account_id.to_string(),
            "subject": notification.envelope.subject,
            "sender": notification.envelope.sender.as_ref().map(|s| json!({ "name": s.name, "email": s.email })),
            "completed_at": notification.envelope.completed_at.map(timestamp),
            "rule": parts.rule,
            "signers": signers.into_iter().map(signer_json).collect::<Vec<_>>(),
            "fields": parts.fields,
            "missing": parts.missing,
            "documents": documents,
        },
    })
}
