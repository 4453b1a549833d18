//! muster's authoritative DNS server: a hickory-server [`RequestHandler`]
//! that answers from the directory snapshot.
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
//!   directory (records and agents); other reverse names are REFUSED.
//!
//! Unknown names inside the zone get NXDOMAIN, known names without the
//! asked type get NODATA, both with the SOA in the authority section.
//! Names outside the zone get REFUSED: muster is never an open resolver.
//! Every answer keeps the case of the question. Packets hickory cannot
//! parse get FORMERR or are dropped by hickory itself.

#![warn(missing_docs)]

mod forward;
mod metrics;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use muster_core::Snapshot;
use muster_policy::Violations;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::warn;

pub use metrics::DnsMetrics;

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
/// An idle TCP connection is closed after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A reverse zone muster is authoritative for.
struct ReverseZone {
    lower: LowerName,
    apex: Name,
}

impl ReverseZone {
    /// The zone of `net`, whose prefix must be a whole number of labels
    /// (octets for IPv4, nibbles for IPv6).
    fn new(net: IpNet) -> Result<ReverseZone, DnsError> {
        let bad = |reason| DnsError::BadReverseZone { net, reason };
        let labels = match net {
            IpNet::V4(v4) if v4.prefix_len() % 8 == 0 && v4.prefix_len() > 0 => v4.prefix_len() / 8,
            IpNet::V4(_) => return Err(bad("an IPv4 prefix must be 8, 16, 24 or 32 bits")),
            IpNet::V6(v6) if v6.prefix_len() % 4 == 0 && v6.prefix_len() > 0 => v6.prefix_len() / 4,
            IpNet::V6(_) => return Err(bad("an IPv6 prefix must be a multiple of 4 bits")),
        };
        // The full address's name, less the labels below the prefix.
        let apex = Name::from(net.network()).trim_to(labels as usize + 2);
        Ok(ReverseZone {
            lower: LowerName::new(&apex),
            apex,
        })
    }
}

/// Answers DNS queries from the latest snapshot.
pub struct Handler {
    directory: Arc<ArcSwap<Snapshot>>,
    zone: LowerName,
    zone_labels: usize,
    ttl: u32,
    apex: Name,
    ns: Name,
    hostmaster: Name,
    /// Turns of the round robin over service group answers.
    rotation: AtomicUsize,
    forward_to: Vec<SocketAddr>,
    reverse_zones: Vec<ReverseZone>,
    /// The naming policy's verdicts: records it keeps out of DNS.
    violations: Option<Arc<ArcSwap<Violations>>>,
    metrics: DnsMetrics,
}

