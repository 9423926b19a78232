//! Rules → events: what a completed envelope becomes for the IT systems.
//!
//! [`Planner::plan`] is pure: from the envelope and its stored documents it
//! decides which events exist, their CloudEvents bodies, which sinks get
//! each, and whether an operator must look at the envelope. Writing the plan
//! (the outbox) is the pipeline's: `pipeline::write_outbox`.
//!
//! Event ids are UUIDv5 of (envelope, rule), so processing an envelope again
//! plans the very same ids and the inserts find them already there.

pub mod agreement;
pub mod cloudevent;
pub mod documents;
pub mod links;
mod rules;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{DEFAULT_RULE, Settings};
use crate::domain::ConnectNotification;
use crate::ids::{EnvelopeId, EventId};
use crate::store::{DocumentRecord, EventRecord};

pub use cloudevent::CLOUDEVENTS_JSON;
pub use links::{DocumentLinks, LinkError};
use rules::Rule;

/// The UUIDv5 namespace of event ids. Changing it would give every
/// envelope's events new ids, so it never changes.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x8d1b79d0_0952_4f1b_b9fd_3169229aa368);

/// The id of the event `rule` makes of `envelope`: the same on every run.
pub fn event_id(envelope: EnvelopeId, rule: &str) -> EventId {
    EventId(Uuid::new_v5(&EVENT_NAMESPACE, format!("{envelope}/{rule}").as_bytes()))
}

/// Turns envelopes into events by the configured rules.
#[derive(Debug, Clone)]
pub struct Planner {
    rules: Vec<Rule>,
    /// Event type and sinks of the event for envelopes no rule matches.
    default: Option<(String, Vec<String>)>,
    links: DocumentLinks,
    max_attempts: u32,
}

/// What one envelope becomes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub envelope_id: EnvelopeId,
    /// In creation order: each sink receives them in this order.
    pub events: Vec<PlannedEvent>,
    /// Why an operator must look at the envelope (a required field is
    /// missing); empty when nothing is wrong. Each names the rule.
    pub flags: Vec<String>,
    /// No rule matched and the default event is off: the envelope yields no
    /// event, by the operator's choice. Worth a log line.
    pub unmatched: bool,
    /// Attempts each delivery gets (`delivery.schedule` + 1).
    pub max_attempts: u32,
    /// The rules that matched, in order, whether or not they made an event.
    pub matched: Vec<String>,
}

impl Plan {
    /// The envelope should be marked flagged rather than processed.
    pub fn needs_operator(&self) -> bool {
        !self.flags.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct PlannedEvent {
    pub event: EventRecord,
    pub sinks: Vec<String>,
}

impl Planner {
    /// Built from settings that passed `Settings::validate`.
    pub fn from_settings(settings: &Settings) -> Result<Self, crate::config::ConfigError> {
        let rules = settings.rules.iter().map(Rule::compile).collect();
        let default = settings.events.default_event.then(|| {
            let sinks = match &settings.events.default_sinks {
                Some(sinks) => sinks.clone(),
                None => settings.sinks.iter().map(|s| s.name.clone()).collect(),
            };
            (settings.events.default_type.clone(), sinks)
        });
        Ok(Self {
            rules,
            default,
            links: DocumentLinks::from_settings(settings)?,
            max_attempts: settings.delivery.max_attempts(),
        })
    }

    /// Some rule matches on template ids, which no notification carries:
    /// the caller asks DocuSign for the envelope's templates first.
    pub fn needs_templates(&self) -> bool {
        self.rules.iter().any(Rule::uses_templates)
    }

    /// Whether planning the envelope of `notification` needs more than it carries: a rule it
    /// matches finds fields by role, and its signers came without role
    /// names (a legacy XML notification). The caller fetches the envelope
    /// from DocuSign first.
    pub fn needs_roles(&self, notification: &ConnectNotification, templates: &[String]) -> bool {
        let roles_missing = notification.envelope.recipients.iter().any(|r| rules::is_signer(r) && r.role.is_none());
        roles_missing
            && self.rules.iter().any(|rule| rule.uses_roles() && rule.matches(&notification.envelope, templates))
    }

    /// The events the envelope of `notification` becomes. `documents` are its stored documents
    /// (they are listed in every event, with their URLs); `templates` the ids
    /// of the templates it was created from, as far as they are known (rules
    /// matching on templates match nothing without them); `now` is the
    /// creation time of the events and starts their links' validity.
    ///
    /// A rule whose required field is missing makes no event and adds a
    /// flag instead. An envelope no rule matches gets the default event
    /// unless it is switched off ([`Plan::unmatched`]).
    pub fn plan(
        &self,
        notification: &ConnectNotification,
        documents: &[DocumentRecord],
        templates: &[String],
        now: DateTime<Utc>,
    ) -> Plan {
        let mut plan = Plan {
            envelope_id: notification.envelope.envelope_id,
            events: Vec::new(),
            flags: Vec::new(),
            unmatched: false,
            max_attempts: self.max_attempts,
            matched: Vec::new(),
        };
        let matched: Vec<&Rule> = self.rules.iter().filter(|r| r.matches(&notification.envelope, templates)).collect();
        plan.matched = matched.iter().map(|r| r.name.clone()).collect();
        for rule in &matched {
            let extracted = rule.extract(&notification.envelope);
            if !extracted.required_missing.is_empty() {
                plan.flags.extend(extracted.required_missing);
                continue;
            }
            let event =
                self.event(notification, documents, &rule.name, &rule.event_type, extracted, plan.events.len(), now);
            plan.events.push(PlannedEvent { event, sinks: rule.sinks.clone() });
        }
        if matched.is_empty() {
            match &self.default {
                // Recorded even with no sink to deliver it to, so the event exists once sinks do.
                Some((event_type, sinks)) => {
                    let none = rules::Extracted::default();
                    let event = self.event(notification, documents, DEFAULT_RULE, event_type, none, 0, now);
                    plan.events.push(PlannedEvent { event, sinks: sinks.clone() });
                }
                None => plan.unmatched = true,
            }
        }
        plan
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        notification: &ConnectNotification,
        documents: &[DocumentRecord],
        rule: &str,
        event_type: &str,
        extracted: rules::Extracted,
        ordinal: usize,
        now: DateTime<Utc>,
    ) -> EventRecord {
        let id = event_id(notification.envelope.envelope_id, rule);
        let parts = cloudevent::Parts {
            id,
            event_type,
            rule,
            fields: extracted.values,
            missing: extracted.missing,
            links: &self.links,
            now,
        };
        EventRecord {
            id,
            envelope_id: Some(notification.envelope.envelope_id),
            agreement_id: None,
            rule: rule.to_string(),
            event_type: event_type.to_string(),
            body: cloudevent::build(notification, documents, parts),
            created_at: now,
            ordinal: u32::try_from(ordinal).unwrap_or(u32::MAX),
        }
    }
}
