//! PostgreSQL: Connect notifications, the group commit and the lookups.

use super::*;

#[async_trait]
impl Notifications for PostgresStore {
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
                     status = CASE WHEN excluded.status IN ('processed', 'flagged') THEN excluded.status
                         WHEN envelopes.status IN ('processed', 'flagged') OR excluded.status = 'sent'
                             THEN envelopes.status
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

    async fn enqueued_notifications(&self, envelope: EnvelopeId) -> StoreResult<Vec<Notification>> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE envelope_id = $1 AND disposition = 'enqueued'
                 AND NOT EXISTS (SELECT 1 FROM envelopes e
                     WHERE e.envelope_id = notifications.envelope_id AND e.account_id <> notifications.account_id)
             ORDER BY received_at, id",
        )
        .bind(envelope.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn envelope_accounts(&self, envelopes: &[EnvelopeId]) -> StoreResult<Vec<(EnvelopeId, AccountId)>> {
        let ids: Vec<String> = envelopes.iter().map(ToString::to_string).collect();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT envelope_id, account_id FROM envelopes WHERE envelope_id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|(envelope, account)| envelope_account(envelope, account)).collect()
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
}
