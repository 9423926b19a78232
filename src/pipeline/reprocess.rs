//! Reprocessing: an envelope taken through `process_envelope` again, with
//! the rules and sinks in force now. What is already done stays done: events
//! keep their deterministic ids (one per envelope and rule), so an event
//! made before is not made again and its deliveries are not sent again,
//! while a rule that matches now adds its event; documents already stored
//! are not downloaded again. The operator's way out for a flagged envelope
//! once the rule or the envelope's data is fixed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::EnvelopeId;
use crate::jobs::{JobPayload, ProcessEnvelopeJob};
use crate::store::{EnvelopeQuery, EnvelopeStatus, JobState, Store, StoreResult};

/// What asking to reprocess one envelope did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reprocessing {
    /// Its `process_envelope` job is waiting to run again.
    Queued,
    /// Its job is already waiting to run: it will use today's rules.
    AlreadyQueued,
    /// Its job is running now, with the rules in force when it started;
    /// ask again once it is done if the rules changed since.
    Running,
    /// No notification ever enqueued processing for this envelope.
    Unknown,
}

/// Queues `envelope` for processing again, with up to `max_attempts` attempts.
pub async fn reprocess(store: &dyn Store, envelope: EnvelopeId, max_attempts: u32) -> StoreResult<Reprocessing> {
    // The job keeps the notification it was made for; this one is used only
    // when the finished job has been pruned since.
    let notifications = store.enqueued_notifications(envelope).await?;
    let Some(latest) = notifications.iter().max_by_key(|n| n.received_at) else {
        return Ok(Reprocessing::Unknown);
    };
    let job =
        ProcessEnvelopeJob { notification_id: latest.new.id, account_id: latest.new.account_id, envelope_id: envelope }
            .job(max_attempts);
    if store.rerun_job(&job).await? {
        return Ok(Reprocessing::Queued);
    }
    let running = store
        .job_by_key(&job.kind, job.unique_key.as_deref().unwrap_or_default())
        .await?
        .is_some_and(|j| j.state == JobState::Running);
    Ok(if running { Reprocessing::Running } else { Reprocessing::AlreadyQueued })
}

/// The flagged envelopes; with `since`, those whose record changed (was
/// flagged, or named by a later notification) at or after it.
pub async fn flagged(store: &dyn Store, since: Option<DateTime<Utc>>) -> StoreResult<Vec<EnvelopeId>> {
    const PAGE: u32 = 500;
    let mut found = Vec::new();
    let mut offset = 0;
    loop {
        let query = EnvelopeQuery { status: Some(EnvelopeStatus::Flagged), limit: PAGE, offset };
        let page = store.list_envelopes(&query).await?;
        let count = page.envelopes.len();
        found.extend(page.envelopes.iter().filter(|e| since.is_none_or(|s| e.updated_at >= s)).map(|e| e.envelope_id));
        offset += count as u64;
        if count < PAGE as usize {
            return Ok(found);
        }
    }
}
