//! TCP carriage for gossip messages too large for one datagram.
//!
//! A message whose datagram would exceed the gossip MTU (1,400 bytes by
//! default, so nothing is IP-fragmented) travels instead as one frame on a
//! TCP connection to the same address and port as the peer's UDP socket.
//! The frame's payload is exactly the datagram that would have been sent,
//! sealed or not, and the receiver admits it through the same
//! [`crate::transport::Receiver`] as a datagram: TCP changes how bytes
//! travel, never what is trusted.
//!
//! On the wire a connection opens with [`PREFACE`], then carries frames:
//! a 4-byte big-endian payload length, the 2-byte port of the sender's
//! gossip socket (replies go to the connection's source address at that
//! port, as they would to a datagram's source), then the payload.
//!
//! Everything is bounded: one writer task per peer with a short queue
//! (a message that finds it full is dropped, as a datagram would be),
//! connect and write timeouts, idle connections closed, at most
//! [`MAX_INBOUND`] inbound connections, frames of at most
//! [`MAX_FRAME`] bytes, and a slow or silent sender is cut off.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::GossipMetrics;

/// Opens every gossip TCP connection: "muster gossip, frames v1".
pub const PREFACE: &[u8; 8] = b"MGOSSIP1";
/// The largest frame payload accepted: a whole UDP datagram's worth.
pub const MAX_FRAME: usize = 65_535;
/// Most inbound connections served at once; more are closed on accept.
pub const MAX_INBOUND: usize = 256;
/// Messages queued for one peer before new ones are dropped.
const QUEUE: usize = 16;
/// Most peers with a writer at once; past it, finished writers are pruned
/// and, if none finished, the message is dropped.
const MAX_WRITERS: usize = 1_024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A writer with nothing to send for this many gossip rounds closes its
/// connection (see [`idle_after`]).
const IDLE_ROUNDS: u32 = 2;
/// A reader that hears nothing for this long closes its connection; a
/// frame (or preface) must arrive whole within [`FRAME_TIMEOUT`] of its
/// first byte.
const READ_IDLE: Duration = Duration::from_secs(60);
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a writer with nothing to send keeps its connection, for a
/// gossip round of `round`: [`IDLE_ROUNDS`] rounds, at least 0.5 s and at
/// most 5 s. Messages past the MTU mostly go to peers picked at random, so
/// a connection idle for two rounds is rarely used again (memberlist opens
/// one per push-pull and closes it); a longer idle only holds descriptors:
/// with 5 s, 1,000 simulated members at 1 s rounds held about 10,000
/// connections while forming, with 1 s about 2,000.
pub(crate) fn idle_after(round: Duration) -> Duration {
    (round * IDLE_ROUNDS).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// One inbound message: where to reply, and the datagram it carries.
pub(crate) type Inbound = (SocketAddr, Vec<u8>);

/// Both directions of the TCP carriage for one gossip socket; dropping it
/// stops every task it started.
pub(crate) struct Stream {
    local: SocketAddr,
    /// How long a writer with nothing to send keeps its connection.
    idle: Duration,
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    metrics: GossipMetrics,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Stream {
    /// Listens on `local` (the UDP socket's own address, so the TCP port is
    /// the UDP port) and returns the stream with the channel its inbound
    /// frames arrive on. Every task it starts is spawned on `tasks`: once
    /// the stream is dropped they all end, and waiting on `tasks` tells when
    /// the port is free again. A writer closes its connection after `idle`
    /// with nothing to send.
    pub async fn open(
        local: SocketAddr,
        idle: Duration,
        metrics: GossipMetrics,
        tasks: TaskTracker,
    ) -> std::io::Result<(Stream, mpsc::Receiver<Inbound>)> {
        let listener = TcpListener::bind(local).await?;
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        tasks.spawn(accept(
            listener,
            tx,
            metrics.clone(),
            stop.clone(),
            tasks.clone(),
        ));
        Ok((
            Stream {
                local,
                idle,
                writers: HashMap::new(),
                metrics,
                stop,
                tasks,
            },
            rx,
        ))
    }

    /// Queues `payload` for `to`; false if it was dropped (the peer's queue
    /// is full, or too many peers have writers).
    pub fn send(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        debug_assert!(payload.len() <= MAX_FRAME);
        let mut frame = Vec::with_capacity(6 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&self.local.port().to_be_bytes());
        frame.extend_from_slice(payload);
        if let Some(writer) = self.writers.get(&to) {
            match writer.try_send(frame) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.tcp_dropped();
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    frame = back;
                    self.writers.remove(&to);
                }
            }
        }
        if self.writers.len() >= MAX_WRITERS {
            self.writers.retain(|_, w| !w.is_closed());
            if self.writers.len() >= MAX_WRITERS {
                self.metrics.tcp_dropped();
                return false;
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tx.try_send(frame).expect("a new queue has room");
        self.writers.insert(to, tx);
        let bind = (!self.local.ip().is_unspecified()).then_some(self.local.ip());
        self.tasks.spawn(write(
            bind,
            to,
            self.idle,
            rx,
            self.metrics.clone(),
            self.stop.child_token(),
        ));
        true
    }
}

/// Connects to `to` (from `bind`, so the peer sees the same source
/// address as this agent's datagrams) and writes queued frames until the
/// queue closes, the connection idles for `idle` or fails, or `stop`.
async fn write(
    bind: Option<IpAddr>,
    to: SocketAddr,
    idle: Duration,
    mut queue: mpsc::Receiver<Vec<u8>>,
    metrics: GossipMetrics,
    stop: CancellationToken,
) {
    let connected = tokio::select! {
        () = stop.cancelled() => return,
        connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(bind, to)) => connected,
    };
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%to, error = %e, "gossip: no TCP connection");
            return fail(&mut queue, &metrics);
        }
        Err(_) => {
            tracing::debug!(%to, "gossip: TCP connect timed out");
            return fail(&mut queue, &metrics);
        }
    };
    let mut preface = Some(PREFACE.as_slice());
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return,
            frame = tokio::time::timeout(idle, queue.recv()) => match frame {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => return,
            },
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            if let Some(preface) = preface.take() {
                conn.write_all(preface).await?;
            }
            conn.write_all(&frame).await
        })
        .await;
        match written {
            Ok(Ok(())) => metrics.tcp_count("out", frame.len() - 6),
            Ok(Err(e)) => {
                tracing::debug!(%to, error = %e, "gossip: TCP write failed");
                metrics.tcp_dropped();
                return fail(&mut queue, &metrics);
            }
            Err(_) => {
                tracing::debug!(%to, "gossip: TCP write timed out");
                metrics.tcp_dropped();
                return fail(&mut queue, &metrics);
            }
        }
    }
}

