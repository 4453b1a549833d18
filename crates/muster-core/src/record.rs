//! The record: what one host publishes about one container (or one
//! statically declared or self-registered service).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

use crate::name::{NameError, validate_dns_label};

/// Labels that name a record's service group, in order of precedence.
pub const SERVICE_LABELS: [&str; 2] = ["muster.service", "com.docker.compose.service"];

/// Largest number of labels a record may carry.
pub const MAX_LABELS: usize = 64;
/// Largest size of one label key or value, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// Largest number of aliases a record may carry.
pub const MAX_ALIASES: usize = 16;
/// Largest number of addresses a record may carry.
pub const MAX_ADDRESSES: usize = 32;
/// Largest number of ports a record may carry.
pub const MAX_PORTS: usize = 64;

/// One entry of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unique among the records of one host (a container id, or the name of a
    /// static record).
    pub id: String,
    /// The DNS label the record answers to, as published (case kept).
    pub name: String,
    /// Further DNS labels the record answers to.
    pub aliases: Vec<String>,
    /// The node name of the agent that publishes the record.
    pub host: String,
    /// Lifecycle state.
    pub state: State,
    /// Health as reported by the container's health check.
    pub health: Health,
    /// Image reference, empty when unknown.
    pub image: String,
    /// Start time in seconds since the Unix epoch, when known.
    pub started_at: Option<i64>,
    /// When it last exited, in seconds since the Unix epoch, when known.
    pub finished_at: Option<i64>,
    /// Addresses, each on a named network.
    pub addresses: Vec<Address>,
    /// Ports the record serves on.
    pub ports: Vec<Port>,
    /// Labels, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Where the record came from.
    pub source: Source,
}

/// An IP address on a named network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// Network name (a Docker network, `host`, or `static`).
    pub network: String,
    /// The address.
    pub ip: IpAddr,
    /// Reachable only on the record's own host (a bridge network, say):
    /// kept in the record for information, never answered in DNS.
    pub local: bool,
}

/// A port a record serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// The port inside the container (or the only port, for static records).
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The host port it is published on, if any.
    pub host_port: Option<u16>,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// Lifecycle state of a record, following Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Restarting.
    Restarting,
    /// Paused.
    Paused,
    /// Exited or stopped.
    Exited,
}

/// Health as reported by a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// No health check.
    None,
    /// Health check not yet conclusive.
    Starting,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
}

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The static records file.
    Static,
    /// The local Docker engine.
    Docker,
    /// Self-registered over gRPC.
    Registered,
}

/// Why a record cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The record id is empty or too long.
    #[error("record id {0:?} must be 1 to 128 printable ASCII characters")]
    BadId(String),
    /// The name or an alias is not a DNS label.
    #[error("name {name:?}: {source}")]
    BadName {
        /// The name or alias.
        name: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// Too many of something.
    #[error("too many {what}: {count} (at most {limit})")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A label key or value is too large or the key is empty.
    #[error(
        "label {key:?}: keys must be 1 to {MAX_LABEL_BYTES} bytes and values at most {MAX_LABEL_BYTES}"
    )]
    BadLabel {
        /// The label key.
        key: String,
    },
}

impl Record {
    /// A running, healthy-by-default record with only the given identity.
    pub fn new(id: impl Into<String>, name: impl Into<String>, source: Source) -> Record {
        Record {
            id: id.into(),
            name: name.into(),
            aliases: Vec::new(),
            host: String::new(),
            state: State::Running,
            health: Health::None,
            image: String::new(),
            started_at: None,
            finished_at: None,
            addresses: Vec::new(),
            ports: Vec::new(),
            labels: BTreeMap::new(),
            source,
        }
    }

