//! Replies: from one query, as a raw packet or as hickory's parsed
//! [`Request`], to the reply muster sends, in hickory's wire format.
//!
//! [`Handler`] holds what answering needs (the judged directory, the
//! [`Resolver`], the upstreams, the metrics) and turns a request into a
//! [`Reply`] ([`Handler::reply`]): header checks, then the question's
//! answer from the resolver, with the SOA in negative answers. The rest is
//! encoding: EDNS sizing, UDP truncation, and the header-only replies to
//! packets that cannot be answered. Resolution itself is left to
//! [`crate::resolve`]; sockets to [`crate::udp`] and [`crate::tcp`], which
//! call in here; asking upstreams to [`crate::forward`].

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use muster_policy::Judged;
use tracing::warn;

use crate::resolve::{Answer, Resolved, Resolver};
use crate::{DnsConfig, DnsError, DnsMetrics, MAX_UDP_PAYLOAD};

/// Answers DNS queries from the latest judged snapshot.
pub struct Handler {
    /// The directory as the naming policy last judged it: each answer comes
    /// from one snapshot and the verdicts on that very snapshot, so a
    /// record a rule keeps out of DNS is never answered, not even before
    /// the policy has seen it.
    directory: Arc<ArcSwap<Judged>>,
    resolver: Resolver,
    /// Upstreams for names outside the zone (see [`crate::forward`]).
    pub(crate) forward_to: Vec<SocketAddr>,
    pub(crate) metrics: DnsMetrics,
    /// UDP answers per second per client network; 0: unlimited (see
    /// [`crate::rate`]).
    pub(crate) rate_limit: u32,
    pub(crate) max_tcp_connections: usize,
}

impl Handler {
    /// A handler for `config.zone` over `directory` (the policy engine's
    /// [`Judged`] cell; [`Judged::without_policy`] for a directory judged
    /// by none).
    pub fn new(config: &DnsConfig, directory: Arc<ArcSwap<Judged>>) -> Result<Handler, DnsError> {
        Ok(Handler {
            directory,
            resolver: Resolver::new(config)?,
            forward_to: config.forward_to.clone(),
            metrics: DnsMetrics::default(),
            rate_limit: 0,
            max_tcp_connections: crate::DEFAULT_MAX_TCP_CONNECTIONS,
        })
    }

    /// Limits UDP answers to `answers_per_second` per client network (/24
    /// for IPv4, /56 for IPv6); over it, every second answer is sent
    /// truncated and the others dropped. 0 (the default) is no limit; TCP
    /// is never limited.
    pub fn with_rate_limit(mut self, answers_per_second: u32) -> Handler {
        self.rate_limit = answers_per_second;
        self
    }

    /// Serves at most `connections` TCP connections at once (default
    /// [`crate::DEFAULT_MAX_TCP_CONNECTIONS`]); one more is closed as soon
    /// as it is accepted, and counted.
    pub fn with_max_tcp_connections(mut self, connections: usize) -> Handler {
        self.max_tcp_connections = connections.max(1);
        self
    }

    /// Counts queries in `metrics`.
    pub fn with_metrics(mut self, metrics: DnsMetrics) -> Handler {
        self.metrics = metrics;
        self
    }

    /// The UDP reply to one raw packet from `src`, exactly as the UDP
    /// server computes it: `None` when the packet gets no reply (shorter
    /// than a DNS header) or would be forwarded upstream. The request path
    /// with no socket around it, for the fuzz target and tests.
    pub fn answer_packet(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match answer(self, packet, src, &mut out) {
            Outcome::Reply => Some(out),
            Outcome::Drop | Outcome::Forward(_) => None,
        }
    }