/// Counts what was still queued for a connection that failed as dropped.
fn fail(queue: &mut mpsc::Receiver<Vec<u8>>, metrics: &GossipMetrics) {
    queue.close();
    while queue.try_recv().is_ok() {
        metrics.tcp_dropped();
    }
}

async fn connect(bind: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == to.is_ipv4()) {
        // Pick the local port at connect, not at bind: a bind to port 0
        // searches the ports in use on that address, a cost that grew to
        // a quarter of the CPU of 200 members on one address (perf), while
        // connect picks by the whole 4-tuple.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let on: libc::c_int = 1;
            // SAFETY: a valid socket, an int option, its size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let conn = socket.connect(to).await?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

async fn accept(
    listener: TcpListener,
    inbound: mpsc::Sender<Inbound>,
    metrics: GossipMetrics,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (conn, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or the like: let it pass.
                tracing::warn!(error = %e, "gossip: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%from, "gossip: too many TCP connections, closing one");
            continue;
        };
        let inbound = inbound.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        let mut conn = conn;
        tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                cut = read(&mut conn, from, &inbound, &metrics) => match cut {
                    Ok(()) => {}
                    Err(Cut::Malformed(why)) => {
                        metrics.reject(crate::metrics::Rejection::Malformed);
                        tracing::debug!(%from, "gossip: TCP connection cut: {why}");
                    }
                    Err(Cut::Broken(why)) => {
                        tracing::debug!(%from, "gossip: TCP connection lost: {why}");
                    }
                },
            }
            // Closed only once counted: whoever sees it closed sees the count.
            drop(conn);
            drop(slot);
        });
    }
}

