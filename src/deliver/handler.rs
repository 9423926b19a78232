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
use crate::pipeline::{JobContext, JobError, JobHandler};
use crate::store::{DeliveryState, DeliveryUpdate, Job};

/// A job whose sink is not configured checks again after this.
const MISSING_SINK_RECHECK: Duration = Duration::from_secs(900);

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

/// The handler of `deliver` jobs.
pub struct Deliver {
    sinks: HashMap<String, SinkRuntime>,
    schedule: Vec<Duration>,
}

impl std::fmt::Debug for Deliver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sinks: Vec<_> = self.sinks.keys().collect();
        sinks.sort();
        f.debug_struct("Deliver").field("sinks", &sinks).finish_non_exhaustive()
    }
}

impl Deliver {
    /// Prepares every configured sink; nothing connects until the first delivery.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let delivery = &settings.delivery;
        let default_slots = settings.queue.workers.div_ceil(2).max(1);
        let mut sinks = HashMap::new();
        for sink in &settings.sinks {
            let timeout = sink.timeout.unwrap_or(delivery.timeout);
            let max_in_flight = sink.max_in_flight.unwrap_or(default_slots);
            let runtime = SinkRuntime {
                sink: build_sink(sink, timeout)?,
                timeout,
                circuit: Arc::new(Circuit::new(delivery.suspend_after, delivery.probe_every)),
                slots: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
            };
            sinks.insert(sink.name.clone(), runtime);
        }
        Ok(Self { sinks, schedule: delivery.schedule.iter().map(|w| w.0).collect() })
    }

    /// The circuits of this process's sinks, for the admin API to show.
    pub fn circuits(&self) -> SinkCircuits {
        SinkCircuits(Arc::new(self.sinks.iter().map(|(name, sink)| (name.clone(), sink.circuit.clone())).collect()))
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

/// Each configured sink's circuit breaker, shared with the running handler.
#[derive(Debug, Clone, Default)]
pub struct SinkCircuits(Arc<std::collections::BTreeMap<String, Arc<Circuit>>>);

impl SinkCircuits {
    /// `None` for a sink this process does not know.
    pub fn state(&self, sink: &str) -> Option<CircuitState> {
        self.0.get(sink).map(|circuit| circuit.state_at(Instant::now()))
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
        let Some(sink) = self.sinks.get(&name) else {
            return Err(JobError::park(
                format!("sink {name:?} is not configured ([[sinks]]); its deliveries wait until it is"),
                MISSING_SINK_RECHECK,
            ));
        };
        let row = store.deliveries_for(event_id).await?.into_iter().find(|d| d.sink == name);
        if row.as_ref().is_some_and(|d| d.state == DeliveryState::Delivered) {
            // Enqueued again after its first job was pruned: nothing to send.
            return Ok(());
        }
        let update = |state, last_error: Option<String>| DeliveryUpdate {
            event_id,
            sink: name.clone(),
            state,
            attempts: job.attempts,
            last_error,
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
                self.retry(job, ctx, update(DeliveryState::Pending, Some(message.clone())), message, retry_after).await
            }
            Err(SinkError::Failed { message, retry_after }) => {
                if sink.circuit.failure(probe, Instant::now()) == Some(Transition::Suspended) {
                    tracing::warn!(
                        sink = %name, error = %message,
                        "sink SUSPENDED: every delivery failed for delivery.suspend_after; deliveries wait \
                         and one probe is sent every delivery.probe_every"
                    );
                }
                self.retry(job, ctx, update(DeliveryState::Pending, Some(message.clone())), message, retry_after).await
            }
        }
    }

    /// Records a failed attempt and asks for the retry; on the last
    /// attempt the delivery is recorded dead (the job becomes a dead letter).
    async fn retry(
        &self,
        job: &Job,
        ctx: &JobContext,
        mut update: DeliveryUpdate,
        message: String,
        retry_after: Option<Duration>,
    ) -> Result<(), JobError> {
        if job.attempts >= job.max_attempts {
            update.state = DeliveryState::Dead;
        }
        ctx.store.record_delivery(&update).await?;
        let after = retry_after.map(|d| d.clamp(Duration::from_secs(1), MAX_RETRY_AFTER));
        Err(JobError::Retry { message, after: Some(after.unwrap_or_else(|| self.retry_delay(job.attempts))) })
    }
}