    /// The reply to `request` from the latest snapshot; one marked
    /// [`Reply::forward`] when the name is for the upstreams.
    pub(crate) fn reply(&self, request: &Request) -> Reply {
        let metadata = Metadata::response_from_request(&request.metadata);
        let error = Reply::error;
        if request.metadata.message_type != MessageType::Query {
            return error(metadata, ResponseCode::FormErr);
        }
        if request.metadata.op_code != OpCode::Query {
            return error(metadata, ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return error(metadata, ResponseCode::FormErr);
        };
        let snapshot = self.directory.load();
        let query = &info.query;
        match self.resolver.answer(
            &snapshot,
            query.original().name(),
            query.name(),
            query.query_type(),
        ) {
            Some(resolved) => self.finish(metadata, resolved, &snapshot),
            None if !self.forward_to.is_empty() => Reply {
                forward: true,
                ..Reply::empty(metadata)
            },
            None => error(metadata, ResponseCode::Refused),
        }
    }

    /// The reply for an answer; negative answers carry the SOA of its zone
    /// (none for reverse names outside the configured reverse zones).
    fn finish(&self, mut metadata: Metadata, resolved: Resolved<'_>, snapshot: &Judged) -> Reply {
        let Resolved { answer, zone } = resolved;
        metadata.authoritative = true;
        let mut reply = Reply::empty(metadata);
        match answer {
            Answer::WithAdditionals(answers, additionals) if !answers.is_empty() => {
                reply.answers = answers;
                reply.additionals = additionals;
            }
            Answer::Records(answers) if !answers.is_empty() => reply.answers = answers,
            // Negative answers carry the SOA (built only here: positive
            // answers, the hot path, need none).
            Answer::NxDomain => {
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.soa = zone.map(|apex| self.resolver.soa(apex, snapshot.revision()));
            }
            Answer::Records(_) | Answer::WithAdditionals(..) | Answer::NoData => {
                reply.soa = zone.map(|apex| self.resolver.soa(apex, snapshot.revision()));
            }
        }
        reply
    }

    /// Encodes the UDP reply to `request` into `out` without waiting;
    /// `false` (and nothing written) when it must be forwarded upstream.
    fn answer_now(&self, request: &Request, out: &mut Vec<u8>) -> bool {
        let reply = self.reply(request);
        if reply.forward {
            return false;
        }
        encode_udp(request, &reply, edns_for(request).as_ref(), out);
        true
    }
}

/// A complete reply: header fields, answers and the SOA for the authority
/// section of negative answers.
pub(crate) struct Reply {
    pub(crate) metadata: Metadata,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    soa: Option<Record>,
    pub(crate) additionals: Vec<Record>,
    /// Outside the zone, and upstreams are configured: ask them.
    pub(crate) forward: bool,
}

impl Reply {
    /// A reply with `metadata` and nothing else yet.
    fn empty(metadata: Metadata) -> Reply {
        Reply {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            soa: None,
            additionals: Vec::new(),
            forward: false,
        }
    }

    /// An empty reply with the response code `code`.
    pub(crate) fn error(mut metadata: Metadata, code: ResponseCode) -> Reply {
        metadata.response_code = code;
        Reply::empty(metadata)
    }
}

/// The OPT for a reply (RFC 6891): present when the query had one, and
/// carrying the smaller of the client's buffer and ours. hickory sizes
/// the UDP reply by it: a reply that does not fit is cut with TC set,
/// and the client retries over TCP.
pub(crate) fn edns_for(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(request.max_payload().min(MAX_UDP_PAYLOAD));
        e
    })
}

/// What became of one packet.
pub(crate) enum Outcome {
    /// The reply is in the output buffer.
    Reply,
    /// Nothing to answer (not even a DNS header).
    Drop,
    /// Outside the zone, for the configured upstreams.
    Forward(Box<Request>),
}

/// Answers one packet into `out`, as hickory's own server would: no reply
/// to fewer than 12 bytes, FORMERR (with no question section) to a header
/// followed by garbage or by a question that uses name compression.
pub(crate) fn answer(
    handler: &Handler,
    packet: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> Outcome {
    let request = match parse_udp(packet, src) {
        Some(request) => request,
        None => {
            let mut decoder = BinDecoder::new(packet);
            let Ok(header) = Header::read(&mut decoder) else {
                return Outcome::Drop;
            };
            return match emit_bare(&header.metadata, ResponseCode::FormErr, out) {
                Ok(()) => Outcome::Reply,
                Err(_) => Outcome::Drop,
            };
        }
    };
    if handler.answer_now(&request, out) {
        Outcome::Reply
    } else {
        Outcome::Forward(Box::new(request))
    }
}

/// The truncated reply to a rate-limited UDP query: its header with TC set
/// and its question, no records, so that a real client asks again over
/// TCP. False (no reply) for a packet that does not parse.
pub(crate) fn truncated(packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
    let Some(request) = parse_udp(packet, src) else {
        return false;
    };
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.truncation = true;
    encode_udp(
        &request,
        &Reply::empty(metadata),
        edns_for(&request).as_ref(),
        out,
    );
    true
}

/// The request in a UDP packet, `None` when it does not parse or its
/// question is compressed (see [`question_is_compressed`]).
#[inline(always)]
fn parse_udp(packet: &[u8], src: SocketAddr) -> Option<Request> {
    if question_is_compressed(packet) {
        return None;
    }
    Request::from_bytes(packet.to_vec(), src, Protocol::Udp).ok()
}

/// Whether any question's name uses a compression pointer. muster takes
/// one question, with nothing before it to point at, so such a pointer is
/// malformed; worse, hickory echoes the question section's bytes as
/// received, and a pointer into the header then points at the reply's
/// changed header and makes the reply unreadable (found by the fuzz
/// target, first with one question, then with a second one). Such queries
/// get FORMERR without a question section.
pub(crate) fn question_is_compressed(packet: &[u8]) -> bool {
    let questions = packet
        .get(4..6)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    let mut at = 12;
    for _ in 0..questions {
        loop {
            match packet.get(at) {
                None => return false,
                Some(0) => break,
                Some(l) if l & 0xc0 != 0 => return true,
                Some(l) => at += 1 + *l as usize,
            }
        }
        // The root label, then type and class.
        at += 1 + 4;
    }
    false
}

/// The message hickory would send for `reply`.
pub(crate) fn response<'a>(
    request: &'a Request,
    reply: &'a Reply,
    edns: Option<&'a Edns>,
) -> MessageResponse<
    'a,
    'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
