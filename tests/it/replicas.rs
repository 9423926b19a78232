//! Two replicas of `countersign serve` on one PostgreSQL behind one load
//! balancer, the way it scales out. One is killed with SIGKILL mid-run and
//! not started again; the other finishes all the work: every acknowledged
//! envelope's documents stored and its event delivered under one stable id,
//! no dead letter, and no job ever ran on both replicas at once (a job the
//! dead replica held is taken over only after it died).

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::balancer::Balancer;
use common::docusign::options;
use common::pipeline::Pipeline;
use common::process::{ServeProcess, free_port};
use countersign::sandbox::Fault;
use countersign::sandbox::connect::ConnectFormat;
use sqlx::Row;

/// One row of `job_attempts`: who ran which job when.
struct Attempt {
    job: uuid::Uuid,
    kind: String,
    pid: u32,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    outcome: Option<String>,
}

async fn attempts(url: &str) -> Vec<Attempt> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT a.job_id, j.kind, a.worker, a.started_at, a.finished_at, a.outcome \
         FROM job_attempts a JOIN jobs j ON j.id = a.job_id ORDER BY a.job_id, a.started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter()
        .map(|row| {
            // Worker names are "host:pid:instance/slot".
            let worker: String = row.get("worker");
            let pid = worker.split(':').nth(1).and_then(|p| p.parse().ok()).unwrap();
            Attempt {
                job: row.get("job_id"),
                kind: row.get("kind"),
                pid,
                started: row.get("started_at"),
                finished: row.get("finished_at"),
                outcome: row.get("outcome"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_finish_everything_when_one_is_killed() {
    let total: usize = std::env::var("REPLICA_ENVELOPES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let db = common::postgres().await;
    let pipeline = Pipeline::new(&db.url, "").await;
    // Slow downloads keep every worker busy, so the killed replica dies holding jobs.
    pipeline.sandbox.sandbox.set_fault("combined", Fault { latency_ms: 1_000, ..Fault::default() });
    let dir = pipeline.dir.path();
    let (port_a, port_b) = (free_port(), free_port());
    // One after the other: the first applies the migrations.
    let mut doomed = Some(ServeProcess::start(dir, &pipeline.config, port_a).await);
    let survivor = ServeProcess::start(dir, &pipeline.config, port_b).await;
    let (doomed_pid, survivor_pid) = (doomed.as_ref().unwrap().pid(), survivor.pid());
    let balancer = Balancer::spawn(vec![port_a, port_b]).await;
    let sender = Arc::new(pipeline.sender(&balancer.url));

    let envelopes = pipeline.sandbox.sandbox.complete_envelopes(total);
    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut killed_at = None;
    for (i, envelope) in envelopes.iter().enumerate() {
        tick.tick().await;
        if i == total / 2 {
            doomed.take().unwrap().kill();
            killed_at = Some(Utc::now());
        }
        let (sender, envelope) = (sender.clone(), envelope.clone());
        let format = if i % 2 == 0 { ConnectFormat::Json } else { ConnectFormat::Xml };
        let opts = options(true, i % 4 < 2);
        sends.spawn(async move { (envelope.envelope_id, sender.send(&envelope, format, &opts).await) });
    }
    while let Some(sent) = sends.join_next().await {
        let (id, report) = sent.unwrap();
        assert!(report.delivered, "{id} was never acknowledged: {:?} {:?}", report.last_status, report.last_error);
    }
    let killed_at = killed_at.unwrap();

    let requests = pipeline.wait_for_events(&envelopes, Duration::from_secs(300), || survivor.logs()).await;
    let duplicates = requests.iter().filter(|r| r.delivered()).count() - envelopes.len();
    let (exit, _) = survivor.terminate();
    assert!(exit.success());
    let store = countersign::store::open(&db.url, 2).await.unwrap();
    pipeline.assert_nothing_lost(store.as_ref(), &envelopes).await;

    let attempts = attempts(&db.url).await;
    let mut by_pid: HashMap<u32, usize> = HashMap::new();
    for attempt in &attempts {
        *by_pid.entry(attempt.pid).or_default() += 1;
    }
    assert!(by_pid.get(&doomed_pid).is_some_and(|n| *n > 0), "the killed replica worked before it died");
    assert!(by_pid.get(&survivor_pid).is_some_and(|n| *n > 0), "the survivor worked");
    assert_eq!(by_pid.len(), 2, "only the two replicas ran jobs: {by_pid:?}");

    // An attempt runs from its start to its finish, except one whose lease
    // expired: it is closed when another worker takes the job over, but it
    // really ended when its replica died.
    let lease_expired = |a: &Attempt| a.outcome.as_deref() == Some("lease_expired");
    let end = |a: &Attempt| {
        if lease_expired(a) {
            assert_eq!(a.pid, doomed_pid, "only the killed replica loses leases");
            killed_at
        } else {
            a.finished.expect("the survivor stopped only after all work was done")
        }
    };
    let mut taken_over = 0;
    for pair in attempts.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        if earlier.job != later.job {
            continue;
        }
        assert!(
            later.started >= end(earlier),
            "{} job {} ran on {} from {} while {} still held it until {}",
            earlier.kind,
            earlier.job,
            later.pid,
            later.started,
            earlier.pid,
            end(earlier)
        );
        if lease_expired(earlier) {
            taken_over += 1;
        }
    }
    assert!(taken_over > 0, "the killed replica held jobs that the survivor finished");
    println!(
        "{} envelopes, attempts per replica {by_pid:?}, {taken_over} jobs taken over from the killed replica, \
         {duplicates} duplicate deliveries",
        envelopes.len()
    );
}
