//! JSON SIM messages of every shape docs/DOCUSIGN.md §1 describes.

use super::*;
use crate::domain::{ListedDocument, Party, TabValue};
use crate::ids::{EnvelopeId, UserId};

fn parse(body: &str) -> (Result<crate::domain::ConnectNotification, FormatError>, MemorySink) {
    let mut sink = MemorySink::default();
    let result = parse_json(body.as_bytes(), &mut sink);
    let mut from_memory = MemorySink::default();
    let in_memory = parse_json_bytes(body.as_bytes(), &mut from_memory);
    assert_same(&result, &in_memory);
    assert_eq!(sink.documents, from_memory.documents, "the in-memory parse stores the same documents");
    (result, sink)
}

fn tab(label: &str, value: &str) -> TabValue {
    TabValue { label: label.into(), value: value.into() }
}

#[test]
fn envelope_completed_with_summary_carries_recipients_tabs_fields_and_documents() {
    let (result, sink) = parse(&fixture("json-envelope-completed.json"));
    let n = result.unwrap();
    assert_eq!(n.format, Format::Json);
    assert_eq!(n.event, "envelope-completed");
    assert_eq!(n.envelope.account_id, account());
    // Upper-case GUIDs are normalised.
    assert_eq!(n.envelope.envelope_id, EnvelopeId::parse(ENVELOPE).unwrap());
    assert_eq!(n.envelope.envelope_id.to_string(), ENVELOPE);
    assert_eq!(n.user_id, Some(UserId::parse(USER).unwrap()));
    assert_eq!(n.recipient_id, None);
    assert_eq!(n.envelope.status.as_deref(), Some("completed"));
    assert_eq!(n.generated_at, utc("2024-05-14T16:42:07.3619054Z"));
    assert_eq!(n.envelope.subject.as_deref(), Some("Onboarding: laptop & access request for Priya Raman"));
    assert_eq!(
        n.envelope.sender,
        Some(Party { name: Some("Hannah Okafor".into()), email: Some("hannah.okafor@example.com".into()) })
    );
    assert_eq!(n.envelope.completed_at, Some(utc("2024-05-14T16:38:59.917Z")));
    assert!(n.has_envelope_data);

    assert_eq!(n.envelope.recipients.len(), 3);
    let priya = &n.envelope.recipients[0];
    assert_eq!(priya.recipient_id.as_deref(), Some("1"));
    assert_eq!(priya.kind, "signer");
    assert_eq!(priya.name.as_deref(), Some("Priya Raman"));
    assert_eq!(priya.email.as_deref(), Some("priya.raman@example.org"));
    assert_eq!(priya.role.as_deref(), Some("New hire"));
    assert_eq!(priya.routing_order, Some(1));
    assert_eq!(priya.status.as_deref(), Some("completed"));
    assert_eq!(priya.signed_at, Some(utc("2024-05-14T16:31:05.6604221Z")));
    // Sign-here carries no value and is left out; checkboxes report
    // `selected`, radio groups their selected radio.
    assert_eq!(
        priya.tabs,
        vec![
            tab("employee_id", "E-20931"),
            tab("department", "Platform Engineering"),
            tab("start_date", "2024-06-03"),
            tab("monitors", "2"),
            tab("laptop_model", "14-inch"),
            tab("needs_vpn", "true"),
            tab("keyboard_layout", "uk"),
        ]
    );
    let marcus = &n.envelope.recipients[1];
    assert_eq!((marcus.routing_order, marcus.role.as_deref()), (Some(2), Some("Manager")));
    assert_eq!(marcus.tabs, vec![tab("cost_center", "CC-4410")]);
    let desk = &n.envelope.recipients[2];
    assert_eq!(desk.kind, "carboncopy");
    assert_eq!((desk.routing_order, desk.signed_at, desk.tabs.len()), (Some(3), None, 0));

    assert_eq!(
        n.envelope.custom_fields,
        vec![
            ("ticket".to_owned(), "REQ-88123".to_owned()),
            ("cost_center".to_owned(), String::new()),
            ("region".to_owned(), "EMEA".to_owned()),
        ]
    );
    let listed = |id: &str, name: &str, kind| ListedDocument { document_id: id.into(), name: name.into(), kind };
    assert_eq!(
        n.envelope.documents,
        vec![
            listed("1", "Offer letter.pdf", DocumentKind::Content),
            listed("2", "Equipment request.pdf", DocumentKind::Content),
            listed("certificate", "Summary", DocumentKind::Summary),
        ]
    );
    assert!(n.embedded.is_empty());
    assert!(sink.documents.is_empty());
}

