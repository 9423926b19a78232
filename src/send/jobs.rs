//! The agreement's jobs: send it (exactly once), void it, and apply
//! Connect's news about its envelope.
//!
//! Exactly once: DocuSign's envelope creation takes no idempotency key, so
//! every envelope carries the agreement id in a hidden custom field, and any
//! attempt after the first (the one before may have created the envelope
//! and lost the answer, or crashed after the POST) first searches for that
//! field and adopts what it finds. Only when nothing is found does it create.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;

use super::{Profiles, envelope_definition};
use crate::config::Settings;
use crate::docusign::sending::{FoundEnvelope, Template};
use crate::docusign::{ApiError, DocuSign, GrantError};
use crate::domain::{AGREEMENT_FIELD, Agreement, AgreementStatus, ConnectNotification};
use crate::events::agreement::{Lifecycle, lifecycle_event};
use crate::ids::{AccountId, EnvelopeId, UserId};
use crate::jobs::{AgreementLifecycleJob, JobKind, JobPayload, SendAgreementJob, VoidAgreementJob};
use crate::pipeline::{JobContext, JobError, JobHandler, write_outbox};
use crate::store::{AgreementChange, EnvelopeStatus, EnvelopeUpsert, Job, JobState, StoreTx};

/// How long news of an envelope waits for the send job to record it.
const NEWS_PATIENCE: chrono::Duration = chrono::Duration::hours(1);

/// How far back the search for a lost envelope looks before the request was stored.
const SEARCH_MARGIN: chrono::Duration = chrono::Duration::minutes(10);

/// How long a template's description is trusted before it is read again.
const TEMPLATE_TTL: Duration = Duration::from_secs(600);

/// Templates as DocuSign last described them, per account.
type TemplateCache = Mutex<HashMap<(AccountId, String), (Instant, Arc<Template>)>>;

/// What the three jobs share.
#[derive(Debug, Clone)]
struct Sending {
    docusign: Option<Arc<DocuSign>>,
    templates: Arc<TemplateCache>,
    profiles: Profiles,
    connect_url: Option<String>,
    /// How long after a creation attempt began its outcome may still change
    /// (the longest DocuSign call, and a margin): a search waits for it.
    settle: chrono::Duration,
    /// Attempts of each lifecycle event's delivery.
    delivery_attempts: u32,
    recheck: Duration,
}

impl Sending {
    fn new(settings: &Settings, docusign: Option<Arc<DocuSign>>) -> Self {
        Self {
            docusign,
            templates: Arc::default(),
            profiles: Profiles::from_settings(settings),
            connect_url: settings.api.connect_url.clone(),
            settle: chrono::Duration::from_std(settings.docusign.request_timeout + Duration::from_secs(2))
                .unwrap_or(chrono::Duration::MAX),
            delivery_attempts: settings.delivery.max_attempts(),
            recheck: settings.docusign.recheck_base,
        }
    }

    fn docusign(&self) -> Result<&DocuSign, JobError> {
        self.docusign.as_deref().ok_or_else(|| {
            JobError::park(
                "DocuSign access is not configured (docusign.integration_key, docusign.user_id, \
                 docusign.private_key_file): agreements cannot be sent",
                Duration::from_secs(900),
            )
        })
    }

    /// The user that sends, and the account it sends from: the profile's
    /// account, or the user's default one.
    async fn sender(&self, docusign: &DocuSign, agreement: &Agreement) -> Result<(UserId, AccountId), JobError> {
        let profile_account =
            agreement.account_id.or_else(|| self.profiles.get(&agreement.profile).and_then(|p| p.account_id));
        let user = match profile_account {
            Some(account) => docusign.impersonation().user_for(account, None),
            None => docusign.impersonation().users().first().copied(),
        }
        .ok_or_else(|| JobError::park("no DocuSign user to send as: set docusign.user_id", self.recheck))?;
        let account = match profile_account {
            Some(account) => account,
            None => docusign.default_account(user).await.map_err(|e| self.job_error(e))?.account_id,
        };
        Ok((user, account))
    }

