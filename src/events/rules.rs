//! Rules, compiled from `[[rules]]`: which envelopes they match and which
//! values they lift out of an envelope into event data.

use serde_json::{Map, Value};

use crate::config::{FieldSettings, RuleSettings};
use crate::domain::{Envelope, Recipient};
use crate::ids::AccountId;

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub event_type: String,
    pub sinks: Vec<String>,
    conditions: Vec<Condition>,
    fields: Vec<Field>,
}

#[derive(Debug, Clone)]
enum Condition {
    Templates(Vec<String>),
    CustomField { name: String, pattern: String },
    Subject(String),
    Sender(String),
    Accounts(Vec<AccountId>),
}

#[derive(Debug, Clone)]
struct Field {
    key: String,
    source: Source,
    required: bool,
}

#[derive(Debug, Clone)]
enum Source {
    CustomField(String),
    Tab { label: String, role: Option<String> },
    Signer { role: String },
}

/// What a rule found in an envelope.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    /// Data key → value (a string, or a signer object).
    pub values: Map<String, Value>,
    /// Optional data keys the envelope lacks; the event lists them.
    pub missing: Vec<String>,
    /// Required values the envelope lacks, described for an operator.
    pub required_missing: Vec<String>,
}

impl Rule {
    /// Compiles a rule that `Settings::validate` accepted.
    pub fn compile(settings: &RuleSettings) -> Self {
        let m = &settings.matches;
        let mut conditions = Vec::new();
        if !m.template_ids.is_empty() {
            conditions.push(Condition::Templates(m.template_ids.iter().map(|t| t.to_ascii_lowercase()).collect()));
        }
        if !m.account_ids.is_empty() {
            conditions.push(Condition::Accounts(m.account_ids.to_vec()));
        }
        if let Some(subject) = &m.subject {
            conditions.push(Condition::Subject(subject.clone()));
        }
        if let Some(sender) = &m.sender {
            conditions.push(Condition::Sender(sender.clone()));
        }
        for (name, pattern) in &m.custom_fields {
            conditions.push(Condition::CustomField { name: name.clone(), pattern: pattern.clone() });
        }
        let fields = settings.fields.iter().map(|(key, field)| compile_field(key, field)).collect();
        Self {
            name: settings.name.clone(),
            event_type: settings.event_type.clone(),
            sinks: settings.sinks.clone(),
            conditions,
            fields,
        }
    }

    /// A condition on the templates the envelope was created from.
    pub fn uses_templates(&self) -> bool {
        self.conditions.iter().any(|c| matches!(c, Condition::Templates(_)))
    }

    /// Some field is found by the signer's role: the envelope's recipients
    /// must carry their role names (legacy XML notifications do not).
    pub fn uses_roles(&self) -> bool {
        self.fields.iter().any(|f| matches!(f.source, Source::Tab { role: Some(_), .. } | Source::Signer { .. }))
    }

    /// Every condition holds. `templates` are the ids of the templates the
    /// envelope was created from, as far as they are known.
    pub fn matches(&self, envelope: &Envelope, templates: &[String]) -> bool {
        self.conditions.iter().all(|condition| match condition {
            Condition::Templates(wanted) => templates.iter().any(|t| wanted.contains(&t.to_ascii_lowercase())),
            Condition::Accounts(accounts) => accounts.contains(&envelope.account_id),
            Condition::Subject(pattern) => envelope.subject.as_deref().is_some_and(|s| glob(pattern, s)),
            Condition::Sender(pattern) => {
                envelope.sender.as_ref().and_then(|s| s.email.as_deref()).is_some_and(|e| glob(pattern, e))
            }
            Condition::CustomField { name, pattern } => custom_field(envelope, name).is_some_and(|v| glob(pattern, v)),
        })
    }

