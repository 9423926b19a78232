//! What the admin API returns and the page shows, read and done in one
//! place so the two never disagree.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Admin, AdminError};
use crate::deliver::CircuitState;
use crate::deliver::replay::{Replayed, replay_deliveries};
use crate::docusign::{Impersonation, UserAccess};
use crate::ids::{EnvelopeId, JobId};
use crate::jobs::{DeliveryJob, JobKind, JobPayload, ProcessEnvelopeJob};
use crate::pipeline::reprocess::Reprocessing;
use crate::reload::Reloaded;
use crate::store::{
    DeadDelivery, DeliveryFilter, DeliveryRecord, DisabledSink, DocumentRecord, EnvelopePage, EnvelopeQuery,
    EnvelopeRecord, EnvelopeStatus, EventRecord, Job, JobAttempt, JobState, Notification, QueueStat,
};

/// The numbers on the front page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// Envelopes per status (`received`, `processed`, `flagged`).
    pub envelopes: BTreeMap<String, u64>,
    /// Dead `deliver` jobs: events that did not reach a sink.
    pub dead_deliveries: u64,
    /// Other dead jobs (envelope processing, reconciliation).
    pub dead_jobs: u64,
    /// Jobs waiting on an operator (consent, configuration).
    pub parked_jobs: u64,
    /// Queue depth per job kind and state.
    pub queue: Vec<QueueStat>,
    pub disabled_sinks: Vec<DisabledSink>,
}

pub async fn overview(admin: &Admin) -> Result<Overview, AdminError> {
    let store = admin.store();
    let envelopes = store.count_envelopes().await?.into_iter().map(|(s, n)| (s.as_str().to_string(), n)).collect();
    let queue = store.queue_stats().await?;
    let count = |pick: &dyn Fn(&QueueStat) -> bool| queue.iter().filter(|s| pick(s)).map(|s| s.count).sum();
    let dead_deliveries = count(&|s| s.state == JobState::Dead && s.kind == JobKind::Deliver);
    let dead_jobs = count(&|s| s.state == JobState::Dead && s.kind != JobKind::Deliver);
    let parked_jobs = count(&|s| s.state == JobState::Parked);
    let disabled_sinks = store.disabled_sinks().await?;
    Ok(Overview { envelopes, dead_deliveries, dead_jobs, parked_jobs, queue, disabled_sinks })
}

/// Largest page of envelopes one request may ask for.
pub const MAX_PAGE: u32 = 500;

pub async fn envelopes(admin: &Admin, query: &EnvelopeQuery) -> Result<EnvelopePage, AdminError> {
    Ok(admin.store().list_envelopes(query).await?)
}

/// A job with every attempt it made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobHistory {
    pub job: Job,
    pub attempts: Vec<JobAttempt>,
}

/// An event with its delivery to each sink and the job behind each.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventDetail {
    pub event: EventRecord,
    pub deliveries: Vec<DeliveryDetail>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryDetail {
    pub delivery: DeliveryRecord,
    /// The `deliver` job (absent once pruned after success).
    pub job: Option<JobHistory>,
}

/// Everything known about one envelope.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvelopeDetail {
    pub envelope: EnvelopeRecord,
    /// The notifications that enqueued its processing (ignored events are
    /// recorded but not listed here).
    pub notifications: Vec<Notification>,
    /// The `process_envelope` job (absent once pruned after success).
    pub processing: Option<JobHistory>,
    pub documents: Vec<DocumentRecord>,
    pub events: Vec<EventDetail>,
}

async fn history(admin: &Admin, job: Option<Job>) -> Result<Option<JobHistory>, AdminError> {
    let Some(job) = job else { return Ok(None) };
    let attempts = admin.store().job_attempts(job.id).await?;
    Ok(Some(JobHistory { job, attempts }))
}

pub async fn envelope(admin: &Admin, id: EnvelopeId) -> Result<EnvelopeDetail, AdminError> {
    let store = admin.store();
    let Some(envelope) = store.envelope(id).await? else {
        return Err(AdminError::not_found(format!("no envelope {id} is recorded")));
    };
    let notifications = store.enqueued_notifications(id).await?;
    let processing =
        history(admin, store.job_by_key(JobKind::ProcessEnvelope.as_str(), &ProcessEnvelopeJob::key(id)).await?)
            .await?;
    let documents = store.documents(id).await?;
    let mut events = Vec::new();
    for event in store.events_for(id).await? {
        let mut deliveries = Vec::new();
        for delivery in store.deliveries_for(event.id).await? {
            let job = store.job_by_key(JobKind::Deliver.as_str(), &DeliveryJob::key(event.id, &delivery.sink)).await?;
            deliveries.push(DeliveryDetail { delivery, job: history(admin, job).await? });
        }
        events.push(EventDetail { event, deliveries });
    }
    Ok(EnvelopeDetail { envelope, notifications, processing, documents, events })
}

