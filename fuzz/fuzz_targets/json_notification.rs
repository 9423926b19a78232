//! Any bytes through the JSON SIM parser: an error is a fine answer; a
//! panic, abort, runaway allocation or hang is a bug in the parser.

#![no_main]

use countersign::ingest::formats::parse_json;
use countersign_fuzz::{CheckingSink, Control, Pieces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((control, body)) = Control::split(data) else { return };
    let mut sink = CheckingSink::new(control.sink_fails());
    if let Ok(notification) = parse_json(Pieces::new(body, control.read_size()), &mut sink) {
        sink.check_complete(&notification.embedded);
    }
});
