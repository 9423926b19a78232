//! Legacy Connect XML messages (`docs/DOCUSIGN.md` §2): one
//! `DocuSignEnvelopeInformation` document on a single line, as real messages
//! usually arrive.

use std::borrow::Cow;

use base64::Engine;
use chrono::{DateTime, Timelike, Utc};
use uuid::Uuid;

use super::{Moment, NotificationOptions, Status};
use crate::sandbox::envelopes::{Envelope, Signer, Tab};
use crate::sandbox::json::sender_json;
use crate::sandbox::pdf;

pub(super) const API_NAMESPACE: &str = "http://www.docusign.net/API/3.0";
/// What `Identity::generate` names the sandbox account; envelopes do not carry it.
const ACCOUNT_NAME: &str = "Sandbox Company";
const ACCOUNT_SITE: &str = "demo";

/// The legacy XML message for `options.event` on `envelope`, generated now,
/// with times local to UTC + `time_zone_offset_hours`.
pub fn xml_body(envelope: &Envelope, options: &NotificationOptions, time_zone_offset_hours: i32) -> Vec<u8> {
    xml_body_at(envelope, options, time_zone_offset_hours, Utc::now())
}

/// [`xml_body`] generated at a given time, so that every delivery attempt of
/// one message carries the same bytes (legacy XML has no retry count).
pub fn xml_body_at(
    envelope: &Envelope,
    options: &NotificationOptions,
    time_zone_offset_hours: i32,
    generated_at: DateTime<Utc>,
) -> Vec<u8> {
    // Real zones lie within ±14 h; clamping keeps the time arithmetic in range.
    let offset = time_zone_offset_hours.clamp(-14, 14);
    let moment = Moment::of(envelope, &options.event, options.recipient_id.as_deref());
    let mut xml = Xml { out: String::new(), offset };
    xml.out.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    xml.out.push_str(&format!(
        r#"<DocuSignEnvelopeInformation xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="{API_NAMESPACE}">"#
    ));
    envelope_status(&mut xml, envelope, &moment, generated_at);
    if options.include_documents {
        document_pdfs(&mut xml, envelope);
    }
    xml.text("TimeZone", &time_zone_name(offset));
    xml.text("TimeZoneOffset", &offset.to_string());
    xml.close("DocuSignEnvelopeInformation");
    xml.out.into_bytes()
}

fn envelope_status(xml: &mut Xml, envelope: &Envelope, moment: &Moment<'_>, generated_at: DateTime<Utc>) {
    let done = moment.is_final(envelope);
    xml.open("EnvelopeStatus");
    xml.open("RecipientStatuses");
    for signer in &envelope.signers {
        signer_status(xml, signer, moment);
    }
    for (index, person) in envelope.carbon_copies.iter().enumerate() {
        xml.open("RecipientStatus");
        xml.text("Type", "CarbonCopy");
        xml.text("Email", &person.email);
        xml.text("UserName", &person.name);
        xml.text("RoutingOrder", &(envelope.signers.len() + 1).to_string());
        xml.time("Sent", done.then_some(envelope.completed_at));
        xml.nil("DeclineReason");
        xml.text("Status", if done { "Completed" } else { "Created" });
        xml.text("RecipientIPAddress", "");
        xml.text("CustomFields", "");
        xml.text("AccountStatus", "Active");
        // Carbon copies carry no GUID of their own here; derive a stable one.
        let name = format!("{}/cc/{index}", envelope.envelope_id);
        xml.text("RecipientId", &Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()).to_string());
        xml.close("RecipientStatus");
    }
    xml.close("RecipientStatuses");

    xml.time("TimeGenerated", Some(generated_at));
    xml.text("EnvelopeID", &envelope.envelope_id.to_string());
    xml.text("Subject", &envelope.subject);
    xml.text("UserName", &envelope.sender.name);
    xml.text("Email", &envelope.sender.email);
    xml.text("Status", moment.status.legacy());
    xml.time("Created", Some(envelope.created_at));
    xml.time("Sent", moment.envelope_sent(envelope));
    xml.time("Delivered", moment.delivered_at(envelope));
    xml.time("Signed", done.then_some(envelope.completed_at));
    xml.time("Completed", done.then_some(envelope.completed_at));
    xml.text("ACStatus", "Original");
    xml.time("ACStatusDate", Some(envelope.created_at));
    xml.text("ACHolder", &envelope.sender.name);
    xml.text("ACHolderEmail", &envelope.sender.email);
    xml.text("ACHolderLocation", "DocuSign");
    xml.text("SigningLocation", "Online");
    let sender = sender_json(envelope);
    xml.text("SenderIPAddress", sender["ipAddress"].as_str().unwrap_or_default());
    xml.text("EnvelopePDFHash", "");

    xml.open("CustomFields");
    for (name, value) in &envelope.custom_fields {
        custom_field(xml, name, value, true);
    }
    // DocuSign adds these three to every envelope's fields; "AccountId"
    // holds the account's number, not its GUID.
    custom_field(xml, "AccountId", &crate::sandbox::identity::account_number(envelope.account_id), false);
    custom_field(xml, "AccountName", ACCOUNT_NAME, false);
    custom_field(xml, "AccountSite", ACCOUNT_SITE, false);
    xml.close("CustomFields");

    xml.text("AutoNavigation", "true");
    xml.text("EnvelopeIdStamping", "true");
    xml.text("AuthoritativeCopy", "false");
    xml.open("DocumentStatuses");
    let template_name = envelope.subject.split(':').next().unwrap_or_default().trim();
    for (index, document) in envelope.documents.iter().enumerate() {
        xml.open("DocumentStatus");
        xml.text("ID", &document.document_id);
        xml.text("Name", &document.name);
        xml.text("TemplateName", template_name);
        xml.text("Sequence", &(index + 1).to_string());
        xml.close("DocumentStatus");
    }
    xml.close("DocumentStatuses");
    xml.close("EnvelopeStatus");
}

