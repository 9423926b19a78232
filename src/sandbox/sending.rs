//! Sending from templates (`docs/DOCUSIGN.md` §6): the envelope definition
//! of `POST …/envelopes`, checked as DocuSign checks it, and what happens to
//! the envelope afterwards (signing, declining, voiding). Each step yields
//! the Connect events it causes, with the envelope as it stood right after.
//!
//! DocuSign takes scalars as JSON strings or as their native type (`"1"` and
//! `1`, `"true"` and `true`) and ignores properties it does not know; so does
//! the sandbox.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::connect::ConnectFormat;
use super::envelopes::{
    Document, Envelope, EnvelopeStatus, FieldFlags, ListCustomField, Person, Signer, Tab, Template, TemplateRole,
};
use crate::ids::{AccountId, EnvelopeId, UserId};

/// DocuSign's cap on an envelope custom field's value.
const MAX_FIELD_VALUE: usize = 100;
/// DocuSign's cap on a recipient's name and email.
const MAX_RECIPIENT_TEXT: usize = 100;

/// The events a Connect listener gets when it names none: every change of
/// the envelope's status and each signer's completion or decline.
pub const DEFAULT_EVENTS: &[&str] = &[
    "envelope-sent",
    "envelope-delivered",
    "envelope-completed",
    "envelope-declined",
    "envelope-voided",
    "recipient-completed",
    "recipient-declined",
];

/// A refusal of the REST API: HTTP 400 with DocuSign's error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_code}: {message}")]
pub struct RestError {
    pub error_code: String,
    pub message: String,
}

impl RestError {
    pub fn new(error_code: &str, message: impl Into<String>) -> Self {
        Self { error_code: error_code.to_string(), message: message.into() }
    }

    fn parameter(detail: impl std::fmt::Display) -> Self {
        Self::new(
            "INVALID_REQUEST_PARAMETER",
            format!("The request contained at least one invalid parameter. {detail}"),
        )
    }

    fn body(detail: impl std::fmt::Display) -> Self {
        Self::new("INVALID_REQUEST_BODY", format!("The request body is missing or improperly formatted. {detail}"))
    }

    pub fn template_invalid() -> Self {
        Self::new("TEMPLATE_ID_INVALID", "Invalid template ID.")
    }

    fn incomplete() -> Self {
        Self::new(
            "ENVELOPE_IS_INCOMPLETE",
            "The Envelope is not Complete. A Complete Envelope Requires Documents, Recipients, Tabs, and a Subject Line.",
        )
    }
}

/// Why a signer, a decliner or the sender could not act on an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("the sandbox has no envelope {0}")]
    UnknownEnvelope(EnvelopeId),
    #[error("envelope {envelope_id} is {status}: only a sent or delivered envelope can be signed, declined or voided")]
    NotInProcess { envelope_id: EnvelopeId, status: EnvelopeStatus },
    #[error("envelope {envelope_id} has no signer with recipient id {recipient_id:?}")]
    UnknownRecipient { envelope_id: EnvelopeId, recipient_id: String },
    #[error("recipient {recipient_id} of envelope {envelope_id} is {status}, not one the envelope is with now")]
    RecipientNotActive { envelope_id: EnvelopeId, recipient_id: String, status: EnvelopeStatus },
    #[error("{label:?} is not a tab of a signer who signs now")]
    UnknownTab { label: String },
}

/// Where an envelope's own `eventNotification` sends its events, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Subscription {
    pub url: String,
    /// JSON SIM event names; empty means [`DEFAULT_EVENTS`].
    pub events: Vec<String>,
    /// `includeHMAC`: sign with the account's Connect keys.
    pub sign: bool,
    /// `requireAcknowledgment`: retry what the listener does not acknowledge.
    pub require_acknowledgment: bool,
    pub format: ConnectFormat,
    pub include_documents: bool,
}

impl Subscription {
    pub fn wants(&self, event: &str) -> bool {
        if self.events.is_empty() { DEFAULT_EVENTS.contains(&event) } else { self.events.iter().any(|e| e == event) }
    }
}

/// One recipient of `templateRoles`, matched to its role.
#[derive(Debug, Clone)]
struct RoleRequest {
    role: TemplateRole,
    name: String,
    email: String,
    routing_order: u32,
    client_user_id: Option<String>,
    /// Tab label → value, for tabs of the role's template whose type matched.
    prefill: BTreeMap<String, String>,
}

/// A checked envelope definition, ready to become an envelope.
#[derive(Debug, Clone)]
pub(super) struct Definition {
    template: Template,
    pub send: bool,
    roles: Vec<RoleRequest>,
    email_subject: Option<String>,
    email_blurb: Option<String>,
    text_fields: Vec<(String, String)>,
    list_fields: Vec<ListCustomField>,
    flags: BTreeMap<String, FieldFlags>,
    pub subscription: Option<Subscription>,
}