impl Handler {
    /// A handler for `config.zone` over `directory`.
    pub fn new(config: &DnsConfig, directory: Arc<ArcSwap<Snapshot>>) -> Result<Handler, DnsError> {
        let bad = |reason: String| DnsError::BadZone {
            zone: config.zone.clone(),
            reason,
        };
        muster_core::validate_dns_name(&config.zone).map_err(|e| bad(e.to_string()))?;
        let mut apex = Name::from_ascii(&config.zone).map_err(|e| bad(e.to_string()))?;
        apex.set_fqdn(true);
        let apex = apex.to_lowercase();
        let ns = Name::from_ascii(format!("{}.{HOST_LABEL}", config.node_name))
            .and_then(|n| n.append_domain(&apex))
            .map_err(|e| bad(format!("node name {:?}: {e}", config.node_name)))?;
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&apex))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Handler {
            directory,
            zone: LowerName::new(&apex),
            zone_labels: apex.num_labels() as usize,
            ttl: config.ttl,
            apex,
            ns,
            hostmaster,
            rotation: AtomicUsize::new(0),
            forward_to: config.forward_to.clone(),
            reverse_zones: config
                .reverse_zones
                .iter()
                .map(|net| ReverseZone::new(*net))
                .collect::<Result<_, _>>()?,
            violations: None,
            metrics: DnsMetrics::default(),
        })
    }

    /// Counts queries in `metrics`.
    pub fn with_metrics(mut self, metrics: DnsMetrics) -> Handler {
        self.metrics = metrics;
        self
    }

    /// Leaves out of every answer the records that `violations` says break
    /// a rule with `exclude_from_dns`.
    pub fn with_violations(mut self, violations: Arc<ArcSwap<Violations>>) -> Handler {
        self.violations = Some(violations);
        self
    }

    /// Whether the naming policy lets `r` be answered.
    fn shown(&self, r: &muster_core::Record) -> bool {
        match &self.violations {
            None => true,
            Some(v) => {
                let v = v.load();
                !v.hides_any() || !v.hides(&r.host, &r.id)
            }
        }
    }

    /// The SOA of a zone muster serves (its own or a reverse zone).
    fn soa(&self, apex: &Name, serial: u64) -> Record {
        let soa = SOA::new(
            self.ns.clone(),
            self.hostmaster.clone(),
            serial as u32,
            3600,
            600,
            86400,
            self.ttl,
        );
        Record::from_rdata(apex.clone(), self.ttl, RData::SOA(soa))
    }

    /// Works out the answer to one in-zone question.
    fn resolve(
        &self,
        snapshot: &Snapshot,
        owner: &Name,
        labels: &[&str],
        qtype: RecordType,
    ) -> Answer {
        let address = |ip: IpAddr| -> Option<Record> {
            let rdata = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                _ => return None,
            };
            Some(Record::from_rdata(owner.clone(), self.ttl, rdata))
        };
        // A and AAAA (or TXT) of the running records among `records`;
        // NXDOMAIN when none runs.
        let named = |records: Vec<&Arc<muster_core::Record>>| -> Answer {
            let running: Vec<_> = records
                .into_iter()
                .filter(|r| r.is_resolvable() && self.shown(r))
                .collect();
            if running.is_empty() {
                return Answer::NxDomain;
            }
            if qtype == RecordType::TXT {
                return Answer::Records(running.iter().map(|r| self.txt(owner, r)).collect());
            }
            Answer::Records(
                addresses_of(running.into_iter())
                    .filter_map(address)
                    .collect(),
            )
        };
        match labels {
            [] => self.apex_answer(snapshot, &self.apex, owner, qtype),
            [name] => named(snapshot.lookup(name).iter().collect()),
            [service, label] if *label == SERVICE_LABEL => {
                let members = snapshot.service(service);
                if members.is_empty() {
                    return Answer::NxDomain;
                }
                // Only running members that are not failing their health
                // check answer for the group, rotated on every query so
                // that clients taking the first answer spread the load.
                let serving = members.iter().filter(|r| r.serves() && self.shown(r));
                Answer::Records(self.rotated(addresses_of(serving).filter_map(address).collect()))
            }
            [host, label] if *label == HOST_LABEL => {
                match snapshot
                    .members()
                    .iter()
                    .find(|m| m.name.eq_ignore_ascii_case(host))
                {
                    Some(m) => Answer::Records(address(m.gossip_addr.ip()).into_iter().collect()),
                    None => Answer::NxDomain,
                }
            }
            [port, proto, service, label]
                if *label == SERVICE_LABEL && port.starts_with('_') && proto.starts_with('_') =>
            {
                self.srv(snapshot, owner, &port[1..], &proto[1..], service, qtype)
            }
            // `<v1>.<k1>[.<v2>.<k2>...].sel`: records with every label pair.
            [pairs @ .., label]
                if *label == SELECT_LABEL && !pairs.is_empty() && pairs.len() % 2 == 0 =>
            {
                let selector = pairs
                    .chunks(2)
                    .map(|pair| format!("{}={}", pair[1], pair[0]))
                    .collect::<Vec<_>>()
                    .join(",");
                let Ok(selector) = selector.parse::<muster_core::Selector>() else {
                    return Answer::NxDomain;
                };
                let matching = snapshot.select(&selector);
                if matching.is_empty() {
                    return Answer::NxDomain;
                }
                let serving = matching.iter().filter(|r| r.serves() && self.shown(r));
                Answer::Records(self.rotated(addresses_of(serving).filter_map(address).collect()))
            }
            // `<name>.<host>`: one host's records when a name repeats.
            [name, host] => named(
                snapshot
                    .lookup(name)
                    .iter()
                    .filter(|r| r.host.eq_ignore_ascii_case(host))
                    .collect(),
            ),
            _ => Answer::NxDomain,
        }
    }

    /// SOA and NS at the apex of a zone (ANY gets the SOA, RFC 8482).
    fn apex_answer(
        &self,
        snapshot: &Snapshot,
        apex: &Name,
        owner: &Name,
        qtype: RecordType,
    ) -> Answer {
        match qtype {
            RecordType::SOA | RecordType::ANY => {
                let mut soa = self.soa(apex, snapshot.revision());
                soa.name = owner.clone();
                Answer::Records(vec![soa])
            }
            RecordType::NS => Answer::Records(vec![Record::from_rdata(
                owner.clone(),
                self.ttl,
                RData::NS(NS(self.ns.clone())),
            )]),
            _ => Answer::NoData,
        }
    }

    /// A name in a configured reverse zone that is not a known address: the
    /// apex, a name with addresses below it (NODATA), or NXDOMAIN.
    fn reverse_zone_answer(
        &self,
        snapshot: &Snapshot,
        zone: &ReverseZone,
        owner: &Name,
        lower: &LowerName,
        qtype: RecordType,
    ) -> Answer {
        if *lower == zone.lower {
            return self.apex_answer(snapshot, &zone.apex, owner, qtype);
        }
        match owner.parse_arpa_name() {
            Ok(net) if snapshot.has_address_between(net.network(), net.broadcast()) => {
                Answer::NoData
            }
            _ => Answer::NxDomain,
        }
    }

    /// SRV for `_<port>._<proto>.<service>.svc`: every serving member of
    /// the group with that port, by number (`_8080`) or by the name a
    /// `muster.port.<name>=<number>` label gives it (`_http`). A member
    /// with a routable address of its own is reached at the container port
    /// on `<name>.<host>.<zone>`; one that resolves to its host's address is
    /// reached at the published host port on `<host>.host.<zone>` (and is
    /// left out if that port is not published). Targets' addresses go in
    /// the additional section.
    fn srv(
        &self,
        snapshot: &Snapshot,
        owner: &Name,
        port: &str,
        proto: &str,
        service: &str,
        qtype: RecordType,
    ) -> Answer {
        let members = snapshot.service(service);
        let protocol = match proto {
            "tcp" => muster_core::Protocol::Tcp,
            "udp" => muster_core::Protocol::Udp,
            "sctp" => muster_core::Protocol::Sctp,
            _ => return Answer::NxDomain,
        };
        if members.is_empty() {
            return Answer::NxDomain;
        }
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Answer::NoData;
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for r in members.iter().filter(|r| r.serves() && self.shown(r)) {
            let number = match port.parse::<u16>() {
                Ok(n) => Some(n),
                Err(_) => r
                    .labels
                    .get(&format!("{PORT_LABEL_PREFIX}{port}"))
                    .and_then(|v| v.parse().ok()),
            };
            let Some(number) = number else { continue };
            let Some(p) = r
                .ports
                .iter()
                .find(|p| p.port == number && p.protocol == protocol)
            else {
                continue;
            };
            let own_address = r.addresses.iter().any(|a| !a.local && a.network != "host");
            let (relative, target_port) = if own_address {
                (format!("{}.{}", r.name, r.host), p.port)
            } else {
                match p.host_port {
                    Some(host_port) => (format!("{}.{HOST_LABEL}", r.host), host_port),
                    None => continue,
                }
            };
            let Ok(target) = Name::from_ascii(&relative).and_then(|n| n.append_domain(&self.apex))
            else {
                continue;
            };
            for ip in r.routable_addresses() {
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                additionals.push(Record::from_rdata(target.clone(), self.ttl, rdata));
            }
            answers.push(Record::from_rdata(
                owner.clone(),
                self.ttl,
                RData::SRV(SRV::new(0, 10, target_port, target)),
            ));
        }
        answers.dedup();
        additionals.sort_by_key(|r| (r.name.to_string(), r.data.to_string()));
        additionals.dedup();
        Answer::WithAdditionals(answers, additionals)
    }

    /// Rotates a group's answers by one place per query (round robin), so
    /// that clients taking the first answer spread the load.
    fn rotated(&self, mut answers: Vec<Record>) -> Vec<Record> {
        if !answers.is_empty() {
            let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
            let len = answers.len();
            answers.rotate_left(turn % len);
        }
        answers
    }

    /// TXT facts about one record: short, each string well under 255 bytes.
    fn txt(&self, owner: &Name, r: &muster_core::Record) -> Record {
        // At most 200 bytes of a value, cut at a character boundary: with
        // its key, every string stays under DNS's 255 bytes.
        let clip = |s: &str| {
            let end = (0..=s.len().min(200))
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            s[..end].to_owned()
        };
        let facts = vec![
            format!("id={}", r.id),
            format!("host={}", clip(&r.host)),
            format!("image={}", clip(&r.image)),
            format!("state={}", r.state.as_str()),
            format!("health={}", r.health.as_str()),
        ];
        Record::from_rdata(owner.clone(), self.ttl, RData::TXT(TXT::new(facts)))
    }

    /// PTR for an address muster knows: a record's address names the
    /// record (`<name>.<host>.<zone>` for addresses local to its host, which
    /// may repeat on other hosts), an agent's address names the agent.
    /// `None` when the address is not in the directory: muster is not
    /// authoritative for the rest of the reverse tree.
    fn reverse(&self, snapshot: &Snapshot, owner: &Name, qtype: RecordType) -> Option<Answer> {
        let net = owner.parse_arpa_name().ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        let ip = net.addr();
        let mut targets: Vec<Name> = Vec::new();
        for r in snapshot.by_ip(ip).iter().filter(|r| self.shown(r)) {
            let local = r.addresses.iter().any(|a| a.ip == ip && a.local);
            let relative = if local {
                format!("{}.{}", r.name, r.host)
            } else {
                r.name.clone()
            };
            targets.extend(Name::from_ascii(relative).and_then(|n| n.append_domain(&self.apex)));
        }
        for m in snapshot
            .members()
            .iter()
            .filter(|m| m.gossip_addr.ip() == ip)
        {
            targets.extend(
                Name::from_ascii(format!("{}.{HOST_LABEL}", m.name))
                    .and_then(|n| n.append_domain(&self.apex)),
            );
        }
        if targets.is_empty() {
            return None;
        }
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Some(Answer::NoData);
        }
        targets.sort();
        targets.dedup();
        Some(Answer::Records(
            targets
                .into_iter()
                .map(|t| Record::from_rdata(owner.clone(), self.ttl, RData::PTR(PTR(t))))
                .collect(),
        ))
    }
}

