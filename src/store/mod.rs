//! Everything countersign persists, behind one interface with a SQLite
//! implementation (the default) and a PostgreSQL one (for several replicas).
//! Work passes between pipeline stages as rows written in the same
//! transaction as the work that produced them, so the interface hands out
//! transactions ([`StoreTx`]) rather than only single statements.

mod migrations;
mod model;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

pub use model::*;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::domain::Agreement;
use crate::ids::{AccountId, AgreementId, EnvelopeId, EventId, JobId, NotificationId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("migrations are not applied (schema version {found}, expected {expected})")]
    NotMigrated { found: i64, expected: i64 },
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open the store at {url}: {reason}")]
    Open { url: String, reason: String },
}

impl StoreError {
    /// The store as a whole cannot be reached (no connection, the server
    /// shutting down), as opposed to one statement failing: retrying the
    /// same work row by row would only wait out the same failure again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(error) => match error {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE classes 08 (connection exception) and 57 (operator intervention).
                sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
                _ => false,
            },
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The whole store, as a stage holds it (`Arc<dyn Store>`): every focused
/// trait below, written once against both databases. A caller imports the
/// traits whose methods it uses, so what it touches is named at the top of
/// its file.
pub trait Store: Queue + Notifications + Envelopes + Deliveries + Reconciliation + Agreements {}

impl<T: Queue + Notifications + Envelopes + Deliveries + Reconciliation + Agreements> Store for T {}

/// What every part of the store shares: which database, transactions, readiness.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    /// Starts a write transaction; dropping it without [`StoreTx::commit`] rolls back.
    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>>;

    /// Reachable and fully migrated.
    async fn check_ready(&self) -> StoreResult<()>;
}

/// The durable job queue: enqueue, claim with a lease, heartbeat, retry, defer, dead-letter, replay.
#[async_trait]
pub trait Queue: Backend {
    /// A receiver that changes whenever new work may be claimable.
    fn job_signal(&self) -> watch::Receiver<u64>;

