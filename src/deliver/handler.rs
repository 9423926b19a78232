//! The `deliver` job: one event to one sink.
//!
//! Before sending, in this order: the sink must be configured (else the
//! job is parked for an operator) and not disabled (else the delivery is
//! dead); an earlier event of the same envelope still pending for the same
//! sink makes this one wait (events reach a sink in the order they were
//! created); the sink must have a free slot (`max_in_flight`) and a closed
//! circuit. Waiting is a deferral: no attempt is used and no worker is
//! held. Each send is bounded by the sink's timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::RngExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::circuit::{Admission, Circuit, CircuitState, Transition};
use super::{OutgoingEvent, Sink, SinkError, build_sink};
use crate::config::Settings;
use crate::jobs::{DeliveryJob, JobKind, JobPayload};
use crate::live::Live;
use crate::pipeline::{JobContext, JobError, JobHandler};
use crate::store::{DeliveryState, DeliveryUpdate, Job};

/// How long a delivery waits for a busy sink's free slot, at least.
const BUSY_WAIT: Duration = Duration::from_millis(500);

/// How soon a delivery held back by an earlier, running one looks again.
const ORDER_RECHECK: Duration = Duration::from_millis(200);

/// Longest `Retry-After` honoured; a longer one is most likely a mistake.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The `outcome` label of `countersign_deliveries_total`.
pub const DELIVERY_OUTCOMES: [&str; 4] = ["delivered", "gone", "throttled", "failed"];

struct SinkRuntime {
    sink: Box<dyn Sink>,
    timeout: Duration,
    circuit: Arc<Circuit>,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
}

/// A delivery for a sink this process never knew checks again after this.
const MISSING_SINK_RECHECK: Duration = Duration::from_secs(900);

/// The sinks and retry schedule in force; a reload replaces them whole.
struct SinkSet {
    sinks: HashMap<String, SinkRuntime>,
    /// Sinks a reload of this process removed (and none put back since):
    /// their queued deliveries become dead letters.
    removed: std::collections::HashSet<String>,
    schedule: Vec<Duration>,
    /// The circuit settings the sinks' breakers were built with.
    circuit: (Duration, Duration),
}

impl SinkSet {
    /// Every configured sink, prepared; nothing connects until the first
    /// delivery. A sink that `previous` already had keeps its circuit
    /// breaker (a suspension survives a reload) and, while its
    /// `max_in_flight` is unchanged, its in-flight slots.
    fn build(settings: &Settings, previous: Option<&SinkSet>) -> anyhow::Result<Self> {
        let delivery = &settings.delivery;
        let default_slots = settings.queue.workers.div_ceil(2).max(1);
        let circuit_settings = (delivery.suspend_after, delivery.probe_every);
        let mut sinks = HashMap::new();
        for sink in &settings.sinks {
            let timeout = sink.timeout.unwrap_or(delivery.timeout);
            let max_in_flight = sink.max_in_flight.unwrap_or(default_slots);
            let before = previous.and_then(|p| p.sinks.get(&sink.name));
            // A breaker is kept (with its state) while its settings are; new
            // settings start a fresh one.
            let circuit = match before {
                Some(b) if previous.is_some_and(|p| p.circuit == circuit_settings) => b.circuit.clone(),
                _ => Arc::new(Circuit::new(delivery.suspend_after, delivery.probe_every)),
            };
            let slots = match before {
                Some(b) if b.max_in_flight == max_in_flight => b.slots.clone(),
                _ => Arc::new(Semaphore::new(max_in_flight)),
            };
            let runtime = SinkRuntime { sink: build_sink(sink, timeout)?, timeout, circuit, slots, max_in_flight };
            sinks.insert(sink.name.clone(), runtime);
        }
        let mut removed = std::collections::HashSet::new();
        if let Some(previous) = previous {
            removed.extend(previous.removed.iter().cloned());
            removed.extend(previous.sinks.keys().cloned());
        }
        removed.retain(|name| !sinks.contains_key(name));
        Ok(Self {
            sinks,
            removed,
            schedule: delivery.schedule.iter().map(|w| w.0).collect(),
            circuit: circuit_settings,
        })
    }

    fn circuits(&self) -> std::collections::BTreeMap<String, Arc<Circuit>> {
        self.sinks.iter().map(|(name, sink)| (name.clone(), sink.circuit.clone())).collect()
    }

    /// The wait after failed attempt `attempt` (1-based): its schedule step
    /// (the last one for attempts past the schedule, as after a replay),
    /// jittered by ±20 % so deliveries that failed together spread out.
    fn retry_delay(&self, attempt: u32) -> Duration {
        let index = usize::try_from(attempt.max(1) - 1).unwrap_or(usize::MAX);
        let Some(step) = self.schedule.get(index).or(self.schedule.last()) else { return Duration::from_secs(1) };
        step.mul_f64(rand::rng().random_range(0.8..=1.2))
    }
}

