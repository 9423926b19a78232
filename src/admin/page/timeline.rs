//! One envelope's history as a single list in time order: what Connect
//! said, each processing attempt, the documents, the events and every
//! delivery attempt. Pulled together from the rows the API returns.

use chrono::{DateTime, Utc};

use crate::admin::queries::{EnvelopeDetail, JobHistory};
use crate::store::{AttemptOutcome, DeliveryState};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// A short class for the line: `ok`, `failed`, `info`.
    pub tone: &'static str,
    pub what: String,
    /// An error or a detail, shown under the line.
    pub detail: Option<String>,
}

fn attempts(entries: &mut Vec<Entry>, history: &JobHistory, label: &str) {
    for attempt in &history.attempts {
        let (tone, outcome) = match attempt.outcome {
            Some(AttemptOutcome::Succeeded) => ("ok", "succeeded".to_string()),
            Some(AttemptOutcome::Failed) => ("failed", "failed".to_string()),
            Some(other) => ("info", other.to_string().replace('_', " ")),
            None => ("info", "running".to_string()),
        };
        entries.push(Entry {
            at: attempt.started_at,
            tone,
            what: format!("{label}: attempt {} {outcome}", attempt.attempt),
            detail: attempt.error.clone(),
        });
    }
}

pub fn of(detail: &EnvelopeDetail) -> Vec<Entry> {
    let mut entries = Vec::new();
    if let Some(completed) = detail.envelope.completed_at {
        entries.push(Entry { at: completed, tone: "info", what: "completed in DocuSign".into(), detail: None });
    }
    for notification in &detail.notifications {
        let n = &notification.new;
        entries.push(Entry {
            at: notification.received_at,
            tone: "info",
            what: format!("{} notification {} ({}), {}", n.origin, n.event, n.format, n.disposition),
            detail: None,
        });
    }
    if let Some(processing) = &detail.processing {
        attempts(&mut entries, processing, "processing");
    }
    for document in &detail.documents {
        entries.push(Entry {
            at: document.stored_at,
            tone: "ok",
            what: format!("document stored: {} ({} bytes)", document.name, document.size_bytes),
            detail: None,
        });
    }
    for event in &detail.events {
        entries.push(Entry {
            at: event.event.created_at,
            tone: "info",
            what: format!("event {} created by rule {}", event.event.event_type, event.event.rule),
            detail: None,
        });
        for delivery in &event.deliveries {
            let sink = &delivery.delivery.sink;
            if let Some(job) = &delivery.job {
                attempts(&mut entries, job, &format!("delivery to {sink}"));
            }
            match delivery.delivery.state {
                DeliveryState::Delivered => entries.push(Entry {
                    at: delivery.delivery.delivered_at.unwrap_or(delivery.delivery.updated_at),
                    tone: "ok",
                    what: format!("delivered to {sink}"),
                    detail: None,
                }),
                DeliveryState::Dead => entries.push(Entry {
                    at: delivery.delivery.updated_at,
                    tone: "failed",
                    what: format!("delivery to {sink} is a dead letter"),
                    detail: delivery.delivery.last_error.clone(),
                }),
                DeliveryState::Pending => {}
            }
        }
    }
    // Stable: lines with the same time keep the order they were added in.
    entries.sort_by_key(|entry| entry.at);
    entries
}
