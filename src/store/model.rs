//! What the store holds, as the rest of the service sees it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Agreement, AgreementStatus, RequestKey};
use crate::ids::{AccountId, AgreementId, EnvelopeId, EventId, JobId, NotificationId};
pub use crate::jobs::NewJob;

/// The result of an insert that may meet an existing row with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted<T> {
    Created(T),
    /// A row with the same unique key already exists; nothing was written.
    Duplicate,
}

impl<T> Inserted<T> {
    pub fn created(self) -> Option<T> {
        match self {
            Self::Created(value) => Some(value),
            Self::Duplicate => None,
        }
    }
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where a job is in its life.
    JobState {
        Ready => "ready",
        /// Waiting on something only an operator can fix (DocuSign consent,
        /// configuration); rechecked when due, and woken early once fixed.
        Parked => "parked",
        Running => "running",
        Done => "done",
        /// Out of attempts (or failed permanently); kept for an operator.
        Dead => "dead",
    }
);

text_enum!(
    /// How one attempt at a job ended.
    AttemptOutcome {
        Succeeded => "succeeded",
        Failed => "failed",
        /// Handed back unfinished (shutdown); does not count against the job.
        Released => "released",
        /// The worker vanished or stalled and its lease ran out.
        LeaseExpired => "lease_expired",
        /// Could not run yet (a rate-limit pause, missing consent, an open
        /// circuit); put back to wait, without using up an attempt.
        Deferred => "deferred",
    }
);

text_enum!(
    /// How countersign dealt with a notification.
    Disposition {
        /// A job was enqueued to process the envelope.
        Enqueued => "enqueued",
        /// Recorded only: the event is not one countersign processes.
        Ignored => "ignored",
    }
);

text_enum!(
    /// Where the notification came from.
    NotificationOrigin {
        Connect => "connect",
        Reconciliation => "reconciliation",
    }
);

text_enum!(
    EnvelopeStatus {
        /// A completion was recorded; processing has not finished yet.
        Received => "received",
        /// Documents stored and events written.
        Processed => "processed",
        /// Needs an operator (a required field was missing, for example).
        Flagged => "flagged",
        /// Sent by countersign for an agreement; not completed yet.
        Sent => "sent",
    }
);

text_enum!(
    DeliveryState {
        Pending => "pending",
        Delivered => "delivered",
        Dead => "dead",
    }
);

/// A job to put on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Created(JobId),
    /// A job with the same kind and unique key exists; nothing was added.
    Duplicate,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub unique_key: Option<String>,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// Attempts started so far, including the running one.
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Proof that this worker holds a job: only the holder of the current token
/// may heartbeat, complete, fail or release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    pub token: uuid::Uuid,
}

/// A job handed back to wait because it cannot run yet (see `Store::defer_jobs`).
#[derive(Debug, Clone)]
pub struct Deferral {
    pub lease: Lease,
    pub reason: String,
    pub until: DateTime<Utc>,
    /// A wait on an operator rather than on the clock.
    pub parked: bool,
}

#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: Job,
    pub lease: Lease,
}

/// What the worker wants after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at this time, unless the job is out of attempts.
    At(DateTime<Utc>),
    /// The failure will not go away by retrying: dead-letter now.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    WillRetry {
        at: DateTime<Utc>,
    },
    Dead,
    /// The lease was no longer ours; someone else holds the job.
    LeaseLost,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobAttempt {
    pub attempt: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<AttemptOutcome>,
    pub error: Option<String>,
}

/// Queue depth for one (kind, state).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueStat {
    pub kind: String,
    pub state: JobState,
    pub count: u64,
    /// The earliest `run_at` among these jobs.
    pub oldest: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewNotification {
    pub id: NotificationId,
    pub account_id: AccountId,
    pub envelope_id: EnvelopeId,
    pub event: String,
    pub recipient_id: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub format: String,
    pub origin: NotificationOrigin,
    /// SHA-256 of the exact body bytes, hex.
    pub body_sha256: String,
    pub disposition: Disposition,
    /// The normalised notification (never document bytes).
    pub summary: serde_json::Value,
}

/// Everything one notification writes when it is recorded: the envelope,
/// documents and jobs are written only if the notification is new.
#[derive(Debug)]
pub struct NotificationRecord {
    pub notification: NewNotification,
    pub envelope: Option<EnvelopeUpsert>,
    pub documents: Vec<DocumentRecord>,
    pub jobs: Vec<NewJob>,
}

