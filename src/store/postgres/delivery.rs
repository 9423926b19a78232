//! PostgreSQL: events on their way to sinks (deliveries, their order, dead letters, disabled sinks).

use super::*;

#[async_trait]
impl Deliveries for PostgresStore {
    async fn deliveries_for(&self, event: EventId) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query("SELECT * FROM deliveries WHERE event_id = $1 ORDER BY sink")
            .bind(event.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(DeliveryRecord {
                    event_id: EventId(row.try_get("event_id")?),
                    sink: row.try_get("sink")?,
                    state: DeliveryState::parse(&state).ok_or_else(|| corrupt("deliveries.state", &state))?,
                    attempts: u32_column(row, "attempts")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    delivered_at: row.try_get("delivered_at")?,
                })
            })
            .collect()
    }

    async fn event(&self, id: EventId) -> StoreResult<Option<EventRecord>> {
        let row = sqlx::query("SELECT * FROM events WHERE id = $1").bind(id.0).fetch_optional(&self.pool).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn earlier_pending_delivery(&self, event: EventId, sink: &str) -> StoreResult<Option<EarlierDelivery>> {
        let row: Option<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT e.id, j.state, j.run_at
             FROM events me
             JOIN events e ON e.envelope_id = me.envelope_id AND e.id <> me.id
                 AND (e.created_at < me.created_at OR (e.created_at = me.created_at AND e.ordinal < me.ordinal))
             JOIN deliveries d ON d.event_id = e.id AND d.sink = $2 AND d.state = 'pending'
             JOIN jobs j ON j.kind = $3 AND j.unique_key = e.id::text || '/' || $2 AND j.state <> 'dead'
             WHERE me.id = $1
             ORDER BY e.created_at, e.ordinal
             LIMIT 1",
        )
        .bind(event.0)
        .bind(sink)
        .bind(JobKind::Deliver.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, state, run_at)| EarlierDelivery {
            event_id: EventId(id),
            next_attempt_at: (state != "running").then_some(run_at),
        }))
    }

    async fn envelope_has_sink(&self, envelope: EnvelopeId, sink: &str) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE e.envelope_id = $1 AND d.sink = $2 LIMIT 1",
        )
        .bind(envelope.to_string())
        .bind(sink)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn dead_deliveries(&self, filter: &DeliveryFilter, limit: u32) -> StoreResult<Vec<DeadDelivery>> {
        let rows = sqlx::query(DEAD_DELIVERIES)
            .bind(filter.event.map(|e| e.0))
            .bind(filter.sink.as_deref())
            .bind(filter.since)
            .bind(i64::from(limit))
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dead_delivery_from_row).collect()
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, attempts: u32) -> StoreResult<Vec<DeadDelivery>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!("{DEAD_DELIVERIES} FOR UPDATE OF j"))
            .bind(filter.event.map(|e| e.0))
            .bind(filter.sink.as_deref())
            .bind(filter.since)
            .bind(i64::MAX)
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let dead: Vec<DeadDelivery> = rows.iter().map(dead_delivery_from_row).collect::<StoreResult<_>>()?;
        if dead.is_empty() {
            return Ok(dead);
        }
        sqlx::query(
            "UPDATE jobs SET state = 'ready', max_attempts = attempts + $1, run_at = now(), finished_at = NULL,
                 updated_at = now()
             WHERE id = ANY($2) AND state = 'dead'",
        )
        .bind(i32_of(attempts))
        .bind(dead.iter().map(|d| d.job_id.0).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE deliveries d SET state = 'pending', updated_at = now()
             FROM UNNEST($1::uuid[], $2::text[]) AS t(event_id, sink)
             WHERE d.event_id = t.event_id AND d.sink = t.sink",
        )
        .bind(dead.iter().map(|d| d.event_id.0).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.sink.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, "replayed").await?;
        tx.commit().await?;
        self.signal.send_modify(|v| *v += 1);
        Ok(dead)
    }

    async fn disable_sink(&self, sink: &str, reason: &str) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO sink_status (sink, state, reason, changed_at) VALUES ($1, 'disabled', $2, now())
             ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .bind(clip(reason))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn enable_sink(&self, sink: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM sink_status WHERE sink = $1").bind(sink).execute(&self.pool).await?;
        Ok(result.rows_affected() == 1)
    }

    async fn disabled_sinks(&self) -> StoreResult<Vec<DisabledSink>> {
        let rows: Vec<(String, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT sink, reason, changed_at FROM sink_status WHERE state = 'disabled' ORDER BY sink")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(sink, reason, disabled_at)| DisabledSink { sink, reason, disabled_at }).collect())
    }
}
