//! SIGTERM while a job runs: the process stops taking work, lets the job
//! finish within the grace period, and otherwise hands the job back.
//! One test function: both scenarios signal this very process.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use countersign::config::Settings;
use countersign::pipeline::{JobContext, JobError, JobHandler};
use countersign::service::{Service, shutdown_signal};
use countersign::store::{Job, JobState, NewJob};
use serde_json::json;
use tokio::sync::Notify;

/// Takes `duration` (forever if `None`) and says when it started.
struct Slow {
    duration: Option<Duration>,
    started: Arc<Notify>,
}

#[async_trait]
impl JobHandler for Slow {
    fn kind(&self) -> &'static str {
        "slow"
    }
    async fn run(&self, _job: &Job, _ctx: &JobContext) -> Result<(), JobError> {
        self.started.notify_one();
        match self.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending::<()>().await,
        }
        Ok(())
    }
}

fn sigterm_myself() {
    let status = std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn run_until_sigterm(grace: &str, job_takes: Option<Duration>) -> (common::TestStore, countersign::ids::JobId) {
    let db = common::sqlite().await;
    let settings = Settings::from_toml(&format!(
        "[server]\nshutdown_grace = \"{grace}\"\n[store]\nurl = \"{}\"\n[queue]\nlease = \"2s\"\n",
        db.url
    ))
    .unwrap();
    let mut service = Service::build(settings).await.unwrap();
    let started = Arc::new(Notify::new());
    service.handlers.push(Arc::new(Slow { duration: job_takes, started: started.clone() }));
    let id = service.store.enqueue(&NewJob::new("slow", json!({}), 5)).await.unwrap();
    let countersign::store::Enqueued::Created(id) = id else { panic!("enqueued") };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = tokio::spawn(service.run(listener, shutdown_signal()));
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the job should start");
    sigterm_myself();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the service should stop within a bounded time")
        .unwrap()
        .expect("and stop cleanly");
    (db, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_job_finish_or_hands_it_back() {
    // The job fits in the grace period: it completes.
    let (db, id) = run_until_sigterm("10s", Some(Duration::from_millis(500))).await;
    let job = db.store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Done, "a job that fits the grace period completes");

    // The job outlasts the grace period: its lease is released, unspent.
    let (db, id) = run_until_sigterm("300ms", None).await;
    let job = db.store.job(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Ready, 0), "released, the attempt not counted");
    let claimed = db.store.claim_jobs(&["slow"], "next", Duration::from_secs(30), 1).await.unwrap();
    assert_eq!(claimed.len(), 1, "another worker can claim it at once");
    assert_eq!(claimed[0].job.id, id);
}
