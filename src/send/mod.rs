//! Sending agreements: an IT system asks (the requests API), countersign
//! stores the request with its send job in one commit, the job creates the
//! envelope from the profile's DocuSign template exactly once, and
//! Connect's news about the envelope moves the agreement on and becomes
//! lifecycle events. The completion itself goes through the rules like any
//! completed envelope, its events carrying the request.

pub mod api;
pub mod bus;
pub mod check;
pub mod intake;
mod jobs;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{AGREEMENT_FIELD, CUSTOM_FIELD_MAX_CHARS, ProfileSettings, Settings};
use crate::docusign::sending::Template;

pub use jobs::{AgreementLifecycle, SendAgreement, VoidAgreement};

/// The configured profiles by name.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    by_name: Arc<HashMap<String, ProfileSettings>>,
}

impl Profiles {
    pub fn from_settings(settings: &Settings) -> Self {
        let by_name = settings.profiles.iter().map(|p| (p.name.clone(), p.clone())).collect();
        Self { by_name: Arc::new(by_name) }
    }

    pub fn get(&self, name: &str) -> Option<&ProfileSettings> {
        self.by_name.get(name)
    }
}

/// Request data that cannot fill its profile: which pointer, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data{pointer}: {reason}")]
pub struct DataError {
    /// The JSON Pointer into `data` that is missing or wrong.
    pub pointer: String,
    pub reason: String,
}

/// A value the request's data holds for a template field: a string, or a
/// number or boolean written as text.
fn text_at(data: &Value, pointer: &str) -> Result<Option<String>, DataError> {
    let wrong = |reason: &str| DataError { pointer: pointer.to_string(), reason: reason.to_string() };
    match data.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(Value::Bool(flag)) => Ok(Some(flag.to_string())),
        Some(_) => Err(wrong("is an object or a list; a text, number or boolean is needed")),
    }
}

fn required_text(data: &Value, pointer: &str, what: &str) -> Result<String, DataError> {
    text_at(data, pointer)?
        .ok_or_else(|| DataError { pointer: pointer.to_string(), reason: format!("is missing: {what}") })
}

/// Checks that `data` fills every role and tab of `profile`, and that each
/// custom field fits DocuSign's limit: the checks the requests API answers
/// 422 for, before anything is stored.
pub fn check_data(profile: &ProfileSettings, data: &Value) -> Result<(), DataError> {
    // The id does not matter to the checks; a real one exists only once stored.
    envelope_definition(profile, data, "00000000-0000-0000-0000-000000000000", None, None).map(|_| ())
}

/// The envelope definition DocuSign's `POST …/envelopes` takes: the
/// profile's template with its roles, prefilled tabs and custom fields
/// filled from `data`, the hidden agreement field, and, when countersign's
/// Connect URL is configured, the envelope's own Connect subscription.
///
/// DocuSign fills a tab only from the list of its own type (`dateTabs` for
/// a date tab) and only for the role that has it: with the `template` as
/// DocuSign describes it, each value goes exactly there; without it (a
/// check of the data alone), every role carries every value as text.
pub fn envelope_definition(
    profile: &ProfileSettings,
    data: &Value,
    agreement_id: &str,
    connect_url: Option<&str>,
    template: Option<&Template>,
) -> Result<Value, DataError> {
    let mut values = Vec::new();
    for (label, pointer) in &profile.tabs {
        let value = required_text(data, pointer, &format!("the tab `{label}` needs a value"))?;
        values.push((label, value));
    }
    let tabs_of = |role: &str| -> Value {
        let mut lists: Map<String, Value> = Map::new();
        for (label, value) in &values {
            let list = match template {
                None => Some("textTabs"),
                Some(template) => template
                    .roles
                    .iter()
                    .filter(|r| r.name == role)
                    .flat_map(|r| &r.tabs)
                    .find(|t| &t.label == *label)
                    .map(|t| t.list.as_str()),
            };
            if let Some(list) = list {
                let entries = lists.entry(list).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(entries) = entries {
                    entries.push(json!({ "tabLabel": label, "value": value }));
                }
            }
        }
        Value::Object(lists)
    };
    let mut roles = Vec::new();
    for (role, fields) in &profile.roles {
        let name = required_text(data, &fields.name, &format!("the name of role `{role}`"))?;
        let email = required_text(data, &fields.email, &format!("the email of role `{role}`"))?;
        if !plausible_email(&email) {
            return Err(DataError {
                pointer: fields.email.clone(),
                reason: format!("is not an email address (role `{role}`)"),
            });
        }
        roles.push(json!({ "roleName": role, "name": name, "email": email, "tabs": tabs_of(role) }));
    }
    let mut fields = vec![hidden_field(AGREEMENT_FIELD, agreement_id)];
    for (name, pointer) in &profile.custom_fields {
        let Some(value) = text_at(data, pointer)? else { continue };
        if value.chars().count() > CUSTOM_FIELD_MAX_CHARS {
            return Err(DataError {
                pointer: pointer.clone(),
                reason: format!(
                    "is longer than the {CUSTOM_FIELD_MAX_CHARS} characters DocuSign keeps of custom field `{name}`"
                ),
            });
        }
        fields.push(hidden_field(name, &value));
    }
    let mut definition = Map::new();
    definition.insert("templateId".into(), json!(profile.template_id));
    definition.insert("status".into(), json!("sent"));
    definition.insert("templateRoles".into(), Value::Array(roles));
    definition.insert("customFields".into(), json!({ "textCustomFields": fields }));
    if let Some(subject) = &profile.email_subject {
        definition.insert("emailSubject".into(), json!(subject));
    }
    if let Some(url) = connect_url {
        definition.insert("eventNotification".into(), event_notification(url));
    }
    Ok(Value::Object(definition))
}