fn signer_status(xml: &mut Xml, signer: &Signer, moment: &Moment<'_>) {
    let status = moment.signer_status(signer);
    let signed = status == Status::Completed;
    xml.open("RecipientStatus");
    xml.text("Type", "Signer");
    xml.text("Email", &signer.person.email);
    xml.text("UserName", &signer.person.name);
    xml.text("RoutingOrder", &signer.routing_order.to_string());
    xml.time("Sent", moment.signer_sent(signer));
    xml.time("Delivered", moment.signer_delivered(signer));
    xml.time("Signed", signed.then_some(signer.signed_at));
    match moment.decline_reason(signer) {
        Some(reason) => xml.text("DeclineReason", &reason),
        None => xml.nil("DeclineReason"),
    }
    xml.text("Status", status.legacy());
    let opened = moment.signer_delivered(signer).is_some();
    xml.text("RecipientIPAddress", if opened { &signer.ip_address } else { "" });
    xml.text("CustomFields", "");
    xml.open("TabStatuses");
    let tab_state = if signed { "Signed" } else { "Active" };
    for (index, tab) in signer.tabs.iter().enumerate() {
        tab_status(xml, tab, index, tab_state);
    }
    xml.open("TabStatus");
    xml.text("TabType", "SignHere");
    xml.text("Status", tab_state);
    xml.text("XPosition", "400");
    xml.text("YPosition", "700");
    xml.text("TabLabel", "Signature");
    xml.text("TabName", "SignHere");
    xml.text("TabValue", "");
    xml.text("DocumentID", "1");
    xml.text("PageNumber", "1");
    xml.close("TabStatus");
    xml.close("TabStatuses");
    xml.text("AccountStatus", "Active");
    xml.text("RecipientId", &signer.recipient_id_guid.to_string());
    xml.close("RecipientStatus");
}

fn tab_status(xml: &mut Xml, tab: &Tab, index: usize, state: &str) {
    xml.open("TabStatus");
    // Legacy XML reports data tabs as Custom, with the kind in CustomTabType.
    xml.text("TabType", "Custom");
    xml.text("Status", state);
    // The same positions the REST tabs report.
    xml.text("XPosition", &(100 + 20 * index).to_string());
    xml.text("YPosition", &(200 + 30 * index).to_string());
    xml.text("TabLabel", &tab.label);
    xml.text("TabName", &tab.label);
    xml.text("TabValue", &tab.value);
    xml.text("DocumentID", &tab.document_id);
    xml.text("PageNumber", &tab.page.to_string());
    xml.text("OriginalValue", &tab.value);
    xml.text("CustomTabType", if tab.tab_type == "date" { "Date" } else { "Text" });
    xml.close("TabStatus");
}

fn custom_field(xml: &mut Xml, name: &str, value: &str, show: bool) {
    xml.open("CustomField");
    xml.text("Name", name);
    xml.text("Show", if show { "True" } else { "False" });
    xml.text("Required", "False");
    xml.text("Value", value);
    xml.text("CustomFieldType", "Text");
    xml.close("CustomField");
}

