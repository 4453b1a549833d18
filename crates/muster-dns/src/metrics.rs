//! DNS metrics: queries by type, response code and transport, how long
//! answering took, answers held back by the rate limit, and TCP
//! connections refused over the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: &'static str,
    rcode: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    action: &'static str,
}

/// The DNS server's metrics; cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    duration: Histogram,
    rate_limited: Family<LimitedLabels, Counter>,
    /// TCP connections closed at once, over the limit (hickory counts).
    pub(crate) tcp_refused: Arc<AtomicU64>,
}

/// A counter kept by someone else (hickory's TCP server) as an atomic.
#[derive(Debug)]
struct SharedCounter(Arc<AtomicU64>);

impl EncodeMetric for SharedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0.load(Ordering::Relaxed), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl Default for DnsMetrics {
    fn default() -> DnsMetrics {
        DnsMetrics {
            queries: Family::default(),
            // 5 µs to ~20 ms.
            duration: Histogram::new(exponential_buckets(5e-6, 2.0, 12)),
            rate_limited: Family::default(),
            tcp_refused: Arc::default(),
        }
    }
}

impl DnsMetrics {
    /// Registers the metrics under `muster_dns_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "muster_dns_queries",
            "DNS queries answered, by question type, response code and transport",
            self.queries.clone(),
        );
        registry.register(
            "muster_dns_answer_duration_seconds",
            "Time from a parsed query to its encoded answer (network excluded)",
            self.duration.clone(),
        );
        registry.register(
            "muster_dns_tcp_refused",
            "DNS TCP connections closed at once because the most allowed at once were open",
            SharedCounter(self.tcp_refused.clone()),
        );
        registry.register(
            "muster_dns_rate_limited",
            "UDP answers over --dns-rate-limit, by what was sent instead (truncated or dropped)",
            self.rate_limited.clone(),
        );
    }

    /// Counts one answer held back by the rate limit.
    pub(crate) fn rate_limited(&self, truncated: bool) {
        self.rate_limited
            .get_or_create(&LimitedLabels {
                action: if truncated { "truncated" } else { "dropped" },
            })
            .inc();
    }

    /// Counts one answered query; `reply` is its encoded reply.
    pub(crate) fn answered(&self, qtype: u16, reply: &[u8], protocol: &'static str, seconds: f64) {
        let rcode = reply.get(3).map_or(255, |b| b & 0x0f);
        self.count(qtype, rcode, protocol, seconds);
    }

    /// Counts one answered query with response code `rcode`.
    pub(crate) fn count(&self, qtype: u16, rcode: u8, protocol: &'static str, seconds: f64) {
        self.queries
            .get_or_create(&QueryLabels {
                qtype: qtype_name(qtype),
                rcode: rcode_name(rcode),
                protocol,
            })
            .inc();
        self.duration.observe(seconds);
    }
}

/// The question type of a raw query, 0 if it has none.
pub(crate) fn qtype_of(packet: &[u8]) -> u16 {
    let mut at = 12;
    while let Some(&len) = packet.get(at) {
        match len {
            0 => {
                return packet
                    .get(at + 1..at + 3)
                    .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
            }
            l if l & 0xc0 != 0 => {
                return packet
                    .get(at + 2..at + 4)
                    .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
            }
            l => at += 1 + l as usize,
        }
    }
    0
}

fn qtype_name(t: u16) -> &'static str {
    match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        41 => "OPT",
        255 => "ANY",
        0 => "none",
        _ => "other",
    }
}

fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}
