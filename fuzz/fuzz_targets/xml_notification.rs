//! Any bytes through the legacy XML parser: an error is a fine answer; a
//! panic, abort, runaway allocation or hang is a bug in the parser.

#![no_main]

use std::io::BufReader;

use countersign::ids::AccountId;
use countersign::formats::parse_xml;
use countersign_fuzz::{CheckingSink, Control, Pieces};
use libfuzzer_sys::fuzz_target;

/// Stands in for the `X-DocuSign-AccountId` header that legacy XML relies on.
const ACCOUNT_HINT: &str = "0b7f5c1e-4a7d-4c1e-9e0a-3d2f6b8a9c41";

/// The spooled body's buffer in production; the read size picks a smaller one.
const PRODUCTION_BUFFER: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((control, body)) = Control::split(data) else { return };
    let hint = control.flag().then(|| AccountId::parse(ACCOUNT_HINT).expect("a valid GUID"));
    // parse_xml streams PDFBytes from under quick-xml straight out of the
    // BufRead's buffer, so the buffer size is what decides where a piece ends.
    let capacity = control.read_size().unwrap_or(PRODUCTION_BUFFER);
    let reader = BufReader::with_capacity(capacity, Pieces::new(body, None));
    let mut sink = CheckingSink::new(control.sink_fails());
    if let Ok(notification) = parse_xml(reader, hint, &mut sink) {
        sink.check_complete(&notification.embedded);
    }
});
