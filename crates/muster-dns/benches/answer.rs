//! The cost of one DNS answer in process: hickory's parser, muster's
//! resolution over a judged snapshot and hickory's encoder, exactly the UDP
//! server's path ([`Handler::answer_packet`]) without the socket.
//!
//! Two directory shapes, 50,000 names each, A queries for every name in a
//! scattered order:
//! - `one-label`: `svc-N.muster`, one IPv4 address per record;
//! - `two-label`: `svc-N.cluster.test`, an IPv4 and an IPv6 address per
//!   record.
//!
//! Prints nanoseconds per answer (median of 5 passes). Wall time on a
//! shared 2-core machine is noisy; for a figure that repeats to the
//! instruction, count instructions instead:
//! `cargo bench -p muster-dns --bench answer --no-run`, then
//! `valgrind --tool=callgrind --toggle-collect='*run_queries*' target/release/deps/answer-<hash> 1 one-label`
//! (one pass, one shape) and divide the collected instructions by the
//! 200,000 queries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RecordType};
use muster_core::{Address, Change, Record, Snapshot, Source};
use muster_dns::{DnsConfig, Handler};
use muster_policy::Judged;

const NAMES: usize = 50_000;
const QUERIES: usize = 200_000;

fn address(ip: String) -> Address {
    Address {
        network: "static".into(),
        ip: ip.parse().expect("a valid address"),
        local: false,
    }
}

/// A handler over 50,000 records in `zone`, each with an IPv6 address too
/// when `v6`.
fn handler(zone: &str, v6: bool) -> Handler {
    let changes = (0..NAMES).map(|i| {
        let mut r = Record::new(format!("svc-{i}"), format!("svc-{i}"), Source::Static);
        r.host = "a".into();
        r.addresses.push(address(format!(
            "10.{}.{}.{}",
            i / 65536,
            (i / 256) % 256,
            i % 256
        )));
        if v6 {
            r.addresses.push(address(format!("fd00::{:x}", i + 1)));
        }
        Change::Upsert(r)
    });
    let judged = Judged::without_policy(Snapshot::new().apply(changes));
    let config = DnsConfig {
        zone: zone.into(),
        ttl: 5,
        node_name: "a".into(),
        forward_to: vec![],
        reverse_zones: vec![],
    };
    Handler::new(&config, Arc::new(ArcSwap::from_pointee(judged))).expect("a valid zone")
}

/// Asks every packet once; the bytes answered, so nothing is optimised out.
#[inline(never)]
fn run_queries(handler: &Handler, packets: &[Vec<u8>], src: SocketAddr) -> usize {
    packets
        .iter()
        .map(|p| handler.answer_packet(p, src).map_or(0, |r| r.len()))
        .sum()
}

fn main() {
    // `cargo bench` passes `--bench`; a number sets the passes per shape,
    // and shape names pick shapes (all by default).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let passes: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5);
    let picked = |shape: &str| {
        !args.iter().any(|a| a.ends_with("-label")) || args.iter().any(|a| a == shape)
    };
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("a valid address");
    println!("| shape | ns per answer (median of {passes}) | reply bytes |");
    println!("|---|---|---|");
    for (shape, zone, v6) in [
        ("one-label", "muster", false),
        ("two-label", "cluster.test", true),
    ]
    .into_iter()
    .filter(|(shape, ..)| picked(shape))
    {
        let handler = handler(zone, v6);
        let packets: Vec<Vec<u8>> = (0..QUERIES)
            .map(|k| {
                let name = format!("svc-{}.{zone}.", (k * 7919) % NAMES);
                let mut query = Message::query();
                query.add_query(Query::query(
                    Name::from_ascii(&name).expect("a valid name"),
                    RecordType::A,
                ));
                query.to_vec().expect("encodes")
            })
            .collect();
        let mut times = Vec::with_capacity(passes);
        let mut bytes = 0;
        for _ in 0..passes {
            let started = Instant::now();
            bytes = run_queries(&handler, &packets, src);
            times.push(started.elapsed().as_nanos() as f64 / QUERIES as f64);
        }
        times.sort_by(f64::total_cmp);
        println!("| {shape} | {:.0} | {bytes} |", times[times.len() / 2]);
    }
}