/// Why a reader closed its connection early.
enum Cut {
    /// The peer does not speak this protocol.
    Malformed(&'static str),
    /// The peer went away or stalled mid-frame.
    Broken(&'static str),
}

/// Reads the preface, then frames, handing each to `inbound`, until the
/// peer closes or idles; an error says why the connection was cut.
async fn read(
    conn: &mut TcpStream,
    from: SocketAddr,
    inbound: &mpsc::Sender<Inbound>,
    metrics: &GossipMetrics,
) -> Result<(), Cut> {
    let mut preface = [0u8; PREFACE.len()];
    within(FRAME_TIMEOUT, conn.read_exact(&mut preface)).await?;
    if &preface != PREFACE {
        return Err(Cut::Malformed("not a muster gossip connection"));
    }
    loop {
        let mut head = [0u8; 6];
        match tokio::time::timeout(READ_IDLE, conn.read_u8()).await {
            Err(_) => return Ok(()),
            Ok(Err(_)) => return Ok(()), // closed between frames
            Ok(Ok(first)) => head[0] = first,
        }
        within(FRAME_TIMEOUT, conn.read_exact(&mut head[1..])).await?;
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(Cut::Malformed("a frame larger than any datagram"));
        }
        let port = u16::from_be_bytes([head[4], head[5]]);
        let mut payload = vec![0; len];
        within(FRAME_TIMEOUT, conn.read_exact(&mut payload)).await?;
        metrics.tcp_count("in", len);
        if inbound
            .send((SocketAddr::new(from.ip(), port), payload))
            .await
            .is_err()
        {
            return Ok(()); // the socket is gone
        }
    }
}

async fn within<T>(
    limit: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> Result<T, Cut> {
    match tokio::time::timeout(limit, io).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(Cut::Broken("closed in the middle of a frame")),
        Err(_) => Err(Cut::Broken("too slow to send a whole frame")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open() -> (Stream, mpsc::Receiver<Inbound>, GossipMetrics) {
        // A free port: the UDP socket's, in the agent.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = GossipMetrics::default();
        let (stream, rx) = Stream::open(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(5),
            metrics.clone(),
            TaskTracker::new(),
        )
        .await
        .unwrap();
        (stream, rx, metrics)
    }

    async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a frame within 5 s")
            .expect("the stream is open")
    }

    #[tokio::test]
    async fn a_message_arrives_whole_with_the_senders_gossip_address_to_reply_to() {
        let (mut a, _, a_metrics) = open().await;
        let (b, mut b_rx, _) = open().await;
        let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        assert!(a.send(b.local, &big));
        assert!(a.send(b.local, b"second"));
        assert_eq!(next(&mut b_rx).await, (a.local, big.clone()));
        assert_eq!(next(&mut b_rx).await, (a.local, b"second".to_vec()));
        assert_eq!(a_metrics.sent().tcp_messages, 2);
        assert_eq!(a_metrics.sent().tcp_bytes, 20_006);
        assert_eq!(a_metrics.sent().datagrams, 0);
    }

    #[test]
    fn an_idle_connection_is_kept_two_rounds_within_half_a_second_and_five() {
        assert_eq!(
            idle_after(Duration::from_millis(200)),
            Duration::from_millis(500)
        );
        assert_eq!(
            idle_after(Duration::from_millis(400)),
            Duration::from_millis(800)
        );
        assert_eq!(idle_after(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(idle_after(Duration::from_secs(10)), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_writer_closes_its_connection_once_idle_and_opens_another_for_the_next_message() {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let (mut a, _, _) = open().await;
        a.idle = Duration::from_millis(300);
        let read_all = |mut conn: TcpStream| async move {
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got))
                .await
                .expect("closed by the writer within 5 s")
                .unwrap();
            got
        };
        assert!(a.send(to, b"one"));
        let (first, _) = peer.accept().await.unwrap();
        let opened = std::time::Instant::now();
        let got = read_all(first).await;
        assert!(
            opened.elapsed() >= Duration::from_millis(250),
            "{:?}",
            opened.elapsed()
        );
        assert!(got.starts_with(PREFACE) && got.ends_with(b"one"), "{got:?}");
        // The writer is gone; the next message connects again.
        assert!(a.send(to, b"two"));
        let (second, _) = peer.accept().await.unwrap();
        let got = read_all(second).await;
        assert!(got.starts_with(PREFACE) && got.ends_with(b"two"), "{got:?}");
    }

    #[tokio::test]
    async fn a_stranger_speaking_another_protocol_is_cut_off_and_counted() {
        let (mut a, _, _) = open().await;
        let (b, mut b_rx, b_metrics) = open().await;
        let mut stranger = TcpStream::connect(b.local).await.unwrap();
        stranger.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        // Cut: the read ends at EOF.
        tokio::time::timeout(Duration::from_secs(5), stranger.read_to_end(&mut rest))
            .await
            .expect("the connection is closed")
            .ok();
        assert!(a.send(b.local, b"still heard"));
        assert_eq!(next(&mut b_rx).await.1, b"still heard");
        assert_eq!(b_metrics.rejected(crate::metrics::Rejection::Malformed), 1);
    }

    #[tokio::test]
    async fn a_frame_longer_than_any_datagram_cuts_the_connection() {
        let (b, mut b_rx, b_metrics) = open().await;
        let mut liar = TcpStream::connect(b.local).await.unwrap();
        liar.write_all(PREFACE).await.unwrap();
        liar.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        liar.write_all(&7946u16.to_be_bytes()).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), liar.read_to_end(&mut rest))
            .await
            .expect("the connection is closed")
            .ok();
        assert_eq!(b_metrics.rejected(crate::metrics::Rejection::Malformed), 1);
        assert!(b_rx.try_recv().is_err(), "nothing was handed on");
    }

    #[tokio::test]
    async fn once_dropped_and_its_tasks_waited_for_the_port_is_free_again() {
        let (other, _other_rx, _) = open().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let tasks = TaskTracker::new();
        let (mut b, _b_rx) = Stream::open(
            local,
            Duration::from_secs(5),
            GossipMetrics::default(),
            tasks.clone(),
        )
        .await
        .unwrap();
        // A reader (a peer connected in) and a writer (b connected out).
        let mut peer = TcpStream::connect(local).await.unwrap();
        peer.write_all(PREFACE).await.unwrap();
        assert!(b.send(other.local, b"hello"));
        drop(b);
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("every task ends");
        TcpListener::bind(local)
            .await
            .expect("a restarted member binds the same port");
    }

    #[tokio::test]
    async fn a_peer_that_is_not_listening_costs_a_dropped_message_then_is_retried() {
        let (mut a, _, a_metrics) = open().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let absent = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(a.send(absent, b"lost"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while a_metrics.tcp_dropped_count() == 0 {
            assert!(std::time::Instant::now() < deadline, "the drop is counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The peer starts: the next message gets a new connection.
        let metrics = GossipMetrics::default();
        let (_b, mut b_rx) =
            Stream::open(absent, Duration::from_secs(5), metrics, TaskTracker::new())
                .await
                .unwrap();
        assert!(a.send(absent, b"found"));
        assert_eq!(next(&mut b_rx).await.1, b"found");
    }
}
