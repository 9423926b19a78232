//! SQLite: one write transaction (`StoreTx`).

use super::*;

#[async_trait]
impl StoreTx for SqliteTx {
    async fn enqueue(&mut self, job: &NewJob) -> StoreResult<Enqueued> {
        let now = now_ms();
        let id = JobId::new();
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'ready', 0, ?5, ?6, ?7, ?7)
             ON CONFLICT DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(job.payload.to_string())
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(job.run_at.map_or(now, |t| t.timestamp_millis()))
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(Enqueued::Duplicate);
        }
        self.enqueued = true;
        Ok(Enqueued::Created(id))
    }

    async fn complete_job(&mut self, lease: &Lease) -> StoreResult<bool> {
        let now = now_ms();
        let result = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = ?1, updated_at = ?1,
                 lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?2 AND lease_token = ?3 AND state = 'running'",
        )
        .bind(now)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .execute(&mut *self.tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        close_attempt(&mut self.tx, lease.job, AttemptOutcome::Succeeded, None, now).await?;
        Ok(true)
    }

    async fn insert_notifications(&mut self, batch: &[&NewNotification]) -> StoreResult<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = sqlx::QueryBuilder::<Sqlite>::new("");
        push_insert_notifications(&mut query, batch, now_ms());
        let written: std::collections::HashSet<String> =
            query.build_query_scalar::<String>().fetch_all(&mut *self.tx).await?.into_iter().collect();
        Ok(batch.iter().map(|n| written.contains(&n.id.to_string())).collect())
    }

    async fn upsert_envelopes(&mut self, batch: &[EnvelopeUpsert]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(format!("INSERT INTO envelopes ({ENVELOPE_COLUMNS}) "));
        query.push_values(batch, |mut row, e| bind_envelope(&mut row, e, now));
        query.push(ENVELOPE_CONFLICT);
        query.build().execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn enqueue_all(&mut self, jobs: &[NewJob]) -> StoreResult<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(format!("INSERT INTO jobs ({JOB_COLUMNS}) "));
        query.push_values(jobs, |mut row, job| bind_job(&mut row, job, now));
        query.push(" ON CONFLICT DO NOTHING");
        if query.build().execute(&mut *self.tx).await?.rows_affected() > 0 {
            self.enqueued = true;
        }
        Ok(())
    }

    async fn upsert_document(&mut self, d: &DocumentRecord) -> StoreResult<()> {
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(format!("INSERT INTO documents ({DOCUMENT_COLUMNS}) "));
        query.push_values([d], |mut row, d| bind_document(&mut row, d));
        query.push(DOCUMENT_CONFLICT);
        query.build().execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn insert_event(&mut self, e: &EventRecord) -> StoreResult<Inserted<EventId>> {
        let result = sqlx::query(
            "INSERT INTO events (id, envelope_id, agreement_id, rule, event_type, body, created_at, ordinal)
             VALUES (?1, ?2, ?8, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )
        .bind(e.id.to_string())
        .bind(e.envelope_id.map(|id| id.to_string()))
        .bind(&e.rule)
        .bind(&e.event_type)
        .bind(e.body.to_string())
        .bind(e.created_at.timestamp_millis())
        .bind(i64::from(e.ordinal))
        .bind(e.agreement_id.map(|id| id.to_string()))
        .execute(&mut *self.tx)
        .await?;
        Ok(if result.rows_affected() == 1 { Inserted::Created(e.id) } else { Inserted::Duplicate })
    }

    async fn insert_delivery(&mut self, event: EventId, sink: &str) -> StoreResult<Inserted<()>> {
        let now = now_ms();
        let result = sqlx::query(
            "INSERT INTO deliveries (event_id, sink, state, attempts, created_at, updated_at)
             VALUES (?1, ?2, 'pending', 0, ?3, ?3) ON CONFLICT DO NOTHING",
        )
        .bind(event.to_string())
        .bind(sink)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(if result.rows_affected() == 1 { Inserted::Created(()) } else { Inserted::Duplicate })
    }

    async fn record_delivery(&mut self, u: &DeliveryUpdate) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE deliveries SET state = ?1, attempts = ?2, last_error = ?3, updated_at = ?4,
                 delivered_at = CASE WHEN ?1 = 'delivered' THEN ?4 ELSE delivered_at END
             WHERE event_id = ?5 AND sink = ?6",
        )
        .bind(u.state.as_str())
        .bind(i64::from(u.attempts))
        .bind(u.last_error.as_deref().map(clip))
        .bind(now)
        .bind(u.event_id.to_string())
        .bind(&u.sink)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_agreement(&mut self, new: &NewAgreement) -> StoreResult<bool> {
        self.insert_agreement_row(new).await
    }

    async fn update_agreement(&mut self, id: AgreementId, change: &AgreementChange) -> StoreResult<bool> {
        self.update_agreement_row(id, change).await
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await?;
        if self.enqueued {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(())
    }
}
