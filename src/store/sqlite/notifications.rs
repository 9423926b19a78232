//! SQLite: Connect notifications, the group commit and the lookups.

use super::*;

#[async_trait]
impl Notifications for SqliteStore {
    /// The whole batch, from BEGIN to COMMIT, goes to SQLite's thread as one
    /// list of statements: each hand-off to that thread waits for a tokio
    /// worker to pick the answer up, and with five of them a group commit
    /// spent more time handing off than writing.
    async fn record_notifications(&self, records: &[&NotificationRecord]) -> StoreResult<Vec<bool>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let RecordRows { notifications, envelopes, documents, jobs } = RecordRows::of(records);

        let mut query = sqlx::QueryBuilder::<Sqlite>::new("PRAGMA synchronous = FULL; BEGIN IMMEDIATE; ");
        push_insert_notifications(&mut query, &notifications, now);
        // The envelope before its documents, which refer to it.
        push_if_recorded(
            &mut query,
            "envelopes",
            ENVELOPE_COLUMNS,
            &envelopes,
            |r, e| bind_envelope(r, e, now),
            ENVELOPE_CONFLICT,
        );
        // SQLite allows 32,766 parameters in a statement: a batch of
        // notifications with many embedded documents gets several INSERTs.
        for documents in documents.chunks(1_000) {
            push_if_recorded(&mut query, "documents", DOCUMENT_COLUMNS, documents, bind_document, DOCUMENT_CONFLICT);
        }
        push_if_recorded(&mut query, "jobs", JOB_COLUMNS, &jobs, |r, j| bind_job(r, j, now), " ON CONFLICT DO NOTHING");
        query.push("; COMMIT");

        let written = returned_ids(&self.write_all(Lane::GroupCommit, query.build()).await?)?;
        if !jobs.is_empty() {
            // Perhaps every job was a duplicate: a worker woken for nothing finds nothing.
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(records.iter().map(|r| written.contains(&r.notification.id.to_string())).collect())
    }

    async fn enqueued_notifications(&self, envelope: EnvelopeId) -> StoreResult<Vec<Notification>> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE envelope_id = ?1 AND disposition = 'enqueued'
                 AND NOT EXISTS (SELECT 1 FROM envelopes e
                     WHERE e.envelope_id = notifications.envelope_id AND e.account_id <> notifications.account_id)
             ORDER BY received_at, id",
        )
        .bind(envelope.to_string())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn envelope_accounts(&self, envelopes: &[EnvelopeId]) -> StoreResult<Vec<(EnvelopeId, AccountId)>> {
        let ids = serde_json::to_string(&envelopes.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT envelope_id, account_id FROM envelopes WHERE envelope_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|(envelope, account)| envelope_account(envelope, account)).collect()
    }

    async fn notification(&self, id: NotificationId) -> StoreResult<Option<Notification>> {
        let row = sqlx::query("SELECT * FROM notifications WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(notification_from_row).transpose()
    }

    async fn count_notifications(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications").fetch_one(&self.reader).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
