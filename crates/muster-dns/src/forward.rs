//! Forwarding of names outside the zone to upstream resolvers: off unless
//! the operator lists upstreams (`--dns-forward`), so that muster is never
//! an open resolver by accident.
//!
//! The question is relayed as the client sent it, over UDP, to each
//! upstream in turn until one answers; a truncated UDP answer is asked
//! again over TCP. The upstream's answer comes back to the client with its
//! own response code and records.
//!
//! Whether a name is forwarded is decided by [`crate::reply`], which also
//! supplies the reply's header; the front ends ([`crate::udp`],
//! [`crate::tcp`]) call [`forwarded`] for requests whose reply is marked
//! for forwarding, and encode and send the result.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::server::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use crate::reply::{Handler, Reply};

/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The reply to a name outside the zone: the upstreams' answer, or
/// SERVFAIL when none answered.
pub(crate) async fn forwarded(handler: &Handler, request: &Request) -> Reply {
    let mut reply = handler.reply(request);
    match forward(&handler.forward_to, request.as_slice()).await {
        Some(message) => {
            reply.metadata.response_code = message.metadata.response_code;
            reply.metadata.recursion_available = message.metadata.recursion_available;
            reply.metadata.authoritative = false;
            reply.answers = message.answers;
            reply.authorities = message.authorities;
            reply.additionals = message.additionals;
        }
        None => reply.metadata.response_code = ResponseCode::ServFail,
    }
    reply
}

/// Asks the upstreams in turn; `None` when none answered.
async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Option<Message> {
    for upstream in upstreams {
        match tokio::time::timeout(UPSTREAM_TIMEOUT, ask(*upstream, query)).await {
            Ok(Ok(message)) => return Some(message),
            Ok(Err(e)) => debug!(%upstream, error = %e, "upstream resolver failed"),
            Err(_) => debug!(%upstream, "upstream resolver timed out"),
        }
    }
    None
}

async fn ask(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let id = query.get(..2);
    let message = loop {
        let n = socket.recv(&mut buf).await?;
        // Ignore stray datagrams that do not answer our question.
        if buf.get(..2) == id {
            break Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
        }
    };
    if !message.metadata.truncation {
        return Ok(message);
    }
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let len = stream.read_u16().await? as usize;
    let mut reply = vec![0u8; len];
    stream.read_exact(&mut reply).await?;
    Message::from_vec(&reply).map_err(std::io::Error::other)
}
