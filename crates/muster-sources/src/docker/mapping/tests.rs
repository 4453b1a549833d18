//! Table tests of [`record_of`] on inspect documents recorded from Docker
//! Engine 20.10 (see `../testdata/README.md`). Each case states the whole
//! expected record; `now` is always given relative to the recorded times,
//! so nothing here reads the real clock.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::*;

/// This host's address in every case (TEST-NET-1).
const HOST_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
/// The exited retention in every case.
const RETENTION: Duration = Duration::from_secs(60);
/// The image every recorded container runs.
const IMAGE: &str = "muster-test/busybox:1";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../testdata/", $name, ".json"))
    };
}

/// A recorded `docker inspect` output (a JSON array of one container).
fn inspect(fixture: &str) -> ContainerInspectResponse {
    let mut docs: Vec<ContainerInspectResponse> =
        serde_json::from_str(fixture).expect("a docker inspect array");
    assert_eq!(docs.len(), 1, "one container per fixture");
    docs.remove(0)
}

/// The mapping with `routable` networks and no filters.
fn mapping(routable: &[&str]) -> Mapping {
    Mapping {
        filters: Vec::new(),
        routable_networks: routable.iter().map(|n| n.to_string()).collect(),
        host_ip: HOST_IP,
        exited_retention: RETENTION,
    }
}

fn filtered(filters: &[&str]) -> Mapping {
    Mapping {
        filters: filters.iter().map(|f| f.parse().unwrap()).collect(),
        ..mapping(&[])
    }
}

fn check(fixture: &str, config: &Mapping, now: i64, expected: Result<Record, Skipped>) {
    assert_eq!(record_of(&inspect(fixture), config, now), expected);
}

fn local(network: &str, ip: &str) -> Address {
    Address {
        network: network.to_owned(),
        ip: ip.parse().unwrap(),
        local: true,
    }
}

fn routable(network: &str, ip: &str) -> Address {
    Address {
        local: false,
        ..local(network, ip)
    }
}

