//! Response rate limiting for UDP, as NSD and Knot do it: at most `limit`
//! answers per second to each client network (/24 for IPv4, /56 for
//! IPv6). Over the limit, every second limited answer goes out truncated
//! (TC set and no records, so a real client asks again over TCP, which is
//! never limited) and the others are dropped ("slip 2"). A forged source
//! then gets a reflector nothing bigger than its own query, half the time.
//!
//! The table is a fixed array of buckets indexed by a keyed hash of the
//! network, so memory is bounded whatever the sources: networks that
//! collide share a bucket, and the newer one takes it over. The key is
//! random per process, so nobody can aim a collision at a victim.
//!
//! Deciding costs one hash and one bucket, before the query is even
//! parsed: a flood is turned away for less than answering it would cost.
//! The limiter belongs to the UDP thread alone, so it needs no lock.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

/// Buckets in the table: 2^16 networks tracked at once (about 1.5 MiB).
const BUCKETS: usize = 1 << 16;

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Within the limit: answer.
    Answer,
    /// Over the limit, the slipped one: a truncated answer.
    Truncate,
    /// Over the limit: nothing.
    Drop,
}

/// A client network: the address with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct Network(u128);

impl Network {
    fn of(ip: IpAddr) -> Network {
        match ip {
            IpAddr::V4(v4) => Network(u128::from(u32::from(v4) & 0xffff_ff00)),
            // The v4 range is below 2^32, so v6 networks get a marker bit
            // above it that no v4 network has.
            IpAddr::V6(v6) => Network((u128::from(v6) & !((1u128 << 72) - 1)) | 1),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    network: Network,
    /// The second the counts are for.
    second: u64,
    answers: u32,
    limited: u32,
}

/// Answers per second per client network, for one UDP thread.
pub(crate) struct RateLimiter {
    limit: u32,
    hasher: RandomState,
    buckets: Vec<Bucket>,
}

impl RateLimiter {
    /// A limiter letting `limit` answers per second through to each client
    /// network (`limit` > 0).
    pub(crate) fn new(limit: u32) -> RateLimiter {
        RateLimiter {
            limit,
            hasher: RandomState::new(),
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }

    /// What to do with one answer to `client` in second `second` (any
    /// monotonic count of seconds).
    pub(crate) fn decide(&mut self, client: IpAddr, second: u64) -> Decision {
        let network = Network::of(client);
        let index = (self.hasher.hash_one(network) as usize) % BUCKETS;
        let bucket = &mut self.buckets[index];
        if bucket.network != network || bucket.second != second {
            *bucket = Bucket {
                network,
                second,
                answers: 0,
                limited: 0,
            };
        }
        if bucket.answers < self.limit {
            bucket.answers += 1;
            return Decision::Answer;
        }
        bucket.limited += 1;
        if bucket.limited.is_multiple_of(2) {
            Decision::Truncate
        } else {
            Decision::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a test address")
    }

    /// The decisions for `n` answers to `client` within one second.
    fn burst(limiter: &mut RateLimiter, client: &str, n: usize, second: u64) -> Vec<Decision> {
        (0..n).map(|_| limiter.decide(ip(client), second)).collect()
    }

    #[test]
    fn a_network_gets_its_limit_then_every_second_answer_truncated_and_the_rest_dropped() {
        let mut limiter = RateLimiter::new(3);
        use Decision::*;
        assert_eq!(
            burst(&mut limiter, "192.0.2.7", 8, 1),
            [Answer, Answer, Answer, Drop, Truncate, Drop, Truncate, Drop]
        );
    }

    #[test]
    fn the_limit_is_per_network_not_per_address() {
        let mut limiter = RateLimiter::new(2);
        // Two addresses of one /24 share the limit...
        assert_eq!(limiter.decide(ip("192.0.2.1"), 1), Decision::Answer);
        assert_eq!(limiter.decide(ip("192.0.2.200"), 1), Decision::Answer);
        assert_ne!(limiter.decide(ip("192.0.2.9"), 1), Decision::Answer);
        // ...and the next /24 has its own.
        assert_eq!(limiter.decide(ip("192.0.3.1"), 1), Decision::Answer);
        // IPv6 by /56: the same /56 shares, another /56 does not.
        assert_eq!(limiter.decide(ip("2001:db8:0:ff::1"), 1), Decision::Answer);
        assert_eq!(limiter.decide(ip("2001:db8:0:1::2"), 1), Decision::Answer);
        assert_ne!(limiter.decide(ip("2001:db8:0:2::3"), 1), Decision::Answer);
        assert_eq!(limiter.decide(ip("2001:db8:0:100::1"), 1), Decision::Answer);
    }

    #[test]
    fn a_new_second_starts_a_new_count() {
        let mut limiter = RateLimiter::new(1);
        assert_eq!(limiter.decide(ip("198.51.100.1"), 7), Decision::Answer);
        assert_ne!(limiter.decide(ip("198.51.100.1"), 7), Decision::Answer);
        assert_eq!(limiter.decide(ip("198.51.100.1"), 8), Decision::Answer);
    }

    #[test]
    fn v4_and_v6_networks_never_share_a_bucket_key() {
        // ::c000:200/56 and 192.0.2.0/24 would be the same number without
        // the marker bit.
        assert_ne!(Network::of(ip("192.0.2.1")), Network::of(ip("::c000:201")));
    }
}
