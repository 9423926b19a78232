//! SQLite: agreements.

use super::*;
use crate::domain::{Agreement, AgreementStatus};

#[async_trait]
impl Agreements for SqliteStore {
    async fn agreement(&self, id: AgreementId) -> StoreResult<Option<Agreement>> {
        let row = sqlx::query("SELECT * FROM agreements WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(agreement_from_row).transpose()
    }

    async fn agreement_by_key(&self, client: &str, idempotency_key: &str) -> StoreResult<Option<(Agreement, String)>> {
        let row = sqlx::query("SELECT * FROM agreements WHERE client = ?1 AND idempotency_key = ?2")
            .bind(client)
            .bind(idempotency_key)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(|row| Ok((agreement_from_row(row)?, row.try_get("request_sha256")?))).transpose()
    }

    async fn agreement_for_envelope(&self, envelope: EnvelopeId) -> StoreResult<Option<Agreement>> {
        let row = sqlx::query("SELECT * FROM agreements WHERE envelope_id = ?1")
            .bind(envelope.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(agreement_from_row).transpose()
    }

    async fn list_agreements(&self, query: &AgreementQuery) -> StoreResult<AgreementPage> {
        const FILTER: &str =
            "(?1 IS NULL OR client = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR profile = ?3)";
        let status = query.status.map(AgreementStatus::as_str);
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM agreements WHERE {FILTER}"))
            .bind(&query.client)
            .bind(status)
            .bind(&query.profile)
            .fetch_one(&self.reader)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM agreements WHERE {FILTER} ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5"
        ))
        .bind(&query.client)
        .bind(status)
        .bind(&query.profile)
        .bind(i64::from(query.limit))
        .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        let agreements = rows.iter().map(agreement_from_row).collect::<StoreResult<_>>()?;
        Ok(AgreementPage { total: u64::try_from(total).unwrap_or(0), agreements })
    }
}

impl SqliteTx {
    pub(super) async fn insert_agreement_row(&mut self, new: &NewAgreement) -> StoreResult<bool> {
        let now = now_ms();
        let result = sqlx::query(
            "INSERT INTO agreements (id, client, idempotency_key, request_sha256, profile, data, status, account_id,
                 created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'requested', ?7, ?8, ?8)
             ON CONFLICT (client, idempotency_key) DO NOTHING",
        )
        .bind(new.id.to_string())
        .bind(&new.key.client)
        .bind(&new.key.idempotency_key)
        .bind(&new.key.digest)
        .bind(&new.profile)
        .bind(new.data.to_string())
        .bind(new.account_id.map(|a| a.to_string()))
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    pub(super) async fn update_agreement_row(
        &mut self,
        id: AgreementId,
        change: &AgreementChange,
    ) -> StoreResult<bool> {
        let preceding: Vec<&str> =
            change.status.map(|s| s.preceding().into_iter().map(AgreementStatus::as_str).collect()).unwrap_or_default();
        let result = sqlx::query(
            "UPDATE agreements SET
                 status = COALESCE(?1, status),
                 account_id = COALESCE(account_id, ?2),
                 envelope_id = COALESCE(envelope_id, ?3),
                 error_code = COALESCE(?4, error_code),
                 last_error = COALESCE(?5, last_error),
                 void_reason = COALESCE(?6, void_reason),
                 sent_at = CASE WHEN ?7 THEN COALESCE(sent_at, ?9) ELSE sent_at END,
                 finished_at = CASE WHEN ?8 THEN COALESCE(finished_at, ?9) ELSE finished_at END,
                 send_attempted_at = CASE WHEN ?12 THEN COALESCE(send_attempted_at, ?9) ELSE send_attempted_at END,
                 updated_at = ?9
             WHERE id = ?10 AND (?1 IS NULL OR status IN (SELECT value FROM json_each(?11)))
               AND (?3 IS NULL OR envelope_id IS NULL OR envelope_id = ?3)
               AND (NOT ?13 OR envelope_id IS NULL)
               AND (NOT ?14 OR status NOT IN ('completed', 'declined', 'voided', 'failed'))",
        )
        .bind(change.status.map(AgreementStatus::as_str))
        .bind(change.account_id.map(|a| a.to_string()))
        .bind(change.envelope_id.map(|e| e.to_string()))
        .bind(&change.error_code)
        .bind(change.last_error.as_deref().map(clip))
        .bind(&change.void_reason)
        .bind(change.status.is_some_and(AgreementStatus::was_sent))
        .bind(change.status.is_some_and(AgreementStatus::is_final))
        .bind(now_ms())
        .bind(id.to_string())
        .bind(serde_json::to_string(&preceding).unwrap_or_else(|_| "[]".into()))
        .bind(change.send_attempted)
        .bind(change.unsent_only)
        .bind(change.open_only)
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

fn agreement_from_row(row: &SqliteRow) -> StoreResult<Agreement> {
    let status: String = row.try_get("status")?;
    let account: Option<String> = row.try_get("account_id")?;
    let envelope: Option<String> = row.try_get("envelope_id")?;
    Ok(Agreement {
        id: AgreementId(parse_uuid("agreements.id", &row.try_get::<String, _>("id")?)?),
        client: row.try_get("client")?,
        profile: row.try_get("profile")?,
        data: json_column(row, "data")?,
        status: AgreementStatus::parse(&status).ok_or_else(|| corrupt("agreements.status", &status))?,
        account_id: account.map(|a| AccountId::parse(&a).map_err(|_| corrupt("account_id", &a))).transpose()?,
        envelope_id: envelope.map(|e| EnvelopeId::parse(&e).map_err(|_| corrupt("envelope_id", &e))).transpose()?,
        error_code: row.try_get("error_code")?,
        last_error: row.try_get("last_error")?,
        void_reason: row.try_get("void_reason")?,
        created_at: to_time(row.try_get("created_at")?),
        updated_at: to_time(row.try_get("updated_at")?),
        sent_at: opt_time(row.try_get("sent_at")?),
        send_attempted_at: opt_time(row.try_get("send_attempted_at")?),
        finished_at: opt_time(row.try_get("finished_at")?),
    })
}
