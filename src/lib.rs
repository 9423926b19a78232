//! countersign: DocuSign Connect notifications in, provisioning events out.
//!
//! The pipeline, stage by stage: `ingest` (Connect listener) → `store`
//! (notification + job, one transaction) → `pipeline` (workers running
//! jobs) → events → delivery. Each stage hands work to the next through the
//! store, never by calling it directly.

pub mod admin;
pub mod bearer;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod documents;
pub mod docusign;
pub mod domain;
pub mod error;
pub mod events;
pub mod formats;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod pipeline;
pub mod reconcile;
pub mod reload;
pub mod sandbox;
pub mod send;
pub mod service;
pub mod store;
pub mod telemetry;