/// A scalar as DocuSign reads one: strings, numbers and booleans all as text.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn truthy(value: Option<&Value>) -> bool {
    text(value).is_some_and(|t| t.trim().eq_ignore_ascii_case("true"))
}

/// The array at `key`, which must be one when present; `null` is absent.
fn array<'a>(object: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], RestError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(RestError::body(format!("'{path}{key}' must be an array."))),
    }
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, RestError> {
    value.as_object().ok_or_else(|| RestError::body(format!("'{path}' must be an object.")))
}

/// An address DocuSign would deliver to: one `@`, a dotted domain, no spaces.
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else { return false };
    email.chars().count() <= MAX_RECIPIENT_TEXT
        && !local.is_empty()
        && !local.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
        && domain.contains('.')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.')
}

/// Reads and checks a `POST …/envelopes` body.
pub(super) fn parse(body: &[u8]) -> Result<Definition, RestError> {
    let value: Value = serde_json::from_slice(body).map_err(RestError::body)?;
    let root = object(&value, "envelopeDefinition")?;

    let send = match text(root.get("status")).map(|s| s.trim().to_ascii_lowercase()) {
        None => false,
        Some(status) if status == "sent" => true,
        Some(status) if status == "created" => false,
        Some(status) => {
            return Err(RestError::parameter(format!(
                "Value for 'status' must be 'created' or 'sent', not '{status}'."
            )));
        }
    };

    let Some(template_id) = text(root.get("templateId")) else {
        if ["documents", "compositeTemplates"].iter().any(|k| root.get(*k).is_some_and(|v| !v.is_null())) {
            return Err(RestError::parameter(
                "The sandbox creates envelopes from a templateId only, not from documents or compositeTemplates.",
            ));
        }
        return Err(RestError::incomplete());
    };
    let template = super::envelopes::template(&template_id).ok_or_else(RestError::template_invalid)?;

    let roles = template_roles(root, &template)?;
    if template.roles.iter().any(|r| r.required && !roles.iter().any(|given| given.role.role_name == r.role_name)) {
        return Err(RestError::incomplete());
    }

    let (text_fields, list_fields, flags) = custom_fields(root)?;
    let subscription = match root.get("eventNotification") {
        None | Some(Value::Null) => None,
        Some(value) => Some(subscription(object(value, "eventNotification")?)?),
    };
    Ok(Definition {
        template,
        send,
        roles,
        email_subject: text(root.get("emailSubject")).filter(|s| !s.trim().is_empty()),
        email_blurb: text(root.get("emailBlurb")),
        text_fields,
        list_fields,
        flags,
        subscription,
    })
}

fn template_roles(root: &Map<String, Value>, template: &Template) -> Result<Vec<RoleRequest>, RestError> {
    let mut roles: Vec<RoleRequest> = Vec::new();
    for (index, item) in array(root, "templateRoles", "")?.iter().enumerate() {
        let path = format!("templateRoles[{index}]");
        let fields = object(item, &path)?;
        let Some(role_name) = text(fields.get("roleName")) else {
            return Err(RestError::parameter(format!("'{path}.roleName' is required.")));
        };
        // Role names match exactly, case included, as DocuSign matches them.
        let Some(role) = template.role(&role_name) else {
            return Err(RestError::parameter(format!(
                "The role name '{role_name}' is not a role of template {} ({}).",
                template.template_id, template.name
            )));
        };
        if roles.iter().any(|r| r.role.role_name == role_name) {
            return Err(RestError::parameter(format!("The role name '{role_name}' appears more than once.")));
        }
        let recipient = &role.recipient_id;
        let name = text(fields.get("name")).unwrap_or_default();
        if name.trim().is_empty() || name.chars().count() > MAX_RECIPIENT_TEXT {
            return Err(RestError::new(
                "INVALID_USERNAME_FOR_RECIPIENT",
                format!(
                    "The user name for the recipient is invalid. The recipient Id follows. Recipient Id: {recipient}"
                ),
            ));
        }
        let email = text(fields.get("email")).unwrap_or_default();
        if !is_valid_email(&email) {
            return Err(RestError::new(
                "INVALID_EMAIL_ADDRESS_FOR_RECIPIENT",
                format!(
                    "The email address for the recipient is invalid. The recipient Id follows. Recipient Id: {recipient}"
                ),
            ));
        }
        let routing_order = match text(fields.get("routingOrder")) {
            None => role.routing_order,
            Some(order) => order.trim().parse::<u32>().ok().filter(|o| (1..=999).contains(o)).ok_or_else(|| {
                RestError::parameter(format!("'{path}.routingOrder' must be a whole number from 1 to 999."))
            })?,
        };
        let client_user_id = text(fields.get("clientUserId")).filter(|c| !c.is_empty());
        if client_user_id.as_ref().is_some_and(|c| c.chars().count() > MAX_RECIPIENT_TEXT) {
            return Err(RestError::parameter(format!("'{path}.clientUserId' is longer than 100 characters.")));
        }
        let prefill = match fields.get("tabs") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(tabs) => prefilled(object(tabs, &format!("{path}.tabs"))?, role, &path)?,
        };
        roles.push(RoleRequest { role: role.clone(), name, email, routing_order, client_user_id, prefill });
    }
    Ok(roles)
}

