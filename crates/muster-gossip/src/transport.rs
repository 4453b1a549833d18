//! The UDP transport chitchat gossips over: seals every datagram it sends
//! and opens every datagram it receives when the agent has a keyring (see
//! [`crate::seal`]), so chitchat never decodes a byte that did not
//! authenticate; counts datagrams, bytes and what it drops. A message
//! whose datagram would exceed the MTU goes over TCP instead
//! ([`crate::stream`]), as the same bytes, admitted the same way.
//!
//! Without a keyring it sends chitchat's plain encoding, and drops sealed
//! datagrams (a keyed agent's) with a warning: a keyed and an unkeyed agent
//! never exchange state, and both say why.
//!
//! The failure detector's probes ([`crate::swim::wire`]) share the socket:
//! sealed alike, sent through a [`Link`], and handed to the probe task
//! instead of chitchat when they arrive.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatMessage, MAX_UDP_DATAGRAM_PAYLOAD_SIZE};
use tokio::time::Instant;

use crate::keyring::{GossipKeys, Keyring};
use crate::metrics::{GossipMetrics, Rejection};
use crate::seal::{self, Refused, Session, Windows};
use crate::stream::{Inbound, Stream};
use crate::swim::wire;
use tokio::sync::mpsc;

/// Most sender sessions (and reply addresses) remembered.
const MAX_PEERS: usize = 16_384;
/// At most one warning per reason in this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Opens [`GossipSocket`]s.
pub(crate) struct GossipTransport {
    pub metrics: GossipMetrics,
    pub keys: Option<GossipKeys>,
    /// The largest datagram to send; larger messages go over TCP.
    pub mtu: usize,
    /// How long an idle TCP connection to a peer is kept.
    pub tcp_idle: Duration,
    /// Where the TCP carriage spawns its tasks.
    pub tasks: tokio_util::task::TaskTracker,
    /// The fraction of received messages dropped (simulated loss).
    pub loss: f64,
    /// Where probe messages go, and where the socket's [`Link`] is left
    /// for the probe task; `None`: probes are dropped.
    pub probes: Option<ProbeWiring>,
}

/// The transport's side of the failure detector.
#[derive(Clone)]
pub(crate) struct ProbeWiring {
    pub heard: mpsc::Sender<Heard>,
    pub link: Arc<std::sync::Mutex<Option<Link>>>,
}

/// A probe message received, authentic.
#[derive(Debug)]
pub(crate) struct Heard {
    pub from: SocketAddr,
    /// The sender's session: answers are addressed to it.
    pub session: Session,
    pub message: wire::Message,
}

/// Seals what this socket sends: the session and the counter are shared
/// by chitchat's messages and the probes, so no counter is used twice.
#[derive(Clone)]
struct Sealer {
    keys: Option<GossipKeys>,
    session: Session,
    counter: Arc<AtomicU64>,
}

impl Sealer {
    /// Writes a message with `encode` into `buf`, sealed to `dest` when
    /// there is a keyring.
    fn write(&self, dest: Session, buf: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
        buf.clear();
        match &self.keys {
            None => encode(buf),
            Some(keys) => {
                buf.resize(seal::HEADER_LEN, 0);
                encode(buf);
                let counter = self.counter.fetch_add(1, Ordering::Relaxed);
                seal::seal(keys.current().primary(), self.session, counter, dest, buf);
            }
        }
    }
}

/// Sends probe messages on the gossip socket.
pub(crate) struct Link {
    socket: Arc<tokio::net::UdpSocket>,
    sealer: Sealer,
    metrics: GossipMetrics,
    buf: Vec<u8>,
}

impl Link {
    /// Sends `message` to `to`, sealed to the session `dest` (0 when it
    /// opens an exchange). A probe that cannot be sent is a probe lost.
    pub fn send(&mut self, to: SocketAddr, dest: Session, message: &wire::Message) {
        self.sealer
            .write(dest, &mut self.buf, |buf| message.encode(buf));
        match self.socket.try_send_to(&self.buf, to) {
            Ok(n) => self.metrics.count("out", n),
            Err(e) => tracing::debug!(error = %e, %to, "probe not sent"),
        }
    }
}

