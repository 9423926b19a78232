//! SQLite: the job queue (claims, leases, retries, deferrals, dead letters and their history).

use super::*;

#[async_trait]
impl Queue for SqliteStore {
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
        let now = now_ms();
        let kinds = kinds_json(kinds);
        // Idle workers ask again at every wake-up (each group commit that
        // enqueues wakes them all); when nothing is due, a reader answers
        // and the writer stays with ingest. A job that becomes due after this
        // read wakes the workers again.
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready
                     WHERE state = 'ready' AND run_at <= ?1 AND kind IN (SELECT value FROM json_each(?2)))
                 OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_parked
                     WHERE state = 'parked' AND run_at <= ?1 AND kind IN (SELECT value FROM json_each(?2)))
                 OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_leased
                     WHERE state = 'running' AND lease_expires_at <= ?1 AND kind IN (SELECT value FROM json_each(?2)))",
        )
        .bind(now)
        .bind(&kinds)
        .fetch_one(&self.reader)
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        // The whole claim is one statement list, BEGIN to COMMIT: one
        // hand-off to SQLite's thread while the writer is held, where a
        // statement at a time waited on a busy tokio worker between each.
        // `temp.claimed` (in memory, on the writer's connection) carries the
        // picked ids from the pick to the statements after it. The text
        // names its parameters; [`Named`] turns them into anonymous `?`s
        // bound in the order they appear (sqlx numbers anonymous parameters
        // across the statements of a list, while a numbered one after a gap,
        // ?1 then ?4, can go unbound in a later statement).
        static CLAIM: LazyLock<Named> = LazyLock::new(|| {
            Named::parse(
                "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE;
                 -- Expired jobs with no attempts left become dead letters
                 -- rather than crash-looping; their open attempt is closed
                 -- as lease_expired.
                 UPDATE job_attempts SET outcome = 'lease_expired', finished_at = :now
                 WHERE finished_at IS NULL AND job_id IN (SELECT id FROM jobs INDEXED BY jobs_leased
                     WHERE state = 'running' AND lease_expires_at <= :now AND attempts >= max_attempts
                     AND kind IN (SELECT value FROM json_each(:kinds)));
                 UPDATE jobs SET state = 'dead',
                     last_error = 'lease expired during attempt ' || attempts || ' (the worker stopped or stalled)',
                     lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL,
                     finished_at = :now, updated_at = :now
                 WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_leased
                     WHERE state = 'running' AND lease_expires_at <= :now AND attempts >= max_attempts
                     AND kind IN (SELECT value FROM json_each(:kinds)));
                 -- One walk per state along its partial index, each stopping
                 -- at the first due jobs. Left to itself, SQLite answers the
                 -- OR of the three states through the (state, finished_at)
                 -- index and reads every job in that state: with a backlog
                 -- of tens of thousands of parked jobs (consent missing),
                 -- each claim read them all.
                 DELETE FROM temp.claimed;
                 INSERT INTO temp.claimed (id, state) SELECT id, state FROM (
                     SELECT * FROM (SELECT id, state, run_at FROM jobs INDEXED BY jobs_ready
                         WHERE state = 'ready' AND run_at <= :now AND kind IN (SELECT value FROM json_each(:kinds))
                         ORDER BY run_at LIMIT :limit)
                     UNION ALL
                     SELECT * FROM (SELECT id, state, run_at FROM jobs INDEXED BY jobs_parked
                         WHERE state = 'parked' AND run_at <= :now AND kind IN (SELECT value FROM json_each(:kinds))
                         ORDER BY run_at LIMIT :limit)
                     UNION ALL
                     SELECT * FROM (SELECT id, state, run_at FROM jobs INDEXED BY jobs_leased
                         WHERE state = 'running' AND lease_expires_at <= :now AND kind IN (SELECT value FROM json_each(:kinds))
                         ORDER BY lease_expires_at LIMIT :limit))
                 ORDER BY run_at, id LIMIT :limit;
                 -- Only the attempts of jobs taken over here are closed:
                 -- another expired job may still finish under its old worker.
                 UPDATE job_attempts SET outcome = 'lease_expired', finished_at = :now
                 WHERE finished_at IS NULL AND job_id IN (SELECT id FROM temp.claimed WHERE state = 'running');
                 UPDATE jobs SET state = 'running', attempts = attempts + 1,
                     lease_token = lower(hex(randomblob(16))), lease_owner = :worker,
                     lease_expires_at = :now + :lease_ms, updated_at = :now
                 WHERE id IN (SELECT id FROM temp.claimed)
                 RETURNING *, (SELECT rowid FROM temp.claimed WHERE temp.claimed.id = jobs.id) AS due_order;
                 INSERT INTO job_attempts (job_id, attempt, worker, started_at)
                     SELECT id, attempts, :worker, :now FROM jobs WHERE id IN (SELECT id FROM temp.claimed);
                 COMMIT",
            )
        });
        let limit = i64::from(limit);
        let lease_ms = millis(lease);
        let mut query = sqlx::query(CLAIM.sql.as_str());
        for name in &CLAIM.order {
            query = match *name {
                "now" => query.bind(now),
                "kinds" => query.bind(kinds.as_str()),
                "limit" => query.bind(limit),
                "worker" => query.bind(worker),
                "lease_ms" => query.bind(lease_ms),
                other => return Err(StoreError::Corrupt(format!("the claim names an unknown parameter :{other}"))),
            };
        }
        let rows = self.write_all(Lane::Other, query).await?;
        let rows = in_due_order(rows)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let job = job_from_row(row)?;
            let token: String = row.try_get("lease_token")?;
            let lease = Lease { job: job.id, token: parse_uuid("jobs.lease_token", &token)? };
            claimed.push(ClaimedJob { job, lease });
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.lease_tx().await?;
        let result = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?1, updated_at = ?2
             WHERE id = ?3 AND lease_token = ?4 AND state = 'running'",
        )
        .bind(now + millis(extend))
        .bind(now)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    async fn fail_job(&self, lease: &Lease, error: &str, retry: Retry) -> StoreResult<FailOutcome> {
        let now = now_ms();
        let (retry_at, never) = match retry {
            Retry::At(at) => (at.timestamp_millis(), false),
            Retry::Never => (now, true),
        };
        let error = clip(error);
        let mut tx = self.lease_tx().await?;
        let row = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN ?1 OR attempts >= max_attempts THEN 'dead' ELSE 'ready' END,
                 run_at = CASE WHEN ?1 OR attempts >= max_attempts THEN run_at ELSE ?2 END,
                 finished_at = CASE WHEN ?1 OR attempts >= max_attempts THEN ?3 ELSE NULL END,
                 last_error = ?4, lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?3
             WHERE id = ?5 AND lease_token = ?6 AND state = 'running'
             RETURNING state, run_at",
        )
        .bind(never)
        .bind(retry_at)
        .bind(now)
        .bind(&error)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(FailOutcome::LeaseLost) };
        close_attempt(&mut tx, lease.job, AttemptOutcome::Failed, Some(&error), now).await?;
        tx.commit().await?;
        let state: String = row.try_get("state")?;
        Ok(if state == "dead" {
            FailOutcome::Dead
        } else {
            FailOutcome::WillRetry { at: to_time(row.try_get("run_at")?) }
        })
    }

    async fn release_job(&self, lease: &Lease) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.lease_tx().await?;
        let result = sqlx::query(
            "UPDATE jobs SET state = 'ready', attempts = attempts - 1, run_at = ?1, updated_at = ?1,
                 lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?2 AND lease_token = ?3 AND state = 'running'",
        )
        .bind(now)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        close_attempt(&mut tx, lease.job, AttemptOutcome::Released, None, now).await?;
        tx.commit().await?;
        self.signal.send_modify(|v| *v += 1);
        Ok(true)
    }

    async fn defer_jobs(&self, deferrals: &[Deferral]) -> StoreResult<Vec<bool>> {
        let now = now_ms();
        // Every deferral in one hand-off to SQLite's thread: the writer is
        // held throughout, and ingest waits for it.
        let mut statements = String::from("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE;");
        for _ in deferrals {
            // An open attempt of a job with no lease is the one this lease
            // ran: a worker that takes a job over closes the old attempt.
            statements.push_str(
                " UPDATE jobs SET state = ?, attempts = attempts - 1, run_at = ?, last_error = ?, updated_at = ?,
                     lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING id;
                 UPDATE job_attempts SET outcome = 'deferred', error = ?, finished_at = ?
                 WHERE job_id = ? AND finished_at IS NULL AND (SELECT lease_token FROM jobs WHERE id = ?) IS NULL;",
            );
        }
        statements.push_str(" COMMIT");
        let mut query = sqlx::query(&statements);
        for Deferral { lease, reason, until, parked } in deferrals {
            let reason = clip(reason);
            let job = lease.job.to_string();
            query = query
                .bind(if *parked { JobState::Parked } else { JobState::Ready }.as_str())
                .bind(until.timestamp_millis())
                .bind(reason.clone())
                .bind(now)
                .bind(job.clone())
                .bind(lease.token.simple().to_string())
                .bind(reason)
                .bind(now)
                .bind(job.clone())
                .bind(job);
        }
        let deferred = returned_ids(&self.write_all(Lane::Other, query).await?)?;
        let held: Vec<bool> = deferrals.iter().map(|d| deferred.contains(&d.lease.job.to_string())).collect();
        if held.contains(&true) {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(held)
    }

    async fn rearm_job(&self, job: &NewJob) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'ready', 0, ?5, ?6, ?7, ?7)
             ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL DO UPDATE SET
                 state = 'ready', attempts = 0, max_attempts = excluded.max_attempts, payload = excluded.payload,
                 run_at = excluded.run_at, last_error = NULL, finished_at = NULL, updated_at = excluded.updated_at
             WHERE jobs.state IN ('done', 'dead')",
        )
        .bind(JobId::new().to_string())
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(job.payload.to_string())
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(job.run_at.map_or(now, |t| t.timestamp_millis()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let armed = result.rows_affected() > 0;
        if armed {
            sqlx::query(
                "DELETE FROM job_attempts WHERE finished_at IS NOT NULL
                 AND job_id = (SELECT id FROM jobs WHERE kind = ?1 AND unique_key = ?2)",
            )
            .bind(&job.kind)
            .bind(&job.unique_key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if armed {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(armed)
    }

    async fn rerun_job(&self, job: &NewJob) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'ready', 0, ?5, ?6, ?6, ?6)
             ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL DO UPDATE SET
                 state = 'ready', max_attempts = jobs.attempts + excluded.max_attempts, run_at = excluded.run_at,
                 lease_expires_at = NULL, last_error = NULL, finished_at = NULL, updated_at = excluded.updated_at
             WHERE jobs.state IN ('done', 'dead')",
        )
        .bind(JobId::new().to_string())
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(job.payload.to_string())
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let queued = result.rows_affected() > 0;
        if queued {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(queued)
    }

    async fn wake_parked(&self) -> StoreResult<u64> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let result = sqlx::query("UPDATE jobs SET run_at = ?1, updated_at = ?1 WHERE state = 'parked' AND run_at > ?1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if result.rows_affected() > 0 {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(result.rows_affected())
    }

    async fn next_due(&self, kinds: &[&str]) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<i64> = sqlx::query_scalar(
            // As in claim_jobs: each state's partial index, walked until the first job of these kinds.
            "SELECT MIN(t) FROM (
                 SELECT * FROM (SELECT run_at AS t FROM jobs INDEXED BY jobs_ready
                     WHERE state = 'ready' AND kind IN (SELECT value FROM json_each(?1)) ORDER BY run_at LIMIT 1)
                 UNION ALL
                 SELECT * FROM (SELECT run_at FROM jobs INDEXED BY jobs_parked
                     WHERE state = 'parked' AND kind IN (SELECT value FROM json_each(?1)) ORDER BY run_at LIMIT 1)
                 UNION ALL
                 SELECT * FROM (SELECT lease_expires_at FROM jobs INDEXED BY jobs_leased
                     WHERE state = 'running' AND kind IN (SELECT value FROM json_each(?1))
                     ORDER BY lease_expires_at LIMIT 1))",
        )
        .bind(kinds_json(kinds))
        .fetch_one(&self.reader)
        .await?;
        Ok(opt_time(due))
    }

    async fn job_by_key(&self, kind: &str, unique_key: &str) -> StoreResult<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE kind = ?1 AND unique_key = ?2")
            .bind(kind)
            .bind(unique_key)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let row =
            sqlx::query("SELECT * FROM jobs WHERE id = ?1").bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn job_attempts(&self, id: JobId) -> StoreResult<Vec<JobAttempt>> {
        let rows = sqlx::query("SELECT * FROM job_attempts WHERE job_id = ?1 ORDER BY id")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: Option<String> = row.try_get("outcome")?;
                Ok(JobAttempt {
                    attempt: u32_column(row, "attempt")?,
                    worker: row.try_get("worker")?,
                    started_at: to_time(row.try_get("started_at")?),
                    finished_at: opt_time(row.try_get("finished_at")?),
                    outcome: outcome
                        .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| corrupt("job_attempts.outcome", &o)))
                        .transpose()?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }

    async fn dead_jobs(&self, limit: u32) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE state = 'dead' ORDER BY finished_at DESC, id LIMIT ?1")
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn replay_job(&self, id: JobId, attempts: u32) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let result = sqlx::query(
            "UPDATE jobs SET state = 'ready', max_attempts = attempts + ?1, run_at = ?2, finished_at = NULL, updated_at = ?2
             WHERE id = ?3 AND state = 'dead'",
        )
        .bind(i64::from(attempts))
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let replayed = result.rows_affected() == 1;
        if replayed {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(replayed)
    }

    async fn prune_jobs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.write_tx().await?;
        let before = before.timestamp_millis();
        sqlx::query(
            "DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM jobs WHERE state = 'done' AND finished_at < ?1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let result = sqlx::query("DELETE FROM jobs WHERE state = 'done' AND finished_at < ?1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }

    async fn queue_stats(&self) -> StoreResult<Vec<QueueStat>> {
        let rows =
            sqlx::query("SELECT kind, state, COUNT(*) AS n, MIN(run_at) AS oldest FROM jobs GROUP BY kind, state")
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(QueueStat {
                    kind: row.try_get("kind")?,
                    state: JobState::parse(&state).ok_or_else(|| corrupt("jobs.state", &state))?,
                    count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                    oldest: opt_time(row.try_get("oldest")?),
                })
            })
            .collect()
    }
}