    /// Rate limits and missing consent make a job wait, as downloads do.
    fn job_error(&self, error: ApiError) -> JobError {
        match error {
            ApiError::Grant(GrantError::Transient(message)) | ApiError::Transient(message) => JobError::retry(message),
            ApiError::Grant(grant) => JobError::park(grant, self.recheck),
            ApiError::Access(access) => JobError::park(access, self.recheck),
            error @ (ApiError::Paused { until, .. } | ApiError::EnvelopePaused { until, .. }) => {
                JobError::Defer { reason: error.to_string(), until, parked: false }
            }
            ApiError::Documents(error) => JobError::retry(error),
            error @ ApiError::Refused { status: 401 | 403, .. } => JobError::park(error, self.recheck),
            error @ ApiError::Refused { .. } => JobError::retry(error),
        }
    }

    /// The template's roles and tab types, read once per template every
    /// [`TEMPLATE_TTL`]: where each prefilled value must go.
    async fn template(
        &self,
        docusign: &DocuSign,
        user: UserId,
        account: AccountId,
        template_id: &str,
    ) -> Result<Arc<Template>, ApiError> {
        let key = (account, template_id.to_ascii_lowercase());
        let cached = lock(&self.templates).get(&key).filter(|(read, _)| read.elapsed() < TEMPLATE_TTL).cloned();
        if let Some((_, template)) = cached {
            return Ok(template);
        }
        let template = Arc::new(docusign.template(user, account, template_id).await?);
        lock(&self.templates).insert(key, (Instant::now(), template.clone()));
        Ok(template)
    }

    fn sinks(&self, agreement: &Agreement) -> Vec<String> {
        self.profiles.get(&agreement.profile).map(|p| p.sinks.clone()).unwrap_or_default()
    }

    /// Applies `change` and, when it took, writes `news` for the profile's sinks, in `tx`.
    async fn record(
        &self,
        tx: &mut dyn StoreTx,
        agreement: &Agreement,
        change: AgreementChange,
        news: Option<Lifecycle>,
    ) -> Result<bool, JobError> {
        let took = tx.update_agreement(agreement.id, &change).await?;
        if !took {
            return Ok(false);
        }
        let mut after = agreement.clone();
        if let Some(envelope) = change.envelope_id {
            // Events of the envelope refer to its row.
            let account = change
                .account_id
                .or(agreement.account_id)
                .ok_or_else(|| JobError::Fatal(format!("agreement {} has an envelope but no account", agreement.id)))?;
            tx.upsert_envelope(&EnvelopeUpsert {
                envelope_id: envelope,
                account_id: account,
                status: EnvelopeStatus::Sent,
                subject: None,
                completed_at: None,
            })
            .await?;
            after.envelope_id = Some(envelope);
            after.account_id = Some(account);
        }
        if let Some(status) = change.status {
            after.status = status;
        }
        if let Some(news) = news {
            let sinks = self.sinks(agreement);
            if !sinks.is_empty() {
                let event = lifecycle_event(&after, &news, &sinks, Utc::now());
                write_outbox(tx, &[event], self.delivery_attempts).await?;
            }
        }
        Ok(true)
    }

    async fn agreement(&self, ctx: &JobContext, id: crate::ids::AgreementId) -> Result<Agreement, JobError> {
        ctx.store.agreement(id).await?.ok_or_else(|| JobError::Fatal(format!("agreement {id} is not in the store")))
    }
}

/// Of the envelopes a search found for one agreement, the one it keeps: the
/// first created that was not voided or declined (its email went out first).
fn keep_one(mut found: Vec<FoundEnvelope>) -> Option<FoundEnvelope> {
    found.sort_by_key(|e| (e.created_at.is_none(), e.created_at));
    let usable = found.iter().position(|e| !matches!(e.status.as_str(), "voided" | "declined"));
    usable.map(|i| found.swap_remove(i)).or_else(|| found.into_iter().next())
}

