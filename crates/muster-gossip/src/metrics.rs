//! Gossip metrics: datagrams and bytes in and out and datagrams dropped
//! (counted by the transport), and how long applying changes to the index
//! takes.

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

/// Gossip's metrics; cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct GossipMetrics {
    packets: Family<Direction, Counter>,
    bytes: Family<Direction, Counter>,
    rejected: Family<Reason, Counter>,
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

    /// Datagrams and bytes sent so far, and the largest datagram sent.
    pub fn sent(&self) -> (u64, u64, u64) {
        let labels = Direction { direction: "out" };
        (
            self.packets.get_or_create(&labels).get(),
            self.bytes.get_or_create(&labels).get(),
            self.largest.get().max(0) as u64,
        )
    }

    pub(crate) fn reject(&self, reason: Rejection) {
        self.rejected
            .get_or_create(&Reason {
                reason: reason.label(),
            })
            .inc();
    }
}
