//! One specification of the store, run against SQLite and PostgreSQL alike.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DurationRound, TimeDelta, Utc};
use countersign::config::QueueSettings;
use countersign::domain::{AgreementStatus, RequestKey};
use countersign::ids::{AccountId, AgreementId, EnvelopeId, EventId, JobId, NotificationId};
use countersign::pipeline::{JobContext, JobError, JobHandler, WorkerPool};
use countersign::store::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(30);

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::common::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::common::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

conformance!(
    an_agreement_is_stored_once_per_key_and_its_status_only_moves_forward,
    four_workers_complete_a_thousand_jobs_exactly_once,
    a_job_whose_lease_expired_is_claimed_again,
    a_claim_hands_jobs_out_in_due_order_not_insert_order,
    a_failed_job_waits_for_its_retry_time,
    a_job_out_of_attempts_becomes_a_dead_letter_keeping_its_errors,
    a_job_whose_worker_keeps_dying_becomes_a_dead_letter,
    a_duplicate_unique_key_is_refused,
    an_enqueue_rolled_back_with_its_transaction_leaves_no_job,
    completion_after_losing_the_lease_keeps_nothing,
    heartbeat_keeps_a_long_job_from_being_claimed,
    a_released_job_is_claimable_at_once_without_spending_an_attempt,
    pruning_deletes_only_old_finished_jobs,
    an_enqueue_wakes_waiting_workers,
    a_redelivered_notification_is_recorded_once,
    an_ignored_notification_is_found_by_its_id_not_by_its_envelope,
    envelope_documents_events_and_deliveries_round_trip,
    readiness_reports_a_migrated_store,
    batch_writes_match_single_writes,
    a_recorded_batch_writes_only_what_its_new_notifications_bring,
    a_claim_with_nothing_due_does_not_wait_for_a_write,
    a_batch_with_thousands_of_documents_is_recorded_whole,
    a_batch_that_fails_records_nothing,
    an_envelope_is_neither_downgraded_nor_taken_over,
    a_notification_naming_another_accounts_envelope_writes_nothing,
    reclaiming_one_expired_job_leaves_the_others_history_alone,
    a_deferred_job_waits_without_spending_an_attempt,
    a_parked_job_waits_until_woken,
    deferrals_written_together_leave_a_lost_lease_alone,
    a_recurring_job_is_armed_again_only_once_finished,
    a_reconciliation_checkpoint_only_moves_forward,
    an_outbox_write_yields_events_deliveries_and_one_job_each,
    a_delivery_outcome_is_recorded_on_its_row,
    an_earlier_pending_event_holds_back_later_ones_to_the_same_sink,
    dead_deliveries_are_listed_and_replayed_by_event_sink_and_time,
    a_disabled_sink_stays_disabled_until_enabled,
    envelopes_are_listed_by_status_most_recently_changed_first_a_page_at_a_time,
);

fn job(kind: &str, n: u32) -> NewJob {
    NewJob::new(kind, json!({ "n": n }), 5)
}

async fn claim_one(store: &dyn Store, kind: &str, worker: &str, lease: Duration) -> Option<ClaimedJob> {
    store.claim_jobs(&[kind], worker, lease, 1).await.unwrap().into_iter().next()
}

/// Counts how often each job ran.
struct Counting {
    runs: Mutex<HashMap<JobId, u32>>,
    done: tokio::sync::Notify,
    expected: usize,
}

#[async_trait]
impl JobHandler for Counting {
    fn kind(&self) -> &'static str {
        "count"
    }
    async fn run(&self, job: &Job, _ctx: &JobContext) -> Result<(), JobError> {
        let finished = {
            let mut runs = self.runs.lock().unwrap();
            *runs.entry(job.id).or_default() += 1;
            runs.len() == self.expected
        };
        if finished {
            self.done.notify_one();
        }
        Ok(())
    }
}

async fn four_workers_complete_a_thousand_jobs_exactly_once(db: &common::TestStore) {
    let store = db.store.clone();
    let mut ids = Vec::new();
    for batch in 0..10 {
        let mut tx = store.begin().await.unwrap();
        for n in 0..100 {
            match tx.enqueue(&job("count", batch * 100 + n)).await.unwrap() {
                Enqueued::Created(id) => ids.push(id),
                Enqueued::Duplicate => panic!("no unique key was given"),
            }
        }
        tx.commit().await.unwrap();
    }
    let handler = Arc::new(Counting { runs: Mutex::default(), done: tokio::sync::Notify::new(), expected: ids.len() });
    let settings = QueueSettings { workers: 4, ..QueueSettings::default() };
    let pool = WorkerPool::new(store.clone(), settings, vec![handler.clone()]);
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let workers = tokio::spawn(pool.run(stop.clone(), abort.clone()));
    tokio::time::timeout(Duration::from_secs(120), handler.done.notified()).await.expect("all jobs should run");
    stop.cancel();
    workers.await.unwrap();

    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1000);
    assert!(runs.values().all(|&n| n == 1), "some job ran more than once");
    let stats = store.queue_stats().await.unwrap();
    let done: u64 = stats.iter().filter(|s| s.state == JobState::Done).map(|s| s.count).sum();
    assert_eq!(done, 1000, "every job is recorded as done: {stats:?}");
    for id in ids.iter().take(20) {
        let attempts = store.job_attempts(*id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Succeeded));
    }
}

async fn a_claim_hands_jobs_out_in_due_order_not_insert_order(db: &common::TestStore) {
    let store = &*db.store;
    let now = Utc::now();
    for (n, ago) in [(1, 5), (2, 30), (3, 10)] {
        store.enqueue(&job("process", n).at(now - TimeDelta::seconds(ago))).await.unwrap();
    }
    let claimed = store.claim_jobs(&["process"], "w", LEASE, 10).await.unwrap();
    let payloads: Vec<_> = claimed.iter().map(|c| c.job.payload["n"].as_u64().unwrap()).collect();
    assert_eq!(payloads, [2, 3, 1]);
    for c in &claimed {
        assert_eq!(c.job.attempts, 1);
        let expires = c.job.lease_expires_at.expect("a claimed job has a lease");
        assert!(expires > Utc::now() + LEASE / 2, "the lease runs for the time asked: {expires}");
    }
    // Each has its open attempt, under this worker.
    for c in &claimed {
        let attempts = store.job_attempts(c.job.id).await.unwrap();
        assert_eq!(
            attempts.iter().map(|a| (a.attempt, a.worker.as_str(), a.outcome)).collect::<Vec<_>>(),
            [(1, "w", None)]
        );
    }
}

async fn a_job_whose_lease_expired_is_claimed_again(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("lease", 1)).await.unwrap();
    let first = claim_one(store, "lease", "a", Duration::from_millis(300)).await.expect("claimable");
    assert!(claim_one(store, "lease", "b", LEASE).await.is_none(), "a leased job is invisible to others");

    tokio::time::sleep(Duration::from_millis(450)).await;
    let second = claim_one(store, "lease", "b", LEASE).await.expect("claimable again once the lease expired");
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.job.attempts, 2);
    assert_ne!(second.lease.token, first.lease.token);

    assert!(!store.complete_job(&first.lease).await.unwrap(), "the stale holder cannot complete it");
    assert!(store.complete_job(&second.lease).await.unwrap());
    let attempts = store.job_attempts(first.job.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.worker.as_str(), a.outcome)).collect();
    assert_eq!(outcomes, [(1, "a", Some(AttemptOutcome::LeaseExpired)), (2, "b", Some(AttemptOutcome::Succeeded))]);
}

