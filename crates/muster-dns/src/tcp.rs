//! The TCP front end: hickory-server's [`RequestHandler`] for TCP
//! connections, run by hickory's [`Server`](hickory_server::Server) (UDP
//! has its own loop, [`crate::udp`]).
//!
//! hickory parses each request and sends the reply; this module takes the
//! reply from [`crate::reply`] (or, for forwarded names, from
//! [`crate::forward`]) and counts the query. Listening and shutting down
//! are left to [`crate::server`].

use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tracing::warn;

use crate::reply::{Handler, Reply, edns_for, question_is_compressed, response};
use crate::{forward, metrics};

/// Answers the queries of TCP connections with a [`Handler`].
pub(crate) struct Tcp(pub(crate) Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Tcp {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let handler = &self.0;
        let started = std::time::Instant::now();
        let qtype = metrics::qtype_of(request.as_slice());
        if question_is_compressed(request.as_slice()) {
            // Answer from a copy of the header alone, so that the bad
            // question is not echoed.
            let mut header = request.as_slice()[..12].to_vec();
            header[4..12].fill(0);
            if let Ok(bare) = Request::from_bytes(header, request.src(), request.protocol()) {
                let reply = Reply::error(
                    Metadata::response_from_request(&request.metadata),
                    ResponseCode::FormErr,
                );
                handler
                    .metrics
                    .count(qtype, 1, "tcp", started.elapsed().as_secs_f64());
                return send(&mut response_handle, response(&bare, &reply, None)).await;
            }
        }
        let edns = edns_for(request);
        let reply = handler.reply(request);
        let reply = if reply.forward {
            forward::forwarded(handler, request).await
        } else {
            reply
        };
        let rcode = (u16::from(reply.metadata.response_code) & 0x0f) as u8;
        handler
            .metrics
            .count(qtype, rcode, "tcp", started.elapsed().as_secs_f64());
        send(
            &mut response_handle,
            response(request, &reply, edns.as_ref()),
        )
        .await
    }
}

/// Sends `response` on `handle`; a header with SERVFAIL as the result when
/// it could not be sent.
async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            warn!(error = %e, "failed to send DNS response");
            let mut metadata = Metadata::new(0, MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}