/// An envelope its recipients can still act on.
fn is_open(status: &str) -> bool {
    matches!(status, "created" | "sent" | "delivered")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `send_agreement` job.
#[derive(Debug)]
pub struct SendAgreement(Sending);

impl SendAgreement {
    pub fn new(settings: &Settings, docusign: Option<Arc<DocuSign>>) -> Self {
        Self(Sending::new(settings, docusign))
    }

    /// Records the envelope the agreement now has, sent.
    async fn adopt(
        &self,
        ctx: &JobContext,
        agreement: &Agreement,
        envelope: EnvelopeId,
        account: AccountId,
    ) -> Result<(), JobError> {
        let mut tx = ctx.store.begin().await?;
        let change = AgreementChange {
            status: Some(AgreementStatus::Sent),
            envelope_id: Some(envelope),
            account_id: Some(account),
            ..AgreementChange::default()
        };
        if !self.0.record(&mut *tx, agreement, change, Some(Lifecycle::Sent)).await? {
            // Connect's news got there first: keep its status, add the envelope.
            let change =
                AgreementChange { envelope_id: Some(envelope), account_id: Some(account), ..Default::default() };
            self.0.record(&mut *tx, agreement, change, None).await?;
        }
        ctx.complete_with(tx).await
    }

    /// Ends an agreement DocuSign will never send, or that was voided before it was.
    async fn finish_unsent(&self, ctx: &JobContext, agreement: &Agreement, news: Lifecycle) -> Result<(), JobError> {
        let mut tx = ctx.store.begin().await?;
        let change = match &news {
            Lifecycle::Failed { code, message } => AgreementChange {
                status: Some(AgreementStatus::Failed),
                error_code: Some(code.clone()),
                last_error: Some(message.clone()),
                ..Default::default()
            },
            _ => AgreementChange { status: news.status(), ..Default::default() },
        };
        // Only an agreement that has no envelope ends here: one whose
        // envelope exists goes on through Connect's news and the void job.
        let change = AgreementChange { unsent_only: true, ..change };
        if !self.0.record(&mut *tx, agreement, change, Some(news)).await? {
            tracing::warn!(agreement_id = %agreement.id, "the agreement has an envelope or has ended meanwhile; left as it is");
        }
        ctx.complete_with(tx).await
    }
}

#[async_trait]
impl JobHandler for SendAgreement {
    fn kind(&self) -> &'static str {
        JobKind::SendAgreement.as_str()
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload = SendAgreementJob::read(&job.kind, &job.payload)?;
        let agreement = self.0.agreement(ctx, payload.agreement_id).await?;
        if agreement.envelope_id.is_some() || agreement.status.is_final() {
            return Ok(());
        }
        let Some(profile) = self.0.profiles.get(&agreement.profile).cloned() else {
            let news = Lifecycle::Failed {
                code: "PROFILE_NOT_CONFIGURED".into(),
                message: format!("profile `{}` is no longer configured", agreement.profile),
            };
            return self.finish_unsent(ctx, &agreement, news).await;
        };
        let voided = || Lifecycle::Voided { reason: agreement.void_reason.clone() };
        if agreement.void_reason.is_some() && agreement.send_attempted_at.is_none() {
            // Voided before DocuSign was ever asked: nothing to look for.
            return self.finish_unsent(ctx, &agreement, voided()).await;
        }
        let docusign = self.0.docusign()?;
        let (user, account) = self.0.sender(docusign, &agreement).await?;
        // Once DocuSign has been asked, the envelope may exist whatever came
        // back (a timeout, a reset, a crash, a shutdown mid-call): look first.
        if let Some(attempted) = agreement.send_attempted_at {
            // An abandoned call may still be at work in DocuSign until its
            // timeout has passed; a search before then could miss it.
            let settled = attempted + self.0.settle;
            if Utc::now() < settled {
                let wait = (settled - Utc::now()).to_std().unwrap_or_default();
                return Err(JobError::defer("waiting for an earlier creation attempt to settle", wait));
            }
            let since = agreement.created_at - SEARCH_MARGIN;
            let found = docusign
                .envelopes_with_custom_field(user, account, (AGREEMENT_FIELD, &agreement.id.to_string()), since)
                .await
                .map_err(|e| self.0.job_error(e))?;
            if let Some(existing) = keep_one(found.clone()) {
                // Should two envelopes have gone out after all (two workers
                // overlapping on one job), the person gets one to sign: the
                // first stays, the others are voided now.
                for extra in found.iter().filter(|e| e.envelope_id != existing.envelope_id && is_open(&e.status)) {
                    tracing::error!(agreement_id = %agreement.id, envelope_id = %extra.envelope_id, kept = %existing.envelope_id,
                        "DocuSign holds a second envelope for this agreement; voiding it");
                    let reason = format!("Sent twice by mistake; envelope {} is the one to sign", existing.envelope_id);
                    match docusign.void_envelope(user, account, extra.envelope_id, &reason).await {
                        Ok(()) => {}
                        Err(ApiError::Refused { code, message, .. }) => {
                            tracing::warn!(envelope_id = %extra.envelope_id, %code, %message, "DocuSign refused to void the second envelope");
                        }
                        Err(error) => return Err(self.0.job_error(error)),
                    }
                }
                tracing::info!(agreement_id = %agreement.id, envelope_id = %existing.envelope_id,
                    "an earlier attempt created the envelope; adopting it");
                return self.adopt(ctx, &agreement, existing.envelope_id, account).await;
            }
        }
        if agreement.void_reason.is_some() {
            return self.finish_unsent(ctx, &agreement, voided()).await;
        }
        let template = match self.0.template(docusign, user, account, &profile.template_id).await {
            Ok(template) => template,
            Err(error) => return self.refused(ctx, &agreement, error).await,
        };
        let definition = match envelope_definition(
            &profile,
            &agreement.data,
            &agreement.id.to_string(),
            self.0.connect_url.as_deref(),
            Some(&template),
        ) {
            Ok(definition) => definition,
            Err(error) => {
                // The profile changed since the request was taken.
                let news = Lifecycle::Failed { code: "PROFILE_DATA_MISMATCH".into(), message: error.to_string() };
                return self.finish_unsent(ctx, &agreement, news).await;
            }
        };
        // Committed before the call: whatever happens to the answer, every
        // later attempt searches before it creates.
        let mut tx = ctx.store.begin().await?;
        tx.update_agreement(agreement.id, &AgreementChange { send_attempted: true, ..Default::default() }).await?;
        tx.commit().await?;
        match docusign.create_envelope(user, account, &definition).await {
            Ok(envelope) => {
                tracing::info!(agreement_id = %agreement.id, envelope_id = %envelope, "envelope created and sent");
                self.adopt(ctx, &agreement, envelope, account).await
            }
            Err(error) => self.refused(ctx, &agreement, error).await,
        }
    }
}