/// The handler of `deliver` jobs.
pub struct Deliver {
    current: Live<SinkSet>,
    circuits: SinkCircuits,
}

impl std::fmt::Debug for Deliver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.current();
        let mut sinks: Vec<_> = current.sinks.keys().collect();
        sinks.sort();
        f.debug_struct("Deliver").field("sinks", &sinks).finish_non_exhaustive()
    }
}

/// Sinks built from a new configuration, not yet in force.
pub struct PreparedSinks(SinkSet);

impl std::fmt::Debug for PreparedSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSinks").field("sinks", &self.0.sinks.len()).finish()
    }
}

impl Deliver {
    /// Prepares every configured sink; nothing connects until the first delivery.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let set = SinkSet::build(settings, None)?;
        let circuits = SinkCircuits(Live::new(set.circuits()));
        Ok(Self { current: Live::new(set), circuits })
    }

    /// Builds the sinks of `settings` beside those in force, for [`Deliver::install`].
    pub fn prepare(&self, settings: &Settings) -> anyhow::Result<PreparedSinks> {
        Ok(PreparedSinks(SinkSet::build(settings, Some(&self.current.current()))?))
    }

    /// Puts prepared sinks in force. Deliveries already running finish on
    /// the sink they started with; a removed sink's connection closes when
    /// its last one ends.
    pub fn install(&self, prepared: PreparedSinks) {
        self.circuits.0.replace(prepared.0.circuits());
        self.current.replace(prepared.0);
    }

    /// The circuits of the sinks in force, for the admin API to show.
    pub fn circuits(&self) -> SinkCircuits {
        self.circuits.clone()
    }
}

/// Each configured sink's circuit breaker, shared with the running handler.
#[derive(Debug, Clone)]
pub struct SinkCircuits(Live<std::collections::BTreeMap<String, Arc<Circuit>>>);

impl Default for SinkCircuits {
    fn default() -> Self {
        Self(Live::new(std::collections::BTreeMap::new()))
    }
}

impl SinkCircuits {
    /// `None` for a sink this process does not know.
    pub fn state(&self, sink: &str) -> Option<CircuitState> {
        self.0.current().get(sink).map(|circuit| circuit.state_at(Instant::now()))
    }
}

fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::rng().random_range(1.0..=1.5))
}

#[async_trait]
impl JobHandler for Deliver {
    fn kind(&self) -> &'static str {
        JobKind::Deliver.as_str()
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let delivery = DeliveryJob::read(&job.kind, &job.payload)?;
        let span = tracing::info_span!("delivery", event_id = %delivery.event_id, sink = %delivery.sink);
        self.deliver(job, ctx, delivery).instrument(span).await
    }
}

