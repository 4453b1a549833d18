//! The cost of sealing gossip, per datagram: sealing (XChaCha20-Poly1305
//! under the primary key) and admitting (opening, the replay window, and
//! chitchat's decoding), for three shapes of datagram: a Syn-sized one
//! (120 B), one that fits an Ethernet frame (1,400 B) and the largest
//! chitchat sends (65,379 B). The message inside is a BadCluster message
//! padded to the size: what is measured is the seal, whose cost depends on
//! the length alone, not chitchat's decoding (trivial for this message).
//! The cost of sealing relative to the whole agent is in the cluster
//! bench (CPU at rest, clear against sealed).
//!
//! Run: `cargo bench -p muster-gossip --features fuzzing --bench seal`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use muster_gossip::Keyring;
use muster_gossip::fuzzing::{Receiver, seal};

/// chitchat's encoding of a BadCluster message (magic, version 1, type 3),
/// then `len - 4` bytes of padding, which chitchat's decoder ignores.
fn message(len: usize) -> Vec<u8> {
    let mut m = vec![0x53, 0xB0, 1, 3];
    m.resize(len, 0xA5);
    m
}

/// Median of 7 runs of `n` calls of `f`, per call.
fn per_call(n: u32, mut f: impl FnMut(u32)) -> Duration {
    let mut runs: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for i in 0..n {
                f(i);
            }
            start.elapsed() / n
        })
        .collect();
    runs.sort();
    runs[3]
}

fn main() {
    let ring = Keyring::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("a key");
    let from: SocketAddr = "192.0.2.1:7946".parse().unwrap();
    println!("## Sealed gossip: cost per datagram (median of 7 runs)\n");
    println!(
        "| datagram | decode only (unkeyed) | seal | open + window + decode | seal + open / decode | MB/s sealed and opened |"
    );
    println!("|---|---|---|---|---|---|");
    for (shape, len, n) in [
        ("Syn-sized", 120, 200_000),
        ("Ethernet frame", 1_400, 100_000),
        ("largest", 65_379, 2_000),
    ] {
        let plain = message(len);
        assert!(
            Receiver::new(7)
                .admit(None, from, &mut plain.clone())
                .is_ok(),
            "the padded message decodes"
        );
        let sealing = per_call(n, |i| {
            black_box(seal(&ring, 9, u64::from(i), 7, &plain));
        });
        // Every datagram of a fresh counter, addressed to this receiver,
        // admitted (opened, windowed, decoded) by one receiver.
        let datagrams: Vec<Vec<u8>> = (0..n)
            .map(|i| seal(&ring, 9, u64::from(i), 7, &plain))
            .collect();
        let mut receiver = Receiver::new(7);
        let opening = per_call(n, |i| {
            let mut buf = datagrams[i as usize].clone();
            if i == 0 {
                // Each run starts afresh, so that no counter is a replay.
                receiver = Receiver::new(7);
            }
            let admitted = receiver.admit(Some(&ring), from, &mut buf).is_ok();
            debug_assert!(admitted);
            black_box(admitted);
        });
        let both = sealing + opening;
        println!(
            "| {shape}, {len} B | {:.2} µs | {:.2} µs | {:.0} |",
            sealing.as_secs_f64() * 1e6,
            opening.as_secs_f64() * 1e6,
            len as f64 / both.as_secs_f64() / 1e6,
        );
    }
}
