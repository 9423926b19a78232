//! Settings: embedded defaults, then an optional TOML file, then
//! `COUNTERSIGN_`-prefixed environment variables (`__` between levels).
//! Every secret may be given inline or as a `*_file` path; files are read
//! once at load time so that a missing secret fails start-up, not a request.

mod agreements;
mod connect;
mod documents;
mod docusign;
mod events;
mod secret;
mod sinks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use agreements::{
    AGREEMENT_FIELD, ApiClientSettings, ApiSettings, CUSTOM_FIELD_MAX_CHARS, ProfileSettings, RoleSettings, SourceKind,
    SourceSettings,
};
pub use connect::{ConnectAccountSettings, ConnectSettings};
pub use documents::{DocumentsLocation, DocumentsSettings, DownloadMode};
pub use docusign::{DocusignAccountSettings, DocusignSettings};
pub use events::{DEFAULT_RULE, DeliverySettings, EventsSettings, FieldSettings, MatchSettings, RuleSettings, Wait};
pub use secret::Secret;
pub use sinks::{SinkKind, SinkSettings};

use crate::ids::AccountId;

/// The environment prefix for overrides, e.g. `COUNTERSIGN_STORE__URL`.
pub const ENV_PREFIX: &str = "COUNTERSIGN_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse, or a key that does not exist.
    #[error("configuration key `{key}`{origin}: {reason}")]
    Parse { key: String, origin: String, reason: String },
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), reason: reason.into() }
    }

    /// The configuration key that is wrong.
    pub fn key(&self) -> &str {
        match self {
            Self::Parse { key, .. } | Self::Invalid { key, .. } => key,
        }
    }
}

impl From<figment::Error> for ConfigError {
    /// Restates figment's error as the key an operator writes, and where the
    /// value came from (the environment variable's exact name, or the file).
    fn from(error: figment::Error) -> Self {
        use figment::error::Kind;
        // For an unknown key the path already ends with it.
        let path: Vec<String> = error.path.iter().map(|p| p.to_lowercase()).collect();
        // The value itself is never repeated: the key may hold a secret.
        let reason = match &error.kind {
            Kind::UnknownField(_, expected) => format!("unknown key; expected one of {}", expected.join(", ")),
            Kind::InvalidType(actual, expected) => {
                format!("invalid type: found {}, expected {expected}", kind_of(actual))
            }
            Kind::InvalidValue(actual, expected) => {
                format!("invalid value: found {}, expected {expected}", kind_of(actual))
            }
            kind => kind.to_string(),
        };
        let origin = match &error.metadata {
            Some(meta) if meta.name.contains("environment") => {
                let var: Vec<String> = path.iter().map(|p| p.to_uppercase()).collect();
                format!(" (environment variable {ENV_PREFIX}{})", var.join("__"))
            }
            Some(meta) => match &meta.source {
                Some(figment::Source::File(file)) => format!(" (in {})", file.display()),
                _ => String::new(),
            },
            None => String::new(),
        };
        Self::Parse { key: key_path(&path), origin, reason }
    }
}

/// `rules.0.match` as the operator reads it: `rules[0].match`.
fn key_path(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// What kind of value was found, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "another kind of value",
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub documents: DocumentsSettings,
    pub connect: ConnectSettings,
    pub docusign: DocusignSettings,
    pub admin: AdminSettings,
    pub queue: QueueSettings,
    pub reconcile: ReconcileSettings,
    pub log: LogSettings,
    pub sinks: Vec<SinkSettings>,
    pub events: EventsSettings,
    pub delivery: DeliverySettings,
    pub rules: Vec<RuleSettings>,
    /// The requests API for IT systems that ask for agreements.
    pub api: ApiSettings,
    /// How a request for an agreement becomes an envelope.
    pub profiles: Vec<ProfileSettings>,
    /// The file these settings were read from, to read it again on reload.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// How long in-flight requests and jobs may run on after SIGTERM before
    /// their leases are released and the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The address event consumers reach this service at; document URLs in
    /// events start with it.
    pub public_url: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            shutdown_grace: Duration::from_secs(20),
            public_url: "http://localhost:8080".into(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// PostgreSQL only: the password, kept out of `url` so that it can come
    /// from a file (a Docker or Kubernetes secret).
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Connections to PostgreSQL (SQLite always writes through one).
    pub max_connections: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { url: "sqlite://data/countersign.db".into(), password: None, password_file: None, max_connections: 10 }
    }
}

