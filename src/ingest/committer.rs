//! Group commit: notifications that arrive together are written in one
//! transaction, and each is acknowledged only after that transaction
//! commits. One fsync then covers many notifications, which is what lets
//! ingest outrun the disk's commit rate without acknowledging anything early.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{NotificationRecord, Store, StoreError};

/// Most notifications written in one transaction.
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    /// The same notification was recorded before; nothing was written.
    Duplicate,
    /// The envelope it names belongs to another account; nothing was written.
    OtherAccount,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The whole batch failed; the message is the store's error.
    #[error("the store could not commit: {0}")]
    Failed(Arc<str>),
    #[error("the committer has stopped")]
    Stopped,
}

type Pending = (NotificationRecord, oneshot::Sender<Result<Outcome, Arc<str>>>);

#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::Sender<Pending>,
}

impl Committer {
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (queue, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, receiver));
        Self { queue }
    }

    /// Writes `record` durably; returns once its transaction has committed.
    pub async fn commit(&self, record: NotificationRecord) -> Result<Outcome, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((record, reply)).await.map_err(|_| CommitError::Stopped)?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(error)) => Err(CommitError::Failed(error)),
            Err(_) => Err(CommitError::Stopped),
        }
    }
}

async fn run(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A client that gave up waiting (Connect's 100 s timeout) got no
        // answer and will send again: writing its record now would only
        // lengthen the queue behind a slow or failing store.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let records: Vec<&NotificationRecord> = batch.iter().map(|(record, _)| record).collect();
        let started = std::time::Instant::now();
        let written = write(&*store, &records).await;
        tracing::debug!(
            notifications = records.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "group commit"
        );
        match written {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) if batch.len() > 1 && !error.is_unavailable() => {
                // One bad record must not fail its neighbours: write each
                // on its own, so only the culprit (or, if the store is down,
                // every one) gets its error.
                tracing::warn!(%error, notifications = batch.len(), "batch commit failed; retrying one by one");
                for (record, reply) in batch.drain(..) {
                    let outcome = write(&*store, &[&record]).await;
                    let outcome = outcome
                        .map_err(|e| Arc::<str>::from(e.to_string()))
                        .and_then(|o| o.into_iter().next().ok_or_else(|| Arc::from("no outcome")));
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not commit a notification; answering 503");
                let error: Arc<str> = Arc::from(error.to_string());
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Writes `records`; a duplicate notification, or one naming an envelope
/// of another account, writes nothing.
///
/// The store refuses a notification whose envelope is already another
/// account's. Two records of one batch that name the same new envelope for
/// two accounts would both pass that check, so a record naming an envelope
/// that an earlier record of the batch named for another account waits for
/// a later transaction (in practice never: envelope ids are DocuSign's GUIDs).
pub async fn write(store: &dyn Store, records: &[&NotificationRecord]) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = vec![Outcome::Recorded; records.len()];
    let mut pending: Vec<usize> = (0..records.len()).collect();
    while !pending.is_empty() {
        let mut named_for = std::collections::HashMap::new();
        let (round, later): (Vec<usize>, Vec<usize>) = pending.iter().partition(|&&i| {
            let n = &records[i].notification;
            *named_for.entry(n.envelope_id).or_insert(n.account_id) == n.account_id
        });
        let batch: Vec<&NotificationRecord> = round.iter().map(|&i| records[i]).collect();
        let written = store.record_notifications(&batch).await?;
        let refused: Vec<usize> = round.iter().zip(&written).filter(|(_, w)| !**w).map(|(&i, _)| i).collect();
        // Why the store wrote nothing for a record: its envelope is another
        // account's, or it was recorded before. One read for the batch; an
        // envelope's account never changes once written, so asking after
        // the commit is safe.
        let owners: std::collections::HashMap<_, _> = if refused.is_empty() {
            Default::default()
        } else {
            let envelopes: Vec<_> = refused.iter().map(|&i| records[i].notification.envelope_id).collect();
            store.envelope_accounts(&envelopes).await?.into_iter().collect()
        };
        for i in refused {
            let n = &records[i].notification;
            let other = owners.get(&n.envelope_id).is_some_and(|owner| *owner != n.account_id);
            outcomes[i] = if other { Outcome::OtherAccount } else { Outcome::Duplicate };
        }
        pending = later;
    }
    Ok(outcomes)
}