    /// Checks every bound and name rule a published record must satisfy.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.id.is_empty()
            || self.id.len() > 128
            || !self.id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(RecordError::BadId(self.id.clone()));
        }
        for name in std::iter::once(&self.name).chain(&self.aliases) {
            validate_dns_label(name).map_err(|source| RecordError::BadName {
                name: name.clone(),
                source,
            })?;
        }
        let limits = [
            ("aliases", self.aliases.len(), MAX_ALIASES),
            ("addresses", self.addresses.len(), MAX_ADDRESSES),
            ("ports", self.ports.len(), MAX_PORTS),
            ("labels", self.labels.len(), MAX_LABELS),
        ];
        for (what, count, limit) in limits {
            if count > limit {
                return Err(RecordError::TooMany { what, count, limit });
            }
        }
        for (key, value) in &self.labels {
            if key.is_empty() || key.len() > MAX_LABEL_BYTES || value.len() > MAX_LABEL_BYTES {
                return Err(RecordError::BadLabel { key: key.clone() });
            }
        }
        Ok(())
    }

    /// Every name the record answers to: its name, then its aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    /// Whether DNS should answer for this record: only running containers
    /// resolve.
    pub fn is_resolvable(&self) -> bool {
        matches!(self.state, State::Running)
    }

    /// The service group the record belongs to, as a DNS label: the
    /// `muster.service` label, else Compose's `com.docker.compose.service`.
    pub fn service(&self) -> Option<String> {
        SERVICE_LABELS
            .iter()
            .find_map(|k| self.labels.get(*k))
            .and_then(|s| crate::name::dns_label_from(s))
    }

    /// Whether the record answers for its service group: running and not
    /// failing its health check.
    pub fn serves(&self) -> bool {
        self.is_resolvable() && self.health != Health::Unhealthy
    }

    /// The addresses DNS answers with: every address that is not local to
    /// the record's host.
    pub fn routable_addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        self.addresses.iter().filter(|a| !a.local).map(|a| a.ip)
    }
}

impl State {
    /// Every state, in the order people list them.
    pub const ALL: [State; 5] = [
        State::Running,
        State::Created,
        State::Restarting,
        State::Paused,
        State::Exited,
    ];

    /// The lower-case name used in output and config.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Paused => "paused",
            State::Exited => "exited",
        }
    }
}

/// A state name that is not one of [`State::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("state {0:?} is not one of running, created, restarting, paused, exited")]
pub struct UnknownState(pub String);

impl std::str::FromStr for State {
    type Err = UnknownState;

    /// A state by its lower-case name.
    fn from_str(s: &str) -> Result<State, UnknownState> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

impl Health {
    /// The lower-case name used in output and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl Source {
    /// The lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::Docker => "docker",
            Source::Registered => "registered",
        }
    }
}

impl Protocol {
    /// The lower-case name used in `8080/tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Why a port string such as `8080/tcp` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("port {input:?}: expected PORT[/tcp|udp|sctp] or HOSTPORT:PORT[/PROTO], {why}")]
pub struct PortError {
    input: String,
    why: &'static str,
}

impl FromStr for Port {
    type Err = PortError;

    /// Reads `8080`, `8080/udp` or `80:8080/tcp` (host port 80, port 8080).
    fn from_str(s: &str) -> Result<Port, PortError> {
        let err = |why| PortError {
            input: s.to_owned(),
            why,
        };
        let (ports, protocol) = match s.split_once('/') {
            None => (s, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((ports, "sctp")) => (ports, Protocol::Sctp),
            Some(_) => return Err(err("unknown protocol")),
        };
        let number = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(err("a port is a number from 1 to 65535")),
            Ok(n) => Ok(n),
        };
        let (host_port, port) = match ports.split_once(':') {
            None => (None, number(ports)?),
            Some((host, port)) => (Some(number(host)?), number(port)?),
        };
        Ok(Port {
            port,
            protocol,
            host_port,
        })
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host_port) = self.host_port {
            write!(f, "{host_port}:")?;
        }
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_print_round_trip() {
        for (input, printed) in [
            ("8080", "8080/tcp"),
            ("8080/tcp", "8080/tcp"),
            ("53/udp", "53/udp"),
            ("80:8080/tcp", "80:8080/tcp"),
            ("9/sctp", "9/sctp"),
        ] {
            let port: Port = input.parse().expect(input);
            assert_eq!(port.to_string(), printed);
        }
        for bad in ["", "0", "70000", "80/icmp", "a:80", "80:", "/tcp"] {
            assert!(bad.parse::<Port>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn validation_rejects_bad_names_and_oversized_records() {
        let ok = Record::new("web-1", "web-1", Source::Static);
        assert_eq!(ok.validate(), Ok(()));

        let mut bad_name = ok.clone();
        bad_name.name = "web_1".into();
        assert!(matches!(
            bad_name.validate(),
            Err(RecordError::BadName { .. })
        ));

        let mut bad_alias = ok.clone();
        bad_alias.aliases.push("-x".into());
        assert!(matches!(
            bad_alias.validate(),
            Err(RecordError::BadName { .. })
        ));

        let mut many_labels = ok.clone();
        for i in 0..=MAX_LABELS {
            many_labels.labels.insert(format!("k{i}"), "v".into());
        }
        assert!(matches!(
            many_labels.validate(),
            Err(RecordError::TooMany { what: "labels", .. })
        ));

        let mut empty_id = ok.clone();
        empty_id.id.clear();
        assert!(matches!(empty_id.validate(), Err(RecordError::BadId(_))));
    }
}