/// The values a request gives the role's template tabs: matched by label
/// within the list of the tab's own type (`textTabs` fill text tabs,
/// `dateTabs` date tabs). Entries matching no tab are ignored, as DocuSign
/// ignores them.
fn prefilled(
    tabs: &Map<String, Value>,
    role: &TemplateRole,
    path: &str,
) -> Result<BTreeMap<String, String>, RestError> {
    let mut values = BTreeMap::new();
    for (key, tab_type) in [("textTabs", "text"), ("dateTabs", "date")] {
        for item in array(tabs, key, &format!("{path}.tabs."))? {
            let Some(fields) = item.as_object() else { continue };
            let (Some(label), Some(value)) = (text(fields.get("tabLabel")), text(fields.get("value"))) else {
                continue;
            };
            if role.tabs.iter().any(|t| t.label == label && t.tab_type == tab_type) {
                values.insert(label, value);
            }
        }
    }
    Ok(values)
}

type Fields = (Vec<(String, String)>, Vec<ListCustomField>, BTreeMap<String, FieldFlags>);

fn custom_fields(root: &Map<String, Value>) -> Result<Fields, RestError> {
    let mut text_fields = Vec::new();
    let mut list_fields = Vec::new();
    let mut flags = BTreeMap::new();
    let Some(value) = root.get("customFields").filter(|v| !v.is_null()) else {
        return Ok((text_fields, list_fields, flags));
    };
    let fields = object(value, "customFields")?;
    let mut names = HashSet::new();
    for key in ["textCustomFields", "listCustomFields"] {
        for (index, item) in array(fields, key, "customFields.")?.iter().enumerate() {
            let field = object(item, &format!("customFields.{key}[{index}]"))?;
            let name = text(field.get("name")).unwrap_or_default();
            if name.trim().is_empty() {
                return Err(RestError::parameter(format!("'customFields.{key}[{index}].name' is required.")));
            }
            // DocuSign requires every custom field of an envelope to have its own name.
            if !names.insert(name.clone()) {
                return Err(RestError::parameter(format!("The custom field name '{name}' is used more than once.")));
            }
            let value = text(field.get("value")).unwrap_or_default();
            if value.chars().count() > MAX_FIELD_VALUE {
                return Err(RestError::parameter(format!(
                    "The value of custom field '{name}' is longer than {MAX_FIELD_VALUE} characters."
                )));
            }
            flags.insert(
                name.clone(),
                FieldFlags { show: truthy(field.get("show")), required: truthy(field.get("required")) },
            );
            if key == "textCustomFields" {
                text_fields.push((name, value));
            } else {
                let items = array(field, "listItems", "listCustomFields[].")?.iter().filter_map(|v| text(Some(v)));
                list_fields.push(ListCustomField { name, value, items: items.collect() });
            }
        }
    }
    Ok((text_fields, list_fields, flags))
}

/// Legacy `envelopeEvents` / `recipientEvents` status codes as JSON SIM events.
fn legacy_event(prefix: &str, code: &str) -> String {
    format!("{prefix}-{}", code.trim().to_ascii_lowercase())
}

fn subscription(notification: &Map<String, Value>) -> Result<Subscription, RestError> {
    let url = text(notification.get("url")).unwrap_or_default();
    let parsed = url::Url::parse(&url).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if parsed.is_none() {
        return Err(RestError::parameter("'eventNotification.url' must be an http:// or https:// URL."));
    }
    let mut events: Vec<String> =
        array(notification, "events", "eventNotification.")?.iter().filter_map(|e| text(Some(e))).collect();
    for (key, code, prefix) in [
        ("envelopeEvents", "envelopeEventStatusCode", "envelope"),
        ("recipientEvents", "recipientEventStatusCode", "recipient"),
    ] {
        for item in array(notification, key, "eventNotification.")? {
            if let Some(status) = item.as_object().and_then(|o| text(o.get(code))) {
                events.push(legacy_event(prefix, &status));
            }
        }
    }
    let event_data = notification.get("eventData").and_then(Value::as_object);
    // Without eventData an envelope's own notifications come as legacy XML.
    let format = match event_data.and_then(|d| text(d.get("format"))) {
        Some(format) if format.eq_ignore_ascii_case("json") => ConnectFormat::Json,
        Some(_) => ConnectFormat::Xml,
        None if event_data.is_some() => ConnectFormat::Json,
        None => ConnectFormat::Xml,
    };
    let include_data: Vec<String> = match event_data {
        Some(data) => {
            array(data, "includeData", "eventNotification.eventData.")?.iter().filter_map(|v| text(Some(v))).collect()
        }
        None => Vec::new(),
    };
    Ok(Subscription {
        url,
        events,
        sign: truthy(notification.get("includeHMAC")),
        require_acknowledgment: truthy(notification.get("requireAcknowledgment")),
        format,
        include_documents: truthy(notification.get("includeDocuments"))
            || include_data.iter().any(|d| d == "documents"),
    })
}

