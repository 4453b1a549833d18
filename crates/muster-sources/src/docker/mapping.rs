//! The Docker mapping: how one inspected container becomes a record.
//!
//! [`record_of`] is a pure function of the engine's inspect result, the
//! [`Mapping`] (the part of the source's configuration that shapes records)
//! and the time. It owns every decision about what a container publishes;
//! the session around it only talks to the engine and passes the clock.
//!
//! Which: a container is published when its labels match every label
//! filter, and, once exited, only until the exited retention has passed
//! since it finished ([`Mapping::expired`]; the session also uses it to
//! withdraw records as time goes by).
//!
//! Names: Docker's `/name` becomes a DNS label by [`dns_label_from`]
//! (`Web_1` → `web-1`); a name with nothing left falls back to the short
//! id. Network aliases become aliases (Compose puts the service name
//! there), except the short id Docker adds itself.
//!
//! Addresses: a container's IP on a network the operator declares routable
//! is answered in DNS; IPs on other networks (a bridge's 172.17.x is
//! unreachable from other hosts) are kept in the record as `local`. A
//! running container with no routable address resolves to the host's own
//! address instead (network [`HOST_NETWORK`]), and its published ports go
//! with the record for SRV. A port bound only to a loopback address is not
//! reachable at the host's address, so it counts as unpublished.
//!
//! Labels are kept within the record limits: oversized ones are dropped,
//! then at most [`MAX_LABELS`] are kept, in key order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum, PortBinding,
};
use muster_core::{
    Address, Health, MAX_ADDRESSES, MAX_ALIASES, MAX_LABEL_BYTES, MAX_LABELS, MAX_PORTS, Port,
    Protocol, Record, RecordError, Source, State, dns_label_from,
};
use thiserror::Error;
use tracing::debug;

use super::{HOST_NETWORK, LabelFilter};

/// What shapes the records of the Docker source (from
/// [`DockerConfig::mapping`](super::DockerConfig::mapping)).
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Label filters; a container is published only if it matches all.
    pub filters: Vec<LabelFilter>,
    /// Networks whose container IPs are reachable from other hosts.
    pub routable_networks: BTreeSet<String>,
    /// This host's address, answered for containers with no routable IP.
    pub host_ip: IpAddr,
    /// How long an exited container stays listed (never in DNS).
    pub exited_retention: Duration,
}

impl Mapping {
    /// Whether `record` is an exited container whose retention has passed
    /// at `now_unix` (seconds since the Unix epoch); one with no known
    /// finish time has none left.
    pub fn expired(&self, record: &Record, now_unix: i64) -> bool {
        record.state == State::Exited
            && record
                .finished_at
                .is_none_or(|t| now_unix - t >= self.exited_retention.as_secs() as i64)
    }
}

/// Why an inspected container has no record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Skipped {
    /// The inspect result carries no id.
    #[error("the inspect result has no container id")]
    NoId,
    /// Its labels do not match the label filters.
    #[error("excluded by the label filters")]
    Filtered,
    /// It exited longer ago than the exited retention.
    #[error("exited longer ago than the retention")]
    Expired,
    /// The record it would make breaks a record rule.
    #[error(transparent)]
    Invalid(#[from] RecordError),
}

