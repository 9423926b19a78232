//! Settings of the later stages: the rules that turn envelopes into events,
//! how events are built (`[events]`), and how they are delivered
//! (`[delivery]`, the sink options). Rules are checked here, at load time,
//! so a mistake fails start-up and `countersign check` with the rule and the
//! key named, never an envelope at three in the morning.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{ConfigError, Secret, SinkKind, SinkSettings};
use crate::ids::AccountId;

/// `[events]`: the event every envelope gets when no rule matches it, and
/// the document links events carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// Envelopes that no rule matches produce `default_type`; `false` switches that off.
    pub default_event: bool,
    pub default_type: String,
    /// Sinks of the default event; absent means every sink.
    pub default_sinks: Option<Vec<String>>,
    /// Signs the expiring document links in event data; without it, links
    /// need a sink's bearer token.
    pub link_key: Option<Secret>,
    pub link_key_file: Option<std::path::PathBuf>,
    /// How long a signed document link stays valid.
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            default_event: true,
            default_type: "envelope.completed".into(),
            default_sinks: None,
            link_key: None,
            link_key_file: None,
            link_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A duration written the human way (`5m`), inside a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Wait(#[serde(with = "humantime_serde")] pub Duration);

/// `[delivery]`: retries, timeouts and the circuit breaker, for every sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// The wait before each retry; a delivery gets one attempt more than
    /// there are steps, then it is a dead letter. Each wait is jittered by up to ±20 %.
    pub schedule: Vec<Wait>,
    /// Longest wait for one delivery (connect, send, answer or broker ack).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A sink whose every delivery failed for this long is suspended.
    #[serde(with = "humantime_serde")]
    pub suspend_after: Duration,
    /// A suspended sink is tried with one delivery this often.
    #[serde(with = "humantime_serde")]
    pub probe_every: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        // About 27 hours in all, front-loaded like the large webhook senders:
        // a blip is retried within seconds, an outage is waited out for a day.
        let steps = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
        Self {
            schedule: steps.iter().map(|s| Wait(Duration::from_secs(*s))).collect(),
            timeout: Duration::from_secs(10),
            suspend_after: Duration::from_secs(5 * 60),
            probe_every: Duration::from_secs(60),
        }
    }
}

impl DeliverySettings {
    /// Attempts a delivery gets: the first, then one per schedule step.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len()).unwrap_or(u32::MAX - 1).saturating_add(1)
    }
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub name: String,
    pub event_type: String,
    pub sinks: Vec<String>,
    /// Every condition given must hold; no conditions match every envelope.
    #[serde(default, rename = "match")]
    pub matches: MatchSettings,
    /// Event data keys and where their values come from.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchSettings {
    /// The envelope was created from one of these templates.
    pub template_ids: Vec<String>,
    /// Envelope custom field name → pattern its value must match.
    pub custom_fields: BTreeMap<String, String>,
    /// Pattern for the email subject.
    pub subject: Option<String>,
    /// Pattern for the sender's email address.
    pub sender: Option<String>,
    /// The envelope belongs to one of these accounts.
    pub account_ids: Vec<AccountId>,
}

/// Where one event data key comes from: exactly one of `custom_field`,
/// `tab` or `signer`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldSettings {
    /// An envelope custom field, by name.
    pub custom_field: Option<String>,
    /// A tab value, by tab label.
    pub tab: Option<String>,
    /// With `tab`: only tabs of the recipient with this role.
    pub role: Option<String>,
    /// The signer with this role (name, email, role, signed time).
    pub signer: Option<String>,
    /// A missing value flags the envelope for an operator instead of being
    /// listed as missing in the event.
    pub required: bool,
}

/// The name the default event is recorded under; no rule may take it.
pub const DEFAULT_RULE: &str = "default";

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, reason)
}

/// Names that end up in job keys, subjects and routing keys: no spaces,
/// slashes or wildcards.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !text.starts_with('.')
        && !text.ends_with('.')
        && !text.contains("..")
}

pub(super) fn validate_events(events: &EventsSettings, sinks: &[SinkSettings]) -> Result<(), ConfigError> {
    if events.default_event {
        if !is_name(&events.default_type) {
            return Err(invalid(
                "events.default_type",
                "must be letters, digits, '.', '-' or '_' (it becomes a NATS subject and an AMQP routing key)",
            ));
        }
        if let Some(default_sinks) = &events.default_sinks {
            check_sink_names("events.default_sinks", default_sinks, sinks)?;
        }
    }
    if let Some(key) = &events.link_key
        && key.expose().len() < 16
    {
        return Err(invalid("events.link_key", "must be at least 16 characters"));
    }
    if events.link_ttl < Duration::from_secs(60) {
        return Err(invalid("events.link_ttl", "must be at least 1m"));
    }
    Ok(())
}

