//! A gossip datagram as an agent's transport receives it, through
//! `muster_gossip::fuzzing::Receiver` (the code the transport runs), in the
//! three ways it can arrive:
//!
//! - byte 0 = 0: the rest, raw, to a keyed agent: must not open (no
//!   forgery by a fuzzer), never panic;
//! - byte 0 = 1: the rest, raw, to an unkeyed agent: chitchat's decoder on
//!   anything a sender can put in a datagram, never a panic;
//! - byte 0 = 2: the rest, sealed with the agent's key (what a peer holding
//!   the key can send), opened and decoded, then the same datagram again:
//!   the second time it must be refused as a replay.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use muster_gossip::Keyring;
use muster_gossip::fuzzing::{Receiver, Rejection, seal};

fn ring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        Keyring::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("a key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let from: SocketAddr = "192.0.2.1:7946".parse().unwrap();
    let mut receiver = Receiver::new(7);
    match mode % 3 {
        0 => {
            let mut datagram = rest.to_vec();
            let refused = receiver.admit(Some(ring()), from, &mut datagram);
            assert!(matches!(refused, Err((Rejection::Auth, _))), "a forgery opened");
        }
        1 => {
            let mut datagram = rest.to_vec();
            let _ = receiver.admit(None, from, &mut datagram);
        }
        _ => {
            let sealed = seal(ring(), 9, 1, 7, rest);
            let mut first = sealed.clone();
            let admitted = receiver.admit(Some(ring()), from, &mut first);
            if admitted.is_ok() {
                let mut again = sealed;
                let replay = receiver.admit(Some(ring()), from, &mut again);
                assert!(matches!(replay, Err((Rejection::Replay, _))), "a replay was admitted");
            }
        }
    }
});
