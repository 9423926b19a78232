//! Hostile and broken bodies: each gets the right error, none a panic, and
//! no error repeats the body.

use super::*;
use crate::domain::ConnectNotification;

type Parser = fn(&[u8]) -> Result<ConnectNotification, FormatError>;

/// Both JSON parsers, the streaming one and the one for bodies held in
/// memory: they must agree on every body.
fn json(body: &[u8]) -> Result<ConnectNotification, FormatError> {
    let streamed = parse_json(body, &mut MemorySink::default());
    assert_same(&streamed, &parse_json_bytes(body, &mut MemorySink::default()));
    streamed
}

fn xml(body: &[u8]) -> Result<ConnectNotification, FormatError> {
    parse_xml(body, &Some(account()).into(), &mut MemorySink::default())
}

const XML_HEAD: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;
const ROOT_OPEN: &str = r#"<DocuSignEnvelopeInformation xmlns="http://www.docusign.net/API/3.0">"#;

#[test]
fn doctype_is_refused() {
    let body = format!("{XML_HEAD}<!DOCTYPE DocuSignEnvelopeInformation>{ROOT_OPEN}</DocuSignEnvelopeInformation>");
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::DocTypeRefused)));
}

#[test]
fn external_entity_is_refused() {
    let body = format!(
        r#"{XML_HEAD}<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>{ROOT_OPEN}<EnvelopeStatus><Subject>&xxe;</Subject></EnvelopeStatus></DocuSignEnvelopeInformation>"#
    );
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::DocTypeRefused)));
}

#[test]
fn billion_laughs_is_refused() {
    let mut dtd = String::from(r#"<!ENTITY lol0 "lol">"#);
    for i in 1..10 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        dtd.push_str(&format!(r#"<!ENTITY lol{i} "{refs}">"#));
    }
    let body = format!(
        "{XML_HEAD}<!DOCTYPE lolz [{dtd}]>{ROOT_OPEN}<EnvelopeStatus><Subject>&lol9;</Subject></EnvelopeStatus></DocuSignEnvelopeInformation>"
    );
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::DocTypeRefused)));
}

#[test]
fn undefined_entity_is_an_error_not_empty_text() {
    let body = fixture("xml-envelope-completed.xml").replace("<Subject>Onboarding", "<Subject>&xxe;Onboarding");
    let err = xml(body.as_bytes()).unwrap_err();
    assert!(matches!(&err, FormatError::Malformed(m) if m.contains("undefined entity")), "{err}");
    // Even where nothing is read from.
    let body = fixture("xml-envelope-completed.xml").replace("<ACHolderLocation>DocuSign", "<ACHolderLocation>&ent;");
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::Malformed(_))));
}

#[test]
fn deep_xml_nesting_is_too_deep() {
    let depth = 10_000;
    let body = format!("{ROOT_OPEN}{}{}</DocuSignEnvelopeInformation>", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::TooDeep)));
    let shallow = MAX_XML_DEPTH - 1;
    let body = format!("{ROOT_OPEN}{}{}</DocuSignEnvelopeInformation>", "<a>".repeat(shallow), "</a>".repeat(shallow));
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::MissingField(_))), "{shallow} levels are allowed");
}

#[test]
fn deep_json_nesting_is_malformed() {
    let depth = 100_000;
    let body = format!(r#"{{"event":"e","x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    let err = json(body.as_bytes()).unwrap_err();
    assert!(matches!(&err, FormatError::Malformed(m) if m.contains("recursion limit")), "{err}");
}

/// Hands out one byte per read, so every multi-byte sequence is split.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
        if buf.is_empty() {
            return Ok(0);
        }
        buf[0] = *first;
        self.0 = rest;
        Ok(1)
    }
}

#[test]
fn invalid_utf8_is_malformed() {
    let minimal = fixture("json-envelope-sent-minimal.json").into_bytes();
    // In a field that is read, and in one that is only skipped.
    for field in [&b"envelope-sent\""[..], b"v2.1\""] {
        let mut body = minimal.clone();
        let at = body.windows(field.len()).position(|w| w == field).unwrap();
        body[at] = 0xff;
        let err = json(&body).unwrap_err();
        assert!(matches!(&err, FormatError::Malformed(m) if m.contains("UTF-8")), "{err}");
    }
    // Split sequences are not mistaken for bad ones; a truncated one is.
    let body = fixture("json-envelope-completed.json").replace("Priya Raman", "Prïyä R€mán 𝄞");
    let n = parse_json(Trickle(body.as_bytes()), &mut MemorySink::default()).unwrap();
    assert_eq!(n.envelope.subject.as_deref(), Some("Onboarding: laptop & access request for Prïyä R€mán 𝄞"));
    let mut body = body.into_bytes();
    let at = body.windows(3).position(|w| w == "€".as_bytes()).unwrap();
    body[at + 2] = b'x';
    assert!(matches!(parse_json(Trickle(&body), &mut MemorySink::default()), Err(FormatError::Malformed(_))));

    let mut body = fixture("xml-envelope-completed.xml").into_bytes();
    let at = body.windows(8).position(|w| w == b"Onboardi").unwrap();
    body[at + 1] = 0xc3;
    body[at + 2] = 0x28;
    assert!(matches!(xml(&body), Err(FormatError::Malformed(_))));
}