impl NewNotification {
    /// Two deliveries of the same Connect message share this key even when
    /// their bodies differ (Connect bumps `retryCount` on a retry).
    pub fn dedupe_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.account_id,
            self.envelope_id,
            self.event,
            self.recipient_id.as_deref().unwrap_or(""),
            self.generated_at.timestamp_micros()
        )
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Notification {
    #[serde(flatten)]
    pub new: NewNotification,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvelopeRecord {
    pub envelope_id: EnvelopeId,
    pub account_id: AccountId,
    pub status: EnvelopeStatus,
    pub subject: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which envelopes to list, and which page of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeQuery {
    pub status: Option<EnvelopeStatus>,
    pub limit: u32,
    pub offset: u64,
}

/// A page of envelopes and how many match the query in all.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvelopePage {
    pub total: u64,
    pub envelopes: Vec<EnvelopeRecord>,
}

#[derive(Debug, Clone)]
pub struct EnvelopeUpsert {
    pub envelope_id: EnvelopeId,
    pub account_id: AccountId,
    pub status: EnvelopeStatus,
    pub subject: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DocumentRecord {
    /// The account the envelope belongs to: a document row is keyed by
    /// (account, envelope, document), so no account can write another's.
    pub account_id: AccountId,
    pub envelope_id: EnvelopeId,
    /// DocuSign's document id ("1", "2", …) or "certificate".
    pub document_id: String,
    pub name: String,
    /// The sanitised file name it is served under.
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Where the bytes are in the document store.
    pub storage_key: String,
    pub stored_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    pub id: EventId,
    /// The envelope the event is about; only an agreement DocuSign refused has none.
    pub envelope_id: Option<EnvelopeId>,
    /// The agreement the event is about, for an agreement's lifecycle events.
    pub agreement_id: Option<AgreementId>,
    pub rule: String,
    pub event_type: String,
    /// The CloudEvent exactly as it is delivered.
    pub body: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Position among the events of its envelope created together: events
    /// reach each sink in (created_at, ordinal) order.
    pub ordinal: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    pub event_id: EventId,
    pub sink: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// How far the reconciler has listed one account's completed envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileCheckpoint {
    pub account_id: AccountId,
    /// Envelopes completed before this were listed and recorded.
    pub listed_until: DateTime<Utc>,
    /// Envelopes found by reconciliation that Connect never delivered, in all.
    pub found_total: u64,
    pub updated_at: DateTime<Utc>,
}

/// A reconciliation pass under way: the listing `[from, until)` has been
/// recorded up to `position`. A pass interrupted (a rate limit) resumes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReconcilePass {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub position: u64,
    /// Envelopes found so far in this pass.
    pub found: u64,
}

/// The outcome of one delivery attempt, written to its delivery row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub event_id: EventId,
    pub sink: String,
    pub state: DeliveryState,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// `None` on success.
    pub last_error: Option<String>,
}

/// Which dead deliveries to list or replay; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub event: Option<EventId>,
    pub sink: Option<String>,
    /// Only deliveries that died at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// A delivery that ran out of attempts (or hit a failure retrying cannot fix).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeadDelivery {
    pub event_id: EventId,
    /// `None` for an event about an agreement that never had an envelope.
    pub envelope_id: Option<EnvelopeId>,
    pub event_type: String,
    pub sink: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub failed_at: Option<DateTime<Utc>>,
    /// The `deliver` job that carries it.
    pub job_id: JobId,
}

/// An earlier event of the same envelope still waiting to reach the same sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierDelivery {
    pub event_id: EventId,
    /// When its job runs next (`None` while it runs, or if it has no job).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A sink an operator must look at (a webhook that answered 410 Gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DisabledSink {
    pub sink: String,
    pub reason: String,
    pub disabled_at: DateTime<Utc>,
}

/// An agreement to store, with the job that sends it.
#[derive(Debug, Clone)]
pub struct NewAgreement {
    pub id: AgreementId,
    pub key: RequestKey,
    pub profile: String,
    pub data: serde_json::Value,
    pub account_id: Option<AccountId>,
}

/// What storing a request found.
#[derive(Debug, Clone)]
pub enum AgreementInsert {
    /// A new agreement, stored with its send job.
    Created(Agreement),
    /// The client's idempotency key names this earlier agreement, asked with this digest.
    Existing { agreement: Agreement, digest: String },
}

/// A change to an agreement, applied only where its conditions hold: with
/// a `status`, only if the agreement's status advances to it
/// ([`AgreementStatus::advances_to`]); with an `envelope_id`, only if the
/// agreement has none or that one (an envelope is never replaced); with
/// `unsent_only`, only while it has no envelope; with `open_only`, only
/// while its status is not final. An account, once set, stays; the other
/// fields given replace the stored ones.
#[derive(Debug, Clone, Default)]
pub struct AgreementChange {
    pub status: Option<AgreementStatus>,
    pub account_id: Option<AccountId>,
    pub envelope_id: Option<EnvelopeId>,
    pub error_code: Option<String>,
    pub last_error: Option<String>,
    pub void_reason: Option<String>,
    /// Marks that a send is about to ask DocuSign to create the envelope.
    pub send_attempted: bool,
    pub unsent_only: bool,
    pub open_only: bool,
}

/// Which agreements to list, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementQuery {
    /// Only this client's (the API lists a client's own).
    pub client: Option<String>,
    pub status: Option<AgreementStatus>,
    pub profile: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

/// A page of agreements, newest first, and how many match in all.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgreementPage {
    pub total: u64,
    pub agreements: Vec<Agreement>,
}
