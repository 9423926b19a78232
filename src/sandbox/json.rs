//! DocuSign's REST representation of an envelope, shared by the REST
//! endpoints and by Connect's JSON SIM `envelopeSummary`. Almost every scalar
//! is a string, as DocuSign sends them ("true", "1").

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::envelopes::{Envelope, EnvelopeStatus, Person, Signer, Template, TemplateRole};

/// DocuSign's timestamp form: UTC with seven fractional digits.
pub fn docusign_time(time: DateTime<Utc>) -> String {
    format!("{}0Z", time.format("%Y-%m-%dT%H:%M:%S%.6f"))
}

/// Which optional parts to include, as `?include=` or Connect's `includeData` ask.
#[derive(Debug, Clone, Copy, Default)]
pub struct Include {
    pub recipients: bool,
    pub tabs: bool,
    pub custom_fields: bool,
    pub documents: bool,
}

impl Include {
    pub const ALL: Include = Include { recipients: true, tabs: true, custom_fields: true, documents: true };

    /// Parses `recipients,custom_fields,tabs,documents` (unknown names are ignored, as DocuSign does).
    pub fn parse(list: &str) -> Self {
        let mut include = Include::default();
        for item in list.split(',').map(str::trim) {
            match item {
                "recipients" => include.recipients = true,
                "tabs" => include.tabs = true,
                "custom_fields" => include.custom_fields = true,
                "documents" => include.documents = true,
                _ => {}
            }
        }
        include
    }
}

fn uri(envelope: &Envelope, rest: &str) -> String {
    format!("/envelopes/{}{rest}", envelope.envelope_id)
}

pub fn sender_json(envelope: &Envelope) -> Value {
    json!({
        "userName": envelope.sender.name,
        "userId": envelope.sender.user_id.to_string(),
        "accountId": envelope.account_id.to_string(),
        "email": envelope.sender.email,
        "ipAddress": "198.51.100.7",
    })
}

