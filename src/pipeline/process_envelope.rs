//! The `process_envelope` job: takes a completed envelope from its recorded
//! notification to stored documents and a processed envelope, with as few
//! DocuSign calls as the notification allows — none when it carried the
//! documents and the envelope data, one (the documents) when it carried the
//! data, two otherwise.
//!
//! Each downloaded document is recorded in its own transaction as soon as it
//! is stored, so a retry after a partial failure fetches only what is
//! missing. The envelope's final state and its events (the outbox: events,
//! delivery rows and `deliver` jobs) are written in the transaction that
//! completes the job, so an envelope is never processed without its events
//! being on their way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::write_outbox;
use super::{JobContext, JobError, JobHandler};
use crate::config::{DownloadMode, Settings};
use crate::documents::{DocumentStore, sanitise_file_name};
use crate::docusign::{ApiError, DocuSign, GrantError};
use crate::domain::{AgreementStatus, ConnectNotification, DocumentKind};
use crate::events::Planner;
use crate::formats::parse_rest_envelope;
use crate::ids::{AccountId, EnvelopeId, UserId};
use crate::jobs::{JobKind, JobPayload, ProcessEnvelopeJob};
use crate::live::Live;
use crate::store::{AgreementChange, DocumentRecord, EnvelopeStatus, EnvelopeUpsert, Job};

/// A document still to fetch: DocuSign's id for it and the id it is recorded under.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    /// `combined`, `archive`, `certificate` or a document id.
    document_id: String,
    /// The listed name, for a single document.
    name: Option<String>,
}

#[derive(Debug)]
pub struct ProcessEnvelope {
    docusign: Option<Arc<DocuSign>>,
    /// The rules in force; a reload replaces them.
    planner: Live<Planner>,
    documents: DocumentStore,
    download: DownloadMode,
    recheck_base: Duration,
    recheck_cap: Duration,
}

impl ProcessEnvelope {
    pub fn new(
        settings: &Settings,
        docusign: Option<Arc<DocuSign>>,
        documents: DocumentStore,
    ) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            docusign,
            planner: Live::new(Planner::from_settings(settings)?),
            documents,
            download: settings.documents.download,
            recheck_base: settings.docusign.recheck_base,
            recheck_cap: settings.docusign.recheck_cap,
        })
    }

    /// Puts new rules in force; a job already running finishes with the old ones.
    pub fn install(&self, planner: Planner) {
        self.planner.replace(planner);
    }

    /// How long a job that waits on an operator sleeps before checking
    /// again: half the time it has waited so far, within the configured bounds.
    fn recheck(&self, job: &Job) -> Duration {
        let waited = (Utc::now() - job.created_at).to_std().unwrap_or_default();
        (waited / 2).clamp(self.recheck_base, self.recheck_cap)
    }

    fn job_error(&self, job: &Job, error: ApiError) -> JobError {
        match error {
            ApiError::Grant(GrantError::Transient(message)) | ApiError::Transient(message) => JobError::retry(message),
            ApiError::Grant(grant) => JobError::park(grant, self.recheck(job)),
            ApiError::Access(access) => JobError::park(access, self.recheck(job)),
            error @ (ApiError::Paused { until, .. } | ApiError::EnvelopePaused { until, .. }) => {
                JobError::Defer { reason: error.to_string(), until, parked: false }
            }
            ApiError::Documents(error) => JobError::retry(error),
            error @ ApiError::Refused { status, .. } => match (status, error.code().unwrap_or_default()) {
                (_, "ENVELOPE_DOES_NOT_EXIST" | "DOCUMENT_DOES_NOT_EXIST" | "INVALID_REQUEST_PARAMETER") => {
                    JobError::Fatal(error.to_string())
                }
                // The user is not allowed to read this account: an operator must change the configuration.
                (401 | 403, _) | (_, "USER_LACKS_MEMBERSHIP" | "USER_LACKS_PERMISSIONS") => {
                    JobError::park(error, self.recheck(job))
                }
                _ => JobError::retry(error),
            },
        }
    }

    /// What to download, given what is already stored.
    fn wanted(&self, notification: &ConnectNotification, stored: &[DocumentRecord]) -> Vec<Wanted> {
        let is_stored = |id: &str| stored.iter().any(|d| d.document_id == id);
        let has_content = stored.iter().any(|d| d.document_id != "certificate");
        let whole = |id: &str| Wanted { document_id: id.into(), name: None };
        match self.download {
            DownloadMode::Combined if !has_content => vec![whole("combined")],
            DownloadMode::Archive if !has_content => vec![whole("archive")],
            DownloadMode::Combined | DownloadMode::Archive => Vec::new(),
            DownloadMode::Separate => {
                let mut wanted: Vec<Wanted> = notification
                    .envelope
                    .documents
                    .iter()
                    .filter(|d| d.kind == DocumentKind::Content && d.document_id != "certificate")
                    .filter(|d| !is_stored(&d.document_id))
                    .map(|d| Wanted { document_id: d.document_id.clone(), name: Some(d.name.clone()) })
                    .collect();
                if !is_stored("certificate") {
                    wanted.push(whole("certificate"));
                }
                wanted
            }
        }
    }

    fn docusign(&self) -> Result<&DocuSign, JobError> {
        self.docusign.as_deref().ok_or_else(|| {
            JobError::park(
                "DocuSign access is not configured (docusign.integration_key, docusign.user_id, \
                 docusign.private_key_file), and this notification did not carry everything",
                self.recheck_cap,
            )
        })
    }

    async fn fetch_and_store(
        &self,
        docusign: &DocuSign,
        user: UserId,
        notification: &ConnectNotification,
        wanted: &Wanted,
        ctx: &JobContext,
    ) -> Result<DocumentRecord, ApiError> {
        let (account, id) = (notification.envelope.account_id, notification.envelope.envelope_id);
        let downloaded = docusign.download(user, account, id, &wanted.document_id, &self.documents).await?;
        let file_name = stored_file_name(wanted, downloaded.file_name.as_deref(), id);
        let key = self.documents.publish(&downloaded.staged.key, account, id, &file_name).await?;
        let record = DocumentRecord {
            account_id: account,
            envelope_id: id,
            document_id: wanted.document_id.clone(),
            name: wanted.name.clone().or(downloaded.file_name).unwrap_or_else(|| file_name.clone()),
            file_name: sanitise_file_name(&file_name),
            content_type: downloaded.content_type,
            size_bytes: downloaded.staged.size,
            sha256: downloaded.staged.sha256,
            storage_key: key,
            stored_at: Utc::now(),
        };
        let store_failed = |e| ApiError::Transient(format!("recording the document: {e}"));
        let mut tx = ctx.store.begin().await.map_err(store_failed)?;
        tx.upsert_document(&record).await.map_err(store_failed)?;
        tx.commit().await.map_err(store_failed)?;
        tracing::info!(
            document_id = %record.document_id,
            file_name = %record.file_name,
            bytes = record.size_bytes,
            "document downloaded and stored"
        );
        Ok(record)
    }
}

