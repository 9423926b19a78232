//! PostgreSQL: the job queue (claims, leases, retries, deferrals, dead letters and their history).

use super::*;

#[async_trait]
impl Queue for PostgresStore {
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

    async fn rerun_job(&self, job: &NewJob) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'ready', 0, $5, now(), now(), now())
             ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL DO UPDATE SET
                 state = 'ready', max_attempts = jobs.attempts + excluded.max_attempts, run_at = now(),
                 lease_expires_at = NULL, last_error = NULL, finished_at = NULL, updated_at = now()
             WHERE jobs.state IN ('done', 'dead')",
        )
        .bind(JobId::new().0)
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(&job.payload)
        .bind(i32_of(job.max_attempts.max(1)))
        .execute(&mut *tx)
        .await?;
        let queued = result.rows_affected() > 0;
        if queued {
            notify(&mut tx, "rerun").await?;
        }
        tx.commit().await?;
        Ok(queued)
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
}
