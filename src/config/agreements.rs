//! `[api]` and `[[profiles]]`: who may ask countersign to send an agreement,
//! and how a request's data becomes an envelope from a DocuSign template.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Secret, SinkSettings, resolve_secret};
use crate::ids::AccountId;

pub use crate::domain::AGREEMENT_FIELD;

/// DocuSign keeps at most this many characters of a custom field's value.
pub const CUSTOM_FIELD_MAX_CHARS: usize = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// The IT systems that may ask for agreements; none means the requests
    /// API does not exist.
    pub clients: Vec<ApiClientSettings>,
    /// Where DocuSign reaches this service's Connect listener
    /// (`https://countersign.example.com/docusign/connect`). When set, every
    /// envelope countersign sends carries its own Connect subscription to it,
    /// so lifecycle news comes back even where the account's Connect is not
    /// configured for it.
    pub connect_url: Option<String>,
    /// Requests listed per page at most.
    pub max_page: u32,
    /// Message buses requests also arrive on, each on behalf of one client.
    pub sources: Vec<SourceSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A NATS JetStream stream, read by a durable pull consumer.
    Nats,
    /// A RabbitMQ (AMQP 0-9-1) queue.
    Amqp,
}

/// A bus whose messages are requests (`{"profile", "data"}`), each named by
/// its message id (the idempotency key); a message is acknowledged only
/// once its request is stored, and one that can never become a request goes
/// to `dead_letter` with the reason.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub name: String,
    pub kind: SourceKind,
    /// `nats://host:4222` or `amqp://user@host:5672/vhost`; printed redacted.
    pub url: String,
    /// The API client the requests are taken for: its profiles, its agreements.
    pub client: String,
    /// nats: the auth token; amqp: the password, replacing any in `url`.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// nats: the JetStream stream holding the requests.
    #[serde(default)]
    pub stream: Option<String>,
    /// nats: the subject (filter) requests are published on.
    #[serde(default)]
    pub subject: Option<String>,
    /// nats: the durable consumer's name (default `countersign-{name}`).
    #[serde(default)]
    pub durable: Option<String>,
    /// amqp: the queue requests are read from.
    #[serde(default)]
    pub queue: Option<String>,
    /// Where a message that can never become a request goes, with the
    /// reason: nats, a subject; amqp, a queue (through the default exchange).
    pub dead_letter: String,
}

impl std::fmt::Debug for SourceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &crate::store::redact_url(&self.url))
            .field("client", &self.client)
            .field("secret", &self.secret)
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("durable", &self.durable)
            .field("queue", &self.queue)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClientSettings {
    pub name: String,
    /// The bearer token the client sends.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The profiles this client may use.
    #[serde(default)]
    pub profiles: Vec<String>,
}

impl std::fmt::Debug for ApiClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClientSettings")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("profiles", &self.profiles)
            .finish()
    }
}

/// How a request becomes an envelope: a template, its roles filled from the
/// request's data, prefilled tabs and custom fields, and where the
/// agreement's lifecycle events go. Every value is a JSON Pointer into the
/// request's `data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    pub name: String,
    /// The DocuSign template the envelope is created from.
    pub template_id: String,
    /// The account that sends; default: the configured user's default account.
    #[serde(default)]
    pub account_id: Option<AccountId>,
    /// Where this agreement's lifecycle events go (`agreement.sent`, …).
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Per template role name: where its recipient's name and email are.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleSettings>,
    /// Per tab label: where its prefilled value is. Every mapped tab must be filled.
    #[serde(default)]
    pub tabs: BTreeMap<String, String>,
    /// Per envelope custom field name: where its value is; absent data leaves the field out.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    /// Replaces the template's email subject.
    #[serde(default)]
    pub email_subject: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    pub name: String,
    pub email: String,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self { clients: Vec::new(), connect_url: None, max_page: 500, sources: Vec::new() }
    }
}

impl ApiSettings {
    pub(super) fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        for (i, client) in self.clients.iter_mut().enumerate() {
            resolve_secret(&mut client.token, &client.token_file, &format!("api.clients[{i}].token"))?;
        }
        for (i, source) in self.sources.iter_mut().enumerate() {
            resolve_secret(&mut source.secret, &source.secret_file, &format!("api.sources[{i}].secret"))?;
        }
        Ok(())
    }
}

/// A JSON Pointer (RFC 6901): empty, or `/` then tokens, with `~` only as `~0` or `~1`.
fn is_json_pointer(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    pointer.starts_with('/') && pointer.split('~').skip(1).all(|after| after.starts_with('0') || after.starts_with('1'))
}