    /// Claims up to `limit` runnable jobs of the given kinds: ready jobs that
    /// are due, and running jobs whose lease expired (their worker died).
    /// Expired jobs that are out of attempts become dead letters instead.
    async fn claim_jobs(
        &self,
        kinds: &[&str],
        worker: &str,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedJob>>;

    /// Extends a lease; `false` means it is no longer ours.
    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> StoreResult<bool>;

    /// Records a failed attempt and schedules the retry or the dead letter.
    async fn fail_job(&self, lease: &Lease, error: &str, retry: Retry) -> StoreResult<FailOutcome>;

    /// Hands an unfinished job back (shutdown); the attempt does not count.
    async fn release_job(&self, lease: &Lease) -> StoreResult<bool>;

    /// Hands jobs back to wait until their `until` because they cannot run
    /// yet, in one commit; each attempt does not count and its `reason` is
    /// kept as the job's last error. Answers, per deferral, whether its
    /// lease was still held (a job whose lease was lost is left alone).
    async fn defer_jobs(&self, deferrals: &[Deferral]) -> StoreResult<Vec<bool>>;

    /// [`Queue::defer_jobs`] for one job.
    async fn defer_job(&self, lease: &Lease, reason: &str, until: DateTime<Utc>, parked: bool) -> StoreResult<bool> {
        let deferral = Deferral { lease: *lease, reason: reason.to_string(), until, parked };
        Ok(self.defer_jobs(&[deferral]).await?.first().copied().unwrap_or(false))
    }

    /// Enqueues a job that recurs under one unique key: a finished (done or
    /// dead) job of that key is armed again with a fresh set of attempts and
    /// its old attempt history dropped; a waiting or running one is left
    /// alone. `true` when a job is now waiting that was not before.
    async fn rearm_job(&self, job: &NewJob) -> StoreResult<bool>;

    /// Runs a unique job once more (reprocessing): a finished (done or dead)
    /// job of the key is made ready with `job.max_attempts` further attempts,
    /// keeping its payload and its attempt history; an absent one is
    /// enqueued as `job`; a waiting or running one is left alone (it runs
    /// anyway). `true` when a job is now waiting that was not before.
    async fn rerun_job(&self, job: &NewJob) -> StoreResult<bool>;

    /// Makes every parked job due now (what they waited on is fixed); returns how many.
    async fn wake_parked(&self) -> StoreResult<u64>;

    /// When the next job of these kinds becomes claimable, if any is waiting.
    async fn next_due(&self, kinds: &[&str]) -> StoreResult<Option<DateTime<Utc>>>;

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>>;

    /// The job of `kind` with `unique_key` (for example an envelope's `process_envelope` job).
    async fn job_by_key(&self, kind: &str, unique_key: &str) -> StoreResult<Option<Job>>;

    async fn job_attempts(&self, id: JobId) -> StoreResult<Vec<JobAttempt>>;

    async fn dead_jobs(&self, limit: u32) -> StoreResult<Vec<Job>>;

    /// Gives a dead job `attempts` more attempts; `false` if it was not dead.
    async fn replay_job(&self, id: JobId, attempts: u32) -> StoreResult<bool>;

    /// Deletes jobs that finished successfully before `before`; returns how many.
    async fn prune_jobs(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    async fn queue_stats(&self) -> StoreResult<Vec<QueueStat>>;

    /// Completes a job on its own, for jobs that write nothing else.
    async fn complete_job(&self, lease: &Lease) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = tx.complete_job(lease).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Enqueues a job on its own.
    async fn enqueue(&self, job: &NewJob) -> StoreResult<Enqueued> {
        let mut tx = self.begin().await?;
        let enqueued = tx.enqueue(job).await?;
        tx.commit().await?;
        Ok(enqueued)
    }
}

/// Connect notifications (and reconciliation's): the group commit and the lookups.
#[async_trait]
pub trait Notifications: Backend {
    /// Records `records` in one transaction. A notification recorded before
    /// (or earlier in the same batch), or one naming an envelope of another
    /// account, writes nothing; an envelope named
    /// twice takes its later values (on SQLite each row is upserted in turn,
    /// so a later row without a subject keeps the earlier one's, as two
    /// batches would; PostgreSQL keeps only the latest row). Returns, per record,
    /// whether its notification was written. Ingest's group commit: each store
    /// writes the batch in as few trips to the database as it can.
    async fn record_notifications(&self, records: &[&NotificationRecord]) -> StoreResult<Vec<bool>>;

    /// The notifications of `envelope` that enqueued its processing, oldest
    /// first. Ignored notifications are recorded but not listed by envelope:
    /// indexing them cost a random page each at ingest, and nothing reads them
    /// that way (ARCHITECTURE.md, "Ignored notifications are not indexed by
    /// envelope"). Nor is a notification of another account than the
    /// envelope's (two replicas racing on a new envelope can both pass the
    /// group commit's check; see ARCHITECTURE.md).
    async fn enqueued_notifications(&self, envelope: EnvelopeId) -> StoreResult<Vec<Notification>>;

    async fn notification(&self, id: NotificationId) -> StoreResult<Option<Notification>>;

    /// How many notifications are recorded, in all.
    async fn count_notifications(&self) -> StoreResult<u64>;
    /// The account of each of `envelopes` that is stored (one read for a batch).
    async fn envelope_accounts(&self, envelopes: &[EnvelopeId]) -> StoreResult<Vec<(EnvelopeId, AccountId)>>;
}

/// Envelopes and what hangs off them: their documents and events.
#[async_trait]
pub trait Envelopes: Backend {
    async fn envelope(&self, envelope: EnvelopeId) -> StoreResult<Option<EnvelopeRecord>>;

    /// One page of envelopes, most recently changed first, with how many match in all.
    async fn list_envelopes(&self, query: &EnvelopeQuery) -> StoreResult<EnvelopePage>;

    /// How many envelopes are in each status (statuses with none are left out).
    async fn count_envelopes(&self) -> StoreResult<Vec<(EnvelopeStatus, u64)>>;

    async fn documents(&self, envelope: EnvelopeId) -> StoreResult<Vec<DocumentRecord>>;

    async fn events_for(&self, envelope: EnvelopeId) -> StoreResult<Vec<EventRecord>>;
}

/// Events on their way to sinks: deliveries, their order, dead letters, disabled sinks.
#[async_trait]
pub trait Deliveries: Backend {
    async fn deliveries_for(&self, event: EventId) -> StoreResult<Vec<DeliveryRecord>>;

    /// One event, as it is delivered.
    async fn event(&self, id: EventId) -> StoreResult<Option<EventRecord>>;

    /// The first earlier event of the same envelope whose delivery to `sink`
    /// is still pending, if any: events reach a sink in the order they were
    /// created. A delivery whose job is dead or gone does not hold others back.
    async fn earlier_pending_delivery(&self, event: EventId, sink: &str) -> StoreResult<Option<EarlierDelivery>>;

    /// Whether any event of `envelope` is (or was) delivered to `sink`.
    async fn envelope_has_sink(&self, envelope: EnvelopeId, sink: &str) -> StoreResult<bool>;

    /// Dead `deliver` jobs matching `filter`, most recent failure first.
    async fn dead_deliveries(&self, filter: &DeliveryFilter, limit: u32) -> StoreResult<Vec<DeadDelivery>>;

    /// Gives the dead deliveries matching `filter` `attempts` more attempts
    /// (their jobs become ready now, their rows pending); returns them.
    async fn replay_deliveries(&self, filter: &DeliveryFilter, attempts: u32) -> StoreResult<Vec<DeadDelivery>>;

    /// Marks a sink disabled; `false` if it already was.
    async fn disable_sink(&self, sink: &str, reason: &str) -> StoreResult<bool>;

    /// Lifts a sink's disabling; `false` if it was not disabled.
    async fn enable_sink(&self, sink: &str) -> StoreResult<bool>;

    async fn disabled_sinks(&self) -> StoreResult<Vec<DisabledSink>>;

    /// Records a delivery attempt on its own.
    async fn record_delivery(&self, update: &DeliveryUpdate) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        tx.record_delivery(update).await?;
        tx.commit().await
    }
}

/// How far each account was listed, and the pass under way.
#[async_trait]
pub trait Reconciliation: Backend {
    async fn reconcile_checkpoint(&self, account: AccountId) -> StoreResult<Option<ReconcileCheckpoint>>;

