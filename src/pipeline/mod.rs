//! The background side of countersign: job handlers run by a pool of workers
//! that claim jobs from the store's durable queue.

mod outbox;
mod process_envelope;
pub mod reprocess;
mod retry;
mod worker;

pub use outbox::{OutboxWritten, write_outbox};
pub use process_envelope::ProcessEnvelope;
pub use retry::Backoff;
pub use worker::{JobContext, JobError, JobHandler, RUN_OUTCOMES, WorkerPool};
