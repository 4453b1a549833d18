//! Sealed gossip between in-process members over real UDP on loopback:
//! members with the same key converge, members without it neither learn
//! nor inject anything, and a key rotation done in three steps never
//! breaks the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use muster_core::{Address, Liveness, Record, Snapshot, Source};
use muster_gossip::{Gossip, GossipConfig, GossipKeys, GossipMetrics, Keyring, generate_key};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// A port free for both UDP and TCP: gossip binds both.
fn free_udp_addr() -> SocketAddr {
    muster_gossip::free_gossip_addr([127, 0, 0, 1].into()).unwrap()
}

fn ring(keys: &[&str]) -> Keyring {
    Keyring::parse(&keys.join("\n")).expect("valid keys")
}

/// A member named `name` on `addr`, sealing with `keys` (none: in the
/// clear), publishing `records`.
async fn member(
    name: &str,
    addr: SocketAddr,
    seeds: &[SocketAddr],
    keys: Option<GossipKeys>,
    records: Vec<Record>,
) -> (Gossip, GossipMetrics) {
    let metrics = GossipMetrics::default();
    let gossip = Gossip::start(
        GossipConfig {
            node_name: name.to_owned(),
            generation: 1,
            cluster_id: "test".to_owned(),
            listen_addr: addr,
            advertise_addr: addr,
            seeds: seeds.iter().map(ToString::to_string).collect(),
            gossip_interval: Duration::from_millis(50),
            failure_detection: muster_gossip::FailureDetection::default(),
            phi_threshold: 8.0,
            dead_grace: Duration::from_millis(500),
            forget_after: Duration::from_secs(60),
            meta: BTreeMap::new(),
            sources: BTreeSet::new(),
            metrics: metrics.clone(),
            keys,
            mtu: muster_gossip::DEFAULT_MTU,
            receive_loss: 0.0,
        },
        &CancellationToken::new(),
    )
    .await
    .expect("gossip starts");
    gossip.publisher().replace(Source::Static, records).await;
    (gossip, metrics)
}

fn record(id: &str, ip: &str) -> Record {
    let mut r = Record::new(id, id, Source::Static);
    r.addresses.push(Address {
        network: "static".into(),
        ip: ip.parse().unwrap(),
        local: false,
    });
    r
}

fn ips(s: &Snapshot, name: &str) -> Vec<String> {
    s.lookup(name)
        .iter()
        .flat_map(|r| r.addresses.iter().map(|a| a.ip.to_string()))
        .collect()
}