fn document_pdfs(xml: &mut Xml, envelope: &Envelope) {
    let base64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    xml.open("DocumentPDFs");
    for document in &envelope.documents {
        xml.open("DocumentPDF");
        xml.text("Name", &document.name);
        xml.text("PDFBytes", &base64(pdf::document_pdf(envelope, document)));
        xml.text("DocumentID", &document.document_id);
        xml.text("DocumentType", "CONTENT");
        xml.close("DocumentPDF");
    }
    xml.open("DocumentPDF");
    xml.text("Name", &format!("CertificateOfCompletion_{}.pdf", envelope.envelope_id));
    xml.text("PDFBytes", &base64(pdf::certificate_pdf(envelope)));
    xml.text("DocumentType", "SUMMARY");
    xml.close("DocumentPDF");
    xml.close("DocumentPDFs");
}

/// The Windows zone name DocuSign reports for an account's offset. Only the
/// standard offsets of the US zones are named; DST (Pacific at -7) is not modelled.
fn time_zone_name(offset: i32) -> String {
    match offset {
        -10 => "Hawaiian Standard Time".into(),
        -9 => "Alaskan Standard Time".into(),
        -8 => "Pacific Standard Time".into(),
        -7 => "Mountain Standard Time".into(),
        -6 => "Central Standard Time".into(),
        -5 => "Eastern Standard Time".into(),
        0 => "UTC".into(),
        other => format!("UTC{other:+03}"),
    }
}

/// A legacy timestamp: local to the offset, no zone designator, and .NET's
/// up-to-seven fractional digits with trailing zeros dropped.
fn local_time(time: DateTime<Utc>, offset_hours: i32) -> String {
    let utc = time.naive_utc();
    let local = utc.checked_add_signed(chrono::Duration::hours(offset_hours.into())).unwrap_or(utc);
    let mut text = local.format("%Y-%m-%dT%H:%M:%S").to_string();
    // A leap second shows as nanoseconds past one second; keep seven digits.
    let ticks = format!("{:07}", (local.nanosecond() / 100).min(9_999_999));
    let fraction = ticks.trim_end_matches('0');
    if !fraction.is_empty() {
        text.push('.');
        text.push_str(fraction);
    }
    text
}

/// Characters XML 1.0 cannot carry at all, even escaped.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Text escaped for element content; characters XML cannot carry become U+FFFD.
fn escape(text: &str) -> Cow<'_, str> {
    let text: Cow<'_, str> = if text.chars().all(is_xml_char) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' }).collect())
    };
    let escaped = match text {
        Cow::Borrowed(text) => quick_xml::escape::escape(text),
        Cow::Owned(text) => Cow::Owned(quick_xml::escape::escape(text.as_str()).into_owned()),
    };
    // Parsers turn a raw CR into LF; a reference survives.
    if escaped.contains('\r') { Cow::Owned(escaped.replace('\r', "&#xD;")) } else { escaped }
}

/// A single-line XML writer into memory, which cannot fail.
struct Xml {
    out: String,
    offset: i32,
}