impl Deliver {
    async fn deliver(&self, job: &Job, ctx: &JobContext, delivery: DeliveryJob) -> Result<(), JobError> {
        let DeliveryJob { event_id, sink: name } = delivery;
        let store = &ctx.store;
        let sinks = self.current.current();
        let update = |state, last_error: Option<String>| DeliveryUpdate {
            event_id,
            sink: name.clone(),
            state,
            attempts: job.attempts,
            last_error,
        };
        let row = store.deliveries_for(event_id).await?.into_iter().find(|d| d.sink == name);
        if row.as_ref().is_some_and(|d| d.state == DeliveryState::Delivered) {
            // Enqueued again after its first job was pruned: nothing to send.
            return Ok(());
        }
        let Some(sink) = sinks.sinks.get(&name) else {
            if sinks.removed.contains(&name) {
                // A reload here removed it with deliveries still queued:
                // kept, visible and replayable, never dropped.
                let message = format!(
                    "sink {name:?} is no longer configured ([[sinks]]); add it again and run \
                     `countersign replay --sink {name}` to send this delivery"
                );
                store.record_delivery(&update(DeliveryState::Dead, Some(message.clone()))).await?;
                return Err(JobError::Fatal(message));
            }
            // Never known here: another replica may have it already (a
            // rolling change), or this one will after its reload.
            return Err(JobError::park(
                format!("sink {name:?} is not configured on this replica ([[sinks]]); its delivery waits until it is"),
                MISSING_SINK_RECHECK,
            ));
        };
        if let Some(disabled) = store.disabled_sinks().await?.into_iter().find(|s| s.sink == name) {
            let message = format!(
                "sink {name:?} is disabled since {} ({}); replay its deliveries once it is fixed",
                disabled.disabled_at, disabled.reason
            );
            store.record_delivery(&update(DeliveryState::Dead, Some(message.clone()))).await?;
            return Err(JobError::Fatal(message));
        }
        if let Some(earlier) = store.earlier_pending_delivery(event_id, &name).await? {
            let now = chrono::Utc::now();
            let until = earlier.next_attempt_at.filter(|at| *at > now).unwrap_or(now);
            // While the earlier one runs there is no time to wait for: look again shortly.
            let wait = (until - now).to_std().unwrap_or_default().max(ORDER_RECHECK);
            return Err(JobError::defer(
                format!("waiting for the earlier event {} of this envelope to reach sink {name:?}", earlier.event_id),
                jittered(wait),
            ));
        }
        let Ok(_slot) = sink.slots.clone().try_acquire_owned() else {
            return Err(JobError::defer(
                format!("sink {name:?} has {} deliveries in flight (max_in_flight)", sink.max_in_flight),
                jittered(BUSY_WAIT),
            ));
        };
        let probe = match sink.circuit.admit(Instant::now()) {
            Admission::Go { probe } => probe,
            Admission::Wait(wait) => {
                return Err(JobError::defer(
                    format!("sink {name:?} is suspended after failing every delivery; it is probed again soon"),
                    jittered(wait),
                ));
            }
        };
        let Some(event) = store.event(event_id).await? else {
            return Err(JobError::Fatal(format!("event {event_id} is not in the store")));
        };
        let body = serde_json::to_vec(&event.body).map_err(|e| JobError::Fatal(format!("event body: {e}")))?;
        let outgoing = OutgoingEvent { id: event_id, event_type: &event.event_type, body: &body };
        let started = Instant::now();
        let result = match tokio::time::timeout(sink.timeout, sink.sink.deliver(&outgoing)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::failed(format!("sink {name:?} did not answer within {:?}", sink.timeout))),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // One of DELIVERY_OUTCOMES.
        let outcome = match &result {
            Ok(()) => "delivered",
            Err(SinkError::Gone(_)) => "gone",
            Err(SinkError::Throttled { .. }) => "throttled",
            Err(SinkError::Failed { .. }) => "failed",
        };
        let labels = [("sink", name.clone()), ("outcome", outcome.to_string())];
        metrics::counter!("countersign_deliveries_total", &labels).increment(1);
        metrics::histogram!("countersign_delivery_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
        if result.is_ok() {
            // Outbox to consumer: what a consumer waits after the envelope was processed.
            let waited = (chrono::Utc::now() - event.created_at).num_milliseconds().max(0) as f64 / 1e3;
            metrics::histogram!("countersign_event_delivery_latency_seconds", "sink" => name.clone()).record(waited);
        }
        match result {
            Ok(()) => {
                if sink.circuit.success() == Some(Transition::Recovered) {
                    tracing::info!(sink = %name, "sink answers again; its suspension is lifted");
                }
                let mut tx = store.begin().await?;
                tx.record_delivery(&update(DeliveryState::Delivered, None)).await?;
                ctx.complete_with(tx).await?;
                tracing::info!(attempt = job.attempts, elapsed_ms, "event delivered");
                Ok(())
            }
            Err(SinkError::Gone(message)) => {
                sink.circuit.success();
                if store.disable_sink(&name, &message).await? {
                    tracing::error!(
                        sink = %name, reason = %message,
                        "sink DISABLED: the endpoint says it is gone (410); its deliveries become dead letters \
                         until an operator fixes it and runs `countersign replay --sink {name}`"
                    );
                }
                store.record_delivery(&update(DeliveryState::Dead, Some(message.clone()))).await?;
                Err(JobError::Fatal(message))
            }
            Err(SinkError::Throttled { message, retry_after }) => {
                // A sink that answers, even to say "slow down", is up.
                sink.circuit.success();
                self.retry(
                    job,
                    ctx,
                    &sinks,
                    update(DeliveryState::Pending, Some(message.clone())),
                    message,
                    retry_after,
                )
                .await
            }
            Err(SinkError::Failed { message, retry_after }) => {
                if sink.circuit.failure(probe, Instant::now()) == Some(Transition::Suspended) {
                    tracing::warn!(
                        sink = %name, error = %message,
                        "sink SUSPENDED: every delivery failed for delivery.suspend_after; deliveries wait \
                         and one probe is sent every delivery.probe_every"
                    );
                }
                self.retry(
                    job,
                    ctx,
                    &sinks,
                    update(DeliveryState::Pending, Some(message.clone())),
                    message,
                    retry_after,
                )
                .await
            }
        }
    }

    /// Records a failed attempt and asks for the retry; on the last
    /// attempt the delivery is recorded dead (the job becomes a dead letter).
    async fn retry(
        &self,
        job: &Job,
        ctx: &JobContext,
        sinks: &SinkSet,
        mut update: DeliveryUpdate,
        message: String,
        retry_after: Option<Duration>,
    ) -> Result<(), JobError> {
        if job.attempts >= job.max_attempts {
            update.state = DeliveryState::Dead;
        }
        ctx.store.record_delivery(&update).await?;
        let after = retry_after.map(|d| d.clamp(Duration::from_secs(1), MAX_RETRY_AFTER));
        Err(JobError::Retry { message, after: Some(after.unwrap_or_else(|| sinks.retry_delay(job.attempts))) })
    }
}
