//! Gossip between in-process members over real UDP on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
};
use muster_core::{Address, PublishError, Record, Snapshot, Source};
use muster_gossip::{Gossip, GossipConfig, GossipMetrics, MIN_MTU, RECORD_PREFIX};
use tokio_util::sync::CancellationToken;

/// A member started with `config`, with a shutdown token of its own.
async fn member(config: GossipConfig) -> Gossip {
    Gossip::start(config, &CancellationToken::new())
        .await
        .expect("gossip starts")
}

/// A port free for both UDP and TCP: gossip binds both.
fn free_udp_addr() -> SocketAddr {
    muster_gossip::free_gossip_addr([127, 0, 0, 1].into()).unwrap()
}

fn config(name: &str, addr: SocketAddr, seeds: &[SocketAddr]) -> GossipConfig {
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
        metrics: Default::default(),
        keys: None,
        mtu: muster_gossip::DEFAULT_MTU,
        receive_loss: 0.0,
    }
}

/// Agent `name` in its `generation`, whose records come from the static
/// file: it is ready once that file's records are published.
fn incarnation(
    name: &str,
    generation: u64,
    addr: SocketAddr,
    seeds: &[SocketAddr],
    dead_grace: Duration,
) -> GossipConfig {
    GossipConfig {
        generation,
        dead_grace,
        sources: BTreeSet::from([Source::Static]),
        ..config(name, addr, seeds)
    }
}

