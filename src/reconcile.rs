//! Reconciliation: finds completed envelopes that Connect never delivered.
//!
//! Connect retries a failed delivery about once a day, at most ten times,
//! and not at all without acknowledgement, so a listener that was down can
//! miss an envelope for good. Each account is therefore listed periodically
//! (`GET …/envelopes?from_date=…&status=completed`, page by page); every
//! listed envelope that no notification has enqueued for processing is
//! recorded as an `envelope-completed` notification of origin
//! `reconciliation`, with its `process_envelope` job, exactly as ingest
//! records a Connect notification. The job is unique per envelope, so an
//! envelope that Connect delivers as well is processed once.
//!
//! A pass lists only envelopes completed more than `reconcile.grace` ago:
//! a younger one may have its notification on the way, and taking it for a
//! missed one would download documents Connect is about to deliver embedded.
//!
//! The checkpoint (how far an account was listed) moves only after a whole
//! listing was recorded; each pass starts `reconcile.overlap` before it, so a
//! difference between DocuSign's clock and ours cannot hide an envelope. A
//! pass interrupted by a rate limit (or a restart) keeps its window and its
//! position in the store and resumes at the page it stopped on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::docusign::{ApiError, DocuSign, GrantError};
use crate::domain::{ConnectNotification, Format};
use crate::formats::parse_rest_envelope;
use crate::ids::{AccountId, EnvelopeId, UserId};
use crate::ingest::{Outcome, record_for, write_records};
use crate::jobs::{JobKind, JobPayload, ReconcileAccountJob};
use crate::pipeline::{JobContext, JobError, JobHandler};
use crate::store::{Job, NotificationOrigin, NotificationRecord, ReconcilePass, Store, StoreError};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub pages: usize,
    pub listed: u64,
    /// Envelopes that had no notification and were recorded.
    pub found: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no DocuSign user to act as for account {0}: set docusign.user_id")]
    NoUser(AccountId),
    #[error("no account to reconcile: set docusign.user_id or reconcile.accounts")]
    NoAccount,
}

/// Lists accounts and records what Connect missed.
#[derive(Debug, Clone)]
pub struct Reconciler {
    docusign: Arc<DocuSign>,
    store: Arc<dyn Store>,
    page_size: usize,
    max_attempts: u32,
}

impl Reconciler {
    pub fn new(settings: &Settings, docusign: Arc<DocuSign>, store: Arc<dyn Store>) -> Self {
        Self { docusign, store, page_size: settings.reconcile.page_size, max_attempts: settings.queue.max_attempts }
    }

    fn user_for(&self, account: AccountId) -> Result<UserId, PassError> {
        self.docusign.impersonation().user_for(account, None).ok_or(PassError::NoUser(account))
    }

    /// The default account of the default user (when no account is configured).
    pub async fn default_account(&self) -> Result<AccountId, PassError> {
        let user = self.docusign.impersonation().users().first().copied().ok_or(PassError::NoAccount)?;
        let accounts = self.docusign.accounts(user).await?;
        let account = accounts.iter().find(|a| a.is_default).or(accounts.first()).map(|a| a.account_id);
        account.ok_or_else(|| PassError::Api(ApiError::Access(crate::docusign::UserInfoError::NoAccounts { user })))
    }

    /// Lists the envelopes of `account` completed in the pass's window, from
    /// its position on, and records those countersign has no notification
    /// for. With `persist`, the position is stored after each page so that an
    /// interrupted pass resumes there. `progress` is told after each page.
    pub async fn pass(
        &self,
        account: AccountId,
        mut state: ReconcilePass,
        persist: bool,
        mut progress: impl FnMut(&PassReport, u64),
    ) -> Result<PassReport, PassError> {
        let user = self.user_for(account)?;
        let mut report = PassReport { pages: 0, listed: state.position, found: state.found };
        loop {
            let window = (state.from, state.until);
            let page = self.docusign.completed_envelopes(user, account, window, state.position, self.page_size).await?;
            let found = self.record_missing(account, &page.envelopes).await?;
            state.position += page.envelopes.len() as u64;
            state.found += found as u64;
            if persist {
                self.store.save_reconcile_pass(account, &state).await?;
            }
            report = PassReport { pages: report.pages + 1, listed: state.position, found: state.found };
            progress(&report, page.total);
            if page.envelopes.is_empty() || state.position >= page.total {
                return Ok(report);
            }
        }
    }

