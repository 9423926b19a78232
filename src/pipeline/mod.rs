//! The background side of countersign: job handlers run by a pool of workers
//! that claim jobs from the store's durable queue.

mod retry;
mod worker;

pub use retry::Backoff;
pub use worker::{JobContext, JobError, JobHandler, WorkerPool};