/// The name a downloaded document is stored under, matching the names of
/// documents that arrive embedded in notifications.
fn stored_file_name(wanted: &Wanted, disposition: Option<&str>, envelope: EnvelopeId) -> String {
    match wanted.document_id.as_str() {
        "certificate" => format!("CertificateOfCompletion_{envelope}.pdf"),
        "combined" => "Combined.pdf".into(),
        "archive" => format!("{envelope}.zip"),
        id => {
            let name = wanted.name.as_deref().or(disposition).unwrap_or("document");
            // Each part on its own: a name like "a/b.pdf" must not swallow the id prefix.
            let name = format!("{}-{}", sanitise_file_name(id), sanitise_file_name(name));
            if name.to_ascii_lowercase().ends_with(".pdf") { name } else { format!("{name}.pdf") }
        }
    }
}

#[async_trait]
impl JobHandler for ProcessEnvelope {
    fn kind(&self) -> &'static str {
        JobKind::ProcessEnvelope.as_str()
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload = ProcessEnvelopeJob::read(&job.kind, &job.payload)?;
        tracing::Span::current().record("envelope_id", tracing::field::display(payload.envelope_id));
        let recorded = ctx
            .store
            .notification(payload.notification_id)
            .await?
            .filter(|n| n.new.envelope_id == payload.envelope_id)
            .ok_or_else(|| JobError::Fatal(format!("notification {} is not in the store", payload.notification_id)))?;
        let mut notification: ConnectNotification = serde_json::from_value(recorded.new.summary)
            .map_err(|e| JobError::Fatal(format!("the recorded notification cannot be read: {e}")))?;
        let account: AccountId = notification.envelope.account_id;
        let mut stored = ctx.store.documents(notification.envelope.envelope_id).await?;
        let planner = self.planner.current();

