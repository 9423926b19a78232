//! The worker loop: claim a job, keep its lease alive while the handler runs,
//! record the outcome. Idle workers sleep until the store signals new work or
//! the next scheduled job is due, never polling in a loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Backoff;

/// The `outcome` label of `countersign_job_runs_total`.
pub const RUN_OUTCOMES: [&str; 6] = ["succeeded", "failed", "fatal", "parked", "deferred", "abandoned"];
use crate::config::QueueSettings;
use crate::store::{ClaimedJob, Deferral, FailOutcome, Job, Lease, Retry, Store, StoreError, StoreTx};

/// Longest an idle worker sleeps without being woken; a safety net for a
/// missed wake-up (for example a PostgreSQL listener reconnecting).
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// What a worker asks of the pool's batching tasks, and where the answer
/// (or the store's error) goes.
type Request<Q, A> = (Q, oneshot::Sender<Result<A, Arc<str>>>);

/// Where a worker sends what the pool writes for several workers at once:
/// a request for a job (answered with one, or none when nothing is due) and
/// a deferral (answered with whether its lease was still held).
#[derive(Clone)]
struct Lanes {
    claims: mpsc::Sender<Request<(), Option<ClaimedJob>>>,
    deferrals: mpsc::Sender<Request<Deferral, bool>>,
}

/// Sends `question` down `lane` and waits for the answer.
async fn ask<Q, A>(lane: &mpsc::Sender<Request<Q, A>>, question: Q) -> Result<A, Arc<str>> {
    let stopped = || Arc::<str>::from("the worker pool's batching task has stopped");
    let (reply, answer) = oneshot::channel();
    lane.send((question, reply)).await.map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

/// Waits for one request, then takes every other already waiting: the
/// requests that arrived while the previous batch was being written.
async fn next_batch<T>(requests: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let mut batch = vec![requests.recv().await?];
    while let Ok(next) = requests.try_recv() {
        batch.push(next);
    }
    Some(batch)
}

/// Answers every request of a batch whose write failed with the same error.
fn fail_all<Q, A>(batch: Vec<Request<Q, A>>, error: &StoreError) {
    let error: Arc<str> = Arc::from(error.to_string());
    for (_, reply) in batch {
        let _ = reply.send(Err(error.clone()));
    }
}

/// Why an attempt did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying later (a timeout, a 5xx, a lost connection).
    #[error("{message}")]
    Retry { message: String, after: Option<Duration> },
    /// Retrying cannot help (a malformed payload): dead-letter now.
    #[error("{0}")]
    Fatal(String),
    /// Another worker holds the job now; nothing of this attempt was kept.
    #[error("lease lost")]
    LeaseLost,
    /// Not a failure: the job cannot run yet (a rate-limit pause, missing
    /// consent, an open circuit). It waits until `until` without using up
    /// an attempt; `parked` marks a wait that needs an operator.
    #[error("{reason}")]
    Defer { reason: String, until: DateTime<Utc>, parked: bool },
}

/// A job whose payload does not read as its kind's type will never run.
impl From<crate::jobs::PayloadError> for JobError {
    fn from(error: crate::jobs::PayloadError) -> Self {
        Self::Fatal(error.to_string())
    }
}

impl JobError {
    pub fn retry(message: impl std::fmt::Display) -> Self {
        Self::Retry { message: message.to_string(), after: None }
    }

    /// Waits `wait` without counting the attempt.
    pub fn defer(reason: impl std::fmt::Display, wait: Duration) -> Self {
        let until = chrono::Duration::from_std(wait).ok().and_then(|w| Utc::now().checked_add_signed(w));
        Self::Defer { reason: reason.to_string(), until: until.unwrap_or(DateTime::<Utc>::MAX_UTC), parked: false }
    }

    /// Parks the job (it waits on an operator) and rechecks after `wait`.
    pub fn park(reason: impl std::fmt::Display, wait: Duration) -> Self {
        match Self::defer(reason, wait) {
            Self::Defer { reason, until, .. } => Self::Defer { reason, until, parked: true },
            other => other,
        }
    }
}