pub(super) fn validate_delivery(delivery: &DeliverySettings) -> Result<(), ConfigError> {
    if delivery.schedule.iter().any(|w| w.0.is_zero()) {
        return Err(invalid("delivery.schedule", "every wait must be above zero"));
    }
    if delivery.timeout.is_zero() {
        return Err(invalid("delivery.timeout", "must be above zero"));
    }
    if delivery.suspend_after.is_zero() {
        return Err(invalid("delivery.suspend_after", "must be above zero"));
    }
    if delivery.probe_every.is_zero() {
        return Err(invalid("delivery.probe_every", "must be above zero"));
    }
    Ok(())
}

pub(super) fn validate_sink(i: usize, sink: &SinkSettings) -> Result<(), ConfigError> {
    let key = |field: &str| format!("sinks[{i}].{field}");
    if !is_name(&sink.name) {
        return Err(invalid(key("name"), "must be letters, digits, '.', '-' or '_'"));
    }
    let url = url::Url::parse(&sink.url).map_err(|_| invalid(key("url"), "is not a URL"))?;
    let schemes: &[&str] = match sink.kind {
        SinkKind::Webhook => &["http", "https"],
        SinkKind::Nats => &["nats", "tls"],
        SinkKind::Amqp => &["amqp", "amqps"],
        SinkKind::Sqs => &["http", "https"],
    };
    if !schemes.contains(&url.scheme()) || !url.has_host() {
        return Err(invalid(
            key("url"),
            format!("a {} sink needs a {}:// URL", sink.kind.as_str(), schemes.join(":// or ")),
        ));
    }
    let only_for = |field: &str, kind: SinkKind| {
        invalid(key(field), format!("applies to {} sinks only, this one is {}", kind.as_str(), sink.kind.as_str()))
    };
    match sink.kind {
        SinkKind::Webhook => {
            let secrets = sink.signing_secrets();
            if secrets.is_empty() {
                return Err(invalid(key("secret"), "a webhook sink needs a signing secret (whsec_...)"));
            }
            for secret in secrets {
                check_webhook_secret(secret).map_err(|reason| invalid(key("secret"), reason))?;
            }
        }
        SinkKind::Nats | SinkKind::Amqp | SinkKind::Sqs if !sink.secrets.is_empty() => {
            return Err(only_for("secrets", SinkKind::Webhook));
        }
        _ => {}
    }
    if sink.kind == SinkKind::Sqs {
        validate_sqs(&key, sink)?;
    } else if sink.access_key_id.is_some() {
        return Err(only_for("access_key_id", SinkKind::Sqs));
    } else if sink.region.is_some() {
        return Err(only_for("region", SinkKind::Sqs));
    }
    if sink.subject_prefix.is_some() && sink.kind != SinkKind::Nats {
        return Err(only_for("subject_prefix", SinkKind::Nats));
    }
    if let Some(prefix) = &sink.subject_prefix
        && !is_name(prefix)
    {
        return Err(invalid(key("subject_prefix"), "must be letters, digits, '.', '-' or '_' (no wildcards)"));
    }
    if sink.exchange.is_some() && sink.kind != SinkKind::Amqp {
        return Err(only_for("exchange", SinkKind::Amqp));
    }
    if let Some(exchange) = &sink.exchange
        && (exchange.is_empty() || exchange.len() > 127)
    {
        return Err(invalid(key("exchange"), "must be 1 to 127 characters"));
    }
    if sink.timeout.is_some_and(|t| t.is_zero()) {
        return Err(invalid(key("timeout"), "must be above zero"));
    }
    if sink.max_in_flight == Some(0) {
        return Err(invalid(key("max_in_flight"), "must be at least 1"));
    }
    if let Some(token) = &sink.token
        && token.expose().len() < 16
    {
        return Err(invalid(key("token"), "must be at least 16 characters"));
    }
    Ok(())
}