fn flag(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

/// Inserts `key` with the DocuSign time when there is one.
fn put_time(value: &mut Value, key: &str, time: Option<DateTime<Utc>>) {
    if let (Some(fields), Some(time)) = (value.as_object_mut(), time) {
        fields.insert(key.into(), json!(docusign_time(time)));
    }
}

pub fn tabs_json(signer: &Signer) -> Value {
    let tab = |t: &super::envelopes::Tab, n: usize| {
        json!({
            "tabLabel": t.label,
            "value": t.value,
            "originalValue": t.value,
            "documentId": t.document_id,
            "pageNumber": t.page.to_string(),
            "recipientId": signer.recipient_id,
            "tabId": format!("{}-{n}", signer.recipient_id_guid),
            "tabType": t.tab_type,
            "required": flag(t.required),
            "locked": "false",
            "xPosition": (100 + 20 * n).to_string(),
            "yPosition": (200 + 30 * n).to_string(),
        })
    };
    let text: Vec<Value> =
        signer.tabs.iter().enumerate().filter(|(_, t)| t.tab_type == "text").map(|(n, t)| tab(t, n)).collect();
    let date: Vec<Value> =
        signer.tabs.iter().enumerate().filter(|(_, t)| t.tab_type == "date").map(|(n, t)| tab(t, n)).collect();
    let signed = if signer.status == EnvelopeStatus::Completed { "signed" } else { "active" };
    let sign_here = json!([{
        "tabLabel": "Signature", "documentId": "1", "pageNumber": "1", "recipientId": signer.recipient_id,
        "status": signed, "tabType": "signhere", "name": "SignHere",
    }]);
    json!({ "textTabs": text, "dateTabs": date, "signHereTabs": sign_here })
}

fn signer_json(signer: &Signer, tabs: bool) -> Value {
    let mut value = json!({
        "name": signer.person.name,
        "email": signer.person.email,
        "recipientId": signer.recipient_id,
        "recipientIdGuid": signer.recipient_id_guid.to_string(),
        "userId": signer.person.user_id.to_string(),
        "roleName": signer.role_name,
        "routingOrder": signer.routing_order.to_string(),
        "status": signer.status.as_str(),
        "completedCount": if signer.status == EnvelopeStatus::Completed { "1" } else { "0" },
    });
    put_time(&mut value, "sentDateTime", signer.sent_time());
    put_time(&mut value, "deliveredDateTime", signer.delivered_time());
    put_time(&mut value, "signedDateTime", signer.signed_time());
    put_time(&mut value, "declinedDateTime", signer.declined_time());
    if let Some(fields) = value.as_object_mut() {
        if let (Some(reason), EnvelopeStatus::Declined) = (&signer.declined_reason, signer.status) {
            fields.insert("declinedReason".into(), json!(reason));
        }
        if let Some(client_user_id) = &signer.client_user_id {
            fields.insert("clientUserId".into(), json!(client_user_id));
        }
        for (key, text) in [
            ("deliveryMethod", "email"),
            ("recipientType", "signer"),
            ("requireIdLookup", "false"),
            ("creationReason", "sender"),
        ] {
            fields.insert(key.into(), json!(text));
        }
    }
    if tabs {
        value["tabs"] = tabs_json(signer);
    }
    value
}

fn carbon_copy_json(person: &Person, recipient_id: usize, envelope: &Envelope) -> Value {
    // Copies are routed after every signer, so only completion reaches them.
    let copied = envelope.completed_time();
    let mut value = json!({
        "name": person.name,
        "email": person.email,
        "recipientId": recipient_id.to_string(),
        "userId": person.user_id.to_string(),
        "routingOrder": (envelope.signers.len() + 1).to_string(),
        "status": if copied.is_some() { "completed" } else { "created" },
        "deliveryMethod": "email",
        "recipientType": "carboncopy",
    });
    put_time(&mut value, "sentDateTime", copied);
    value
}

/// `recipients` as in `GET …/envelopes/{id}/recipients[?include_tabs=true]`.
pub fn recipients_json(envelope: &Envelope, tabs: bool) -> Value {
    let signers: Vec<Value> = envelope.signers.iter().map(|s| signer_json(s, tabs)).collect();
    let ccs: Vec<Value> = envelope
        .carbon_copies
        .iter()
        .enumerate()
        .map(|(i, p)| carbon_copy_json(p, envelope.signers.len() + i + 1, envelope))
        .collect();
    json!({
        "signers": signers,
        "agents": [], "editors": [], "intermediaries": [],
        "carbonCopies": ccs,
        "certifiedDeliveries": [], "inPersonSigners": [], "seals": [], "witnesses": [], "notaries": [],
        "recipientCount": (envelope.signers.len() + envelope.carbon_copies.len()).to_string(),
        "currentRoutingOrder": current_routing_order(envelope).to_string(),
    })
}

/// The routing order whose recipients have the envelope now; past the last
/// signer once every signer is done.
fn current_routing_order(envelope: &Envelope) -> u32 {
    let after_signers = u32::try_from(envelope.signers.len() + 1).unwrap_or(u32::MAX);
    if envelope.state == EnvelopeStatus::Completed {
        return after_signers;
    }
    envelope
        .signers
        .iter()
        .filter(|s| s.status != EnvelopeStatus::Completed)
        .map(|s| s.routing_order)
        .min()
        .unwrap_or(after_signers)
}

pub fn custom_fields_json(envelope: &Envelope) -> Value {
    let text: Vec<Value> = envelope
        .custom_fields
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            let flags = envelope.field_flags(name);
            json!({
                "fieldId": (10_000 + i).to_string(), "name": name,
                "show": flag(flags.show), "required": flag(flags.required), "value": value,
            })
        })
        .collect();
    let list: Vec<Value> = envelope
        .list_custom_fields
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let flags = envelope.field_flags(&field.name);
            json!({
                "fieldId": (20_000 + i).to_string(), "name": field.name, "listItems": field.items,
                "show": flag(flags.show), "required": flag(flags.required), "value": field.value,
            })
        })
        .collect();
    json!({ "textCustomFields": text, "listCustomFields": list })
}

/// `envelopeDocuments` as the documents list returns them, certificate last.
pub fn documents_json(envelope: &Envelope) -> Vec<Value> {
    let mut documents: Vec<Value> = envelope
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let pages: Vec<Value> = (1..=d.pages)
                .map(|p| json!({ "pageId": format!("{}-{p}", d.document_id_guid), "sequence": p.to_string(), "height": "792", "width": "612", "dpi": "72" }))
                .collect();
            json!({
                "documentId": d.document_id,
                "documentIdGuid": d.document_id_guid.to_string(),
                "name": d.name,
                "type": "content",
                "uri": uri(envelope, &format!("/documents/{}", d.document_id)),
                "order": (i + 1).to_string(),
                "pages": pages,
                "display": "inline",
                "includeInDownload": "true",
                "signerMustAcknowledge": "no_interaction",
                "templateRequired": "false",
                "authoritativeCopy": "false",
                "availableDocumentTypes": [{ "type": "electronic", "isDefault": "true" }],
            })
        })
        .collect();
    documents.push(json!({
        "documentId": "certificate",
        "documentIdGuid": envelope.envelope_id.to_string(),
        "name": "Summary",
        "type": "summary",
        "uri": uri(envelope, "/documents/certificate"),
        "order": "999",
        "pages": [],
        "display": "inline",
        "includeInDownload": "true",
        "signerMustAcknowledge": "no_interaction",
        "templateRequired": "false",
        "authoritativeCopy": "false",
        "availableDocumentTypes": [{ "type": "electronic", "isDefault": "true" }],
    }));
    documents
}

