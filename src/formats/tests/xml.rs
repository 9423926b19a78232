//! Legacy XML messages: pretty and single-line, namespaces, documents,
//! time zones, status names.

use super::*;
use crate::domain::{ConnectNotification, ListedDocument, Party, TabValue};

fn parse(body: &str, hint: Option<AccountId>) -> (Result<ConnectNotification, FormatError>, MemorySink) {
    let mut sink = MemorySink::default();
    let result = parse_xml(body.as_bytes(), &hint.into(), &mut sink);
    (result, sink)
}

/// The pretty fixture as DocuSign usually sends it: one line.
fn single_line(pretty: &str) -> String {
    pretty.lines().map(str::trim).collect()
}

fn tab(label: &str, value: &str) -> TabValue {
    TabValue { label: label.into(), value: value.into() }
}

#[test]
fn completed_message_pretty_printed() {
    let (result, sink) = parse(&fixture("xml-envelope-completed.xml"), Some(account()));
    let n = result.unwrap();
    assert_eq!(n.format, Format::Xml);
    assert_eq!(n.event, "envelope-completed");
    assert_eq!(n.envelope.status.as_deref(), Some("completed"));
    // The AccountId custom field holds the account number, so the header's GUID is used.
    assert_eq!(n.envelope.account_id, account());
    assert_eq!(n.envelope.envelope_id.to_string(), ENVELOPE);
    assert_eq!((n.user_id, n.recipient_id.as_deref()), (None, None));
    // Pacific time at −7 h: 09:42 local is 16:42 UTC; seven fractional digits survive.
    assert_eq!(n.generated_at, utc("2024-05-14T16:42:07.3619054Z"));
    assert_eq!(n.envelope.completed_at, Some(utc("2024-05-14T16:31:05.66Z")));
    assert_eq!(n.envelope.subject.as_deref(), Some("Onboarding: laptop & access request"));
    assert_eq!(
        n.envelope.sender,
        Some(Party { name: Some("Hannah Okafor".into()), email: Some("hannah.okafor@example.com".into()) })
    );
    assert!(n.has_envelope_data);

    assert_eq!(n.envelope.recipients.len(), 2);
    let priya = &n.envelope.recipients[0];
    assert_eq!(priya.kind, "signer");
    assert_eq!(priya.name.as_deref(), Some("Priya Raman"));
    assert_eq!(priya.email.as_deref(), Some("priya.raman@example.org"));
    assert_eq!(priya.routing_order, Some(1));
    assert_eq!(priya.status.as_deref(), Some("completed"));
    assert_eq!(priya.signed_at, Some(utc("2024-05-14T16:31:05.6604221Z")));
    assert_eq!(priya.recipient_id.as_deref(), Some("8d4f2a19-3e7b-4c6d-9a05-1f8e6b3c2d70"));
    assert_eq!(priya.role, None);
    // An empty <TabValue /> is a value; a tab without one is not reported.
    assert_eq!(
        priya.tabs,
        vec![tab("Signature", ""), tab("employee_id", "E-20931"), tab("department", "R&D <Platform> – Berlin")]
    );
    let desk = &n.envelope.recipients[1];
    assert_eq!((desk.kind.as_str(), desk.routing_order, desk.signed_at), ("carboncopy", Some(2), None));

    // Recipient-level custom fields are not envelope fields.
    let names: Vec<&str> = n.envelope.custom_fields.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["AccountId", "AccountName", "AccountSite", "ticket", "cost_center"]);
    assert_eq!(n.envelope.custom_fields[3].1, "REQ-88123");
    assert_eq!(n.envelope.custom_fields[4].1, "");
    assert_eq!(
        n.envelope.documents,
        vec![
            ListedDocument { document_id: "1".into(), name: "Offer letter".into(), kind: DocumentKind::Content },
            ListedDocument { document_id: "2".into(), name: "Equipment request".into(), kind: DocumentKind::Content },
        ]
    );
    assert!(n.embedded.is_empty() && sink.documents.is_empty());
}