async fn a_failed_job_waits_for_its_retry_time(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("retry", 1)).await.unwrap();
    let claimed = claim_one(store, "retry", "w", LEASE).await.unwrap();
    let retry_at = Utc::now() + TimeDelta::milliseconds(600);
    let outcome = store.fail_job(&claimed.lease, "upstream 503", Retry::At(retry_at)).await.unwrap();
    let FailOutcome::WillRetry { at } = outcome else { panic!("expected a retry, got {outcome:?}") };
    assert!((at - retry_at).num_milliseconds().abs() < 5);

    assert!(claim_one(store, "retry", "w", LEASE).await.is_none(), "not before its retry time");
    let due = store.next_due(&["retry"]).await.unwrap().expect("a job is waiting");
    assert!((due - retry_at).num_milliseconds().abs() < 5, "next_due {due} vs {retry_at}");
    let job = store.job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!((job.state, job.last_error.as_deref()), (JobState::Ready, Some("upstream 503")));

    tokio::time::sleep(Duration::from_millis(700)).await;
    let again = claim_one(store, "retry", "w", LEASE).await.expect("claimable after its retry time");
    assert_eq!(again.job.attempts, 2);
}

async fn a_job_out_of_attempts_becomes_a_dead_letter_keeping_its_errors(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&NewJob::new("doomed", json!({}), 3)).await.unwrap();
    let mut outcomes = Vec::new();
    let mut id = None;
    for n in 1..=3 {
        let claimed = claim_one(store, "doomed", "w", LEASE).await.expect("claimable while attempts remain");
        id = Some(claimed.job.id);
        outcomes.push(store.fail_job(&claimed.lease, &format!("boom {n}"), Retry::At(Utc::now())).await.unwrap());
    }
    assert!(matches!(outcomes[..], [FailOutcome::WillRetry { .. }, FailOutcome::WillRetry { .. }, FailOutcome::Dead]));
    assert!(claim_one(store, "doomed", "w", LEASE).await.is_none(), "a dead letter is not claimed");

    let id = id.unwrap();
    let dead = store.dead_jobs(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts, dead[0].last_error.as_deref()), (id, 3, Some("boom 3")));
    let errors: Vec<_> = store.job_attempts(id).await.unwrap().into_iter().map(|a| a.error.unwrap()).collect();
    assert_eq!(errors, ["boom 1", "boom 2", "boom 3"]);

    assert!(store.replay_job(id, 2).await.unwrap());
    assert!(!store.replay_job(id, 2).await.unwrap(), "only a dead letter can be replayed");
    let again = claim_one(store, "doomed", "w", LEASE).await.expect("a replayed job runs again");
    assert_eq!((again.job.attempts, again.job.max_attempts), (4, 5));
    assert!(store.dead_jobs(10).await.unwrap().is_empty());
}

async fn a_job_whose_worker_keeps_dying_becomes_a_dead_letter(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&NewJob::new("poison", json!({}), 2)).await.unwrap();
    for _ in 0..2 {
        claim_one(store, "poison", "crashing", Duration::from_millis(100)).await.expect("claimable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(claim_one(store, "poison", "w", LEASE).await.is_none());
    let dead = store.dead_jobs(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.as_deref().unwrap().contains("lease expired during attempt 2"));
    let outcomes: Vec<_> = store.job_attempts(dead[0].id).await.unwrap().into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(AttemptOutcome::LeaseExpired), Some(AttemptOutcome::LeaseExpired)]);
}

async fn a_duplicate_unique_key_is_refused(db: &common::TestStore) {
    let store = &*db.store;
    let first = store.enqueue(&job("process", 1).unique("env-1")).await.unwrap();
    assert!(matches!(first, Enqueued::Created(_)));
    assert_eq!(store.enqueue(&job("process", 2).unique("env-1")).await.unwrap(), Enqueued::Duplicate);
    // Within one transaction too, without spoiling the transaction.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.enqueue(&job("process", 3).unique("env-1")).await.unwrap(), Enqueued::Duplicate);
    assert!(matches!(tx.enqueue(&job("process", 4).unique("env-2")).await.unwrap(), Enqueued::Created(_)));
    tx.commit().await.unwrap();
    // The key is per kind.
    assert!(matches!(store.enqueue(&job("deliver", 5).unique("env-1")).await.unwrap(), Enqueued::Created(_)));

    let claimed = store.claim_jobs(&["process"], "w", LEASE, 10).await.unwrap();
    let payloads: Vec<_> = claimed.iter().map(|c| c.job.payload["n"].as_u64().unwrap()).collect();
    assert_eq!(payloads, [1, 4]);
}

async fn an_enqueue_rolled_back_with_its_transaction_leaves_no_job(db: &common::TestStore) {
    let store = &*db.store;
    let envelope = EnvelopeId::parse("0b8c6c49-3e7f-4c4e-9a3e-6f0d7c1f2a11").unwrap();
    {
        let mut tx = store.begin().await.unwrap();
        tx.insert_notification(&notification(envelope, "envelope-completed", "aa")).await.unwrap();
        tx.enqueue(&job("process", 1)).await.unwrap();
        // Dropped without commit.
    }
    assert!(store.claim_jobs(&["process"], "w", LEASE, 10).await.unwrap().is_empty());
    assert!(store.queue_stats().await.unwrap().is_empty());
    assert!(store.enqueued_notifications(envelope).await.unwrap().is_empty());
}

async fn completion_after_losing_the_lease_keeps_nothing(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("outbox", 1)).await.unwrap();
    let stale = claim_one(store, "outbox", "a", Duration::from_millis(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let current = claim_one(store, "outbox", "b", LEASE).await.unwrap();

    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&job("deliver", 1)).await.unwrap();
    assert!(!tx.complete_job(&stale.lease).await.unwrap(), "the stale worker learns it lost the lease");
    drop(tx);
    assert!(store.claim_jobs(&["deliver"], "w", LEASE, 10).await.unwrap().is_empty(), "its outputs were not kept");
    assert!(store.complete_job(&current.lease).await.unwrap());
}

async fn heartbeat_keeps_a_long_job_from_being_claimed(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("long", 1)).await.unwrap();
    let claimed = claim_one(store, "long", "a", Duration::from_millis(300)).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(store.heartbeat(&claimed.lease, Duration::from_millis(300)).await.unwrap());
        assert!(claim_one(store, "long", "b", LEASE).await.is_none(), "a heartbeating job stays leased");
    }
    assert!(store.complete_job(&claimed.lease).await.unwrap());
    assert!(!store.heartbeat(&claimed.lease, LEASE).await.unwrap(), "a finished job has no lease to extend");
}

async fn a_released_job_is_claimable_at_once_without_spending_an_attempt(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("slow", 1)).await.unwrap();
    let claimed = claim_one(store, "slow", "a", LEASE).await.unwrap();
    assert!(store.release_job(&claimed.lease).await.unwrap());
    let again = claim_one(store, "slow", "b", LEASE).await.expect("released jobs are claimable at once");
    assert_eq!(again.job.attempts, 1);
    let outcomes: Vec<_> = store.job_attempts(again.job.id).await.unwrap().into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(AttemptOutcome::Released), None]);
}

async fn a_deferred_job_waits_without_spending_an_attempt(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("paced", 1)).await.unwrap();
    let claimed = claim_one(store, "paced", "a", LEASE).await.unwrap();
    let until = Utc::now() + TimeDelta::milliseconds(400);
    assert!(store.defer_job(&claimed.lease, "rate limit: paused until the reset", until, false).await.unwrap());
    assert!(claim_one(store, "paced", "b", LEASE).await.is_none(), "a deferred job waits for its time");
    let waiting = store.job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(waiting.state, JobState::Ready);
    assert_eq!(waiting.attempts, 0, "deferring does not use up an attempt");
    assert_eq!(waiting.last_error.as_deref(), Some("rate limit: paused until the reset"));
    let due = store.next_due(&["paced"]).await.unwrap().unwrap();
    assert!((due - until).num_milliseconds().abs() < 5, "next due {due} is the deferral's end {until}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let again = claim_one(store, "paced", "b", LEASE).await.expect("claimable once the wait is over");
    assert_eq!(again.job.attempts, 1);
    let attempts = store.job_attempts(again.job.id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Deferred));
    assert_eq!(attempts[0].error.as_deref(), Some("rate limit: paused until the reset"));
}