/// An sqs sink: a queue URL, and static credentials whole or not at all.
fn validate_sqs(key: &dyn Fn(&str) -> String, sink: &SinkSettings) -> Result<(), ConfigError> {
    sink.sqs_queue().map_err(|reason| invalid(key("url"), reason))?;
    if let Some(region) = &sink.region
        && !SinkSettings::is_aws_region(region)
    {
        return Err(invalid(key("region"), "must be an AWS region name such as eu-central-1"));
    }
    if let Some(id) = &sink.access_key_id
        && (id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        // It ends up in the Authorization header: letters and digits only, as AWS issues them.
        return Err(invalid(key("access_key_id"), "must be letters and digits (AKIA...)"));
    }
    let secret = sink.secret.as_ref().filter(|s| !s.expose().trim().is_empty());
    match (&sink.access_key_id, secret, &sink.secret) {
        (Some(_), None, _) => Err(invalid(
            key("secret"),
            "access_key_id needs its secret access key (secret or secret_file); leave both out for the AWS credential chain",
        )),
        (None, _, Some(_)) => Err(invalid(
            key("access_key_id"),
            "secret (the secret access key) needs its access_key_id; leave both out for the AWS credential chain",
        )),
        _ => Ok(()),
    }
}

/// Standard Webhooks secrets are `whsec_` and the base64 of 24 to 64 random bytes.
fn check_webhook_secret(secret: &Secret) -> Result<(), String> {
    let Some(encoded) = secret.expose().strip_prefix("whsec_") else {
        return Err("must start with whsec_ (Standard Webhooks)".into());
    };
    let bytes = STANDARD.decode(encoded).map_err(|_| "the part after whsec_ must be base64".to_string())?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!("must hold 24 to 64 random bytes after whsec_, this one holds {}", bytes.len()));
    }
    Ok(())
}

fn check_sink_names(key: &str, names: &[String], sinks: &[SinkSettings]) -> Result<(), ConfigError> {
    for name in names {
        if !sinks.iter().any(|s| &s.name == name) {
            return Err(invalid(key, format!("unknown sink {name:?}")));
        }
    }
    Ok(())
}

pub(super) fn validate_rules(rules: &[RuleSettings], sinks: &[SinkSettings]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let key = |field: &str| format!("rules[{i}].{field}");
        if !is_name(&rule.name) {
            return Err(invalid(key("name"), "must be letters, digits, '.', '-' or '_'"));
        }
        if rule.name == DEFAULT_RULE {
            return Err(invalid(key("name"), "\"default\" is the name of the default event; choose another"));
        }
        if !names.insert(rule.name.as_str()) {
            return Err(invalid(key("name"), format!("{:?} is used twice", rule.name)));
        }
        if !is_name(&rule.event_type) {
            return Err(invalid(
                key("event_type"),
                "must be letters, digits, '.', '-' or '_' (it becomes a NATS subject and an AMQP routing key)",
            ));
        }
        if rule.sinks.is_empty() {
            return Err(invalid(key("sinks"), "must name at least one sink"));
        }
        check_sink_names(&key("sinks"), &rule.sinks, sinks)?;
        let matches = &rule.matches;
        for (j, template) in matches.template_ids.iter().enumerate() {
            uuid::Uuid::try_parse(template)
                .map_err(|_| invalid(format!("rules[{i}].match.template_ids[{j}]"), "must be a GUID"))?;
        }
        for (name, pattern) in &matches.custom_fields {
            if name.trim().is_empty() {
                return Err(invalid(key("match.custom_fields"), "a custom field name is empty"));
            }
            if pattern.is_empty() {
                return Err(invalid(format!("rules[{i}].match.custom_fields.{name}"), "the pattern is empty"));
            }
        }
        for (field, pattern) in [("subject", &matches.subject), ("sender", &matches.sender)] {
            if pattern.as_ref().is_some_and(|p| p.is_empty()) {
                return Err(invalid(key(&format!("match.{field}")), "the pattern is empty"));
            }
        }
        for (name, field) in &rule.fields {
            let field_key = format!("rules[{i}].fields.{name}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid(field_key, "a data key is letters, digits and '_'"));
            }
            let sources = [&field.custom_field, &field.tab, &field.signer].iter().filter(|s| s.is_some()).count();
            if sources != 1 {
                return Err(invalid(field_key, "give exactly one of custom_field, tab or signer"));
            }
            if field.role.is_some() && field.tab.is_none() {
                return Err(invalid(field_key, "role goes with tab (for a whole signer, use signer = \"ROLE\")"));
            }
            let empty = [&field.custom_field, &field.tab, &field.signer, &field.role]
                .iter()
                .any(|s| s.as_ref().is_some_and(|s| s.trim().is_empty()));
            if empty {
                return Err(invalid(field_key, "names must not be empty"));
            }
        }
    }
    Ok(())
}

impl SinkSettings {
    /// Every secret a webhook is signed with: `secret` first, then `secrets`.
    pub fn signing_secrets(&self) -> Vec<&Secret> {
        self.secret.iter().chain(self.secrets.iter()).collect()
    }
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Nats => "nats",
            Self::Amqp => "amqp",
            Self::Sqs => "sqs",
        }
    }
}