        let needs_list = self.download == DownloadMode::Separate && notification.envelope.documents.is_empty();
        let mut wanted = self.wanted(&notification, &stored);
        let templates = if planner.needs_templates() {
            let docusign = self.docusign()?;
            let user = user_for(docusign, &notification)?;
            docusign
                .envelope_templates(user, account, notification.envelope.envelope_id)
                .await
                .map_err(|e| self.job_error(job, e))?
        } else {
            Vec::new()
        };
        let needs_roles = planner.needs_roles(&notification, &templates);
        if !notification.has_envelope_data || (needs_list && !wanted.is_empty()) || needs_roles {
            let docusign = self.docusign()?;
            let user = user_for(docusign, &notification)?;
            let rest = docusign
                .envelope(user, account, notification.envelope.envelope_id)
                .await
                .map_err(|e| self.job_error(job, e))?;
            let fetched = parse_rest_envelope(account, notification.envelope.envelope_id, &rest)
                .map_err(|e| JobError::retry(format!("DocuSign's envelope answer could not be read: {e}")))?;
            notification.envelope.update_from(fetched);
            notification.has_envelope_data = true;
            wanted = self.wanted(&notification, &stored);
        }
        if !wanted.is_empty() {
            let docusign = self.docusign()?;
            let user = user_for(docusign, &notification)?;
            for document in &wanted {
                let record = self
                    .fetch_and_store(docusign, user, &notification, document, ctx)
                    .await
                    .map_err(|e| self.job_error(job, e))?;
                stored.push(record);
            }
        }
        if let Some(docusign) = &self.docusign
            && docusign.status().take_recovered()
        {
            match ctx.store.wake_parked().await {
                Ok(woken) => tracing::info!(woken, "DocuSign access is back; parked jobs woken"),
                Err(error) => tracing::warn!(%error, "could not wake parked jobs; they recheck on their own"),
            }
        }

        let mut plan = planner.plan(&notification, &stored, &templates, Utc::now());
        let agreement = ctx.store.agreement_for_envelope(notification.envelope.envelope_id).await?;
        if agreement.is_none()
            && let Some(id) = notification.envelope.agreement_id()
            && let Some(waiting) = ctx.store.agreement(id).await?
            && waiting.envelope_id.is_none()
            && !waiting.status.is_final()
            && Utc::now() - notification.generated_at < chrono::Duration::hours(1)
        {
            // countersign sent this envelope, but the answer was lost and the
            // send job has not found it again yet: its events must carry the
            // request, so they wait for it.
            return Err(JobError::defer(
                "waiting for the send job to record the agreement's envelope",
                Duration::from_secs(5),
            ));
        }
        if let Some(agreement) = &agreement {
            // The consumer provisions from what its system asked for.
            for planned in &mut plan.events {
                if let Some(data) = planned.event.body.get_mut("data").and_then(|d| d.as_object_mut()) {
                    data.insert("agreement".into(), agreement.request());
                }
            }
        }
        let status = if plan.needs_operator() { EnvelopeStatus::Flagged } else { EnvelopeStatus::Processed };
        let mut tx = ctx.store.begin().await?;
        // The envelope row first: events refer to it.
        tx.upsert_envelope(&EnvelopeUpsert {
            envelope_id: notification.envelope.envelope_id,
            account_id: account,
            status,
            subject: notification.envelope.subject.clone(),
            completed_at: notification.envelope.completed_at,
        })
        .await?;
        if let Some(agreement) = agreement.as_ref().filter(|_| notification.event == "envelope-completed") {
            let completed = AgreementChange { status: Some(AgreementStatus::Completed), ..Default::default() };
            tx.update_agreement(agreement.id, &completed).await?;
        }
        let written = write_outbox(&mut *tx, &plan.events, plan.max_attempts).await?;
        ctx.complete_with(tx).await?;
        if plan.needs_operator() {
            tracing::warn!(flags = ?plan.flags, "envelope flagged for an operator: a rule's required field is missing");
        }
        if plan.unmatched {
            tracing::info!("no rule matched and the default event is off: no event for this envelope");
        }
        tracing::info!(
            documents = stored.len(),
            events = written.events,
            deliveries = written.deliveries,
            "envelope processed"
        );
        Ok(())
    }
}

fn user_for(docusign: &DocuSign, notification: &ConnectNotification) -> Result<UserId, JobError> {
    docusign.impersonation().user_for(notification.envelope.account_id, notification.user_id).ok_or_else(|| {
        JobError::park(
            format!(
                "no DocuSign user to act as for account {}: set docusign.user_id",
                notification.envelope.account_id
            ),
            Duration::from_secs(900),
        )
    })
}
