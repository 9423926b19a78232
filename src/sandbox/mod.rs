//! A faithful DocuSign simulator for tests, the demo, benchmarks and
//! `countersign sandbox`: the OAuth JWT Grant with consent, userinfo, the
//! eSignature REST endpoints countersign reads and sends through (with
//! DocuSign's rate-limit headers), the account's templates, envelopes that
//! are signed, declined or voided, fault knobs, and a Connect sender. It
//! follows `docs/DOCUSIGN.md` (§5 OAuth, §6 REST, §7 rate limits, §8 faults);
//! where DocuSign's behaviour is unconfirmed the choice is written next to
//! the code.

pub mod connect;
mod control;
pub mod envelopes;
mod faults;
pub mod identity;
pub mod json;
mod notifier;
mod oauth;
pub mod pdf;
mod rest;
mod sending;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::net::TcpListener;

pub use envelopes::{Envelope, EnvelopeGenerator, EnvelopeStatus, GeneratorOptions, Template};
pub use faults::Fault;
pub use identity::Identity;
pub use notifier::LifecycleDelivery;
pub use oauth::{allow_through_consent_page, form_fields};
pub use sending::{DEFAULT_EVENTS, LifecycleError, RestError};

use connect::{ConnectFormat, NotificationOptions};
use notifier::{Destination, Notifier};
use sending::{Event, Subscription};

use crate::ids::{EnvelopeId, UserId};

/// How the sandbox behaves; every field can be changed for a test.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The auth host the JWT `aud` must name (bare, no scheme).
    pub auth_host: String,
    /// `expires_in` of issued access tokens.
    pub token_lifetime: Duration,
    /// Requests per account per clock hour (DocuSign's default is 3,000).
    pub hourly_limit: u32,
    /// Requests per account per burst window (200 on demo accounts).
    pub burst_limit: u32,
    /// DocuSign's burst window is 30 seconds; tests shorten it.
    pub burst_window: Duration,
    /// Seed of the envelope generator.
    pub seed: u64,
    /// Size of each generated document.
    pub document_bytes: usize,
    pub max_documents: usize,
    /// The redirect URI registered on the integration key.
    pub redirect_uri: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            auth_host: "account-d.docusign.com".into(),
            token_lifetime: Duration::from_secs(3600),
            hourly_limit: 3000,
            burst_limit: 200,
            burst_window: Duration::from_secs(30),
            seed: 1,
            document_bytes: 40_000,
            max_documents: 3,
            redirect_uri: "https://www.docusign.com".into(),
        }
    }
}

/// An access token the sandbox issued.
#[derive(Debug, Clone)]
struct IssuedToken {
    user: UserId,
    expires_at: DateTime<Utc>,
}

/// Requests counted per route and per user, for tests to assert on.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Counters {
    /// Requests per route name (`token`, `userinfo`, `envelope`, `combined`, …).
    pub routes: BTreeMap<String, u64>,
    /// Per user id, the same count per route name.
    pub users: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A rate-limit window: requests counted since `started`.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    used: u32,
}

#[derive(Debug)]
struct Inner {
    /// (integration key, user) → consented scopes.
    consents: HashMap<(uuid::Uuid, UserId), HashSet<String>>,
    tokens: HashMap<String, IssuedToken>,
    envelopes: BTreeMap<EnvelopeId, Envelope>,
    generator: EnvelopeGenerator,
    counters: Counters,
    hourly: Window,
    burst: Window,
    hourly_limit: u32,
    burst_limit: u32,
    token_lifetime: Duration,
    faults: HashMap<String, Fault>,
    base_url: String,
    /// How far the sandbox's clock runs ahead of the real one (seconds).
    clock_skew: i64,
    /// The Connect listener that envelopes completed through `/control` are
    /// announced to when the caller names none (`sandbox --connect-url`),
    /// and that every change of an envelope sent through the API goes to.
    connect_url: Option<String>,
    /// Envelopes created through `POST …/envelopes`, in creation order.
    sent: Vec<EnvelopeId>,
    /// The `eventNotification` of those that had one.
    subscriptions: HashMap<EnvelopeId, Subscription>,
    notifier: Notifier,
}

#[derive(Debug)]
struct Shared {
    config: SandboxConfig,
    identity: Identity,
    inner: Mutex<Inner>,
}

