//! The store for more than one replica. Claims use `FOR UPDATE SKIP LOCKED`
//! so replicas never take the same job, and enqueues `NOTIFY` a channel that
//! every replica `LISTEN`s on, so idle workers wake without polling. Times
//! come from the database clock (`now()`), which all replicas share.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::watch;

use super::*;
use crate::ids::{AccountId, AgreementId, EnvelopeId, EventId, JobId, NotificationId};
use crate::jobs::JobKind;

use super::migrations::POSTGRES_MIGRATOR as MIGRATOR;

/// The channel enqueues notify; the payload is the job kind.
const JOB_CHANNEL: &str = "countersign_jobs";

#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    signal: Arc<watch::Sender<u64>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            // The job listener keeps one connection for good; queries need at least one more.
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| StoreError::Open { url: redact_url(url), reason: e.to_string() })?;
        MIGRATOR.run(&pool).await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(JOB_CHANNEL).await?;
        let (signal, _) = watch::channel(0);
        let signal = Arc::new(signal);
        let listener = tokio::spawn(listen(listener, signal.clone()));
        Ok(Self { pool, signal, listener })
    }

    /// A lease's bookkeeping (claim, defer, release, failure), committed
    /// without waiting for its WAL flush; the next synchronous commit flushes
    /// it. Losing one to a database crash only hands a job out again, which
    /// at-least-once processing already allows; notifications and the work
    /// a job produces keep synchronous commits. One round trip, as `BEGIN`.
    async fn lease_tx(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?)
    }
}

/// Turns notifications on the job channel into wake-ups. `PgListener`
/// reconnects by itself; notifications sent while it was away are lost, so
/// after any error the workers are woken to look for themselves.
async fn listen(mut listener: PgListener, signal: Arc<watch::Sender<u64>>) {
    loop {
        match listener.recv().await {
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "job notification listener lost its connection; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        signal.send_modify(|v| *v += 1);
    }
}

fn u32_column(row: &PgRow, column: &str) -> StoreResult<u32> {
    let value: i32 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| corrupt(column, &value.to_string()))
}

fn notification_from_row(row: &PgRow) -> StoreResult<Notification> {
    let account: String = row.try_get("account_id")?;
    let origin: String = row.try_get("origin")?;
    let disposition: String = row.try_get("disposition")?;
    Ok(Notification {
        new: NewNotification {
            id: NotificationId(row.try_get("id")?),
            account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id", &account))?,
            envelope_id: envelope_id(row, "envelope_id")?,
            event: row.try_get("event")?,
            recipient_id: row.try_get("recipient_id")?,
            generated_at: row.try_get("generated_at")?,
            format: row.try_get("format")?,
            origin: NotificationOrigin::parse(&origin).ok_or_else(|| corrupt("origin", &origin))?,
            body_sha256: row.try_get("body_sha256")?,
            disposition: Disposition::parse(&disposition).ok_or_else(|| corrupt("disposition", &disposition))?,
            summary: row.try_get("summary")?,
        },
        received_at: row.try_get("received_at")?,
    })
}

