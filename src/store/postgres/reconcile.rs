//! PostgreSQL: reconciliation checkpoints and passes under way.

use super::*;

#[async_trait]
impl Reconciliation for PostgresStore {
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
}