/// The Envelope object of `GET …/envelopes/{id}?include=…`. Times of steps
/// the envelope has not reached are left out, as DocuSign leaves them out.
pub fn envelope_json(envelope: &Envelope, include: Include) -> Value {
    let mut value = json!({
        "status": envelope.status(),
        "documentsUri": uri(envelope, "/documents"),
        "recipientsUri": uri(envelope, "/recipients"),
        "attachmentsUri": uri(envelope, "/attachments"),
        "envelopeUri": uri(envelope, ""),
        "emailSubject": envelope.subject,
        "envelopeId": envelope.envelope_id.to_string(),
        "signingLocation": "online",
        "customFieldsUri": uri(envelope, "/custom_fields"),
        "notificationUri": uri(envelope, "/notification"),
        "enableWetSign": "true",
        "allowMarkup": "false",
        "allowReassign": "true",
        "createdDateTime": docusign_time(envelope.created_at),
        "lastModifiedDateTime": docusign_time(envelope.created_at),
    });
    put_time(&mut value, "deliveredDateTime", envelope.delivered_time());
    put_time(&mut value, "initialSentDateTime", envelope.sent_time());
    put_time(&mut value, "sentDateTime", envelope.sent_time());
    put_time(&mut value, "completedDateTime", envelope.completed_time());
    put_time(&mut value, "declinedDateTime", envelope.declined_time());
    put_time(&mut value, "voidedDateTime", envelope.voided_time());
    let expires = envelope.sent_time().unwrap_or(envelope.created_at) + chrono::Duration::days(120);
    let rest = json!({
        "statusChangedDateTime": docusign_time(envelope.status_changed_at()),
        "documentsCombinedUri": uri(envelope, "/documents/combined"),
        "certificateUri": uri(envelope, "/documents/certificate"),
        "templatesUri": uri(envelope, "/templates"),
        "expireEnabled": "true",
        "expireDateTime": docusign_time(expires),
        "expireAfter": "120",
        "sender": sender_json(envelope),
        "purgeState": "unpurged",
        "envelopeIdStamping": "true",
        "is21CFRPart11": "false",
        "signerCanSignOnMobile": "true",
        "isSignatureProviderEnvelope": "false",
        "allowViewHistory": "true",
        "envelopeMetadata": { "allowAdvancedCorrect": "true", "enableSignWithNotary": "false", "allowCorrect": "true" },
        "envelopeLocation": "current_site",
        "anySigner": null,
    });
    if let (Some(fields), Value::Object(rest)) = (value.as_object_mut(), rest) {
        fields.extend(rest);
        if let (Some(reason), Some(_)) = (&envelope.voided_reason, envelope.voided_time()) {
            fields.insert("voidedReason".into(), json!(reason));
        }
        if let Some(blurb) = &envelope.email_blurb {
            fields.insert("emailBlurb".into(), json!(blurb));
        }
    }
    if include.recipients || include.tabs {
        value["recipients"] = recipients_json(envelope, include.tabs);
    }
    if include.custom_fields {
        value["customFields"] = custom_fields_json(envelope);
    }
    if include.documents {
        value["envelopeDocuments"] = Value::Array(documents_json(envelope));
    }
    value
}

/// `GET …/envelopes/{id}/templates`: the template the envelope was sent from.
pub fn templates_json(envelope: &Envelope) -> Value {
    let id = envelope.template_id.to_string();
    let name = match super::envelopes::template(&id) {
        Some(template) => template.name,
        None => envelope.subject.split(':').next().unwrap_or("Template").trim().to_string(),
    };
    json!({
        "templates": [{
            "templateId": id,
            "name": name,
            "applied": "true",
            "uri": format!("/templates/{}", envelope.template_id),
        }]
    })
}

/// Which optional parts of a template to include (`?include=`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateInclude {
    pub recipients: bool,
    pub tabs: bool,
    pub documents: bool,
}

impl TemplateInclude {
    /// Unknown names are ignored, as with envelopes.
    pub fn parse(list: &str) -> Self {
        let mut include = TemplateInclude::default();
        for item in list.split(',').map(str::trim) {
            match item {
                "recipients" => include.recipients = true,
                "tabs" => include.tabs = true,
                "documents" => include.documents = true,
                _ => {}
            }
        }
        include
    }
}

/// A stable GUID for a part of a template, so that repeated reads agree.
fn template_guid(template: &Template, part: &str) -> String {
    Uuid::new_v5(&template.template_id, part.as_bytes()).to_string()
}

