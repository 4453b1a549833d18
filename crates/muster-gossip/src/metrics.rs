//! Gossip metrics: datagrams, TCP messages and bytes in and out and
//! datagrams dropped (counted by the transport), and how long applying
//! changes to the index takes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

/// Why the transport dropped a datagram.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Rejection {
    /// It did not authenticate under any key of the keyring (or was sealed
    /// and this agent has none).
    Auth,
    /// Authentic, but seen before or meant for another agent.
    Replay,
    /// Not a chitchat message.
    Malformed,
}

impl Rejection {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Rejection::Auth => "auth",
            Rejection::Replay => "replay",
            Rejection::Malformed => "malformed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// What a member has sent since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Their payload bytes.
    pub datagram_bytes: u64,
    /// The largest datagram.
    pub largest_datagram: u64,
    /// Messages sent over TCP (too large for a datagram).
    pub tcp_messages: u64,
    /// Their payload bytes.
    pub tcp_bytes: u64,
}

/// Gossip's metrics; cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct GossipMetrics {
    packets: Family<Direction, Counter>,
    bytes: Family<Direction, Counter>,
    rejected: Family<Reason, Counter>,
    tcp_messages: Family<Direction, Counter>,
    tcp_bytes: Family<Direction, Counter>,
    tcp_dropped: Counter,
    lagging: Gauge,
    longest_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The largest datagram sent so far, in bytes.
    largest: Gauge,
    pub(crate) apply_seconds: Histogram,
}

impl Default for GossipMetrics {
    fn default() -> GossipMetrics {
        GossipMetrics {
            packets: Family::default(),
            bytes: Family::default(),
            rejected: Family::default(),
            tcp_messages: Family::default(),
            tcp_bytes: Family::default(),
            tcp_dropped: Counter::default(),
            lagging: Gauge::default(),
            longest_lag: Gauge::default(),
            largest: Gauge::default(),
            // 10 µs to ~0.3 s.
            apply_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 16)),
        }
    }
}

impl GossipMetrics {
    /// Registers the metrics under `muster_gossip_*` and `muster_index_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "muster_gossip_packets",
            "Gossip datagrams sent (out) and received (in)",
            self.packets.clone(),
        );
        registry.register(
            "muster_gossip_bytes",
            "Gossip payload bytes sent (out) and received (in)",
            self.bytes.clone(),
        );
        for reason in [Rejection::Auth, Rejection::Replay, Rejection::Malformed] {
            let _ = self.rejected.get_or_create(&Reason {
                reason: reason.label(),
            });
        }
        registry.register(
            "muster_gossip_rejected",
            "Gossip datagrams dropped: auth (opens under no key), replay (seen before or meant for another agent), malformed",
            self.rejected.clone(),
        );
        registry.register(
            "muster_gossip_tcp_messages",
            "Gossip messages too large for one datagram (past --gossip-mtu), sent (out) and received (in) over TCP",
            self.tcp_messages.clone(),
        );
        registry.register(
            "muster_gossip_tcp_bytes",
            "Payload bytes of gossip messages sent (out) and received (in) over TCP",
            self.tcp_bytes.clone(),
        );
        registry.register(
            "muster_gossip_tcp_dropped",
            "Gossip messages for TCP dropped: the peer's queue was full, or the connection failed",
            self.tcp_dropped.clone(),
        );
        registry.register(
            "muster_gossip_behind_members",
            "Members whose changes, held by other agents, this agent lacks right now",
            self.lagging.clone(),
        );
        registry.register(
            "muster_gossip_behind_seconds",
            "How long this agent has lacked changes of the member it is furthest behind on, 0 if none",
            self.longest_lag.clone(),
        );
        registry.register(
            "muster_gossip_largest_datagram_bytes",
            "The largest gossip datagram this agent has sent since it started",
            self.largest.clone(),
        );
        registry.register(
            "muster_index_apply_duration_seconds",
            "Time to apply one batch of gossiped changes to the directory index",
            self.apply_seconds.clone(),
        );
    }

    pub(crate) fn count(&self, direction: &'static str, bytes: usize) {
        let labels = Direction { direction };
        self.packets.get_or_create(&labels).inc();
        self.bytes.get_or_create(&labels).inc_by(bytes as u64);
        if direction == "out" && bytes as i64 > self.largest.get() {
            self.largest.set(bytes as i64);
        }
    }

    pub(crate) fn tcp_count(&self, direction: &'static str, bytes: usize) {
        let labels = Direction { direction };
        self.tcp_messages.get_or_create(&labels).inc();
        self.tcp_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    pub(crate) fn set_lag(&self, members: usize, longest: std::time::Duration) {
        self.lagging.set(members as i64);
        self.longest_lag.set(longest.as_secs_f64());
    }

    pub(crate) fn tcp_dropped(&self) {
        self.tcp_dropped.inc();
    }

    #[cfg(test)]
    pub(crate) fn tcp_dropped_count(&self) -> u64 {
        self.tcp_dropped.get()
    }

    #[cfg(test)]
    pub(crate) fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected
            .get_or_create(&Reason {
                reason: reason.label(),
            })
            .get()
    }

    /// What this member has sent so far.
    pub fn sent(&self) -> Sent {
        let labels = Direction { direction: "out" };
        Sent {
            datagrams: self.packets.get_or_create(&labels).get(),
            datagram_bytes: self.bytes.get_or_create(&labels).get(),
            largest_datagram: self.largest.get().max(0) as u64,
            tcp_messages: self.tcp_messages.get_or_create(&labels).get(),
            tcp_bytes: self.tcp_bytes.get_or_create(&labels).get(),
        }
    }

    pub(crate) fn reject(&self, reason: Rejection) {
        self.rejected
            .get_or_create(&Reason {
                reason: reason.label(),
            })
            .inc();
    }
}
