//! The default store: one SQLite file in WAL mode. SQLite has a single
//! writer, so every write goes through one connection with `BEGIN
//! IMMEDIATE` (which also makes the queue's claim a single claimer), while
//! reads use their own small pool.
//!
//! The writer connection is not pooled: a pool hands a connection back
//! through a spawned task that pings it first, two more hand-offs to
//! SQLite's thread for every transaction, and with every write going
//! through this one connection they were a third of each group commit's time.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, Sqlite, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::*;
use crate::ids::{AccountId, EnvelopeId, EventId, JobId, NotificationId};
use crate::jobs::JobKind;

use super::migrations::SQLITE_MIGRATOR as MIGRATOR;

/// Longest a write waits for the writer before failing.
const WRITER_WAIT: Duration = Duration::from_secs(30);

/// How long the checkpointer waits after a commit, so that one checkpoint
/// (and its fsync of the database file) covers the commits that follow.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(100);

/// WAL frames (pages) past which the checkpointer holds writes back until
/// the WAL is copied in full: 128 MiB of 4 KiB pages. Under steady writes a
/// checkpoint that runs beside the writer never catches up with it, and
/// SQLite only starts the WAL over once one has: without this the WAL would
/// grow as long as the load lasts. Each hold costs the writer a checkpoint's
/// fsyncs (10-20 ms under full ingest here); at 8,192 frames they came five
/// times a second and showed in the p99 latency.
const WAL_LIMIT_FRAMES: i64 = 32_768;

/// The one connection that writes, lent whole to one transaction at a time.
#[derive(Debug)]
struct Writer {
    conn: SqliteConnection,
    /// A transaction was begun and neither committed nor rolled back (its
    /// holder returned early or failed): the next holder rolls it back.
    open: bool,
    /// Told of each commit; the checkpointer stops when this is dropped.
    committed: watch::Sender<()>,
}

impl Writer {
    /// The open transaction has committed.
    fn closed(&mut self) {
        self.open = false;
        self.committed.send_replace(());
    }
}

/// How a write queues for the writer.
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// Notifications waiting for their 200: straight to the writer's queue.
    GroupCommit,
    /// Everything else: behind the other writes of this lane first.
    Other,
}

/// A write transaction holding the writer; dropped without `commit`, it is
/// rolled back before the writer's next transaction begins.
#[derive(Debug)]
struct WriteTx {
    writer: OwnedMutexGuard<Writer>,
    /// Held by a write that is not a group commit until the writer is free
    /// again (declared after `writer`, so released after it).
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Runs `statements`, which end with COMMIT, in one hand-off; returns their rows.
    async fn commit_after(mut self, statements: SqliteQuery<'_>) -> StoreResult<Vec<SqliteRow>> {
        let rows = statements.fetch_all(&mut self.writer.conn).await?;
        self.writer.closed();
        Ok(rows)
    }

    async fn commit(mut self) -> StoreResult<()> {
        sqlx::query("COMMIT").execute(&mut self.writer.conn).await?;
        self.writer.closed();
        Ok(())
    }

    #[cfg(test)]
    async fn rollback(mut self) -> StoreResult<()> {
        sqlx::query("ROLLBACK").execute(&mut self.writer.conn).await?;
        self.writer.open = false;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.writer.conn
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.writer.conn
    }
}

#[derive(Debug)]
pub struct SqliteStore {
    writer: Arc<Mutex<Writer>>,
    /// Every write but a group commit passes here first, one at a time, so
    /// at most one of them is ever queued for the writer ahead of a group
    /// commit: the writer's queue is first come, first served, and the
    /// workers' claims, deferrals and heartbeats would otherwise each take
    /// a turn before the notifications waiting for their 200.
    others: Arc<Mutex<()>>,
    reader: SqlitePool,
    signal: Arc<watch::Sender<u64>>,
}

impl SqliteStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        let open_err = |reason: String| StoreError::Open { url: url.to_string(), reason };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| open_err(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged notification must survive power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // A batch insert that may hit a constraint keeps a statement
            // journal; past 64 KiB SQLite spills it to a new temporary file,
            // created and deleted by every group commit.
            .pragma("temp_store", "memory")
            // The checkpointer copies the WAL back from its own connection:
            // a checkpoint run inside a commit held up every notification
            // waiting on that commit.
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = options.connect().await?;
        MIGRATOR.run(&mut conn).await?;
        // The ids a claim picks, between its statements (see claim_jobs).
        sqlx::query("CREATE TEMP TABLE claimed (id TEXT PRIMARY KEY, state TEXT NOT NULL)").execute(&mut conn).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone().read_only(true)).await?;
        let (signal, _) = watch::channel(0);
        let (committed, mut commits) = watch::channel(());
        // A first checkpoint for whatever the migrations wrote.
        commits.mark_changed();
        let writer = Arc::new(Mutex::new(Writer { conn, open: false, committed }));
        let checkpointer = Checkpointer { conn: options.connect().await?, writer: Arc::downgrade(&writer), commits };
        tokio::spawn(checkpointer.run(WAL_LIMIT_FRAMES));
        Ok(Self { writer, others: Arc::new(Mutex::new(())), reader, signal: Arc::new(signal) })
    }

    /// Takes the writer, rolling back whatever its last holder left open,
    /// and marks it open: if what follows fails halfway, the next holder
    /// rolls it back in turn.
    async fn take_writer(&self, lane: Lane) -> StoreResult<WriteTx> {
        // As a pool's acquire timeout would: a writer held this long means
        // something is stuck, and the caller gets an error, not a hang.
        let (mut writer, turn) = tokio::time::timeout(WRITER_WAIT, async {
            let turn = match lane {
                Lane::GroupCommit => None,
                Lane::Other => Some(self.others.clone().lock_owned().await),
            };
            (self.writer.clone().lock_owned().await, turn)
        })
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?;
        if writer.open {
            // Fails harmlessly when SQLite already ended it (a failed COMMIT can).
            let _ = sqlx::query("ROLLBACK").execute(&mut writer.conn).await;
        }
        writer.open = true;
        Ok(WriteTx { writer, _turn: turn })
    }

    /// Runs `statements`, a whole transaction from BEGIN to COMMIT, on the
    /// writer in one hand-off; returns their rows.
    async fn write_all(&self, lane: Lane, statements: SqliteQuery<'_>) -> StoreResult<Vec<SqliteRow>> {
        self.take_writer(lane).await?.commit_after(statements).await
    }

    /// Takes the writer and runs `begin` (which sets `synchronous` and
    /// begins the transaction) on it.
    async fn begin_with(&self, begin: &'static str) -> StoreResult<WriteTx> {
        let mut tx = self.take_writer(Lane::Other).await?;
        // Both statements in one call: one hand-off to SQLite's thread.
        sqlx::Executor::execute(&mut *tx, begin).await?;
        Ok(tx)
    }

    /// A write whose commit is fsynced before it returns. The writer is one
    /// connection whose `synchronous` setting each transaction sets for
    /// itself, so no write depends on what the one before it left behind.
    async fn write_tx(&self) -> StoreResult<WriteTx> {
        self.begin_with("PRAGMA synchronous = FULL; BEGIN IMMEDIATE").await
    }

    /// A lease's bookkeeping (claim, heartbeat, defer, release, failure):
    /// committed to the WAL without waiting for its fsync, which the next
    /// durable commit (or checkpoint) covers. A process crash loses nothing;
    /// power loss can lose the last few, and each such loss only hands a job
    /// out again, which at-least-once processing already allows. Waiting
    /// for an fsync on each of them took the single writer from ingest.
    async fn lease_tx(&self) -> StoreResult<WriteTx> {
        self.begin_with("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE").await
    }
}