async fn deferrals_written_together_leave_a_lost_lease_alone(db: &common::TestStore) {
    let store = &*db.store;
    for n in 0..3 {
        store.enqueue(&job("batch", n)).await.unwrap();
    }
    let claimed = store.claim_jobs(&["batch"], "a", LEASE, 3).await.unwrap();
    assert_eq!(claimed.len(), 3, "one claim hands out several jobs");
    // The middle job's lease was lost: it expired and another worker took it.
    let stale = claimed[1].lease;
    let other = Lease { job: stale.job, token: uuid::Uuid::new_v4() };
    let until = Utc::now() + TimeDelta::hours(1);
    let deferral = |lease: Lease, parked: bool| Deferral { lease, reason: "paused".into(), until, parked };
    let held = store
        .defer_jobs(&[deferral(claimed[0].lease, false), deferral(other, true), deferral(claimed[2].lease, true)])
        .await
        .unwrap();
    assert_eq!(held, vec![true, false, true]);
    let mut jobs = Vec::new();
    for c in &claimed {
        jobs.push(store.job(c.job.id).await.unwrap().unwrap());
    }
    assert_eq!(jobs[0].state, JobState::Ready);
    assert_eq!(jobs[1].state, JobState::Running, "a deferral without the lease changes nothing");
    assert_eq!(jobs[2].state, JobState::Parked);
    assert_eq!(jobs[2].attempts, 0, "deferring does not use up an attempt");
    let attempts = store.job_attempts(claimed[2].job.id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Deferred));
    assert!(store.job_attempts(stale.job).await.unwrap()[0].outcome.is_none(), "its attempt is still open");
}

async fn a_parked_job_waits_until_woken(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("needs-consent", 1).unique("envelope-1")).await.unwrap();
    let claimed = claim_one(store, "needs-consent", "a", LEASE).await.unwrap();
    let recheck = Utc::now() + TimeDelta::hours(1);
    assert!(store.defer_job(&claimed.lease, "waiting for consent", recheck, true).await.unwrap());
    let parked = store.job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(parked.state, JobState::Parked);
    let by_key = store.job_by_key("needs-consent", "envelope-1").await.unwrap();
    assert_eq!(by_key.map(|j| j.id), Some(parked.id), "found by its unique key");
    assert_eq!(parked.attempts, 0);
    let stats = store.queue_stats().await.unwrap();
    assert!(
        stats.iter().any(|s| s.kind == "needs-consent" && s.state == JobState::Parked && s.count == 1),
        "parked jobs are visible in the queue statistics: {stats:?}"
    );
    assert!(claim_one(store, "needs-consent", "b", LEASE).await.is_none());
    assert_eq!(store.wake_parked().await.unwrap(), 1);
    let woken = claim_one(store, "needs-consent", "b", LEASE).await.expect("a woken job is claimable at once");
    assert_eq!(woken.job.id, claimed.job.id);
    assert!(store.complete_job(&woken.lease).await.unwrap());
    assert_eq!(store.wake_parked().await.unwrap(), 0, "nothing left to wake");
}

async fn a_recurring_job_is_armed_again_only_once_finished(db: &common::TestStore) {
    let store = &*db.store;
    let recurring = job("pass", 1).unique("account-1");
    assert!(store.rearm_job(&recurring).await.unwrap(), "armed the first time");
    assert!(!store.rearm_job(&recurring).await.unwrap(), "still waiting: left alone");
    let claimed = claim_one(store, "pass", "a", LEASE).await.unwrap();
    assert!(!store.rearm_job(&recurring).await.unwrap(), "running: left alone");
    assert!(store.complete_job(&claimed.lease).await.unwrap());
    assert!(store.rearm_job(&recurring).await.unwrap(), "finished: armed again");
    let again = claim_one(store, "pass", "b", LEASE).await.expect("the re-armed job runs");
    assert_eq!(again.job.id, claimed.job.id, "one job per key, reused");
    assert_eq!(again.job.attempts, 1, "with fresh attempts");
    assert_eq!(store.job_attempts(again.job.id).await.unwrap().len(), 1, "the finished pass's history is dropped");
    store.fail_job(&again.lease, "DocuSign down", Retry::Never).await.unwrap();
    assert!(store.rearm_job(&recurring).await.unwrap(), "a dead pass is armed again at the next interval");
    assert_eq!(store.job(again.job.id).await.unwrap().unwrap().state, JobState::Ready);
}

async fn a_reconciliation_checkpoint_only_moves_forward(db: &common::TestStore) {
    let store = &*db.store;
    let account = AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
    assert!(store.reconcile_checkpoint(account).await.unwrap().is_none());
    let t1 = Utc::now().duration_trunc(TimeDelta::milliseconds(1)).unwrap();
    let pass = ReconcilePass { from: t1 - TimeDelta::minutes(10), until: t1, position: 200, found: 2 };
    store.save_reconcile_pass(account, &pass).await.unwrap();
    assert_eq!(store.reconcile_pass(account).await.unwrap(), Some(pass), "an interrupted pass is kept");
    store.advance_reconcile_checkpoint(account, t1, 2).await.unwrap();
    assert_eq!(store.reconcile_pass(account).await.unwrap(), None, "a finished pass is forgotten");
    store.advance_reconcile_checkpoint(account, t1 - TimeDelta::hours(1), 1).await.unwrap();
    let checkpoint = store.reconcile_checkpoint(account).await.unwrap().unwrap();
    assert_eq!(checkpoint.listed_until, t1, "never moves backwards");
    assert_eq!(checkpoint.found_total, 3);
}

async fn pruning_deletes_only_old_finished_jobs(db: &common::TestStore) {
    let store = &*db.store;
    for n in 0..3 {
        store.enqueue(&job("prune", n)).await.unwrap();
    }
    let mut claimed = store.claim_jobs(&["prune"], "w", LEASE, 3).await.unwrap();
    let dead = claimed.pop().unwrap();
    store.fail_job(&dead.lease, "bad", Retry::Never).await.unwrap();
    let done = claimed.pop().unwrap();
    store.complete_job(&done.lease).await.unwrap();
    let running = claimed.pop().unwrap();

    assert_eq!(store.prune_jobs(Utc::now() - TimeDelta::hours(1)).await.unwrap(), 0, "too recent");
    assert_eq!(store.prune_jobs(Utc::now() + TimeDelta::seconds(1)).await.unwrap(), 1);
    assert!(store.job(done.job.id).await.unwrap().is_none());
    assert!(store.job_attempts(done.job.id).await.unwrap().is_empty());
    assert_eq!(store.job(dead.job.id).await.unwrap().unwrap().state, JobState::Dead, "dead letters stay");
    assert_eq!(store.job(running.job.id).await.unwrap().unwrap().state, JobState::Running);
}

async fn an_enqueue_wakes_waiting_workers(db: &common::TestStore) {
    // A second handle on the same database stands for another replica (on
    // PostgreSQL the wake-up crosses connections through LISTEN/NOTIFY).
    let other = if db.store.backend() == "postgres" { common::reopen(db).await } else { db.store.clone() };
    let mut signal = other.job_signal();
    signal.borrow_and_update();
    db.store.enqueue(&job("wake", 1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), signal.changed())
        .await
        .expect("the enqueue should wake waiting workers")
        .unwrap();

    // A rolled-back enqueue wakes nobody. (A fresh handle: the first
    // enqueue's notification may still be on its way to the older ones.)
    let quiet = if db.store.backend() == "postgres" { common::reopen(db).await } else { db.store.clone() };
    let mut signal = quiet.job_signal();
    signal.borrow_and_update();
    let mut tx = db.store.begin().await.unwrap();
    tx.enqueue(&job("wake", 2)).await.unwrap();
    drop(tx);
    assert!(tokio::time::timeout(Duration::from_millis(300), signal.changed()).await.is_err());
}

fn notification(envelope: EnvelopeId, event: &str, body_hash: &str) -> NewNotification {
    NewNotification {
        id: NotificationId::new(),
        account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
        envelope_id: envelope,
        event: event.into(),
        recipient_id: None,
        generated_at: "2022-09-22T15:22:53.458074Z".parse().unwrap(),
        format: "json".into(),
        origin: NotificationOrigin::Connect,
        body_sha256: body_hash.into(),
        disposition: Disposition::Enqueued,
        summary: json!({ "status": "completed" }),
    }
}

