//! JSON SIM messages (`docs/DOCUSIGN.md` §1).

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Moment, NotificationOptions, Status, is_recipient_event, is_template_event};
use crate::sandbox::envelopes::Envelope;
use crate::sandbox::json::{Include, docusign_time, envelope_json};
use crate::sandbox::pdf;

/// One JSON SIM message. Fields are declared in the order DocuSign's template
/// lists them, which is the order they are written in.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SimMessage {
    event: String,
    api_version: &'static str,
    uri: String,
    retry_count: u32,
    configuration_id: i64,
    generated_date_time: String,
    data: SimData,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SimData {
    account_id: String,
    user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope_id: Option<String>,
    /// Unconfirmed: no public template-event message was found, so template
    /// events name the template the way envelope events name the envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope_summary: Option<Value>,
}

impl SimMessage {
    pub(super) fn new(envelope: &Envelope, options: &NotificationOptions, generated_at: DateTime<Utc>) -> Self {
        let event = options.event.as_str();
        let account = envelope.account_id.to_string();
        let template = is_template_event(event);
        let uri = if template {
            format!("/restapi/v2.1/accounts/{account}/templates/{}", envelope.template_id)
        } else {
            format!("/restapi/v2.1/accounts/{account}/envelopes/{}", envelope.envelope_id)
        };
        let recipient_id = is_recipient_event(event)
            .then(|| options.recipient_id.clone().or_else(|| envelope.signers.last().map(|s| s.recipient_id.clone())))
            .flatten();
        // A template has no envelope to summarise.
        let envelope_summary = (options.include_summary && !template).then(|| summary(envelope, options));
        Self {
            event: options.event.clone(),
            api_version: "v2.1",
            uri,
            retry_count: 0,
            configuration_id: options.configuration_id,
            generated_date_time: docusign_time(generated_at),
            data: SimData {
                account_id: account,
                user_id: envelope.sender.user_id.to_string(),
                recipient_id,
                envelope_id: (!template).then(|| envelope.envelope_id.to_string()),
                template_id: template.then(|| envelope.template_id.to_string()),
                envelope_summary,
            },
        }
    }