    /// Records the listed envelopes that no notification has enqueued for
    /// processing yet (an ignored one, such as `envelope-sent`, does not
    /// count); returns how many.
    async fn record_missing(&self, account: AccountId, listed: &[serde_json::Value]) -> Result<usize, PassError> {
        let mut records = Vec::new();
        for envelope in listed {
            let Some(notification) = listed_notification(account, envelope) else {
                tracing::warn!(%account, "a listed envelope could not be read; skipped");
                continue;
            };
            if !self.store.enqueued_notifications(notification.envelope.envelope_id).await?.is_empty() {
                continue;
            }
            // The same envelope always yields the same synthetic body, so two
            // passes racing each other record it once.
            let body_sha256 = hex::encode(Sha256::digest(
                format!(
                    "reconciliation:{}:{}",
                    notification.envelope.envelope_id,
                    notification.generated_at.timestamp_micros()
                )
                .as_bytes(),
            ));
            records.push(record_for(
                &notification,
                Vec::new(),
                body_sha256,
                true,
                NotificationOrigin::Reconciliation,
                self.max_attempts,
                // A listing carries no custom fields: the agreement's own
                // news comes from Connect; its completion is processed alike.
                false,
            ));
        }
        if records.is_empty() {
            return Ok(0);
        }
        let refs: Vec<&NotificationRecord> = records.iter().collect();
        let outcomes = write_records(&*self.store, &refs).await?;
        let found = outcomes.iter().filter(|o| **o == Outcome::Recorded).count();
        metrics::counter!("countersign_reconcile_found_total", "account" => account.to_string())
            .increment(found as u64);
        for record in records.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Recorded).map(|(r, _)| r) {
            tracing::warn!(
                %account,
                envelope_id = %record.notification.envelope_id,
                "completed envelope found by reconciliation: Connect never delivered it; processing it now"
            );
        }
        Ok(found)
    }
}

/// The notification a listed envelope stands for: Connect's
/// `envelope-completed`, generated when the envelope last changed. A listing
/// carries no recipients, custom fields or documents, so the notification
/// says the envelope's data must still be fetched.
fn listed_notification(account: AccountId, listed: &serde_json::Value) -> Option<ConnectNotification> {
    let envelope_id = EnvelopeId::parse(listed.get("envelopeId")?.as_str()?).ok()?;
    let generated = listed.get("statusChangedDateTime").or_else(|| listed.get("completedDateTime"));
    let generated_at = match generated {
        // A listed time that is not a time (null included) skips the entry.
        Some(time) => crate::formats::parse_utc("statusChangedDateTime", time.as_str()?).ok()?,
        None => Utc::now(),
    };
    // A listing never carries these; leaving them out also keeps a malformed
    // one from costing the entry.
    let mut summary = listed.clone();
    if let Some(object) = summary.as_object_mut() {
        object.remove("recipients");
        object.remove("customFields");
        object.remove("envelopeDocuments");
    }
    let envelope = parse_rest_envelope(account, envelope_id, &summary).ok()?;
    Some(ConnectNotification {
        format: Format::Json,
        event: "envelope-completed".into(),
        user_id: None,
        recipient_id: None,
        generated_at,
        envelope,
        embedded: Vec::new(),
        has_envelope_data: false,
    })
}

/// How far a pass at `now` lists: envelopes completed within `grace` of now
/// are Connect's to deliver, not missed.
pub fn listed_until(now: chrono::DateTime<Utc>, grace: Duration) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(grace)
        .ok()
        .and_then(|g| now.checked_sub_signed(g))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
}

