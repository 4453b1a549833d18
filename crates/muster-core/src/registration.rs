//! What the write path answers its writers: the publisher's verdict on a
//! record, and the desk where the gRPC service hands in self-reported
//! records.
//!
//! Records flow one way, from sources through the publisher into gossip;
//! only verdicts flow back, as values of these types. The registry (a
//! source) implements [`Registrar`]; the gRPC service knows only the trait,
//! so the API depends on no writer crate.

use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::{Record, RecordError, Source};

/// Why the publisher refused one record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// Its encoding is over the gossiped value limit.
    #[error("record {id:?} encodes to {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Record id.
        id: String,
        /// Encoded size.
        bytes: usize,
        /// The largest encoding gossip carries.
        limit: usize,
    },
    /// Another source of this agent already publishes a record with this
    /// id.
    #[error("record id {id:?} is already published by the {} source", owner.as_str())]
    IdTaken {
        /// Record id.
        id: String,
        /// The source that owns it.
        owner: Source,
    },
    /// The same id appears twice in one set.
    #[error("record id {0:?} appears more than once")]
    Duplicate(String),
}

/// The publisher's answer for one record: published (or already so), or
/// why not.
pub type Verdict = Result<(), PublishError>;

/// A registration as it was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The record as published: prefixed id, this agent as host, source
    /// [`Source::Registered`].
    pub record: Record,
    /// When it lapses without a keep-alive.
    pub expires_at: SystemTime,
}

/// Why a registration, keep-alive or deregistration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistrationError {
    /// The TTL is outside what the registrar takes.
    #[error("ttl {seconds}s is outside {min}s to {max}s")]
    BadTtl {
        /// The TTL asked for, in whole seconds.
        seconds: u64,
        /// The shortest TTL taken, in seconds.
        min: u64,
        /// The longest TTL taken, in seconds.
        max: u64,
    },
    /// The record has no address, so it could never resolve.
    #[error("a registered record needs at least one address")]
    NoAddress,
    /// The record breaks a record rule (name, id, sizes).
    #[error(transparent)]
    BadRecord(#[from] RecordError),
    /// The publisher refused the record (too large to gossip, or its id is
    /// another source's).
    #[error(transparent)]
    Refused(#[from] PublishError),
    /// The agent already holds as many registrations as it takes.
    #[error("this agent already holds {limit} registrations")]
    Full {
        /// The limit.
        limit: usize,
    },
    /// No registration has this id: never registered, deregistered, or
    /// lapsed.
    #[error("no registration with id {0:?} (never registered, deregistered, or its TTL lapsed)")]
    NotFound(String),
    /// The registrar has stopped (the agent is shutting down).
    #[error("the registry has stopped")]
    Stopped,
}

/// Where self-reported records are registered, kept alive and withdrawn.
#[async_trait::async_trait]
pub trait Registrar: Send + Sync + 'static {
    /// Publishes `record` from this agent until `ttl` passes without a
    /// keep-alive, once the publisher has accepted it. The record is as
    /// the client sent it (converted, not yet checked): the registrar
    /// completes it and checks it.
    async fn register(
        &self,
        record: Record,
        ttl: Duration,
    ) -> Result<Registration, RegistrationError>;

    /// Restarts the TTL of registration `id` (with a new TTL when given);
    /// returns when it now lapses.
    async fn keep_alive(
        &self,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<SystemTime, RegistrationError>;

    /// Withdraws registration `id` now.
    async fn deregister(&self, id: &str) -> Result<(), RegistrationError>;

    /// `record` with the host and id it would be published under, to check
    /// it against the directory before registering it.
    fn as_published(&self, record: &Record) -> Record;
}