/// Who an envelope comes from and how big its documents are.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub account_id: AccountId,
    pub sender: Person,
    pub document_bytes: usize,
}

fn guid() -> Uuid {
    Uuid::new_v4()
}

impl Definition {
    /// The envelope this definition creates at `now`: a draft, sent by [`send`] when asked.
    pub fn envelope(&self, origin: &Origin, now: DateTime<Utc>) -> Envelope {
        let mut roles: Vec<&RoleRequest> = self.roles.iter().collect();
        roles.sort_by_key(|r| (r.routing_order, r.role.routing_order));
        let signers = roles
            .iter()
            .map(|request| Signer {
                recipient_id: request.role.recipient_id.clone(),
                recipient_id_guid: guid(),
                person: Person {
                    user_id: UserId::from_uuid(guid()),
                    name: request.name.clone(),
                    email: request.email.clone(),
                },
                role_name: request.role.role_name.clone(),
                routing_order: request.routing_order,
                sent_at: now,
                delivered_at: now,
                signed_at: now,
                ip_address: format!("203.0.113.{}", 1 + guid().as_bytes()[0] % 254),
                tabs: request
                    .role
                    .tabs
                    .iter()
                    .map(|tab| Tab {
                        label: tab.label.clone(),
                        value: request.prefill.get(&tab.label).cloned().unwrap_or_default(),
                        tab_type: tab.tab_type.clone(),
                        document_id: tab.document_id.clone(),
                        page: tab.page,
                        required: tab.required,
                    })
                    .collect(),
                status: EnvelopeStatus::Created,
                declined_reason: None,
                client_user_id: request.client_user_id.clone(),
            })
            .collect();
        let subject = self.email_subject.clone().unwrap_or_else(|| {
            self.roles.iter().fold(self.template.email_subject.clone(), |subject, r| {
                let role = &r.role.role_name;
                subject
                    .replace(&format!("[[{role}_UserName]]"), &r.name)
                    .replace(&format!("[[{role}_Email]]"), &r.email)
            })
        });
        let documents = self
            .template
            .documents
            .iter()
            .map(|d| Document {
                document_id: d.document_id.clone(),
                document_id_guid: guid(),
                name: d.name.clone(),
                pages: d.pages,
                target_bytes: origin.document_bytes,
            })
            .collect();
        Envelope {
            account_id: origin.account_id,
            envelope_id: EnvelopeId::from_uuid(guid()),
            template_id: self.template.template_id,
            subject,
            sender: origin.sender.clone(),
            signers,
            carbon_copies: Vec::new(),
            custom_fields: self.text_fields.clone(),
            documents,
            created_at: now,
            sent_at: now,
            completed_at: now,
            state: EnvelopeStatus::Created,
            voided_at: None,
            voided_reason: None,
            email_blurb: self.email_blurb.clone(),
            custom_field_flags: self.flags.clone(),
            list_custom_fields: self.list_fields.clone(),
        }
    }
}

/// A Connect event and the envelope as it stood right after it.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub name: &'static str,
    pub recipient_id: Option<String>,
    pub envelope: Envelope,
}

/// Hands out distinct, increasing times within one call, so that the steps
/// of one call keep their order on the envelope's timeline.
struct Clock(DateTime<Utc>);

impl Clock {
    fn tick(&mut self) -> DateTime<Utc> {
        self.0 += Duration::microseconds(1);
        self.0
    }
}

struct Steps {
    events: Vec<Event>,
    clock: Clock,
}

impl Steps {
    fn new(now: DateTime<Utc>) -> Self {
        Self { events: Vec::new(), clock: Clock(now) }
    }

    fn record(&mut self, name: &'static str, recipient_id: Option<&str>, envelope: &Envelope) {
        self.events.push(Event { name, recipient_id: recipient_id.map(str::to_string), envelope: envelope.clone() });
    }
}

/// Sends a draft: the signers of the first routing order get it.
pub(super) fn send(envelope: &mut Envelope, now: DateTime<Utc>) -> Vec<Event> {
    let mut steps = Steps::new(now);
    let at = steps.clock.tick();
    envelope.state = EnvelopeStatus::Sent;
    envelope.sent_at = at;
    route_next(envelope, &mut steps);
    // The first signers have it by the time Connect reports the envelope sent.
    let sent = Event { name: "envelope-sent", recipient_id: None, envelope: envelope.clone() };
    steps.events.insert(0, sent);
    steps.events
}