#[test]
fn message_without_envelope_summary_has_only_ids() {
    let (result, _) = parse(&fixture("json-envelope-sent-minimal.json"));
    let n = result.unwrap();
    assert_eq!(n.event, "envelope-sent");
    assert_eq!(n.envelope.account_id, account());
    assert_eq!(n.envelope.envelope_id.to_string(), "7e4b1d92-5c3a-4f6e-8d07-9a2b4c6e8f10");
    assert_eq!(n.user_id, Some(UserId::parse(USER).unwrap()));
    assert_eq!(n.generated_at, utc("2024-05-14T15:58:13.091142Z"));
    assert!(!n.has_envelope_data);
    assert_eq!(
        (n.envelope.status, n.envelope.subject, n.envelope.sender, n.envelope.completed_at),
        (None, None, None, None)
    );
    assert!(
        n.envelope.recipients.is_empty()
            && n.envelope.custom_fields.is_empty()
            && n.envelope.documents.is_empty()
            && n.embedded.is_empty()
    );
}

#[test]
fn recipient_event_carries_the_recipient_id() {
    let (result, _) = parse(&fixture("json-recipient-completed.json"));
    let n = result.unwrap();
    assert_eq!(n.event, "recipient-completed");
    assert_eq!(n.recipient_id.as_deref(), Some("98969862"));
    assert_eq!(n.generated_at, utc("2024-05-14T16:35:51.0000004Z"));
    assert!(!n.has_envelope_data);
}

#[test]
fn summary_without_recipients_or_custom_fields_is_not_envelope_data() {
    let body = format!(
        r#"{{"event":"envelope-delivered","generatedDateTime":"2024-01-02T03:04:05.0000000Z",
        "data":{{"accountId":"{ACCOUNT}","envelopeId":"{ENVELOPE}","envelopeSummary":{{"status":"Delivered","emailSubject":""}}}}}}"#
    );
    let n = parse(&body).0.unwrap();
    assert!(!n.has_envelope_data);
    assert_eq!(n.envelope.status.as_deref(), Some("delivered"));
    assert_eq!(n.envelope.subject, None, "an empty subject counts as none");
    assert_eq!(n.user_id, None);
}

#[test]
fn numbers_and_booleans_are_taken_where_strings_are_usual() {
    let body = format!(
        r#"{{"event":"envelope-completed","generatedDateTime":"2024-01-02T03:04:05Z","retryCount":3,
        "data":{{"accountId":"{ACCOUNT}","envelopeId":"{ENVELOPE}","recipientId":7,
        "envelopeSummary":{{"recipients":{{"signers":[{{"recipientId":1,"routingOrder":2,"status":"Completed",
        "tabs":{{"numberTabs":[{{"tabLabel":"seats","value":12}}],"checkboxTabs":[{{"tabLabel":"ok","selected":true}}]}}}}],
        "witnesses":[{{"recipientId":"4","routingOrder":"3"}}],"recipientCount":2}},
        "customFields":{{"textCustomFields":[{{"name":"n","value":1.5}},{{"value":"nameless"}}]}}}}}}}}"#
    );
    let n = parse(&body).0.unwrap();
    assert_eq!(n.recipient_id.as_deref(), Some("7"));
    let signer = &n.envelope.recipients[0];
    assert_eq!((signer.recipient_id.as_deref(), signer.routing_order), (Some("1"), Some(2)));
    assert_eq!(signer.kind, "signer", "recipientType missing: the array's type");
    assert_eq!(signer.tabs, vec![tab("seats", "12"), tab("ok", "true")]);
    assert_eq!(n.envelope.recipients[1].kind, "witness");
    assert_eq!(n.envelope.custom_fields, vec![("n".to_owned(), "1.5".to_owned())]);
    assert!(n.has_envelope_data);
}

