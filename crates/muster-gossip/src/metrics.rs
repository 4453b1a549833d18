//! Gossip metrics: datagrams and bytes in and out (counted by wrapping
//! chitchat's UDP transport), and how long applying changes to the index
//! takes.

use std::net::SocketAddr;

use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

/// Gossip's metrics; cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct GossipMetrics {
    packets: Family<Direction, Counter>,
    bytes: Family<Direction, Counter>,
    pub(crate) apply_seconds: Histogram,
}

impl Default for GossipMetrics {
    fn default() -> GossipMetrics {
        GossipMetrics {
            packets: Family::default(),
            bytes: Family::default(),
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
        registry.register(
            "muster_index_apply_duration_seconds",
            "Time to apply one batch of gossiped changes to the directory index",
            self.apply_seconds.clone(),
        );
    }

    fn count(&self, direction: &'static str, bytes: usize) {
        let labels = Direction { direction };
        self.packets.get_or_create(&labels).inc();
        self.bytes.get_or_create(&labels).inc_by(bytes as u64);
    }
}

/// chitchat's UDP transport, counting what passes.
pub(crate) struct CountingTransport(pub GossipMetrics);

#[async_trait::async_trait]
impl Transport for CountingTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = UdpTransport.open(listen_addr).await?;
        Ok(Box::new(CountingSocket {
            inner,
            metrics: self.0.clone(),
        }))
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    metrics: GossipMetrics,
}

#[async_trait::async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let outcome = self.inner.send(to, envelope).await?;
        self.metrics.count("out", outcome.num_bytes_sent);
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let outcome = self.inner.recv().await?;
        self.metrics.count("in", outcome.num_bytes_received);
        Ok(outcome)
    }
}