#[test]
fn non_guid_envelope_id_is_an_invalid_field() {
    let body =
        fixture("json-envelope-sent-minimal.json").replace("7e4b1d92-5c3a-4f6e-8d07-9a2b4c6e8f10", "../../etc/passwd");
    let err = json(body.as_bytes()).unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "data.envelopeId", .. }), "{err}");
    let body = fixture("xml-envelope-completed.xml").replace(ENVELOPE, "not-a-guid");
    let err = xml(body.as_bytes()).unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "EnvelopeStatus/EnvelopeID", .. }), "{err}");
}

#[test]
fn missing_ids_are_missing_fields() {
    let body = fixture("json-envelope-sent-minimal.json").replace("\"envelopeId\"", "\"envelopeID\"");
    assert!(matches!(json(body.as_bytes()), Err(FormatError::MissingField("data.envelopeId"))));
    let body = fixture("json-envelope-sent-minimal.json").replace("\"accountId\"", "\"account\"");
    assert!(matches!(json(body.as_bytes()), Err(FormatError::MissingField("data.accountId"))));
    assert!(matches!(json(br#"{"event":"envelope-sent"}"#), Err(FormatError::MissingField("generatedDateTime"))));
    assert!(matches!(
        json(br#"{"generatedDateTime":"2024-01-01T00:00:00Z"}"#),
        Err(FormatError::MissingField("event"))
    ));
    let body = fixture("xml-envelope-completed.xml").replace(&format!("<EnvelopeID>{ENVELOPE}</EnvelopeID>"), "");
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::MissingField("EnvelopeStatus/EnvelopeID"))));
}

#[test]
fn bad_times_and_numbers_are_invalid_fields() {
    let body =
        fixture("json-envelope-completed.json").replace("\"routingOrder\": \"2\"", "\"routingOrder\": \"second\"");
    let err = json(body.as_bytes()).unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "recipients.routingOrder", .. }), "{err}");
    let body = fixture("json-envelope-completed.json").replace("2024-05-14T16:42:07.3619054Z", "14/05/2024");
    assert!(matches!(json(body.as_bytes()), Err(FormatError::InvalidField { field: "generatedDateTime", .. })));
    let body = fixture("xml-envelope-completed.xml").replace("2024-05-14T09:42:07.3619054", "yesterday");
    assert!(matches!(
        xml(body.as_bytes()),
        Err(FormatError::InvalidField { field: "EnvelopeStatus/TimeGenerated", .. })
    ));
}

#[test]
fn every_truncation_is_an_error() {
    for name in ["json-envelope-completed.json", "json-recipient-completed.json"] {
        let body = fixture(name);
        let body = body.trim_end().as_bytes();
        for end in 0..body.len() {
            assert!(json(&body[..end]).is_err(), "{name} cut at {end} parsed");
        }
    }
    let err = json(&fixture("json-envelope-completed.json").as_bytes()[..2_000]).unwrap_err();
    assert!(matches!(&err, FormatError::Malformed(m) if m.starts_with("truncated JSON at line")), "{err}");

    for name in ["xml-envelope-completed.xml", "xml-envelope-sent-no-xsd.xml"] {
        let body = fixture(name);
        let body = body.trim_end().as_bytes();
        for end in 0..body.len() {
            assert!(xml(&body[..end]).is_err(), "{name} cut at {end} parsed");
        }
    }
    let with_pdf = super::xml::with_document_pdfs(&[format!(
        "<DocumentPDF><Name>x</Name><PDFBytes>{}</PDFBytes></DocumentPDF>",
        base64(&pdf_like(300, 1))
    )]);
    let cut = with_pdf.find("<PDFBytes>").unwrap() + 50;
    let err = xml(&with_pdf.as_bytes()[..cut]).unwrap_err();
    assert!(matches!(&err, FormatError::Malformed(m) if m.contains("inside PDFBytes")), "{err}");
}

#[test]
fn byte_mutations_never_panic_and_every_refusal_is_a_bad_request() {
    let json_body = fixture("json-envelope-completed.json").into_bytes();
    let xml_body = super::xml::with_document_pdfs(&[format!(
        "<DocumentPDF><Name>Offer letter</Name><PDFBytes>{}</PDFBytes><DocumentID>1</DocumentID></DocumentPDF>",
        base64(&pdf_like(200, 1))
    )])
    .into_bytes();
    let replacements = [b'<', b'>', b'&', b'"', b'{', b'}', b'[', b'/', b'=', 0, 0xff, b'\\', b'A'];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..3_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let (mut body, parse): (Vec<u8>, Parser) =
            if round % 2 == 0 { (json_body.clone(), json) } else { (xml_body.clone(), xml) };
        let at = (state % body.len() as u64) as usize;
        body[at] = replacements[(state >> 32) as usize % replacements.len()];
        // Whatever one wrong byte does, the sender is told its body is bad
        // (a 400 answer), never that countersign failed.
        if let Err(error) = parse(&body) {
            assert!(error.is_bad_request(), "round {round}: byte {at} changed, refused as {error:?}");
        }
    }
}

