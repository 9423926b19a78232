//! SQLite: events on their way to sinks (deliveries, their order, dead letters, disabled sinks).

use super::*;

#[async_trait]
impl Deliveries for SqliteStore {
    async fn deliveries_for(&self, event: EventId) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query("SELECT * FROM deliveries WHERE event_id = ?1 ORDER BY sink")
            .bind(event.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(DeliveryRecord {
                    event_id: EventId(parse_uuid("deliveries.event_id", &row.try_get::<String, _>("event_id")?)?),
                    sink: row.try_get("sink")?,
                    state: DeliveryState::parse(&state).ok_or_else(|| corrupt("deliveries.state", &state))?,
                    attempts: u32_column(row, "attempts")?,
                    last_error: row.try_get("last_error")?,
                    created_at: to_time(row.try_get("created_at")?),
                    updated_at: to_time(row.try_get("updated_at")?),
                    delivered_at: opt_time(row.try_get("delivered_at")?),
                })
            })
            .collect()
    }

    async fn event(&self, id: EventId) -> StoreResult<Option<EventRecord>> {
        let row =
            sqlx::query("SELECT * FROM events WHERE id = ?1").bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn earlier_pending_delivery(&self, event: EventId, sink: &str) -> StoreResult<Option<EarlierDelivery>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT e.id, j.state, j.run_at
             FROM events me
             JOIN events e ON e.envelope_id = me.envelope_id AND e.id <> me.id
                 AND (e.created_at < me.created_at OR (e.created_at = me.created_at AND e.ordinal < me.ordinal))
             JOIN deliveries d ON d.event_id = e.id AND d.sink = ?2 AND d.state = 'pending'
             JOIN jobs j ON j.kind = ?3 AND j.unique_key = e.id || '/' || ?2 AND j.state <> 'dead'
             WHERE me.id = ?1
             ORDER BY e.created_at, e.ordinal
             LIMIT 1",
        )
        .bind(event.to_string())
        .bind(sink)
        .bind(JobKind::Deliver.as_str())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|(id, state, run_at)| {
            Ok(EarlierDelivery {
                event_id: EventId(parse_uuid("events.id", &id)?),
                next_attempt_at: (state != "running").then(|| to_time(run_at)),
            })
        })
        .transpose()
    }

    async fn envelope_has_sink(&self, envelope: EnvelopeId, sink: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE e.envelope_id = ?1 AND d.sink = ?2 LIMIT 1",
        )
        .bind(envelope.to_string())
        .bind(sink)
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.is_some())
    }

    async fn dead_deliveries(&self, filter: &DeliveryFilter, limit: u32) -> StoreResult<Vec<DeadDelivery>> {
        let rows = sqlx::query(DEAD_DELIVERIES)
            .bind(filter.event.map(|e| e.to_string()))
            .bind(filter.sink.as_deref())
            .bind(filter.since.map(|t| t.timestamp_millis()))
            .bind(i64::from(limit))
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(dead_delivery_from_row).collect()
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, attempts: u32) -> StoreResult<Vec<DeadDelivery>> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(DEAD_DELIVERIES)
            .bind(filter.event.map(|e| e.to_string()))
            .bind(filter.sink.as_deref())
            .bind(filter.since.map(|t| t.timestamp_millis()))
            .bind(i64::MAX)
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let dead: Vec<DeadDelivery> = rows.iter().map(dead_delivery_from_row).collect::<StoreResult<_>>()?;
        for delivery in &dead {
            sqlx::query(
                "UPDATE jobs SET state = 'ready', max_attempts = attempts + ?1, run_at = ?2, finished_at = NULL,
                     updated_at = ?2
                 WHERE id = ?3 AND state = 'dead'",
            )
            .bind(i64::from(attempts))
            .bind(now)
            .bind(delivery.job_id.to_string())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE deliveries SET state = 'pending', updated_at = ?1 WHERE event_id = ?2 AND sink = ?3")
                .bind(now)
                .bind(delivery.event_id.to_string())
                .bind(&delivery.sink)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if !dead.is_empty() {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(dead)
    }

    async fn disable_sink(&self, sink: &str, reason: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let result = sqlx::query(
            "INSERT INTO sink_status (sink, state, reason, changed_at) VALUES (?1, 'disabled', ?2, ?3)
             ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .bind(clip(reason))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    async fn enable_sink(&self, sink: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let result = sqlx::query("DELETE FROM sink_status WHERE sink = ?1").bind(sink).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    async fn disabled_sinks(&self) -> StoreResult<Vec<DisabledSink>> {
        let rows = sqlx::query("SELECT * FROM sink_status WHERE state = 'disabled' ORDER BY sink")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DisabledSink {
                    sink: row.try_get("sink")?,
                    reason: row.try_get("reason")?,
                    disabled_at: to_time(row.try_get("changed_at")?),
                })
            })
            .collect()
    }
}