fn host_address() -> Address {
    routable(HOST_NETWORK, &HOST_IP.to_string())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The label every recorded container carries.
fn test_label() -> BTreeMap<String, String> {
    labels(&[("muster.test", "1")])
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

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_running_container_on_the_bridge_gets_a_dns_name_and_the_host_address() {
    // `Web_1` on the default bridge: 172.17.0.2 is kept, but only as local.
    check(
        fixture!("running-on-bridge"),
        &mapping(&[]),
        1_796_073_743 + 10,
        Ok(Record {
            id: "e8bc6141e68b".into(),
            name: "web-1".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_743), // 2026-11-30T21:22:23.698029403Z
            finished_at: None,               // 0001-01-01T00:00:00Z
            addresses: vec![local("bridge", "172.17.0.2"), host_address()],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_name_with_nothing_left_after_sanitising_falls_back_to_the_short_id() {
    // Docker's own names start with a letter or digit, which always
    // survives, so the engine cannot record such a name: this case is the
    // recorded `Web_1` renamed.
    let mut doc = inspect(fixture!("running-on-bridge"));
    doc.name = Some("/_.-_".into());
    assert_eq!(
        record_of(&doc, &mapping(&[]), 1_796_073_743 + 10).map(|r| r.name),
        Ok("e8bc6141e68b".into())
    );
}

#[test]
fn network_aliases_become_aliases_but_the_short_id_docker_adds_does_not() {
    // Compose style: the service name as a network alias and as a label;
    // `Web.Primary` is sanitised like a name.
    check(
        fixture!("compose-aliases"),
        &mapping(&["muster-test-net"]),
        1_796_073_744 + 10,
        Ok(Record {
            id: "b2799a455378".into(),
            name: "shop-web-1".into(),
            aliases: strings(&["web", "web-primary"]),
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_744),
            finished_at: None,
            addresses: vec![routable("muster-test-net", "172.18.0.2")],
            ports: vec![],
            labels: labels(&[
                ("com.docker.compose.project", "shop"),
                ("com.docker.compose.service", "web"),
                ("muster.test", "1"),
            ]),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_routable_network_address_is_answered_and_the_bridge_one_kept_local() {
    let expected = Record {
        id: "55b8a7de35a2".into(),
        name: "multi-home".into(),
        aliases: vec![],
        host: String::new(),
        state: State::Running,
        health: Health::None,
        image: IMAGE.into(),
        started_at: Some(1_796_073_744),
        finished_at: None,
        addresses: vec![
            local("bridge", "172.17.0.3"),
            routable("muster-test-net", "172.18.0.3"),
        ],
        ports: vec![],
        labels: test_label(),
        source: Source::Docker,
    };
    check(
        fixture!("two-networks"),
        &mapping(&["muster-test-net"]),
        1_796_073_744 + 10,
        Ok(expected),
    );
}

#[test]
fn with_no_routable_network_every_address_is_local_and_the_host_address_is_added() {
    // The same container as above; only the configuration differs.
    check(
        fixture!("two-networks"),
        &mapping(&["some-other-net"]),
        1_796_073_744 + 10,
        Ok(Record {
            id: "55b8a7de35a2".into(),
            name: "multi-home".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_744),
            finished_at: None,
            addresses: vec![
                local("bridge", "172.17.0.3"),
                local("muster-test-net", "172.18.0.3"),
                host_address(),
            ],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn published_ports_carry_their_host_port_and_exposed_or_loopback_only_ones_none() {
    // -p 18080:80 -p 18053:53/udp -p 127.0.0.1::8443 --expose 9000: the
    // IPv4 and IPv6 bindings of one port are one port; 8443 is bound to
    // 127.0.0.1:32768 only, which nobody reaches at the host's address.
    check(
        fixture!("ports"),
        &mapping(&[]),
        1_796_073_744 + 10,
        Ok(Record {
            id: "24b21280d096".into(),
            name: "ports".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_744),
            finished_at: None,
            addresses: vec![local("bridge", "172.17.0.4"), host_address()],
            ports: vec![
                udp(53, Some(18053)),
                tcp(80, Some(18080)),
                tcp(8443, None),
                tcp(9000, None),
            ],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_health_check_not_yet_run_is_starting() {
    check(
        fixture!("health-starting"),
        &mapping(&[]),
        1_796_073_744 + 10,
        Ok(Record {
            id: "d10682da1565".into(),
            name: "health-starting".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::Starting,
            image: IMAGE.into(),
            started_at: Some(1_796_073_744),
            finished_at: None,
            addresses: vec![local("bridge", "172.17.0.5"), host_address()],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_passing_health_check_is_healthy() {
    check(
        fixture!("health-healthy"),
        &mapping(&[]),
        1_796_073_744 + 10,
        Ok(Record {
            id: "89d09d1e9fbd".into(),
            name: "health-healthy".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::Healthy,
            image: IMAGE.into(),
            started_at: Some(1_796_073_744),
            finished_at: None,
            addresses: vec![local("bridge", "172.17.0.6"), host_address()],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_failing_health_check_is_unhealthy_and_the_container_still_running() {
    check(
        fixture!("health-unhealthy"),
        &mapping(&[]),
        1_796_073_745 + 10,
        Ok(Record {
            id: "567abd1e0e64".into(),
            name: "health-unhealthy".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::Unhealthy,
            image: IMAGE.into(),
            started_at: Some(1_796_073_745),
            finished_at: None,
            addresses: vec![local("bridge", "172.17.0.7"), host_address()],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

/// `exited-3` finished at 2026-11-30T21:22:26.564972874Z.
const EXITED_AT: i64 = 1_796_073_746;

#[test]
fn an_exited_container_is_listed_without_addresses_within_its_retention() {
    // The exit code (3) is not part of a record.
    check(
        fixture!("exited-3"),
        &mapping(&[]),
        EXITED_AT + RETENTION.as_secs() as i64 - 1,
        Ok(Record {
            id: "eb1b1df96567".into(),
            name: "exited-3".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Exited,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_746),
            finished_at: Some(EXITED_AT),
            addresses: vec![],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn an_exited_container_is_skipped_once_its_retention_has_passed() {
    check(
        fixture!("exited-3"),
        &mapping(&[]),
        EXITED_AT + RETENTION.as_secs() as i64,
        Err(Skipped::Expired),
    );
}

#[test]
fn a_paused_container_keeps_its_local_address_but_not_the_host_address() {
    check(
        fixture!("paused"),
        &mapping(&[]),
        1_796_073_746 + 10,
        Ok(Record {
            id: "be4617d8a0db".into(),
            name: "paused".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Paused,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_746),
            finished_at: None,
            addresses: vec![local("bridge", "172.17.0.8")],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_created_container_has_no_times_and_no_addresses() {
    check(
        fixture!("created"),
        &mapping(&[]),
        1_796_073_746 + 10,
        Ok(Record {
            id: "99ad524b17fc".into(),
            name: "created".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Created,
            health: Health::None,
            image: IMAGE.into(),
            started_at: None,
            finished_at: None,
            addresses: vec![],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_restarting_container_is_kept_however_long_ago_it_last_finished() {
    // The retention is for exited containers only.
    check(
        fixture!("restarting"),
        &mapping(&[]),
        1_796_073_748 + 86_400,
        Ok(Record {
            id: "abb59898d18e".into(),
            name: "restarting".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Restarting,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_748),
            finished_at: Some(1_796_073_748),
            addresses: vec![],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_container_on_the_host_network_resolves_to_the_host_address() {
    check(
        fixture!("host-network"),
        &mapping(&[]),
        1_796_073_747 + 10,
        Ok(Record {
            id: "0ece0e83873d".into(),
            name: "hostnet".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_747),
            finished_at: None,
            addresses: vec![host_address()],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_container_with_no_network_also_resolves_to_the_host_address() {
    // `--network none`: no address of its own, so the host fallback
    // applies like for any running container without a routable one.
    check(
        fixture!("none-network"),
        &mapping(&[]),
        1_796_073_747 + 10,
        Ok(Record {
            id: "8d25414cb41f".into(),
            name: "nonet".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_747),
            finished_at: None,
            addresses: vec![host_address()],
            ports: vec![],
            labels: test_label(),
            source: Source::Docker,
        }),
    );
}

#[test]
fn labels_over_the_size_limit_are_dropped_and_the_rest_capped_in_key_order() {
    // 76 labels: a 265-byte key and a 257-byte value are dropped; of the 74
    // left, the first 64 by key are kept (upper case sorts first), so
    // l62..l70 and muster.test go.
    let mut expected = labels(&[
        ("Team", "Infra"),
        ("edge.value", &"v".repeat(MAX_LABEL_BYTES)),
        ("empty", ""),
    ]);
    for i in 1..=61 {
        expected.insert(format!("l{i:02}"), format!("{i:02}"));
    }
    assert_eq!(expected.len(), MAX_LABELS);
    check(
        fixture!("labels-over-limits"),
        &mapping(&[]),
        1_796_073_748 + 10,
        Ok(Record {
            id: "3eaba9831497".into(),
            name: "labels".into(),
            aliases: vec![],
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: IMAGE.into(),
            started_at: Some(1_796_073_748),
            finished_at: None,
            addresses: vec![local("bridge", "172.17.0.9"), host_address()],
            ports: vec![],
            labels: expected,
            source: Source::Docker,
        }),
    );
}

#[test]
fn a_container_is_published_only_when_its_labels_match_every_filter() {
    let now = 1_796_073_743 + 10;
    let published =
        |config: &Mapping| record_of(&inspect(fixture!("running-on-bridge")), config, now);
    assert!(published(&filtered(&["label=muster.test"])).is_ok());
    assert!(published(&filtered(&["label=muster.test=1"])).is_ok());
    check(
        fixture!("running-on-bridge"),
        &filtered(&["label=muster.test=1", "label=tenant"]),
        now,
        Err(Skipped::Filtered),
    );
    check(
        fixture!("running-on-bridge"),
        &filtered(&["label=muster.test=2"]),
        now,
        Err(Skipped::Filtered),
    );
}

#[test]
fn docker_times_and_ports_are_read() {
    assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
    assert_eq!(
        parse_time("2026-11-25T04:42:24.568061123Z"),
        Some(1_795_581_744)
    );
    assert_eq!(parse_port_spec("8080/tcp"), Some((8080, Protocol::Tcp)));
    assert_eq!(parse_port_spec("53/udp"), Some((53, Protocol::Udp)));
    assert_eq!(parse_port_spec("x/tcp"), None);
}

#[test]
fn unmappable_names_fall_back_to_the_short_id() {
    assert_eq!(published_name("/Web_1", "0123456789abcdef"), "web-1");
    assert_eq!(published_name("/___", "0123456789abcdef"), "0123456789ab");
}
