//! The default store: one SQLite file in WAL mode. SQLite has a single
//! writer, so every write goes through one connection with `BEGIN
//! IMMEDIATE` (which also makes the queue's claim a single claimer), while
//! reads use their own small pool.
//!
//! The writer connection is not pooled: a pool hands a connection back
//! through a spawned task that pings it first, two more hand-offs to
//! SQLite's thread for every transaction, and with every write going
//! through this one connection they were a third of each group commit's time.

mod agreements;
mod delivery;
mod envelopes;
mod notifications;
mod queue;
mod reconcile;
mod tx;

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, Sqlite, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::*;
use crate::ids::{AccountId, AgreementId, EnvelopeId, EventId, JobId, NotificationId};
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

/// A statement list written with named parameters (`:now`), as sqlx's
/// SQLite driver takes it: anonymous `?`s, and the names in the order they
/// appear, to bind values in that order. Names are lowercase letters and
/// `_`; the text must have no other `:` followed by one.
#[derive(Debug)]
struct Named {
    sql: String,
    order: Vec<&'static str>,
}

impl Named {
    fn parse(text: &'static str) -> Self {
        let mut sql = String::with_capacity(text.len());
        let mut order = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(':') {
            sql.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let len = after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(after.len());
            if len == 0 {
                sql.push(':');
            } else {
                order.push(&after[..len]);
                sql.push('?');
            }
            rest = &after[len..];
        }
        sql.push_str(rest);
        Self { sql, order }
    }
}

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
/// notification names it again; processing it again sets its new outcome.
/// `sent` (countersign sent it) only ever starts an envelope's row: news
/// from Connect may have started it first.
const ENVELOPE_CONFLICT: &str = " ON CONFLICT (envelope_id) DO UPDATE SET \
     status = CASE WHEN excluded.status IN ('processed', 'flagged') THEN excluded.status \
         WHEN envelopes.status IN ('processed', 'flagged') OR excluded.status = 'sent' THEN envelopes.status \
         ELSE excluded.status END, \
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
        envelope_id: optional_envelope_id(row, "envelope_id")?,
        agreement_id: row
            .try_get::<Option<String>, _>("agreement_id")?
            .map(|id| parse_uuid("events.agreement_id", &id).map(AgreementId))
            .transpose()?,
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
        envelope_id: optional_envelope_id(row, "envelope_id")?,
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

fn optional_envelope_id(row: &SqliteRow, column: &str) -> StoreResult<Option<EnvelopeId>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| EnvelopeId::parse(&text).map_err(|_| corrupt(column, &text))).transpose()
}

fn envelope_id(row: &SqliteRow, column: &str) -> StoreResult<EnvelopeId> {
    let text: String = row.try_get(column)?;
    EnvelopeId::parse(&text).map_err(|_| corrupt(column, &text))
}

#[async_trait]
impl Backend for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        Ok(Box::new(SqliteTx { tx: self.write_tx().await?, signal: self.signal.clone(), enqueued: false }))
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

#[cfg(test)]
mod tests;
