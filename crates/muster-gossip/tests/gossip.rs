//! Gossip between in-process members over real UDP on loopback.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
};
use muster_core::{Address, Record, Snapshot, Source};
use muster_gossip::{Gossip, GossipConfig, PublishError, RECORD_PREFIX};

fn free_udp_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
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
        phi_threshold: 8.0,
        dead_grace: Duration::from_millis(500),
        forget_after: Duration::from_secs(60),
        meta: BTreeMap::new(),
        metrics: Default::default(),
    }
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
    let a = Gossip::start(config("a", a_addr, &[])).await.unwrap();
    let b = Gossip::start(config("b", b_addr, &[a_addr])).await.unwrap();
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
    let a = Gossip::start(config("a", a_addr, &[])).await.unwrap();
    let b = Gossip::start(config("b", b_addr, &[a_addr])).await.unwrap();
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
        },
        vec![
            (format!("{RECORD_PREFIX}junk"), "%%% not base64".into()),
            (format!("{RECORD_PREFIX}empty"), String::new()),
        ],
        &UdpTransport,
    )
    .await
    .unwrap();
    let b = Gossip::start(config("b", b_addr, &[bad_addr]))
        .await
        .unwrap();
    b.publisher()
        .replace(Source::Static, vec![record("good-1", "10.0.0.1")])
        .await;
    // A valid record from the bad peer, encoded by a real publisher elsewhere.
    let c_addr = free_udp_addr();
    let c = Gossip::start(config("c", c_addr, &[bad_addr]))
        .await
        .unwrap();
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
