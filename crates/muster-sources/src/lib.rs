//! Where a host's own records come from.
//!
//! A source is a task that owns one kind of local record and reports its
//! set as [`SourceUpdate`]s on a channel: a whole new set
//! ([`SourceUpdate::Replace`], on start, reload or resync) or single
//! changes ([`SourceUpdate::Upsert`], [`SourceUpdate::Remove`], for event
//! streams such as Docker's). The agent forwards them to gossip; sources
//! know nothing of gossip, DNS or the index. A source that must answer
//! someone (the registry answers its gRPC clients) puts an [`Ack`] in its
//! upsert and learns the publisher's verdict through it.
//!
//! Sources: the static records file ([`static_file`]) and the local Docker
//! engine ([`docker`]); self-registration reports through the same channel.

#![warn(missing_docs)]

pub mod docker;
pub mod registry;
pub mod static_file;

use muster_core::{Record, Source, Verdict};
use tokio::sync::oneshot;

/// Where the publisher's verdict on one record goes back to its source.
#[derive(Debug)]
pub struct Ack(oneshot::Sender<Verdict>);

impl Ack {
    /// An acknowledgement, and where its verdict arrives (an error there
    /// means the update was dropped unheard: the agent is shutting down).
    pub fn new() -> (Ack, oneshot::Receiver<Verdict>) {
        let (tx, rx) = oneshot::channel();
        (Ack(tx), rx)
    }

    /// Sends the verdict back; a source that stopped waiting is no error.
    pub fn send(self, verdict: Verdict) {
        let _ = self.0.send(verdict);
    }
}

/// A change in the records one source publishes.
#[derive(Debug)]
pub enum SourceUpdate {
    /// The source's whole set: records not in it are withdrawn.
    Replace {
        /// The reporting source.
        source: Source,
        /// Every record it now publishes.
        records: Vec<Record>,
    },
    /// One record added or changed.
    Upsert {
        /// The reporting source.
        source: Source,
        /// The record.
        record: Box<Record>,
        /// Where the verdict goes, if the source waits for it; without
        /// one, the agent logs a refusal.
        ack: Option<Ack>,
    },
    /// One record withdrawn.
    Remove {
        /// The reporting source.
        source: Source,
        /// Its id.
        id: String,
    },
}