#[async_trait::async_trait]
impl Transport for GossipTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let (socket, stream, inbound) =
            bind(listen_addr, self.tcp_idle, &self.metrics, &self.tasks).await?;
        let socket = Arc::new(socket);
        let mut session = [0u8; 16];
        getrandom::fill(&mut session).context("no random source for the gossip session")?;
        let session = Session::from_be_bytes(session).max(1);
        let sealer = Sealer {
            keys: self.keys.clone(),
            session,
            counter: Arc::new(AtomicU64::new(0)),
        };
        let heard = self.probes.as_ref().map(|probes| {
            *probes.link.lock().expect("not poisoned") = Some(Link {
                socket: socket.clone(),
                sealer: sealer.clone(),
                metrics: self.metrics.clone(),
                buf: Vec::with_capacity(256),
            });
            probes.heard.clone()
        });
        Ok(Box::new(GossipSocket {
            socket,
            loss: Loss::new(self.loss, session),
            mtu: self.mtu,
            stream,
            inbound,
            keys: self.keys.clone(),
            sealer,
            heard,
            metrics: self.metrics.clone(),
            receiver: Receiver::new(session),
            send_buf: Vec::with_capacity(MAX_UDP_DATAGRAM_PAYLOAD_SIZE),
            recv_buf: vec![0; MAX_UDP_DATAGRAM_PAYLOAD_SIZE].into_boxed_slice(),
            warned: HashMap::new(),
        }))
    }
}

/// Binds the UDP socket and, on the same port, the TCP listener. With
/// port 0 (any port), the port the system picks for UDP may be taken for
/// TCP (a connection's local port): then another is tried, up to 64 times.
async fn bind(
    listen_addr: SocketAddr,
    tcp_idle: Duration,
    metrics: &GossipMetrics,
    tasks: &tokio_util::task::TaskTracker,
) -> anyhow::Result<(tokio::net::UdpSocket, Stream, mpsc::Receiver<Inbound>)> {
    let tries = if listen_addr.port() == 0 { 64 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let local = socket
            .local_addr()
            .context("no address for the gossip socket")?;
        match Stream::open(local, tcp_idle, metrics.clone(), tasks.clone()).await {
            Ok((stream, inbound)) => return Ok((socket, stream, inbound)),
            Err(e) => last = Some((local, e)),
        }
    }
    let (local, e) = last.expect("at least one try");
    Err(e).with_context(|| format!("failed to bind to {local}/TCP for gossip"))
}

struct GossipSocket {
    socket: Arc<tokio::net::UdpSocket>,
    loss: Loss,
    mtu: usize,
    stream: Stream,
    inbound: mpsc::Receiver<Inbound>,
    keys: Option<GossipKeys>,
    sealer: Sealer,
    /// Where probe messages go.
    heard: Option<mpsc::Sender<Heard>>,
    metrics: GossipMetrics,
    receiver: Receiver,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
    /// When each cause was last warned about, and how many since.
    warned: HashMap<&'static str, (Option<Instant>, u64)>,
}

fn is_transient_io_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