/// `muster_gossip_rejected_total{reason=...}` of one member.
fn rejected(metrics: &GossipMetrics, reason: &str) -> u64 {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let prefix = format!("muster_gossip_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

async fn eventually(
    what: &str,
    directory: &Arc<ArcSwap<Snapshot>>,
    check: impl Fn(&Snapshot) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check(&directory.load()) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks `check` on every poll for `period`.
async fn throughout(what: &str, period: Duration, check: impl Fn() -> bool) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        assert!(check(), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_the_key_converge_and_one_with_another_key_neither_learns_nor_injects() {
    let key = generate_key().unwrap();
    let (a_addr, b_addr, x_addr) = (free_udp_addr(), free_udp_addr(), free_udp_addr());
    let keys = GossipKeys::new(ring(&[&key]));
    let (a, _) = member(
        "a",
        a_addr,
        &[],
        Some(keys.clone()),
        vec![record("web-1", "10.0.0.5")],
    )
    .await;
    let (b, b_metrics) = member("b", b_addr, &[a_addr], Some(keys), vec![]).await;
    eventually("web-1 on b", &b.directory(), |s| {
        ips(s, "web-1") == ["10.0.0.5"]
    })
    .await;

    // The impersonation of the issue: another process calling itself `a`,
    // with records of its own, joining b, sealing with a key of its own.
    let (x, _) = member(
        "a",
        x_addr,
        &[b_addr, a_addr],
        Some(GossipKeys::new(ring(&[&generate_key().unwrap()]))),
        vec![record("web-1", "6.6.6.6"), record("billing-db", "6.6.6.7")],
    )
    .await;
    let (on_a, on_b, on_x) = (a.directory(), b.directory(), x.directory());
    throughout(
        "nothing crosses between keys",
        Duration::from_secs(2),
        || {
            let (a, b, x) = (on_a.load(), on_b.load(), on_x.load());
            ips(&a, "web-1") == ["10.0.0.5"]
                && ips(&b, "web-1") == ["10.0.0.5"]
                && ips(&b, "billing-db").is_empty()
                && b.members()
                    .iter()
                    .all(|m| m.generation == 1 && m.name != "x")
                && x.members().iter().all(|m| m.name == "a")
                && !ips(&x, "web-1").contains(&"10.0.0.5".to_owned())
        },
    )
    .await;
    assert!(rejected(&b_metrics, "auth") > 0, "b counted x's datagrams");
    assert_eq!(rejected(&b_metrics, "replay"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_and_an_unkeyed_member_never_exchange_state() {
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let keys = GossipKeys::new(ring(&[&generate_key().unwrap()]));
    let (a, a_metrics) = member(
        "a",
        a_addr,
        &[b_addr],
        Some(keys),
        vec![record("web-1", "10.0.0.5")],
    )
    .await;
    let (b, b_metrics) = member(
        "b",
        b_addr,
        &[a_addr],
        None,
        vec![record("db-1", "10.0.0.6")],
    )
    .await;
    let (on_a, on_b) = (a.directory(), b.directory());
    throughout("nothing crosses", Duration::from_secs(1), || {
        on_a.load().members().iter().all(|m| m.name == "a")
            && on_b.load().members().iter().all(|m| m.name == "b")
            && on_b.load().lookup("web-1").is_empty()
    })
    .await;
    assert!(
        rejected(&a_metrics, "auth") > 0,
        "the keyed one drops plain datagrams"
    );
    assert!(
        rejected(&b_metrics, "auth") > 0,
        "the unkeyed one drops sealed datagrams"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_in_three_steps_loses_no_member_and_no_change() {
    let (old, new) = (generate_key().unwrap(), generate_key().unwrap());
    let addrs = [free_udp_addr(), free_udp_addr(), free_udp_addr()];
    let mut members = Vec::new();
    let mut keys = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let k = GossipKeys::new(ring(&[&old]));
        let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
        members.push(
            member(name, addrs[i], &seeds, Some(k.clone()), vec![])
                .await
                .0,
        );
        keys.push(k);
    }
    let directories: Vec<_> = members.iter().map(Gossip::directory).collect();
    let all_alive = || {
        directories.iter().all(|d| {
            let s = d.load();
            s.members().len() == 3 && s.members().iter().all(|m| m.liveness == Liveness::Alive)
        })
    };
    for d in &directories {
        eventually("three alive members", d, |_| all_alive()).await;
    }
    let steps: [&[&str]; 3] = [&[&old, &new], &[&new, &old], &[&new]];
    for (step, ring_text) in steps.iter().enumerate() {
        // One member at a time, with gossip in between: mixed keyrings are
        // the normal state of a rotation.
        for k in &keys {
            k.replace(ring(ring_text));
            throughout(
                &format!("step {}: every member alive", step + 1),
                Duration::from_millis(300),
                all_alive,
            )
            .await;
        }
        let ip = format!("10.0.1.{}", step + 1);
        let name = format!("changed-in-step-{}", step + 1);
        members[step]
            .publisher()
            .replace(Source::Static, vec![record(&name, &ip)])
            .await;
        for d in &directories {
            eventually(
                &format!("step {}: the change everywhere", step + 1),
                d,
                |s| ips(s, &name) == [ip.as_str()],
            )
            .await;
        }
        assert!(all_alive(), "step {}: every member alive", step + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_messages_past_the_mtu_travel_over_tcp_and_open_like_datagrams() {
    let keys = GossipKeys::new(ring(&[&generate_key().unwrap()]));
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let records: Vec<Record> = (0..300)
        .map(|i| {
            record(
                &format!("web-{i}"),
                &format!("10.0.{}.{}", i / 200, 1 + i % 200),
            )
        })
        .collect();
    let (a, on_a) = member("a", a_addr, &[], Some(keys.clone()), records).await;
    let (b, on_b) = member("b", b_addr, &[a_addr], Some(keys), vec![]).await;
    eventually("all 300 records on b", &b.directory(), |s| s.len() == 300).await;
    assert!(on_a.sent().tcp_messages > 0, "{:?}", on_a.sent());
    for metrics in [&on_a, &on_b] {
        assert!(metrics.sent().largest_datagram <= muster_gossip::DEFAULT_MTU as u64);
        for reason in ["auth", "replay", "malformed"] {
            assert_eq!(rejected(metrics, reason), 0, "{reason}");
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}