pub(super) fn validate(
    api: &ApiSettings,
    profiles: &[ProfileSettings],
    sinks: &[SinkSettings],
) -> Result<(), ConfigError> {
    if let Some(url) = &api.connect_url {
        let ok = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !ok {
            return Err(ConfigError::invalid("api.connect_url", "must be an http:// or https:// URL"));
        }
    }
    if api.max_page == 0 {
        return Err(ConfigError::invalid("api.max_page", "must be at least 1"));
    }
    let sink_names: HashSet<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
    let mut names = HashSet::new();
    for (i, profile) in profiles.iter().enumerate() {
        let key = |field: &str| format!("profiles[{i}].{field}");
        if profile.name.trim().is_empty() {
            return Err(ConfigError::invalid(key("name"), "must not be empty"));
        }
        if !names.insert(profile.name.as_str()) {
            return Err(ConfigError::invalid(key("name"), format!("`{}` is used twice", profile.name)));
        }
        let key = |field: &str| format!("profiles[{i}] ({}).{field}", profile.name);
        uuid::Uuid::try_parse(&profile.template_id)
            .map_err(|_| ConfigError::invalid(key("template_id"), "must be a DocuSign template id (a GUID)"))?;
        if profile.roles.is_empty() {
            return Err(ConfigError::invalid(key("roles"), "names no role; the envelope would have no recipient"));
        }
        for sink in &profile.sinks {
            if !sink_names.contains(sink.as_str()) {
                return Err(ConfigError::invalid(
                    key("sinks"),
                    format!("names `{sink}`, which is not a configured sink"),
                ));
            }
        }
        let pointers = profile
            .roles
            .iter()
            .flat_map(|(role, r)| [(format!("roles.{role}.name"), &r.name), (format!("roles.{role}.email"), &r.email)])
            .chain(profile.tabs.iter().map(|(label, p)| (format!("tabs.{label}"), p)))
            .chain(profile.custom_fields.iter().map(|(name, p)| (format!("custom_fields.{name}"), p)));
        for (field, pointer) in pointers {
            if !is_json_pointer(pointer) {
                return Err(ConfigError::invalid(
                    key(&field),
                    format!("`{pointer}` is not a JSON Pointer (it starts with `/`, e.g. `/employee/email`)"),
                ));
            }
        }
        for name in profile.custom_fields.keys() {
            if name == AGREEMENT_FIELD {
                return Err(ConfigError::invalid(
                    key(&format!("custom_fields.{name}")),
                    "is the field countersign itself sets to the agreement id",
                ));
            }
        }
    }
    let mut client_names = HashSet::new();
    let mut tokens = HashSet::new();
    for (i, client) in api.clients.iter().enumerate() {
        let key = |field: &str| format!("api.clients[{i}].{field}");
        if client.name.trim().is_empty() {
            return Err(ConfigError::invalid(key("name"), "must not be empty"));
        }
        if !client_names.insert(client.name.as_str()) {
            return Err(ConfigError::invalid(key("name"), format!("`{}` is used twice", client.name)));
        }
        let Some(token) = &client.token else {
            return Err(ConfigError::invalid(key("token"), "no token given (token or token_file)"));
        };
        // An empty token would be matched by an empty `Authorization: Bearer `.
        if token.expose().trim().is_empty() {
            return Err(ConfigError::invalid(key("token"), "is empty"));
        }
        if !tokens.insert(token.expose()) {
            return Err(ConfigError::invalid(key("token"), "is the token of an earlier client; each has its own"));
        }
        if client.profiles.is_empty() {
            return Err(ConfigError::invalid(key("profiles"), "names no profile; the client could send nothing"));
        }
        for name in &client.profiles {
            if !names.contains(name.as_str()) {
                return Err(ConfigError::invalid(key("profiles"), format!("names `{name}`, which is not a profile")));
            }
        }
    }
    validate_sources(api)
}