/// The distinct routable addresses of `records`, sorted.
fn addresses_of<'a>(
    records: impl Iterator<Item = &'a std::sync::Arc<muster_core::Record>>,
) -> impl Iterator<Item = IpAddr> {
    let mut ips: Vec<IpAddr> = records.flat_map(|r| r.routable_addresses()).collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
}

enum Answer {
    /// SRV answers, with the targets' addresses for the additional section.
    WithAdditionals(Vec<Record>, Vec<Record>),
    /// Records for the answer section; empty means NODATA.
    Records(Vec<Record>),
    NoData,
    NxDomain,
}

/// A complete reply: header fields, answers and the SOA for the authority
/// section of negative answers.
struct Reply {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    soa: Option<Record>,
    additionals: Vec<Record>,
    /// Outside the zone, and upstreams are configured: ask them.
    forward: bool,
}

impl Reply {
    /// A reply with `metadata` and nothing else yet.
    fn empty(metadata: Metadata) -> Reply {
        Reply {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            soa: None,
            additionals: Vec::new(),
            forward: false,
        }
    }

    /// An empty reply with the response code `code`.
    fn error(mut metadata: Metadata, code: ResponseCode) -> Reply {
        metadata.response_code = code;
        Reply::empty(metadata)
    }
}

impl Handler {
    fn reply(&self, request: &Request) -> Reply {
        let metadata = Metadata::response_from_request(&request.metadata);
        let error = Reply::error;
        if request.metadata.message_type != MessageType::Query {
            return error(metadata, ResponseCode::FormErr);
        }
        if request.metadata.op_code != OpCode::Query {
            return error(metadata, ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return error(metadata, ResponseCode::FormErr);
        };
        let snapshot = self.directory.load();
        if !self.zone.zone_of(info.query.name()) {
            let owner = info.query.original().name();
            let qtype = info.query.query_type();
            let zone = self
                .reverse_zones
                .iter()
                .find(|z| z.lower.zone_of(info.query.name()));
            return match (self.reverse(&snapshot, owner, qtype), zone) {
                (Some(answer), zone) => {
                    self.finish(metadata, answer, &snapshot, zone.map(|z| &z.apex))
                }
                (None, Some(zone)) => {
                    let answer =
                        self.reverse_zone_answer(&snapshot, zone, owner, info.query.name(), qtype);
                    self.finish(metadata, answer, &snapshot, Some(&zone.apex))
                }
                (None, None) if !self.forward_to.is_empty() => Reply {
                    forward: true,
                    ..Reply::empty(metadata)
                },
                (None, None) => error(metadata, ResponseCode::Refused),
            };
        }
        let owner = info.query.original().name().clone();
        let lower = info.query.name();
        let relative = lower.num_labels() as usize - self.zone_labels;
        // A label that is not UTF-8 can match no name: it becomes one that
        // cannot be a DNS label either.
        let labels: Vec<&str> = lower
            .iter()
            .take(relative)
            .map(|l| std::str::from_utf8(l).unwrap_or("\u{fffd}"))
            .collect();
        let answer = self.resolve(&snapshot, &owner, &labels, info.query.query_type());
        self.finish(metadata, answer, &snapshot, Some(&self.apex))
    }

    /// The reply for an answer; negative answers carry the SOA of `zone`
    /// (none for reverse names outside the configured reverse zones).
    fn finish(
        &self,
        mut metadata: Metadata,
        answer: Answer,
        snapshot: &Snapshot,
        zone: Option<&Name>,
    ) -> Reply {
        metadata.authoritative = true;
        let mut reply = Reply::empty(metadata);
        match answer {
            Answer::WithAdditionals(answers, additionals) if !answers.is_empty() => {
                reply.answers = answers;
                reply.additionals = additionals;
            }
            Answer::Records(answers) if !answers.is_empty() => reply.answers = answers,
            // Negative answers carry the SOA (built only here: positive
            // answers, the hot path, need none).
            Answer::NxDomain => {
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.soa = zone.map(|apex| self.soa(apex, snapshot.revision()));
            }
            Answer::Records(_) | Answer::WithAdditionals(..) | Answer::NoData => {
                reply.soa = zone.map(|apex| self.soa(apex, snapshot.revision()));
            }
        }
        reply
    }
}

impl Handler {
    /// The OPT for a reply (RFC 6891): present when the query had one, and
    /// carrying the smaller of the client's buffer and ours. hickory sizes
    /// the UDP reply by it: a reply that does not fit is cut with TC set,
    /// and the client retries over TCP.
    fn edns_for(request: &Request) -> Option<Edns> {
        request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(request.max_payload().min(MAX_UDP_PAYLOAD));
            e
        })
    }

    /// Asks the upstreams for a name outside the zone.
    async fn forwarded(&self, request: &Request) -> Reply {
        let mut reply = self.reply(request);
        match forward::forward(&self.forward_to, request.as_slice()).await {
            Some(message) => {
                reply.metadata.response_code = message.metadata.response_code;
                reply.metadata.recursion_available = message.metadata.recursion_available;
                reply.metadata.authoritative = false;
                reply.answers = message.answers;
                reply.authorities = message.authorities;
                reply.additionals = message.additionals;
            }
            None => reply.metadata.response_code = ResponseCode::ServFail,
        }
        reply
    }

    /// Encodes the UDP reply to `request` into `out` without waiting;
    /// `false` (and nothing written) when it must be forwarded upstream.
    pub(crate) fn answer_now(&self, request: &Request, out: &mut Vec<u8>) -> bool {
        let reply = self.reply(request);
        if reply.forward {
            return false;
        }
        encode_udp(request, &reply, Handler::edns_for(request).as_ref(), out);
        true
    }

    /// The encoded UDP reply to a query forwarded upstream.
    pub(crate) async fn answer_forwarded(&self, request: &Request) -> Vec<u8> {
        let started = std::time::Instant::now();
        let reply = self.forwarded(request).await;
        let mut out = Vec::with_capacity(512);
        encode_udp(
            request,
            &reply,
            Handler::edns_for(request).as_ref(),
            &mut out,
        );
        self.metrics.answered(
            metrics::qtype_of(request.as_slice()),
            &out,
            "udp",
            started.elapsed().as_secs_f64(),
        );
        out
    }
}

