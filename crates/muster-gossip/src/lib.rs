//! Gossip: the only part of muster that knows chitchat.
//!
//! Outbound, a [`Publisher`] writes this host's records into the local
//! chitchat node state, one key per record (`r:<id>`), each value a
//! base64-encoded protobuf record. Inbound, a sync task watches every
//! node's state, turns what changed since its last look into
//! [`muster_core::Change`]s and publishes a new [`Snapshot`] through an
//! [`ArcSwap`]. Readers load that snapshot; they never touch chitchat.
//!
//! Liveness: a node that chitchat's failure detector declares dead keeps
//! its records in the directory for `dead_grace`, then loses them; they
//! return if it comes back. When a node name appears with a newer
//! generation (the agent restarted), the newest generation takes over once
//! it is ready (it has published every source's first full set), or once
//! the earlier incarnation is dead past the grace; until then the earlier
//! incarnation keeps answering, so a restart never blanks the host out.
//! Two incarnations whose heartbeats both keep moving are two agents
//! claiming one name: a conflict, in which the first generation keeps its
//! records and the other's are not indexed.

#![warn(missing_docs)]

mod codec;
mod keyring;
mod metrics;
mod probe;
mod publisher;
mod seal;
mod stream;
mod swim;
mod sync;
mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ListenerHandle,
    MAX_UDP_DATAGRAM_PAYLOAD_SIZE, ProtocolVersion, spawn_chitchat,
};
use muster_core::{LastHeard, Snapshot, Source};
use thiserror::Error;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use codec::{MAX_RECORD_BYTES, META_PREFIX, READY_KEY, RECORD_PREFIX};
/// Entry points for the cargo-fuzz targets in `crates/fuzz`, which drive
/// the receive path exactly as the transport does; not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::metrics::Rejection;
    pub use crate::transport::Receiver;

    /// Seals `message` under `ring`'s primary key, as the transport does.
    pub fn seal(
        ring: &crate::Keyring,
        from: u128,
        counter: u64,
        to: u128,
        message: &[u8],
    ) -> Vec<u8> {
        let mut buf = vec![0; crate::seal::HEADER_LEN];
        buf.extend_from_slice(message);
        crate::seal::seal(ring.primary(), from, counter, to, &mut buf);
        buf
    }

    /// Decodes one gossiped record value as the sync task does.
    pub fn decode_record(host: &str, id: &str, value: &str) -> Result<muster_core::Record, String> {
        crate::codec::decode(host, id, value).map_err(|e| e.to_string())
    }
}

pub use keyring::{
    GossipKeys, KEY_LEN, KeyFileError, KeyLineError, Keyring, MAX_KEYS, generate_key,
};
pub use metrics::{GossipMetrics, Sent};
pub use publisher::{PublishReport, Publisher};

/// How an agent takes part in gossip.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// This agent's node name: the `host` of its records.
    pub node_name: String,
    /// Grows on every restart (the start time in milliseconds will do).
    pub generation: u64,
    /// Agents of different clusters ignore each other.
    pub cluster_id: String,
    /// UDP address to bind.
    pub listen_addr: SocketAddr,
    /// UDP address the others reach this agent at.
    pub advertise_addr: SocketAddr,
    /// `host:port` of agents to join through.
    pub seeds: Vec<String>,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// How a member is found dead.
    pub failure_detection: FailureDetection,
    /// Phi-accrual threshold above which a silent node is declared dead
    /// (with [`FailureDetection::Phi`]).
    pub phi_threshold: f64,
    /// How long a dead node's records stay in the directory.
    pub dead_grace: Duration,
    /// How long chitchat keeps a dead node's state and deleted keys.
    pub forget_after: Duration,
    /// Facts this agent publishes about itself (`meta:<key>`).
    pub meta: BTreeMap<String, String>,
    /// The sources this agent runs. It gossips that it is ready once each
    /// has published its first full set (or [`Publisher::settle`]d); an
    /// empty set is ready at once.
    pub sources: BTreeSet<Source>,
    /// Where to count datagrams, bytes and index updates.
    pub metrics: GossipMetrics,
    /// The keyring that seals and opens every datagram; `None` gossips in
    /// the clear (and drops sealed datagrams).
    pub keys: Option<GossipKeys>,
    /// The largest datagram gossip sends, in bytes (seal included); a
    /// larger message goes over TCP to the same port. [`DEFAULT_MTU`]
    /// keeps every datagram inside one Ethernet frame.
    pub mtu: usize,
    /// Drops this fraction (0 to 1) of the gossip messages received, as a
    /// lossy network would, before they are opened: for simulators and
    /// tests of many members in one process. 0 in an agent.
    pub receive_loss: f64,
}

/// An address on `ip` whose port is free for both UDP and TCP right now,
/// as gossip needs (UDP for datagrams, TCP for larger messages), and was
/// never handed out before by this process: for tests and simulators that
/// start many members. Another socket may take the port before it is bound
/// again; a fixed, configured port never races.
pub fn free_gossip_addr(ip: std::net::IpAddr) -> std::io::Result<SocketAddr> {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        // TCP first: a port may be busy for TCP (a connection's local
        // port) while free for UDP, rarely the other way round.
        let tcp = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
        let addr = tcp.local_addr()?;
        if std::net::UdpSocket::bind(addr).is_ok()
            && GIVEN.lock().expect("not poisoned").insert(addr.port())
        {
            return Ok(addr);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP in 100 tries",
    ))
}