impl SendAgreement {
    /// DocuSign's refusal of a template or an envelope is for good (a
    /// template or recipient it will not take): the agreement fails with
    /// its code. Anything else waits or retries.
    async fn refused(&self, ctx: &JobContext, agreement: &Agreement, error: ApiError) -> Result<(), JobError> {
        match error {
            ApiError::Refused { status, code, message, .. } if status != 401 && status != 403 => {
                tracing::warn!(agreement_id = %agreement.id, %code, "DocuSign refused to send the agreement");
                let code = if code.is_empty() { format!("HTTP_{status}") } else { code };
                self.finish_unsent(ctx, agreement, Lifecycle::Failed { code, message }).await
            }
            error => Err(self.0.job_error(error)),
        }
    }
}

/// The `void_agreement` job.
#[derive(Debug)]
pub struct VoidAgreement(Sending);

impl VoidAgreement {
    pub fn new(settings: &Settings, docusign: Option<Arc<DocuSign>>) -> Self {
        Self(Sending::new(settings, docusign))
    }
}

#[async_trait]
impl JobHandler for VoidAgreement {
    fn kind(&self) -> &'static str {
        JobKind::VoidAgreement.as_str()
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload = VoidAgreementJob::read(&job.kind, &job.payload)?;
        let agreement = self.0.agreement(ctx, payload.agreement_id).await?;
        if agreement.status.is_final() {
            return Ok(());
        }
        let (Some(envelope), Some(account)) = (agreement.envelope_id, agreement.account_id) else {
            let send = ctx.store.job_by_key(JobKind::SendAgreement.as_str(), &agreement.id.to_string()).await?;
            if send.is_some_and(|job| job.state == JobState::Dead) {
                // Nothing will settle the envelope until an operator replays the send.
                let change = AgreementChange {
                    last_error: Some(
                        "the void waits for the send, which is a dead letter: replay it, then void again".into(),
                    ),
                    ..Default::default()
                };
                let mut tx = ctx.store.begin().await?;
                self.0.record(&mut *tx, &agreement, change, None).await?;
                return ctx.complete_with(tx).await;
            }
            // The send job voids an agreement it has not sent; wait for it.
            return Err(JobError::defer("waiting for the send job to settle the envelope", Duration::from_secs(2)));
        };
        let docusign = self.0.docusign()?;
        let (user, _) = self.0.sender(docusign, &agreement).await?;
        let reason = agreement.void_reason.clone().unwrap_or_else(|| "Voided on request".into());
        // The call first: a write transaction must not wait on DocuSign.
        let outcome = docusign.void_envelope(user, account, envelope, &reason).await;
        let mut tx = ctx.store.begin().await?;
        match outcome {
            Ok(()) => {
                let change = AgreementChange { status: Some(AgreementStatus::Voided), ..Default::default() };
                self.0.record(&mut *tx, &agreement, change, Some(Lifecycle::Voided { reason: Some(reason) })).await?;
            }
            Err(ApiError::Refused { status, code, message, .. }) if status != 401 && status != 403 => {
                // Most often the envelope was completed or declined meanwhile; Connect says which.
                let change = AgreementChange {
                    last_error: Some(format!("DocuSign refused to void the envelope: {code}: {message}")),
                    ..Default::default()
                };
                self.0.record(&mut *tx, &agreement, change, None).await?;
            }
            Err(error) => return Err(self.0.job_error(error)),
        }
        ctx.complete_with(tx).await
    }
}

