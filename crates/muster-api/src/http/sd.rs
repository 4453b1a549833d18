//! Prometheus HTTP service discovery (`/v1/sd`): every container target in
//! the cluster, from any one agent, labelled as Prometheus' docker_sd
//! labels them (`__meta_docker_*` becomes `__meta_muster_*`).
//!
//! Which targets: running records only, one target per routable address
//! and port. A record names its metrics port with the label
//! `muster.metrics.port=<number>` (and its path with
//! `muster.metrics.path=/path`); without that label every TCP port the
//! record declares is a target, as with docker_sd; a record with neither is
//! not a target. A record with a routable address of its own is scraped at
//! the container port; one that resolves to its host's address is scraped
//! at the published host port (and left out if the port is unpublished).
//! `?selector=` narrows the records with a label selector.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_core::{Protocol, Record, Selector};
use serde::{Deserialize, Serialize};

use super::HttpState;

/// Label naming a record's metrics port.
pub const METRICS_PORT_LABEL: &str = "muster.metrics.port";
/// Label naming a record's metrics path.
pub const METRICS_PATH_LABEL: &str = "muster.metrics.path";

/// One group of targets sharing labels, as Prometheus reads it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TargetGroup {
    targets: Vec<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub(super) struct SdQuery {
    #[serde(default)]
    selector: String,
}

pub(super) async fn targets(
    State(state): State<HttpState>,
    Query(query): Query<SdQuery>,
) -> Response {
    let selector: Selector = match query.selector.parse() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("selector: {e}\n")).into_response(),
    };
    let snapshot = state.directory.load();
    let groups: Vec<TargetGroup> = snapshot
        .select(&selector)
        .iter()
        .filter(|r| r.state == muster_core::State::Running)
        .flat_map(|r| groups_of(r))
        .collect();
    Json(groups).into_response()
}

/// Prometheus label names are `[a-zA-Z_][a-zA-Z0-9_]*`: anything else
/// becomes `_`, as docker_sd does.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The target groups of one record.
pub fn groups_of(r: &Record) -> Vec<TargetGroup> {
    let mut base: BTreeMap<String, String> = BTreeMap::new();
    let mut meta = |k: &str, v: &str| {
        base.insert(format!("__meta_muster_{k}"), v.to_owned());
    };
    meta("container_name", &r.name);
    meta("container_id", &r.id);
    meta("host", &r.host);
    meta("image", &r.image);
    meta("state", r.state.as_str());
    meta("health", r.health.as_str());
    meta("source", r.source.as_str());
    meta("service", &r.service().unwrap_or_default());
    for (k, v) in &r.labels {
        base.insert(
            format!("__meta_muster_container_label_{}", sanitize(k)),
            v.clone(),
        );
    }
    if let Some(path) = r.labels.get(METRICS_PATH_LABEL) {
        base.insert("__metrics_path__".into(), path.clone());
    }
    // (port inside, port outside, protocol) to scrape.
    let ports: Vec<(u16, Option<u16>, Protocol)> = match r
        .labels
        .get(METRICS_PORT_LABEL)
        .and_then(|p| p.parse::<u16>().ok())
    {
        Some(port) => {
            let published = r
                .ports
                .iter()
                .find(|p| p.port == port && p.protocol == Protocol::Tcp)
                .and_then(|p| p.host_port);
            vec![(port, published, Protocol::Tcp)]
        }
        None => r
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| (p.port, p.host_port, p.protocol))
            .collect(),
    };
    let own_address = r.addresses.iter().any(|a| !a.local && a.network != "host");
    let mut groups = Vec::new();
    for address in r.addresses.iter().filter(|a| !a.local) {
        for (private, public, protocol) in &ports {
            let port = if own_address {
                *private
            } else {
                match public {
                    Some(p) => *p,
                    None => continue,
                }
            };
            let mut labels = base.clone();
            labels.insert("__meta_muster_network_name".into(), address.network.clone());
            labels.insert("__meta_muster_network_ip".into(), address.ip.to_string());
            labels.insert("__meta_muster_port_private".into(), private.to_string());
            labels.insert(
                "__meta_muster_port_public".into(),
                public.map(|p| p.to_string()).unwrap_or_default(),
            );
            labels.insert(
                "__meta_muster_port_protocol".into(),
                protocol.as_str().into(),
            );
            groups.push(TargetGroup {
                targets: vec![std::net::SocketAddr::new(address.ip, port).to_string()],
                labels,
            });
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use muster_core::{Address, Source};

    use super::*;

    fn record(labels: &[(&str, &str)], ports: &[&str], local: bool) -> Record {
        let mut r = Record::new("c0ffee", "web-1", Source::Docker);
        r.host = "a".into();
        r.image = "web:1".into();
        r.addresses.push(Address {
            network: "backend".into(),
            ip: "10.0.0.5".parse().unwrap(),
            local,
        });
        r.addresses.push(Address {
            network: "bridge".into(),
            ip: "172.17.0.5".parse().unwrap(),
            local: true,
        });
        r.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
        r.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    fn targets(r: &Record) -> Vec<String> {
        groups_of(r).into_iter().flat_map(|g| g.targets).collect()
    }

    #[test]
    fn the_metrics_port_label_picks_one_port_on_every_routable_address() {
        let r = record(
            &[
                ("muster.metrics.port", "9100"),
                ("muster.metrics.path", "/m"),
                ("com.example/team", "ops"),
            ],
            &["8080/tcp", "9100/tcp"],
            false,
        );
        let groups = groups_of(&r);
        assert_eq!(targets(&r), ["10.0.0.5:9100"]);
        let l = &groups[0].labels;
        assert_eq!(l["__meta_muster_container_name"], "web-1");
        assert_eq!(l["__meta_muster_container_id"], "c0ffee");
        assert_eq!(l["__meta_muster_container_label_com_example_team"], "ops");
        assert_eq!(l["__meta_muster_network_ip"], "10.0.0.5");
        assert_eq!(l["__meta_muster_network_name"], "backend");
        assert_eq!(l["__meta_muster_port_private"], "9100");
        assert_eq!(l["__meta_muster_port_public"], "");
        assert_eq!(l["__metrics_path__"], "/m");
        assert_eq!(l["__meta_muster_image"], "web:1");
        assert_eq!(l["__meta_muster_host"], "a");
    }

    #[test]
    fn without_the_label_every_tcp_port_is_a_target_and_host_local_records_use_published_ports() {
        assert_eq!(
            targets(&record(&[], &["8080/tcp", "53/udp", "9090/tcp"], false)),
            ["10.0.0.5:8080", "10.0.0.5:9090"]
        );
        // Only host-local addresses: reached through the published port on
        // the host's address (the record carries it as routable).
        let mut r = record(&[], &["80:8080/tcp", "9090/tcp"], true);
        r.addresses.push(Address {
            network: "host".into(),
            ip: "192.0.2.1".parse().unwrap(),
            local: false,
        });
        assert_eq!(targets(&r), ["192.0.2.1:80"]);
        assert!(targets(&record(&[], &[], false)).is_empty());
    }
}
