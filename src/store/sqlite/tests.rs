#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

async fn synchronous(tx: &mut WriteTx) -> i64 {
    sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut **tx).await.unwrap()
}

/// The writer's `synchronous` setting is per connection: a lease's
/// relaxed commit must not leave the next notification's commit relaxed.
#[tokio::test]
async fn durable_writes_stay_fsynced_after_lease_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("q.db").display())).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&NewJob::new("k", serde_json::json!({}), 3)).await.unwrap();
    tx.commit().await.unwrap();

    let claimed = store.claim_jobs(&["k"], "w", Duration::from_secs(30), 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(store.heartbeat(&claimed[0].lease, Duration::from_secs(30)).await.unwrap());
    let mut lease = store.lease_tx().await.unwrap();
    assert_eq!(synchronous(&mut lease).await, 1, "lease bookkeeping commits without waiting for fsync");
    lease.rollback().await.unwrap();

    // 2 = FULL: the WAL is fsynced at every commit.
    let mut durable = store.write_tx().await.unwrap();
    assert_eq!(synchronous(&mut durable).await, 2);
    durable.rollback().await.unwrap();
}

/// Notifications waiting for their 200 wait for at most one of the
/// workers' writes: a group commit that comes after two other writes
/// queued gets the writer before both of them.
#[tokio::test]
async fn a_group_commit_goes_ahead_of_queued_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store_in(&dir).await);
    let held = store.lease_tx().await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let store = store.clone();
        // Each sees, once it has the writer, how many notifications are committed.
        waiting.push(tokio::spawn(async move {
            let mut tx = store.lease_tx().await.unwrap();
            let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications").fetch_one(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
            seen
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let group_commit = {
        let store = store.clone();
        tokio::spawn(async move {
            let record = NotificationRecord {
                notification: NewNotification {
                    id: NotificationId::new(),
                    account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
                    envelope_id: EnvelopeId::parse("93be49ab-afa0-4adf-933c-f752070d71ec").unwrap(),
                    event: "envelope-sent".into(),
                    recipient_id: None,
                    generated_at: Utc::now(),
                    format: "json".into(),
                    origin: NotificationOrigin::Connect,
                    body_sha256: "body".into(),
                    disposition: Disposition::Ignored,
                    summary: serde_json::json!({}),
                },
                envelope: None,
                documents: Vec::new(),
                jobs: Vec::new(),
            };
            assert_eq!(store.record_notifications(&[&record]).await.unwrap(), [true]);
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.commit().await.unwrap();
    group_commit.await.unwrap();
    for task in waiting {
        assert_eq!(task.await.unwrap(), 1, "a write queued before the group commit went ahead of it");
    }
}

async fn store_in(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&format!("sqlite://{}", dir.path().join("q.db").display())).await.unwrap()
}

/// Enqueues one job with a `bytes`-long payload in its own transaction.
async fn write_job(store: &SqliteStore, n: usize, bytes: usize) {
    let mut tx = store.begin().await.unwrap();
    let payload = serde_json::json!({ "n": n, "pad": "x".repeat(bytes) });
    tx.enqueue(&NewJob::new("k", payload, 3)).await.unwrap();
    tx.commit().await.unwrap();
}

/// Commits return before their pages reach the database file; the
/// checkpointer copies them there soon after, without another write.
#[tokio::test]
async fn committed_pages_reach_the_database_file_without_a_further_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir).await;
    let db = dir.path().join("q.db");
    let before = std::fs::metadata(&db).unwrap().len();
    for n in 0..50 {
        write_job(&store, n, 8_000).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&db).unwrap().len() < before + 50 * 8_000 {
        assert!(tokio::time::Instant::now() < deadline, "the database file did not grow: no checkpoint ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Under writes that never pause, a checkpoint beside the writer never
/// catches up; past its limit the checkpointer holds writes back until
/// it has, so the WAL starts over instead of growing with the load.
#[tokio::test]
async fn the_wal_stays_bounded_under_writes_that_never_pause() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir).await;
    let strict = Checkpointer {
        conn: SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.path().join("q.db").display()))
            .unwrap()
            .connect()
            .await
            .unwrap(),
        writer: Arc::downgrade(&store.writer),
        commits: store.writer.lock().await.committed.subscribe(),
    };
    tokio::spawn(strict.run(64));
    let (jobs, bytes) = (1_500, 16_000);
    for n in 0..jobs {
        write_job(&store, n, bytes).await;
    }
    // Each job is written to the WAL in full, so a WAL that never
    // started over would hold at least every byte written (well under
    // the default limit, which therefore plays no part here).
    let wal = std::fs::metadata(dir.path().join("q.db-wal")).unwrap().len();
    assert!(wal < (jobs * bytes) as u64, "the WAL grew to {wal} bytes for {} bytes written", jobs * bytes);
}

/// A store written before the deduplication keys were indexed by time
/// keeps its notifications through the table's rebuild, and still
/// recognises their redelivery.
#[tokio::test]
async fn notifications_survive_the_rebuild_that_keys_them_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let mut conn = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true).connect().await.unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: MIGRATOR.iter().filter(|m| m.version < 5).cloned().collect::<Vec<_>>().into(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&mut conn).await.unwrap();
    let account = AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
    let envelope = EnvelopeId::parse("93be49ab-afa0-4adf-933c-f752070d71ec").unwrap();
    let old = NewNotification {
        id: NotificationId::new(),
        account_id: account,
        envelope_id: envelope,
        event: "envelope-completed".into(),
        recipient_id: None,
        generated_at: "2022-09-22T15:22:53.458074Z".parse().unwrap(),
        format: "json".into(),
        origin: NotificationOrigin::Connect,
        body_sha256: "old-body".into(),
        disposition: Disposition::Enqueued,
        summary: serde_json::json!({ "status": "completed" }),
    };
    sqlx::query(
        "INSERT INTO notifications (id, account_id, envelope_id, event, recipient_id, generated_at, format, origin, \
         dedupe_key, body_sha256, disposition, summary, received_at) VALUES (?, ?, ?, ?, NULL, ?, 'json', 'connect', ?, ?, 'enqueued', '{}', 1)",
    )
    .bind(old.id.to_string())
    .bind(account.to_string())
    .bind(envelope.to_string())
    .bind(&old.event)
    .bind(old.generated_at.timestamp_millis())
    .bind(old.dedupe_key())
    .bind(&old.body_sha256)
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&url).await.unwrap();
    let kept = store.enqueued_notifications(envelope).await.unwrap();
    assert_eq!(kept.iter().map(|n| n.new.id).collect::<Vec<_>>(), vec![old.id]);
    let redelivered = NewNotification { id: NotificationId::new(), body_sha256: "retry-body".into(), ..old.clone() };
    let replayed = NewNotification { id: NotificationId::new(), event: "envelope-sent".into(), ..old.clone() };
    let later = NewNotification {
        id: NotificationId::new(),
        body_sha256: "later-body".into(),
        generated_at: "2022-09-22T15:23:00Z".parse().unwrap(),
        ..old.clone()
    };
    let mut tx = store.begin().await.unwrap();
    let written = tx.insert_notifications(&[&redelivered, &replayed, &later]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, vec![false, false, true]);
}

/// A transaction dropped without a commit (an early return, an error)
/// leaves nothing behind, and the writer goes on working.
#[tokio::test]
async fn an_abandoned_write_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("q.db").display())).await.unwrap();
    let mut abandoned = store.begin().await.unwrap();
    abandoned.enqueue(&NewJob::new("k", serde_json::json!({ "n": 1 }), 3)).await.unwrap();
    drop(abandoned);
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&NewJob::new("k", serde_json::json!({ "n": 2 }), 3)).await.unwrap();
    tx.commit().await.unwrap();
    let claimed = store.claim_jobs(&["k"], "w", Duration::from_secs(30), 10).await.unwrap();
    let payloads: Vec<_> = claimed.iter().map(|c| c.job.payload.clone()).collect();
    assert_eq!(payloads, vec![serde_json::json!({ "n": 2 })]);
}

#[test]
fn named_parameters_become_anonymous_ones_in_order() {
    let named = Named::parse("UPDATE t SET a = :now WHERE b = :kinds AND c = :now || '::'");
    assert_eq!(named.sql, "UPDATE t SET a = ? WHERE b = ? AND c = ? || '::'");
    assert_eq!(named.order, ["now", "kinds", "now"]);
}