/// The addresses `web-1` resolves to, and the generation of member `a`.
fn web_1_and_a(s: &Snapshot) -> (Vec<String>, Option<u64>) {
    let ips = s
        .lookup("web-1")
        .iter()
        .flat_map(|r| r.addresses.iter().map(|a| a.ip.to_string()))
        .collect();
    let generation = s
        .members()
        .iter()
        .find(|m| m.name == "a")
        .map(|m| m.generation);
    (ips, generation)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_changes_and_withdrawals_reach_the_other_member() {
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let a = member(config("a", a_addr, &[])).await;
    let b = member(config("b", b_addr, &[a_addr])).await;
    let on_b = b.directory();

    let report = a
        .publisher()
        .replace(
            Source::Static,
            vec![record("web-1", "10.0.0.1"), record("db-1", "10.0.0.2")],
        )
        .await;
    assert_eq!((report.written, report.rejected.len()), (2, 0));
    eventually("both records on b", &on_b, |s| {
        s.lookup("web-1").len() == 1 && s.lookup("db-1").len() == 1
    })
    .await;
    assert_eq!(on_b.load().lookup("web-1")[0].host, "a");

    let report = a
        .publisher()
        .replace(Source::Static, vec![record("web-1", "10.0.0.9")])
        .await;
    assert_eq!((report.written, report.withdrawn), (1, 1));
    eventually("the change and the withdrawal on b", &on_b, |s| {
        s.lookup("db-1").is_empty()
            && s.lookup("web-1")
                .first()
                .is_some_and(|r| r.addresses[0].ip.to_string() == "10.0.0.9")
    })
    .await;

    // Another source may not take over an id.
    let taken = a
        .publisher()
        .upsert(Source::Registered, record("web-1", "10.0.0.3"))
        .await;
    assert!(
        matches!(taken, Err(PublishError::IdTaken { .. })),
        "{taken:?}"
    );

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_records_leave_after_the_grace() {
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let a = member(config("a", a_addr, &[])).await;
    let b = member(config("b", b_addr, &[a_addr])).await;
    let on_b = b.directory();
    a.publisher()
        .replace(Source::Static, vec![record("web-1", "10.0.0.1")])
        .await;
    eventually("web-1 on b", &on_b, |s| s.lookup("web-1").len() == 1).await;
    // Let the failure detector learn a's heartbeat rhythm.
    tokio::time::sleep(Duration::from_millis(500)).await;

    a.shutdown().await;
    let stopped = Instant::now();
    eventually("web-1 gone from b", &on_b, |s| s.lookup("web-1").is_empty()).await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(500),
        "{:?}",
        stopped.elapsed()
    );
    let members = on_b.load().members().to_vec();
    let a_member = members
        .iter()
        .find(|m| m.name == "a")
        .expect("a still listed");
    assert!(!a_member.visible);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_gossiped_records_are_skipped_and_valid_ones_kept() {
    // A bad peer: plain chitchat writing junk under record keys.
    let (bad_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let bad = spawn_chitchat(
        ChitchatConfig {
            chitchat_id: ChitchatId::new("bad", 1, bad_addr),
            cluster_id: "test".into(),
            gossip_interval: Duration::from_millis(50),
            listen_addr: bad_addr,
            seed_nodes: vec![],
            failure_detector_config: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(60),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
            partial_digests: None,
        },
        vec![
            (format!("{RECORD_PREFIX}junk"), "%%% not base64".into()),
            (format!("{RECORD_PREFIX}empty"), String::new()),
        ],
        &UdpTransport,
    )
    .await
    .unwrap();
    let b = member(config("b", b_addr, &[bad_addr])).await;
    b.publisher()
        .replace(Source::Static, vec![record("good-1", "10.0.0.1")])
        .await;
    // A valid record from the bad peer, encoded by a real publisher elsewhere.
    let c_addr = free_udp_addr();
    let c = member(config("c", c_addr, &[bad_addr])).await;
    c.publisher()
        .replace(Source::Static, vec![record("good-2", "10.0.0.2")])
        .await;

    let on_b = b.directory();
    eventually("members bad and c known to b", &on_b, |s| {
        s.members().iter().any(|m| m.name == "bad") && s.lookup("good-2").len() == 1
    })
    .await;
    let snapshot = on_b.load();
    assert!(snapshot.host_records("bad").next().is_none());
    assert_eq!(snapshot.lookup("good-1").len(), 1);
    drop(bad);
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_takes_over_only_once_it_has_published_its_records() {
    let grace = Duration::from_secs(30);
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let a1 = member(incarnation("a", 1, a_addr, &[], grace)).await;
    let b = member(incarnation("b", 1, b_addr, &[a_addr], grace)).await;
    b.publisher()
        .replace(Source::Static, vec![record("b-1", "10.0.1.1")])
        .await;
    a1.publisher()
        .replace(Source::Static, vec![record("web-1", "10.0.0.1")])
        .await;
    let on_b = b.directory();
    eventually("web-1 of generation 1 on b", &on_b, |s| {
        web_1_and_a(s) == (vec!["10.0.0.1".into()], Some(1))
    })
    .await;

    a1.shutdown().await;
    let a2 = member(incarnation("a", 2, a_addr, &[b_addr], grace)).await;
    eventually("a2 and b have gossiped", &a2.directory(), |s| {
        s.lookup("b-1").len() == 1
    })
    .await;
    // Generation 2 has published nothing yet: generation 1 keeps answering.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            web_1_and_a(&on_b.load()),
            (vec!["10.0.0.1".into()], Some(1)),
            "while generation 2 is not ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    a2.publisher()
        .replace(Source::Static, vec![record("web-1", "10.0.0.2")])
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ips, generation) = web_1_and_a(&on_b.load());
        assert_eq!(ips.len(), 1, "web-1 answers throughout the handover");
        if (ips[0].as_str(), generation) == ("10.0.0.2", Some(2)) {
            break;
        }
        assert!(Instant::now() < deadline, "generation 2 never took over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a2.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_never_publishes_takes_over_once_its_predecessor_is_dead_past_the_grace() {
    let grace = Duration::from_millis(500);
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let a1 = member(incarnation("a", 1, a_addr, &[], grace)).await;
    let b = member(config("b", b_addr, &[a_addr])).await;
    a1.publisher()
        .replace(Source::Static, vec![record("web-1", "10.0.0.1")])
        .await;
    let on_b = b.directory();
    eventually("web-1 on b", &on_b, |s| s.lookup("web-1").len() == 1).await;

    a1.shutdown().await;
    let a2 = member(incarnation("a", 2, a_addr, &[b_addr], grace)).await;
    // Its static source never reports (a stuck start): generation 1 is
    // declared dead, its grace runs out, and generation 2 counts anyway.
    eventually("generation 2 counts, with no records", &on_b, |s| {
        web_1_and_a(s) == (vec![], Some(2))
    })
    .await;
    let a = on_b
        .load()
        .members()
        .iter()
        .find(|m| m.name == "a")
        .cloned()
        .unwrap();
    assert!(a.visible, "{a:?}");
    a2.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_the_mtu_travel_over_tcp_and_no_datagram_exceeds_it() {
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let (on_a, on_b) = (GossipMetrics::default(), GossipMetrics::default());
    let a = member(GossipConfig {
        mtu: MIN_MTU,
        metrics: on_a.clone(),
        ..config("a", a_addr, &[])
    })
    .await;
    let b = member(GossipConfig {
        mtu: MIN_MTU,
        metrics: on_b.clone(),
        ..config("b", b_addr, &[a_addr])
    })
    .await;
    // 300 records: tens of KB of state, far past one 512-byte datagram.
    let records = (0..300)
        .map(|i| {
            record(
                &format!("web-{i}"),
                &format!("10.0.{}.{}", i / 200, 1 + i % 200),
            )
        })
        .collect();
    a.publisher().replace(Source::Static, records).await;
    eventually("all 300 records on b", &b.directory(), |s| s.len() == 300).await;
    assert_eq!(b.directory().load().lookup("web-299")[0].host, "a");

    // Small messages still go as datagrams, once each has gossiped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_a.sent().datagrams == 0 || on_b.sent().datagrams == 0 {
        assert!(Instant::now() < deadline, "both gossip over UDP too");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (name, metrics) in [("a", &on_a), ("b", &on_b)] {
        let sent = metrics.sent();
        assert!(
            sent.largest_datagram <= MIN_MTU as u64,
            "{name} sent a datagram past the MTU: {sent:?}"
        );
    }
    assert!(
        on_a.sent().tcp_messages > 0,
        "a's records went over TCP: {:?}",
        on_a.sent()
    );
    a.shutdown().await;
    b.shutdown().await;
}