fn template_tabs_json(template: &Template, role: &TemplateRole) -> Value {
    let mut lists: Map<String, Value> = Map::new();
    for (kind, key) in [("text", "textTabs"), ("date", "dateTabs")] {
        let tabs: Vec<Value> = role
            .tabs
            .iter()
            .enumerate()
            .filter(|(_, t)| t.tab_type == kind)
            .map(|(n, t)| {
                json!({
                    "tabLabel": t.label,
                    "name": t.label,
                    "value": "",
                    "required": flag(t.required),
                    "locked": "false",
                    "documentId": t.document_id,
                    "pageNumber": t.page.to_string(),
                    "recipientId": role.recipient_id,
                    "tabId": template_guid(template, &format!("{}/{}", role.role_name, t.label)),
                    "tabType": t.tab_type,
                    "xPosition": (100 + 20 * n).to_string(),
                    "yPosition": (200 + 30 * n).to_string(),
                })
            })
            .collect();
        lists.insert(key.into(), Value::Array(tabs));
    }
    lists.insert(
        "signHereTabs".into(),
        json!([{
            "tabLabel": "Signature", "name": "SignHere", "documentId": "1", "pageNumber": "1",
            "recipientId": role.recipient_id, "tabType": "signhere", "status": "active",
            "tabId": template_guid(template, &format!("{}/Signature", role.role_name)),
        }]),
    );
    Value::Object(lists)
}

/// A template's `recipients`: its roles as placeholder signers.
pub fn template_recipients_json(template: &Template, tabs: bool) -> Value {
    let signers: Vec<Value> = template
        .roles
        .iter()
        .map(|role| {
            let mut value = json!({
                "roleName": role.role_name,
                "name": "",
                "email": "",
                "recipientId": role.recipient_id,
                "recipientIdGuid": template_guid(template, &role.role_name),
                "routingOrder": role.routing_order.to_string(),
                "recipientType": "signer",
                "requireIdLookup": "false",
                "templateRequired": flag(role.required),
                "templateLocked": "false",
                "deliveryMethod": "email",
            });
            if tabs {
                value["tabs"] = template_tabs_json(template, role);
            }
            value
        })
        .collect();
    json!({
        "signers": signers,
        "agents": [], "editors": [], "intermediaries": [],
        "carbonCopies": [],
        "certifiedDeliveries": [], "inPersonSigners": [], "seals": [], "witnesses": [], "notaries": [],
        "recipientCount": template.roles.len().to_string(),
    })
}

fn template_documents_json(template: &Template) -> Value {
    let documents: Vec<Value> = template
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "documentId": d.document_id,
                "documentIdGuid": template_guid(template, &format!("document/{}", d.document_id)),
                "name": d.name,
                "order": (i + 1).to_string(),
                "pages": d.pages.to_string(),
                "type": "content",
                "uri": format!("/templates/{}/documents/{}", template.template_id, d.document_id),
            })
        })
        .collect();
    Value::Array(documents)
}

/// An EnvelopeTemplate as `GET …/templates` lists it and `GET …/templates/{id}`
/// answers it; the read of one template always carries its recipients.
pub fn template_json(template: &Template, owner: &Person, include: TemplateInclude) -> Value {
    let id = template.template_id.to_string();
    let owner = json!({ "userName": owner.name, "userId": owner.user_id.to_string(), "email": owner.email });
    let mut value = json!({
        "templateId": id,
        "uri": format!("/templates/{id}"),
        "name": template.name,
        "description": template.description,
        "shared": "false",
        "created": docusign_time(template.created),
        "lastModified": docusign_time(template.last_modified),
        "lastModifiedBy": owner.clone(),
        "owner": owner,
        "folderName": "Templates",
        "folderId": template_guid(template, "folder"),
        "pageCount": template.page_count().to_string(),
        "emailSubject": template.email_subject,
        "emailBlurb": "",
        "signingLocation": "Online",
        "status": "created",
        "autoNavigation": "true",
        "envelopeIdStamping": "true",
        "allowReassign": "true",
        "enableWetSign": "true",
    });
    if include.recipients || include.tabs {
        value["recipients"] = template_recipients_json(template, include.tabs);
    }
    if include.documents {
        value["documents"] = template_documents_json(template);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docusign_times_have_seven_fractional_digits() {
        let time = DateTime::parse_from_rfc3339("2022-09-22T15:22:53.458074Z").unwrap().with_timezone(&Utc);
        assert_eq!(docusign_time(time), "2022-09-22T15:22:53.4580740Z");
    }

    #[test]
    fn include_lists_parse_like_docusign_reads_them() {
        let include = Include::parse("recipients, custom_fields,tabs,unknown");
        assert!(include.recipients && include.custom_fields && include.tabs && !include.documents);
    }
}