/// Copies committed pages from the WAL back into the database file, on its
/// own connection, beside the writer rather than inside a commit.
struct Checkpointer {
    conn: SqliteConnection,
    writer: std::sync::Weak<Mutex<Writer>>,
    commits: watch::Receiver<()>,
}

impl Checkpointer {
    async fn run(mut self, limit_frames: i64) {
        while self.commits.changed().await.is_ok() {
            tokio::time::sleep(CHECKPOINT_DELAY).await;
            match self.checkpoint().await {
                Ok((frames, _)) if frames > limit_frames => {
                    let Some(writer) = self.writer.upgrade() else { break };
                    // With writes held back, this checkpoint copies the rest,
                    // and the next write starts the WAL over.
                    let _held = writer.lock().await;
                    let held = std::time::Instant::now();
                    // A reader still on an older snapshot can keep even this
                    // one from copying everything; the next round tries again.
                    match self.checkpoint().await {
                        Ok((_, left)) => tracing::debug!(
                            frames,
                            left,
                            held_us = held.elapsed().as_micros() as u64,
                            "writes held while the WAL was copied back"
                        ),
                        Err(error) => tracing::warn!(%error, "SQLite checkpoint failed"),
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "SQLite checkpoint failed"),
            }
        }
    }

    /// A passive checkpoint (it never waits for the writer or a reader);
    /// returns how many frames the WAL holds and how many of them it could
    /// not copy.
    async fn checkpoint(&mut self) -> StoreResult<(i64, i64)> {
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut self.conn).await?;
        let (frames, copied): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
        Ok((frames, frames - copied))
    }
}

const NOTIFICATION_COLUMNS: &str = "id, account_id, envelope_id, event, recipient_id, generated_at, format, origin, \
     dedupe_key, body_sha256, disposition, summary, received_at";
const ENVELOPE_COLUMNS: &str = "envelope_id, account_id, status, subject, completed_at, created_at, updated_at";
/// A processed or flagged envelope keeps its status when a late
/// notification names it again.
const ENVELOPE_CONFLICT: &str = " ON CONFLICT (envelope_id) DO UPDATE SET \
     status = CASE WHEN envelopes.status IN ('processed', 'flagged') THEN envelopes.status ELSE excluded.status END, \
     subject = COALESCE(excluded.subject, envelopes.subject), \
     completed_at = COALESCE(excluded.completed_at, envelopes.completed_at), updated_at = excluded.updated_at \
     WHERE envelopes.account_id = excluded.account_id";
const DOCUMENT_COLUMNS: &str =
    "account_id, envelope_id, document_id, name, file_name, content_type, size_bytes, sha256, storage_key, stored_at";
const DOCUMENT_CONFLICT: &str = " ON CONFLICT (account_id, envelope_id, document_id) DO UPDATE SET \
     name = excluded.name, file_name = excluded.file_name, content_type = excluded.content_type, \
     size_bytes = excluded.size_bytes, sha256 = excluded.sha256, storage_key = excluded.storage_key, \
     stored_at = excluded.stored_at";
const JOB_COLUMNS: &str =
    "id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at";

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

type ValuesRow<'q, 'args> = sqlx::query_builder::Separated<'q, 'args, Sqlite, &'static str>;

/// The INSERT of `batch`, returning the ids of the notifications not recorded before.
fn push_insert_notifications<'args>(
    query: &mut sqlx::QueryBuilder<'args, Sqlite>,
    batch: &[&NewNotification],
    now: i64,
) {
    // A VALUES list names its columns column1, column2, …: column2 is the
    // account, column3 the envelope. A notification naming an envelope of
    // another account is not written (nor, then, anything that depends on it).
    let width = NOTIFICATION_COLUMNS.split(',').count();
    let selected: Vec<String> = (1..=width).map(|i| format!("column{i}")).collect();
    query.push(format!("INSERT INTO notifications ({NOTIFICATION_COLUMNS}) SELECT {} FROM (", selected.join(", ")));
    query.push_values(batch, |mut row, n| {
        row.push_bind(n.id.to_string())
            .push_bind(n.account_id.to_string())
            .push_bind(n.envelope_id.to_string())
            .push_bind(n.event.clone())
            .push_bind(n.recipient_id.clone())
            .push_bind(n.generated_at.timestamp_millis())
            .push_bind(n.format.clone())
            .push_bind(n.origin.as_str())
            .push_bind(n.dedupe_key())
            .push_bind(n.body_sha256.clone())
            .push_bind(n.disposition.as_str())
            .push_bind(n.summary.to_string())
            .push_bind(now);
    });
    // The WHERE also keeps SQLite from reading ON CONFLICT as a join's ON.
    query.push(
        ") WHERE NOT EXISTS (SELECT 1 FROM envelopes \
         WHERE envelopes.envelope_id = column3 AND envelopes.account_id <> column2) \
         ON CONFLICT DO NOTHING RETURNING id",
    );
}

fn bind_envelope(row: &mut ValuesRow<'_, '_>, e: &EnvelopeUpsert, now: i64) {
    row.push_bind(e.envelope_id.to_string())
        .push_bind(e.account_id.to_string())
        .push_bind(e.status.as_str())
        .push_bind(e.subject.clone())
        .push_bind(e.completed_at.map(|t| t.timestamp_millis()))
        .push_bind(now)
        .push_bind(now);
}

