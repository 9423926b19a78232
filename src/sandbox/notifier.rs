//! Connect for envelopes sent through the REST API: each change of such an
//! envelope is posted in the background to the listeners that asked for it
//! (`docs/DOCUSIGN.md` §3), by the same sender `/control/connect` uses.
//!
//! One queue per listener URL keeps that listener's notifications in the
//! order the changes happened, and a listener that fails (and is retried)
//! holds up only itself. A failed delivery is recorded, never reported to the REST or
//! control call whose change caused it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::connect::{ConnectFormat, ConnectSender, DeliveryReport, NotificationOptions, RetryPolicy};
use super::envelopes::Envelope;

/// The most deliveries [`Notifier::deliveries`] remembers; older ones are forgotten.
const MAX_LOGGED: usize = 10_000;

/// How one lifecycle notification went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleDelivery {
    pub url: String,
    pub event: String,
    pub envelope_id: String,
    pub recipient_id: Option<String>,
    pub report: DeliveryReport,
}

/// Where one notification goes and how it is signed and retried.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Destination {
    pub url: String,
    /// Whether to sign with the account's Connect HMAC keys.
    pub signed: bool,
    pub retries: u32,
}

#[derive(Debug)]
struct Job {
    destination: Destination,
    envelope: Envelope,
    format: ConnectFormat,
    options: NotificationOptions,
}

/// One queue per listener URL, however each notification is signed.
#[derive(Debug, Default)]
pub(super) struct Notifier {
    queues: HashMap<String, mpsc::UnboundedSender<Job>>,
    log: Arc<Mutex<Vec<LifecycleDelivery>>>,
}

impl Notifier {
    /// Queues one notification; it is posted after every one queued for the
    /// same URL before it.
    pub fn post(
        &mut self,
        destination: Destination,
        keys: &[String],
        envelope: Envelope,
        format: ConnectFormat,
        options: NotificationOptions,
    ) {
        let url = destination.url.clone();
        let mut job = Job { destination, envelope, format, options };
        // A queue whose worker ended (its runtime shut down) is replaced once.
        for _ in 0..2 {
            let queue = match self.queues.get(&url) {
                Some(queue) => queue.clone(),
                None => match self.start(&url, keys) {
                    Some(queue) => queue,
                    None => return,
                },
            };
            match queue.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    self.queues.remove(&url);
                    job = returned;
                }
            }
        }
        tracing::warn!(%url, "cannot queue a Connect notification");
    }

    fn start(&mut self, url: &str, keys: &[String]) -> Option<mpsc::UnboundedSender<Job>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%url, "no async runtime to post Connect notifications from; not sent");
            return None;
        };
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
        let keys = keys.to_vec();
        let log = self.log.clone();
        let url = url.to_string();
        self.queues.insert(url.clone(), queue.clone());
        runtime.spawn(async move {
            let mut senders: HashMap<(bool, u32), ConnectSender> = HashMap::new();
            while let Some(job) = jobs.recv().await {
                let Destination { signed, retries, .. } = job.destination;
                let sender = senders.entry((signed, retries)).or_insert_with(|| {
                    // A second between retries, not DocuSign's day, so that tests see retries happen.
                    let policy =
                        RetryPolicy { max_retries: retries, interval: Duration::from_secs(1), ..RetryPolicy::default() };
                    ConnectSender::new(url.clone(), if signed { keys.clone() } else { Vec::new() }, policy)
                });
                let report = sender.send(&job.envelope, job.format, &job.options).await;
                if !report.delivered {
                    tracing::debug!(%url, event = %job.options.event, error = ?report.last_error, "Connect notification not delivered");
                }
                let delivery = LifecycleDelivery {
                    url: url.clone(),
                    event: job.options.event.clone(),
                    envelope_id: job.envelope.envelope_id.to_string(),
                    recipient_id: job.options.recipient_id.clone(),
                    report,
                };
                let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if log.len() >= MAX_LOGGED {
                    log.remove(0);
                }
                log.push(delivery);
            }
        });
        Some(queue)
    }

    /// Every delivery finished so far, oldest first.
    pub fn deliveries(&self) -> Vec<LifecycleDelivery> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}