    pub fn extract(&self, envelope: &Envelope) -> Extracted {
        let mut extracted = Extracted::default();
        for field in &self.fields {
            let value = match &field.source {
                Source::CustomField(name) => custom_field(envelope, name).map(|v| Value::String(v.to_string())),
                Source::Tab { label, role } => tab(envelope, label, role.as_deref()).map(|v| Value::String(v.into())),
                Source::Signer { role } => signer_with_role(envelope, role).map(signer_json),
            };
            match value {
                Some(value) => {
                    extracted.values.insert(field.key.clone(), value);
                }
                None if field.required => extracted.required_missing.push(format!(
                    "rule {:?}: required field {:?} ({}) is missing from the envelope",
                    self.name,
                    field.key,
                    field.source.describe()
                )),
                None => extracted.missing.push(field.key.clone()),
            }
        }
        extracted
    }
}

fn compile_field(key: &str, field: &FieldSettings) -> Field {
    let source = match (&field.custom_field, &field.tab, &field.signer) {
        (Some(name), _, _) => Source::CustomField(name.clone()),
        (_, Some(label), _) => Source::Tab { label: label.clone(), role: field.role.clone() },
        (_, _, Some(role)) => Source::Signer { role: role.clone() },
        // Validation requires exactly one source; an empty one never matches.
        (None, None, None) => Source::CustomField(String::new()),
    };
    Field { key: key.to_string(), source, required: field.required }
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Self::CustomField(name) => format!("custom field {name:?}"),
            Self::Tab { label, role: Some(role) } => format!("tab {label:?} of role {role:?}"),
            Self::Tab { label, role: None } => format!("tab {label:?}"),
            Self::Signer { role } => format!("signer with role {role:?}"),
        }
    }
}

/// A value that is blank counts as missing: DocuSign sends unfilled
/// optional tabs and fields as empty strings.
fn present(value: &str) -> Option<&str> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// By exact name, else ignoring case (operators type names from the DocuSign UI).
fn custom_field<'a>(envelope: &'a Envelope, name: &str) -> Option<&'a str> {
    let fields = &envelope.custom_fields;
    let exact = fields.iter().find(|(n, _)| n == name);
    let found = exact.or_else(|| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)));
    found.and_then(|(_, value)| present(value))
}

fn tab<'a>(envelope: &'a Envelope, label: &str, role: Option<&str>) -> Option<&'a str> {
    envelope
        .recipients
        .iter()
        .filter(|r| role.is_none_or(|role| has_role(r, role)))
        .flat_map(|r| r.tabs.iter())
        .filter(|t| t.label == label || t.label.eq_ignore_ascii_case(label))
        .find_map(|t| present(&t.value))
}

fn has_role(recipient: &Recipient, role: &str) -> bool {
    recipient.role.as_deref().is_some_and(|r| r.trim().eq_ignore_ascii_case(role.trim()))
}

/// Signers, in-person signers and the like; not carbon copies or editors.
pub(crate) fn is_signer(recipient: &Recipient) -> bool {
    recipient.kind.contains("signer")
}

fn signer_with_role<'a>(envelope: &'a Envelope, role: &str) -> Option<&'a Recipient> {
    envelope.recipients.iter().find(|r| is_signer(r) && has_role(r, role))
}

/// A signer as event data shows it.
pub(crate) fn signer_json(recipient: &Recipient) -> Value {
    serde_json::json!({
        "name": recipient.name,
        "email": recipient.email,
        "role": recipient.role,
        "signed_at": recipient.signed_at.map(super::cloudevent::timestamp),
    })
}

/// Case-insensitive wildcard match: `*` is any run of characters, `?` one
/// character. Runs in time linear in the text for a given pattern (no
/// backtracking blow-up on hostile subjects).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last star swallow one more character and retry.
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_like_a_shell_pattern_ignoring_case() {
        assert!(glob("Offer letter*", "offer LETTER for Jane"));
        assert!(glob("*@hr.example.com", "Ann@HR.example.com"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
        assert!(glob("**x*", "yyxyy"));
        assert!(!glob("Offer letter*", "Re: Offer letter"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("abc", "abcd"));
        let hostile = "a".repeat(10_000);
        assert!(!glob("*a*a*a*a*a*b", &hostile));
    }
}