#[test]
fn single_line_message_parses_the_same() {
    let pretty = fixture("xml-envelope-completed.xml");
    let line = single_line(&pretty);
    assert_eq!(line.lines().count(), 1);
    let a = parse(&pretty, Some(account())).0.unwrap();
    let b = parse(&line, Some(account())).0.unwrap();
    assert_eq!(a, b);
}

#[test]
fn message_without_xsd_namespace_and_with_a_guid_account_field() {
    let hint = AccountId::parse("11111111-2222-4333-8444-555555555555").unwrap();
    let n = parse(&fixture("xml-envelope-sent-no-xsd.xml"), Some(hint)).0.unwrap();
    assert_eq!((n.event.as_str(), n.envelope.status.as_deref()), ("envelope-sent", Some("sent")));
    // The body's GUID wins over the header.
    assert_eq!(n.envelope.account_id, account());
    // +1 h: 14:05 local is 13:05 UTC; two fractional digits.
    assert_eq!(n.generated_at, utc("2023-11-02T13:05:10.42Z"));
    assert_eq!(n.envelope.completed_at, None);
    assert_eq!(n.envelope.recipients[0].status.as_deref(), Some("sent"));
    assert_eq!(n.envelope.recipients[0].signed_at, None);
}

#[test]
fn root_without_any_namespace_is_accepted_but_foreign_children_are_not_read() {
    let body = fixture("xml-envelope-sent-no-xsd.xml")
        .replace(r#" xmlns="http://www.docusign.net/API/3.0""#, "")
        .replace("<Subject>", r#"<x:Subject xmlns:x="urn:other">ignored</x:Subject><Subject>"#);
    let n = parse(&body, None).0.unwrap();
    assert_eq!(n.envelope.subject.as_deref(), Some("Contractor agreement"));
    assert_eq!(n.envelope.account_id, account());
}

#[test]
fn account_id_falls_back_to_the_header_then_the_configured_accounts_then_fails() {
    let body = fixture("xml-envelope-completed.xml");
    let err = parse(&body, None).0.unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field, .. } if field.contains("AccountId")), "{err}");
    assert!(err.to_string().contains("5518204"), "{err}");
    assert!(err.to_string().contains("account_number"), "the refusal names the setting that fixes it: {err}");
    let without_field = body.replace("<Name>AccountId</Name>", "<Name>AccountNumber</Name>");
    let err = parse(&without_field, None).0.unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field, .. } if field.contains("AccountId")), "{err}");
    assert_eq!(parse(&without_field, Some(account())).0.unwrap().envelope.account_id, account());

    let other = AccountId::parse("11111111-2222-4333-8444-555555555555").unwrap();
    let with = |hints: AccountHints, body: &str| {
        parse_xml(body.as_bytes(), &hints, &mut MemorySink::default()).map(|n| n.envelope.account_id)
    };
    let mapped = AccountHints { by_number: [("5518204".to_string(), account())].into(), ..AccountHints::default() };
    assert_eq!(with(mapped.clone(), &body).unwrap(), account(), "the number's configured GUID");
    assert!(with(mapped, &without_field).is_err(), "a mapping needs the number");
    let only = AccountHints { only: Some(other), ..AccountHints::default() };
    assert_eq!(with(only.clone(), &body).unwrap(), other, "the only configured account");
    assert_eq!(with(only, &without_field).unwrap(), other);
    let agreeing =
        AccountHints { header: Some(account()), by_number: [("5518204".to_string(), account())].into(), only: None };
    assert_eq!(with(agreeing, &body).unwrap(), account());
    let disagreeing =
        AccountHints { header: Some(other), by_number: [("5518204".to_string(), account())].into(), only: None };
    let err = with(disagreeing, &body).unwrap_err().to_string();
    assert!(err.contains("X-DocuSign-AccountId names"), "the header and the signed number disagree: {err}");
    let unmapped =
        AccountHints { by_number: [("1".to_string(), other)].into(), only: Some(other), ..AccountHints::default() };
    assert!(with(unmapped, &body).is_err(), "an unmapped number is not taken for the only account");
}

