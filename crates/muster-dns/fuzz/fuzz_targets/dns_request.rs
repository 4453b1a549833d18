//! Fuzzes the DNS request path exactly as the UDP server runs it: hickory's
//! parser, muster's answer logic over a small but realistic directory, and
//! hickory's encoder ([`muster_dns::Handler::answer_packet`]).
//!
//! Besides "never panics", every input checks what the UDP server promises:
//! - a packet shorter than a DNS header (12 bytes) gets no reply;
//! - any other packet gets one (no upstreams are configured, so nothing is
//!   forwarded), FORMERR at worst;
//! - a reply parses with hickory's `Message::from_vec`, carries the query's
//!   ID, has QR set, and fits in the largest UDP payload muster advertises.

#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use hickory_server::proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use muster_core::{
    Address, Change, Health, Liveness, Member, Port, Protocol, Record, Snapshot, Source, State,
};
use muster_dns::{DnsConfig, Handler, MAX_UDP_PAYLOAD};
use muster_policy::Judged;

/// Length of a DNS header: anything shorter is dropped without a reply.
const HEADER_BYTES: usize = 12;

/// Where every query comes from; the answer logic does not look at it.
const CLIENT: &str = "192.0.2.99:5353";

static HANDLER: LazyLock<Handler> = LazyLock::new(|| {
    let config = DnsConfig {
        zone: "muster".into(),
        ttl: 5,
        node_name: "fuzz".into(),
        forward_to: vec![],
        reverse_zones: ["10.0.0.0/8", "192.0.2.0/24", "fd00::/16"]
            .iter()
            .map(|net| net.parse().expect("a valid network"))
            .collect(),
    };
    let judged = Judged::without_policy(directory());
    Handler::new(&config, Arc::new(ArcSwap::from_pointee(judged)))
        .expect("the zones and node name are valid")
});

fuzz_target!(|packet: &[u8]| {
    let client: SocketAddr = CLIENT.parse().expect("a valid socket address");
    let reply = HANDLER.answer_packet(packet, client);
    if packet.len() < HEADER_BYTES {
        assert!(reply.is_none(), "a reply to a {}-byte packet", packet.len());
        return;
    }
    let reply = reply.expect("a packet with a whole header gets a reply");
    assert!(
        reply.len() <= usize::from(MAX_UDP_PAYLOAD),
        "a {}-byte UDP reply",
        reply.len()
    );
    let message = match Message::from_vec(&reply) {
        Ok(message) => message,
        Err(e) => panic!("the reply does not parse: {e}; reply {reply:02x?}"),
    };
    let query_id = u16::from_be_bytes([packet[0], packet[1]]);
    assert_eq!(message.metadata.id, query_id, "the reply's ID");
    assert_eq!(
        message.metadata.message_type,
        MessageType::Response,
        "the reply's QR bit"
    );
});

/// The directory the handler answers from: every kind of name muster
/// serves has at least one record behind it, so that inputs mutated from
/// the seeds reach positive answers, SRV, PTR and selections, not only
/// NXDOMAIN.
fn directory() -> Snapshot {
    let web = |id: &str, host: &str, v4: &str, v6: &str, health: Health| {
        let mut r = record(
            id,
            id,
            host,
            &[("static", v4, false), ("static", v6, false)],
        );
        r.health = health;
        r.image = "nginx:1.27".into();
        r.labels = labels(&[
            ("muster.service", "web"),
            ("muster.port.http", "8080"),
            ("app", "web"),
            ("env", "prod"),
        ]);
        r.ports = vec![tcp(8080, Some(18080)), tcp(9090, None)];
        r
    };
    let mut api = record(
        "api",
        "api",
        "a",
        &[
            ("static", "10.0.2.1", false),
            ("bridge", "172.17.0.2", true),
        ],
    );
    api.aliases = vec!["api-v2".into()];
    api.labels = labels(&[("app", "api"), ("env", "staging")]);
    // Lives on its host's network: SRV points at the host and its
    // published port.
    let mut cache = record("cache", "cache", "b", &[("host", "192.0.2.11", false)]);
    cache.labels = labels(&[
        ("com.docker.compose.service", "cache"),
        ("muster.port.redis", "6379"),
    ]);
    cache.ports = vec![tcp(6379, Some(16379)), udp(6379, None)];
    cache.source = Source::Docker;
    let mut old = record("old", "old", "a", &[("static", "10.0.9.9", false)]);
    old.state = State::Exited;
    old.finished_at = Some(1_700_000_000);

    let records = vec![
        web("web-1", "a", "10.0.0.5", "fd00::5", Health::Healthy),
        web("web-2", "b", "10.0.0.6", "fd00::6", Health::None),
        web("web-3", "b", "10.0.0.7", "fd00::7", Health::Unhealthy),
        // The same name on two hosts: `db.muster` has both addresses,
        // `db.a.muster` and `db.b.muster` one each.
        record("db-a", "db", "a", &[("static", "10.0.1.1", false)]),
        record("db-b", "db", "b", &[("static", "10.0.1.2", false)]),
        api,
        cache,
        old,
    ];
    for r in &records {
        r.validate()
            .expect("the fuzz directory's records are valid");
    }
    let members = vec![
        member("fuzz", "127.0.0.1:7946", Liveness::Alive, 0),
        member("a", "192.0.2.10:7946", Liveness::Alive, 4),
        member("b", "192.0.2.11:7946", Liveness::Alive, 4),
        member("c", "[2001:db8::c]:7946", Liveness::Dead, 0),
    ];
    Snapshot::new().apply(
        records
            .into_iter()
            .map(Change::Upsert)
            .chain([Change::Members(members)]),
    )
}

fn record(id: &str, name: &str, host: &str, addresses: &[(&str, &str, bool)]) -> Record {
    let mut r = Record::new(id, name, Source::Static);
    r.host = host.into();
    r.started_at = Some(1_700_000_000);
    r.addresses = addresses
        .iter()
        .map(|&(network, ip, local)| Address {
            network: network.into(),
            ip: ip.parse::<IpAddr>().expect("a valid address"),
            local,
        })
        .collect();
    r
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn tcp(port: u16, host_port: Option<u16>) -> Port {
    Port {
        port,
        protocol: Protocol::Tcp,
        host_port,
    }
}

fn udp(port: u16, host_port: Option<u16>) -> Port {
    Port {
        port,
        protocol: Protocol::Udp,
        host_port,
    }
}

fn member(name: &str, gossip_addr: &str, liveness: Liveness, records: usize) -> Member {
    Member {
        name: name.into(),
        gossip_addr: gossip_addr.parse().expect("a valid socket address"),
        liveness,
        generation: 1,
        records,
        visible: liveness != Liveness::Dead,
        meta: BTreeMap::new(),
    }
}
