//! Replaying dead deliveries, shared by `countersign replay` and the admin
//! API so both do exactly the same thing.

use serde::Serialize;

use crate::store::{DeadDelivery, DeliveryFilter, Store, StoreResult};

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Sinks that were disabled and are enabled again.
    pub enabled_sinks: Vec<String>,
    /// The deliveries queued again (their jobs ready now, their rows pending).
    pub deliveries: Vec<DeadDelivery>,
}

/// Replays the dead deliveries `filter` matches with `attempts` more
/// attempts. Their sinks are enabled first: a delivery queued to a sink that
/// is still disabled would die again at once.
pub async fn replay_deliveries(store: &dyn Store, filter: &DeliveryFilter, attempts: u32) -> StoreResult<Replayed> {
    let dead = store.dead_deliveries(filter, u32::MAX).await?;
    let mut sinks: Vec<&str> = dead.iter().map(|d| d.sink.as_str()).collect();
    sinks.sort_unstable();
    sinks.dedup();
    let mut enabled_sinks = Vec::new();
    for sink in sinks {
        if store.enable_sink(sink).await? {
            enabled_sinks.push(sink.to_string());
        }
    }
    let deliveries = store.replay_deliveries(filter, attempts).await?;
    Ok(Replayed { enabled_sinks, deliveries })
}