/// Sends the envelope on to the signers of the next routing order, once
/// every signer before them has signed.
fn route_next(envelope: &mut Envelope, steps: &mut Steps) {
    let waiting = |s: &Signer| s.status == EnvelopeStatus::Created;
    if envelope.signers.iter().any(Signer::is_active) {
        return;
    }
    let Some(order) = envelope.signers.iter().filter(|s| waiting(s)).map(|s| s.routing_order).min() else {
        return;
    };
    let at = steps.clock.tick();
    let mut sent = Vec::new();
    for signer in
        envelope.signers.iter_mut().filter(|s| s.status == EnvelopeStatus::Created && s.routing_order == order)
    {
        signer.status = EnvelopeStatus::Sent;
        signer.sent_at = at;
        sent.push(signer.recipient_id.clone());
    }
    for recipient in sent {
        steps.record("recipient-sent", Some(&recipient), envelope);
    }
}

fn in_process(envelope: &Envelope) -> Result<(), LifecycleError> {
    if envelope.state.is_in_process() {
        Ok(())
    } else {
        Err(LifecycleError::NotInProcess { envelope_id: envelope.envelope_id, status: envelope.state })
    }
}

/// The active signer `recipient_id` names, or the first active one.
fn actor(envelope: &Envelope, recipient_id: Option<&str>) -> Result<usize, LifecycleError> {
    let envelope_id = envelope.envelope_id;
    match recipient_id {
        Some(id) => {
            let index = envelope
                .signers
                .iter()
                .position(|s| s.recipient_id == id)
                .ok_or_else(|| LifecycleError::UnknownRecipient { envelope_id, recipient_id: id.to_string() })?;
            let status = envelope.signers[index].status;
            if !status.is_in_process() {
                return Err(LifecycleError::RecipientNotActive { envelope_id, recipient_id: id.to_string(), status });
            }
            Ok(index)
        }
        None => {
            let active = envelope.signers.iter().enumerate().filter(|(_, s)| s.is_active());
            // In process, someone always has the envelope; the routing order breaks ties.
            active
                .min_by_key(|(_, s)| s.routing_order)
                .map(|(i, _)| i)
                .ok_or(LifecycleError::NotInProcess { envelope_id, status: envelope.state })
        }
    }
}

/// The signer opens the envelope, if they had not yet; the envelope counts
/// as delivered from its first opening, as the generated timelines have it.
fn open(envelope: &mut Envelope, index: usize, steps: &mut Steps) {
    if envelope.signers[index].status != EnvelopeStatus::Sent {
        return;
    }
    let at = steps.clock.tick();
    let signer = &mut envelope.signers[index];
    signer.status = EnvelopeStatus::Delivered;
    signer.delivered_at = at;
    let recipient = signer.recipient_id.clone();
    steps.record("recipient-delivered", Some(&recipient), envelope);
    if envelope.state == EnvelopeStatus::Sent {
        envelope.state = EnvelopeStatus::Delivered;
        steps.record("envelope-delivered", None, envelope);
    }
}

/// What a signer types into a required tab nobody prefilled.
fn entered_value(label: &str, person: &Person, now: DateTime<Utc>) -> String {
    let name = person.name.trim();
    let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    let company = || {
        let domain = person.email.rsplit_once('@').map_or("", |(_, d)| d);
        let word = domain.split('.').next().unwrap_or(domain);
        let mut chars = word.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_else(|| "Counterparty".into())
    };
    match label {
        "first_name" => first.to_string(),
        "last_name" => last.to_string(),
        label if label.ends_with("date") => (now + Duration::days(14)).format("%Y-%m-%d").to_string(),
        "job_title" => "Software Engineer".into(),
        "signatory_title" => "Director".into(),
        "laptop_model" => "Framework 13".into(),
        "company_name" => company(),
        "monitor_count" => "1".into(),
        "delivery_address" => "1 Main St, Springfield".into(),
        _ => "Entered by the signer".into(),
    }
}

/// One signer opens the envelope if they had not, fills in their tabs and signs.
fn sign_one(envelope: &mut Envelope, index: usize, values: &BTreeMap<String, String>, steps: &mut Steps) {
    open(envelope, index, steps);
    let at = steps.clock.tick();
    let signer = &mut envelope.signers[index];
    let person = signer.person.clone();
    for tab in &mut signer.tabs {
        if let Some(value) = values.get(&tab.label) {
            tab.value.clone_from(value);
        } else if tab.required && tab.value.is_empty() {
            tab.value = entered_value(&tab.label, &person, at);
        }
    }
    signer.status = EnvelopeStatus::Completed;
    signer.signed_at = at;
    let recipient = signer.recipient_id.clone();
    if envelope.signers.iter().all(|s| s.status == EnvelopeStatus::Completed) {
        envelope.state = EnvelopeStatus::Completed;
        envelope.completed_at = at;
        steps.record("recipient-completed", Some(&recipient), envelope);
        steps.record("envelope-completed", None, envelope);
    } else {
        steps.record("recipient-completed", Some(&recipient), envelope);
        route_next(envelope, steps);
    }
}