fn bind_document(row: &mut ValuesRow<'_, '_>, d: &DocumentRecord) {
    row.push_bind(d.account_id.to_string())
        .push_bind(d.envelope_id.to_string())
        .push_bind(d.document_id.clone())
        .push_bind(d.name.clone())
        .push_bind(d.file_name.clone())
        .push_bind(d.content_type.clone())
        .push_bind(i64::try_from(d.size_bytes).unwrap_or(i64::MAX))
        .push_bind(d.sha256.clone())
        .push_bind(d.storage_key.clone())
        .push_bind(d.stored_at.timestamp_millis());
}

fn bind_job(row: &mut ValuesRow<'_, '_>, job: &NewJob, now: i64) {
    row.push_bind(JobId::new().to_string())
        .push_bind(job.kind.clone())
        .push_bind(job.unique_key.clone())
        .push_bind(job.payload.to_string())
        .push_bind("ready")
        .push_bind(0_i64)
        .push_bind(i64::from(job.max_attempts.max(1)))
        .push_bind(job.run_at.map_or(now, |t| t.timestamp_millis()))
        .push_bind(now)
        .push_bind(now);
}

/// `; INSERT INTO table (columns) …` of one row per `(notification, item)`,
/// each written only if its notification was inserted earlier in this
/// transaction (ids are fresh, so a row with that id is this batch's own).
/// `conflict` ends the statement.
fn push_if_recorded<'args, T>(
    query: &mut sqlx::QueryBuilder<'args, Sqlite>,
    table: &str,
    columns: &str,
    rows: &[(NotificationId, &T)],
    mut bind: impl FnMut(&mut ValuesRow<'_, 'args>, &T),
    conflict: &str,
) {
    if rows.is_empty() {
        return;
    }
    // A VALUES list names its columns column1, column2, …; column1 is the notification.
    let width = columns.split(',').count();
    let selected: Vec<String> = (2..=width + 1).map(|i| format!("column{i}")).collect();
    query.push(format!("; INSERT INTO {table} ({columns}) SELECT {} FROM (", selected.join(", ")));
    query.push_values(rows, |mut row, (notification, item)| {
        row.push_bind(notification.to_string());
        bind(&mut row, item);
    });
    // The WHERE also keeps SQLite from reading ON CONFLICT as a join's ON.
    query.push(") WHERE EXISTS (SELECT 1 FROM notifications WHERE notifications.id = column1)");
    query.push(conflict);
}

/// The ids a statement list returned (RETURNING id).
fn returned_ids(rows: &[SqliteRow]) -> StoreResult<std::collections::HashSet<String>> {
    Ok(rows.iter().map(|row| row.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(to_time)
}

fn kinds_json(kinds: &[&str]) -> String {
    serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into())
}

fn parse_uuid(what: &str, text: &str) -> StoreResult<uuid::Uuid> {
    uuid::Uuid::try_parse(text).map_err(|_| corrupt(what, text))
}

fn json_column(row: &SqliteRow, column: &str) -> StoreResult<serde_json::Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column, &text))
}

fn u32_column(row: &SqliteRow, column: &str) -> StoreResult<u32> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| corrupt(column, &value.to_string()))
}

fn notification_from_row(row: &SqliteRow) -> StoreResult<Notification> {
    let account: String = row.try_get("account_id")?;
    let origin: String = row.try_get("origin")?;
    let disposition: String = row.try_get("disposition")?;
    Ok(Notification {
        new: NewNotification {
            id: NotificationId(parse_uuid("notifications.id", &row.try_get::<String, _>("id")?)?),
            account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id", &account))?,
            envelope_id: envelope_id(row, "envelope_id")?,
            event: row.try_get("event")?,
            recipient_id: row.try_get("recipient_id")?,
            generated_at: to_time(row.try_get("generated_at")?),
            format: row.try_get("format")?,
            origin: NotificationOrigin::parse(&origin).ok_or_else(|| corrupt("origin", &origin))?,
            body_sha256: row.try_get("body_sha256")?,
            disposition: Disposition::parse(&disposition).ok_or_else(|| corrupt("disposition", &disposition))?,
            summary: json_column(row, "summary")?,
        },
        received_at: to_time(row.try_get("received_at")?),
    })
}

fn job_from_row(row: &SqliteRow) -> StoreResult<Job> {
    let state: String = row.try_get("state")?;
    Ok(Job {
        id: JobId(parse_uuid("jobs.id", &row.try_get::<String, _>("id")?)?),
        kind: row.try_get("kind")?,
        unique_key: row.try_get("unique_key")?,
        payload: json_column(row, "payload")?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("jobs.state", &state))?,
        attempts: u32_column(row, "attempts")?,
        max_attempts: u32_column(row, "max_attempts")?,
        run_at: to_time(row.try_get("run_at")?),
        lease_expires_at: opt_time(row.try_get("lease_expires_at")?),
        last_error: row.try_get("last_error")?,
        created_at: to_time(row.try_get("created_at")?),
        updated_at: to_time(row.try_get("updated_at")?),
        finished_at: opt_time(row.try_get("finished_at")?),
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: EventId(parse_uuid("events.id", &row.try_get::<String, _>("id")?)?),
        envelope_id: envelope_id(row, "envelope_id")?,
        rule: row.try_get("rule")?,
        event_type: row.try_get("event_type")?,
        body: json_column(row, "body")?,
        created_at: to_time(row.try_get("created_at")?),
        ordinal: u32_column(row, "ordinal")?,
    })
}

fn dead_delivery_from_row(row: &SqliteRow) -> StoreResult<DeadDelivery> {
    Ok(DeadDelivery {
        event_id: EventId(parse_uuid("deliveries.event_id", &row.try_get::<String, _>("event_id")?)?),
        envelope_id: envelope_id(row, "envelope_id")?,
        event_type: row.try_get("event_type")?,
        sink: row.try_get("sink")?,
        attempts: u32_column(row, "attempts")?,
        last_error: row.try_get("last_error")?,
        failed_at: opt_time(row.try_get("failed_at")?),
        job_id: JobId(parse_uuid("jobs.id", &row.try_get::<String, _>("job_id")?)?),
    })
}

/// Dead `deliver` jobs with their delivery, filtered by ?1 event, ?2 sink, ?3 since (each may be NULL).
const DEAD_DELIVERIES: &str = "SELECT d.event_id, e.envelope_id, e.event_type, d.sink, j.attempts,
         COALESCE(j.last_error, d.last_error) AS last_error, j.finished_at AS failed_at, j.id AS job_id
     FROM jobs j
     JOIN deliveries d ON j.unique_key = d.event_id || '/' || d.sink
     JOIN events e ON e.id = d.event_id
     WHERE j.kind = ?5 AND j.state = 'dead'
       AND (?1 IS NULL OR d.event_id = ?1) AND (?2 IS NULL OR d.sink = ?2) AND (?3 IS NULL OR j.finished_at >= ?3)
     ORDER BY j.finished_at DESC, j.id
     LIMIT ?4";

