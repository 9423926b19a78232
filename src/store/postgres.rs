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
use crate::ids::{AccountId, EnvelopeId, EventId, JobId, NotificationId};
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

fn envelope_id(row: &PgRow, column: &str) -> StoreResult<EnvelopeId> {
    let text: String = row.try_get(column)?;
    EnvelopeId::parse(&text).map_err(|_| corrupt(column, &text))
}

fn event_from_row(row: &PgRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: EventId(row.try_get("id")?),
        envelope_id: envelope_id(row, "envelope_id")?,
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
        envelope_id: envelope_id(row, "envelope_id")?,
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
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        Ok(Box::new(PgTx { tx: self.pool.begin().await?, signal: self.signal.clone(), enqueued: false }))
    }

    /// The whole batch in one statement (one round trip, committed on its
    /// own), instead of BEGIN, three inserts and COMMIT. Data-modifying CTEs
    /// see each other only through RETURNING, so each row that depends on a
    /// notification is written only if that notification's id came back.
    /// PostgreSQL refuses an upsert that touches a row twice, so an envelope
    /// or document named twice keeps only its latest (highest ordinal) row.
    async fn record_notifications(&self, records: &[&NotificationRecord]) -> StoreResult<Vec<bool>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let RecordRows { notifications, envelopes, documents, jobs } = RecordRows::of(records);
        fn of<T>(rows: &[(NotificationId, T)]) -> Vec<uuid::Uuid> {
            rows.iter().map(|(n, _)| n.0).collect()
        }
        let rows = bind_notifications(
            sqlx::query(concat!(
                "WITH n AS (",
                insert_notifications!(),
                "), e AS (
                 INSERT INTO envelopes (envelope_id, account_id, status, subject, completed_at, created_at, updated_at)
                 SELECT DISTINCT ON (envelope_id) envelope_id, account_id, status, subject, completed_at, now(), now()
                 FROM UNNEST($13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[])
                     WITH ORDINALITY AS t(notification, envelope_id, account_id, status, subject, completed_at, ord)
                 WHERE notification IN (SELECT id FROM n)
                 ORDER BY envelope_id, ord DESC
                 ON CONFLICT (envelope_id) DO UPDATE SET
                     status = CASE WHEN envelopes.status IN ('processed', 'flagged') THEN envelopes.status
                         ELSE excluded.status END,
                     subject = COALESCE(excluded.subject, envelopes.subject),
                     completed_at = COALESCE(excluded.completed_at, envelopes.completed_at),
                     updated_at = excluded.updated_at
                 WHERE envelopes.account_id = excluded.account_id
             ), d AS (
                 INSERT INTO documents (account_id, envelope_id, document_id, name, file_name, content_type,
                     size_bytes, sha256, storage_key, stored_at)
                 SELECT DISTINCT ON (t.envelope_id, t.document_id) n.account_id, t.envelope_id, t.document_id,
                     t.name, t.file_name, t.content_type, t.size_bytes, t.sha256, t.storage_key, t.stored_at
                 FROM UNNEST($19::uuid[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
                     $25::int8[], $26::text[], $27::text[], $28::timestamptz[])
                     WITH ORDINALITY AS t(notification, envelope_id, document_id, name, file_name, content_type,
                          size_bytes, sha256, storage_key, stored_at, ord)
                 -- A document takes its notification's account.
                 JOIN n ON n.id = t.notification
                 ORDER BY t.envelope_id, t.document_id, t.ord DESC
                 ON CONFLICT (account_id, envelope_id, document_id) DO UPDATE SET
                     name = excluded.name, file_name = excluded.file_name, content_type = excluded.content_type,
                     size_bytes = excluded.size_bytes, sha256 = excluded.sha256, storage_key = excluded.storage_key,
                     stored_at = excluded.stored_at
             ), j AS (
                 INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at,
                     created_at, updated_at)
                 SELECT id, kind, unique_key, payload, 'ready', 0, max_attempts, COALESCE(run_at, now()), now(), now()
                 FROM UNNEST($29::uuid[], $30::uuid[], $31::text[], $32::text[], $33::jsonb[], $34::int4[],
                     $35::timestamptz[])
                     AS t(notification, id, kind, unique_key, payload, max_attempts, run_at)
                 WHERE notification IN (SELECT id FROM n)
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             ), woken AS (
                 SELECT pg_notify($36, 'batch') FROM (SELECT 1 FROM j LIMIT 1) AS any_job
             )
             -- The one NULL row, if any, says a job was enqueued and replicas were told.
             SELECT id FROM n UNION ALL SELECT NULL FROM woken"
            )),
            &notifications,
        )
        .bind(of(&envelopes))
        .bind(envelopes.iter().map(|(_, e)| e.envelope_id.to_string()).collect::<Vec<_>>())
        .bind(envelopes.iter().map(|(_, e)| e.account_id.to_string()).collect::<Vec<_>>())
        .bind(envelopes.iter().map(|(_, e)| e.status.as_str().to_string()).collect::<Vec<_>>())
        .bind(envelopes.iter().map(|(_, e)| e.subject.clone()).collect::<Vec<_>>())
        .bind(envelopes.iter().map(|(_, e)| e.completed_at).collect::<Vec<_>>())
        .bind(of(&documents))
        .bind(documents.iter().map(|(_, d)| d.envelope_id.to_string()).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| d.document_id.clone()).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| d.name.clone()).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| d.file_name.clone()).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| d.content_type.clone()).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| i64::try_from(d.size_bytes).unwrap_or(i64::MAX)).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| d.sha256.clone()).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| d.storage_key.clone()).collect::<Vec<_>>())
        .bind(documents.iter().map(|(_, d)| d.stored_at).collect::<Vec<_>>())
        .bind(of(&jobs))
        .bind(jobs.iter().map(|_| JobId::new().0).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(_, j)| j.kind.clone()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(_, j)| j.unique_key.clone()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(_, j)| j.payload.clone()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(_, j)| i32_of(j.max_attempts.max(1))).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(_, j)| j.run_at).collect::<Vec<_>>())
        .bind(JOB_CHANNEL)
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<Option<uuid::Uuid>> = rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
        if ids.contains(&None) {
            // Local workers need not wait for the notification's round trip.
            self.signal.send_modify(|v| *v += 1);
        }
        let written: std::collections::HashSet<uuid::Uuid> = ids.into_iter().flatten().collect();
        Ok(notifications.iter().map(|n| written.contains(&n.id.0)).collect())
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

    fn job_signal(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    async fn claim_jobs(
        &self,
        kinds: &[&str],
        worker: &str,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let kinds = kinds_vec(kinds);
        let mut tx = self.lease_tx().await?;
        // Expired jobs with no attempts left become dead letters rather than
        // crash-looping; SKIP LOCKED keeps replicas out of each other's way.
        let dead: Vec<uuid::Uuid> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'dead',
                 last_error = 'lease expired during attempt ' || attempts || ' (the worker stopped or stalled)',
                 lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now()
             WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at <= now()
                          AND attempts >= max_attempts AND kind = ANY($1) FOR UPDATE SKIP LOCKED)
             RETURNING id",
        )
        .bind(&kinds)
        .fetch_all(&mut *tx)
        .await?;
        close_attempts(&mut tx, &dead, AttemptOutcome::LeaseExpired, None).await?;
        let rows = sqlx::query(
            // One walk per state along its partial index, each stopping at
            // the first due jobs. As a single OR, PostgreSQL gathered every
            // due job and sorted them: 10 ms per claim behind a backlog of
            // 20,000 ready jobs, 0.2 ms this way. A walk may lock a job the
            // final LIMIT leaves out; it is free again when this commits.
            "WITH ready AS (
                 SELECT id, state, run_at FROM jobs
                 WHERE state = 'ready' AND run_at <= now() AND kind = ANY($1)
                 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
             parked AS (
                 SELECT id, state, run_at FROM jobs
                 WHERE state = 'parked' AND run_at <= now() AND kind = ANY($1)
                 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
             expired AS (
                 SELECT id, state, run_at FROM jobs
                 WHERE state = 'running' AND lease_expires_at <= now() AND kind = ANY($1)
                 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED),
             picked AS (
                 SELECT id, state AS previous_state, row_number() OVER (ORDER BY run_at, id) AS due_order FROM
                     (SELECT * FROM ready UNION ALL SELECT * FROM parked UNION ALL SELECT * FROM expired) due
                 ORDER BY run_at, id LIMIT $2)
             UPDATE jobs SET state = 'running', attempts = jobs.attempts + 1, lease_token = gen_random_uuid(),
                 lease_owner = $3, lease_expires_at = now() + $4 * interval '1 millisecond', updated_at = now()
             FROM picked WHERE jobs.id = picked.id
             RETURNING jobs.*, picked.previous_state, picked.due_order",
        )
        .bind(&kinds)
        .bind(i64::from(limit))
        .bind(worker)
        .bind(millis(lease) as f64)
        .fetch_all(&mut *tx)
        .await?;
        let rows = in_due_order(rows)?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut expired = Vec::new();
        for row in &rows {
            let job = job_from_row(row)?;
            if row.try_get::<String, _>("previous_state")? == "running" {
                expired.push(job.id.0);
            }
            let lease = Lease { job: job.id, token: row.try_get("lease_token")? };
            claimed.push(ClaimedJob { job, lease });
        }
        close_attempts(&mut tx, &expired, AttemptOutcome::LeaseExpired, None).await?;
        for ClaimedJob { job, .. } in &claimed {
            sqlx::query("INSERT INTO job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, now())")
                .bind(job.id.0)
                .bind(i32_of(job.attempts))
                .bind(worker)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() + $1 * interval '1 millisecond', updated_at = now()
             WHERE id = $2 AND lease_token = $3 AND state = 'running'",
        )
        .bind(millis(extend) as f64)
        .bind(lease.job.0)
        .bind(lease.token)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn fail_job(&self, lease: &Lease, error: &str, retry: Retry) -> StoreResult<FailOutcome> {
        let (retry_at, never) = match retry {
            Retry::At(at) => (Some(at), false),
            Retry::Never => (None, true),
        };
        let error = clip(error);
        let mut tx = self.lease_tx().await?;
        let row = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN $1 OR attempts >= max_attempts THEN 'dead' ELSE 'ready' END,
                 run_at = CASE WHEN $1 OR attempts >= max_attempts THEN run_at ELSE COALESCE($2, now()) END,
                 finished_at = CASE WHEN $1 OR attempts >= max_attempts THEN now() ELSE NULL END,
                 last_error = $3, lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE id = $4 AND lease_token = $5 AND state = 'running'
             RETURNING state, run_at",
        )
        .bind(never)
        .bind(retry_at)
        .bind(&error)
        .bind(lease.job.0)
        .bind(lease.token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(FailOutcome::LeaseLost) };
        close_attempts(&mut tx, &[lease.job.0], AttemptOutcome::Failed, Some(&error)).await?;
        tx.commit().await?;
        let state: String = row.try_get("state")?;
        Ok(if state == "dead" { FailOutcome::Dead } else { FailOutcome::WillRetry { at: row.try_get("run_at")? } })
    }

    async fn release_job(&self, lease: &Lease) -> StoreResult<bool> {
        let mut tx = self.lease_tx().await?;
        let result = sqlx::query(
            "UPDATE jobs SET state = 'ready', attempts = attempts - 1, run_at = now(), updated_at = now(),
                 lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.job.0)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        close_attempts(&mut tx, &[lease.job.0], AttemptOutcome::Released, None).await?;
        notify(&mut tx, "released").await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn defer_jobs(&self, deferrals: &[Deferral]) -> StoreResult<Vec<bool>> {
        let mut tx = self.lease_tx().await?;
        let mut held = Vec::with_capacity(deferrals.len());
        for Deferral { lease, reason, until, parked } in deferrals {
            let reason = clip(reason);
            let result = sqlx::query(
                "UPDATE jobs SET state = $1, attempts = attempts - 1, run_at = $2, last_error = $3, updated_at = now(),
                     lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = $4 AND lease_token = $5 AND state = 'running'",
            )
            .bind(if *parked { JobState::Parked } else { JobState::Ready }.as_str())
            .bind(until)
            .bind(&reason)
            .bind(lease.job.0)
            .bind(lease.token)
            .execute(&mut *tx)
            .await?;
            let still_held = result.rows_affected() == 1;
            if still_held {
                close_attempts(&mut tx, &[lease.job.0], AttemptOutcome::Deferred, Some(&reason)).await?;
            }
            held.push(still_held);
        }
        if held.contains(&true) {
            notify(&mut tx, "deferred").await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn rearm_job(&self, job: &NewJob) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'ready', 0, $5, COALESCE($6, now()), now(), now())
             ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL DO UPDATE SET
                 state = 'ready', attempts = 0, max_attempts = excluded.max_attempts, payload = excluded.payload,
                 run_at = excluded.run_at, last_error = NULL, finished_at = NULL, updated_at = now()
             WHERE jobs.state IN ('done', 'dead')",
        )
        .bind(JobId::new().0)
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(&job.payload)
        .bind(i32_of(job.max_attempts.max(1)))
        .bind(job.run_at)
        .execute(&mut *tx)
        .await?;
        let armed = result.rows_affected() > 0;
        if armed {
            sqlx::query(
                "DELETE FROM job_attempts WHERE finished_at IS NOT NULL
                 AND job_id = (SELECT id FROM jobs WHERE kind = $1 AND unique_key = $2)",
            )
            .bind(&job.kind)
            .bind(&job.unique_key)
            .execute(&mut *tx)
            .await?;
            notify(&mut tx, "rearmed").await?;
        }
        tx.commit().await?;
        Ok(armed)
    }

    async fn wake_parked(&self) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let result =
            sqlx::query("UPDATE jobs SET run_at = now(), updated_at = now() WHERE state = 'parked' AND run_at > now()")
                .execute(&mut *tx)
                .await?;
        if result.rows_affected() > 0 {
            notify(&mut tx, "woken").await?;
        }
        tx.commit().await?;
        Ok(result.rows_affected())
    }

    async fn next_due(&self, kinds: &[&str]) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT LEAST(
                 (SELECT MIN(run_at) FROM jobs WHERE state = 'ready' AND kind = ANY($1)),
                 (SELECT MIN(run_at) FROM jobs WHERE state = 'parked' AND kind = ANY($1)),
                 (SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'running' AND kind = ANY($1)))",
        )
        .bind(kinds_vec(kinds))
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    async fn reconcile_checkpoint(&self, account: AccountId) -> StoreResult<Option<ReconcileCheckpoint>> {
        let row = sqlx::query("SELECT * FROM reconcile_checkpoints WHERE account_id = $1")
            .bind(account.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let found: i64 = row.try_get("found_total")?;
            Ok(ReconcileCheckpoint {
                account_id: account,
                listed_until: row.try_get("listed_until")?,
                found_total: u64::try_from(found).unwrap_or(0),
                updated_at: row.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    async fn reconcile_pass(&self, account: AccountId) -> StoreResult<Option<ReconcilePass>> {
        let row = sqlx::query("SELECT * FROM reconcile_passes WHERE account_id = $1")
            .bind(account.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let position: i64 = row.try_get("position")?;
            let found: i64 = row.try_get("found")?;
            Ok(ReconcilePass {
                from: row.try_get("listed_from")?,
                until: row.try_get("listed_until")?,
                position: u64::try_from(position).unwrap_or(0),
                found: u64::try_from(found).unwrap_or(0),
            })
        })
        .transpose()
    }

    async fn save_reconcile_pass(&self, account: AccountId, pass: &ReconcilePass) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO reconcile_passes (account_id, listed_from, listed_until, position, found, updated_at)
             VALUES ($1, $2, $3, $4, $5, now())
             ON CONFLICT (account_id) DO UPDATE SET listed_from = excluded.listed_from,
                 listed_until = excluded.listed_until, position = excluded.position, found = excluded.found,
                 updated_at = now()",
        )
        .bind(account.to_string())
        .bind(pass.from)
        .bind(pass.until)
        .bind(i64::try_from(pass.position).unwrap_or(i64::MAX))
        .bind(i64::try_from(pass.found).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn advance_reconcile_checkpoint(
        &self,
        account: AccountId,
        listed_until: DateTime<Utc>,
        found: u64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO reconcile_checkpoints (account_id, listed_until, found_total, updated_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (account_id) DO UPDATE SET
                 listed_until = GREATEST(reconcile_checkpoints.listed_until, excluded.listed_until),
                 found_total = reconcile_checkpoints.found_total + excluded.found_total,
                 updated_at = now()",
        )
        .bind(account.to_string())
        .bind(listed_until)
        .bind(i64::try_from(found).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM reconcile_passes WHERE account_id = $1")
            .bind(account.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn job_by_key(&self, kind: &str, unique_key: &str) -> StoreResult<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE kind = $1 AND unique_key = $2")
            .bind(kind)
            .bind(unique_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id.0).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn job_attempts(&self, id: JobId) -> StoreResult<Vec<JobAttempt>> {
        let rows = sqlx::query("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY id")
            .bind(id.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: Option<String> = row.try_get("outcome")?;
                Ok(JobAttempt {
                    attempt: u32_column(row, "attempt")?,
                    worker: row.try_get("worker")?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    outcome: outcome
                        .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| corrupt("job_attempts.outcome", &o)))
                        .transpose()?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }

    async fn dead_jobs(&self, limit: u32) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE state = 'dead' ORDER BY finished_at DESC, id LIMIT $1")
            .bind(i64::from(limit))
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn replay_job(&self, id: JobId, attempts: u32) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE jobs SET state = 'ready', max_attempts = attempts + $1, run_at = now(), finished_at = NULL,
                 updated_at = now()
             WHERE id = $2 AND state = 'dead'",
        )
        .bind(i32_of(attempts))
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        let replayed = result.rows_affected() == 1;
        if replayed {
            notify(&mut tx, "replayed").await?;
        }
        tx.commit().await?;
        Ok(replayed)
    }

    async fn prune_jobs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        // job_attempts go with their job (ON DELETE CASCADE).
        let result = sqlx::query("DELETE FROM jobs WHERE state = 'done' AND finished_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn queue_stats(&self) -> StoreResult<Vec<QueueStat>> {
        let rows =
            sqlx::query("SELECT kind, state, COUNT(*) AS n, MIN(run_at) AS oldest FROM jobs GROUP BY kind, state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(QueueStat {
                    kind: row.try_get("kind")?,
                    state: JobState::parse(&state).ok_or_else(|| corrupt("jobs.state", &state))?,
                    count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                    oldest: row.try_get("oldest")?,
                })
            })
            .collect()
    }

    async fn enqueued_notifications(&self, envelope: EnvelopeId) -> StoreResult<Vec<Notification>> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE envelope_id = $1 AND disposition = 'enqueued' ORDER BY received_at, id",
        )
        .bind(envelope.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn notification(&self, id: NotificationId) -> StoreResult<Option<Notification>> {
        let row =
            sqlx::query("SELECT * FROM notifications WHERE id = $1").bind(id.0).fetch_optional(&self.pool).await?;
        row.as_ref().map(notification_from_row).transpose()
    }

    async fn count_notifications(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications").fetch_one(&self.pool).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn envelope(&self, envelope: EnvelopeId) -> StoreResult<Option<EnvelopeRecord>> {
        let row = sqlx::query("SELECT * FROM envelopes WHERE envelope_id = $1")
            .bind(envelope.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(envelope_from_row).transpose()
    }

    async fn list_envelopes(&self, query: &EnvelopeQuery) -> StoreResult<EnvelopePage> {
        let status = query.status.map(EnvelopeStatus::as_str);
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE $1 IS NULL OR status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT * FROM envelopes WHERE $1 IS NULL OR status = $1
             ORDER BY updated_at DESC, envelope_id LIMIT $2 OFFSET $3",
        )
        .bind(status)
        .bind(i64::from(query.limit))
        .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let envelopes = rows.iter().map(envelope_from_row).collect::<StoreResult<_>>()?;
        Ok(EnvelopePage { total: u64::try_from(total).unwrap_or(0), envelopes })
    }

    async fn count_envelopes(&self) -> StoreResult<Vec<(EnvelopeStatus, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM envelopes GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(status, count)| {
                let parsed = EnvelopeStatus::parse(&status).ok_or_else(|| corrupt("envelopes.status", &status))?;
                Ok((parsed, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }

    async fn documents(&self, envelope: EnvelopeId) -> StoreResult<Vec<DocumentRecord>> {
        let rows = sqlx::query("SELECT * FROM documents WHERE envelope_id = $1 ORDER BY document_id")
            .bind(envelope.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let account: String = row.try_get("account_id")?;
                Ok(DocumentRecord {
                    account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id", &account))?,
                    envelope_id: envelope_id(row, "envelope_id")?,
                    document_id: row.try_get("document_id")?,
                    name: row.try_get("name")?,
                    file_name: row.try_get("file_name")?,
                    content_type: row.try_get("content_type")?,
                    size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
                    sha256: row.try_get("sha256")?,
                    storage_key: row.try_get("storage_key")?,
                    stored_at: row.try_get("stored_at")?,
                })
            })
            .collect()
    }

    async fn events_for(&self, envelope: EnvelopeId) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT * FROM events WHERE envelope_id = $1 ORDER BY created_at, ordinal, id")
            .bind(envelope.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn deliveries_for(&self, event: EventId) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query("SELECT * FROM deliveries WHERE event_id = $1 ORDER BY sink")
            .bind(event.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(DeliveryRecord {
                    event_id: EventId(row.try_get("event_id")?),
                    sink: row.try_get("sink")?,
                    state: DeliveryState::parse(&state).ok_or_else(|| corrupt("deliveries.state", &state))?,
                    attempts: u32_column(row, "attempts")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    delivered_at: row.try_get("delivered_at")?,
                })
            })
            .collect()
    }

    async fn event(&self, id: EventId) -> StoreResult<Option<EventRecord>> {
        let row = sqlx::query("SELECT * FROM events WHERE id = $1").bind(id.0).fetch_optional(&self.pool).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn earlier_pending_delivery(&self, event: EventId, sink: &str) -> StoreResult<Option<EarlierDelivery>> {
        let row: Option<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT e.id, j.state, j.run_at
             FROM events me
             JOIN events e ON e.envelope_id = me.envelope_id AND e.id <> me.id
                 AND (e.created_at < me.created_at OR (e.created_at = me.created_at AND e.ordinal < me.ordinal))
             JOIN deliveries d ON d.event_id = e.id AND d.sink = $2 AND d.state = 'pending'
             JOIN jobs j ON j.kind = $3 AND j.unique_key = e.id::text || '/' || $2 AND j.state <> 'dead'
             WHERE me.id = $1
             ORDER BY e.created_at, e.ordinal
             LIMIT 1",
        )
        .bind(event.0)
        .bind(sink)
        .bind(JobKind::Deliver.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, state, run_at)| EarlierDelivery {
            event_id: EventId(id),
            next_attempt_at: (state != "running").then_some(run_at),
        }))
    }

    async fn envelope_has_sink(&self, envelope: EnvelopeId, sink: &str) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE e.envelope_id = $1 AND d.sink = $2 LIMIT 1",
        )
        .bind(envelope.to_string())
        .bind(sink)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn dead_deliveries(&self, filter: &DeliveryFilter, limit: u32) -> StoreResult<Vec<DeadDelivery>> {
        let rows = sqlx::query(DEAD_DELIVERIES)
            .bind(filter.event.map(|e| e.0))
            .bind(filter.sink.as_deref())
            .bind(filter.since)
            .bind(i64::from(limit))
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dead_delivery_from_row).collect()
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, attempts: u32) -> StoreResult<Vec<DeadDelivery>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!("{DEAD_DELIVERIES} FOR UPDATE OF j"))
            .bind(filter.event.map(|e| e.0))
            .bind(filter.sink.as_deref())
            .bind(filter.since)
            .bind(i64::MAX)
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let dead: Vec<DeadDelivery> = rows.iter().map(dead_delivery_from_row).collect::<StoreResult<_>>()?;
        if dead.is_empty() {
            return Ok(dead);
        }
        sqlx::query(
            "UPDATE jobs SET state = 'ready', max_attempts = attempts + $1, run_at = now(), finished_at = NULL,
                 updated_at = now()
             WHERE id = ANY($2) AND state = 'dead'",
        )
        .bind(i32_of(attempts))
        .bind(dead.iter().map(|d| d.job_id.0).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE deliveries d SET state = 'pending', updated_at = now()
             FROM UNNEST($1::uuid[], $2::text[]) AS t(event_id, sink)
             WHERE d.event_id = t.event_id AND d.sink = t.sink",
        )
        .bind(dead.iter().map(|d| d.event_id.0).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.sink.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, "replayed").await?;
        tx.commit().await?;
        self.signal.send_modify(|v| *v += 1);
        Ok(dead)
    }

    async fn disable_sink(&self, sink: &str, reason: &str) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO sink_status (sink, state, reason, changed_at) VALUES ($1, 'disabled', $2, now())
             ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .bind(clip(reason))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn enable_sink(&self, sink: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM sink_status WHERE sink = $1").bind(sink).execute(&self.pool).await?;
        Ok(result.rows_affected() == 1)
    }

    async fn disabled_sinks(&self) -> StoreResult<Vec<DisabledSink>> {
        let rows: Vec<(String, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT sink, reason, changed_at FROM sink_status WHERE state = 'disabled' ORDER BY sink")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(sink, reason, disabled_at)| DisabledSink { sink, reason, disabled_at }).collect())
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

#[async_trait]
impl StoreTx for PgTx {
    async fn enqueue(&mut self, job: &NewJob) -> StoreResult<Enqueued> {
        let id = JobId::new();
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'ready', 0, $5, COALESCE($6, now()), now(), now())
             ON CONFLICT DO NOTHING",
        )
        .bind(id.0)
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(&job.payload)
        .bind(i32_of(job.max_attempts.max(1)))
        .bind(job.run_at)
        .execute(&mut *self.tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(Enqueued::Duplicate);
        }
        if !self.enqueued {
            notify(&mut self.tx, &job.kind).await?;
            self.enqueued = true;
        }
        Ok(Enqueued::Created(id))
    }

    async fn complete_job(&mut self, lease: &Lease) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = now(), updated_at = now(),
                 lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.job.0)
        .bind(lease.token)
        .execute(&mut *self.tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        close_attempts(&mut self.tx, &[lease.job.0], AttemptOutcome::Succeeded, None).await?;
        Ok(true)
    }

    // The batch statements take one array per column (UNNEST), so their SQL
    // text is the same whatever the batch size: each connection prepares it
    // once. A VALUES list would be a new statement, prepared anew, for every size.

    async fn insert_notifications(&mut self, batch: &[&NewNotification]) -> StoreResult<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let rows = bind_notifications(sqlx::query(insert_notifications!()), batch).fetch_all(&mut *self.tx).await?;
        let written: std::collections::HashSet<uuid::Uuid> =
            rows.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>()?;
        Ok(batch.iter().map(|n| written.contains(&n.id.0)).collect())
    }

    async fn upsert_envelopes(&mut self, batch: &[EnvelopeUpsert]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO envelopes (envelope_id, account_id, status, subject, completed_at, created_at, updated_at)
             SELECT envelope_id, account_id, status, subject, completed_at, now(), now()
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 AS t(envelope_id, account_id, status, subject, completed_at)
             ON CONFLICT (envelope_id) DO UPDATE SET
                 status = CASE WHEN envelopes.status IN ('processed', 'flagged') THEN envelopes.status ELSE excluded.status END,
                 subject = COALESCE(excluded.subject, envelopes.subject),
                 completed_at = COALESCE(excluded.completed_at, envelopes.completed_at),
                 updated_at = excluded.updated_at
             WHERE envelopes.account_id = excluded.account_id",
        )
        .bind(batch.iter().map(|e| e.envelope_id.to_string()).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.account_id.to_string()).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.status.as_str().to_string()).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.subject.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.completed_at).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn enqueue_all(&mut self, jobs: &[NewJob]) -> StoreResult<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             SELECT id, kind, unique_key, payload, 'ready', 0, max_attempts, COALESCE(run_at, now()), now(), now()
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int4[], $6::timestamptz[])
                 AS t(id, kind, unique_key, payload, max_attempts, run_at)
             ON CONFLICT DO NOTHING",
        )
        .bind(jobs.iter().map(|_| JobId::new().0).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.kind.clone()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.unique_key.clone()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.payload.clone()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| i32_of(j.max_attempts.max(1))).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        if inserted > 0 && !self.enqueued {
            notify(&mut self.tx, "batch").await?;
            self.enqueued = true;
        }
        Ok(())
    }

    async fn upsert_document(&mut self, d: &DocumentRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO documents (account_id, envelope_id, document_id, name, file_name, content_type,
                 size_bytes, sha256, storage_key, stored_at)
             VALUES ($10, $1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (account_id, envelope_id, document_id) DO UPDATE SET
                 name = excluded.name, file_name = excluded.file_name, content_type = excluded.content_type,
                 size_bytes = excluded.size_bytes, sha256 = excluded.sha256, storage_key = excluded.storage_key,
                 stored_at = excluded.stored_at",
        )
        .bind(d.envelope_id.to_string())
        .bind(&d.document_id)
        .bind(&d.name)
        .bind(&d.file_name)
        .bind(&d.content_type)
        .bind(i64::try_from(d.size_bytes).unwrap_or(i64::MAX))
        .bind(&d.sha256)
        .bind(&d.storage_key)
        .bind(d.stored_at)
        .bind(d.account_id.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_event(&mut self, e: &EventRecord) -> StoreResult<Inserted<EventId>> {
        let result = sqlx::query(
            "INSERT INTO events (id, envelope_id, rule, event_type, body, created_at, ordinal)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(e.id.0)
        .bind(e.envelope_id.to_string())
        .bind(&e.rule)
        .bind(&e.event_type)
        .bind(&e.body)
        .bind(e.created_at)
        .bind(i32_of(e.ordinal))
        .execute(&mut *self.tx)
        .await?;
        Ok(if result.rows_affected() == 1 { Inserted::Created(e.id) } else { Inserted::Duplicate })
    }

    async fn insert_delivery(&mut self, event: EventId, sink: &str) -> StoreResult<Inserted<()>> {
        let result = sqlx::query(
            "INSERT INTO deliveries (event_id, sink, state, attempts, created_at, updated_at)
             VALUES ($1, $2, 'pending', 0, now(), now()) ON CONFLICT DO NOTHING",
        )
        .bind(event.0)
        .bind(sink)
        .execute(&mut *self.tx)
        .await?;
        Ok(if result.rows_affected() == 1 { Inserted::Created(()) } else { Inserted::Duplicate })
    }

    async fn record_delivery(&mut self, u: &DeliveryUpdate) -> StoreResult<()> {
        sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = $2, last_error = $3, updated_at = now(),
                 delivered_at = CASE WHEN $1 = 'delivered' THEN now() ELSE delivered_at END
             WHERE event_id = $4 AND sink = $5",
        )
        .bind(u.state.as_str())
        .bind(i32_of(u.attempts))
        .bind(u.last_error.as_deref().map(clip))
        .bind(u.event_id.0)
        .bind(&u.sink)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await?;
        // Local workers need not wait for the notification's round trip.
        if self.enqueued {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(())
    }
}
