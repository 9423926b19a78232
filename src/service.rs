//! `countersign serve`: the listener, the workers and housekeeping in one
//! process, stopped gracefully on SIGTERM or SIGINT.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::Settings;
use crate::deliver::{Deliver, SinkCircuits};
use crate::documents::DocumentStore;
use crate::docusign::DocuSign;
use crate::docusign::consent::{ConsentCallback, StateKey};
use crate::events::documents::DocumentAccess;
use crate::http::{self, AppState};
use crate::ingest::{ConnectAuth, Ingest, KeyRing};
use crate::pipeline::{JobHandler, ProcessEnvelope, WorkerPool};
use crate::reconcile::{self, ReconcileAccount, Reconciler};
use crate::reload::Reloader;
use crate::send::api::AgreementsApi;
use crate::send::bus::Sources;
use crate::send::intake::Intake;
use crate::send::{AgreementLifecycle, Profiles, SendAgreement, VoidAgreement};
use crate::store::{self, Store};

/// How often finished jobs older than `queue.retention` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A running service's parts, for callers that embed it (tests, the demo).
pub struct Service {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub documents: DocumentStore,
    /// The Connect keys in force; replaced on SIGHUP.
    pub keys: KeyRing,
    /// DocuSign access, when configured.
    pub docusign: Option<Arc<DocuSign>>,
    pub handlers: Vec<Arc<dyn JobHandler>>,
    /// The delivery handler's circuit breakers, shown by the admin API.
    pub circuits: SinkCircuits,
    /// Puts a changed configuration in force (SIGHUP, the admin API).
    pub reloader: Reloader,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Service {
    /// Opens the store (applying migrations) and prepares the job handlers.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = store::open(settings.store.connection_url().expose(), settings.store.max_connections)
            .await
            .with_context(|| format!("opening the store {}", store::redact_url(&settings.store.url)))?;
        let documents = DocumentStore::open(&settings.documents)?;
        let keys = KeyRing::new(ConnectAuth::from_settings(&settings));
        warn_about_connect_security(&settings);
        crate::metrics::register_known(&settings);
        let docusign = DocuSign::from_settings(&settings)?.map(Arc::new);
        if docusign.is_none() {
            tracing::warn!(
                "DocuSign access is not configured (docusign.integration_key, docusign.user_id, \
                 docusign.private_key_file): only notifications that carry their documents and data can be processed"
            );
        }
        warn_about_sinks(&settings);
        let deliver = Arc::new(Deliver::from_settings(&settings)?);
        let circuits = deliver.circuits();
        let process = Arc::new(ProcessEnvelope::new(&settings, docusign.clone(), documents.clone())?);
        let reloader = Reloader::new(&settings, keys.clone(), deliver.clone(), process.clone(), store.clone());
        let mut handlers: Vec<Arc<dyn JobHandler>> = vec![process, deliver];
        if !settings.profiles.is_empty() {
            handlers.push(Arc::new(SendAgreement::new(&settings, docusign.clone())));
            handlers.push(Arc::new(VoidAgreement::new(&settings, docusign.clone())));
            handlers.push(Arc::new(AgreementLifecycle::new(&settings, docusign.clone())));
        }
        if settings.reconcile.enabled && !settings.processes_completions() {
            tracing::warn!(
                "reconciliation is off: connect.process_events does not include envelope-completed, and \
                 reconciliation only finds completed envelopes to process them"
            );
        }
        if let Some(docusign) = docusign.as_ref().filter(|_| settings.reconciles()) {
            let reconciler = Reconciler::new(&settings, docusign.clone(), store.clone());
            handlers.push(Arc::new(ReconcileAccount::new(&settings, reconciler)));
        }
        Ok(Self { settings, store, documents, keys, docusign, handlers, circuits, reloader })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: stops
    /// accepting, lets running jobs and requests finish within
    /// `server.shutdown_grace`, releases the leases of jobs still running.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let grace = self.settings.server.shutdown_grace;
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();

        // Whatever parked jobs waited on (consent, configuration) may have
        // been fixed while the service was down: let them look again now.
        match self.store.wake_parked().await {
            Ok(0) => {}
            Ok(woken) => tracing::info!(woken, "parked jobs woken at start-up"),
            Err(error) => tracing::warn!(%error, "could not wake parked jobs; they recheck on their own"),
        }
        let workers = WorkerPool::new(self.store.clone(), self.settings.queue.clone(), self.handlers);
        let workers = tokio::spawn(workers.run(stop.clone(), abort.clone()));
        let pruner = tokio::spawn(prune_loop(self.store.clone(), self.settings.queue.retention, stop.clone()));
        let scheduler = (self.docusign.is_some() && self.settings.reconciles()).then(|| {
            tokio::spawn(reconcile::schedule(
                self.store.clone(),
                reconcile::accounts(&self.settings),
                self.settings.reconcile.interval,
                self.settings.queue.max_attempts,
                stop.clone(),
            ))
        });
        let sources = (!self.settings.api.sources.is_empty()).then(|| {
            let intake = Intake::new(
                self.store.clone(),
                Profiles::from_settings(&self.settings),
                self.settings.queue.max_attempts,
            );
            tokio::spawn(Sources::new(&self.settings, intake).run(stop.clone()))
        });

        let ingest = Ingest::new(&self.settings, self.store.clone(), self.documents.clone(), self.keys.clone());
        let access = self.docusign.as_ref().map(|d| d.status().clone());
        let documents = DocumentAccess::new(
            &self.settings,
            self.store.clone(),
            self.documents.clone(),
            self.reloader.sink_tokens(),
        )?;
        let admin =
            Admin::new(&self.settings, self.store.clone(), self.reloader.clone(), access.clone(), self.circuits);
        match &self.settings.admin.token {
            None => tracing::info!("admin.token is not set: the admin API and page are off"),
            Some(token) if token.expose().chars().count() < 16 => {
                tracing::warn!("admin.token is shorter than 16 characters: use a long random token")
            }
            Some(_) => {}
        }
        let consent = ConsentCallback {
            docusign: self.docusign.clone(),
            store: self.store.clone(),
            key: StateKey::from_settings(&self.settings),
        };
        let mut app = http::router(AppState { store: self.store.clone(), access }, ingest)
            .merge(crate::events::documents::router(documents))
            .merge(crate::docusign::consent::router(consent));
        if let Some(admin) = admin {
            app = app.merge(crate::admin::router(admin));
        }
        match AgreementsApi::new(&self.settings, self.store.clone()) {
            Some(api) => app = app.merge(crate::send::api::router(api)),
            None => tracing::info!("no api.clients are configured: the requests API is off"),
        }
        let reloader = tokio::spawn(reload_on_sighup(self.reloader.clone(), stop.clone()));
        let server_stop = stop.clone();
        let server = tokio::spawn(http::serve(listener, app, server_stop.cancelled_owned()));

        shutdown.await;
        tracing::info!(grace_secs = grace.as_secs_f64(), "shutting down: no new requests or jobs");
        stop.cancel();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let drained = async {
            let _ = reloader.await;
            let _ = pruner.await;
            if let Some(scheduler) = scheduler {
                let _ = scheduler.await;
            }
            if let Some(sources) = sources {
                let _ = sources.await;
            }
            let _ = workers.await;
        };
        tokio::pin!(drained);
        tokio::select! {
            _ = &mut drained => {}
            _ = &mut deadline => {
                tracing::warn!("shutdown grace period over; releasing the leases of running jobs");
                abort.cancel();
                // Releasing is a single UPDATE per job; bound it all the same.
                let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
            }
        }
        // Open requests share the same grace period as the jobs; whatever
        // is still open when it ends is cut off (Connect retries those).
        let left = deadline.deadline().saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left.max(Duration::from_millis(100)), server).await.is_err() {
            tracing::warn!("HTTP requests still open at the end of the grace period were cut off");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `countersign serve`: binds `server.listen` and runs until SIGTERM/SIGINT.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.server.listen;
    let service = Service::build(settings).await?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding server.listen = {listen}"))?;
    tracing::info!(%listen, store = service.store.backend(), "countersign is listening");
    service.run(listener, shutdown_signal()).await
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed
/// before this returns, so a signal sent right after start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = int.recv() => tracing::info!("SIGINT received"),
                    }
                }
                _ => {
                    tracing::warn!("cannot install signal handlers; falling back to Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn warn_about_connect_security(settings: &Settings) {
    let connect = &settings.connect;
    if !connect.verify_hmac {
        tracing::warn!(
            "connect.verify_hmac = false: Connect notifications are accepted WITHOUT signature checks; \
             anyone who can reach /docusign/connect can inject envelopes"
        );
    } else if connect.hmac_keys.is_empty() && connect.accounts.is_empty() {
        tracing::warn!(
            "no Connect HMAC keys configured (connect.hmac_keys): every notification will be refused with 401"
        );
    }
}

/// Consumers who cannot fetch the documents their events link to would
/// only find out from a 401.
fn warn_about_sinks(settings: &Settings) {
    if settings.events.link_key.is_some() {
        return;
    }
    for sink in settings.sinks.iter().filter(|s| s.token.is_none()) {
        tracing::warn!(
            sink = %sink.name,
            "sink has no token and events.link_key is not set: its consumers cannot fetch the documents events link to"
        );
    }
}

/// Reads the configuration again on SIGHUP and puts its rules, sinks and
/// Connect keys in force; a configuration that no longer loads changes nothing.
async fn reload_on_sighup(reloader: Reloader, stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot listen for SIGHUP; the configuration reloads only on restart or through the admin API"
            );
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            match reloader.reload().await {
                Ok(reloaded) => tracing::info!(
                    keys = reloaded.keys,
                    rules = reloaded.rules,
                    sinks = ?reloaded.sinks,
                    removed = ?reloaded.removed_sinks,
                    "SIGHUP: configuration reloaded"
                ),
                Err(error) => tracing::error!(
                    %error,
                    key = error.key(),
                    "SIGHUP: configuration does not load; keeping the rules, sinks and keys in force"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        stop.cancelled().await;
    }
}

async fn prune_loop(store: Arc<dyn Store>, retention: Duration, stop: CancellationToken) {
    loop {
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep))
            .unwrap_or(chrono::DateTime::UNIX_EPOCH);
        match store.prune_jobs(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "deleted finished jobs past retention"),
            Err(error) => tracing::warn!(%error, "pruning finished jobs failed; will try again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
