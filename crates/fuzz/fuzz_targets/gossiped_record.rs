//! One gossiped record value (`r:<id>` = base64 protobuf) decoded as the
//! sync task decodes it: never a panic, and a record that decodes keeps
//! the record rules (its owner as host, the id it was gossiped under).

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use muster_gossip::fuzzing::decode_record;

fuzz_target!(|data: &[u8]| {
    // Half the inputs as raw protobuf (encoded the way the publisher
    // does), half as the text value itself.
    let (value, id) = match data.split_first() {
        Some((0, rest)) => (
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(rest),
            "web-1".to_owned(),
        ),
        _ => (String::from_utf8_lossy(data).into_owned(), "web-1".to_owned()),
    };
    if let Ok(record) = decode_record("a", &id, &value) {
        assert_eq!(record.host, "a");
        assert_eq!(record.id, id);
    }
});
