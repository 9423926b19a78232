//! The integration tests: one binary (one link of the crate) with a module
//! per area. Each module's doc comment says what it covers; `common` holds
//! the shared support (stores on fresh databases, the running service, the
//! sandbox, local servers). The configuration tests that set environment
//! variables live in their own binary (`tests/config_env.rs`): many tests
//! here start `countersign` as a subprocess, which would inherit them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::result_large_err)]

mod common;

mod admin;
mod admin_browser;
mod agreements;
mod agreements_bus;
mod architecture;
mod asyncapi;
mod cli;
mod consent;
mod crash;
mod deliver_brokers;
mod deliver_sqs;
mod deliver_webhook;
mod demo;
mod deploy;
mod documents_route;
mod docusign;
mod events;
mod faults;
mod hostile;
mod ingest;
mod logs;
mod metrics;
mod pipeline;
mod reconcile;
mod reload;
mod replicas;
mod reprocess;
mod s3;
mod sandbox;
mod sandbox_sending;
mod shutdown;
mod store_conformance;