    /// The pass under way for `account`, if one was interrupted.
    async fn reconcile_pass(&self, account: AccountId) -> StoreResult<Option<ReconcilePass>>;

    /// Records how far the pass under way has got (its pages are recorded).
    async fn save_reconcile_pass(&self, account: AccountId, pass: &ReconcilePass) -> StoreResult<()>;

    /// Moves the checkpoint to `listed_until` (never backwards), adds `found`
    /// to its total and forgets the pass under way: it is complete.
    async fn advance_reconcile_checkpoint(
        &self,
        account: AccountId,
        listed_until: DateTime<Utc>,
        found: u64,
    ) -> StoreResult<()>;
}

/// Agreements IT systems asked for, from their request to their end.
#[async_trait]
pub trait Agreements: Backend {
    async fn agreement(&self, id: AgreementId) -> StoreResult<Option<Agreement>>;

    /// The agreement a client's idempotency key names, with its request's digest.
    async fn agreement_by_key(&self, client: &str, idempotency_key: &str) -> StoreResult<Option<(Agreement, String)>>;

    /// The agreement countersign sent `envelope` for, if it did.
    async fn agreement_for_envelope(&self, envelope: EnvelopeId) -> StoreResult<Option<Agreement>>;

    /// One page of agreements, newest first, with how many match in all.
    async fn list_agreements(&self, query: &AgreementQuery) -> StoreResult<AgreementPage>;

    /// Stores a request with the job that sends it, in one commit; a
    /// request whose client and idempotency key are stored already writes
    /// nothing and answers the stored agreement.
    async fn insert_agreement(&self, new: &NewAgreement, send: &NewJob) -> StoreResult<AgreementInsert> {
        let mut tx = self.begin().await?;
        let created = tx.insert_agreement(new).await?;
        if created {
            tx.enqueue(send).await?;
        }
        tx.commit().await?;
        if created {
            let agreement = self.agreement(new.id).await?;
            return agreement
                .map(AgreementInsert::Created)
                .ok_or_else(|| corrupt("agreements.id", &new.id.to_string()));
        }
        let (agreement, digest) = self
            .agreement_by_key(&new.key.client, &new.key.idempotency_key)
            .await?
            .ok_or_else(|| corrupt("agreements.idempotency_key", &new.key.idempotency_key))?;
        Ok(AgreementInsert::Existing { agreement, digest })
    }
}

/// One write transaction. Everything written through it becomes visible
/// together at [`StoreTx::commit`], or not at all.
#[async_trait]
pub trait StoreTx: Send {
    async fn enqueue(&mut self, job: &NewJob) -> StoreResult<Enqueued>;
    /// Marks the job done if `lease` still holds it; `false` means the lease
    /// was lost and the caller must not commit its other writes.
    async fn complete_job(&mut self, lease: &Lease) -> StoreResult<bool>;
    /// Inserts many notifications in one statement; `true` where a row was
    /// written, `false` for a duplicate or a notification naming an envelope
    /// of another account. (Ingest's group commit writes
    /// through [`Notifications::record_notifications`] instead.)
    async fn insert_notifications(&mut self, batch: &[&NewNotification]) -> StoreResult<Vec<bool>>;
    /// Upserts many envelopes in one statement; each envelope id must appear
    /// at most once. A `received` upsert (a late notification) leaves a
    /// `processed` or `flagged` envelope as it is; a `processed` or `flagged`
    /// one (processing, again) sets the new outcome. An envelope never
    /// changes account.
    async fn upsert_envelopes(&mut self, batch: &[EnvelopeUpsert]) -> StoreResult<()>;
    /// Enqueues many jobs in one statement; duplicates of a unique key are skipped.
    async fn enqueue_all(&mut self, jobs: &[NewJob]) -> StoreResult<()>;