fn with_status_and_offset(status: &str, offset: Option<&str>) -> String {
    let body = fixture("xml-envelope-completed.xml")
        .replace("<Status>Completed</Status>\n    <Created>", &format!("<Status>{status}</Status>\n    <Created>"));
    match offset {
        Some(offset) => {
            body.replace("<TimeZoneOffset>-7</TimeZoneOffset>", &format!("<TimeZoneOffset>{offset}</TimeZoneOffset>"))
        }
        None => body.replace("<TimeZoneOffset>-7</TimeZoneOffset>", ""),
    }
}

#[test]
fn legacy_statuses_map_to_json_sim_event_names() {
    for (status, event) in [
        ("Created", "envelope-created"),
        ("Sent", "envelope-sent"),
        ("Delivered", "envelope-delivered"),
        ("Signed", "envelope-signed"),
        ("Completed", "envelope-completed"),
        ("Declined", "envelope-declined"),
        ("Voided", "envelope-voided"),
    ] {
        let n = parse(&with_status_and_offset(status, Some("-7")), Some(account())).0.unwrap();
        assert_eq!(n.event, event);
        assert_eq!(n.envelope.status.as_deref(), Some(status.to_ascii_lowercase().as_str()));
    }
    let err = parse(&with_status_and_offset("Completed; DROP", Some("-7")), Some(account())).0.unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "EnvelopeStatus/Status", .. }), "{err}");
}

#[test]
fn time_zone_offset_converts_every_time_and_defaults_to_utc() {
    let at = |offset| parse(&with_status_and_offset("Completed", offset), Some(account())).0.unwrap();
    let west = at(Some("-7"));
    assert_eq!(west.generated_at, utc("2024-05-14T16:42:07.3619054Z"));
    assert_eq!(west.envelope.recipients[0].signed_at, Some(utc("2024-05-14T16:31:05.6604221Z")));
    assert_eq!(west.envelope.completed_at, Some(utc("2024-05-14T16:31:05.66Z")));
    let none = at(None);
    assert_eq!(none.generated_at, utc("2024-05-14T09:42:07.3619054Z"));
    let india = at(Some("5.5"));
    assert_eq!(india.envelope.completed_at, Some(utc("2024-05-14T04:01:05.66Z")));
    let err = parse(&with_status_and_offset("Completed", Some("PST")), Some(account())).0.unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "TimeZoneOffset", .. }), "{err}");
}

fn pdf_element(name: Option<&str>, bytes: &[u8], id: Option<&str>, kind: &str, name_last: bool) -> String {
    let name = name.map(|n| format!("<Name>{n}</Name>")).unwrap_or_default();
    let id = id.map(|i| format!("<DocumentID>{i}</DocumentID>")).unwrap_or_default();
    let pdf = format!("<PDFBytes>{}</PDFBytes>", base64_wrapped(bytes));
    if name_last {
        format!("<DocumentPDF>{pdf}{id}<DocumentType>{kind}</DocumentType>{name}</DocumentPDF>")
    } else {
        format!("<DocumentPDF>{name}{pdf}{id}<DocumentType>{kind}</DocumentType></DocumentPDF>")
    }
}

pub(super) fn with_document_pdfs(pdfs: &[String]) -> String {
    fixture("xml-envelope-completed.xml")
        .replace("  <TimeZone>", &format!("  <DocumentPDFs>{}</DocumentPDFs>\n  <TimeZone>", pdfs.concat()))
}

