//! The UDP front end: queries are received in batches (`recvmmsg`),
//! answered one by one through hickory's request parser and response
//! encoder, and the replies sent in batches (`sendmmsg`).
//!
//! hickory-server's own UDP loop spawns a task per query and passes every
//! reply through a channel to a sender task; under load that costs more
//! than the answer itself. Here a thread of its own blocks in `recvmmsg`,
//! an answer is a plain function call, and one system call moves up to
//! [`BATCH`] packets each way. Queries that must be forwarded upstream are
//! the exception: they become tasks on the runtime, so that a slow
//! upstream never stalls the others.
//!
//! Answers come from [`crate::reply`] (and [`crate::forward`]); this module
//! only moves packets, and is started and stopped by [`crate::server`].

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::server::Request;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::rate::{Decision, RateLimiter};
use crate::reply::{Handler, Outcome, answer, edns_for, encode_udp, truncated};
use crate::{forward, metrics};

/// Packets moved per system call, each way.
const BATCH: usize = 64;
/// Receive buffer per packet: larger queries are cut by the kernel and then
/// fail to parse (FORMERR), as with any other malformed query.
const MAX_QUERY: usize = 4096;
/// How often the receiving thread looks at the shutdown token when idle.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// Starts answering queries on `socket` on a thread of its own, until
/// `shutdown` is cancelled. Forwarded queries run on `runtime`.
pub(crate) fn spawn(
    socket: UdpSocket,
    handler: Arc<Handler>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> io::Result<std::thread::JoinHandle<()>> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(IDLE_CHECK))?;
    let socket = Arc::new(socket);
    std::thread::Builder::new()
        .name("muster-dns-udp".into())
        .spawn(move || serve(&socket, &handler, &runtime, &shutdown))
}

fn serve(
    socket: &Arc<UdpSocket>,
    handler: &Arc<Handler>,
    runtime: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) {
    let mut inbox = Inbox::new();
    let mut outbox: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let mut replies: Vec<(Vec<u8>, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut spare: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut limiter = (handler.rate_limit > 0).then(|| RateLimiter::new(handler.rate_limit));
    let epoch = std::time::Instant::now();
    while !shutdown.is_cancelled() {
        let received = match inbox.receive(socket) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // Transient errors (ICMP-induced ECONNREFUSED and the like):
                // keep serving, but never spin.
                warn!(error = %e, "DNS: receiving on UDP failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let second = epoch.elapsed().as_secs();
        for (packet, src) in inbox.packets(received) {
            let Some(src) = src.filter(answerable) else {
                continue;
            };
            let mut out = spare.pop().unwrap_or_default();
            out.clear();
            let decision = limiter
                .as_mut()
                .map_or(Decision::Answer, |l| l.decide(src.ip(), second));
            if decision != Decision::Answer {
                handler.metrics.rate_limited(decision == Decision::Truncate);
                if decision == Decision::Truncate && truncated(packet, src, &mut out) {
                    replies.push((out, SockaddrStorage::from(src)));
                } else {
                    spare.push(out);
                }
                continue;
            }
            let started = std::time::Instant::now();
            match answer(handler, packet, src, &mut out) {
                Outcome::Reply => {
                    handler.metrics.answered(
                        metrics::qtype_of(packet),
                        &out,
                        "udp",
                        started.elapsed().as_secs_f64(),
                    );
                    replies.push((out, SockaddrStorage::from(src)));
                }
                Outcome::Drop => spare.push(out),
                Outcome::Forward(request) => {
                    spare.push(out);
                    let (socket, handler) = (socket.clone(), handler.clone());
                    runtime.spawn(async move {
                        let bytes = answer_forwarded(&handler, &request).await;
                        if let Err(e) = socket.send_to(&bytes, src) {
                            debug!(error = %e, %src, "DNS: sending a forwarded answer failed");
                        }
                    });
                }
            }
        }
        send_all(socket, &mut outbox, &replies);
        spare.extend(replies.drain(..).map(|(buffer, _)| buffer));
    }
}

/// The encoded UDP reply to a query forwarded upstream.
async fn answer_forwarded(handler: &Handler, request: &Request) -> Vec<u8> {
    let started = std::time::Instant::now();
    let reply = forward::forwarded(handler, request).await;
    let mut out = Vec::with_capacity(512);
    encode_udp(request, &reply, edns_for(request).as_ref(), &mut out);
    handler.metrics.answered(
        metrics::qtype_of(request.as_slice()),
        &out,
        "udp",
        started.elapsed().as_secs_f64(),
    );
    out
}

/// hickory's rule: never answer port 0 or an unspecified or broadcast
/// source (a forged source would turn muster into a reflector).
fn answerable(src: &SocketAddr) -> bool {
    let ip_ok = match src.ip() {
        std::net::IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
        std::net::IpAddr::V6(v6) => !v6.is_unspecified(),
    };
    src.port() != 0 && ip_ok
}

/// Preallocated receive buffers and headers for `recvmmsg`.
struct Inbox {
    headers: MultiHeaders<SockaddrStorage>,
    buffers: Vec<[u8; MAX_QUERY]>,
    received: Vec<(usize, Option<SocketAddr>)>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            headers: MultiHeaders::preallocate(BATCH, None),
            buffers: vec![[0; MAX_QUERY]; BATCH],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Waits (up to [`IDLE_CHECK`]) for at least one packet and takes as
    /// many as are queued, up to [`BATCH`]; returns how many.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buffers
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let messages = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        self.received.clear();
        self.received.extend(messages.map(|m| {
            let src = m.address.and_then(|a| to_socket_addr(&a));
            (m.bytes, src)
        }));
        Ok(self.received.len())
    }

    /// The first `n` packets received, with their sources.
    fn packets(&self, n: usize) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        self.received
            .iter()
            .take(n)
            .zip(&self.buffers)
            .map(|((len, src), buffer)| (&buffer[..(*len).min(MAX_QUERY)], *src))
    }
}

fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// Sends every reply, as many per system call as the kernel takes. A
/// reply the kernel refuses (an unreachable client) is dropped, as a lost
/// datagram would be.
fn send_all(
    socket: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    replies: &[(Vec<u8>, SockaddrStorage)],
) {
    let mut done = 0;
    while done < replies.len() {
        let pending = &replies[done..];
        let slices: Vec<[IoSlice<'_>; 1]> =
            pending.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = pending.iter().map(|(_, a)| Some(*a)).collect();
        match sendmmsg(
            socket.as_raw_fd(),
            headers,
            slices.iter(),
            addrs,
            [],
            MsgFlags::empty(),
        ) {
            Ok(sent) => match sent.count() {
                0 => break,
                n => done += n,
            },
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                debug!(error = %e, "DNS: a UDP reply was not sent");
                done += 1;
            }
        }
    }
}
