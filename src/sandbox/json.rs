//! DocuSign's REST representation of an envelope, shared by the REST
//! endpoints and by Connect's JSON SIM `envelopeSummary`. Almost every scalar
//! is a string, as DocuSign sends them ("true", "1").

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::envelopes::{Envelope, Person, Signer};

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
            "required": "true",
            "locked": "false",
            "xPosition": (100 + 20 * n).to_string(),
            "yPosition": (200 + 30 * n).to_string(),
        })
    };
    let text: Vec<Value> =
        signer.tabs.iter().enumerate().filter(|(_, t)| t.tab_type == "text").map(|(n, t)| tab(t, n)).collect();
    let date: Vec<Value> =
        signer.tabs.iter().enumerate().filter(|(_, t)| t.tab_type == "date").map(|(n, t)| tab(t, n)).collect();
    let sign_here = json!([{
        "tabLabel": "Signature", "documentId": "1", "pageNumber": "1", "recipientId": signer.recipient_id,
        "status": "signed", "tabType": "signhere", "name": "SignHere",
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
        "status": "completed",
        "completedCount": "1",
        "sentDateTime": docusign_time(signer.sent_at),
        "deliveredDateTime": docusign_time(signer.delivered_at),
        "signedDateTime": docusign_time(signer.signed_at),
        "deliveryMethod": "email",
        "recipientType": "signer",
        "requireIdLookup": "false",
        "creationReason": "sender",
    });
    if tabs {
        value["tabs"] = tabs_json(signer);
    }
    value
}

fn carbon_copy_json(person: &Person, recipient_id: usize, envelope: &Envelope) -> Value {
    json!({
        "name": person.name,
        "email": person.email,
        "recipientId": recipient_id.to_string(),
        "userId": person.user_id.to_string(),
        "routingOrder": (envelope.signers.len() + 1).to_string(),
        "status": "completed",
        "deliveryMethod": "email",
        "recipientType": "carboncopy",
        "sentDateTime": docusign_time(envelope.completed_at),
    })
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
        "currentRoutingOrder": (envelope.signers.len() + 1).to_string(),
    })
}

pub fn custom_fields_json(envelope: &Envelope) -> Value {
    let text: Vec<Value> = envelope
        .custom_fields
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            json!({ "fieldId": (10_000 + i).to_string(), "name": name, "show": "true", "required": "false", "value": value })
        })
        .collect();
    json!({ "textCustomFields": text, "listCustomFields": [] })
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

/// The Envelope object of `GET …/envelopes/{id}?include=…`.
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
        "deliveredDateTime": docusign_time(envelope.signers.last().map_or(envelope.completed_at, |s| s.delivered_at)),
        "initialSentDateTime": docusign_time(envelope.sent_at),
        "sentDateTime": docusign_time(envelope.sent_at),
        "completedDateTime": docusign_time(envelope.completed_at),
        "statusChangedDateTime": docusign_time(envelope.completed_at),
        "documentsCombinedUri": uri(envelope, "/documents/combined"),
        "certificateUri": uri(envelope, "/documents/certificate"),
        "templatesUri": uri(envelope, "/templates"),
        "expireEnabled": "true",
        "expireDateTime": docusign_time(envelope.sent_at + chrono::Duration::days(120)),
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
    json!({
        "templates": [{
            "templateId": envelope.template_id.to_string(),
            "name": envelope.subject.split(':').next().unwrap_or("Template").trim(),
            "applied": "true",
            "uri": format!("/templates/{}", envelope.template_id),
        }]
    })
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