impl StoreSettings {
    /// The URL to connect with: `url` with `password` put into it. A secret,
    /// since the password is in it; log [`crate::store::redact_url`] of `url` instead.
    pub fn connection_url(&self) -> Secret {
        let Some(password) = &self.password else { return Secret::new(self.url.clone()) };
        // Validation refuses a password beside a URL it cannot go into.
        let Ok(mut url) = url::Url::parse(&self.url) else { return Secret::new(self.url.clone()) };
        match url.set_password(Some(password.expose())) {
            Ok(()) => Secret::new(String::from(url)),
            Err(()) => Secret::new(self.url.clone()),
        }
    }
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &crate::store::redact_url(&self.url))
            .field("password", &self.password)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for the admin API; absent means the admin API is off.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Jobs run concurrently by this process.
    pub workers: usize,
    /// How long a claimed job stays invisible to other workers without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Attempts before a job becomes a dead letter.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Completed jobs are deleted this long after they finished.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            lease: Duration::from_secs(60),
            max_attempts: 12,
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(3600),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Periodic passes that find completed envelopes Connect never delivered.
    pub enabled: bool,
    /// How often each account is listed.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Each pass starts this long before the previous one ended, so that
    /// clock differences with DocuSign cannot hide an envelope.
    #[serde(with = "humantime_serde")]
    pub overlap: Duration,
    /// Envelopes completed less than this long ago are left to Connect: a
    /// pass lists only up to `now - grace`, so that a notification still on
    /// its way is not taken for a missed one (and its documents downloaded
    /// twice). Connect usually delivers within seconds.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Envelopes asked for per listing page.
    pub page_size: usize,
    /// Accounts to reconcile; empty means every account in `docusign.accounts`
    /// and `connect.accounts`, or else the default account of `docusign.user_id`.
    pub accounts: Vec<AccountId>,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(900),
            overlap: Duration::from_secs(600),
            grace: Duration::from_secs(900),
            page_size: 100,
            accounts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Human,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info,countersign=debug`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Json, filter: "info".into() }
    }
}

impl Settings {
    /// Loads defaults < `file` < environment, reads secret files and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut settings: Settings = Self::figment(file)?.extract()?;
        settings.source = file.map(Path::to_path_buf);
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// `server.listen` alone, from the same sources as [`Settings::load`],
    /// without reading secret files or checking other keys: what
    /// `countersign healthcheck` needs, every few seconds, to find the service.
    pub fn load_listen(file: Option<&Path>) -> Result<SocketAddr, ConfigError> {
        #[derive(Default, Deserialize)]
        #[serde(default)]
        struct Listen {
            server: ListenServer,
        }
        #[derive(Deserialize)]
        #[serde(default)]
        struct ListenServer {
            listen: SocketAddr,
        }
        impl Default for ListenServer {
            fn default() -> Self {
                Self { listen: ServerSettings::default().listen }
            }
        }
        let listen: Listen = Self::figment(file)?.extract()?;
        Ok(listen.server.listen)
    }

    /// Defaults < `file` < environment.
    fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::invalid("--config", format!("{} is not a readable file", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
    }

    /// Settings parsed from TOML text alone (no environment), validated; for
    /// tests and tools that build a configuration in code.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut settings: Settings = Figment::from(Toml::string(text)).extract()?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.connect.hmac_keys_file {
            if !self.connect.hmac_keys.is_empty() {
                return Err(both_given("connect.hmac_keys"));
            }
            self.connect.hmac_keys = read_secret_lines(path, "connect.hmac_keys_file")?;
        }
        for (i, account) in self.connect.accounts.iter_mut().enumerate() {
            if let Some(path) = &account.hmac_keys_file {
                if !account.hmac_keys.is_empty() {
                    return Err(both_given(&format!("connect.accounts[{i}].hmac_keys")));
                }
                account.hmac_keys = read_secret_lines(path, &format!("connect.accounts[{i}].hmac_keys_file"))?;
            }
        }
        resolve_secret(
            &mut self.connect.basic_auth_password,
            &self.connect.basic_auth_password_file,
            "connect.basic_auth_password",
        )?;
        resolve_secret(&mut self.store.password, &self.store.password_file, "store.password")?;
        resolve_secret(&mut self.docusign.private_key, &self.docusign.private_key_file, "docusign.private_key")?;
        resolve_secret(&mut self.admin.token, &self.admin.token_file, "admin.token")?;
        let documents = &mut self.documents;
        resolve_secret(
            &mut documents.s3_access_key_id,
            &documents.s3_access_key_id_file,
            "documents.s3_access_key_id",
        )?;
        resolve_secret(
            &mut documents.s3_secret_access_key,
            &documents.s3_secret_access_key_file,
            "documents.s3_secret_access_key",
        )?;
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            resolve_secret(&mut sink.secret, &sink.secret_file, &format!("sinks[{i}].secret"))?;
            resolve_secret(&mut sink.token, &sink.token_file, &format!("sinks[{i}].token"))?;
        }
        resolve_secret(&mut self.events.link_key, &self.events.link_key_file, "events.link_key")?;
        self.api.read_secret_files()?;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.store.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::invalid("store.url", "must start with sqlite: or postgres://"));
        }
        self.validate_store_password()?;
        if self.store.max_connections == 0 {
            return Err(ConfigError::invalid("store.max_connections", "must be at least 1"));
        }
        self.documents.validate()?;
        // An empty token would be matched by an empty `Authorization: Bearer `.
        if self.admin.token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            return Err(ConfigError::invalid("admin.token", "is empty; remove it to turn the admin API off"));
        }
        if self.connect.max_body_bytes == 0 {
            return Err(ConfigError::invalid("connect.max_body_bytes", "must be greater than 0"));
        }
        if self.connect.hmac_keys.iter().any(|k| k.expose().trim().is_empty()) {
            return Err(ConfigError::invalid("connect.hmac_keys", "contains an empty key"));
        }
        let mut numbers = std::collections::HashSet::new();
        for (i, account) in self.connect.accounts.iter().enumerate() {
            if let Some(number) = &account.account_number {
                let key = format!("connect.accounts[{i}].account_number");
                if number.is_empty() || number.len() > 20 || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ConfigError::invalid(key, "must be DocuSign's account number: digits only"));
                }
                if !numbers.insert(number) {
                    return Err(ConfigError::invalid(key, "names the same account number as an earlier entry"));
                }
            }
            if account.hmac_keys.is_empty() && account.account_number.is_none() {
                return Err(ConfigError::invalid(format!("connect.accounts[{i}].hmac_keys"), "no key given"));
            }
            // An empty key would let anyone sign for the account.
            if account.hmac_keys.iter().any(|k| k.expose().trim().is_empty()) {
                return Err(ConfigError::invalid(format!("connect.accounts[{i}].hmac_keys"), "contains an empty key"));
            }
        }
        if self.connect.basic_auth_user.is_some() != self.connect.basic_auth_password.is_some() {
            return Err(ConfigError::invalid(
                "connect.basic_auth_user",
                "basic_auth_user and basic_auth_password go together",
            ));
        }
        let auth = &self.docusign.auth_server;
        if auth.is_empty() || auth.contains("://") || auth.contains('/') {
            return Err(ConfigError::invalid(
                "docusign.auth_server",
                "must be a bare host name such as account-d.docusign.com (no scheme, no path)",
            ));
        }
        if let Some(auth_url) = &self.docusign.auth_url {
            let ok = url::Url::parse(auth_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::invalid("docusign.auth_url", "must be an http:// or https:// URL"));
            }
        }
        if let Some(ik) = &self.docusign.integration_key {
            uuid::Uuid::try_parse(ik)
                .map_err(|_| ConfigError::invalid("docusign.integration_key", "must be a GUID"))?;
        }
        if let Some(key) = &self.docusign.private_key {
            jsonwebtoken::EncodingKey::from_rsa_pem(key.expose().as_bytes()).map_err(|_| {
                ConfigError::invalid(
                    "docusign.private_key",
                    "is not an RSA private key in PEM form (PKCS#1 \"BEGIN RSA PRIVATE KEY\" or PKCS#8 \"BEGIN PRIVATE KEY\")",
                )
            })?;
        }
        if self.docusign.recheck_base.is_zero() || self.docusign.recheck_base > self.docusign.recheck_cap {
            return Err(ConfigError::invalid(
                "docusign.recheck_base",
                "must be above zero and not above docusign.recheck_cap",
            ));
        }
        if self.docusign.request_timeout.is_zero() {
            return Err(ConfigError::invalid("docusign.request_timeout", "must be above zero"));
        }
        if self.docusign.burst_window.is_zero() {
            return Err(ConfigError::invalid("docusign.burst_window", "must be above zero"));
        }
        let reconcile = &self.reconcile;
        if reconcile.interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid("reconcile.interval", "must be at least 1s"));
        }
        if !(1..=1000).contains(&reconcile.page_size) {
            return Err(ConfigError::invalid("reconcile.page_size", "must be between 1 and 1000"));
        }
        let queue = &self.queue;
        if queue.workers == 0 {
            return Err(ConfigError::invalid("queue.workers", "must be at least 1"));
        }
        if queue.lease < Duration::from_secs(1) {
            return Err(ConfigError::invalid("queue.lease", "must be at least 1s"));
        }
        if queue.max_attempts == 0 {
            return Err(ConfigError::invalid("queue.max_attempts", "must be at least 1"));
        }
        if queue.backoff_base.is_zero() || queue.backoff_base > queue.backoff_cap {
            return Err(ConfigError::invalid(
                "queue.backoff_base",
                "must be above zero and not above queue.backoff_cap",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| ConfigError::invalid("log.filter", e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            if sink.name.trim().is_empty() {
                return Err(ConfigError::invalid(format!("sinks[{i}].name"), "must not be empty"));
            }
            if !names.insert(sink.name.as_str()) {
                return Err(ConfigError::invalid(format!("sinks[{i}].name"), format!("`{}` is used twice", sink.name)));
            }
            if sink.url.trim().is_empty() {
                return Err(ConfigError::invalid(format!("sinks[{i}].url"), "must not be empty"));
            }
            events::validate_sink(i, sink)?;
        }
        let public = url::Url::parse(&self.server.public_url).ok();
        if !public.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
            return Err(ConfigError::invalid("server.public_url", "must be an http:// or https:// URL"));
        }
        events::validate_events(&self.events, &self.sinks)?;
        events::validate_delivery(&self.delivery)?;
        events::validate_rules(&self.rules, &self.sinks)?;
        agreements::validate(&self.api, &self.profiles, &self.sinks)?;
        Ok(())
    }
}

impl Settings {
    /// Whether `envelope-completed` starts processing. Reconciliation finds
    /// completed envelopes in order to process them, so without it there is
    /// nothing for reconciliation to do.
    pub fn processes_completions(&self) -> bool {
        self.connect.process_events.iter().any(|event| event == "envelope-completed")
    }

    /// Whether the service reconciles on its own: enabled, and completions processed.
    pub fn reconciles(&self) -> bool {
        self.reconcile.enabled && self.processes_completions()
    }

    /// A password goes into a PostgreSQL URL that does not carry one already:
    /// two passwords would leave the reader guessing which one is used.
    fn validate_store_password(&self) -> Result<(), ConfigError> {
        let Some(password) = &self.store.password else { return Ok(()) };
        let url = &self.store.url;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::invalid("store.password", "applies only to a postgres:// store.url"));
        }
        if password.expose().is_empty() {
            return Err(ConfigError::invalid("store.password", "is empty"));
        }
        // The URL itself may hold a password, so no error below repeats it.
        let Ok(parsed) = url::Url::parse(url) else {
            return Err(ConfigError::invalid("store.url", "is not a URL that a password can be added to"));
        };
        let in_query = parsed.query_pairs().any(|(key, _)| key.eq_ignore_ascii_case("password"));
        if parsed.password().is_some() || in_query {
            return Err(ConfigError::invalid(
                "store.password",
                "store.url carries a password already; give it in one place",
            ));
        }
        if !parsed.has_host() {
            return Err(ConfigError::invalid("store.url", "needs a host for store.password to go with"));
        }
        Ok(())
    }
}

fn both_given(key: &str) -> ConfigError {
    ConfigError::invalid(key, format!("both `{key}` and `{key}_file` are set; give one"))
}

fn resolve_secret(inline: &mut Option<Secret>, file: &Option<PathBuf>, key: &str) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if inline.is_some() {
        return Err(both_given(key));
    }
    let text = read_secret_file(path, &format!("{key}_file"))?;
    // A trailing newline is an artefact of how the file was written, not part
    // of the secret; inner whitespace (a PEM body) is kept.
    *inline = Some(Secret::new(text.trim_end_matches(['\n', '\r'])));
    Ok(())
}

fn read_secret_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// Reads one secret per non-empty line.
pub fn read_secret_lines(path: &Path, key: &str) -> Result<Vec<Secret>, ConfigError> {
    let text = read_secret_file(path, key)?;
    let keys: Vec<Secret> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(Secret::new).collect();
    if keys.is_empty() {
        return Err(ConfigError::invalid(key, format!("{} holds no key", path.display())));
    }
    Ok(keys)
}