/// The `agreement_lifecycle` job.
#[derive(Debug)]
pub struct AgreementLifecycle(Sending);

impl AgreementLifecycle {
    pub fn new(settings: &Settings, docusign: Option<Arc<DocuSign>>) -> Self {
        Self(Sending::new(settings, docusign))
    }
}

/// What a notification says happened to the agreement, and the status it brings.
fn news_of(notification: &ConnectNotification) -> (Option<AgreementStatus>, Option<Lifecycle>) {
    let event = notification.event.as_str();
    let recipient = || {
        notification
            .envelope
            .recipients
            .iter()
            .find(|r| r.recipient_id.is_some() && r.recipient_id == notification.recipient_id)
    };
    match event {
        "recipient-autoresponded" => (
            None,
            Some(Lifecycle::Bounced {
                recipient_id: notification.recipient_id.clone(),
                email: recipient().and_then(|r| r.email.clone()),
            }),
        ),
        _ => {
            let status = AgreementStatus::from_connect_event(event);
            let news = match status {
                Some(AgreementStatus::Sent) => Some(Lifecycle::Sent),
                Some(AgreementStatus::Declined) => Some(Lifecycle::Declined {
                    reason: notification.envelope.recipients.iter().find_map(|r| r.declined_reason.clone()),
                }),
                Some(AgreementStatus::Voided) => Some(Lifecycle::Voided { reason: None }),
                _ => None,
            };
            (status, news)
        }
    }
}

#[async_trait]
impl JobHandler for AgreementLifecycle {
    fn kind(&self) -> &'static str {
        JobKind::AgreementLifecycle.as_str()
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload = AgreementLifecycleJob::read(&job.kind, &job.payload)?;
        let recorded =
            ctx.store.notification(payload.notification_id).await?.ok_or_else(|| {
                JobError::Fatal(format!("notification {} is not in the store", payload.notification_id))
            })?;
        let notification: ConnectNotification = serde_json::from_value(recorded.new.summary)
            .map_err(|e| JobError::Fatal(format!("the recorded notification cannot be read: {e}")))?;
        let Some(agreement) = ctx.store.agreement(payload.agreement_id).await? else {
            tracing::warn!(agreement_id = %payload.agreement_id, "a notification names an agreement that is not stored");
            return Ok(());
        };
        let envelope = notification.envelope.envelope_id;
        let Some(known) = agreement.envelope_id else {
            if agreement.status.is_final() {
                return Ok(());
            }
            // Only the send job, searching the sending account, ties an
            // envelope to its agreement: news that names one before that is
            // kept until it has (a lost answer's search settles it).
            if Utc::now() - notification.generated_at > NEWS_PATIENCE {
                tracing::warn!(agreement_id = %agreement.id, %envelope,
                    "news of an envelope the agreement never got; not applied");
                return Ok(());
            }
            return Err(JobError::defer("waiting for the send job to record the envelope", Duration::from_secs(5)));
        };
        if known != envelope {
            tracing::error!(agreement_id = %agreement.id, %envelope,
                "a second envelope carries this agreement's id; its news is not applied");
            return Ok(());
        }
        if agreement.account_id.is_some_and(|account| account != notification.envelope.account_id) {
            tracing::warn!(agreement_id = %agreement.id, %envelope, account_id = %notification.envelope.account_id,
                "news of the agreement's envelope signed for another account; not applied");
            return Ok(());
        }
        let (status, news) = news_of(&notification);
        let mut change = AgreementChange { status, ..Default::default() };
        if let Some(Lifecycle::Bounced { email, .. }) = &news {
            change.last_error = Some(format!("the email to {} bounced", email.as_deref().unwrap_or("a recipient")));
        }
        let mut tx = ctx.store.begin().await?;
        self.0.record(&mut *tx, &agreement, change, news).await?;
        ctx.complete_with(tx).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;

