//! The running server: binds the UDP and TCP sockets on one address, starts
//! the UDP thread ([`crate::udp`]) and hickory's TCP server with
//! [`crate::tcp`]'s handler, and stops both when the agent's shutdown token
//! is cancelled. Answering is left to those front ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::server::TcpLimits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::reply::Handler;
use crate::tcp::Tcp;
use crate::{DnsError, udp};

/// An idle TCP connection is closed after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running DNS server; dropping it does not stop it, cancelling its
/// shutdown token does ([`DnsServer::stopped`] waits for that).
pub struct DnsServer {
    server: Server<Tcp>,
    udp: std::thread::JoinHandle<()>,
    shutdown: CancellationToken,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 picks a free port, the same for
    /// both) and answers until `shutdown` is cancelled.
    pub async fn bind(
        addr: SocketAddr,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> Result<DnsServer, DnsError> {
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
        let runtime = tokio::runtime::Handle::current();
        let udp =
            udp::spawn(udp, handler.clone(), runtime, shutdown.clone()).map_err(|source| {
                DnsError::Bind {
                    addr,
                    proto: "udp",
                    source,
                }
            })?;
        let limits = TcpLimits {
            max_connections: handler.max_tcp_connections,
            refused: handler.metrics.tcp_refused.clone(),
        };
        let mut server = Server::new(Tcp(handler));
        server.register_listener_with_limits(tcp, TCP_TIMEOUT, 64 * 1024, limits);
        Ok(DnsServer {
            server,
            udp,
            shutdown,
            addr,
        })
    }

    /// The address served (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Once the shutdown token is cancelled: stops accepting queries and
    /// waits for TCP queries in flight.
    pub async fn stopped(mut self) {
        self.shutdown.cancelled().await;
        let udp = self.udp;
        let _ = tokio::task::spawn_blocking(move || udp.join()).await;
        if let Err(e) = self.server.shutdown_gracefully().await {
            warn!(error = %e, "DNS server did not shut down cleanly");
        }
    }
}
