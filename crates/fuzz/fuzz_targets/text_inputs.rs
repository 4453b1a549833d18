//! Every text input muster parses from outside besides DNS and gossip,
//! chosen by the first byte: a label selector (gRPC, CLI, `/v1/sd`, the
//! status page), a static records file, a naming policy file, a gossip key
//! file. Each must return a value or an error, never panic; an error names
//! a line that exists.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use muster_core::Selector;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let lines = text.lines().count().max(1);
    match which % 4 {
        0 => {
            let _ = text.parse::<Selector>();
        }
        1 => {
            let _ = muster_sources::static_file::parse(Path::new("records.toml"), text);
        }
        2 => {
            let _ = muster_policy::Policy::parse(Path::new("policy.toml"), text);
        }
        _ => {
            if let Err(e) = muster_gossip::Keyring::parse(text) {
                assert!(e.line <= lines, "line {} of {lines}", e.line);
            }
        }
    }
});