    use super::*;
    use crate::domain::{Envelope, Format, Recipient};
    use crate::ids::{AccountId, EnvelopeId};

    fn notification(event: &str, recipient: Option<&str>) -> ConnectNotification {
        let mut envelope = Envelope::new(
            AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
            EnvelopeId::parse("0c8e9a7b-6d5c-4b3a-9f8e-7d6c5b4a3f2e").unwrap(),
        );
        envelope.recipients.push(Recipient {
            recipient_id: Some("1".into()),
            kind: "signer".into(),
            name: Some("Ada".into()),
            email: Some("ada@example.com".into()),
            role: Some("Employee".into()),
            routing_order: Some(1),
            status: Some("declined".into()),
            signed_at: None,
            declined_reason: Some("Took another offer".into()),
            tabs: Vec::new(),
        });
        ConnectNotification {
            format: Format::Json,
            event: event.into(),
            user_id: None,
            recipient_id: recipient.map(str::to_string),
            generated_at: chrono::Utc::now(),
            envelope,
            embedded: Vec::new(),
            has_envelope_data: true,
        }
    }

    #[test]
    fn of_several_envelopes_the_first_created_that_can_still_be_signed_is_kept() {
        let at = |minute: u32| chrono::Utc.with_ymd_and_hms(2026, 12, 4, 10, minute, 0).single();
        let found = |id: &str, status: &str, created| FoundEnvelope {
            envelope_id: EnvelopeId::parse(id).unwrap(),
            status: status.into(),
            created_at: created,
        };
        let first = "0c8e9a7b-6d5c-4b3a-9f8e-7d6c5b4a3f21";
        let second = "0c8e9a7b-6d5c-4b3a-9f8e-7d6c5b4a3f22";
        let third = "0c8e9a7b-6d5c-4b3a-9f8e-7d6c5b4a3f23";
        let kept = |list| keep_one(list).map(|e| e.envelope_id.to_string());
        let listing = vec![found(second, "sent", at(2)), found(first, "sent", at(1)), found(third, "sent", None)];
        assert_eq!(kept(listing).as_deref(), Some(first), "the earliest, whatever the listing's order");
        let listing = vec![found(first, "voided", at(1)), found(second, "completed", at(2))];
        assert_eq!(kept(listing).as_deref(), Some(second), "a voided envelope is not kept over a live one");
        let listing = vec![found(first, "voided", at(1))];
        assert_eq!(kept(listing).as_deref(), Some(first), "nothing live: the agreement still gets its envelope");
        assert_eq!(kept(Vec::new()), None);
        assert!(is_open("sent") && is_open("delivered") && !is_open("completed") && !is_open("voided"));
    }

    #[test]
    fn connect_news_becomes_a_status_and_a_lifecycle_event() {
        let (status, news) = news_of(&notification("envelope-declined", None));
        assert_eq!(status, Some(AgreementStatus::Declined));
        assert_eq!(news, Some(Lifecycle::Declined { reason: Some("Took another offer".into()) }));
        let (status, news) = news_of(&notification("recipient-autoresponded", Some("1")));
        assert_eq!(status, None, "a bounce leaves the status as it is");
        assert_eq!(
            news,
            Some(Lifecycle::Bounced { recipient_id: Some("1".into()), email: Some("ada@example.com".into()) })
        );
        assert_eq!(news_of(&notification("envelope-delivered", None)), (Some(AgreementStatus::Delivered), None));
        assert_eq!(news_of(&notification("envelope-completed", None)), (Some(AgreementStatus::Completed), None));
        assert_eq!(news_of(&notification("recipient-completed", Some("1"))), (None, None));
    }
}