    /// One notification, through the batch statement.
    async fn insert_notification(
        &mut self,
        notification: &NewNotification,
    ) -> StoreResult<Inserted<crate::ids::NotificationId>> {
        let written = self.insert_notifications(&[notification]).await?;
        Ok(if written.first() == Some(&true) { Inserted::Created(notification.id) } else { Inserted::Duplicate })
    }

    /// One envelope, through the batch statement.
    async fn upsert_envelope(&mut self, envelope: &EnvelopeUpsert) -> StoreResult<()> {
        self.upsert_envelopes(std::slice::from_ref(envelope)).await
    }

    async fn upsert_document(&mut self, document: &DocumentRecord) -> StoreResult<()>;
    async fn insert_event(&mut self, event: &EventRecord) -> StoreResult<Inserted<EventId>>;
    async fn insert_delivery(&mut self, event: EventId, sink: &str) -> StoreResult<Inserted<()>>;
    /// Writes an attempt's outcome to the delivery row; `delivered_at` is set
    /// when the state becomes delivered.
    async fn record_delivery(&mut self, update: &DeliveryUpdate) -> StoreResult<()>;
    /// Inserts an agreement; `false` when its client's idempotency key is taken.
    async fn insert_agreement(&mut self, new: &NewAgreement) -> StoreResult<bool>;
    /// Applies `change` (see [`AgreementChange`]); `false` when a status
    /// change did not apply because the agreement is past it (or unknown).
    async fn update_agreement(&mut self, id: AgreementId, change: &AgreementChange) -> StoreResult<bool>;
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// A batch of records split by kind of row, each dependent row paired with
/// the notification it is written for (only if that notification is new).
struct RecordRows<'a> {
    notifications: Vec<&'a NewNotification>,
    envelopes: Vec<(NotificationId, &'a EnvelopeUpsert)>,
    documents: Vec<(NotificationId, &'a DocumentRecord)>,
    jobs: Vec<(NotificationId, &'a NewJob)>,
}

impl<'a> RecordRows<'a> {
    fn of(records: &[&'a NotificationRecord]) -> Self {
        let id = |r: &NotificationRecord| r.notification.id;
        Self {
            notifications: records.iter().map(|r| &r.notification).collect(),
            envelopes: records.iter().filter_map(|r| r.envelope.as_ref().map(|e| (id(r), e))).collect(),
            documents: records.iter().flat_map(|r| r.documents.iter().map(move |d| (id(r), d))).collect(),
            jobs: records.iter().flat_map(|r| r.jobs.iter().map(move |j| (id(r), j))).collect(),
        }
    }
}

/// A claim's rows sorted by their `due_order` column, the order its pick
/// chose them in: UPDATE … RETURNING gives them in storage order.
fn in_due_order<R>(rows: Vec<R>) -> StoreResult<Vec<R>>
where
    R: sqlx::Row,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    let mut keyed =
        rows.into_iter().map(|row| Ok((row.try_get::<i64, _>("due_order")?, row))).collect::<StoreResult<Vec<_>>>()?;
    keyed.sort_by_key(|(order, _)| *order);
    Ok(keyed.into_iter().map(|(_, row)| row).collect())
}

/// Opens the store named by `url` and applies its migrations.
pub async fn open(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url, max_connections).await?))
    } else {
        Err(StoreError::Open { url: redact_url(url), reason: "unknown scheme".into() })
    }
}

/// A URL fit for a log line: any password is replaced, in the authority or
/// as a `password=` parameter; an unparseable URL keeps only its scheme.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("redacted"));
            }
            if parsed.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
                let kept: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k.eq_ignore_ascii_case("password") { "redacted".into() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(kept);
            }
            parsed.to_string()
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://[unparseable, redacted]"),
            None => "[unparseable, redacted]".into(),
        },
    }
}

/// Milliseconds for SQL arithmetic; leases and backoffs never approach the limit.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// An (envelope id, account id) pair as both stores keep them, as text.
fn envelope_account(envelope: &str, account: &str) -> StoreResult<(EnvelopeId, AccountId)> {
    let parsed_envelope = EnvelopeId::parse(envelope).map_err(|_| corrupt("envelope_id", envelope))?;
    let parsed_account = AccountId::parse(account).map_err(|_| corrupt("account_id", account))?;
    Ok((parsed_envelope, parsed_account))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

/// Keeps only what fits a column and a log line from an error message.
fn clip(error: &str) -> String {
    const MAX: usize = 4000;
    if error.len() <= MAX {
        return error.to_string();
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}