#[async_trait::async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("failed to get UDP socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // A Syn opens an exchange: whoever answers at `to` may be a new
        // run. Everything else answers a datagram just heard.
        let dest = match envelope.message {
            ChitchatMessage::Syn { .. } => 0,
            _ => self.receiver.session_of(to),
        };
        self.sealer
            .write(dest, &mut self.send_buf, |buf| envelope.serialize(buf));
        if self.send_buf.len() > self.mtu {
            // Queued, not yet written: a peer that is gone costs nothing here.
            self.stream.send(to, &self.send_buf);
            return Ok(SendOutcome {
                num_bytes_sent: self.send_buf.len(),
            });
        }
        let num_bytes_sent = self
            .socket
            .send_to(&self.send_buf, to)
            .await
            .context("failed to send chitchat message to peer")?;
        self.metrics.count("out", num_bytes_sent);
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            // Both are cancel-safe: whichever loses the race keeps its data.
            let mut framed;
            let (from, datagram) = tokio::select! {
                received = self.socket.recv_from(&mut self.recv_buf) => match received {
                    Ok((len, from)) => {
                        self.metrics.count("in", len);
                        (from, &mut self.recv_buf[..len])
                    }
                    Err(err) if is_transient_io_error(&err) => {
                        tracing::warn!(error = %err, "transient UDP recv error");
                        continue;
                    }
                    Err(err) => return Err(err).context("fatal UDP recv error"),
                },
                Some((from, payload)) = self.inbound.recv() => {
                    framed = payload;
                    (from, framed.as_mut_slice())
                }
            };
            if self.loss.drops() {
                continue;
            }
            let len = datagram.len();
            let ring = self.keys.as_ref().map(GossipKeys::current);
            match self
                .receiver
                .admit(ring.as_deref().map(|r| &**r), from, datagram)
            {
                Ok(Admitted::Chitchat(envelope)) => {
                    return Ok(RecvOutcome {
                        from_addr: from,
                        envelope,
                        num_bytes_received: len,
                    });
                }
                Ok(Admitted::Probe { session, message }) => {
                    // A full queue (the probe task far behind) loses the
                    // probe, as the network might.
                    if let Some(heard) = &self.heard {
                        let _ = heard.try_send(Heard {
                            from,
                            session,
                            message,
                        });
                    }
                }
                Err((reason, why)) => {
                    self.metrics.reject(reason);
                    self.warn(reason, from, why);
                }
            }
        }
    }
}

/// Simulated loss: drops a fraction of what is received (see
/// [`crate::GossipConfig::receive_loss`]), deciding with a small
/// generator seeded by the session, so members of one process lose
/// independently.
struct Loss {
    /// Drop when the next draw is below this (0: never).
    below: u64,
    state: u64,
}

impl Loss {
    fn new(fraction: f64, seed: Session) -> Loss {
        Loss {
            below: (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            state: (seed as u64) | 1,
        }
    }

    fn drops(&mut self) -> bool {
        if self.below == 0 {
            return false;
        }
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) < self.below
    }
}

/// A datagram that authenticated and decoded.
#[derive(Debug)]
pub enum Admitted {
    /// For chitchat.
    Chitchat(ChitchatEnvelope),
    /// For the failure detector, from the sender's `session` (0 unsealed).
    Probe {
        session: Session,
        message: wire::Message,
    },
}

/// The receiving half of the seal, without I/O: which sender sessions
/// were heard, their replay windows, and the session behind each address.
pub struct Receiver {
    /// This run's session: names this agent as sender and as destination.
    session: Session,
    windows: Windows,
    /// The session last heard from each address: replies go to it.
    sessions_by_addr: HashMap<SocketAddr, Session>,
}

impl Receiver {
    /// A receiver for the agent run `session` (not 0).
    pub fn new(session: Session) -> Receiver {
        Receiver {
            session,
            windows: Windows::new(MAX_PEERS),
            sessions_by_addr: HashMap::new(),
        }
    }

    /// The session last heard from `addr`, 0 if none.
    fn session_of(&self, addr: SocketAddr) -> Session {
        self.sessions_by_addr.get(&addr).copied().unwrap_or(0)
    }