/// What ran out of attempts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    /// Dead event deliveries, most recent failure first.
    pub deliveries: Vec<DeadDelivery>,
    /// Other dead jobs (envelope processing, reconciliation).
    pub jobs: Vec<Job>,
    pub disabled_sinks: Vec<DisabledSink>,
}

pub async fn dead_letters(admin: &Admin, sink: Option<String>, limit: u32) -> Result<DeadLetters, AdminError> {
    let store = admin.store();
    let filter = DeliveryFilter { sink: sink.clone(), ..DeliveryFilter::default() };
    let deliveries = store.dead_deliveries(&filter, limit).await?;
    let disabled_sinks =
        store.disabled_sinks().await?.into_iter().filter(|d| sink.as_ref().is_none_or(|s| *s == d.sink)).collect();
    // Deliveries are listed as deliveries; only the other kinds as jobs.
    let jobs = match sink {
        Some(_) => Vec::new(),
        None => store.dead_jobs(limit).await?.into_iter().filter(|job| job.kind != JobKind::Deliver).collect(),
    };
    Ok(DeadLetters { deliveries, jobs, disabled_sinks })
}

/// What replaying one dead job did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobReplayed {
    pub job_id: JobId,
    pub kind: String,
    /// For a `deliver` job: the delivery queued again and any sink enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Replayed>,
}

/// Replays one dead job. A `deliver` job goes through the delivery replay
/// (as `countersign replay --event`), so its delivery row is pending again
/// and its sink enabled; any other job gets `queue.max_attempts` more attempts.
pub async fn replay_job(admin: &Admin, id: JobId) -> Result<JobReplayed, AdminError> {
    let store = admin.store();
    let Some(job) = store.job(id).await? else { return Err(AdminError::not_found(format!("no job {id}"))) };
    if job.state != JobState::Dead {
        return Err(AdminError::conflict(format!(
            "job {id} is {}, not dead: only dead letters are replayed",
            job.state
        )));
    }
    if let Ok(delivery) = DeliveryJob::read(&job.kind, &job.payload) {
        let filter = DeliveryFilter { event: Some(delivery.event_id), sink: Some(delivery.sink), since: None };
        let replayed = replay_deliveries(store, &filter, admin.settings().delivery.max_attempts()).await?;
        if replayed.deliveries.is_empty() {
            return Err(AdminError::conflict(format!("job {id} is no longer a dead letter")));
        }
        return Ok(JobReplayed { job_id: id, kind: job.kind, delivery: Some(replayed) });
    }
    if !store.replay_job(id, admin.settings().queue.max_attempts).await? {
        return Err(AdminError::conflict(format!("job {id} is no longer a dead letter")));
    }
    Ok(JobReplayed { job_id: id, kind: job.kind, delivery: None })
}

/// What reprocessing an envelope did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvelopeReprocessed {
    pub envelope_id: EnvelopeId,
    /// `queued`; `already_queued` when its processing was waiting anyway;
    /// `running` when it is running now with the rules it started with.
    pub status: Reprocessing,
}

/// Queues an envelope for processing again with the rules in force now.
pub async fn reprocess(admin: &Admin, id: EnvelopeId) -> Result<EnvelopeReprocessed, AdminError> {
    match crate::pipeline::reprocess::reprocess(admin.store(), id, admin.settings().queue.max_attempts).await? {
        Reprocessing::Unknown => Err(AdminError::not_found(format!("no envelope {id} was ever queued for processing"))),
        status => Ok(EnvelopeReprocessed { envelope_id: id, status }),
    }
}

/// Replays the dead deliveries `filter` matches (all of them when it is empty).
pub async fn replay_matching(admin: &Admin, filter: &DeliveryFilter) -> Result<Replayed, AdminError> {
    if let Some(sink) = &filter.sink {
        known_sink(admin, sink)?;
    }
    Ok(replay_deliveries(admin.store(), filter, admin.settings().delivery.max_attempts()).await?)
}

/// DocuSign consent: whether it is configured, the URL a user opens to
/// grant it, and what is known of each impersonated user's access.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Consent {
    /// DocuSign access is configured (integration key and private key).
    pub configured: bool,
    /// The individual-consent URL, when the integration key and redirect URI are set.
    pub consent_url: Option<String>,
    /// Why there is no consent URL, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_url_error: Option<String>,
    pub users: Vec<UserConsent>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserConsent {
    pub user_id: crate::ids::UserId,
    /// `granted`, `consent_required`, `misconfigured`, or `unknown` (no token asked for yet).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn consent(admin: &Admin) -> Consent {
    let settings = admin.settings();
    let settings = &*settings;
    let configured = settings.docusign.integration_key.is_some() && settings.docusign.private_key.is_some();
    let (consent_url, consent_url_error) = match crate::docusign::consent_url(settings) {
        Ok(url) => (Some(url), None),
        Err(error) => (None, Some(error.to_string())),
    };
    let known = admin.inner.access.as_ref().map(|a| a.snapshot()).unwrap_or_default();
    let mut users: Vec<_> = Impersonation::from_settings(settings).users();
    users.extend(known.keys().filter(|u| !users.contains(u)).copied().collect::<Vec<_>>());
    let users = users
        .into_iter()
        .map(|user_id| {
            let (state, message) = match known.get(&user_id) {
                None => ("unknown", None),
                Some(UserAccess::Granted) => ("granted", None),
                Some(UserAccess::ConsentRequired { message }) => ("consent_required", Some(message.clone())),
                Some(UserAccess::Misconfigured { message }) => ("misconfigured", Some(message.clone())),
            };
            UserConsent { user_id, state: state.into(), message }
        })
        .collect();
    Consent { configured, consent_url, consent_url_error, users }
}