    /// The bytes of this message as delivery attempt `retry_count + 1` sends them.
    pub(super) fn body(&mut self, retry_count: u32) -> Vec<u8> {
        self.retry_count = retry_count;
        // Serialising strings, numbers and `Value`s into memory cannot fail;
        // an empty body would fail every receiver's checks loudly, not silently.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The JSON SIM message for `options.event` on `envelope`, as delivery attempt
/// `retry_count + 1` carries it. `generated_at` is when the message was first
/// generated; retries keep it, since they are the same message.
pub fn json_sim_body(
    envelope: &Envelope,
    options: &NotificationOptions,
    retry_count: u32,
    generated_at: DateTime<Utc>,
) -> Vec<u8> {
    SimMessage::new(envelope, options, generated_at).body(retry_count)
}

/// The REST Envelope object as it stood at the event, with the PDFs when asked.
fn summary(envelope: &Envelope, options: &NotificationOptions) -> Value {
    let mut summary = envelope_json(envelope, Include::ALL);
    let moment = Moment::of(envelope, &options.event, options.recipient_id.as_deref());
    if !moment.is_as_shown(envelope) {
        rewind(&mut summary, envelope, &moment);
    }
    if options.include_documents {
        attach_pdfs(&mut summary, envelope);
    }
    summary
}

/// Takes back everything in the summary that happened after the moment.
fn rewind(summary: &mut Value, envelope: &Envelope, moment: &Moment<'_>) {
    let Some(fields) = summary.as_object_mut() else { return };
    let at = docusign_time(moment.at);
    fields.insert("status".into(), json!(moment.status.as_str()));
    fields.insert("statusChangedDateTime".into(), json!(at));
    fields.remove("completedDateTime");
    if !moment.reached(envelope.sent_at) {
        fields.remove("sentDateTime");
        fields.remove("initialSentDateTime");
    }
    match moment.delivered_at(envelope) {
        Some(time) => fields.insert("deliveredDateTime".into(), json!(docusign_time(time))),
        None => fields.remove("deliveredDateTime"),
    };
    match moment.status {
        Status::Declined => {
            fields.insert("declinedDateTime".into(), json!(at));
        }
        Status::Voided => {
            fields.insert("voidedDateTime".into(), json!(at));
            fields.insert("voidedReason".into(), json!("Voided by the sender."));
        }
        _ => {}
    }

    let Some(recipients) = fields.get_mut("recipients") else { return };
    if let Some(signers) = recipients.get_mut("signers").and_then(Value::as_array_mut) {
        for (value, signer) in signers.iter_mut().zip(&envelope.signers) {
            let Some(fields) = value.as_object_mut() else { continue };
            let status = moment.signer_status(signer);
            fields.insert("status".into(), json!(status.as_str()));
            for (key, time) in [
                ("sentDateTime", signer.sent_at),
                ("deliveredDateTime", signer.delivered_at),
                ("signedDateTime", signer.signed_at),
            ] {
                if !moment.reached(time) || (status == Status::Declined && key == "signedDateTime") {
                    fields.remove(key);
                }
            }
            if status == Status::Declined {
                fields.insert("declinedDateTime".into(), json!(at));
                fields.insert("declinedReason".into(), json!(moment.decline_reason(signer)));
            }
            if status != Status::Completed {
                let sign_here = fields.get_mut("tabs").and_then(|t| t.get_mut("signHereTabs"));
                for tab in sign_here.and_then(Value::as_array_mut).into_iter().flatten() {
                    tab["status"] = json!("active");
                }
            }
        }
    }
    // Carbon copies are routed after every signer, so only completion reaches them.
    if let Some(copies) = recipients.get_mut("carbonCopies").and_then(Value::as_array_mut) {
        for fields in copies.iter_mut().filter_map(Value::as_object_mut) {
            fields.insert("status".into(), json!("created"));
            fields.remove("sentDateTime");
        }
    }
}

/// Adds `PDFBytes` to each `envelopeDocuments` entry: the content documents by
/// id and the certificate of completion.
fn attach_pdfs(summary: &mut Value, envelope: &Envelope) {
    let Some(entries) = summary.get_mut("envelopeDocuments").and_then(Value::as_array_mut) else { return };
    for entry in entries.iter_mut() {
        let Some(fields) = entry.as_object_mut() else { continue };
        let id = fields.get("documentId").and_then(Value::as_str).unwrap_or_default();
        let bytes = if id == "certificate" {
            pdf::certificate_pdf(envelope)
        } else if let Some(document) = envelope.documents.iter().find(|d| d.document_id == id) {
            pdf::document_pdf(envelope, document)
        } else {
            continue;
        };
        fields.insert("PDFBytes".into(), json!(base64::engine::general_purpose::STANDARD.encode(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::envelope;
    use super::*;

    fn message(options: &NotificationOptions) -> Value {
        let generated = DateTime::parse_from_rfc3339("2026-03-02T10:11:12.3456789Z").unwrap().with_timezone(&Utc);
        serde_json::from_slice(&json_sim_body(&envelope(), options, 0, generated)).unwrap()
    }

    fn options(event: &str) -> NotificationOptions {
        NotificationOptions { event: event.into(), ..NotificationOptions::default() }
    }

    #[test]
    fn json_sim_body_has_the_documented_fields() {
        let envelope = envelope();
        let message = message(&NotificationOptions::default());
        assert_eq!(message["event"], "envelope-completed");
        assert_eq!(message["apiVersion"], "v2.1");
        assert_eq!(
            message["uri"],
            format!("/restapi/v2.1/accounts/{}/envelopes/{}", envelope.account_id, envelope.envelope_id)
        );
        assert_eq!(message["retryCount"], 0);
        assert_eq!(message["configurationId"], 10_363_315);
        assert_eq!(message["generatedDateTime"], "2026-03-02T10:11:12.3456780Z");
        let data = &message["data"];
        assert_eq!(data["accountId"], envelope.account_id.to_string());
        assert_eq!(data["userId"], envelope.sender.user_id.to_string());
        assert_eq!(data["envelopeId"], envelope.envelope_id.to_string());
        assert!(data.get("recipientId").is_none());
        let summary = &data["envelopeSummary"];
        assert_eq!(summary["status"], "completed");
        assert_eq!(summary["envelopeId"], envelope.envelope_id.to_string());
        let signers = summary["recipients"]["signers"].as_array().unwrap();
        assert_eq!(signers.len(), envelope.signers.len());
        let text_tabs = signers[0]["tabs"]["textTabs"].as_array().unwrap();
        assert!(!text_tabs.is_empty());
        assert!(summary["envelopeDocuments"].as_array().unwrap().iter().all(|d| d.get("PDFBytes").is_none()));
        // The summary of the completed envelope is exactly what the REST API answers.
        assert_eq!(*summary, envelope_json(&envelope, Include::ALL));
    }

    #[test]
    fn top_level_fields_come_in_the_documented_order() {
        let body = json_sim_body(&envelope(), &NotificationOptions::default(), 3, Utc::now());
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.starts_with(r#"{"event":"envelope-completed","apiVersion":"v2.1","uri":"/restapi/v2.1/accounts/"#)
        );
        assert!(text.contains(r#","retryCount":3,"configurationId":10363315,"generatedDateTime":""#));
        assert!(text.contains(r#""data":{"accountId":""#));
    }

    #[test]
    fn the_summary_is_left_out_when_not_asked_for() {
        let message = message(&NotificationOptions { include_summary: false, ..NotificationOptions::default() });
        let data = message["data"].as_object().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["accountId", "envelopeId", "userId"]);
    }

    #[test]
    fn recipient_events_name_the_recipient() {
        let envelope = envelope();
        let first = envelope.signers[0].recipient_id.clone();
        let by_first =
            message(&NotificationOptions { recipient_id: Some(first.clone()), ..options("recipient-completed") });
        assert_eq!(by_first["event"], "recipient-completed");
        assert_eq!(by_first["data"]["recipientId"], first);
        // Only the first signer has signed yet.
        let summary = &by_first["data"]["envelopeSummary"];
        assert_eq!(summary["status"], "delivered");
        assert_eq!(summary["recipients"]["signers"][0]["status"], "completed");
        assert!(summary.get("completedDateTime").is_none());

        let by_last = message(&options("recipient-completed"));
        assert_eq!(by_last["data"]["recipientId"], envelope.signers.last().unwrap().recipient_id);
        assert_eq!(by_last["data"]["envelopeSummary"]["status"], "completed");
    }

    #[test]
    fn earlier_envelope_events_show_the_envelope_as_it_was() {
        let sent = message(&options("envelope-sent"));
        let summary = &sent["data"]["envelopeSummary"];
        assert_eq!(summary["status"], "sent");
        assert!(summary.get("completedDateTime").is_none() && summary.get("deliveredDateTime").is_none());
        assert!(summary["recipients"]["signers"].as_array().unwrap().iter().all(|s| s["status"] == "sent"));
        assert_eq!(summary["recipients"]["carbonCopies"][0]["status"], "created");

        assert_eq!(message(&options("envelope-delivered"))["data"]["envelopeSummary"]["status"], "delivered");

        let voided = message(&options("envelope-voided"));
        assert_eq!(voided["data"]["envelopeSummary"]["status"], "voided");
        assert!(voided["data"]["envelopeSummary"]["voidedDateTime"].is_string());

        let declined = message(&options("envelope-declined"));
        let summary = &declined["data"]["envelopeSummary"];
        assert_eq!(summary["status"], "declined");
        let last = summary["recipients"]["signers"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["status"], "declined");
        assert_eq!(last["tabs"]["signHereTabs"][0]["status"], "active");
        assert!(last.get("signedDateTime").is_none() && last["declinedDateTime"].is_string());
    }

    #[test]
    fn template_events_name_the_template() {
        let envelope = envelope();
        let message = message(&options("template-modified"));
        assert_eq!(
            message["uri"],
            format!("/restapi/v2.1/accounts/{}/templates/{}", envelope.account_id, envelope.template_id)
        );
        assert_eq!(message["data"]["templateId"], envelope.template_id.to_string());
        assert!(message["data"].get("envelopeId").is_none() && message["data"].get("envelopeSummary").is_none());
    }

    #[test]
    fn included_documents_decode_to_the_pdfs() {
        let envelope = envelope();
        let message = message(&NotificationOptions { include_documents: true, ..NotificationOptions::default() });
        let entries = message["data"]["envelopeSummary"]["envelopeDocuments"].as_array().unwrap();
        assert_eq!(entries.len(), envelope.documents.len() + 1);
        for entry in entries {
            let bytes = base64::engine::general_purpose::STANDARD.decode(entry["PDFBytes"].as_str().unwrap()).unwrap();
            let expected = match entry["documentId"].as_str().unwrap() {
                "certificate" => pdf::certificate_pdf(&envelope),
                id => pdf::document_pdf(&envelope, envelope.documents.iter().find(|d| d.document_id == id).unwrap()),
            };
            assert_eq!(bytes, expected);
        }
    }

    #[test]
    fn retries_change_only_the_retry_count() {
        let envelope = envelope();
        let generated = Utc::now();
        let first = json_sim_body(&envelope, &NotificationOptions::default(), 0, generated);
        let third = json_sim_body(&envelope, &NotificationOptions::default(), 2, generated);
        let (mut first, third): (Value, Value) =
            (serde_json::from_slice(&first).unwrap(), serde_json::from_slice(&third).unwrap());
        assert_eq!(third["retryCount"], 2);
        first["retryCount"] = json!(2);
        assert_eq!(first, third);
    }
}