#[test]
fn document_pdfs_content_and_summary_are_decoded_exactly() {
    let offer = pdf_like(70_001, 1);
    let equipment = pdf_like(3, 2);
    let certificate = pdf_like(12_345, 3);
    let body = with_document_pdfs(&[
        pdf_element(Some("Offer letter"), &offer, Some("1"), "CONTENT", false),
        pdf_element(Some("Equipment request"), &equipment, Some("2"), "CONTENT", false),
        pdf_element(Some(&format!("CertificateOfCompletion_{ENVELOPE}.pdf")), &certificate, None, "SUMMARY", false),
    ]);
    let (result, sink) = parse(&body, Some(account()));
    let n = result.unwrap();

    // The sink was told the id (from DocumentStatuses) and kind before
    // DocumentID and DocumentType were read.
    let begun: Vec<_> = sink.documents.iter().map(|d| (d.document_id.as_deref(), d.name.as_str(), d.kind)).collect();
    let certificate_name = format!("CertificateOfCompletion_{ENVELOPE}.pdf");
    assert_eq!(
        begun,
        [
            (Some("1"), "Offer letter", DocumentKind::Content),
            (Some("2"), "Equipment request", DocumentKind::Content),
            (None, certificate_name.as_str(), DocumentKind::Summary),
        ]
    );
    assert_eq!(sink.documents[0].bytes, offer);
    assert_eq!(sink.documents[1].bytes, equipment);
    assert_eq!(sink.documents[2].bytes, certificate);
    assert!(sink.documents.iter().all(|d| d.finished));
    assert!(sink.largest_write <= MAX_SINK_WRITE);

    let embedded: Vec<_> = n.embedded.iter().map(|d| (d.document_id.as_str(), d.kind, d.size_bytes)).collect();
    assert_eq!(
        embedded,
        [
            ("1", DocumentKind::Content, 70_001),
            ("2", DocumentKind::Content, 3),
            ("certificate", DocumentKind::Summary, 12_345)
        ]
    );
    assert_eq!(n.embedded[2].sha256, sha256_hex(&certificate));
    assert_eq!(n.embedded[2].name, certificate_name);
    // The listing stays DocumentStatuses'.
    assert_eq!(n.envelope.documents.len(), 2);
}

#[test]
fn document_pdf_children_in_another_order_are_fixed_up() {
    let bytes = pdf_like(5_000, 4);
    let body = with_document_pdfs(&[pdf_element(Some("Equipment request"), &bytes, Some("2"), "CONTENT", true)]);
    let (result, sink) = parse(&body, Some(account()));
    let n = result.unwrap();
    // Nothing was known at begin…
    assert_eq!((sink.documents[0].document_id.as_deref(), sink.documents[0].name.as_str()), (None, ""));
    assert_eq!(sink.documents[0].bytes, bytes);
    // …and the notification has it all.
    assert_eq!((n.embedded[0].document_id.as_str(), n.embedded[0].name.as_str()), ("2", "Equipment request"));
    assert_eq!(n.embedded[0].kind, DocumentKind::Content);
}

#[test]
fn pdf_bytes_tolerate_comments_cdata_and_an_empty_element() {
    let bytes = pdf_like(3_000, 5);
    let encoded = base64(&bytes);
    let (head, tail) = encoded.split_at(1_000);
    let (middle, tail) = tail.split_at(1_000);
    let body = with_document_pdfs(&[
        format!(
            "<DocumentPDF><Name>Offer letter</Name><PDFBytes>{head}<!-- split -->{middle}<![CDATA[{tail}]]>\n</PDFBytes>\
             <DocumentID>1</DocumentID><DocumentType>CONTENT</DocumentType></DocumentPDF>"
        ),
        "<DocumentPDF><Name>Empty</Name><PDFBytes /><DocumentType>CONTENT</DocumentType></DocumentPDF>".to_owned(),
        "<DocumentPDF><Name>Blank</Name><PDFBytes>\n  \n</PDFBytes></DocumentPDF>".to_owned(),
    ]);
    let (result, sink) = parse(&body, Some(account()));
    let n = result.unwrap();
    assert_eq!(sink.documents.len(), 1);
    assert_eq!(sink.documents[0].bytes, bytes);
    assert_eq!(n.embedded.len(), 1);
}

#[test]
fn a_leading_bom_is_skipped() {
    let body = format!("\u{feff}{}", fixture("xml-envelope-sent-no-xsd.xml"));
    assert_eq!(parse(&body, None).0.unwrap().event, "envelope-sent");
}
