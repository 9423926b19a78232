//! Reloading the configuration without a restart (SIGHUP, or
//! `POST /admin/api/reload`): the rules and events settings, the sinks with
//! the delivery schedule, and the Connect keys go into force together.
//!
//! Everything is built from the new file first; only when all of it builds
//! is any of it swapped in, so a configuration that does not load changes
//! nothing. The swaps follow each other within microseconds, sinks first:
//! an envelope processed by the new rules finds the sinks they name. Work
//! already running finishes with the settings it started with. A sink
//! removed while deliveries to it are queued turns each of them into a dead
//! letter that names it (see `deliver`), never a silent drop. After a
//! reload the parked jobs are woken: what they waited on (a sink this
//! replica did not know) may be there now.
//!
//! Settings that shape the process itself (the store, the listener,
//! documents, DocuSign access, the queue, reconciliation, the admin token,
//! `connect.process_events` and body limits, `events.link_key` for checking
//! links) take effect at the next start.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{ConfigError, Secret, Settings};
use crate::deliver::Deliver;
use crate::events::Planner;
use crate::ingest::{ConnectAuth, KeyRing};
use crate::live::Live;
use crate::pipeline::ProcessEnvelope;
use crate::store::Store;

/// What a reload put in force.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// Connect HMAC keys now in force (global and per account).
    pub keys: usize,
    /// Rules now in force.
    pub rules: usize,
    /// Sinks now in force, by name.
    pub sinks: Vec<String>,
    /// Sinks the previous configuration had and this one does not: their
    /// queued deliveries become dead letters naming them.
    pub removed_sinks: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("a sink cannot be prepared: {0:#}")]
    Sinks(anyhow::Error),
}

impl ReloadError {
    /// The configuration key at fault.
    pub fn key(&self) -> &str {
        match self {
            Self::Config(error) => error.key(),
            Self::Sinks(_) => "sinks",
        }
    }
}

/// The parts of a running service that a reload replaces.
#[derive(Clone)]
pub struct Reloader {
    settings: Live<Settings>,
    keys: KeyRing,
    deliver: Arc<Deliver>,
    process: Arc<ProcessEnvelope>,
    sink_tokens: Live<Vec<(String, Secret)>>,
    store: Arc<dyn Store>,
    /// One reload at a time: two at once could interleave their swaps.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(
        settings: &Settings,
        keys: KeyRing,
        deliver: Arc<Deliver>,
        process: Arc<ProcessEnvelope>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            store,
            settings: Live::new(settings.clone()),
            keys,
            deliver,
            process,
            sink_tokens: Live::new(sink_tokens(settings)),
            running: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The settings in force (the last that loaded).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.current()
    }

    /// The bearer tokens of the sinks in force, for the documents route.
    pub fn sink_tokens(&self) -> Live<Vec<(String, Secret)>> {
        self.sink_tokens.clone()
    }

    /// Reads the configuration again (the file it came from and the
    /// environment) and puts it in force, or changes nothing and says why.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one = self.running.lock().await;
        let before = self.settings.current();
        let settings = Settings::load(before.source.as_deref())?;
        let planner = Planner::from_settings(&settings)?;
        let sinks = self.deliver.prepare(&settings).map_err(ReloadError::Sinks)?;
        let auth = ConnectAuth::from_settings(&settings);

        let reloaded = Reloaded {
            keys: auth.key_count(),
            rules: settings.rules.len(),
            sinks: settings.sinks.iter().map(|s| s.name.clone()).collect(),
            removed_sinks: before
                .sinks
                .iter()
                .filter(|old| !settings.sinks.iter().any(|new| new.name == old.name))
                .map(|old| old.name.clone())
                .collect(),
        };
        self.deliver.install(sinks);
        self.sink_tokens.replace(sink_tokens(&settings));
        self.process.install(planner);
        self.keys.replace(auth);
        crate::metrics::register_sinks(&settings);
        self.settings.replace(settings);
        // Parked jobs may have waited on exactly this (a sink not configured
        // yet): let them look again now, on every replica.
        if let Err(error) = self.store.wake_parked().await {
            tracing::warn!(%error, "after the reload, parked jobs could not be woken; they recheck on their own");
        }
        Ok(reloaded)
    }
}

/// (sink name, bearer token) of every sink that has a token.
pub fn sink_tokens(settings: &Settings) -> Vec<(String, Secret)> {
    settings.sinks.iter().filter_map(|s| s.token.clone().map(|token| (s.name.clone(), token))).collect()
}
