//! The eSignature calls of the sending direction: create an envelope from a
//! template, find one by its custom field, void one, read a template's roles.
//! They share the account's rate-limit budget and pauses with the downloads
//! (one [`super::limits::RateLimits`] per service).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::DocuSign;
use super::api::{ApiError, Call};
use crate::ids::{AccountId, EnvelopeId, UserId};

/// An envelope a listing found, with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEnvelope {
    pub envelope_id: EnvelopeId,
    /// Lowercase ("sent", "completed", …).
    pub status: String,
    /// `createdDateTime`, when the listing gave one that parses.
    pub created_at: Option<DateTime<Utc>>,
}

/// A template's roles and the tab labels each carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub template_id: String,
    pub name: String,
    pub roles: Vec<TemplateRole>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRole {
    pub name: String,
    pub tabs: Vec<TemplateTab>,
}

/// A tab of a template role: its label, and the list it is kept in
/// (`textTabs`, `dateTabs`, …), which is where a prefilled value must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateTab {
    pub label: String,
    pub list: String,
}

impl Template {
    /// Whether any role's tab has this label.
    pub fn has_tab(&self, label: &str) -> bool {
        self.roles.iter().any(|r| r.tabs.iter().any(|t| t.label == label))
    }
}

impl DocuSign {
    /// `POST …/envelopes`: creates (and, with `status: "sent"`, sends) an
    /// envelope. A transient error means the outcome is unknown: the
    /// envelope may exist. DocuSign takes no idempotency key, so the caller
    /// must look before it creates again.
    pub async fn create_envelope(
        &self,
        user: UserId,
        account: AccountId,
        definition: &Value,
    ) -> Result<EnvelopeId, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            envelope_id: String,
        }
        let mut call = Call::get(user, account, "create", "the envelope creation", "envelopes".into());
        call.method = reqwest::Method::POST;
        call.body = Some(definition);
        let response = self.send(&call).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transient(format!("reading the answer to the envelope creation: {e}")))?;
        let created: Created = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Transient(format!("the answer to the envelope creation is not the expected JSON: {e}"))
        })?;
        EnvelopeId::parse(&created.envelope_id)
            .map_err(|_| ApiError::Transient("the envelope creation answered an envelope id that is not a GUID".into()))
    }

    /// The envelopes of `account` changed since `since` whose text custom
    /// field `name` holds `value`
    /// (`GET …/envelopes?from_date=…&custom_field=NAME=VALUE&status=any`).
    pub async fn envelopes_with_custom_field(
        &self,
        user: UserId,
        account: AccountId,
        (name, value): (&str, &str),
        since: DateTime<Utc>,
    ) -> Result<Vec<FoundEnvelope>, ApiError> {
        let from = since.to_rfc3339_opts(SecondsFormat::Millis, true);
        let field = format!("{name}={value}");
        let query = [("from_date", from.as_str()), ("custom_field", field.as_str()), ("status", "any")];
        let mut call = Call::get(user, account, "listing", "the envelope search", "envelopes".into());
        call.query = &query;
        let response = self.send(&call).await?;
        let bytes =
            response.bytes().await.map_err(|e| ApiError::Transient(format!("reading the envelope search: {e}")))?;
        let page: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Transient(format!("the envelope search is not JSON: {e}")))?;
        let envelopes = page["envelopes"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(envelopes
            .iter()
            .filter_map(|envelope| {
                let id = EnvelopeId::parse(envelope["envelopeId"].as_str()?).ok()?;
                let status = envelope["status"].as_str().unwrap_or_default().to_ascii_lowercase();
                let created_at = envelope["createdDateTime"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                Some(FoundEnvelope { envelope_id: id, status, created_at })
            })
            .collect())
    }

    /// `PUT …/envelopes/{id}` with `{"status": "voided", "voidedReason": …}`.
    pub async fn void_envelope(
        &self,
        user: UserId,
        account: AccountId,
        envelope: EnvelopeId,
        reason: &str,
    ) -> Result<(), ApiError> {
        let body = json!({ "status": "voided", "voidedReason": reason });
        let mut call = Call::get(user, account, "void", "the void", format!("envelopes/{envelope}"));
        call.envelope = Some(envelope);
        call.method = reqwest::Method::PUT;
        call.body = Some(&body);
        self.send(&call).await?;
        Ok(())
    }

    /// `GET …/templates/{id}?include=recipients,tabs`: the template's signer
    /// roles and the labels of their tabs.
    pub async fn template(&self, user: UserId, account: AccountId, template_id: &str) -> Result<Template, ApiError> {
        let mut call = Call::get(user, account, "template", "the template", format!("templates/{template_id}"));
        call.query = &[("include", "recipients,tabs")];
        let response = self.send(&call).await?;
        let bytes = response.bytes().await.map_err(|e| ApiError::Transient(format!("reading the template: {e}")))?;
        let template: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Transient(format!("the template is not JSON: {e}")))?;
        Ok(read_template(template_id, &template))
    }
}

/// Roles are the template's recipients that have a role name, of any
/// recipient type; tabs of every type count by label.
fn read_template(template_id: &str, template: &Value) -> Template {
    let mut roles = Vec::new();
    if let Some(recipients) = template["recipients"].as_object() {
        for list in recipients.values().filter_map(Value::as_array) {
            for recipient in list {
                let Some(name) = recipient["roleName"].as_str().filter(|n| !n.is_empty()) else { continue };
                let tabs = recipient["tabs"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(list, tabs)| Some((list, tabs.as_array()?)))
                    .flat_map(|(list, tabs)| {
                        tabs.iter().filter_map(|tab| {
                            Some(TemplateTab { label: tab["tabLabel"].as_str()?.to_string(), list: list.clone() })
                        })
                    })
                    .collect();
                roles.push(TemplateRole { name: name.to_string(), tabs });
            }
        }
    }
    Template {
        template_id: template["templateId"].as_str().unwrap_or(template_id).to_string(),
        name: template["name"].as_str().unwrap_or_default().to_string(),
        roles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_read_as_its_roles_and_their_tab_labels() {
        let template = json!({
            "templateId": "t", "name": "Offer",
            "recipients": {
                "signers": [{ "roleName": "Employee", "tabs": { "textTabs": [{ "tabLabel": "Start Date" }],
                    "dateSignedTabs": [{ "tabLabel": "signed" }] } }],
                "carbonCopies": [{ "roleName": "HR" }, { "name": "no role" }],
                "recipientCount": "2"
            }
        });
        let read = read_template("t", &template);
        assert_eq!(read.name, "Offer");
        // Recipient lists and tab lists come in whatever order the JSON object keeps.
        let roles: std::collections::BTreeMap<&str, std::collections::BTreeSet<(&str, &str)>> = read
            .roles
            .iter()
            .map(|r| (r.name.as_str(), r.tabs.iter().map(|t| (t.label.as_str(), t.list.as_str())).collect()))
            .collect();
        assert_eq!(
            roles,
            [("Employee", [("signed", "dateSignedTabs"), ("Start Date", "textTabs")].into()), ("HR", [].into())].into()
        );
        assert!(read.has_tab("Start Date") && !read.has_tab("Shoe Size"));
    }
}