impl Handler {
    /// The UDP reply to one raw packet from `src`, exactly as the UDP
    /// server computes it: `None` when the packet gets no reply (shorter
    /// than a DNS header) or would be forwarded upstream. The request path
    /// with no socket around it, for the fuzz target and tests.
    pub fn answer_packet(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match udp::answer(self, packet, src, &mut out) {
            udp::Outcome::Reply => Some(out),
            udp::Outcome::Drop | udp::Outcome::Forward(_) => None,
        }
    }
}

/// Whether any question's name uses a compression pointer. muster takes
/// one question, with nothing before it to point at, so such a pointer is
/// malformed; worse, hickory echoes the question section's bytes as
/// received, and a pointer into the header then points at the reply's
/// changed header and makes the reply unreadable (found by the fuzz
/// target, first with one question, then with a second one). Such queries
/// get FORMERR without a question section.
fn question_is_compressed(packet: &[u8]) -> bool {
    let questions = packet
        .get(4..6)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    let mut at = 12;
    for _ in 0..questions {
        loop {
            match packet.get(at) {
                None => return false,
                Some(0) => break,
                Some(l) if l & 0xc0 != 0 => return true,
                Some(l) => at += 1 + *l as usize,
            }
        }
        // The root label, then type and class.
        at += 1 + 4;
    }
    false
}