/// How an agent finds a member dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureDetection {
    /// SWIM: each agent probes one member per gossip interval (directly,
    /// then through three others), and only a failed probe is gossiped, as
    /// a suspicion the member refutes if it is alive. Its cost per agent
    /// does not grow with the cluster.
    #[default]
    Probes,
    /// chitchat's phi-accrual detector on the heartbeats every gossip
    /// digest carries for every member: quick to decide, but its cost per
    /// agent grows with the cluster.
    Phi,
}

/// How digests stay small (see chitchat's `PartialDigests`): half a
/// datagram for the digest, the other half for the changes that ride with
/// it; a member changed within 15 rounds is named (an epidemic with three
/// peers a round reaches 1,000 members in about 5), two more in turn;
/// a whole digest every 30 s per 1,000 members, over TCP when large; a
/// change made or learned is pushed at once, at most four times a round.
fn partial_digests(interval: Duration, mtu: usize) -> chitchat::PartialDigests {
    chitchat::PartialDigests {
        max_bytes: mtu.clamp(MIN_MTU, MAX_MTU) / 2,
        recent: interval * 15,
        rotation: 2,
        full_every: Duration::from_secs(30),
        push_gap: Some(interval / 4),
    }
}

/// The default for [`GossipConfig::mtu`]: 1,400 bytes fit an Ethernet
/// frame with room for IP, UDP and a tunnel's headers, so no gossip
/// datagram is ever fragmented.
pub const DEFAULT_MTU: usize = 1_400;
/// The smallest [`GossipConfig::mtu`] accepted.
pub const MIN_MTU: usize = 512;
/// The largest [`GossipConfig::mtu`]: a whole UDP datagram.
pub const MAX_MTU: usize = MAX_UDP_DATAGRAM_PAYLOAD_SIZE;

/// Why gossip could not start.
#[derive(Debug, Error)]
pub enum GossipError {
    /// chitchat failed to start, e.g. the UDP address is taken.
    #[error("cannot start gossip on {addr}: {reason}")]
    Start {
        /// The listen address.
        addr: SocketAddr,
        /// chitchat's explanation.
        reason: String,
    },
}

/// A running gossip member: chitchat, the publisher and the sync task.
pub struct Gossip {
    handle: ChitchatHandle,
    directory: Arc<ArcSwap<Snapshot>>,
    publisher: Publisher,
    sync_task: JoinHandle<()>,
    /// The failure detector's task, with [`FailureDetection::Probes`].
    probe_task: Option<JoinHandle<()>>,
    /// A child of the agent's shutdown token: cancelled with it, or alone
    /// by [`Gossip::shutdown`].
    stop: CancellationToken,
    revisions: watch::Receiver<u64>,
    heard: LastHeard,
    _listeners: [ListenerHandle; 2],
    /// The transport's TCP tasks: waited for on shutdown, so the port is
    /// free once [`Gossip::stopped`] returns.
    transport_tasks: tokio_util::task::TaskTracker,
}