fn envelope_from_row(row: &SqliteRow) -> StoreResult<EnvelopeRecord> {
    let account: String = row.try_get("account_id")?;
    let status: String = row.try_get("status")?;
    Ok(EnvelopeRecord {
        envelope_id: envelope_id(row, "envelope_id")?,
        account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id", &account))?,
        status: EnvelopeStatus::parse(&status).ok_or_else(|| corrupt("envelopes.status", &status))?,
        subject: row.try_get("subject")?,
        completed_at: opt_time(row.try_get("completed_at")?),
        created_at: to_time(row.try_get("created_at")?),
        updated_at: to_time(row.try_get("updated_at")?),
    })
}

fn envelope_id(row: &SqliteRow, column: &str) -> StoreResult<EnvelopeId> {
    let text: String = row.try_get(column)?;
    EnvelopeId::parse(&text).map_err(|_| corrupt(column, &text))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        Ok(Box::new(SqliteTx { tx: self.write_tx().await?, signal: self.signal.clone(), enqueued: false }))
    }

    /// The whole batch, from BEGIN to COMMIT, goes to SQLite's thread as one
    /// list of statements: each hand-off to that thread waits for a tokio
    /// worker to pick the answer up, and with five of them a group commit
    /// spent more time handing off than writing.
    async fn record_notifications(&self, records: &[&NotificationRecord]) -> StoreResult<Vec<bool>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let RecordRows { notifications, envelopes, documents, jobs } = RecordRows::of(records);

        let mut query = sqlx::QueryBuilder::<Sqlite>::new("PRAGMA synchronous = FULL; BEGIN IMMEDIATE; ");
        push_insert_notifications(&mut query, &notifications, now);
        // The envelope before its documents, which refer to it.
        push_if_recorded(
            &mut query,
            "envelopes",
            ENVELOPE_COLUMNS,
            &envelopes,
            |r, e| bind_envelope(r, e, now),
            ENVELOPE_CONFLICT,
        );
        // SQLite allows 32,766 parameters in a statement: a batch of
        // notifications with many embedded documents gets several INSERTs.
        for documents in documents.chunks(1_000) {
            push_if_recorded(&mut query, "documents", DOCUMENT_COLUMNS, documents, bind_document, DOCUMENT_CONFLICT);
        }
        push_if_recorded(&mut query, "jobs", JOB_COLUMNS, &jobs, |r, j| bind_job(r, j, now), " ON CONFLICT DO NOTHING");
        query.push("; COMMIT");

        let written = returned_ids(&self.write_all(Lane::GroupCommit, query.build()).await?)?;
        if !jobs.is_empty() {
            // Perhaps every job was a duplicate: a worker woken for nothing finds nothing.
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(records.iter().map(|r| written.contains(&r.notification.id.to_string())).collect())
    }

    async fn check_ready(&self) -> StoreResult<()> {
        let expected = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.reader)
            .await?;
        let found = found.unwrap_or(0);
        if found < expected {
            return Err(StoreError::NotMigrated { found, expected });
        }
        Ok(())
    }

    fn job_signal(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    async fn claim_jobs(
        &self,
        kinds: &[&str],
        worker: &str,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let now = now_ms();
        let kinds = kinds_json(kinds);
        // Idle workers ask again at every wake-up (each group commit that
        // enqueues wakes them all); when nothing is due, a reader answers
        // and the writer stays with ingest. A job that becomes due after this
        // read wakes the workers again.
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready
                     WHERE state = 'ready' AND run_at <= ?1 AND kind IN (SELECT value FROM json_each(?2)))
                 OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_parked
                     WHERE state = 'parked' AND run_at <= ?1 AND kind IN (SELECT value FROM json_each(?2)))
                 OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_leased
                     WHERE state = 'running' AND lease_expires_at <= ?1 AND kind IN (SELECT value FROM json_each(?2)))",
        )
        .bind(now)
        .bind(&kinds)
        .fetch_one(&self.reader)
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        // The whole claim is one statement list, BEGIN to COMMIT: one
        // hand-off to SQLite's thread while the writer is held, where a
        // statement at a time waited on a busy tokio worker between each.
        // `temp.claimed` (in memory, on the writer's connection) carries the
        // picked ids from the pick to the statements after it. Parameters
        // are anonymous, bound below in the order they appear: sqlx numbers
        // those across statements, while a numbered one after a gap (?1, ?4)
        // can go unbound in a later statement.
        let rows = self
            .write_all(
                Lane::Other,
                sqlx::query(
                    "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE;
                     -- Expired jobs with no attempts left become dead letters
                     -- rather than crash-looping; their open attempt is closed
                     -- as lease_expired.
                     UPDATE job_attempts SET outcome = 'lease_expired', finished_at = ?
                     WHERE finished_at IS NULL AND job_id IN (SELECT id FROM jobs INDEXED BY jobs_leased
                         WHERE state = 'running' AND lease_expires_at <= ? AND attempts >= max_attempts
                         AND kind IN (SELECT value FROM json_each(?)));
                     UPDATE jobs SET state = 'dead',
                         last_error = 'lease expired during attempt ' || attempts || ' (the worker stopped or stalled)',
                         lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL,
                         finished_at = ?, updated_at = ?
                     WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_leased
                         WHERE state = 'running' AND lease_expires_at <= ? AND attempts >= max_attempts
                         AND kind IN (SELECT value FROM json_each(?)));
                     -- One walk per state along its partial index, each stopping
                     -- at the first due jobs. Left to itself, SQLite answers the
                     -- OR of the three states through the (state, finished_at)
                     -- index and reads every job in that state: with a backlog
                     -- of tens of thousands of parked jobs (consent missing),
                     -- each claim read them all.
                     DELETE FROM temp.claimed;
                     INSERT INTO temp.claimed (id, state) SELECT id, state FROM (
                         SELECT * FROM (SELECT id, state, run_at FROM jobs INDEXED BY jobs_ready
                             WHERE state = 'ready' AND run_at <= ? AND kind IN (SELECT value FROM json_each(?))
                             ORDER BY run_at LIMIT ?)
                         UNION ALL
                         SELECT * FROM (SELECT id, state, run_at FROM jobs INDEXED BY jobs_parked
                             WHERE state = 'parked' AND run_at <= ? AND kind IN (SELECT value FROM json_each(?))
                             ORDER BY run_at LIMIT ?)
                         UNION ALL
                         SELECT * FROM (SELECT id, state, run_at FROM jobs INDEXED BY jobs_leased
                             WHERE state = 'running' AND lease_expires_at <= ? AND kind IN (SELECT value FROM json_each(?))
                             ORDER BY lease_expires_at LIMIT ?))
                     ORDER BY run_at, id LIMIT ?;
                     -- Only the attempts of jobs taken over here are closed:
                     -- another expired job may still finish under its old worker.
                     UPDATE job_attempts SET outcome = 'lease_expired', finished_at = ?
                     WHERE finished_at IS NULL AND job_id IN (SELECT id FROM temp.claimed WHERE state = 'running');
                     UPDATE jobs SET state = 'running', attempts = attempts + 1,
                         lease_token = lower(hex(randomblob(16))), lease_owner = ?,
                         lease_expires_at = ? + ?, updated_at = ?
                     WHERE id IN (SELECT id FROM temp.claimed)
                     RETURNING *, (SELECT rowid FROM temp.claimed WHERE temp.claimed.id = jobs.id) AS due_order;
                     INSERT INTO job_attempts (job_id, attempt, worker, started_at)
                         SELECT id, attempts, ?, ? FROM jobs WHERE id IN (SELECT id FROM temp.claimed);
                     COMMIT",
                )
                .bind(now)
                .bind(now)
                .bind(&kinds)
                .bind(now)
                .bind(now)
                .bind(now)
                .bind(&kinds)
                .bind(now)
                .bind(&kinds)
                .bind(i64::from(limit))
                .bind(now)
                .bind(&kinds)
                .bind(i64::from(limit))
                .bind(now)
                .bind(&kinds)
                .bind(i64::from(limit))
                .bind(i64::from(limit))
                .bind(now)
                .bind(worker)
                .bind(now)
                .bind(millis(lease))
                .bind(now)
                .bind(worker)
                .bind(now),
            )
            .await?;
        let rows = in_due_order(rows)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let job = job_from_row(row)?;
            let token: String = row.try_get("lease_token")?;
            let lease = Lease { job: job.id, token: parse_uuid("jobs.lease_token", &token)? };
            claimed.push(ClaimedJob { job, lease });
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.lease_tx().await?;
        let result = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?1, updated_at = ?2
             WHERE id = ?3 AND lease_token = ?4 AND state = 'running'",
        )
        .bind(now + millis(extend))
        .bind(now)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    async fn fail_job(&self, lease: &Lease, error: &str, retry: Retry) -> StoreResult<FailOutcome> {
        let now = now_ms();
        let (retry_at, never) = match retry {
            Retry::At(at) => (at.timestamp_millis(), false),
            Retry::Never => (now, true),
        };
        let error = clip(error);
        let mut tx = self.lease_tx().await?;
        let row = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN ?1 OR attempts >= max_attempts THEN 'dead' ELSE 'ready' END,
                 run_at = CASE WHEN ?1 OR attempts >= max_attempts THEN run_at ELSE ?2 END,
                 finished_at = CASE WHEN ?1 OR attempts >= max_attempts THEN ?3 ELSE NULL END,
                 last_error = ?4, lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?3
             WHERE id = ?5 AND lease_token = ?6 AND state = 'running'
             RETURNING state, run_at",
        )
        .bind(never)
        .bind(retry_at)
        .bind(now)
        .bind(&error)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(FailOutcome::LeaseLost) };
        close_attempt(&mut tx, lease.job, AttemptOutcome::Failed, Some(&error), now).await?;
        tx.commit().await?;
        let state: String = row.try_get("state")?;
        Ok(if state == "dead" {
            FailOutcome::Dead
        } else {
            FailOutcome::WillRetry { at: to_time(row.try_get("run_at")?) }
        })
    }

    async fn release_job(&self, lease: &Lease) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.lease_tx().await?;
        let result = sqlx::query(
            "UPDATE jobs SET state = 'ready', attempts = attempts - 1, run_at = ?1, updated_at = ?1,
                 lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?2 AND lease_token = ?3 AND state = 'running'",
        )
        .bind(now)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        close_attempt(&mut tx, lease.job, AttemptOutcome::Released, None, now).await?;
        tx.commit().await?;
        self.signal.send_modify(|v| *v += 1);
        Ok(true)
    }

    async fn defer_jobs(&self, deferrals: &[Deferral]) -> StoreResult<Vec<bool>> {
        let now = now_ms();
        // Every deferral in one hand-off to SQLite's thread: the writer is
        // held throughout, and ingest waits for it.
        let mut statements = String::from("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE;");
        for _ in deferrals {
            // An open attempt of a job with no lease is the one this lease
            // ran: a worker that takes a job over closes the old attempt.
            statements.push_str(
                " UPDATE jobs SET state = ?, attempts = attempts - 1, run_at = ?, last_error = ?, updated_at = ?,
                     lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING id;
                 UPDATE job_attempts SET outcome = 'deferred', error = ?, finished_at = ?
                 WHERE job_id = ? AND finished_at IS NULL AND (SELECT lease_token FROM jobs WHERE id = ?) IS NULL;",
            );
        }
        statements.push_str(" COMMIT");
        let mut query = sqlx::query(&statements);
        for Deferral { lease, reason, until, parked } in deferrals {
            let reason = clip(reason);
            let job = lease.job.to_string();
            query = query
                .bind(if *parked { JobState::Parked } else { JobState::Ready }.as_str())
                .bind(until.timestamp_millis())
                .bind(reason.clone())
                .bind(now)
                .bind(job.clone())
                .bind(lease.token.simple().to_string())
                .bind(reason)
                .bind(now)
                .bind(job.clone())
                .bind(job);
        }
        let deferred = returned_ids(&self.write_all(Lane::Other, query).await?)?;
        let held: Vec<bool> = deferrals.iter().map(|d| deferred.contains(&d.lease.job.to_string())).collect();
        if held.contains(&true) {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(held)
    }

    async fn rearm_job(&self, job: &NewJob) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'ready', 0, ?5, ?6, ?7, ?7)
             ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL DO UPDATE SET
                 state = 'ready', attempts = 0, max_attempts = excluded.max_attempts, payload = excluded.payload,
                 run_at = excluded.run_at, last_error = NULL, finished_at = NULL, updated_at = excluded.updated_at
             WHERE jobs.state IN ('done', 'dead')",
        )
        .bind(JobId::new().to_string())
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(job.payload.to_string())
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(job.run_at.map_or(now, |t| t.timestamp_millis()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let armed = result.rows_affected() > 0;
        if armed {
            sqlx::query(
                "DELETE FROM job_attempts WHERE finished_at IS NOT NULL
                 AND job_id = (SELECT id FROM jobs WHERE kind = ?1 AND unique_key = ?2)",
            )
            .bind(&job.kind)
            .bind(&job.unique_key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if armed {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(armed)
    }

    async fn wake_parked(&self) -> StoreResult<u64> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let result = sqlx::query("UPDATE jobs SET run_at = ?1, updated_at = ?1 WHERE state = 'parked' AND run_at > ?1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if result.rows_affected() > 0 {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(result.rows_affected())
    }

    async fn next_due(&self, kinds: &[&str]) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<i64> = sqlx::query_scalar(
            // As in claim_jobs: each state's partial index, walked until the first job of these kinds.
            "SELECT MIN(t) FROM (
                 SELECT * FROM (SELECT run_at AS t FROM jobs INDEXED BY jobs_ready
                     WHERE state = 'ready' AND kind IN (SELECT value FROM json_each(?1)) ORDER BY run_at LIMIT 1)
                 UNION ALL
                 SELECT * FROM (SELECT run_at FROM jobs INDEXED BY jobs_parked
                     WHERE state = 'parked' AND kind IN (SELECT value FROM json_each(?1)) ORDER BY run_at LIMIT 1)
                 UNION ALL
                 SELECT * FROM (SELECT lease_expires_at FROM jobs INDEXED BY jobs_leased
                     WHERE state = 'running' AND kind IN (SELECT value FROM json_each(?1))
                     ORDER BY lease_expires_at LIMIT 1))",
        )
        .bind(kinds_json(kinds))
        .fetch_one(&self.reader)
        .await?;
        Ok(opt_time(due))
    }

    async fn reconcile_checkpoint(&self, account: AccountId) -> StoreResult<Option<ReconcileCheckpoint>> {
        let row = sqlx::query("SELECT * FROM reconcile_checkpoints WHERE account_id = ?1")
            .bind(account.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|row| {
            let found: i64 = row.try_get("found_total")?;
            Ok(ReconcileCheckpoint {
                account_id: account,
                listed_until: to_time(row.try_get("listed_until")?),
                found_total: u64::try_from(found).unwrap_or(0),
                updated_at: to_time(row.try_get("updated_at")?),
            })
        })
        .transpose()
    }

    async fn reconcile_pass(&self, account: AccountId) -> StoreResult<Option<ReconcilePass>> {
        let row = sqlx::query("SELECT * FROM reconcile_passes WHERE account_id = ?1")
            .bind(account.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|row| {
            let position: i64 = row.try_get("position")?;
            let found: i64 = row.try_get("found")?;
            Ok(ReconcilePass {
                from: to_time(row.try_get("listed_from")?),
                until: to_time(row.try_get("listed_until")?),
                position: u64::try_from(position).unwrap_or(0),
                found: u64::try_from(found).unwrap_or(0),
            })
        })
        .transpose()
    }

    async fn save_reconcile_pass(&self, account: AccountId, pass: &ReconcilePass) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO reconcile_passes (account_id, listed_from, listed_until, position, found, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (account_id) DO UPDATE SET listed_from = excluded.listed_from,
                 listed_until = excluded.listed_until, position = excluded.position, found = excluded.found,
                 updated_at = excluded.updated_at",
        )
        .bind(account.to_string())
        .bind(pass.from.timestamp_millis())
        .bind(pass.until.timestamp_millis())
        .bind(i64::try_from(pass.position).unwrap_or(i64::MAX))
        .bind(i64::try_from(pass.found).unwrap_or(i64::MAX))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn advance_reconcile_checkpoint(
        &self,
        account: AccountId,
        listed_until: DateTime<Utc>,
        found: u64,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO reconcile_checkpoints (account_id, listed_until, found_total, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account_id) DO UPDATE SET
                 listed_until = MAX(reconcile_checkpoints.listed_until, excluded.listed_until),
                 found_total = reconcile_checkpoints.found_total + excluded.found_total,
                 updated_at = excluded.updated_at",
        )
        .bind(account.to_string())
        .bind(listed_until.timestamp_millis())
        .bind(i64::try_from(found).unwrap_or(i64::MAX))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM reconcile_passes WHERE account_id = ?1")
            .bind(account.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn job_by_key(&self, kind: &str, unique_key: &str) -> StoreResult<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE kind = ?1 AND unique_key = ?2")
            .bind(kind)
            .bind(unique_key)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let row =
            sqlx::query("SELECT * FROM jobs WHERE id = ?1").bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn job_attempts(&self, id: JobId) -> StoreResult<Vec<JobAttempt>> {
        let rows = sqlx::query("SELECT * FROM job_attempts WHERE job_id = ?1 ORDER BY id")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: Option<String> = row.try_get("outcome")?;
                Ok(JobAttempt {
                    attempt: u32_column(row, "attempt")?,
                    worker: row.try_get("worker")?,
                    started_at: to_time(row.try_get("started_at")?),
                    finished_at: opt_time(row.try_get("finished_at")?),
                    outcome: outcome
                        .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| corrupt("job_attempts.outcome", &o)))
                        .transpose()?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }

    async fn dead_jobs(&self, limit: u32) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE state = 'dead' ORDER BY finished_at DESC, id LIMIT ?1")
            .bind(i64::from(limit))
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn replay_job(&self, id: JobId, attempts: u32) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let result = sqlx::query(
            "UPDATE jobs SET state = 'ready', max_attempts = attempts + ?1, run_at = ?2, finished_at = NULL, updated_at = ?2
             WHERE id = ?3 AND state = 'dead'",
        )
        .bind(i64::from(attempts))
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let replayed = result.rows_affected() == 1;
        if replayed {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(replayed)
    }

    async fn prune_jobs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.write_tx().await?;
        let before = before.timestamp_millis();
        sqlx::query(
            "DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM jobs WHERE state = 'done' AND finished_at < ?1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let result = sqlx::query("DELETE FROM jobs WHERE state = 'done' AND finished_at < ?1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }

    async fn queue_stats(&self) -> StoreResult<Vec<QueueStat>> {
        let rows =
            sqlx::query("SELECT kind, state, COUNT(*) AS n, MIN(run_at) AS oldest FROM jobs GROUP BY kind, state")
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(QueueStat {
                    kind: row.try_get("kind")?,
                    state: JobState::parse(&state).ok_or_else(|| corrupt("jobs.state", &state))?,
                    count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                    oldest: opt_time(row.try_get("oldest")?),
                })
            })
            .collect()
    }

    async fn enqueued_notifications(&self, envelope: EnvelopeId) -> StoreResult<Vec<Notification>> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE envelope_id = ?1 AND disposition = 'enqueued' ORDER BY received_at, id",
        )
        .bind(envelope.to_string())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn notification(&self, id: NotificationId) -> StoreResult<Option<Notification>> {
        let row = sqlx::query("SELECT * FROM notifications WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(notification_from_row).transpose()
    }

    async fn count_notifications(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications").fetch_one(&self.reader).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn envelope(&self, envelope: EnvelopeId) -> StoreResult<Option<EnvelopeRecord>> {
        let row = sqlx::query("SELECT * FROM envelopes WHERE envelope_id = ?1")
            .bind(envelope.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(envelope_from_row).transpose()
    }

    async fn list_envelopes(&self, query: &EnvelopeQuery) -> StoreResult<EnvelopePage> {
        let status = query.status.map(EnvelopeStatus::as_str);
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE ?1 IS NULL OR status = ?1")
            .bind(status)
            .fetch_one(&self.reader)
            .await?;
        let rows = sqlx::query(
            "SELECT * FROM envelopes WHERE ?1 IS NULL OR status = ?1
             ORDER BY updated_at DESC, envelope_id LIMIT ?2 OFFSET ?3",
        )
        .bind(status)
        .bind(i64::from(query.limit))
        .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        let envelopes = rows.iter().map(envelope_from_row).collect::<StoreResult<_>>()?;
        Ok(EnvelopePage { total: u64::try_from(total).unwrap_or(0), envelopes })
    }

    async fn count_envelopes(&self) -> StoreResult<Vec<(EnvelopeStatus, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM envelopes GROUP BY status ORDER BY status")
                .fetch_all(&self.reader)
                .await?;
        rows.into_iter()
            .map(|(status, count)| {
                let parsed = EnvelopeStatus::parse(&status).ok_or_else(|| corrupt("envelopes.status", &status))?;
                Ok((parsed, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }

    async fn documents(&self, envelope: EnvelopeId) -> StoreResult<Vec<DocumentRecord>> {
        let rows = sqlx::query("SELECT * FROM documents WHERE envelope_id = ?1 ORDER BY document_id")
            .bind(envelope.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                let account: String = row.try_get("account_id")?;
                Ok(DocumentRecord {
                    account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id", &account))?,
                    envelope_id: envelope_id(row, "envelope_id")?,
                    document_id: row.try_get("document_id")?,
                    name: row.try_get("name")?,
                    file_name: row.try_get("file_name")?,
                    content_type: row.try_get("content_type")?,
                    size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
                    sha256: row.try_get("sha256")?,
                    storage_key: row.try_get("storage_key")?,
                    stored_at: to_time(row.try_get("stored_at")?),
                })
            })
            .collect()
    }

    async fn events_for(&self, envelope: EnvelopeId) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT * FROM events WHERE envelope_id = ?1 ORDER BY created_at, ordinal, id")
            .bind(envelope.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn deliveries_for(&self, event: EventId) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query("SELECT * FROM deliveries WHERE event_id = ?1 ORDER BY sink")
            .bind(event.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(DeliveryRecord {
                    event_id: EventId(parse_uuid("deliveries.event_id", &row.try_get::<String, _>("event_id")?)?),
                    sink: row.try_get("sink")?,
                    state: DeliveryState::parse(&state).ok_or_else(|| corrupt("deliveries.state", &state))?,
                    attempts: u32_column(row, "attempts")?,
                    last_error: row.try_get("last_error")?,
                    created_at: to_time(row.try_get("created_at")?),
                    updated_at: to_time(row.try_get("updated_at")?),
                    delivered_at: opt_time(row.try_get("delivered_at")?),
                })
            })
            .collect()
    }

    async fn event(&self, id: EventId) -> StoreResult<Option<EventRecord>> {
        let row =
            sqlx::query("SELECT * FROM events WHERE id = ?1").bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn earlier_pending_delivery(&self, event: EventId, sink: &str) -> StoreResult<Option<EarlierDelivery>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT e.id, j.state, j.run_at
             FROM events me
             JOIN events e ON e.envelope_id = me.envelope_id AND e.id <> me.id
                 AND (e.created_at < me.created_at OR (e.created_at = me.created_at AND e.ordinal < me.ordinal))
             JOIN deliveries d ON d.event_id = e.id AND d.sink = ?2 AND d.state = 'pending'
             JOIN jobs j ON j.kind = ?3 AND j.unique_key = e.id || '/' || ?2 AND j.state <> 'dead'
             WHERE me.id = ?1
             ORDER BY e.created_at, e.ordinal
             LIMIT 1",
        )
        .bind(event.to_string())
        .bind(sink)
        .bind(JobKind::Deliver.as_str())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|(id, state, run_at)| {
            Ok(EarlierDelivery {
                event_id: EventId(parse_uuid("events.id", &id)?),
                next_attempt_at: (state != "running").then(|| to_time(run_at)),
            })
        })
        .transpose()
    }

    async fn envelope_has_sink(&self, envelope: EnvelopeId, sink: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE e.envelope_id = ?1 AND d.sink = ?2 LIMIT 1",
        )
        .bind(envelope.to_string())
        .bind(sink)
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.is_some())
    }

    async fn dead_deliveries(&self, filter: &DeliveryFilter, limit: u32) -> StoreResult<Vec<DeadDelivery>> {
        let rows = sqlx::query(DEAD_DELIVERIES)
            .bind(filter.event.map(|e| e.to_string()))
            .bind(filter.sink.as_deref())
            .bind(filter.since.map(|t| t.timestamp_millis()))
            .bind(i64::from(limit))
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(dead_delivery_from_row).collect()
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, attempts: u32) -> StoreResult<Vec<DeadDelivery>> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(DEAD_DELIVERIES)
            .bind(filter.event.map(|e| e.to_string()))
            .bind(filter.sink.as_deref())
            .bind(filter.since.map(|t| t.timestamp_millis()))
            .bind(i64::MAX)
            .bind(JobKind::Deliver.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let dead: Vec<DeadDelivery> = rows.iter().map(dead_delivery_from_row).collect::<StoreResult<_>>()?;
        for delivery in &dead {
            sqlx::query(
                "UPDATE jobs SET state = 'ready', max_attempts = attempts + ?1, run_at = ?2, finished_at = NULL,
                     updated_at = ?2
                 WHERE id = ?3 AND state = 'dead'",
            )
            .bind(i64::from(attempts))
            .bind(now)
            .bind(delivery.job_id.to_string())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE deliveries SET state = 'pending', updated_at = ?1 WHERE event_id = ?2 AND sink = ?3")
                .bind(now)
                .bind(delivery.event_id.to_string())
                .bind(&delivery.sink)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if !dead.is_empty() {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(dead)
    }

    async fn disable_sink(&self, sink: &str, reason: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let result = sqlx::query(
            "INSERT INTO sink_status (sink, state, reason, changed_at) VALUES (?1, 'disabled', ?2, ?3)
             ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .bind(clip(reason))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    async fn enable_sink(&self, sink: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let result = sqlx::query("DELETE FROM sink_status WHERE sink = ?1").bind(sink).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    async fn disabled_sinks(&self) -> StoreResult<Vec<DisabledSink>> {
        let rows = sqlx::query("SELECT * FROM sink_status WHERE state = 'disabled' ORDER BY sink")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DisabledSink {
                    sink: row.try_get("sink")?,
                    reason: row.try_get("reason")?,
                    disabled_at: to_time(row.try_get("changed_at")?),
                })
            })
            .collect()
    }
}

/// Closes `job`'s open attempt with `outcome`.
async fn close_attempt(
    tx: &mut WriteTx,
    job: JobId,
    outcome: AttemptOutcome,
    error: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE job_attempts SET outcome = ?1, error = ?2, finished_at = ?3 WHERE job_id = ?4 AND finished_at IS NULL",
    )
    .bind(outcome.as_str())
    .bind(error)
    .bind(now)
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

struct SqliteTx {
    tx: WriteTx,
    signal: Arc<watch::Sender<u64>>,
    enqueued: bool,
}

#[async_trait]
impl StoreTx for SqliteTx {
    async fn enqueue(&mut self, job: &NewJob) -> StoreResult<Enqueued> {
        let now = now_ms();
        let id = JobId::new();
        let result = sqlx::query(
            "INSERT INTO jobs (id, kind, unique_key, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'ready', 0, ?5, ?6, ?7, ?7)
             ON CONFLICT DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&job.kind)
        .bind(&job.unique_key)
        .bind(job.payload.to_string())
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(job.run_at.map_or(now, |t| t.timestamp_millis()))
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(Enqueued::Duplicate);
        }
        self.enqueued = true;
        Ok(Enqueued::Created(id))
    }

    async fn complete_job(&mut self, lease: &Lease) -> StoreResult<bool> {
        let now = now_ms();
        let result = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = ?1, updated_at = ?1,
                 lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?2 AND lease_token = ?3 AND state = 'running'",
        )
        .bind(now)
        .bind(lease.job.to_string())
        .bind(lease.token.simple().to_string())
        .execute(&mut *self.tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        close_attempt(&mut self.tx, lease.job, AttemptOutcome::Succeeded, None, now).await?;
        Ok(true)
    }

    async fn insert_notifications(&mut self, batch: &[&NewNotification]) -> StoreResult<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = sqlx::QueryBuilder::<Sqlite>::new("");
        push_insert_notifications(&mut query, batch, now_ms());
        let written: std::collections::HashSet<String> =
            query.build_query_scalar::<String>().fetch_all(&mut *self.tx).await?.into_iter().collect();
        Ok(batch.iter().map(|n| written.contains(&n.id.to_string())).collect())
    }

    async fn upsert_envelopes(&mut self, batch: &[EnvelopeUpsert]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(format!("INSERT INTO envelopes ({ENVELOPE_COLUMNS}) "));
        query.push_values(batch, |mut row, e| bind_envelope(&mut row, e, now));
        query.push(ENVELOPE_CONFLICT);
        query.build().execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn enqueue_all(&mut self, jobs: &[NewJob]) -> StoreResult<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(format!("INSERT INTO jobs ({JOB_COLUMNS}) "));
        query.push_values(jobs, |mut row, job| bind_job(&mut row, job, now));
        query.push(" ON CONFLICT DO NOTHING");
        if query.build().execute(&mut *self.tx).await?.rows_affected() > 0 {
            self.enqueued = true;
        }
        Ok(())
    }

    async fn upsert_document(&mut self, d: &DocumentRecord) -> StoreResult<()> {
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(format!("INSERT INTO documents ({DOCUMENT_COLUMNS}) "));
        query.push_values([d], |mut row, d| bind_document(&mut row, d));
        query.push(DOCUMENT_CONFLICT);
        query.build().execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn insert_event(&mut self, e: &EventRecord) -> StoreResult<Inserted<EventId>> {
        let result = sqlx::query(
            "INSERT INTO events (id, envelope_id, rule, event_type, body, created_at, ordinal)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )
        .bind(e.id.to_string())
        .bind(e.envelope_id.to_string())
        .bind(&e.rule)
        .bind(&e.event_type)
        .bind(e.body.to_string())
        .bind(e.created_at.timestamp_millis())
        .bind(i64::from(e.ordinal))
        .execute(&mut *self.tx)
        .await?;
        Ok(if result.rows_affected() == 1 { Inserted::Created(e.id) } else { Inserted::Duplicate })
    }

    async fn insert_delivery(&mut self, event: EventId, sink: &str) -> StoreResult<Inserted<()>> {
        let now = now_ms();
        let result = sqlx::query(
            "INSERT INTO deliveries (event_id, sink, state, attempts, created_at, updated_at)
             VALUES (?1, ?2, 'pending', 0, ?3, ?3) ON CONFLICT DO NOTHING",
        )
        .bind(event.to_string())
        .bind(sink)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(if result.rows_affected() == 1 { Inserted::Created(()) } else { Inserted::Duplicate })
    }

    async fn record_delivery(&mut self, u: &DeliveryUpdate) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE deliveries SET state = ?1, attempts = ?2, last_error = ?3, updated_at = ?4,
                 delivered_at = CASE WHEN ?1 = 'delivered' THEN ?4 ELSE delivered_at END
             WHERE event_id = ?5 AND sink = ?6",
        )
        .bind(u.state.as_str())
        .bind(i64::from(u.attempts))
        .bind(u.last_error.as_deref().map(clip))
        .bind(now)
        .bind(u.event_id.to_string())
        .bind(&u.sink)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await?;
        if self.enqueued {
            self.signal.send_modify(|v| *v += 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
                let seen: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM notifications").fetch_one(&mut *tx).await.unwrap();
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
                    job: None,
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
        let redelivered =
            NewNotification { id: NotificationId::new(), body_sha256: "retry-body".into(), ..old.clone() };
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
}