async fn a_redelivered_notification_is_recorded_once(db: &common::TestStore) {
    let store = &*db.store;
    let envelope = EnvelopeId::parse("93be49ab-afa0-4adf-933c-f752070d71ec").unwrap();
    let first = notification(envelope, "envelope-completed", "hash-1");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.insert_notification(&first).await.unwrap(), Inserted::Created(first.id));
    tx.commit().await.unwrap();

    // Connect's retry: same message, different body (retryCount changed).
    let retry = NewNotification { id: NotificationId::new(), body_sha256: "hash-2".into(), ..first.clone() };
    // A byte-identical replay that also differs in what it claims.
    let replay = NewNotification { id: NotificationId::new(), event: "recipient-completed".into(), ..first.clone() };
    let later = notification(envelope, "envelope-voided", "hash-3");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.insert_notification(&retry).await.unwrap(), Inserted::Duplicate);
    assert_eq!(tx.insert_notification(&replay).await.unwrap(), Inserted::Duplicate);
    assert!(tx.insert_notification(&later).await.unwrap().created().is_some());
    tx.commit().await.unwrap();

    let stored = store.enqueued_notifications(envelope).await.unwrap();
    let events: Vec<_> = stored.iter().map(|n| n.new.event.as_str()).collect();
    assert_eq!(events, ["envelope-completed", "envelope-voided"]);
    // SQLite keeps milliseconds, PostgreSQL microseconds.
    assert_eq!(stored[0].new.generated_at.timestamp_millis(), first.generated_at.timestamp_millis());
    assert_eq!(stored[0].new.summary, json!({ "status": "completed" }));
}

async fn an_ignored_notification_is_found_by_its_id_not_by_its_envelope(db: &common::TestStore) {
    let store = &*db.store;
    let envelope = EnvelopeId::parse("c41d7a0e-2b7f-4f4c-9a55-0d3b6c2e8f19").unwrap();
    let sent = NewNotification { disposition: Disposition::Ignored, ..notification(envelope, "envelope-sent", "sent") };
    let completed = notification(envelope, "envelope-completed", "completed");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.insert_notifications(&[&sent, &completed]).await.unwrap(), [true, true]);
    tx.commit().await.unwrap();

    let listed = store.enqueued_notifications(envelope).await.unwrap();
    assert_eq!(listed.iter().map(|n| n.new.id).collect::<Vec<_>>(), [completed.id]);
    let found = store.notification(sent.id).await.unwrap().expect("the ignored notification is recorded");
    assert_eq!((found.new.event.as_str(), found.new.disposition), ("envelope-sent", Disposition::Ignored));
    assert_eq!(found.new.envelope_id, envelope);
    assert!(store.notification(NotificationId::new()).await.unwrap().is_none());
}

