//! Any bytes through the JSON SIM parsers: an error is a fine answer; a
//! panic, abort, runaway allocation or hang is a bug in the parser. The
//! streaming parser and the one for bodies held in memory must agree on
//! whether a body is accepted.

#![no_main]

use countersign::formats::{parse_json, parse_json_bytes};
use countersign_fuzz::{CheckingSink, Control, Pieces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((control, body)) = Control::split(data) else { return };
    let mut sink = CheckingSink::new(control.sink_fails());
    let streamed = parse_json(Pieces::new(body, control.read_size()), &mut sink);
    if let Ok(notification) = &streamed {
        sink.check_complete(&notification.embedded);
    }
    let mut sink = CheckingSink::new(control.sink_fails());
    let in_memory = parse_json_bytes(body, &mut sink);
    if let Ok(notification) = &in_memory {
        sink.check_complete(&notification.embedded);
    }
    assert_eq!(streamed.is_ok(), in_memory.is_ok(), "the two JSON parsers disagree");
});