/// The message hickory would send for `reply`.
fn response<'a>(
    request: &'a Request,
    reply: &'a Reply,
    edns: Option<&'a Edns>,
) -> hickory_server::zone_handler::MessageResponse<
    'a,
    'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
> {
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(e) = edns {
        builder.edns(e);
    }
    builder.build(
        reply.metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        reply.soa.iter(),
        reply.additionals.iter(),
    )
}

/// Encodes a UDP reply into `out` as hickory does: at most the OPT's
/// payload size (512 bytes without EDNS), cut with TC set when it does not
/// fit, SERVFAIL if it cannot be encoded at all.
fn encode_udp(request: &Request, reply: &Reply, edns: Option<&Edns>, out: &mut Vec<u8>) {
    let max = edns.map_or(512, |e| e.max_payload());
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(max);
    if let Err(e) = response(request, reply, edns).destructive_emit(&mut encoder) {
        warn!(error = %e, "DNS: a reply could not be encoded");
        out.clear();
        let _ = emit_bare(&request.metadata, ResponseCode::ServFail, out);
    }
}

/// A reply of a header alone, with `code`, to a query with `query`'s
/// header: for queries that cannot be answered at all.
fn emit_bare(
    query: &Metadata,
    code: ResponseCode,
    out: &mut Vec<u8>,
) -> Result<(), hickory_server::proto::ProtoError> {
    let mut metadata = Metadata::response_from_request(query);
    metadata.response_code = code;
    let header = hickory_server::proto::op::Header {
        metadata,
        counts: Default::default(),
    };
    header.emit(&mut BinEncoder::new(out))
}

