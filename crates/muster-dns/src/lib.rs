//! muster's authoritative DNS server: answers from the directory snapshot
//! as the naming policy last judged it (`muster_policy::Judged`), so a
//! record a rule keeps out of DNS is never answered. Requests are parsed
//! and replies encoded by hickory; UDP is served by a thread of its own,
//! TCP by hickory-server with a
//! [`RequestHandler`](hickory_server::server::RequestHandler).
//!
//! Names served (the zone is configurable, `muster` by default):
//! - `<zone>`: SOA and NS.
//! - `<name>.<zone>`: A and AAAA of every running record with that name or
//!   alias, on every host.
//! - `<service>.svc.<zone>`: A and AAAA of every running, not unhealthy
//!   member of a service group (`muster.service` or
//!   `com.docker.compose.service` label).
//! - `<name>.<host>.<zone>`: the same, for one host's records only.
//! - TXT on `<name>[.<host>].<zone>`: id, host, image, state, health.
//! - `<v1>.<k1>[.<v2>.<k2>...].sel.<zone>`: A and AAAA of every running,
//!   not unhealthy record whose labels include every `k=v` pair (written in
//!   lower case; keys that are single DNS labels), e.g.
//!   `web.app.prod.env.sel.muster` for `app=web,env=prod`.
//! - `<host>.host.<zone>`: A or AAAA of an agent's gossip address (the NS
//!   target).
//! - PTR under `in-addr.arpa` and `ip6.arpa` for every address in the
//!   directory (records and agents); SOA, NS and NXDOMAIN inside a
//!   `--reverse-zone`; other reverse names are REFUSED (or forwarded).
//!
//! Unknown names inside the zone get NXDOMAIN, known names without the
//! asked type get NODATA, both with the SOA in the authority section.
//! Names outside the zone get REFUSED: muster is never an open resolver,
//! unless the operator lists `--dns-forward` upstreams, which are asked
//! instead.
//! Every answer keeps the case of the question. Packets hickory cannot
//! parse get FORMERR or are dropped by hickory itself.
//!
//! Modules, each calling only those after it:
//! - `server`: [`DnsServer`], binding the sockets and starting and stopping
//!   the front ends;
//! - `udp` and `tcp`: the front ends (a `recvmmsg`/`sendmmsg` thread, and
//!   hickory-server's TCP server);
//! - `forward`: names outside the zone, asked of the `--dns-forward`
//!   upstreams;
//! - `rate`: response rate limiting per client network, for UDP;
//! - `reply`: [`Handler`], from a request to its encoded reply;
//! - `resolve`: from a judged snapshot and a question to the answer;
//! - `metrics`: [`DnsMetrics`].

#![warn(missing_docs)]

mod forward;
mod metrics;
mod rate;
mod reply;
mod resolve;
mod server;
mod tcp;
mod udp;

use std::net::SocketAddr;

use ipnet::IpNet;
use thiserror::Error;

pub use metrics::DnsMetrics;
pub use reply::Handler;
pub use server::DnsServer;

/// A record label `muster.port.<name>=<number>` names a port for SRV.
pub const PORT_LABEL_PREFIX: &str = "muster.port.";
/// Label under the zone for label selections (`web.app.prod.env.sel`).
pub const SELECT_LABEL: &str = "sel";
/// Label under the zone for service groups.
pub const SERVICE_LABEL: &str = "svc";
/// Label under the zone for agents' own names.
pub const HOST_LABEL: &str = "host";
/// UDP payload size muster advertises with EDNS0.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Why the DNS server could not start.
#[derive(Debug, Error)]
pub enum DnsError {
    /// The zone is not a DNS name.
    #[error("zone {zone:?} is not a valid DNS name: {reason}")]
    BadZone {
        /// The zone as given.
        zone: String,
        /// Why.
        reason: String,
    },
    /// A reverse zone that is not on a label boundary.
    #[error("reverse zone {net} must end on a label boundary: {reason}")]
    BadReverseZone {
        /// The network as given.
        net: IpNet,
        /// Why.
        reason: &'static str,
    },
    /// A socket could not be bound.
    #[error("cannot listen for DNS on {addr} ({proto}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// TCP connections served at once unless
/// [`Handler::with_max_tcp_connections`] says otherwise.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 1024;

/// What the DNS server needs to know besides the directory.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The zone muster is authoritative for, e.g. `muster`.
    pub zone: String,
    /// TTL of answers, and the negative TTL in the SOA.
    pub ttl: u32,
    /// This agent's node name, named by NS and the SOA.
    pub node_name: String,
    /// Resolvers to forward names outside the zone to; empty: REFUSED.
    pub forward_to: Vec<SocketAddr>,
    /// Reverse zones muster is authoritative for (`10.0.0.0/8` is
    /// `10.in-addr.arpa`): SOA and NS at their apex, NXDOMAIN for addresses
    /// that are not in the directory. Outside them muster answers PTR only
    /// for addresses it knows, and REFUSED (or forwards) the rest.
    pub reverse_zones: Vec<IpNet>,
}