impl From<StoreError> for JobError {
    fn from(error: StoreError) -> Self {
        Self::retry(error)
    }
}

/// Runs one kind of job.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    /// Does the work. A handler whose results must appear atomically with
    /// the job's completion writes them in a transaction and passes it to
    /// [`JobContext::complete_with`]; otherwise the worker completes the job
    /// after `Ok`.
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError>;
}

/// What a handler gets besides its job.
#[derive(Debug)]
pub struct JobContext {
    pub store: Arc<dyn Store>,
    lease: Lease,
    completed: AtomicBool,
}

impl JobContext {
    /// Completes the job inside `tx` and commits, so the handler's writes and
    /// the completion land together. Fails with [`JobError::LeaseLost`] (and
    /// rolls everything back) if another worker took the job meanwhile.
    pub async fn complete_with(&self, mut tx: Box<dyn StoreTx>) -> Result<(), JobError> {
        if !tx.complete_job(&self.lease).await? {
            return Err(JobError::LeaseLost);
        }
        tx.commit().await?;
        self.completed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A set of workers in this process sharing one store.
#[derive(Clone)]
pub struct WorkerPool {
    store: Arc<dyn Store>,
    handlers: Arc<HashMap<&'static str, Arc<dyn JobHandler>>>,
    settings: QueueSettings,
    name: String,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("name", &self.name).field("kinds", &self.kinds()).finish()
    }
}

impl WorkerPool {
    pub fn new(store: Arc<dyn Store>, settings: QueueSettings, handlers: Vec<Arc<dyn JobHandler>>) -> Self {
        let handlers = handlers.into_iter().map(|h| (h.kind(), h)).collect();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "countersign".into());
        let name = format!("{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Self { store, handlers: Arc::new(handlers), settings, name }
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.handlers.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }

    /// Runs `queue.workers` workers until `stop` is cancelled. A job that is
    /// running then may finish until `abort` is cancelled; after that it is
    /// abandoned and its lease released so another worker can take it.
    pub async fn run(self, stop: CancellationToken, abort: CancellationToken) {
        if self.handlers.is_empty() {
            return;
        }
        let (claims, claim_requests) = mpsc::channel(self.settings.workers);
        let (deferrals, defer_requests) = mpsc::channel(self.settings.workers);
        let claimer = tokio::spawn(self.clone().claimer(claim_requests));
        let deferrer = tokio::spawn(self.clone().deferrer(defer_requests));
        let lanes = Lanes { claims, deferrals };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.settings.workers {
            let pool = self.clone();
            let (stop, abort, lanes) = (stop.clone(), abort.clone(), lanes.clone());
            tasks.spawn(async move { pool.work(lanes, stop, abort).await });
        }
        drop(lanes);
        while tasks.join_next().await.is_some() {}
        let _ = claimer.await;
        let _ = deferrer.await;
    }

    /// Writes the deferrals of every worker that deferred a job while the
    /// previous batch was being written, in one commit. A job that cannot
    /// run yet (a rate-limit pause, missing consent) costs a claim and a
    /// deferral; during a burst of notifications every new job does, and
    /// these writes compete with ingest for the store.
    async fn deferrer(self, mut requests: mpsc::Receiver<Request<Deferral, bool>>) {
        while let Some(batch) = next_batch(&mut requests).await {
            let deferrals: Vec<Deferral> = batch.iter().map(|(deferral, _)| deferral.clone()).collect();
            match self.store.defer_jobs(&deferrals).await {
                Ok(held) => {
                    for ((_, reply), held) in batch.into_iter().zip(held) {
                        let _ = reply.send(Ok(held));
                    }
                }
                Err(error) => fail_all(batch, &error),
            }
        }
    }

