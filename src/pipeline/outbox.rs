//! The outbox: planned events, their deliveries and the `deliver` jobs,
//! written into the transaction that completes the job that planned them
//! (`process_envelope`, or an agreement's send, void or lifecycle job).
//! Either all of it commits with the job's completion, or none of it does.

use crate::events::PlannedEvent;
use crate::jobs::{DeliveryJob, JobPayload};
use crate::store::{Inserted, NewJob, StoreResult, StoreTx};

/// What [`write_outbox`] added; zero on a rerun that found everything in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxWritten {
    pub events: usize,
    pub deliveries: usize,
}

/// Writes `events` into `tx`, each delivery given `max_attempts`: each event (kept as it is if it already
/// exists), a delivery row per (event, sink) and a `deliver` job per
/// delivery. Idempotent: a rerun adds only what is missing, for example
/// the delivery to a sink added to a rule since.
pub async fn write_outbox(
    tx: &mut dyn StoreTx,
    events: &[PlannedEvent],
    max_attempts: u32,
) -> StoreResult<OutboxWritten> {
    let mut written = OutboxWritten::default();
    let mut jobs: Vec<NewJob> = Vec::new();
    for planned in events {
        if let Inserted::Created(_) = tx.insert_event(&planned.event).await? {
            written.events += 1;
        }
        for sink in &planned.sinks {
            if let Inserted::Created(()) = tx.insert_delivery(planned.event.id, sink).await? {
                written.deliveries += 1;
            }
            jobs.push(DeliveryJob { event_id: planned.event.id, sink: sink.clone() }.job(max_attempts));
        }
    }
    tx.enqueue_all(&jobs).await?;
    Ok(written)
}
