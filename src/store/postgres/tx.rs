//! PostgreSQL: one write transaction (`StoreTx`).

use super::*;

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
                 status = CASE WHEN excluded.status IN ('processed', 'flagged') THEN excluded.status
                     WHEN envelopes.status IN ('processed', 'flagged') OR excluded.status = 'sent' THEN envelopes.status
                     ELSE excluded.status END,
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
            "INSERT INTO events (id, envelope_id, agreement_id, rule, event_type, body, created_at, ordinal)
             VALUES ($1, $2, $8, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(e.id.0)
        .bind(e.envelope_id.map(|id| id.to_string()))
        .bind(&e.rule)
        .bind(&e.event_type)
        .bind(&e.body)
        .bind(e.created_at)
        .bind(i32_of(e.ordinal))
        .bind(e.agreement_id.map(|id| id.0))
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

    async fn insert_agreement(&mut self, new: &NewAgreement) -> StoreResult<bool> {
        self.insert_agreement_row(new).await
    }

    async fn update_agreement(&mut self, id: AgreementId, change: &AgreementChange) -> StoreResult<bool> {
        self.update_agreement_row(id, change).await
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