#[test]
fn wrong_root_element_is_refused() {
    let err = xml(br#"<Envelope xmlns="http://www.docusign.net/API/3.0"><EnvelopeStatus/></Envelope>"#).unwrap_err();
    assert!(matches!(&err, FormatError::UnexpectedRoot { found } if found.contains("Envelope")), "{err}");
    let err = xml(br#"<DocuSignEnvelopeInformation xmlns="urn:evil"/>"#).unwrap_err();
    assert!(matches!(&err, FormatError::UnexpectedRoot { found } if found.contains("urn:evil")), "{err}");
    let two_roots = format!("{ROOT_OPEN}</DocuSignEnvelopeInformation>{ROOT_OPEN}</DocuSignEnvelopeInformation>");
    assert!(matches!(xml(two_roots.as_bytes()), Err(FormatError::Malformed(_))));
    assert!(matches!(xml(b""), Err(FormatError::Malformed(_))));
    assert!(matches!(xml(b"just text"), Err(FormatError::Malformed(_))));
    for body in [&b"[]"[..], b"\"envelope\"", b"", b"{} {}", b"{\"data\":[]}"] {
        assert!(matches!(json(body), Err(FormatError::Malformed(_))), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn invalid_base64_is_an_invalid_field() {
    let body = super::xml::with_document_pdfs(&[
        "<DocumentPDF><Name>x</Name><PDFBytes>JVBER&amp;i0x</PDFBytes></DocumentPDF>".to_owned(),
    ]);
    let err = xml(body.as_bytes()).unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "DocumentPDF/PDFBytes", .. }), "{err}");
    let body =
        super::xml::with_document_pdfs(&["<DocumentPDF><PDFBytes>QUJD=RA==</PDFBytes></DocumentPDF>".to_owned()]);
    assert!(matches!(xml(body.as_bytes()), Err(FormatError::InvalidField { .. })));
    let body = format!(
        r#"{{"event":"e","generatedDateTime":"2024-01-01T00:00:00Z","data":{{"accountId":"{ACCOUNT}","envelopeId":"{ENVELOPE}",
        "envelopeSummary":{{"envelopeDocuments":[{{"documentId":"1","name":"a","type":"content","PDFBytes":"QUJDR"}}]}}}}}}"#
    );
    let err = json(body.as_bytes()).unwrap_err();
    assert!(matches!(err, FormatError::InvalidField { field: "envelopeDocuments.PDFBytes", .. }), "{err}");
}

#[test]
fn sink_failures_are_sink_errors() {
    let mut sink = MemorySink { fail_writes: true, ..MemorySink::default() };
    let body = super::xml::with_document_pdfs(&[format!(
        "<DocumentPDF><Name>x</Name><PDFBytes>{}</PDFBytes></DocumentPDF>",
        base64(&pdf_like(10, 1))
    )]);
    let err = parse_xml(body.as_bytes(), &Some(account()).into(), &mut sink).unwrap_err();
    assert!(matches!(err, FormatError::Sink(_)) && !err.is_bad_request(), "{err}");
    let body = format!(
        r#"{{"event":"e","generatedDateTime":"2024-01-01T00:00:00Z","data":{{"accountId":"{ACCOUNT}","envelopeId":"{ENVELOPE}",
        "envelopeSummary":{{"envelopeDocuments":[{{"PDFBytes":"QUJD"}}]}}}}}}"#
    );
    let err = parse_json(body.as_bytes(), &mut MemorySink { fail_writes: true, ..MemorySink::default() }).unwrap_err();
    assert!(matches!(err, FormatError::Sink(_)), "{err}");
}

#[test]
fn errors_never_repeat_the_body() {
    let secret = format!("SECRET{}", "s".repeat(10_000));
    let cases: Vec<FormatError> = vec![
        json(
            fixture("json-envelope-sent-minimal.json")
                .replace("7e4b1d92-5c3a-4f6e-8d07-9a2b4c6e8f10", &secret)
                .as_bytes(),
        )
        .unwrap_err(),
        json(format!(r#"{{"event":{{"{secret}":1}}}}"#).as_bytes()).unwrap_err(),
        json(format!(r#"{{"data":{{"envelopeSummary":{{"recipients":"{secret}"}}}}}}"#).as_bytes()).unwrap_err(),
        xml(fixture("xml-envelope-completed.xml").replace(ENVELOPE, &secret).as_bytes()).unwrap_err(),
        xml(format!("<{secret}/>").as_bytes()).unwrap_err(),
        xml(format!("{ROOT_OPEN}<a></{secret}></DocuSignEnvelopeInformation>").as_bytes()).unwrap_err(),
        xml(format!("{ROOT_OPEN}<a>&{secret};</a></DocuSignEnvelopeInformation>").as_bytes()).unwrap_err(),
    ];
    for err in cases {
        let message = err.to_string();
        assert!(message.len() < 320, "{} chars: {message}", message.len());
        assert!(!message.contains(&secret[..200]), "{message}");
    }
}
