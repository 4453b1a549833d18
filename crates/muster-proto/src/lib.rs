//! The generated protobuf messages and tonic service of `proto/muster/v1`,
//! and their conversion to and from muster-core types.
//!
//! This is the only crate that sees generated code: the rest of muster
//! works on core types and converts at this edge. A record coming from the
//! wire (gossip or a client) is checked here, so a malformed one becomes a
//! [`WireError`] rather than a bad entry in the directory.

use std::net::IpAddr;

use muster_core as core;
use thiserror::Error;

/// Generated code for package `muster.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("muster.v1");
}

/// The encoded file descriptor set of `muster.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("muster_descriptor");

/// Why a wire record cannot become a core record.
#[derive(Debug, Error)]
pub enum WireError {
    /// Not a valid protobuf message.
    #[error("undecodable record: {0}")]
    Decode(#[from] prost::DecodeError),
    /// An address that is not an IP address.
    #[error("record {id:?}: bad IP address {ip:?}")]
    BadIp {
        /// Record id.
        id: String,
        /// The text that is not an address.
        ip: String,
    },
    /// A port outside 1..=65535.
    #[error("record {id:?}: bad port {port}")]
    BadPort {
        /// Record id.
        id: String,
        /// The value.
        port: u32,
    },
    /// An enum value this version does not know.
    #[error("record {id:?}: unknown {field} value {value}")]
    UnknownEnum {
        /// Record id.
        id: String,
        /// Which field.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// The record breaks a core rule (name, sizes).
    #[error(transparent)]
    Invalid(#[from] core::RecordError),
}

impl From<&core::Record> for v1::Record {
    fn from(r: &core::Record) -> v1::Record {
        v1::Record {
            id: r.id.clone(),
            name: r.name.clone(),
            aliases: r.aliases.clone(),
            host: r.host.clone(),
            state: state_to_wire(r.state) as i32,
            health: health_to_wire(r.health) as i32,
            image: r.image.clone(),
            started_at: r.started_at.unwrap_or(0),
            finished_at: r.finished_at.unwrap_or(0),
            addresses: r
                .addresses
                .iter()
                .map(|a| v1::Address {
                    network: a.network.clone(),
                    ip: a.ip.to_string(),
                    local: a.local,
                })
                .collect(),
            ports: r
                .ports
                .iter()
                .map(|p| v1::Port {
                    port: p.port.into(),
                    protocol: protocol_to_wire(p.protocol) as i32,
                    host_port: p.host_port.map_or(0, u32::from),
                })
                .collect(),
            labels: r.labels.clone(),
            source: source_to_wire(r.source) as i32,
        }
    }
}

impl TryFrom<v1::Record> for core::Record {
    type Error = WireError;

    /// Converts and validates a wire record.
    fn try_from(w: v1::Record) -> Result<core::Record, WireError> {
        let record = parse_record(w)?;
        record.validate()?;
        Ok(record)
    }
}

/// Converts a wire record (addresses, ports and enums parsed) without
/// checking the record rules, for a caller that completes the record and
/// then checks it once itself (registration).
pub fn parse_record(w: v1::Record) -> Result<core::Record, WireError> {
    {
        let id = w.id;
        let unknown = |field, value| WireError::UnknownEnum {
            id: id.clone(),
            field,
            value,
        };
        let state = match v1::State::try_from(w.state) {
            Ok(state) => state_from_wire(state),
            Err(_) => return Err(unknown("state", w.state)),
        };
        let health = match v1::Health::try_from(w.health) {
            Ok(v1::Health::None) => core::Health::None,
            Ok(v1::Health::Starting) => core::Health::Starting,
            Ok(v1::Health::Healthy) => core::Health::Healthy,
            Ok(v1::Health::Unhealthy) => core::Health::Unhealthy,
            Err(_) => return Err(unknown("health", w.health)),
        };
        let source = match v1::Source::try_from(w.source) {
            Ok(v1::Source::Static) => core::Source::Static,
            Ok(v1::Source::Docker) => core::Source::Docker,
            Ok(v1::Source::Registered) => core::Source::Registered,
            Err(_) => return Err(unknown("source", w.source)),
        };
        let mut addresses = Vec::with_capacity(w.addresses.len());
        for a in w.addresses {
            let ip: IpAddr = a.ip.parse().map_err(|_| WireError::BadIp {
                id: id.clone(),
                ip: a.ip.clone(),
            })?;
            addresses.push(core::Address {
                network: a.network,
                ip,
                local: a.local,
            });
        }
        let mut ports = Vec::with_capacity(w.ports.len());
        for p in w.ports {
            let port = port_number(&id, p.port)?;
            let host_port = match p.host_port {
                0 => None,
                n => Some(port_number(&id, n)?),
            };
            let protocol = match v1::Protocol::try_from(p.protocol) {
                Ok(v1::Protocol::Tcp) => core::Protocol::Tcp,
                Ok(v1::Protocol::Udp) => core::Protocol::Udp,
                Ok(v1::Protocol::Sctp) => core::Protocol::Sctp,
                Err(_) => return Err(unknown("protocol", p.protocol)),
            };
            ports.push(core::Port {
                port,
                protocol,
                host_port,
            });
        }
        let record = core::Record {
            id,
            name: w.name,
            aliases: w.aliases,
            host: w.host,
            state,
            health,
            image: w.image,
            started_at: (w.started_at != 0).then_some(w.started_at),
            finished_at: (w.finished_at != 0).then_some(w.finished_at),
            addresses,
            ports,
            labels: w.labels,
            source,
        };
        Ok(record)
    }
}

fn port_number(id: &str, port: u32) -> Result<u16, WireError> {
    match u16::try_from(port) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(WireError::BadPort {
            id: id.to_owned(),
            port,
        }),
    }
}

/// A wire state as the core's.
pub fn state_from_wire(s: v1::State) -> core::State {
    match s {
        v1::State::Running => core::State::Running,
        v1::State::Created => core::State::Created,
        v1::State::Restarting => core::State::Restarting,
        v1::State::Paused => core::State::Paused,
        v1::State::Exited => core::State::Exited,
    }
}

/// A core state as the wire's.
pub fn state_to_wire(s: core::State) -> v1::State {
    match s {
        core::State::Running => v1::State::Running,
        core::State::Created => v1::State::Created,
        core::State::Restarting => v1::State::Restarting,
        core::State::Paused => v1::State::Paused,
        core::State::Exited => v1::State::Exited,
    }
}

fn health_to_wire(h: core::Health) -> v1::Health {
    match h {
        core::Health::None => v1::Health::None,
        core::Health::Starting => v1::Health::Starting,
        core::Health::Healthy => v1::Health::Healthy,
        core::Health::Unhealthy => v1::Health::Unhealthy,
    }
}

fn source_to_wire(s: core::Source) -> v1::Source {
    match s {
        core::Source::Static => v1::Source::Static,
        core::Source::Docker => v1::Source::Docker,
        core::Source::Registered => v1::Source::Registered,
    }
}

fn protocol_to_wire(p: core::Protocol) -> v1::Protocol {
    match p {
        core::Protocol::Tcp => v1::Protocol::Tcp,
        core::Protocol::Udp => v1::Protocol::Udp,
        core::Protocol::Sctp => v1::Protocol::Sctp,
    }
}

impl From<&core::Member> for v1::Member {
    fn from(m: &core::Member) -> v1::Member {
        v1::Member {
            name: m.name.clone(),
            gossip_addr: m.gossip_addr.to_string(),
            liveness: match m.liveness {
                core::Liveness::Alive => v1::Liveness::Alive,
                core::Liveness::Suspect => v1::Liveness::Suspect,
                core::Liveness::Dead => v1::Liveness::Dead,
                core::Liveness::Joining => v1::Liveness::Joining,
                core::Liveness::Conflict => v1::Liveness::Conflict,
            } as i32,
            generation: m.generation,
            records: m.records as u64,
            visible: m.visible,
            meta: m.meta.clone(),
            version: m.meta.get("version").cloned().unwrap_or_default(),
            docker: m.meta.get("docker").cloned().unwrap_or_default(),
            docker_error: m.meta.get("docker_error").cloned().unwrap_or_default(),
            last_heard_ms: 0,
            behind_since_ms: 0,
            behind_versions: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn records_survive_the_wire() {
        let mut r = core::Record::new("c0ffee", "web-1", core::Source::Docker);
        r.host = "a".into();
        r.aliases.push("web".into());
        r.state = core::State::Exited;
        r.health = core::Health::Unhealthy;
        r.started_at = Some(1_700_000_000);
        r.addresses.push(core::Address {
            network: "bridge".into(),
            ip: "fd00::5".parse().unwrap(),
            local: true,
        });
        r.ports.push("80:8080/udp".parse().unwrap());
        r.labels.insert("app".into(), "web".into());
        let bytes = v1::Record::from(&r).encode_to_vec();
        let back = core::Record::try_from(v1::Record::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn malformed_wire_records_are_rejected() {
        let good = v1::Record::from(&core::Record::new("x", "x", core::Source::Static));
        let bad_ip = v1::Record {
            addresses: vec![v1::Address {
                network: "n".into(),
                ip: "10.0.0.300".into(),
                local: false,
            }],
            ..good.clone()
        };
        assert!(matches!(
            core::Record::try_from(bad_ip),
            Err(WireError::BadIp { .. })
        ));
        let bad_name = v1::Record {
            name: "no_underscores".into(),
            ..good.clone()
        };
        assert!(matches!(
            core::Record::try_from(bad_name),
            Err(WireError::Invalid(_))
        ));
        let bad_state = v1::Record {
            state: 99,
            ..good.clone()
        };
        assert!(matches!(
            core::Record::try_from(bad_state),
            Err(WireError::UnknownEnum { .. })
        ));
        let bad_port = v1::Record {
            ports: vec![v1::Port {
                port: 70_000,
                protocol: 0,
                host_port: 0,
            }],
            ..good
        };
        assert!(matches!(
            core::Record::try_from(bad_port),
            Err(WireError::BadPort { .. })
        ));
        assert!(v1::Record::decode(&b"\xff\xff\xff"[..]).is_err());
    }
}