fn hidden_field(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value, "show": "false", "required": "false" })
}

/// The envelope's own Connect subscription: JSON SIM, HMAC-signed with the
/// account's Connect keys, every lifecycle event countersign tracks, with
/// the custom fields and recipients the lifecycle needs.
fn event_notification(url: &str) -> Value {
    json!({
        "url": url,
        "requireAcknowledgment": "true",
        "loggingEnabled": "true",
        "includeHMAC": "true",
        "deliveryMode": "SIM",
        "events": [
            "envelope-sent", "envelope-delivered", "envelope-completed", "envelope-declined", "envelope-voided",
            "recipient-completed", "recipient-declined", "recipient-autoresponded",
        ],
        "eventData": { "version": "restv2.1", "format": "json", "includeData": ["recipients", "custom_fields"] },
    })
}

/// An address DocuSign would take: one `@`, something before it, a dot after it, no spaces.
fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
}

/// What tells two requests under one idempotency key apart: SHA-256 over
/// the profile name and the data with object keys sorted, so key order and
/// spacing do not matter.
pub fn request_digest(profile: &str, data: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(profile.as_bytes());
    hasher.update(b"\n");
    hash_canonical(&mut hasher, data);
    hex::encode(hasher.finalize())
}

fn hash_canonical(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hasher.update(Value::String(key.clone()).to_string().as_bytes());
                hasher.update(b":");
                hash_canonical(hasher, &map[key]);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                hash_canonical(hasher, item);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::RoleSettings;
    use crate::docusign::sending::{TemplateRole, TemplateTab};

    fn profile() -> ProfileSettings {
        ProfileSettings {
            name: "offer".into(),
            template_id: "5c1b6f0e-8a4d-4b3e-9f2a-7d6c5b4a3f21".into(),
            account_id: None,
            sinks: vec![],
            roles: [(
                "Employee".to_string(),
                RoleSettings { name: "/employee/name".into(), email: "/employee/email".into() },
            )]
            .into(),
            tabs: [("start_date".to_string(), "/employee/start".to_string())].into(),
            custom_fields: [("Employee ID".to_string(), "/employee/id".to_string())].into(),
            email_subject: Some("Welcome".into()),
        }
    }

    #[test]
    fn data_fills_roles_tabs_and_fields_and_the_agreement_id_is_hidden() {
        let data =
            json!({ "employee": { "name": "Ada", "email": "ada@example.com", "start": "2027-01-04", "id": 42 } });
        let template = Template {
            template_id: "t".into(),
            name: "Offer".into(),
            roles: vec![TemplateRole {
                name: "Employee".into(),
                tabs: vec![TemplateTab { label: "start_date".into(), list: "dateTabs".into() }],
            }],
        };
        let connect = Some("https://cs.example.com/docusign/connect");
        let definition = envelope_definition(&profile(), &data, "agr", connect, Some(&template)).unwrap();
        assert_eq!(definition["templateRoles"][0]["email"], "ada@example.com");
        assert_eq!(
            definition["templateRoles"][0]["tabs"],
            json!({ "dateTabs": [{ "tabLabel": "start_date", "value": "2027-01-04" }] })
        );
        let untyped = envelope_definition(&profile(), &data, "agr", None, None).unwrap();
        assert_eq!(untyped["templateRoles"][0]["tabs"]["textTabs"][0]["value"], "2027-01-04");
        assert!(untyped.get("eventNotification").is_none());
        let fields = &definition["customFields"]["textCustomFields"];
        assert_eq!(fields[0], json!({ "name": AGREEMENT_FIELD, "value": "agr", "show": "false", "required": "false" }));
        assert_eq!(fields[1]["value"], "42");
        assert_eq!(definition["eventNotification"]["includeHMAC"], "true");
        assert_eq!(definition["status"], "sent");
    }

    #[test]
    fn data_that_cannot_fill_the_profile_names_its_pointer() {
        let missing = json!({ "employee": { "name": "Ada", "start": "x" } });
        let error = check_data(&profile(), &missing).unwrap_err();
        assert_eq!(error.pointer, "/employee/email");
        let bad = json!({ "employee": { "name": "Ada", "email": "ada at example", "start": "x" } });
        assert_eq!(check_data(&profile(), &bad).unwrap_err().pointer, "/employee/email");
        let no_tab = json!({ "employee": { "name": "Ada", "email": "a@b.co" } });
        assert_eq!(check_data(&profile(), &no_tab).unwrap_err().pointer, "/employee/start");
        let long = json!({ "employee": { "name": "Ada", "email": "a@b.co", "start": "x", "id": "9".repeat(101) } });
        assert_eq!(check_data(&profile(), &long).unwrap_err().pointer, "/employee/id");
        let object = json!({ "employee": { "name": {"first": "Ada"}, "email": "a@b.co", "start": "x" } });
        assert_eq!(check_data(&profile(), &object).unwrap_err().pointer, "/employee/name");
    }

    #[test]
    fn the_digest_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": 2, "d": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b": {"d": 3, "c": 2}, "a": 1}"#).unwrap();
        let c = json!({ "a": 1, "b": { "c": 2, "d": 4 } });
        assert_eq!(request_digest("p", &a), request_digest("p", &b));
        assert_ne!(request_digest("p", &a), request_digest("p", &c));
        assert_ne!(request_digest("p", &a), request_digest("q", &a));
    }
}