/// hickory-server's side: TCP connections (UDP has its own loop, [`udp`]).
struct Tcp(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Tcp {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let handler = &self.0;
        let started = std::time::Instant::now();
        let qtype = metrics::qtype_of(request.as_slice());
        if question_is_compressed(request.as_slice()) {
            // Answer from a copy of the header alone, so that the bad
            // question is not echoed.
            let mut header = request.as_slice()[..12].to_vec();
            header[4..12].fill(0);
            if let Ok(bare) = Request::from_bytes(header, request.src(), request.protocol()) {
                let reply = Reply::error(
                    Metadata::response_from_request(&request.metadata),
                    ResponseCode::FormErr,
                );
                handler
                    .metrics
                    .count(qtype, 1, "tcp", started.elapsed().as_secs_f64());
                return send(&mut response_handle, response(&bare, &reply, None)).await;
            }
        }
        let edns = Handler::edns_for(request);
        let reply = handler.reply(request);
        let reply = if reply.forward {
            handler.forwarded(request).await
        } else {
            reply
        };
        let rcode = (u16::from(reply.metadata.response_code) & 0x0f) as u8;
        handler
            .metrics
            .count(qtype, rcode, "tcp", started.elapsed().as_secs_f64());
        send(
            &mut response_handle,
            response(request, &reply, edns.as_ref()),
        )
        .await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            warn!(error = %e, "failed to send DNS response");
            let mut metadata = Metadata::new(0, MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}

/// A running DNS server; dropping it does not stop it, [`DnsServer::shutdown`] does.
pub struct DnsServer {
    server: Server<Tcp>,
    udp: std::thread::JoinHandle<()>,
    stop_udp: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 picks a free port, the same for
    /// both) and starts answering.
    pub async fn bind(addr: SocketAddr, handler: Handler) -> Result<DnsServer, DnsError> {
        let udp = std::net::UdpSocket::bind(addr).map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                proto: "tcp",
                source,
            })?;
        let handler = Arc::new(handler);
        let stop_udp = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let udp =
            udp::spawn(udp, handler.clone(), runtime, stop_udp.clone()).map_err(|source| {
                DnsError::Bind {
                    addr,
                    proto: "udp",
                    source,
                }
            })?;
        let mut server = Server::new(Tcp(handler));
        server.register_listener(tcp, TCP_TIMEOUT, 64 * 1024);
        Ok(DnsServer {
            server,
            udp,
            stop_udp,
            addr,
        })
    }

    /// The address served (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting queries and waits for TCP queries in flight.
    pub async fn shutdown(mut self) {
        self.stop_udp.store(true, Ordering::Relaxed);
        let udp = self.udp;
        let _ = tokio::task::spawn_blocking(move || udp.join()).await;
        if let Err(e) = self.server.shutdown_gracefully().await {
            warn!(error = %e, "DNS server did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(net: &str) -> Result<String, DnsError> {
        ReverseZone::new(net.parse().unwrap()).map(|z| z.apex.to_string())
    }

    /// A handler over a directory holding `records` (host `a`).
    fn handler_with(records: Vec<muster_core::Record>) -> Handler {
        let changes = records.into_iter().map(|mut r| {
            r.host = "a".into();
            muster_core::Change::Upsert(r)
        });
        let snapshot = Snapshot::new().apply(changes);
        let config = DnsConfig {
            zone: "muster".into(),
            ttl: 5,
            node_name: "a".into(),
            forward_to: Vec::new(),
            reverse_zones: Vec::new(),
        };
        Handler::new(&config, Arc::new(ArcSwap::from_pointee(snapshot))).unwrap()
    }

    fn ask(handler: &Handler, name: &str, rtype: RecordType) -> hickory_server::proto::op::Message {
        use hickory_server::proto::op::{Message, Query};
        let mut query = Message::query();
        query.metadata.id = 4242;
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        let packet = query.to_vec().unwrap();
        let reply = handler
            .answer_packet(&packet, "127.0.0.1:5300".parse().unwrap())
            .expect("a reply");
        Message::from_vec(&reply).unwrap()
    }

    #[test]
    fn txt_facts_stay_within_dns_string_limits_whatever_the_image_name() {
        let mut record = muster_core::Record::new("c1", "web-1", muster_core::Source::Static);
        record.image = "é".repeat(300);
        let handler = handler_with(vec![record]);
        let reply = ask(&handler, "web-1.muster.", RecordType::TXT);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.metadata.id, 4242);
        let RData::TXT(txt) = &reply.answers[0].data else {
            panic!("not TXT: {:?}", reply.answers);
        };
        let image = txt
            .txt_data
            .iter()
            .find(|s| s.starts_with(b"image="))
            .expect("image fact");
        assert!(image.len() <= 255, "{} bytes", image.len());
        assert!(std::str::from_utf8(image).is_ok(), "cut inside a character");
    }

    #[test]
    fn fewer_than_twelve_bytes_get_no_reply_and_garbage_after_a_header_gets_formerr() {
        let handler = handler_with(Vec::new());
        let src = "127.0.0.1:5300".parse().unwrap();
        assert!(handler.answer_packet(&[0x12, 0x34, 0x01], src).is_none());
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[0xff; 7]);
        let reply = handler.answer_packet(&packet, src).expect("a reply");
        let reply = hickory_server::proto::op::Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn a_question_compressed_into_the_header_gets_a_readable_formerr() {
        // Found by the fuzz target (crates/muster-dns/fuzz/regressions):
        // a question name that is a pointer to offset 2 of the header, as
        // the only question and as the second one after the root.
        let regressions = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
        let mut seen = 0;
        for entry in std::fs::read_dir(regressions).expect("fuzz/regressions") {
            let packet = std::fs::read(entry.expect("entry").path()).expect("read");
            let handler = handler_with(Vec::new());
            let reply = handler
                .answer_packet(&packet, "127.0.0.1:5300".parse().unwrap())
                .expect("a reply");
            let reply = hickory_server::proto::op::Message::from_vec(&reply).expect("readable");
            assert_eq!(reply.metadata.id, 0x1234);
            assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
            assert!(reply.queries.is_empty());
            seen += 1;
        }
        assert!(seen >= 2, "{seen} regression inputs");
    }

    #[test]
    fn reverse_zones_are_named_by_their_prefix() {
        assert_eq!(zone("10.0.0.0/8").unwrap(), "10.in-addr.arpa.");
        assert_eq!(zone("172.18.0.0/16").unwrap(), "18.172.in-addr.arpa.");
        assert_eq!(zone("192.168.7.0/24").unwrap(), "7.168.192.in-addr.arpa.");
        assert_eq!(zone("fd00::/16").unwrap(), "0.0.d.f.ip6.arpa.");
        assert_eq!(
            zone("2001:db8::/36").unwrap(),
            "0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }

    #[test]
    fn reverse_zones_off_a_label_boundary_are_refused() {
        for net in ["10.0.0.0/12", "0.0.0.0/0", "fd00::/10", "::/0"] {
            let err = zone(net).unwrap_err().to_string();
            assert!(err.contains("label boundary"), "{net}: {err}");
        }
    }
}