> {
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(e) = edns {
        builder.edns(e);
    }
    builder.build(
        reply.metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        reply.soa.iter(),
        reply.additionals.iter(),
    )
}

/// Encodes a UDP reply into `out` as hickory does: at most the OPT's
/// payload size (512 bytes without EDNS), cut with TC set when it does not
/// fit, SERVFAIL if it cannot be encoded at all.
pub(crate) fn encode_udp(request: &Request, reply: &Reply, edns: Option<&Edns>, out: &mut Vec<u8>) {
    let max = edns.map_or(512, |e| e.max_payload());
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(max);
    if let Err(e) = response(request, reply, edns).destructive_emit(&mut encoder) {
        warn!(error = %e, "DNS: a reply could not be encoded");
        out.clear();
        let _ = emit_bare(&request.metadata, ResponseCode::ServFail, out);
    }
}

/// A reply of a header alone, with `code`, to a query with `query`'s
/// header: for queries that cannot be answered at all.
fn emit_bare(
    query: &Metadata,
    code: ResponseCode,
    out: &mut Vec<u8>,
) -> Result<(), hickory_server::proto::ProtoError> {
    let mut metadata = Metadata::response_from_request(query);
    metadata.response_code = code;
    let header = Header {
        metadata,
        counts: Default::default(),
    };
    header.emit(&mut BinEncoder::new(out))
}

#[cfg(test)]
mod tests {
    use hickory_server::proto::rr::{Name, RData, RecordType};

    use super::*;

    /// A handler over a directory holding `records` (host `a`).
    fn handler_with(records: Vec<muster_core::Record>) -> Handler {
        let changes = records.into_iter().map(|mut r| {
            r.host = "a".into();
            muster_core::Change::Upsert(r)
        });
        let snapshot = muster_core::Snapshot::new().apply(changes);
        let config = DnsConfig {
            zone: "muster".into(),
            ttl: 5,
            node_name: "a".into(),
            forward_to: Vec::new(),
            reverse_zones: Vec::new(),
        };
        Handler::new(
            &config,
            Arc::new(ArcSwap::from_pointee(Judged::without_policy(snapshot))),
        )
        .unwrap()
    }

    fn ask(handler: &Handler, name: &str, rtype: RecordType) -> hickory_server::proto::op::Message {
        use hickory_server::proto::op::{Message, Query};
        let mut query = Message::query();
        query.metadata.id = 4242;
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        let packet = query.to_vec().unwrap();
        let reply = handler
            .answer_packet(&packet, "127.0.0.1:5300".parse().unwrap())
            .expect("a reply");
        Message::from_vec(&reply).unwrap()
    }

    #[test]
    fn txt_facts_stay_within_dns_string_limits_whatever_the_image_name() {
        let mut record = muster_core::Record::new("c1", "web-1", muster_core::Source::Static);
        record.image = "é".repeat(300);
        let handler = handler_with(vec![record]);
        let reply = ask(&handler, "web-1.muster.", RecordType::TXT);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.metadata.id, 4242);
        let RData::TXT(txt) = &reply.answers[0].data else {
            panic!("not TXT: {:?}", reply.answers);
        };
        let image = txt
            .txt_data
            .iter()
            .find(|s| s.starts_with(b"image="))
            .expect("image fact");
        assert!(image.len() <= 255, "{} bytes", image.len());
        assert!(std::str::from_utf8(image).is_ok(), "cut inside a character");
    }

    #[test]
    fn fewer_than_twelve_bytes_get_no_reply_and_garbage_after_a_header_gets_formerr() {
        let handler = handler_with(Vec::new());
        let src = "127.0.0.1:5300".parse().unwrap();
        assert!(handler.answer_packet(&[0x12, 0x34, 0x01], src).is_none());
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[0xff; 7]);
        let reply = handler.answer_packet(&packet, src).expect("a reply");
        let reply = hickory_server::proto::op::Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn a_question_compressed_into_the_header_gets_a_readable_formerr() {
        // Found by the fuzz target (crates/muster-dns/fuzz/regressions):
        // a question name that is a pointer to offset 2 of the header, as
        // the only question and as the second one after the root.
        let regressions = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
        let mut seen = 0;
        for entry in std::fs::read_dir(regressions).expect("fuzz/regressions") {
            let packet = std::fs::read(entry.expect("entry").path()).expect("read");
            let handler = handler_with(Vec::new());
            let reply = handler
                .answer_packet(&packet, "127.0.0.1:5300".parse().unwrap())
                .expect("a reply");
            let reply = hickory_server::proto::op::Message::from_vec(&reply).expect("readable");
            assert_eq!(reply.metadata.id, 0x1234);
            assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
            assert!(reply.queries.is_empty());
            seen += 1;
        }
        assert!(seen >= 2, "{seen} regression inputs");
    }
}
