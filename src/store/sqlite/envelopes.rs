//! SQLite: envelopes and what hangs off them (documents, events).

use super::*;

#[async_trait]
impl Envelopes for SqliteStore {
    async fn envelope(&self, envelope: EnvelopeId) -> StoreResult<Option<EnvelopeRecord>> {
        let row = sqlx::query("SELECT * FROM envelopes WHERE envelope_id = ?1")
            .bind(envelope.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(envelope_from_row).transpose()
    }

    async fn list_envelopes(&self, query: &EnvelopeQuery) -> StoreResult<EnvelopePage> {
        let status = query.status.map(EnvelopeStatus::as_str);
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE ?1 IS NULL OR status = ?1")
            .bind(status)
            .fetch_one(&self.reader)
            .await?;
        let rows = sqlx::query(
            "SELECT * FROM envelopes WHERE ?1 IS NULL OR status = ?1
             ORDER BY updated_at DESC, envelope_id LIMIT ?2 OFFSET ?3",
        )
        .bind(status)
        .bind(i64::from(query.limit))
        .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        let envelopes = rows.iter().map(envelope_from_row).collect::<StoreResult<_>>()?;
        Ok(EnvelopePage { total: u64::try_from(total).unwrap_or(0), envelopes })
    }

    async fn count_envelopes(&self) -> StoreResult<Vec<(EnvelopeStatus, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM envelopes GROUP BY status ORDER BY status")
                .fetch_all(&self.reader)
                .await?;
        rows.into_iter()
            .map(|(status, count)| {
                let parsed = EnvelopeStatus::parse(&status).ok_or_else(|| corrupt("envelopes.status", &status))?;
                Ok((parsed, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }

    async fn documents(&self, envelope: EnvelopeId) -> StoreResult<Vec<DocumentRecord>> {
        let rows = sqlx::query("SELECT * FROM documents WHERE envelope_id = ?1 ORDER BY document_id")
            .bind(envelope.to_string())
            .fetch_all(&self.reader)
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
                    stored_at: to_time(row.try_get("stored_at")?),
                })
            })
            .collect()
    }

    async fn events_for(&self, envelope: EnvelopeId) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT * FROM events WHERE envelope_id = ?1 ORDER BY created_at, ordinal, id")
            .bind(envelope.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}