/// Runs periodic passes as jobs, one per account and interval.
#[derive(Debug)]
pub struct ReconcileAccount {
    reconciler: Reconciler,
    overlap: Duration,
    grace: Duration,
    recheck: Duration,
}

impl ReconcileAccount {
    pub fn new(settings: &Settings, reconciler: Reconciler) -> Self {
        Self {
            reconciler,
            overlap: settings.reconcile.overlap,
            grace: settings.reconcile.grace,
            recheck: settings.docusign.recheck_cap,
        }
    }

    fn job_error(&self, error: PassError) -> JobError {
        match error {
            PassError::Api(ApiError::Paused { until, .. } | ApiError::EnvelopePaused { until, .. }) => {
                JobError::Defer {
                    reason: "DocuSign API limits: the pass resumes after the reset".into(),
                    until,
                    parked: false,
                }
            }
            PassError::Api(ApiError::Grant(GrantError::Transient(message)) | ApiError::Transient(message)) => {
                JobError::retry(message)
            }
            error @ (PassError::Api(ApiError::Grant(_) | ApiError::Access(_))
            | PassError::NoUser(_)
            | PassError::NoAccount) => JobError::park(error, self.recheck),
            other => JobError::retry(other),
        }
    }
}

#[async_trait]
impl JobHandler for ReconcileAccount {
    fn kind(&self) -> &'static str {
        JobKind::ReconcileAccount.as_str()
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload = ReconcileAccountJob::read(&job.kind, &job.payload)?;
        let account = match payload.account_id {
            Some(account) => account,
            None => self.reconciler.default_account().await.map_err(|e| self.job_error(e))?,
        };
        let state = match ctx.store.reconcile_pass(account).await? {
            Some(interrupted) => interrupted,
            None => {
                let until = listed_until(Utc::now(), self.grace);
                let overlap = chrono::Duration::from_std(self.overlap).unwrap_or(chrono::Duration::minutes(10));
                // Without a checkpoint this is the first pass: it watches
                // from now on (backfills are `countersign reconcile --since`).
                // A checkpoint ahead of `until` (the grace was raised) does
                // not shrink the window to nothing.
                let checkpoint = ctx.store.reconcile_checkpoint(account).await?;
                let from = checkpoint.map_or(until, |c| c.listed_until.min(until)) - overlap;
                ReconcilePass { from, until, position: 0, found: 0 }
            }
        };
        let report = self.reconciler.pass(account, state, true, |_, _| {}).await.map_err(|e| self.job_error(e))?;
        ctx.store.advance_reconcile_checkpoint(account, state.until, report.found).await?;
        tracing::info!(%account, listed = report.listed, found = report.found, pages = report.pages, "reconciliation pass done");
        Ok(())
    }
}

/// The accounts to reconcile: `reconcile.accounts`, else every account the
/// configuration names; `None` in the list stands for the default account.
pub fn accounts(settings: &Settings) -> Vec<Option<AccountId>> {
    let mut accounts: Vec<AccountId> = if settings.reconcile.accounts.is_empty() {
        let docusign = settings.docusign.accounts.iter().map(|a| a.account_id);
        docusign.chain(settings.connect.accounts.iter().map(|a| a.account_id)).collect()
    } else {
        settings.reconcile.accounts.clone()
    };
    accounts.sort();
    accounts.dedup();
    if accounts.is_empty() { vec![None] } else { accounts.into_iter().map(Some).collect() }
}

/// Arms one pass per account every `interval` until `stop`. Each account has
/// one recurring job: armed again only once the previous pass finished, so
/// passes for one account never overlap, and every replica may run this
/// loop without doubling the work.
pub async fn schedule(
    store: Arc<dyn Store>,
    accounts: Vec<Option<AccountId>>,
    interval: Duration,
    max_attempts: u32,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        for account in &accounts {
            let payload = ReconcileAccountJob { account_id: *account };
            let name = payload.unique_key().unwrap_or_default();
            let job = payload.job(max_attempts);
            if let Err(error) = store.rearm_job(&job).await {
                tracing::warn!(%error, account = %name, "could not schedule a reconciliation pass");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
