//! PostgreSQL: agreements.

use super::*;
use crate::domain::{Agreement, AgreementStatus};

#[async_trait]
impl Agreements for PostgresStore {
    async fn agreement(&self, id: AgreementId) -> StoreResult<Option<Agreement>> {
        let row = sqlx::query("SELECT * FROM agreements WHERE id = $1").bind(id.0).fetch_optional(&self.pool).await?;
        row.as_ref().map(agreement_from_row).transpose()
    }

    async fn agreement_by_key(&self, client: &str, idempotency_key: &str) -> StoreResult<Option<(Agreement, String)>> {
        let row = sqlx::query("SELECT * FROM agreements WHERE client = $1 AND idempotency_key = $2")
            .bind(client)
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|row| Ok((agreement_from_row(row)?, row.try_get("request_sha256")?))).transpose()
    }

    async fn agreement_for_envelope(&self, envelope: EnvelopeId) -> StoreResult<Option<Agreement>> {
        let row = sqlx::query("SELECT * FROM agreements WHERE envelope_id = $1")
            .bind(envelope.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(agreement_from_row).transpose()
    }

    async fn list_agreements(&self, query: &AgreementQuery) -> StoreResult<AgreementPage> {
        const FILTER: &str = "($1::text IS NULL OR client = $1) AND ($2::text IS NULL OR status = $2) \
             AND ($3::text IS NULL OR profile = $3)";
        let status = query.status.map(AgreementStatus::as_str);
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM agreements WHERE {FILTER}"))
            .bind(&query.client)
            .bind(status)
            .bind(&query.profile)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM agreements WHERE {FILTER} ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(&query.client)
        .bind(status)
        .bind(&query.profile)
        .bind(i64::from(query.limit))
        .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let agreements = rows.iter().map(agreement_from_row).collect::<StoreResult<_>>()?;
        Ok(AgreementPage { total: u64::try_from(total).unwrap_or(0), agreements })
    }
}

impl PgTx {
    pub(super) async fn insert_agreement_row(&mut self, new: &NewAgreement) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO agreements (id, client, idempotency_key, request_sha256, profile, data, status, account_id,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'requested', $7, now(), now())
             ON CONFLICT (client, idempotency_key) DO NOTHING",
        )
        .bind(new.id.0)
        .bind(&new.key.client)
        .bind(&new.key.idempotency_key)
        .bind(&new.key.digest)
        .bind(&new.profile)
        .bind(&new.data)
        .bind(new.account_id.map(|a| a.to_string()))
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    pub(super) async fn update_agreement_row(
        &mut self,
        id: AgreementId,
        change: &AgreementChange,
    ) -> StoreResult<bool> {
        let preceding: Vec<String> = change
            .status
            .map(|s| s.preceding().into_iter().map(|p| p.as_str().to_string()).collect())
            .unwrap_or_default();
        let result = sqlx::query(
            "UPDATE agreements SET
                 status = COALESCE($1, status),
                 account_id = COALESCE(account_id, $2),
                 envelope_id = COALESCE(envelope_id, $3),
                 error_code = COALESCE($4, error_code),
                 last_error = COALESCE($5, last_error),
                 void_reason = COALESCE($6, void_reason),
                 sent_at = CASE WHEN $7 THEN COALESCE(sent_at, now()) ELSE sent_at END,
                 finished_at = CASE WHEN $8 THEN COALESCE(finished_at, now()) ELSE finished_at END,
                 send_attempted_at = CASE WHEN $11 THEN COALESCE(send_attempted_at, now()) ELSE send_attempted_at END,
                 updated_at = now()
             WHERE id = $9 AND ($1::text IS NULL OR status = ANY($10))
               AND ($3::text IS NULL OR envelope_id IS NULL OR envelope_id = $3)
               AND (NOT $12 OR envelope_id IS NULL)
               AND (NOT $13 OR status NOT IN ('completed', 'declined', 'voided', 'failed'))",
        )
        .bind(change.status.map(AgreementStatus::as_str))
        .bind(change.account_id.map(|a| a.to_string()))
        .bind(change.envelope_id.map(|e| e.to_string()))
        .bind(&change.error_code)
        .bind(change.last_error.as_deref().map(clip))
        .bind(&change.void_reason)
        .bind(change.status.is_some_and(AgreementStatus::was_sent))
        .bind(change.status.is_some_and(AgreementStatus::is_final))
        .bind(id.0)
        .bind(&preceding)
        .bind(change.send_attempted)
        .bind(change.unsent_only)
        .bind(change.open_only)
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

fn agreement_from_row(row: &PgRow) -> StoreResult<Agreement> {
    let status: String = row.try_get("status")?;
    let account: Option<String> = row.try_get("account_id")?;
    let envelope: Option<String> = row.try_get("envelope_id")?;
    Ok(Agreement {
        id: AgreementId(row.try_get("id")?),
        client: row.try_get("client")?,
        profile: row.try_get("profile")?,
        data: row.try_get("data")?,
        status: AgreementStatus::parse(&status).ok_or_else(|| corrupt("agreements.status", &status))?,
        account_id: account.map(|a| AccountId::parse(&a).map_err(|_| corrupt("account_id", &a))).transpose()?,
        envelope_id: envelope.map(|e| EnvelopeId::parse(&e).map_err(|_| corrupt("envelope_id", &e))).transpose()?,
        error_code: row.try_get("error_code")?,
        last_error: row.try_get("last_error")?,
        void_reason: row.try_get("void_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        sent_at: row.try_get("sent_at")?,
        send_attempted_at: row.try_get("send_attempted_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}