/// Signers sign: the one `recipient_id` names, or every signer still to sign,
/// in routing order. `values` are what they type into their tabs, by label;
/// required tabs left empty get a plausible value. The last signature
/// completes the envelope.
pub(super) fn sign(
    envelope: &mut Envelope,
    recipient_id: Option<&str>,
    values: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, LifecycleError> {
    in_process(envelope)?;
    let named = match recipient_id {
        Some(id) => Some(actor(envelope, Some(id))?),
        None => None,
    };
    let signing: Vec<usize> = match named {
        Some(index) => vec![index],
        None => {
            (0..envelope.signers.len()).filter(|i| envelope.signers[*i].status != EnvelopeStatus::Completed).collect()
        }
    };
    let has_tab = |label: &String| signing.iter().any(|i| envelope.signers[*i].tabs.iter().any(|t| &t.label == label));
    if let Some(label) = values.keys().find(|label| !has_tab(label)) {
        return Err(LifecycleError::UnknownTab { label: label.clone() });
    }
    let mut steps = Steps::new(now);
    match named {
        Some(index) => sign_one(envelope, index, values, &mut steps),
        None => {
            // Each round completes one signer, so this many rounds always suffice.
            for _ in 0..envelope.signers.len() {
                let Ok(index) = actor(envelope, None) else { break };
                if !envelope.state.is_in_process() {
                    break;
                }
                sign_one(envelope, index, values, &mut steps);
            }
        }
    }
    Ok(steps.events)
}

/// A signer the envelope is with declines it, which ends it.
pub(super) fn decline(
    envelope: &mut Envelope,
    recipient_id: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, LifecycleError> {
    in_process(envelope)?;
    let index = actor(envelope, recipient_id)?;
    let mut steps = Steps::new(now);
    // A recipient declines from the signing page, so they have opened it.
    if envelope.signers[index].status == EnvelopeStatus::Sent {
        let at = steps.clock.tick();
        let signer = &mut envelope.signers[index];
        signer.status = EnvelopeStatus::Delivered;
        signer.delivered_at = at;
        let recipient = signer.recipient_id.clone();
        steps.record("recipient-delivered", Some(&recipient), envelope);
    }
    let at = steps.clock.tick();
    let signer = &mut envelope.signers[index];
    signer.status = EnvelopeStatus::Declined;
    signer.signed_at = at;
    signer.declined_reason = Some(reason.to_string());
    let recipient = signer.recipient_id.clone();
    envelope.state = EnvelopeStatus::Declined;
    steps.record("recipient-declined", Some(&recipient), envelope);
    steps.record("envelope-declined", None, envelope);
    Ok(steps.events)
}

/// The sender voids an envelope in process; drafts and finished envelopes cannot be.
pub(super) fn void(envelope: &mut Envelope, reason: &str, now: DateTime<Utc>) -> Result<Vec<Event>, LifecycleError> {
    in_process(envelope)?;
    let mut steps = Steps::new(now);
    envelope.state = EnvelopeStatus::Voided;
    envelope.voided_at = Some(steps.clock.tick());
    envelope.voided_reason = Some(reason.to_string());
    steps.record("envelope-voided", None, envelope);
    Ok(steps.events)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sandbox::connect::{NotificationOptions, json_sim_body, xml_body};
    use crate::sandbox::envelopes::{EQUIPMENT_TEMPLATE, ONBOARDING_TEMPLATE};
    use crate::sandbox::json::{Include, envelope_json};

    fn origin() -> Origin {
        Origin {
            account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
            sender: Person {
                user_id: UserId::parse("4c0f6a7e-2b3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap(),
                name: "Sam Sender".into(),
                email: "sam@example.com".into(),
            },
            document_bytes: 2_000,
        }
    }

    fn equipment() -> Value {
        json!({
            "templateId": EQUIPMENT_TEMPLATE.to_uppercase(),
            "status": "sent",
            "templateRoles": [
                { "roleName": "IT Approver", "name": "Ian Approver", "email": "ian@example.com", "routingOrder": 2 },
                {
                    "roleName": "Employee", "name": "Ada Lovelace", "email": "ada@example.com", "clientUserId": "1001",
                    "tabs": { "textTabs": [{ "tabLabel": "delivery_address", "value": 12 }] },
                },
            ],
            "customFields": {
                "textCustomFields": [{ "name": "countersign_agreement_id", "value": "a-1", "show": false }],
                "listCustomFields": [{ "name": "site", "value": "Berlin", "listItems": ["Berlin", "Lyon"], "show": "true" }],
            },
            "eventNotification": {
                "url": "http://127.0.0.1:9/connect", "includeHMAC": true,
                "envelopeEvents": [{ "envelopeEventStatusCode": "Completed" }],
                "recipientEvents": [{ "recipientEventStatusCode": "Declined" }],
            },
        })
    }

    fn parsed(value: &Value) -> Result<Definition, RestError> {
        parse(&serde_json::to_vec(value).unwrap())
    }

    fn sent(value: &Value) -> (Envelope, Vec<Event>) {
        let definition = parsed(value).unwrap();
        let mut envelope = definition.envelope(&origin(), Utc::now());
        let events = send(&mut envelope, Utc::now());
        (envelope, events)
    }

    fn names(events: &[Event]) -> Vec<(&str, Option<&str>)> {
        events.iter().map(|e| (e.name, e.recipient_id.as_deref())).collect()
    }

    #[test]
    fn a_definition_is_read_with_docusigns_leniency_and_keeps_what_it_says() {
        let definition = parsed(&equipment()).unwrap();
        assert!(definition.send);
        let subscription = definition.subscription.clone().unwrap();
        assert_eq!(subscription.events, ["envelope-completed", "recipient-declined"], "legacy event lists map over");
        assert!(subscription.sign && !subscription.require_acknowledgment);
        assert_eq!(subscription.format, ConnectFormat::Xml, "no eventData: legacy XML");
        assert!(subscription.wants("envelope-completed") && !subscription.wants("envelope-sent"));

        let envelope = definition.envelope(&origin(), Utc::now());
        assert_eq!(envelope.subject, "Equipment request for Ada Lovelace");
        let roles: Vec<(&str, &str, u32)> =
            envelope.signers.iter().map(|s| (s.role_name.as_str(), s.recipient_id.as_str(), s.routing_order)).collect();
        assert_eq!(roles, [("Employee", "1", 1), ("IT Approver", "2", 2)], "in routing order, whatever the request's");
        let employee = &envelope.signers[0];
        assert_eq!(employee.client_user_id.as_deref(), Some("1001"));
        let address = employee.tabs.iter().find(|t| t.label == "delivery_address").unwrap();
        assert_eq!(address.value, "12", "a number is taken as its text");
        assert_eq!(envelope.custom_field("countersign_agreement_id"), Some("a-1"));
        assert!(!envelope.field_flags("countersign_agreement_id").show);
        assert_eq!(envelope.list_custom_fields[0].items, ["Berlin", "Lyon"]);
        assert_eq!(envelope.documents.len(), 1);
        assert_eq!(envelope.state, EnvelopeStatus::Created);
    }

    #[test]
    fn refusals_name_docusigns_error_codes() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({ "status": "sent", "templateId": ONBOARDING_TEMPLATE }), "ENVELOPE_IS_INCOMPLETE"),
            (json!({ "status": "sent", "documents": [{}] }), "INVALID_REQUEST_PARAMETER"),
            (json!({ "status": "sent", "templateId": "5c1b6f0e" }), "TEMPLATE_ID_INVALID"),
            (json!({ "templateId": EQUIPMENT_TEMPLATE, "templateRoles": {} }), "INVALID_REQUEST_BODY"),
            (json!([]), "INVALID_REQUEST_BODY"),
        ];
        for (body, code) in cases {
            assert_eq!(parsed(&body).unwrap_err().error_code, code, "{body}");
        }
        let mut nameless = equipment();
        nameless["templateRoles"][0]["name"] = json!(" ");
        assert_eq!(parsed(&nameless).unwrap_err().error_code, "INVALID_USERNAME_FOR_RECIPIENT");
        let mut twice = equipment();
        twice["templateRoles"][0]["roleName"] = json!("Employee");
        assert_eq!(parsed(&twice).unwrap_err().error_code, "INVALID_REQUEST_PARAMETER");
        let mut same_field = equipment();
        same_field["customFields"]["listCustomFields"][0]["name"] = json!("countersign_agreement_id");
        assert_eq!(parsed(&same_field).unwrap_err().error_code, "INVALID_REQUEST_PARAMETER");
        let mut ftp = equipment();
        ftp["eventNotification"]["url"] = json!("ftp://example.com/x");
        assert_eq!(parsed(&ftp).unwrap_err().error_code, "INVALID_REQUEST_PARAMETER");
        let mut exactly = equipment();
        exactly["customFields"]["textCustomFields"][0]["value"] = json!("é".repeat(100));
        assert!(parsed(&exactly).is_ok(), "100 characters are allowed, however many bytes");
    }

    #[test]
    fn emails_are_checked_as_addresses() {
        for good in ["a@b.co", "jane.doe+hr@mail.example.com", "o'neil@example.ie"] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "a@b@c.com",
            "a@.com",
            "a@b..com",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
        assert!(!is_valid_email(&format!("{}@example.com", "a".repeat(100))));
    }

    #[test]
    fn sending_routes_to_the_first_signers_and_signing_walks_the_routing_order() {
        let (mut envelope, events) = sent(&equipment());
        assert_eq!(names(&events), [("envelope-sent", None), ("recipient-sent", Some("1"))]);
        let statuses = |e: &Envelope| e.signers.iter().map(|s| s.status).collect::<Vec<_>>();
        assert_eq!(statuses(&events[0].envelope), [EnvelopeStatus::Sent, EnvelopeStatus::Created]);

        // The approver's turn has not come.
        let early = sign(&mut envelope.clone(), Some("2"), &BTreeMap::new(), Utc::now()).unwrap_err();
        assert!(matches!(early, LifecycleError::RecipientNotActive { status: EnvelopeStatus::Created, .. }));

        let events = sign(&mut envelope, None, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(
            names(&events),
            [
                ("recipient-delivered", Some("1")),
                ("envelope-delivered", None),
                ("recipient-completed", Some("1")),
                ("recipient-sent", Some("2")),
                ("recipient-delivered", Some("2")),
                ("recipient-completed", Some("2")),
                ("envelope-completed", None),
            ]
        );
        assert_eq!(envelope.state, EnvelopeStatus::Completed);
        let times: Vec<DateTime<Utc>> =
            envelope.signers.iter().flat_map(|s| [s.sent_at, s.delivered_at, s.signed_at]).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "every step after the one before: {times:?}");
        assert_eq!(Some(envelope.completed_at), times.last().copied(), "the last signature completes it");
        let employee = &envelope.signers[0];
        let value = |label: &str| employee.tabs.iter().find(|t| t.label == label).unwrap().value.clone();
        assert_eq!(value("delivery_address"), "12", "the sender's value stays");
        assert_eq!(value("laptop_model"), "Framework 13", "a required tab gets filled");
        assert_eq!(value("monitor_count"), "", "an optional one may stay empty");
        let again = sign(&mut envelope, None, &BTreeMap::new(), Utc::now()).unwrap_err();
        assert!(matches!(again, LifecycleError::NotInProcess { status: EnvelopeStatus::Completed, .. }));
    }

    #[test]
    fn declining_and_voiding_end_an_envelope_in_process_only() {
        let (mut envelope, _) = sent(&equipment());
        let events = decline(&mut envelope, None, "Wrong laptop", Utc::now()).unwrap();
        assert_eq!(
            names(&events),
            [("recipient-delivered", Some("1")), ("recipient-declined", Some("1")), ("envelope-declined", None)]
        );
        assert_eq!(envelope.declined_time(), Some(envelope.signers[0].signed_at));
        assert_eq!(envelope.status_changed_at(), envelope.signers[0].signed_at);
        assert!(matches!(void(&mut envelope, "late", Utc::now()), Err(LifecycleError::NotInProcess { .. })));

        let (mut envelope, _) = sent(&equipment());
        let events = void(&mut envelope, "Sent by mistake", Utc::now()).unwrap();
        assert_eq!(names(&events), [("envelope-voided", None)]);
        assert_eq!(envelope.voided_reason.as_deref(), Some("Sent by mistake"));
        assert!(decline(&mut envelope, None, "x", Utc::now()).is_err());
    }

    #[test]
    fn notifications_describe_an_envelope_in_process_as_it_is() {
        let (envelope, events) = sent(&equipment());
        let options = NotificationOptions { event: "envelope-sent".into(), ..NotificationOptions::default() };
        let message: Value =
            serde_json::from_slice(&json_sim_body(&events[0].envelope, &options, 0, Utc::now())).unwrap();
        assert_eq!(message["data"]["envelopeSummary"], envelope_json(&envelope, Include::ALL), "nothing to take back");
        assert_eq!(message["data"]["envelopeSummary"]["recipients"]["signers"][1]["status"], "created");

        let mut declined = envelope.clone();
        decline(&mut declined, None, "Wrong <laptop>", Utc::now()).unwrap();
        let options = NotificationOptions { event: "envelope-declined".into(), ..NotificationOptions::default() };
        let xml = String::from_utf8(xml_body(&declined, &options, 0)).unwrap();
        assert!(xml.contains("<Status>Declined</Status>"), "{xml}");
        assert!(xml.contains("<DeclineReason>Wrong &lt;laptop&gt;</DeclineReason>"), "{xml}");
        assert!(!xml.contains("<Completed>") && !xml.contains("<Signed>"), "{xml}");
        assert!(xml.contains("<Status>Created</Status>"), "the approver never got it: {xml}");
    }
}