    /// Opens `datagram` (received from `from`) under `ring`, or takes it as
    /// a plain encoding without a ring, and decodes it; an error says why
    /// it is dropped. The datagram is decrypted in place.
    pub fn admit(
        &mut self,
        ring: Option<&Keyring>,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Admitted, (Rejection, &'static str)> {
        let len = datagram.len();
        let Some(ring) = ring else {
            if datagram.first() == Some(&seal::FORMAT) {
                return Err((
                    Rejection::Auth,
                    "a sealed datagram, but this agent has no gossip key (--gossip-key-file)",
                ));
            }
            return decode(datagram, 0);
        };
        let opened = seal::open(ring, datagram).map_err(|refused| {
            let why = match refused {
                Refused::NotSealed => {
                    "not sealed: the sender has no gossip key, or is not a muster agent"
                }
                Refused::UnknownKey => "sealed with a key not in this agent's key file",
                Refused::Forged => "does not authenticate under the key it names",
            };
            (Rejection::Auth, why)
        })?;
        if opened.to != 0 && opened.to != self.session {
            return Err((
                Rejection::Replay,
                "addressed to another agent, or to an earlier run of this one",
            ));
        }
        let admitted = decode(
            &datagram[seal::HEADER_LEN..len - (seal::OVERHEAD - seal::HEADER_LEN)],
            opened.from,
        )?;
        let opens = match &admitted {
            Admitted::Chitchat(envelope) => matches!(envelope.message, ChitchatMessage::Syn { .. }),
            Admitted::Probe { message, .. } => message.opens(),
        };
        if opened.to == 0 && !opens {
            return Err((Rejection::Replay, "an answer addressed to nobody"));
        }
        // Only now, with the datagram authentic and decoded, does it count
        // against the window: a forgery cannot use up a counter.
        if !self.windows.accept(opened.from, opened.counter) {
            return Err((
                Rejection::Replay,
                "a counter this agent has accepted before",
            ));
        }
        if self.sessions_by_addr.len() >= MAX_PEERS && !self.sessions_by_addr.contains_key(&from) {
            self.sessions_by_addr.clear();
        }
        self.sessions_by_addr.insert(from, opened.from);
        Ok(admitted)
    }
}

impl GossipSocket {
    /// Logs a dropped datagram, at most once per cause every
    /// [`WARN_EVERY`], with how many went unmentioned since.
    fn warn(&mut self, reason: Rejection, from: SocketAddr, why: &'static str) {
        let now = Instant::now();
        let (last, quiet) = self.warned.entry(why).or_default();
        if last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            *quiet += 1;
            return;
        }
        tracing::warn!(
            reason = reason.label(),
            %from,
            dropped_since_last_warning = *quiet,
            "gossip datagram dropped: {why}"
        );
        *last = Some(now);
        *quiet = 0;
    }
}

/// Decodes a probe message (it starts with [`wire::MAGIC`]) or a chitchat
/// one, sent from `session`.
fn decode(mut buf: &[u8], session: Session) -> Result<Admitted, (Rejection, &'static str)> {
    if buf.starts_with(&wire::MAGIC) {
        return wire::Message::decode(buf)
            .map(|message| Admitted::Probe { session, message })
            .ok_or((Rejection::Malformed, "not a probe message"));
    }
    ChitchatEnvelope::deserialize(&mut buf)
        .map(Admitted::Chitchat)
        .map_err(|_| (Rejection::Malformed, "not a chitchat message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_port_means_one_free_for_both_udp_and_tcp() {
        let tasks = tokio_util::task::TaskTracker::new();
        let metrics = GossipMetrics::default();
        for _ in 0..20 {
            let (socket, _stream, _rx) = bind(
                "127.0.0.1:0".parse().unwrap(),
                Duration::from_secs(5),
                &metrics,
                &tasks,
            )
            .await
            .expect("binds");
            let port = socket.local_addr().unwrap().port();
            assert_ne!(port, 0);
            // The listener holds the same port for TCP.
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        }
    }

    #[test]
    fn simulated_loss_drops_about_the_fraction_asked_and_none_at_zero() {
        let mut none = Loss::new(0.0, 7);
        assert!((0..10_000).all(|_| !none.drops()));
        let mut some = Loss::new(0.05, 7);
        let dropped = (0..100_000).filter(|_| some.drops()).count();
        assert!((4_500..5_500).contains(&dropped), "{dropped} of 100,000");
        let mut all = Loss::new(1.0, 7);
        assert!((0..10_000).all(|_| all.drops()));
    }
}