    /// Claims for every worker that asks while the previous claim runs, in
    /// one transaction: one claim's writes (the job rows, their indexes,
    /// their attempt rows) share a commit instead of each paying for its own.
    async fn claimer(self, mut requests: mpsc::Receiver<Request<(), Option<ClaimedJob>>>) {
        let kinds = self.kinds();
        while let Some(mut batch) = next_batch(&mut requests).await {
            batch.retain(|(_, reply)| !reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let limit = u32::try_from(batch.len()).unwrap_or(u32::MAX);
            match self.store.claim_jobs(&kinds, &self.name, self.settings.lease, limit).await {
                Ok(jobs) => {
                    let mut jobs = jobs.into_iter();
                    for (_, reply) in batch {
                        // A worker that stopped waiting hands its job straight back.
                        if let Err(Ok(Some(unwanted))) = reply.send(Ok(jobs.next())) {
                            self.hand_back(&unwanted).await;
                        }
                    }
                }
                Err(error) => fail_all(batch, &error),
            }
        }
    }

    async fn hand_back(&self, claimed: &ClaimedJob) {
        if let Err(error) = self.store.release_job(&claimed.lease).await {
            tracing::warn!(%error, job_id = %claimed.job.id, "could not hand back a claimed job; its lease will expire");
        }
    }

    async fn work(&self, lanes: Lanes, stop: CancellationToken, abort: CancellationToken) {
        let kinds = self.kinds();
        let mut signal = self.store.job_signal();
        let mut store_errors = 0u32;
        while !stop.is_cancelled() {
            signal.borrow_and_update();
            match ask(&lanes.claims, ()).await {
                Ok(Some(claimed)) => {
                    store_errors = 0;
                    self.execute(claimed, &abort, &lanes).await;
                }
                Ok(None) => {
                    store_errors = 0;
                    let wait = match self.store.next_due(&kinds).await {
                        Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(IDLE_RECHECK),
                        Ok(None) => IDLE_RECHECK,
                        Err(error) => {
                            tracing::warn!(%error, "cannot read the queue's next due time");
                            IDLE_RECHECK
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = signal.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(error) => {
                    store_errors = store_errors.saturating_add(1);
                    let pause = Duration::from_millis(250 * u64::from(store_errors.min(40)));
                    tracing::warn!(%error, ?pause, "cannot claim jobs; the store may be down");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    async fn execute(&self, claimed: ClaimedJob, abort: &CancellationToken, lanes: &Lanes) {
        let ClaimedJob { job, lease } = claimed;
        let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else { return };
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            kind = %job.kind,
            attempt = job.attempts,
            envelope_id = tracing::field::Empty,
        );
        async {
            let ctx = JobContext { store: self.store.clone(), lease, completed: AtomicBool::new(false) };
            let started = std::time::Instant::now();
            let result = self.run_with_lease(&*handler, &job, &ctx, abort).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            // One of RUN_OUTCOMES.
            let outcome = match &result {
                Some(Ok(())) => "succeeded",
                Some(Err(JobError::Retry { .. })) => "failed",
                Some(Err(JobError::Fatal(_))) => "fatal",
                Some(Err(JobError::Defer { parked: true, .. })) => "parked",
                Some(Err(JobError::Defer { .. })) => "deferred",
                Some(Err(JobError::LeaseLost)) | None => "abandoned",
            };
            let labels = [("kind", job.kind.clone()), ("outcome", outcome.to_string())];
            metrics::counter!("countersign_job_runs_total", &labels).increment(1);
            metrics::histogram!("countersign_job_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
            match result {
                Some(Ok(())) => self.finish(&ctx, elapsed_ms).await,
                Some(Err(error)) => self.fail(&job, &lease, error, elapsed_ms, lanes).await,
                None => {}
            }
        }
        .instrument(span)
        .await
    }

    /// Runs the handler while a separate task keeps its lease alive.
    /// `None`: the attempt was abandoned (shutdown deadline, or the lease
    /// lost or no longer renewable) and there is nothing to record.
    ///
    /// The heartbeat runs beside the handler, never inside its poll loop: a
    /// heartbeat waiting on a row the handler's own transaction holds must
    /// not stop the handler from committing (that would deadlock).
    async fn run_with_lease(
        &self,
        handler: &dyn JobHandler,
        job: &Job,
        ctx: &JobContext,
        abort: &CancellationToken,
    ) -> Option<Result<(), JobError>> {
        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(keep_alive(self.store.clone(), ctx.lease, self.settings.lease, lost.clone()));
        let outcome = {
            let run = handler.run(job, ctx);
            tokio::pin!(run);
            tokio::select! {
                result = &mut run => Some(Some(result)),
                _ = lost.cancelled() => Some(None),
                _ = abort.cancelled() => None,
            }
            // The handler future is dropped here, before any release below.
        };
        heartbeat.abort();
        match outcome {
            Some(result) => result,
            None => {
                match self.store.release_job(&ctx.lease).await {
                    Ok(_) => tracing::info!("shutdown deadline reached; job released for another worker"),
                    Err(error) => tracing::warn!(%error, "could not release the job; its lease will expire"),
                }
                None
            }
        }
    }

    async fn finish(&self, ctx: &JobContext, elapsed_ms: u64) {
        if ctx.completed.load(Ordering::SeqCst) {
            tracing::info!(elapsed_ms, outcome = "succeeded", "job done");
            return;
        }
        match self.store.complete_job(&ctx.lease).await {
            Ok(true) => tracing::info!(elapsed_ms, outcome = "succeeded", "job done"),
            Ok(false) => tracing::warn!(elapsed_ms, "job finished but its lease was lost; another worker has it"),
            // The lease will expire and the job run again: handlers are idempotent.
            Err(error) => tracing::error!(%error, "could not record the job as done"),
        }
    }

    async fn fail(&self, job: &Job, lease: &Lease, error: JobError, elapsed_ms: u64, lanes: &Lanes) {
        let retry = match &error {
            JobError::LeaseLost => {
                tracing::warn!(elapsed_ms, "lease lost while finishing; another worker has the job");
                return;
            }
            JobError::Defer { reason, until, parked } => {
                let deferral = Deferral { lease: *lease, reason: reason.clone(), until: *until, parked: *parked };
                match ask(&lanes.deferrals, deferral).await {
                    Ok(true) => {
                        tracing::info!(elapsed_ms, reason = %reason, until = %until, parked, outcome = "deferred", "job deferred")
                    }
                    Ok(false) => tracing::warn!(elapsed_ms, "job deferred after its lease was lost"),
                    Err(error) => {
                        tracing::error!(%error, reason = %reason, "could not defer the job; its lease will expire")
                    }
                }
                return;
            }
            JobError::Fatal(_) => Retry::Never,
            JobError::Retry { after, .. } => {
                let backoff = Backoff { base: self.settings.backoff_base, cap: self.settings.backoff_cap };
                let wait = after.unwrap_or_else(|| backoff.delay(job.attempts, &mut rand::rng()));
                let at = chrono::Duration::from_std(wait).ok().and_then(|wait| Utc::now().checked_add_signed(wait));
                Retry::At(at.unwrap_or(DateTime::<Utc>::MAX_UTC))
            }
        };
        let message = error.to_string();
        match self.store.fail_job(lease, &message, retry).await {
            Ok(FailOutcome::WillRetry { at }) => {
                tracing::warn!(elapsed_ms, error = %message, retry_at = %at, outcome = "retry", "job failed")
            }
            Ok(FailOutcome::Dead) => {
                tracing::error!(elapsed_ms, error = %message, outcome = "dead", "job failed for good; now a dead letter")
            }
            Ok(FailOutcome::LeaseLost) => tracing::warn!(elapsed_ms, "job failed after its lease was lost"),
            Err(store_error) => tracing::error!(%store_error, error = %message, "could not record the job's failure"),
        }
    }
}

/// Renews `lease` every third of its length. Cancels `lost` when the lease
/// went to another worker, or when it could not be renewed for a whole lease
/// length (a store outage): past that point another replica may already run
/// the job, so this attempt must stop.
async fn keep_alive(store: Arc<dyn Store>, lease: Lease, length: Duration, lost: CancellationToken) {
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(length / 3).await;
        match store.heartbeat(&lease, length).await {
            Ok(true) => renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!("lease lost to another worker; abandoning this attempt");
                lost.cancel();
                return;
            }
            Err(error) if renewed.elapsed() >= length => {
                tracing::warn!(%error, "lease could not be renewed in time; abandoning this attempt");
                lost.cancel();
                return;
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed; will try again"),
        }
    }
}