#[test]
fn nulls_and_unknown_fields_are_ignored() {
    let body = format!(
        r#"{{"eventId":"x","event":"envelope-voided","generatedDateTime":"2024-01-02T03:04:05Z","extra":{{"deep":[1,{{"a":null}}]}},
        "data":{{"accountId":"{ACCOUNT}","envelopeId":"{ENVELOPE}","userId":null,"recipientId":null,
        "envelopeSummary":{{"status":"voided","voidedReason":"duplicate","sender":null,"recipients":null,
        "customFields":null,"envelopeDocuments":null,"completedDateTime":""}}}}}}"#
    );
    let n = parse(&body).0.unwrap();
    assert_eq!((n.event.as_str(), n.envelope.status.as_deref()), ("envelope-voided", Some("voided")));
    assert_eq!((n.user_id, n.recipient_id, n.envelope.sender, n.envelope.completed_at), (None, None, None, None));
    assert!(!n.has_envelope_data);
}

fn document_json(id: &str, name: &str, kind: &str, bytes: Option<&[u8]>) -> String {
    let pdf = bytes.map(|b| format!(r#","PDFBytes":"{}""#, base64(b))).unwrap_or_default();
    format!(r#"{{"documentId":"{id}","name":"{name}","type":"{kind}","order":"1","pages":[]{pdf}}}"#)
}

fn message_with_documents(documents: &[String]) -> String {
    format!(
        r#"{{"event":"envelope-completed","generatedDateTime":"2024-01-02T03:04:05.1234567Z",
        "data":{{"accountId":"{ACCOUNT}","envelopeId":"{ENVELOPE}",
        "envelopeSummary":{{"status":"completed","envelopeDocuments":[{}]}}}}}}"#,
        documents.join(",")
    )
}

#[test]
fn pdf_bytes_are_decoded_exactly_into_the_sink() {
    let contract = pdf_like(100_000, 7);
    let certificate = pdf_like(2_501, 9);
    let body = message_with_documents(&[
        document_json("1", "Contract.pdf", "content", Some(&contract)),
        document_json("2", "Annex.pdf", "content", None),
        document_json("certificate", "Summary", "summary", Some(&certificate)),
    ]);
    let (result, sink) = parse(&body);
    let n = result.unwrap();
    assert_eq!(sink.documents.len(), 2);
    let (first, second) = (&sink.documents[0], &sink.documents[1]);
    assert_eq!(
        (first.document_id.as_deref(), first.name.as_str(), first.kind),
        (Some("1"), "Contract.pdf", DocumentKind::Content)
    );
    assert_eq!(first.bytes, contract);
    assert!(first.finished);
    assert_eq!((second.document_id.as_deref(), second.kind), (Some("certificate"), DocumentKind::Summary));
    assert_eq!(second.bytes, certificate);
    assert!(sink.largest_write <= MAX_SINK_WRITE);

    assert_eq!(n.embedded.len(), 2);
    assert_eq!(n.embedded[0].size_bytes, 100_000);
    assert_eq!(n.embedded[0].sha256, sha256_hex(&contract));
    assert_eq!(n.embedded[1].document_id, "certificate");
    assert_eq!(n.embedded[1].sha256, sha256_hex(&certificate));
    assert_eq!(n.envelope.documents.len(), 3, "every document is listed, with or without bytes");
}

#[test]
fn pdf_bytes_before_the_name_still_begin_with_the_right_name() {
    let bytes = pdf_like(40_000, 3);
    let document =
        format!(r#"{{"PDFBytes":"{}","type":"content","documentId":"5","name":"Late name.pdf"}}"#, base64(&bytes));
    let (result, sink) = parse(&message_with_documents(&[document]));
    let n = result.unwrap();
    assert_eq!(sink.documents[0].name, "Late name.pdf");
    assert_eq!(sink.documents[0].document_id.as_deref(), Some("5"));
    assert_eq!(sink.documents[0].bytes, bytes);
    assert_eq!(n.embedded[0].name, "Late name.pdf");
}

#[test]
fn empty_or_null_pdf_bytes_store_nothing() {
    let body = message_with_documents(&[
        r#"{"documentId":"1","name":"a","type":"content","PDFBytes":""}"#.to_owned(),
        r#"{"documentId":"2","name":"b","type":"content","PDFBytes":null}"#.to_owned(),
        r#"{"PDFBytes":"","documentId":"3"}"#.to_owned(),
    ]);
    let (result, sink) = parse(&body);
    let n = result.unwrap();
    assert!(sink.documents.is_empty() && n.embedded.is_empty());
    assert_eq!(n.envelope.documents.len(), 3);
}

#[test]
fn a_leading_bom_is_skipped() {
    let body = format!("\u{feff}{}", fixture("json-envelope-sent-minimal.json"));
    assert_eq!(parse(&body).0.unwrap().event, "envelope-sent");
}