async fn envelope_documents_events_and_deliveries_round_trip(db: &common::TestStore) {
    let store = &*db.store;
    let envelope = EnvelopeId::parse("5e1f4c1a-7d0b-4d8e-b0a4-1f2e3d4c5b6a").unwrap();
    let account = AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
    let completed_at = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
    let document = DocumentRecord {
        account_id: account,
        envelope_id: envelope,
        document_id: "certificate".into(),
        name: "Certificate of Completion".into(),
        file_name: "certificate.pdf".into(),
        content_type: "application/pdf".into(),
        size_bytes: 12_345,
        sha256: "ab".repeat(32),
        storage_key: format!("{envelope}/certificate.pdf"),
        stored_at: completed_at,
    };
    let event = EventRecord {
        agreement_id: None,
        id: EventId::new(),
        envelope_id: Some(envelope),
        rule: "onboarding".into(),
        event_type: "employee.onboarding.signed".into(),
        body: json!({ "specversion": "1.0", "data": { "n": 1 } }),
        created_at: completed_at,
        ordinal: 0,
    };
    let mut tx = store.begin().await.unwrap();
    tx.upsert_envelope(&EnvelopeUpsert {
        envelope_id: envelope,
        account_id: account,
        status: EnvelopeStatus::Received,
        subject: Some("Offer letter".into()),
        completed_at: Some(completed_at),
    })
    .await
    .unwrap();
    tx.upsert_document(&document).await.unwrap();
    assert_eq!(tx.insert_event(&event).await.unwrap(), Inserted::Created(event.id));
    assert_eq!(tx.insert_delivery(event.id, "hr").await.unwrap(), Inserted::Created(()));
    assert_eq!(tx.insert_delivery(event.id, "hr").await.unwrap(), Inserted::Duplicate);
    tx.insert_delivery(event.id, "identity").await.unwrap();
    // The same (envelope, rule) never yields a second event.
    let again = EventRecord { id: EventId::new(), ..event.clone() };
    assert_eq!(tx.insert_event(&again).await.unwrap(), Inserted::Duplicate);
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    tx.upsert_envelope(&EnvelopeUpsert {
        envelope_id: envelope,
        account_id: account,
        status: EnvelopeStatus::Processed,
        subject: None,
        completed_at: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let stored = store.envelope(envelope).await.unwrap().unwrap();
    assert_eq!(stored.status, EnvelopeStatus::Processed);
    assert_eq!(stored.subject.as_deref(), Some("Offer letter"), "a later update without a subject keeps it");
    assert_eq!(stored.completed_at, Some(completed_at));
    assert_eq!(store.documents(envelope).await.unwrap(), [document]);
    assert_eq!(store.events_for(envelope).await.unwrap(), std::slice::from_ref(&event));
    let deliveries = store.deliveries_for(event.id).await.unwrap();
    let sinks: Vec<_> = deliveries.iter().map(|d| (d.sink.as_str(), d.state)).collect();
    assert_eq!(sinks, [("hr", DeliveryState::Pending), ("identity", DeliveryState::Pending)]);
}

async fn readiness_reports_a_migrated_store(db: &common::TestStore) {
    db.store.check_ready().await.unwrap();
}

async fn batch_writes_match_single_writes(db: &common::TestStore) {
    let store = &*db.store;
    let first = EnvelopeId::parse("11111111-2222-4333-8444-555555555555").unwrap();
    let second = EnvelopeId::parse("66666666-7777-4888-9999-aaaaaaaaaaaa").unwrap();
    let earlier = notification(first, "envelope-completed", "batch-0");
    let mut tx = store.begin().await.unwrap();
    tx.insert_notification(&earlier).await.unwrap();
    tx.commit().await.unwrap();

    let retry = NewNotification { id: NotificationId::new(), body_sha256: "batch-1".into(), ..earlier.clone() };
    let fresh = notification(second, "envelope-completed", "batch-2");
    let twin = NewNotification { id: NotificationId::new(), ..fresh.clone() };
    let account = fresh.account_id;
    let upsert = |envelope, subject: &str| EnvelopeUpsert {
        envelope_id: envelope,
        account_id: account,
        status: EnvelopeStatus::Received,
        subject: Some(subject.into()),
        completed_at: None,
    };
    let later = Utc::now() + TimeDelta::hours(1);
    let mut tx = store.begin().await.unwrap();
    let written = tx.insert_notifications(&[&retry, &fresh, &twin]).await.unwrap();
    assert_eq!(written, [false, true, false], "a known message and a twin inside the batch are duplicates");
    tx.upsert_envelopes(&[upsert(first, "one"), upsert(second, "two")]).await.unwrap();
    tx.enqueue_all(&[
        job("process", 1).unique(first.to_string()),
        job("process", 2).unique(first.to_string()),
        job("process", 3).unique(second.to_string()).at(later),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(store.count_notifications().await.unwrap(), 2);
    assert_eq!(store.envelope(second).await.unwrap().unwrap().subject.as_deref(), Some("two"));
    let due = store.claim_jobs(&["process"], "w", LEASE, 10).await.unwrap();
    let payloads: Vec<_> = due.iter().map(|c| c.job.payload["n"].as_u64().unwrap()).collect();
    assert_eq!(payloads, [1], "one job per unique key; the scheduled one is not due yet");
    store.complete_job(&due[0].lease).await.unwrap();
    let next = store.next_due(&["process"]).await.unwrap().unwrap();
    assert!((next - later).num_milliseconds().abs() < 5, "run_at kept: {next} vs {later}");
}

/// What ingest's group commit writes for one notification.
fn record(n: &NewNotification, subject: Option<&str>, job_key: Option<&str>, document: bool) -> NotificationRecord {
    let envelope = subject.map(|subject| EnvelopeUpsert {
        envelope_id: n.envelope_id,
        account_id: n.account_id,
        status: EnvelopeStatus::Received,
        subject: Some(subject.into()),
        completed_at: None,
    });
    let documents = document
        .then(|| DocumentRecord {
            account_id: n.account_id,
            envelope_id: n.envelope_id,
            document_id: "1".into(),
            name: format!("from {}", n.body_sha256),
            file_name: "1-offer.pdf".into(),
            content_type: "application/pdf".into(),
            size_bytes: 10,
            sha256: "cd".repeat(32),
            storage_key: format!("{}/1-offer.pdf", n.envelope_id),
            stored_at: n.generated_at,
        })
        .into_iter()
        .collect();
    let job = job_key.map(|key| job("process", 0).unique(key.to_string()));
    NotificationRecord { notification: n.clone(), envelope, documents, jobs: job.into_iter().collect() }
}

async fn a_recorded_batch_writes_only_what_its_new_notifications_bring(db: &common::TestStore) {
    let store = &*db.store;
    let first = EnvelopeId::parse("21111111-2222-4333-8444-555555555555").unwrap();
    let second = EnvelopeId::parse("76666666-7777-4888-9999-aaaaaaaaaaaa").unwrap();
    let earlier = notification(first, "envelope-completed", "rec-0");
    let before = record(&earlier, Some("earlier"), Some("first"), false);
    assert_eq!(store.record_notifications(&[&before]).await.unwrap(), [true]);

    let retry = NewNotification { id: NotificationId::new(), body_sha256: "rec-1".into(), ..earlier.clone() };
    let fresh = notification(second, "envelope-completed", "rec-2");
    let twin = NewNotification { id: NotificationId::new(), ..fresh.clone() };
    let voided = notification(second, "envelope-voided", "rec-3");
    let ignored = notification(second, "recipient-sent", "rec-4");
    let batch = [
        record(&retry, Some("retry"), Some("from-retry"), true),
        record(&fresh, Some("fresh"), Some("second"), true),
        record(&twin, Some("twin"), Some("from-twin"), true),
        record(&voided, Some("latest"), Some("second"), false),
        record(&ignored, None, None, false),
    ];
    let mut signal = store.job_signal();
    signal.borrow_and_update();
    let written = store.record_notifications(&batch.iter().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(written, [false, true, false, true, true], "a known message and a twin inside the batch are duplicates");

    assert_eq!(store.count_notifications().await.unwrap(), 4);
    let kept = store.envelope(first).await.unwrap().unwrap();
    assert_eq!(kept.subject.as_deref(), Some("earlier"), "a duplicate does not touch its envelope");
    assert!(store.documents(first).await.unwrap().is_empty(), "nor store its documents");
    assert!(store.job_by_key("process", "from-retry").await.unwrap().is_none(), "nor enqueue its job");
    assert!(store.job_by_key("process", "from-twin").await.unwrap().is_none());
    let named_twice = store.envelope(second).await.unwrap().unwrap();
    assert_eq!(named_twice.subject.as_deref(), Some("latest"), "an envelope named twice keeps its latest values");
    let documents = store.documents(second).await.unwrap();
    assert_eq!(documents.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["from rec-2"]);
    assert!(store.job_by_key("process", "second").await.unwrap().is_some());
    assert!(signal.has_changed().unwrap(), "workers are woken for the new job");
}

/// Idle workers ask for jobs at every wake-up: when nothing is due, the
/// answer must not queue behind a write in progress (SQLite has one writer).
async fn a_claim_with_nothing_due_does_not_wait_for_a_write(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("later", 0).at(Utc::now() + TimeDelta::hours(1))).await.unwrap();
    let mut writing = store.begin().await.unwrap();
    writing.enqueue(&job("other", 1)).await.unwrap();
    let claim = store.claim_jobs(&["later"], "idle", LEASE, 4);
    let claimed = tokio::time::timeout(Duration::from_secs(5), claim).await.expect("the claim waited for the writer");
    assert!(claimed.unwrap().is_empty());
    writing.commit().await.unwrap();
    let claimed = store.claim_jobs(&["other"], "w", LEASE, 4).await.unwrap();
    assert_eq!(claimed.len(), 1, "a due job is still claimed");
}

/// More document rows than one SQLite statement has parameters for.
async fn a_batch_with_thousands_of_documents_is_recorded_whole(db: &common::TestStore) {
    let store = &*db.store;
    let envelope = EnvelopeId::parse("41111111-2222-4333-8444-555555555555").unwrap();
    let mut record = record(&notification(envelope, "envelope-completed", "docs-0"), Some("many"), Some("many"), true);
    let template = record.documents.remove(0);
    record.documents = (0..4_000).map(|i| DocumentRecord { document_id: i.to_string(), ..template.clone() }).collect();
    assert_eq!(store.record_notifications(&[&record]).await.unwrap(), [true]);
    assert_eq!(store.documents(envelope).await.unwrap().len(), 4_000);
}

async fn a_batch_that_fails_records_nothing(db: &common::TestStore) {
    let store = &*db.store;
    let known = EnvelopeId::parse("31111111-2222-4333-8444-555555555555").unwrap();
    let unknown = EnvelopeId::parse("86666666-7777-4888-9999-aaaaaaaaaaaa").unwrap();
    let good = notification(known, "envelope-completed", "fail-0");
    // A document of an envelope that is not stored breaks a foreign key.
    let bad = notification(unknown, "envelope-completed", "fail-1");
    let batch = [record(&good, Some("good"), Some("good"), false), record(&bad, None, None, true)];
    assert!(store.record_notifications(&batch.iter().collect::<Vec<_>>()).await.is_err());
    assert_eq!(store.count_notifications().await.unwrap(), 0);
    assert!(store.envelope(known).await.unwrap().is_none());
    assert!(store.job_by_key("process", "good").await.unwrap().is_none());

    // The store goes on: the good record alone is written.
    assert_eq!(store.record_notifications(&[&batch[0]]).await.unwrap(), [true]);
    assert_eq!(store.count_notifications().await.unwrap(), 1);
    assert!(store.job_by_key("process", "good").await.unwrap().is_some());
}

async fn an_envelope_is_neither_downgraded_nor_taken_over(db: &common::TestStore) {
    let store = &*db.store;
    let envelope = EnvelopeId::parse("0f0e0d0c-0b0a-4908-8706-050403020100").unwrap();
    let owner = AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
    let intruder = AccountId::parse("a1a2a3a4-b5b6-4c7c-8d8d-e9e0f1f2f3f4").unwrap();
    let upsert = |account, status, subject: &str| EnvelopeUpsert {
        envelope_id: envelope,
        account_id: account,
        status,
        subject: Some(subject.into()),
        completed_at: None,
    };
    for (single, batch) in [(true, false), (false, true)] {
        let mut tx = store.begin().await.unwrap();
        tx.upsert_envelope(&upsert(owner, EnvelopeStatus::Processed, "mine")).await.unwrap();
        let late = upsert(owner, EnvelopeStatus::Received, "mine");
        let foreign = upsert(intruder, EnvelopeStatus::Received, "theirs");
        if single {
            tx.upsert_envelope(&late).await.unwrap();
            tx.upsert_envelope(&foreign).await.unwrap();
        }
        if batch {
            tx.upsert_envelopes(std::slice::from_ref(&late)).await.unwrap();
            tx.upsert_envelopes(std::slice::from_ref(&foreign)).await.unwrap();
        }
        tx.commit().await.unwrap();
        let stored = store.envelope(envelope).await.unwrap().unwrap();
        assert_eq!(stored.status, EnvelopeStatus::Processed, "a late notification does not reopen it");
        assert_eq!((stored.account_id, stored.subject.as_deref()), (owner, Some("mine")), "no takeover");
    }
}

/// Whoever holds one account's Connect key must never change another
/// account's records: a notification naming an envelope that belongs to
/// another account writes no notification, envelope, document or job row,
/// whether the envelope was stored before or earlier in the same batch.
async fn a_notification_naming_another_accounts_envelope_writes_nothing(db: &common::TestStore) {
    let store = &*db.store;
    let intruder = AccountId::parse("a1a2a3a4-b5b6-4c7c-8d8d-e9e0f1f2f3f4").unwrap();
    let stored = EnvelopeId::parse("1c1d1e1f-2a2b-4c2d-8e2f-3a3b3c3d3e3f").unwrap();
    let owned = notification(stored, "envelope-completed", "own-0");
    let owner = owned.account_id;
    assert_eq!(store.record_notifications(&[&record(&owned, Some("mine"), Some("mine"), true)]).await.unwrap(), [true]);
    let documents_before = store.documents(stored).await.unwrap();

    let forged = |envelope, hash: &str| NewNotification {
        account_id: intruder,
        ..notification(envelope, "envelope-completed", hash)
    };
    let mut forged_record = record(&forged(stored, "forged-0"), Some("theirs"), Some("theirs"), true);
    forged_record.documents[0].sha256 = "ef".repeat(32);
    assert_eq!(store.record_notifications(&[&forged_record]).await.unwrap(), [false]);
    let outcomes = countersign::ingest::write_records(store, &[&forged_record]).await.unwrap();
    assert_eq!(outcomes, [countersign::ingest::Outcome::OtherAccount]);

    // notifications
    assert_eq!(store.count_notifications().await.unwrap(), 1);
    assert!(store.notification(forged_record.notification.id).await.unwrap().is_none());
    // envelopes
    let envelope = store.envelope(stored).await.unwrap().unwrap();
    assert_eq!((envelope.account_id, envelope.subject.as_deref()), (owner, Some("mine")));
    // documents
    let documents = store.documents(stored).await.unwrap();
    assert_eq!(documents, documents_before, "the owner's documents are untouched");
    assert!(documents.iter().all(|d| d.account_id == owner && d.sha256 == "cd".repeat(32)));
    // jobs
    assert!(store.job_by_key("process", "theirs").await.unwrap().is_none());

    // Two accounts naming one new envelope in one batch: the first keeps it.
    let fresh = EnvelopeId::parse("4c4d4e4f-5a5b-4c5d-9e5f-6a6b6c6d6e6f").unwrap();
    let first = record(&notification(fresh, "envelope-completed", "own-1"), Some("first"), Some("first"), true);
    let second = record(&forged(fresh, "forged-1"), Some("second"), Some("second"), true);
    let outcomes = countersign::ingest::write_records(store, &[&first, &second]).await.unwrap();
    use countersign::ingest::Outcome::{OtherAccount, Recorded};
    assert_eq!(outcomes, [Recorded, OtherAccount]);
    assert_eq!(store.count_notifications().await.unwrap(), 2);
    let envelope = store.envelope(fresh).await.unwrap().unwrap();
    assert_eq!((envelope.account_id, envelope.subject.as_deref()), (owner, Some("first")));
    let documents = store.documents(fresh).await.unwrap();
    assert_eq!(documents.iter().map(|d| (d.account_id, d.name.as_str())).collect::<Vec<_>>(), [(owner, "from own-1")]);
    assert!(store.job_by_key("process", "second").await.unwrap().is_none());
}

async fn reclaiming_one_expired_job_leaves_the_others_history_alone(db: &common::TestStore) {
    let store = &*db.store;
    store.enqueue(&job("slowpoke", 1)).await.unwrap();
    store.enqueue(&job("slowpoke", 2)).await.unwrap();
    let first = store.claim_jobs(&["slowpoke"], "a", Duration::from_millis(100), 2).await.unwrap();
    assert_eq!(first.len(), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let taken = claim_one(store, "slowpoke", "b", LEASE).await.unwrap();
    let left = first.iter().find(|c| c.job.id != taken.job.id).unwrap();
    let outcomes: Vec<_> = store.job_attempts(left.job.id).await.unwrap().into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [None], "the job nobody took over is still its first worker's attempt");
    assert!(store.complete_job(&left.lease).await.unwrap(), "and that worker can still finish it");
    let outcomes: Vec<_> = store.job_attempts(left.job.id).await.unwrap().into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(AttemptOutcome::Succeeded)]);
}

/// An envelope with `events` events planned together, each to `sinks`, written through the outbox.
async fn outbox(store: &dyn Store, envelope: &str, events: &[&str], sinks: &[&str]) -> Vec<EventId> {
    let envelope = EnvelopeId::parse(envelope).unwrap();
    let now = Utc::now();
    let plan = countersign::events::Plan {
        envelope_id: envelope,
        events: events
            .iter()
            .enumerate()
            .map(|(i, rule)| countersign::events::PlannedEvent {
                event: EventRecord {
                    agreement_id: None,
                    id: countersign::events::event_id(envelope, rule),
                    envelope_id: Some(envelope),
                    rule: (*rule).into(),
                    event_type: format!("test.{rule}"),
                    body: json!({ "specversion": "1.0", "rule": rule }),
                    created_at: now,
                    ordinal: i as u32,
                },
                sinks: sinks.iter().map(|s| (*s).to_string()).collect(),
            })
            .collect(),
        flags: Vec::new(),
        unmatched: false,
        max_attempts: 3,
        matched: events.iter().map(|rule| (*rule).to_string()).collect(),
    };
    let mut tx = store.begin().await.unwrap();
    tx.upsert_envelope(&EnvelopeUpsert {
        envelope_id: envelope,
        account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
        status: EnvelopeStatus::Processed,
        subject: None,
        completed_at: None,
    })
    .await
    .unwrap();
    countersign::pipeline::write_outbox(&mut *tx, &plan.events, plan.max_attempts).await.unwrap();
    tx.commit().await.unwrap();
    plan.events.iter().map(|e| e.event.id).collect()
}

const ENVELOPE_A: &str = "0b9c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";
const ENVELOPE_B: &str = "1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5";

/// Claims the deliver job of (event, sink), putting the others it meets back for a moment.
async fn claim_delivery(store: &dyn Store, event: EventId, sink: &str) -> ClaimedJob {
    let key = countersign::jobs::DeliveryJob::key(event, sink);
    for _ in 0..50 {
        let claimed = claim_one(store, "deliver", "w", LEASE).await.expect("a deliver job is due");
        if claimed.job.unique_key.as_deref() == Some(key.as_str()) {
            return claimed;
        }
        let later = Utc::now() + TimeDelta::milliseconds(200);
        store.defer_job(&claimed.lease, "not this one", later, false).await.unwrap();
    }
    panic!("no deliver job for {key}");
}

async fn an_outbox_write_yields_events_deliveries_and_one_job_each(db: &common::TestStore) {
    let store = &*db.store;
    let events = outbox(store, ENVELOPE_A, &["first", "second"], &["hr", "crm"]).await;
    let again = outbox(store, ENVELOPE_A, &["first", "second"], &["hr", "crm"]).await;
    assert_eq!(events, again, "event ids are deterministic per (envelope, rule)");
    let stored = store.events_for(EnvelopeId::parse(ENVELOPE_A).unwrap()).await.unwrap();
    assert_eq!(stored.iter().map(|e| (e.rule.as_str(), e.ordinal)).collect::<Vec<_>>(), [("first", 0), ("second", 1)]);
    assert_eq!(store.event(events[1]).await.unwrap().as_ref(), Some(&stored[1]));
    assert_eq!(store.event(EventId::new()).await.unwrap(), None);
    for event in &events {
        let deliveries = store.deliveries_for(*event).await.unwrap();
        assert_eq!(deliveries.iter().map(|d| d.sink.as_str()).collect::<Vec<_>>(), ["crm", "hr"]);
        for sink in ["crm", "hr"] {
            let job = store.job_by_key("deliver", &countersign::jobs::DeliveryJob::key(*event, sink)).await.unwrap();
            let job = job.expect("one deliver job per delivery");
            assert_eq!(job.max_attempts, 3);
            assert_eq!(job.payload, json!({ "event_id": event, "sink": sink }));
        }
    }
    let stats = store.queue_stats().await.unwrap();
    let deliver: u64 = stats.iter().filter(|s| s.kind == "deliver").map(|s| s.count).sum();
    assert_eq!(deliver, 4, "a rerun enqueues nothing more");
    let envelope = EnvelopeId::parse(ENVELOPE_A).unwrap();
    assert!(store.envelope_has_sink(envelope, "hr").await.unwrap());
    assert!(!store.envelope_has_sink(envelope, "erp").await.unwrap());
    assert!(!store.envelope_has_sink(EnvelopeId::parse(ENVELOPE_B).unwrap(), "hr").await.unwrap());
}

async fn a_delivery_outcome_is_recorded_on_its_row(db: &common::TestStore) {
    let store = &*db.store;
    let event = outbox(store, ENVELOPE_A, &["only"], &["hr"]).await[0];
    let failed = DeliveryUpdate {
        event_id: event,
        sink: "hr".into(),
        state: DeliveryState::Pending,
        attempts: 1,
        last_error: Some("sink hr answered HTTP 500".into()),
    };
    store.record_delivery(&failed).await.unwrap();
    let row = store.deliveries_for(event).await.unwrap().remove(0);
    assert_eq!(
        (row.state, row.attempts, row.last_error.as_deref()),
        (DeliveryState::Pending, 1, Some("sink hr answered HTTP 500"))
    );
    assert_eq!(row.delivered_at, None);
    let mut tx = store.begin().await.unwrap();
    tx.record_delivery(&DeliveryUpdate { state: DeliveryState::Delivered, attempts: 2, last_error: None, ..failed })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = store.deliveries_for(event).await.unwrap().remove(0);
    assert_eq!((row.state, row.attempts, row.last_error), (DeliveryState::Delivered, 2, None));
    assert!(row.delivered_at.is_some());
}

async fn an_earlier_pending_event_holds_back_later_ones_to_the_same_sink(db: &common::TestStore) {
    let store = &*db.store;
    let events = outbox(store, ENVELOPE_A, &["first", "second", "third"], &["hr"]).await;
    let other = outbox(store, ENVELOPE_B, &["first"], &["hr"]).await;
    outbox(store, ENVELOPE_A, &["fourth"], &["crm"]).await;
    assert_eq!(store.earlier_pending_delivery(events[0], "hr").await.unwrap(), None, "the first goes first");
    let held = store.earlier_pending_delivery(events[2], "hr").await.unwrap().expect("the first is pending");
    assert_eq!(held.event_id, events[0], "the earliest pending event is named");
    assert!(held.next_attempt_at.is_some(), "a ready job says when it runs");
    assert_eq!(store.earlier_pending_delivery(other[0], "hr").await.unwrap(), None, "other envelopes do not count");
    let fourth = countersign::events::event_id(EnvelopeId::parse(ENVELOPE_A).unwrap(), "fourth");
    assert_eq!(store.earlier_pending_delivery(fourth, "crm").await.unwrap(), None, "other sinks do not count");

    let running = claim_delivery(store, events[0], "hr").await;
    let held = store.earlier_pending_delivery(events[1], "hr").await.unwrap().unwrap();
    assert_eq!((held.event_id, held.next_attempt_at), (events[0], None), "a running delivery has no next time");
    let delivered = DeliveryUpdate {
        event_id: events[0],
        sink: "hr".into(),
        state: DeliveryState::Delivered,
        attempts: 1,
        last_error: None,
    };
    let mut tx = store.begin().await.unwrap();
    tx.record_delivery(&delivered).await.unwrap();
    assert!(tx.complete_job(&running.lease).await.unwrap());
    tx.commit().await.unwrap();
    let held = store.earlier_pending_delivery(events[2], "hr").await.unwrap().unwrap();
    assert_eq!(held.event_id, events[1], "once the first is delivered the second holds the third");

    // A delivery whose job died without updating its row must not block the rest forever.
    let second = claim_delivery(store, events[1], "hr").await;
    store.fail_job(&second.lease, "out of attempts", Retry::Never).await.unwrap();
    assert_eq!(store.earlier_pending_delivery(events[2], "hr").await.unwrap(), None);
}

async fn dead_deliveries_are_listed_and_replayed_by_event_sink_and_time(db: &common::TestStore) {
    let store = &*db.store;
    let events = outbox(store, ENVELOPE_A, &["first", "second"], &["hr", "crm"]).await;
    let before = Utc::now() - TimeDelta::seconds(1);
    for (event, sink) in [(events[0], "hr"), (events[0], "crm"), (events[1], "hr")] {
        let claimed = claim_delivery(store, event, sink).await;
        store.fail_job(&claimed.lease, &format!("{sink} answered HTTP 410"), Retry::Never).await.unwrap();
    }
    let all = store.dead_deliveries(&DeliveryFilter::default(), 10).await.unwrap();
    assert_eq!(all.len(), 3);
    let first = all.iter().find(|d| d.event_id == events[0] && d.sink == "crm").unwrap();
    assert_eq!(first.event_type, "test.first");
    assert_eq!(first.envelope_id, Some(EnvelopeId::parse(ENVELOPE_A).unwrap()));
    assert_eq!(first.attempts, 1);
    assert_eq!(first.last_error.as_deref(), Some("crm answered HTTP 410"));
    assert!(first.failed_at.unwrap() >= before);
    let by_sink = DeliveryFilter { sink: Some("hr".into()), ..DeliveryFilter::default() };
    assert_eq!(store.dead_deliveries(&by_sink, 10).await.unwrap().len(), 2);
    let by_event = DeliveryFilter { event: Some(events[0]), ..DeliveryFilter::default() };
    assert_eq!(store.dead_deliveries(&by_event, 10).await.unwrap().len(), 2);
    let future = DeliveryFilter { since: Some(Utc::now() + TimeDelta::hours(1)), ..DeliveryFilter::default() };
    assert!(store.dead_deliveries(&future, 10).await.unwrap().is_empty());
    assert_eq!(store.dead_deliveries(&DeliveryFilter::default(), 1).await.unwrap().len(), 1, "the limit holds");

    let since = DeliveryFilter { sink: Some("hr".into()), since: Some(before), ..DeliveryFilter::default() };
    let replayed = store.replay_deliveries(&since, 4).await.unwrap();
    assert_eq!(replayed.len(), 2);
    for delivery in &replayed {
        let job = store.job(delivery.job_id).await.unwrap().unwrap();
        assert_eq!((job.state, job.max_attempts), (JobState::Ready, job.attempts + 4));
        let row = store.deliveries_for(delivery.event_id).await.unwrap();
        assert!(row.iter().any(|d| d.sink == "hr" && d.state == DeliveryState::Pending));
    }
    let left = store.dead_deliveries(&DeliveryFilter::default(), 10).await.unwrap();
    assert_eq!(left.iter().map(|d| (d.event_id, d.sink.as_str())).collect::<Vec<_>>(), [(events[0], "crm")]);
    assert!(store.replay_deliveries(&by_sink, 4).await.unwrap().is_empty(), "nothing dead is left for hr");
}

async fn a_disabled_sink_stays_disabled_until_enabled(db: &common::TestStore) {
    let store = &*db.store;
    assert!(store.disabled_sinks().await.unwrap().is_empty());
    assert!(store.disable_sink("hr", "sink hr answered HTTP 410 Gone").await.unwrap());
    assert!(!store.disable_sink("hr", "again").await.unwrap(), "already disabled");
    let disabled = store.disabled_sinks().await.unwrap();
    assert_eq!(disabled.len(), 1);
    assert_eq!((disabled[0].sink.as_str(), disabled[0].reason.as_str()), ("hr", "sink hr answered HTTP 410 Gone"));
    let other = common::reopen(db).await;
    assert_eq!(other.disabled_sinks().await.unwrap().len(), 1, "every replica sees it");
    assert!(store.enable_sink("hr").await.unwrap());
    assert!(!store.enable_sink("hr").await.unwrap());
    assert!(store.disabled_sinks().await.unwrap().is_empty());
}

async fn envelopes_are_listed_by_status_most_recently_changed_first_a_page_at_a_time(db: &common::TestStore) {
    let store = &*db.store;
    let account = AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
    let statuses = [
        EnvelopeStatus::Processed,
        EnvelopeStatus::Received,
        EnvelopeStatus::Processed,
        EnvelopeStatus::Received,
        EnvelopeStatus::Processed,
    ];
    let mut written = Vec::new();
    for (n, status) in statuses.into_iter().enumerate() {
        let envelope = EnvelopeId::from_uuid(uuid::Uuid::new_v4());
        let mut tx = store.begin().await.unwrap();
        let subject = Some(format!("envelope {n}"));
        tx.upsert_envelope(&EnvelopeUpsert {
            envelope_id: envelope,
            account_id: account,
            status,
            subject,
            completed_at: None,
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        written.push((envelope, status));
        // Distinct update times, so "most recently changed first" has one answer.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.count_envelopes().await.unwrap(), [(EnvelopeStatus::Processed, 3), (EnvelopeStatus::Received, 2)]);
    let processed: Vec<EnvelopeId> =
        written.iter().rev().filter(|(_, s)| *s == EnvelopeStatus::Processed).map(|(e, _)| *e).collect();
    let query = |status, limit, offset| EnvelopeQuery { status, limit, offset };
    let first = store.list_envelopes(&query(Some(EnvelopeStatus::Processed), 2, 0)).await.unwrap();
    let second = store.list_envelopes(&query(Some(EnvelopeStatus::Processed), 2, 2)).await.unwrap();
    assert_eq!((first.total, second.total), (3, 3));
    let ids: Vec<EnvelopeId> = first.envelopes.iter().chain(&second.envelopes).map(|e| e.envelope_id).collect();
    assert_eq!(ids, processed, "newest change first, pages adjoining");
    assert!(first.envelopes.iter().all(|e| e.status == EnvelopeStatus::Processed && e.account_id == account));
    let all = store.list_envelopes(&query(None, 10, 0)).await.unwrap();
    assert_eq!((all.total, all.envelopes.len()), (5, 5));
    assert_eq!(all.envelopes[0].envelope_id, written[4].0);
    assert_eq!(all.envelopes[0].subject.as_deref(), Some("envelope 4"));
    let beyond = store.list_envelopes(&query(Some(EnvelopeStatus::Flagged), 10, 0)).await.unwrap();
    assert_eq!((beyond.total, beyond.envelopes.len()), (0, 0));
}

async fn an_agreement_is_stored_once_per_key_and_its_status_only_moves_forward(db: &common::TestStore) {
    let store = &*db.store;
    let new = |client: &str, key: &str, digest: &str| NewAgreement {
        id: AgreementId::new(),
        key: RequestKey { client: client.into(), idempotency_key: key.into(), digest: digest.into() },
        profile: "offer-letter".into(),
        data: json!({ "employee": { "name": "Ada" } }),
        account_id: None,
    };
    let send = |id: AgreementId| job("send_agreement", 0).unique(id.to_string());
    let first = new("hris", "k1", "d1");
    let AgreementInsert::Created(stored) = store.insert_agreement(&first, &send(first.id)).await.unwrap() else {
        panic!("a new key stores a new agreement");
    };
    assert_eq!((stored.id, stored.status, &stored.data), (first.id, AgreementStatus::Requested, &first.data));
    assert!(store.job_by_key("send_agreement", &first.id.to_string()).await.unwrap().is_some());

    // The same client and key: nothing written, the stored one answered with its digest.
    let again = new("hris", "k1", "d2");
    match store.insert_agreement(&again, &send(again.id)).await.unwrap() {
        AgreementInsert::Existing { agreement, digest } => {
            assert_eq!((agreement.id, digest.as_str()), (first.id, "d1"))
        }
        other => panic!("{other:?}"),
    }
    assert!(store.job_by_key("send_agreement", &again.id.to_string()).await.unwrap().is_none());
    assert!(store.agreement(again.id).await.unwrap().is_none());
    // Another client may use the same key.
    let other = new("crm", "k1", "d1");
    assert!(matches!(store.insert_agreement(&other, &send(other.id)).await.unwrap(), AgreementInsert::Created(_)));

    // Sent with its envelope; the envelope row exists first, as the send job writes it.
    let envelope = EnvelopeId::parse("0c8e9a7b-6d5c-4b3a-9f8e-7d6c5b4a3f2e").unwrap();
    let account = AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.upsert_envelope(&EnvelopeUpsert {
        envelope_id: envelope,
        account_id: account,
        status: EnvelopeStatus::Sent,
        subject: None,
        completed_at: None,
    })
    .await
    .unwrap();
    let sent = AgreementChange {
        status: Some(AgreementStatus::Sent),
        envelope_id: Some(envelope),
        account_id: Some(account),
        ..Default::default()
    };
    assert!(tx.update_agreement(first.id, &sent).await.unwrap());
    tx.commit().await.unwrap();
    let found = store.agreement_for_envelope(envelope).await.unwrap().unwrap();
    assert_eq!((found.id, found.status, found.account_id), (first.id, AgreementStatus::Sent, Some(account)));
    assert!(found.sent_at.is_some() && found.finished_at.is_none());

    // Completed; then late news of delivery or a void does not move it back.
    let mut tx = store.begin().await.unwrap();
    let to = |status| AgreementChange { status: Some(status), ..Default::default() };
    assert!(tx.update_agreement(first.id, &to(AgreementStatus::Completed)).await.unwrap());
    assert!(!tx.update_agreement(first.id, &to(AgreementStatus::Delivered)).await.unwrap());
    assert!(!tx.update_agreement(first.id, &to(AgreementStatus::Voided)).await.unwrap());
    tx.commit().await.unwrap();
    let done = store.agreement(first.id).await.unwrap().unwrap();
    assert_eq!(done.status, AgreementStatus::Completed);
    assert!(done.finished_at.is_some());
    // A received upsert (Connect's completion) takes over the `sent` row; a late `sent` does not go back.
    let mut tx = store.begin().await.unwrap();
    let upsert = |status| EnvelopeUpsert {
        envelope_id: envelope,
        account_id: account,
        status,
        subject: None,
        completed_at: None,
    };
    tx.upsert_envelope(&upsert(EnvelopeStatus::Received)).await.unwrap();
    tx.upsert_envelope(&upsert(EnvelopeStatus::Sent)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.envelope(envelope).await.unwrap().unwrap().status, EnvelopeStatus::Received);

    // An event of an agreement that never had an envelope.
    let failed = new("hris", "k2", "d3");
    store.insert_agreement(&failed, &send(failed.id)).await.unwrap();
    let event = EventRecord {
        id: EventId::new(),
        envelope_id: None,
        agreement_id: Some(failed.id),
        rule: "agreement.failed".into(),
        event_type: "agreement.failed".into(),
        body: json!({ "type": "agreement.failed" }),
        created_at: Utc::now().duration_trunc(TimeDelta::milliseconds(1)).unwrap(),
        ordinal: 0,
    };
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.insert_event(&event).await.unwrap(), Inserted::Created(event.id));
    assert_eq!(
        tx.insert_event(&EventRecord { id: EventId::new(), ..event.clone() }).await.unwrap(),
        Inserted::Duplicate
    );
    tx.insert_delivery(event.id, "hr").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.event(event.id).await.unwrap().unwrap(), event);

    let page = |client: Option<&str>, status| AgreementQuery {
        client: client.map(str::to_string),
        status,
        profile: None,
        limit: 10,
        offset: 0,
    };
    let hris = store.list_agreements(&page(Some("hris"), None)).await.unwrap();
    assert_eq!(hris.total, 2);
    assert_eq!(hris.agreements.iter().map(|a| a.id).collect::<Vec<_>>(), [failed.id, first.id], "newest first");
    let completed = store.list_agreements(&page(None, Some(AgreementStatus::Completed))).await.unwrap();
    assert_eq!(completed.agreements.iter().map(|a| a.id).collect::<Vec<_>>(), [first.id]);
}