fn job_from_row(row: &PgRow) -> StoreResult<Job> {
    let state: String = row.try_get("state")?;
    Ok(Job {
        id: JobId(row.try_get("id")?),
        kind: row.try_get("kind")?,
        unique_key: row.try_get("unique_key")?,
        payload: row.try_get("payload")?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("jobs.state", &state))?,
        attempts: u32_column(row, "attempts")?,
        max_attempts: u32_column(row, "max_attempts")?,
        run_at: row.try_get("run_at")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn envelope_from_row(row: &PgRow) -> StoreResult<EnvelopeRecord> {
    let account: String = row.try_get("account_id")?;
    let status: String = row.try_get("status")?;
    Ok(EnvelopeRecord {
        envelope_id: envelope_id(row, "envelope_id")?,
        account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id", &account))?,
        status: EnvelopeStatus::parse(&status).ok_or_else(|| corrupt("envelopes.status", &status))?,
        subject: row.try_get("subject")?,
        completed_at: row.try_get("completed_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn optional_envelope_id(row: &PgRow, column: &str) -> StoreResult<Option<EnvelopeId>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| EnvelopeId::parse(&text).map_err(|_| corrupt(column, &text))).transpose()
}

fn envelope_id(row: &PgRow, column: &str) -> StoreResult<EnvelopeId> {
    let text: String = row.try_get(column)?;
    EnvelopeId::parse(&text).map_err(|_| corrupt(column, &text))
}

fn event_from_row(row: &PgRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: EventId(row.try_get("id")?),
        envelope_id: optional_envelope_id(row, "envelope_id")?,
        agreement_id: row.try_get::<Option<uuid::Uuid>, _>("agreement_id")?.map(AgreementId),
        rule: row.try_get("rule")?,
        event_type: row.try_get("event_type")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
        ordinal: u32_column(row, "ordinal")?,
    })
}

fn dead_delivery_from_row(row: &PgRow) -> StoreResult<DeadDelivery> {
    Ok(DeadDelivery {
        event_id: EventId(row.try_get("event_id")?),
        envelope_id: optional_envelope_id(row, "envelope_id")?,
        event_type: row.try_get("event_type")?,
        sink: row.try_get("sink")?,
        attempts: u32_column(row, "attempts")?,
        last_error: row.try_get("last_error")?,
        failed_at: row.try_get("failed_at")?,
        job_id: JobId(row.try_get("job_id")?),
    })
}

/// Dead `deliver` jobs with their delivery, filtered by $1 event, $2 sink, $3 since (each may be NULL).
const DEAD_DELIVERIES: &str = "SELECT d.event_id, e.envelope_id, e.event_type, d.sink, j.attempts,
         COALESCE(j.last_error, d.last_error) AS last_error, j.finished_at AS failed_at, j.id AS job_id
     FROM jobs j
     JOIN deliveries d ON j.unique_key = d.event_id::text || '/' || d.sink
     JOIN events e ON e.id = d.event_id
     WHERE j.kind = $5 AND j.state = 'dead'
       AND ($1::uuid IS NULL OR d.event_id = $1) AND ($2::text IS NULL OR d.sink = $2)
       AND ($3::timestamptz IS NULL OR j.finished_at >= $3)
     ORDER BY j.finished_at DESC, j.id
     LIMIT $4";

fn kinds_vec(kinds: &[&str]) -> Vec<String> {
    kinds.iter().map(|k| (*k).to_string()).collect()
}

/// The INSERT of a batch of notifications bound by [`bind_notifications`]
/// as $1–$12, returning the ids of those not recorded before. A macro, so
/// that the group commit's statement can `concat!` it.
macro_rules! insert_notifications {
    () => {
        "INSERT INTO notifications (id, account_id, envelope_id, event, recipient_id, generated_at, format, origin,
             dedupe_key, body_sha256, disposition, summary, received_at)
         SELECT id, account_id, envelope_id, event, recipient_id, generated_at, format, origin,
             dedupe_key, body_sha256, disposition, summary, now()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
             $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[])
             AS t(id, account_id, envelope_id, event, recipient_id, generated_at, format, origin,
                  dedupe_key, body_sha256, disposition, summary)
         WHERE NOT EXISTS (SELECT 1 FROM envelopes
             WHERE envelopes.envelope_id = t.envelope_id AND envelopes.account_id <> t.account_id)
         ON CONFLICT DO NOTHING
         RETURNING id, account_id"
    };
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds `batch` as the twelve column arrays of [`insert_notifications`].
fn bind_notifications<'q>(query: PgQuery<'q>, batch: &[&NewNotification]) -> PgQuery<'q> {
    let text = |f: &dyn Fn(&NewNotification) -> String| batch.iter().map(|n| f(n)).collect::<Vec<String>>();
    query
        .bind(batch.iter().map(|n| n.id.0).collect::<Vec<_>>())
        .bind(text(&|n| n.account_id.to_string()))
        .bind(text(&|n| n.envelope_id.to_string()))
        .bind(text(&|n| n.event.clone()))
        .bind(batch.iter().map(|n| n.recipient_id.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.generated_at).collect::<Vec<_>>())
        .bind(text(&|n| n.format.clone()))
        .bind(text(&|n| n.origin.as_str().to_string()))
        .bind(text(&|n| n.dedupe_key()))
        .bind(text(&|n| n.body_sha256.clone()))
        .bind(text(&|n| n.disposition.as_str().to_string()))
        .bind(batch.iter().map(|n| n.summary.clone()).collect::<Vec<_>>())
}

fn i32_of(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[async_trait]
impl Backend for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        Ok(Box::new(PgTx { tx: self.pool.begin().await?, signal: self.signal.clone(), enqueued: false }))
    }

    async fn check_ready(&self) -> StoreResult<()> {
        let expected = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await?;
        let found = found.unwrap_or(0);
        if found < expected {
            return Err(StoreError::NotMigrated { found, expected });
        }
        Ok(())
    }
}

async fn close_attempts(
    tx: &mut Transaction<'static, Postgres>,
    jobs: &[uuid::Uuid],
    outcome: AttemptOutcome,
    error: Option<&str>,
) -> StoreResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE job_attempts SET outcome = $1, error = $2, finished_at = now()
         WHERE job_id = ANY($3) AND finished_at IS NULL",
    )
    .bind(outcome.as_str())
    .bind(error)
    .bind(jobs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Wakes every replica's workers once this transaction commits.
async fn notify(tx: &mut Transaction<'static, Postgres>, why: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(JOB_CHANNEL).bind(why).execute(&mut **tx).await?;
    Ok(())
}

struct PgTx {
    tx: Transaction<'static, Postgres>,
    signal: Arc<watch::Sender<u64>>,
    enqueued: bool,
}

// After `insert_notifications!`, which they use: a macro is visible only
// below its definition.
mod agreements;
mod delivery;
mod envelopes;
mod notifications;
mod queue;
mod reconcile;
mod tx;