/// The record for an inspected container at `now_unix` (seconds since the
/// Unix epoch), or why there is none.
pub fn record_of(
    inspect: &ContainerInspectResponse,
    config: &Mapping,
    now_unix: i64,
) -> Result<Record, Skipped> {
    let full_id = inspect.id.as_deref().ok_or(Skipped::NoId)?;
    let container = inspect.config.as_ref();
    let labels = container.and_then(|c| c.labels.clone()).unwrap_or_default();
    if !config.filters.iter().all(|f| f.matches(&labels)) {
        return Err(Skipped::Filtered);
    }
    let id = short_id(full_id).to_owned();
    let raw_name = inspect.name.as_deref().unwrap_or("");
    let mut record = Record::new(id.clone(), published_name(raw_name, &id), Source::Docker);
    let state = inspect.state.as_ref();
    record.state = match state.and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::RUNNING) => State::Running,
        Some(ContainerStateStatusEnum::PAUSED) => State::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => State::Restarting,
        Some(ContainerStateStatusEnum::CREATED) => State::Created,
        _ => State::Exited,
    };
    record.health = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    record.started_at = state
        .and_then(|s| s.started_at.as_deref())
        .and_then(parse_time);
    record.finished_at = state
        .and_then(|s| s.finished_at.as_deref())
        .and_then(parse_time);
    record.image = container.and_then(|c| c.image.clone()).unwrap_or_default();
    record.labels = cap_labels(&id, labels);

    let settings = inspect.network_settings.as_ref();
    let mut aliases = BTreeSet::new();
    for (network, endpoint) in settings
        .and_then(|s| s.networks.as_ref())
        .into_iter()
        .flatten()
    {
        let local = !config.routable_networks.contains(network);
        let ips = [
            endpoint.ip_address.as_deref(),
            endpoint.global_ipv6_address.as_deref(),
        ];
        for ip in ips
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
        {
            record.addresses.push(Address {
                network: network.clone(),
                ip,
                local,
            });
        }
        for alias in endpoint.aliases.iter().flatten() {
            if full_id.starts_with(alias.as_str()) {
                continue; // Docker adds the short id as an alias.
            }
            if let Some(label) = dns_label_from(alias).filter(|l| *l != record.name) {
                aliases.insert(label);
            }
        }
    }
    record.addresses.sort();
    record.addresses.truncate(MAX_ADDRESSES - 1);
    if record.state == State::Running && record.addresses.iter().all(|a| a.local) {
        record.addresses.push(Address {
            network: HOST_NETWORK.to_owned(),
            ip: config.host_ip,
            local: false,
        });
    }
    record.aliases = aliases.into_iter().take(MAX_ALIASES).collect();

    let mut ports = BTreeSet::new();
    for (spec, bindings) in settings
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        let Some((port, protocol)) = parse_port_spec(spec) else {
            continue;
        };
        let host_ports: Vec<u16> = bindings
            .iter()
            .flatten()
            .filter(|b| !binds_loopback(b))
            .filter_map(|b| b.host_port.as_deref()?.parse().ok())
            .collect();
        if host_ports.is_empty() {
            ports.insert(Port {
                port,
                protocol,
                host_port: None,
            });
        }
        for host_port in host_ports {
            ports.insert(Port {
                port,
                protocol,
                host_port: Some(host_port),
            });
        }
    }
    record.ports = ports.into_iter().take(MAX_PORTS).collect();

    if config.expired(&record, now_unix) {
        return Err(Skipped::Expired);
    }
    record.validate()?;
    Ok(record)
}

/// Docker's 12-character short id.
pub(super) fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Docker's RFC 3339 times; the zero time (`0001-01-01T00:00:00Z`) and
/// anything before 1970 mean "never".
fn parse_time(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    (secs > 0).then_some(secs)
}

/// `8080/tcp` → (8080, Tcp).
fn parse_port_spec(spec: &str) -> Option<(u16, Protocol)> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return None,
    };
    Some((port.parse().ok().filter(|p| *p > 0)?, protocol))
}

/// Whether a port binding listens on a loopback address only (`-p
/// 127.0.0.1::8443`): nothing reaches it at the host's address.
fn binds_loopback(binding: &PortBinding) -> bool {
    binding
        .host_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// Keeps the labels a record may carry: at most [`MAX_LABELS`], each key
/// and value within [`MAX_LABEL_BYTES`]; logs what was dropped.
fn cap_labels(id: &str, labels: HashMap<String, String>) -> BTreeMap<String, String> {
    let total = labels.len();
    let kept: BTreeMap<String, String> = labels
        .into_iter()
        .filter(|(k, v)| !k.is_empty() && k.len() <= MAX_LABEL_BYTES && v.len() <= MAX_LABEL_BYTES)
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .take(MAX_LABELS)
        .collect();
    if kept.len() < total {
        debug!(container = %id, kept = kept.len(), total, "labels over the record limits were dropped");
    }
    kept
}

/// The DNS label a container is published under: its Docker name mapped
/// by [`dns_label_from`], or its short id when nothing of the name is left.
fn published_name(docker_name: &str, id: &str) -> String {
    dns_label_from(docker_name.trim_start_matches('/')).unwrap_or_else(|| short_id(id).to_owned())
}

#[cfg(test)]
mod tests;