impl Xml {
    fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// An element with text; empty text gives `<Name />` as DocuSign writes it.
    fn text(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.out.push('<');
            self.out.push_str(name);
            self.out.push_str(" />");
        } else {
            self.open(name);
            self.out.push_str(&escape(value));
            self.close(name);
        }
    }

    /// A time element, left out when the event has not happened.
    fn time(&mut self, name: &str, time: Option<DateTime<Utc>>) {
        if let Some(time) = time {
            let local = local_time(time, self.offset);
            self.text(name, &local);
        }
    }

    fn nil(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(r#" xsi:nil="true" />"#);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use quick_xml::XmlVersion;
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    use quick_xml::reader::NsReader;

    use super::super::tests::envelope;
    use super::*;

    /// An element read back namespace-aware.
    #[derive(Debug, Default)]
    pub(in crate::sandbox::connect) struct Node {
        pub namespace: Option<String>,
        pub name: String,
        pub attributes: Vec<(String, String)>,
        pub children: Vec<Node>,
        pub text: String,
    }

    impl Node {
        pub fn child(&self, name: &str) -> &Node {
            self.children.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} in {}", self.name))
        }

        pub fn all(&self, name: &str) -> Vec<&Node> {
            self.children.iter().filter(|c| c.name == name).collect()
        }

        pub fn names(&self) -> Vec<&str> {
            self.children.iter().map(|c| c.name.as_str()).collect()
        }
    }

    pub(in crate::sandbox::connect) fn parse(body: &[u8]) -> Node {
        let text = std::str::from_utf8(body).unwrap();
        let mut reader = NsReader::from_str(text);
        let mut stack = vec![Node::default()];
        loop {
            let (namespace, event) = reader.read_resolved_event().unwrap();
            let namespace = match namespace {
                ResolveResult::Bound(ns) => Some(ns.0.to_string()),
                _ => None,
            };
            match event {
                Event::Start(ref start) | Event::Empty(ref start) => {
                    let empty = matches!(event, Event::Empty(_));
                    let attributes = start
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap();
                            let key = a.key.as_ref().to_string();
                            (key, a.normalized_value(XmlVersion::Implicit1_0).unwrap().into_owned())
                        })
                        .collect();
                    let name = start.local_name().as_ref().to_string();
                    let node = Node { namespace, name, attributes, ..Node::default() };
                    if empty {
                        stack.last_mut().unwrap().children.push(node);
                    } else {
                        stack.push(node);
                    }
                }
                Event::End(_) => {
                    let node = stack.pop().unwrap();
                    stack.last_mut().unwrap().children.push(node);
                }
                Event::Text(text) => stack.last_mut().unwrap().text.push_str(&text.xml10_content()),
                Event::GeneralRef(reference) => {
                    let raw = format!("&{};", &*reference);
                    stack.last_mut().unwrap().text.push_str(&quick_xml::escape::unescape(&raw).unwrap());
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(stack.len(), 1, "unclosed elements");
        stack.pop().unwrap().children.pop().unwrap()
    }

    fn generated() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T10:11:12.3400000Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn xml_body_reads_back_namespace_aware_in_the_documented_shape() {
        let envelope = envelope();
        let body = xml_body_at(&envelope, &NotificationOptions::default(), -8, generated());
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with(r#"<?xml version="1.0" encoding="utf-8"?><DocuSignEnvelopeInformation "#));
        assert!(!text.contains('\n'), "one line");

        let root = parse(&body);
        assert_eq!(root.name, "DocuSignEnvelopeInformation");
        assert_eq!(root.namespace.as_deref(), Some(API_NAMESPACE));
        assert_eq!(root.names(), ["EnvelopeStatus", "TimeZone", "TimeZoneOffset"]);
        assert_eq!(root.child("TimeZone").text, "Pacific Standard Time");
        assert_eq!(root.child("TimeZoneOffset").text, "-8");

        let status = root.child("EnvelopeStatus");
        assert!(status.children.iter().all(|c| c.namespace.as_deref() == Some(API_NAMESPACE)));
        assert_eq!(
            status.names(),
            [
                "RecipientStatuses",
                "TimeGenerated",
                "EnvelopeID",
                "Subject",
                "UserName",
                "Email",
                "Status",
                "Created",
                "Sent",
                "Delivered",
                "Signed",
                "Completed",
                "ACStatus",
                "ACStatusDate",
                "ACHolder",
                "ACHolderEmail",
                "ACHolderLocation",
                "SigningLocation",
                "SenderIPAddress",
                "EnvelopePDFHash",
                "CustomFields",
                "AutoNavigation",
                "EnvelopeIdStamping",
                "AuthoritativeCopy",
                "DocumentStatuses",
            ]
        );
        assert_eq!(status.child("EnvelopeID").text, envelope.envelope_id.to_string());
        assert_eq!(status.child("Subject").text, envelope.subject);
        assert_eq!(status.child("Status").text, "Completed");
        // Pacific time, eight hours behind, trailing zeros trimmed, no zone.
        assert_eq!(status.child("TimeGenerated").text, "2026-03-02T02:11:12.34");
        assert_eq!(status.child("Completed").text, local_time(envelope.completed_at, -8));
        for name in ["TimeGenerated", "Created", "Sent", "Delivered", "Signed", "Completed", "ACStatusDate"] {
            let time = &status.child(name).text;
            assert!(chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H:%M:%S%.f").is_ok(), "{name}: {time}");
            assert!(!time.ends_with('Z') && !time.contains('+'), "{name}: {time}");
        }

        let recipients = status.child("RecipientStatuses").all("RecipientStatus");
        assert_eq!(recipients.len(), envelope.signers.len() + envelope.carbon_copies.len());
        let first = recipients[0];
        assert_eq!(first.child("Type").text, "Signer");
        assert_eq!(first.child("Email").text, envelope.signers[0].person.email);
        assert_eq!(first.child("Status").text, "Completed");
        assert_eq!(first.child("RecipientId").text, envelope.signers[0].recipient_id_guid.to_string());
        let nil = &first.child("DeclineReason").attributes;
        assert_eq!(nil, &[("xsi:nil".to_string(), "true".to_string())]);
        let tabs = first.child("TabStatuses").all("TabStatus");
        let labelled = tabs.iter().find(|t| t.child("TabLabel").text == envelope.signers[0].tabs[0].label).unwrap();
        assert_eq!(labelled.child("TabValue").text, envelope.signers[0].tabs[0].value);
        assert_eq!(recipients.last().unwrap().child("Type").text, "CarbonCopy");

        let fields = status.child("CustomFields").all("CustomField");
        let names: Vec<&str> = fields.iter().map(|f| f.child("Name").text.as_str()).collect();
        assert_eq!(names[names.len() - 3..], ["AccountId", "AccountName", "AccountSite"]);
        assert_eq!(fields[0].child("Value").text, envelope.custom_fields[0].1);
        let documents = status.child("DocumentStatuses").all("DocumentStatus");
        assert_eq!(documents.len(), envelope.documents.len());
        assert_eq!(documents[0].child("Name").text, envelope.documents[0].name);
    }

    #[test]
    fn included_documents_decode_to_the_pdfs() {
        let envelope = envelope();
        let options = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
        let root = parse(&xml_body(&envelope, &options, 2));
        assert_eq!(root.names(), ["EnvelopeStatus", "DocumentPDFs", "TimeZone", "TimeZoneOffset"]);
        assert_eq!(root.child("TimeZoneOffset").text, "2");
        let pdfs = root.child("DocumentPDFs").all("DocumentPDF");
        assert_eq!(pdfs.len(), envelope.documents.len() + 1);
        let decode =
            |node: &Node| base64::engine::general_purpose::STANDARD.decode(&node.child("PDFBytes").text).unwrap();
        for (node, document) in pdfs.iter().zip(&envelope.documents) {
            assert_eq!(node.child("DocumentID").text, document.document_id);
            assert_eq!(node.child("DocumentType").text, "CONTENT");
            assert_eq!(decode(node), pdf::document_pdf(&envelope, document));
        }
        let certificate = pdfs.last().unwrap();
        assert_eq!(certificate.names(), ["Name", "PDFBytes", "DocumentType"]);
        assert_eq!(certificate.child("Name").text, format!("CertificateOfCompletion_{}.pdf", envelope.envelope_id));
        assert_eq!(certificate.child("DocumentType").text, "SUMMARY");
        assert_eq!(decode(certificate), pdf::certificate_pdf(&envelope));
    }

    #[test]
    fn text_is_escaped_and_characters_xml_cannot_carry_are_replaced() {
        let mut envelope = envelope();
        envelope.subject = "R&D <urgent> \"quoted\" 'single'\r\nline\u{1}end".into();
        envelope.custom_fields[0].1 = "]]> &amp;".into();
        let root = parse(&xml_body(&envelope, &NotificationOptions::default(), 0));
        let status = root.child("EnvelopeStatus");
        assert_eq!(status.child("Subject").text, "R&D <urgent> \"quoted\" 'single'\r\nline\u{FFFD}end");
        assert_eq!(status.child("CustomFields").all("CustomField")[0].child("Value").text, "]]> &amp;");
    }

    #[test]
    fn local_times_follow_the_offset_and_drop_trailing_zeros() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(local_time(at("2020-03-29T06:57:15.1085476Z"), -7), "2020-03-28T23:57:15.1085476");
        assert_eq!(local_time(at("2020-04-01T10:55:18.310Z"), -7), "2020-04-01T03:55:18.31");
        assert_eq!(local_time(at("2020-04-01T10:55:18Z"), 0), "2020-04-01T10:55:18");
        assert_eq!(local_time(at("2020-12-31T23:30:00Z"), 2), "2021-01-01T01:30:00");
        assert_eq!(time_zone_name(3), "UTC+03");
        assert_eq!(time_zone_name(-3), "UTC-03");
    }

    #[test]
    fn earlier_events_leave_out_what_has_not_happened() {
        let envelope = envelope();
        let options = NotificationOptions { event: "envelope-sent".into(), ..NotificationOptions::default() };
        let root = parse(&xml_body(&envelope, &options, -5));
        let status = root.child("EnvelopeStatus");
        assert_eq!(status.child("Status").text, "Sent");
        assert!(!status.names().contains(&"Completed") && !status.names().contains(&"Delivered"));
        let recipients = status.child("RecipientStatuses").all("RecipientStatus");
        assert!(recipients.iter().all(|r| r.child("Status").text != "Completed"));

        let declined = NotificationOptions { event: "envelope-declined".into(), ..NotificationOptions::default() };
        let status = parse(&xml_body(&envelope, &declined, -5)).child("EnvelopeStatus").child("Status").text.clone();
        assert_eq!(status, "Declined");
    }
}