fn validate_sources(api: &ApiSettings) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, source) in api.sources.iter().enumerate() {
        let key = |field: &str| format!("api.sources[{i}].{field}");
        if source.name.trim().is_empty() {
            return Err(ConfigError::invalid(key("name"), "must not be empty"));
        }
        if !names.insert(source.name.as_str()) {
            return Err(ConfigError::invalid(key("name"), format!("`{}` is used twice", source.name)));
        }
        let scheme_ok = match source.kind {
            SourceKind::Nats => ["nats://", "tls://"].iter().any(|s| source.url.starts_with(s)),
            SourceKind::Amqp => ["amqp://", "amqps://"].iter().any(|s| source.url.starts_with(s)),
        };
        if !scheme_ok {
            return Err(ConfigError::invalid(key("url"), "must be a nats:// URL for kind nats, amqp:// for kind amqp"));
        }
        if !api.clients.iter().any(|c| c.name == source.client) {
            return Err(ConfigError::invalid(
                key("client"),
                format!("names `{}`, which is not an api.clients entry", source.client),
            ));
        }
        let needed: &[(&str, &Option<String>)] = match source.kind {
            SourceKind::Nats => &[("stream", &source.stream), ("subject", &source.subject)],
            SourceKind::Amqp => &[("queue", &source.queue)],
        };
        for (field, value) in needed {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err(ConfigError::invalid(key(field), format!("is required for a {:?} source", source.kind)));
            }
        }
        if source.dead_letter.trim().is_empty() {
            return Err(ConfigError::invalid(key("dead_letter"), "must not be empty"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn json_pointers_follow_rfc_6901() {
        for good in ["", "/", "/employee/email", "/a~0b/c~1d", "/0"] {
            assert!(is_json_pointer(good), "{good}");
        }
        for bad in ["employee/email", "/a~2", "/a~", "#/a"] {
            assert!(!is_json_pointer(bad), "{bad}");
        }
    }

    const GOOD: &str = r#"
[[sinks]]
name = "hr"
kind = "webhook"
url = "https://hr.example.com/hooks"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[api]
[[api.clients]]
name = "hris"
token = "a-long-client-token"
profiles = ["offer-letter"]

[[api.sources]]
name = "hr-bus"
kind = "nats"
url = "nats://127.0.0.1:4222"
client = "hris"
stream = "HR"
subject = "hr.agreements"
dead_letter = "hr.agreements.dead"

[[profiles]]
name = "offer-letter"
template_id = "5c1b6f0e-8a4d-4b3e-9f2a-7d6c5b4a3f21"
sinks = ["hr"]
roles.Employee = { name = "/employee/name", email = "/employee/email" }
tabs."Start Date" = "/employee/start_date"
custom_fields."Employee ID" = "/employee/id"
"#;

    /// The key a broken configuration is refused with.
    fn refused(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        let error = crate::config::Settings::from_toml(&GOOD.replacen(from, to, 1)).unwrap_err();
        format!("{}: {error}", error.key())
    }

    #[test]
    fn profiles_clients_and_sources_are_checked_at_load_naming_the_key() {
        let settings = crate::config::Settings::from_toml(GOOD).map_err(|e| e.to_string());
        let settings = settings.as_ref().map(|s| (s.profiles.len(), s.api.clients.len(), s.api.sources.len()));
        assert_eq!(settings, Ok((1, 1, 1)));
        let cases = [
            ("5c1b6f0e-8a4d-4b3e-9f2a-7d6c5b4a3f21", "offer", "profiles[0] (offer-letter).template_id"),
            ("sinks = [\"hr\"]\nroles", "sinks = [\"crm\"]\nroles", "profiles[0] (offer-letter).sinks"),
            ("\"/employee/email\"", "\"employee/email\"", "profiles[0] (offer-letter).roles.Employee.email"),
            ("\"/employee/start_date\"", "\"start\"", "profiles[0] (offer-letter).tabs.Start Date"),
            (
                "\"Employee ID\"",
                "countersign_agreement_id",
                "profiles[0] (offer-letter).custom_fields.countersign_agreement_id",
            ),
            ("profiles = [\"offer-letter\"]", "profiles = [\"nda\"]", "api.clients[0].profiles"),
            ("token = \"a-long-client-token\"", "token = \" \"", "api.clients[0].token"),
            ("client = \"hris\"", "client = \"crm\"", "api.sources[0].client"),
            ("stream = \"HR\"\n", "", "api.sources[0].stream"),
            ("url = \"nats://127.0.0.1:4222\"", "url = \"amqp://127.0.0.1\"", "api.sources[0].url"),
            ("[api]\n", "[api]\nconnect_url = \"countersign.example.com\"\n", "api.connect_url"),
        ];
        for (from, to, key) in cases {
            let refusal = refused(from, to);
            assert!(refusal.starts_with(&format!("{key}: ")), "{from} → {to}: {refusal}");
        }
        let no_roles =
            GOOD.replace("roles.Employee = { name = \"/employee/name\", email = \"/employee/email\" }\n", "");
        let error = crate::config::Settings::from_toml(&no_roles).unwrap_err();
        assert_eq!(error.key(), "profiles[0] (offer-letter).roles");
    }
}