/// The simulator; cheap to clone, all clones share state.
#[derive(Debug, Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Key(#[from] identity::KeyGenerationFailed),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let identity = Identity::generate(&config.redirect_uri)?;
        let generator = EnvelopeGenerator::new(
            config.seed,
            GeneratorOptions {
                account_id: identity.account_id,
                sender: identity.user.clone(),
                document_bytes: config.document_bytes,
                max_documents: config.max_documents,
            },
        );
        let now = Utc::now();
        let inner = Inner {
            consents: HashMap::new(),
            tokens: HashMap::new(),
            envelopes: BTreeMap::new(),
            generator,
            counters: Counters::default(),
            hourly: Window { started: now, used: 0 },
            burst: Window { started: now, used: 0 },
            hourly_limit: config.hourly_limit,
            burst_limit: config.burst_limit,
            token_lifetime: config.token_lifetime,
            faults: HashMap::new(),
            base_url: String::new(),
            clock_skew: 0,
            connect_url: None,
            sent: Vec::new(),
            subscriptions: HashMap::new(),
            notifier: Notifier::default(),
        };
        Ok(Self { shared: Arc::new(Shared { config, identity, inner: Mutex::new(inner) }) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written
        // in a way that matters to a simulator; keep serving.
        self.shared.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// Where the sandbox answers, e.g. `http://127.0.0.1:8081` (set by [`Sandbox::serve`]).
    pub fn base_url(&self) -> String {
        self.lock().base_url.clone()
    }

    /// The whole simulator as one router.
    pub fn router(&self) -> Router {
        Router::new().merge(oauth::router()).merge(rest::router()).merge(control::router()).with_state(self.clone())
    }

    /// Listens on `addr` and serves until the returned handle is dropped or aborted.
    pub async fn serve(&self, addr: &str) -> Result<RunningSandbox, SandboxError> {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| SandboxError::Bind { addr: addr.to_string(), source })?;
        let local = listener.local_addr().map_err(|source| SandboxError::Bind { addr: addr.to_string(), source })?;
        self.lock().base_url = format!("http://{local}");
        let app = self.router();
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "sandbox server stopped");
            }
        });
        Ok(RunningSandbox { addr: local, sandbox: self.clone(), task })
    }

    /// Generates `count` envelopes, completes them now, and returns them.
    pub fn complete_envelopes(&self, count: usize) -> Vec<Envelope> {
        // Without a scenario the generator cannot refuse.
        self.complete_envelopes_of(count, None).unwrap_or_default()
    }

    /// Like [`Sandbox::complete_envelopes`], all of one scenario when one is
    /// named (see [`envelopes::scenario_names`]); `None` for an unknown name.
    pub fn complete_envelopes_of(&self, count: usize, scenario: Option<&str>) -> Option<Vec<Envelope>> {
        if let Some(name) = scenario
            && !envelopes::scenario_names().contains(&name)
        {
            return None;
        }
        let mut inner = self.lock();
        let now = Utc::now();
        let mut created = Vec::with_capacity(count);
        for _ in 0..count {
            let mut envelope = match scenario {
                Some(name) => inner.generator.next_envelope_of(name)?,
                None => inner.generator.next_envelope(),
            };
            envelope.shift_completion_to(now);
            inner.envelopes.insert(envelope.envelope_id, envelope.clone());
            created.push(envelope);
        }
        Some(created)
    }

    /// Makes `url` the Connect listener that `/control` announces completed
    /// envelopes to when a request names none; `None` forgets it.
    pub fn set_connect_url(&self, url: Option<String>) {
        self.lock().connect_url = url;
    }

    pub fn connect_url(&self) -> Option<String> {
        self.lock().connect_url.clone()
    }

    /// Every envelope, generated or sent, oldest status change first.
    pub fn all_envelopes(&self) -> Vec<Envelope> {
        let mut all: Vec<Envelope> = self.lock().envelopes.values().cloned().collect();
        all.sort_by_key(|e| (e.status_changed_at(), e.envelope_id));
        all
    }

    pub fn envelope(&self, id: EnvelopeId) -> Option<Envelope> {
        self.lock().envelopes.get(&id).cloned()
    }

    /// The account's templates (one per scenario): what `GET …/templates` lists.
    pub fn templates(&self) -> Vec<Template> {
        envelopes::templates()
    }

    /// Creates an envelope from a template exactly as `POST …/envelopes` does
    /// with `definition` as its body, notifications included; a refusal is
    /// DocuSign's error code and message.
    pub fn create_envelope(&self, definition: &serde_json::Value) -> Result<Envelope, RestError> {
        let body = serde_json::to_vec(definition).map_err(|e| RestError::new("INVALID_REQUEST_BODY", e.to_string()))?;
        Ok(self.create_from(sending::parse(&body)?))
    }

    fn create_from(&self, definition: sending::Definition) -> Envelope {
        let origin = sending::Origin {
            account_id: self.shared.identity.account_id,
            sender: self.shared.identity.user.clone(),
            document_bytes: self.shared.config.document_bytes,
        };
        let now = Utc::now();
        let mut envelope = definition.envelope(&origin, now);
        let events = if definition.send { sending::send(&mut envelope, now) } else { Vec::new() };
        let id = envelope.envelope_id;
        let mut inner = self.lock();
        inner.envelopes.insert(id, envelope.clone());
        inner.sent.push(id);
        if let Some(subscription) = definition.subscription {
            inner.subscriptions.insert(id, subscription);
        }
        self.announce(&mut inner, id, events);
        envelope
    }

    /// Envelopes created through the REST API (or [`Sandbox::create_envelope`]),
    /// as they are now, in the order they were created.
    pub fn sent_envelopes(&self) -> Vec<Envelope> {
        let inner = self.lock();
        inner.sent.iter().filter_map(|id| inner.envelopes.get(id).cloned()).collect()
    }

    /// Every signer still to sign signs, in routing order; the envelope completes.
    pub fn sign(&self, id: EnvelopeId) -> Result<Envelope, LifecycleError> {
        self.sign_as(id, None, &BTreeMap::new())
    }

    /// The signer `recipient_id` names signs (every remaining signer when
    /// `None`), typing `values` into their tabs by label; required tabs left
    /// empty get plausible values. The last signature completes the envelope.
    pub fn sign_as(
        &self,
        id: EnvelopeId,
        recipient_id: Option<&str>,
        values: &BTreeMap<String, String>,
    ) -> Result<Envelope, LifecycleError> {
        self.transition(id, |envelope, now| sending::sign(envelope, recipient_id, values, now))
    }

    /// The first signer the envelope is with declines it.
    pub fn decline(&self, id: EnvelopeId, reason: &str) -> Result<Envelope, LifecycleError> {
        self.decline_as(id, None, reason)
    }

    /// The signer `recipient_id` names (the first one the envelope is with when `None`) declines it.
    pub fn decline_as(
        &self,
        id: EnvelopeId,
        recipient_id: Option<&str>,
        reason: &str,
    ) -> Result<Envelope, LifecycleError> {
        self.transition(id, |envelope, now| sending::decline(envelope, recipient_id, reason, now))
    }

    /// The sender voids an envelope that is sent or delivered.
    pub fn void(&self, id: EnvelopeId, reason: &str) -> Result<Envelope, LifecycleError> {
        self.transition(id, |envelope, now| sending::void(envelope, reason, now))
    }

    /// Applies one step to a copy, so that a refused step changes nothing,
    /// then keeps it and announces its events.
    fn transition(
        &self,
        id: EnvelopeId,
        step: impl FnOnce(&mut Envelope, DateTime<Utc>) -> Result<Vec<Event>, LifecycleError>,
    ) -> Result<Envelope, LifecycleError> {
        let mut inner = self.lock();
        let mut envelope = inner.envelopes.get(&id).cloned().ok_or(LifecycleError::UnknownEnvelope(id))?;
        let events = step(&mut envelope, Utc::now())?;
        inner.envelopes.insert(id, envelope.clone());
        self.announce(&mut inner, id, events);
        Ok(envelope)
    }

    /// Queues the notifications of `events`: to the envelope's own
    /// `eventNotification` (the events it lists, or the default ones) and to
    /// the account's listener (the default ones), once when both are one URL.
    fn announce(&self, inner: &mut Inner, id: EnvelopeId, events: Vec<Event>) {
        let keys = &self.shared.identity.hmac_keys;
        let own = inner.subscriptions.get(&id).cloned();
        let account = inner.connect_url.clone();
        for event in events {
            let mut posts: Vec<(Destination, ConnectFormat, bool)> = Vec::new();
            let account_wants = account.is_some() && DEFAULT_EVENTS.contains(&event.name);
            match (&own, &account) {
                (Some(own), Some(url)) if &own.url == url => {
                    if own.wants(event.name) || account_wants {
                        // The account's configuration signs; one post serves both.
                        let retries = if own.require_acknowledgment { 10 } else { 3 };
                        posts.push((
                            Destination { url: url.clone(), signed: true, retries },
                            own.format,
                            own.include_documents,
                        ));
                    }
                }
                _ => {
                    if let Some(own) = own.as_ref().filter(|own| own.wants(event.name)) {
                        let retries = if own.require_acknowledgment { 10 } else { 0 };
                        let destination = Destination { url: own.url.clone(), signed: own.sign, retries };
                        posts.push((destination, own.format, own.include_documents));
                    }
                    if let Some(url) = account.as_ref().filter(|_| account_wants) {
                        posts.push((
                            Destination { url: url.clone(), signed: true, retries: 3 },
                            ConnectFormat::Json,
                            false,
                        ));
                    }
                }
            }
            for (destination, format, include_documents) in posts {
                let options = NotificationOptions {
                    event: event.name.to_string(),
                    include_documents,
                    recipient_id: event.recipient_id.clone(),
                    ..NotificationOptions::default()
                };
                inner.notifier.post(destination, keys, event.envelope.clone(), format, options);
            }
        }
    }

    /// Every lifecycle notification posted so far and how it went, oldest first.
    pub fn lifecycle_deliveries(&self) -> Vec<LifecycleDelivery> {
        self.lock().notifier.deliveries()
    }

    /// Grants the configured integration key consent for `user` and `scopes`.
    pub fn grant_consent(&self, user: UserId, scopes: &[&str]) {
        let ik = self.shared.identity.integration_key;
        let mut inner = self.lock();
        let entry = inner.consents.entry((ik, user)).or_default();
        entry.extend(scopes.iter().map(|s| (*s).to_string()));
    }

    /// Revokes all consent for `user`; issued tokens stay valid until they expire, as at DocuSign.
    pub fn revoke_consent(&self, user: UserId) {
        let ik = self.shared.identity.integration_key;
        self.lock().consents.remove(&(ik, user));
    }

    fn has_consent(&self, user: UserId) -> bool {
        let ik = self.shared.identity.integration_key;
        self.lock()
            .consents
            .get(&(ik, user))
            .is_some_and(|scopes| scopes.contains("signature") && scopes.contains("impersonation"))
    }

    /// Every access token issued so far: what must never appear in a log.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// Expires every issued access token now (DocuSign may end a token early).
    pub fn expire_tokens(&self) {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for token in self.lock().tokens.values_mut() {
            token.expires_at = past;
        }
    }

    /// Runs the sandbox's clock `seconds` ahead, as an auth server whose
    /// clock disagrees with countersign's would (assertions then look expired).
    pub fn set_clock_skew(&self, seconds: i64) {
        self.lock().clock_skew = seconds;
    }

    /// The sandbox's idea of the current time, in epoch seconds.
    fn now_timestamp(&self) -> i64 {
        Utc::now().timestamp() + self.lock().clock_skew
    }

    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().token_lifetime = lifetime;
    }

    pub fn set_rate_limits(&self, hourly: u32, burst: u32) {
        let mut inner = self.lock();
        inner.hourly_limit = hourly;
        inner.burst_limit = burst;
    }

    /// Sets the fault knobs of one route (the names in `faults::ROUTES`); a default `Fault` clears them.
    pub fn set_fault(&self, route: &str, fault: Fault) {
        self.lock().faults.insert(route.to_string(), fault);
    }

    fn fault(&self, route: &str) -> Fault {
        self.lock().faults.get(route).cloned().unwrap_or_default()
    }

    /// Whether the answer to a request of `route` that was carried out is lost.
    fn lose_answer(&self, route: &str) -> bool {
        self.lock().faults.get_mut(route).is_some_and(Fault::lose_answer)
    }

    /// Counts one REST call against the account's hourly and burst windows.
    fn take_rate_limit(&self) -> RateLimit {
        let now = Utc::now();
        let hour_start = now.duration_trunc_hour();
        let window = i64::try_from(self.shared.config.burst_window.as_millis()).unwrap_or(30_000).max(1);
        let burst_start =
            DateTime::from_timestamp_millis(now.timestamp_millis() - now.timestamp_millis().rem_euclid(window))
                .unwrap_or(now);
        let mut inner = self.lock();
        if inner.hourly.started != hour_start {
            inner.hourly = Window { started: hour_start, used: 0 };
        }
        if inner.burst.started != burst_start {
            inner.burst = Window { started: burst_start, used: 0 };
        }
        let exceeded = if inner.hourly.used >= inner.hourly_limit {
            Some(LimitKind::Hourly)
        } else if inner.burst.used >= inner.burst_limit {
            Some(LimitKind::Burst)
        } else {
            inner.hourly.used += 1;
            inner.burst.used += 1;
            None
        };
        RateLimit {
            hourly_limit: inner.hourly_limit,
            hourly_remaining: inner.hourly_limit.saturating_sub(inner.hourly.used),
            reset: (hour_start + chrono::Duration::hours(1)).timestamp(),
            burst_limit: inner.burst_limit,
            burst_remaining: inner.burst_limit.saturating_sub(inner.burst.used),
            exceeded,
        }
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    fn count(&self, route: &str, user: Option<UserId>) {
        let mut inner = self.lock();
        *inner.counters.routes.entry(route.to_string()).or_default() += 1;
        if let Some(user) = user {
            *inner.counters.users.entry(user.to_string()).or_default().entry(route.to_string()).or_default() += 1;
        }
    }

    /// The user behind a bearer token, if it is known and not expired.
    fn token_user(&self, token: &str) -> Option<UserId> {
        let inner = self.lock();
        let issued = inner.tokens.get(token)?;
        (issued.expires_at > Utc::now()).then_some(issued.user)
    }

    fn issue_token(&self, user: UserId) -> (String, u64) {
        use base64::Engine;
        use rand::RngExt;
        let bytes: [u8; 48] = rand::rng().random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut inner = self.lock();
        let lifetime = inner.token_lifetime;
        let expires_at = Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
        inner.tokens.insert(token.clone(), IssuedToken { user, expires_at });
        (token, lifetime.as_secs())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitKind {
    Hourly,
    Burst,
}

/// The state of the rate-limit windows after one call, for the response headers.
#[derive(Debug, Clone, Copy)]
struct RateLimit {
    hourly_limit: u32,
    hourly_remaining: u32,
    /// Epoch seconds when the hourly window resets (the next clock hour).
    reset: i64,
    burst_limit: u32,
    burst_remaining: u32,
    exceeded: Option<LimitKind>,
}

trait TruncHour {
    fn duration_trunc_hour(self) -> Self;
}

impl TruncHour for DateTime<Utc> {
    fn duration_trunc_hour(self) -> Self {
        let secs = self.timestamp();
        DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(self)
    }
}

/// What `countersign sandbox` prints: the identity, and the configuration
/// that points `countersign serve` at this sandbox.
pub fn describe(sandbox: &Sandbox, base_url: &str, key_path: &std::path::Path) -> String {
    let id = sandbox.identity();
    let hmac_keys: Vec<String> = id.hmac_keys.iter().map(|k| format!("{k:?}")).collect();
    // With a default listener the example needs no URL, which is the point of --connect-url.
    let (connect, example) = match sandbox.connect_url() {
        Some(url) => (
            format!(
                "envelopes completed through /control, and each change of an envelope sent through the REST \
                     API, are announced to {url}"
            ),
            r#"{"count": 2}"#.to_string(),
        ),
        None => (
            "no default listener (--connect-url); name one with \"url\"".to_string(),
            r#"{"count": 2, "url": "http://127.0.0.1:8080/docusign/connect"}"#.to_string(),
        ),
    };
    format!(
        "DocuSign sandbox listening on {base_url}\n\
         \n  integration key  {ik}\n  user id          {user}\n  account id       {account}\n\
         \x20 account number   {number} (legacy XML names the account by it)\n\
         \x20 HMAC key         {hmac}\n  private key      {key}\n\
         \n  consent: open `countersign consent-url` with the configuration below and allow access,\n\
         \x20 or POST {base_url}/control/consent\n\
         \n  control API: GET {base_url}/control/openapi.json describes every /control route\n\
         \x20 Connect: {connect}\n\
         \x20 complete 2 envelopes and send their Connect notifications (signed with the HMAC key):\n\
         \x20   curl -X POST {base_url}/control/connect -H 'Content-Type: application/json' -d '{example}'\n\
         \nConfiguration for `countersign serve` (TOML):\n\n\
         [connect]\nhmac_keys = [{keys}]\n\n\
         [docusign]\nauth_server = \"{aud}\"\nauth_url = \"{base_url}\"\n\
         integration_key = \"{ik}\"\nuser_id = \"{user}\"\nredirect_uri = \"{redirect}\"\n\
         private_key_file = \"{key}\"\n",
        ik = id.integration_key,
        user = id.user.user_id,
        account = id.account_id,
        number = identity::account_number(id.account_id),
        hmac = id.hmac_keys.first().map(String::as_str).unwrap_or(""),
        key = key_path.display(),
        keys = hmac_keys.join(", "),
        aud = sandbox.config().auth_host,
        redirect = id.redirect_uri,
    )
}

/// A sandbox serving on a socket; the server stops when this is dropped.
#[derive(Debug)]
pub struct RunningSandbox {
    pub addr: SocketAddr,
    pub sandbox: Sandbox,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}