/// One configured sink as an operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SinkStatus {
    pub name: String,
    /// `webhook`, `nats` or `amqp`.
    pub kind: String,
    /// Set while the sink is disabled (a 410, or suspended by an operator):
    /// its deliveries become dead letters until it is resumed.
    pub disabled: Option<DisabledSink>,
    /// This process's circuit breaker for the sink.
    pub circuit: Option<CircuitState>,
    /// Dead deliveries waiting for a replay.
    pub dead_deliveries: u64,
}

pub async fn sinks(admin: &Admin) -> Result<Vec<SinkStatus>, AdminError> {
    let store = admin.store();
    let disabled = store.disabled_sinks().await?;
    let dead = store.dead_deliveries(&DeliveryFilter::default(), u32::MAX).await?;
    Ok(admin
        .settings()
        .sinks
        .iter()
        .map(|sink| SinkStatus {
            name: sink.name.clone(),
            kind: format!("{:?}", sink.kind).to_lowercase(),
            disabled: disabled.iter().find(|d| d.sink == sink.name).cloned(),
            circuit: admin.inner.circuits.state(&sink.name),
            dead_deliveries: dead.iter().filter(|d| d.sink == sink.name).count() as u64,
        })
        .collect())
}

pub async fn sink(admin: &Admin, name: &str) -> Result<SinkStatus, AdminError> {
    known_sink(admin, name)?;
    sinks(admin)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| AdminError::not_found(format!("no sink named {name:?} is configured")))
}

fn known_sink(admin: &Admin, name: &str) -> Result<(), AdminError> {
    if admin.settings().sinks.iter().any(|s| s.name == name) {
        Ok(())
    } else {
        Err(AdminError::not_found(format!("no sink named {name:?} is configured ([[sinks]])")))
    }
}

/// Suspends a sink on every replica: it is disabled in the store, as a 410
/// would, so its deliveries become dead letters (holding no worker) until
/// it is resumed, which replays them.
pub async fn suspend_sink(admin: &Admin, name: &str, reason: Option<&str>) -> Result<SinkStatus, AdminError> {
    known_sink(admin, name)?;
    let reason = match reason {
        Some(reason) => format!("suspended by an operator: {reason}"),
        None => "suspended by an operator".to_string(),
    };
    if admin.store().disable_sink(name, &reason).await? {
        tracing::warn!(sink = %name, "sink suspended through the admin API");
    }
    sink(admin, name).await
}

/// Enables a sink again and replays its dead deliveries, as
/// `countersign replay --sink NAME` does.
pub async fn resume_sink(admin: &Admin, name: &str) -> Result<Replayed, AdminError> {
    known_sink(admin, name)?;
    let enabled = admin.store().enable_sink(name).await?;
    let filter = DeliveryFilter { sink: Some(name.to_string()), ..DeliveryFilter::default() };
    let mut replayed = replay_deliveries(admin.store(), &filter, admin.settings().delivery.max_attempts()).await?;
    if enabled {
        tracing::info!(sink = %name, "sink resumed through the admin API");
        replayed.enabled_sinks.insert(0, name.to_string());
    }
    Ok(replayed)
}

/// Reads the configuration again and puts its rules, sinks and Connect
/// keys in force together, as SIGHUP does; a configuration that does not
/// load changes nothing and the answer names the key at fault.
pub async fn reload(admin: &Admin) -> Result<Reloaded, AdminError> {
    match admin.inner.reloader.reload().await {
        Ok(reloaded) => {
            tracing::info!(keys = reloaded.keys, rules = reloaded.rules, sinks = ?reloaded.sinks, removed = ?reloaded.removed_sinks, "admin API: configuration reloaded");
            Ok(reloaded)
        }
        Err(error) => {
            tracing::error!(%error, "admin API: configuration does not load; keeping everything in force");
            Err(AdminError::configuration(error.key(), format!("{error}; the rules, sinks and keys in force are kept")))
        }
    }
}

/// Every status an envelope can have, for filters.
pub const STATUSES: [EnvelopeStatus; 3] =
    [EnvelopeStatus::Received, EnvelopeStatus::Processed, EnvelopeStatus::Flagged];