impl Gossip {
    /// Binds the gossip socket, joins the seeds and follows the cluster
    /// until `shutdown` is cancelled.
    pub async fn start(
        config: GossipConfig,
        shutdown: &CancellationToken,
    ) -> Result<Gossip, GossipError> {
        let chitchat_id = ChitchatId::new(
            config.node_name.clone(),
            config.generation,
            config.advertise_addr,
        );
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                initial_interval: config.gossip_interval,
                dead_node_grace_period: config.forget_after,
                external: config.failure_detection == FailureDetection::Probes,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: config.forget_after,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Probes need no heartbeat from every member in every digest,
            // so digests can be partial; phi does.
            protocol_version: match config.failure_detection {
                FailureDetection::Probes => ProtocolVersion::V2,
                FailureDetection::Phi => ProtocolVersion::V1,
            },
            partial_digests: (config.failure_detection == FailureDetection::Probes)
                .then(|| partial_digests(config.gossip_interval, config.mtu)),
        };
        let mut initial: Vec<(String, String)> = config
            .meta
            .iter()
            .map(|(k, v)| (format!("{META_PREFIX}{k}"), v.clone()))
            .collect();
        if config.sources.is_empty() {
            // Nothing to wait for: ready from the first gossip on.
            initial.push((READY_KEY.to_owned(), "1".to_owned()));
        }
        let transport_tasks = tokio_util::task::TaskTracker::new();
        let probes = (config.failure_detection == FailureDetection::Probes).then(|| {
            let (heard, heard_rx) = tokio::sync::mpsc::channel(1024);
            let wiring = transport::ProbeWiring {
                heard,
                link: Arc::default(),
            };
            (wiring, heard_rx)
        });
        let handle = spawn_chitchat(
            chitchat_config,
            initial,
            &transport::GossipTransport {
                metrics: config.metrics.clone(),
                keys: config.keys.clone(),
                mtu: config.mtu.clamp(MIN_MTU, MAX_MTU),
                tcp_idle: stream::idle_after(config.gossip_interval),
                tasks: transport_tasks.clone(),
                loss: config.receive_loss.clamp(0.0, 1.0),
                probes: probes.as_ref().map(|(wiring, _)| wiring.clone()),
            },
        )
        .await
        .map_err(|e| GossipError::Start {
            addr: config.listen_addr,
            reason: format!("{e:#}"),
        })?;
        let chitchat = handle.chitchat();
        let wake = Arc::new(sync::Wake::default());
        let listeners = {
            let chitchat = chitchat.lock().await;
            [RECORD_PREFIX, READY_KEY].map(|prefix| {
                let wake = wake.clone();
                chitchat.subscribe_event(prefix, move |event| wake.host(&event.node.node_id))
            })
        };
        let directory = Arc::new(ArcSwap::from_pointee(Snapshot::new()));
        let stop = shutdown.child_token();
        let (probe_task, unsure) = match probes {
            Some((wiring, heard_rx)) => {
                let link = wiring
                    .link
                    .lock()
                    .expect("not poisoned")
                    .take()
                    .expect("the transport is open");
                let unsure = probe::Unsure::default();
                // A claim or a refutation gossiped in: judge at once.
                let judge = Arc::new(Notify::new());
                let claim_listeners = {
                    let chitchat = chitchat.lock().await;
                    [swim::CLAIM_PREFIX, swim::INCARNATION_KEY].map(|prefix| {
                        let judge = judge.clone();
                        chitchat.subscribe_event(prefix, move |_| judge.notify_one())
                    })
                };
                let task = tokio::spawn(probe::run(
                    claim_listeners,
                    judge,
                    wake.clone(),
                    chitchat.clone(),
                    handle.chitchat_id().clone(),
                    link,
                    heard_rx,
                    swim::Timing::for_interval(config.gossip_interval),
                    unsure.clone(),
                    stop.clone(),
                ));
                (Some(task), Some(unsure))
            }
            None => (None, None),
        };
        let (revisions_tx, revisions) = watch::channel(0);
        let heard = LastHeard::default();
        let sync_task = tokio::spawn(sync::run(
            chitchat.clone(),
            directory.clone(),
            wake.clone(),
            sync::Settings {
                dead_grace: config.dead_grace,
                // With probes the detector wakes the task on each verdict,
                // so the tick only ages grace periods and lags: one walk
                // over the members a round, not ten a second.
                tick: match config.failure_detection {
                    FailureDetection::Probes => config
                        .gossip_interval
                        .clamp(Duration::from_millis(100), Duration::from_secs(1)),
                    FailureDetection::Phi => config.gossip_interval.min(Duration::from_millis(100)),
                },
                suspect_after: config.gossip_interval * 3,
                conflict_after: config.gossip_interval * 6,
                lag_warn_after: (config.gossip_interval * 50).max(Duration::from_secs(10)),
                metrics: config.metrics.clone(),
                unsure,
            },
            revisions_tx,
            heard.clone(),
            stop.clone(),
        ));
        let publisher = Publisher::new(chitchat, wake, config.sources);
        Ok(Gossip {
            handle,
            directory,
            publisher,
            sync_task,
            probe_task,
            stop,
            revisions,
            heard,
            _listeners: listeners,
            transport_tasks,
        })
    }

    /// The directory as this agent sees it, updated after every change.
    pub fn directory(&self) -> Arc<ArcSwap<Snapshot>> {
        self.directory.clone()
    }

    /// The directory's revision, updated after every new snapshot: wait on
    /// it to follow changes.
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.revisions.clone()
    }

    /// When each member's heartbeat was last seen moving.
    pub fn last_heard(&self) -> LastHeard {
        self.heard.clone()
    }

    /// Where local records are published.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The UDP address gossip listens on.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.handle.chitchat_id().gossip_advertise_addr
    }

    /// Resolves if the chitchat server task stops on its own, which leaves
    /// this agent deaf to the cluster: callers treat it as fatal.
    pub fn failed(&self) -> impl Future<Output = String> + use<> {
        let watcher = self.handle.termination_watcher();
        async move {
            match watcher.await {
                Ok(()) => "gossip stopped".to_owned(),
                Err(e) => format!("gossip failed: {e:#}"),
            }
        }
    }

    /// Once the shutdown token is cancelled: stops the sync task, then
    /// chitchat.
    pub async fn stopped(self) {
        self.stop.cancelled().await;
        let _ = self.sync_task.await;
        if let Some(task) = self.probe_task {
            let _ = task.await;
        }
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "chitchat did not shut down cleanly");
        }
        // chitchat has dropped the socket, which stops the TCP tasks.
        self.transport_tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.transport_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("gossip's TCP tasks did not stop within 5 s");
        }
    }

    /// Stops this member alone (cancels its own token) and waits until it
    /// has stopped.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.stopped().await;
    }
}
