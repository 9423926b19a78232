//! An agreement's lifecycle events: `agreement.sent`, `agreement.declined`,
//! `agreement.voided`, `agreement.failed` and `agreement.bounced`, for the
//! sinks its profile names. They are CloudEvents like the rules' events and
//! carry the request (`data.agreement`); one with an envelope is ordered with
//! that envelope's other events, so a sink hears of the sending before the
//! completion.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::PlannedEvent;
use super::cloudevent::{source, timestamp};
use crate::domain::{Agreement, AgreementStatus};
use crate::ids::EventId;
use crate::store::EventRecord;

/// The UUIDv5 namespace of lifecycle event ids; it never changes.
const LIFECYCLE_NAMESPACE: Uuid = Uuid::from_u128(0x3c0f_5a2e_77b4_4e09_9d61_2f8a_b0c4_e513);

/// What happened to an agreement, as an event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    Sent,
    Declined {
        reason: Option<String>,
    },
    Voided {
        reason: Option<String>,
    },
    /// DocuSign refused the request for good.
    Failed {
        code: String,
        message: String,
    },
    /// A recipient's email came back undelivered.
    Bounced {
        recipient_id: Option<String>,
        email: Option<String>,
    },
}

impl Lifecycle {
    pub const TYPES: [&str; 5] =
        ["agreement.sent", "agreement.declined", "agreement.voided", "agreement.failed", "agreement.bounced"];

    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Sent => "agreement.sent",
            Self::Declined { .. } => "agreement.declined",
            Self::Voided { .. } => "agreement.voided",
            Self::Failed { .. } => "agreement.failed",
            Self::Bounced { .. } => "agreement.bounced",
        }
    }

    /// The event's key among the agreement's events: one of each type, one bounce per recipient.
    fn rule(&self) -> String {
        match self {
            Self::Bounced { recipient_id, email } => {
                format!("agreement.bounced/{}", recipient_id.as_deref().or(email.as_deref()).unwrap_or("-"))
            }
            other => other.event_type().to_string(),
        }
    }

    /// The agreement status this news brings, if it brings one.
    pub fn status(&self) -> Option<AgreementStatus> {
        match self {
            Self::Sent => Some(AgreementStatus::Sent),
            Self::Declined { .. } => Some(AgreementStatus::Declined),
            Self::Voided { .. } => Some(AgreementStatus::Voided),
            Self::Failed { .. } => Some(AgreementStatus::Failed),
            Self::Bounced { .. } => None,
        }
    }
}

/// The event for `what` happening to `agreement` (as it is after the news),
/// to each of `sinks`.
pub fn lifecycle_event(agreement: &Agreement, what: &Lifecycle, sinks: &[String], now: DateTime<Utc>) -> PlannedEvent {
    let rule = what.rule();
    let id = EventId(Uuid::new_v5(&LIFECYCLE_NAMESPACE, format!("{}/{rule}", agreement.id).as_bytes()));
    let mut data = Map::new();
    data.insert("agreement".into(), agreement.request());
    data.insert("status".into(), json!(agreement.status.as_str()));
    data.insert("envelope_id".into(), json!(agreement.envelope_id.map(|e| e.to_string())));
    data.insert("account_id".into(), json!(agreement.account_id.map(|a| a.to_string())));
    match what {
        Lifecycle::Sent => {}
        Lifecycle::Declined { reason } | Lifecycle::Voided { reason } => {
            data.insert("reason".into(), json!(reason));
        }
        Lifecycle::Failed { code, message } => {
            data.insert("error".into(), json!({ "code": code, "message": message }));
        }
        Lifecycle::Bounced { recipient_id, email } => {
            data.insert("recipient".into(), json!({ "recipient_id": recipient_id, "email": email }));
        }
    }
    let subject = agreement.envelope_id.map_or_else(|| agreement.id.to_string(), |e| e.to_string());
    let body = json!({
        "specversion": "1.0",
        "id": id.to_string(),
        "source": agreement.account_id.map_or_else(|| "urn:countersign:agreements".to_string(), source),
        "type": what.event_type(),
        "subject": subject,
        "time": timestamp(now),
        "datacontenttype": "application/json",
        "data": Value::Object(data),
    });
    PlannedEvent {
        event: EventRecord {
            id,
            envelope_id: agreement.envelope_id,
            agreement_id: Some(agreement.id),
            rule,
            event_type: what.event_type().to_string(),
            body,
            created_at: now,
            ordinal: 0,
        },
        sinks: sinks.to_vec(),
    }
}
