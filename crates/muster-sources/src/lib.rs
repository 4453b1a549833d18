//! Where a host's own records come from.
//!
//! A source is a task that owns one kind of local record and reports its
//! set as [`SourceUpdate`]s on a channel: a whole new set
//! ([`SourceUpdate::Replace`], on start, reload or resync) or single
//! changes ([`SourceUpdate::Upsert`], [`SourceUpdate::Remove`], for event
//! streams such as Docker's). The agent forwards them to gossip; sources
//! know nothing of gossip, DNS or the index.
//!
//! Sources: the static records file ([`static_file`]) and the local Docker
//! engine ([`docker`]); self-registration reports through the same channel.

#![warn(missing_docs)]

pub mod docker;
pub mod registry;
pub mod static_file;

use muster_core::{Record, Source};

/// A change in the records one source publishes.
#[derive(Debug, Clone, PartialEq)]
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
    },
    /// One record withdrawn.
    Remove {
        /// The reporting source.
        source: Source,
        /// Its id.
        id: String,
    },
}
