//! Name resolution: given the directory snapshot and one question (owner
//! name, type), the answer muster gives: records, NODATA or NXDOMAIN,
//! following the names listed in the crate docs, and the SOA of the zone a
//! negative answer is in.
//!
//! [`Resolver`] holds what resolution needs besides the snapshot: the zone
//! and reverse zones, the TTL, the node name (NS and SOA), the naming
//! policy's verdicts and the round robin's turn. It is pure: no sockets and
//! no wire format. Parsing requests, header flags, response codes and
//! encoding are left to [`crate::reply`]; names muster does not serve are
//! reported as such, and forwarding or refusing them is the caller's choice.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_server::proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;
use muster_policy::Judged;

use crate::{DnsConfig, DnsError, HOST_LABEL, PORT_LABEL_PREFIX, SELECT_LABEL, SERVICE_LABEL};

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

/// Resolves questions against a snapshot, with the zones and settings of
/// one [`DnsConfig`].
pub(crate) struct Resolver {
    zone: LowerName,
    zone_labels: usize,
    ttl: u32,
    apex: Name,
    ns: Name,
    hostmaster: Name,
    /// Turns of the round robin over service group answers.
    rotation: AtomicUsize,
    reverse_zones: Vec<ReverseZone>,
}

/// The answer to a question muster serves.
pub(crate) struct Resolved<'a> {
    /// The answer itself.
    pub(crate) answer: Answer,
    /// The apex of the zone whose SOA a negative answer carries: `None` for
    /// reverse names outside the configured reverse zones.
    pub(crate) zone: Option<&'a Name>,
}

impl Resolver {
    /// A resolver for `config.zone` and `config.reverse_zones`.
    pub(crate) fn new(config: &DnsConfig) -> Result<Resolver, DnsError> {
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
        Ok(Resolver {
            zone: LowerName::new(&apex),
            zone_labels: apex.num_labels() as usize,
            ttl: config.ttl,
            apex,
            ns,
            hostmaster,
            rotation: AtomicUsize::new(0),
            reverse_zones: config
                .reverse_zones
                .iter()
                .map(|net| ReverseZone::new(*net))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The answer to the question for `owner` (as asked; `lower` is the
    /// same name in lower case) of type `qtype`. `None` when muster does not
    /// serve the name: outside the zone and the reverse zones, and not a
    /// known address.
    pub(crate) fn answer<'a>(
        &'a self,
        snapshot: &Judged,
        owner: &Name,
        lower: &LowerName,
        qtype: RecordType,
    ) -> Option<Resolved<'a>> {
        if !self.zone.zone_of(lower) {
            let zone = self.reverse_zones.iter().find(|z| z.lower.zone_of(lower));
            return match (self.reverse(snapshot, owner, qtype), zone) {
                (Some(answer), zone) => Some(Resolved {
                    answer,
                    zone: zone.map(|z| &z.apex),
                }),
                (None, Some(zone)) => Some(Resolved {
                    answer: self.reverse_zone_answer(snapshot, zone, owner, lower, qtype),
                    zone: Some(&zone.apex),
                }),
                (None, None) => None,
            };
        }
        let relative = lower.num_labels() as usize - self.zone_labels;
        // A label that is not UTF-8 can match no name: it becomes one that
        // cannot be a DNS label either.
        let labels: Vec<&str> = lower
            .iter()
            .take(relative)
            .map(|l| std::str::from_utf8(l).unwrap_or("\u{fffd}"))
            .collect();
        Some(Resolved {
            answer: self.resolve(snapshot, owner, &labels, qtype),
            zone: Some(&self.apex),
        })
    }

    /// The SOA of a zone muster serves (its own or a reverse zone).
    pub(crate) fn soa(&self, apex: &Name, serial: u64) -> Record {
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
        snapshot: &Judged,
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
                .filter(|r| r.is_resolvable() && !snapshot.hides(r))
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
                let serving = members.iter().filter(|r| r.serves() && !snapshot.hides(r));
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
                let serving = matching.iter().filter(|r| r.serves() && !snapshot.hides(r));
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
        snapshot: &Judged,
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
        snapshot: &Judged,
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
        snapshot: &Judged,
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
        for r in members.iter().filter(|r| r.serves() && !snapshot.hides(r)) {
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
    fn reverse(&self, snapshot: &Judged, owner: &Name, qtype: RecordType) -> Option<Answer> {
        let net = owner.parse_arpa_name().ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        let ip = net.addr();
        let mut targets: Vec<Name> = Vec::new();
        for r in snapshot.by_ip(ip).iter().filter(|r| !snapshot.hides(r)) {
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

/// What muster answers to one question, before it becomes a reply.
pub(crate) enum Answer {
    /// SRV answers, with the targets' addresses for the additional section.
    WithAdditionals(Vec<Record>, Vec<Record>),
    /// Records for the answer section; empty means NODATA.
    Records(Vec<Record>),
    /// The name exists, but not with the asked type.
    NoData,
    /// No such name.
    NxDomain,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(net: &str) -> Result<String, DnsError> {
        ReverseZone::new(net.parse().unwrap()).map(|z| z.apex.to_string())
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
